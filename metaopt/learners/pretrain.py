"""``pretrain``: transfer learning, the baseline a meta-learner must beat (Chen et al. 2019, Baseline and Baseline++).

One network is trained as an ordinary model on examples pooled over every training task
(classification: every training class, one head over them all; regression: the pooled
points), then fine-tuned on each new task's support set: ``fine_tune: head`` trains a fresh
task head on the frozen features, ``all`` trains everything; ``head: cosine`` makes that head a
cosine classifier (Baseline++) instead of a linear one. Fine-tuning is ``adapt_steps`` steps of
``adapt_optimizer`` at ``adapt_lr``, every task at once, through the functional core's inner loop.
The network is the job's backbone as an embedding (its body) under a head of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaopt.learners.base import POSITIVE_FLOAT, HParam
from metaopt.learners.core import (
    TASK_LOSSES,
    InnerLoop,
    Params,
    Step,
    adapt_batch,
    batched_forward,
    detach,
    make_loss,
)
from metaopt.learners.gradient import AdaptedModel, GradientLearner
from metaopt.learners.outer import OUTER_HPARAMS
from metaopt.learners.transforms import INNER_OPTIMIZERS, GradientTransform
from metaopt.tasks.base import PooledBatch, TaskBatch

COSINE_SCALE = 10.0  # Baseline++'s temperature: cosine similarities in [-1, 1] times this are the logits


class CosineHead(nn.Module):
    """Logits ``scale * cos(feature, w_c)`` for each class ``c`` (Baseline++)."""

    def __init__(self, features: int, outputs: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(outputs, features) * features**-0.5)

    def forward(self, x: Tensor) -> Tensor:
        """Scaled cosine similarities ``[n, outputs]``."""
        return COSINE_SCALE * F.normalize(x, dim=-1) @ F.normalize(self.weight, dim=-1).T


def make_head(kind: str, features: int, outputs: int) -> nn.Module:
    """A linear or cosine head of ``outputs`` over ``features``."""
    return CosineHead(features, outputs) if kind == "cosine" else nn.Linear(features, outputs)


class BodyAndHead(nn.Module):
    """The backbone as an embedding network (``body``) under a task head (``head``)."""

    def __init__(self, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.body, self.head = body, head

    def forward(self, x: Tensor) -> Tensor:
        """The head's outputs on the body's features."""
        return self.head(self.body(x))


class Pretrain(GradientLearner):
    """Pre-train one network on the pooled training tasks; fine-tune the head (or all of it) on each task."""

    name: ClassVar[str] = "pretrain"
    samples: ClassVar[str] = "pooled"
    baseline: ClassVar[bool] = True
    compilable: ClassVar[bool] = False
    hyperparameters: ClassVar[dict[str, HParam]] = {
        **OUTER_HPARAMS,
        "outer_lr": HParam(default=0.001, help="Adam learning rate of pre-training", **POSITIVE_FLOAT),
        "meta_batch": HParam(type=int, default=64, minimum=1, help="pooled examples per pre-training step"),
        "fine_tune": HParam(type=str, default="head", choices=("head", "all"), help="what fine-tuning trains"),
        "head": HParam(type=str, default="linear", choices=("linear", "cosine"), help="the task head (cosine: Baseline++)"),
        "adapt_lr": HParam(default=0.01, help="fine-tuning step size", **POSITIVE_FLOAT),
        "adapt_steps": HParam(type=int, default=100, minimum=0,
                             help="fine-tuning steps on the support set (0: the pooled network as it is)"),
        "adapt_optimizer": HParam(type=str, default="adam", choices=tuple(INNER_OPTIMIZERS), help="fine-tuning optimizer"),
    }

    def __init__(self, backbone: nn.Module, hparams: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.pooled_head: nn.Module | None = None  # over every training class, made on the first pooled batch
        super().__init__(backbone, hparams, **kwargs)
        self.criterion = TASK_LOSSES[self.task_kind]

    @classmethod
    def build_network(cls, backbone: dict[str, Any], *, input_shape: tuple[int, ...], output_size: int,
                      hparams: dict[str, Any]) -> nn.Module:
        """The backbone as an embedding network under a linear or cosine head of ``output_size``."""
        from metaopt.models import build_backbone

        body = build_backbone(backbone, input_shape=tuple(input_shape), out_features=None)
        if backbone.get("name", "mlp") == "mlp":  # an embedding MLP ends in a linear layer: features after its ReLU
            body = nn.Sequential(body, nn.ReLU())
        with torch.no_grad():
            features = body(torch.zeros(2, *input_shape)).shape[-1]
        return BodyAndHead(body, make_head(hparams["head"], features, output_size))

    def meta_parameters(self) -> dict[str, Tensor]:
        """The network's parameters and, once made, the pooled head's."""
        pooled = {} if self.pooled_head is None else {f"pooled_head.{k}": v
                                                       for k, v in self.pooled_head.named_parameters()}
        return {**self.params, **self.extras, **pooled}

    def _make_pooled_head(self, classes: int) -> None:
        outer = self.outer  # made over the network first: the head joins it as a group of its own
        features = self.backbone.head.weight.shape[1]
        self.pooled_head = make_head(self.hparams["head"], features, classes).to(self.device)
        outer.add({f"pooled_head.{k}": v for k, v in self.pooled_head.named_parameters()})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """As for every learner; a pooled head in the state is made first, so the optimizer's state fits."""
        weight = state["meta_parameters"].get("pooled_head.weight")
        if weight is not None and self.pooled_head is None:
            self._make_pooled_head(weight.shape[0])
        super().load_state_dict(state)

    def meta_step(self, batch: PooledBatch) -> dict[str, Tensor]:  # type: ignore[override]
        """One supervised step on pooled examples (a fresh head over every training class, for N-way episodes)."""
        if batch.classes is not None and self.pooled_head is None:
            self._make_pooled_head(batch.classes)
        features = self.backbone.body(batch.x)
        head = self.backbone.head if batch.classes is None else self.pooled_head
        loss = self.criterion(head(features), batch.y)
        self.outer.step(loss=loss)
        return {"loss": loss.detach()}

    # -- fine-tuning on a task: the inner loop of the shared core --------------------
    def adapted_names(self) -> frozenset[str] | None:
        """The head's parameters (``fine_tune: head``), or every parameter."""
        if self.hparams["fine_tune"] == "all":
            return None
        return frozenset(name for name in self.params if name.startswith("head."))

    def steps(self, steps: int | None = None) -> int:
        """Fine-tuning steps: ``steps`` if given, else ``adapt_steps``."""
        return self.hparams["adapt_steps"] if steps is None else steps

    test_steps = steps

    def inner_schedule(self, meta: Params, steps: int | None = None) -> Sequence[Step]:
        """``adapt_lr`` at every step."""
        return [Step(self.hparams["adapt_lr"])] * self.steps(steps)

    def inner_transform(self, meta: Params) -> GradientTransform:
        """Fine-tuning's ``adapt_optimizer``."""
        return INNER_OPTIMIZERS[self.hparams["adapt_optimizer"]]()

    # With the body frozen, its features are computed once per task, not at every fine-tuning step.
    def _head_only(self, steps: int | None) -> tuple[Params, InnerLoop]:
        head = {k.removeprefix("head."): v.detach() for k, v in self.params.items() if k.startswith("head.")}
        inner = InnerLoop(steps=self.inner_schedule({}, self.test_steps(steps)), first_order=True,
                          transform=self.inner_transform({}))
        return head, inner

    def predict(self, batch: TaskBatch, steps: int | None = None) -> Tensor:
        """Query predictions after fine-tuning on each support set (the head alone: on features computed once)."""
        if self.hparams["fine_tune"] == "all":
            return super().predict(batch, steps)
        with torch.no_grad():
            support = torch.stack([self.backbone.body(x) for x in batch.support_x])
            query = torch.stack([self.backbone.body(x) for x in batch.query_x])
            head, inner = self._head_only(steps)
            adapted = adapt_batch(make_loss(self.backbone.head, self.task_kind), head, support, batch.support_y, inner)
            return batched_forward(self.backbone.head, adapted, query)

    def adapt(self, support_x: Tensor, support_y: Tensor, steps: int | None = None) -> AdaptedModel:
        """The network with its head fine-tuned on one support set (or every layer, ``fine_tune: all``)."""
        if self.hparams["fine_tune"] == "all":
            return super().adapt(support_x, support_y, steps)
        with torch.no_grad():
            features = self.backbone.body(support_x.to(self.device))
            head, inner = self._head_only(steps)
            adapted = inner.run(make_loss(self.backbone.head, self.task_kind), head, features, support_y.to(self.device))
        return AdaptedModel(self.backbone, {**detach(self.params), **{f"head.{k}": v for k, v in adapted.items()}})
