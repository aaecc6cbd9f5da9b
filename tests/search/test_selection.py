"""Selection is a pure function of per-task scores: direction-aware, paired over the same test tasks."""

from __future__ import annotations

import pytest
import torch

from metaopt.search.evaluation import TaskScores
from metaopt.search.selection import FIRST_CHAMPION, Candidate, decide, pick
from metaopt.tasks import Glyphs, Sine

ACCURACY, CROSS_ENTROPY = Glyphs.metrics
MSE = Sine.primary_metric()


def _candidate(name: str, key: str = "glyphs-5w1s-q5", **per_task: list[float]) -> Candidate:
    return Candidate(name, f"run-{name}", TaskScores(key, per_task))


def _noisy(mean: float, n: int = 200, seed: int = 0, spread: float = 0.05) -> list[float]:
    return (mean + spread * torch.randn(n, generator=torch.Generator().manual_seed(seed))).tolist()


def test_a_classification_champion_decision_follows_accuracy_where_cross_entropy_disagrees():
    # The newcomer is more accurate on every task but less sure of itself: a higher cross-entropy.
    champion = _candidate("protonet", accuracy=_noisy(0.90, seed=1), loss=_noisy(0.30, seed=2))
    newcomer = _candidate("relationnet", accuracy=_noisy(0.95, seed=3), loss=_noisy(0.60, seed=4))
    assert Glyphs.primary_metric() is ACCURACY and ACCURACY.direction == "maximize"

    by_accuracy = decide("glyphs-5w1s-q5", newcomer, champion, ACCURACY)
    assert by_accuracy.moved and "relationnet beats the champion (protonet)" in by_accuracy.reason
    mean, ci = by_accuracy.difference
    assert mean - ci > 0 and mean == pytest.approx(0.05, abs=0.02) and by_accuracy.tasks == 200
    assert not decide("glyphs-5w1s-q5", newcomer, champion, CROSS_ENTROPY).moved  # the loss would keep protonet

    # pick ranks candidates by the primary metric too: the accurate one, not the low-loss one.
    assert pick("glyphs-5w1s-q5", [newcomer], champion, ACCURACY).best.method == "relationnet"
    assert pick("glyphs-5w1s-q5", [champion, newcomer], None, CROSS_ENTROPY).best.method == "protonet"


def test_a_loss_metric_moves_the_champion_only_when_lower_beyond_noise():
    champion = _candidate("maml", key="sine-10shot", loss=_noisy(1.0, seed=5))
    better = _candidate("reptile", key="sine-10shot", loss=_noisy(0.8, seed=6))
    tied = _candidate("fomaml", key="sine-10shot", loss=_noisy(1.0, seed=7))
    assert decide("sine-10shot", better, champion, MSE).moved
    tie = decide("sine-10shot", tied, champion, MSE)
    assert not tie.moved and "does not beat" in tie.reason
    assert decide("sine-10shot", better, None, MSE).reason == FIRST_CHAMPION
    assert decide("sine-10shot", champion, champion, MSE).reason == "the champion is still the best"


def test_scores_pair_on_their_common_whole_chunks_only_and_never_across_keys():
    long = _candidate("a", key="sine-10shot", loss=_noisy(0.5, n=1000))
    short = _candidate("b", key="sine-10shot", loss=_noisy(0.9, n=250))
    decision = decide("sine-10shot", long, short, MSE)
    assert decision.tasks == 200  # tasks 200-249 of a 250-task set are not the same tasks as in a 1000-task set
    other_key = _candidate("c", key="sine-5shot", loss=_noisy(0.9, n=1000))
    with pytest.raises(ValueError, match="not on the same test tasks"):
        decide("sine-10shot", long, other_key, MSE)


def test_fixed_tasks_of_different_counts_share_their_whole_chunks():
    family = Sine(shots=5, queries=5)
    short, long = family.fixed_tasks(250, "test", seed=3), family.fixed_tasks(1000, "test", seed=3)
    assert torch.equal(torch.cat([b.support_x for b in short])[:200], torch.cat([b.support_x for b in long])[:200])
    assert not torch.equal(torch.cat([b.support_x for b in short])[200:], torch.cat([b.support_x for b in long])[200:250])
