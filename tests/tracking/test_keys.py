"""Results are kept per key: two settings of one family never share an experiment, a leaderboard or a champion."""

from __future__ import annotations

import shutil
import sqlite3

import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient

from metaopt.cli import main
from metaopt.search import load_job
from metaopt.search.evaluation import evaluate_test
from metaopt.search.executors import InProcessExecutor
from metaopt.search.runner import run_search
from metaopt.search.storage import journal_storage
from metaopt.tasks import Glyphs
from metaopt.tracking import MlflowSearchTracker, leaderboards, load_learner
from metaopt.tracking.champion import recorded_scores, select_champion
from metaopt.search.selection import FIRST_CHAMPION
from tests.search.jobs import GOOD, search_in, tiny_job, write_job

KEYS = {5: "glyphs-5w1s-q5", 20: "glyphs-20w1s-q5"}


def _glyphs_job(ways: int, name: str) -> dict:
    return tiny_job(
        name=name, family={"name": "glyphs", "ways": ways, "shots": 1, "queries": 5}, methods=["protonet", "maml"],
        search_space=None, backbone={"name": "conv4", "hidden": 8},
        space={"protonet": {"outer_lr": 0.003, "meta_batch": 2},
               "maml": {"inner_lr": 0.4, "inner_steps": 1, "test_steps": 2, "outer_lr": 0.003, "meta_batch": 2}},
        budget={"trials": 2, "meta_iterations": 10, "eval_interval": 5, "val_tasks": 10, "test_tasks": 20},
        compile="never",
    )


@pytest.fixture(scope="module")
def two_keys(tmp_path_factory, empty_store):
    """Tiny glyphs 5-way 1-shot and 20-way 1-shot searches in one MLflow store."""
    tmp = tmp_path_factory.mktemp("keys")
    shutil.copyfile(empty_store, tmp / "mlflow.db")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    summaries = {ways: search_in(tmp, _glyphs_job(ways, f"g{ways}"), f"g{ways}.yaml") for ways in KEYS}
    return summaries, uri, tmp


def test_two_settings_of_one_family_get_two_experiments_leaderboards_and_champions(two_keys):
    summaries, uri, _ = two_keys
    client = MlflowClient(uri)
    for ways, key in KEYS.items():
        summary = summaries[ways]
        assert summary.key == key and summary.decision.reason == FIRST_CHAMPION  # each key its own first champion
        experiment = client.get_experiment_by_name(f"metaopt-{key}")
        assert experiment.tags["metaopt.key"] == key and experiment.tags["metaopt.metric"] == "accuracy"
        runs = client.search_runs([experiment.experiment_id], "tags.`metaopt.role` = 'trial'")
        assert {r.data.tags["metaopt.search_id"] for r in runs} == {summary.search_id}
        champion = client.get_model_version_by_alias(f"metaopt-{key}", "champion")
        assert champion.run_id == summary.champion.run_id
        assert client.get_run(champion.run_id).info.experiment_id == experiment.experiment_id
    boards = {board.key: board for board in leaderboards("glyphs", tracking_uri=uri)}
    assert set(boards) == set(KEYS.values())
    for ways, key in KEYS.items():
        assert {row.run_id for row in boards[key].rows} == {row.run_id for row in summaries[ways].rows}


def test_classifiers_are_searched_and_ranked_by_validation_accuracy(two_keys):
    summaries, uri, tmp = two_keys
    summary = summaries[5]
    study = optuna.load_study(study_name=summary.search_id, storage=journal_storage(tmp / "work" / "optuna.journal"))
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    client = MlflowClient(uri)
    for row in summary.rows:
        history = client.get_metric_history(row.run_id, "val_accuracy")
        assert [m.step for m in history] == [5, 10] and history[-1].value == pytest.approx(row.best_val)
        assert 0.0 <= row.best_val <= 1.0 and row.test_accuracy is not None and row.test_loss is not None
    best = max(summary.rows, key=lambda row: row.best_val)
    assert summary.champion.method == best.method


def test_select_on_a_key_scores_only_on_that_keys_own_tasks(two_keys):
    summaries, uri, _ = two_keys
    client = MlflowClient(uri)
    for ways, key in KEYS.items():
        selection = select_champion(key, tracking_uri=uri, apply=False)
        assert selection.rescored == [] and selection.test_tasks == 20  # the recorded scores, not a re-scoring
        assert {c.run_id for c in selection.candidates} == {row.run_id for row in summaries[ways].rows}
        for candidate in selection.candidates:
            assert candidate.scores.key == key
            assert candidate.scores.per_task == recorded_scores(client, candidate.run_id).per_task
    # The recorded scores of a 20-way learner are its scores on 20-way test tasks, which 5-way ones are not.
    run_id = summaries[20].champion.run_id
    learner = load_learner(run_id, tracking_uri=uri)
    assert learner.hparams.get("test_steps", 2) == 2
    own = evaluate_test(learner, Glyphs(ways=20, shots=1, queries=5), KEYS[20], 20)
    recorded = recorded_scores(client, run_id).per_task
    assert set(own.per_task) == set(recorded) == {"accuracy", "loss"}
    for name, values in recorded.items():
        assert own.per_task[name] == pytest.approx(values, abs=1e-6)
    if learner.name == "protonet":  # a metric learner can be asked 5-way tasks: different scores
        learner.n_way = 5
        other = evaluate_test(learner, Glyphs(ways=5, shots=1, queries=5), KEYS[5], 20)
        assert other.per_task["loss"] != own.per_task["loss"]


def test_cli_leaderboard_prints_one_table_per_key_and_select_wants_one_key(two_keys, capsys):
    _, uri, _ = two_keys
    assert main(["leaderboard", "glyphs", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert all(key in out for key in KEYS.values()) and "test accuracy %" in out and "val accuracy %" in out
    assert main(["select", "glyphs", "--tracking-uri", uri, "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "has several keys (glyphs-20w1s-q5, glyphs-5w1s-q5): name one" in err
    assert main(["select", KEYS[5], "--tracking-uri", uri, "--dry-run"]) == 0
    assert "champion unchanged: maml does not beat the champion (protonet) beyond its CI" in capsys.readouterr().out


def test_a_store_written_before_keys_stays_readable_as_a_legacy_key(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    legacy = client.create_experiment("metaopt-sine")  # what metaopt wrote before keys: one experiment per family
    run = client.create_run(legacy, tags={"metaopt.role": "trial", "metaopt.method": "maml", "metaopt.state": "complete",
                                          "metaopt.trial_number": "0", "metaopt.search_id": "old"})
    for name, value in {"val_loss": 0.5, "test_loss": 0.45, "test_loss_ci95": 0.05}.items():
        client.log_metric(run.info.run_id, name, value)
    client.set_terminated(run.info.run_id)
    (board,) = leaderboards("sine", tracking_uri=uri)
    assert board.legacy and board.key == "sine" and board.rows[0].test_loss == 0.45
    assert main(["leaderboard", "sine", "--tracking-uri", uri]) == 0
    assert "legacy" in capsys.readouterr().out
    assert main(["select", "sine", "--tracking-uri", uri]) == 1
    assert "legacy experiment" in capsys.readouterr().err


def test_a_tracking_error_reading_the_champion_moves_nothing_and_is_reported(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    job = tiny_job(methods=["maml"], enqueue=[GOOD], budget={**tiny_job()["budget"], "trials": 1})
    first = run_search(load_job(write_job(tmp_path, job, "a.yaml")), executor=InProcessExecutor(),
                       tracker=MlflowSearchTracker(uri), workdir=tmp_path / "work")
    assert first.decision.moved and first.champion_version == "1"
    with sqlite3.connect(tmp_path / "mlflow.db") as db:  # a broken store: reading the alias fails
        db.execute("DROP TABLE registered_model_aliases")
    warnings = []
    second = run_search(load_job(write_job(tmp_path, job, "b.yaml")), executor=InProcessExecutor(),
                        tracker=MlflowSearchTracker(uri), workdir=tmp_path / "work",
                        progress=lambda event, info: warnings.append(info["message"]) if event == "warning" else None)
    assert second.decision is None and second.champion_version is None
    assert any("champion of sine-5shot unknown, nothing moved" in w for w in warnings)
    client = MlflowClient(uri)
    assert "nothing moved" in client.get_run(second.parent_run_id).data.tags["metaopt.champion_decision"]
    assert [str(v.version) for v in client.search_model_versions("name='metaopt-sine-5shot'")] == ["1"]
    assert torch.isfinite(torch.tensor(second.champion.test_loss))  # the search itself finished and was scored
