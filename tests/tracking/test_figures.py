"""The search's figures follow one rule for too few trials, in the HTML page and the PNGs alike: per method,
parallel coordinates from 3 finished trials, importances from 10; the family's exact limit is a reference line."""

from __future__ import annotations

import optuna

from metaopt.search.results import SearchSummary
from metaopt.search.trial import TrialResult
from metaopt.tasks.bandit import REGRET, REWARD
from metaopt.tracking.interactive import MIN_IMPORTANCE_TRIALS, MIN_PARALLEL_TRIALS
from metaopt.tracking.plots import write_search_report


def _search(finished: dict[str, int]) -> tuple[SearchSummary, optuna.Study]:
    """A bandit search whose methods finished ``finished[method]`` trials (ucb1 searches c; bayes_optimal, none)."""
    study = optuna.create_study(direction="maximize")
    results, number = [], 0
    dist = {"method": optuna.distributions.CategoricalDistribution(list(finished))}
    for method, count in finished.items():
        for i in range(count):
            params, dists = {"method": method}, dict(dist)
            if method != "bayes_optimal":
                params[f"{method}.c"] = 0.05 + 0.01 * i
                dists[f"{method}.c"] = optuna.distributions.FloatDistribution(0.01, 1.0, log=True)
            value = 6.0 + 0.01 * i if method != "bayes_optimal" else 6.7
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value,
                                                      intermediate_values={10: value}))
            results.append(TrialResult(number, method, {}, "complete", value))
            number += 1
    return SearchSummary("s", "bandit", results, [], None, 1.0, key="bandit-10x5", metrics=(REWARD, REGRET),
                         limit="bayes_optimal"), study


def test_png_importances_and_the_page_follow_one_minimum_per_method(tmp_path):
    summary, study = _search({"ucb1": MIN_IMPORTANCE_TRIALS, "greedy": MIN_PARALLEL_TRIALS - 1,
                              "thompson": MIN_PARALLEL_TRIALS, "bayes_optimal": MIN_IMPORTANCE_TRIALS})
    written = {p.name for p in write_search_report(summary, study, lambda run_id: [], tmp_path)}
    assert {n for n in written if n.startswith("param_importances")} == {"param_importances_ucb1.png"}
    page = (tmp_path / "figures.html").read_text()
    assert "ucb1: parameter importances" in page and "thompson: parameter importances" not in page
    assert "ucb1: parallel coordinates" in page and "thompson: parallel coordinates" in page
    assert "greedy: parallel coordinates" not in page  # two finished trials draw a line, not a relation
    assert "<h2>bayes_optimal:" not in page and "bayes_optimal: the family's exact limit" in page  # a reference line
    assert "validation total reward by meta-iteration" in page
