"""``metanet``: Meta Networks (Munkhdalai & Yu, ICML 2017): fast weights generated from the support's loss gradients.

A base learner (two layers on the embedding ``e(x)``: ``hidden`` ReLU units, then the
outputs) has slow weights, meta-trained. Reading a task, each support example's loss
gradient with respect to the base learner's weights, ``grad_i``, goes through the meta
learner ``g``, a small network applied to every coordinate of the gradient (preprocessed
as ``(log|grad| / 10, sign(grad))``, clipped, as the paper's gradient preprocessing), giving
the example-level fast weights ``W*_i = g(grad_i)``. They are stored in a memory keyed by the
example's key ``k_i = K(e(x_i))``; a query reads its fast weights by attention over the keys
(softmax of cosine similarity), and the base learner runs with layer augmentation: each
layer's slow and fast outputs summed after the activation (the last layer: before the
softmax). Nothing is adapted by gradient descent at test: the gradients are inputs to ``g``
(treated as data, without differentiating through them, as the paper's implementation), and
the prediction of a query depends on the support as a set. The paper's task-level fast
weights of the embedding (from a representation loss on support pairs) are left out.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad, vmap

from metaopt.learners.base import HParam
from metaopt.learners.context import CONTEXT_HPARAMS, ContextLearner, embedding, mlp
from metaopt.learners.core import Params
from metaopt.tasks.base import TaskBatch, TaskKind

PREPROCESS = 10.0  # the gradient preprocessing's p: log|g| / p, clipped to [-1, 1], with the sign


def preprocess(g: Tensor) -> Tensor:
    """Gradient coordinates ``[...]`` as two features ``[..., 2]``: scaled log magnitude and sign."""
    magnitude = (g.abs().clamp(min=1e-30).log() / PREPROCESS).clamp(-1, 1)
    return torch.stack([magnitude, g.sign()], -1)


class MetaNet(ContextLearner):
    """A base learner whose weights are augmented, per query, by fast weights read from a memory of the support's."""

    name: ClassVar[str] = "metanet"
    task_kinds: ClassVar[tuple[TaskKind, ...]] = ("regression", "classification")
    hyperparameters: ClassVar[dict[str, HParam]] = {
        **{k: v for k, v in CONTEXT_HPARAMS.items() if k != "width"},
        "hidden": HParam(type=int, default=64, minimum=1, help="units of the base learner's hidden layer"),
        "key_size": HParam(type=int, default=64, minimum=1, help="width of the memory keys"),
        "meta_hidden": HParam(type=int, default=20, minimum=1, help="units of the gradient-to-fast-weight network"),
    }

    @classmethod
    def build_network(cls, backbone: dict[str, Any], *, input_shape: tuple[int, ...], output_size: int,
                      hparams: dict[str, Any]) -> nn.Module:
        """The embedding, the base learner's slow weights, the key map and the meta learner ``g``."""
        embed, features = embedding(backbone, input_shape)
        network = nn.ModuleDict({
            "embed": embed,
            "base1": nn.Linear(features, hparams["hidden"]),
            "base2": nn.Linear(hparams["hidden"], output_size),
            "key": nn.Linear(features, hparams["key_size"]),
            "meta": mlp([2, hparams["meta_hidden"], hparams["meta_hidden"], 1]),
        })
        network.outputs = output_size
        return network

    def make_extras(self) -> dict[str, nn.Parameter]:
        """None: the base learner's last layer is the head."""
        return {}

    def head(self, meta: Params, hidden: Tensor) -> Tensor:
        """Unused: the base learner predicts."""
        raise NotImplementedError

    def base(self, meta: Params, x: Tensor, fast: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """The base learner on ``x [..., features]``, with fast weights ``(W1*, W2*)`` of matching batch shape added
        by layer augmentation."""
        w1, b1, w2, b2 = meta["base1.weight"], meta["base1.bias"], meta["base2.weight"], meta["base2.bias"]
        hidden = F.relu(F.linear(x, w1, b1))
        if fast is None:
            return F.linear(hidden, w2, b2)
        hidden = hidden + F.relu((fast[0] @ x[..., None])[..., 0])
        return F.linear(hidden, w2, b2) + (fast[1] @ hidden[..., None])[..., 0]

    def support_gradients(self, meta: Params, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Each support example's loss gradient with respect to the base learner's two weight matrices (as data)."""
        slow = (meta["base1.weight"].detach(), meta["base2.weight"].detach())
        b1, b2 = meta["base1.bias"].detach(), meta["base2.bias"].detach()

        def loss(w1: Tensor, w2: Tensor, one_x: Tensor, one_y: Tensor) -> Tensor:
            out = F.linear(F.relu(F.linear(one_x, w1, b1)), w2, b2)
            return self.criterion(out[None], one_y[None])

        per_example = vmap(vmap(grad(loss, argnums=(0, 1)), in_dims=(None, None, 0, 0)), in_dims=(None, None, 0, 0))
        return per_example(*slow, x.detach(), y)

    def batch_predictions(self, meta: Params, batch: TaskBatch) -> Tensor:
        """Every query's prediction by the base learner augmented with the fast weights it reads from the memory."""
        support, query = self.embed_episodes(meta, batch.support_x), self.embed_episodes(meta, batch.query_x)
        g1, g2 = self.support_gradients(meta, support, batch.support_y)  # [tasks, shots, *weight]
        fast1, fast2 = (self.call("meta", meta, preprocess(g))[..., 0] for g in (g1, g2))
        keys = F.normalize(self.call("key", meta, support), dim=-1)
        attention = (F.normalize(self.call("key", meta, query), dim=-1) @ keys.transpose(1, 2)).softmax(-1)
        read = tuple(torch.einsum("tqs,tsij->tqij", attention, fast) for fast in (fast1, fast2))
        return self.base(meta, query, read)
