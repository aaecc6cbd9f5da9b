"""The classic policies as methods of a search: untrained baselines on every RL leaderboard.

Each is a ``MetaLearner`` with nothing to learn: its meta-steps do nothing, and it is scored
by playing the same test tasks as RL² (``total_reward``), so the leaderboard shows what
meta-learning gained over them, and, for bandits, the Bayes-optimal limit. Their few
settings (ε, UCB1's c) are hyperparameters a search tunes like any other.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from metaopt.tasks.base import TaskKind
from metaopt.learners import bandit_baselines as bandits
from metaopt.learners import mdp_baselines as mdps
from metaopt.learners.base import HParam, MetaLearner, placeholder_network
from metaopt.tasks.bandit import BanditBatch
from metaopt.tasks.rl import taken_in
from metaopt.tasks.tabular_mdp import MDPBatch


class ClassicPolicy(MetaLearner):
    """A policy that is not trained: ``meta_step`` is a no-op, ``total_reward`` plays."""

    task_kinds: ClassVar[tuple[str, ...]] = ("rl",)
    families: ClassVar[tuple[str, ...]] = ("bandit",)
    trains: ClassVar[bool] = False  # its flat "curve" is never compared with a learner's early evaluations
    baseline: ClassVar[bool] = True
    hyperparameters: ClassVar[dict[str, HParam]] = {
        "meta_batch": HParam(type=int, default=1, minimum=1, help="tasks drawn per (empty) meta-step"),
    }

    def __init__(self, backbone: nn.Module, hparams: dict[str, Any] | None = None, *, task_kind: TaskKind = "rl",
                 max_iterations: int | None = None, n_way: int | None = None) -> None:
        super().__init__(backbone, hparams, task_kind=task_kind, max_iterations=max_iterations, n_way=n_way)

    @classmethod
    def build_network(cls, backbone: dict[str, Any], *, input_shape: tuple[int, ...], output_size: int,
                      hparams: dict[str, Any]) -> nn.Module:
        """Nothing to learn: one frozen placeholder parameter (it says where the policy runs)."""
        holder = placeholder_network()
        holder.actions = output_size
        return holder

    def meta_parameters(self) -> dict[str, Tensor]:
        """The placeholder (the policy has no parameters)."""
        return dict(self.backbone.named_parameters())

    def meta_step(self, batch: Any) -> dict[str, Tensor]:  # type: ignore[override]
        """Nothing to learn."""
        self.outer.advance()
        return {"loss": torch.zeros(())}

    rule: ClassVar[bandits.Policy | None] = None  # a policy without settings; else ``policy`` builds one

    def policy(self, batch: BanditBatch) -> bandits.Policy:
        """The bandit policy, given the batch's arms and pulls (``rule`` unless a subclass builds one)."""
        if self.rule is None:
            raise NotImplementedError(f"{self.name} sets neither rule nor policy()")
        return self.rule

    def total_reward(self, batch: Any, generator: torch.Generator) -> Tensor:
        """The total reward ``[tasks]`` of playing each task of ``batch`` once."""
        if not isinstance(batch, BanditBatch):
            raise TypeError(f"{self.name} plays bandits, not {type(batch).__name__}")
        return bandits.rollout(self.policy(batch), batch, batch.pulls, generator)

    def act(self, history: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The next action ``[tasks]`` after a task's observations so far, ``history [tasks, t, obs]``."""
        arms = getattr(self.backbone, "actions", history.shape[-1] - 2)
        actions, rewards = taken_in(history, arms)
        pulled = torch.nn.functional.one_hot(actions, arms).float()
        s, f = (pulled * rewards[..., None]).sum(1), (pulled * (1 - rewards[..., None])).sum(1)
        batch = BanditBatch(torch.zeros(history.shape[0], arms), pulls=history.shape[1])
        return self.policy(batch)(s, f, history.shape[1], generator)

    def predict(self, batch: Any, steps: int | None = None) -> Tensor:
        """Not a supervised learner."""
        raise TypeError(f"{self.name} plays RL tasks: use total_reward(batch, generator)")

    def adapt(self, support_x: Tensor, support_y: Tensor, steps: int | None = None) -> Any:
        """Not a supervised learner."""
        raise TypeError(f"{self.name} plays RL tasks: use total_reward(batch, generator)")


class RandomPolicy(ClassicPolicy):
    """Uniformly random actions (bandits and MDPs): n/2 on bandits, ≈ 10n on the MDPs."""

    name = "random"
    families = ("bandit", "tabular-mdp")
    rule = staticmethod(bandits.random_policy)

    def total_reward(self, batch: Any, generator: torch.Generator) -> Tensor:
        """The total reward of random play on bandits or MDPs."""
        if isinstance(batch, MDPBatch):
            return mdps.run_random(batch, batch.horizon, batch.episodes, generator)
        return super().total_reward(batch, generator)


class Greedy(ClassicPolicy):
    """The arm of highest posterior mean."""

    name = "greedy"
    rule = staticmethod(bandits.greedy)


class EpsilonGreedy(ClassicPolicy):
    """Greedy, with a random arm with probability ε."""

    name = "epsilon_greedy"
    hyperparameters = {**ClassicPolicy.hyperparameters,
                       "epsilon": HParam(type=float, default=0.0, minimum=0.0, maximum=1.0, help="exploration rate")}

    def policy(self, batch: BanditBatch) -> bandits.Policy:
        """ε-greedy."""
        return bandits.epsilon_greedy(self.hparams["epsilon"])


class UCB1(ClassicPolicy):
    """UCB1 on the posterior mean with exploration coefficient c."""

    name = "ucb1"
    hyperparameters = {**ClassicPolicy.hyperparameters,
                       "c": HParam(type=float, default=0.1, minimum=0.0, help="exploration coefficient")}

    def policy(self, batch: BanditBatch) -> bandits.Policy:
        """UCB1."""
        return bandits.ucb1(self.hparams["c"])


class Thompson(ClassicPolicy):
    """Thompson sampling from Beta posteriors."""

    name = "thompson"
    rule = staticmethod(bandits.thompson)


class OptimisticThompson(ClassicPolicy):
    """Thompson sampling with samples never below the posterior mean."""

    name = "optimistic_thompson"
    rule = staticmethod(bandits.optimistic_thompson)


class BayesOptimalPolicy(ClassicPolicy):
    """The Bayes-optimal policy by exact dynamic programming: the family's limit (tractable for small n, k)."""

    name = "bayes_optimal"

    @classmethod
    def unfit_for(cls, family: str, options: Any) -> str | None:
        """Too many pulls and arms for the exact DP (n = 20 with k = 5 is about the most it solves in seconds)."""
        arms, pulls = options.arms, options.pulls
        if not bandits.BayesOptimal.tractable(arms, pulls):
            return (f"bayes_optimal solves bandits of about 20 pulls of 5 arms at most; {family} has {pulls} pulls of "
                    f"{arms} arms (its DP would visit over {bandits.BayesOptimal.TRACTABLE:,} states)")
        return None

    def policy(self, batch: BanditBatch) -> bandits.Policy:
        """The exact DP policy for the batch's arms and pulls (solved once per shape)."""
        shape = (batch.probs.shape[1], batch.pulls)
        if getattr(self, "_solved", None) is None or self._solved.arms != shape[0] or self._solved.pulls != shape[1]:
            self._solved = bandits.BayesOptimal(*shape)
        return self._solved

    def act(self, history: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Not offered: the DP is solved for a task's length; it plays the family's tasks (``total_reward``)."""
        raise TypeError("bayes_optimal plays the family's tasks only (total_reward), not a history")


class PSRL(ClassicPolicy):
    """Posterior sampling for RL with the family's true priors (tabular MDPs)."""

    name = "psrl"
    families = ("tabular-mdp",)

    def act(self, history: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Not offered: PSRL's posterior is over a whole MDP; it plays the family's tasks (``total_reward``)."""
        raise TypeError("psrl plays the family's tasks only (total_reward), not a history")

    def total_reward(self, batch: Any, generator: torch.Generator) -> Tensor:
        """PSRL's total reward on each MDP of ``batch``."""
        if not isinstance(batch, MDPBatch):
            raise TypeError(f"psrl plays tabular MDPs, not {type(batch).__name__}")
        return mdps.run_psrl(batch, batch.horizon, batch.episodes, generator)


CLASSIC_POLICIES: tuple[type[ClassicPolicy], ...] = (RandomPolicy, Greedy, EpsilonGreedy, UCB1, Thompson,
                                                     OptimisticThompson, BayesOptimalPolicy, PSRL)
