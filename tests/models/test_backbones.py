"""Backbones: shapes, embedding vs head, and use under vmap through the functional core."""

from __future__ import annotations

import pytest
import torch

from metaopt.learners.checkpoint import build_learner
from metaopt.models import build_backbone
from metaopt.tasks.base import TaskBatch

SMALL = {"conv4": {"hidden": 8}, "mlp": {"hidden": [16]}, "resnet12": {"channels": [4, 4, 8, 8]}, "resnet18": {"channels": [4, 4, 8, 8]}}


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("input_shape", [(1, 28, 28), (3, 84, 84)])
def test_head_and_embedding_shapes(name, input_shape):
    spec = {"name": name, **SMALL[name]}
    x = torch.randn(6, *input_shape)
    assert build_backbone(spec, input_shape=input_shape, out_features=5)(x).shape == (6, 5)
    embedding = build_backbone(spec, input_shape=input_shape, out_features=None)(x)
    assert embedding.dim() == 2 and embedding.shape[0] == 6
    if name == "mlp":  # an image's pixels, flattened after any leading dimensions ([tasks, n, ...])
        assert build_backbone(spec, input_shape=input_shape, out_features=5)(x[None]).shape == (1, 6, 5)


@pytest.mark.parametrize("name", ["resnet12", "resnet18"])
def test_residual_backbones_meta_train_with_maml_under_vmap(name):
    torch.manual_seed(0)
    learner = build_learner("maml", {"inner_lr": 0.1, "meta_batch": 2}, backbone={"name": name, **SMALL[name]},
                            task_kind="classification", input_shape=(1, 28, 28), output_size=3, n_way=3)
    batch = TaskBatch(torch.randn(2, 3, 1, 28, 28), torch.arange(3).expand(2, 3).contiguous(),
                      torch.randn(2, 6, 1, 28, 28), torch.arange(3).repeat_interleave(2).expand(2, 6).contiguous())
    before = {k: v.detach().clone() for k, v in learner.params.items()}
    assert torch.isfinite(learner.meta_step(batch)["loss"])
    assert any(not torch.equal(before[k], v) for k, v in learner.params.items())


def test_conv4_pools_before_its_relu_with_the_same_values_and_gradients():
    from torch import nn

    from metaopt.models.conv4 import Conv4

    from metaopt.models.fused import NormPoolReLU
    from metaopt.models.thin_conv import ThinConv2d

    torch.manual_seed(0)
    ours = Conv4(input_shape=(1, 28, 28), out_features=5, hidden=8).double()
    assert [type(m) for m in ours.features[0]] == [ThinConv2d, NormPoolReLU]  # BN, pool, ReLU in one module
    textbook = Conv4(input_shape=(1, 28, 28), out_features=5, hidden=8).double()
    textbook.load_state_dict(ours.state_dict())  # the same parameter names: checkpoints load either way
    for i in range(4):  # conv, BN, ReLU, pool, as the papers draw it
        conv, fused = textbook.features[i]
        norm = nn.BatchNorm2d(fused.num_features, track_running_stats=False).double()
        norm.load_state_dict(fused.state_dict())
        textbook.features[i] = nn.Sequential(conv, norm, nn.ReLU(), nn.MaxPool2d(2))
    x = torch.randn(10, 1, 28, 28, dtype=torch.float64)
    a, b = ours(x), textbook(x)
    assert torch.equal(a, b)
    ga = torch.autograd.grad(a.square().sum(), list(ours.parameters()))
    gb = torch.autograd.grad(b.square().sum(), list(textbook.parameters()))
    assert all(torch.allclose(u, v, atol=1e-12) for u, v in zip(ga, gb))
