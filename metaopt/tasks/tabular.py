"""``tabular``: a table of rows, one task per distinct value of a column (a user, a site, a patient).

A task's support and query rows are drawn from its own rows. Tasks are split 60/20/20 by
a seeded permutation, or by a ``split`` column (``train`` / ``val`` / ``test``, the same
for every row of a task) when the table has one. Features are every other numeric column
unless ``features`` names them, standardised with statistics of the training tasks only.
``kind: regression`` scores by MSE; ``kind: classification`` by accuracy (the target's
distinct values are the classes, the same for every task). CSV and Parquet are read with
pyarrow and cached as tensors, named by the file's size, modification time and options.
"""

from __future__ import annotations

import csv
import hashlib
import warnings
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import model_validator

from metaopt.tasks.base import SPLITS, Count, DataWarning, FamilyOptions, Split, TaskBatch, TaskFamily
from metaopt.tasks.cache import cached
from metaopt.tasks.metrics import CLASSIFICATION, REGRESSION, Metric
from metaopt.text import short

SUFFIXES = (".csv", ".parquet", ".pq")
SPLIT_COLUMN = "split"
SPLIT_SEED = 0
SPLIT_FRACTIONS = (0.6, 0.2)
FORMAT = 2
DENSE_ROWS = 4096  # tasks up to this many rows draw their examples by one sort over the padded rows


def _columns(path: Path) -> list[str]:
    """The column names of a CSV (its header) or a Parquet file (its schema); ``ValueError`` naming the file for an
    empty, compressed or non-UTF-8 file and for a name the header repeats."""
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (no header, no rows)")
    if path.suffix.lower() == ".csv":
        with open(path, "rb") as f:
            start = f.read(4)
        if start.startswith(b"\x1f\x8b"):
            raise ValueError(f"{path}: gzip-compressed, not CSV text: decompress it first (gunzip)")
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:  # a byte-order mark is not part of a name
                header = next(csv.reader(f), None)
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not UTF-8 text (byte {exc.start} of its first line): save it as UTF-8 "
                             "(e.g. iconv -f latin1 -t utf-8)") from None
        if not header:
            raise ValueError(f"{path}: empty file (no header, no rows)")
    else:
        import pyarrow.parquet as pq

        try:
            header = list(pq.read_schema(path).names)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid and OSError kinds
            raise ValueError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0][:200]})") from None
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise ValueError(f"{path}: column {short(repeated[0])} appears {header.count(repeated[0])} times in the header: "
                         "every column needs its own name")
    return header


class TabularOptions(FamilyOptions):
    """Which table, which column names the task and which the target, and the shape of a task."""

    path_fields: ClassVar[tuple[str, ...]] = ("path",)
    path: str
    task_column: str
    target: str
    kind: Literal["regression", "classification"]
    shots: Count = 10
    queries: Count = 10
    features: list[str] | None = None
    standardize: bool = True

    @model_validator(mode="after")
    def _the_columns_are_there(self) -> TabularOptions:
        path = Path(self.path).expanduser()
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        if path.suffix.lower() not in SUFFIXES:
            raise ValueError(f"{path}: expected a table file ({', '.join(SUFFIXES)})")
        columns = _columns(path)
        for field, column in [("task_column", self.task_column), ("target", self.target),
                              *(("features", c) for c in self.features or [])]:
            if column not in columns:
                raise ValueError(f"{path}: {field} column {column!r} not found (columns: {', '.join(columns)})")
        return self


class Tabular(TaskFamily):
    """Few-shot regression or classification where each task is the rows of one value of ``task_column``."""

    name: ClassVar[str] = "tabular"
    kind = "regression"
    Options = TabularOptions
    metrics = REGRESSION

    @classmethod
    def metrics_for(cls, options: TabularOptions) -> tuple[Metric, ...]:
        """MSE for regression tables, accuracy (and cross-entropy) for classification tables."""
        return CLASSIFICATION if options.kind == "classification" else REGRESSION

    @classmethod
    def metric_sets(cls) -> tuple[tuple[Metric, ...], ...]:
        """Regression's and classification's."""
        return (REGRESSION, CLASSIFICATION)

    @classmethod
    def key(cls, options: TabularOptions) -> str:
        """``tabular-<file>-<digest>-s10q10``: the digest covers the file's path, columns, kind and scaling."""
        path = Path(options.path).expanduser().resolve()
        what = [str(path), options.task_column, options.target, options.kind, str(options.features),
                str(options.standardize)]
        digest = hashlib.sha256("\0".join(what).encode()).hexdigest()[:8]
        stem = "".join(c if c.isalnum() or c in "_." else "_" for c in path.stem)[:32]
        return f"{cls.name}-{stem}-{digest}-s{options.shots}q{options.queries}"

    def __init__(self, *, path: str, task_column: str, target: str, kind: str, shots: int = 10, queries: int = 10,
                 features: list[str] | None = None, standardize: bool = True,
                 cache_dir: str | Path | None = None) -> None:
        self.path = Path(path).expanduser().resolve()
        self.kind = kind  # type: ignore[misc] - per instance: the table says which
        self.metrics = CLASSIFICATION if kind == "classification" else REGRESSION  # type: ignore[misc]
        self.shots, self.queries = shots, queries
        stat = self.path.stat()
        settings = f"{FORMAT}:{self.path}:{stat.st_size}:{stat.st_mtime_ns}:{task_column}:{target}:{kind}:" \
                   f"{features}:{standardize}"
        digest = hashlib.sha256(settings.encode()).hexdigest()[:16]
        data = cached("tabular", digest,
                      lambda: read_table(self.path, task_column, target, kind, features, standardize), cache_dir)
        self.x, self.y = data["x"], data["y"]
        self.offsets, self.counts = data["offsets"], data["counts"]
        self.tasks: list[str] = data["tasks"]
        self.features: list[str] = data["features"]
        self.classes: list[str] = data["classes"]
        self.mean, self.std = data["mean"], data["std"]
        self.input_shape = (self.x.shape[1],)
        self.output_size = len(self.classes) if kind == "classification" else 1
        self.n_way = len(self.classes) if kind == "classification" else None
        needed = shots + queries
        short = int((self.counts < needed).sum())
        if short:
            warnings.warn(f"tabular: {short} of {len(self.counts)} tasks in {self.path.name} have fewer than {needed} "
                          f"rows (shots {shots} + queries {queries}) and are skipped", DataWarning, stacklevel=2)
        self.pools: dict[str, torch.Tensor] = {}
        for split in SPLITS:
            pool = data["split"][split]
            self.pools[split] = pool[self.counts[pool] >= needed]
            if len(self.pools[split]) == 0:
                raise ValueError(f"{self.path}: no {split} task has {needed} rows (shots {shots} + queries {queries}; "
                                 f"{len(data['split'][split])} {split} tasks, at most "
                                 f"{int(self.counts[pool].max()) if len(pool) else 0} rows each): lower shots or queries")

    def inputs(self, rows: torch.Tensor) -> torch.Tensor:
        """New rows of the features ``[n, features]`` (in ``self.features`` order) as the tasks see them."""
        return (rows.float() - self.mean) / self.std

    def distinct_tasks(self, split: Split) -> int:
        """The groups of ``split`` with enough rows for a task."""
        return len(self.pools[split])

    def sample(self, batch_size: int, split: Split, generator: torch.Generator) -> TaskBatch:
        """``batch_size`` tasks of ``split`` (with replacement), each with distinct support and query rows."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        pool = self.pools[split]
        tasks = pool[torch.randint(len(pool), (batch_size,), generator=generator)]
        rows = self.offsets[tasks, None] + distinct(self.counts[tasks], self.shots + self.queries, generator)
        x, y = self.x[rows], self.y[rows]
        k = self.shots
        return TaskBatch(x[:, :k].contiguous(), y[:, :k].contiguous(), x[:, k:].contiguous(), y[:, k:].contiguous())


def distinct(counts: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """``[tasks, k]`` distinct row positions ``< counts[t]`` for each task ``t``, uniformly at random."""
    most = int(counts.max())
    if most <= DENSE_ROWS:
        scores = torch.rand(len(counts), most, generator=generator)
        scores = scores.masked_fill(torch.arange(most) >= counts[:, None], 2.0)  # rows a task lacks sort last
        return scores.argsort(1)[:, :k]
    # Long tasks: draw 4k positions with replacement and keep k distinct ones, in a random order.
    draws = (torch.rand(len(counts), 4 * k, generator=generator) * counts[:, None]).long()
    ordered, _ = draws.sort(1)
    repeated = torch.zeros_like(ordered, dtype=torch.bool)
    repeated[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    if bool(((~repeated).sum(1) < k).any()):
        return distinct(counts, k, generator)  # fewer than k distinct in 4k draws: vanishingly rare; draw again
    keys = torch.rand(ordered.shape, generator=generator).masked_fill(repeated, 2.0)
    return ordered.gather(1, keys.argsort(1)[:, :k])


def read_table(path: Path, task_column: str, target: str, kind: str, features: list[str] | None,
               standardize: bool) -> dict:
    """The table as tensors grouped by task: features ``x [rows, f]``, targets ``y``, each task's rows and split."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    _columns(path)  # a compressed, non-UTF-8 or repeated header: one line naming the file
    table = _read(path)
    if table.num_rows == 0:
        raise ValueError(f"{path}: no rows")
    names = table.column_names
    if features is None:
        skip = {task_column, target, SPLIT_COLUMN}
        features = [c for c in names if c not in skip and _numeric(table.schema.field(c).type)]
        if not features:
            raise ValueError(f"{path}: no numeric feature columns besides {task_column!r} and {target!r} "
                             "(set family.features)")
    for column in features:
        kind_of = table.schema.field(column).type
        if not _numeric(kind_of):
            raise ValueError(f"{path}: feature column {column!r} is not numeric ({kind_of}); leave it out of "
                             "family.features or encode it as numbers")
    for role, column in [("target", target), *(("feature", c) for c in features), ("task", task_column)]:
        missing = table.column(column).null_count
        if missing:
            raise ValueError(f"{path}: {role} column {column!r} has {missing} missing value(s)")
    if kind == "regression" and not _numeric(table.schema.field(target).type):
        raise ValueError(f"{path}: target column {target!r} is not numeric ({table.schema.field(target).type}); "
                         "a regression target must be (or set kind: classification)")
    for role, column in [*(("target", target),) * (kind == "regression"), *(("feature", c) for c in features)]:
        values = table.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(values) | (np.abs(values) > np.finfo(np.float32).max))
        if len(bad):
            raise ValueError(f"{path}: {role} column {column!r} has {len(bad)} value(s) that are not finite numbers "
                             f"(inf, nan, or beyond float32 such as 1e999), the first in data row {bad[0] + 1}")

    task_ids = pc.dictionary_encode(table.column(task_column).cast(pa.string())).combine_chunks()
    codes = torch.from_numpy(task_ids.indices.to_numpy(zero_copy_only=False).astype(np.int64))
    task_names = task_ids.dictionary.to_pylist()
    order = torch.from_numpy(np.argsort(codes.numpy(), kind="stable"))
    counts = torch.bincount(codes, minlength=len(task_names))
    offsets = torch.cumsum(counts, 0) - counts
    x = torch.from_numpy(np.column_stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float32)
                                          for c in features]))[order]
    classes: list[str] = []
    if kind == "classification":
        labels = pc.dictionary_encode(table.column(target).cast(pa.string())).combine_chunks()
        classes = labels.dictionary.to_pylist()
        remap = torch.tensor(np.argsort(np.argsort(classes)))  # class indices in sorted order of their names
        classes = sorted(classes)
        y = remap[torch.from_numpy(labels.indices.to_numpy(zero_copy_only=False).astype(np.int64))][order]
    else:
        y = torch.from_numpy(table.column(target).to_numpy(zero_copy_only=False).astype(np.float32))[order, None]
    split = _task_split(path, table, codes, len(task_names))
    mean, std = torch.zeros(x.shape[1]), torch.ones(x.shape[1])
    if standardize:
        training = torch.isin(codes[order], split["train"])
        fit = x[training] if bool(training.any()) else x
        mean, std = fit.mean(0), fit.std(0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        x = (x - mean) / std
    return {"format": FORMAT, "x": x.contiguous(), "y": y.contiguous(), "offsets": offsets, "counts": counts,
            "tasks": task_names, "features": features, "classes": classes, "split": split, "mean": mean, "std": std}


def _read(path: Path):  # noqa: ANN202 - a pyarrow Table
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (no header, no rows)")
    try:
        return pcsv.read_csv(path) if path.suffix.lower() == ".csv" else pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - ArrowInvalid and friends: one line for the user
        raise ValueError(f"{path}: cannot read the table ({str(exc).splitlines()[0]})") from None


def _numeric(kind: object) -> bool:
    import pyarrow.types as pt

    return pt.is_integer(kind) or pt.is_floating(kind) or pt.is_boolean(kind)


def _task_split(path: Path, table: object, codes: torch.Tensor, n_tasks: int) -> dict[str, torch.Tensor]:
    """Task indices of each split: the table's ``split`` column, or a seeded 60/20/20 permutation of the tasks."""
    if SPLIT_COLUMN not in table.column_names:  # type: ignore[attr-defined]
        order = torch.randperm(n_tasks, generator=torch.Generator().manual_seed(SPLIT_SEED))
        n_train, n_val = (int(fraction * n_tasks) for fraction in SPLIT_FRACTIONS)
        return {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    values = table.column(SPLIT_COLUMN).cast("string").to_pylist()  # type: ignore[attr-defined]
    wrong = sorted({v for v in values if v not in SPLITS}, key=str)
    if wrong:
        raise ValueError(f"{path}: split column {SPLIT_COLUMN!r} has {wrong[0]!r} (allowed: {', '.join(SPLITS)})")
    index = {s: i for i, s in enumerate(SPLITS)}
    per_row = torch.tensor([index[v] for v in values])
    low = torch.full((n_tasks,), 3).scatter_reduce(0, codes, per_row, "amin")
    high = torch.full((n_tasks,), -1).scatter_reduce(0, codes, per_row, "amax")
    if bool((low != high).any()):
        raise ValueError(f"{path}: split column {SPLIT_COLUMN!r} differs within a task: every row of a task must "
                         "name the same split")
    return {s: torch.nonzero(low == i).flatten() for s, i in index.items()}
