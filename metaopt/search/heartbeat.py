"""Heartbeats of the trials a driver runs, on a database storage: what lets several drivers share one study.

The driver beats for every trial it has running (so a trial is never taken for lost while it
trains, in this process or on a Ray worker) and, on the same clock, fails the trials no driver
has beaten for the grace period (their driver vanished): each is recorded as lost and retried,
with the same configuration, as a new trial that any driver of the study may run.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterable

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback

from metaopt.search.storage import heartbeat_s


def enabled(study: optuna.Study) -> bool:
    """Whether the study's storage keeps heartbeats (a database storage does; journals do not)."""
    return optuna.storages._heartbeat.is_heartbeat_enabled(study._storage)


def retry_lost(record: Callable[[optuna.trial.FrozenTrial], None],
               max_retries: int) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """What to do with a trial failed for want of a heartbeat: ``record`` it, then enqueue its retry."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks the retry callback experimental
        retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retries)

    def on_stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        record(trial)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks the retry callback experimental
            retry(study, trial)

    return on_stale


class Heartbeat:
    """A thread that beats for ``trial_ids()`` every ``heartbeat_s()`` and fails the study's lost trials."""

    def __init__(self, study: optuna.Study, trial_ids: Callable[[], Iterable[int]]) -> None:
        self.study, self.trial_ids = study, trial_ids
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metaopt-heartbeat", daemon=True)

    def beat(self, trial_id: int) -> None:
        """One heartbeat for ``trial_id`` now (a trial about to start)."""
        self.study._storage.record_heartbeat(trial_id)

    def _run(self) -> None:
        while not self._stop.wait(heartbeat_s()):
            try:
                for trial_id in list(self.trial_ids()):
                    self.beat(trial_id)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # fail_stale_trials is "experimental"
                    optuna.storages.fail_stale_trials(self.study)
            except Exception as exc:  # noqa: BLE001 - the database may be away for a moment: beat again later
                warnings.warn(f"heartbeat: {exc!r}", stacklevel=1)

    def __enter__(self) -> Heartbeat:
        if enabled(self.study):
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
