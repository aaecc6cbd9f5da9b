"""The Python API: a search on a job given as a dict, on a family defined where it is called, on a real local Ray."""

from __future__ import annotations

import os

import pytest
import torch

import metaopt
from metaopt.search.config import ConfigError
from metaopt.tasks import FAMILIES


def test_a_notebook_family_runs_on_ray_workers_from_a_dict_job(ray_session, tmp_path):
    from pydantic import PositiveInt

    from metaopt.tasks.base import FamilyOptions, TaskBatch, TaskFamily
    from metaopt.tasks.metrics import REGRESSION

    # Defined here, as in a notebook cell: no module a Ray worker could import it from, so it travels by value.
    class SlopeOptions(FamilyOptions):
        shots: PositiveInt = 5

    class Slopes(TaskFamily):
        """y = a x, a ~ U[0.5, 1.5]."""

        name = "notebook-slopes"
        kind = "regression"
        Options = SlopeOptions
        metrics = REGRESSION
        input_shape = (1,)
        output_size = 1

        def __init__(self, shots: int = 5) -> None:
            self.shots = shots

        def sample(self, batch_size, split, generator):  # noqa: ANN001, ANN201 - the TaskFamily signature
            a = 0.5 + torch.rand(batch_size, 1, 1, generator=generator)
            x = torch.rand(batch_size, 2 * self.shots, 1, generator=generator) * 2 - 1
            return TaskBatch(x[:, :self.shots], a * x[:, :self.shots], x[:, self.shots:], a * x[:, self.shots:])

    job = {"name": "notebook", "family": {"name": "notebook-slopes", "shots": 5}, "methods": ["fomaml", "maml"],
           "budget": {"trials": 2, "meta_iterations": 40, "eval_interval": 20, "val_tasks": 20, "test_tasks": 100},
           "enqueue": [{"method": "fomaml"}, {"method": "maml"}], "resources": {"max_concurrent": 2}}
    try:
        summary = metaopt.run(job, families=[Slopes], tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                                 workdir=tmp_path / "work", progress=False)
    finally:
        FAMILIES.unregister("notebook-slopes")
    assert summary.key == "notebook-slopes-shots5"
    assert sorted(r.state for r in summary.results) == ["complete", "complete"]
    assert {r.method for r in summary.rows if r.test_mean("loss") is not None} == {"fomaml", "maml"}
    assert summary.decision is not None and summary.decision.moved
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("metaopt-notebook-slopes-shots5").experiment_id],
                              "tags.`metaopt.role` = 'trial'")
    pids = {run.data.tags["metaopt.debug.pid"] for run in runs}
    assert len(runs) == 2 and str(os.getpid()) not in pids  # trained in Ray's worker processes, not this one


def test_a_bad_dict_job_is_one_line():
    with pytest.raises(ConfigError, match=r"^<job>: family.name: unknown family 'nope' \(allowed: sine, "):
        metaopt.run({"name": "x", "family": "nope", "methods": ["maml"],
                        "budget": {"trials": 1, "meta_iterations": 1, "eval_interval": 1}}, progress=False)
