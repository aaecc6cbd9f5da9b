"""Task families: each yields stacked ``TaskBatch`` tensors for train/val/test splits.

Adding a family is one module (a ``TaskFamily`` with its ``Options``, ``metrics``
and ``key``) and one line in ``FAMILIES``; another package adds one through the
``metaopt.families`` entry-point group (``metaopt.plugins``).
"""

from __future__ import annotations

from metaopt.tasks.bandit import Bandit
from metaopt.tasks.base import SPLITS, FamilyOptions, PooledBatch, Split, TaskBatch, TaskFamily
from metaopt.tasks.episodes import EpisodeFamily, EpisodeOptions
from metaopt.tasks.functions import Functions
from metaopt.plugins import Registry
from metaopt.tasks.glyphs import Glyphs, GlyphsCrossFont
from metaopt.tasks.image_folders import MiniImageNet, Omniglot
from metaopt.tasks.imagefolder import ImageFolder
from metaopt.tasks.metrics import Metric
from metaopt.tasks.movie_genres import MovieGenres
from metaopt.tasks.movielens import MovieLens
from metaopt.tasks.sine import Sine
from metaopt.tasks.tabular import Tabular
from metaopt.tasks.tabular_mdp import TabularMDP

FAMILIES: Registry[TaskFamily] = Registry("metaopt.families", {
    "sine": Sine,
    "glyphs": Glyphs,
    "glyphs-crossfont": GlyphsCrossFont,
    "omniglot": Omniglot,
    "miniimagenet": MiniImageNet,
    "imagefolder": ImageFolder,
    "tabular": Tabular,
    "functions": Functions,
    "bandit": Bandit,
    "tabular-mdp": TabularMDP,
    "movielens": MovieLens,
    "movie-genres": MovieGenres,
}, TaskFamily, "family")

__all__ = [
    "Bandit",
    "FAMILIES",
    "SPLITS",
    "EpisodeFamily",
    "EpisodeOptions",
    "FamilyOptions",
    "Functions",
    "Glyphs",
    "GlyphsCrossFont",
    "ImageFolder",
    "Metric",
    "MiniImageNet",
    "MovieGenres",
    "MovieLens",
    "Omniglot",
    "Sine",
    "Split",
    "Tabular",
    "TabularMDP",
    "PooledBatch",
    "TaskBatch",
    "TaskFamily",
]
