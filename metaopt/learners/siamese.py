"""Siamese networks for one-shot recognition (Koch, Zemel & Salakhutdinov, ICML DL workshop 2015): a pairwise baseline.

A learned pair score s(x, x') = w . |f(x) - f(x')| + b is trained with binary
cross-entropy on every (query, support) pair of an episode (same class or not); a
query's logit for class k is its best pair score against that class's supports.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaopt.learners.core import Params
from metaopt.learners.metric import MetricLearner
from metaopt.tasks.base import TaskBatch


class Siamese(MetricLearner):
    """Nearest support example under a learned pairwise similarity."""

    name = "siamese"

    def make_extras(self) -> dict[str, nn.Parameter]:
        """The pair scorer: one weight per embedding dimension and a bias."""
        probe = next(iter(self.params.values()))
        width = getattr(self.backbone, "embedding_size", None)
        if width is None:
            width = [m for m in self.backbone.modules() if isinstance(m, nn.Linear)][-1].out_features
        return {"pair.w": nn.Parameter(torch.full((width,), 0.1).to(probe)), "pair.b": nn.Parameter(torch.zeros(()).to(probe))}

    def pair_scores(self, meta: Params, support_x: Tensor, query_x: Tensor) -> Tensor:
        """Scores ``[queries, supports]`` of every pair."""
        support, query = self.embed(meta, support_x), self.embed(meta, query_x)
        return (query.unsqueeze(1) - support.unsqueeze(0)).abs() @ meta["pair.w"] + meta["pair.b"]

    def episode_logits(self, meta: Params, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int) -> Tensor:
        """Best pair score per class ``[queries, ways]``."""
        scores = self.pair_scores(meta, support_x, query_x)
        onehot = F.one_hot(support_y, n_way).bool()  # [supports, ways]
        masked = scores.unsqueeze(-1).masked_fill(~onehot.unsqueeze(0), float("-inf"))  # [queries, supports, ways]
        return masked.amax(1)

    def training_loss(self, meta: Params, batch: TaskBatch) -> Tensor:
        """Binary cross-entropy over every (query, support) pair of every episode."""
        scores = torch.vmap(lambda sx, qx: self.pair_scores(meta, sx, qx))(batch.support_x, batch.query_x)
        same = (batch.query_y.unsqueeze(-1) == batch.support_y.unsqueeze(-2)).to(scores.dtype)  # [tasks, q, s]
        return F.binary_cross_entropy_with_logits(scores, same)
