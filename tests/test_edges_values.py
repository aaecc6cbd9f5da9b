"""Values that pass a first look and would fail later, or never: each is bounded where it enters (the job file, the
machine it runs on), so a search with one ends in seconds with one line and exit 2, having started nothing; files too
large, too deep or expanding without end are refused before they are read into memory; a search whose every trial
fails exits 1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from metaopt.learners import LEARNERS
from metaopt.learners.protonet import ProtoNet
from tests.search.jobs import tiny_job, write_job
from tests.test_cli_edges import _main, _nothing_started, _one_line_error

pytestmark = pytest.mark.no_store


def _search(job: dict, tmp_path, monkeypatch, capsys, *extra: str):
    path = write_job(tmp_path, job)
    return _main(["search", str(path), "--in-process", *extra], tmp_path, monkeypatch, capsys)


BUDGET = tiny_job()["budget"]


@pytest.mark.parametrize("change, field", [
    ({"seed": 2**32}, "seed: Input should be less than or equal to 4294967295"),
    ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
    ({"name": "n" * 300}, "name: String should have at most 80 characters"),
    ({"budget": {**BUDGET, "val_tasks": 10**9}}, "budget.val_tasks: Input should be less than or equal to 100000"),
    ({"budget": {**BUDGET, "test_tasks": 10**12}}, "budget.test_tasks: Input should be less than or equal to 100000"),
    ({"budget": {**BUDGET, "trials": 10**7}}, "budget.trials: Input should be less than or equal to 100000"),
    ({"budget": {**BUDGET, "timeout_s": float("inf")}}, "budget.timeout_s: Input should be a finite number"),
    ({"resources": {"cpus_per_trial": 10**6}}, "resources.cpus_per_trial: Input should be less than or equal to 1024"),
    ({"resources": {"max_retries": 10**6}}, "resources.max_retries: Input should be less than or equal to 100"),
    ({"backbone": {"name": "mlp", "hidden": [10**9]}}, "backbone.hidden"),
    ({"family": {"name": "sine", "shots": 10**9}}, "family.shots: Input should be less than or equal to 100000"),
    ({"family": {"name": "functions", "points": 10**7}}, "family.points: Input should be less than or equal to 100000"),
    ({"family": {"name": "glyphs", "queries": 10**6}}, "family.queries: Input should be less than or equal to 100000"),
])
def test_a_value_past_its_bound_is_one_line_and_starts_nothing(change, field, tmp_path, monkeypatch, capsys):
    done, seconds = _search({**tiny_job(), **change}, tmp_path, monkeypatch, capsys)
    assert done.returncode == 2 and seconds < 10
    line = _one_line_error(done)
    assert f"job.yaml: {field}" in line and len(line) < 300, line
    _nothing_started(tmp_path)


def test_resources_this_machine_does_not_have_are_one_line_before_anything_starts(tmp_path, monkeypatch, capsys):
    cpus = os.cpu_count() or 1
    done, seconds = _search({**tiny_job(), "resources": {"cpus_per_trial": cpus + 1}}, tmp_path, monkeypatch, capsys)
    assert done.returncode == 2 and seconds < 10
    assert _one_line_error(done).endswith(f"job.yaml: resources.cpus_per_trial: {cpus + 1} but this machine has "
                                          f"{cpus} CPUs (at most {cpus}; --address runs on a cluster)")
    _nothing_started(tmp_path)
    if torch.cuda.is_available():
        return
    done, seconds = _search({**tiny_job(), "resources": {"gpus_per_trial": 1}}, tmp_path, monkeypatch, capsys)
    assert done.returncode == 2 and seconds < 10
    assert _one_line_error(done).endswith("job.yaml: resources.gpus_per_trial: 1 but this machine has no CUDA GPU "
                                          "(0 trains on the CPU; --address runs on a cluster)")
    _nothing_started(tmp_path)


def test_a_bf16_job_on_a_machine_without_native_bf16_is_one_line_before_anything_starts(tmp_path, monkeypatch, capsys):
    from metaopt.search import fit

    monkeypatch.setattr(fit, "bf16_supported", lambda device: False)  # as on a CPU without AVX-512 BF16 or AMX
    done, seconds = _search({**tiny_job(), "precision": "bf16"}, tmp_path, monkeypatch, capsys)
    assert done.returncode == 2 and seconds < 10
    assert _one_line_error(done).endswith("job.yaml: precision: bf16 but this machine's CPU (no AVX-512 BF16 or AMX) "
                                          "has no native bf16, where it would only be slower (allowed: fp32, bf16; "
                                          "fp32 runs anywhere)")
    _nothing_started(tmp_path)


def _bomb(levels: int = 9) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, message", [
    # An alias bomb in a field whose error quotes the value, and in a field that accepts anything.
    (lambda job: _bomb() + yaml.safe_dump({**job, "compile": None}).replace("compile: null", f"compile: *l8"),
     "expands to more than 100,000 values"),
    (lambda job: _bomb() + yaml.safe_dump(job) + "enqueue: [*l8]\n", "expands to more than 100,000 values"),
    (lambda job: yaml.safe_dump(job) + "space: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    (lambda job: yaml.safe_dump(job) + "space: " + "{a: " * 60 + "1" + "}" * 60 + "\n", "nested too deeply"),
    (lambda job: yaml.safe_dump(job) + "".join(f"# padding {i:09d}\n" for i in range(80_000)), "bytes: a job"),
    (lambda job: yaml.safe_dump(job) + "compile: " + "x" * 500_000 + "\n", "compile: Input should be"),
])
def test_a_file_too_large_too_deep_or_expanding_is_refused_in_seconds(text, message, tmp_path, monkeypatch, capsys):
    path = tmp_path / "job.yaml"
    path.write_text(text({k: v for k, v in tiny_job().items()}))
    done, seconds = _main(["search", str(path), "--in-process"], tmp_path, monkeypatch, capsys)
    assert done.returncode == 2 and seconds < 10
    line = _one_line_error(done)
    assert message in line and len(line) < 400, line[:500]
    _nothing_started(tmp_path)


def test_a_file_that_is_not_utf8_text_is_one_line(tmp_path, monkeypatch, capsys):
    path = tmp_path / "job.yaml"
    path.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)))  # a gzip header and binary
    done, _ = _main(["search", str(path), "--in-process"], tmp_path, monkeypatch, capsys)
    assert done.returncode == 2
    assert "job.yaml: not UTF-8 text" in _one_line_error(done)
    bom = tmp_path / "bom.yaml"  # a UTF-8 byte-order mark is text, and read as such
    bom.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump({**tiny_job(), "seed": -5}).encode())
    done, _ = _main(["search", str(bom), "--in-process"], tmp_path, monkeypatch, capsys)
    assert "bom.yaml: seed: Input should be greater than or equal to 0" in _one_line_error(done)


class Broken(ProtoNet):
    """A learner whose every meta-step fails, as a bad plugin's would."""

    name = "broken-step"

    def meta_step(self, batch):  # noqa: ANN001, ANN201 - the learner contract's
        raise RuntimeError("this step always fails")


def test_a_search_whose_every_trial_fails_exits_1_with_one_line(tmp_path, monkeypatch, capsys):
    LEARNERS.register(Broken)
    try:
        job = tiny_job(family={"name": "glyphs", "ways": 3, "shots": 1, "queries": 2}, methods=["broken-step"],
                       search_space=None, backbone={"name": "conv4", "hidden": 8},
                       budget={**BUDGET, "trials": 2, "test_tasks": 20})
        done, _ = _search(job, tmp_path, monkeypatch, capsys, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
    finally:
        LEARNERS.unregister("broken-step")
    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: every trial failed ("), done.stderr
    assert "the first: RuntimeError: this step always fails" in errors[0]


@pytest.mark.parametrize("search_id", ["../../x", "a/b", "..", ".hidden", "x" * 200, "tab\there", "semi;colon"])
def test_a_search_id_that_would_become_another_path_is_one_line(search_id, tmp_path, monkeypatch, capsys):
    done, seconds = _search(tiny_job(), tmp_path, monkeypatch, capsys, "--search-id", search_id)
    assert done.returncode == 2 and seconds < 10
    assert "a search id is 1 to 128 letters, digits, _ . -" in _one_line_error(done)
    _nothing_started(tmp_path)
    done, _ = _main(["resume", search_id], tmp_path, monkeypatch, capsys)
    assert done.returncode == 2 and "a search id is" in _one_line_error(done)
    assert not (tmp_path.parent / "x").exists()


def test_metaopt_load_of_a_foreign_file_or_an_escaping_uri_is_one_line(tmp_path):
    import metaopt

    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    partial = tmp_path / "partial.pt"
    torch.save({"format": 1, "method": "maml"}, partial)
    for path, message in ((text, "not a readable checkpoint"), (tensor, "not a metaopt checkpoint (it holds a Tensor"),
                          (partial, "not a complete metaopt checkpoint (no hparams, backbone")):
        with pytest.raises(ValueError, match=r"^" + str(path).replace(".", r"\.")) as caught:
            metaopt.load(str(path))
        assert message in str(caught.value) and "\n" not in str(caught.value)
    for uri in ("runs:/0123456789abcdef0123456789abcdef/../..", "runs:/0123456789abcdef0123456789abcdef/%2e%2e/x",
                "models:/name/../../etc"):
        with pytest.raises(ValueError, match="refused: '..' in a model URI"):
            metaopt.load(uri)


@pytest.fixture(scope="module")
def recorded_store(tmp_path_factory) -> Path:
    """A store one tiny search wrote, with its parent run, a trial run and a champion."""
    import metaopt

    folder = tmp_path_factory.mktemp("recorded")
    metaopt.run(tiny_job(budget={**BUDGET, "trials": 1}), in_process=True, tracking_uri=f"sqlite:///{folder}/mlflow.db",
                workdir=folder / "work", progress=False)
    return folder / "mlflow.db"


def _damaged(kind: str, store: Path, folder: Path) -> Path:
    import sqlite3

    path = folder / "mlflow.db"
    if kind == "garbage":
        path.write_bytes(bytes(range(256)) * 100)
    elif kind == "truncated":
        path.write_bytes(store.read_bytes()[: store.stat().st_size // 2])
    elif kind == "zeroed":
        data = bytearray(store.read_bytes())
        data[4096 * 3: 4096 * 40] = bytes(4096 * 37)  # pages of the tables overwritten
        path.write_bytes(bytes(data))
    elif kind == "foreign":
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE notes (text TEXT)")
    elif kind == "folder":
        path.mkdir()
    return path


@pytest.mark.parametrize("kind, says", [
    ("garbage", "is damaged or not an SQLite database (file is not a database)"),
    ("truncated", "is damaged"),
    ("zeroed", "is damaged"),
    ("foreign", "is an SQLite database but not an MLflow store"),
    ("folder", "is a folder, not an MLflow store file"),
])
def test_a_damaged_store_is_one_line_and_exit_1_for_every_command(kind, says, recorded_store, tmp_path, monkeypatch,
                                                                   capsys):
    store = recorded_store
    folder = tmp_path / "here"
    folder.mkdir()
    path = _damaged(kind, store, folder)
    before = path.read_bytes() if path.is_file() else None
    for command in (["search", str(write_job(tmp_path, tiny_job())), "--in-process"], ["leaderboard", "sine-5shot"],
                    ["select", "sine-5shot"], ["resume", "tiny-20260101-000000-abcd"]):
        done, seconds = _main(command, folder, monkeypatch, capsys)
        assert done.returncode == 1 and seconds < 10, (command, done.stderr[-2000:])
        line = _one_line_error(done)
        assert f"{path}" in line and says in line, (command, line)
    assert (path.read_bytes() if path.is_file() else None) == before  # nothing written to it
    assert not (folder / ".metaopt").exists()


def test_a_store_is_made_whole_or_not_at_all_and_two_drivers_share_it(tmp_path):
    from mlflow.tracking import MlflowClient

    from tests import drivers

    write_job(tmp_path, tiny_job(budget={**BUDGET, "trials": 1}))
    args, env = ["search", "job.yaml", "--in-process"], {"MLFLOW_TRACKING_URI": ""}
    full = drivers.run(drivers.main, args, cwd=tmp_path, env=env, file_size_limit=300_000, timeout=120)
    assert full.returncode == 1, full.stderr[-2000:]
    errors = [line for line in full.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "cannot create the MLflow store at" in errors[0], full.stderr[-2000:]
    assert "Traceback" not in full.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if "mlflow" in p.name) == []  # no half-made store left

    both = [drivers.start(drivers.main, args, cwd=tmp_path, env=env) for _ in range(2)]
    outcomes = [drivers.finish(*driver) for driver in both]
    assert [done.returncode for done in outcomes] == [0, 0], [done.stderr[-2000:] for done in outcomes]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    searches = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  "tags.`metaopt.role` = 'search'")
    assert len(searches) == 2 and all(r.info.status == "FINISHED" for r in searches)


def killed_in_conclusion(point: str, search_id: str) -> int:
    """A driver (its own process: ``tests.drivers``) that searches ``job.yaml`` and is killed with SIGKILL (nothing
    runs after) at ``point`` of the conclusion."""
    import json
    import signal
    import tempfile

    from metaopt.search import load_job
    from metaopt.search.launch import Launch
    from metaopt.tracking import MlflowSearchTracker

    calls = {"record_test": 0}

    class KilledAt(MlflowSearchTracker):  # the real tracker, up to the point
        def record_test(self, run_id, scores):
            calls["record_test"] += 1
            if point == "before-scoring":
                os.kill(os.getpid(), signal.SIGKILL)
            if point == "torn-scores" and calls["record_test"] == 2:  # killed while the scores file was being copied
                folder = Path(tempfile.mkdtemp()) / "test"
                folder.mkdir()
                text = json.dumps(scores.to_data())
                (folder / "scores.json").write_text(text[: len(text) // 2])
                self.client.log_artifact(run_id, str(folder / "scores.json"), artifact_path="test")
                os.kill(os.getpid(), signal.SIGKILL)
            super().record_test(run_id, scores)
            if point == "during-scoring" and calls["record_test"] == 2:
                os.kill(os.getpid(), signal.SIGKILL)

        def record_decision(self, decision):
            version = super().record_decision(decision)
            if point == "after-champion":
                os.kill(os.getpid(), signal.SIGKILL)
            return version

        def finish_search(self, summary, status):
            if point == "before-close":
                os.kill(os.getpid(), signal.SIGKILL)
            super().finish_search(summary, status)

    if point == "version-without-alias":  # killed inside the registration: a version, no alias yet
        from mlflow.tracking import MlflowClient

        MlflowClient.set_registered_model_alias = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)

    launch = Launch(tracking_uri="sqlite:///" + os.path.abspath("mlflow.db"), in_process=True)
    launch.start(load_job("job.yaml"), tracker=KilledAt(launch.tracking_uri), search_id=search_id)
    return 0


# before scoring; inside the registration; after a scored method; a torn scores file; the champion moved and
# recorded; the parent run about to close
@pytest.mark.parametrize("point", ["before-scoring", "version-without-alias", "during-scoring", "torn-scores",
                                   "after-champion", "before-close"])
def test_a_driver_killed_in_the_conclusion_is_finished_by_one_resume(point, tmp_path, monkeypatch, capsys):
    import optuna
    from mlflow.tracking import MlflowClient

    from metaopt.search.storage import journal_storage
    from tests import drivers

    write_job(tmp_path, tiny_job(methods=["maml", "fomaml"], budget={**BUDGET, "trials": 3}))
    search_id = f"killed-{point}"
    killed = drivers.run(killed_in_conclusion, point, search_id, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": ""})
    assert killed.returncode == -9, killed.stderr[-3000:]

    done, seconds = _main(["resume", search_id, "--in-process"], tmp_path, monkeypatch, capsys)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "")
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    parent = [r for r in runs if r.data.tags.get("metaopt.role") == "search"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    study = optuna.load_study(study_name=search_id, storage=journal_storage(tmp_path / ".metaopt" / "optuna.journal"))
    trial_runs = [r for r in runs if r.data.tags.get("metaopt.role") != "search"]
    assert len(study.trials) == 3 and len(trial_runs) == 3
    versions = client.search_model_versions("name = 'metaopt-sine-5shot'")
    assert len(versions) == 1  # the champion moved once
    assert client.get_registered_model("metaopt-sine-5shot").aliases.get("champion") == versions[0].version


def test_a_journal_deleted_mid_search_is_written_again_and_the_search_finishes(tmp_path):
    import optuna

    from metaopt.search import load_job
    from metaopt.search.executors import InProcessExecutor
    from metaopt.search.runner import run_search
    from metaopt.search.storage import journal_storage
    from metaopt.tracking import MlflowSearchTracker

    journal = tmp_path / "work" / "optuna.journal"
    deleted = []

    def progress(event: str, info: dict) -> None:
        if event == "trial" and not deleted:  # after the first trial, as a cleanup script might
            journal.unlink()
            deleted.append(True)

    loaded = load_job(write_job(tmp_path, tiny_job(budget={**BUDGET, "trials": 3})))
    with InProcessExecutor() as executor, pytest.warns(RuntimeWarning, match="was deleted or replaced during the "
                                                                             "search: written again"):
        summary = run_search(loaded, executor=executor, tracker=MlflowSearchTracker(f"sqlite:///{tmp_path}/m.db"),
                             workdir=tmp_path / "work", progress=progress)
    assert deleted and len(summary.results) == 3 and summary.champion is not None
    study = optuna.load_study(study_name=summary.search_id, storage=journal_storage(journal))  # resumable: all there
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3


def test_torn_test_scores_of_a_champion_read_as_none_and_are_scored_again(recorded_store):
    from urllib.parse import urlparse

    from mlflow.tracking import MlflowClient

    from metaopt.tracking.champion import SCORES_ARTIFACT, read_champion, recorded_scores

    client = MlflowClient(f"sqlite:///{recorded_store}")
    champion = read_champion(client, "sine-5shot")
    assert champion is not None and recorded_scores(client, champion.run_id) is not None
    torn = Path(urlparse(client.get_run(champion.run_id).info.artifact_uri).path) / SCORES_ARTIFACT
    whole = torn.read_text()
    try:
        torn.write_text(whole[:40])
        assert recorded_scores(client, champion.run_id) is None
    finally:
        torn.write_text(whole)
