"""Memory layout of image networks: channels-last on the CPU, where oneDNN's kernels want it.

On one CPU thread a Conv-4 episode's forward and backward pass runs 1.4-1.7x faster
with channels-last activations: max-pool's NCHW kernel is about 14x slower than its
channels-last one, and batch norm's is slower too (``benchmarks/image_throughput.py``,
the metric table). A convolution whose weight is channels-last writes channels-last
output, and every later layer keeps it, so converting the weights is enough. Second-order
MAML keeps NCHW: there it measured no faster (the convolutions' double backward loses what
pooling gains), and its meta-gradient on glyphs measured 6e-5 off float64 with channels-last
convolutions against 2e-6 with NCHW ones (max-pool windows of equal values, a glyph's blank
background, whose gradient goes where rounding puts the maximum).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


def channels_last(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``params`` with every 4-D tensor on the CPU (a 2-D convolution's weight) in channels-last layout.

    The same values (a differentiable copy of each: its gradient reaches the original); not for
    use under ``vmap``, which cannot query a memory format. A copy, not ``contiguous``: a weight
    with one input channel is contiguous in both layouts, and only the copy's strides make the
    first convolution (the largest activations) write channels-last.
    """
    return {k: v.clone(memory_format=torch.channels_last) if v.dim() == 4 and v.device.type == "cpu" else v
            for k, v in params.items()}
