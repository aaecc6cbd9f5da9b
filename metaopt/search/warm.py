"""Warm start within a search: the store's plan (``history.warm_plan``) enqueued in two rounds, the second gated by
how the first scores on the new key (see ``metaopt.tracking.history``).

The study keeps the plan (user attributes ``warm_more``, ``warm_limit``, ``warm_first``, ``warm_first_origins`` and
``warm_first_trials``: the trials of the first round, the job's own ``enqueue`` included), so a resumed or joining
driver gates it too, once (``warm_second``: what the second round enqueued).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna

from metaopt.search.space import METHOD_PARAM, SearchSpace

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


@dataclass(frozen=True)
class WarmPlan:
    """What a warm start tries, ``limit`` configurations in all: ``first`` (each method's best from the nearest source
    that has it), then, gated by how they score on the new key, ``more`` configurations of the method that scored best
    (``second_round``). Each with where it came from."""

    first: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    more: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    limit: int = 0


def second_round(plan: WarmPlan, scores: list[tuple[str, float]], minimize: bool) -> list[tuple[dict[str, Any], str]]:
    """Once the first round is scored on the new key (``scores``: each finished trial's method and value), up to
    the plan's ``limit`` more of the best-scoring method's configurations (the next method's where it has none
    left): the sources' other good settings of the branch that transferred, none of the branches that did not."""
    return more_of_the_best(plan.more, plan.limit - len(plan.first), scores, minimize)


def more_of_the_best(more: list[tuple[dict[str, Any], str]], room: int, scores: list[tuple[str, float]],
                     minimize: bool) -> list[tuple[dict[str, Any], str]]:
    """Up to ``room`` of ``more`` of the best-scoring method that has any (``second_round``'s choice)."""
    for method, _ in sorted(scores, key=lambda s: s[1] if minimize else -s[1]):
        of_method = [(params, origin) for params, origin in more if params[METHOD_PARAM] == method]
        if of_method and room > 0:
            return of_method[:room]
    return []


def record_plan(study: optuna.Study, space: SearchSpace, plan: WarmPlan, enqueued_before: int) -> None:
    """Enqueue the plan's first round (after ``enqueued_before`` configurations of the job's own) and keep the rest for
    ``gate``."""
    for params, _ in plan.first:
        study.enqueue_trial(space.enqueue_params(params))
    if plan.more and plan.limit > len(plan.first):
        study.set_user_attr("warm_more", [[params, origin] for params, origin in plan.more])
        study.set_user_attr("warm_limit", plan.limit)
        study.set_user_attr("warm_first", len(plan.first))
        study.set_user_attr("warm_first_trials", enqueued_before + len(plan.first))
        study.set_user_attr("warm_first_origins", [origin for _, origin in plan.first])


def gate(study: optuna.Study, space: SearchSpace) -> list[str] | None:
    """Once the first round's trials have all finished, enqueue the second round (once per study); the origins of
    what it enqueued, or None where there was nothing to do yet."""
    attrs = study.user_attrs
    if "warm_more" not in attrs or "warm_second" in attrs:
        return None
    trials = study.get_trials(deepcopy=False)
    first = [t for t in trials if t.number < attrs["warm_first_trials"]]
    if len(first) < attrs["warm_first_trials"] or any(t.state not in FINISHED for t in first):
        return None
    scores = [(t.params[METHOD_PARAM], t.value) for t in trials
              if t.state == optuna.trial.TrialState.COMPLETE and METHOD_PARAM in t.params and t.value is not None]
    chosen = more_of_the_best([(p, o) for p, o in attrs["warm_more"]], attrs["warm_limit"] - attrs["warm_first"],
                              scores, minimize=study.direction == optuna.study.StudyDirection.MINIMIZE)
    study.set_user_attr("warm_second", [origin for _, origin in chosen])
    for params, _ in chosen:
        study.enqueue_trial(space.enqueue_params(params))
    return [origin for _, origin in chosen]
