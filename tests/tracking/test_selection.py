"""The champion alias moves only when a new model beats the champion beyond noise, on the same test tasks."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from metaopt.cli import main
from metaopt.search import load_job
from metaopt.search.executors import InProcessExecutor
from metaopt.search.runner import run_search
from metaopt.tracking import MlflowSearchTracker
from metaopt.search.selection import FIRST_CHAMPION
from tests.search.jobs import GOOD, tiny_job, write_job

HOPELESS = {**GOOD, "outer_lr": 1e-7}


def _search(tmp_path, uri: str, config: dict, name: str):
    job = tiny_job(name=name, methods=["maml"], enqueue=[config],
                   budget={**tiny_job()["budget"], "trials": 1, "meta_iterations": 300, "eval_interval": 100})
    tracker = MlflowSearchTracker(uri)
    summary = run_search(load_job(write_job(tmp_path, job, f"{name}.yaml")), executor=InProcessExecutor(),
                         tracker=tracker, workdir=tmp_path / "work")
    return summary, summary.decision


def _champion_run(uri: str) -> str:
    return MlflowClient(uri).get_model_version_by_alias("metaopt-sine-5shot", "champion").run_id


def test_champion_moves_only_when_beaten_beyond_its_ci(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    weak, first = _search(tmp_path, uri, HOPELESS, "weak")
    assert first.moved and first.reason == FIRST_CHAMPION and _champion_run(uri) == weak.champion.run_id

    strong, second = _search(tmp_path, uri, GOOD, "strong")
    assert second.moved and "beats the champion" in second.reason
    mean, ci = second.difference
    assert mean + ci < 0 and _champion_run(uri) == strong.champion.run_id

    weak_again, third = _search(tmp_path, uri, HOPELESS, "weak2")
    assert not third.moved and "does not beat" in third.reason and _champion_run(uri) == strong.champion.run_id
    parent = MlflowClient(uri).get_run(weak_again.parent_run_id)
    assert "does not beat" in parent.data.tags["metaopt.champion_decision"]

    assert main(["select", "sine", "--tracking-uri", uri, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "champion unchanged: the champion is still the best" in out and strong.champion.run_id[:8] in out
    assert _champion_run(uri) == strong.champion.run_id
