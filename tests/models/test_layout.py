"""Channels-last weights: the same convolution, with output in the layout oneDNN's pooling and batch norm want."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metaopt.models.layout import channels_last


def test_channels_last_copies_every_conv_weight_including_one_input_channel_and_keeps_the_gradient():
    torch.manual_seed(0)
    weights = {"first": torch.randn(8, 1, 3, 3, requires_grad=True), "second": torch.randn(8, 8, 3, 3,
                                                                                           requires_grad=True),
               "bias": torch.randn(8, requires_grad=True)}
    fast = channels_last(weights)
    assert fast["bias"] is weights["bias"]
    # A one-channel weight is contiguous in both layouts; only explicit channels-last strides steer the convolution.
    assert fast["first"].stride() == (9, 1, 3, 1) and weights["first"].stride() == (9, 9, 3, 1)
    x = torch.randn(4, 1, 12, 12)
    slow_out = F.conv2d(F.conv2d(x, weights["first"], weights["bias"], padding=1), weights["second"], padding=1)
    fast_first = F.conv2d(x, fast["first"], fast["bias"], padding=1)
    assert fast_first.is_contiguous(memory_format=torch.channels_last) and not fast_first.is_contiguous()
    fast_out = F.conv2d(fast_first, fast["second"], padding=1)
    # the same sums in another order: rounding of the largest value's size (1.5e-5 of 95 on an AVX2 CPU)
    assert torch.allclose(fast_out, slow_out, rtol=1e-5, atol=1e-6 * float(slow_out.abs().max()))
    slow_grads = torch.autograd.grad(slow_out.square().sum(), list(weights.values()))
    fast_grads = torch.autograd.grad(fast_out.square().sum(), list(weights.values()))  # through the copies
    for slow, quick in zip(slow_grads, fast_grads, strict=True):
        assert torch.allclose(slow, quick, rtol=1e-4, atol=1e-5 * float(slow.abs().max()))
