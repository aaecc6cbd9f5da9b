"""Selection: whether a candidate replaces a key's champion, as a pure function of per-task test scores.

The champion moves only when the candidate beats it beyond noise on the family's
primary metric: the 95% confidence interval of their paired per-task difference
(the same test tasks for both) lies wholly on the better side of zero. Nothing here
knows how scores were computed or where the champion is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from metaopt.search.evaluation import TaskScores, mean_ci
from metaopt.tasks.metrics import Metric

FIRST_CHAMPION = "the first champion of this key (there was none)"


@dataclass(frozen=True)
class Candidate:
    """A trained model and its per-task test scores."""

    method: str
    run_id: str | None
    scores: TaskScores
    trial_number: int | None = None

    def mean(self, metric: Metric) -> float:
        """The candidate's mean test ``metric``."""
        return self.scores.mean_ci(metric.name)[0]


@dataclass(frozen=True)
class Decision:
    """What selection found: the best candidate, the champion before, their paired difference, and whether it moves."""

    key: str
    metric: Metric
    best: Candidate | None
    champion: Candidate | None
    moved: bool
    reason: str
    difference: tuple[float, float] | None = None  # best - champion: mean and 95% CI half-width, per task
    tasks: int = 0  # the paired test tasks the decision rests on

    @property
    def new_champion(self) -> Candidate | None:
        """The champion after the decision."""
        return self.best if self.moved else self.champion


def decide(key: str, best: Candidate, champion: Candidate | None, metric: Metric) -> Decision:
    """Whether ``best`` replaces ``champion`` on ``metric`` (direction-aware, paired over their common test tasks)."""
    tasks = best.scores.tasks
    if champion is None:
        return Decision(key, metric, best, None, True, FIRST_CHAMPION, tasks=tasks)
    if best.run_id is not None and best.run_id == champion.run_id:
        return Decision(key, metric, best, champion, False, "the champion is still the best", tasks=tasks)
    if not best.scores.pairs_with(champion.scores):
        raise ValueError(f"the scores of {best.method} and of the champion ({champion.method}) are not on the same "
                         "test tasks")
    mean, ci, tasks = paired_difference(best.scores, champion.scores, metric)
    moved = mean - ci > 0 if metric.higher_is_better else mean + ci < 0
    verdict = "beats" if moved else "does not beat"
    reason = (f"{best.method} {verdict} the champion ({champion.method}) beyond its CI: test {metric.label} "
              f"difference {metric.show_change(mean, ci)} over {tasks} tasks")
    return Decision(key, metric, best, champion, moved, reason, (mean, ci), tasks)


def pick(key: str, candidates: list[Candidate], champion: Candidate | None, metric: Metric) -> Decision:
    """The candidate (other than the champion itself) with the best mean test ``metric``, decided against
    ``champion``; the champion alone among them is still the best."""
    if not candidates:
        raise ValueError(f"no candidate to select from for {key}")
    others = [c for c in candidates if champion is None or c.run_id is None or c.run_id != champion.run_id]
    if not others:
        return decide(key, champion, champion, metric)
    return decide(key, max(others, key=lambda c: c.mean(metric) * (1 if metric.higher_is_better else -1)),
                  champion, metric)


def paired_difference(a: TaskScores, b: TaskScores, metric: Metric) -> tuple[float, float, int]:
    """Mean and 95% CI half-width of ``a - b`` in ``metric`` over their common test tasks, and how many."""
    tasks = a.common_tasks(b)
    mean, ci = mean_ci(a.values(metric.name)[:tasks] - b.values(metric.name)[:tasks])
    return mean, ci, tasks


def transfer_verdict(best_meta: Candidate | None, best_baseline: Candidate | None, metric: Metric) -> str | None:
    """Whether meta-learning pays on this family: the best meta-learner against the best baseline, paired.

    Both are each kind's best by validation; None where either is missing or their scores do not pair.
    """
    if best_meta is None or best_baseline is None or not best_meta.scores.pairs_with(best_baseline.scores):
        return None
    mean, ci, tasks = paired_difference(best_meta.scores, best_baseline.scores, metric)
    gain = mean if metric.higher_is_better else -mean  # > 0: the meta-learner is better
    measured = (f"test {metric.label} of {best_meta.method} minus {best_baseline.method}: {metric.show_change(mean, ci)} "
                f"over {tasks} paired tasks")
    if gain - ci > 0:
        return f"meta-learning pays on this family: {best_meta.method} beats the best baseline beyond its CI ({measured})"
    if gain + ci < 0:
        return (f"meta-learning does not pay on this family: the baseline {best_baseline.method} beats the best "
                f"meta-learner beyond its CI ({measured})")
    return (f"meta-learning does not pay on this family: the best meta-learner does not beat the baseline "
            f"{best_baseline.method} beyond its CI ({measured})")
