"""Task families: each yields stacked ``TaskBatch`` tensors for train/val/test splits."""

from __future__ import annotations

from metaopt.tasks.base import SPLITS, Split, TaskBatch, TaskFamily
from metaopt.tasks.episodes import EpisodeFamily
from metaopt.tasks.glyphs import Glyphs, GlyphsCrossFont
from metaopt.tasks.image_folders import MiniImageNet, Omniglot
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
    "Glyphs",
    "GlyphsCrossFont",
    "MiniImageNet",
    "Omniglot",
    "Sine",
    "Split",
    "TaskBatch",
    "TaskFamily",
]
