"""MAML and first-order MAML on the functional core: exact meta-gradients, batching, first vs second order."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from metaopt.learners import MAML
from metaopt.models import MLP
from tests.helpers import finite_difference_grad, relative_error, scores, sine_batch, tiny_learner


def autograd_meta_grad(learner, batch) -> dict[str, torch.Tensor]:
    for p in learner.meta_parameters().values():
        p.grad = None
    learner.meta_loss(batch).backward()
    return {name: p.grad.clone() for name, p in learner.params.items()}


@pytest.mark.parametrize("steps", [1, 3])
def test_second_order_maml_meta_gradient_matches_finite_differences(steps):
    learner = tiny_learner("maml", {"inner_lr": 0.1, "inner_steps": steps})
    batch = sine_batch(3)
    analytic = autograd_meta_grad(learner, batch)
    numeric = finite_difference_grad(lambda: learner.meta_loss(batch), learner.params)
    assert relative_error(analytic, numeric) < 1e-6


def test_vmapped_meta_batch_equals_per_task_loop():
    learner = tiny_learner("maml", {"inner_lr": 0.1, "inner_steps": 2})
    batch = sine_batch(4)
    batched_loss = learner.meta_loss(batch)
    batched_grad = torch.autograd.grad(batched_loss, list(learner.params.values()))

    # Reference: plain autograd, one task at a time, no torch.func.
    losses = []
    for t in range(batch.num_tasks):
        params = dict(learner.params)
        for _ in range(2):
            loss = torch.nn.functional.mse_loss(functional_call(learner.backbone, params, batch.support_x[t]), batch.support_y[t])
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
            params = {k: p - 0.1 * g for (k, p), g in zip(params.items(), grads)}
        losses.append(torch.nn.functional.mse_loss(functional_call(learner.backbone, params, batch.query_x[t]), batch.query_y[t]))
    loop_loss = torch.stack(losses).mean()
    loop_grad = torch.autograd.grad(loop_loss, list(learner.params.values()))

    assert abs(batched_loss.item() - loop_loss.item()) < 1e-6
    for a, b in zip(batched_grad, loop_grad):
        assert (a - b).abs().max().item() < 1e-6


def test_first_order_differs_from_second_order_and_drops_the_hessian_term():
    batch = sine_batch(3)
    second = autograd_meta_grad(tiny_learner("maml", {"inner_lr": 0.1}), batch)
    fo_learner = tiny_learner("fomaml", {"inner_lr": 0.1})
    first = autograd_meta_grad(fo_learner, batch)
    assert relative_error(first, second) > 1e-3

    # First order = gradient of the query loss at the adapted parameters, averaged over tasks.
    adapted = fo_learner.adapt_batch(batch, first_order=True)
    expected = {k: torch.zeros_like(p) for k, p in fo_learner.params.items()}
    for t in range(batch.num_tasks):
        phi = {k: v[t].detach().requires_grad_() for k, v in adapted.items()}
        loss = torch.nn.functional.mse_loss(functional_call(fo_learner.backbone, phi, batch.query_x[t]), batch.query_y[t])
        for (k, _), g in zip(phi.items(), torch.autograd.grad(loss, list(phi.values()))):
            expected[k] += g / batch.num_tasks
    assert relative_error(first, expected) < 1e-10


def test_meta_training_reduces_post_adaptation_loss():
    torch.manual_seed(0)
    learner = MAML(MLP(in_features=1, out_features=1), {"inner_lr": 0.01, "outer_lr": 0.003}, task_kind="regression")
    val = sine_batch(50, seed=99, dtype=torch.float32)
    before = scores(learner, val)["loss"].mean().item()
    for i in range(300):
        learner.meta_step(sine_batch(10, seed=i, dtype=torch.float32))
    after = scores(learner, val)
    assert after["loss"].mean().item() < before
    assert after["loss"].shape == (50,)
    assert after["loss"].mean() < scores(learner, val, steps=0)["loss"].mean()  # adaptation helps


def test_adapt_returns_a_predictor_for_one_task():
    learner = tiny_learner("maml", {"inner_lr": 0.05, "inner_steps": 5})
    batch = sine_batch(1)
    predict = learner.adapt(batch.support_x[0], batch.support_y[0])
    out = predict(batch.support_x[0])
    assert out.shape == batch.support_y[0].shape
    fitted = torch.nn.functional.mse_loss(out, batch.support_y[0])
    unadapted = torch.nn.functional.mse_loss(learner.backbone(batch.support_x[0]), batch.support_y[0])
    assert fitted < unadapted


def test_unknown_and_invalid_hyperparameters_are_rejected():
    with pytest.raises(ValueError, match="unknown hyperparameter 'inner_rate'.*allowed: .*inner_lr"):
        tiny_learner("maml", {"inner_rate": 0.1})
    with pytest.raises(ValueError, match="inner_lr must be > 0"):
        tiny_learner("maml", {"inner_lr": -0.1})
    with pytest.raises(ValueError, match="inner_steps must be an integer"):
        tiny_learner("maml", {"inner_steps": 1.5})
