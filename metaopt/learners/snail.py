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
        return self.conv(F.pad(x, (self.dilation, 0)))


class DenseBlock(nn.Module):
    """A gated causal convolution whose ``filters`` outputs are concatenated to its input."""

    def __init__(self, channels: int, filters: int, dilation: int) -> None:
        super().__init__()
        self.f, self.g = CausalConv(channels, filters, dilation), CausalConv(channels, filters, dilation)

    def forward(self, x: Tensor) -> Tensor:
        """``[batch, channels, time]`` to ``[batch, channels + filters, time]``."""
        return torch.cat([x, torch.tanh(self.f(x)) * torch.sigmoid(self.g(x))], 1)

    def last(self, x: Tensor) -> Tensor:
        """The output at the last step only, ``[batch, channels + filters]``, from the inputs so far ``x``."""
        d = self.f.dilation
        earlier = x[:, :, -1 - d] if x.shape[2] > d else torch.zeros_like(x[:, :, -1])
        pair = torch.stack([earlier, x[:, :, -1]], 2)  # what the kernel-2 convolution sees at the last step

        def at_last(conv: CausalConv) -> Tensor:
            return torch.einsum("fck,bck->bf", conv.conv.weight, pair) + conv.conv.bias

        return torch.cat([x[:, :, -1], torch.tanh(at_last(self.f)) * torch.sigmoid(at_last(self.g))], 1)


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

    def last(self, x: Tensor) -> Tensor:
        """The output at the last step only, ``[batch, channels + value_size]``, from the inputs so far ``x``."""
        steps = x.transpose(1, 2)
        logits = self.query(steps[:, -1:]) @ self.key(steps).transpose(1, 2) * self.scale  # [batch, 1, time]
        return torch.cat([x[:, :, -1], (logits.softmax(-1) @ self.value(steps))[:, 0]], 1)


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
    return nn.Sequential(*blocks), channels


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
        tasks, shots, queries = support.shape[0], support.shape[1], query.shape[1]
        sequences = torch.cat([support[:, None].expand(-1, queries, -1, -1), query[:, :, None]], 2)
        read = self.call("blocks", meta, sequences.flatten(0, 1).transpose(1, 2))[:, :, -1]  # [tasks*q, width]
        return self.head(meta, read).unflatten(0, (tasks, queries))
