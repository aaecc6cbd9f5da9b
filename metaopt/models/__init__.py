"""Backbones as plain ``nn.Module``s, built by name from a job's ``backbone`` section."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from metaopt.models.conv4 import Conv4
from metaopt.models.melu import MeLUNet
from metaopt.models.mlp import MLP
from metaopt.models.resnet import ResNet12, ResNet18

BACKBONES: dict[str, type[nn.Module]] = {"mlp": MLP, "conv4": Conv4, "resnet12": ResNet12, "resnet18": ResNet18,
                                         "melu": MeLUNet}


def build_backbone(spec: dict[str, Any], *, input_shape: tuple[int, ...], out_features: int | None) -> nn.Module:
    """The backbone ``spec["name"]`` for inputs of ``input_shape``; ``out_features=None``: an embedding network."""
    options = {k: v for k, v in spec.items() if k != "name"}
    if spec["name"] == "mlp":
        options.setdefault("input_dims", len(input_shape))
        if out_features is None:  # an embedding MLP: its last hidden width is the embedding
            hidden = list(options.pop("hidden", [40, 40]))
            return MLP(in_features=math.prod(input_shape), out_features=hidden[-1], hidden=hidden[:-1], **options)
        return MLP(in_features=math.prod(input_shape), out_features=out_features, **options)
    return BACKBONES[spec["name"]](input_shape=tuple(input_shape), out_features=out_features, **options)


__all__ = ["BACKBONES", "MLP", "Conv4", "MeLUNet", "ResNet12", "ResNet18", "build_backbone"]
