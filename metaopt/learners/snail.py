"""``snail``: a simple neural attentive meta-learner (Mishra, Rohaninejad, Chen & Abbeel, ICLR 2018).

A task is read as a sequence: each support pair as one step, ``[e(x_i), y_i]`` (labels
one-hot), then the query with its target unknown, ``[e(x*), 0]``. Temporal-convolution
blocks (dense stacks of causal convolutions of kernel 2, dilations 1, 2, 4, ... up to the
sequence length, gated ``tanh * sigmoid``) and causal soft-attention blocks alternate, each
block's output concatenated to its input, as the paper's few-shot architecture:
attention, TC, attention, TC, attention. The output at the query's step is read by the
task head (logits over the ways, or the target's values). Each query is the last step of
its own sequence, so its prediction never depends on the other queries; the model is
sequential by design, so the order of the support matters to it (training shuffles the
support each meta-step, so that no order is learned). ``e`` is the job's backbone as an
embedding network: Conv-4 for images, as ProtoNet's and MAML's. On the RL families (bandits,
tabular MDPs) ``snail`` is the paper's policy: ``snail_rl.py``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaopt.learners.base import HParam, MetaLearner
from metaopt.learners.context import CONTEXT_HPARAMS, ContextLearner, embedding
from metaopt.learners.core import Params
from metaopt.tasks.base import TaskBatch, TaskKind


class CausalConv(nn.Module):
    """A kernel-2 convolution over time that sees step ``t`` and step ``t - dilation`` only."""

    def __init__(self, channels: int, filters: int, dilation: int) -> None:
        super().__init__()
        self.dilation = dilation
        self.conv = nn.Conv1d(channels, filters, kernel_size=2, dilation=dilation)

    def forward(self, x: Tensor) -> Tensor:
        """``[batch, channels, time]`` to ``[batch, filters, time]``."""
        return causal_convolutions(x, [self])


def causal_convolutions(x: Tensor, convs: list[CausalConv]) -> Tensor:
    """The outputs of kernel-2 causal convolutions of one dilation, stacked on the channels: ``[batch, channels,
    time]`` to ``[batch, sum of filters, time]``.

    One matrix product of every kernel's two taps with each step, the earlier tap's product then shifted by
    the dilation (zero padding is zero after the product, so this is the convolution of the shifted input);
    no ``conv1d`` (oneDNN's 1-D backward on short sequences was most of a few-shot meta-step) and no copy of
    the input per tap (3x the time of this on the RL policy's 100-step histories).
    """
    d, steps = convs[0].dilation, x.shape[2]
    taps = torch.cat([c.conv.weight[:, :, 0] for c in convs] + [c.conv.weight[:, :, 1] for c in convs])
    products = torch.matmul(taps, x)  # [batch, 2 * filters, time]: the earlier taps' rows, then the current's
    half = products.shape[1] // 2
    earlier = F.pad(products[:, :half], (d, 0))[:, :, :steps]
    return earlier + products[:, half:] + torch.cat([c.conv.bias for c in convs])[:, None]


class DenseBlock(nn.Module):
    """A gated causal convolution whose ``filters`` outputs are concatenated to its input."""

    def __init__(self, channels: int, filters: int, dilation: int) -> None:
        super().__init__()
        self.f, self.g = CausalConv(channels, filters, dilation), CausalConv(channels, filters, dilation)

    def forward(self, x: Tensor) -> Tensor:
        """``[batch, channels, time]`` to ``[batch, channels + filters, time]``."""
        f, g = causal_convolutions(x, [self.f, self.g]).chunk(2, 1)
        return torch.cat([x, torch.tanh(f) * torch.sigmoid(g)], 1)

    def step(self, x: Tensor, past: list[Tensor]) -> Tensor:
        """The output ``[batch, channels + filters]`` at one more step ``x [batch, channels]``; ``past`` holds this
        block's earlier inputs and gets ``x`` appended (the block reads one of them, ``dilation`` steps back)."""
        d = self.f.dilation
        earlier = past[-d] if len(past) >= d else torch.zeros_like(x)
        past.append(x)
        return self._gated(earlier, x)

    def query_step(self, support: Tensor, queries: Tensor) -> Tensor:
        """Each query's output as the step after the whole support: ``support [tasks, channels, shots]`` (this
        block's inputs so far, shared by a task's queries) and ``queries [tasks, q, channels]`` to
        ``[tasks, q, channels + filters]``."""
        d, shots = self.f.dilation, support.shape[2]
        earlier = support[:, :, shots - d] if shots >= d else torch.zeros_like(support[:, :, 0])
        return self._gated(earlier[:, None].expand_as(queries), queries)

    def _gated(self, earlier: Tensor, current: Tensor) -> Tensor:
        """The block's output at single steps, channels last: ``current`` with the gated convolution of it and of
        its ``earlier`` input (the kernel's two taps) concatenated."""

        def at(conv: CausalConv) -> Tensor:
            weight = conv.conv.weight
            return earlier @ weight[:, :, 0].T + current @ weight[:, :, 1].T + conv.conv.bias

        return torch.cat([current, torch.tanh(at(self.f)) * torch.sigmoid(at(self.g))], -1)


class AttentionBlock(nn.Module):
    """Causal single-head soft attention whose ``value_size`` reads are concatenated to its input."""

    def __init__(self, channels: int, key_size: int, value_size: int) -> None:
        super().__init__()
        self.query, self.key = nn.Linear(channels, key_size), nn.Linear(channels, key_size)
        self.value = nn.Linear(channels, value_size)
        self.scale = 1 / math.sqrt(key_size)

    def forward(self, x: Tensor) -> Tensor:
        """``[batch, channels, time]`` to ``[batch, channels + value_size, time]``."""
        steps = x.transpose(1, 2)  # [batch, time, channels]
        logits = self.query(steps) @ self.key(steps).transpose(1, 2) * self.scale
        future = torch.ones(logits.shape[-2:], dtype=torch.bool, device=x.device).triu(1)
        read = logits.masked_fill(future, float("-inf")).softmax(-1) @ self.value(steps)
        return torch.cat([x, read.transpose(1, 2)], 1)

    def step(self, x: Tensor, past: list[tuple[Tensor, Tensor]]) -> Tensor:
        """The output ``[batch, channels + value_size]`` at one more step ``x [batch, channels]``; ``past`` holds the
        earlier steps' keys and values and gets this step's appended (so no step's key is computed twice)."""
        past.append((self.key(x), self.value(x)))
        keys, values = torch.stack([k for k, _ in past], 1), torch.stack([v for _, v in past], 1)
        weights = ((keys @ self.query(x)[:, :, None])[:, :, 0] * self.scale).softmax(-1)  # [batch, time]
        return torch.cat([x, (weights[:, None] @ values)[:, 0]], 1)

    def query_step(self, support: Tensor, queries: Tensor) -> Tensor:
        """Each query's read as the step after the whole support (it attends to the support and to itself):
        ``support [tasks, channels, shots]``, ``queries [tasks, q, channels]`` to ``[tasks, q, channels + value_size]``."""
        steps = support.transpose(1, 2)  # [tasks, shots, channels]
        asked = self.query(queries)
        logits = torch.cat([asked @ self.key(steps).transpose(1, 2),
                            (asked * self.key(queries)).sum(-1, keepdim=True)], -1) * self.scale
        weights = logits.softmax(-1)  # [tasks, q, shots + 1]
        read = weights[..., :-1] @ self.value(steps) + weights[..., -1:] * self.value(queries)
        return torch.cat([queries, read], -1)


class Blocks(nn.Sequential):
    """SNAIL's block stack; given queries, it reads each as the step after its task's support."""

    def forward(self, x: Tensor, queries: Tensor | None = None) -> Tensor:
        """``x [batch, channels, time]`` through every block; with ``queries [tasks, q, channels]`` (``x`` then
        being each task's support), each query's last-step output ``[tasks, q, width]``.

        A block is causal, so a task's support steps come out the same whichever query follows them: they run
        once per task, and each query takes one step per block (``query_step``), rather than the support
        running again in a sequence of its own for every query (25 times over on 5-way 5-query episodes;
        the same function: ``tests/learners/test_context_learners.py``).
        """
        if queries is None:
            return super().forward(x)
        for block in self:
            queries = block.query_step(x, queries)
            x = block(x)
        return queries


def snail_blocks(channels: int, length: int, filters: int, key_size: int, value_size: int,
                 pattern: str = "ATATA") -> tuple[nn.Sequential, int]:
    """Blocks in ``pattern`` order (``A`` attention, ``T`` a TC block covering sequences of ``length``), and the
    width they end with; the default is the paper's few-shot stack (attention, TC, attention, TC, attention)."""
    blocks: list[nn.Module] = []
    for kind in pattern:
        if kind == "A":
            blocks.append(AttentionBlock(channels, key_size, value_size))
            channels += value_size
            continue
        for level in range(max(1, math.ceil(math.log2(length)))):
            blocks.append(DenseBlock(channels, filters, 2**level))
            channels += filters
    return Blocks(*blocks), channels


class SNAIL(ContextLearner):
    """Temporal convolutions and causal attention over the support sequence, then the query."""

    name: ClassVar[str] = "snail"
    task_kinds: ClassVar[tuple[TaskKind, ...]] = ("regression", "classification", "rl")
    sequential: ClassVar[bool] = True
    hyperparameters: ClassVar[dict[str, HParam]] = {
        **{k: v for k, v in CONTEXT_HPARAMS.items() if k != "width"},
        "filters": HParam(type=int, default=64, minimum=1, help="filters of each dense block (the paper: 128)"),
        "key_size": HParam(type=int, default=32, minimum=1, help="attention keys and queries (the paper: 64)"),
        "value_size": HParam(type=int, default=64, minimum=1, help="attention reads (the paper: 32, 128, 256)"),
        "max_shots": HParam(type=int, default=64, minimum=1, help="the longest support sequence the dilations cover"),
    }

    @classmethod
    def for_task_kind(cls, task_kind: TaskKind) -> type[MetaLearner]:
        """On RL tasks, the RL² training loop with a SNAIL policy (``snail_rl.py``)."""
        if task_kind != "rl":
            return cls
        from metaopt.learners.snail_rl import SnailRL

        return SnailRL

    @classmethod
    def build_network(cls, backbone: dict[str, Any], *, input_shape: tuple[int, ...], output_size: int,
                      hparams: dict[str, Any]) -> nn.Module:
        """The embedding and the block stack over ``[e(x), y]`` steps (the head is the learner's)."""
        embed, features = embedding(backbone, input_shape)
        blocks, width = snail_blocks(features + output_size, hparams["max_shots"] + 1, hparams["filters"],
                                     hparams["key_size"], hparams["value_size"])
        network = nn.ModuleDict({"embed": embed, "blocks": blocks})
        network.outputs, network.width = output_size, width
        return network

    def batch_predictions(self, meta: Params, batch: TaskBatch) -> Tensor:
        """Every query read as the last step of its own sequence: the support in order, then the query."""
        batch = self.shuffled(batch)
        n_way = self._n_way(batch.support_y)
        support = torch.cat([self.embed_episodes(meta, batch.support_x),
                             self.target_features(batch.support_y, n_way)], -1)  # [tasks, shots, f + o]
        query = self.embed_episodes(meta, batch.query_x)
        query = F.pad(query, (0, support.shape[-1] - query.shape[-1]))  # the target unknown: zeros
        read = self.call("blocks", meta, support.transpose(1, 2), queries=query)  # [tasks, q, width]
        return self.head(meta, read)
