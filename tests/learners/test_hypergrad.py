"""The hypergradient learner: exact hypergradients, none cut from the graph, Adam-HD, clamping."""

from __future__ import annotations

import math

import pytest
import torch

from metaopt.learners.hypergrad import BASES
from tests.helpers import finite_difference_grad, relative_error, sine_batch, tiny_learner

HYPER = {"inner_lr": 0.1, "inner_steps": 3, "weight_decay": 0.05, "outer_lr": 0.01}


def _hyper(learner) -> dict[str, torch.Tensor]:
    return dict(learner.extras)


@pytest.mark.parametrize("base", ["maml", "anil", "mamlpp", "shared"])
def test_hypergradient_of_every_log_rate_and_log_weight_decay_matches_finite_differences(base):
    shared = base == "shared"
    learner = tiny_learner("hypergrad", {**HYPER, "base": "maml" if shared else base, "shared_lr": shared})
    with torch.no_grad():  # distinct rates per layer and step
        for p in learner.extras.values():
            p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=p.dtype))
    if base == "mamlpp":
        learner.max_iterations, learner.iteration = 100, 50  # second order, all weight on the last step
    batch = sine_batch(3)
    hyper = _hyper(learner)
    loss = learner.meta_loss(batch)
    analytic = dict(zip(hyper, torch.autograd.grad(loss, list(hyper.values()))))
    numeric = finite_difference_grad(lambda: learner.meta_loss(batch), hyper)
    assert relative_error(analytic, numeric) < 1e-6
    assert len(analytic["log_wd"].shape) == 0
    assert all(v.shape == ((1,) if shared else (3,)) for k, v in analytic.items() if k != "log_wd")


@pytest.mark.parametrize("base", BASES)
def test_every_learned_hyperparameter_gets_a_nonzero_gradient(base):
    learner = tiny_learner("hypergrad", {**HYPER, "base": base})
    learner.max_iterations = 10
    learner.meta_step(sine_batch(3))
    for name, p in learner.extras.items():
        assert p.grad is not None and p.grad.abs().min() > 0, name  # every step of every layer
    values = learner.learned_hyperparameters()
    assert values["weight_decay"] != HYPER["weight_decay"] and "outer_lr" in values


def test_adam_hd_moves_the_outer_lr_by_autograds_hypergradient():
    learner = tiny_learner("hypergrad", {**HYPER, "hd_horizon": 1, "hd_beta": 1e-3})
    learner.max_iterations = 10
    first, second = sine_batch(3, seed=0), sine_batch(3, seed=1)
    theta_0 = {k: p.detach().clone() for k, p in learner.params.items()}
    alpha_0 = learner.outer_lr
    learner.meta_step(first)
    u = {k: (theta_0[k] - p.detach()) / alpha_0 for k, p in learner.params.items()}  # the Adam direction applied
    theta_1 = {k: p.detach().clone() for k, p in learner.params.items()}

    alpha = torch.tensor(alpha_0, dtype=torch.float64, requires_grad=True)  # L(theta_0 - alpha u) on the next batch
    meta = {**{k: theta_0[k] - alpha * u[k] for k in theta_0}, **{k: p.detach() for k, p in learner.extras.items()}}
    (autograd_hyper,) = torch.autograd.grad(learner.meta_loss(second, meta), alpha)
    assert all(torch.allclose(theta_0[k] - alpha_0 * u[k], theta_1[k]) for k in u)

    learner.meta_step(second)
    assert float(learner.outer_hypergradient) == pytest.approx(autograd_hyper.item(), rel=1e-6)
    assert learner.outer_lr == pytest.approx(alpha_0 - 1e-3 * autograd_hyper.item(), rel=1e-9)


def test_adam_hd_sums_the_directions_of_its_horizon():
    learner = tiny_learner("hypergrad", {**HYPER, "hd_horizon": 3})
    learner.max_iterations = 10
    for seed in range(5):
        learner.meta_step(sine_batch(3, seed=seed))
    rates = learner.rates
    assert len(rates._directions) == 3
    for name, total in rates._direction_sum.items():
        assert torch.allclose(total, sum(u[name] for u in rates._directions), atol=1e-12)


def test_clamping_keeps_every_learned_value_in_its_range():
    ranges = {"min_inner_lr": 0.05, "max_inner_lr": 0.2, "min_weight_decay": 1e-3, "max_weight_decay": 1e-2,
              "min_outer_lr": 0.005, "max_outer_lr": 0.02}
    learner = tiny_learner("hypergrad", {**HYPER, **ranges, "hyper_lr": 10.0, "hd_beta": 10.0, "hd_horizon": 1})
    learner.max_iterations = 20
    for seed in range(6):
        learner.meta_step(sine_batch(3, seed=seed))
        values = learner.learned_hyperparameters()
        for name, value in values.items():
            if name.startswith("inner_lr/"):
                assert 0.05 * (1 - 1e-9) <= value <= 0.2 * (1 + 1e-9)
        assert 1e-3 * (1 - 1e-9) <= values["weight_decay"] <= 1e-2 * (1 + 1e-9)
        assert 0.005 <= values["outer_lr"] <= 0.02
    hit = [v for k, v in learner.learned_hyperparameters().items() if k.startswith("inner_lr/")]
    assert any(math.isclose(v, 0.05, rel_tol=1e-9) or math.isclose(v, 0.2, rel_tol=1e-9) for v in hit)  # pushed out


def test_inner_lr_outside_its_clamp_is_rejected():
    with pytest.raises(ValueError, match="inner_lr must lie in"):
        tiny_learner("hypergrad", {"inner_lr": 2.0})


def test_a_resumed_checkpoint_steps_the_outer_lr_as_the_original_does(tmp_path):
    from metaopt.learners.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint

    learner = tiny_learner("hypergrad", {**HYPER, "hd_horizon": 3, "hd_beta": 1e-3}, dtype=torch.float32)
    batch = lambda seed: sine_batch(3, seed=seed, dtype=torch.float32)  # noqa: E731
    for seed in range(4):
        learner.meta_step(batch(seed))
    spec = {"name": "mlp", "hidden": [4, 4], "activation": "tanh"}
    restored = load_checkpoint(save_checkpoint(make_checkpoint(learner, backbone=spec, input_shape=(1,), output_size=1),
                                               tmp_path / "hg.pt"))
    for seed in (7, 8):
        before = learner.outer_lr
        learner.meta_step(batch(seed))
        restored.meta_step(batch(seed))
        assert learner.outer_lr != before and restored.outer_lr == pytest.approx(learner.outer_lr, rel=1e-5)


def test_a_loss_spike_is_clipped_and_moves_the_outer_lr_by_at_most_its_trust_region():
    learner = tiny_learner("hypergrad", {**HYPER, "max_grad_norm": 1e-3, "hd_beta": 1e3, "hd_max_change": 0.1})
    learner.max_iterations = 10
    spike = sine_batch(3, seed=1)
    spike = type(spike)(spike.support_x, spike.support_y * 100, spike.query_x, spike.query_y * 100)  # amplitudes x100
    learner.meta_step(sine_batch(3, seed=0))
    before = learner.outer_lr
    learner.meta_step(spike)
    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in learner.meta_parameters().values()))
    assert norm <= 1e-3 * (1 + 1e-6)
    assert before / 1.1 * (1 - 1e-9) <= learner.outer_lr <= before * 1.1 * (1 + 1e-9)
    assert learner.outer_lr != before
