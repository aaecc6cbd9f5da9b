"""`objectives: [primary, adapt_ms]`: a search of two objectives with Optuna's multi-objective samplers — each trial
times its adaptation on validation tasks, the study keeps both values, the report draws the Pareto front."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
from mlflow.tracking import MlflowClient

from metaopt.console import print_summary
from metaopt.search import load_job
from metaopt.search.config import ConfigError
from metaopt.search.results import pareto_front
from metaopt.search.storage import open_storage
from metaopt.search.trial import ADAPT_MS, TrialResult
from metaopt.tasks.metrics import REGRESSION
from tests.search.jobs import search_in, tiny_job, write_job


def test_a_search_of_two_objectives_keeps_both_and_draws_the_front(tmp_path, capsys):
    job = tiny_job(methods=["maml", "cnp"], objectives=["primary", "adapt_ms"], pruner=None,
                   budget={**tiny_job()["budget"], "trials": 4},
                   enqueue=[{"method": "maml", "inner_steps": 3}, {"method": "cnp"}])
    del job["pruner"]  # a search of two objectives prunes nothing: the default becomes none
    summary = search_in(tmp_path, job)
    study = optuna.load_study(study_name=summary.search_id, storage=open_storage(summary.storage))
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4 and all(len(t.values) == 2 and t.values[1] > 0 for t in done)
    by_number = {r.number: r for r in summary.results}
    assert all(by_number[t.number].extra[ADAPT_MS] == t.values[1] for t in done)
    front = summary.pareto
    assert front and all(r.state == "complete" for r in front)
    for r in front:  # nothing beats a front trial on both
        assert not any(o.value <= r.value and o.extra[ADAPT_MS] <= r.extra[ADAPT_MS]
                       and (o.value, o.extra[ADAPT_MS]) != (r.value, r.extra[ADAPT_MS]) for o in summary.results)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert all(ADAPT_MS in client.get_run(r.run_id).data.metrics for r in summary.results)
    report = {a.path for a in client.list_artifacts(summary.parent_run_id, "report")}
    assert "report/pareto_front.png" in report
    page = client.download_artifacts(summary.parent_run_id, "report/figures.html", str(tmp_path))
    assert "Pareto front" in open(page).read()
    capsys.readouterr()
    print_summary(summary, SimpleNamespace(tracking_uri="sqlite:///x.db", experiment_id=None))
    out = capsys.readouterr().out
    assert "Pareto front (validation MSE against ms to adapt" in out
    assert summary.decision is not None and summary.rows[0].test  # the champion is still chosen on the test score


def test_the_front_is_what_no_other_trial_beats_on_both():
    metric = REGRESSION[0]  # lower is better
    results = [TrialResult(n, "m", {}, "complete", value=v, extra={ADAPT_MS: ms})
               for n, (v, ms) in enumerate([(1.0, 5.0), (0.5, 10.0), (0.6, 12.0), (2.0, 1.0), (1.0, 5.0)])]
    results.append(TrialResult(9, "m", {}, "pruned", value=0.1, extra={ADAPT_MS: 0.1}))
    assert [r.number for r in pareto_front(results, metric)] == [3, 0, 4, 1]  # cheapest first; 2 is beaten by 1
    assert pareto_front([TrialResult(0, "m", {}, "complete", value=1.0)], metric) == []  # one objective: no front


@pytest.mark.parametrize(("overrides", "says"), [
    ({"strategy": "cmaes"}, "strategy: cmaes cannot search two objectives (allowed: tpe, random, nsga2)"),
    ({"pruner": {"type": "median"}}, "pruner: median cannot prune a search of two objectives"),
    ({"objectives": ["adapt_ms"]}, "objectives: the first is primary"),
    ({"objectives": ["primary", "adapt_ms", "adapt_ms"]}, "objectives"),
])
def test_what_two_objectives_cannot_take_is_one_line(tmp_path, overrides, says):
    job = {**tiny_job(objectives=["primary", "adapt_ms"]), **overrides}
    with pytest.raises(ConfigError) as error:
        load_job(write_job(tmp_path, job))
    message = str(error.value)
    assert says in message and "\n" not in message and str(tmp_path) in message
