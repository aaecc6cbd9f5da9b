"""Learning across searches: a new key starts from the nearest keys' best configurations (`warm_start`), recorded
with the search; a key of another task kind is never a source; `metaopt advise` says what the history recommends,
or in one line that there is none."""

from __future__ import annotations

import math
import shutil

import optuna
import pytest
from mlflow.tracking import MlflowClient

from metaopt.search.storage import journal_storage
from metaopt.search.ranges import FloatRange, IntRange
from metaopt.search.space import SearchSpace
from metaopt.search.warm import (GOLDEN, REFINE_MARGIN, REFINE_MAX, REFINE_TOLERANCE, WARM_ROUND, local_step,
                                 second_round, settled)
from metaopt.tracking.history import Config, Source, distance, warm_plan
from tests.search.jobs import search_in, tiny_job
from tests.test_cli_edges import _main

BANDIT = {"family": {"name": "bandit", "arms": 5, "pulls": 10}, "methods": ["random", "greedy"], "search_space": None,
          "budget": {"trials": 2, "meta_iterations": 10, "eval_interval": 10, "val_tasks": 50, "test_tasks": 50}}


@pytest.fixture(scope="module")
def store(tmp_path_factory, recorded_search):
    """The recorded sine-5shot search (MAML, first-order MAML) and a bandit search, in one store of its own."""
    folder = tmp_path_factory.mktemp("history")
    shutil.copyfile(recorded_search.uri.removeprefix("sqlite:///"), folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    search_in(folder, tiny_job(name="bandits", **BANDIT), "bandit.yaml")
    return folder, uri, recorded_search


def test_distance_between_option_sets():
    assert distance({"shots": 5, "queries": 5}, {"shots": 5, "queries": 5}) == 0
    assert distance({"shots": 5}, {"shots": 10}) == pytest.approx(1.0)
    assert distance({"function": "linear"}, {"function": "relu"}) == 1.0


def test_a_warm_plan_tries_each_method_first_then_more_of_the_one_that_scores_best():
    space = SearchSpace(["maml", "fomaml", "scratch"], {"maml": {"inner_lr": FloatRange(type="float", low=0.001, high=0.1)},
                                                        "fomaml": {"inner_lr": FloatRange(type="float", low=0.001, high=0.1)}})
    near = Source("sine-5shot", 1.0, "MSE", [Config("scratch", {}, 0.1), Config("maml", {"inner_lr": 0.01}, 0.2),
                                            Config("maml", {"inner_lr": 0.05}, 0.3)])
    far = Source("sine-40shot", 3.0, "MSE", [Config("fomaml", {"inner_lr": 0.02}, 0.1),
                                             Config("maml", {"inner_lr": 0.09}, 0.1),
                                             Config("fomaml", {"inner_lr": 0.5}, 0.2),  # 0.5: outside this space
                                             Config("fomaml", {"inner_lr": 0.03}, 0.3)])
    plan = warm_plan([near, far], space, limit=4)
    # scratch has one configuration (a baseline the job tries anyway): never a warm start's
    assert [config for config, _ in plan.first] == [{"method": "maml", "inner_lr": 0.01},
                                                    {"method": "fomaml", "inner_lr": 0.02}]
    assert plan.first[0][1] == "sine-5shot (maml, distance 1)"
    # the rest by rank, nearest source first at each rank
    assert [config for config, _ in plan.more] == [{"method": "maml", "inner_lr": 0.09},
                                                   {"method": "maml", "inner_lr": 0.05},
                                                   {"method": "fomaml", "inner_lr": 0.03}]
    assert plan.more[1][1] == "sine-5shot (maml #2, distance 1)"
    # gated: more of the method that scored best here, up to the limit; nothing of a method without more
    assert [c for c, _ in second_round(plan, [("maml", 0.5), ("fomaml", 0.2)], minimize=True)] == [
        {"method": "fomaml", "inner_lr": 0.03}]
    assert [c for c, _ in second_round(plan, [("maml", 0.5), ("fomaml", 0.2)], minimize=False)] == [
        {"method": "maml", "inner_lr": 0.09}, {"method": "maml", "inner_lr": 0.05}]
    assert second_round(plan, [("scratch", 0.0)], minimize=True) == []
    assert len(warm_plan([near, far], space, limit=1).first) == 1


def test_a_local_step_moves_one_number_of_the_best_configuration_towards_a_better_one():
    space = SearchSpace(["lasso", "knn", "scratch"], {"lasso": {"alpha": FloatRange(type="float", low=1e-4, high=1.0,
                                                                                     log=True)},
                                                      "knn": {"neighbors": IntRange(type="int", low=1, high=5)}})

    def lasso(alpha: float, loss: float) -> tuple[dict, float]:
        return {"method": "lasso", "lasso.alpha": alpha}, loss

    # bracketed: the vertex of the parabola through the best and its neighbours (a loss minimal at 0.02)
    curve = [lasso(a, (math.log(a / 0.02)) ** 2) for a in (0.009, 0.0121, 0.0507)]
    (config, said) = local_step(curve, space, minimize=True, step=0)
    assert config["method"] == "lasso" and 0.0121 < config["alpha"] < 0.0507
    assert config["alpha"] == pytest.approx(0.02, rel=1e-6) and said.startswith("lasso alpha 0.0121 -> 0.02")
    # a score to maximise: the same moves on the negated curve; one side only: the nearest trial mirrored
    assert local_step([(p, -v) for p, v in curve], space, minimize=False, step=0)[0] == config
    assert local_step([lasso(0.01, 1.0), lasso(0.001, 2.0)], space, minimize=True,
                      step=0)[0]["alpha"] == pytest.approx(0.01 * 10 ** GOLDEN)  # a golden ratio further
    # integers stay integers within range; a baseline's trial (no numbers) is never the one refined
    knn = [({"method": "knn", "knn.neighbors": 4}, 0.3), ({"method": "knn", "knn.neighbors": 5}, 0.5),
           ({"method": "scratch"}, 0.1)]
    assert local_step(knn, space, minimize=True, step=0)[0] == {"method": "knn", "neighbors": 2}  # 4 - 1.6, rounded
    # a move a running or failed trial already has is not proposed again
    assert local_step(knn, space, minimize=True, step=0, asked=[{"method": "knn", "knn.neighbors": 2}]) is None
    assert local_step([({"method": "scratch"}, 0.1)], space, minimize=True, step=0) is None
    # every move tried: none left
    assert local_step([({"method": "knn", "knn.neighbors": 1}, 0.1), ({"method": "knn", "knn.neighbors": 2}, 0.5)],
                      space, minimize=True, step=0) is None
    # a runner-up within REFINE_MARGIN of the best takes every other step; one further behind none
    close = [*curve[:2], ({"method": "knn", "knn.neighbors": 4}, curve[1][1] * (1 + REFINE_MARGIN / 2))]
    assert [local_step(close, space, minimize=True, step=k)[0]["method"] for k in range(4)] == [
        "lasso", "knn", "lasso", "knn"]
    far = [*curve[:2], ({"method": "knn", "knn.neighbors": 4}, curve[1][1] * (1 + 2 * REFINE_MARGIN))]
    assert {local_step(far, space, minimize=True, step=k)[0]["method"] for k in range(4)} == {"lasso"}


def test_a_method_settles_after_two_local_steps_that_gain_less_than_the_tolerance():
    warm = [("lasso", 0.10, False), ("ridge", 0.20, False)]
    assert settled(warm, minimize=True) == set()
    tiny = 0.10 * (1 - REFINE_TOLERANCE / 2)  # better, by less than the tolerance
    assert settled([*warm, ("lasso", 0.11, True), ("lasso", tiny, True)], minimize=True) == {"lasso"}
    # a step that gains enough keeps the method going; one miss is allowed; a failed step gains nothing
    assert settled([*warm, ("lasso", 0.11, True), ("lasso", 0.09, True)], minimize=True) == set()
    assert settled([*warm, ("lasso", 0.11, True), ("ridge", 0.15, True)], minimize=True) == set()
    assert settled([*warm, ("ridge", None, True), ("ridge", 0.25, True), ("lasso", 0.2, True)],
                   minimize=True) == {"ridge"}
    # against the method's own best, whichever round scored it; a score to maximise
    assert settled([*warm, ("ridge", 0.5, True), ("tpe", 0.0, False), ("ridge", 0.3, True)], minimize=False) == set()
    assert settled([("knn", 0.5, False), ("knn", 0.4, True), ("knn", 0.5, True)], minimize=False) == {"knn"}
    # a settled method takes no more steps; its runner-up does
    space = SearchSpace(["lasso", "ridge"], {m: {"alpha": FloatRange(type="float", low=1e-4, high=1.0, log=True)}
                                             for m in ("lasso", "ridge")})
    scored = [({"method": "lasso", "lasso.alpha": 0.01}, 0.10), ({"method": "ridge", "ridge.alpha": 0.01}, 0.101)]
    assert local_step(scored, space, minimize=True, step=0)[0]["method"] == "lasso"
    assert local_step(scored, space, minimize=True, step=0, settled={"lasso"})[0]["method"] == "ridge"
    assert local_step(scored, space, minimize=True, step=0, settled={"lasso", "ridge"}) is None


def test_a_warm_started_search_starts_from_the_nearest_key_and_records_it(store, tmp_path):
    folder, uri, recorded = store
    job = tiny_job(name="warm", family={"name": "sine", "shots": 10, "queries": 5}, methods=["maml", "fomaml"],
                   warm_start="auto", budget={**tiny_job()["budget"], "trials": 8})
    shutil.copyfile(folder / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = search_in(tmp_path, job)
    said = MlflowClient(uri).get_run(summary.parent_run_id).data.tags["metaopt.warm_start"]
    assert said.startswith("sine-5shot (") and "bandit" not in said  # another kind of task is never a source
    journal = journal_storage(tmp_path / "work" / "optuna.journal")
    study = optuna.load_study(study_name=summary.search_id, storage=journal)
    best = {row.method: row.hparams for row in recorded.summary.rows if row.best_val is not None}
    first = study.trials[0].params  # at most 8 // 4 = 2 configurations, the nearest source's best first
    method = first["method"]
    assert {k.split(".", 1)[1]: v for k, v in first.items() if k != "method"} == pytest.approx(
        {k: v for k, v in best[method].items() if f"{method}.{k}" in first})
    assert len(said.split("; then")[0].split("; ")) <= 2


def test_the_second_round_tries_more_of_the_method_that_scored_best_and_records_it(store, tmp_path):
    folder, _, _ = store
    shutil.copyfile(folder / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    budget = tiny_job()["budget"]
    search_in(tmp_path, tiny_job(name="source", family={"name": "sine", "shots": 20, "queries": 5},
                                 methods=["maml", "fomaml"], budget={**budget, "trials": 6}), "source.yaml")
    job = tiny_job(name="warm2", family={"name": "sine", "shots": 10, "queries": 5}, methods=["maml", "fomaml"],
                   warm_start=["sine-20shot-q5"], budget={**budget, "trials": 12})
    summary = search_in(tmp_path, job)
    study = optuna.load_study(study_name=summary.search_id,
                              storage=journal_storage(tmp_path / "work" / "optuna.journal"))
    assert study.user_attrs["warm_first"] == 2 and study.user_attrs["warm_limit"] == 3  # a quarter of 12
    (second,) = study.user_attrs["warm_second"]  # the one trial left within the limit, once both were scored
    assert second.startswith("sine-20shot-q5 (") and f"({study.trials[2].params['method']} #" in second
    said = MlflowClient(uri).get_run(summary.parent_run_id).data.tags["metaopt.warm_start"]
    # then local steps on this key around its best configuration, one at a time, each a trial of its own
    refined = study.user_attrs["warm_refined"]
    assert 1 <= len(refined) <= REFINE_MAX
    assert said.endswith(f"then, of the method that scored best of these here: {second}; then local steps here: "
                         f"{'; '.join(refined)}"), said
    steps = [t for t in study.trials if t.user_attrs.get(WARM_ROUND) == "refine"]
    assert len(steps) == len(refined) and all(t.state == optuna.trial.TrialState.COMPLETE for t in steps)
    assert [t.params["method"] for t in steps] == [r.split()[0] for r in refined]
    for step in steps:  # never a step of a method that had settled before it
        assert step.params["method"] not in settled(
            [(t.params["method"], t.value, t.user_attrs.get(WARM_ROUND) == "refine")
             for t in study.trials[:step.number]], minimize=True)


def test_a_source_of_another_kind_is_never_used(store, tmp_path):
    folder, _, _ = store
    shutil.copyfile(folder / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    job = tiny_job(name="only-bandits", warm_start=["bandit-10x5"], methods=["maml"])
    summary = search_in(tmp_path, job)
    said = MlflowClient(uri).get_run(summary.parent_run_id).data.tags["metaopt.warm_start"]
    assert said.startswith("no finished search of a near key")


def test_advise_recommends_from_history_or_says_there_is_none(store, empty_store, tmp_path, monkeypatch, capsys):
    _, uri, _ = store
    done, _ = _main(["advise", "sine-20shot", "--family", "sine", "shots=20", "queries=5", "--tracking-uri", uri],
                    tmp_path, monkeypatch, capsys)
    assert done.returncode == 0 and "sine-5shot  distance 2" in done.stdout and "maml" in done.stdout, done.stdout
    assert "bandit" not in done.stdout
    done, _ = _main(["advise", "sine-5shot", "--tracking-uri", uri], tmp_path, monkeypatch, capsys)  # a known key
    assert done.returncode == 0 and "sine-5shot  distance 0" in done.stdout
    shutil.copyfile(empty_store, tmp_path / "empty.db")
    done, seconds = _main(["advise", "x", "--family", "glyphs", "--tracking-uri", f"sqlite:///{tmp_path / 'empty.db'}"],
                          tmp_path, monkeypatch, capsys)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and len(lines) == 1 and lines[0].startswith("no history: "), done.stdout


def test_advise_of_a_bad_option_is_one_line(store, tmp_path, monkeypatch, capsys):
    from tests.test_cli_edges import _one_line_error

    _, uri, _ = store
    for options, says in ((["shots"], "advise: option 'shots': expected NAME=VALUE"),
                          (["shots=0"], "advise: shots: Input should be greater than")):
        done, _ = _main(["advise", "x", "--family", "sine", *options, "--tracking-uri", uri], tmp_path, monkeypatch,
                        capsys)
        assert done.returncode == 2 and says in _one_line_error(done)


def test_a_parabola_whose_vertex_falls_on_the_narrow_side_gives_way_to_the_golden_section_of_the_wide_side():
    space = SearchSpace(["ridge"], {"ridge": {"alpha": FloatRange(type="float", low=1e-3, high=10.0, log=True)}})
    # an asymmetric valley (flat, then a steep wall): the parabola through these points puts its vertex below the
    # best, on the narrow side, though the minimum lies above it
    curve = [({"method": "ridge", "ridge.alpha": a}, v)
             for a, v in ((0.0075, 0.1066), (0.0485, 0.1044), (0.989, 0.1193))]  # the vertex: 0.0305
    (config, _) = local_step(curve, space, minimize=True, step=0)
    golden = math.exp(math.log(0.0485) + (2 - GOLDEN) * (math.log(0.989) - math.log(0.0485)))
    assert config["alpha"] == pytest.approx(golden) and 0.0485 < config["alpha"] < 0.989
