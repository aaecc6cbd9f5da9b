"""The sine family: shapes, ranges, determinism, disjoint split streams."""

from __future__ import annotations

import math

import pytest
import torch

from metaopt.tasks import Sine


def test_shapes_and_ranges():
    batch = Sine(shots=5, queries=7).sample(25, "train", torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (25, 5, 1) and batch.query_y.shape == (25, 7, 1)
    x = torch.cat([batch.support_x, batch.query_x], 1)
    y = torch.cat([batch.support_y, batch.query_y], 1)
    assert x.min() >= -5 and x.max() <= 5
    assert y.abs().max() <= 5.0 + 1e-6


def test_points_lie_on_one_sinusoid_per_task():
    batch = Sine(shots=10, queries=10).sample(4, "val", torch.Generator().manual_seed(1))
    for t in range(4):
        x = torch.cat([batch.support_x[t], batch.query_x[t]]).squeeze(-1).double()
        y = torch.cat([batch.support_y[t], batch.query_y[t]]).squeeze(-1).double()
        # y = a sin x + b cos x exactly for a sinusoid with a phase: least squares leaves no residual.
        design = torch.stack([torch.sin(x), torch.cos(x)], 1)
        coef = torch.linalg.lstsq(design, y.unsqueeze(1)).solution
        assert (design @ coef - y.unsqueeze(1)).abs().max() < 1e-4
        amplitude = coef.norm().item()
        assert 0.1 - 1e-4 <= amplitude <= 5.0 + 1e-4
        phase = math.atan2(-coef[1].item(), coef[0].item())
        assert -1e-4 <= phase <= math.pi + 1e-4


def test_deterministic_given_generator_and_splits_differ():
    family = Sine()
    a = family.sample(3, "test", torch.Generator().manual_seed(42))
    b = family.sample(3, "test", torch.Generator().manual_seed(42))
    c = family.sample(3, "train", torch.Generator().manual_seed(42))
    assert torch.equal(a.query_y, b.query_y)
    assert not torch.equal(a.query_y, c.query_y)


def test_fixed_tasks_are_reproducible_and_chunked():
    family = Sine()
    first = family.fixed_tasks(250, "test", seed=3, chunk=100)
    second = family.fixed_tasks(250, "test", seed=3, chunk=100)
    assert [b.num_tasks for b in first] == [100, 100, 50]
    assert all(torch.equal(x.support_y, y.support_y) for x, y in zip(first, second))


def test_bad_arguments():
    with pytest.raises(ValueError, match="shots and queries"):
        Sine(shots=0)
    with pytest.raises(ValueError, match="split must be one of"):
        Sine().sample(1, "holdout", torch.Generator())
