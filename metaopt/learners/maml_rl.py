"""MAML on RL tasks (Finn et al. 2017, section 5.3): a feed-forward policy adapted by a policy-gradient step.

A task of E episodes (a bandit's pulls are one-step episodes) is played in two parts. The
first ``EXPLORE_FRACTION`` of its episodes are played by the meta-learned policy θ; their
REINFORCE surrogate (reward-to-go within the episode, less a per-task baseline at the same
step of the episode, scaled per task) is the "support loss" of ``inner_steps`` gradient steps,
θ' = θ − α ∇ L_explore(θ), taken for every task at once by the functional core's vmapped
inner loop. The rest of the task is played by θ'. The meta-objective is the same
surrogate of the second part at θ', differentiated through the inner step (second order for
``maml``, the inner gradient held constant for ``fomaml``); the score is the task's total
reward, both parts. The policy sees the family's per-step observation (the observation RL²
sees, without a memory across steps): what it knows of the task comes from the inner step.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from metaopt.tasks.base import TaskKind
from metaopt.learners.core import adapt_batch, batched_forward, batched_loss, detach
from metaopt.learners.gradient import GradientLearner
from metaopt.learners.core_types import Params
from metaopt.tasks.rl import gumbel_sample, taken_in

EXPLORE_FRACTION = 0.5  # of a task's episodes, played before the inner step (at least one, never all)


def explore_steps(steps: int, horizon: int) -> int:
    """How many of a task's ``steps`` (episodes of ``horizon``) the unadapted policy plays."""
    episodes = steps // horizon
    if episodes < 2:
        return 0  # nothing would be left to play adapted
    return horizon * min(episodes - 1, max(1, round(EXPLORE_FRACTION * episodes)))


def advantages(rewards: Tensor, horizon: int) -> Tensor:
    """Per-task REINFORCE advantages ``[tasks, T]``: reward-to-go in the episode less its mean at that step, scaled."""
    tasks, steps = rewards.shape
    to_go = rewards.view(tasks, steps // horizon, horizon).flip(-1).cumsum(-1).flip(-1)
    baseline = to_go.mean(1, keepdim=True) if to_go.shape[1] > 1 else to_go.mean((1, 2), keepdim=True)
    centred = (to_go - baseline).reshape(tasks, steps)
    return centred / (centred.std(1, keepdim=True, unbiased=False) + 1e-6)


class PolicyGradientMAML(GradientLearner):
    """MAML's inner step on the task's first episodes, its outer step on the rest; every task stepped at once."""

    name: ClassVar[str] = "maml"
    task_kinds: ClassVar[tuple[str, ...]] = ("rl",)
    compilable: ClassVar[bool] = False  # the rollout between the two parts is not one graph

    def __init__(self, backbone: torch.nn.Module, hparams: dict[str, Any] | None = None, *, task_kind: TaskKind = "rl",
                 max_iterations: int | None = None, n_way: int | None = None, compile: bool = False) -> None:
        super().__init__(backbone, hparams, task_kind="rl", max_iterations=max_iterations, n_way=n_way)
        self.generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
        self.task_shape: tuple[int, int] | None = None  # (steps, horizon) of the family's tasks, seen when played

    def _begin(self, env: Any) -> tuple[Tensor, int, int]:
        """The first observation, the horizon, and how many steps the unadapted policy plays."""
        horizon = getattr(env, "horizon", 1)
        self.task_shape = (env.steps, horizon)
        return env.reset().to(self.device), horizon, explore_steps(env.steps, horizon)

    def state_dict(self) -> dict[str, Any]:
        """As for every learner, and the shape of the tasks it was trained on (when to adapt)."""
        return {**super().state_dict(), "task_shape": None if self.task_shape is None else list(self.task_shape)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """As for every learner, and the shape of the tasks it was trained on."""
        super().load_state_dict(state)
        shape = state.get("task_shape")
        self.task_shape = None if shape is None else (int(shape[0]), int(shape[1]))

    def _act(self, obs: Tensor, params: Params | None, generator: torch.Generator) -> Tensor:
        with torch.no_grad():
            logits = self.backbone(obs) if params is None else batched_forward(self.backbone, params, obs[:, None])[:, 0]
        return gumbel_sample(logits, generator)

    def _play(self, env: Any, obs: Tensor, steps: int, params: Params | None, generator: torch.Generator
              ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``steps`` steps from ``obs``: observations, actions, rewards ``[tasks, steps]`` and the next observation."""
        seen, actions, rewards = [], [], []
        for _ in range(steps):
            action = self._act(obs, params, generator)
            seen.append(obs)
            actions.append(action)
            obs, reward = env.step(action.cpu())
            obs = obs.to(self.device)
            rewards.append(reward.to(self.device))
        if not steps:
            empty = torch.zeros(obs.shape[0], 0, device=self.device)
            return obs[:, None][:, :0], empty.long(), empty, obs
        return torch.stack(seen, 1), torch.stack(actions, 1), torch.stack(rewards, 1), obs

    def _adapt(self, params: Params, obs: Tensor, actions: Tensor, rewards: Tensor, horizon: int, *,
               first_order: bool | None = None) -> Params:
        taken = torch.stack([actions.float(), advantages(rewards, horizon)], -1)
        return adapt_batch(self.loss, params, obs, taken, self.inner_loop(first_order=first_order))

    def play(self, batch: Any, generator: torch.Generator) -> dict[str, Tensor]:
        """Play every task of ``batch`` once, adapting after its first episodes: actions and rewards ``[tasks, T]``."""
        env = batch.environment(generator)
        obs, horizon, first = self._begin(env)
        o1, a1, r1, obs = self._play(env, obs, first, None, generator)
        params = detach(self.params)
        adapted = self._adapt(params, o1, a1, r1, horizon, first_order=True) if first else None
        with torch.no_grad():
            adapted = None if adapted is None else detach(adapted)
        _, a2, r2, _ = self._play(env, obs, env.steps - first, adapted, generator)
        return {"actions": torch.cat([a1, a2], 1), "rewards": torch.cat([r1, r2], 1)}

    def total_reward(self, batch: Any, generator: torch.Generator) -> Tensor:
        """The total reward ``[tasks]`` the policy earns on each task of ``batch``, adapting as it plays."""
        return self.play(batch, generator)["rewards"].sum(1)

    def meta_step(self, batch: Any) -> dict[str, Tensor]:  # type: ignore[override]
        """Play the first episodes at θ, adapt, play the rest at θ'; step θ on the second part's surrogate."""
        env = batch.environment(self.generator)
        obs, horizon, first = self._begin(env)
        meta = self.meta_parameters()
        o1, a1, r1, obs = self._play(env, obs, first, None, self.generator)
        adapted = self._adapt(self.network(meta), o1, a1, r1, horizon) if first else self.network(meta)
        o2, a2, r2, _ = self._play(env, obs, env.steps - first, detach(adapted) if first else None, self.generator)
        taken = torch.stack([a2.float(), advantages(r2, horizon)], -1)
        if first:
            loss = batched_loss(self.loss, adapted, o2, taken).mean()
        else:
            loss = batched_loss(self.loss, adapted, o2, taken, params_batched=False).mean()
        self.outer.step(loss=loss)
        return {"loss": -torch.cat([r1, r2], 1).sum(1).mean().detach()}

    def act(self, history: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The next action ``[tasks]`` after a task's observations so far, ``history [tasks, t, obs]``.

        Past the first episodes (as many as in training), the policy adapts on them first.
        """
        if self.task_shape is None:
            raise ValueError(f"{self.name} has not played a task yet: it does not know when to adapt")
        history = history.to(self.device)
        steps, horizon = self.task_shape
        first = explore_steps(steps, horizon)
        params = None
        if first and history.shape[1] > first:
            logits = self.backbone(history[:, :1])
            actions, rewards = taken_in(history[:, : first + 1], logits.shape[-1])
            with torch.no_grad():
                params = detach(self._adapt(detach(self.params), history[:, :first], actions, rewards, horizon,
                                            first_order=True))
        return self._act(history[:, -1], params, generator)

    def predict(self, batch: Any, steps: int | None = None) -> Tensor:
        """Not a supervised learner: RL families score ``total_reward``."""
        raise TypeError(f"{self.name} acts on RL tasks: use total_reward(batch, generator)")

    def evaluate(self, batch: Any, steps: int | None = None) -> dict[str, Tensor]:
        """Not a supervised learner."""
        raise TypeError(f"{self.name} acts on RL tasks: the family scores it (score_learner)")

    def adapt(self, support_x: Tensor, support_y: Tensor, steps: int | None = None) -> Any:
        """Not a supervised learner: a task is played (``play``), adapting after its first episodes."""
        raise TypeError(f"{self.name} learns an RL task by playing it: use play(batch, generator) or total_reward")


class PolicyGradientFOMAML(PolicyGradientMAML):
    """First-order MAML on RL tasks: the inner policy gradient held constant in the meta-gradient."""

    name: ClassVar[str] = "fomaml"
    first_order: ClassVar[bool] = True


ON_RL = {"maml": PolicyGradientMAML, "fomaml": PolicyGradientFOMAML}
