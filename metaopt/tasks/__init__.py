"""Task families: each yields stacked ``TaskBatch`` tensors for train/val/test splits."""

from __future__ import annotations

from metaopt.tasks.base import SPLITS, Split, TaskBatch, TaskFamily
from metaopt.tasks.sine import Sine

FAMILIES: dict[str, type[TaskFamily]] = {"sine": Sine}

__all__ = ["FAMILIES", "SPLITS", "Sine", "Split", "TaskBatch", "TaskFamily"]
