"""Conv-4's batch norm, 2x2 max-pool and ReLU as one compiled CPU kernel (``fused_block.cpp``), with its backward
and the backward's own derivative (what a second-order meta-gradient differentiates).

On one CPU thread, half of a Conv-4 step outside its convolutions went to these three on the first block's
`[25, 64, 28, 28]` maps: batch norm's forward, backward and (under MAML) double backward, each a dozen memory passes
through PyTorch's composite kernels, and NCHW max-pool's slow kernel (``benchmarks/image_throughput.py``, README
"Image-scale speed"). The fused kernel reads the map twice forward and writes only the pooled quarter; its backward
and double backward are written in closed form. A ProtoNet step 1.26-1.30x, a second-order MAML step 1.4-1.6x (its
row with PyTorch's kernels beside it).

It is built with ``torch.utils.cpp_extension`` on first use, in one library with the thin-input convolution
(``thin_conv.py``; ``kernels.cpp`` registers their operators) (about 15-30 s, once per machine and source: torch
caches it under ``TORCH_EXTENSIONS_DIR``, the name carrying the source's and the CPU's fingerprint, so a shared home
on a mixed cluster never loads code built for another CPU's instructions). Where it cannot be built (no compiler), or
with ``METAOPT_FUSED_BLOCK=0``, the block runs PyTorch's kernels, with a warning once. It takes float32 CPU maps in
either layout (the metric learners' channels-last passes, MAML's NCHW ones; under bf16 autocast, the convolution's
bf16 map cast up to float32), under ``torch.func.grad`` too, but not
under ``vmap`` or ``torch.compile`` (PyTorch's kernels there); a third derivative through it raises.

Its values are PyTorch's to rounding (statistics summed in double, about a pivot so that the variance does not
cancel). The window's maximum is the first in scan order, as ``max_pool2d`` picks it, compared before the
normalisation: so exact ties (a glyph's blank background) route the gradient as PyTorch's kernels do, and values that
differ are never made equal by the normalisation's rounding.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch._functorch.utils import unwrap_dead_wrappers
from torch.nn import functional as F

SOURCES = [Path(__file__).with_name(name) for name in ("kernels.cpp", "fused_block.cpp", "thin_conv.cpp")]
HEADERS = [Path(__file__).with_name("lanes.h")]
SWITCH = "METAOPT_FUSED_BLOCK"  # "0": PyTorch's kernels only (this block's and the thin convolution's)


def _cpu_fingerprint() -> str:
    """What identifies this CPU's instruction set (the kernel is built for it with ``-march=native``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def extension() -> Any:
    """The compiled kernels' operators, ``torch.ops.<name>`` (built on first call, then loaded from torch's cache);
    None where they are switched off or cannot be built."""
    if os.environ.get(SWITCH, "1") == "0":
        return None
    code = b"".join(path.read_bytes() for path in SOURCES + HEADERS)
    tag = hashlib.sha256(code + _cpu_fingerprint().encode() + torch.__version__.encode()).hexdigest()
    try:
        from torch.utils.cpp_extension import load

        try:  # the ninja wheel's binary, where this process's PATH lacks the environment's bin folder (Ray workers)
            import ninja

            os.environ["PATH"] = f"{ninja.BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"
        except ImportError:
            pass

        name = f"metaopt_kernels_{tag[:12]}"
        load(name, [str(path) for path in SOURCES], extra_cflags=["-O3", "-march=native"], is_python_module=False,
             verbose=False)
        return getattr(torch.ops, name)
    except Exception as error:  # noqa: BLE001 — no compiler or ninja, a read-only cache: PyTorch's kernels instead
        warnings.warn(f"metaopt: the fused Conv-4 block could not be built ({type(error).__name__}: "
                      f"{str(error).splitlines()[0] if str(error) else ''}); using PyTorch's kernels "
                      f"({SWITCH}=0 silences this)", RuntimeWarning, stacklevel=2)
        return None


def apply_function(function: type[torch.autograd.Function], *args: Any) -> Any:
    """``function.apply(*args)``, without the signature binding ``Function.apply`` does on every call of a function with
    ``setup_context`` (``inspect.signature``: about 90 us a call, 6% of a Conv-4 MAML step; these forwards take no
    defaults to fill): where no ``torch.func`` transform is active, the C++ apply that ``Function.apply`` ends in."""
    if torch._C._are_functorch_transforms_active():
        return function.apply(*args)
    return super(torch.autograd.Function, function).apply(*unwrap_dead_wrappers(args))


class _NormPoolReLU(torch.autograd.Function):
    """The fused kernel's forward; its backward is ``_NormPoolReLUBackward``, itself differentiable once more."""

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> tuple[Tensor, ...]:  # noqa: D102
        return tuple(extension().forward(x, weight, bias, eps))  # y, which, mean, invstd, best_x

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # noqa: D102, ANN001 — separate from forward: torch.func's rule
        x, weight, _, _ = inputs
        y, which, mean, invstd, best_x = output
        ctx.mark_non_differentiable(which, mean, invstd, best_x)
        ctx.save_for_backward(x, weight, y, which, best_x, mean, invstd)
        ctx.set_materialize_grads(False)  # no zeros for the four outputs that take none (1.3 MB a query pass)

    @staticmethod
    def backward(ctx, grad: Tensor | None, *_: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:  # noqa: D102
        if grad is None:
            return None, None, None, None
        x, weight, y, which, best_x, mean, invstd = ctx.saved_tensors
        dx, dweight, dbias = apply_function(_NormPoolReLUBackward, grad, x, weight, y, which, best_x, mean, invstd)
        return dx, dweight, dbias, None


class _NormPoolReLUBackward(torch.autograd.Function):
    """``(dx, dweight, dbias)`` of the fused block, and their derivative (what a second-order meta-gradient needs).

    The mean and inverse deviation are the forward's, taken as functions of ``x`` in the closed-form double backward
    (``fused_block.cpp``); ``y`` and ``which`` only select (the ReLU's opening, the window's maximum), so nothing
    flows back to them, nor to the shift.
    """

    @staticmethod
    def forward(grad: Tensor, x: Tensor, weight: Tensor, y: Tensor, which: Tensor, best_x: Tensor,  # noqa: D102
                mean: Tensor, invstd: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return tuple(extension().backward(grad, x, y, which, best_x, weight, mean, invstd))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # noqa: D102, ANN001
        ctx.save_for_backward(*inputs)
        ctx.set_materialize_grads(False)  # zeros made below only where some cotangent is defined

    @staticmethod
    def backward(ctx, adx: Tensor | None, adweight: Tensor | None,  # noqa: D102
                 adbias: Tensor | None) -> tuple[Tensor | None, ...]:
        if adx is None and adweight is None and adbias is None:
            return (None,) * 8
        grad, x, weight, y, which, best_x, mean, invstd = ctx.saved_tensors
        adx = torch.zeros_like(x) if adx is None else adx
        adweight = torch.zeros_like(weight) if adweight is None else adweight
        adbias = torch.zeros_like(weight) if adbias is None else adbias
        dgrad, dx, dweight = apply_function(_NormPoolReLUDoubleBackward, adx, adweight, adbias, grad, x, weight, y, which,
                                                                best_x, mean, invstd)
        return dgrad, dx, dweight, None, None, None, None, None


class _NormPoolReLUDoubleBackward(torch.autograd.Function):
    """The backward's derivative; differentiating it again raises (``once_differentiable`` would not, where
    ``torch.autograd.grad`` prunes its error node: it would give a silently wrong third derivative)."""

    @staticmethod
    def forward(adx: Tensor, adweight: Tensor, adbias: Tensor, grad: Tensor, x: Tensor, weight: Tensor,  # noqa: D102
                y: Tensor, which: Tensor, best_x: Tensor, mean: Tensor, invstd: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return tuple(extension().double_backward(adx, adweight, adbias, grad, x, y, which, best_x, weight, mean,
                                                 invstd))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # noqa: D102, ANN001
        pass

    @staticmethod
    def backward(ctx, *_: Tensor) -> None:  # noqa: D102, ANN001
        raise RuntimeError(f"metaopt's fused Conv-4 block has no third derivative: run with {SWITCH}=0 for "
                           "PyTorch's kernels")


def transformed(t: Tensor) -> bool:
    """Whether ``t`` is seen through a transform the fused kernel has no rule for: ``vmap``, ``jvp``, functionalisation,
    ``torch.func.grad`` inside another (one level is fine, with ordinary autograd outside it: MAML's support pass),
    or ``torch.compile``'s tracing."""
    if torch.compiler.is_compiling():
        return True
    wrapped = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)
    if wrapped is None:  # a torch without the query: never fuse
        return True
    if not wrapped(t):
        return False
    from torch._C._functorch import TransformType
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    levels = [level.key() for level in retrieve_all_functorch_interpreters()]
    return levels != [TransformType.Grad]


def fusable(x: Tensor, weight: Tensor | None) -> bool:
    """Whether ``x`` (a batch norm's input, ``weight`` its scale) can take the fused kernel: a float32 CPU map, dense
    in either layout (NCHW or channels-last: the output keeps it), outside the transforms it has no rule for."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and weight is not None
            and x.shape[2] >= 2 and x.shape[3] >= 2 and weight.dtype == torch.float32
            and not transformed(x) and not transformed(weight)
            and (x.is_contiguous(memory_format=torch.channels_last) or x.is_contiguous())
            and extension() is not None)


class NormPoolReLU(nn.BatchNorm2d):
    """Batch norm with the batch's statistics (no running ones), 2x2 max-pool, ReLU: Conv-4's block after its
    convolution. Its parameters are the batch norm's (``weight``, ``bias``), so a block's names and saved weights
    are a ``BatchNorm2d``'s; the fused kernel runs where it applies (``fusable``), PyTorch's three kernels elsewhere
    and where ``fused`` is False (what a peer library would run: ``benchmarks/image_throughput.py``).
    """

    fused: bool = True

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, track_running_stats=False)

    def forward(self, x: Tensor) -> Tensor:
        """``relu(max_pool2d(batch_norm(x), 2))``."""
        if self.fused and _autocast_map(x, self.weight):
            x = x.float()  # the block in fp32 on the map autocast's convolution wrote in bf16; the next one casts back
        if self.fused and fusable(x, self.weight):
            return apply_function(_NormPoolReLU, x, self.weight, self.bias, self.eps)[0]
        return F.relu(F.max_pool2d(super().forward(x), 2))


def _autocast_map(x: Tensor, weight: Tensor | None) -> bool:
    """Whether ``x`` is a lower-precision map that CPU autocast (``precision: bf16``) made of an fp32 network's
    convolution: the fused kernel takes it once cast up (one pass over the map; PyTorch's three kernels in bf16, which
    it would run instead, made a bf16 step slower than an fp32 one)."""
    return (x.dtype in (torch.bfloat16, torch.float16) and x.device.type == "cpu" and weight is not None
            and weight.dtype == torch.float32 and torch.is_autocast_enabled("cpu"))
