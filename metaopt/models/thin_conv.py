"""A network's first convolution, where its input has few channels (glyphs: one; RGB: three), as a compiled CPU
kernel (``thin_conv.cpp``) with its weight's gradient and that gradient's own derivative.

Such a layer has K = channels x taps products an output (9 for a 3x3 convolution of one channel): oneDNN's kernels,
blocked for wide inputs, ran its weight gradient at 5-13 GFLOP/s on one CPU thread — 3.7 ms for the 23 MFLOP of a
[25, 1, 28, 28] batch in NCHW, two thirds of what the next layer's 360 MFLOP take — and, under second-order MAML, took
18% of a Conv-4 step's convolution time for 2% of its arithmetic (``benchmarks/image_throughput.py``). The kernel
gathers each image's patches once and multiplies them into register tiles; its weight gradient sums in float along a
plane (NCHW) or row (channels-last) and in double across them and the images (nearer float64 than oneDNN's).

It runs where the input needs no gradient (a network's input): the weight's gradient is then the whole backward,
and its derivative with respect to the output's gradient is the forward convolution again (the two are adjoint), so
a meta-gradient of any order takes the same two kernels. Elsewhere — an input that needs a gradient, a stride,
dilation or groups, another dtype or device, ``vmap``, ``torch.compile``, bf16 autocast, or ``METAOPT_FUSED_BLOCK=0``
— PyTorch's convolution runs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metaopt.models.fused import apply_function, extension, transformed

MAX_PRODUCTS = 32  # input channels x taps up to which the kernel runs (3x3 on RGB: 27)


class _ThinConv(torch.autograd.Function):
    """``conv2d(x, weight, bias)`` (stride 1) of an ``x`` that needs no gradient; output channels-last where the weight
    or input is, as PyTorch's convolution decides."""

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int],  # noqa: D102
                channels_last: bool) -> Tensor:
        return extension().thin_conv(x, weight, bias, padding[0], padding[1], channels_last)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # noqa: D102, ANN001
        x, weight, bias, padding, _ = inputs
        ctx.save_for_backward(x)
        ctx.kernel, ctx.padding, ctx.has_bias = tuple(weight.shape[2:]), padding, bias is not None

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor, Tensor | None, None, None]:  # noqa: D102
        (x,) = ctx.saved_tensors
        dweight, dbias = apply_function(_ThinConvWeightGrad, grad, x, ctx.kernel, ctx.padding, ctx.has_bias)
        return None, dweight, dbias, None, None


class _ThinConvWeightGrad(torch.autograd.Function):
    """The weight's (and bias's) gradient from the output's, ``grad``; linear in ``grad``, whose derivative is the forward
    convolution of the cotangents."""

    @staticmethod
    def forward(grad: Tensor, x: Tensor, kernel: tuple[int, int], padding: tuple[int, int],  # noqa: D102
                has_bias: bool) -> tuple[Tensor, Tensor | None]:
        dweight, dbias = extension().thin_conv_weight_grad(grad, x, kernel[0], kernel[1], padding[0], padding[1],
                                                           has_bias)
        return dweight, (dbias if has_bias else None)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # noqa: D102, ANN001
        grad, x, _, padding, _ = inputs
        ctx.save_for_backward(x)
        ctx.padding = padding
        ctx.channels_last = strided_channels_last(grad)

    @staticmethod
    def backward(ctx, adweight: Tensor | None, adbias: Tensor | None) -> tuple[Tensor | None, None, None, None, None]:  # noqa: D102
        (x,) = ctx.saved_tensors
        if adweight is None:
            return None, None, None, None, None
        dgrad = apply_function(_ThinConv, x, adweight, adbias, ctx.padding, ctx.channels_last)
        return dgrad, None, None, None, None


def strided_channels_last(t: Tensor) -> bool:
    """Whether PyTorch reads ``t``'s strides as channels-last (``suggest_memory_format``, which Python lacks; a
    convolution writes channels-last output where its input's or weight's are): a one-channel weight cloned
    channels-last, ``[64, 1, 3, 3]`` at strides ``(9, 1, 3, 1)``, is, though it is contiguous in both layouts."""
    sizes, strides = t.shape, t.stride()
    if t.dim() != 4 or strides[1] == 0:
        return False
    smallest = 0
    for d in (1, 3, 2, 0):
        if sizes[d] == 0 or strides[d] < smallest or (d == 0 and smallest == strides[1]):
            return False
        smallest = strides[d] * max(sizes[d], 1)
    return True


def thin(conv: nn.Conv2d, x: Tensor) -> bool:
    """Whether ``conv`` on ``x`` takes the kernel (``thin_conv.cpp``): see the module's docstring."""
    weight = conv.weight
    return (weight.shape[1] * weight.shape[2] * weight.shape[3] <= MAX_PRODUCTS and x.device.type == "cpu"
            and x.dtype == torch.float32 and weight.dtype == torch.float32 and x.dim() == 4 and not x.requires_grad
            and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and isinstance(conv.padding, tuple) and conv.padding_mode == "zeros" and not torch.is_autocast_enabled("cpu") and not transformed(x) and not transformed(weight)
            and extension() is not None)


class ThinConv2d(nn.Conv2d):
    """``nn.Conv2d`` (the same parameters and names) that runs the thin-input kernel where it applies (``thin``), and
    PyTorch's convolution elsewhere and where ``fused`` is False (what a peer library would run)."""

    fused: bool = True

    def forward(self, x: Tensor) -> Tensor:
        """``conv2d(x, weight, bias)``."""
        if self.fused and thin(self, x):
            channels_last = strided_channels_last(x) or strided_channels_last(self.weight)
            return apply_function(_ThinConv, x, self.weight, self.bias, self.padding, channels_last)
        return super().forward(x)
