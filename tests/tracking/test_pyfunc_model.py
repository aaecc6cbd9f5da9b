"""The MLflow model a finished trial logs: loads with mlflow.pyfunc and adapts to the given support set."""

from __future__ import annotations

import warnings

import mlflow
import torch
from mlflow.tracking import MlflowClient

from metaopt.learners.checkpoint import build_learner, make_checkpoint, save_checkpoint
from metaopt.tasks.sine import Sine
from metaopt.tracking.mlflow_tracker import MlflowTrialLog
from metaopt.tracking.store import get_or_create_experiment


def test_logged_model_loads_with_pyfunc_and_predicts_like_the_learner(tmp_path):
    torch.manual_seed(0)
    backbone = {"name": "mlp", "hidden": [16, 16]}
    learner = build_learner("maml", {"inner_lr": 0.01}, backbone=backbone, task_kind="regression",
                            input_shape=(1,), output_size=1)
    path = save_checkpoint(make_checkpoint(learner, backbone=backbone, input_shape=(1,), output_size=1),
                           tmp_path / "trial.pt")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment = get_or_create_experiment(MlflowClient(), "pyfunc")  # artifacts under tmp_path, as searches do
        with mlflow.start_run(experiment_id=experiment) as run, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            MlflowTrialLog(run.info.run_id).log_model(path, full=True)
        model_uri = MlflowClient().get_run(run.info.run_id).data.tags["metaopt.model_uri"]
        model = mlflow.pyfunc.load_model(model_uri)
    finally:
        mlflow.set_tracking_uri(previous)
    assert (tmp_path / "mlartifacts").is_dir()
    assert not [w for w in caught if "type hint" in str(w.message).lower()]
    task = Sine(shots=5, queries=20).sample(1, "test", torch.Generator().manual_seed(1))
    data = {"support_x": task.support_x[0].tolist(), "support_y": task.support_y[0].tolist(),
            "query_x": task.query_x[0].tolist()}
    predicted = model.predict(data, params={"steps": 2})
    expected = learner.adapt(task.support_x[0], task.support_y[0], 2)(task.query_x[0])
    assert predicted.shape == (20, 1)
    assert torch.allclose(torch.as_tensor(predicted), expected, atol=1e-5)
