"""MAML++ (Antoniou, Edwards & Storkey, "How to train your MAML", ICLR 2019).

On top of MAML:
- LSLR: a learned learning rate per layer (parameter tensor) and per inner step,
  alpha[name][t], starting at ``inner_lr``.
- MSL: the outer loss is sum_t w_t L_query(theta_t) over every inner step t; the
  weights start uniform and anneal toward the last step over the first
  ``msl_anneal`` fraction of training (the paper's importance vector, with its
  floor of 0.03/N for the earlier steps).
- DA: derivative-order annealing, first order for the first ``first_order_until``
  fraction of training, second order after.
- CA: cosine annealing of the outer learning rate over the training budget, down
  to ``min_outer_lr`` (the outer step's ``outer_schedule``, cosine by default here).
- BNWB / BNRS: per-step batch-norm weights and biases. After inner step t the
  network's batch-norm affine parameters are beta[name][t] (step 0 uses the
  network's own); they are meta-learned and not adapted in the inner loop, as in
  the authors' code. Batch-norm statistics are always the current batch's (no
  running statistics), so they are per step and per task. The MLP has no batch norm.
The schedules need the budget (``max_iterations``); without one MSL and DA are off
and the outer learning rate stays constant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from metaopt.learners.base import POSITIVE_FLOAT, HParam
from metaopt.learners.outer import OUTER_HPARAMS
from metaopt.learners.core import Params, Step, adapted_query_losses
from metaopt.learners.gradient import GRADIENT_HPARAMS, GradientLearner, with_traced
from metaopt.tasks.base import TaskBatch

FRACTION = dict(type=float, minimum=0.0, maximum=1.0)


MAMLPP_HPARAMS: dict[str, HParam] = {
    **GRADIENT_HPARAMS,
    "inner_steps": HParam(type=int, default=5, minimum=1, help="inner-loop steps per task"),
    "learn_lrs": HParam(type=bool, default=True, help="LSLR: learn per-layer, per-step inner learning rates"),
    "msl": HParam(type=bool, default=True, help="multi-step loss"),
    "msl_anneal": HParam(default=0.1, help="fraction of training over which MSL anneals", **FRACTION),
    "first_order_until": HParam(default=0.3, help="fraction of training run first order (DA)", **FRACTION),
    "outer_schedule": HParam(type=str, default="cosine", choices=OUTER_HPARAMS["outer_schedule"].choices,
                             help="outer learning-rate schedule (CA: cosine down to min_outer_lr)"),
    "min_outer_lr": HParam(default=1e-5, help="floor of the cosine outer schedule", **POSITIVE_FLOAT),
    "per_step_bn": HParam(type=bool, default=True, help="BNWB: per-step batch-norm weights and biases",
                         legacy=False),
}


class MAMLPlusPlus(GradientLearner):
    """MAML with LSLR, the multi-step loss, derivative-order annealing and a cosine outer schedule."""

    name = "mamlpp"
    hyperparameters = MAMLPP_HPARAMS

    def per_step_bn_names(self) -> list[str]:
        """The batch-norm weights and biases that are per step (none without BNWB or batch norm)."""
        if not self.hparams["per_step_bn"]:
            return []
        return [f"{module_name}.{name}" if module_name else name
                for module_name, module in self.backbone.named_modules()
                if isinstance(module, nn.modules.batchnorm._BatchNorm)
                for name, _ in module.named_parameters(recurse=False)]

    def adapted_names(self) -> frozenset[str] | None:
        """Every parameter but the per-step batch-norm ones."""
        per_step = set(self.per_step_bn_names())
        return frozenset(name for name in self.params if name not in per_step) if per_step else None

    def make_extras(self) -> dict[str, nn.Parameter]:
        """alpha[name] of shape [inner_steps] per adapted layer (LSLR); beta[name] of shape [inner_steps, ...] (BNWB)."""
        steps, lr = self.hparams["inner_steps"], self.hparams["inner_lr"]
        extras = {f"bnws:{name}": nn.Parameter(self.params[name].detach().expand(steps, *self.params[name].shape).clone())
                  for name in self.per_step_bn_names()}
        if self.hparams["learn_lrs"]:
            adapted = self.adapted_names()
            extras.update({f"lslr:{name}": nn.Parameter(torch.full((steps,), lr, dtype=p.dtype, device=p.device))
                           for name, p in self.params.items() if adapted is None or name in adapted})
        return extras

    def inner_schedule(self, meta: Params, steps: int | None = None) -> Sequence[Step]:
        """Step t uses alpha[:, t] (LSLR) and sets the batch-norm weights to beta[t] (BNWB); steps beyond those
        trained reuse the last trained step's values."""
        trained, bn = self.hparams["inner_steps"], self.per_step_bn_names()
        lslr = [name.removeprefix("lslr:") for name in meta if name.startswith("lslr:")]

        def step(t: int) -> Step:
            t = min(t, trained - 1)
            lr = {name: meta[f"lslr:{name}"][t] for name in lslr} if self.hparams["learn_lrs"] else self.traced(meta,
                                                                                                              "inner_lr")
            return Step(lr, {name: meta[f"bnws:{name}"][t] for name in bn} if bn else None)

        return [step(t) for t in range(self.steps(steps))]

    @property
    def progress(self) -> float | None:
        """Fraction of the budget done, or None without a budget."""
        return None if not self.max_iterations else self.iteration / self.max_iterations

    def msl_weights(self) -> Tensor:
        """Importance of each step's query loss (sums to 1); all on the last step once annealed."""
        n = self.hparams["inner_steps"]
        anneal = self.hparams["msl_anneal"]
        if not self.hparams["msl"] or self.progress is None or anneal == 0 or n == 1:
            return torch.nn.functional.one_hot(torch.tensor(n - 1), n).float()
        done = min(1.0, self.progress / anneal)
        floor = 0.03 / n
        weights = torch.full((n,), max(1 / n - done / n, floor))
        weights[-1] = min(1 / n + done * (n - 1) / n, 1 - (n - 1) * floor)
        return weights

    def current_first_order(self) -> bool:
        """First order while inside the DA window."""
        return self.progress is not None and self.progress < self.hparams["first_order_until"]

    def loss_inputs(self) -> dict[str, Any]:
        """The derivative order now, and the multi-step loss weights while not all on the last step.

        Computed outside the meta-loss so that a compiled meta-gradient sees them as
        inputs (at most four graphs) instead of recompiling as the iteration count moves.
        """
        inputs: dict[str, Any] = {"first_order": self.current_first_order()}
        weights = self.msl_weights()
        if weights[:-1].any():
            inputs["msl_weights"] = weights.to(self.device, next(iter(self.params.values())).dtype)
        return inputs

    def meta_loss(self, batch: TaskBatch, meta: Params | None = None, inputs: dict[str, Tensor] | None = None) -> Tensor:
        """The MSL-weighted sum over steps of the mean query loss."""
        meta = self.meta_parameters() if meta is None else meta
        inputs = self.loss_inputs() if inputs is None else inputs
        inner = self.inner_loop(with_traced(meta, inputs), first_order=inputs["first_order"])
        params = self.network(meta)
        if "msl_weights" in inputs:
            per_step = adapted_query_losses(self.loss, params, batch, inner, every_step=True)  # [tasks, steps]
            return (per_step.mean(0) * inputs["msl_weights"]).sum()
        return adapted_query_losses(self.loss, params, batch, inner).mean()
