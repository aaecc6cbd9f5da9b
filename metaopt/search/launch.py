"""Starting a search, the same from the command line and from Python: preflight, data check, executor, driver.

``Launch`` says where a search runs and records; ``Launch.check`` fails fast, in one line,
on an address, URI or folder that does not answer and on data that cannot make a task
(``check_family`` builds the job's task family once in the driver before anything starts:
what was left out of it is said once, ``DataWarning``, and the trials find it cached);
``Launch.start`` runs the search (or resumes it) on the executor the job asks for.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaopt.search.config import ConfigError, Job
from metaopt.search.executors import Executor
from metaopt.search.interruption import StopRequest
from metaopt.search.job import LoadedJob
from metaopt.search.results import SearchSummary
from metaopt.tasks.base import DataWarning


@dataclass(frozen=True)
class Launch:
    """Where a search runs and records: the MLflow store, the Optuna storage, the Ray cluster, the work folder."""

    tracking_uri: str | None = None
    storage: str | None = None
    address: str | None = None
    in_process: bool = False
    workdir: str | Path = ".metaopt"

    def check(self, loaded: LoadedJob | None = None, *, resuming: bool = False) -> list[str]:
        """Fail fast (``ConfigError``, one line) where an address, URI or folder does not answer, or ``loaded``'s
        data cannot make a task; what the data left out, as warnings."""
        from metaopt.preflight import Fault, Problem, machine_resources

        if loaded is not None:  # what the job asks of this machine, before anything is made
            resources = loaded.job.resources
            try:
                machine_resources(resources.cpus_per_trial, resources.gpus_per_trial, local=self.address is None,
                                  precision=loaded.job.precision)
            except Problem as exc:
                raise ConfigError(f"{loaded.path}: {exc}") from None
        problem = preflight(tracking_uri=self.tracking_uri, storage=self.storage, address=self.address,
                            in_process=self.in_process, workdir=self.workdir, workdir_exists=resuming)
        if problem is not None:
            raise (EnvironmentFault if isinstance(problem, Fault) else ConfigError)(str(problem))
        if loaded is None:
            return []
        warned = check_family(loaded)
        check_frozen(loaded, self.tracking_uri)
        return warned

    def start(self, loaded: LoadedJob, *, tracker: Any = None, progress: Callable[[str, dict[str, Any]], None] | None
              = None, search_id: str | None = None, resume: bool = False,
              stopping: Callable[[], AbstractContextManager[StopRequest]] | None = None) -> SearchSummary:
        """Run the search of ``loaded`` (``resume``: continue ``search_id``) on the executor its job asks for.

        ``stopping``: a context that turns signals into a stop request, entered once the executor
        is up (Ray's core installs signal handlers of its own when it starts).
        """
        from metaopt.search.runner import resume_search, run_search
        from metaopt.tracking import MlflowSearchTracker

        tracker = tracker or MlflowSearchTracker(self.tracking_uri)
        with make_executor(loaded.job, in_process=self.in_process, address=self.address) as executor, \
                (stopping or (lambda: nullcontext(StopRequest())))() as stop:
            where = dict(executor=executor, tracker=tracker, workdir=self.workdir, storage=self.storage,
                         progress=progress, stop=stop)
            if resume:
                return resume_search(search_id, **where)
            return run_search(loaded, search_id=search_id, **where)


def check_family(loaded: LoadedJob) -> list[str]:
    """Build the job's family once; what its data left out (warnings); ``ConfigError`` where it cannot be built."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        try:
            loaded.job.family.build()
        except (ValueError, FileNotFoundError, OSError) as exc:
            raise ConfigError(f"{loaded.path}: family: {exc}") from None
    return [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


def check_frozen(loaded: LoadedJob, tracking_uri: str | None) -> None:
    """Read the job's trained frozen model once (it travels with the job to the trials) and check that it reads the
    family's tasks; ``ConfigError`` in one line where it is not there or does not fit."""
    job = loaded.job
    try:
        checkpoint = job.frozen_checkpoint(tracking_uri)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise ConfigError(f"{loaded.path}: frozen.model: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - MLflow's errors for a model, alias or run the store does not have
        raise ConfigError(f"{loaded.path}: frozen.model: {job.frozen.model}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:300]}") from None
    if job.frozen is not None and job.frozen.url is not None:
        from metaopt.incontext.http_model import CompletionsClient, EndpointError
        from metaopt.preflight import connect_timeout

        try:
            CompletionsClient(job.frozen.url, job.frozen.model, api_key_env=job.frozen.api_key_env,
                              timeout=min(job.frozen.timeout, connect_timeout())).check()
        except EndpointError as exc:
            raise ConfigError(f"{loaded.path}: frozen.url: {exc}") from None
    if checkpoint is None:
        return
    family = job.family.build()
    shape, kind = tuple(checkpoint.get("input_shape", ())), checkpoint.get("task_kind")
    if shape != tuple(family.input_shape) or kind != family.kind:
        raise ConfigError(f"{loaded.path}: frozen.model: {job.frozen.model} reads {kind} tasks of inputs {list(shape)}; "
                          f"family {job.family.name}'s are {family.kind} of {list(family.input_shape)}")


class EnvironmentFault(ConfigError):
    """The environment, not the input, stops a search before it starts (a damaged store, a full disk): exit code 1."""


def preflight(*, tracking_uri: str | None, storage: str | None, address: str | None, in_process: bool,
              workdir: str | Path, workdir_exists: bool) -> Exception | None:
    """Why the search cannot start (a ``Problem``: ``str()`` is one line; a ``Fault`` where the environment broke),
    None when every address, URI and folder answers.

    Checked before anything starts: the tracking store, the Optuna database, the Ray
    cluster and the work folder (``workdir_exists``: a resumed search's folder must be there).
    """
    from metaopt.preflight import Problem, optuna_storage, ray_address, writable_folder
    from metaopt.search.storage import JOURNAL, readable_storage
    from metaopt.tracking.store import check_tracking_uri

    try:
        check_tracking_uri(tracking_uri, create=False, exists=False)  # answers, or is a sound store if there
        optuna_storage(storage)
        if not in_process:
            ray_address(address)
        folder = writable_folder(workdir, "--workdir", create=not (workdir_exists and not storage))
        journal = folder / JOURNAL
        if not storage and journal.is_file():  # a search appends to it: it must read back
            readable_storage(str(journal.resolve()))
        check_tracking_uri(tracking_uri, create=True)  # last: a new store is made only when all else answers
    except Problem as exc:
        return exc
    except ValueError as exc:
        return Problem(f"--workdir {workdir}: {exc}")
    return None


def make_executor(job: Job, *, in_process: bool, address: str | None) -> Executor:
    """Trials in this process, or on Ray: a local cluster sized to the job, or the cluster at ``address``."""
    from metaopt.search.executors import InProcessExecutor, RayExecutor

    if in_process:
        return InProcessExecutor()
    workers = job.resources.max_concurrent or os.cpu_count() or 1
    return RayExecutor(
        address=address,
        num_cpus=None if address else workers * job.resources.cpus_per_trial,
        num_gpus=None if address else _local_gpus(job),
        cpus_per_trial=job.resources.cpus_per_trial,
        gpus_per_trial=job.resources.gpus_per_trial,
        max_concurrent=job.resources.max_concurrent,
        max_retries=job.resources.max_retries,
    )


def _local_gpus(job: Job) -> int | None:
    if job.resources.gpus_per_trial <= 0:
        return 0
    import torch

    return torch.cuda.device_count()
