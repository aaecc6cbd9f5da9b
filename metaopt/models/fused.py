"""Conv-4's batch norm, 2x2 max-pool and ReLU as one compiled CPU kernel (``fused_block.cpp``), for first-order passes.

On one CPU thread half of a ProtoNet step went to the first block's `[25, 64, 28, 28]` query maps: batch norm's
forward and backward, max-pool's zero-filled gradient, each a memory pass over the map
(``benchmarks/image_throughput.py``, README "Image-scale speed"). The fused kernel reads the map twice forward
(statistics, pooling) and once backward, writing the pooled quarter and the input's gradient once: 2.2x the three
PyTorch kernels on that map, 1.26-1.30x a whole ProtoNet step.

It is built with ``torch.utils.cpp_extension`` on first use (about 20 s, once per machine and source: torch caches
it under ``TORCH_EXTENSIONS_DIR``, the name carrying the source's and the CPU's fingerprint, so a shared home on a
mixed cluster never loads code built for another CPU's instructions). Where it cannot be built (no compiler), or
with ``METAOPT_FUSED_BLOCK=0``, the block runs PyTorch's kernels, with a warning once. It takes what the metric and
model-based learners' CPU passes give it — channels-last float32 maps (``metaopt.models.layout``) outside ``vmap``
and ``torch.func`` transforms — and is first-order only: differentiating its gradient again raises.

Its values are PyTorch's to about 1e-5 relative (the statistics are summed in another order); the pooled maximum is
the first in the window's scan order, as ``max_pool2d`` picks it, so exact ties (a glyph's blank background) route
the gradient alike.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

SOURCE = Path(__file__).with_name("fused_block.cpp")
SWITCH = "METAOPT_FUSED_BLOCK"  # "0": PyTorch's kernels only


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
def extension() -> ModuleType | None:
    """The compiled kernel (built on first call, then loaded from torch's cache); None where it is switched off or
    cannot be built."""
    if os.environ.get(SWITCH, "1") == "0":
        return None
    tag = hashlib.sha256(SOURCE.read_bytes() + _cpu_fingerprint().encode() + torch.__version__.encode()).hexdigest()
    try:
        from torch.utils.cpp_extension import load

        try:  # the ninja wheel's binary, where this process's PATH lacks the environment's bin folder (Ray workers)
            import ninja

            os.environ["PATH"] = f"{ninja.BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"
        except ImportError:
            pass

        return load(f"metaopt_fused_block_{tag[:12]}", [str(SOURCE)], extra_cflags=["-O3", "-march=native"],
                    verbose=False)
    except Exception as error:  # noqa: BLE001 — no compiler or ninja, a read-only cache: PyTorch's kernels instead
        warnings.warn(f"metaopt: the fused Conv-4 block could not be built ({type(error).__name__}: "
                      f"{str(error).splitlines()[0] if str(error) else ''}); using PyTorch's kernels "
                      f"({SWITCH}=0 silences this)", RuntimeWarning, stacklevel=2)
        return None


class _NormPoolReLU(torch.autograd.Function):
    """The fused kernel's forward and (first-order) backward."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:  # noqa: D102
        kernel = extension()
        y, which, mean, invstd = kernel.forward(x, weight, bias, eps)
        ctx.save_for_backward(x, y, which, weight, mean, invstd)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:  # noqa: D102
        dx, dweight, dbias = extension().backward(grad, *ctx.saved_tensors)
        return dx, dweight, dbias, None


def _transformed(t: Tensor) -> bool:
    """Whether ``t`` is seen through a ``vmap`` or ``torch.func`` transform (where the fused kernel does not go)."""
    wrapped = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)
    return True if wrapped is None else bool(wrapped(t))  # a torch without the query: never fuse


def fusable(x: Tensor, weight: Tensor | None) -> bool:
    """Whether ``x`` (a batch norm's input, ``weight`` its scale) can take the fused kernel."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and weight is not None
            and x.shape[2] >= 2 and x.shape[3] >= 2 and weight.dtype == torch.float32
            and not _transformed(x) and not _transformed(weight)
            and x.is_contiguous(memory_format=torch.channels_last) and extension() is not None)


class NormPoolReLU(nn.BatchNorm2d):
    """Batch norm with the batch's statistics (no running ones), 2x2 max-pool, ReLU: Conv-4's block after its
    convolution. Its parameters are the batch norm's (``weight``, ``bias``), so a block's names and saved weights
    are a ``BatchNorm2d``'s; the fused kernel runs where it applies (``fusable``), PyTorch's three kernels elsewhere.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, track_running_stats=False)

    def forward(self, x: Tensor) -> Tensor:
        """``relu(max_pool2d(batch_norm(x), 2))``."""
        if fusable(x, self.weight):
            return _NormPoolReLU.apply(x, self.weight, self.bias, self.eps)
        return F.relu(F.max_pool2d(super().forward(x), 2))
