"""``image_throughput.py``'s ceiling: every convolution of a step, double backward included, recorded and replayed."""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from tests.search.jobs import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import image_throughput  # noqa: E402


def test_a_second_order_step_records_its_forward_backward_and_double_backward_convolutions_and_replays_them():
    weight = torch.randn(4, 2, 3, 3, requires_grad=True)
    x = torch.randn(3, 2, 8, 8).contiguous(memory_format=torch.channels_last)
    with image_throughput.ConvolutionCalls() as recorded:
        loss = F.conv2d(x, weight, padding=1).pow(2).sum()
        (g,) = torch.autograd.grad(loss, weight, create_graph=True)
        g.pow(2).sum().backward()
    ops = [func for func, _, _ in recorded.calls]
    assert ops[0] == torch.ops.aten.convolution.default and torch.ops.aten.convolution_backward.default in ops
    assert len(ops) >= 3  # forward, backward, and the backward's own differentiation
    first_input = recorded.calls[0][1][0]
    assert first_input[0] == (3, 2, 8, 8) and first_input[1] == x.stride()  # channels-last strides kept
    assert image_throughput.replay_ms(recorded.calls, "cpu", repeats=2) > 0
