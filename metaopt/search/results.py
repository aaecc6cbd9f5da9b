"""What a search finds, as plain data: a row per method on the leaderboard, and the search's summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from metaopt.search.selection import Decision
from metaopt.search.trial import TrialResult
from metaopt.tasks.metrics import Metric


@dataclass
class MethodRow:
    """A method's line on a key's leaderboard: its best trial by validation, scored on test tasks.

    ``best_val`` is the family's primary metric on the validation tasks (best by its
    direction); ``test`` holds ``test_<metric>`` and ``test_<metric>_ci95`` for every
    metric of the family, and ``test_tasks``.
    """

    method: str
    best_val: float | None = None
    strategy: str | None = None  # of the search the best trial came from (across searches)
    test: dict[str, float] = field(default_factory=dict)
    trial_number: int | None = None
    run_id: str | None = None
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    hparams: dict[str, Any] = field(default_factory=dict)

    def count(self, state: str) -> None:
        """One more of the method's trials ended ``state`` (complete, pruned or failed; others are not counted)."""
        if state in ("complete", "pruned", "failed"):
            setattr(self, state, getattr(self, state) + 1)

    def offer(self, value: float | None, metric: Metric, **best: Any) -> bool:
        """A finished trial's validation ``value``: kept as the row's best, with ``best``'s fields, if it beats it."""
        if value is None or (self.best_val is not None and not metric.better(value, self.best_val)):
            return False
        self.best_val = value
        for name, field_value in best.items():
            setattr(self, name, field_value)
        return True

    def test_mean(self, metric: str) -> float | None:
        """The mean test ``metric``, if scored."""
        return self.test.get(f"test_{metric}")

    def test_ci(self, metric: str) -> float | None:
        """The 95% CI half-width of the test ``metric``, if scored."""
        return self.test.get(f"test_{metric}_ci95")

    @property
    def test_loss(self) -> float | None:
        """The test loss (MSE for regression, cross-entropy for classification)."""
        return self.test_mean("loss")

    @property
    def test_loss_ci95(self) -> float | None:
        """Its 95% CI half-width."""
        return self.test_ci("loss")

    @property
    def test_accuracy(self) -> float | None:
        """The test accuracy of a classifier."""
        return self.test_mean("accuracy")

    @property
    def test_accuracy_ci95(self) -> float | None:
        """Its 95% CI half-width."""
        return self.test_ci("accuracy")


def rank(rows: list[MethodRow], metric: Metric) -> list[MethodRow]:
    """Best validation score first (by ``metric``'s direction); methods without a finished trial last."""
    sign = -1.0 if metric.higher_is_better else 1.0
    return sorted(rows, key=lambda row: (row.best_val is None, sign * (row.best_val or 0.0)))


@dataclass
class SearchSummary:
    """What a search did and found."""

    search_id: str
    family: str
    results: list[TrialResult]
    rows: list[MethodRow]
    champion: MethodRow | None  # the search's best method by validation
    seconds: float
    parent_run_id: str | None = None
    storage: str | None = None  # where the Optuna study is (a journal path or a database URL)
    key: str = ""
    metrics: tuple[Metric, ...] = ()  # the family's metrics, the primary one first
    decision: Decision | None = None  # the champion decision for the key (None if the search did not finish)
    champion_version: str | None = None  # the registered model version the tracker gave a new champion
    notes: list[str] = field(default_factory=list)  # what went wrong in the champion decision, if anything
    interrupted: str | None = None  # why the search stopped early (a signal), if it did
    planned_trials: int = 0  # the trials the search meant to run
    verdict: str | None = None  # does meta-learning pay: the best meta-learner against the best baseline, paired
    limit: str | None = None  # the method that is the family's exact limit, when the search ran it

    @property
    def metric(self) -> Metric:
        """The family's primary metric: what the search optimised and ranked by."""
        return self.metrics[0]

    @property
    def pareto(self) -> list[TrialResult]:
        """A search of two objectives: its finished trials no other beats on both validation score and adaptation
        cost, cheapest first (empty for a search of one)."""
        return pareto_front(self.results, self.metric)


def pareto_front(results: list[TrialResult], metric: Metric) -> list[TrialResult]:
    """The finished trials with an adaptation cost (``val_adapt_ms``) that no other trial dominates, cheapest first."""
    from metaopt.search.trial import ADAPT_MS

    done = [r for r in results if r.state == "complete" and r.value is not None and ADAPT_MS in r.extra]

    def dominates(a: TrialResult, b: TrialResult) -> bool:
        at_least = not metric.better(b.value, a.value) and a.extra[ADAPT_MS] <= b.extra[ADAPT_MS]
        return at_least and (metric.better(a.value, b.value) or a.extra[ADAPT_MS] < b.extra[ADAPT_MS])

    front = [r for r in done if not any(dominates(o, r) for o in done if o is not r)]
    return sorted(front, key=lambda r: (r.extra[ADAPT_MS], r.number))
