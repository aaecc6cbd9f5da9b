"""A learner of its own hyperparameters by gradient: inner learning rates, inner weight decay, outer learning rate.

On a base method (MAML, first-order MAML, ANIL or MAML++), it learns
- a learning rate per adapted layer and per inner step, and an inner L2 weight decay,
  stored as logarithms and clamped to configured ranges; their gradient is the
  query loss differentiated through the whole unrolled inner loop (so the inner
  horizon is exact, not greedy), stepped by their own Adam at ``hyper_lr``;
- the outer learning rate by hypergradient descent on the outer Adam (Adam-HD,
  Baydin et al. 2018): alpha <- alpha - beta * dL/dalpha with
  dL(theta_t)/dalpha = -g_t . sum_{k=1..H} u_{t-k}, where u is the Adam direction of
  an earlier step. H = 1 is Baydin's greedy rule, which suffers the short-horizon
  bias (Wu et al. 2018): noise in consecutive gradients drives alpha down. The
  default H = 10 counts alpha's effect over the last ten steps (treating the later
  updates' Jacobians as the identity), which damps that bias.
Integer and categorical settings (inner steps, the base method, meta-batch) and
anything not differentiable stay with Optuna.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from metaopt.learners.base import POSITIVE_FLOAT, HParam
from metaopt.learners.core import LearningRate, Params
from metaopt.learners.gradient import head_names
from metaopt.learners.mamlpp import MAMLPlusPlus

BASES = ("maml", "fomaml", "anil", "mamlpp")


class HyperGrad(MAMLPlusPlus):
    """A base method whose continuous hyperparameters are learned by gradient as it meta-trains."""

    name = "hypergrad"
    hyperparameters = {
        **{k: v for k, v in MAMLPlusPlus.hyperparameters.items() if k not in ("learn_lrs", "per_step_bn")},
        "inner_steps": HParam(type=int, default=1, minimum=1, help="inner-loop steps per task"),
        "base": HParam(type=str, default="maml", choices=BASES, help="the method whose hyperparameters are learned"),
        "shared_lr": HParam(type=bool, default=False, help="one learned inner rate for every layer and step"),
        "weight_decay": HParam(default=1e-4, help="initial inner L2 weight decay", **POSITIVE_FLOAT),
        "min_inner_lr": HParam(default=1e-4, help="lower clamp of the inner learning rates", **POSITIVE_FLOAT),
        "max_inner_lr": HParam(default=1.0, help="upper clamp of the inner learning rates", **POSITIVE_FLOAT),
        "min_weight_decay": HParam(default=1e-6, help="lower clamp of the weight decay", **POSITIVE_FLOAT),
        "max_weight_decay": HParam(default=0.1, help="upper clamp of the weight decay", **POSITIVE_FLOAT),
        "hyper_lr": HParam(default=0.01, help="Adam step on the log hyperparameters", **POSITIVE_FLOAT),
        "learn_outer_lr": HParam(type=bool, default=True, help="Adam-HD on the outer learning rate"),
        "hd_beta": HParam(default=1e-7, help="Adam-HD step size beta (Baydin et al.: 1e-7)", **POSITIVE_FLOAT),
        "hd_horizon": HParam(type=int, default=10, minimum=1, help="earlier steps in the outer-lr hypergradient"),
        # One batch whose inner loop blew up gives a meta-gradient ~1e5 times the usual; unclipped,
        # it throws Adam-HD's rate to its ceiling, or fills Adam's second moments and stalls training.
        "max_grad_norm": HParam(default=10.0, help="clip the meta-gradient (network and hyperparameters) to this norm",
                                **POSITIVE_FLOAT),
        "hd_max_change": HParam(default=0.1, help="Adam-HD moves the outer lr by at most this fraction a step",
                                **POSITIVE_FLOAT),
        "min_outer_lr": HParam(default=1e-5, help="lower clamp of the outer learning rate", **POSITIVE_FLOAT),
        "max_outer_lr": HParam(default=0.1, help="upper clamp of the outer learning rate", **POSITIVE_FLOAT),
    }

    def __init__(self, backbone: nn.Module, hparams: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._directions: deque[dict[str, Tensor]] = deque()  # the last hd_horizon Adam directions u
        self._direction_sum: dict[str, Tensor] = {}  # their sum, kept as they come and go
        self.outer_hypergradient: Tensor | None = None
        super().__init__(backbone, hparams, **kwargs)
        if not self.hparams["min_inner_lr"] <= self.hparams["inner_lr"] <= self.hparams["max_inner_lr"]:
            raise ValueError("inner_lr must lie in [min_inner_lr, max_inner_lr]")
        self.first_order = self.hparams["base"] == "fomaml"

    # -- the base method ------------------------------------------------------------
    def adapted_names(self) -> frozenset[str] | None:
        """ANIL adapts the head only; the others every parameter."""
        return head_names(self.backbone) if self.hparams["base"] == "anil" else None

    def make_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler | None:
        """No schedule: Adam-HD moves the outer learning rate."""
        return None

    def msl_weights(self) -> Tensor:
        """MAML++'s multi-step loss with base mamlpp; the last step only otherwise."""
        if self.hparams["base"] == "mamlpp":
            return super().msl_weights()
        n = self.hparams["inner_steps"]
        return torch.nn.functional.one_hot(torch.tensor(n - 1), n).float()

    def current_first_order(self) -> bool:
        """First-order MAML always; MAML++ during its derivative-order annealing; else second order."""
        if self.hparams["base"] == "mamlpp":
            return super().current_first_order()
        return self.hparams["base"] == "fomaml"

    # -- the learned hyperparameters ------------------------------------------------
    def _adapting(self) -> list[str]:
        names = self.adapted_names()
        return [name for name in self.params if names is None or name in names]

    def make_extras(self) -> dict[str, nn.Parameter]:
        """log alpha[name] of shape [inner_steps] per adapted layer, and log weight decay."""
        steps, probe = self.hparams["inner_steps"], next(iter(self.params.values()))
        names = ["*"] if self.hparams["shared_lr"] else self._adapting()
        extras = {f"log_lr:{name}": nn.Parameter(torch.full((1 if name == "*" else steps,),
                                                            math.log(self.hparams["inner_lr"]),
                                                            dtype=probe.dtype, device=probe.device))
                  for name in names}
        extras["log_wd"] = nn.Parameter(torch.tensor(math.log(self.hparams["weight_decay"]),
                                                     dtype=probe.dtype, device=probe.device))
        return extras

    def make_optimizer(self) -> torch.optim.Optimizer:
        """Adam with two groups: the network at ``outer_lr`` (moved by Adam-HD), the log hyperparameters at ``hyper_lr``.

        The network's rate is a tensor on the parameters' device, so Adam-HD moves it
        without reading it back to the host (``capturable`` Adam on a GPU).
        """
        probe = next(iter(self.params.values()))
        return torch.optim.Adam([
            {"params": list(self.params.values()),
             "lr": torch.tensor(self.hparams["outer_lr"], dtype=probe.dtype, device=probe.device)},
            {"params": list(self.extras.values()), "lr": self.hparams["hyper_lr"]},
        ], capturable=probe.device.type == "cuda")

    def inner_lrs(self, meta: Params, steps: int | None = None) -> Sequence[LearningRate]:
        """exp(log alpha[name][t]); steps beyond those trained reuse the last step's rates."""
        if self.hparams["shared_lr"]:
            return [meta["log_lr:*"][0].exp()] * self.steps(steps)
        trained = self.hparams["inner_steps"]
        return [{name: meta[f"log_lr:{name}"][min(t, trained - 1)].exp() for name in self._adapting()}
                for t in range(self.steps(steps))]

    def inner_weight_decay(self, meta: Params) -> LearningRate:
        """exp(log weight decay)."""
        return meta["log_wd"].exp()

    @property
    def outer_lr(self) -> float:
        """The outer learning rate now (read from the device: for logging, not for every step)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def learned_hyperparameters(self) -> dict[str, float]:
        """Every learned value, for logging: ``inner_lr/<layer>/<step>``, ``weight_decay``, ``outer_lr``.

        (A trial logs them as ``hyper/*`` metrics and draws them by meta-iteration.)
        """
        values = {f"inner_lr/{k.removeprefix('log_lr:')}/{t}": v.item()
                  for k, p in self.extras.items() if k.startswith("log_lr:") for t, v in enumerate(p.detach().exp())}
        values["weight_decay"] = self.extras["log_wd"].detach().exp().item()
        values["outer_lr"] = self.outer_lr
        return values

    def state_dict(self) -> dict[str, Any]:
        """The base state and Adam-HD's recent directions, so a resumed run steps the outer rate as it would have."""
        return {**super().state_dict(), "hd_directions": [dict(u) for u in self._directions]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the base state and Adam-HD's recent directions."""
        super().load_state_dict(state)
        self._directions.clear()
        self._direction_sum = {}
        for u in state.get("hd_directions", []):
            self._remember({name: v.to(self.params[name]) for name, v in u.items()})

    # -- the outer step -------------------------------------------------------------
    def before_outer_step(self) -> None:
        """Adam-HD: move the outer learning rate against dL/dalpha before the step uses it."""
        group = self.optimizer.param_groups[0]
        self._before = {name: p.detach().clone() for name, p in self.params.items()}
        if not self.hparams["learn_outer_lr"] or not self._directions:
            self.outer_hypergradient = None
            return
        with torch.no_grad():  # dL(theta_t)/dalpha = -g_t . sum_k u_{t-k}
            hyper = -sum((self.params[name].grad * self._direction_sum[name]).sum() for name in self.params)
            self.outer_hypergradient = hyper
            # A trust region on the step: one loss spike (an inner loop that blew up on one
            # batch) gives a hypergradient millions of times the usual, which would throw the
            # rate to its ceiling in one step and the network to NaN the next.
            lr, change = group["lr"], self.hparams["hd_max_change"]
            moved = torch.minimum(torch.maximum(lr - self.hparams["hd_beta"] * hyper, lr / (1 + change)), lr * (1 + change))
            lr.copy_(moved.clamp(self.hparams["min_outer_lr"], self.hparams["max_outer_lr"]))

    def _remember(self, direction: dict[str, Tensor]) -> None:
        """Add an Adam direction to the horizon (dropping the oldest beyond ``hd_horizon``) and to its sum."""
        self._directions.append(direction)
        for name, u in direction.items():
            self._direction_sum[name] = self._direction_sum[name] + u if name in self._direction_sum else u
        while len(self._directions) > self.hparams["hd_horizon"]:
            for name, u in self._directions.popleft().items():
                self._direction_sum[name] = self._direction_sum[name] - u

    def meta_step(self, batch: Any) -> dict[str, Tensor]:
        """The base method's outer step; then record the Adam direction and clamp the log hyperparameters."""
        out = super().meta_step(batch)
        with torch.no_grad():
            lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used
            direction = {name: (self._before[name] - p.detach()) / lr for name, p in self.params.items()}
            self._remember(direction)
            low, high = math.log(self.hparams["min_inner_lr"]), math.log(self.hparams["max_inner_lr"])
            for name, p in self.extras.items():
                if name.startswith("log_lr:"):
                    p.clamp_(low, high)
            self.extras["log_wd"].clamp_(math.log(self.hparams["min_weight_decay"]),
                                         math.log(self.hparams["max_weight_decay"]))
        return out
