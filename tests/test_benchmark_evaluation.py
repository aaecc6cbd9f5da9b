"""A benchmark script scores a trained checkpoint exactly as the leaderboard does (same tasks, same test_steps)."""

from __future__ import annotations

import sys

import pytest

from metaopt.search import load_job
from metaopt.search.executors import InProcessExecutor
from metaopt.search.runner import run_search
from metaopt.tracking import MlflowSearchTracker, leaderboard, load_learner
from tests.search.jobs import REPO, tiny_job, write_job

sys.path.insert(0, str(REPO / "benchmarks"))
import fewshot_table  # noqa: E402
import sine_table  # noqa: E402


def _champion(tmp_path, job: dict):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = run_search(load_job(write_job(tmp_path, job)), executor=InProcessExecutor(),
                         tracker=MlflowSearchTracker(uri), workdir=tmp_path / "work")
    (row,) = leaderboard(summary.key, tracking_uri=uri)
    return row, load_learner(row.run_id, tracking_uri=uri)


def test_fewshot_table_scores_a_checkpoint_as_the_leaderboard_does(tmp_path):
    space = {"maml": {"inner_lr": 0.4, "inner_steps": 1, "test_steps": 3, "outer_lr": 0.003, "meta_batch": 2}}
    job = tiny_job(family={"name": "glyphs", "ways": 5, "shots": 1, "queries": fewshot_table.QUERIES}, methods=["maml"],
                   search_space=None, space=space, backbone={"name": "conv4", "hidden": 8}, compile="never",
                   budget={"trials": 1, "meta_iterations": 6, "eval_interval": 3, "val_tasks": 10,
                           "test_tasks": fewshot_table.TEST_EPISODES})
    row, learner = _champion(tmp_path, job)
    assert learner.hparams["test_steps"] == 3
    family, key = fewshot_table.family_of("glyphs", None, 5, 1)
    mean, ci = fewshot_table.score_accuracy(learner, family, key)
    assert key == "glyphs-5w1s-q5" and row.test["test_tasks"] == fewshot_table.TEST_EPISODES
    assert mean == pytest.approx(100 * row.test_accuracy, abs=1e-6)
    assert ci == pytest.approx(100 * row.test_accuracy_ci95, abs=1e-6)


def test_sine_table_scores_a_checkpoint_as_the_leaderboard_does(tmp_path):
    space = {"maml": {"inner_lr": 0.01, "inner_steps": 2, "test_steps": 1, "outer_lr": 0.003, "meta_batch": 10}}
    job = tiny_job(family={"name": "sine", "shots": 5, "queries": 100}, methods=["maml"], search_space=None, space=space,
                   budget={"trials": 1, "meta_iterations": 20, "eval_interval": 10, "val_tasks": 20,
                           "test_tasks": sine_table.TEST_TASKS})
    row, learner = _champion(tmp_path, job)
    mean, ci = sine_table.score_mse(learner, 5, steps=1)  # the table's "after one step" column
    assert mean == pytest.approx(row.test_loss, abs=1e-6) and ci == pytest.approx(row.test_loss_ci95, abs=1e-6)
    assert sine_table.score_mse(learner, 5, steps=10)[0] != pytest.approx(row.test_loss, abs=1e-6)
