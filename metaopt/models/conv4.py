"""Conv-4 (Vinyals et al. 2016; Snell et al. 2017; Finn et al. 2017): four blocks of
3x3 conv (64 filters) -> batch norm -> ReLU -> 2x2 max-pool (computed pool first: the same
function; batch norm, pool and ReLU fused on the CPU, ``metaopt.models.fused``), then a linear head.

Batch norm keeps no running statistics: it always normalises with the statistics of
the batch it sees, which under ``vmap`` is one task's support (or query) set, the
transductive setting MAML uses. ``pooled_blocks=2`` pools in the first two blocks
only, as the Relation Network's embedding does (64x7x7 feature maps on 28x28).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from metaopt.models.fused import NormPoolReLU
from metaopt.models.thin_conv import ThinConv2d


def conv_block(in_channels: int, out_channels: int, *, pool: bool = True) -> nn.Sequential:
    """conv 3x3 -> BN (batch statistics) -> ReLU -> max-pool 2x2 (when ``pool``).

    Pooled before the ReLU: the two commute (values and gradients alike: ReLU is monotone),
    and the ReLU then runs on a quarter of the values. With pooling, the three after the
    convolution are one module (``NormPoolReLU``: a compiled kernel on the CPU, first and second
    order), whose parameters keep batch norm's names. The convolution of the network's input (one or three
    channels) takes metaopt's thin-input kernel on the CPU (``ThinConv2d``: an ``nn.Conv2d``, the same names).
    """
    if pool:
        return nn.Sequential(ThinConv2d(in_channels, out_channels, kernel_size=3, padding=1),
                             NormPoolReLU(out_channels))
    return nn.Sequential(
        ThinConv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels, track_running_stats=False),
        nn.ReLU(),
    )


class Conv4(nn.Module):
    """Four conv blocks and, when ``out_features`` is given, a linear head on the flattened features."""

    def __init__(
        self,
        *,
        input_shape: tuple[int, ...],
        out_features: int | None = None,
        hidden: int = 64,
        blocks: int = 4,
        pooled_blocks: int | None = None,
    ) -> None:
        super().__init__()
        channels, height, width = input_shape
        pooled = blocks if pooled_blocks is None else pooled_blocks
        if not 0 <= pooled <= blocks:
            raise ValueError(f"pooled_blocks must lie in [0, {blocks}], got {pooled_blocks}")
        layers = [conv_block(channels if i == 0 else hidden, hidden, pool=i < pooled) for i in range(blocks)]
        self.features = nn.Sequential(*layers, nn.Flatten())
        for _ in range(pooled):
            height, width = height // 2, width // 2
        self.feature_shape = (hidden, max(1, height), max(1, width))  # the maps an embedding flattens
        self.embedding_size = math.prod(self.feature_shape)
        self.head = nn.Linear(self.embedding_size, out_features) if out_features else None
        if height == 0 or width == 0:
            raise ValueError(f"input {input_shape} is too small for {blocks} pooling blocks")

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[n, out_features]``, or embeddings ``[n, embedding_size]`` without a head."""
        z = self.features(x)
        return self.head(z) if self.head is not None else z


def flat_size(input_shape: tuple[int, ...]) -> int:
    """Number of input features once flattened."""
    return math.prod(input_shape)
