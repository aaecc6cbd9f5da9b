"""Tiny job files for search tests."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
GOOD = {"method": "maml", "inner_lr": 0.01, "outer_lr": 0.003, "inner_steps": 1, "inner_optimizer": "sgd", "meta_batch": 10}


def tiny_job(**overrides) -> dict:
    """A search that takes seconds: few trials, 20 meta-iterations, small val/test sets."""
    job = {
        "name": "tiny",
        "family": {"name": "sine", "shots": 5, "queries": 5},
        "methods": ["maml", "fomaml", "reptile"],
        "search_space": str(REPO / "search_spaces" / "sine.yaml"),
        "budget": {"trials": 3, "meta_iterations": 20, "eval_interval": 10, "val_tasks": 20, "test_tasks": 50},
        "pruner": {"type": "none"},
        "backbone": {"name": "mlp", "hidden": [16, 16]},
        "seed": 0,
        "baselines": [],  # the transfer baselines' own tests ask for them
    }
    job.update(overrides)
    return job


def write_job(directory: Path, job: dict, name: str = "job.yaml") -> Path:
    """Write ``job`` as YAML and return its path."""
    path = directory / name
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def search_in(folder: Path, job: dict, name: str = "job.yaml"):
    """Run ``job`` (written to ``folder/name``) in this process, recorded in the sqlite store ``folder/mlflow.db``
    (a test copies ``empty_store`` there first), its journal under ``folder/work``; its ``SearchSummary``."""
    from metaopt.search import load_job
    from metaopt.search.executors import InProcessExecutor
    from metaopt.search.runner import run_search
    from metaopt.tracking import MlflowSearchTracker

    return run_search(load_job(write_job(folder, job, name)), executor=InProcessExecutor(),
                      tracker=MlflowSearchTracker(f"sqlite:///{folder / 'mlflow.db'}"), workdir=folder / "work")
