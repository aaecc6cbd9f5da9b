"""Untrained baselines for random tabular MDPs, vectorised over tasks: random, and PSRL with the true priors.

PSRL (posterior sampling for RL, Osband et al. 2013): at the start of each episode, draw
one MDP from the posterior (mean rewards: Normal, the family's N(1, 1) prior with unit
reward noise; transitions: Dirichlet(1 + counts)), solve it for the episode's horizon by
value iteration, and follow its greedy policy for the episode.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from metaopt.tasks.tabular_mdp import MDPBatch

PRIOR_MEAN, PRIOR_VAR, NOISE_VAR = 1.0, 1.0, 1.0


def _numpy_rng(generator: torch.Generator) -> np.random.Generator:
    return np.random.default_rng(int(torch.randint(0, 2**62, (), generator=generator)))


def plan(mean_reward: Tensor, transitions: Tensor, horizon: int) -> Tensor:
    """Greedy actions ``[horizon, tasks, S]`` of finite-horizon value iteration on MDPs stacked over tasks."""
    value = torch.zeros(mean_reward.shape[:2], dtype=mean_reward.dtype, device=mean_reward.device)
    policy = []
    for _ in range(horizon):
        q = mean_reward + torch.einsum("bsat,bt->bsa", transitions, value)
        value, best = q.max(-1)
        policy.append(best)
    return torch.stack(policy[::-1])


def run_random(batch: MDPBatch, horizon: int, episodes: int, generator: torch.Generator) -> Tensor:
    """Total reward ``[tasks]`` of uniformly random actions."""
    actions = batch.mean_reward.shape[2]
    total = torch.zeros(batch.num_tasks)
    for _ in range(episodes):
        states = batch.reset(generator)
        for _ in range(horizon):
            chosen = torch.randint(0, actions, (batch.num_tasks,), generator=generator)
            rewards, states = batch.step(states, chosen, generator)
            total += rewards
    return total


def run_psrl(batch: MDPBatch, horizon: int, episodes: int, generator: torch.Generator) -> Tensor:
    """Total reward ``[tasks]`` of PSRL with the family's true priors."""
    tasks, states, actions = batch.mean_reward.shape
    rows = torch.arange(tasks)
    reward_sum = torch.zeros(tasks, states, actions, dtype=torch.float64)
    visits = torch.zeros(tasks, states, actions, dtype=torch.float64)
    moves = torch.zeros(tasks, states, actions, states, dtype=torch.float64)
    total = torch.zeros(tasks)
    rng = _numpy_rng(generator)
    for _ in range(episodes):
        precision = 1 / PRIOR_VAR + visits / NOISE_VAR
        post_mean = (PRIOR_MEAN / PRIOR_VAR + reward_sum / NOISE_VAR) / precision
        sampled_mean = post_mean + torch.from_numpy(rng.standard_normal(post_mean.shape)) / precision.sqrt()
        sampled_moves = torch.from_numpy(rng.gamma((1 + moves).numpy()))
        sampled_moves = sampled_moves / sampled_moves.sum(-1, keepdim=True)
        policy = plan(sampled_mean, sampled_moves, horizon)
        s = batch.reset(generator)
        for h in range(horizon):
            a = policy[h, rows, s]
            r, nxt = batch.step(s, a, generator)
            reward_sum[rows, s, a] += r.double()
            visits[rows, s, a] += 1
            moves[rows, s, a, nxt] += 1
            total += r
            s = nxt
    return total
