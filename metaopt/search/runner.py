"""The search driver: owns the Optuna study, asks for configurations, runs trials on an executor, tells results.

After the trials, the best trial of each method (by validation loss) is scored on
the held-out test tasks, and the best method overall becomes the champion.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import optuna

from metaopt.search.executors import Executor
from metaopt.search.job import LoadedJob, loaded_from_data
from metaopt.search.reporting import NullTracker, TrialTracker
from metaopt.search.space import METHOD_PARAM, SearchSpace
from metaopt.search.storage import describe, open_storage, storage_locator
from metaopt.search.strategies import grid_size, make_pruner, make_sampler, samples_floats, trial_learner
from metaopt.search.trial import TrialConfig, TrialResult, evaluate_checkpoint, execute_trial, trial_tags

RUN_ATTR = "mlflow_run_id"
OPTUNA_STATES = {
    "complete": optuna.trial.TrialState.COMPLETE,
    "pruned": optuna.trial.TrialState.PRUNED,
    "failed": optuna.trial.TrialState.FAIL,
}
FINISHED = tuple(OPTUNA_STATES.values())


@dataclass
class MethodRow:
    """A method's line on the leaderboard: its best trial by validation, scored on test tasks."""

    method: str
    best_val: float | None = None
    strategy: str | None = None  # of the search the best trial came from (across searches)
    test_loss: float | None = None
    test_loss_ci95: float | None = None
    test_accuracy: float | None = None
    test_accuracy_ci95: float | None = None
    trial_number: int | None = None
    run_id: str | None = None
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    hparams: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchSummary:
    """What a search did and found."""

    search_id: str
    family: str
    results: list[TrialResult]
    rows: list[MethodRow]
    champion: MethodRow | None
    seconds: float
    parent_run_id: str | None = None
    storage: str | None = None  # where the Optuna study is (a journal path or a database URL)


class SearchTracker(Protocol):
    """Driver-side record of a search (MLflow in ``metaopt.tracking``)."""

    def start_search(self, search_id: str, loaded: LoadedJob) -> str | None:
        """Open the search's record; returns its id."""

    def resume_search(self, search_id: str, parent_run_id: str, family: str) -> str | None:
        """Reopen the record of an interrupted search."""

    def create_trial_run(self, tags: dict[str, str], run_name: str) -> str | None:
        """A record for a trial about to start (reopened by its retries); returns its id."""

    def trial_tracker(self) -> TrialTracker:
        """A picklable tracker that opens each trial's record under the search's."""

    def log_test(self, run_id: str, metrics: dict[str, float]) -> None:
        """Attach test-task scores to a trial's record."""

    def finish_search(self, summary: SearchSummary, status: str) -> None:
        """Record the leaderboard, register the champion, close the search's record."""


class NullSearchTracker:
    """Records nothing."""

    def start_search(self, search_id: str, loaded: LoadedJob) -> str | None:
        return None

    def resume_search(self, search_id: str, parent_run_id: str, family: str) -> str | None:
        return None

    def create_trial_run(self, tags: dict[str, str], run_name: str) -> str | None:
        return None

    def trial_tracker(self) -> TrialTracker:
        return NullTracker()

    def log_test(self, run_id: str, metrics: dict[str, float]) -> None:
        pass

    def finish_search(self, summary: SearchSummary, status: str) -> None:
        pass


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
    study = optuna.create_study(
        study_name=search_id,
        storage=open_storage(locator),
        sampler=make_sampler(job.strategy, job.seed),
        pruner=make_pruner(job.pruner, job.budget),
        direction="minimize",
    )
    for config in job.enqueue:
        study.enqueue_trial(loaded.space.enqueue_params(config))
    study.set_user_attr("job", job.model_dump())
    study.set_user_attr("space", loaded.space.to_data())
    parent_run_id = tracker.start_search(search_id, loaded)
    study.set_user_attr("parent_run_id", parent_run_id)
    return _drive(loaded, study, locator, executor, tracker, workdir, parent_run_id, progress, [], [])


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
    study = optuna.load_study(
        study_name=search_id,
        storage=open_storage(locator),
        sampler=make_sampler(job.strategy, job.seed),
        pruner=make_pruner(job.pruner, job.budget),
    )
    parent_run_id = study.user_attrs.get("parent_run_id")
    if parent_run_id is not None:
        tracker.resume_search(search_id, parent_run_id, job.family.name)
    finished = [t for t in study.trials if t.state in FINISHED]
    results = [_result_of(t, loaded.space, job.strategy) for t in finished]
    unfinished = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    return _drive(loaded, study, locator, executor, tracker, workdir, parent_run_id, progress, results, unfinished)


def recorded_job(search_id: str, *, workdir: str | Path = ".metaopt", storage: str | None = None) -> LoadedJob:
    """The job and search space a search was started with, as its study recorded them."""
    locator = storage_locator(workdir, storage)
    exists = "://" in locator or Path(locator).is_file()
    if not exists or search_id not in optuna.get_all_study_names(open_storage(locator)):
        raise LookupError(f"no search {search_id!r} in {describe(locator)}")
    study = optuna.load_study(study_name=search_id, storage=open_storage(locator))
    return loaded_from_data(study.user_attrs["job"], study.user_attrs["space"], Path(describe(locator)))


def _drive(
    loaded: LoadedJob,
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
    """Ask, run and tell until the budget is spent; then score the best trial of each method on test tasks."""
    job, space, search_id = loaded.job, loaded.space, study.study_name
    progress = progress or (lambda event, info: None)
    start = time.monotonic()
    deadline = start + job.budget.timeout_s if job.budget.timeout_s else math.inf
    trial_tracker = tracker.trial_tracker()
    job_data = job.model_dump()
    budget_trials = job.budget.trials
    if job.strategy == "grid" and grid_size(space) < budget_trials:
        budget_trials = grid_size(space)
        progress("warning", {"message": f"the grid has {budget_trials} configurations: the search stops there"})
    progress("start", {"search_id": search_id, "trials": budget_trials, "parent_run_id": parent_run_id,
                       "done": len(results)})
    pending: dict[Any, tuple[optuna.Trial, TrialConfig]] = {}
    asked = sum(t.state != optuna.trial.TrialState.WAITING for t in study.trials)

    def submit(trial: optuna.Trial, number: int, method: str, hparams: dict[str, Any], run_id: str | None) -> None:
        config = TrialConfig(
            search_id=search_id,
            number=number,
            method=method,
            hparams=hparams,
            job=job_data,
            checkpoint_dir=str(workdir / "checkpoints" / search_id),
            cpus=job.resources.cpus_per_trial,
            study_name=search_id,
            storage=locator,
            trial_id=trial._trial_id,
            run_id=run_id,
        )
        pending[executor.submit(execute_trial, config, trial_tracker)] = (trial, config)

    learned = not samples_floats(job.strategy)
    for frozen in unfinished:  # interrupted with the driver: same number, same record, from the checkpoint
        method = frozen.params[METHOD_PARAM]
        method, hparams = trial_learner(job.strategy, space, method,
                                        space.hparams_of(method, frozen.params, learned_floats=learned))
        submit(optuna.Trial(study, frozen._trial_id), frozen.number, method, hparams, frozen.user_attrs.get(RUN_ATTR))
    status = "FAILED"
    try:
        while True:
            while len(pending) < executor.slots and asked < budget_trials and time.monotonic() < deadline:
                trial = study.ask()
                method, hparams = trial_learner(job.strategy, space, *space.suggest(trial, learned_floats=learned))
                run_id = tracker.create_trial_run(trial_tags(search_id, job_data, method, trial.number),
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
                progress("trial", {"result": result, "best": _best(results)})

        rows = _score_best_per_method(
            results, executor, tracker, trial_tracker, job_data, job.resources.cpus_per_trial, progress
        )
        scored = [row for row in rows if row.best_val is not None]
        champion = min(scored, key=lambda row: row.best_val) if scored else None
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if status != "FINISHED":
            rows, champion = [], None
        summary = SearchSummary(
            search_id, job.family.name, results, rows, champion, time.monotonic() - start, parent_run_id, locator
        )
        tracker.finish_search(summary, status)
    progress("end", {"summary": summary})
    return summary


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


def _result_of(trial: optuna.trial.FrozenTrial, space: SearchSpace, strategy: str) -> TrialResult:
    """The ``TrialResult`` a finished trial was told with, from what the study recorded."""
    method = trial.params[METHOD_PARAM]
    hparams = space.hparams_of(method, trial.params, learned_floats=not samples_floats(strategy))
    method, hparams = trial_learner(strategy, space, method, hparams)
    outcome = trial.user_attrs.get("outcome", {})
    state = next(name for name, s in OPTUNA_STATES.items() if s == trial.state)
    return TrialResult(
        trial.number, method, hparams, state, value=outcome.get("value"), reason=trial.user_attrs.get("reason"),
        run_id=trial.user_attrs.get(RUN_ATTR), checkpoint=outcome.get("checkpoint"),
        iterations=outcome.get("iterations", 0), seconds=outcome.get("seconds", 0.0),
    )


def _best(results: list[TrialResult]) -> TrialResult | None:
    complete = [r for r in results if r.state == "complete"]
    return min(complete, key=lambda r: r.value) if complete else None


def _score_best_per_method(
    results: list[TrialResult],
    executor: Executor,
    tracker: SearchTracker,
    trial_tracker: TrialTracker,
    job: dict[str, Any],
    cpus: int,
    progress: Progress,
) -> list[MethodRow]:
    rows: dict[str, MethodRow] = {}
    for result in results:
        row = rows.setdefault(result.method, MethodRow(result.method))
        setattr(row, result.state, getattr(row, result.state) + 1)
        if result.state == "complete" and (row.best_val is None or result.value < row.best_val):
            row.best_val, row.trial_number, row.run_id = result.value, result.number, result.run_id
            row.hparams = result.hparams
    by_number = {r.number: r for r in results}
    best = [row for row in rows.values() if row.trial_number is not None]
    if best:
        progress("testing", {"methods": [row.method for row in best]})
    handles = {
        executor.submit(evaluate_checkpoint, by_number[row.trial_number], job, trial_tracker, cpus): row for row in best
    }
    while handles:
        for done in executor.wait(list(handles)):
            row = handles.pop(done.handle)
            if done.error is not None:
                progress("warning", {"message": f"test evaluation of {row.method} failed: {done.error!r}"})
                continue
            row.test_loss, row.test_loss_ci95 = done.value["test_loss"], done.value["test_loss_ci95"]
            row.test_accuracy = done.value.get("test_accuracy")
            row.test_accuracy_ci95 = done.value.get("test_accuracy_ci95")
            if row.run_id:
                tracker.log_test(row.run_id, done.value)
    return sorted(rows.values(), key=lambda row: (row.best_val is None, row.best_val or 0.0))
