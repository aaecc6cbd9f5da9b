"""``bandit``: k-armed Bernoulli bandits (Duan et al. 2016); a task is ``pulls`` pulls of one bandit.

A task is k arm probabilities p_i ~ U[0, 1]; ``BanditBatch`` stacks them over tasks, and
``pull`` draws the rewards of one action per task at once. Train, validation and test tasks
come from disjoint seed streams: the generator a caller passes seeds a stream of its split's
own. Scores: the total reward over the task (primary, higher is better) and the Bayesian
regret ``n·k/(k+1) − reward`` (the expected best arm of k uniform arms is k/(k+1)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor

from metaopt.tasks.base import FamilyOptions, Split
from metaopt.tasks.metrics import Metric
from metaopt.tasks.rl import REWARD, RLFamily, not_from_predictions, split_generator


# On the same tasks a policy's regret is the reward of the oracle (the same for every policy) minus its own: the reward
# column shifted by a constant, recorded and charted but not repeated in tables.
REGRET = Metric("regret", "minimize", "Bayesian regret", not_from_predictions, in_tables=False)


@dataclass(frozen=True)
class BanditBatch:
    """Bernoulli bandits stacked over tasks: ``probs [tasks, arms]``; a task is ``pulls`` pulls."""

    probs: Tensor
    pulls: int = 10

    @property
    def num_tasks(self) -> int:
        """Number of tasks in the batch."""
        return self.probs.shape[0]

    def to(self, device: torch.device | str) -> BanditBatch:
        """The batch on ``device``."""
        return BanditBatch(self.probs.to(device), self.pulls)

    def slice(self, start: int, stop: int) -> BanditBatch:
        """Tasks ``start:stop``."""
        return BanditBatch(self.probs[start:stop], self.pulls)

    def environment(self, generator: torch.Generator) -> BanditEnv:
        """The tasks of the batch as one vectorised environment of ``pulls`` steps."""
        return BanditEnv(self, self.pulls, generator)

    def pull(self, actions: Tensor, generator: torch.Generator) -> Tensor:
        """Rewards (0 or 1, float) of pulling ``actions [tasks]``, one per task."""
        p = self.probs.gather(1, actions[:, None]).squeeze(1)
        return (torch.rand(p.shape, generator=generator, device=p.device) < p).float()


class BanditEnv:
    """Every bandit of a batch at once, as a recurrent policy sees it: one-hot previous action, reward, done flag."""

    def __init__(self, batch: BanditBatch, steps: int, generator: torch.Generator) -> None:
        self.batch, self.steps, self.generator = batch, steps, generator
        self.horizon = 1  # every pull is an episode of its own
        self.actions = batch.probs.shape[1]
        self.observation_size = self.actions + 2

    def reset(self) -> Tensor:
        """The first observation ``[tasks, arms + 2]`` (nothing pulled yet)."""
        self.t = 0
        return torch.zeros(self.batch.num_tasks, self.observation_size, device=self.batch.probs.device)

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor]:
        """``(next observation, rewards [tasks])`` of pulling ``actions``."""
        rewards = self.batch.pull(actions, self.generator)
        self.t += 1
        obs = torch.zeros(self.batch.num_tasks, self.observation_size, device=rewards.device)
        obs[torch.arange(len(actions)), actions] = 1
        obs[:, -2] = rewards
        obs[:, -1] = float(self.t == self.steps)
        return obs, rewards


class BanditOptions(FamilyOptions):
    """The number of arms and of pulls per task."""

    arms: int = Field(default=5, ge=2, le=1000, description="k, the arms of each bandit")
    pulls: int = Field(default=10, ge=1, le=100_000, description="n, the pulls of each task")


class Bandit(RLFamily):
    """Bernoulli bandits with arm probabilities U[0, 1]; a task is n pulls, scored by total reward."""

    name: ClassVar[str] = "bandit"
    Options = BanditOptions
    metrics = (REWARD, REGRET)

    @classmethod
    def limit(cls, options: BanditOptions) -> dict[str, Any] | None:
        """The Bayes-optimal policy by exact dynamic programming, where it is solved in seconds."""
        from metaopt.learners.bandit_baselines import BayesOptimal

        return {"method": "bayes_optimal"} if BayesOptimal.tractable(options.arms, options.pulls) else None

    @classmethod
    def key(cls, options: BanditOptions) -> str:
        """``bandit-10x5``: pulls x arms."""
        return f"{cls.name}-{options.pulls}x{options.arms}"

    def __init__(self, *, arms: int = 5, pulls: int = 10) -> None:
        self.arms, self.pulls = arms, pulls
        self.input_shape = (arms + 2,)  # a recurrent policy's input: one-hot previous action, reward, done flag
        self.output_size = arms
        self.steps = pulls

    def sample(self, batch_size: int, split: Split, generator: torch.Generator) -> BanditBatch:  # type: ignore[override]
        """``batch_size`` bandits of ``split``."""
        return BanditBatch(torch.rand(batch_size, self.arms, generator=split_generator(generator, split)), self.pulls)

    def score_rewards(self, rewards: Tensor, batch: BanditBatch) -> dict[str, Tensor]:
        """Every metric per task from the total reward ``[tasks]`` a policy earned."""
        expected_best = self.pulls * self.arms / (self.arms + 1)
        return {"reward": rewards, "regret": expected_best - rewards}
