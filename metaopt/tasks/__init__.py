"""Task families: each yields stacked ``TaskBatch`` tensors for train/val/test splits.

Adding a family is one module (a ``TaskFamily`` with its ``Options``, ``metrics``
and ``key``) and one line in ``FAMILIES``.
"""

from __future__ import annotations

from metaopt.tasks.base import SPLITS, FamilyOptions, Split, TaskBatch, TaskFamily
from metaopt.tasks.episodes import EpisodeFamily, EpisodeOptions
from metaopt.tasks.glyphs import Glyphs, GlyphsCrossFont
from metaopt.tasks.image_folders import MiniImageNet, Omniglot
from metaopt.tasks.metrics import Metric
from metaopt.tasks.sine import Sine

FAMILIES: dict[str, type[TaskFamily]] = {
    "sine": Sine,
    "glyphs": Glyphs,
    "glyphs-crossfont": GlyphsCrossFont,
    "omniglot": Omniglot,
    "miniimagenet": MiniImageNet,
}

__all__ = [
    "FAMILIES",
    "SPLITS",
    "EpisodeFamily",
    "EpisodeOptions",
    "FamilyOptions",
    "Glyphs",
    "GlyphsCrossFont",
    "Metric",
    "MiniImageNet",
    "Omniglot",
    "Sine",
    "Split",
    "TaskBatch",
    "TaskFamily",
]
