"""MeLU's network (Lee et al. 2019): embeddings of a rating's user and item features, then decision layers.

It reads the ``movielens`` family's features: user id and item id (ignored: a new user or
item has none worth learning), age bucket, gender, occupation, release-year bucket (each an
embedding of ``embedding`` units), and the genres (multi-hot: the mean of their embeddings).
The decision layers (``decision.*``) are an MLP of ``hidden`` widths to the output; MeLU's
local update adapts those only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from metaopt.models.mlp import MLP
from metaopt.tasks.movielens import CATEGORIES, GENRES, IDS


class MeLUNet(nn.Module):
    """Feature embeddings, concatenated, through decision layers to ``out_features`` (a rating)."""

    def __init__(self, *, input_shape: tuple[int, ...], out_features: int | None, embedding: int = 32,
                 hidden: Sequence[int] = (64, 64), activation: str = "relu") -> None:
        super().__init__()
        expected = IDS + len(CATEGORIES) + len(GENRES)
        if tuple(input_shape) != (expected,):
            raise ValueError(f"the melu backbone reads the movielens family's {expected} features, got input "
                             f"shape {tuple(input_shape)}")
        self.embeddings = nn.ModuleList(nn.Embedding(size, embedding) for size in CATEGORIES.values())
        self.genres = nn.Linear(len(GENRES), embedding, bias=False)
        width = embedding * (len(CATEGORIES) + 1)
        hidden = list(hidden)
        self.decision = MLP(in_features=width, out_features=out_features if out_features else hidden[-1],
                            hidden=hidden if out_features else hidden[:-1], activation=activation)
        self.embedding_size = out_features or hidden[-1]

    def forward(self, x: Tensor) -> Tensor:
        """Ratings (or decision features) of ``x [..., features]``."""
        codes = x[..., IDS: IDS + len(CATEGORIES)].long()
        genres = x[..., IDS + len(CATEGORIES):]
        parts = [table(codes[..., i]) for i, table in enumerate(self.embeddings)]
        parts.append(self.genres(genres) / genres.sum(-1, keepdim=True).clamp(min=1.0))
        return self.decision(torch.cat(parts, -1))
