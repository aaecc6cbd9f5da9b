"""``tabular-mdp``: random tabular MDPs (Duan et al. 2016); a task is ``episodes`` episodes on one MDP.

A task: mean rewards μ(s, a) ~ N(1, 1), rewards N(μ(s, a), 1), transitions P(·|s, a) ~
Dirichlet(1, ..., 1), each episode ``horizon`` steps from a uniformly drawn start state; a
policy keeps its memory across the task's episodes. ``MDPBatch`` stacks the MDPs over
tasks and ``step`` moves every task at once. Score: the total reward over the task's
episodes (primary, higher is better).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor

from metaopt.tasks.base import FamilyOptions, Split
from metaopt.tasks.rl import RLFamily, split_generator


@dataclass(frozen=True)
class MDPBatch:
    """Tabular MDPs stacked over tasks: ``mean_reward [tasks, S, A]``, ``transitions [tasks, S, A, S]``."""

    mean_reward: Tensor
    transitions: Tensor
    horizon: int = 10
    episodes: int = 10

    @property
    def num_tasks(self) -> int:
        """Number of tasks in the batch."""
        return self.mean_reward.shape[0]

    def to(self, device: torch.device | str) -> MDPBatch:
        """The batch on ``device``."""
        return MDPBatch(self.mean_reward.to(device), self.transitions.to(device), self.horizon, self.episodes)

    def slice(self, start: int, stop: int) -> MDPBatch:
        """Tasks ``start:stop``."""
        return MDPBatch(self.mean_reward[start:stop], self.transitions[start:stop], self.horizon, self.episodes)

    def environment(self, generator: torch.Generator) -> MDPEnv:
        """The tasks of the batch as one vectorised environment of ``episodes`` episodes of ``horizon`` steps."""
        return MDPEnv(self, self.horizon, self.episodes, generator)

    def reset(self, generator: torch.Generator) -> Tensor:
        """Start states ``[tasks]``, uniform over the states."""
        states = self.mean_reward.shape[1]
        return torch.randint(0, states, (self.num_tasks,), generator=generator).to(self.mean_reward.device)

    def step(self, states: Tensor, actions: Tensor, generator: torch.Generator,
             draws: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """``(rewards [tasks], next states [tasks])`` of taking ``actions`` in ``states``, every task at once.

        ``draws``: the reward noise and the uniforms that pick the next states (default: from ``generator``).
        """
        rows = torch.arange(self.num_tasks, device=states.device)
        mean = self.mean_reward[rows, states, actions]
        if draws is None:
            draws = (torch.randn(mean.shape, generator=generator), torch.rand(self.num_tasks, generator=generator))
        noise, u = (d.to(mean.device) for d in draws)
        probs = self.transitions[rows, states, actions]  # [tasks, S]
        nxt = (probs.cumsum(1) < u[:, None]).sum(1).clamp(max=probs.shape[1] - 1)
        return mean + noise, nxt


class MDPEnv:
    """Every MDP of a batch at once, as a recurrent policy sees it: one-hot state and previous action, reward, done.

    The policy's memory is kept across the task's episodes; ``done`` marks the first step of a new episode.
    """

    def __init__(self, batch: MDPBatch, horizon: int, episodes: int, generator: torch.Generator) -> None:
        self.batch, self.horizon, self.episodes, self.generator = batch, horizon, episodes, generator
        _, self.states_count, self.actions = batch.mean_reward.shape
        self.steps = horizon * episodes
        self.observation_size = self.states_count + self.actions + 2

    def _observe(self, actions: Tensor | None, rewards: Tensor | None, done: bool) -> Tensor:
        tasks = self.batch.num_tasks
        obs = torch.zeros(tasks, self.observation_size, device=self.batch.mean_reward.device)
        rows = torch.arange(tasks)
        obs[rows, self.state] = 1
        if actions is not None:
            obs[rows, self.states_count + actions] = 1
            obs[:, -2] = rewards
        obs[:, -1] = float(done)
        return obs

    def reset(self) -> Tensor:
        """The first observation of the task."""
        self.t = 0
        self.state = self.batch.reset(self.generator)
        return self._observe(None, None, False)

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor]:
        """``(next observation, rewards [tasks])``; after ``horizon`` steps the next episode starts."""
        rewards, self.state = self.batch.step(self.state, actions, self.generator)
        self.t += 1
        done = self.t % self.horizon == 0
        if done:
            self.state = self.batch.reset(self.generator)
        return self._observe(actions, rewards, done), rewards


class MDPOptions(FamilyOptions):
    """States, actions, steps per episode, and episodes per task."""

    states: int = Field(default=10, ge=1, le=1000)
    actions: int = Field(default=5, ge=2, le=100)
    horizon: int = Field(default=10, ge=1, le=10_000, description="steps per episode")
    episodes: int = Field(default=10, ge=1, le=10_000, description="n, the episodes of each task")


class TabularMDP(RLFamily):
    """Random tabular MDPs; a task is n episodes on one MDP, scored by total reward."""

    name: ClassVar[str] = "tabular-mdp"
    Options = MDPOptions

    @classmethod
    def key(cls, options: MDPOptions) -> str:
        """``tabular-mdp-10s5a-h10-n10``."""
        return f"{cls.name}-{options.states}s{options.actions}a-h{options.horizon}-n{options.episodes}"

    def __init__(self, *, states: int = 10, actions: int = 5, horizon: int = 10, episodes: int = 10) -> None:
        self.states, self.actions, self.horizon, self.episodes = states, actions, horizon, episodes
        self.input_shape = (states + actions + 2,)  # one-hot state and previous action, reward, done flag
        self.output_size = actions
        self.steps = horizon * episodes

    def sample(self, batch_size: int, split: Split, generator: torch.Generator) -> MDPBatch:  # type: ignore[override]
        """``batch_size`` MDPs of ``split``."""
        g = split_generator(generator, split)
        mean = 1 + torch.randn(batch_size, self.states, self.actions, generator=g)
        # Dirichlet(1, ..., 1) is normalised Exp(1) draws.
        exp = -torch.log(torch.rand(batch_size, self.states, self.actions, self.states, generator=g).clamp(min=1e-12))
        return MDPBatch(mean, exp / exp.sum(-1, keepdim=True), self.horizon, self.episodes)
