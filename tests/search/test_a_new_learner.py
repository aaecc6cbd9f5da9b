"""A learner with no inner gradient loop, written in one file and added by one registry line, goes through a
search like every other: searched, scored on test tasks, selected, saved and loaded."""

from __future__ import annotations

from typing import Any

import torch
from mlflow.tracking import MlflowClient
from torch import Tensor, nn

import metaopt
from metaopt.learners import LEARNERS, HParam
from metaopt.learners.core import Params
from metaopt.learners.episodic import EPISODIC_HPARAMS, EpisodicLearner
from metaopt.tasks import Sine
from metaopt.tracking.champion import select_champion
from metaopt.tracking.models import load_learner
from tests.search.jobs import tiny_job


class SetEncoder(EpisodicLearner):
    """Deep sets for regression: the mean of encode(x, y) over the support set conditions decode on each query."""

    name = "set-encoder"
    task_kinds = ("regression",)
    hyperparameters = {**EPISODIC_HPARAMS, "width": HParam(type=int, default=32, minimum=1, help="hidden width")}

    @classmethod
    def build_network(cls, backbone: dict[str, Any], *, input_shape: tuple[int, ...], output_size: int,
                      hparams: dict[str, Any]) -> nn.Module:
        width, features = hparams["width"], input_shape[0]
        return nn.ModuleDict({
            "encode": nn.Sequential(nn.Linear(features + output_size, width), nn.ReLU(), nn.Linear(width, width)),
            "decode": nn.Sequential(nn.Linear(features + width, width), nn.ReLU(), nn.Linear(width, output_size)),
        })

    def episode_predictions(self, meta: Params, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                            n_way: int | None) -> Tensor:
        """decode(x, mean encode(support)) for every query ``[queries, outputs]``."""
        summary = self.call("encode", meta, torch.cat([support_x, support_y], -1)).mean(0)  # [width]
        return self.call("decode", meta, torch.cat([query_x, summary.expand(query_x.shape[0], -1)], -1))


def test_a_set_encoder_searches_scores_selects_saves_and_loads_like_every_learner(tmp_path):
    LEARNERS.register(SetEncoder)  # the one registry line (a plugin package names it in an entry point)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    try:
        job = tiny_job(methods=["set-encoder", "fomaml"], search_space=None,
                       space={"set-encoder": {"outer_lr": {"type": "float", "low": 0.001, "high": 0.01, "log": True},
                                              "width": {"type": "categorical", "choices": [16, 32]}}},
                       budget={"trials": 3, "meta_iterations": 300, "eval_interval": 100, "val_tasks": 20,
                               "test_tasks": 100},
                       enqueue=[{"method": "set-encoder", "outer_lr": 0.005, "width": 32}, {"method": "fomaml"}])
        summary = metaopt.run(job, in_process=True, tracking_uri=uri, workdir=tmp_path / "work", progress=False)
        row = next(r for r in summary.rows if r.method == "set-encoder")
        assert row.complete >= 1 and row.test_mean("loss") is not None and row.test_ci("loss") > 0

        selection = select_champion(summary.key, tracking_uri=uri)
        assert "set-encoder" in {c.method for c in selection.candidates}

        learner = load_learner(row.run_id, tracking_uri=uri)
        assert type(learner) is SetEncoder and learner.hparams["width"] in (16, 32)
        task = Sine(shots=5, queries=50).sample(200, "test", torch.Generator().manual_seed(7))
        trained = Sine().score_learner(learner, task)["loss"].mean()
        assert torch.isclose(trained, torch.tensor(row.test_mean("loss"), dtype=trained.dtype), rtol=0.3)
        untrained = SetEncoder(SetEncoder.build_network({}, input_shape=(1,), output_size=1, hparams=learner.hparams),
                               learner.hparams, task_kind="regression")
        assert trained < 0.9 * Sine().score_learner(untrained, task)["loss"].mean()  # meta-training helped
        assert learner.adapt(task.support_x[0], task.support_y[0])(task.query_x[0]).shape == (50, 1)
        run = MlflowClient(uri).get_run(row.run_id)
        assert run.data.tags["metaopt.method"] == "set-encoder" and run.info.status == "FINISHED"
    finally:
        LEARNERS.unregister("set-encoder")
