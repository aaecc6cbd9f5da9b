"""Trials that lose their worker resume from their checkpoint; a search whose driver dies resumes with no trial lost."""

from __future__ import annotations

import contextlib
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
from metaopt.search.reporting import NullTracker
from metaopt.search.runner import run_search
from metaopt.search.storage import journal_storage
from metaopt.search.trial import TrialConfig, execute_trial
from tests.processes import kill_marked
from tests.search.jobs import GOOD, REPO, tiny_job, write_job


class _WorkerLost(BaseException):
    """Like the process dying: nothing in the trial catches it."""


class _LoseWorkerAt:
    """A trial tracker whose log fails at one step, as if the worker died there (after the previous checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step = step

    @contextlib.contextmanager
    def open_trial(self, tags, run_name, run_id=None):
        log = NullTracker().open_trial(tags, run_name).__enter__()
        step = self.step

        class Log(type(log)):
            def log_metrics(self, metrics, at):
                if at == step:
                    raise _WorkerLost(f"worker lost at {at}")

        yield Log()

    def fetch_checkpoint(self, run_id):
        return None


def _config(tmp_path: Path, name: str) -> TrialConfig:
    job = tiny_job(budget={**tiny_job()["budget"], "meta_iterations": 40})
    loaded = load_job(write_job(tmp_path, job))
    return TrialConfig(search_id="s", number=0, method="maml", hparams={k: v for k, v in GOOD.items() if k != "method"},
                       job=loaded.job, checkpoint_dir=str(tmp_path / name))


def test_a_retried_trial_resumes_from_its_checkpoint_and_ends_where_an_unbroken_one_does(tmp_path):
    unbroken = execute_trial(_config(tmp_path, "a"), NullTracker())
    config = _config(tmp_path, "b")
    with pytest.raises(_WorkerLost, match="worker lost at 30"):
        execute_trial(config, _LoseWorkerAt(30))
    assert config.checkpoint_path.is_file()
    retried = execute_trial(config, NullTracker())
    assert retried.state == "complete" and retried.iterations == 40 and retried.extra["resumed_at"] == 20
    assert retried.value == pytest.approx(unbroken.value, rel=1e-6, abs=1e-9)


def test_a_trial_past_its_time_limit_is_pruned_with_the_reason(tmp_path):
    job = tiny_job(methods=["maml"], enqueue=[GOOD],
                   budget={**tiny_job()["budget"], "trials": 1, "meta_iterations": 100_000, "trial_timeout_s": 2})
    summary = run_search(load_job(write_job(tmp_path, job)), executor=InProcessExecutor(), workdir=tmp_path / "work")
    result = summary.results[0]
    assert result.state == "pruned" and "time limit of 2s reached" in result.reason
    assert 10 <= result.iterations < 100_000 and result.value is not None


def _study(workdir: Path) -> optuna.Study:
    storage = journal_storage(workdir / "optuna.journal")
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


def test_driver_killed_mid_search_then_resume_finishes_the_budget_with_each_trial_once(tmp_path, monkeypatch):
    job = tiny_job(methods=["maml", "fomaml"], enqueue=[GOOD],
                   budget={**tiny_job()["budget"], "trials": 5, "meta_iterations": 600, "eval_interval": 100},
                   resources={"cpus_per_trial": 1, "max_concurrent": 2}, compile="never")
    path = write_job(tmp_path, job)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    workdir = tmp_path / "work"
    command = [sys.executable, "-m", "metaopt.cli"]
    marker = f"METAOPT_TEST_RUN={tmp_path.name}-{os.getpid()}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "METAOPT_TEST_RUN": marker.split("=", 1)[1]}
    driver = subprocess.Popen([*command, "search", str(path), "--tracking-uri", uri, "--workdir", str(workdir)],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # kill once a trial has finished and others are mid-way
            time.sleep(1)
            if (workdir / "optuna.journal").is_file():
                trials = _study(workdir).trials
                done = [t for t in trials if t.state.is_finished()]
                running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING and t.intermediate_values]
                if done and running:
                    break
        else:
            pytest.fail("the search never got a trial done and one running")
    finally:
        os.kill(driver.pid, signal.SIGKILL)  # the driver alone, as a crash would
        driver.wait()
        time.sleep(2)
        kill_marked(marker)
    before = _study(workdir)
    interrupted = {t.number for t in before.trials if t.state == optuna.trial.TrialState.RUNNING}
    assert interrupted and len(before.trials) < 5

    # The resume proves nothing more in a process (or on a Ray) of its own: main() here, its trials in this process.
    from metaopt.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["resume", before.study_name, "--tracking-uri", uri, "--workdir", str(workdir), "--in-process"]) == 0

    after = _study(workdir)
    assert sorted(t.number for t in after.trials) == list(range(5))
    assert all(t.state.is_finished() for t in after.trials)
    for number in interrupted:  # resumed from its checkpoint, not started over
        assert after.trials[number].state == optuna.trial.TrialState.COMPLETE
    client = MlflowClient(uri)
    parent_id = after.user_attrs["parent_run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags.get("metaopt.resumed") == "true"
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    numbers = sorted(int(run.data.tags["metaopt.trial_number"]) for run in children)
    assert numbers == list(range(5))
    for run in children:
        assert run.info.status in {"FINISHED", "KILLED", "FAILED"}
        if run.info.status == "FINISHED":  # no point of the curve lost (one may repeat: logged, then killed)
            steps = {m.step for m in client.get_metric_history(run.info.run_id, "val_loss")}
            assert steps == set(range(100, 601, 100))
    resumed_runs = [r for r in children if int(r.data.tags["metaopt.trial_number"]) in interrupted]
    assert any(client.get_metric_history(r.info.run_id, "resumed_at") for r in resumed_runs)


def test_a_trial_whose_checkpoint_is_damaged_starts_over_with_a_warning(tmp_path):
    unbroken = execute_trial(_config(tmp_path, "a"), NullTracker())
    config = _config(tmp_path, "b")
    config.checkpoint_path.parent.mkdir(parents=True)
    config.checkpoint_path.write_bytes(b"PK\x03\x04 cut short by a crash")
    with pytest.warns(UserWarning, match="checkpoint could not be restored, the trial starts over"):
        result = execute_trial(config, NullTracker())
    assert result.state == "complete" and result.iterations == 40 and "resumed_at" not in result.extra
    assert result.value == pytest.approx(unbroken.value, rel=1e-6, abs=1e-9)  # the same as a fresh start
    assert config.checkpoint_path.with_name(config.checkpoint_path.name + ".damaged").is_file()
