"""Conditional neural processes (Garnelo, Rosenbaum, Maddison, Ramalho, Saxton, Shanahan, Teh, Rezende & Eslami,
ICML 2018): a task is the mean of its encoded support pairs.

Per episode:  r_i = h(e(x_i), y_i) for each support pair (y_i one-hot for classes),
  regression:      r = mean_i r_i (order-free), (mu, sigma) = g(e(x*), r) for each query x*,
                   sigma = 0.1 + 0.9 softplus(.);
  classification:  the paper's class-wise aggregate, r_c = mean of r_i over class c's support
                   examples, and the logit of class c is g(e(x*), r_c).
Training maximises the queries' log-likelihood (Gaussian for regression, categorical for
classification) over tasks; at test a new task is read in one forward pass, no gradient
step. ``e`` is the job's backbone as an embedding network; h and g are MLPs of
``layers`` layers of ``width``. The leaderboard scores the mean (MSE) or the logits (accuracy).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaopt.learners.base import HParam
from metaopt.learners.context import CONTEXT_HPARAMS, ContextLearner, embedding, mlp
from metaopt.learners.core import Params
from metaopt.tasks.base import TaskBatch, TaskKind


class CNP(ContextLearner):
    """A conditional neural process: encode each support pair, average, decode each query."""

    name: ClassVar[str] = "cnp"
    task_kinds: ClassVar[tuple[TaskKind, ...]] = ("regression", "classification")
    hyperparameters: ClassVar[dict[str, HParam]] = {
        **CONTEXT_HPARAMS,
        "layers": HParam(type=int, default=3, minimum=1, help="layers of the encoder and of the decoder"),
    }

    @classmethod
    def build_network(cls, backbone: dict[str, Any], *, input_shape: tuple[int, ...], output_size: int,
                      hparams: dict[str, Any]) -> nn.Module:
        """The embedding ``e``, the pair encoder ``h`` and the query decoder ``g`` (the head is the learner's)."""
        embed, features = embedding(backbone, input_shape)
        width, layers = hparams["width"], hparams["layers"]
        network = nn.ModuleDict({
            "embed": embed,
            "encode": mlp([features + output_size] + [width] * layers),
            "decode": nn.Sequential(mlp([features + width] + [width] * layers), nn.ReLU()),
        })
        network.outputs = output_size
        return network

    def head_size(self) -> int:
        """A mean and a spread per value (regression); one logit, per class aggregate (classification)."""
        return 2 * int(self.backbone.outputs) if self.task_kind == "regression" else 1

    def batch_outputs(self, meta: Params, batch: TaskBatch) -> Tensor:
        """The head's outputs of every episode at once: ``[tasks, queries, 2 d]`` or logits ``[tasks, queries, ways]``."""
        n_way = self._n_way(batch.support_y)
        support, query = self.embed_episodes(meta, batch.support_x), self.embed_episodes(meta, batch.query_x)
        codes = self.target_features(batch.support_y, n_way)
        encoded = self.call("encode", meta, torch.cat([support, codes], -1))  # [tasks, shots, width]
        if self.task_kind == "classification":
            per_class = codes.transpose(1, 2) @ encoded / codes.sum(1).clamp(min=1)[..., None]  # [tasks, ways, width]
            queries, ways = query.shape[1], per_class.shape[1]
            reading = torch.cat([query[:, :, None].expand(-1, -1, ways, -1),
                                 per_class[:, None].expand(-1, queries, -1, -1)], -1)  # [tasks, q, ways, f + w]
            return self.head(meta, self.call("decode", meta, reading))[..., 0]
        task = encoded.mean(1)  # [tasks, width]
        reading = torch.cat([query, task[:, None].expand(-1, query.shape[1], -1)], -1)  # [tasks, queries, f + width]
        return self.head(meta, self.call("decode", meta, reading))

    def batch_predictions(self, meta: Params, batch: TaskBatch) -> Tensor:
        """The predictive mean (regression) or the logits (classification) of every query."""
        outputs = self.batch_outputs(meta, batch)
        return outputs[..., : self.backbone.outputs] if self.task_kind == "regression" else outputs

    def query_log_likelihood(self, meta: Params, batch: TaskBatch) -> Tensor:
        """Each query's log-likelihood under the predictive distribution ``[tasks, queries, ...]``: Gaussian (a mean
        and a spread) for values, categorical for classes."""
        outputs = self.batch_outputs(meta, batch)
        if self.task_kind != "regression":
            return -F.cross_entropy(outputs.transpose(1, -1), batch.query_y.long(), reduction="none")
        mean, spread = outputs.chunk(2, -1)
        sigma = 0.1 + 0.9 * F.softplus(spread)
        return torch.distributions.Normal(mean, sigma).log_prob(batch.query_y.to(mean.dtype))

    def log_likelihood(self, batch: TaskBatch) -> Tensor:
        """Each task's mean query log-likelihood ``[tasks]`` (per value), read in one forward pass (no gradient)."""
        with torch.no_grad():
            return self.query_log_likelihood(self.meta_parameters(), batch).flatten(1).mean(1)

    def training_loss(self, meta: Params, batch: TaskBatch) -> Tensor:
        """The queries' negative log-likelihood: Gaussian (mean and spread) for values, categorical for classes."""
        return -self.query_log_likelihood(meta, batch).mean()
