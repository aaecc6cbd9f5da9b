"""The Optuna study of a search, across drivers: create, join or resume it; what it recorded; what the budget counts.

A study is one search. Its user attributes keep the job and the search space it was
started with and its MLflow parent run; each trial keeps its MLflow run, its outcome and
why it ended. Several drivers may share one study (``--search-id`` on a shared
storage): each asked trial counts once against the budget across all of them, a trial
lost with its driver is retried, and one asked past the budget by two racing drivers is
a *surplus* trial, told FAIL at once and never counted.
"""

from __future__ import annotations

import re
import secrets
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna

from metaopt.search import heartbeat
from metaopt.search.config import Job
from metaopt.search.job import LoadedJob, loaded_from_data
from metaopt.search.pruners import make_pruner
from metaopt.search.reporting import SearchTracker
from metaopt.search.storage import describe, heartbeat_grace_s, open_storage, readable_storage, storage_locator
from metaopt.search.strategies import Strategy
from metaopt.search.trial import ADAPT_MS, TrialResult
from metaopt.search.warm import WarmPlan, record_plan
from metaopt.text import short

RUN_ATTR = "mlflow_run_id"
SURPLUS = "surplus"  # a trial asked past the budget by a driver racing another; told FAIL at once, never counted
OPTUNA_STATES = {
    "complete": optuna.trial.TrialState.COMPLETE,
    "pruned": optuna.trial.TrialState.PRUNED,
    "failed": optuna.trial.TrialState.FAIL,
}
FINISHED = tuple(OPTUNA_STATES.values())


class JoinError(LookupError):
    """A driver cannot join the search its ``--search-id`` names."""


SEARCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_search_id(search_id: str) -> str:
    """``search_id`` if it is a safe name (it becomes a folder and file names): else ``ValueError`` in one line."""
    if not isinstance(search_id, str) or not SEARCH_ID.match(search_id):
        raise ValueError(f"--search-id {short(search_id)}: a search id is 1 to 128 letters, digits, _ . - "
                         "(it names folders and files), starting with a letter or digit")
    return search_id


def new_search_id(job_name: str) -> str:
    """``<job>-<UTC time>-<random>``: sortable and unique."""
    return f"{job_name}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def open_study(search_id: str, loaded: LoadedJob, chosen: Strategy, locator: str,
               tracker: SearchTracker) -> tuple[optuna.Study, bool]:
    """The study of ``search_id``: created (True) or, where another driver created it, joined (False)."""
    job = loaded.job
    settings = _settings(loaded, chosen, locator, tracker)
    try:
        return optuna.create_study(study_name=search_id, directions=directions(job), **settings), True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=search_id, **settings), False


def directions(job: Job) -> list[str]:
    """The study's directions: the primary metric's, then (a search of two objectives) the adaptation cost's."""
    return [job.family.primary_metric.direction, *(["minimize"] if job.multi_objective else [])]


def load_study(search_id: str, loaded: LoadedJob, chosen: Strategy, locator: str,
               tracker: SearchTracker) -> optuna.Study:
    """The existing study of ``search_id``, with the job's sampler and pruner."""
    return optuna.load_study(study_name=search_id, **_settings(loaded, chosen, locator, tracker))


def _settings(loaded: LoadedJob, chosen: Strategy, locator: str, tracker: SearchTracker) -> dict[str, Any]:
    job = loaded.job
    return dict(storage=open_storage(locator, on_stale=_on_lost(tracker, job)),
                sampler=chosen.study_sampler(job.seed, loaded.space), pruner=make_pruner(job.pruner, job.budget))


def record_start(study: optuna.Study, loaded: LoadedJob, parent_run_id: str | None,
                 warm: WarmPlan | None = None) -> None:
    """What a resumed or joining driver needs: the enqueued configurations (the job's, then the ``warm`` start's
    first round, its second kept for ``warm.gate``), the job, the space, the parent run."""
    for config in loaded.job.enqueue:
        study.enqueue_trial(loaded.space.enqueue_params(config))
    if warm is not None:
        record_plan(study, loaded.space, warm, enqueued_before=len(loaded.job.enqueue))
    study.set_user_attr("job", loaded.job.model_dump())
    study.set_user_attr("space", loaded.space.to_data())
    study.set_user_attr("parent_run_id", parent_run_id)


def joined_parent(study: optuna.Study, loaded: LoadedJob, wait_s: float = 30.0) -> str | None:
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
    if study.directions[0].name.lower() != metric.direction:
        raise LookupError(f"search {search_id!r} was started by an older metaopt that optimised the validation loss; "
                          f"{loaded.job.family.key} now optimises validation {metric.label}: start a new search")
    return loaded


def counted(study: optuna.Study) -> int:
    """Trials that count against the budget, across every driver of the study.

    Each asked trial counts once; a trial lost with its driver and retried counts as its retry.
    """
    trials = study.get_trials(deepcopy=False)
    replaced = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return sum(t.state != optuna.trial.TrialState.WAITING and t.number not in replaced and SURPLUS not in t.user_attrs
               for t in trials)


def others_running(study: optuna.Study, mine: set[int]) -> bool:
    """Whether trials of the study that this driver does not run are running."""
    return any(t.number not in mine for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))


def finished_results(study: optuna.Study, loaded: LoadedJob, chosen: Strategy) -> list[TrialResult]:
    """The ``TrialResult`` of every finished trial of the study, whichever driver ran it (surplus ones left out)."""
    return [result_of(t, loaded, chosen) for t in study.get_trials(deepcopy=False, states=FINISHED)
            if SURPLUS not in t.user_attrs]


def all_results(study: optuna.Study, loaded: LoadedJob, chosen: Strategy, own: list[TrialResult]) -> list[TrialResult]:
    """This driver's results and the finished trials other drivers of the study ran (surplus ones left out)."""
    mine = {r.number for r in own}
    return own + [r for r in finished_results(study, loaded, chosen) if r.number not in mine]


def result_of(trial: optuna.trial.FrozenTrial, loaded: LoadedJob, chosen: Strategy) -> TrialResult:
    """The ``TrialResult`` a finished trial was told with, from what the study recorded."""
    method, hparams = chosen.recorded(loaded.space, trial.params)
    outcome = trial.user_attrs.get("outcome", {})
    state = next(name for name, s in OPTUNA_STATES.items() if s == trial.state)
    return TrialResult(
        trial.number, method, hparams, state, value=outcome.get("value"), reason=trial.user_attrs.get("reason"),
        run_id=trial.user_attrs.get(RUN_ATTR), checkpoint=outcome.get("checkpoint"),
        iterations=outcome.get("iterations", 0), seconds=outcome.get("seconds", 0.0),
    )


def tell(study: optuna.Study, trial: optuna.Trial, result: TrialResult) -> None:
    """Tell the study how ``trial`` ended, and keep what resuming and the records need beside it."""
    if result.reason:
        trial.set_user_attr("reason", result.reason)
    if result.run_id:
        trial.set_user_attr(RUN_ATTR, result.run_id)
    trial.set_user_attr("outcome", {"value": result.value, "iterations": result.iterations,
                                    "seconds": result.seconds, "checkpoint": result.checkpoint})
    if result.state == "complete" and len(study.directions) > 1:
        study.tell(trial, [result.value, result.extra[ADAPT_MS]])
    elif result.state == "complete":
        study.tell(trial, result.value)
    else:
        study.tell(trial, state=OPTUNA_STATES[result.state])


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
