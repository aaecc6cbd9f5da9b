"""A search survives its MLflow server going away for 10 s: nothing fails, no metric is lost."""

from __future__ import annotations

import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from metaopt.search import load_job
from metaopt.search.executors import RayExecutor
from metaopt.search.runner import run_search
from metaopt.tracking import MlflowSearchTracker
from tests.mlflow_server import MlflowServer
from tests.search.jobs import tiny_job, write_job


@pytest.fixture
def server(tmp_path):
    server = MlflowServer(tmp_path)
    server.start()
    yield server
    server.stop()


def test_search_rides_out_a_10_s_tracking_server_outage(ray_session, server, tmp_path):
    job = tiny_job(budget={**tiny_job()["budget"], "trials": 3, "meta_iterations": 500, "eval_interval": 50},
                   compile="never")
    loaded = load_job(write_job(tmp_path, job))
    outcome: dict = {}

    def search() -> None:
        with RayExecutor(cpus_per_trial=1) as executor:
            outcome["summary"] = run_search(loaded, executor=executor, tracker=MlflowSearchTracker(server.uri),
                                            workdir=tmp_path / "work")

    thread = threading.Thread(target=search)
    thread.start()
    client = MlflowClient(server.uri)
    deadline = time.monotonic() + 120
    while not any(run.data.metrics.get("val_loss") for run in client.search_runs(
            [e.experiment_id for e in client.search_experiments()], "tags.`metaopt.role` = 'trial'")):
        assert time.monotonic() < deadline and thread.is_alive(), "no trial logged a metric"
        time.sleep(0.5)
    server.stop()
    time.sleep(10)
    assert thread.is_alive()  # the outage fell inside the search
    server.start()
    thread.join(timeout=300)
    assert not thread.is_alive() and "summary" in outcome

    summary = outcome["summary"]
    assert [r.state for r in summary.results] == ["complete"] * 3
    parent = client.get_run(summary.parent_run_id)
    assert parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{summary.parent_run_id}'")
    assert len(children) == 3
    for run in children:
        assert run.info.status == "FINISHED"
        steps = {m.step for m in client.get_metric_history(run.info.run_id, "val_loss")}
        assert steps == set(range(50, 501, 50))


class _Unreachable:
    """A trial log whose tracker refuses the first ``fails`` calls (past the client's own retries)."""

    def __init__(self, fails: int) -> None:
        self.fails, self.logged = fails, []

    def log_metrics(self, metrics, step):
        if self.fails:
            self.fails -= 1
            raise ConnectionError("tracking server unreachable")
        self.logged.append(step)


def test_metrics_a_tracker_refuses_are_kept_and_sent_in_order_later(tmp_path):
    from metaopt.search.reporting import Reporter

    log = _Unreachable(fails=3)
    reporter = Reporter(None, log, tmp_path / "ckpt.pt")
    with pytest.warns(UserWarning, match="tracking unavailable"):
        for step in (10, 20):
            reporter.report(step, {"val_loss": 1.0}, "val_loss", lambda: {"x": 1})
    assert log.logged == [] and len(reporter.unsent) == 2
    reporter.report(30, {"val_loss": 1.0}, "val_loss", lambda: {"x": 1})  # third refusal: still held
    reporter.flush()
    assert log.logged == [10, 20, 30] and reporter.unsent == []
