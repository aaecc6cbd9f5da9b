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
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna

from metaopt.search import heartbeat
from metaopt.learners import LEARNERS
from metaopt.search.config import Job
from metaopt.search.evaluation import TaskScores
from metaopt.search.executors import Executor
from metaopt.search.interruption import Interrupted, StopRequest
from metaopt.search.job import LoadedJob, loaded_from_data
from metaopt.search.pruners import make_pruner
from metaopt.search.reporting import NullSearchTracker, SearchTracker, TrackingError, TrialTracker
from metaopt.search.results import MethodRow, SearchSummary, rank
from metaopt.search.selection import Candidate, Decision, decide, transfer_verdict
from metaopt.search.space import METHOD_PARAM
from metaopt.search.storage import (
    describe,
    heartbeat_grace_s,
    heartbeat_s,
    open_storage,
    readable_storage,
    stale_trial_ids,
    storage_locator,
)
from metaopt.search.strategies import Strategy, strategy
from metaopt.search.trial import TrialConfig, TrialResult, execute_trial, score_trial, trial_tags
from metaopt.tasks.metrics import Metric

__all__ = ["MethodRow", "SearchSummary", "SearchTracker", "NullSearchTracker", "new_search_id", "recorded_job",
           "resume_search", "run_search"]

RUN_ATTR = "mlflow_run_id"
SURPLUS = "surplus"  # a trial asked past the budget by a driver racing another; told FAIL at once, never counted
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
    stop: StopRequest | None = None,
) -> SearchSummary:
    """Run the whole search of ``loaded`` and return its summary (``storage``: an Optuna database URL).

    ``search_id`` of a search that already is in ``storage`` (started by another driver with the
    same job): this driver joins it and runs its share of the trials; the last driver to finish
    scores and decides. ``stop``: set (by a signal handler) to end the search early: the running
    trials are cancelled and recorded as interrupted, and ``SearchInterrupted`` is raised.
    """
    job = loaded.job
    tracker = tracker or NullSearchTracker()
    workdir = Path(workdir).resolve()
    search_id = search_id or new_search_id(job.name)
    locator = storage_locator(workdir, storage)
    chosen = strategy(job.strategy)
    settings = dict(storage=open_storage(locator, on_stale=_on_lost(tracker, job)),
                    sampler=chosen.study_sampler(job.seed, loaded.space), pruner=make_pruner(job.pruner, job.budget))
    try:
        study = optuna.create_study(study_name=search_id, direction=job.family.primary_metric.direction, **settings)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=search_id, **settings)
        parent_run_id = _joined(study, loaded)
        tracker.join_search(search_id, parent_run_id, loaded)
        return _drive(loaded, chosen, study, locator, executor, tracker, workdir, parent_run_id, progress, [], [],
                      stop)
    for config in job.enqueue:
        study.enqueue_trial(loaded.space.enqueue_params(config))
    study.set_user_attr("job", job.model_dump())
    study.set_user_attr("space", loaded.space.to_data())
    parent_run_id = tracker.start_search(search_id, loaded)
    study.set_user_attr("parent_run_id", parent_run_id)
    return _drive(loaded, chosen, study, locator, executor, tracker, workdir, parent_run_id, progress, [], [], stop)


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
    workdir = Path(workdir).resolve()
    locator = storage_locator(workdir, storage)
    loaded = recorded_job(search_id, workdir=workdir, storage=storage)
    job = loaded.job
    chosen = strategy(job.strategy)
    study = optuna.load_study(
        study_name=search_id,
        storage=open_storage(locator, on_stale=_on_lost(tracker, job)),
        sampler=chosen.study_sampler(job.seed, loaded.space),
        pruner=make_pruner(job.pruner, job.budget),
    )
    parent_run_id = study.user_attrs.get("parent_run_id")
    if parent_run_id is not None:
        tracker.resume_search(search_id, parent_run_id, loaded)
    unfinished = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    finished = [t for t in study.trials if t.state in FINISHED and SURPLUS not in t.user_attrs]
    results = [_result_of(t, loaded, chosen) for t in finished]
    if heartbeat.enabled(study):  # a trial another live driver of the study is running is not ours to rerun
        nobody = stale_trial_ids(locator, study, grace_s=2 * heartbeat_s())
        unfinished = [t for t in unfinished if t._trial_id in nobody]
    return _drive(loaded, chosen, study, locator, executor, tracker, workdir, parent_run_id, progress, results,
                  unfinished, stop)


class JoinError(LookupError):
    """A driver cannot join the search its ``--search-id`` names."""


def _joined(study: optuna.Study, loaded: LoadedJob, wait_s: float = 30.0) -> str | None:
    """The parent record of a search another driver started (its job must be this one)."""
    deadline = time.monotonic() + wait_s
    while "parent_run_id" not in study.user_attrs:  # the starting driver records it right after creating the study
        if time.monotonic() > deadline:
            raise JoinError(f"search {study.study_name!r} exists but its starting driver recorded no job")
        time.sleep(0.5)
    if study.user_attrs.get("job") != loaded.job.model_dump():
        raise JoinError(f"search {study.study_name!r} was started with another job: a driver joins only the job "
                        "it was started with")
    return study.user_attrs["parent_run_id"]


def recorded_job(search_id: str, *, workdir: str | Path = ".metaopt", storage: str | None = None) -> LoadedJob:
    """The job and search space a search was started with, as its study recorded them."""
    locator = storage_locator(workdir, storage)
    exists = "://" in locator or Path(locator).is_file()
    try:
        known = optuna.get_all_study_names(readable_storage(locator)) if exists else []
    except ValueError as exc:
        raise LookupError(str(exc)) from None
    if search_id not in known:
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
    stop: StopRequest | None = None,
) -> SearchSummary:
    """Ask, run and tell until the budget is spent; then score, decide and record."""
    job, space, search_id = loaded.job, loaded.space, study.study_name
    metric = job.family.primary_metric
    progress = progress or (lambda event, info: None)
    stop = stop or StopRequest()
    start = time.monotonic()
    deadline = start + job.budget.timeout_s if job.budget.timeout_s else math.inf
    trial_tracker = tracker.trial_tracker()
    budget_trials = chosen.planned_trials(space, job.budget.trials)
    if budget_trials < job.budget.trials:
        progress("warning", {"message": f"the {job.strategy} strategy has {budget_trials} configurations: "
                                        "the search stops there"})
    progress("start", {"search_id": search_id, "trials": budget_trials, "parent_run_id": parent_run_id,
                       "done": len(results), "key": job.family.key, "objective": f"val_{metric.name}"})
    running: dict[int, tuple[optuna.Trial, TrialConfig]] = {}  # trial number -> trial, from submit to tell
    pending: dict[Any, int] = {}  # executor handle -> trial number
    beats = heartbeat.Heartbeat(study, lambda: [trial._trial_id for trial, _ in running.values()])

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
        running[number] = (trial, config)
        if heartbeat.enabled(study):
            beats.beat(trial._trial_id)
        with stop.interruptible():  # an in-process trial runs inside submit: a signal stops it there
            pending[executor.submit(execute_trial, config, trial_tracker)] = number

    status = "FAILED"
    rows: list[MethodRow] = []
    champion: MethodRow | None = None
    decision, version, notes, verdict = None, None, [], None
    interrupted: Interrupted | None = None
    waited = False
    try:
        beats.__enter__()
        for frozen in unfinished:  # interrupted with the driver: same number, same record, from the checkpoint
            trial = optuna.Trial(study, frozen._trial_id)
            run_id = frozen.user_attrs.get(RUN_ATTR)
            if METHOD_PARAM in frozen.params:
                method, hparams = chosen.recorded(space, frozen.params)
            else:  # asked, never configured (the driver died between the two): configure it as it would have been
                method, hparams = chosen.ask(trial, space)
            if run_id is None:
                run_id = tracker.create_trial_run(trial_tags(search_id, job, method, frozen.number),
                                                  f"{method}-{frozen.number}")
                if run_id is not None:
                    trial.set_user_attr(RUN_ATTR, run_id)
            submit(trial, frozen.number, method, hparams, run_id)
        while True:
            while len(pending) < executor.slots and _counted(study) < budget_trials and time.monotonic() < deadline:
                stop.check()
                trial = study.ask()
                if _counted(study) > budget_trials:  # another driver asked the budget's last trial at the same time
                    trial.set_user_attr(SURPLUS, "over the budget: another driver asked the last trial at once")
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    break
                method, hparams = chosen.ask(trial, space)
                run_id = tracker.create_trial_run(trial_tags(search_id, job, method, trial.number),
                                                  f"{method}-{trial.number}")
                if run_id is not None:
                    trial.set_user_attr(RUN_ATTR, run_id)
                submit(trial, trial.number, method, hparams, run_id)
                waited = False
            if not pending:
                if _others_running(study, running) and time.monotonic() < deadline:
                    if not heartbeat.enabled(study):  # no way to tell a live driver from a lost one
                        raise _Shared("trials of this search still run in another driver: the driver that "
                                      "finishes them scores the methods and decides the champion")
                    # Wait: the other driver finishes them, or it is gone and they come back as retries to run.
                    waited = True
                    time.sleep(POLL_S)
                    stop.check()
                    continue
                break
            for done in _wait(executor, list(pending), stop):
                trial, config = running.pop(pending.pop(done.handle))
                result = done.value
                if done.error is not None:
                    result = TrialResult(
                        config.number, config.method, config.hparams, "failed", reason=f"worker error: {done.error!r}",
                        run_id=config.run_id,
                    )
                _tell(study, trial, result)
                results.append(result)
                progress("trial", {"result": result, "best": _best(results, metric)})

        if waited:  # the last trials were another driver's, which scores and decides
            raise _Shared("another driver of this search finished its last trials: it scores the methods and "
                          "decides the champion")
        results = _all_results(study, loaded, chosen, results)
        rows = _method_rows(results, metric, job.strategy)
        scores = _score_best_per_method(rows, results, executor, tracker, trial_tracker, job, progress, stop)
        scored = [row for row in rows if row.best_val is not None]
        champion = scored[0] if scored else None
        verdict = _verdict(scored, scores, metric)
        if champion is not None and champion.method in scores:
            best = Candidate(champion.method, champion.run_id, scores[champion.method], champion.trial_number)
            decision, version, notes = _decide(best, executor, tracker, trial_tracker, job, metric, progress, stop)
        status = "FINISHED"
    except _Shared as shared:
        results = _all_results(study, loaded, chosen, results)
        rows, status, notes = _method_rows(results, metric, job.strategy), "SHARED", [str(shared)]
    except Interrupted as exc:
        status, interrupted = "KILLED", exc
        _record_interrupted(executor, tracker, pending, running, str(exc))
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        beats.__exit__()
        if status not in ("FINISHED", "SHARED"):  # nothing half-scored or half-decided is reported
            rows, champion, decision, version, verdict = [], None, None, None, None
        summary = SearchSummary(search_id, job.family.name, results, rows, champion, time.monotonic() - start,
                                parent_run_id, locator, key=job.family.key, metrics=job.family.metrics, decision=decision,
                                champion_version=version, notes=notes,
                                interrupted=str(interrupted) if interrupted else None, planned_trials=budget_trials,
                                verdict=verdict)
        tracker.finish_search(summary, status)
    if interrupted is not None:
        raise SearchInterrupted(summary, interrupted.signum)
    progress("end", {"summary": summary})
    return summary


POLL_S = 0.5  # how often a waiting driver looks at the stop request


def _verdict(scored: list[MethodRow], scores: dict[str, TaskScores], metric: Metric) -> str | None:
    """Does meta-learning pay? The best meta-learner by validation against the best baseline, on their test tasks."""
    def best(baseline: bool) -> Candidate | None:
        row = next((r for r in scored if r.method in scores and _is_baseline(r.method) == baseline), None)
        return None if row is None else Candidate(row.method, row.run_id, scores[row.method], row.trial_number)

    return transfer_verdict(best(False), best(True), metric)


def _is_baseline(method: str) -> bool:
    try:
        return LEARNERS[method].baseline
    except ValueError:  # a plugin that no longer imports
        return False


class _Shared(Exception):  # noqa: N818 - a branch, not an error
    """This driver's share of a shared search is done; another driver still runs trials."""


def _others_running(study: optuna.Study, running: dict[int, Any]) -> bool:
    """Whether trials of the study not run by this driver are running."""
    return any(t.number not in running for t in study.get_trials(deepcopy=False,
                                                                   states=(optuna.trial.TrialState.RUNNING,)))


def _all_results(study: optuna.Study, loaded: LoadedJob, chosen: Strategy, own: list[TrialResult]) -> list[TrialResult]:
    """This driver's results and the finished trials other drivers of the study ran (surplus ones left out)."""
    mine = {r.number for r in own}
    theirs = [_result_of(t, loaded, chosen) for t in study.get_trials(deepcopy=False, states=FINISHED)
              if t.number not in mine and SURPLUS not in t.user_attrs]
    return own + theirs


def _counted(study: optuna.Study) -> int:
    """Trials that count against the budget, across every driver of the study.

    Each asked trial counts once; a trial lost with its driver and retried counts as its retry.
    """
    trials = study.get_trials(deepcopy=False)
    replaced = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return sum(t.state != optuna.trial.TrialState.WAITING and t.number not in replaced and SURPLUS not in t.user_attrs
               for t in trials)


def _on_lost(tracker: SearchTracker, job: Job) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """A trial whose driver stopped beating: its record ends FAILED with the reason, and it is retried."""

    def record(trial: optuna.trial.FrozenTrial) -> None:
        run_id = trial.user_attrs.get(RUN_ATTR)
        if run_id is not None:
            try:
                tracker.end_trial(run_id, "failed", f"lost: no heartbeat for {heartbeat_grace_s()} s "
                                                    "(its driver vanished); retried as a new trial")
            except Exception as exc:  # noqa: BLE001 - the record is secondary; the retry is what matters
                warnings.warn(f"could not record lost trial {trial.number}: {exc!r}", stacklevel=1)

    return heartbeat.retry_lost(record, job.resources.max_retries)


def _wait(executor: Executor, handles: list[Any], stop: StopRequest) -> list[Any]:
    """The next finished handles; ``Interrupted`` as soon as a stop is asked for."""
    while True:
        stop.check()
        done = executor.wait(handles, timeout=POLL_S)
        if done:
            return done


def _record_interrupted(executor: Executor, tracker: SearchTracker, pending: dict[Any, int],
                        running: dict[int, tuple[optuna.Trial, TrialConfig]], reason: str) -> None:
    """Cancel the running trials; record them interrupted (RUNNING in Optuna, so ``resume`` reruns them)."""
    executor.cancel(list(pending))
    for trial, config in running.values():
        try:
            trial.set_user_attr("interrupted", reason)
        except Exception:  # noqa: BLE001 - the study stays as it was: resume still reruns a RUNNING trial
            pass
        if config.run_id is not None:
            try:
                tracker.end_trial(config.run_id, "interrupted", f"{reason}; metaopt resume reruns it from its checkpoint")
            except Exception:  # noqa: BLE001 - the tracker may be what went away
                pass


class SearchInterrupted(Exception):  # noqa: N818 - named for what happened, like KeyboardInterrupt
    """A search stopped by a signal; ``summary`` says what finished, ``resume`` continues it."""

    def __init__(self, summary: SearchSummary, signum: int) -> None:
        done = sum(r.state in ("complete", "pruned", "failed") for r in summary.results)
        super().__init__(f"interrupted: {done} of {summary.planned_trials} trials finished; "
                         f"continue with: metaopt resume {summary.search_id}")
        self.summary, self.signum = summary, signum


def _decide(
    best: Candidate,
    executor: Executor,
    tracker: SearchTracker,
    trial_tracker: TrialTracker,
    job: Job,
    metric: Metric,
    progress: Progress,
    stop: StopRequest,
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
            with stop.interruptible():
                handle = executor.submit(score_trial, None, record.run_id, job, trial_tracker,
                                         job.resources.cpus_per_trial)
            (done,) = _wait(executor, [handle], stop)
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


def _method_rows(results: list[TrialResult], metric: Metric, strategy_name: str | None = None) -> list[MethodRow]:
    """One row per method: trial counts by outcome and the best finished trial by validation."""
    rows: dict[str, MethodRow] = {}
    for result in results:
        row = rows.setdefault(result.method, MethodRow(result.method, strategy=strategy_name))
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
    stop: StopRequest,
) -> dict[str, TaskScores]:
    """Each method's best trial on the test tasks of the key, once, on the executor; recorded with the trial."""
    by_number = {r.number: r for r in results}
    best = [row for row in rows if row.trial_number is not None]
    if best:
        progress("testing", {"methods": [row.method for row in best]})
    handles = {}
    for row in best:
        result = by_number[row.trial_number]
        with stop.interruptible():
            handle = executor.submit(score_trial, result.checkpoint, result.run_id, job, trial_tracker,
                                     job.resources.cpus_per_trial)
        handles[handle] = row
    scores: dict[str, TaskScores] = {}
    while handles:
        for done in _wait(executor, list(handles), stop):
            row = handles.pop(done.handle)
            if done.error is not None:
                progress("warning", {"message": f"test evaluation of {row.method} failed: {done.error!r}"})
                continue
            scores[row.method] = done.value
            row.test = done.value.summary()
            if row.run_id:
                tracker.record_test(row.run_id, done.value)
    return scores
