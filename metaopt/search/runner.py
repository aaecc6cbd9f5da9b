"""The search driver: owns the Optuna study, asks the strategy for configurations, runs trials, tells results.

The stages, one home each: the ``Strategy`` (``strategies/``) samples a configuration;
the ``Executor`` runs the trial, which trains with ``fit()``; after the trials, the best
trial of each method by validation is scored once on the test tasks of the job's key
(``evaluation``); ``selection`` decides whether the search's best replaces the key's
champion; the tracker records what was decided.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna

from metaopt.search.config import Job
from metaopt.search.evaluation import TaskScores
from metaopt.search.executors import Executor
from metaopt.search.job import LoadedJob, loaded_from_data
from metaopt.search.pruners import make_pruner
from metaopt.search.reporting import NullSearchTracker, SearchTracker, TrackingError, TrialTracker
from metaopt.search.results import MethodRow, SearchSummary, rank
from metaopt.search.selection import Candidate, Decision, decide
from metaopt.search.storage import describe, open_storage, storage_locator
from metaopt.search.strategies import Strategy, strategy
from metaopt.search.trial import TrialConfig, TrialResult, execute_trial, score_trial, trial_tags
from metaopt.tasks.metrics import Metric

__all__ = ["MethodRow", "SearchSummary", "SearchTracker", "NullSearchTracker", "new_search_id", "recorded_job",
           "resume_search", "run_search"]

RUN_ATTR = "mlflow_run_id"
OPTUNA_STATES = {
    "complete": optuna.trial.TrialState.COMPLETE,
    "pruned": optuna.trial.TrialState.PRUNED,
    "failed": optuna.trial.TrialState.FAIL,
}
FINISHED = tuple(OPTUNA_STATES.values())

Progress = Callable[[str, dict[str, Any]], None]


def new_search_id(job_name: str) -> str:
    """``<job>-<UTC time>-<random>``: sortable and unique."""
    return f"{job_name}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def run_search(
    loaded: LoadedJob,
    *,
    executor: Executor,
    tracker: SearchTracker | None = None,
    workdir: str | Path = ".metaopt",
    search_id: str | None = None,
    progress: Progress | None = None,
    storage: str | None = None,
) -> SearchSummary:
    """Run the whole search of ``loaded`` and return its summary (``storage``: an Optuna database URL)."""
    job = loaded.job
    tracker = tracker or NullSearchTracker()
    workdir = Path(workdir).resolve()
    search_id = search_id or new_search_id(job.name)
    locator = storage_locator(workdir, storage)
    chosen = strategy(job.strategy)
    study = optuna.create_study(
        study_name=search_id,
        storage=open_storage(locator),
        sampler=chosen.sampler(job.seed),
        pruner=make_pruner(job.pruner, job.budget),
        direction=job.family.primary_metric.direction,
    )
    for config in job.enqueue:
        study.enqueue_trial(loaded.space.enqueue_params(config))
    study.set_user_attr("job", job.model_dump())
    study.set_user_attr("space", loaded.space.to_data())
    parent_run_id = tracker.start_search(search_id, loaded)
    study.set_user_attr("parent_run_id", parent_run_id)
    return _drive(loaded, chosen, study, locator, executor, tracker, workdir, parent_run_id, progress, [], [])


def resume_search(
    search_id: str,
    *,
    executor: Executor,
    tracker: SearchTracker | None = None,
    workdir: str | Path = ".metaopt",
    progress: Progress | None = None,
    storage: str | None = None,
) -> SearchSummary:
    """Continue an interrupted search: its unfinished trials from their checkpoints, then the rest of its budget.

    The same Optuna study and the same parent record; each trial keeps its number and its record.
    """
    tracker = tracker or NullSearchTracker()
    workdir = Path(workdir).resolve()
    locator = storage_locator(workdir, storage)
    loaded = recorded_job(search_id, workdir=workdir, storage=storage)
    job = loaded.job
    chosen = strategy(job.strategy)
    study = optuna.load_study(
        study_name=search_id,
        storage=open_storage(locator),
        sampler=chosen.sampler(job.seed),
        pruner=make_pruner(job.pruner, job.budget),
    )
    parent_run_id = study.user_attrs.get("parent_run_id")
    if parent_run_id is not None:
        tracker.resume_search(search_id, parent_run_id, loaded)
    finished = [t for t in study.trials if t.state in FINISHED]
    results = [_result_of(t, loaded, chosen) for t in finished]
    unfinished = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    return _drive(loaded, chosen, study, locator, executor, tracker, workdir, parent_run_id, progress, results,
                  unfinished)


def recorded_job(search_id: str, *, workdir: str | Path = ".metaopt", storage: str | None = None) -> LoadedJob:
    """The job and search space a search was started with, as its study recorded them."""
    locator = storage_locator(workdir, storage)
    exists = "://" in locator or Path(locator).is_file()
    if not exists or search_id not in optuna.get_all_study_names(open_storage(locator)):
        raise LookupError(f"no search {search_id!r} in {describe(locator)}")
    study = optuna.load_study(study_name=search_id, storage=open_storage(locator))
    loaded = loaded_from_data(study.user_attrs["job"], study.user_attrs["space"], Path(describe(locator)))
    metric = loaded.job.family.primary_metric
    if study.direction.name.lower() != metric.direction:
        raise LookupError(f"search {search_id!r} was started by an older metaopt that optimised the validation loss; "
                          f"{loaded.job.family.key} now optimises validation {metric.label}: start a new search")
    return loaded


def _drive(
    loaded: LoadedJob,
    chosen: Strategy,
    study: optuna.Study,
    locator: str,
    executor: Executor,
    tracker: SearchTracker,
    workdir: Path,
    parent_run_id: str | None,
    progress: Progress | None,
    results: list[TrialResult],
    unfinished: list[optuna.trial.FrozenTrial],
) -> SearchSummary:
    """Ask, run and tell until the budget is spent; then score, decide and record."""
    job, space, search_id = loaded.job, loaded.space, study.study_name
    metric = job.family.primary_metric
    progress = progress or (lambda event, info: None)
    start = time.monotonic()
    deadline = start + job.budget.timeout_s if job.budget.timeout_s else math.inf
    trial_tracker = tracker.trial_tracker()
    budget_trials = chosen.planned_trials(space, job.budget.trials)
    if budget_trials < job.budget.trials:
        progress("warning", {"message": f"the {job.strategy} strategy has {budget_trials} configurations: "
                                        "the search stops there"})
    progress("start", {"search_id": search_id, "trials": budget_trials, "parent_run_id": parent_run_id,
                       "done": len(results), "key": job.family.key, "objective": f"val_{metric.name}"})
    pending: dict[Any, tuple[optuna.Trial, TrialConfig]] = {}
    asked = sum(t.state != optuna.trial.TrialState.WAITING for t in study.trials)

    def submit(trial: optuna.Trial, number: int, method: str, hparams: dict[str, Any], run_id: str | None) -> None:
        config = TrialConfig(
            search_id=search_id,
            number=number,
            method=method,
            hparams=hparams,
            job=job,
            checkpoint_dir=str(workdir / "checkpoints" / search_id),
            cpus=job.resources.cpus_per_trial,
            study_name=search_id,
            storage=locator,
            trial_id=trial._trial_id,
            run_id=run_id,
        )
        pending[executor.submit(execute_trial, config, trial_tracker)] = (trial, config)

    for frozen in unfinished:  # interrupted with the driver: same number, same record, from the checkpoint
        method, hparams = chosen.recorded(space, frozen.params)
        submit(optuna.Trial(study, frozen._trial_id), frozen.number, method, hparams, frozen.user_attrs.get(RUN_ATTR))
    status = "FAILED"
    rows: list[MethodRow] = []
    champion: MethodRow | None = None
    decision, version, notes = None, None, []
    try:
        while True:
            while len(pending) < executor.slots and asked < budget_trials and time.monotonic() < deadline:
                trial = study.ask()
                method, hparams = chosen.ask(trial, space)
                run_id = tracker.create_trial_run(trial_tags(search_id, job, method, trial.number),
                                                  f"{method}-{trial.number}")
                if run_id is not None:
                    trial.set_user_attr(RUN_ATTR, run_id)
                submit(trial, trial.number, method, hparams, run_id)
                asked += 1
            if not pending:
                break
            for done in executor.wait(list(pending)):
                trial, config = pending.pop(done.handle)
                result = done.value
                if done.error is not None:
                    result = TrialResult(
                        config.number, config.method, config.hparams, "failed", reason=f"worker error: {done.error!r}",
                        run_id=config.run_id,
                    )
                _tell(study, trial, result)
                results.append(result)
                progress("trial", {"result": result, "best": _best(results, metric)})

        rows = _method_rows(results, metric)
        scores = _score_best_per_method(rows, results, executor, tracker, trial_tracker, job, progress)
        scored = [row for row in rows if row.best_val is not None]
        champion = scored[0] if scored else None
        if champion is not None and champion.method in scores:
            best = Candidate(champion.method, champion.run_id, scores[champion.method], champion.trial_number)
            decision, version, notes = _decide(best, executor, tracker, trial_tracker, job, metric, progress)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if status != "FINISHED":  # nothing half-scored or half-decided is reported
            rows, champion, decision, version = [], None, None, None
        summary = SearchSummary(search_id, job.family.name, results, rows, champion, time.monotonic() - start,
                                parent_run_id, locator, key=job.family.key, metrics=job.family.metrics, decision=decision,
                                champion_version=version, notes=notes)
        tracker.finish_search(summary, status)
    progress("end", {"summary": summary})
    return summary


def _decide(
    best: Candidate,
    executor: Executor,
    tracker: SearchTracker,
    trial_tracker: TrialTracker,
    job: Job,
    metric: Metric,
    progress: Progress,
) -> tuple[Decision | None, str | None, list[str]]:
    """The champion decision for the search's best, and the version the tracker recorded; nothing moves on trouble."""
    key = job.family.key
    try:
        record = tracker.champion(key)
    except TrackingError as exc:
        note = f"champion of {key} unknown, nothing moved: {exc}"
        progress("warning", {"message": note})
        return None, None, [note]
    champion = None
    if record is not None:
        scores = record.scores
        if scores is None or not scores.pairs_with(best.scores):  # recorded by an older metaopt, or not at all
            progress("testing", {"methods": [f"{record.method} (the champion, no recorded test scores)"]})
            handle = executor.submit(score_trial, None, record.run_id, job, trial_tracker, job.resources.cpus_per_trial)
            (done,) = executor.wait([handle])
            if done.error is not None:
                note = f"the champion of {key} could not be scored, nothing moved: {done.error!r}"
                progress("warning", {"message": note})
                return None, None, [note]
            scores = done.value
            tracker.record_test(record.run_id, scores)
        champion = Candidate(record.method, record.run_id, scores)
    decision = decide(key, best, champion, metric)
    try:
        return decision, tracker.record_decision(decision), []
    except TrackingError as exc:
        note = f"the champion decision could not be recorded: {exc}"
        progress("warning", {"message": note})
        return decision, None, [note]


def _tell(study: optuna.Study, trial: optuna.Trial, result: TrialResult) -> None:
    if result.reason:
        trial.set_user_attr("reason", result.reason)
    if result.run_id:
        trial.set_user_attr(RUN_ATTR, result.run_id)
    trial.set_user_attr("outcome", {"value": result.value, "iterations": result.iterations,
                                    "seconds": result.seconds, "checkpoint": result.checkpoint})
    if result.state == "complete":
        study.tell(trial, result.value)
    else:
        study.tell(trial, state=OPTUNA_STATES[result.state])


def _result_of(trial: optuna.trial.FrozenTrial, loaded: LoadedJob, chosen: Strategy) -> TrialResult:
    """The ``TrialResult`` a finished trial was told with, from what the study recorded."""
    method, hparams = chosen.recorded(loaded.space, trial.params)
    outcome = trial.user_attrs.get("outcome", {})
    state = next(name for name, s in OPTUNA_STATES.items() if s == trial.state)
    return TrialResult(
        trial.number, method, hparams, state, value=outcome.get("value"), reason=trial.user_attrs.get("reason"),
        run_id=trial.user_attrs.get(RUN_ATTR), checkpoint=outcome.get("checkpoint"),
        iterations=outcome.get("iterations", 0), seconds=outcome.get("seconds", 0.0),
    )


def _best(results: list[TrialResult], metric: Metric) -> TrialResult | None:
    complete = [r for r in results if r.state == "complete" and r.value is not None]
    if not complete:
        return None
    return max(complete, key=lambda r: r.value) if metric.higher_is_better else min(complete, key=lambda r: r.value)


def _method_rows(results: list[TrialResult], metric: Metric) -> list[MethodRow]:
    """One row per method: trial counts by outcome and the best finished trial by validation."""
    rows: dict[str, MethodRow] = {}
    for result in results:
        row = rows.setdefault(result.method, MethodRow(result.method))
        setattr(row, result.state, getattr(row, result.state) + 1)
        if result.state == "complete" and (row.best_val is None or metric.better(result.value, row.best_val)):
            row.best_val, row.trial_number, row.run_id = result.value, result.number, result.run_id
            row.hparams = result.hparams
    return rank(list(rows.values()), metric)


def _score_best_per_method(
    rows: list[MethodRow],
    results: list[TrialResult],
    executor: Executor,
    tracker: SearchTracker,
    trial_tracker: TrialTracker,
    job: Job,
    progress: Progress,
) -> dict[str, TaskScores]:
    """Each method's best trial on the test tasks of the key, once, on the executor; recorded with the trial."""
    by_number = {r.number: r for r in results}
    best = [row for row in rows if row.trial_number is not None]
    if best:
        progress("testing", {"methods": [row.method for row in best]})
    handles = {}
    for row in best:
        result = by_number[row.trial_number]
        handle = executor.submit(score_trial, result.checkpoint, result.run_id, job, trial_tracker,
                                 job.resources.cpus_per_trial)
        handles[handle] = row
    scores: dict[str, TaskScores] = {}
    while handles:
        for done in executor.wait(list(handles)):
            row = handles.pop(done.handle)
            if done.error is not None:
                progress("warning", {"message": f"test evaluation of {row.method} failed: {done.error!r}"})
                continue
            scores[row.method] = done.value
            row.test = done.value.summary()
            if row.run_id:
                tracker.record_test(row.run_id, done.value)
    return scores
