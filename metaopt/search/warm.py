"""Warm start within a search: the store's plan (``history.warm_plan``) enqueued in two rounds, the second gated by
how the first scores on the new key (see ``metaopt.tracking.history``), then a few local steps on the new key around
the best configuration found (``refine``).

The study keeps the plan (user attributes ``warm_more``, ``warm_limit``, ``warm_first``, ``warm_first_origins`` and
``warm_first_trials``: the trials of the first round, the job's own ``enqueue`` included; ``warm_refine``: the local
steps planned), so a resumed or joining driver gates it too, once (``warm_second``: what the second round enqueued;
``warm_refined``: the local steps taken). Every trial the warm start enqueues carries the user attribute
``WARM_ROUND``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna

from metaopt.search.ranges import FloatRange, IntRange
from metaopt.search.space import METHOD_PARAM, SearchSpace

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
WARM_ROUND = "metaopt.warm_round"  # a trial's user attribute: the warm start's round that enqueued it
# Local steps after the two rounds: a transferred configuration is near the new key's best, rarely at it (on
# `functions`, Lasso's penalty from 20 points was 2% off the 10-point key's best; TPE, sampling the whole space
# again, did not close that gap in 15 more trials). They go on while a method near the best has not settled (its last
# REFINE_PATIENCE steps each improved its best by less than REFINE_TOLERANCE, relative), REFINE_MAX in all.
REFINE_MAX = 6
REFINE_PATIENCE = 2
REFINE_TOLERANCE = 1e-3
# Every method whose best is within this share of the best so far takes the steps in turn: a runner-up's settings
# were often transferred from a source that tried that method only once or twice.
REFINE_MARGIN = 0.05
GOLDEN = (1 + math.sqrt(5)) / 2  # a one-sided step's growth over the last (a bracketing line search's)


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
        study.enqueue_trial(space.enqueue_params(params), user_attrs={WARM_ROUND: "first"})
    if not plan.first:
        return
    study.set_user_attr("warm_first_trials", enqueued_before + len(plan.first))
    study.set_user_attr("warm_first_origins", [origin for _, origin in plan.first])
    study.set_user_attr("warm_refine", REFINE_MAX)
    if plan.more and plan.limit > len(plan.first):
        study.set_user_attr("warm_more", [[params, origin] for params, origin in plan.more])
        study.set_user_attr("warm_limit", plan.limit)
        study.set_user_attr("warm_first", len(plan.first))


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
        study.enqueue_trial(space.enqueue_params(params), user_attrs={WARM_ROUND: "second"})
    return [origin for _, origin in chosen]


def refine(study: optuna.Study, space: SearchSpace) -> str | None:
    """Once every trial the warm start enqueued has finished (the second round too), one local step on the new key
    around the best configurations so far (``local_step``; none of a method that has ``settled``), up to the plan's
    ``warm_refine`` steps; what it tried, or None where there was nothing to do (yet)."""
    attrs = study.user_attrs
    refined = attrs.get("warm_refined", [])
    if len(refined) >= attrs.get("warm_refine", 0) or ("warm_more" in attrs and "warm_second" not in attrs):
        return None
    trials = study.get_trials(deepcopy=False)
    if len(trials) < attrs["warm_first_trials"] or any(
            t.state not in FINISHED for t in trials
            if t.number < attrs["warm_first_trials"] or WARM_ROUND in t.user_attrs):
        return None
    minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    history = [(t.params.get(METHOD_PARAM), t.value if t.state == optuna.trial.TrialState.COMPLETE else None,
                t.user_attrs.get(WARM_ROUND) == "refine") for t in trials]
    step = local_step([(t.params, t.value) for t in done if METHOD_PARAM in t.params], space, minimize,
                      len(refined), asked=[t.params for t in trials if METHOD_PARAM in t.params],
                      settled=settled(history, minimize))
    if step is None:  # nothing left to refine: the plan ends here
        study.set_user_attr("warm_refine", len(refined))
        return None
    params, said = step
    study.set_user_attr("warm_refined", [*refined, said])
    study.enqueue_trial(space.enqueue_params(params), user_attrs={WARM_ROUND: "refine"})
    return said


def settled(trials: list[tuple[str | None, float | None, bool]], minimize: bool) -> set[str]:
    """The methods whose last ``REFINE_PATIENCE`` local steps each improved on every earlier trial of the method by
    less than ``REFINE_TOLERANCE`` (relative; a step that failed improved nothing). ``trials``: each trial's method,
    value (None: not scored) and whether it is a local step, in order."""
    sign = 1.0 if minimize else -1.0
    gains: dict[str, list[float]] = {}  # each method's local steps' gains, in order
    best: dict[str, float] = {}
    for method, value, step in trials:
        if method is None:
            continue
        if step:
            before = best.get(method)
            gain = (-math.inf if value is None else math.inf if before is None
                    else sign * (before - value) / max(abs(before), 1e-12))
            gains.setdefault(method, []).append(gain)
        if value is not None and (method not in best or sign * value < sign * best[method]):
            best[method] = value
    return {method for method, g in gains.items()
            if len(g) >= REFINE_PATIENCE and all(x < REFINE_TOLERANCE for x in g[-REFINE_PATIENCE:])}


def local_step(scored: list[tuple[dict[str, Any], float]], space: SearchSpace, minimize: bool, step: int,
               asked: list[dict[str, Any]] | None = None,
               settled: set[str] | frozenset[str] = frozenset()) -> tuple[dict[str, Any], str] | None:
    """The best configuration of ``scored`` (Optuna parameters and values) that has numbers to search, with one of
    them moved, and what moved; None where no move is left (no method with numbers to search that has not
    ``settled``, every move already tried: scored or in ``asked``, the parameters of trials running or failed).

    The methods (not settled) whose best is within ``REFINE_MARGIN`` of the best take the steps in turn (the
    ``step``-th goes to the ``step``-th of them, best first; to the next where it has no move left), and each
    method's own steps move its numbers coordinate by coordinate. Along one hyperparameter (on the range's log scale
    where it has one), the method's trials bracketing its best value give a parabola, whose vertex is the move where
    it falls in the wider of the two sides (off its ends), else that side's golden section (a safeguarded line
    search, as Brent's: a parabola through an asymmetric valley misleads); with trials on one side only, the move
    goes away from the nearest of them, a golden ratio further than it is (within the range: a bracketing line
    search); with none, an eighth of the range towards its middle.
    """
    def numeric_of(params: dict[str, Any]) -> list[tuple[str, FloatRange | IntRange]]:
        method = params[METHOD_PARAM]
        return [(name, spec) for name, spec in space.spaces.get(method, {}).items()
                if isinstance(spec, (FloatRange, IntRange)) and f"{method}.{name}" in params]

    sign = 1.0 if minimize else -1.0
    best_of: dict[str, tuple[dict[str, Any], float]] = {}  # each method's best configuration, of those with numbers
    for params, value in scored:
        method = params[METHOD_PARAM]
        if numeric_of(params) and (method not in best_of or sign * value < sign * best_of[method][1]):
            best_of[method] = (params, value)
    if not best_of:
        return None
    ranked = sorted(best_of.values(), key=lambda s: sign * s[1])
    top = ranked[0][1]
    near = [params for params, value in ranked
            if abs(value - top) <= REFINE_MARGIN * abs(top) and params[METHOD_PARAM] not in settled]
    if not near:
        return None
    turn = step % len(near)
    tried = [params for params, _ in scored] + list(asked or [])
    for best in near[turn:] + near[:turn]:
        method, numeric = best[METHOD_PARAM], numeric_of(best)
        own = step // len(near)  # the coordinate this method's turn moves first
        for k in range(len(numeric)):
            name, spec = numeric[(own + k) % len(numeric)]
            key = f"{method}.{name}"
            points = [(params[key], sign * value) for params, value in scored
                      if params.get(METHOD_PARAM) == method and key in params]
            value = _move(spec, best[key], points)
            if value is None:
                continue
            moved = {**best, key: value}
            if moved in tried:
                continue
            hparams = {k2.split(".", 1)[1]: v for k2, v in moved.items() if k2 != METHOD_PARAM}
            return {METHOD_PARAM: method, **hparams}, f"{method} {name} {best[key]:.4g} -> {value:.4g}"
    return None


def _move(spec: FloatRange | IntRange, at: float, points: list[tuple[float, float]]) -> float | None:
    """The next value of one hyperparameter from ``at`` (the best), given its ``(value, loss)`` points."""
    log = spec.log and spec.low > 0
    scale = (lambda v: math.log(v)) if log else (lambda v: float(v))  # noqa: E731
    unscale = (lambda u: math.exp(u)) if log else (lambda u: u)  # noqa: E731
    u_at, low, high = scale(at), scale(spec.low), scale(spec.high)
    best_at = min((loss for v, loss in points if scale(v) == u_at), default=0.0)
    # the nearest trial on each side (at equal values, the better of them)
    left = max(((scale(v), loss) for v, loss in points if scale(v) < u_at), key=lambda p: (p[0], -p[1]), default=None)
    right = min(((scale(v), loss) for v, loss in points if scale(v) > u_at), default=None)
    if left and right:
        (a, fa), (c, fc) = left, right
        b, fb = u_at, best_at
        denominator = (b - a) * (fb - fc) - (b - c) * (fb - fa)
        numerator = (b - a) ** 2 * (fb - fc) - (b - c) ** 2 * (fb - fa)
        u = b - 0.5 * numerator / denominator if denominator else b
        wide = (a, b) if b - a > c - b else (b, c)
        inside = wide[0] + 0.1 * (wide[1] - wide[0]) <= u <= wide[1] - 0.1 * (wide[1] - wide[0])
        if not inside:  # a vertex off the wider side (or at the best): the golden section of the wider side
            u = b + (2 - GOLDEN) * ((a if wide == (a, b) else c) - b)
    elif left or right:  # away from the nearest trial, a golden ratio further than it is
        near = (left or right)[0]
        u = min(max(u_at + GOLDEN * (u_at - near), low), high)
    else:
        u = u_at + (high - low) / 8 * (1 if u_at < (low + high) / 2 else -1)
    value = unscale(u)
    if isinstance(spec, IntRange):
        value = int(round((value - spec.low) / spec.step)) * spec.step + spec.low
        value = min(max(value, spec.low), spec.high)
    else:
        value = min(max(value, spec.low), spec.high)
    return None if value == at else value



def story(attrs: dict[str, Any]) -> str:
    """Where a search's warm-start trials came from, from its study's user attributes (``metaopt.warm_start``)."""
    said = "; ".join(attrs.get("warm_first_origins", []))
    if attrs.get("warm_second"):
        said += f"; then, of the method that scored best of these here: {'; '.join(attrs['warm_second'])}"
    if attrs.get("warm_refined"):
        said += f"; then local steps here: {'; '.join(attrs['warm_refined'])}"
    return said
