"""Relation Networks (Sung, Yang, Zhang, Xiang, Torr & Hospedales, CVPR 2018).

Per episode: the class representation is the sum of its support embeddings; a
learned relation module g scores each (query, class) pair, r = sigmoid(g([f(x), c_k]));
the loss is the mean squared error of r against the one-hot labels, as in the paper.
Here g is a two-layer MLP on concatenated embedding vectors (the paper convolves
concatenated 64x5x5 feature maps; Conv-4 with four poolings leaves 1x1 maps on
28x28 inputs, where the two coincide up to the kernel size).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaopt.learners.base import HParam
from metaopt.learners.core import Params
from metaopt.learners.metric import METRIC_HPARAMS, MetricLearner, class_means


class RelationNet(MetricLearner):
    """A learned similarity between a query and each class."""

    name = "relationnet"
    hyperparameters = {
        **METRIC_HPARAMS,
        # 32, not the paper's 8: on embedding vectors a width-8 ReLU layer often dies at the start.
        "relation_hidden": HParam(type=int, default=32, minimum=1, help="width of the relation module"),
    }

    def make_extras(self) -> dict[str, nn.Parameter]:
        """The relation module's weights, sized from the embedding width."""
        probe = next(iter(self.params.values()))
        width = self.embedding_width()
        hidden = self.hparams["relation_hidden"]
        first, second = nn.Linear(2 * width, hidden), nn.Linear(hidden, 1)
        return {
            "relation.w1": nn.Parameter(first.weight.detach().to(probe)),
            "relation.b1": nn.Parameter(first.bias.detach().to(probe)),
            "relation.w2": nn.Parameter(second.weight.detach().to(probe)),
            "relation.b2": nn.Parameter(second.bias.detach().to(probe)),
        }

    def episode_logits(self, meta: Params, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int) -> Tensor:
        """Relation scores ``[queries, ways]`` before the sigmoid."""
        support, query = self.embed(meta, support_x), self.embed(meta, query_x)
        shots = support.shape[0] // n_way
        classes = class_means(support, support_y, n_way) * shots  # summed, as in the paper
        pairs = torch.cat([query.unsqueeze(1).expand(-1, n_way, -1), classes.unsqueeze(0).expand(query.shape[0], -1, -1)], -1)
        hidden = F.relu(pairs @ meta["relation.w1"].T + meta["relation.b1"])
        return (hidden @ meta["relation.w2"].T + meta["relation.b2"]).squeeze(-1)

    def episode_loss(self, logits: Tensor, query_y: Tensor) -> Tensor:
        """Mean squared error of sigmoid relation scores against one-hot labels."""
        return F.mse_loss(torch.sigmoid(logits), F.one_hot(query_y, logits.shape[-1]).to(logits.dtype))


