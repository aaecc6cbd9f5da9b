"""Search: job files, conditional spaces, strategies, the training loop, evaluation, selection, trial execution.

The stages of a search, one home each: ``config``/``job`` (the job, validated once),
``strategies`` (``STRATEGIES``), ``executors`` (in-process or Ray), ``fit`` (the one
training loop), ``evaluation`` (per-task scores on a key's fixed tasks), ``selection``
(the champion decision, a pure function), ``launch`` (preflight, data check, executor) and
the driver: ``runner`` on ``study`` (the Optuna study across drivers), ``loop`` (ask, run,
tell) and ``conclusion`` (scoring each method's best, the verdict, the champion decision).
"""

from __future__ import annotations

from metaopt.search.config import ConfigError, Job
from metaopt.search.job import LoadedJob, load_job
from metaopt.search.space import SearchSpace
from metaopt.search.strategies import STRATEGIES, Strategy

__all__ = ["STRATEGIES", "ConfigError", "Job", "LoadedJob", "SearchSpace", "Strategy", "load_job"]
