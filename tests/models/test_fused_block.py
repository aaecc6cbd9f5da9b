"""The fused batch norm, max-pool and ReLU (metaopt.models.fused) against PyTorch's three kernels."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from metaopt.models.fused import NormPoolReLU, extension, fusable


def native(x: torch.Tensor, block: NormPoolReLU) -> torch.Tensor:
    return F.relu(F.max_pool2d(F.batch_norm(x, None, None, block.weight, block.bias, True, 0.0, block.eps), 2))


def block_with(channels: int, seed: int) -> NormPoolReLU:
    generator = torch.Generator().manual_seed(seed)
    block = NormPoolReLU(channels)
    with torch.no_grad():
        block.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
        block.weight[0] = -0.7  # a negative scale: the window's maximum is then its smallest input
        block.bias.copy_(torch.randn(channels, generator=generator))
    return block


def test_the_fused_kernel_builds_here():
    assert extension() is not None, "the fused Conv-4 block did not build (a C++ compiler and ninja are needed)"


@pytest.mark.parametrize("n, size", [(25, 28), (5, 14), (4, 7), (3, 3)])
@pytest.mark.parametrize("shift", [4.0, 0.0], ids=["relu-open", "relu-mixed"])
def test_fused_block_equals_pytorchs_kernels_values_and_gradients(n, size, shift):
    generator = torch.Generator().manual_seed(size)
    x = torch.randn(n, 16, size, size, generator=generator).contiguous(memory_format=torch.channels_last)
    x[:, :, : size // 2, : size // 2] = 0.25  # exact ties in whole windows, as a glyph's blank background gives
    grad = torch.randn(n, 16, size // 2, size // 2, generator=generator)
    block = block_with(16, size)
    with torch.no_grad():
        block.bias += shift  # 4: every normalised value above ReLU's threshold; 0: about half below
    assert fusable(x, block.weight) and not fusable(x.contiguous(), block.weight)
    results = []
    for run in (lambda v: native(v, block), block):
        leaf = x.clone().requires_grad_()
        y = run(leaf)
        results.append((y, *torch.autograd.grad(y, (leaf, block.weight, block.bias), grad)))
    assert results[1][0].is_contiguous(memory_format=torch.channels_last)
    for name, ours, theirs in zip(("y", "dx", "dweight", "dbias"), results[1], results[0]):
        assert ours.shape == theirs.shape
        close = torch.isclose(ours, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))
        # Where two of a window's values are nearly equal, or its maximum is within rounding of ReLU's threshold,
        # the kernels' statistics (summed in another order) may round them apart and route that window's gradient
        # otherwise (both are subgradients): a few elements of dx in ten thousand; with ReLU's threshold among the
        # values (shift 0), the per-channel sums of a channel that has such a window too.
        allowed = 1e-4 * ours.numel() if name == "dx" else 0 if shift else 1
        assert int((~close).sum()) <= allowed, (name, int((~close).sum()))
    # a window of equal values sends its whole gradient to its first element, as max_pool2d does
    tied = (results[1][1] - results[0][1])[:, :, : size // 2 : 2, : size // 2 : 2]
    assert float(tied.abs().max()) <= 1e-4 * float(results[0][1].abs().max())


def test_other_inputs_take_pytorchs_kernels_and_a_second_derivative_is_refused():
    block = block_with(8, 0)
    x = torch.randn(4, 8, 6, 6)  # NCHW: PyTorch's kernels, bit for bit
    assert not fusable(x, block.weight)
    assert torch.equal(block(x), native(x, block))
    assert not fusable(x.double().contiguous(memory_format=torch.channels_last), block.weight)
    under_vmap = torch.func.vmap(lambda t: torch.tensor(fusable(t[None], block.weight)))(
        x.contiguous(memory_format=torch.channels_last))
    assert not under_vmap.any()
    leaf = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    (grad,) = torch.autograd.grad(block(leaf).sum(), leaf, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(grad.sum(), leaf)


def test_a_block_keeps_batch_norms_parameter_names():
    from metaopt.models.conv4 import Conv4

    names = [name for name, _ in Conv4(input_shape=(1, 28, 28), out_features=5).named_parameters()]
    assert names[:3] == ["features.0.0.weight", "features.0.0.bias", "features.0.1.weight"]
    assert "features.3.1.bias" in names and len(names) == 4 * 4 + 2
