"""Few-shot text classification a language model can read: a movie's title (with its year) to its genre.

The movies are MovieLens-100K's (``root``: GroupLens's ``u.item`` or RecBole's ``.item``; ``python
benchmarks/data/movielens100k.py`` reads them out of the ``recbole`` wheel on PyPI into ``<cache>/ml-100k``, the
default). A movie belongs to the family when exactly one of its genres is among ``genres`` (default Action, Comedy,
Drama, Horror: 166, 376, 588 and 63 movies of ML-100K); that genre is its label, and the labels' names are the same
for every task, so a language model reads them. Movies are split between train, val and test by id modulo 3: a test
task's titles were never seen in training. A task offers a ``pool`` of labelled titles (as many of each genre) and
``queries`` titles to classify (as many of each genre); an in-context model sees ``context`` of the pool for each query
— which ones is what a selector (``metaopt.incontext``) chooses; a learner that adapts reads the whole pool.

Inputs are each title's static embedding from ``wordllama`` (MIT; its 256-dimensional ``l2_supercat`` weights and
tokenizer ship inside the wheel, nothing is downloaded): what a scorer or KATE's nearest neighbours compare. ``decode``
turns inputs back into the titles, for a language model's prompt.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import ClassVar

import torch
from pydantic import Field, model_validator
from torch import Tensor

from metaopt.tasks.base import SPLITS, Count, FamilyOptions, Split, TaskBatch, TaskFamily
from metaopt.tasks.metrics import CLASSIFICATION
from metaopt.tasks.movielens import GENRES, read_items

DEFAULT_GENRES = ("Action", "Comedy", "Drama", "Horror")


def default_root() -> str:
    """``<metaopt cache>/ml-100k``, where ``benchmarks/data/movielens100k.py`` puts the data."""
    from metaopt.tasks.cache import default_cache_dir

    return str(default_cache_dir() / "ml-100k")


class MovieGenresOptions(FamilyOptions):
    """Which genres are the labels, how many labelled titles a task offers, how many a model sees, and queries."""

    path_fields: ClassVar[tuple[str, ...]] = ("root",)
    root: str = Field(default_factory=default_root, description="a folder with MovieLens-100K's u.item or .item")
    genres: list[str] = Field(default=list(DEFAULT_GENRES), min_length=2, description="the labels, in way order")
    pool: Count = Field(default=24, description="labelled titles a task offers (as many of each genre)")
    context: Count = Field(default=4, description="titles an in-context model sees for each query")
    queries: Count = Field(default=8, description="titles to classify a task (as many of each genre)")

    @model_validator(mode="after")
    def _consistent(self) -> MovieGenresOptions:
        unknown = [g for g in self.genres if g not in GENRES]
        if unknown:
            raise ValueError(f"genres: {unknown[0]!r} is not a MovieLens genre (allowed: {', '.join(GENRES)})")
        if len(set(self.genres)) != len(self.genres):
            raise ValueError("genres: each genre once")
        for name in ("pool", "queries"):
            if getattr(self, name) % len(self.genres):
                raise ValueError(f"{name}: {getattr(self, name)} is not a multiple of the {len(self.genres)} genres")
        if self.context > self.pool:
            raise ValueError(f"context: {self.context} titles cannot be chosen from a pool of {self.pool}")
        return self


class MovieGenres(TaskFamily):
    """A movie title to its genre, few-shot, with a pool of labelled titles to choose a context from."""

    name: ClassVar[str] = "movie-genres"
    kind = "classification"
    Options = MovieGenresOptions
    metrics = CLASSIFICATION

    @classmethod
    def key(cls, options: MovieGenresOptions) -> str:
        """``movie-genres-action-comedy-drama-horror-n24-k4-q8``."""
        genres = "-".join(g.lower().replace("'", "") for g in options.genres)
        return f"movie-genres-{genres}-n{options.pool}-k{options.context}-q{options.queries}"

    def __init__(self, *, root: str | None = None, genres: list[str] | tuple[str, ...] = DEFAULT_GENRES,
                 pool: int = 24, context: int = 4, queries: int = 8) -> None:
        root = root or default_root()
        if not Path(root).expanduser().is_dir():
            raise FileNotFoundError(f"movie-genres: root {root} is not a folder (fetch MovieLens-100K there with "
                                    f"python benchmarks/data/movielens100k.py --dest {root})")
        self.genres, self.pool, self.context, self.queries = list(genres), pool, context, queries
        self.n_way = self.output_size = len(self.genres)
        labelled = [(item, title, [g for g in found if g in self.genres]) for item, title, _, found in read_items(root)]
        labelled = [(item, title, chosen[0]) for item, title, chosen in labelled if len(chosen) == 1 and title]
        self.titles = [title for _, title, _ in labelled]
        self.labels = torch.tensor([self.genres.index(genre) for _, _, genre in labelled])
        self.embeddings = embed(self.titles)
        self.input_shape = (self.embeddings.shape[1],)
        self._text_of = {row.numpy().tobytes(): title for row, title in zip(self.embeddings, self.titles, strict=True)}
        split_of = torch.tensor([int(item) % 3 if item.isdigit() else zlib.crc32(item.encode()) % 3
                                 for item, _, _ in labelled])
        per_way = (pool + queries) // self.n_way
        self.members: dict[str, list[Tensor]] = {}
        for index, split in enumerate(SPLITS):
            self.members[split] = [torch.nonzero((split_of == index) & (self.labels == way))[:, 0]
                                   for way in range(self.n_way)]
            fewest = min(range(self.n_way), key=lambda way: len(self.members[split][way]))
            if len(self.members[split][fewest]) < per_way:
                raise ValueError(f"movie-genres: the {split} split has {len(self.members[split][fewest])} "
                                 f"{self.genres[fewest]} titles; a task needs {per_way} of each genre "
                                 f"(lower pool or queries)")

    def sample(self, batch_size: int, split: Split, generator: torch.Generator) -> TaskBatch:
        """``batch_size`` tasks of ``split``: a shuffled pool and the queries, as many of each genre."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        shots, asked = self.pool // self.n_way, self.queries // self.n_way
        pools, queries = [], []
        for members in self.members[split]:
            order = torch.rand(batch_size, len(members), generator=generator).argsort(1)[:, : shots + asked]
            chosen = members[order]  # [tasks, shots + asked]
            pools.append(chosen[:, :shots])
            queries.append(chosen[:, shots:])
        pool, query = torch.cat(pools, 1), torch.cat(queries, 1)
        pool = pool.gather(1, torch.rand(pool.shape, generator=generator).argsort(1))
        return TaskBatch(self.embeddings[pool], self.labels[pool], self.embeddings[query], self.labels[query])

    @property
    def label_names(self) -> list[str]:
        """Way ``i``'s name, for a language model's prompt: the genres."""
        return list(self.genres)

    def decode(self, x: Tensor) -> list[str]:
        """The titles of inputs ``[n, dim]`` (rows of this family's embeddings)."""
        rows = x.detach().to("cpu", torch.float32).contiguous()
        try:
            return [self._text_of[row.numpy().tobytes()] for row in rows]
        except KeyError:
            raise ValueError("movie-genres: an input is not the embedding of one of the family's titles") from None


def embed(texts: list[str]) -> Tensor:
    """Each text's ``wordllama`` embedding (``l2_supercat``, 256 dimensions, from the wheel's own files)."""
    try:
        import wordllama
        from wordllama import WordLlama
    except ImportError:
        raise ImportError("movie-genres: the wordllama package is not installed (pip install wordllama)") from None
    model = WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
    return torch.from_numpy(model.embed(texts)).float().contiguous()
