"""The classic Bernoulli-bandit policies, untrained, vectorised over tasks; and the Bayes-optimal policy.

Each policy sees only the per-arm successes and failures so far (``s``, ``f``: ``[tasks, arms]``)
and the step, and picks one arm per task. Random, greedy (highest posterior mean under the
uniform prior), ε-greedy, UCB1, Thompson sampling and optimistic Thompson sampling (a
posterior sample never below the posterior mean) are the baselines of Duan et al. (2016,
Table 1). ``BayesOptimal`` solves the Bayes-adaptive problem exactly by dynamic programming
over the posterior counts (arms are exchangeable, so a state is the sorted multiset of
per-arm counts): its value is the family's physical limit, the best any policy can expect.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from metaopt.tasks.bandit import BanditBatch

Policy = Callable[[Tensor, Tensor, int, torch.Generator], Tensor]  # (s, f, step, generator) -> actions [tasks]


def _argmax_random_ties(values: Tensor, generator: torch.Generator) -> Tensor:
    noise = torch.rand(values.shape, generator=generator, device=values.device) * 1e-6
    return (values + noise).argmax(1)


def random_policy(s: Tensor, f: Tensor, step: int, generator: torch.Generator) -> Tensor:
    """An arm uniformly at random."""
    return torch.randint(0, s.shape[1], (s.shape[0],), generator=generator, device=s.device)


def greedy(s: Tensor, f: Tensor, step: int, generator: torch.Generator) -> Tensor:
    """The arm of highest posterior mean ``(s + 1) / (s + f + 2)`` (ties at random)."""
    return _argmax_random_ties((s + 1) / (s + f + 2), generator)


def epsilon_greedy(epsilon: float = 0.1) -> Policy:
    """With probability ``epsilon`` a random arm, else the greedy one."""

    def choose(s: Tensor, f: Tensor, step: int, generator: torch.Generator) -> Tensor:
        explore = torch.rand(s.shape[0], generator=generator, device=s.device) < epsilon
        return torch.where(explore, random_policy(s, f, step, generator), greedy(s, f, step, generator))

    return choose


def ucb1(c: float = 1.0, *, prior: bool = True) -> Policy:
    """The arm of highest estimate plus ``c·sqrt(2 ln t / n)`` (Auer et al. 2002).

    ``prior`` (the default): the estimate is the posterior mean under the uniform prior, with its
    pseudo-counts in ``n``, so an unpulled arm starts at 1/2; without it, textbook UCB1: every arm
    once, then the empirical mean plus the bonus.
    """

    def choose(s: Tensor, f: Tensor, step: int, generator: torch.Generator) -> Tensor:
        n = s + f
        if prior:
            score = (s + 1) / (n + 2) + c * torch.sqrt(2 * math.log(max(step, 1)) / (n + 2))
        else:
            bonus = c * torch.sqrt(2 * math.log(max(step, 1)) / n.clamp(min=1))
            score = torch.where(n > 0, s / n.clamp(min=1) + bonus, torch.full_like(n, 1e9))
        return _argmax_random_ties(score, generator)

    return choose


def _beta(s: Tensor, f: Tensor, generator: torch.Generator) -> Tensor:
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (), generator=generator)))
    return torch.from_numpy(rng.beta(s.cpu().numpy() + 1, f.cpu().numpy() + 1)).to(s)


def thompson(s: Tensor, f: Tensor, step: int, generator: torch.Generator) -> Tensor:
    """The arm whose sample from its Beta(s + 1, f + 1) posterior is highest."""
    return _beta(s, f, generator).argmax(1)


def optimistic_thompson(s: Tensor, f: Tensor, step: int, generator: torch.Generator) -> Tensor:
    """Thompson sampling with each sample raised to at least the posterior mean (May et al. 2012)."""
    return torch.maximum(_beta(s, f, generator), (s + 1) / (s + f + 2)).argmax(1)


BASELINES: dict[str, Callable[[], Policy]] = {
    "random": lambda: random_policy,
    "greedy": lambda: greedy,
    "epsilon_greedy": lambda: epsilon_greedy(),
    "ucb1": lambda: ucb1(),
    "thompson": lambda: thompson,
    "optimistic_thompson": lambda: optimistic_thompson,
}


# The settings each tunable baseline is tuned over (Duan et al. tuned theirs per setting).
GRIDS: dict[str, tuple[float, ...]] = {"epsilon_greedy": (0.0, 0.01, 0.05, 0.1, 0.2), "ucb1": (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)}
TUNABLE: dict[str, Callable[[float], Policy]] = {"epsilon_greedy": epsilon_greedy, "ucb1": ucb1}


def tuned(name: str, arms: int, pulls: int, *, tasks: int = 2000, seed: int = 0) -> tuple[Policy, float | None]:
    """Baseline ``name`` with its setting tuned on training bandits (the best mean total reward of ``GRIDS``)."""
    from metaopt.tasks.bandit import Bandit

    if name not in TUNABLE:
        return BASELINES[name](), None
    batch = Bandit(arms=arms, pulls=pulls).sample(tasks, "train", torch.Generator().manual_seed(seed))
    scores = {value: rollout(TUNABLE[name](value), batch, pulls, torch.Generator().manual_seed(seed)).mean().item()
              for value in GRIDS[name]}
    best = max(scores, key=scores.get)
    return TUNABLE[name](best), best


def rollout(policy: Policy, batch: BanditBatch, pulls: int, generator: torch.Generator) -> Tensor:
    """Total reward ``[tasks]`` of ``policy`` over ``pulls`` pulls of every bandit of ``batch`` at once."""
    s = torch.zeros_like(batch.probs)
    f = torch.zeros_like(batch.probs)
    total = torch.zeros(batch.num_tasks, device=batch.probs.device)
    rows = torch.arange(batch.num_tasks, device=batch.probs.device)
    for step in range(1, pulls + 1):
        actions = policy(s, f, step, generator)
        rewards = batch.pull(actions, generator)
        s[rows, actions] += rewards
        f[rows, actions] += 1 - rewards
        total += rewards
    return total


class BayesOptimal:
    """The Bayes-optimal policy for ``arms`` Bernoulli arms with U[0, 1] priors over ``pulls`` pulls, exactly.

    ``value`` is the expected total reward of acting optimally (the maximum any policy can expect
    on the family); as a policy it picks, at each step, an arm of highest expected value-to-go.
    Tractable to about n = 25 for k = 5 (the states are multisets of per-arm counts).
    """

    def __init__(self, arms: int, pulls: int) -> None:
        self.arms, self.pulls = arms, pulls

        @lru_cache(maxsize=None)
        def value(state: tuple[tuple[int, int], ...], remaining: int) -> float:
            if remaining == 0:
                return 0.0
            return max(q for q in self._q(state, remaining, value))

        self._value = value

    @staticmethod
    def _q(state: tuple[tuple[int, int], ...], remaining: int, value: Callable) -> list[float]:
        out = []
        for i, (s, f) in enumerate(state):
            p = (s + 1) / (s + f + 2)
            won = tuple(sorted(state[:i] + ((s + 1, f),) + state[i + 1:]))
            lost = tuple(sorted(state[:i] + ((s, f + 1),) + state[i + 1:]))
            out.append(p * (1 + value(won, remaining - 1)) + (1 - p) * value(lost, remaining - 1))
        return out

    # The DP visits each state once per arm, some 300,000 visits a second here: 2e6 is about seven seconds.
    TRACTABLE: ClassVar[int] = 2_000_000

    @staticmethod
    def states(arms: int, pulls: int, stop: int | None = None) -> int:
        """How many states the DP can visit: multisets of ``arms`` (successes, failures) pairs with at most ``pulls``
        pulls in all (counting stops once past ``stop``)."""
        # ways[size][total]: multisets of `size` pairs whose pulls add to `total`, over the pair types seen so far;
        # sizes ascending, so a pair type is taken any number of times.
        ways = [[1] + [0] * pulls] + [[0] * (pulls + 1) for _ in range(arms)]
        for weight in range(pulls + 1):
            for _ in range(weight + 1):  # the weight + 1 pairs (s, f) with s + f = weight
                for size in range(1, arms + 1):
                    for total in range(weight, pulls + 1):
                        ways[size][total] += ways[size - 1][total - weight]
            if stop is not None and sum(ways[arms]) > stop:
                break
        return sum(ways[arms])

    @classmethod
    def tractable(cls, arms: int, pulls: int) -> bool:
        """Whether the exact DP finishes in seconds."""
        return cls.states(arms, pulls, stop=cls.TRACTABLE // arms) * arms <= cls.TRACTABLE

    @property
    def value(self) -> float:
        """The expected total reward of the Bayes-optimal policy."""
        return self._value(tuple([(0, 0)] * self.arms), self.pulls)

    def __call__(self, s: Tensor, f: Tensor, step: int, generator: torch.Generator) -> Tensor:
        """An arm of highest expected value-to-go for each task (ties at random)."""
        remaining = self.pulls - step + 1
        actions = []
        for counts in torch.stack([s, f], -1).long().tolist():
            q = torch.tensor(self._q(tuple(map(tuple, counts)), remaining, self._value), dtype=torch.float64)
            best = torch.nonzero(q >= q.max() - 1e-12).flatten()
            actions.append(int(best[torch.randint(len(best), (), generator=generator)]))
        return torch.tensor(actions, device=s.device)
