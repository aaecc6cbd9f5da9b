"""Relation Networks (Sung, Yang, Zhang, Xiang, Torr & Hospedales, CVPR 2018).

Per episode: the class representation is the sum of its support embeddings; a
learned relation module g scores each (query, class) pair, r = sigmoid(g([f(x), c_k]));
the loss is the mean squared error of r against the one-hot labels, as in the paper.

On feature maps of at least 4x4 (Conv-4 with ``pooled_blocks: 2``: 64x7x7 on 28x28,
the paper's embedding) g is the paper's module: two blocks of 3x3 conv (as many
filters as the maps' channels), batch norm, ReLU and 2x2 max-pool on the
concatenated maps, then a ReLU layer of ``relation_hidden`` units and one output.
On smaller maps or embedding vectors (Conv-4 with every block pooled leaves 1x1
maps on 28x28; ResNet and MLP embed to vectors) g is a two-layer MLP on the
concatenated vectors instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaopt.learners.base import HParam
from metaopt.learners.core import Params
from metaopt.learners.metric import METRIC_HPARAMS, MetricLearner, class_means

CONV_BLOCKS = ("relation.conv1", "relation.conv2")


def _norm_relu_pool(meta: Params, conv: str, z: Tensor) -> Tensor:
    """The rest of a relation block after its convolution ``conv``: batch norm, ReLU, 2x2 max-pool."""
    bn = conv.replace("conv", "bn")
    z = F.batch_norm(z, None, None, meta[f"{bn}.weight"], meta[f"{bn}.bias"], training=True)
    return F.max_pool2d(F.relu(z), 2)


class RelationNet(MetricLearner):
    """A learned similarity between a query and each class."""

    name = "relationnet"
    hyperparameters = {
        **METRIC_HPARAMS,
        # 32, not the paper's 8: on embedding vectors a width-8 ReLU layer often dies at the start.
        "relation_hidden": HParam(type=int, default=32, minimum=1, help="width of the relation module's ReLU layer"),
    }

    def feature_maps(self) -> tuple[int, int, int] | None:
        """``(channels, height, width)`` of the embedding when the conv relation module applies, else None."""
        shape = getattr(self.backbone, "feature_shape", None)
        return tuple(shape) if shape is not None and min(shape[1:]) >= 4 else None

    def make_extras(self) -> dict[str, nn.Parameter]:
        """The relation module's weights, sized from the embedding."""
        probe = next(iter(self.params.values()))
        hidden = self.hparams["relation_hidden"]
        maps = self.feature_maps()
        modules: dict[str, nn.Module] = {}
        if maps is None:
            width = self.embedding_width()
            first = nn.Linear(2 * width, hidden)
        else:
            channels, height, width = maps
            for name in CONV_BLOCKS:
                modules[name] = nn.Conv2d(2 * channels if name.endswith("1") else channels, channels, 3, padding=1)
                modules[name.replace("conv", "bn")] = nn.BatchNorm2d(channels)
                height, width = height // 2, width // 2
            first = nn.Linear(channels * height * width, hidden)
        second = nn.Linear(hidden, 1)
        tensors = {f"{prefix}.{name}": p for prefix, module in modules.items() for name, p in module.named_parameters()}
        tensors.update({"relation.w1": first.weight, "relation.b1": first.bias,
                        "relation.w2": second.weight, "relation.b2": second.bias})
        return {name: nn.Parameter(p.detach().to(probe)) for name, p in tensors.items()}

    def relation_scores(self, meta: Params, query: Tensor, classes: Tensor) -> Tensor:
        """g on every (query, class) pair of ``query [q, ...]`` and ``classes [n, ...]`` (maps ``[C, H, W]`` or
        vectors ``[D]``): scores ``[q, n]`` before the sigmoid.

        g's first layer is linear, so on a concatenated pair it is the sum of its two halves applied to each
        part: q + n passes of half the width instead of q·n of the full width (Conv-4 5w1s: 30 maps through
        the first convolution, not 125; the same function, 1.3x the episode step on the CPU).
        """
        q, n = query.shape[0], classes.shape[0]
        if "relation.conv1.weight" in meta:
            weight, bias = meta["relation.conv1.weight"], meta["relation.conv1.bias"]
            half = query.shape[1]
            z = (F.conv2d(query, weight[:, :half], bias, padding=1).unsqueeze(1)
                 + F.conv2d(classes, weight[:, half:], padding=1).unsqueeze(0)).flatten(0, 1)
            z = _norm_relu_pool(meta, CONV_BLOCKS[0], z)
            for name in CONV_BLOCKS[1:]:
                z = _norm_relu_pool(meta, name, F.conv2d(z, meta[f"{name}.weight"], meta[f"{name}.bias"], padding=1))
            z = F.relu(F.linear(z.flatten(1), meta["relation.w1"], meta["relation.b1"]))
        else:
            weight, half = meta["relation.w1"], query.shape[1]
            z = F.relu((F.linear(query, weight[:, :half], meta["relation.b1"]).unsqueeze(1)
                        + F.linear(classes, weight[:, half:]).unsqueeze(0)).flatten(0, 1))
        return F.linear(z, meta["relation.w2"], meta["relation.b2"]).reshape(q, n)

    def episode_logits(self, meta: Params, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int) -> Tensor:
        """Relation scores ``[queries, ways]`` before the sigmoid."""
        support, query = self.embed(meta, support_x), self.embed(meta, query_x)
        shots = support.shape[0] // n_way
        classes = class_means(support, support_y, n_way) * shots  # summed, as in the paper
        maps = self.feature_maps()
        if maps is not None:
            query, classes = query.reshape(-1, *maps), classes.reshape(-1, *maps)
        return self.relation_scores(meta, query, classes)

    def episode_loss(self, logits: Tensor, query_y: Tensor) -> Tensor:
        """Mean squared error of sigmoid relation scores against one-hot labels."""
        return F.mse_loss(torch.sigmoid(logits), F.one_hot(query_y, logits.shape[-1]).to(logits.dtype))
