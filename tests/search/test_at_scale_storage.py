"""The at-scale storage, for real: Optuna on PostgreSQL (heartbeats, two drivers on one study) and on a Redis journal,
and an MLflow server on a PostgreSQL backend store with an artifact root, as `docker/compose.yaml` runs it.

Each test needs a server on 127.0.0.1 and skips with one line where none answers; `.ci/run` makes them required."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from metaopt.search import load_job
from metaopt.search.executors import InProcessExecutor
from metaopt.search.runner import recorded_job, resume_search, run_search
from metaopt.search.storage import open_storage
from metaopt.tracking import MlflowSearchTracker, leaderboard
from tests.mlflow_server import MlflowServer
from tests.processes import kill_marked
from tests.search.jobs import GOOD, REPO, tiny_job, write_job

COMMAND = [sys.executable, "-m", "metaopt.cli"]


def _study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url))


@pytest.mark.parametrize("store", ["postgresql", "redis"])
def test_a_search_lives_in_the_shared_storage_and_resume_reads_it_back(store, request, tmp_path):
    url = request.getfixturevalue("postgres_url" if store == "postgresql" else "redis_url")
    loaded = load_job(write_job(tmp_path, tiny_job(budget={**tiny_job()["budget"], "trials": 3})))
    summary = run_search(loaded, executor=InProcessExecutor(), workdir=tmp_path / "work", storage=url)
    assert not (tmp_path / "work" / "optuna.journal").exists()
    trials = _study(url, summary.search_id).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert recorded_job(summary.search_id, workdir=tmp_path / "work", storage=url).job == loaded.job
    again = resume_search(summary.search_id, executor=InProcessExecutor(), workdir=tmp_path / "work", storage=url)
    assert len(again.results) == 3 and len(_study(url, summary.search_id).trials) == 3
    assert again.decision is not None  # the resumed driver scored and decided


def _driver(args: list[str], cwd: Path, marker: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([*COMMAND, *args], cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(REPO), "METAOPT_TEST_RUN": marker, **env},
                            start_new_session=True)


def _shared_job(tmp_path: Path, trials: int) -> Path:
    return write_job(tmp_path, tiny_job(methods=["maml", "fomaml"], compile="never", pruner={"type": "none"},
                                        budget={**tiny_job()["budget"], "trials": trials, "meta_iterations": 400,
                                                "eval_interval": 100}), "shared.yaml")


@pytest.fixture
def pg_server(tmp_path, postgres_databases):
    """An MLflow server on a PostgreSQL backend store, artifacts under tmp_path."""
    server = MlflowServer(tmp_path, backend=postgres_databases())
    server.start()
    yield server
    server.stop()


def test_two_drivers_share_one_study_on_postgresql_and_both_finish(postgres_url, pg_server, tmp_path):
    job, marker = _shared_job(tmp_path, 4), f"METAOPT_TEST_RUN=two-{os.getpid()}"
    args = ["search", str(job), "--storage", postgres_url, "--search-id", "shared-1", "--in-process",
            "--tracking-uri", pg_server.uri]
    try:
        drivers = [_driver([*args, "--workdir", str(tmp_path / f"work{i}")], tmp_path, marker.split("=")[1])
                   for i in range(2)]
        outputs = [d.communicate(timeout=400)[0] for d in drivers]
    finally:
        kill_marked(marker)
    assert [d.returncode for d in drivers] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    trials = [t for t in _study(postgres_url, "shared-1").trials if "surplus" not in t.user_attrs]
    numbers = [t.number for t in trials]
    assert len(numbers) == 4 and len(set(numbers)) == 4  # no trial number doubled, the budget exactly spent
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    ran = [sum(f"  trial {n:>3} " in out for n in numbers) for out in outputs]
    assert sum(ran) == 4 and min(ran) >= 1  # each driver ran its share
    client = MlflowClient(pg_server.uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.`metaopt.role` = 'trial'")
    assert sorted(int(r.data.tags["metaopt.trial_number"]) for r in runs) == sorted(numbers)
    parents = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                 "tags.`metaopt.role` = 'search'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # one record; the last driver closed it
    assert sum("champion: " in out or "champion unchanged" in out for out in outputs) == 1  # scored once
    assert leaderboard("sine-5shot", tracking_uri=pg_server.uri)


def test_a_trial_whose_driver_vanished_is_failed_and_retried_by_the_driver_sharing_its_study(
        postgres_url, tmp_path):
    job, marker = _shared_job(tmp_path, 4), f"METAOPT_TEST_RUN=lost-{os.getpid()}"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    beats = {"METAOPT_HEARTBEAT_S": "1", "METAOPT_HEARTBEAT_GRACE_S": "4"}
    args = ["search", str(job), "--storage", postgres_url, "--search-id", "lost-1", "--in-process", "--tracking-uri",
            uri, "--workdir", str(tmp_path / "work")]
    try:
        first = _driver(args, tmp_path, marker.split("=")[1], **beats)
        deadline = time.monotonic() + 120
        while True:  # kill it once a trial has reported and is mid-way
            time.sleep(0.3)
            try:
                trials = _study(postgres_url, "lost-1").trials
            except KeyError:
                trials = []
            if any(t.state == optuna.trial.TrialState.RUNNING and t.intermediate_values for t in trials):
                break
            assert first.poll() is None and time.monotonic() < deadline, "no trial ever ran"
        os.killpg(first.pid, signal.SIGKILL)  # the driver vanishes: no heartbeat, nothing recorded
        first.wait()
        lost = next(t.number for t in _study(postgres_url, "lost-1").trials
                    if t.state == optuna.trial.TrialState.RUNNING)
        second = _driver(args, tmp_path, marker.split("=")[1], **beats)
        output, _ = second.communicate(timeout=400)
    finally:
        kill_marked(marker)
    assert second.returncode == 0, output[-3000:]
    trials = _study(postgres_url, "lost-1").trials
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert trials[lost].state == optuna.trial.TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == lost]
    assert len(retries) == 1 and retries[0].state == optuna.trial.TrialState.COMPLETE
    assert retries[0].params == trials[lost].params
    counted = [t for t in trials if t.number != lost and "surplus" not in t.user_attrs]
    assert len(counted) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in counted)
    client = MlflowClient(uri)
    run = client.get_run(trials[lost].user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["metaopt.reason"].startswith("lost: no heartbeat")


def test_a_search_against_an_mlflow_server_on_postgresql_registers_its_champion(pg_server, tmp_path):
    loaded = load_job(write_job(tmp_path, tiny_job(methods=["maml"], enqueue=[GOOD],
                                                   budget={**tiny_job()["budget"], "trials": 2})))
    summary = run_search(loaded, executor=InProcessExecutor(), tracker=MlflowSearchTracker(pg_server.uri),
                         workdir=tmp_path / "work")
    client = MlflowClient(pg_server.uri)
    assert client.get_model_version_by_alias("metaopt-sine-5shot", "champion").run_id == summary.champion.run_id
    artifacts = {a.path for a in client.list_artifacts(summary.champion.run_id)}
    assert {"checkpoint", "test"} <= artifacts and (tmp_path / "artifacts").is_dir()  # proxied to the artifact root
    from metaopt.tracking import load_learner

    learner = load_learner("models:/metaopt-sine-5shot@champion", tracking_uri=pg_server.uri)
    assert learner.name == summary.champion.method
    (row,) = [r for r in leaderboard("sine-5shot", tracking_uri=pg_server.uri) if r.run_id == summary.champion.run_id]
    assert row.test_loss == pytest.approx(summary.champion.test_loss)
