"""What RL families share: tasks that are played, not adapted to; scored by the reward a policy earns.

An RL family's batch stacks its tasks' parameters and makes one vectorised environment
(``batch.environment(generator)``); a learner scores by playing each task once
(``learner.total_reward``), with seeded randomness so a score is reproducible. Train,
validation and test tasks come from disjoint seed streams (``split_generator``).

The observation contract: an environment's observation ``[tasks, obs]`` ends with the
previous action (one-hot), the previous reward and a done flag (1 on the first step of a new
episode); ``env.steps`` is a task's length and ``env.horizon`` its episodes' (1 for a bandit's
pulls). A policy that acts on a user's own environment gets the observations so far
(``learner.act(history)``), from which ``taken_in`` reads back what was played.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from metaopt.tasks.base import SPLITS, Split, TaskFamily
from metaopt.tasks.metrics import Metric

PLAY_SEED = 20161109  # the randomness of rewards and actions when a learner is scored (not the tasks')


def not_from_predictions(predictions: Tensor, targets: Tensor) -> Tensor:
    raise TypeError("an RL metric is scored from rollouts (RLFamily.score_rewards), not from predictions")


REWARD = Metric("reward", "maximize", "total reward", not_from_predictions)


def split_generator(generator: torch.Generator, split: Split) -> torch.Generator:
    """A generator of ``split``'s own seed stream, seeded from ``generator`` (splits never share a seed)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    seed = int(torch.randint(0, 2**40, (), generator=generator))
    return torch.Generator().manual_seed(seed * len(SPLITS) + SPLITS.index(split))


class RLFamily(TaskFamily):
    """A family of RL tasks: ``kind = "rl"``, total reward first among its metrics."""

    kind = "rl"
    metrics = (REWARD,)

    def score_learner(self, learner: Any, batch: Any, steps: int | None = None) -> dict[str, Tensor]:
        """Every metric per task of ``learner`` playing each task of ``batch`` once (seeded: reproducible)."""
        return self.score_rewards(learner.total_reward(batch, torch.Generator().manual_seed(PLAY_SEED)), batch)

    def model_example(self, batch: Any) -> dict[str, Any]:
        """The logged policy's input example: ``history``, the first observation ``[1, obs]`` of one task."""
        return {"history": batch.environment(torch.Generator().manual_seed(0)).reset()[:1].cpu().numpy()}

    def score_rewards(self, rewards: Tensor, batch: Any) -> dict[str, Tensor]:
        """Every metric per task from the total reward ``[tasks]`` a policy earned (default: the reward alone)."""
        return {"reward": rewards}


def gumbel_sample(logits: Tensor, generator: torch.Generator | None) -> Tensor:
    """One action per row of ``logits [tasks, actions]``, drawn from their softmax (Gumbel-max; None: torch's RNG)."""
    u = torch.rand(logits.shape, generator=generator).to(logits.device).clamp(1e-9, 1 - 1e-9)
    return (logits - torch.log(-torch.log(u))).argmax(-1)


def taken_in(history: Tensor, actions: int) -> tuple[Tensor, Tensor]:
    """The actions and rewards ``[tasks, t - 1]`` a task's observations ``history [tasks, t, obs]`` record.

    Every RL family's observation ends with the previous action (one-hot), the previous reward
    and the done flag, so what was played can be read back from what was seen.
    """
    after = history[:, 1:, -(actions + 2):]
    return after[..., :actions].argmax(-1), after[..., actions]
