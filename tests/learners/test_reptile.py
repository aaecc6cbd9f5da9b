"""Reptile's batched update equals its definition."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from tests.helpers import sine_batch, tiny_learner


def test_reptile_update_equals_definition():
    lr, steps, eps = 0.05, 3, 0.5
    learner = tiny_learner("reptile", {"inner_lr": lr, "inner_steps": steps, "outer_lr": eps})
    batch = sine_batch(4)
    theta = {k: p.detach().clone() for k, p in learner.params.items()}

    # Definition: per task, k steps of SGD on the support set; theta + eps * (mean phi - theta).
    phis = []
    for t in range(batch.num_tasks):
        phi = {k: v.clone().requires_grad_() for k, v in theta.items()}
        for _ in range(steps):
            loss = torch.nn.functional.mse_loss(functional_call(learner.backbone, phi, batch.support_x[t]), batch.support_y[t])
            grads = torch.autograd.grad(loss, list(phi.values()))
            phi = {k: (p - lr * g).detach().requires_grad_() for (k, p), g in zip(phi.items(), grads)}
        phis.append(phi)
    expected = {k: theta[k] + eps * (torch.stack([phi[k] for phi in phis]).mean(0) - theta[k]) for k in theta}

    learner.meta_step(batch)
    for k, p in learner.params.items():
        assert torch.allclose(p.detach(), expected[k], atol=1e-12, rtol=0), k


@pytest.mark.parametrize("steps", [1, 2])
def test_reptile_with_one_task_and_unit_step_jumps_to_the_adapted_parameters(steps):
    learner = tiny_learner("reptile", {"inner_lr": 0.1, "inner_steps": steps, "outer_lr": 1.0})
    batch = sine_batch(1)
    adapted = learner.adapt_batch(batch, first_order=True)
    learner.meta_step(batch)
    for k, p in learner.params.items():
        assert torch.allclose(p.detach(), adapted[k][0].detach(), atol=1e-12)
