"""``mann``: a memory-augmented neural network (Santoro, Bartunov, Botvinick, Wierstra & Lillicrap, ICML 2016).

A task is a stream: at step ``t`` the network sees ``e(x_t)`` with the previous step's
target ``y_{t-1}`` (one-hot labels; zeros at the first step) and predicts ``y_t``, so it
must hold each binding of input and label until the class comes back. An LSTM controller
(``hidden`` units) reads an external memory of ``slots`` rows of ``slot_size`` with
``reads`` heads by content (cosine similarity, softmax; each head's similarities scaled by a key
strength ``1 + softplus(.)`` from the controller, as the Neural Turing Machine's: the paper's plain
softmax over 128 rows reads almost uniformly, and training sat at chance on 5-way glyphs for 3,000
episodes), and writes with least-recently-used
access: each head writes an add vector of its own to a mix (a learned gate) of the rows it read
last step and the least-used rows, after the least-used row is cleared; usage decays by ``gamma``.
The paper's equations write the read key itself; the public reproductions write a separate add
vector, and so does this one: with the key written, a read on the memory just written finds its
own key first, and on glyphs the memory was never read back (32% at a class's 2nd instance after
40,000 episodes, 82% with the add vector after 24,000). The memory is reset at every task. The
output reads the controller's state and the memory reads.

Training streams each task's support and query examples together in a random order, every
step's prediction in the loss (as the paper). At test, each query is the last step of its own
stream, after the task's support set in the order given: its prediction never depends on the
other queries; the model is sequential by design, so the support's order matters to it.
``e`` is the job's backbone as an embedding network (Conv-4 for images).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaopt.learners.base import HParam
from metaopt.learners.context import CONTEXT_HPARAMS, ContextLearner, embedding
from metaopt.learners.core import Params
from metaopt.tasks.base import TaskBatch, TaskKind


class MemoryCore(nn.Module):
    """The LSTM controller with its content-read, least-recently-used-write memory, run over ``[batch, time, in]``."""

    def __init__(self, inputs: int, hidden: int, slots: int, slot_size: int, reads: int, gamma: float) -> None:
        super().__init__()
        self.slots, self.slot_size, self.reads, self.gamma = slots, slot_size, reads, gamma
        self.controller = nn.LSTMCell(inputs + reads * slot_size, hidden)
        self.keys = nn.Linear(hidden, reads * slot_size)
        self.adds = nn.Linear(hidden, reads * slot_size)
        self.strengths = nn.Linear(hidden, reads)
        self.gates = nn.Linear(hidden, reads)
        self.width = hidden + reads * slot_size

    def forward(self, steps: Tensor) -> Tensor:
        """The controller state and memory reads ``[batch, time, hidden + reads * slot_size]`` at every step."""
        batch, time = steps.shape[:2]
        h = c = steps.new_zeros(batch, self.controller.hidden_size)
        read = steps.new_zeros(batch, self.reads * self.slot_size)
        memory = steps.new_full((batch, self.slots, self.slot_size), 1e-6)  # reset per task
        usage = steps.new_zeros(batch, self.slots)
        read_weights = steps.new_zeros(batch, self.reads, self.slots)
        outputs = []
        for t in range(time):
            h, c = self.controller(torch.cat([steps[:, t], read], -1), (h, c))
            keys = torch.tanh(self.keys(h)).view(batch, self.reads, self.slot_size)
            adds = torch.tanh(self.adds(h)).view(batch, self.reads, self.slot_size)
            # Write: each head's add vector to a mix of its last read rows and the least-used rows (cleared first).
            least_used = usage.topk(self.reads, largest=False).indices  # [batch, reads]
            lru = F.one_hot(least_used, self.slots).to(steps.dtype)  # [batch, reads, slots]
            gate = torch.sigmoid(self.gates(h))[..., None]
            write_weights = gate * read_weights + (1 - gate) * lru
            memory = memory * (1 - lru[:, :1].transpose(1, 2))  # the least-used row cleared
            memory = memory + write_weights.transpose(1, 2) @ adds
            # Read by content, on the memory just written.
            similarity = F.cosine_similarity(keys[:, :, None], memory[:, None], dim=-1, eps=1e-8)
            strength = 1 + F.softplus(self.strengths(h))[..., None]  # sharpens a read, as the NTM's key strength
            read_weights = (strength * similarity).softmax(-1)  # [batch, reads, slots]
            read = (read_weights @ memory).flatten(1)
            usage = self.gamma * usage + read_weights.sum(1) + write_weights.sum(1)
            outputs.append(torch.cat([h, read], -1))
        return torch.stack(outputs, 1)


class MANN(ContextLearner):
    """An LSTM with an external memory, reading the task as a stream with each label shown one step late."""

    name: ClassVar[str] = "mann"
    task_kinds: ClassVar[tuple[TaskKind, ...]] = ("regression", "classification")
    sequential: ClassVar[bool] = True
    hyperparameters: ClassVar[dict[str, HParam]] = {
        **{k: v for k, v in CONTEXT_HPARAMS.items() if k != "width"},
        "hidden": HParam(type=int, default=200, minimum=1, help="LSTM controller units (the paper: 200)"),
        "slots": HParam(type=int, default=128, minimum=2, help="memory rows (the paper: 128)"),
        "slot_size": HParam(type=int, default=40, minimum=1, help="memory row width (the paper: 40)"),
        "reads": HParam(type=int, default=4, minimum=1, help="read heads (the paper: 4)"),
        "gamma": HParam(type=float, default=0.95, minimum=0.0, maximum=1.0, help="usage decay"),
    }

    @classmethod
    def build_network(cls, backbone: dict[str, Any], *, input_shape: tuple[int, ...], output_size: int,
                      hparams: dict[str, Any]) -> nn.Module:
        """The embedding and the memory core over ``[e(x_t), y_{t-1}]`` steps (the head is the learner's)."""
        embed, features = embedding(backbone, input_shape)
        core = MemoryCore(features + output_size, hparams["hidden"], hparams["slots"], hparams["slot_size"],
                          hparams["reads"], hparams["gamma"])
        network = nn.ModuleDict({"embed": embed, "core": core})
        network.outputs, network.width = output_size, core.width
        return network

    def stream(self, meta: Params, x: Tensor, targets: Tensor) -> Tensor:
        """The head's prediction of every step's target from the stream ``x [b, time, f]``, ``targets [b, time, o]``
        (features), each target shown at the next step."""
        late = F.pad(targets, (0, 0, 1, 0))[:, :-1]  # y_{t-1}, zeros first
        return self.head(meta, self.call("core", meta, torch.cat([x, late], -1)))

    def stream_predictions(self, batch: TaskBatch) -> Tensor:
        """Every step's prediction ``[tasks, shots, ...]`` of each task's support set read as a stream, in order
        (the paper's measure: accuracy by how many times a class was seen)."""
        meta = self.meta_parameters()
        with torch.no_grad():
            x = self.embed_episodes(meta, batch.support_x)
            return self.stream(meta, x, self.target_features(batch.support_y, self._n_way(batch.support_y)))

    def training_loss(self, meta: Params, batch: TaskBatch) -> Tensor:
        """Every step's loss on the stream of each task's support and queries in a random order."""
        everything = TaskBatch(torch.cat([batch.support_x, batch.query_x], 1),
                               torch.cat([batch.support_y, batch.query_y], 1), batch.query_x, batch.query_y)
        stream = self.shuffled(everything)
        x = self.embed_episodes(meta, stream.support_x)
        predictions = self.stream(meta, x, self.target_features(stream.support_y, self._n_way(batch.support_y)))
        return self.episode_loss(predictions, stream.support_y)

    def batch_predictions(self, meta: Params, batch: TaskBatch) -> Tensor:
        """Every query read as the last step of its own stream: the support in order, then the query."""
        n_way = self._n_way(batch.support_y)
        support, query = self.embed_episodes(meta, batch.support_x), self.embed_episodes(meta, batch.query_x)
        codes = self.target_features(batch.support_y, n_way)
        tasks, queries = query.shape[:2]
        x = torch.cat([support[:, None].expand(-1, queries, -1, -1), query[:, :, None]], 2).flatten(0, 1)
        targets = F.pad(codes, (0, 0, 0, 1))[:, None].expand(-1, queries, -1, -1).flatten(0, 1)  # the query's: 0
        return self.stream(meta, x, targets)[:, -1].unflatten(0, (tasks, queries))
