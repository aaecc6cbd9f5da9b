"""The edges a user meets first, through the installed command: wrong addresses, URIs and folders fail in seconds
with one line and exit 2, having started nothing; Ctrl-C and SIGTERM stop a search cleanly and `resume` finishes it
with the numbers of an unbroken run; reading commands never create a store."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient

from metaopt.search.storage import journal_storage
from tests.processes import descendants, kill_marked, listening, marked
from tests.search.jobs import REPO, tiny_job, write_job

pytestmark = pytest.mark.no_store  # what a command does where no store is yet

INSTALLED = Path(sys.executable).with_name("metaopt")
COMMAND = [str(INSTALLED)] if INSTALLED.is_file() else [sys.executable, "-m", "metaopt.cli"]


def _run(args: list[str], cwd: Path, timeout: float = 120, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = subprocess.run([*COMMAND, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": "", **env})
    return done, time.monotonic() - start


def _main(args: list[str], cwd: Path, monkeypatch, capsys, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    """The command as ``main`` runs it in this process, in ``cwd`` (what the installed command runs: that it exits
    as ``main`` returns, with no traceback, ``tests/search/test_job_errors.py`` checks)."""
    from metaopt.cli import main

    monkeypatch.chdir(cwd)
    for name, value in {"MLFLOW_TRACKING_URI": "", **env}.items():
        monkeypatch.setenv(name, value)
    start = time.monotonic()
    code = main(args)
    seconds = time.monotonic() - start
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err), seconds


def _one_line_error(done: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-3000:]
    return lines[0]


@pytest.fixture
def job(tmp_path) -> Path:
    return write_job(tmp_path, tiny_job(methods=["maml"]))


def _nothing_started(folder: Path) -> None:
    assert not (folder / ".metaopt").exists() and not (folder / "mlflow.db").exists()


def test_an_unreachable_tracking_server_is_one_line_in_seconds_and_starts_nothing(job, tmp_path, monkeypatch, capsys):
    done, seconds = _main(["search", str(job), "--tracking-uri", "http://127.0.0.1:1"], tmp_path, monkeypatch, capsys)
    assert done.returncode == 2 and seconds < 10
    assert _one_line_error(done) == ("error: --tracking-uri http://127.0.0.1:1: cannot reach the MLflow server "
                                     "(connection refused)")
    _nothing_started(tmp_path)


def test_no_ray_cluster_at_the_address_is_one_line_within_its_timeout(job, tmp_path, monkeypatch, capsys):
    done, seconds = _main(["search", str(job), "--address", "127.0.0.1:1"], tmp_path, monkeypatch, capsys,
                          METAOPT_RAY_TIMEOUT_S="2")  # the default waits 15 s for a cluster that is starting
    assert done.returncode == 2 and seconds < 5
    line = _one_line_error(done)
    assert line.startswith("error: --address 127.0.0.1:1: no Ray cluster answers there (connection refused)")
    assert "METAOPT_RAY_TIMEOUT_S" in line
    _nothing_started(tmp_path)


@pytest.mark.parametrize("flag, value, expected", [
    ("--workdir", "/proc/nope", "error: --workdir /proc/nope: cannot write there"),
    ("--tracking-uri", "sqlite:////proc/nope/mlflow.db", "error: --tracking-uri sqlite:////proc/nope/mlflow.db: "
                                                           "folder /proc/nope: cannot write there"),
    ("--storage", "postgresql://u:secret@127.0.0.1:1/x", "error: --storage: postgresql://***@127.0.0.1:1/x: "),
])
def test_a_folder_or_database_that_cannot_be_used_is_one_line(job, tmp_path, flag, value, expected, monkeypatch,
                                                              capsys):
    done, seconds = _main(["search", str(job), flag, value], tmp_path, monkeypatch, capsys)
    assert done.returncode == 2 and seconds < 10
    line = _one_line_error(done)
    assert line.startswith(expected) and "secret" not in line
    _nothing_started(tmp_path)


@pytest.mark.parametrize("args", [["leaderboard", "x"], ["select", "x", "--dry-run"], ["ui"]])
def test_reading_commands_never_create_a_store(args, tmp_path, monkeypatch, capsys):
    done, _ = _main(args, tmp_path, monkeypatch, capsys)
    assert done.returncode == 2
    assert _one_line_error(done).endswith(f"no MLflow store at {tmp_path / 'mlflow.db'} (a search writes one; "
                                          "or point --tracking-uri or MLFLOW_TRACKING_URI at yours)")
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_journal_is_one_line_naming_the_file(job, tmp_path, monkeypatch, capsys):
    (tmp_path / ".metaopt").mkdir()
    (tmp_path / ".metaopt" / "optuna.journal").write_text('{"op_code": 0, "study_name": "s"\n')
    for args in (["search", str(job), "--in-process"], ["resume", "s", "--in-process"]):
        done, _ = _main(args, tmp_path, monkeypatch, capsys)
        assert done.returncode == 2
        assert "cannot read the Optuna journal " + str(tmp_path / ".metaopt" / "optuna.journal") in _one_line_error(done)


def test_version():
    done = subprocess.run([*COMMAND, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("metaopt 0.1.0 (torch ")


class Pickled:
    """Any object that torch.save pickles (and weights_only=True refuses)."""


def test_a_checkpoint_holding_pickled_objects_is_refused_in_one_line(tmp_path):
    import metaopt

    path = tmp_path / "model.pt"
    torch.save({"anything": Pickled()}, path)
    with pytest.raises(ValueError) as refused:
        metaopt.load(str(path))
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{path}: refused: the file holds pickled Python objects")


# -- interruption ------------------------------------------------------------------------------------------------


def _interrupt_job(tmp_path: Path) -> Path:
    return write_job(tmp_path, tiny_job(methods=["maml", "fomaml"], compile="never",
                                        budget={**tiny_job()["budget"], "trials": 3, "meta_iterations": 500,
                                                "eval_interval": 50},
                                        resources={"cpus_per_trial": 1, "max_concurrent": 2}), "interrupt.yaml")


def _study(workdir: Path) -> optuna.Study:
    storage = journal_storage(workdir / "optuna.journal")
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


def _start_and_signal(args: list[str], cwd: Path, signum: int,
                      marker: str) -> tuple[int, str, float, set[int], list[str]]:
    """Start the command in its own process group; once a trial finished and one is mid-way, signal the group.

    Returns the exit code, stderr, the seconds from the signal to the exit, what it left running (processes carrying
    the run's marker, and Ray's under the run's own ``RAY_TMPDIR``: not another job's Ray), and the addresses its
    processes listened on just before the signal.
    """
    ray_root = tempfile.mkdtemp(prefix="mo-ray-", dir="/tmp")  # short: Ray's socket paths live under it
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": "", "METAOPT_TEST_RUN": marker,
           "RAY_TMPDIR": ray_root}
    driver = subprocess.Popen([*COMMAND, *args], cwd=cwd, env=env, start_new_session=True, text=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if (cwd / ".metaopt" / "optuna.journal").is_file():
                trials = _study(cwd / ".metaopt").trials
                if any(t.state.is_finished() for t in trials) and any(
                        t.state == optuna.trial.TrialState.RUNNING and t.intermediate_values for t in trials):
                    break
        else:
            pytest.fail("the search never had a trial done and one running")
        addresses = listening(descendants(driver.pid) | _ray_pids(ray_root))
        os.killpg(driver.pid, signum)  # as a terminal's Ctrl-C does: the whole foreground process group
        sent = time.monotonic()
        _, stderr = driver.communicate(timeout=120)
        seconds = time.monotonic() - sent
        left, settled = set(), time.monotonic() + 3  # what still runs 3 s after the exit (sooner once nothing does)
        while time.monotonic() < settled:
            left = marked(f"METAOPT_TEST_RUN={marker}") | _ray_pids(ray_root)
            if not left:
                break
            time.sleep(0.3)
        return driver.returncode, stderr, seconds, left, addresses
    finally:
        if driver.poll() is None:
            driver.kill()
        kill_marked(f"METAOPT_TEST_RUN={marker}")


def _values(workdir: Path) -> dict[int, float]:
    return {t.number: t.value for t in _study(workdir).trials}


@pytest.mark.parametrize("mode, signum, code", [("in-process", signal.SIGINT, 130), ("ray", signal.SIGTERM, 143)])
def test_a_signal_stops_the_search_cleanly_and_resume_finishes_it_as_an_unbroken_run(mode, signum, code, tmp_path,
                                                                                   empty_store, monkeypatch, capsys):
    broken, unbroken = tmp_path / "broken", tmp_path / "unbroken"
    broken.mkdir()  # the interrupted search makes its store; the unbroken one finds an empty one
    unbroken.mkdir()
    shutil.copyfile(empty_store, unbroken / "mlflow.db")
    job = _interrupt_job(tmp_path)
    extra = ["--in-process"] if mode == "in-process" else []
    marker = f"{tmp_path.name}-{os.getpid()}"
    returncode, stderr, seconds, left, addresses = _start_and_signal(["search", str(job), *extra], broken, signum,
                                                                     marker)

    assert returncode == code and seconds < 60, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    study = _study(broken / ".metaopt")
    assert last == f"interrupted: {sum(t.state.is_finished() for t in study.trials)} of 3 trials finished; " \
                   f"continue with: metaopt resume {study.study_name}"
    client = MlflowClient(f"sqlite:///{broken / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs and not [r for r in runs if r.info.status == "RUNNING"]
    parent = next(r for r in runs if r.data.tags.get("metaopt.role") == "search")
    assert parent.info.status == "KILLED" and "metaopt resume" in parent.data.tags["metaopt.interrupted"]
    interrupted = [r for r in runs if r.data.tags.get("metaopt.state") == "interrupted"]
    assert interrupted and all(r.info.status == "KILLED" for r in interrupted)
    running = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert running and all("interrupted by" in t.user_attrs["interrupted"] for t in running)
    assert not left  # no process of the search (Ray's included) outlives it
    if mode == "ray":  # a local search's Ray listens on loopback only (the GCS, the raylet, the workers at least)
        assert len(addresses) >= 3 and all(a.startswith("127.0.0.1:") for a in addresses), addresses

    # What follows the signal proves nothing more in a process of its own, nor on a Ray of its own: the search
    # resumes (and, in-process, runs unbroken) through main() here, its remaining trials in this process.
    resumed, _ = _main(["resume", study.study_name, "--in-process"], broken, monkeypatch, capsys)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    if mode == "in-process":  # exactly reproducible: the unbroken run gives the same trials and numbers
        done, _ = _main(["search", str(job), *extra], unbroken, monkeypatch, capsys)
        assert done.returncode == 0, done.stderr[-3000:]
        assert _values(broken / ".metaopt") == pytest.approx(_values(unbroken / ".metaopt"), rel=1e-6)
    else:
        assert sorted(_values(broken / ".metaopt")) == [0, 1, 2]
        assert all(t.state.is_finished() for t in _study(broken / ".metaopt").trials)


def _ray_pids(root: str) -> set[int]:
    """The live processes of the Ray cluster whose files are under ``root`` (its ``RAY_TMPDIR``): named there in
    their command line, or holding a file open there (Ray's agents and workers rename themselves ``ray::...`` and
    start with a clean environment, but keep their logs open under the session folder)."""
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":
                continue
            if root.encode() in (proc / "cmdline").read_bytes():
                found.add(int(proc.name))
                continue
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd).startswith(root):
                    found.add(int(proc.name))
                    break
        except OSError:
            continue
    return found
