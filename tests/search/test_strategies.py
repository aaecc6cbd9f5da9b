"""Every strategy and pruner a job can name, on the real Optuna storage and the in-process driver."""

from __future__ import annotations

import optuna
import pytest

from metaopt.search import load_job
from metaopt.search.executors import InProcessExecutor
from metaopt.search.ranges import FloatRange
from metaopt.search.runner import run_search
from metaopt.search.storage import journal_storage
from metaopt.search.strategies import grid_size
from tests.search.jobs import GOOD, tiny_job, write_job

GRID_SPACE = {
    "maml": {"inner_lr": {"type": "float", "low": 0.01, "high": 0.03, "step": 0.01}, "inner_steps": {"type": "categorical", "choices": [1, 2]},
             "outer_lr": 0.003, "meta_batch": 10},
    "fomaml": {"inner_lr": 0.01, "outer_lr": 0.003, "inner_steps": {"type": "int", "low": 1, "high": 2}, "meta_batch": 10},
}


def _trials(tmp_path, summary) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=summary.search_id, storage=journal_storage(tmp_path / "work" / "optuna.journal"))
    return study.trials


@pytest.mark.parametrize("strategy", ["tpe", "random", "cmaes", "gp"])
def test_each_strategy_runs_a_conditional_search_past_its_startup_trials(strategy, tmp_path):
    job = tiny_job(strategy=strategy, budget={**tiny_job()["budget"], "trials": 8, "meta_iterations": 10})
    summary = run_search(load_job(write_job(tmp_path, job)), executor=InProcessExecutor(), workdir=tmp_path / "work")
    trials = _trials(tmp_path, summary)
    assert len(trials) == 8 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for trial in trials:  # only the chosen method's parameters, each inside its range
        method = trial.params["method"]
        assert all(name == "method" or name.startswith(f"{method}.") for name in trial.params)
        for name, value in trial.params.items():
            if name != "method" and hasattr(trial.distributions[name], "low"):
                assert trial.distributions[name].low <= value <= trial.distributions[name].high
    assert summary.champion is not None


def test_grid_enumerates_every_configuration_once_then_stops(tmp_path):
    job = tiny_job(strategy="grid", methods=["maml", "fomaml"], search_space=None, space=GRID_SPACE,
                   budget={**tiny_job()["budget"], "trials": 50, "meta_iterations": 10})
    loaded = load_job(write_job(tmp_path, job))
    assert grid_size(loaded.space) == 3 * 2 + 2
    messages = []
    summary = run_search(loaded, executor=InProcessExecutor(), workdir=tmp_path / "work",
                         progress=lambda event, info: messages.append(info.get("message")))
    seen = [(r.method, tuple(sorted(r.hparams.items()))) for r in summary.results]
    assert len(seen) == 8 and len(set(seen)) == 8
    maml_lrs = sorted({round(r.hparams["inner_lr"], 6) for r in summary.results if r.method == "maml"})
    assert maml_lrs == [0.01, 0.02, 0.03]
    assert any(m and "8 configurations" in m for m in messages)


@pytest.mark.parametrize("pruner", [
    {"type": "hyperband", "reduction_factor": 9},  # 80/10 iterations < 9: one bracket, so all three trials meet
    {"type": "wilcoxon", "p_threshold": 0.1},
])
def test_pruner_stops_a_hopeless_trial_and_records_it_pruned(pruner, tmp_path):
    hopeless = {**GOOD, "outer_lr": 1e-7, "inner_lr": 1e-6}
    job = tiny_job(methods=["maml"], enqueue=[GOOD, GOOD, hopeless], pruner=pruner,
                   budget={**tiny_job()["budget"], "trials": 3, "meta_iterations": 80})
    summary = run_search(load_job(write_job(tmp_path, job)), executor=InProcessExecutor(), workdir=tmp_path / "work")
    trials = _trials(tmp_path, summary)
    assert trials[2].state == optuna.trial.TrialState.PRUNED
    assert summary.results[2].state == "pruned" and summary.results[2].iterations < 80
    assert "pruned at iteration" in trials[2].user_attrs["reason"]
    if pruner["type"] == "wilcoxon":  # one value per validation episode, paired by episode and iteration
        assert len(trials[0].intermediate_values) == 20 * 8 and 10 * 20 in trials[0].intermediate_values


def test_conditional_search_over_seven_methods_prunes_and_records_it_in_optuna_and_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    from metaopt.tracking import MlflowSearchTracker

    methods = ["maml", "fomaml", "mamlpp", "reptile", "anil", "metasgd", "metacurvature"]
    hopeless = {**GOOD, "outer_lr": 1e-7, "inner_lr": 1e-6}
    job = tiny_job(methods=methods, enqueue=[GOOD, GOOD, hopeless],
                   pruner={"type": "median", "n_startup_trials": 2},
                   budget={**tiny_job()["budget"], "trials": 9, "meta_iterations": 60})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = run_search(load_job(write_job(tmp_path, job)), executor=InProcessExecutor(),
                         tracker=MlflowSearchTracker(uri), workdir=tmp_path / "work")
    trials = _trials(tmp_path, summary)
    assert len({t.params["method"] for t in trials}) >= 3  # the space is conditional on the method
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert 2 in {t.number for t in pruned}
    client = MlflowClient(uri)
    for trial in pruned:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED" and run.data.tags["metaopt.state"] == "pruned"  # it lost early: not killed
        last_step = max(trial.intermediate_values)
        assert f"pruned at iteration {last_step}" in run.data.tags["metaopt.reason"]
        assert max(m.step for m in client.get_metric_history(run.info.run_id, "val_loss")) == last_step


@pytest.mark.parametrize("strategy", ["hypergrad", "tpe+hypergrad"])
def test_hypergradient_strategies_run_the_hypergrad_learner_on_each_base_method(strategy, tmp_path):
    job = tiny_job(strategy=strategy, methods=["maml", "fomaml", "anil"],
                   budget={**tiny_job()["budget"], "trials": 6, "meta_iterations": 20})
    loaded = load_job(write_job(tmp_path, job))
    summary = run_search(loaded, executor=InProcessExecutor(), workdir=tmp_path / "work")
    assert {r.method for r in summary.results} == {"hypergrad"}
    assert all(r.state == "complete" for r in summary.results)
    bases = {r.hparams["base"] for r in summary.results}
    assert bases <= {"maml", "fomaml", "anil"} and len(bases) >= 2
    for r in summary.results:
        spec = loaded.space.spaces[r.hparams["base"]]["inner_lr"]
        assert (r.hparams["min_inner_lr"], r.hparams["max_inner_lr"]) == (spec.low, spec.high)
        if strategy == "tpe+hypergrad":  # the learner, not TPE, sets the rates: they start mid-range
            assert r.hparams["inner_lr"] == pytest.approx((spec.low * spec.high) ** 0.5)
    trials = _trials(tmp_path, summary)
    if strategy == "tpe+hypergrad":
        assert not any(name.endswith("_lr") for t in trials for name in t.params)


def test_tpe_hypergrad_runs_a_mamlpp_space_of_the_shipped_search_space(tmp_path):
    job = tiny_job(strategy="tpe+hypergrad", methods=["mamlpp"], budget={**tiny_job()["budget"], "trials": 2})
    summary = run_search(load_job(write_job(tmp_path, job)), executor=InProcessExecutor(), workdir=tmp_path / "work")
    assert [r.state for r in summary.results] == ["complete", "complete"]
    assert {r.hparams["base"] for r in summary.results} == {"mamlpp"}


def test_hypergradient_strategy_rejects_methods_it_cannot_tune(tmp_path):
    from metaopt.search import ConfigError

    with pytest.raises(ConfigError, match="strategy hypergrad learns the hyperparameters of maml, fomaml, anil, mamlpp"
                                          " only, not reptile"):
        load_job(write_job(tmp_path, tiny_job(strategy="hypergrad")))


def test_hypergrad_trial_logs_its_learned_trajectories_as_metrics_and_a_figure(tmp_path):
    from mlflow.tracking import MlflowClient

    from metaopt.tracking import MlflowSearchTracker

    job = tiny_job(strategy="tpe+hypergrad", methods=["maml"], budget={**tiny_job()["budget"], "trials": 1})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = run_search(load_job(write_job(tmp_path, job)), executor=InProcessExecutor(),
                         tracker=MlflowSearchTracker(uri), workdir=tmp_path / "work")
    client, run_id = MlflowClient(uri), summary.results[0].run_id
    outer = client.get_metric_history(run_id, "hyper/outer_lr")
    assert [m.step for m in outer] == [10, 20]
    assert client.get_metric_history(run_id, "hyper/weight_decay")
    assert any(k.startswith("hyper/inner_lr/") for k in client.get_run(run_id).data.metrics)
    figures = [a.path for a in client.list_artifacts(run_id, "figures")]
    assert figures == ["figures/trial-00000-hyperparameters.png"]


def test_a_strategy_is_one_class_and_one_registry_line(tmp_path, monkeypatch):
    from metaopt.search import STRATEGIES, Strategy

    class QuasiMonteCarlo(Strategy):
        name = "qmc"

        def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
            return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)

    monkeypatch.setitem(STRATEGIES, "qmc", QuasiMonteCarlo)
    job = tiny_job(strategy="qmc", methods=["maml"], budget={**tiny_job()["budget"], "trials": 3, "meta_iterations": 10})
    summary = run_search(load_job(write_job(tmp_path, job)), executor=InProcessExecutor(), workdir=tmp_path / "work")
    assert [r.state for r in summary.results] == ["complete"] * 3
    assert len({r.hparams["inner_lr"] for r in summary.results}) == 3


@pytest.mark.parametrize("strategy", ["tpe", "random", "cmaes", "gp"])
def test_a_method_with_one_configuration_gets_one_trial_and_the_rest_go_to_the_searched_ones(strategy):
    from metaopt.search.space import SearchSpace
    from metaopt.search.strategies import STRATEGIES

    space = SearchSpace(["maml", "scratch", "pretrain", "user_mean"], {
        "maml": {"inner_lr": FloatRange(type="float", low=0.01, high=0.1, log=True)}, "pretrain": {"adapt_steps": 5}})
    chosen = STRATEGIES[strategy]()
    study = optuna.create_study(sampler=chosen.study_sampler(seed=3, space=space))
    study.enqueue_trial(space.enqueue_params({"method": "scratch"}))
    methods = []
    for _ in range(16):
        trial = study.ask()
        method, hparams = chosen.ask(trial, space)
        methods.append(method)
        study.tell(trial, hparams.get("inner_lr", 0.5))  # maml is the good one
    assert methods[0] == "scratch" and all(methods.count(m) <= 1 for m in ("scratch", "pretrain", "user_mean"))
    assert methods.count("maml") >= 13, methods
    fixed = SearchSpace(["scratch", "user_mean"], {})
    assert chosen.planned_trials(fixed, 12) == 2 and chosen.planned_trials(space, 12) == 12
