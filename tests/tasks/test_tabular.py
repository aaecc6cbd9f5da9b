"""The tabular family: CSV and Parquet, a task per value, splits, scaling, and each kind of bad data."""

from __future__ import annotations

import warnings

import pytest
import torch

from metaopt.search.config import ConfigError
from metaopt.search.job import load_job_data
from metaopt.tasks import Tabular
from metaopt.tasks.base import DataWarning
from metaopt.tasks.tabular import distinct
from tests.own_data import class_rows, linear_rows, write_table


def _job(family: dict, tmp_path) -> dict:
    return {"name": "t", "family": {"name": "tabular", **family}, "methods": ["maml"],
            "budget": {"trials": 1, "meta_iterations": 1, "eval_interval": 1}}


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_table_is_a_task_per_value_split_60_20_20_with_support_and_query_of_its_own_rows(tmp_path, suffix):
    path = write_table(linear_rows(tasks=50, rows=25), tmp_path / f"lin{suffix}")
    family = Tabular(path=str(path), task_column="user", target="y", kind="regression", shots=5, queries=7,
                     cache_dir=tmp_path / "cache")
    assert family.features == ["x0", "x1", "x2"] and family.input_shape == (3,) and family.output_size == 1
    assert [len(family.pools[s]) for s in ("train", "val", "test")] == [30, 10, 10]
    assert len({int(t) for s in family.pools.values() for t in s}) == 50
    batch = family.sample(8, "test", torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (8, 5, 3) and batch.query_y.shape == (8, 7, 1)
    rows = torch.cat([batch.support_x, batch.query_x], 1)
    for task in range(8):  # one task's rows, all distinct
        assert len({tuple(r.tolist()) for r in rows[task]}) == 12
    training = torch.cat([family.x[int(family.offsets[t]):int(family.offsets[t] + family.counts[t])]
                          for t in family.pools["train"]])
    assert training.mean(0).abs().max() < 1e-5 and (training.std(0) - 1).abs().max() < 1e-4  # training statistics


def test_a_classification_table_has_global_classes_and_a_split_column_decides(tmp_path):
    columns = class_rows(tasks=20, rows=20)
    sites = sorted(set(columns["site"]))
    columns["split"] = ["test" if site in sites[:4] else "val" if site in sites[4:8] else "train"
                        for site in columns["site"]]
    path = write_table(columns, tmp_path / "cls.parquet")
    family = Tabular(path=str(path), task_column="site", target="label", kind="classification", shots=6, queries=6,
                     cache_dir=tmp_path / "cache")
    assert family.classes == ["a", "b", "c"] and family.output_size == 3 and family.kind == "classification"
    assert sorted(family.tasks[int(t)] for t in family.pools["test"]) == sites[:4]
    assert [m.name for m in family.metrics] == ["accuracy", "loss"]
    batch = family.sample(4, "train", torch.Generator().manual_seed(1))
    assert batch.query_y.dtype == torch.long and int(batch.query_y.max()) <= 2
    options = Tabular.Options(path=str(path), task_column="site", target="label", kind="classification")
    assert [m.name for m in Tabular.metrics_for(options)] == ["accuracy", "loss"]


def test_tasks_with_too_few_rows_are_skipped_with_a_count(tmp_path):
    columns = linear_rows(tasks=30, rows=25)
    keep = [i for i, user in enumerate(columns["user"]) if not (user in {"user000", "user001"} and i % 25 >= 10)]
    path = write_table({k: [v[i] for i in keep] for k, v in columns.items()}, tmp_path / "short.csv")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        family = Tabular(path=str(path), task_column="user", target="y", kind="regression", cache_dir=tmp_path / "c")
    assert [str(w.message) for w in caught] == [
        "tabular: 2 of 30 tasks in short.csv have fewer than 20 rows (shots 10 + queries 10) and are skipped"]
    assert sum(len(p) for p in family.pools.values()) == 28


def test_long_tasks_draw_distinct_rows_too():
    counts = torch.tensor([10_000, 50_000, 5_000])
    rows = distinct(counts, 40, torch.Generator().manual_seed(0))
    assert rows.shape == (3, 40) and all(len(set(r.tolist())) == 40 for r in rows)
    assert bool((rows < counts[:, None]).all())


def test_bad_tables_are_one_line_naming_the_file_and_the_column(tmp_path):
    good = linear_rows(tasks=10, rows=20)
    csv = write_table(good, tmp_path / "t.csv")
    errors = {}

    def error(family: dict, build: bool = False) -> str:
        with pytest.raises((ConfigError, ValueError)) as info:
            loaded = load_job_data(_job(family, tmp_path), tmp_path / "job.yaml")
            if build:
                loaded.job.family.build()
        assert "\n" not in str(info.value)
        return str(info.value)

    errors["task"] = error({"path": str(csv), "task_column": "customer", "target": "y", "kind": "regression"})
    assert "task_column column 'customer' not found (columns: user, x0, x1, x2, y)" in errors["task"]
    assert errors["task"].startswith(f"{tmp_path / 'job.yaml'}: family: {csv}: ")

    texty = write_table({**good, "x1": [f"v{v:.2f}" for v in good["x1"]]}, tmp_path / "text.csv")
    errors["text"] = error({"path": str(texty), "task_column": "user", "target": "y", "kind": "regression",
                            "features": ["x0", "x1"]}, build=True)
    assert f"{texty}: feature column 'x1' is not numeric (string)" in errors["text"]

    holes = write_table({**good, "y": [None if i % 7 == 0 else v for i, v in enumerate(good["y"])]},
                        tmp_path / "holes.parquet")
    errors["missing"] = error({"path": str(holes), "task_column": "user", "target": "y", "kind": "regression"},
                              build=True)
    assert f"{holes}: target column 'y' has 29 missing value(s)" in errors["missing"]

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    errors["empty"] = error({"path": str(empty), "task_column": "user", "target": "y", "kind": "regression"})
    assert f"{empty}: empty file (no header, no rows)" in errors["empty"]

    header_only = tmp_path / "header.csv"
    header_only.write_text("user,x0,y\n")
    assert f"{header_only}: no rows" in error({"path": str(header_only), "task_column": "user", "target": "y",
                                               "kind": "regression"}, build=True)


def _text(columns: dict) -> str:
    names = list(columns)
    rows = zip(*(columns[n] for n in names))
    return ",".join(names) + "\n" + "".join(",".join(str(v) for v in row) + "\n" for row in rows)


@pytest.mark.parametrize("write, message", [
    (lambda path, text: path.write_bytes(__import__("gzip").compress(text.encode())), "gzip-compressed, not CSV text"),
    (lambda path, text: path.write_bytes(text.replace("user", "usér").encode("latin-1")), "not UTF-8 text (byte"),
    (lambda path, text: path.write_text(text.replace("x1", "x0", 1)), "column 'x0' appears 2 times in the header"),
    (lambda path, text: path.write_text(text.replace("x2", "user", 1)), "column 'user' appears 2 times"),
])
def test_a_table_in_another_encoding_or_with_repeated_names_is_one_line_naming_the_file(write, message, tmp_path):
    path = tmp_path / "t.csv"
    write(path, _text(linear_rows(tasks=10, rows=20)))
    job = _job({"path": str(path), "task_column": "user", "target": "y", "kind": "regression"}, tmp_path)
    with pytest.raises(ConfigError) as info:
        load_job_data(job, tmp_path / "job.yaml")
    assert str(info.value).startswith(f"{tmp_path / 'job.yaml'}: family: {path}: ") and message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", ["inf", "-inf", "1e999", "-1e999"])  # "nan" reads as missing: its own line
@pytest.mark.parametrize("column", ["x1", "y"])
def test_a_value_that_is_not_a_finite_number_is_one_line_naming_the_file_column_and_row(value, column, tmp_path):
    columns = linear_rows(tasks=10, rows=20)
    columns[column] = [value if i == 7 else v for i, v in enumerate(columns[column])]
    path = tmp_path / "t.csv"
    path.write_text(_text(columns))
    with pytest.raises(ValueError) as info:
        Tabular(path=str(path), task_column="user", target="y", kind="regression", cache_dir=tmp_path / "cache")
    assert str(info.value) == (f"{path}: {'target' if column == 'y' else 'feature'} column {column!r} has 1 value(s) "
                               "that are not finite numbers (inf, nan, or beyond float32 such as 1e999), the first in "
                               "data row 8")


def test_a_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + _text(linear_rows(tasks=10, rows=20)).encode())
    job = _job({"path": str(path), "task_column": "user", "target": "y", "kind": "regression"}, tmp_path)
    family = load_job_data(job, tmp_path / "job.yaml").job.family.build()
    assert family.tasks[0].startswith("user") and family.features == ["x0", "x1", "x2"]
