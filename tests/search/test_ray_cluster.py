"""A two-node Ray cluster on 127.0.0.1 (head + worker, `ray start`): the worker node dies mid-trial, no trial is lost.

The study is on PostgreSQL and the runs on an MLflow server with a PostgreSQL backend store, as on a real
cluster (where no PostgreSQL answers, a laptop: the journal file and a sqlite store). The test starts both
nodes and stops them by PID (``ray stop`` would stop every Ray on the machine).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from metaopt.search.storage import journal_storage, open_storage
from tests.mlflow_server import MlflowServer, free_port
from tests.processes import kill_marked
from tests.search.jobs import GOOD, REPO, tiny_job, write_job

RAY = str(Path(sys.executable).parent / "ray")


TOKEN = secrets.token_hex(32)  # this test's cluster token, not ~/.ray/auth_token (absent on a fresh machine)


# The head's control service declares a silent node dead after 3 missed checks a second apart (default: 5 of 3 s).
FAST_FAILURE_DETECTION = {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
                          "RAY_health_check_failure_threshold": "3"}


def _ray_start(args: list[str], marker: str) -> None:
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN, marker.split("=")[0]: marker.split("=")[1],
           **FAST_FAILURE_DETECTION}
    done = subprocess.run([RAY, "start", *args, "--num-cpus", "1", "--node-ip-address", "127.0.0.1",
                           "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]


def _running_nodes(uri: str) -> dict[str, str]:
    """Node of each RUNNING trial run that has logged a validation point (so it has a checkpoint)."""
    if uri.startswith("sqlite:") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return {}  # the driver has not made its store yet (making it here too would race its migrations)
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return {}
    runs = client.search_runs(experiments, "attributes.status = 'RUNNING' AND tags.`metaopt.role` = 'trial'")
    return {r.info.run_id: r.data.tags["metaopt.debug.node"] for r in runs
            if "metaopt.debug.node" in r.data.tags and "val_loss" in r.data.metrics}


@pytest.fixture
def stores(request, tmp_path):
    """(Optuna storage URL or None for the journal, MLflow tracking URI): PostgreSQL and a server where it answers."""
    try:
        databases = request.getfixturevalue("postgres_databases")
    except pytest.skip.Exception:  # no PostgreSQL here (not CI): the embedded stores
        yield None, f"sqlite:///{tmp_path / 'mlflow.db'}"
        return
    server = MlflowServer(tmp_path, backend=databases())
    server.start()
    yield databases(), server.uri
    server.stop()


def test_worker_node_lost_mid_trial_every_trial_ends_exactly_once(tmp_path, stores):
    tag = f"{tmp_path.name}-{os.getpid()}"
    head, worker, driver_mark = (f"METAOPT_TEST_NODE={role}-{tag}" for role in ("head", "worker", "driver"))
    port = free_port()
    job = tiny_job(methods=["maml"], enqueue=[GOOD],
                   budget={**tiny_job()["budget"], "trials": 3, "meta_iterations": 600, "eval_interval": 100},
                   resources={"cpus_per_trial": 1, "max_concurrent": 2, "max_retries": 2}, compile="never")
    path = write_job(tmp_path, job)
    storage, uri = stores
    workdir = tmp_path / "work"
    seen_nodes: set[str] = set()
    try:
        _ray_start(["--head", "--port", str(port), "--ray-client-server-port", str(free_port()),
                    "--include-dashboard", "false"], head)
        _ray_start(["--address", f"127.0.0.1:{port}"], worker)
        env = {**os.environ, "PYTHONPATH": str(REPO), "METAOPT_TEST_NODE": driver_mark.split("=")[1],
               "RAY_AUTH_TOKEN": TOKEN}  # metaopt sees a token and sets RAY_AUTH_MODE=token itself
        driver = subprocess.Popen(
            [sys.executable, "-m", "metaopt.cli", "search", str(path), "--address", f"127.0.0.1:{port}",
             "--tracking-uri", uri, "--workdir", str(workdir), *(["--storage", storage] if storage else [])],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        deadline = time.monotonic() + 240
        while len(set(_running_nodes(uri).values())) < 2:  # one trial on each node
            assert driver.poll() is None, driver.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "trials never ran on both nodes at once"
            time.sleep(0.5)
        seen_nodes = set(_running_nodes(uri).values())
        kill_marked(worker)  # the worker node's raylet and its trial's worker process, mid-trial
        output, _ = driver.communicate(timeout=400)
        assert driver.returncode == 0, output[-3000:]
    finally:
        for marker in (driver_mark, worker, head):
            kill_marked(marker)
        current = Path("/tmp/ray/ray_current_cluster")  # `ray start --head` left our address there
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()

    assert len(seen_nodes) == 2
    optuna_storage = open_storage(storage) if storage else journal_storage(workdir / "optuna.journal")
    (name,) = optuna.get_all_study_names(optuna_storage)
    trials = optuna.load_study(study_name=name, storage=optuna_storage).trials
    assert sorted(t.number for t in trials) == [0, 1, 2]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.`metaopt.role` = 'trial'")
    assert sorted(int(r.data.tags["metaopt.trial_number"]) for r in runs) == [0, 1, 2]
    assert all(r.info.status == "FINISHED" for r in runs)
    resumed = [r for r in runs if client.get_metric_history(r.info.run_id, "resumed_at")]
    assert len(resumed) >= 1  # the lost trial was rerun on the head from its checkpoint, in its own run
    for run in runs:
        assert {m.step for m in client.get_metric_history(run.info.run_id, "val_loss")} == set(range(100, 601, 100))
