"""Learners with no inner gradient loop: a network reads a task's support set and predicts its queries.

Metric learners (ProtoNet, Matching and Relation Nets, Siamese) and model-based learners
(a set encoder, a neural process, an in-context transformer) are all this: a subclass
says how one episode's query predictions come from its support set
(``episode_predictions``, a pure function of the meta-parameters, so ``vmap`` can batch
it) and, where a paper says so, its training loss; everything else is shared here. The
outer loss is the family's task loss on the queries (cross-entropy, MSE, ...), stepped
by the learner's ``OuterStep`` (``outer_lr``, ``max_grad_norm``, ``outer_schedule``).
Adapting to a new task is one forward pass against its support set; ``ft_steps`` adds
task-aware fine-tuning at test: the support set predicted against itself, Adam on every
meta-parameter.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from metaopt.learners.base import POSITIVE_FLOAT, HParam, MetaLearner
from metaopt.learners.core import TASK_LOSSES, InnerLoop, Params, has_tied_tensors, run_with, task_by_task_gradient
from metaopt.learners.outer import OUTER_HPARAMS, OuterStep, Schedule
from metaopt.learners.transforms import Adam
from metaopt.models.layout import channels_last
from metaopt.tasks.base import TaskBatch, TaskKind

EPISODIC_HPARAMS: dict[str, HParam] = {
    **OUTER_HPARAMS,
    "meta_batch": HParam(type=int, default=4, minimum=1, help="episodes per meta-batch"),
    "ft_steps": HParam(type=int, default=0, minimum=0, help="task-aware fine-tuning: Adam steps on the support set "
                       "predicted against itself, at test only (0: none)"),
    "ft_lr": HParam(default=0.001, help="task-aware fine-tuning step size", **POSITIVE_FLOAT),
}


class EpisodicLearner(MetaLearner):
    """A learner that predicts an episode's queries from its support set in one forward pass."""

    hyperparameters: ClassVar[dict[str, HParam]] = EPISODIC_HPARAMS
    # A network that takes the whole meta-batch at once (a set or sequence model over ``[tasks, n, ...]``):
    # it defines ``batch_predictions`` itself, and a meta-step differentiates the batch in one graph.
    batched: ClassVar[bool] = False
    force_vmap: bool = False  # vmap over episodes on the CPU too (tests compare the two)

    def __init__(
        self,
        backbone: nn.Module,
        hparams: Mapping[str, Any] | None = None,
        *,
        task_kind: TaskKind,
        max_iterations: int | None = None,
        n_way: int | None = None,
    ) -> None:
        if task_kind not in self.task_kinds:
            raise ValueError(f"{self.name} learns {', '.join(self.task_kinds)} tasks; task kind {task_kind!r} is not "
                             "supported")
        super().__init__(backbone, hparams, task_kind=task_kind, max_iterations=max_iterations, n_way=n_way)
        self.params: Params = dict(backbone.named_parameters())
        self.extras: dict[str, nn.Parameter] = self.make_extras()
        self.buffers = dict(backbone.named_buffers())
        self.tied = has_tied_tensors(backbone)
        self.criterion = TASK_LOSSES[task_kind]

    # -- what a subclass says ---------------------------------------------------------
    @abstractmethod
    def episode_predictions(self, meta: Params, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                            n_way: int | None) -> Tensor:
        """Query predictions ``[queries, ...]`` of one episode from its support set (``n_way``: classes, if any)."""

    def make_extras(self) -> dict[str, nn.Parameter]:
        """Learned tensors besides the backbone's parameters (a relation module, a decoder)."""
        return {}

    def episode_loss(self, predictions: Tensor, query_y: Tensor) -> Tensor:
        """Training loss of query predictions ``[tasks, queries, ...]``: the task kind's loss over every query."""
        return self.criterion(predictions.flatten(0, 1), query_y.flatten(0, 1))

    def training_loss(self, meta: Params, batch: TaskBatch) -> Tensor:
        """The mean training loss of ``batch``'s episodes (``episode_loss`` of their predictions)."""
        return self.episode_loss(self.batch_predictions(meta, batch), batch.query_y)

    # -- shared machinery -------------------------------------------------------------
    def make_outer_step(self) -> OuterStep:
        """Adam over every meta-parameter at ``outer_lr``, clipped to ``max_grad_norm``, on ``outer_schedule``."""
        h = self.hparams
        return OuterStep(self.meta_parameters(), lr=h["outer_lr"], max_grad_norm=h["max_grad_norm"],
                         schedule=Schedule.of(h["outer_schedule"], self.max_iterations, h["min_outer_lr"]))

    def meta_parameters(self) -> dict[str, Tensor]:
        """The backbone's parameters and the extras."""
        return {**self.params, **self.extras}

    def embed(self, meta: Params, x: Tensor) -> Tensor:
        """The backbone's outputs ``[n, ...]`` on ``x [n, ...]`` with its parameters taken from ``meta``."""
        return run_with(self.backbone, {k: meta[k] for k in self.params}, self.buffers, x, tied=self.tied)

    def call(self, part: str, meta: Params, *args: Any, **kwargs: Any) -> Tensor:
        """The backbone's submodule ``part`` on ``args`` with its parameters taken from ``meta`` (a network of parts)."""
        module, prefix = self.backbone.get_submodule(part), f"{part}."
        params = {k.removeprefix(prefix): meta[k] for k in self.params if k.startswith(prefix)}
        buffers = {k.removeprefix(prefix): v for k, v in self.buffers.items() if k.startswith(prefix)}
        return functional_call(module, (params, buffers), args, kwargs)

    def _n_way(self, support_y: Tensor) -> int | None:
        if self.task_kind != "classification":
            return None
        return self.n_way if self.n_way is not None else int(support_y.max()) + 1

    def _loops(self, batch: TaskBatch) -> bool:
        """Episodes one at a time on the CPU, where a convolution is already as wide as the cores and ``vmap``'s
        batch-norm and max-pool rules add copies (1.2x-1.7x slower for Conv-4 here)."""
        return batch.support_x.device.type == "cpu" and not self.force_vmap and not self.batched

    def batch_predictions(self, meta: Params, batch: TaskBatch) -> Tensor:
        """Query predictions ``[tasks, queries, ...]`` of every episode: ``vmap`` on a GPU, a loop on the CPU
        (the two agree: ``tests/learners/test_metric_learners.py``)."""
        n_way = self._n_way(batch.support_y)
        if self._loops(batch):
            fast = channels_last(meta)  # 1.4-1.7x a Conv-4 episode on the CPU (metaopt/models/layout.py)
            return torch.stack([self.episode_predictions(fast, sx, sy, qx, n_way)
                                for sx, sy, qx in zip(batch.support_x, batch.support_y, batch.query_x)])
        predict = lambda sx, sy, qx: self.episode_predictions(meta, sx, sy, qx, n_way)  # noqa: E731
        return vmap(predict)(batch.support_x, batch.support_y, batch.query_x)

    def meta_step(self, batch: TaskBatch) -> dict[str, Tensor]:
        """One outer step on the mean training loss of the batch's episodes.

        Where the episodes run one after another (the CPU), each is differentiated on its own and
        the gradients summed (``task_by_task_gradient``): memory holds one episode's graph, at the
        same speed (ResNet-12: less than half the peak, ``benchmarks/image_throughput.py``).
        """
        meta = self.meta_parameters()
        if self._loops(batch) and batch.num_tasks > 1:
            grads, loss = task_by_task_gradient(lambda one: self.training_loss(meta, one), batch, meta)
            self.outer.step(grads=grads)
        else:
            loss = self.training_loss(meta, batch)
            self.outer.step(loss=loss)
        return {"loss": loss.detach()}

    def fine_tuned(self, support_x: Tensor, support_y: Tensor, n_way: int | None) -> Params:
        """The meta-parameters after task-aware fine-tuning on one support set (``ft_steps``; none: as meta-learned)."""
        meta = {k: v.detach() for k, v in self.meta_parameters().items()}
        steps = self.hparams.get("ft_steps") or 0
        if not steps:
            return meta

        def support_loss(params: Params, x: Tensor, y: Tensor) -> Tensor:
            return self.criterion(self.episode_predictions(params, x, y, x, n_way), y)

        inner = InnerLoop.repeat(self.hparams["ft_lr"], steps, first_order=True, transform=Adam())
        return inner.run(support_loss, meta, support_x, support_y)

    def predict(self, batch: TaskBatch, steps: int | None = None) -> Tensor:
        """Query predictions ``[tasks, queries, ...]`` of every episode (no inner loop: ``steps`` is ignored)."""
        if self.hparams.get("ft_steps"):  # each episode fine-tuned on its own support set
            return torch.stack([self.adapt(sx, sy)(qx) for sx, sy, qx in
                                zip(batch.support_x, batch.support_y, batch.query_x)])
        with torch.no_grad():
            return self.batch_predictions(self.meta_parameters(), batch)

    def adapt(self, support_x: Tensor, support_y: Tensor, steps: int | None = None) -> Callable[[Tensor], Tensor]:
        """A predictor of query predictions against this support set."""
        device = self.device
        support_x, support_y = support_x.to(device), support_y.to(device)
        n_way = self._n_way(support_y)
        meta = channels_last(self.fine_tuned(support_x, support_y, n_way))

        def predict(query_x: Tensor) -> Tensor:
            with torch.no_grad():
                return self.episode_predictions(meta, support_x, support_y, query_x.to(device), n_way)

        return predict
