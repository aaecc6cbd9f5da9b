"""Every gradient-based learner: exact meta-gradients (float64 finite differences), identities, and learning."""

from __future__ import annotations

import pytest
import torch

from metaopt.learners import LEARNERS, GradientLearner, HyperGrad
from metaopt.learners.gradient import head_names
from metaopt.models import MLP
from tests.helpers import finite_difference_grad, relative_error, scores, sine_batch, tiny_learner


def meta_grads(learner, batch) -> dict[str, torch.Tensor]:
    for p in learner.meta_parameters().values():
        p.grad = None
    learner.meta_loss(batch).backward()
    return {name: p.grad.clone() for name, p in learner.meta_parameters().items()}


def assert_meta_gradient_exact(learner, batch) -> None:
    analytic = meta_grads(learner, batch)
    numeric = finite_difference_grad(lambda: learner.meta_loss(batch), learner.meta_parameters())
    assert relative_error(analytic, numeric) < 1e-6
    extras = [name for name in learner.extras]
    if extras:  # the learned extras are checked on their own too, so a small share cannot hide an error
        assert relative_error({k: analytic[k] for k in extras}, {k: numeric[k] for k in extras}) < 1e-6
        assert all(analytic[k].abs().sum() > 0 for k in extras)


FD_CASES = {
    "mamlpp (LSLR, MSL, second order)": ("mamlpp", {"inner_steps": 3, "inner_lr": 0.1, "first_order_until": 0.0}),
    "metasgd": ("metasgd", {"inner_lr": 0.1, "inner_steps": 2}),
    "metacurvature kronecker": ("metacurvature", {"inner_lr": 0.1, "inner_steps": 2, "curvature": "kronecker"}),
    "metacurvature lowrank": ("metacurvature", {"inner_lr": 0.1, "inner_steps": 2, "curvature": "lowrank", "rank": 2}),
    "maml, differentiable Adam inner loop": ("maml", {"inner_lr": 0.05, "inner_steps": 3, "inner_optimizer": "adam"}),
    "maml, differentiable momentum inner loop": ("maml", {"inner_lr": 0.05, "inner_steps": 3, "inner_optimizer": "momentum"}),
    "anil": ("anil", {"inner_lr": 0.1, "inner_steps": 2}),
}


@pytest.mark.parametrize("case", sorted(FD_CASES))
def test_meta_gradient_matches_finite_differences(case):
    method, hparams = FD_CASES[case]
    learner = tiny_learner(method, hparams)
    if method == "mamlpp":
        learner.max_iterations, learner.iteration = 100, 2  # inside the MSL annealing window
        assert (learner.msl_weights()[:-1] > 0).all()
    if method == "metacurvature":
        with torch.no_grad():  # move M away from the identity so every factor matters
            for p in learner.extras.values():
                p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=p.dtype))
    assert_meta_gradient_exact(learner, sine_batch(3))


def test_metasgd_with_frozen_rates_equal_to_alpha_gives_mamls_gradient():
    batch = sine_batch(3)
    maml = meta_grads(tiny_learner("maml", {"inner_lr": 0.1, "inner_steps": 2}), batch)
    metasgd = meta_grads(tiny_learner("metasgd", {"inner_lr": 0.1, "inner_steps": 2}), batch)
    assert relative_error({k: metasgd[k] for k in maml}, maml) < 1e-12


@pytest.mark.parametrize("curvature", ["kronecker", "lowrank"])
def test_metacurvature_at_identity_gives_mamls_gradient(curvature):
    batch = sine_batch(3)
    maml = meta_grads(tiny_learner("maml", {"inner_lr": 0.1, "inner_steps": 2}), batch)
    learner = tiny_learner("metacurvature", {"inner_lr": 0.1, "inner_steps": 2, "curvature": curvature})
    if curvature == "lowrank":
        with torch.no_grad():
            for p in learner.extras.values():
                p.zero_()  # U = V = 0
    mc = meta_grads(learner, batch)
    assert relative_error({k: mc[k] for k in maml}, maml) < 1e-12


def test_anil_inner_loop_leaves_the_body_unchanged_but_trains_it_in_the_outer_loop():
    learner = tiny_learner("anil", {"inner_lr": 0.1, "inner_steps": 3})
    batch = sine_batch(3)
    head = head_names(learner.backbone)
    assert head == {"4.weight", "4.bias"}
    adapted = learner.adapt_batch(batch, first_order=False)
    for name, p in learner.params.items():
        moved = (adapted[name] - p.unsqueeze(0)).abs().max().item()
        assert (moved > 0) if name in head else (moved == 0), name
    grads = meta_grads(learner, batch)
    assert all(grads[name].abs().sum() > 0 for name in learner.params if name not in head)


def test_mamlpp_with_one_step_no_msl_fixed_rates_equals_maml():
    batch = sine_batch(3)
    maml = meta_grads(tiny_learner("maml", {"inner_lr": 0.1, "inner_steps": 1}), batch)
    plain = {"inner_lr": 0.1, "inner_steps": 1, "msl": False, "learn_lrs": False, "first_order_until": 0.0}
    learner = tiny_learner("mamlpp", plain)
    learner.max_iterations = 100
    assert relative_error(meta_grads(learner, batch), maml) < 1e-12


def bn_mamlpp(hparams: dict):
    """MAML++ on a tanh MLP with batch norm (1-4-BN-4-1, no bias before the norm, as in a conv block), float64."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 4, bias=False), torch.nn.BatchNorm1d(4, track_running_stats=False),
                              torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    with torch.no_grad():  # batch norm divides by the weights' scale: keep it well away from zero for the differences
        net[0].weight.copy_(torch.tensor([[0.5], [-0.7], [0.9], [-1.1]]))
    return LEARNERS["mamlpp"](net, hparams, task_kind="regression")


def test_mamlpp_per_step_batch_norm_weights_are_exact_meta_gradients():
    learner = bn_mamlpp({"inner_steps": 3, "inner_lr": 0.1, "first_order_until": 0.0})
    assert learner.per_step_bn_names() == ["1.weight", "1.bias"]
    assert learner.adapted_names() == {"0.weight", "3.weight", "3.bias"}
    assert learner.extras["bnws:1.weight"].shape == (3, 4)
    with torch.no_grad():  # distinct per-step values, so a step reading another step's row would show
        for name in ("bnws:1.weight", "bnws:1.bias"):
            learner.extras[name].add_(0.1 * torch.randn(3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    learner.max_iterations, learner.iteration = 100, 2  # MSL on: every step's weights reach the loss
    assert_meta_gradient_exact(learner, sine_batch(3))


def test_mamlpp_batch_norm_weights_after_step_t_are_row_t_and_do_not_adapt():
    learner = bn_mamlpp({"inner_steps": 2, "inner_lr": 0.1})
    with torch.no_grad():
        learner.extras["bnws:1.weight"].copy_(torch.tensor([[2.0] * 4, [3.0] * 4]))
    batch = sine_batch(2)
    trajectory = learner.inner_loop(steps=3).trajectory(learner.loss, learner.params, batch.support_x[0], batch.support_y[0])
    assert [p["1.weight"].tolist() for p in trajectory] == [[2.0] * 4, [3.0] * 4, [3.0] * 4]  # step 3 reuses the last
    assert torch.equal(trajectory[-1]["1.bias"], learner.extras["bnws:1.bias"][1])
    assert not any(name.startswith("lslr:1.") for name in learner.extras)
    off = bn_mamlpp({"inner_steps": 2, "inner_lr": 0.1, "per_step_bn": False})
    assert off.adapted_names() is None and not any(name.startswith("bnws:") for name in off.extras)


def test_mamlpp_schedules():
    learner = tiny_learner("mamlpp", {"inner_steps": 4, "msl_anneal": 0.5, "first_order_until": 0.25})
    learner.max_iterations = 100
    first = learner.msl_weights()
    assert torch.allclose(first, torch.full((4,), 0.25)) and learner.current_first_order()
    learner.iteration = 50
    done = learner.msl_weights()
    assert done[-1] == pytest.approx(1 - 3 * 0.03 / 4) and done.sum() == pytest.approx(1.0)
    assert not learner.current_first_order()


# Settings per method for a few hundred iterations on sine (meta-batch 10).
TRAINING = {
    "maml": {"inner_lr": 0.01, "outer_lr": 0.003},
    "fomaml": {"inner_lr": 0.03, "outer_lr": 0.005, "inner_steps": 2},
    "mamlpp": {"inner_lr": 0.01, "outer_lr": 0.003, "inner_steps": 2},
    "reptile": {"inner_lr": 0.02, "inner_steps": 5, "outer_lr": 1.0},
    "anil": {"inner_lr": 0.1, "outer_lr": 0.003},
    "metasgd": {"inner_lr": 0.01, "outer_lr": 0.003},
    "metacurvature": {"inner_lr": 0.01, "outer_lr": 0.003},
    "hypergrad": {"inner_lr": 0.01, "outer_lr": 0.003},
}


def meta_learns_any_family(cls) -> bool:
    """A meta-learner on task batches of any family (not a baseline, not one family's own method, not a selector of a
    frozen model's context: tests/incontext)."""
    return (cls.trains and cls.samples == "tasks" and not cls.baseline and cls.families is None
            and not getattr(cls, "chooses_context", False))


# The functional core's learners: gradient learners and the hypergradient learner that wraps them.
GRADIENT_METHODS = sorted(name for name, cls in LEARNERS.items()
                          if issubclass(cls, (GradientLearner, HyperGrad)) and meta_learns_any_family(cls))


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_meta_training_lowers_post_adaptation_mse(method):
    assert set(TRAINING) == set(GRADIENT_METHODS)
    torch.manual_seed(0)
    net = MLP(in_features=1, out_features=1)
    learner = LEARNERS[method](net, {**TRAINING[method], "meta_batch": 10}, task_kind="regression", max_iterations=300)
    val = sine_batch(100, seed=99, dtype=torch.float32)
    untrained = scores(learner, val)["loss"].mean().item()
    for i in range(300):
        learner.meta_step(sine_batch(10, seed=i, dtype=torch.float32))
    trained = scores(learner, val)["loss"].mean().item()
    assert trained < 0.7 * untrained, (untrained, trained)


def test_adam_inner_loop_meta_gradient_is_finite_with_dead_relu_units():
    torch.manual_seed(0)
    net = MLP(in_features=1, out_features=1, hidden=(40, 40))
    learner = LEARNERS["maml"](net, {"inner_optimizer": "adam", "inner_steps": 2}, task_kind="regression")
    batch = sine_batch(5, dtype=torch.float32)
    support_grad = torch.func.grad(learner.loss)(dict(learner.params), batch.support_x[0], batch.support_y[0])
    assert any((g == 0).any() for g in support_grad.values())  # the case that breaks sqrt(v) + eps
    grads = meta_grads(learner, batch)
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_outer_schedules_mamlpp_cosine_and_reptile_linear_anneal():
    torch.manual_seed(0)
    mamlpp = LEARNERS["mamlpp"](MLP(in_features=1, out_features=1, hidden=(4,)), {"outer_lr": 0.01, "min_outer_lr": 0.001,
                                "inner_steps": 1}, task_kind="regression", max_iterations=4)
    reptile = LEARNERS["reptile"](MLP(in_features=1, out_features=1, hidden=(4,)), {"outer_lr": 0.5, "inner_steps": 1},
                                  task_kind="regression", max_iterations=4)
    lrs = {"mamlpp": [], "reptile": []}
    for i in range(4):
        batch = sine_batch(2, seed=i, dtype=torch.float32)
        for name, learner in (("mamlpp", mamlpp), ("reptile", reptile)):
            lrs[name].append(learner.outer.lr)
            learner.meta_step(batch)
    assert lrs["reptile"] == pytest.approx([0.5, 0.375, 0.25, 0.125])
    assert lrs["mamlpp"][0] == pytest.approx(0.01) and lrs["mamlpp"] == sorted(lrs["mamlpp"], reverse=True)
    assert mamlpp.outer.lr == pytest.approx(0.001)  # cosine reaches its floor at the budget
    # The schedule travels with the checkpointed state.
    state = reptile.state_dict()
    fresh = LEARNERS["reptile"](MLP(in_features=1, out_features=1, hidden=(4,)), {"outer_lr": 0.5, "inner_steps": 1},
                                task_kind="regression", max_iterations=4)
    fresh.load_state_dict(state)
    assert fresh.outer.lr == reptile.outer.lr and fresh.iteration == 4


@pytest.mark.parametrize("method", sorted(m for m in LEARNERS if "classification" in LEARNERS[m].task_kinds
                                          and meta_learns_any_family(LEARNERS[m])))
def test_every_learner_classifies_glyph_episodes_on_conv4(method, tmp_path_factory):
    from metaopt.learners.checkpoint import build_learner
    from metaopt.tasks.glyphs import Glyphs

    family = Glyphs(ways=3, shots=1, queries=2, cache_dir=tmp_path_factory.getbasetemp() / "glyph-cache-conv4")
    torch.manual_seed(0)
    learner = build_learner(method, {"meta_batch": 2}, backbone={"name": "conv4", "hidden": 8},
                            task_kind="classification", input_shape=family.input_shape, output_size=3, n_way=3,
                            max_iterations=2)
    generator = torch.Generator().manual_seed(0)
    before = {k: v.detach().clone() for k, v in learner.meta_parameters().items()}
    for _ in range(2):
        loss = learner.meta_step(family.sample(2, "train", generator))["loss"]
    assert torch.isfinite(loss)
    assert any(not torch.equal(before[k], v) for k, v in learner.meta_parameters().items())
    metrics = family.score_learner(learner, family.sample(4, "test", generator))
    assert metrics["accuracy"].shape == (4,) and ((0 <= metrics["accuracy"]) & (metrics["accuracy"] <= 1)).all()


@pytest.mark.parametrize("method", ["maml", "reptile"])
def test_max_grad_norm_clips_the_outer_step_and_is_off_by_default(method):
    batch = sine_batch(3)
    plain = tiny_learner(method, {"inner_lr": 0.1})
    assert plain.hparams["max_grad_norm"] == float("inf")
    expected, _ = plain.eager_meta_gradient(plain.meta_parameters(), batch, plain.loss_inputs())
    plain.meta_step(batch)
    assert all(torch.equal(p.grad, expected[name]) for name, p in plain.meta_parameters().items())
    clipped = tiny_learner(method, {"inner_lr": 0.1, "max_grad_norm": 1e-4})
    clipped.meta_step(batch)
    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in clipped.meta_parameters().values()))
    assert norm == pytest.approx(1e-4, rel=1e-6)  # the unclipped norm is far larger



def _conv_learner(method: str, hparams: dict):
    from metaopt.learners.checkpoint import build_learner
    from metaopt.tasks import TaskBatch

    torch.manual_seed(0)
    learner = build_learner(method, hparams, backbone={"name": "conv4", "hidden": 3}, task_kind="classification",
                            input_shape=(1, 16, 16), output_size=3, n_way=3, max_iterations=100)
    learner.backbone.double()
    for extra in learner.extras.values():  # learned rates (Meta-SGD) in float64 too, for exact differences
        extra.data = extra.data.double()
    x = torch.randn(3, 6, 1, 16, 16, dtype=torch.float64)
    return learner, TaskBatch(x[:, :3], torch.arange(3).repeat(3, 1), x[:, 3:], torch.arange(3).repeat(3, 1))


@pytest.mark.parametrize("method, hparams", [
    ("maml", {"inner_lr": 0.1}), ("mamlpp", {"inner_steps": 2, "first_order_until": 0.0}),
])
def test_second_order_meta_gradients_through_batch_norm_are_exact(method, hparams):
    # vmap's batch-norm backward rule gets double backward wrong (functorch#534): such meta-batches are looped.
    learner, batch = _conv_learner(method, hparams)
    assert learner.loops_tasks(first_order=False)
    assert_meta_gradient_exact(learner, batch)


@pytest.mark.parametrize("method, hparams", [
    ("fomaml", {"inner_lr": 0.1}), ("anil", {"inner_lr": 0.1, "inner_steps": 2}), ("reptile", {}),
])
def test_a_conv_meta_batch_looped_over_tasks_equals_the_vmapped_one(method, hparams):
    learner, batch = _conv_learner(method, hparams)
    assert learner.loops_tasks()  # convolutions on the CPU: a loop is the faster
    meta = learner.meta_parameters()
    looped = learner.eager_meta_gradient(meta, batch, learner.loss_inputs())
    looped_predictions = learner.predict(batch)
    learner.task_mapping = "vmap"
    vmapped = learner.eager_meta_gradient(meta, batch, learner.loss_inputs())
    assert torch.allclose(looped[1], vmapped[1], atol=1e-10)
    assert all(torch.allclose(looped[0][k], vmapped[0][k], atol=1e-10) for k in meta)
    assert torch.allclose(looped_predictions, learner.predict(batch), atol=1e-10)


def test_only_convolutions_on_the_cpu_or_batch_norm_under_second_order_are_looped():
    from metaopt.learners.core import loops_tasks
    from metaopt.models import build_backbone

    conv = build_backbone({"name": "conv4", "hidden": 4}, input_shape=(1, 28, 28), out_features=5)
    mlp = MLP(in_features=1, out_features=1, hidden=(4, 4))
    cuda = torch.device("cuda")  # a device only named: nothing runs there
    assert loops_tasks(conv, torch.device("cpu")) and not loops_tasks(conv, cuda)
    assert loops_tasks(conv, cuda, second_order=True) and not loops_tasks(mlp, torch.device("cpu"), second_order=True)
