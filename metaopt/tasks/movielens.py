"""``movielens``: personalisation, each user a task (MeLU, Lee et al. 2019), from MovieLens-100K files.

``root`` holds GroupLens's layout (``u.data``, ``u.user``, ``u.item``) or RecBole's atomic
files (``<name>.inter``, ``.user``, ``.item``). MeLU's protocol: users with 13 to 100 ratings;
a task is one user, ``queries`` of their ratings the query set and the rest (or ``shots`` of
them) the support set. Users are split 80/20 into existing and new (a seeded permutation);
items into existing and new by release year (new from ``new_items_from``, 1997 by default:
ML-100K was collected up to April 1998, so it has only 53 movies of 1998; from 1997 on, 16% of
the ratings are of new items). Meta-training tasks are existing users' ratings of existing
items; validation and test tasks (disjoint users, half each) come from the ``scenario``:

- ``existing``: existing users and items; a user's last ``queries`` ratings in time are held out
  of training and are their query set (their earlier ratings, seen in training, the support);
- ``new-users``: new users' ratings of existing items;
- ``new-items``: existing users' ratings of new items (never seen in training);
- ``new-both``: new users' ratings of new items.

A rating's features (``x``, float): user id, item id, age bucket, gender, occupation, release
year bucket, then the genres (multi-hot). The ``melu`` backbone embeds the categorical ones and
ignores the ids (cold items and users have none worth learning); the mean baselines use them.
Support sets of different lengths are padded to one length with ``NaN`` targets, which the
``rating`` task kind's loss leaves out. Metrics over each user's query items: MAE (primary,
lower is better) and nDCG@3 with gain 2^rating − 1.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from metaopt.tasks.base import SPLITS, Count, FamilyOptions, PooledBatch, Split, TaskBatch, TaskFamily
from metaopt.tasks.metrics import Metric

AGE_EDGES = (18, 25, 35, 45, 50, 56)  # MovieLens-1M's age groups: under 18, 18-24, ..., 56 and over
YEAR_FIRST, YEAR_STEP, YEAR_BUCKETS = 1920, 5, 18  # bucket 0: unknown year; 1: up to 1924; ...
OCCUPATION_SLOTS = 32  # room for every occupation of ML-100K (21) and ML-1M (21)
GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
# Categorical feature columns of x after the two ids, and how many values each takes (what melu embeds).
CATEGORIES = {"age": len(AGE_EDGES) + 1, "gender": 2, "occupation": OCCUPATION_SLOTS, "year": YEAR_BUCKETS}
IDS = 2  # user id, item id
MIN_RATINGS, MAX_RATINGS = 13, 100  # MeLU's users
SCENARIOS = ("existing", "new-users", "new-items", "new-both")


def mae(predictions: Tensor, targets: Tensor) -> Tensor:
    """Mean absolute error of each user's query ratings ``[tasks]``."""
    return (predictions - targets).abs().flatten(1).mean(1)


def ndcg_at_3(predictions: Tensor, targets: Tensor) -> Tensor:
    """nDCG@3 of each user's query items ranked by predicted rating, gain ``2^rating - 1`` ``[tasks]``."""
    scores, ratings = predictions.flatten(1), targets.flatten(1)
    k = min(3, ratings.shape[1])
    discount = 1 / torch.log2(torch.arange(2, k + 2, dtype=ratings.dtype, device=ratings.device))
    ranked = ratings.gather(1, scores.argsort(1, descending=True)[:, :k])
    ideal = ratings.sort(1, descending=True).values[:, :k]
    dcg, best = ((2**ranked - 1) * discount).sum(1), ((2**ideal - 1) * discount).sum(1)
    return dcg / best.clamp(min=1e-12)


RATING_METRICS = (Metric("mae", "minimize", "MAE", mae), Metric("ndcg3", "maximize", "nDCG@3", ndcg_at_3))


@dataclass(frozen=True)
class Ratings:
    """Every rating and the users' and items' features, as tensors (users and items indexed from 0)."""

    user: Tensor  # [R] long
    item: Tensor  # [R] long
    rating: Tensor  # [R] float
    time: Tensor  # [R] long
    user_features: Tensor  # [U, 3] long: age bucket, gender, occupation
    item_year: Tensor  # [I] long: release year (0: unknown)
    item_genres: Tensor  # [I, len(GENRES)] float


def _age_bucket(age: int) -> int:
    return sum(age >= edge for edge in AGE_EDGES)


def _year(text: str) -> int:
    digits = text.strip()[-4:]
    return int(digits) if digits.isdigit() else 0


def _rows(path: Path, delimiter: str, encoding: str = "utf-8") -> list[list[str]]:
    with open(path, newline="", encoding=encoding, errors="replace") as f:
        return [row for row in csv.reader(f, delimiter=delimiter, quoting=csv.QUOTE_NONE) if row]


def _layout(root: Path) -> tuple[str, dict[str, Path]]:
    """Which layout ``root`` holds and its three files; ``FileNotFoundError`` naming what is missing."""
    if not root.is_dir():
        raise FileNotFoundError(f"movielens: root {root} is not a folder")
    grouplens = {"inter": root / "u.data", "user": root / "u.user", "item": root / "u.item"}
    if grouplens["inter"].is_file():
        missing = [p.name for p in grouplens.values() if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"movielens: {root} has u.data but not {', '.join(missing)}")
        return "grouplens", grouplens
    inter = sorted(root.glob("*.inter"))
    if not inter:
        raise FileNotFoundError(f"movielens: {root} holds neither u.data (GroupLens) nor a .inter file (RecBole); "
                                "fetch ML-100K with benchmarks/data/movielens100k.py")
    atomic = {"inter": inter[0], "user": inter[0].with_suffix(".user"), "item": inter[0].with_suffix(".item")}
    missing = [p.name for p in atomic.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"movielens: {root} has {inter[0].name} but not {', '.join(missing)}")
    return "recbole", atomic


def _atomic(path: Path) -> tuple[dict[str, int], list[list[str]]]:
    """A RecBole atomic file: column positions by name (``user_id:token`` -> ``user_id``) and the rows."""
    rows = _rows(path, "\t")
    return {name.split(":")[0]: i for i, name in enumerate(rows[0])}, rows[1:]


def _items(layout: str, path: Path) -> list[tuple[str, str, int, list[str]]]:
    """Each movie's id, title (with its year in brackets, as GroupLens writes it), year (0: unknown) and genres."""
    if layout == "grouplens":
        return [(r[0], r[1], _year(r[2]), [GENRES[i] for i, flag in enumerate(r[-len(GENRES):]) if flag.strip() == "1"])
                for r in _rows(path, "|", encoding="latin-1")]
    cols, rows = _atomic(path)
    out = []
    for r in rows:
        year = _year(r[cols["release_year"]]) if "release_year" in cols else 0
        title = r[cols["movie_title"]] if "movie_title" in cols else ""
        out.append((r[cols["item_id"]], f"{title} ({year})" if title and year else title, year,
                    r[cols["class"]].split() if "class" in cols else []))
    return out


def read_items(root: str | Path) -> list[tuple[str, str, int, list[str]]]:
    """The movies under ``root`` (either layout): id, title with its year, year, genres."""
    folder = Path(root).expanduser()
    if (folder / "u.item").is_file():
        return _items("grouplens", folder / "u.item")
    found = sorted(folder.glob("*.item"))
    if not found:
        raise FileNotFoundError(f"{folder} holds neither u.item (GroupLens) nor a .item file (RecBole); fetch ML-100K "
                                f"with benchmarks/data/movielens100k.py")
    return _items("recbole", found[0])


def read_ratings(root: str | Path) -> Ratings:
    """The ratings and features under ``root`` in either layout; ``ValueError`` naming the file for bad content."""
    layout, files = _layout(Path(root).expanduser())
    if layout == "grouplens":
        inter = [(r[0], r[1], r[2], r[3]) for r in _rows(files["inter"], "\t")]
        users = {r[0]: (r[1], r[2], r[3]) for r in _rows(files["user"], "|")}
    else:
        cols, rows = _atomic(files["inter"])
        inter = [(r[cols["user_id"]], r[cols["item_id"]], r[cols["rating"]], r[cols.get("timestamp", cols["rating"])])
                 for r in rows]
        cols, rows = _atomic(files["user"])
        users = {r[cols["user_id"]]: (r[cols["age"]], r[cols["gender"]], r[cols["occupation"]]) for r in rows}
    items = {item: (year, genres) for item, _, year, genres in _items(layout, files["item"])}
    if not inter:
        raise ValueError(f"{files['inter']}: no ratings")
    user_ids, item_ids = sorted(users), sorted(items)
    user_index, item_index = {u: i for i, u in enumerate(user_ids)}, {m: i for i, m in enumerate(item_ids)}
    occupations = sorted({occupation for _, _, occupation in users.values()})
    if len(occupations) > OCCUPATION_SLOTS:
        raise ValueError(f"{files['user']}: {len(occupations)} occupations; at most {OCCUPATION_SLOTS} are supported")
    try:
        user_features = torch.tensor([[_age_bucket(int(age)), int(gender.upper().startswith("F")),
                                       occupations.index(occupation)]
                                      for age, gender, occupation in (users[u] for u in user_ids)])
        known = [(user_index[u], item_index[m], float(r), int(float(t))) for u, m, r, t in inter
                 if u in user_index and m in item_index]
    except ValueError as exc:
        raise ValueError(f"{files['inter'].parent}: a field that should be a number is not ({exc})") from None
    if not known:
        raise ValueError(f"{files['inter']}: no rating names a user of {files['user'].name} and an item of "
                         f"{files['item'].name}")
    genre_of = {g.lower(): i for i, g in enumerate(GENRES)}
    genres = torch.zeros(len(item_ids), len(GENRES))
    for i, m in enumerate(item_ids):
        for g in items[m][1]:
            if g.lower() in genre_of:
                genres[i, genre_of[g.lower()]] = 1.0
    columns = list(zip(*known))
    return Ratings(torch.tensor(columns[0]), torch.tensor(columns[1]), torch.tensor(columns[2]),
                   torch.tensor(columns[3]), user_features, torch.tensor([items[m][0] for m in item_ids]), genres)


def year_bucket(year: Tensor) -> Tensor:
    """0 for an unknown year, else a five-year bucket from 1920 (earlier years in the first)."""
    buckets = 1 + ((year - YEAR_FIRST) // YEAR_STEP).clamp(0, YEAR_BUCKETS - 2)
    return torch.where(year > 0, buckets, torch.zeros_like(year))


class MovieLensOptions(FamilyOptions):
    """The data folder, the scenario of the validation and test tasks, and the shape of a task."""

    path_fields: ClassVar[tuple[str, ...]] = ("root",)
    root: str = Field(description="a folder with u.data/u.user/u.item or RecBole's .inter/.user/.item")
    scenario: Literal["existing", "new-users", "new-items", "new-both"] = "new-users"
    queries: Count = Field(default=10, description="query ratings per user")
    shots: Count | None = Field(default=None, description="support ratings per user (default: all the rest)")
    new_items_from: int = Field(default=1997, description="release year from which an item is new")
    seed: int = Field(default=0, description="the seed of the existing/new and val/test splits of users")


@dataclass(frozen=True)
class SplitTable:
    """A split's users, as a padded table of their ratings (indices into ``Ratings``, -1 past their count)."""

    index: Tensor  # [users, longest] long
    count: Tensor  # [users] long
    held: bool  # the query is each user's last ``queries`` ratings in time (the existing scenario's test side)


class MovieLens(TaskFamily):
    """Each user a task: rate movies from a few of their ratings (MovieLens-100K, MeLU's protocol)."""

    name: ClassVar[str] = "movielens"
    kind = "rating"  # regression with padded (NaN) support targets
    Options = MovieLensOptions
    metrics = RATING_METRICS

    @classmethod
    def key(cls, options: MovieLensOptions) -> str:
        """``movielens-<folder>-new-users-q10`` (with ``-s<shots>`` when set, ``-y<year>`` when not 1997)."""
        parts = [cls.name, Path(options.root).name or "data", options.scenario, f"q{options.queries}"]
        if options.shots is not None:
            parts.append(f"s{options.shots}")
        if options.new_items_from != 1997:
            parts.append(f"y{options.new_items_from}")
        if options.seed:
            parts.append(f"seed{options.seed}")
        return "-".join(parts)

    def __init__(self, *, root: str, scenario: str = "new-users", queries: int = 10, shots: int | None = None,
                 new_items_from: int = 1997, seed: int = 0) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
        self.scenario, self.queries, self.shots = scenario, queries, shots
        data = read_ratings(root)
        self.data = data
        self.features = self._features(data)
        self.input_shape = (self.features.shape[1],)
        self.output_size = 1
        counts = torch.bincount(data.user, minlength=len(data.user_features))
        eligible = ((counts >= MIN_RATINGS) & (counts <= MAX_RATINGS)).nonzero().squeeze(1)
        order = eligible[torch.randperm(len(eligible), generator=torch.Generator().manual_seed(seed))]
        existing, new = order[: round(0.8 * len(order))], order[round(0.8 * len(order)):]
        new_item = data.item_year[data.item] >= new_items_from  # per rating
        # The existing scenario's queries: each user's last ratings of existing items, never trained on.
        self.held_out = self._last_ratings(data, queries, ~new_item) if scenario == "existing" else \
            torch.zeros_like(new_item)
        held_out = self.held_out
        scenario_users = new if scenario in ("new-users", "new-both") else existing
        scenario_items = new_item if scenario in ("new-items", "new-both") else ~new_item
        half = torch.randperm(len(scenario_users), generator=torch.Generator().manual_seed(seed + 1))
        val_users = scenario_users[half[: len(half) // 2]]
        test_users = scenario_users[half[len(half) // 2:]]
        self.tables = {
            "train": self._table(data, existing, ~new_item & ~held_out, held=False),
            "val": self._table(data, val_users, scenario_items, held=scenario == "existing"),
            "test": self._table(data, test_users, scenario_items, held=scenario == "existing"),
        }
        for split, table in self.tables.items():
            if len(table.count) == 0:
                raise ValueError(f"movielens: {root}: no {split} user of scenario {scenario} has "
                                 f"{self._needed()} ratings (queries {queries}"
                                 + (f" + shots {shots})" if shots else " + 1)"))
        self.support = shots or max(int(t.count.max()) for t in self.tables.values()) - queries

    def _needed(self) -> int:
        return self.queries + (self.shots or 1)

    @staticmethod
    def _features(data: Ratings) -> Tensor:
        """Every rating's ``x``: ids, age, gender, occupation, year bucket, genres (float)."""
        user, item = data.user, data.item
        categorical = torch.stack([user, item, *data.user_features[user].T, year_bucket(data.item_year[item])], 1)
        return torch.cat([categorical.float(), data.item_genres[item]], 1)

    @staticmethod
    def _last_ratings(data: Ratings, queries: int, among: Tensor) -> Tensor:
        """Per rating: whether it is among its user's last ``queries`` in time of the ratings ``among`` allows."""
        rows = among.nonzero().squeeze(1)
        rows = rows[torch.argsort(data.time[rows] * (data.item.max() + 1) + data.item[rows], descending=True,
                                  stable=True)]
        rows = rows[torch.argsort(data.user[rows], stable=True)]  # users in turn, each one's latest first
        users = data.user[rows]
        rank = torch.arange(len(rows)) - torch.searchsorted(users, users, right=False)
        last = torch.zeros(len(data.user), dtype=torch.bool)
        last[rows[rank < queries]] = True
        return last

    def _table(self, data: Ratings, users: Tensor, keep: Tensor, *, held: bool) -> SplitTable:
        """The ratings of ``users`` that ``keep`` allows (the held-out ones last), for users with enough of them."""
        rows = (keep & torch.isin(data.user, users)).nonzero().squeeze(1)
        if held:  # the existing scenario's val/test side: each user's held-out last ratings go last
            rows = rows[torch.argsort(self.held_out[rows].long(), stable=True)]
        rows = rows[torch.argsort(data.user[rows], stable=True)]
        user_of = data.user[rows]
        present, count = torch.unique_consecutive(user_of, return_counts=True)
        enough = count >= self._needed()
        longest = int(count.max()) if len(count) else 0
        index = torch.full((len(present), longest), -1, dtype=torch.long)
        starts = torch.cumsum(count, 0) - count
        for i, (start, n) in enumerate(zip(starts.tolist(), count.tolist())):
            index[i, :n] = rows[start:start + n]
        return SplitTable(index[enough], count[enough], held)

    def distinct_tasks(self, split: Split) -> int:
        """The users of ``split``."""
        return len(self.tables[split].count)

    def sample(self, batch_size: int, split: Split, generator: torch.Generator) -> TaskBatch:
        """``batch_size`` users of ``split`` (distinct while there are enough), each a support and a query set."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        table = self.tables[split]
        users = len(table.count)
        pick = torch.cat([torch.randperm(users, generator=generator) for _ in range(math.ceil(batch_size / users))])
        pick = pick[:batch_size]
        index, count = table.index[pick], table.count[pick]
        positions = torch.arange(index.shape[1])
        valid = positions < count[:, None]
        scores = torch.rand(index.shape, generator=generator).masked_fill(~valid, -1.0)
        if table.held:  # the query: the last `queries` valid positions; the support: the others, shuffled
            query_pos = count[:, None] - self.queries + torch.arange(self.queries)
            scores = scores.masked_fill(positions >= (count[:, None] - self.queries), -1.0)
            support_pos = scores.argsort(1, descending=True)[:, : self.support]
        else:
            order = scores.argsort(1, descending=True)
            query_pos = order[:, : self.queries]
            support_pos = order[:, self.queries: self.queries + self.support]
        support_rows = index.gather(1, support_pos.clamp(max=index.shape[1] - 1)) if support_pos.numel() else support_pos
        support_ok = support_rows >= 0
        if table.held:
            support_ok &= support_pos < (count[:, None] - self.queries)
        if support_pos.shape[1] < self.support:  # this split's longest user is shorter than the family's support
            pad = self.support - support_pos.shape[1]
            support_rows = torch.cat([support_rows, torch.full((batch_size, pad), -1, dtype=torch.long)], 1)
            support_ok = torch.cat([support_ok, torch.zeros(batch_size, pad, dtype=torch.bool)], 1)
        query_rows = index.gather(1, query_pos)
        rows = support_rows.clamp(min=0)
        support_x = self.features[rows] * support_ok[..., None]
        support_y = torch.where(support_ok, self.data.rating[rows], torch.nan)[..., None]
        return TaskBatch(support_x, support_y, self.features[query_rows], self.data.rating[query_rows][..., None])

    def pooled(self, batch_size: int, split: Split, generator: torch.Generator) -> PooledBatch:
        """``batch_size`` ratings of ``split``'s users (all of them, shuffled, when that many or fewer)."""
        table = self.tables[split]
        rows = table.index[table.index >= 0]
        if table.held:  # held-out query ratings are never pooled
            rows = rows[~self.held_out[rows]]
        rows = rows[torch.randperm(len(rows), generator=generator)] if batch_size >= len(rows) else \
            rows[torch.randint(0, len(rows), (batch_size,), generator=generator)]
        return PooledBatch(self.features[rows], self.data.rating[rows][:, None])

    def model_example(self, batch: TaskBatch) -> dict:
        """One user as the logged model's input example (padding left out)."""
        keep = ~torch.isnan(batch.support_y[0, :, 0])
        return {"support_x": batch.support_x[0][keep].numpy(), "support_y": batch.support_y[0][keep].numpy(),
                "query_x": batch.query_x[0].numpy()}
