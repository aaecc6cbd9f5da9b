"""metaopt from Python (a notebook, a script): run a search on a job given as a dict or a file.

    >>> import metaopt
    >>> summary = metaopt.run({"name": "mine", "family": {"name": "sine"}, "methods": ["maml"],
    ...                        "budget": {"trials": 4, "meta_iterations": 500, "eval_interval": 100}})
    >>> summary.decision.reason

A family or learner class defined in the notebook is passed as ``families=[...]`` /
``learners=[...]`` (or registered with ``register_family`` / ``register_learner``) and is
then named in the job like a built-in one. On Ray the job carries those classes to the
workers; a class defined in the notebook itself travels by value, one imported from a
module of the user's needs that module on the workers (Ray's ``runtime_env``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metaopt.learners.base import MetaLearner
    from metaopt.search.results import SearchSummary
    from metaopt.tasks.base import TaskFamily


def register_family(cls: type[TaskFamily], name: str | None = None) -> type[TaskFamily]:
    """Make a ``TaskFamily`` subclass usable in jobs under ``name`` (default: its ``name``); a decorator too."""
    from metaopt.tasks import FAMILIES

    return FAMILIES.register(cls, name)


def register_learner(cls: type[MetaLearner], name: str | None = None) -> type[MetaLearner]:
    """Make a ``MetaLearner`` subclass usable as a job's method under ``name`` (default: its ``name``)."""
    from metaopt.learners import LEARNERS

    return LEARNERS.register(cls, name)


def run(
    job: Mapping[str, Any] | str | Path,
    *,
    families: Iterable[type[TaskFamily]] = (),
    learners: Iterable[type[MetaLearner]] = (),
    in_process: bool = False,
    address: str | None = None,
    tracking_uri: str | None = None,
    workdir: str | Path = ".metaopt",
    storage: str | None = None,
    progress: bool = True,
) -> SearchSummary:
    """Run a whole search, as ``metaopt search`` does, and return its summary (leaderboard rows, decision).

    ``job``: a job file, or its content as a dict (a ``search_space`` path in it is relative to
    the working directory). Problems with the job, its data or an address raise ``ValueError``
    with the one line the command would print.
    """
    import warnings

    from metaopt.search.job import load_job, load_job_data
    from metaopt.search.launch import Launch
    from metaopt.tasks.base import DataWarning

    for cls in families:
        register_family(cls)
    for cls in learners:
        register_learner(cls)
    loaded = load_job(job) if isinstance(job, (str, Path)) else load_job_data(dict(job), Path("<job>"))
    launch = Launch(tracking_uri=tracking_uri, storage=storage, address=address, in_process=in_process,
                    workdir=workdir)
    for warning in launch.check(loaded):
        warnings.warn(warning, DataWarning, stacklevel=2)
    reporter = None
    if progress:
        from metaopt.console import SearchProgress

        reporter = SearchProgress()
    return launch.start(loaded, progress=reporter)
