"""A learner of its own hyperparameters by gradient: inner learning rates, inner weight decay, outer learning rate.

It wraps a base method (MAML, first-order MAML, ANIL or MAML++: any gradient learner that
exposes its inner loop) without changing it, and learns
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
The wrapping is composition: the learned rates replace the base's step sizes and the
learned decay joins the front of its chain of gradient transforms (an edit of its inner
loop); Adam-HD and the clamps act around its outer step (an ``OuterTransform``).
Integer and categorical settings (inner steps, the base method, meta-batch) and
anything not differentiable stay with Optuna.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from metaopt.learners.base import POSITIVE_FLOAT, HParam, MetaLearner
from metaopt.learners.core import InnerLoop, Params
from metaopt.learners.gradient import GradientLearner
from metaopt.learners.mamlpp import MAMLPP_HPARAMS
from metaopt.learners.outer import OuterStep
from metaopt.learners.transforms import WeightDecay, chain
from metaopt.tasks.base import TaskBatch, TaskKind

BASES = ("maml", "fomaml", "anil", "mamlpp")
# Settings of a base that this learner takes over: it learns the inner rates itself, moves the outer rate
# by Adam-HD instead of a schedule, and keeps batch-norm weights shared across inner steps.
BASE_SETTINGS = {"learn_lrs": False, "per_step_bn": False, "outer_schedule": "constant"}


class HyperGrad(MetaLearner):
    """A base method whose continuous hyperparameters are learned by gradient as it meta-trains."""

    name = "hypergrad"
    compilable = True
    hyperparameters = {
        **{k: v for k, v in MAMLPP_HPARAMS.items() if k not in BASE_SETTINGS},
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

    def __init__(self, backbone: nn.Module, hparams: Mapping[str, Any] | None = None, *, task_kind: TaskKind,
                 max_iterations: int | None = None, n_way: int | None = None, compile: bool = False) -> None:
        from metaopt.learners import LEARNERS

        self.base: GradientLearner | None = None
        super().__init__(backbone, hparams, task_kind=task_kind, max_iterations=max_iterations, n_way=n_way)
        h = self.hparams
        if not h["min_inner_lr"] <= h["inner_lr"] <= h["max_inner_lr"]:
            raise ValueError("inner_lr must lie in [min_inner_lr, max_inner_lr]")
        base = LEARNERS[h["base"]]
        settings = {k: v for k, v in {**h, **BASE_SETTINGS}.items() if k in base.hyperparameters}
        self.base = base(backbone, settings, task_kind=task_kind, max_iterations=max_iterations, n_way=n_way)
        names = self.base.adapted_names()
        self.adapting = [name for name in self.base.params if names is None or name in names]
        learned = self._make_learned()
        self.base.extras.update(learned)
        self.base.inner_edits.append(self._tuned)
        probe = next(iter(self.base.params.values()))
        self.rates = LearnedRates(self.base.params, learned, h)
        # The network's rate is a tensor on the parameters' device, so Adam-HD moves it without
        # reading it back to the host (``capturable`` Adam on a GPU).
        self.outer = self.base.outer = OuterStep(
            self.base.meta_parameters(), lr=h["outer_lr"], max_grad_norm=h["max_grad_norm"], transform=self.rates,
            groups=[{"names": list(self.base.params),
                     "lr": torch.tensor(h["outer_lr"], dtype=probe.dtype, device=probe.device)},
                    {"names": list(learned), "lr": h["hyper_lr"]}],
            capturable=probe.device.type == "cuda")
        if compile:
            self.compile()

    # -- the learned hyperparameters, and how they enter the base's inner loop ---------
    def _make_learned(self) -> dict[str, nn.Parameter]:
        """log alpha[name] of shape [inner_steps] per adapted layer (one for all with ``shared_lr``), log weight decay."""
        h, probe = self.hparams, next(iter(self.base.params.values()))
        names = ["*"] if h["shared_lr"] else self.adapting
        learned = {f"log_lr:{name}": nn.Parameter(torch.full((1 if name == "*" else h["inner_steps"],),
                                                             math.log(h["inner_lr"]), dtype=probe.dtype,
                                                             device=probe.device))
                   for name in names}
        learned["log_wd"] = nn.Parameter(torch.tensor(math.log(h["weight_decay"]), dtype=probe.dtype,
                                                      device=probe.device))
        return learned

    def _tuned(self, loop: InnerLoop, meta: Params) -> InnerLoop:
        """The base's loop with exp(log alpha[name][t]) as step t's rates (later steps reuse the last trained
        step's) and the learned weight decay at the front of its transform."""
        trained = self.hparams["inner_steps"]
        if self.hparams["shared_lr"]:
            rates = [meta["log_lr:*"][0].exp()] * len(loop.steps)
        else:
            rates = [{name: meta[f"log_lr:{name}"][min(t, trained - 1)].exp() for name in self.adapting}
                     for t in range(len(loop.steps))]
        return replace(loop, steps=[replace(step, lr=lr) for step, lr in zip(loop.steps, rates)],
                       transform=chain(WeightDecay(meta["log_wd"].exp()), loop.transform))

    # -- the learner contract, through the base ----------------------------------------
    @property
    def max_iterations(self) -> int | None:
        """The training budget (the base's schedules read it)."""
        return self._max_iterations if self.base is None else self.base.max_iterations

    @max_iterations.setter
    def max_iterations(self, value: int | None) -> None:
        self._max_iterations = value
        if self.base is not None:
            self.base.max_iterations = value

    @property
    def params(self) -> Params:
        """The network's parameters."""
        return self.base.params

    @property
    def extras(self) -> dict[str, nn.Parameter]:
        """The learned log rates and log weight decay (and the base's own extras, if any)."""
        return self.base.extras

    @property
    def outer_lr(self) -> float:
        """The outer learning rate now (read from the device: for logging, not for every step)."""
        return self.outer.lr

    @property
    def outer_hypergradient(self) -> Tensor | None:
        """Adam-HD's last dL/d(outer lr) (None before it has a horizon)."""
        return self.rates.outer_hypergradient

    def meta_parameters(self) -> dict[str, Tensor]:
        """The network's parameters and the learned hyperparameters."""
        return self.base.meta_parameters()

    def meta_loss(self, batch: TaskBatch, meta: Params | None = None, inputs: dict[str, Tensor] | None = None) -> Tensor:
        """The base's meta-loss under the learned rates and decay."""
        return self.base.meta_loss(batch, meta, inputs)

    def inner_loop(self, meta: Params | None = None, **options: Any) -> InnerLoop:
        """The base's inner loop under the learned rates and decay."""
        return self.base.inner_loop(meta, **options)

    def compile(self) -> None:
        """Compile the base's meta-gradient (the learned values are among its inputs)."""
        self.base.compile()

    def meta_step(self, batch: TaskBatch) -> dict[str, Tensor]:
        """The base's meta-step; Adam-HD and the clamps act around its outer step."""
        return self.base.meta_step(batch)

    def predict(self, batch: TaskBatch, steps: int | None = None) -> Tensor:
        """The base's predictions under the learned rates and decay."""
        return self.base.predict(batch, steps)

    def adapt(self, support_x: Tensor, support_y: Tensor, steps: int | None = None) -> Any:
        """The base's adaptation under the learned rates and decay."""
        return self.base.adapt(support_x, support_y, steps)

    def learned_hyperparameters(self) -> dict[str, float]:
        """Every learned value, for logging: ``inner_lr/<layer>/<step>``, ``weight_decay``, ``outer_lr``.

        (A trial logs them as ``hyper/*`` metrics and draws them by meta-iteration.)
        """
        learned = self.rates.learned
        values = {f"inner_lr/{k.removeprefix('log_lr:')}/{t}": v.item()
                  for k, p in learned.items() if k.startswith("log_lr:") for t, v in enumerate(p.detach().exp())}
        values["weight_decay"] = learned["log_wd"].detach().exp().item()
        values["outer_lr"] = self.outer_lr
        return values


class LearnedRates:
    """Around the outer step: Adam-HD on the outer learning rate, and the learned log rates kept in their ranges."""

    def __init__(self, network: Mapping[str, Tensor], learned: Mapping[str, Tensor], hparams: Mapping[str, Any]) -> None:
        self.network, self.learned, self.hparams = dict(network), dict(learned), hparams
        self._directions: deque[dict[str, Tensor]] = deque()  # the last hd_horizon Adam directions u
        self._direction_sum: dict[str, Tensor] = {}  # their sum, kept as they come and go
        self._before: dict[str, Tensor] = {}
        self.outer_hypergradient: Tensor | None = None

    def before_step(self, outer: OuterStep) -> None:
        """Adam-HD: move the outer learning rate against dL/dalpha before the step uses it."""
        group = outer.optimizer.param_groups[0]
        self._before = {name: p.detach().clone() for name, p in self.network.items()}
        if not self.hparams["learn_outer_lr"] or not self._directions:
            self.outer_hypergradient = None
            return
        with torch.no_grad():  # dL(theta_t)/dalpha = -g_t . sum_k u_{t-k}
            hyper = -sum((p.grad * self._direction_sum[name]).sum() for name, p in self.network.items())
            self.outer_hypergradient = hyper
            # A trust region on the step: one loss spike (an inner loop that blew up on one
            # batch) gives a hypergradient millions of times the usual, which would throw the
            # rate to its ceiling in one step and the network to NaN the next.
            lr, change = group["lr"], self.hparams["hd_max_change"]
            moved = torch.minimum(torch.maximum(lr - self.hparams["hd_beta"] * hyper, lr / (1 + change)), lr * (1 + change))
            lr.copy_(moved.clamp(self.hparams["min_outer_lr"], self.hparams["max_outer_lr"]))

    def after_step(self, outer: OuterStep) -> None:
        """Record the Adam direction this step took; clamp the log rates and the log weight decay."""
        with torch.no_grad():
            lr = outer.optimizer.param_groups[0]["lr"]  # the rate this step used
            self._remember({name: (self._before[name] - p.detach()) / lr for name, p in self.network.items()})
            low, high = math.log(self.hparams["min_inner_lr"]), math.log(self.hparams["max_inner_lr"])
            for name, p in self.learned.items():
                if name.startswith("log_lr:"):
                    p.clamp_(low, high)
            self.learned["log_wd"].clamp_(math.log(self.hparams["min_weight_decay"]),
                                          math.log(self.hparams["max_weight_decay"]))

    def _remember(self, direction: dict[str, Tensor]) -> None:
        """Add an Adam direction to the horizon (dropping the oldest beyond ``hd_horizon``) and to its sum."""
        self._directions.append(direction)
        for name, u in direction.items():
            self._direction_sum[name] = self._direction_sum[name] + u if name in self._direction_sum else u
        while len(self._directions) > self.hparams["hd_horizon"]:
            for name, u in self._directions.popleft().items():
                self._direction_sum[name] = self._direction_sum[name] - u

    def state_dict(self) -> dict[str, Any]:
        """Adam-HD's recent directions, so a resumed run steps the outer rate as it would have."""
        return {"hd_directions": [dict(u) for u in self._directions]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore Adam-HD's recent directions."""
        self._directions.clear()
        self._direction_sum = {}
        for u in state.get("hd_directions", []):
            self._remember({name: v.to(self.network[name]) for name, v in u.items()})
