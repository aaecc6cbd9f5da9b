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
    job = tiny_job(name=name, methods=[config["method"]], enqueue=[config],
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


def test_a_search_and_select_decide_the_champion_through_one_function_on_the_same_recorded_scores(tmp_path):
    from metaopt.tracking.champion import select_champion

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    strong, _ = _search(tmp_path, uri, GOOD, "strong")
    weak, by_search = _search(tmp_path, uri, {**HOPELESS, "method": "fomaml"}, "weak")  # a second method, worse
    assert not by_search.moved and by_search.best.method == "fomaml"
    by_select = select_champion("sine-5shot", tracking_uri=uri, apply=False).decision  # read back from the store
    assert (by_select.best.run_id, by_select.champion.run_id) == (weak.champion.run_id, strong.champion.run_id)
    assert (by_select.moved, by_select.reason, by_select.difference, by_select.tasks) == (
        by_search.moved, by_search.reason, by_search.difference, by_search.tasks)
