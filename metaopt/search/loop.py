"""The ask-run-tell loop of one driver: ask the strategy, run each trial on the executor, tell the study.

A driver keeps as many trials running as its executor has slots until the budget (counted
across every driver of the study) or the search's time is spent; it first reruns the trials
its predecessor left unfinished, each with its number and record. A stop request (a signal)
cancels the running trials and records them interrupted: RUNNING in Optuna, so ``resume``
reruns them from their checkpoints.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from metaopt.search import heartbeat, warm
from metaopt.search.config import Job
from metaopt.search.executors import Executor
from metaopt.search.interruption import Interrupted, StopRequest
from metaopt.search.job import LoadedJob
from metaopt.search.reporting import SearchTracker, TrialTracker
from metaopt.search.space import METHOD_PARAM
from metaopt.search.strategies import Strategy
from metaopt.search.study import RUN_ATTR, SURPLUS, counted, others_running, tell
from metaopt.search.trial import TrialConfig, TrialResult, execute_trial, trial_tags
from metaopt.tasks.metrics import Metric

FINISHED_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)

Progress = Callable[[str, dict[str, Any]], None]
POLL_S = 0.5  # how often a waiting driver looks at the stop request


@dataclass
class SearchContext:
    """What one driver's run of a search works with: the job, the study, where trials run and what records them."""

    loaded: LoadedJob
    strategy: Strategy
    study: optuna.Study
    locator: str  # where the study is (a journal path or a database URL)
    executor: Executor
    tracker: SearchTracker
    workdir: Path
    parent_run_id: str | None
    progress: Progress = lambda event, info: None  # noqa: E731
    stop: StopRequest = field(default_factory=StopRequest)
    trial_tracker: TrialTracker = field(init=False)

    def __post_init__(self) -> None:
        self.trial_tracker = self.tracker.trial_tracker()

    @property
    def job(self) -> Job:
        """The validated job."""
        return self.loaded.job

    @property
    def search_id(self) -> str:
        """The study's name."""
        return self.study.study_name

    @property
    def metric(self) -> Metric:
        """The family's primary metric."""
        return self.job.family.primary_metric

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the executor (an in-process call runs here: a signal stops it there)."""
        with self.stop.interruptible():
            return self.executor.submit(fn, *args)

    def wait(self, handles: list[Any]) -> list[Any]:
        """The next finished handles; ``Interrupted`` as soon as a stop is asked for."""
        while True:
            self.stop.check()
            done = self.executor.wait(handles, timeout=POLL_S)
            if done:
                return done


class Shared(Exception):  # noqa: N818 - a branch, not an error
    """This driver's share of a shared search is done; another driver still runs trials."""


class TrialLoop:
    """Ask, run and tell until the budget or the time is spent."""

    def __init__(self, ctx: SearchContext, budget_trials: int, deadline: float) -> None:
        self.ctx, self.budget_trials, self.deadline = ctx, budget_trials, deadline
        self.running: dict[int, tuple[optuna.Trial, TrialConfig]] = {}  # trial number -> trial, from submit to tell
        self.pending: dict[Any, int] = {}  # executor handle -> trial number
        self.beats = heartbeat.Heartbeat(ctx.study, lambda: [trial._trial_id for trial, _ in self.running.values()])

    def run(self, results: list[TrialResult], unfinished: list[optuna.trial.FrozenTrial]) -> None:
        """Rerun ``unfinished``, then new trials; each result is appended to ``results`` as it is told.

        ``Shared`` where the last trials were another driver's (it scores and decides); ``Interrupted``
        on a stop request, with the running trials cancelled and recorded.
        """
        ctx = self.ctx
        waited = False
        started, told_before, since = time.monotonic(), len(results), datetime.datetime.now()
        with self.beats:
            try:
                for frozen in unfinished:  # interrupted with the driver: same number, same record, from the checkpoint
                    self._resubmit(frozen)
                while True:
                    while (len(self.pending) < ctx.executor.slots and counted(ctx.study) < self.budget_trials
                           and time.monotonic() < self.deadline):
                        ctx.stop.check()
                        self._gate_warm_start()
                        if not self._ask():
                            break
                        waited = False
                    if not self.pending:
                        if others_running(ctx.study, set(self.running)) and time.monotonic() < self.deadline:
                            if not heartbeat.enabled(ctx.study):  # no way to tell a live driver from a lost one
                                raise Shared("trials of this search still run in another driver: the driver that "
                                             "finishes them scores the methods and decides the champion")
                            # Wait: the other driver finishes them, or it is gone and they come back as retries.
                            waited = True
                            time.sleep(POLL_S)
                            ctx.stop.check()
                            continue
                        break
                    for done in ctx.wait(list(self.pending)):
                        results.append(self._told(done))
                        ctx.progress("trial", {"result": results[-1], "best": best_result(results, ctx.metric)})
                        self._record_progress(results, started, told_before)
            except Interrupted as exc:
                self._record_interrupted(str(exc))
                raise
        if waited or self._another_told_last(since, {r.number for r in results[told_before:]}):
            # the last trials were another driver's, which scores and decides
            raise Shared("another driver of this search finished its last trials: it scores the methods and "
                         "decides the champion")

    def _another_told_last(self, since: datetime.datetime, ours: set[int]) -> bool:
        """Whether the search's last finished trial was told by another driver while this one ran: two drivers that
        finish at once, neither waiting for the other, agree on one to score (the one that told the last)."""
        finished = [t for t in self.ctx.study.get_trials(deepcopy=False, states=FINISHED_STATES)
                    if SURPLUS not in t.user_attrs and t.datetime_complete is not None]
        if not finished:
            return False
        last = max(finished, key=lambda t: (t.datetime_complete, t.number))
        return last.number not in ours and last.datetime_complete >= since

    def _record_progress(self, results: list[TrialResult], started: float, told_before: int) -> None:
        """Trials done of planned, the best so far and the time left, on the search's record."""
        done = sum(r.state in ("complete", "pruned", "failed") for r in results)
        here = len(results) - told_before  # told by this loop: the pace of this run, not of an earlier driver's
        left = max(self.budget_trials - done, 0)
        eta = (time.monotonic() - started) / here * left if here else None
        self.ctx.tracker.record_progress(results, self.budget_trials, self.ctx.metric, eta)

    def _ask(self) -> bool:
        """Ask a new trial and submit it; False when another driver asked the budget's last trial at the same time."""
        ctx = self.ctx
        trial = ctx.study.ask()
        if counted(ctx.study) > self.budget_trials:
            trial.set_user_attr(SURPLUS, "over the budget: another driver asked the last trial at once")
            ctx.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return False
        method, hparams = ctx.strategy.ask(trial, ctx.loaded.space)
        self._submit(trial, trial.number, method, hparams, self._new_run(trial, trial.number, method))
        return True

    def _gate_warm_start(self) -> None:
        """The warm start's second round once its first is scored (``warm.gate``), then its local steps one at a time
        (``warm.refine``), each said on the search's record."""
        study = self.ctx.study
        if warm.gate(study, self.ctx.loaded.space) or warm.refine(study, self.ctx.loaded.space):
            self.ctx.tracker.record_warm(warm.story(study.user_attrs))

    def _resubmit(self, frozen: optuna.trial.FrozenTrial) -> None:
        """A trial left running by an earlier driver, under its own number and record."""
        ctx = self.ctx
        trial = optuna.Trial(ctx.study, frozen._trial_id)
        try:
            method, hparams = ctx.strategy.recorded(ctx.loaded.space, frozen.params)
        except KeyError:  # asked, not (fully) configured: the driver died while sampling it (even between the
            # method and its hyperparameters). Sampling again completes it: Optuna returns what it recorded as it was.
            method, hparams = ctx.strategy.ask(trial, ctx.loaded.space)
        run_id = frozen.user_attrs.get(RUN_ATTR) or self._new_run(trial, frozen.number, method)
        self._submit(trial, frozen.number, method, hparams, run_id)

    def _new_run(self, trial: optuna.Trial, number: int, method: str) -> str | None:
        ctx = self.ctx
        run_id = ctx.tracker.create_trial_run(trial_tags(ctx.search_id, ctx.job, method, number), f"{method}-{number}")
        if run_id is not None:
            trial.set_user_attr(RUN_ATTR, run_id)
        return run_id

    def _has_finished(self, method: str) -> bool:
        """Whether a trial of ``method`` has finished in this search: until one has, its trials are not pruned (the
        baselines and other methods' trials count toward a pruner's start-up, so timing alone could leave a method
        with no finished trial and no test score)."""
        complete = optuna.trial.TrialState.COMPLETE
        return any(t.state == complete and t.params.get(METHOD_PARAM) == method
                   for t in self.ctx.study.get_trials(deepcopy=False, states=(complete,)))

    def _submit(self, trial: optuna.Trial, number: int, method: str, hparams: dict[str, Any],
                run_id: str | None) -> None:
        ctx = self.ctx
        config = TrialConfig(
            search_id=ctx.search_id, number=number, method=method, hparams=hparams, job=ctx.job,
            checkpoint_dir=str(ctx.workdir / "checkpoints" / ctx.search_id), cpus=ctx.job.resources.cpus_per_trial,
            study_name=ctx.search_id, storage=ctx.locator, trial_id=trial._trial_id, run_id=run_id,
            prunable=self._has_finished(method),
        )
        self.running[number] = (trial, config)
        if heartbeat.enabled(ctx.study):
            self.beats.beat(trial._trial_id)
        self.pending[ctx.submit(execute_trial, config, ctx.trial_tracker)] = number

    def _told(self, done: Any) -> TrialResult:
        """The result of a finished handle, told to the study (a worker's error is a failed trial)."""
        trial, config = self.running.pop(self.pending.pop(done.handle))
        result = done.value
        if done.error is not None:
            result = TrialResult(config.number, config.method, config.hparams, "failed",
                                 reason=f"worker error: {done.error!r}", run_id=config.run_id)
        tell(self.ctx.study, trial, result)
        return result

    def _record_interrupted(self, reason: str) -> None:
        """Cancel the running trials; record them interrupted (RUNNING in Optuna, so ``resume`` reruns them)."""
        self.ctx.executor.cancel(list(self.pending))
        for trial, config in self.running.values():
            try:
                trial.set_user_attr("interrupted", reason)
            except Exception:  # noqa: BLE001 - the study stays as it was: resume still reruns a RUNNING trial
                pass
            if config.run_id is not None:
                try:
                    self.ctx.tracker.end_trial(config.run_id, "interrupted",
                                               f"{reason}; metaopt resume reruns it from its checkpoint")
                except Exception:  # noqa: BLE001 - the tracker may be what went away
                    pass


def best_result(results: list[TrialResult], metric: Metric) -> TrialResult | None:
    """The best finished trial by validation, by the metric's direction."""
    complete = [r for r in results if r.state == "complete" and r.value is not None]
    if not complete:
        return None
    return max(complete, key=lambda r: r.value) if metric.higher_is_better else min(complete, key=lambda r: r.value)

