"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, NeurIPS 2016).

Per episode: attention a(x, x_i) = softmax_i(scale * cos(f(x), f(x_i))) over the
support set, and the prediction is the attention-weighted sum of the support
labels, P(y = k | x) = sum_i a(x, x_i) [y_i = k]; the loss is its negative log.
The embedding is shared between support and queries; the optional full-context
embeddings (LSTMs over the support set) are not implemented. ``scale`` sharpens
the cosine attention (1 is the paper's plain cosine).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from metaopt.learners.base import POSITIVE_FLOAT, HParam
from metaopt.learners.core import Params
from metaopt.learners.metric import METRIC_HPARAMS, MetricLearner


class MatchingNet(MetricLearner):
    """Cosine attention over the support set."""

    name = "matchingnet"
    hyperparameters = {
        **METRIC_HPARAMS,
        "scale": HParam(default=10.0, help="sharpness of the cosine attention", **POSITIVE_FLOAT),
    }

    def episode_logits(self, meta: Params, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int) -> Tensor:
        """log P(y = k | x): the log of the attention mass on each class."""
        support = F.normalize(self.embed(meta, support_x), dim=-1)  # [shots*ways, d]
        query = F.normalize(self.embed(meta, query_x), dim=-1)  # [queries, d]
        attention = torch.softmax(self.hparams["scale"] * query @ support.T, dim=-1)  # [queries, shots*ways]
        probabilities = attention @ F.one_hot(support_y, n_way).to(attention.dtype)  # [queries, ways]
        return torch.log(probabilities.clamp_min(1e-12))
