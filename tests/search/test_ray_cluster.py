"""A two-node Ray cluster on 127.0.0.1 (head + worker, `ray start`): the worker node dies mid-trial, no trial is lost.

The test starts both nodes and stops them by PID (``ray stop`` would stop every Ray on the machine).
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient

from metaopt.search.storage import journal_storage
from tests.mlflow_server import free_port
from tests.processes import kill_marked
from tests.search.jobs import GOOD, REPO, tiny_job, write_job

RAY = str(Path(sys.executable).parent / "ray")


TOKEN = secrets.token_hex(32)  # this test's cluster token, not ~/.ray/auth_token (absent on a fresh machine)


def _ray_start(args: list[str], marker: str) -> None:
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN, marker.split("=")[0]: marker.split("=")[1]}
    done = subprocess.run([RAY, "start", *args, "--num-cpus", "1", "--node-ip-address", "127.0.0.1",
                           "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]


def _running_nodes(db: Path) -> dict[str, str]:
    """Node of each RUNNING trial run that has logged a validation point (so it has a checkpoint)."""
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT t.run_uuid, t.value FROM tags t JOIN runs r ON r.run_uuid = t.run_uuid "
            "WHERE t.key = 'metaopt.node' AND r.status = 'RUNNING' AND EXISTS "
            "(SELECT 1 FROM metrics m WHERE m.run_uuid = t.run_uuid AND m.key = 'val_loss')"
        ).fetchall()
    return dict(rows)


def test_worker_node_lost_mid_trial_every_trial_ends_exactly_once(tmp_path):
    tag = f"{tmp_path.name}-{os.getpid()}"
    head, worker, driver_mark = (f"METAOPT_TEST_NODE={role}-{tag}" for role in ("head", "worker", "driver"))
    port = free_port()
    job = tiny_job(methods=["maml"], enqueue=[GOOD],
                   budget={**tiny_job()["budget"], "trials": 4, "meta_iterations": 4000, "eval_interval": 100},
                   resources={"cpus_per_trial": 1, "max_concurrent": 2, "max_retries": 2}, compile="never")
    path = write_job(tmp_path, job)
    db, workdir = tmp_path / "mlflow.db", tmp_path / "work"
    seen_nodes: set[str] = set()
    try:
        _ray_start(["--head", "--port", str(port), "--ray-client-server-port", str(free_port()),
                    "--include-dashboard", "false"], head)
        _ray_start(["--address", f"127.0.0.1:{port}"], worker)
        env = {**os.environ, "PYTHONPATH": str(REPO), "METAOPT_TEST_NODE": driver_mark.split("=")[1],
               "RAY_AUTH_TOKEN": TOKEN}  # metaopt sees a token and sets RAY_AUTH_MODE=token itself
        driver = subprocess.Popen(
            [sys.executable, "-m", "metaopt.cli", "search", str(path), "--address", f"127.0.0.1:{port}",
             "--tracking-uri", f"sqlite:///{db}", "--workdir", str(workdir)],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        deadline = time.monotonic() + 240
        while len(set(_running_nodes(db).values()) if db.exists() else ()) < 2:  # one trial on each node
            assert driver.poll() is None, driver.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "trials never ran on both nodes at once"
            time.sleep(0.5)
        seen_nodes = set(_running_nodes(db).values())
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
    storage = journal_storage(workdir / "optuna.journal")
    (name,) = optuna.get_all_study_names(storage)
    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.`metaopt.role` = 'trial'")
    assert sorted(int(r.data.tags["metaopt.trial_number"]) for r in runs) == [0, 1, 2, 3]
    assert all(r.info.status == "FINISHED" for r in runs)
    resumed = [r for r in runs if client.get_metric_history(r.info.run_id, "resumed_at")]
    assert len(resumed) >= 1  # the lost trial was rerun on the head from its checkpoint, in its own run
    for run in runs:
        assert {m.step for m in client.get_metric_history(run.info.run_id, "val_loss")} == set(range(100, 4001, 100))
