"""The ``MetaLearner`` interface and its declared hyperparameters."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from metaopt.tasks.base import TaskBatch, TaskKind

if TYPE_CHECKING:
    from metaopt.learners.outer import OuterStep

Predictor = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class HParam:
    """A hyperparameter a learner accepts: its type, default and allowed domain."""

    type: type
    default: Any
    minimum: float | None = None
    exclusive_minimum: bool = False
    help: str = ""
    choices: tuple[Any, ...] | None = None
    maximum: float | None = None
    # The value a learner saved before this hyperparameter existed behaves as (None: the default).
    legacy: Any = None

    def check(self, name: str, value: Any) -> Any:
        """``value`` converted to this type, or ``ValueError`` saying what is allowed."""
        if value is None and self.default is None:  # "unset": the learner derives it (test_steps: inner_steps)
            return None
        if self.choices is not None:
            if value not in self.choices or type(value) is not type(self.choices[0]):
                raise ValueError(f"{name} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
            return value
        if self.type is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")
            return value
        if self.type is str:  # a reference, never searched (a selector's frozen model)
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a string, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if self.type is int and value != int(value):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        value = self.type(value)
        if self.minimum is not None:
            too_small = value <= self.minimum if self.exclusive_minimum else value < self.minimum
            if too_small:
                op = ">" if self.exclusive_minimum else ">="
                raise ValueError(f"{name} must be {op} {self.minimum}, got {value!r}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{name} must be <= {self.maximum}, got {value!r}")
        return value

    def describe(self) -> str:
        """Allowed values in words, for error messages."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        if self.type is bool:
            return "true or false"
        if self.type is str:
            return "a string"
        bound = "" if self.minimum is None else f" {'>' if self.exclusive_minimum else '>='} {self.minimum}"
        top = "" if self.maximum is None else f" <= {self.maximum}"
        return f"{self.type.__name__}{bound}{top}"


POSITIVE_FLOAT = dict(type=float, minimum=0.0, exclusive_minimum=True)


def placeholder_network() -> nn.Module:
    """The "network" of a learner with nothing to learn: one frozen parameter that says where it runs."""
    holder = nn.Module()
    holder.register_parameter("placeholder", nn.Parameter(torch.zeros(1), requires_grad=False))
    return holder


class MetaLearner(ABC):
    """A meta-learning algorithm: meta-trains on task batches and adapts to a new task.

    A learner never reads a global, a file or an environment variable: everything
    it needs comes in through the backbone, the hyperparameters and the batches.

    What ``fit()`` needs of every learner is stated here: ``meta_step`` on a batch of
    ``meta_batch`` tasks (or pooled examples, ``samples``), ``compilable`` and ``compile``,
    the iteration count, ``state_dict``. Its updates go through ``outer`` (one
    ``OuterStep``: zero-grad, backward, clip, step, schedule); a learner with nothing to
    train keeps the default, which has no optimizer and only counts iterations. A learner
    is scored by its family (``TaskFamily.score_learner``), on ``predict``.
    """

    name: ClassVar[str]
    hyperparameters: ClassVar[dict[str, HParam]]
    # Hyperparameters whose default is a property of the family a trial trains on: name -> the family's attribute
    # (SNAIL's RL ``horizon``: the task's length, ``steps``). A value the job gives wins.
    family_defaults: ClassVar[dict[str, str]] = {}
    uses_head: ClassVar[bool] = True  # False for metric learners: the backbone is an embedding network
    task_kinds: ClassVar[tuple[TaskKind, ...]] = ("regression", "classification")  # the families' kinds it learns
    families: ClassVar[tuple[str, ...] | None] = None  # only these families (None: any of its kinds)
    trains: ClassVar[bool] = True  # False: nothing to learn (a classic policy): one evaluation, at the end
    baseline: ClassVar[bool] = False  # not a meta-learner: what meta-learning must beat (scratch, pretrain, UCB1...)
    # What a meta-step trains on: batches of tasks, or examples pooled over the training tasks (pretrain).
    samples: ClassVar[Literal["tasks", "pooled"]] = "tasks"
    compilable: ClassVar[bool] = False  # True where ``compile`` makes meta-steps faster (``fit``'s compile decision)

    def __init__(
        self,
        backbone: nn.Module,
        hparams: Mapping[str, Any] | None = None,
        *,
        task_kind: TaskKind,
        max_iterations: int | None = None,
        n_way: int | None = None,
    ) -> None:
        self.backbone = backbone
        self.task_kind = task_kind
        self.n_way = n_way
        self.hparams = self.resolve_hparams(hparams or {})
        # The training budget, for learners with schedules (MAML++); None: no schedule.
        self.max_iterations = max_iterations
        self._outer: OuterStep | None = None

    def make_outer_step(self) -> OuterStep:
        """This learner's outer step, made on first use (none to train here: it only counts iterations)."""
        from metaopt.learners.outer import OuterStep

        return OuterStep.counting()

    @property
    def outer(self) -> OuterStep:
        """The outer step (``make_outer_step`` on first use; a learner that wraps this one may set its own first)."""
        if self._outer is None:
            self._outer = self.make_outer_step()
        return self._outer

    @outer.setter
    def outer(self, value: OuterStep) -> None:
        self._outer = value

    @property
    def iteration(self) -> int:
        """Meta-iterations done (kept by the outer step, saved with it)."""
        return self.outer.iteration

    @iteration.setter
    def iteration(self, value: int) -> None:
        self.outer.iteration = value

    @property
    def meta_batch(self) -> int:
        """Tasks (or pooled examples) per meta-step: the ``meta_batch`` hyperparameter (1 where none is declared)."""
        return int(self.hparams.get("meta_batch", 1))

    def compile_signature(self, batch: Any) -> str | None:
        """What identifies this learner's compiled meta-step on ``batch``'s shapes across processes (None: unknown,
        so ``fit`` counts every compile as cold)."""
        return None

    def compile(self) -> None:
        """Compile the meta-step (only where ``compilable``)."""
        raise NotImplementedError(f"{self.name} has no compiled meta-step")

    @classmethod
    def unfit_for(cls, family: str, options: Any) -> str | None:
        """Why this method can't run on ``family`` with ``options`` (its size), or ``None`` when it can."""
        return None

    @classmethod
    def for_task_kind(cls, task_kind: TaskKind) -> type[MetaLearner]:
        """The class that learns ``task_kind`` tasks for this method (itself, unless the method has a variant)."""
        return cls

    @classmethod
    def build_network(cls, backbone: dict[str, Any], *, input_shape: tuple[int, ...], output_size: int,
                      hparams: Mapping[str, Any]) -> nn.Module:
        """The network this learner meta-trains: the job's backbone, with ``output_size`` outputs (a head) or
        as an embedding network (metric learners)."""
        from metaopt.models import build_backbone

        return build_backbone(backbone, input_shape=tuple(input_shape), out_features=output_size if cls.uses_head
                              else None)

    @classmethod
    def resolve_hparams(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with ``given``; unknown names and out-of-domain values raise ``ValueError``."""
        unknown = sorted(set(given) - set(cls.hyperparameters))
        if unknown:
            raise ValueError(
                f"unknown hyperparameter {unknown[0]!r} for {cls.name} (allowed: {', '.join(sorted(cls.hyperparameters))})"
            )
        return {name: spec.check(name, given.get(name, spec.default)) for name, spec in cls.hyperparameters.items()}

    @property
    def device(self) -> torch.device:
        """Where the meta-parameters live."""
        return next(self.backbone.parameters()).device

    @abstractmethod
    def meta_step(self, batch: TaskBatch) -> dict[str, Tensor]:
        """One outer update on a meta-batch; returns detached scalar metrics (no host sync)."""

    @abstractmethod
    def predict(self, batch: TaskBatch, steps: int | None = None) -> Tensor:
        """Query predictions ``[tasks, queries, ...]`` after adapting to each task's support set."""

    def learned_hyperparameters(self) -> dict[str, float]:
        """Hyperparameters the learner tunes itself as it trains, for logging (none by default)."""
        return {}

    @abstractmethod
    def adapt(self, support_x: Tensor, support_y: Tensor, steps: int | None = None) -> Predictor:
        """A predictor for one task (``support_x [shots, ...]``) after few-shot adaptation."""

    @abstractmethod
    def meta_parameters(self) -> dict[str, Tensor]:
        """Every tensor the outer loop learns."""

    def state_dict(self) -> dict[str, Any]:
        """Meta-parameters, the outer step's state (optimizer, schedule, iteration count)."""
        return {"meta_parameters": {k: v.detach().clone() for k, v in self.meta_parameters().items()},
                **self.outer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore meta-parameters (and the outer step's state, when present)."""
        current = self.meta_parameters()
        missing = sorted(set(current) - set(state["meta_parameters"]))
        if missing:
            raise KeyError(f"state has no meta-parameter {missing[0]!r} for {self.name}")
        with torch.no_grad():
            for name, value in state["meta_parameters"].items():
                current[name].copy_(value)
        self.outer.load_state_dict(state)
