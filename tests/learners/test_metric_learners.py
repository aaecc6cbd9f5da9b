"""Prototypical Networks: prototypes are class means; a metric learner solves an easy separable family."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metaopt.learners.checkpoint import build_learner
from metaopt.learners.metric import class_means
from metaopt.tasks.base import TaskBatch, TaskFamily
from metaopt.tasks.metrics import CLASSIFICATION


class Blobs(TaskFamily):
    """Easy synthetic classification: 100 classes, each a tight Gaussian blob at a random point of R^8."""

    kind = "classification"
    metrics = CLASSIFICATION

    def __init__(self, ways: int = 5, shots: int = 1, queries: int = 5) -> None:
        self.ways, self.shots, self.queries, self.n_way = ways, shots, queries, ways
        self.input_shape, self.output_size = (8,), ways
        self.centres = torch.randn(100, 8, generator=torch.Generator().manual_seed(0)) * 3

    def sample(self, batch_size, split, generator):
        pool = {"train": range(0, 60), "val": range(60, 80), "test": range(80, 100)}[split]
        pool = torch.tensor(list(pool))
        chosen = pool[torch.rand(batch_size, len(pool), generator=generator).argsort(1)[:, : self.ways]]
        n = self.shots + self.queries
        points = self.centres[chosen].unsqueeze(2) + 0.5 * torch.randn(batch_size, self.ways, n, 8, generator=generator)
        sy = torch.arange(self.ways).repeat_interleave(self.shots).expand(batch_size, -1)
        qy = torch.arange(self.ways).repeat_interleave(self.queries).expand(batch_size, -1)
        return TaskBatch(points[:, :, : self.shots].reshape(batch_size, -1, 8), sy.contiguous(),
                         points[:, :, self.shots :].reshape(batch_size, -1, 8), qy.contiguous())


def test_prototypes_are_class_means():
    embeddings = torch.randn(12, 4)
    labels = torch.tensor([2, 0, 1, 2, 0, 1, 1, 2, 0, 0, 1, 2])
    means = class_means(embeddings, labels, 3)
    for k in range(3):
        assert torch.allclose(means[k], embeddings[labels == k].mean(0))


def test_protonet_logits_are_negative_squared_distances_to_class_means():
    family = Blobs(ways=3, shots=2, queries=2)
    learner = build_learner("protonet", {}, backbone={"name": "mlp", "hidden": [16, 8]}, task_kind="classification",
                            input_shape=(8,), output_size=3, n_way=3)
    batch = family.sample(1, "train", torch.Generator().manual_seed(0))
    meta = learner.meta_parameters()
    logits = learner.episode_logits(meta, batch.support_x[0], batch.support_y[0], batch.query_x[0], 3)
    support, query = learner.backbone(batch.support_x[0]), learner.backbone(batch.query_x[0])
    protos = torch.stack([support[batch.support_y[0] == k].mean(0) for k in range(3)])
    assert torch.allclose(logits, -torch.cdist(query, protos) ** 2, atol=1e-4)


@pytest.mark.parametrize("method", ["protonet", "matchingnet", "relationnet", "siamese"])
def test_metric_learner_learns_an_easy_separable_family_beyond_90_percent(method):
    torch.manual_seed(0)
    family = Blobs(ways=5, shots=1, queries=5)
    learner = build_learner(method, {"outer_lr": 0.003, "meta_batch": 8}, backbone={"name": "mlp", "hidden": [32, 16]},
                            task_kind="classification", input_shape=(8,), output_size=5, n_way=5)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        learner.meta_step(family.sample(8, "train", generator))
    test = family.sample(200, "test", torch.Generator().manual_seed(1))
    accuracy = family.score_learner(learner, test)["accuracy"].mean()
    assert accuracy > 0.9
    episode = family.sample(1, "test", generator)
    logits = learner.adapt(episode.support_x[0], episode.support_y[0])(episode.query_x[0])
    assert logits.shape == (25, 5)


@pytest.mark.parametrize("method", ["protonet", "matchingnet", "relationnet", "siamese"])
def test_cpu_loop_over_episodes_equals_vmap_with_conv4_batch_norm(method):
    torch.manual_seed(0)
    learner = build_learner(method, {}, backbone={"name": "conv4", "hidden": 8}, task_kind="classification",
                            input_shape=(1, 28, 28), output_size=3, n_way=3)
    x = torch.randn(4, 6, 1, 28, 28)
    batch = TaskBatch(x[:, :3], torch.arange(3).repeat(4, 1), x[:, 3:], torch.arange(3).repeat(4, 1))
    looped = learner.batch_logits(learner.meta_parameters(), batch)
    learner.force_vmap = True
    assert torch.allclose(looped, learner.batch_logits(learner.meta_parameters(), batch), atol=1e-5)


def test_matching_net_full_context_embeddings_use_lstm_cells_and_learn():
    from metaopt.learners.matchingnet import _lstm_cell

    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(6, 6)
    meta = {f"fce.forward.{k}": getattr(cell, k) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    x, h, c = torch.randn(3, 6), torch.randn(3, 6), torch.randn(3, 6)
    for ours, theirs in zip(_lstm_cell(meta, "forward", x, h, c), cell(x, (h, c)), strict=True):
        assert torch.allclose(ours, theirs, atol=1e-6)

    family = Blobs(ways=5, shots=2, queries=5)
    learner = build_learner("matchingnet", {"outer_lr": 0.003, "meta_batch": 8, "fce": True},
                            backbone={"name": "mlp", "hidden": [32, 16]}, task_kind="classification",
                            input_shape=(8,), output_size=5, n_way=5)
    assert {k.split(".")[1] for k in learner.extras} == {"forward", "backward", "attention"}
    batch = family.sample(3, "train", torch.Generator().manual_seed(0))
    meta = learner.meta_parameters()
    looped = learner.batch_logits(meta, batch)
    learner.force_vmap = True
    batched = learner.batch_logits(meta, batch)
    learner.force_vmap = False
    for t in range(3):  # vmap over episodes = the CPU's loop = one episode at a time
        single = learner.episode_logits(meta, batch.support_x[t], batch.support_y[t], batch.query_x[t], 5)
        assert torch.allclose(batched[t], single, atol=1e-5) and torch.allclose(looped[t], single, atol=1e-5)
    # The loop runs the bidirectional LSTM as one fused torch.lstm, vmap as cells: the same gradients too.
    extras = list(learner.extras.values())
    fused = torch.autograd.grad(looped.square().sum(), extras)
    for a, b in zip(fused, torch.autograd.grad(batched.square().sum(), extras), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    generator = torch.Generator().manual_seed(0)
    learner.force_vmap = True  # the LSTMs' step loop once for the 8 episodes, not per episode (same logits: above)
    for _ in range(300):
        learner.meta_step(family.sample(8, "train", generator))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.extras.values())
    test = family.sample(200, "test", torch.Generator().manual_seed(1))
    assert family.score_learner(learner, test)["accuracy"].mean() > 0.9


def test_few_shot_classifier_api(tmp_path):
    import metaopt
    from metaopt.learners.checkpoint import make_checkpoint, save_checkpoint

    torch.manual_seed(0)
    family = Blobs(ways=5, shots=1, queries=5)
    clf = metaopt.FewShotClassifier({"name": "mlp", "hidden": [32, 16]}, "protonet", n_way=5, k_shot=1,
                                    input_shape=(8,), hparams={"outer_lr": 0.003, "meta_batch": 8})
    generator = torch.Generator().manual_seed(0)
    for _ in range(100):
        clf.learner.meta_step(family.sample(8, "train", generator))
    episode = family.sample(1, "test", generator)
    labels = clf.adapt_and_predict(episode.support_x[0], episode.support_y[0], episode.query_x[0])
    assert labels.shape == (25,) and (labels == episode.query_y[0]).float().mean() > 0.8
    with pytest.raises(ValueError, match="n_way\\*k_shot = 5"):
        clf.adapt_and_predict(episode.query_x[0], episode.query_y[0], episode.query_x[0])

    path = save_checkpoint(make_checkpoint(clf.learner, backbone={"name": "mlp", "hidden": [32, 16]}, input_shape=(8,),
                                           output_size=5), tmp_path / "clf.pt")
    loaded = metaopt.FewShotClassifier.load(str(path))
    assert torch.equal(loaded.adapt_and_predict(episode.support_x[0], episode.support_y[0], episode.query_x[0]), labels)


def test_relation_net_convolves_concatenated_feature_maps_on_a_two_pool_conv4():
    torch.manual_seed(0)
    learner = build_learner("relationnet", {}, backbone={"name": "conv4", "hidden": 8, "pooled_blocks": 2},
                            task_kind="classification", input_shape=(1, 28, 28), output_size=3, n_way=3)
    assert learner.feature_maps() == (8, 7, 7)
    assert learner.extras["relation.conv1.weight"].shape == (8, 16, 3, 3)  # on [query maps, class maps]
    assert learner.extras["relation.w1"].shape == (32, 8 * 1 * 1)  # 7x7 -> 3x3 -> 1x1
    x = torch.randn(2, 9, 1, 28, 28)
    sy = torch.tensor([0, 0, 1, 1, 2, 2]).repeat(2, 1)  # 2-shot: class maps are sums of two
    batch = TaskBatch(x[:, :6], sy, x[:, 6:], torch.arange(3).repeat(2, 1))
    meta = learner.meta_parameters()
    looped = learner.batch_logits(meta, batch)
    learner.force_vmap = True
    assert looped.shape == (2, 3, 3) and torch.allclose(looped, learner.batch_logits(meta, batch), atol=1e-5)
    learner.force_vmap = False
    # The score of (query 1, class 2) is g on [f(query 1), f(support 4) + f(support 5)].
    embed = lambda images: learner.embed(meta, images).reshape(-1, 8, 7, 7)  # noqa: E731
    support, query = embed(x[0, :6]), embed(x[0, 6:])
    pairs = torch.cat([query.repeat_interleave(3, 0), torch.stack([support[0] + support[1], support[2] + support[3],
                                                                   support[4] + support[5]]).repeat(3, 1, 1, 1)], 1)
    z = pairs  # g as the paper writes it, on the concatenated maps (the learner splits its first layer)
    for block in ("1", "2"):
        z = F.conv2d(z, meta[f"relation.conv{block}.weight"], meta[f"relation.conv{block}.bias"], padding=1)
        z = F.batch_norm(z, None, None, meta[f"relation.bn{block}.weight"], meta[f"relation.bn{block}.bias"],
                         training=True)
        z = F.max_pool2d(F.relu(z), 2)
    z = F.relu(F.linear(z.flatten(1), meta["relation.w1"], meta["relation.b1"]))
    paper = F.linear(z, meta["relation.w2"], meta["relation.b2"]).reshape(3, 3)
    assert torch.allclose(looped[0], paper, atol=1e-5)
    learner.meta_step(batch)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.extras.values())

    vectors = build_learner("relationnet", {}, backbone={"name": "conv4", "hidden": 8}, task_kind="classification",
                            input_shape=(1, 28, 28), output_size=3, n_way=3)
    assert vectors.feature_maps() is None and not any("conv" in name for name in vectors.extras)  # 1x1 maps: the MLP


@pytest.mark.parametrize("method", ["protonet", "matchingnet", "relationnet"])
def test_a_meta_step_one_episode_at_a_time_takes_the_batch_gradient(method):
    torch.manual_seed(0)
    learner = build_learner(method, {}, backbone={"name": "conv4", "hidden": 8}, task_kind="classification",
                            input_shape=(1, 28, 28), output_size=3, n_way=3)
    x = torch.randn(4, 6, 1, 28, 28)
    batch = TaskBatch(x[:, :3], torch.arange(3).repeat(4, 1), x[:, 3:], torch.arange(3).repeat(4, 1))
    meta = learner.meta_parameters()
    expected = learner.episode_loss(learner.batch_logits(meta, batch), batch.query_y)
    whole = torch.autograd.grad(expected, list(meta.values()))
    loss = learner.meta_step(batch)["loss"]  # the step moves the parameters; .grad keeps what it stepped on
    assert torch.isclose(loss, expected.detach(), atol=1e-6)
    assert all(torch.allclose(p.grad, g, atol=1e-6) for p, g in zip(meta.values(), whole))
