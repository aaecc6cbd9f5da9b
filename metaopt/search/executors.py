"""Where trial functions run: in this process (unit tests) or as Ray tasks (real searches).

The trial function knows nothing of Ray; an executor only submits ``fn(*args)`` and
hands back finished results (or the exception that ended them).
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaopt.environment import WORKER_ENV, ray_on_loopback, verbose
from metaopt.search.interruption import children_ignore_sigint



@dataclass
class Done:
    """A finished submission: its value, or the error that ended it."""

    handle: Any
    value: Any = None
    error: BaseException | None = None


class Executor(ABC):
    """Runs submitted functions, at most ``slots`` at a time."""

    slots: int

    @abstractmethod
    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Start ``fn(*args)``; returns a handle."""

    @abstractmethod
    def wait(self, handles: list[Any], timeout: float | None = None) -> list[Done]:
        """Block until at least one of ``handles`` is finished (or ``timeout`` seconds pass); return the finished ones."""

    def cancel(self, handles: list[Any]) -> None:
        """Stop what ``handles`` run (nothing to stop once they are finished)."""

    def close(self) -> None:
        """Release what the executor started."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcessExecutor(Executor):
    """Runs each function immediately in this process, one at a time."""

    slots = 1

    def __init__(self) -> None:
        self._done: dict[int, Done] = {}
        self._next = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> int:
        """Run ``fn(*args)`` now."""
        handle, self._next = self._next, self._next + 1
        try:
            self._done[handle] = Done(handle, value=fn(*args))
        except Exception as exc:  # noqa: BLE001 - handed back to the driver, which records it
            self._done[handle] = Done(handle, error=exc)
        return handle

    def wait(self, handles: list[Any], timeout: float | None = None) -> list[Done]:
        """Every handle is already finished."""
        return [self._done.pop(h) for h in handles]


class RayExecutor(Executor):
    """Runs each function as a Ray task with ``cpus_per_trial`` CPUs.

    Connects to ``address`` (a cluster) or starts a local Ray with ``num_cpus``;
    reuses a Ray session that is already initialised (and then leaves it running).
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
        cpus_per_trial: int = 1,
        gpus_per_trial: float = 0.0,
        max_concurrent: int | None = None,
        max_retries: int = 0,
    ) -> None:
        if address and "RAY_AUTH_MODE" not in os.environ and _auth_token_available():
            os.environ["RAY_AUTH_MODE"] = "token"  # `ray start` clusters (Ray >= 2.60) expect it; read at import
        import ray

        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            os.environ.update(WORKER_ENV)
            # Workers' own output (MLflow's INFO lines, Ray's notes) only with -v: each trial is one line of ours.
            kwargs: dict[str, Any] = {"runtime_env": {"env_vars": WORKER_ENV}, "log_to_driver": verbose(),
                                      "logging_level": logging.INFO if verbose() else logging.ERROR}
            if address:
                try:
                    ray.init(address=address, **kwargs)
                except Exception as exc:
                    if "InvalidAuthToken" in f"{exc} {exc.__cause__}":
                        raise ConnectionError(
                            f"the Ray cluster at {address} uses token authentication: put its token in "
                            "~/.ray/auth_token (or set RAY_AUTH_TOKEN) and retry"
                        ) from None
                    raise
            else:
                # "local": a new Ray of our own, never a cluster a stale /tmp/ray/ray_current_cluster names. Its
                # processes share our process group: they ignore SIGINT, so Ctrl-C reaches only the driver,
                # which then cancels its trials and shuts Ray down.
                with children_ignore_sigint(), ray_on_loopback():
                    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, **kwargs)
        resources = ray.cluster_resources()
        total = int(resources.get("CPU", 1)) // cpus_per_trial or 1
        if gpus_per_trial > 0:
            gpus = resources.get("GPU", 0)
            if gpus < gpus_per_trial:
                raise RuntimeError(f"resources.gpus_per_trial is {gpus_per_trial} but the Ray cluster has {gpus:g} GPUs")
            total = min(total, int(gpus / gpus_per_trial + 1e-9))
        self.cpus_per_trial, self.gpus_per_trial, self.max_retries = cpus_per_trial, gpus_per_trial, max_retries
        self.slots = max(1, min(max_concurrent or total, total))
        self._remote: dict[Callable[..., Any], Any] = {}

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn.remote(*args)`` with this executor's CPUs (and GPUs) per task.

        A task whose worker process or node dies is rerun up to ``max_retries`` times
        (Ray's system-failure retries; an exception inside the trial is never retried):
        the trial resumes from its last checkpoint, under the same number and record.
        """
        if fn not in self._remote:
            self._remote[fn] = self._ray.remote(
                num_cpus=self.cpus_per_trial, num_gpus=self.gpus_per_trial, max_retries=self.max_retries
            )(fn)
        return self._remote[fn].remote(*args)

    def wait(self, handles: list[Any], timeout: float | None = None) -> list[Done]:
        """Wait for the first finished Ray task(s), at most ``timeout`` seconds."""
        ready, _ = self._ray.wait(handles, num_returns=1, timeout=timeout)
        done = []
        for ref in ready:
            try:
                done.append(Done(ref, value=self._ray.get(ref)))
            except Exception as exc:  # noqa: BLE001 - a crashed worker ends its trial, not the search
                done.append(Done(ref, error=exc))
        return done

    def cancel(self, handles: list[Any]) -> None:
        """Kill the worker processes of unfinished tasks (no retry); a Ray that is already gone is left alone."""
        for ref in handles:
            try:
                self._ray.cancel(ref, force=True, recursive=True)
            except Exception:  # noqa: BLE001 - finished, or Ray already down: nothing left to stop
                pass

    def close(self) -> None:
        """Shut Ray down if this executor started it."""
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()


def _auth_token_available() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return True
    return (Path.home() / ".ray" / "auth_token").is_file()
