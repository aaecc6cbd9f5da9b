"""A real search: trials as Ray tasks on a real local Ray, recorded in a real MLflow sqlite store."""

from __future__ import annotations

import shutil

import pytest
import torch
from mlflow.tracking import MlflowClient

import metaopt
from metaopt.cli import main
from metaopt.search import load_job
from metaopt.search.executors import RayExecutor
from metaopt.search.runner import run_search
from metaopt.tasks import Sine
from metaopt.tracking import MlflowSearchTracker
from tests.helpers import scores
from tests.search.jobs import GOOD, tiny_job, write_job


@pytest.fixture(scope="module")
def ray_search(ray_session, tmp_path_factory, empty_store):
    """One 4-trial search on Ray with MLflow tracking, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("ray_search")
    shutil.copyfile(empty_store, tmp / "mlflow.db")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    job = tiny_job(enqueue=[GOOD, {**GOOD, "inner_lr": 1e10}], budget={**tiny_job()["budget"], "trials": 4})
    tracker = MlflowSearchTracker(uri)
    with RayExecutor(cpus_per_trial=1) as executor:
        assert executor.slots == 2
        summary = run_search(load_job(write_job(tmp, job)), executor=executor, tracker=tracker, workdir=tmp / "work")
    return summary, uri


def test_ray_search_writes_child_runs_under_the_parent(ray_search):
    summary, uri = ray_search
    client = MlflowClient(uri)
    parent = client.get_run(summary.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["metaopt.role"] == "search"
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{summary.parent_run_id}'"
    )
    assert len(children) == 4
    report = {a.path.split("/")[-1] for a in client.list_artifacts(summary.parent_run_id, "report")}
    assert {"trials.csv", "optimization_history.png", "best_so_far_per_method.png", "val_curves_top5.png"} <= report
    table = client.download_artifacts(summary.parent_run_id, "report/trials.csv")
    lines = open(table).read().strip().splitlines()
    assert lines[0].startswith("number,method,state") and len(lines) == 5
    by_state = {run.data.tags["metaopt.state"]: run for run in children}
    assert by_state["failed"].info.status == "FAILED"
    assert "non-finite loss" in by_state["failed"].data.tags["metaopt.reason"]
    for run in children:
        if run.data.tags["metaopt.state"] != "complete":
            continue
        assert run.info.status == "FINISHED"
        assert {"method", "inner_lr", "outer_lr", "inner_steps", "meta_batch"} <= set(run.data.params)
        curve = client.get_metric_history(run.info.run_id, "val_loss")
        assert [m.step for m in curve] == [10, 20]
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")]
        assert len(artifacts) == 1 and artifacts[0].endswith(".pt")
        assert run.data.tags["metaopt.model_uri"].startswith("models:/")


def test_champion_is_registered_and_adapts(ray_search, monkeypatch):
    summary, uri = ray_search
    version = MlflowClient(uri).get_model_version_by_alias("metaopt-sine-5shot", "champion")
    assert version.run_id == summary.champion.run_id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    learner = metaopt.load("models:/metaopt-sine-5shot@champion")
    assert learner.name == summary.champion.method
    task = Sine(shots=5, queries=100).sample(20, "test", torch.Generator().manual_seed(123))
    assert scores(learner, task)["loss"].mean() < scores(learner, task, steps=0)["loss"].mean()
    predict = learner.adapt(task.support_x[0], task.support_y[0])
    assert predict(task.query_x[0]).shape == (100, 1)
    by_run_id = metaopt.load(summary.champion.run_id)
    assert all(torch.equal(by_run_id.params[k], learner.params[k]) for k in learner.params)


def test_test_scores_are_on_the_best_run_per_method_and_leaderboard_reads_them(ray_search, capsys):
    summary, uri = ray_search
    client = MlflowClient(uri)
    for row in summary.rows:
        if row.run_id is None:
            continue
        run = client.get_run(row.run_id)
        assert run.data.metrics["test_loss"] == pytest.approx(row.test_loss)
        assert run.data.tags["metaopt.test_tasks"] == "50"  # a count: a tag, not a metric to chart
    assert main(["leaderboard", "sine", "--tracking-uri", uri, "--search", summary.search_id]) == 0
    out = capsys.readouterr().out
    assert summary.champion.method in out and f"{summary.champion.test_loss:.4f}" in out


def test_checkpoint_is_fetched_from_mlflow_when_not_on_this_node(ray_search, tmp_path):
    summary, uri = ray_search
    from metaopt.search.config import Job
    from metaopt.search.trial import score_trial
    from metaopt.tracking import MlflowTrialTracker

    best = next(r for r in summary.results if r.number == summary.champion.trial_number)
    elsewhere = type(best)(**{**best.__dict__, "checkpoint": str(tmp_path / "on-another-node.pt")})
    job = Job.model_validate(tiny_job(budget={**tiny_job()["budget"], "test_tasks": 50}))
    tracker = MlflowTrialTracker(uri, "unused", summary.parent_run_id)
    scores = score_trial(elsewhere.checkpoint, elsewhere.run_id, job, tracker).summary()
    assert scores["test_loss"] == pytest.approx(summary.champion.test_loss)
