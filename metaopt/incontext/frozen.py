"""The frozen in-context model: context examples and queries in, predictions out; never updated.

One interface for every model whose context is what can be chosen: a model metaopt trained (any registered
learner, loaded from ``models:/metaopt-<key>@champion``, a run or a file) and, behind the same interface, a language
model over HTTP. ``predict`` takes one context per task; ``predict_each`` one context per query (what a selector
chooses), run as one batch of single-query tasks.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from metaopt.tasks.base import TaskBatch

if TYPE_CHECKING:  # the learners' package registers the selectors, which use this module
    from metaopt.learners.base import MetaLearner


class FrozenModel(ABC):
    """A model that learns in context; what it sees is all that changes."""

    @abstractmethod
    def predict(self, context_x: Tensor, context_y: Tensor, query_x: Tensor) -> Tensor:
        """Predictions ``[tasks, Q, ...]`` for ``query_x [tasks, Q, ...]`` given ``context_x, context_y [tasks, k, ...]``:
        targets for regression, logits (or log-probabilities) over the ways for classification."""

    def predict_each(self, context_x: Tensor, context_y: Tensor, query_x: Tensor) -> Tensor:
        """Each query with its own context: ``context_x, context_y [tasks, Q, k, ...]``, ``query_x [tasks, Q, ...]``
        → ``[tasks, Q, ...]``."""
        tasks, queries = query_x.shape[:2]
        out = self.predict(context_x.flatten(0, 1), context_y.flatten(0, 1), query_x.flatten(0, 1).unsqueeze(1))
        return out.squeeze(1).unflatten(0, (tasks, queries))


class TrainedModel(FrozenModel):
    """A learner metaopt trained, frozen: its predictions after reading the context (an in-context learner reads it
    in one forward pass; a gradient learner would adapt to it, and is frozen all the same)."""

    def __init__(self, learner: MetaLearner) -> None:
        self.learner = learner
        for tensor in learner.meta_parameters().values():
            tensor.requires_grad_(False)

    @classmethod
    def load(cls, uri: str) -> TrainedModel:
        """The model at ``uri`` (``models:/metaopt-<key>@champion``, a logged model, a run id or a file)."""
        from metaopt.tracking.models import load_learner

        return cls(load_learner(uri))

    def predict(self, context_x: Tensor, context_y: Tensor, query_x: Tensor) -> Tensor:
        """The learner's query predictions, each task's context as its support set."""
        unknown = context_y.new_zeros(query_x.shape[:2] + context_y.shape[2:])  # never read: the targets to predict
        device = self.learner.device
        batch = TaskBatch(context_x.to(device), context_y.to(device), query_x.to(device), unknown.to(device))
        with torch.no_grad():
            return self.learner.predict(batch).to(query_x.device)


def open_frozen(reference: str | None, checkpoint: dict | None = None) -> FrozenModel:
    """The frozen model a selector's ``frozen`` hyperparameter names: a trained model's ``checkpoint`` where one is
    kept (what a saved selector holds), else the model at ``reference`` (``models:/...``, a run id, a file), or a
    language model server (``reference`` a JSON object: ``url``, ``model``, ``family``... as the job's ``frozen``
    block writes it)."""
    if checkpoint is not None:
        from metaopt.learners.checkpoint import learner_from_checkpoint

        return TrainedModel(learner_from_checkpoint(checkpoint, f"the frozen model {reference or ''}".strip()))
    if not reference:
        raise ValueError("no frozen model to choose a context for: name one in the job's `frozen:` (a model "
                         "reference, or a language model server's url)")
    if reference.lstrip().startswith("{"):
        return server_model(json.loads(reference))
    return TrainedModel.load(reference)


def server_model(spec: dict[str, Any]) -> FrozenModel:
    """A language model over HTTP reading a text family's tasks (``spec``: the job's ``frozen`` block, with the
    family's name and options under ``family``)."""
    from metaopt.incontext.http_model import CompletionsClient, PromptTemplate, TextModel
    from metaopt.tasks import FAMILIES

    block = dict(spec["family"])
    family_class = FAMILIES[block.pop("name")]
    family = family_class.from_options(family_class.Options.model_validate(block))
    if not hasattr(family, "decode") or not hasattr(family, "label_names"):
        raise ValueError(f"frozen.url: a language model reads text, and {family_class.name} tasks are not text "
                         "(a text family: movie-genres)")
    client = CompletionsClient(spec["url"], spec["model"], api_key_env=spec.get("api_key_env"),
                               timeout=float(spec.get("timeout", 30.0)))
    template = PromptTemplate(**spec.get("template", {}))
    return TextModel(client, family.decode, family.label_names, template,
                     queries_per_request=int(spec.get("queries_per_request", 16)),
                     calibration=spec.get("calibration", "N/A"))
