"""Backbones as plain ``nn.Module``s, built by name from a job's ``backbone`` section."""

from __future__ import annotations

from typing import Any

from torch import nn

from metaopt.models.mlp import MLP

BACKBONES: dict[str, type[nn.Module]] = {"mlp": MLP}


def build_backbone(spec: dict[str, Any], *, in_features: int, out_features: int) -> nn.Module:
    """Build the backbone named by ``spec["name"]`` for the given input and output sizes."""
    options = {k: v for k, v in spec.items() if k != "name"}
    return BACKBONES[spec["name"]](in_features=in_features, out_features=out_features, **options)


__all__ = ["BACKBONES", "MLP", "build_backbone"]
