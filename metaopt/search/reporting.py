"""What a trial reports while it runs: the tracker interface the search layer needs, and the reporter.

The search layer depends only on these protocols; ``metaopt.tracking`` implements
them with MLflow, and ``NullTracker`` / ``NullSearchTracker`` record nothing (a search
without a tracker, unit tests). A tracker records what the driver decided; it decides nothing.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import optuna

from metaopt.learners.checkpoint import save_checkpoint
from metaopt.search.warm import WarmPlan

if TYPE_CHECKING:
    from metaopt.search.evaluation import TaskScores
    from metaopt.search.job import LoadedJob
    from metaopt.search.results import SearchSummary
    from metaopt.search.selection import Decision
    from metaopt.search.trial import TrialResult
    from metaopt.tasks.metrics import Metric


class TrackingError(RuntimeError):
    """The tracker could not answer (unreachable, refused, broken): the driver reports it and moves nothing."""


@dataclass(frozen=True)
class ChampionRecord:
    """A key's current champion as the tracker keeps it."""

    method: str
    run_id: str
    scores: TaskScores | None  # its recorded per-task test scores; None where none were recorded


class TrialLog(Protocol):
    """One trial's record in a tracker."""

    run_id: str | None

    def log_params(self, params: dict[str, Any]) -> None:
        """Record the trial's configuration."""

    def set_tags(self, tags: dict[str, str]) -> None:
        """Record facts about the trial's run (where it ran); a later attempt overwrites them."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Record metrics at a meta-iteration."""

    def log_artifact(self, path: Path, folder: str) -> None:
        """Record a file (a figure) under ``folder``."""

    def log_dataset(self, name: str, digest: str, source: dict[str, str]) -> None:
        """Record the task family the trial trains on (its key, a digest of its options)."""

    def log_model(self, checkpoint_path: Path, *, full: bool, example: dict[str, Any] | None = None,
                  metrics: dict[str, float] | None = None) -> None:
        """Record the trained meta-parameters (``full``: also as a loadable registered-model candidate).

        ``example``: one task's arrays for the model's signature; ``metrics``: scores to link to the model.
        """

    def finish(self, state: str, reason: str | None) -> None:
        """Record how the trial ended: ``complete``, ``pruned`` or ``failed``, with a reason."""


class TrialTracker(Protocol):
    """Opens a ``TrialLog`` per trial; must pickle, since trials run on Ray workers."""

    def open_trial(
        self, tags: dict[str, str], run_name: str, run_id: str | None = None
    ) -> contextlib.AbstractContextManager[TrialLog]:
        """A context in which the trial's record (``run_id``'s, when the driver made it) is open."""

    def fetch_checkpoint(self, run_id: str) -> Path | None:
        """A local copy of the checkpoint a trial recorded (for workers on another node), if any."""


class SearchTracker(Protocol):
    """Driver-side record of a search (MLflow in ``metaopt.tracking``)."""

    def start_search(self, search_id: str, loaded: LoadedJob) -> str | None:
        """Open the search's record; returns its id."""

    def resume_search(self, search_id: str, parent_run_id: str, loaded: LoadedJob) -> str | None:
        """Reopen the record of an interrupted search."""

    def join_search(self, search_id: str, parent_run_id: str | None, loaded: LoadedJob) -> None:
        """Attach to the record of a search another driver started (this one runs a share of its trials)."""

    def create_trial_run(self, tags: dict[str, str], run_name: str) -> str | None:
        """A record for a trial about to start (reopened by its retries); returns its id."""

    def trial_tracker(self) -> TrialTracker:
        """A picklable tracker that opens each trial's record under the search's."""

    def record_test(self, run_id: str, scores: TaskScores) -> None:
        """Attach test-task scores (the summary and every task's) to a trial's record."""

    def seed_scores(self, seed_of: str, training_seed: int) -> TaskScores | None:
        """The recorded test scores of a finished retrain of ``seed_of``'s configuration with ``training_seed`` (a
        resumed search reuses them); None where there is none. Its earlier unfinished runs are ended, said why."""

    def champion(self, key: str) -> ChampionRecord | None:
        """The key's champion; None only when there is none yet (any other failure: ``TrackingError``)."""

    def record_decision(self, decision: Decision) -> str | None:
        """Record the champion decision; if it moved, make the new champion so (returns its version)."""

    def end_trial(self, run_id: str, state: str, reason: str) -> None:
        """Record how a trial ended that its worker could not record: ``interrupted`` (cancelled) or ``failed`` (lost)."""

    def warm_start(self, loaded: LoadedJob) -> WarmPlan:
        """The configurations the store's history says to try first (``job.warm_start``), recorded with the search."""

    def record_warm(self, said: str) -> None:
        """Where the warm start's configurations came from (its second round added once the first is scored)."""

    def record_progress(self, results: list[TrialResult], planned: int, metric: Metric, eta_s: float | None) -> None:
        """While the search runs, after each trial: where it stands (trials done of ``planned``, the best so far,
        ``eta_s`` seconds left)."""

    def finish_search(self, summary: SearchSummary, status: str) -> None:
        """Record the leaderboard and the report, close the search's record (``SHARED``: leave it to the last driver)."""


class NullSearchTracker:
    """Records nothing: a search without a tracker still decides, and nothing is kept."""

    def start_search(self, search_id: str, loaded: LoadedJob) -> str | None:
        return None

    def resume_search(self, search_id: str, parent_run_id: str, loaded: LoadedJob) -> str | None:
        return None

    def join_search(self, search_id: str, parent_run_id: str | None, loaded: LoadedJob) -> None:
        pass

    def create_trial_run(self, tags: dict[str, str], run_name: str) -> str | None:
        return None

    def trial_tracker(self) -> TrialTracker:
        return NullTracker()

    def record_test(self, run_id: str, scores: TaskScores) -> None:
        pass

    def seed_scores(self, seed_of: str, training_seed: int) -> TaskScores | None:
        return None

    def champion(self, key: str) -> ChampionRecord | None:
        return None

    def record_decision(self, decision: Decision) -> str | None:
        return None

    def end_trial(self, run_id: str, state: str, reason: str) -> None:
        pass

    def record_progress(self, results: list[TrialResult], planned: int, metric: Metric, eta_s: float | None) -> None:
        pass

    def warm_start(self, loaded: LoadedJob) -> WarmPlan:
        return WarmPlan()  # no store, no history

    def record_warm(self, said: str) -> None:
        pass

    def finish_search(self, summary: SearchSummary, status: str) -> None:
        pass


class _NullLog:
    run_id = None

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: Path, folder: str) -> None:
        pass

    def log_dataset(self, name: str, digest: str, source: dict[str, str]) -> None:
        pass

    def log_model(self, checkpoint_path: Path, *, full: bool, example: dict[str, Any] | None = None,
                  metrics: dict[str, float] | None = None) -> None:
        pass

    def finish(self, state: str, reason: str | None) -> None:
        pass


class NullTracker:
    """Records nothing."""

    @contextlib.contextmanager
    def open_trial(self, tags: dict[str, str], run_name: str, run_id: str | None = None) -> Iterator[TrialLog]:
        """A log that drops everything."""
        yield _NullLog()

    def fetch_checkpoint(self, run_id: str) -> Path | None:
        """Nothing is recorded, so nothing can be fetched."""
        return None


class Reporter:
    """Carries a trial's evaluations to Optuna (pruning) and the tracker (curves), and checkpoints."""

    def __init__(
        self,
        trial: optuna.Trial | None,
        log: TrialLog,
        checkpoint_path: Path,
        *,
        per_instance: bool = False,
        warmup: int = 0,
        final_step: int | None = None,
        prunable: bool = True,
    ) -> None:
        self.trial, self.log, self.checkpoint_path = trial, log, checkpoint_path
        self.per_instance, self.warmup, self.final_step, self.prunable = per_instance, warmup, final_step, prunable
        self.last_step: int | None = None
        self.last_value: float | None = None
        self.has_checkpoint = False
        self.resumed_from: int | None = None
        self.unsent: list[tuple[dict[str, float], int]] = []
        self.warned = False
        self.example: dict[str, Any] | None = None  # one task's arrays, for the logged model's signature
        self.last_metrics: dict[str, float] = {}  # the last evaluation's scores, to link to the logged model
        self.extra: dict[str, float] = {}  # figures the trial measured beside its curve (``TrialResult.extra``)

    def _log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.unsent.append((metrics, step))
        self.flush()

    def measured(self, name: str, value: float) -> None:
        """A figure the trial measured once, beside its curve (a two-objective search's ``val_adapt_ms``): kept for
        its result (``TrialResult.extra``) and logged at its last step, held back like every metric on trouble."""
        self.extra[name] = value
        self._log_metrics({name: value}, self.last_step or 0)

    def flush(self) -> None:
        """Send held-back metrics, oldest first; what the tracker refuses (unreachable past its own retries) waits."""
        while self.unsent:
            try:
                self.log.log_metrics(*self.unsent[0])
            except Exception as exc:  # noqa: BLE001 - tracking trouble must not end the trial
                if not self.warned:
                    warnings.warn(f"tracking unavailable, metrics kept for later: {exc!r}", stacklevel=2)
                    self.warned = True
                return
            self.unsent.pop(0)

    def warn(self, message: str) -> None:
        """Something the user should know about this trial: a warning here and the tag ``metaopt.warning``."""
        warnings.warn(message, stacklevel=2)
        try:
            self.log.set_tags({"metaopt.warning": message[:5000]})
        except Exception as exc:  # noqa: BLE001 - tracking trouble must not end the trial
            warnings.warn(f"could not record the warning: {exc!r}", stacklevel=2)

    def tag(self, tags: dict[str, str]) -> None:
        """Facts of the trial as tags of its record; tracking trouble only warns."""
        try:
            self.log.set_tags(tags)
        except Exception as exc:  # noqa: BLE001 - tracking trouble must not end the trial
            warnings.warn(f"could not record {', '.join(tags)}: {exc!r}", stacklevel=2)

    def record_params(self, params: dict[str, Any]) -> None:
        """Record more of the trial's configuration (the defaults its learner used); tracking trouble only warns."""
        if not params:
            return
        try:
            self.log.log_params(params)
        except Exception as exc:  # noqa: BLE001 - tracking trouble must not end the trial
            warnings.warn(f"could not record parameters: {exc!r}", stacklevel=2)

    def attach(self, path: Path, folder: str = "figures") -> None:
        """Record a file with the trial; tracking trouble only warns."""
        try:
            self.log.log_artifact(path, folder)
        except Exception as exc:  # noqa: BLE001 - tracking trouble must not end the trial
            warnings.warn(f"could not record {path.name}: {exc!r}", stacklevel=2)

    def resumed(self, step: int, value: float) -> None:
        """The trial continues from its checkpoint at ``step`` (a retry after its worker was lost)."""
        self.resumed_from, self.last_step, self.last_value = step, step, value
        self.has_checkpoint = True
        self._log_metrics({"resumed_at": float(step)}, step)

    def report(
        self,
        step: int,
        metrics: dict[str, float],
        objective: str,
        checkpoint: Callable[[], dict],
        instances: list[float] | None = None,
    ) -> None:
        """Log ``metrics``, write a checkpoint, and raise ``optuna.TrialPruned`` if the pruner says so.

        With ``per_instance`` (the Wilcoxon pruner) Optuna gets the objective of every
        validation episode, ``instances``, as step ``step * len(instances) + i``: two trials
        are then paired on the same episodes at the same iteration.
        """
        self._log_metrics(metrics, step)
        self.last_metrics = {k: v for k, v in metrics.items() if k.startswith("val_")}
        save_checkpoint(checkpoint(), self.checkpoint_path)
        self.has_checkpoint = True
        self.last_step, self.last_value = step, metrics[objective]
        if self.trial is not None:
            if self.per_instance and instances:
                for i, value in enumerate(instances):
                    self.trial.report(value, step * len(instances) + i)
            else:
                self.trial.report(metrics[objective], step)
            # The last report is never pruned: stopping then saves nothing, and a finished trial (a classic policy
            # evaluated once, at its end) would read "pruned at iteration 400 of 400".
            last = self.final_step is not None and step >= self.final_step
            if self.prunable and step >= self.warmup and not last and self.trial.should_prune():
                raise optuna.TrialPruned(f"pruned at iteration {step} ({objective}={metrics[objective]:.4g})")
