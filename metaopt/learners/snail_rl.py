"""``snail`` on RL families (Mishra et al. 2018, section 5.2): RL²'s training loop with a SNAIL policy for the GRU.

The policy reads a task's history of observations (previous action one-hot, reward, done
flag, and for MDPs the state one-hot) through a linear map to ``filters`` channels, two TC
blocks (causal convolutions with dilations up to ``horizon``) and one causal attention block,
as the paper's bandit and MDP architecture, then a policy head and a value head. It is
trained exactly as RL² is (``rl2.py``: PPO with GAE over whole tasks, many tasks at once);
at each step the policy reads the whole history so far (its "memory" is that history, reset
per task; playing, each block keeps what it needs of the earlier steps — a TC block its inputs, attention its
keys and values — and computes the new step alone). Nothing
is adapted by gradient at test.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from metaopt.learners.base import HParam
from metaopt.learners.rl2 import RL2
from metaopt.learners.snail import snail_blocks


class SnailPolicy(nn.Module):
    """Linear, TC, TC, attention over a history ``[tasks, T, obs]`` -> (action logits, value) at every step."""

    def __init__(self, observation_size: int, actions: int, filters: int, key_size: int, value_size: int,
                 horizon: int) -> None:
        super().__init__()
        self.inputs = nn.Linear(observation_size, filters)
        self.blocks, width = snail_blocks(filters, horizon, filters, key_size, value_size, pattern="TTA")
        self.policy = nn.Linear(width, actions)
        self.value = nn.Linear(width, 1)

    def forward(self, observations: Tensor) -> tuple[Tensor, Tensor]:
        """Logits ``[tasks, T, actions]`` and values ``[tasks, T]`` of observation sequences ``[tasks, T, obs]``."""
        out = self.blocks(self.inputs(observations).transpose(1, 2)).transpose(1, 2)
        return self.policy(out), self.value(out).squeeze(-1)

    def step(self, observation: Tensor, state: list[list] | None) -> tuple[Tensor, Tensor, list[list]]:
        """Logits, value and the next state after one more observation ``[tasks, obs]``: each block's step computed
        alone from what it kept of the earlier steps (the state: a TC block its inputs, attention its keys and
        values), so a task of T steps costs T steps, not T²/2."""
        state = [[] for _ in self.blocks] if state is None else state
        x = self.inputs(observation)
        for block, past in zip(self.blocks, state):
            x = block.step(x, past)
        return self.policy(x), self.value(x).squeeze(-1), state


class SnailRL(RL2):
    """RL² with a SNAIL policy: PPO and GAE over whole tasks, the history read by convolutions and attention."""

    name: ClassVar[str] = "snail"
    hyperparameters: ClassVar[dict[str, HParam]] = {
        **{k: v for k, v in RL2.hyperparameters.items() if k != "hidden"},
        "filters": HParam(type=int, default=32, minimum=1, help="channels of the input map and of each dense block"),
        "key_size": HParam(type=int, default=32, minimum=1, help="attention keys and queries"),
        "value_size": HParam(type=int, default=32, minimum=1, help="attention reads"),
        "horizon": HParam(type=int, default=128, minimum=2,
                          help="the longest history the dilations cover (in a search: the family's task length)"),
    }
    # Dilations past the task's length read padding: at 10 pulls a horizon of 128 costs 4x the step time of 10.
    family_defaults: ClassVar[dict[str, str]] = {"horizon": "steps"}

    @classmethod
    def build_network(cls, backbone: dict[str, Any], *, input_shape: tuple[int, ...], output_size: int,
                      hparams: dict[str, Any]) -> nn.Module:
        """A SNAIL policy over the family's observations (the job's backbone is not used)."""
        return SnailPolicy(int(input_shape[0]), output_size, hparams["filters"], hparams["key_size"],
                           hparams["value_size"], hparams["horizon"])

    @classmethod
    def for_family(cls, observation_size: int, actions: int, hparams: dict[str, Any] | None = None) -> SnailRL:
        """A fresh SNAIL learner whose policy fits the family's observations and actions."""
        resolved = cls.resolve_hparams(hparams or {})
        return cls(cls.build_network({}, input_shape=(observation_size,), output_size=actions, hparams=resolved),
                   resolved)

    def predict(self, batch: Any, steps: int | None = None) -> Tensor:
        """Not a supervised learner here: RL families score ``total_reward``."""
        raise TypeError("snail acts on RL tasks: use total_reward(batch, generator)")

    def adapt(self, support_x: Tensor, support_y: Tensor, steps: int | None = None) -> Any:
        """Not a supervised learner here: a new task is played (``play``), not adapted to."""
        raise TypeError("snail learns an RL task by playing it: use play(batch, generator) or total_reward")
