"""A search of what a frozen model sees: ``metaprompt`` and the selection baselines on one leaderboard, a champion
that loads and selects; the frozen model checked before anything starts; a language model server as the frozen
model, and a server that stops answering mid-search losing nothing recorded."""

from __future__ import annotations

import time

import pytest
import torch

from metaopt.search.config import ConfigError
from tests.incontext.test_selectors import SELECTORS
from tests.search.jobs import search_in, tiny_job, write_job


@pytest.fixture(scope="module")
def frozen_icl(tmp_path_factory) -> str:
    """An ``icl`` meta-trained briefly on sine tasks of 4 context points, saved as a checkpoint file."""
    from metaopt.learners.checkpoint import build_learner, make_checkpoint, save_checkpoint
    from metaopt.search.fit import fit
    from metaopt.tasks import Sine

    torch.manual_seed(0)
    backbone = {"name": "mlp", "hidden": [32]}
    icl = build_learner("icl", {"width": 32, "depth": 2, "heads": 2, "meta_batch": 16, "outer_lr": 0.003},
                        backbone=backbone, task_kind="regression", input_shape=(1,), output_size=1)
    fit(icl, Sine(shots=4, queries=10), iterations=150, compile="never", generator=torch.Generator().manual_seed(0))
    path = tmp_path_factory.mktemp("frozen") / "icl.pt"
    save_checkpoint(make_checkpoint(icl, backbone=backbone, input_shape=(1,), output_size=1), path)
    return str(path)


def selection_job(frozen, **overrides) -> dict:
    return tiny_job(**{"family": {"name": "sine", "shots": 16, "queries": 5, "context": 4}, "methods": ["metaprompt"],
                       "search_space": None, "baselines": None, "frozen": frozen,
                       "budget": {"trials": 6, "meta_iterations": 20, "eval_interval": 10, "val_tasks": 10,
                                  "test_tasks": 30}, **overrides})


def test_metaprompt_and_the_selection_baselines_share_a_leaderboard_and_the_champion_selects(frozen_icl, tmp_path):
    from metaopt.tracking.models import load_learner

    summary = search_in(tmp_path, selection_job(frozen_icl))
    assert sorted(row.method for row in summary.rows) == sorted(SELECTORS)
    assert all(row.complete == 1 and "test_loss" in row.test for row in summary.rows)
    assert summary.champion is not None and summary.decision is not None
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    champion = load_learner(f"models:/metaopt-{summary.key}@champion", tracking_uri=uri)
    assert champion.name == summary.champion.method and champion.hparams["context"] == 4
    assert champion.hparams["frozen"] == frozen_icl and champion.frozen_checkpoint["method"] == "icl"
    from metaopt.tasks import Sine

    batch = Sine(shots=16, queries=5, context=4).sample(3, "test", torch.Generator().manual_seed(0))
    assert champion.predict(batch).shape == (3, 5, 1)
    selector = load_learner(next(r.run_id for r in summary.results if r.method == "metaprompt"), tracking_uri=uri)
    assert selector.select(batch).shape == (3, 5, 4)


def test_the_frozen_model_is_checked_before_anything_starts(frozen_icl, tmp_path):
    from metaopt.search import load_job
    from metaopt.search.launch import Launch

    launch = Launch(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", in_process=True, workdir=tmp_path / "work")
    missing = load_job(write_job(tmp_path, selection_job(str(tmp_path / "nothing.pt"))))
    with pytest.raises(ConfigError, match=r"job.yaml: frozen.model: .*nothing.pt: no such file"):
        launch.check(missing)
    other = selection_job(frozen_icl, family={"name": "functions", "dim": 5, "points": 16, "context": 4})
    with pytest.raises(ConfigError, match=r"frozen.model: .*icl.pt reads regression tasks of inputs \[1\]; family "
                                          r"functions's are regression of \[5\]"):
        launch.check(load_job(write_job(tmp_path, other)))
    from tests.incontext.test_http_model import _closed_port

    dead = selection_job({"url": f"http://127.0.0.1:{_closed_port()}/v1", "model": "smollm2"},
                         family={"name": "movie-genres", "root": str(tmp_path), "pool": 8, "context": 2, "queries": 4})
    dead_job = load_job(write_job(tmp_path, dead, "dead.yaml"))
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"dead.yaml: frozen.url: http://127.0.0.1:\d+/v1/completions: cannot "
                                          r"reach the server"):
        from metaopt.search.launch import check_frozen

        check_frozen(dead_job, None)
    assert time.monotonic() - start < 10


@pytest.fixture(scope="module")
def titles(tmp_path_factory) -> str:
    """A GroupLens ``u.item`` of 120 invented titles, 30 a genre."""
    from tests.tasks.test_movie_genres import GENRE_OF
    from metaopt.tasks.movielens import GENRES

    folder = tmp_path_factory.mktemp("titles")
    lines = []
    for item in range(1, 121):
        genre = GENRE_OF[(item - 1) % 4]
        flags = "|".join("1" if g == genre else "0" for g in GENRES)
        lines.append(f"{item}|{('A space battle', 'A funny wedding', 'A family tragedy', 'A haunted house')[(item - 1) % 4]} "
                     f"{item} (19{item % 90 + 10:02d})|01-Jan-1995||url|{flags}\n")
    (folder / "u.item").write_text("".join(lines), encoding="latin-1")
    return str(folder)


def _text_job(titles: str, url: str) -> dict:
    return tiny_job(name="titles", family={"name": "movie-genres", "root": titles, "pool": 8, "context": 2,
                                           "queries": 4},
                    methods=["nearest_context"], baselines=[], search_space=None,
                    frozen={"url": url, "model": "smollm2"},
                    budget={"trials": 1, "meta_iterations": 1, "eval_interval": 1, "val_tasks": 1, "test_tasks": 2})


def test_a_language_model_server_is_the_frozen_model_and_a_server_gone_mid_search_loses_nothing(
        smollm2_url, titles, tmp_path):
    import mlflow

    from tests.incontext.test_http_model import _closed_port

    summary = search_in(tmp_path, _text_job(titles, smollm2_url))
    assert [row.method for row in summary.rows] == ["nearest_context"] and summary.rows[0].complete == 1
    assert 0.0 <= summary.rows[0].test["test_accuracy"] <= 1.0 and summary.champion is not None
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_run(summary.rows[0].run_id).info.experiment_id
    before = client.search_runs([experiment])
    gone = f"http://127.0.0.1:{_closed_port()}/v1"
    failed = search_in(tmp_path, {**_text_job(titles, gone), "name": "gone"})
    assert failed.results and all(r.state == "failed" for r in failed.results)
    assert all(f"{gone}/completions: cannot reach the server" in r.reason and "\n" not in r.reason
               for r in failed.results)
    kept = {r.info.run_id for r in client.search_runs([experiment])}
    assert {r.info.run_id for r in before} <= kept  # the first search's records are all there
    assert client.get_registered_model(f"metaopt-{summary.key}").aliases["champion"]
