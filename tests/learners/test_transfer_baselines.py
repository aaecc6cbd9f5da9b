"""The transfer baselines: ``scratch`` trains on the support set alone; ``pretrain`` on the pooled training tasks."""

from __future__ import annotations

import pytest
import torch

from metaopt.learners.checkpoint import build_learner, load_checkpoint, make_checkpoint
from metaopt.search.evaluation import score_tasks
from metaopt.search.fit import fit
from metaopt.tasks import FAMILIES
from metaopt.tasks.episodes import EpisodeFamily

MLP = {"name": "mlp", "hidden": [32, 32]}
CONV = {"name": "conv4", "hidden": 16, "pooled_blocks": 3}  # 8x8 images: three 2x2 poolings


def patterns(classes: int = 40, examples: int = 6, noise: float = 30.0) -> EpisodeFamily:
    """5-way 1-shot episodes of 8x8 images: each class a fixed random pattern, each example it plus noise."""
    g = torch.Generator().manual_seed(0)
    base = torch.rand(classes, 1, 8, 8, generator=g) * 255
    images = (base + noise * torch.randn(classes, examples, 8, 8, generator=g)).clamp(0, 255).to(torch.uint8)
    index = torch.arange(classes)
    return EpisodeFamily(name="patterns", images=images, available=torch.ones(classes, examples, dtype=torch.bool),
                         splits={"train": index[:24], "val": index[24:32], "test": index[32:]},
                         ways=5, shots=1, queries=5)


def _build(method: str, family, hparams=None, backbone=CONV):
    return build_learner(method, hparams or {}, backbone=backbone, task_kind=family.kind,
                         input_shape=family.input_shape, output_size=family.output_size, n_way=family.n_way)


def test_pooled_examples_of_episodes_carry_their_global_class():
    family = patterns()
    pooled = family.pooled(200, "train", torch.Generator().manual_seed(0))
    assert pooled.classes == 24 and pooled.x.shape == (200, 1, 8, 8) and pooled.y.max() < 24
    means = family.images[family.pools["train"]].float().mean(1) / 255  # each class's mean image
    nearest = torch.cdist(pooled.x.flatten(1), means.flatten(1)).argmin(1)
    assert (nearest == pooled.y).float().mean() > 0.95
    sine = FAMILIES["sine"]()
    points = sine.pooled(25, "train", torch.Generator().manual_seed(0))
    assert points.classes is None and points.x.shape == (25, 1) and points.y.shape == (25, 1)


def test_scratch_learns_nothing_across_tasks_but_fits_each_support_set():
    sine = FAMILIES["sine"]()
    torch.manual_seed(0)
    learner = _build("scratch", sine, {"lr": 0.01, "steps": 100}, MLP)
    before = {k: v.detach().clone() for k, v in learner.params.items()}
    learner.meta_step(sine.sample(4, "train", torch.Generator()))
    assert all(torch.equal(before[k], v) for k, v in learner.params.items()) and not learner.trains
    val = sine.sample(100, "val", torch.Generator().manual_seed(1))
    assert sine.score_learner(learner, val)["loss"].mean() < 0.8 * sine.score_learner(learner, val, 0)["loss"].mean()


def test_pretrain_on_pooled_classes_then_a_fresh_head_classifies_new_classes():
    family = patterns()
    val = family.fixed_tasks(100, "val", seed=1)
    for head in ("linear", "cosine"):
        torch.manual_seed(0)
        learner = _build("pretrain", family, {"head": head, "outer_lr": 0.003, "adapt_steps": 50, "adapt_lr": 0.1})
        assert learner.samples == "pooled"
        fit(learner, family, iterations=300, generator=torch.Generator().manual_seed(0))
        assert learner.pooled_head is not None and learner.pooled_head.weight.shape[0] == 24
        accuracy = score_tasks(learner, family, val)["accuracy"].mean().item()
        assert accuracy > 0.7, (head, accuracy)  # chance: 0.2


def test_fine_tuning_the_head_leaves_the_body_as_pretrained(tmp_path):
    family = patterns()
    torch.manual_seed(0)
    learner = _build("pretrain", family, {"adapt_steps": 5})
    fit(learner, family, iterations=3, generator=torch.Generator().manual_seed(0))
    batch = family.sample(1, "val", torch.Generator().manual_seed(2))
    adapted = learner.adapt(batch.support_x[0], batch.support_y[0]).params
    for name, value in learner.params.items():
        assert torch.equal(adapted[name], value) == name.startswith("body."), name
    from metaopt.learners.gradient import GradientLearner

    episodes = family.sample(4, "val", torch.Generator().manual_seed(3))  # features once == the full inner loop
    assert torch.allclose(learner.predict(episodes), GradientLearner.predict(learner, episodes), atol=1e-3)
    path = tmp_path / "pretrain.pt"
    torch.save(make_checkpoint(learner, backbone=CONV, input_shape=family.input_shape, output_size=5), path)
    loaded = load_checkpoint(path)  # its pooled head is made before the optimizer's state is restored
    assert torch.equal(loaded.pooled_head.weight, learner.pooled_head.weight)
    everything = _build("pretrain", family, {"adapt_steps": 5, "fine_tune": "all"})
    moved = everything.adapt(batch.support_x[0], batch.support_y[0]).params
    first = "body.features.0.0.weight"
    assert not torch.equal(moved[first], everything.params[first])


def test_task_aware_fine_tuning_continues_from_each_learners_own_adaptation():
    sine = FAMILIES["sine"]()
    torch.manual_seed(0)
    maml = _build("maml", sine, {"inner_lr": 0.01, "outer_lr": 0.003, "meta_batch": 10}, MLP)
    fit(maml, sine, iterations=100, generator=torch.Generator().manual_seed(0))
    val = sine.fixed_tasks(100, "val", seed=1)
    losses = {}
    for steps in (0, 50):
        maml.hparams.update(ft_steps=steps, ft_lr=0.003)
        losses[steps] = score_tasks(maml, sine, val)["loss"].mean().item()
    assert losses[50] < 0.8 * losses[0], losses
    maml.hparams.update(ft_layers="head")
    batch = val[0]
    adapted = maml.adapt(batch.support_x[0], batch.support_y[0]).params
    plain = maml.adapt_batch(batch.slice(0, 1), first_order=True)
    for name in adapted:  # the head moved further than MAML's own step; the body did not
        assert torch.allclose(adapted[name], plain[name][0], atol=1e-6) != name.startswith("4."), name
    family = patterns()
    proto = _build("protonet", family)
    episode = family.sample(3, "val", torch.Generator().manual_seed(0))
    before = proto.predict(episode)
    proto.hparams.update(ft_steps=5, ft_lr=0.01)
    after = proto.predict(episode)
    assert after.shape == before.shape and not torch.allclose(after, before)


@pytest.mark.parametrize("method", ["protonet", "siamese", "pretrain"])
def test_metric_learners_siamese_and_pretrain_clip_their_outer_step_and_follow_a_schedule(method):
    from metaopt.tasks.glyphs import Glyphs

    family = Glyphs(ways=3, shots=1, queries=2)
    pooled = method == "pretrain"
    backbone = {"name": "conv4", "hidden": 4}
    build = lambda **hp: build_learner(method, {"meta_batch": 4, "outer_lr": 0.01, **hp}, backbone=backbone,  # noqa: E731
                                       task_kind="classification", input_shape=family.input_shape, output_size=3,
                                       n_way=3, max_iterations=4)
    draw = lambda g: family.pooled(16, "train", g) if pooled else family.sample(4, "train", g)  # noqa: E731
    torch.manual_seed(0)
    clipped = build(max_grad_norm=1e-4, outer_schedule="cosine", min_outer_lr=0.001)
    assert clipped.hparams["max_grad_norm"] == 1e-4
    generator, lrs = torch.Generator().manual_seed(0), []
    for _ in range(4):
        lrs.append(clipped.outer.lr)
        clipped.meta_step(draw(generator))
        norm = torch.sqrt(sum((p.grad ** 2).sum() for p in clipped.meta_parameters().values() if p.grad is not None))
        assert norm == pytest.approx(1e-4, rel=1e-5)  # the unclipped norm is far larger
    assert lrs[0] == pytest.approx(0.01) and lrs == sorted(lrs, reverse=True) and lrs[1] < lrs[0]
    assert clipped.outer.lr == pytest.approx(0.001)  # the cosine reaches its floor at the budget
    linear = build(outer_schedule="linear")
    for _ in range(2):
        linear.meta_step(draw(generator))
    assert linear.outer.lr == pytest.approx(0.005)
    restored = build(outer_schedule="linear")
    restored.load_state_dict(linear.state_dict())  # the schedule travels with the state
    assert restored.outer.lr == pytest.approx(0.005) and restored.iteration == 2
