"""The thin-input convolution (metaopt.models.thin_conv) against PyTorch's: values, weight gradients and the second
derivatives a MAML meta-gradient takes, in both layouts, and where it steps aside."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from metaopt.models.thin_conv import ThinConv2d, strided_channels_last, thin

LAYOUTS = {"nchw": torch.contiguous_format, "channels-last": torch.channels_last}
SHAPES = [  # (images, channels, height, width, out channels, kernel, padding, bias)
    (25, 1, 28, 28, 64, 3, 1, True),  # glyphs' first layer
    (4, 3, 17, 13, 20, 3, 1, False),  # RGB, odd sizes, channels that fill no vector
    (3, 1, 9, 8, 40, 5, 2, True),  # 5x5: 25 products an output
    (2, 3, 6, 6, 16, 1, 0, False),  # ResNet-12's 1x1 shortcut
    (2, 1, 6, 7, 7, 3, 0, True),  # no padding
]


def layer(shape: tuple, layout: str) -> tuple[ThinConv2d, torch.Tensor]:
    n, c, h, w, out, k, p, bias = shape
    torch.manual_seed(k * 100 + c)
    conv = ThinConv2d(c, out, k, padding=p, bias=bias)
    if layout == "channels-last":  # how the metric learners run (metaopt.models.layout): the weight steers the output
        conv.weight = nn.Parameter(conv.weight.detach().clone(memory_format=torch.channels_last))
    return conv, torch.randn(n, c, h, w)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:4])) + f"-k{s[5]}p{s[6]}")
def test_values_and_weight_gradients_equal_pytorchs_and_are_nearer_float64(shape, layout):
    conv, x = layer(shape, layout)
    assert thin(conv, x)
    params = [p for p in (conv.weight, conv.bias) if p is not None]
    ours = conv(x)
    reference = F.conv2d(x, conv.weight, conv.bias, padding=conv.padding)
    assert ours.shape == reference.shape
    assert ours.is_contiguous(memory_format=LAYOUTS[layout]) == reference.is_contiguous(memory_format=LAYOUTS[layout])
    assert torch.allclose(ours, reference, rtol=1e-5, atol=1e-5 * float(reference.detach().abs().max()))
    grad = torch.randn_like(reference)
    exact = torch.autograd.grad(F.conv2d(x.double(), *(p.double() for p in params), padding=conv.padding), params,
                                grad.double())
    for a, b, truth in zip(torch.autograd.grad(ours, params, grad), torch.autograd.grad(reference, params, grad),
                           exact, strict=True):
        scale = float(truth.abs().max())
        assert float((a.double() - truth).abs().max()) <= max(2 * float((b.double() - truth).abs().max()), 1e-6 * scale)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_second_derivative_is_the_forward_convolution_again(layout):
    """MAML's outer step through the inner gradient: d/d(weight, bias, and what made the output's gradient) of the
    weight's gradient, against PyTorch's double backward in float64."""
    conv, x = layer((5, 1, 12, 12, 16, 3, 1, True), layout)
    results = []
    for dtype, run in ((torch.double, lambda xx, w, b: F.conv2d(xx, w, b, padding=1)),
                       (torch.float, lambda xx, w, b: F.conv2d(xx, w, b, padding=1)),
                       (torch.float, None)):
        w = conv.weight.detach().to(dtype).requires_grad_()
        b = conv.bias.detach().to(dtype).requires_grad_()
        inputs = x.to(dtype)
        if run is None:
            probe = ThinConv2d(1, 16, 3, padding=1)
            probe.weight, probe.bias = nn.Parameter(w), nn.Parameter(b)
            assert thin(probe, inputs)
            out = probe(inputs)
            w, b = probe.weight, probe.bias
        else:
            out = run(inputs, w, b)
        (gw, gb) = torch.autograd.grad(out.tanh().sum(), (w, b), create_graph=True)  # the inner gradient
        outer = (gw * torch.linspace(-1, 1, gw.numel(), dtype=dtype).reshape(gw.shape)).sum() + gb.square().sum()
        results.append([t.double() for t in torch.autograd.grad(outer, (w, b))])
    exact, theirs, ours = results
    for a, b, truth in zip(ours, theirs, exact):
        scale = float(truth.abs().max())
        assert float((a - truth).abs().max()) <= 2 * float((b - truth).abs().max()) + 1e-6 * scale


def test_a_third_derivative_runs_too():
    """The two kernels are each other's adjoints: every further derivative takes them again (no error, as PyTorch)."""
    conv, x = layer((2, 1, 6, 6, 8, 3, 1, True), "nchw")
    results = []
    for fused in (True, False):
        conv.fused = fused
        (gw,) = torch.autograd.grad(conv(x).pow(3).sum(), conv.weight, create_graph=True)
        (ggw,) = torch.autograd.grad(gw.pow(2).sum(), conv.weight, create_graph=True)
        (third,) = torch.autograd.grad(ggw.sum(), conv.weight)
        results.append(third)
    assert torch.allclose(*results, rtol=1e-4, atol=1e-4 * float(results[1].abs().max()))


def test_under_torch_func_grad_it_runs_and_gives_pytorchs_second_order_gradient():
    conv, x = layer((4, 1, 10, 10, 8, 3, 1, True), "nchw")

    def inner_loss(params: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.func.functional_call(conv, params, (x,)).tanh().sum()

    meta = {k: v.detach().clone().requires_grad_() for k, v in conv.named_parameters()}
    outcomes = []
    for fused in (True, False):
        conv.fused = fused
        fast = torch.func.grad(inner_loss)(meta)
        outer = sum((g * torch.arange(g.numel()).reshape(g.shape)).sum() for g in fast.values())
        outcomes.append(torch.autograd.grad(outer, list(meta.values())))
    for a, b in zip(*outcomes):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


def test_other_inputs_take_pytorchs_convolution():
    conv, x = layer((2, 1, 8, 8, 8, 3, 1, True), "nchw")
    assert thin(conv, x)
    assert not thin(conv, x.requires_grad_())  # an input that needs a gradient: not a network's input
    x = x.detach()
    assert not thin(conv, x.double())
    strided = ThinConv2d(1, 8, 3, stride=2, padding=1)
    assert not thin(strided, x)
    wide = ThinConv2d(8, 8, 3, padding=1)  # 72 products an output: oneDNN's kernels are fast there
    assert not thin(wide, torch.randn(2, 8, 8, 8))
    under_vmap = torch.func.vmap(lambda t: torch.tensor(thin(conv, t[None])))(x)
    assert not under_vmap.any()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not thin(conv, x)
    conv.fused = False  # what a peer's row runs (benchmarks/image_throughput.py): PyTorch's convolution, bit for bit
    assert torch.equal(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1))


def test_the_layout_rule_is_pytorchs():
    """The output is channels-last exactly where PyTorch's convolution writes it so (``strided_channels_last``)."""
    weight = torch.randn(8, 1, 3, 3)
    for w in (weight, weight.clone(memory_format=torch.channels_last)):
        for x in (torch.randn(2, 1, 6, 6), torch.randn(2, 3, 6, 6).contiguous(memory_format=torch.channels_last)):
            w3 = w if x.shape[1] == 1 else torch.randn(8, 3, 3, 3)
            expected = F.conv2d(x, w3, padding=1).is_contiguous(memory_format=torch.channels_last)
            assert (strided_channels_last(x) or strided_channels_last(w3)) == expected


def test_backbones_keep_conv2d_names_and_load_plain_checkpoints():
    from metaopt.models.conv4 import Conv4
    from metaopt.models.resnet import ResNet12

    conv4 = Conv4(input_shape=(1, 28, 28), out_features=5)
    assert isinstance(conv4.features[0][0], ThinConv2d) and isinstance(conv4.features[0][0], nn.Conv2d)
    plain = {k: torch.randn_like(v) for k, v in conv4.state_dict().items()}
    conv4.load_state_dict(plain)  # a checkpoint of nn.Conv2d layers: the same names
    assert torch.equal(conv4.features[0][0].weight, plain["features.0.0.weight"])
    resnet = ResNet12(input_shape=(3, 32, 32), out_features=5)
    assert sum(isinstance(m, ThinConv2d) for m in resnet.modules()) >= 2  # the first block's body and shortcut
