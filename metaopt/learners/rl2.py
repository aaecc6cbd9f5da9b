"""RL² (Duan et al. 2016): a recurrent policy that learns, across tasks, to explore and exploit within one.

The policy is a GRU over (one-hot previous action, previous reward, done flag, and for
MDPs the one-hot state), with a policy head and a value head; its memory is kept across
a task's pulls or episodes and reset between tasks. Meta-training is PPO with GAE on
whole tasks: each meta-step rolls out ``meta_batch`` tasks at once (every environment a
stacked tensor, one GRU step for all), then takes ``ppo_epochs`` clipped updates over
them. The task's total reward is what it maximises; nothing is adapted by gradient at
test time: a new task is "learned" in the GRU's state as it is played.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from metaopt.tasks.base import TaskKind
from metaopt.learners.base import HParam, MetaLearner
from metaopt.learners.outer import OuterStep
from metaopt.tasks.rl import gumbel_sample

POSITIVE = {"type": float, "minimum": 0.0, "exclusive_minimum": True}


class RecurrentPolicy(nn.Module):
    """GRU -> (action logits, value); ``forward`` over a whole sequence, ``step`` one step at a time."""

    def __init__(self, observation_size: int, actions: int, hidden: int = 256) -> None:
        super().__init__()
        self.gru = nn.GRU(observation_size, hidden, batch_first=True)
        self.policy = nn.Linear(hidden, actions)
        self.value = nn.Linear(hidden, 1)
        self.hidden = hidden

    def forward(self, observations: Tensor) -> tuple[Tensor, Tensor]:
        """Logits ``[tasks, T, actions]`` and values ``[tasks, T]`` of observation sequences ``[tasks, T, obs]``."""
        out, _ = self.gru(observations)
        return self.policy(out), self.value(out).squeeze(-1)

    def step(self, observation: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Logits, value and the next memory for one observation ``[tasks, obs]``."""
        out, state = self.gru(observation[:, None], state)
        out = out[:, 0]
        return self.policy(out), self.value(out).squeeze(-1), state


class RL2(MetaLearner):
    """RL² with PPO and GAE over whole tasks, many tasks stepped at once."""

    name: ClassVar[str] = "rl2"
    task_kinds: ClassVar[tuple[str, ...]] = ("rl",)
    hyperparameters: ClassVar[dict[str, HParam]] = {
        "hidden": HParam(type=int, default=256, minimum=4, help="GRU width (set when the policy is built)"),
        "outer_lr": HParam(default=1e-3, help="Adam learning rate", **POSITIVE),
        "entropy": HParam(type=float, default=0.01, minimum=0.0, help="entropy bonus coefficient"),
        "gae_lambda": HParam(type=float, default=0.3, minimum=0.0, maximum=1.0, help="GAE lambda"),
        "gamma": HParam(type=float, default=0.99, minimum=0.0, maximum=1.0, help="discount within a task"),
        "meta_batch": HParam(type=int, default=128, minimum=1, help="tasks rolled out per meta-step"),
        "ppo_epochs": HParam(type=int, default=4, minimum=1, help="PPO passes over each rollout"),
        "minibatches": HParam(type=int, default=4, minimum=1, help="minibatches (of tasks) per PPO pass"),
        "clip": HParam(type=float, default=0.2, minimum=0.0, exclusive_minimum=True, help="PPO ratio clip"),
        "value_coef": HParam(type=float, default=0.5, minimum=0.0, help="value-loss weight"),
        "max_grad_norm": HParam(type=float, default=0.5, minimum=0.0, exclusive_minimum=True,
                                help="gradient clipping norm"),
        "normalize_returns": HParam(type=bool, default=True, legacy=False,
                                    help="scale rewards by a running std of the discounted returns"),
    }

    def __init__(self, backbone: nn.Module, hparams: dict[str, Any] | None = None, *, task_kind: TaskKind = "rl",
                 max_iterations: int | None = None, n_way: int | None = None) -> None:
        super().__init__(backbone, hparams, task_kind=task_kind, max_iterations=max_iterations, n_way=n_way)
        self.generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
        self.return_scale: float | None = None  # running std of the discounted returns (normalize_returns)

    @classmethod
    def build_network(cls, backbone: dict[str, Any], *, input_shape: tuple[int, ...], output_size: int,
                      hparams: dict[str, Any]) -> nn.Module:
        """A GRU policy of ``hidden`` units over the family's observations (the job's backbone is not used)."""
        return RecurrentPolicy(int(input_shape[0]), output_size, hparams["hidden"])

    @classmethod
    def for_family(cls, observation_size: int, actions: int, hparams: dict[str, Any] | None = None) -> RL2:
        """A fresh RL² learner whose policy fits the family's observations and actions."""
        resolved = cls.resolve_hparams(hparams or {})
        return cls(RecurrentPolicy(observation_size, actions, resolved["hidden"]), resolved)

    def make_outer_step(self) -> OuterStep:
        """Adam (eps 1e-5) over the policy at ``outer_lr``, each PPO update clipped to ``max_grad_norm``."""
        return OuterStep(self.meta_parameters(), lr=self.hparams["outer_lr"], eps=1e-5,
                         max_grad_norm=self.hparams["max_grad_norm"])

    def meta_parameters(self) -> dict[str, Tensor]:
        """The policy's parameters."""
        return dict(self.backbone.named_parameters())

    @torch.no_grad()
    def play(self, batch: Any, generator: torch.Generator, *, greedy: bool = False) -> dict[str, Tensor]:
        """Play every task of ``batch`` once: observations, actions, log-probabilities, values, rewards ``[tasks, T]``."""
        env = batch.environment(generator)
        obs = env.reset().to(self.device)
        state = None
        record: dict[str, list[Tensor]] = {"obs": [], "actions": [], "logp": [], "values": [], "rewards": []}
        for _ in range(env.steps):
            logits, value, state = self.backbone.step(obs, state)
            actions = logits.argmax(-1) if greedy else gumbel_sample(logits, generator)
            record["obs"].append(obs)
            record["actions"].append(actions)
            record["logp"].append(torch.log_softmax(logits, -1).gather(1, actions[:, None]).squeeze(1))
            record["values"].append(value)
            obs, rewards = env.step(actions.cpu())
            obs = obs.to(self.device)
            record["rewards"].append(rewards.to(self.device))
        return {k: torch.stack(v, 1) for k, v in record.items()}

    @torch.no_grad()
    def act(self, history: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The next action ``[tasks]`` after a task's observations so far, ``history [tasks, t, obs]``."""
        logits, _ = self.backbone(history.to(self.device))
        return gumbel_sample(logits[:, -1], generator)

    def total_reward(self, batch: Any, generator: torch.Generator) -> Tensor:
        """The total reward ``[tasks]`` the policy earns on each task of ``batch`` (sampling its actions)."""
        return self.play(batch, generator)["rewards"].sum(1)

    def _scaled(self, rewards: Tensor) -> Tensor:
        """Rewards over the running std of the discounted returns, so values and their loss stay near unit scale.

        Without it, the value loss of tasks with returns in the hundreds (MDPs) swamps the policy
        gradient under the shared gradient clip, and the policy does not learn.
        """
        if not self.hparams["normalize_returns"]:
            return rewards
        returns, running = [], torch.zeros(rewards.shape[0], device=rewards.device)
        for t in reversed(range(rewards.shape[1])):
            running = rewards[:, t] + self.hparams["gamma"] * running
            returns.append(running)
        std = torch.stack(returns).std().item() + 1e-8
        self.return_scale = std if self.return_scale is None else 0.99 * self.return_scale + 0.01 * std
        return rewards / self.return_scale

    def state_dict(self) -> dict[str, Any]:
        """As for every learner, and the running return scale."""
        return {**super().state_dict(), "return_scale": self.return_scale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """As for every learner, and the running return scale."""
        super().load_state_dict(state)
        self.return_scale = state.get("return_scale")

    def _advantages(self, rewards: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        gamma, lam = self.hparams["gamma"], self.hparams["gae_lambda"]
        advantages = torch.zeros_like(rewards)
        running = torch.zeros(rewards.shape[0], device=rewards.device)
        for t in reversed(range(rewards.shape[1])):
            following = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
            delta = rewards[:, t] + gamma * following - values[:, t]
            running = delta + gamma * lam * running
            advantages[:, t] = running
        return advantages, advantages + values

    def meta_step(self, batch: Any) -> dict[str, Tensor]:  # type: ignore[override]
        """Roll out the batch's tasks and take the PPO updates; ``loss`` is minus the mean total reward."""
        played = self.play(batch, self.generator)
        advantages, returns = self._advantages(self._scaled(played["rewards"]), played["values"])
        h = self.hparams
        tasks = played["obs"].shape[0]
        for _ in range(h["ppo_epochs"]):
            order = torch.randperm(tasks, generator=self.generator)
            for part in order.chunk(min(h["minibatches"], tasks)):
                logits, values = self.backbone(played["obs"][part])
                logp_all = torch.log_softmax(logits, -1)
                logp = logp_all.gather(2, played["actions"][part][..., None]).squeeze(-1)
                adv = advantages[part]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                ratio = torch.exp(logp - played["logp"][part])
                policy_loss = -torch.min(ratio * adv, ratio.clamp(1 - h["clip"], 1 + h["clip"]) * adv).mean()
                value_loss = (values - returns[part]).pow(2).mean()
                entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
                loss = policy_loss + h["value_coef"] * value_loss - h["entropy"] * entropy
                self.outer.update(loss=loss)
        self.outer.advance()
        return {"loss": -played["rewards"].sum(1).mean().detach()}

    def predict(self, batch: Any, steps: int | None = None) -> Tensor:
        """Not a supervised learner: RL families score ``total_reward``."""
        raise TypeError("rl2 acts on RL tasks: use total_reward(batch, generator)")

    def adapt(self, support_x: Tensor, support_y: Tensor, steps: int | None = None) -> Any:
        """Not a supervised learner: a new task is played (``play``), not adapted to."""
        raise TypeError("rl2 learns a task by playing it: use play(batch, generator) or total_reward")
