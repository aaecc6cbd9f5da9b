"""Task families: each yields stacked ``TaskBatch`` tensors for train/val/test splits."""

from __future__ import annotations

from metaopt.tasks.base import SPLITS, Split, TaskBatch, TaskFamily
from metaopt.tasks.glyphs import Glyphs, GlyphsCrossFont
from metaopt.tasks.sine import Sine

FAMILIES: dict[str, type[TaskFamily]] = {"sine": Sine, "glyphs": Glyphs, "glyphs-crossfont": GlyphsCrossFont}

__all__ = ["FAMILIES", "SPLITS", "Glyphs", "GlyphsCrossFont", "Sine", "Split", "TaskBatch", "TaskFamily"]
