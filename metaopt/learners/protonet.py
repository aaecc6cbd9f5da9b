"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017).

Per episode: prototypes c_k = mean of the embedded support examples of class k;
query logits = -||f(x) - c_k||^2 (squared Euclidean, the paper's choice), or
``scale * cos(f(x), c_k)`` with ``distance: cosine``. The outer loss is the query
cross-entropy; there is no inner loop.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from metaopt.learners.base import POSITIVE_FLOAT, HParam
from metaopt.learners.core import Params
from metaopt.learners.metric import METRIC_HPARAMS, MetricLearner, class_means


class ProtoNet(MetricLearner):
    """Nearest class mean in a learned embedding."""

    name = "protonet"
    hyperparameters = {
        **METRIC_HPARAMS,
        "distance": HParam(type=str, default="euclidean", choices=("euclidean", "cosine"), help="query-prototype metric"),
        "scale": HParam(default=10.0, help="logit scale of the cosine metric", **POSITIVE_FLOAT),
    }

    def episode_logits(self, meta: Params, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int) -> Tensor:
        """Negative squared distances (or scaled cosines) of queries to prototypes."""
        support, query = self.embed(meta, support_x), self.embed(meta, query_x)  # [shots*ways, d], [queries, d]
        prototypes = class_means(support, support_y, n_way)  # [ways, d]
        if self.hparams["distance"] == "cosine":
            return self.hparams["scale"] * F.normalize(query, dim=-1) @ F.normalize(prototypes, dim=-1).T
        return -((query.unsqueeze(1) - prototypes.unsqueeze(0)) ** 2).sum(-1)
