"""The outer step, in one home: every learner that trains updates its meta-parameters here.

One update is: clear the gradients, backpropagate a loss (or take gradients already
computed), clip them to ``max_grad_norm``, let an optional ``OuterTransform`` act
(Adam-HD moves the learning rate from the gradients it sees), step the optimizer.
``advance`` then steps the learning-rate schedule and counts the meta-iteration;
``step`` is both. The optimizer's, the schedule's, the transform's state and the
iteration count travel in ``state_dict``. A learner with nothing to train has an
``OuterStep`` with no optimizer at all: it only counts iterations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from metaopt.learners.base import POSITIVE_FLOAT, HParam

ScheduleKind = Literal["constant", "cosine", "linear"]
SCHEDULES: tuple[str, ...] = ("constant", "cosine", "linear")
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}

# The outer step's settings, shared by every learner that trains (a learner may change a default).
OUTER_HPARAMS: dict[str, HParam] = {
    "outer_lr": HParam(default=0.001, help="outer (meta) optimizer learning rate", **POSITIVE_FLOAT),
    "max_grad_norm": HParam(default=math.inf, help="clip the meta-gradient to this norm (inf: no clipping)",
                            **POSITIVE_FLOAT),
    "outer_schedule": HParam(type=str, default="constant", choices=SCHEDULES,
                             help="outer learning-rate schedule over the budget (cosine: down to min_outer_lr; "
                                  "linear: down to 0)"),
    "min_outer_lr": HParam(default=1e-5, help="floor of the cosine outer schedule", **POSITIVE_FLOAT),
}


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule over ``total`` meta-iterations: cosine down to ``floor``, or linear down to 0."""

    kind: ScheduleKind
    total: int
    floor: float = 0.0

    def make(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        """The torch scheduler of ``optimizer``, stepped once per meta-iteration."""
        if self.kind == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.total, eta_min=self.floor)
        total = self.total
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: max(0.0, 1 - it / total))

    @classmethod
    def of(cls, kind: str, total: int | None, floor: float = 0.0) -> Schedule | None:
        """The schedule ``kind`` over ``total`` iterations; None when constant or without a budget."""
        if kind == "constant" or not total:
            return None
        if kind not in SCHEDULES:
            raise ValueError(f"outer_schedule must be one of {', '.join(SCHEDULES)}, got {kind!r}")
        return cls(kind, int(total), floor)  # type: ignore[arg-type]


class OuterTransform(Protocol):
    """Something that acts around the optimizer step with the clipped gradients in ``.grad`` (Adam-HD)."""

    def before_step(self, outer: OuterStep) -> None:
        """Called after clipping, before the optimizer steps."""

    def after_step(self, outer: OuterStep) -> None:
        """Called right after the optimizer stepped."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to act as this one would have."""

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict``'s values."""


class OuterStep:
    """The optimizer of a learner's meta-parameters, with clipping, a schedule, a transform and the iteration count.

    Example:
        >>> outer = OuterStep(learner.meta_parameters(), lr=1e-3, max_grad_norm=10.0)
        >>> outer.step(loss=meta_loss)            # zero-grad, backward, clip, step, schedule, count
        >>> outer.step(grads=meta_gradients)      # the same with gradients already computed
    """

    def __init__(
        self,
        params: Mapping[str, Tensor] | None,
        *,
        lr: float | Tensor = 1e-3,
        optimizer: str = "adam",
        max_grad_norm: float = math.inf,
        schedule: Schedule | None = None,
        transform: OuterTransform | None = None,
        groups: Sequence[Mapping[str, Any]] | None = None,
        **options: Any,
    ) -> None:
        """``params`` by name (None: nothing to train, no optimizer); ``groups``: parameter groups by name
        (``{"names": [...], "lr": ...}``), default one group of every parameter at ``lr``."""
        self.params: dict[str, Tensor] = dict(params or {})
        self.schedule = schedule
        self.max_grad_norm = max_grad_norm
        self.transform = transform
        self.iteration = 0
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        if params is None:
            return
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"outer optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        if groups is None:
            torch_groups: list[dict[str, Any]] = [{"params": list(self.params.values())}]
        else:
            torch_groups = [{**{k: v for k, v in g.items() if k != "names"},
                             "params": [self.params[n] for n in g["names"]]} for g in groups]
        if transform is None and not any(isinstance(g.get("lr", lr), Tensor) for g in torch_groups):
            options.setdefault("foreach", True)  # one operation for every tensor, on the CPU too (Adam 1.4 -> 1.0 ms, Conv-4)
        self.optimizer = OPTIMIZERS[optimizer](torch_groups, lr=lr, **options)
        self.scheduler = schedule.make(self.optimizer) if schedule is not None else None

    @classmethod
    def counting(cls) -> OuterStep:
        """The outer step of a learner with nothing to train: no optimizer, an iteration count."""
        return cls(None)

    @property
    def trains(self) -> bool:
        """Whether there is anything to update."""
        return self.optimizer is not None

    @property
    def lr(self) -> float:
        """The first group's learning rate now (read back from its device where it is a tensor)."""
        if self.optimizer is None:
            return 0.0
        return float(self.optimizer.param_groups[0]["lr"])

    def add(self, params: Mapping[str, Tensor], **options: Any) -> None:
        """Train more parameters from now on, as a new group (a head made after the first batch)."""
        self.params.update(params)
        if self.optimizer is None:
            return
        self.optimizer.add_param_group({"params": list(params.values()), **options})
        if self.scheduler is not None:  # torch's schedulers fix their groups when made: make it again, replayed
            for group in self.optimizer.param_groups:
                group["lr"] = group.get("initial_lr", group["lr"])
            self.scheduler = self.schedule.make(self.optimizer)
            for _ in range(self.iteration):
                self.scheduler.step()

    def update(self, *, loss: Tensor | None = None, grads: Mapping[str, Tensor | None] | None = None) -> None:
        """One optimizer update from ``loss`` (backpropagated here) or ready ``grads`` by name; clipped, transformed."""
        if self.optimizer is None:
            raise RuntimeError("this learner has nothing to train: its outer step has no optimizer")
        if (loss is None) == (grads is None):
            raise ValueError("give the outer step a loss or gradients, not both or neither")
        if grads is not None:
            for name, p in self.params.items():
                p.grad = grads.get(name)
        else:
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        if math.isfinite(self.max_grad_norm):
            torch.nn.utils.clip_grad_norm_([p for p in self.params.values() if p.grad is not None], self.max_grad_norm)
        if self.transform is not None:
            self.transform.before_step(self)
        self.optimizer.step()
        if self.transform is not None:
            self.transform.after_step(self)

    def advance(self) -> None:
        """The end of a meta-iteration: step the schedule, count it."""
        if self.scheduler is not None:
            self.scheduler.step()
        self.iteration += 1

    def step(self, *, loss: Tensor | None = None, grads: Mapping[str, Tensor | None] | None = None) -> None:
        """A whole meta-iteration of one update: ``update`` then ``advance``."""
        self.update(loss=loss, grads=grads)
        self.advance()

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's, schedule's and transform's state, and the iteration count."""
        state: dict[str, Any] = {"iteration": self.iteration}
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if self.transform is not None:
            state.update(self.transform.state_dict())
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` saved (parts missing from an older state stay as they are)."""
        if self.optimizer is not None and "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.transform is not None:
            self.transform.load_state_dict(state)
        self.iteration = int(state.get("iteration", 0))
