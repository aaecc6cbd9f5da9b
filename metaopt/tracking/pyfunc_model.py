"""MLflow "model from code" for a metaopt checkpoint: no pickled Python objects in the store.

``predict`` takes ``{"support_x", "support_y", "query_x"}`` (nested lists or arrays of
one task) and returns the adapted model's predictions on ``query_x``. A policy (an RL
family's) takes ``{"history"}``, the observations of one task so far ``[t, obs]`` (or of
several, ``[tasks, t, obs]``), and returns the next action of each.
"""

from __future__ import annotations

from typing import Any

import mlflow
import torch
from mlflow.pyfunc import PythonModel


class MetaoptModel(PythonModel):
    """Adapts the meta-learned model to the given support set, then predicts the query points."""

    # predict takes a plain dict: no type-hint validation, and none of MLflow's warning that asks for hints (it
    # resets warning filters around that check, so a filter cannot silence it).
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        from metaopt.learners.checkpoint import load_checkpoint

        self.learner = load_checkpoint(context.artifacts["checkpoint"])

    # No type hints here: MLflow would try to derive a schema from them.
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        """Predictions of the model adapted to ``model_input``'s support set."""
        if self.learner.task_kind == "rl":
            history = torch.as_tensor(model_input["history"], dtype=torch.float32)
            return self.learner.act(history[None] if history.dim() == 2 else history).numpy()
        steps = (params or {}).get("steps")
        as_tensor = lambda key: torch.as_tensor(model_input[key], dtype=torch.float32)  # noqa: E731
        support_y = torch.as_tensor(model_input["support_y"])
        support_y = support_y.long() if self.learner.task_kind == "classification" else support_y.float()
        predictor = self.learner.adapt(as_tensor("support_x"), support_y, steps)
        return predictor(as_tensor("query_x")).numpy()


mlflow.models.set_model(MetaoptModel())
