"""The fused batch norm, max-pool and ReLU (metaopt.models.fused) against PyTorch's three kernels: values, gradients
and second derivatives, in both layouts, under the transforms it runs in and beside those it does not."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from metaopt.models.fused import NormPoolReLU, _NormPoolReLU, extension, fusable

LAYOUTS = {"nchw": torch.contiguous_format, "channels-last": torch.channels_last}


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


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n, size", [(25, 28), (5, 14), (4, 7), (3, 3)])
@pytest.mark.parametrize("shift", [4.0, 0.0], ids=["relu-open", "relu-mixed"])
def test_fused_block_equals_pytorchs_kernels_values_and_gradients(n, size, shift, layout):
    generator = torch.Generator().manual_seed(size)
    x = torch.randn(n, 16, size, size, generator=generator).contiguous(memory_format=LAYOUTS[layout])
    x[:, :, : size // 2, : size // 2] = 0.25  # exact ties in whole windows, as a glyph's blank background gives
    grad = torch.randn(n, 16, size // 2, size // 2, generator=generator)
    block = block_with(16, size)
    with torch.no_grad():
        block.bias += shift  # 4: every normalised value above ReLU's threshold; 0: about half below
    assert fusable(x, block.weight) and not fusable(x[:, :, ::2], block.weight)  # a strided view: PyTorch's
    results = []
    for run in (lambda v: native(v, block), block):
        leaf = x.clone().requires_grad_()
        y = run(leaf)
        results.append((y, *torch.autograd.grad(y, (leaf, block.weight, block.bias), grad)))
    assert results[1][0].is_contiguous(memory_format=LAYOUTS[layout])
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


def fused(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The fused kernel whatever the dtype (the block itself takes it for float32 only)."""
    return _NormPoolReLU.apply(x, weight, bias, 1e-5)[0]


def pytorch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.relu(F.max_pool2d(F.batch_norm(x, None, None, weight, bias, True, 0.0, 1e-5), 2))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n, channels, size", [(3, 4, 6), (2, 3, 7), (2, 2, 3), (1, 11, 4)])  # 11: vector lanes and a tail
def test_the_second_derivative_passes_gradgradcheck_in_float64(layout, n, channels, size):
    generator = torch.Generator().manual_seed(size)
    x = torch.randn(n, channels, size, size, dtype=torch.double, generator=generator)
    x = x.contiguous(memory_format=LAYOUTS[layout]).requires_grad_()
    weight = (torch.rand(channels, dtype=torch.double, generator=generator) + 0.5)
    weight[0] = -0.7  # a negative scale: the window's maximum is then its smallest input
    weight.requires_grad_()
    bias = torch.randn(channels, dtype=torch.double, generator=generator, requires_grad=True)
    assert torch.autograd.gradcheck(fused, (x, weight, bias))
    assert torch.autograd.gradgradcheck(fused, (x, weight, bias))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("size", [28, 7])
def test_the_second_derivative_equals_pytorchs_composite_one(layout, size):
    """What a MAML outer step takes through the support pass: d/d(x, weight, gy) of the backward's three outputs."""
    generator = torch.Generator().manual_seed(size)
    draw = lambda *shape: torch.randn(*shape, generator=generator)  # noqa: E731
    results = []
    for dtype in (torch.double, torch.float):
        x = draw(5, 16, size, size).to(dtype).contiguous(memory_format=LAYOUTS[layout]).requires_grad_()
        weight = (torch.linspace(-1, 2, 16) + 0.05).to(dtype).requires_grad_()
        bias = draw(16).to(dtype).requires_grad_()
        grad = draw(5, 16, size // 2, size // 2).to(dtype).requires_grad_()
        cotangents = [draw(5, 16, size, size).to(dtype), draw(16).to(dtype), draw(16).to(dtype)]
        for run in (pytorch, fused):
            first = torch.autograd.grad(run(x, weight, bias), (x, weight, bias), grad, create_graph=True)
            second = torch.autograd.grad(first, (grad, x, weight), cotangents)
            results.append((run, dtype, [t.detach().double() for t in (*first, *second)]))
    (_, _, exact), (_, _, ours64), (_, _, theirs32), (_, _, ours32) = results
    for a, b in zip(ours64, exact):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10 * float(b.abs().max()))
    for a, b, truth in zip(ours32, theirs32, exact):  # float32: no further from float64 than PyTorch's kernels
        scale = float(truth.norm())
        assert float((a - truth).norm()) <= 2 * float((b - truth).norm()) + 1e-6 * scale


def test_a_third_derivative_is_refused():
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    weight, bias = torch.ones(4, requires_grad=True), torch.zeros(4, requires_grad=True)
    (first,) = torch.autograd.grad(fused(x, weight, bias).square().sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(first.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="no third derivative"):
        torch.autograd.grad(second.sum(), x)


def test_under_torch_func_grad_it_fuses_and_gives_pytorchs_second_order_gradient():
    """MAML's support pass: torch.func.grad inside, autograd outside; the fused kernel runs under both."""
    block = block_with(8, 0)
    x = torch.randn(6, 8, 10, 10)
    calls = []

    def inner_loss(params: dict[str, torch.Tensor], native: bool) -> torch.Tensor:
        calls.append(fusable(x, params["weight"]))
        y = pytorch(x, params["weight"], params["bias"]) if native else torch.func.functional_call(block, params, (x,))
        return y.square().sum()

    meta = {k: v.detach().clone().requires_grad_() for k, v in block.named_parameters()}
    outcomes = []
    for native in (True, False):
        fast = torch.func.grad(inner_loss)(meta, native)
        outer = sum((g * torch.arange(g.numel()).reshape(g.shape)).sum() for g in fast.values())
        outcomes.append(torch.autograd.grad(outer, list(meta.values())))
    assert calls[-1]  # fused there
    for a, b in zip(*outcomes):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


def test_other_inputs_take_pytorchs_kernels():
    block = block_with(8, 0)
    x = torch.randn(4, 8, 6, 6)
    assert fusable(x, block.weight)
    assert not fusable(x.double(), block.weight)  # float32 only
    assert not fusable(x.transpose(2, 3), block.weight)  # neither layout dense
    under_vmap = torch.func.vmap(lambda t: torch.tensor(fusable(t[None], block.weight)))(x)
    assert not under_vmap.any()
    traced = torch.compile(lambda t: t * fusable(t, block.weight), backend="eager", fullgraph=True)(x)
    assert not traced.any()  # torch.compile's tracing: PyTorch's kernels, which it can see into
    block.fused = False  # what a peer's row runs (benchmarks/image_throughput.py): PyTorch's kernels, bit for bit
    assert torch.equal(block(x), native(x, block))


def test_a_block_keeps_batch_norms_parameter_names():
    from metaopt.models.conv4 import Conv4

    names = [name for name, _ in Conv4(input_shape=(1, 28, 28), out_features=5).named_parameters()]
    assert names[:3] == ["features.0.0.weight", "features.0.0.bias", "features.0.1.weight"]
    assert "features.3.1.bias" in names and len(names) == 4 * 4 + 2


def test_nested_torch_func_grads_take_pytorchs_kernels():
    """A meta-gradient taken by torch.func around MAML's inner torch.func.grad (the compiled meta-step's form)."""
    block = block_with(8, 0)
    x = torch.randn(6, 8, 10, 10)
    seen = []

    def inner_loss(params: dict[str, torch.Tensor]) -> torch.Tensor:
        seen.append(fusable(x, params["weight"]))
        return torch.func.functional_call(block, params, (x,)).square().sum()

    def outer_loss(params: dict[str, torch.Tensor]) -> torch.Tensor:
        fast = torch.func.grad(inner_loss)(params)
        return sum((g * torch.arange(g.numel()).reshape(g.shape)).sum() for g in fast.values())

    meta = {k: v.detach().clone() for k, v in block.named_parameters()}
    nested = torch.func.grad(outer_loss)(meta)
    assert seen == [False]
    block.fused = False
    plain = torch.func.grad(outer_loss)(meta)
    for name in meta:
        assert torch.allclose(nested[name], plain[name])


def test_under_bf16_autocast_the_block_fuses_on_the_map_cast_up_and_differentiates_twice():
    """``precision: bf16``: the convolution writes a bf16 map; the block takes it in fp32 (the fused kernel, not
    PyTorch's three kernels in bf16), and a second-order gradient flows back through the cast to the bf16 map."""
    block = block_with(8, 0)
    x = torch.randn(6, 8, 10, 10).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = block(x)
    assert y.dtype == torch.float32 and type(y.grad_fn).__name__ == "_NormPoolReLUBackward"  # fused
    assert torch.equal(y, block(x.detach().float()))
    (gx, gw) = torch.autograd.grad(y.square().sum(), [x, block.weight], create_graph=True)
    assert gx.dtype == torch.bfloat16
    (ggw,) = torch.autograd.grad(gw.square().sum(), [block.weight])
    reference = native(x.detach().float().requires_grad_(), block)
    (rw,) = torch.autograd.grad(reference.square().sum(), [block.weight], create_graph=True)
    (rgw,) = torch.autograd.grad(rw.square().sum(), [block.weight])
    assert torch.allclose(ggw, rgw, rtol=1e-3, atol=1e-3 * float(rgw.abs().max()))
    block.fused = False  # a peer's row: PyTorch's kernels under autocast, as before
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert block(x).dtype == torch.bfloat16
