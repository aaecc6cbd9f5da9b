"""The search driver: start, join or resume a search, run its trials, conclude it, record what it found.

The stages, one home each: the study across drivers (``study``); the ask-run-tell loop
(``loop``: the ``Strategy`` samples a configuration, the ``Executor`` runs the trial, which
trains with ``fit()``); the conclusion (``conclusion``: each method's best trial by
validation scored once on the key's test tasks, the verdict, the champion decision that
``metaopt select`` makes too); the tracker records what was decided.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import optuna

from metaopt.search import heartbeat
from metaopt.search.conclusion import champion_of_search, method_rows, retrain_seeds, score_best_per_method, verdict
from metaopt.search.executors import Executor
from metaopt.search.interruption import Interrupted, StopRequest
from metaopt.search.job import LoadedJob
from metaopt.search.loop import Progress, SearchContext, Shared, TrialLoop
from metaopt.search.reporting import NullSearchTracker, SearchTracker
from metaopt.search.results import MethodRow, SearchSummary
from metaopt.search.selection import Candidate
from metaopt.search.storage import heartbeat_s, stale_trial_ids, storage_locator
from metaopt.search.strategies import strategy
from metaopt.search.study import (
    FINISHED,
    SURPLUS,
    JoinError,
    all_results,
    check_search_id,
    joined_parent,
    load_study,
    new_search_id,
    open_study,
    record_start,
    recorded_job,
    result_of,
)
from metaopt.search.trial import TrialResult

__all__ = ["JoinError", "MethodRow", "NullSearchTracker", "SearchInterrupted", "SearchSummary", "SearchTracker",
           "new_search_id", "recorded_job", "resume_search", "run_search"]


def run_search(
    loaded: LoadedJob,
    *,
    executor: Executor,
    tracker: SearchTracker | None = None,
    workdir: str | Path = ".metaopt",
    search_id: str | None = None,
    progress: Progress | None = None,
    storage: str | None = None,
    stop: StopRequest | None = None,
) -> SearchSummary:
    """Run the whole search of ``loaded`` and return its summary (``storage``: an Optuna database URL).

    ``search_id`` of a search that already is in ``storage`` (started by another driver with the
    same job): this driver joins it and runs its share of the trials; the last driver to finish
    scores and decides. ``stop``: set (by a signal handler) to end the search early: the running
    trials are cancelled and recorded as interrupted, and ``SearchInterrupted`` is raised.
    """
    tracker = tracker or NullSearchTracker()
    search_id = check_search_id(search_id) if search_id is not None else new_search_id(loaded.job.name)
    read_frozen_model(loaded, tracker)
    locator = storage_locator(Path(workdir).resolve(), storage)
    chosen = strategy(loaded.job.strategy)
    study, created = open_study(search_id, loaded, chosen, locator, tracker)
    if created:
        parent_run_id = tracker.start_search(search_id, loaded)
        record_start(study, loaded, parent_run_id, tracker.warm_start(loaded) if loaded.job.warm_start != "off" else None)
    else:
        parent_run_id = joined_parent(study, loaded)
        tracker.join_search(search_id, parent_run_id, loaded)
    ctx = SearchContext(loaded, chosen, study, locator, executor, tracker, Path(workdir).resolve(), parent_run_id,
                        progress or _quiet, stop or StopRequest())
    return _drive(ctx, [], [])


def resume_search(
    search_id: str,
    *,
    executor: Executor,
    tracker: SearchTracker | None = None,
    workdir: str | Path = ".metaopt",
    progress: Progress | None = None,
    storage: str | None = None,
    stop: StopRequest | None = None,
) -> SearchSummary:
    """Continue an interrupted search: its unfinished trials from their checkpoints, then the rest of its budget.

    The same Optuna study and the same parent record; each trial keeps its number and its record.
    """
    tracker = tracker or NullSearchTracker()
    check_search_id(search_id)
    locator = storage_locator(Path(workdir).resolve(), storage)
    loaded = recorded_job(search_id, workdir=workdir, storage=storage)
    read_frozen_model(loaded, tracker)
    chosen = strategy(loaded.job.strategy)
    study = load_study(search_id, loaded, chosen, locator, tracker)
    parent_run_id = study.user_attrs.get("parent_run_id")
    if parent_run_id is not None:
        tracker.resume_search(search_id, parent_run_id, loaded)
    unfinished = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    results = [result_of(t, loaded, chosen) for t in study.trials if t.state in FINISHED and SURPLUS not in t.user_attrs]
    if heartbeat.enabled(study):  # a trial another live driver of the study is running is not ours to rerun
        nobody = stale_trial_ids(locator, study, grace_s=2 * heartbeat_s())
        unfinished = [t for t in unfinished if t._trial_id in nobody]
    ctx = SearchContext(loaded, chosen, study, locator, executor, tracker, Path(workdir).resolve(), parent_run_id,
                        progress or _quiet, stop or StopRequest())
    return _drive(ctx, results, unfinished)


def read_frozen_model(loaded: LoadedJob, tracker: SearchTracker) -> None:
    """A selectors' job: its trained frozen model read once, here in the driver, from the search's own store (where
    ``Launch.check`` has not already); it travels with the job to the trials."""
    loaded.job.frozen_checkpoint(getattr(tracker, "tracking_uri", None))


def _quiet(event: str, info: dict) -> None:
    """No progress output."""


def _drive(ctx: SearchContext, results: list[TrialResult], unfinished: list[optuna.trial.FrozenTrial]) -> SearchSummary:
    """Ask, run and tell until the budget is spent; then score, decide and record."""
    job, metric = ctx.job, ctx.metric
    start = time.monotonic()
    deadline = start + job.budget.timeout_s if job.budget.timeout_s else math.inf
    budget_trials = ctx.strategy.planned_trials(ctx.loaded.space, job.budget.trials)
    if budget_trials < job.budget.trials:
        ctx.progress("warning", {"message": f"the {job.strategy} strategy has {budget_trials} configurations: "
                                            "the search stops there"})
    ctx.progress("start", {"search_id": ctx.search_id, "trials": budget_trials, "parent_run_id": ctx.parent_run_id,
                           "done": len(results), "key": job.family.key, "objective": f"val_{metric.name}",
                           "metric": metric})
    status = "FAILED"
    rows: list[MethodRow] = []
    champion: MethodRow | None = None
    decision, version, notes, found = None, None, [], None
    interrupted: Interrupted | None = None
    try:
        TrialLoop(ctx, budget_trials, deadline).run(results, unfinished)
        results = all_results(ctx.study, ctx.loaded, ctx.strategy, results)
        rows = method_rows(results, metric, job.strategy)
        scores = retrain_seeds(ctx, rows, results, score_best_per_method(ctx, rows, results))
        scored = [row for row in rows if row.best_val is not None]
        # the family's exact limit is a reference, never a candidate
        champion = next((row for row in scored if row.method != job.limit_method), None)
        found = verdict(scored, scores, metric, limit=job.limit_method)
        if champion is not None and champion.method in scores:
            best = Candidate(champion.method, champion.run_id, scores[champion.method], champion.trial_number)
            decision, version, notes = champion_of_search(ctx, best)
        status = "FINISHED"
    except Shared as shared:
        results = all_results(ctx.study, ctx.loaded, ctx.strategy, results)
        rows, status, notes = method_rows(results, metric, job.strategy), "SHARED", [str(shared)]
    except Interrupted as exc:
        status, interrupted = "KILLED", exc
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if status not in ("FINISHED", "SHARED"):  # nothing half-scored or half-decided is reported
            rows, champion, decision, version, found = [], None, None, None, None
        summary = SearchSummary(ctx.search_id, job.family.name, results, rows, champion, time.monotonic() - start,
                                ctx.parent_run_id, ctx.locator, key=job.family.key, metrics=job.family.metrics,
                                decision=decision, champion_version=version, notes=notes,
                                interrupted=str(interrupted) if interrupted else None, planned_trials=budget_trials,
                                verdict=found, limit=job.limit_method)
        ctx.tracker.finish_search(summary, status)
    if interrupted is not None:
        raise SearchInterrupted(summary, interrupted.signum)
    ctx.progress("end", {"summary": summary})
    return summary


class SearchInterrupted(Exception):  # noqa: N818 - named for what happened, like KeyboardInterrupt
    """A search stopped by a signal; ``summary`` says what finished, ``resume`` continues it."""

    def __init__(self, summary: SearchSummary, signum: int) -> None:
        done = sum(r.state in ("complete", "pruned", "failed") for r in summary.results)
        super().__init__(f"interrupted: {done} of {summary.planned_trials} trials finished; "
                         f"continue with: metaopt resume {summary.search_id}")
        self.summary, self.signum = summary, signum
