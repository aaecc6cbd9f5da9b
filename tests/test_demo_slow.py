"""The demo end to end, as a user runs it (slow: about 2 minutes; `make test-slow`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.search.jobs import REPO


@pytest.mark.slow
def test_quickstart_demo_records_runs_and_a_champion_that_adapts(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "metaopt.cli", "search", str(REPO / "jobs" / "quickstart.yaml")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    print(f"demo wall time: {time.monotonic() - start:.0f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "champion:" in proc.stdout and "test MSE ± CI" in proc.stdout

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("metaopt-sine-10shot")
    parents = client.search_runs([experiment.experiment_id], "tags.`metaopt.role` = 'search'")
    assert len(parents) == 1
    children = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'"
    )
    with_model = [
        run for run in children
        if run.data.params
        and len(client.get_metric_history(run.info.run_id, "val_loss")) >= 1
        and client.list_artifacts(run.info.run_id, "checkpoint")
    ]
    assert len(with_model) >= 3

    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        import metaopt
        from metaopt.tasks import Sine

        learner = metaopt.load("models:/metaopt-sine-10shot@champion")
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    task = Sine(shots=10, queries=100).sample(1, "test", torch.Generator().manual_seed(2026))
    predict = learner.adapt(task.support_x[0], task.support_y[0])
    with torch.no_grad():
        before = torch.nn.functional.mse_loss(learner.backbone(task.query_x[0]), task.query_y[0])
    after = torch.nn.functional.mse_loss(predict(task.query_x[0]), task.query_y[0])
    print(f"champion {learner.name}: MSE before adapting {before:.3f}, after {after:.3f}")
    assert after < before


@pytest.mark.slow
def test_sine_all_job_scores_every_method(tmp_path):
    """jobs/sine-all.yaml: all seven gradient-based methods reach the leaderboard (about 10 minutes)."""
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "metaopt.cli", "search", str(REPO / "jobs" / "sine-all.yaml")],
        cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": ""}, capture_output=True, text=True, timeout=1800,
    )
    print(f"sine-all wall time: {time.monotonic() - start:.0f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    from metaopt.tracking import leaderboard

    rows = leaderboard("sine", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    scored = {row.method for row in rows if row.test_loss is not None}
    assert scored == {"maml", "fomaml", "mamlpp", "reptile", "anil", "metasgd", "metacurvature"}
