"""N-way K-shot episodes from a tensor of images grouped by class: the machinery every image family shares.

A family hands over ``images`` (uint8, ``[classes, examples, H, W]`` grey or
``[classes, examples, C, H, W]`` colour), which examples exist (``available``), and
the class indices of each split; sampling is vectorised over the episodes of a
batch: distinct classes per episode, distinct examples per class, labels
0..ways-1 in a random class order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pydantic import model_validator

from metaopt.tasks.base import (SPLITS, ContextBudget, Count, FamilyOptions, PooledBatch, Split, TaskBatch, TaskFamily,
                                   check_context, context_suffix)
from metaopt.tasks.metrics import CLASSIFICATION


class EpisodeOptions(FamilyOptions):
    """N-way K-shot episodes with Q queries a class, optionally rotated or jittered."""

    ways: Count = 5
    shots: Count = 1
    queries: Count = 5
    rotations: bool = False
    jitter: bool = False
    context: ContextBudget = None

    @model_validator(mode="after")
    def _context_within_pool(self) -> EpisodeOptions:
        check_context(self.context, self.ways * self.shots, "ways x shots")
        return self


def episode_key(name: str, options: EpisodeOptions) -> str:
    """``glyphs-5w1s-q5``, with ``-rot``, ``-jitter`` and ``-ctx5`` when those change the episodes."""
    extras = "".join(suffix for suffix, on in (("-rot", options.rotations), ("-jitter", options.jitter)) if on)
    return f"{name}-{options.ways}w{options.shots}s-q{options.queries}{extras}{context_suffix(options.context)}"


class EpisodeFamily(TaskFamily):
    """Few-shot classification episodes over class-grouped images."""

    kind = "classification"
    Options = EpisodeOptions
    metrics = CLASSIFICATION

    @classmethod
    def key(cls, options: EpisodeOptions) -> str:
        """The family's name, ways, shots and queries, and the augmentations that change the episodes."""
        return episode_key(cls.name, options)

    def __init__(
        self,
        *,
        name: str,
        images: torch.Tensor,
        available: torch.Tensor,
        splits: dict[str, torch.Tensor],
        ways: int,
        shots: int,
        queries: int,
        rotations: bool = False,
        jitter: bool = False,
        split_masks: dict[str, torch.Tensor] | None = None,
        context: int | None = None,
    ) -> None:
        check_context(context, ways * shots, "ways x shots")
        self.ways, self.shots, self.queries, self.context = ways, shots, queries, context
        self.rotations, self.jitter = rotations, jitter
        self.n_way = self.output_size = ways
        self.images = images if images.dim() == 5 else images.unsqueeze(2)  # [classes, examples, C, H, W]
        self.input_shape = tuple(self.images.shape[2:])
        self.pools: dict[str, torch.Tensor] = {}
        self.masks: dict[str, torch.Tensor] = {}
        for split in SPLITS:
            mask = available[splits[split]]
            if split_masks is not None:
                mask = mask & split_masks[split]
            eligible = mask.sum(1) >= shots + queries
            if int(eligible.sum()) < ways:
                most = int(mask.sum(1).max()) if len(mask) else 0
                raise ValueError(
                    f"{name}: {split} split has {int(eligible.sum())} classes with {shots}+{queries} examples; "
                    f"need {ways} (at most {most} examples per class there: lower shots or queries)"
                )
            self.pools[split] = splits[split][eligible]
            self.masks[split] = mask[eligible]

    def draw(self, batch_size: int, split: Split, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Which classes ``[tasks, ways]`` (dataset indices) and examples ``[tasks, ways, shots+queries]`` to use."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        pool, mask = self.pools[split], self.masks[split]
        chosen = torch.rand(batch_size, len(pool), generator=generator).argsort(1)[:, : self.ways]  # distinct classes
        scores = torch.rand(batch_size, self.ways, mask.shape[1], generator=generator)
        scores = scores.masked_fill(~mask[chosen], -1.0)  # missing examples sort last
        examples = scores.argsort(-1, descending=True)[..., : self.shots + self.queries]  # distinct examples
        return pool[chosen], examples

    def pooled(self, batch_size: int, split: Split, generator: torch.Generator) -> PooledBatch:
        """``batch_size`` images of ``split``'s classes, labelled by their index among those classes."""
        pool, mask = self.pools[split], self.masks[split]
        which = torch.randint(0, len(pool), (batch_size,), generator=generator)
        scores = torch.rand(batch_size, mask.shape[1], generator=generator).masked_fill(~mask[which], -1.0)
        examples = scores.argmax(1)  # one available example of the class, uniformly
        images = self.images[pool[which], examples].float() / 255.0
        labels, classes = which, len(pool)
        if self.rotations:  # as in the episodes: each rotation of a class is a class of its own
            turns = torch.randint(0, 4, (batch_size,), generator=generator)
            for r in (1, 2, 3):
                images[turns == r] = torch.rot90(images[turns == r], r, dims=(-2, -1))
            labels, classes = which * 4 + turns, classes * 4
        if self.jitter:
            images = jitter(images, generator)
        return PooledBatch(images, labels, classes)

    def sample(self, batch_size: int, split: Split, generator: torch.Generator) -> TaskBatch:
        """``batch_size`` episodes of ``split``."""
        classes, examples = self.draw(batch_size, split, generator)
        n, k, q = self.ways, self.shots, self.queries
        images = self.images[classes.unsqueeze(-1), examples].float() / 255.0  # [tasks, ways, k+q, C, H, W]
        if self.rotations:  # a class and its rotations by 90, 180, 270 degrees are different classes
            turns = torch.randint(0, 4, (batch_size, n), generator=generator)
            for r in (1, 2, 3):
                picked = turns == r
                images[picked] = torch.rot90(images[picked], r, dims=(-2, -1))
        if self.jitter:
            images = jitter(images.reshape(-1, *self.input_shape), generator).view(images.shape)
        labels = torch.arange(n).repeat_interleave(k).expand(batch_size, -1).contiguous()
        query_labels = torch.arange(n).repeat_interleave(q).expand(batch_size, -1).contiguous()
        support = images[:, :, :k].reshape(batch_size, n * k, *self.input_shape)
        query = images[:, :, k:].reshape(batch_size, n * q, *self.input_shape)
        return TaskBatch(support, labels, query, query_labels)


def jitter(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Small random affine transforms of ``[n, C, H, W]``: rotation within 10 degrees, scale 0.9-1.1, shift 2 px."""
    count, size = images.shape[0], images.shape[-1]
    angle = (torch.rand(count, generator=generator) - 0.5) * torch.pi / 9
    scale = 0.9 + 0.2 * torch.rand(count, generator=generator)
    shift = (torch.rand(count, 2, generator=generator) - 0.5) * (4 / size)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False)
