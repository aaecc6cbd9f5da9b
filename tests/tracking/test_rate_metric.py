"""A family's new rate metric is shown in percent everywhere a person reads it, from its ``Metric`` alone."""

from __future__ import annotations

import re

import torch
from mlflow.tracking import MlflowClient
from pydantic import PositiveInt

import metaopt
from metaopt.cli import main
from metaopt.tasks import FAMILIES
from metaopt.tasks.base import FamilyOptions, TaskBatch, TaskFamily
from metaopt.tasks.metrics import Metric, mse


def hit_rate(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Fraction of each task's queries predicted within 0.5 of the target ``[tasks]``."""
    return ((predictions - targets).abs() < 0.5).float().mean((1, 2))


class LinesOptions(FamilyOptions):
    shots: PositiveInt = 5


class HitLines(TaskFamily):
    """y = a x + b, scored by how many queries land near their target (a rate) and by MSE."""

    name = "hit-lines"
    kind = "regression"
    Options = LinesOptions
    metrics = (Metric("hit_rate", "maximize", "hit rate", hit_rate, percent=True),
               Metric("loss", "minimize", "MSE", mse))
    input_shape, output_size = (1,), 1

    def __init__(self, shots: int = 5) -> None:
        self.shots = shots

    def sample(self, batch_size, split, generator):  # noqa: ANN001, ANN201 - the TaskFamily signature
        ab = torch.rand(batch_size, 1, 2, generator=generator) * 2 - 1
        x = torch.rand(batch_size, 2 * self.shots, 1, generator=generator) * 2 - 1
        y = ab[..., :1] * x + ab[..., 1:]
        return TaskBatch(x[:, :self.shots], y[:, :self.shots], x[:, self.shots:], y[:, self.shots:])


def test_a_hit_rate_prints_in_percent_in_the_table_the_run_description_and_the_model_tags(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    job = {"name": "hits", "family": {"name": "hit-lines"}, "methods": ["fomaml"], "baselines": [],
           "budget": {"trials": 1, "meta_iterations": 40, "eval_interval": 20, "val_tasks": 20, "test_tasks": 100},
           "backbone": {"name": "mlp", "hidden": [16, 16]}}
    try:
        summary = metaopt.run(job, families=[HitLines], in_process=True, tracking_uri=uri,
                              workdir=tmp_path / "work", progress=False)
        rate = summary.rows[0].test_mean("hit_rate")
        assert 0 < rate < 1
        percent = re.compile(r"\d+\.\d\d ± \d+\.\d\d%")

        assert main(["leaderboard", summary.key, "--tracking-uri", uri]) == 0
        table = capsys.readouterr().out
        assert "test hit rate % ± CI" in table and "val hit rate %" in table
        assert f"{100 * rate:.2f} ± " in table

        client = MlflowClient(uri)
        note = client.get_run(summary.parent_run_id).data.tags["mlflow.note.content"]
        assert percent.search(note) and f"{100 * rate:.2f} ± " in note

        version = client.get_model_version_by_alias(f"metaopt-{summary.key}", "champion")
        assert percent.fullmatch(version.tags["metaopt.test_hit_rate"])
        assert percent.search(version.description)
    finally:
        FAMILIES.unregister("hit-lines")
