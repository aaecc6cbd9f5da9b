"""Search: job files, conditional spaces, Optuna strategies and trial execution (in-process or on Ray)."""

from __future__ import annotations

from metaopt.search.config import ConfigError, Job
from metaopt.search.job import LoadedJob, load_job
from metaopt.search.space import SearchSpace

__all__ = ["ConfigError", "Job", "LoadedJob", "SearchSpace", "load_job"]
