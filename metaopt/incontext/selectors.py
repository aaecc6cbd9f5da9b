"""The learners that choose what a frozen in-context model sees, and the selection baselines of their leaderboard.

A task's support set is its pool of labelled examples; for each query a selector chooses ``context`` of them (the
family's ``context`` option when it sets one), and the frozen model (the job's ``frozen``: a model metaopt trained or
a language model over HTTP) predicts the query from them. ``ContextChooser`` is what every selector shares: the frozen
model, opened once from the ``frozen`` hyperparameter, and kept inside the selector's own checkpoint where it is a
trained model (a saved selector loads and selects with nothing else at hand). A query's target is never read.

The baselines (``metaprompt`` is the learned selector): ``random_context`` (uniform, without replacement),
``nearest_context`` (KATE: the nearest to the query), ``diverse_context`` (farthest-point), ``best_of_contexts``
(per task, the best of ``tries`` random contexts judged on a dev part of its own pool: the upper reference of the
issue's table; it reads the pool's labels, which a task gives) and ``whole_pool`` (every pool example in context: the
limit, where it fits).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaopt.incontext.frozen import FrozenModel, open_frozen
from metaopt.incontext.selection import diverse_context, gather_context, nearest_context, random_context
from metaopt.learners.base import HParam, MetaLearner, Predictor, placeholder_network
from metaopt.tasks.base import TaskBatch, TaskKind

SELECTION_HPARAMS: dict[str, HParam] = {
    "context": HParam(type=int, default=5, minimum=1,
                      help="pool examples the frozen model sees for each query (the family's `context` option)"),
    "frozen": HParam(type=str, default=None, help="the frozen model (the job's `frozen`: a model reference, or a "
                                                  "language model server as JSON)"),
}


class ContextChooser:
    """What every selector shares: the frozen model, the chosen contexts' predictions, and a checkpoint that keeps
    the frozen model it was chosen for. Mixed in before a ``MetaLearner`` class."""

    chooses_context: ClassVar[bool] = True
    family_defaults: ClassVar[dict[str, str]] = {"context": "context"}
    task_kinds: ClassVar[tuple[TaskKind, ...]] = ("regression", "classification")
    hparams: dict[str, Any]
    task_kind: TaskKind
    frozen: FrozenModel | None = None  # opened on first use from ``frozen_checkpoint`` or the ``frozen`` reference
    frozen_checkpoint: dict | None = None  # a trained frozen model's checkpoint, saved inside this learner's

    @classmethod
    def unfit_for(cls, family: str, options: Any) -> str | None:
        """A family without a context budget leaves nothing to choose."""
        if getattr(options, "context", None) is not None:
            return None
        why = f"{cls.name} chooses `context` examples of a task's pool for each query"
        if "context" in type(options).model_fields:
            return f"{why}: set family.context"
        from metaopt.tasks import FAMILIES

        having = [name for name in FAMILIES if "context" in FAMILIES[name].Options.model_fields]
        return f"{why}, and {family} has no context option (families with one: {', '.join(having)})"

    @property
    def frozen_model(self) -> FrozenModel:
        """The model whose context is chosen (never updated)."""
        if self.frozen is None:
            self.frozen = open_frozen(self.hparams["frozen"], self.frozen_checkpoint)
        return self.frozen

    @abstractmethod
    def select(self, batch: TaskBatch) -> Tensor:
        """Each query's context: indices into its task's pool ``[tasks, Q, k]`` (its target unread)."""

    def context_predictions(self, batch: TaskBatch, indices: Tensor) -> Tensor:
        """The frozen model's predictions of every query seeing the pool examples ``indices [tasks, Q, k]``."""
        with torch.no_grad():
            return self.frozen_model.predict_each(gather_context(batch.support_x, indices),
                                                  gather_context(batch.support_y, indices), batch.query_x)

    def query_losses(self, predictions: Tensor, targets: Tensor) -> Tensor:
        """Each query's loss ``[tasks, Q]``: cross-entropy, or squared error per value."""
        if self.task_kind == "classification":
            return F.cross_entropy(predictions.transpose(1, -1), targets.long(), reduction="none")
        return ((predictions - targets) ** 2).flatten(2).mean(-1)

    def check_context(self, batch: TaskBatch) -> int:
        """The context size, once it is known to fit the pool."""
        k, pool = self.hparams["context"], batch.support_x.shape[1]
        if k > pool:
            raise ValueError(f"context: {k} examples cannot be chosen from a pool of {pool} (allowed: 1 to {pool})")
        return k

    def state_dict(self) -> dict[str, Any]:
        """The learner's state, and the trained frozen model's checkpoint (a language model's is its reference)."""
        state = super().state_dict()  # type: ignore[misc]
        if self.frozen_checkpoint is not None:
            state["frozen_model"] = self.frozen_checkpoint
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A saved selector's state, with the frozen model it kept."""
        super().load_state_dict(state)  # type: ignore[misc]
        if state.get("frozen_model") is not None:
            self.frozen_checkpoint, self.frozen = state["frozen_model"], None


class SelectionBaseline(ContextChooser, MetaLearner):
    """A selector with nothing to learn: evaluated once, at the end, like the other baselines."""

    trains: ClassVar[bool] = False
    baseline: ClassVar[bool] = True
    hyperparameters: ClassVar[dict[str, HParam]] = SELECTION_HPARAMS

    @classmethod
    def build_network(cls, backbone: dict[str, Any], *, input_shape: tuple[int, ...], output_size: int,
                      hparams: Any) -> nn.Module:
        """Nothing to learn: a placeholder that says where it runs."""
        return placeholder_network()

    def __init__(self, backbone: nn.Module, hparams: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, hparams, **kwargs)
        self.seed = int(torch.randint(0, 2**31, ()))  # from the trial's seed: another training seed, other draws

    def meta_parameters(self) -> dict[str, Tensor]:
        """The placeholder."""
        return {"placeholder": self.backbone.placeholder}

    def meta_step(self, batch: TaskBatch) -> dict[str, Tensor]:
        """Nothing to meta-learn."""
        self.outer.advance()
        return {"loss": torch.zeros((), device=self.device)}

    def predict(self, batch: TaskBatch, steps: int | None = None) -> Tensor:
        """The frozen model's predictions, each query seeing its chosen context."""
        return self.context_predictions(batch, self.select(batch))

    def adapt(self, support_x: Tensor, support_y: Tensor, steps: int | None = None) -> Predictor:
        """A predictor for one task: its queries' contexts chosen from ``support_x`` (its pool)."""
        def predict(query_x: Tensor) -> Tensor:
            unknown = query_x.new_zeros(query_x.shape[:1])
            return self.predict(TaskBatch(support_x[None], support_y[None], query_x[None], unknown[None]))[0]

        return predict


class RandomContext(SelectionBaseline):
    """``context`` pool examples drawn uniformly for each query."""

    name: ClassVar[str] = "random_context"

    def select(self, batch: TaskBatch) -> Tensor:
        """Uniform draws, the same for the same tasks (seeded once per learner)."""
        return random_context(batch.support_x, batch.query_x, self.check_context(batch),
                              torch.Generator().manual_seed(self.seed)).to(batch.support_x.device)


class NearestContext(SelectionBaseline):
    """KATE (Liu et al. 2022): the ``context`` pool examples nearest the query, the nearest last."""

    name: ClassVar[str] = "nearest_context"

    def select(self, batch: TaskBatch) -> Tensor:
        """The nearest in input (or embedding) space."""
        return nearest_context(batch.support_x, batch.query_x, self.check_context(batch))


class DiverseContext(SelectionBaseline):
    """Farthest-point selection anchored at the query: spread over the pool."""

    name: ClassVar[str] = "diverse_context"

    def select(self, batch: TaskBatch) -> Tensor:
        """The query's nearest example, then again and again the farthest from those chosen."""
        return diverse_context(batch.support_x, batch.query_x, self.check_context(batch))


class BestOfContexts(SelectionBaseline):
    """Per task, the best of ``tries`` random contexts (one for all its queries), judged by the frozen model's loss
    on ``dev`` other examples of the task's own pool: the upper reference of random choice."""

    name: ClassVar[str] = "best_of_contexts"
    hyperparameters: ClassVar[dict[str, HParam]] = {
        **SELECTION_HPARAMS,
        "tries": HParam(type=int, default=20, minimum=1, help="random contexts tried per task"),
        "dev": HParam(type=int, default=None, minimum=1,
                      help="pool examples a context is judged on, never in it (default: the pool minus the context, "
                           "at most 10)"),
    }

    def select(self, batch: TaskBatch) -> Tensor:
        """The context of least dev loss among ``tries`` draws from the rest of the pool."""
        k, pool = self.check_context(batch), batch.support_x.shape[1]
        dev = self.hparams["dev"] or min(10, pool - k)
        if dev < 1 or k + dev > pool:
            raise ValueError(f"best_of_contexts: a pool of {pool} holds no context of {k} and dev of {dev} beside it "
                             f"(allowed: context + dev <= {pool})")
        tasks, queries = batch.support_x.shape[0], batch.query_x.shape[1]
        dev_batch = TaskBatch(batch.support_x, batch.support_y, batch.support_x[:, -dev:], batch.support_y[:, -dev:])
        generator = torch.Generator().manual_seed(self.seed)
        best, best_loss = None, None
        for _ in range(self.hparams["tries"]):
            pick = torch.rand(tasks, pool - dev, generator=generator).argsort(-1)[:, :k].to(batch.support_x.device)
            shared = pick[:, None, :].expand(tasks, dev, k)
            loss = self.query_losses(self.context_predictions(dev_batch, shared), dev_batch.query_y).mean(1)
            if best is None:
                best, best_loss = pick, loss
            else:
                better = loss < best_loss
                best, best_loss = torch.where(better[:, None], pick, best), torch.where(better, loss, best_loss)
        return best[:, None, :].expand(tasks, queries, k)


class WholePool(SelectionBaseline):
    """Every pool example in context: the limit of selection, where the model takes it."""

    name: ClassVar[str] = "whole_pool"

    def select(self, batch: TaskBatch) -> Tensor:
        """The whole pool, in its order, for every query."""
        tasks, pool, queries = batch.support_x.shape[0], batch.support_x.shape[1], batch.query_x.shape[1]
        return torch.arange(pool, device=batch.support_x.device).expand(tasks, queries, pool)

    def predict(self, batch: TaskBatch, steps: int | None = None) -> Tensor:
        """One context per task: the frozen model reads the pool once."""
        with torch.no_grad():
            return self.frozen_model.predict(batch.support_x, batch.support_y, batch.query_x)


SELECTION_BASELINES: tuple[type[SelectionBaseline], ...] = (RandomContext, NearestContext, DiverseContext,
                                                             BestOfContexts, WholePool)
