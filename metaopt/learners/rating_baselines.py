"""The rating baselines of a personalisation leaderboard: the global mean, the item's mean, the user's support mean.

Nothing is meta-trained: one "meta-step" sees every training rating pooled (``meta_batch``
of them, all by default) and keeps the means; a user's query ratings are then predicted by
the mean of all training ratings, by the item's mean over training ratings (the global mean
for an item no training user rated: a new item), or by the mean of the user's own support
ratings.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from metaopt.learners.base import HParam, MetaLearner, placeholder_network
from metaopt.tasks.base import PooledBatch, TaskBatch

ITEM = 1  # the item id's column of a movielens rating's features


class RatingMean(MetaLearner):
    """Predicts a mean rating; which mean, a subclass says (``means``)."""

    task_kinds: ClassVar[tuple[str, ...]] = ("rating",)
    families: ClassVar[tuple[str, ...]] = ("movielens",)
    samples: ClassVar[str] = "pooled"
    trains: ClassVar[bool] = False
    baseline: ClassVar[bool] = True
    hyperparameters: ClassVar[dict[str, HParam]] = {
        "meta_batch": HParam(type=int, default=10**7, minimum=1, help="training ratings the means are taken over"),
    }

    @classmethod
    def build_network(cls, backbone: dict[str, Any], *, input_shape: tuple[int, ...], output_size: int,
                      hparams: dict[str, Any]) -> nn.Module:
        """The means, as buffers of an otherwise empty module (a frozen placeholder says where they live)."""
        holder = placeholder_network()
        holder.register_buffer("global_mean", torch.zeros(()))
        holder.register_buffer("item_sum", torch.zeros(0))
        holder.register_buffer("item_count", torch.zeros(0))
        return holder

    def meta_parameters(self) -> dict[str, Tensor]:
        """The means (saved and restored with the learner)."""
        return {"placeholder": self.backbone.placeholder, "global_mean": self.backbone.global_mean,
                "item_sum": self.backbone.item_sum, "item_count": self.backbone.item_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The means of a saved learner (their sizes are the training data's)."""
        for name in ("item_sum", "item_count"):
            setattr(self.backbone, name, state["meta_parameters"][name].clone())
        super().load_state_dict(state)

    def meta_step(self, batch: PooledBatch) -> dict[str, Tensor]:  # type: ignore[override]
        """Take the means of the pooled training ratings."""
        ratings, items = batch.y.flatten(), batch.x[:, ITEM].long()
        size = int(items.max()) + 1
        self.backbone.global_mean = ratings.mean()
        self.backbone.item_sum = torch.zeros(size, device=ratings.device).index_add_(0, items, ratings)
        self.backbone.item_count = torch.zeros(size, device=ratings.device).index_add_(0, items, torch.ones_like(ratings))
        self.outer.advance()
        return {"loss": torch.zeros((), device=ratings.device)}

    def means(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        """Predicted ratings ``[tasks, queries, 1]``."""
        raise NotImplementedError

    def predict(self, batch: TaskBatch, steps: int | None = None) -> Tensor:
        """Each query rating predicted by the mean."""
        return self.means(batch.support_x, batch.support_y, batch.query_x)

    def adapt(self, support_x: Tensor, support_y: Tensor, steps: int | None = None) -> Any:
        """A predictor for one user: the mean given their support ratings."""
        return lambda query_x: self.means(support_x[None], support_y[None], query_x[None])[0]


class GlobalMean(RatingMean):
    """The mean of every training rating."""

    name: ClassVar[str] = "global_mean"

    def means(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        """The global mean for every query."""
        return self.backbone.global_mean.expand(*query_x.shape[:-1], 1).clone()


class ItemMean(RatingMean):
    """The item's mean training rating (the global mean for an item no training user rated)."""

    name: ClassVar[str] = "item_mean"

    def means(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        """Each query item's mean."""
        items = query_x[..., ITEM].long()
        known = items < len(self.backbone.item_count)
        safe = items.clamp(max=max(len(self.backbone.item_count) - 1, 0))
        count = torch.where(known, self.backbone.item_count[safe], torch.zeros_like(items, dtype=torch.float))
        total = torch.where(known, self.backbone.item_sum[safe], torch.zeros_like(count))
        return torch.where(count > 0, total / count.clamp(min=1), self.backbone.global_mean)[..., None]


class UserMean(RatingMean):
    """The mean of the user's own support ratings."""

    name: ClassVar[str] = "user_mean"

    def means(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        """The user's support mean for every query."""
        mean = torch.nanmean(support_y.flatten(1), 1)
        mean = torch.where(torch.isnan(mean), self.backbone.global_mean, mean)
        return mean[:, None, None].expand(*query_x.shape[:-1], 1).clone()


RATING_BASELINES = (GlobalMean, ItemMean, UserMean)
