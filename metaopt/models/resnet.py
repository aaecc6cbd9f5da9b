"""ResNet-12 (Oreshkin et al. 2018; Lee et al. 2019) and ResNet-18 (He et al. 2016, the seed's backbone).

Batch norm keeps no running statistics (per-task batch statistics under ``vmap``,
as in Conv-4). No pretrained weights: none can be downloaded here, and few-shot
meta-learning trains from scratch. The convolutions of the network's input (three channels) take metaopt's
thin-input kernel on the CPU (``metaopt.models.thin_conv``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from metaopt.models.thin_conv import ThinConv2d


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, track_running_stats=False)


class ResNet12Block(nn.Module):
    """Three 3x3 convs with BN and leaky ReLU, a 1x1 shortcut, then 2x2 max-pool."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ThinConv2d(in_channels, out_channels, 3, padding=1, bias=False), _bn(out_channels), nn.LeakyReLU(0.1),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), _bn(out_channels), nn.LeakyReLU(0.1),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), _bn(out_channels),
        )
        self.shortcut = nn.Sequential(ThinConv2d(in_channels, out_channels, 1, bias=False), _bn(out_channels))
        self.out = nn.Sequential(nn.LeakyReLU(0.1), nn.MaxPool2d(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.body(x) + self.shortcut(x))


class BasicBlock(nn.Module):
    """ResNet-18's block: two 3x3 convs with BN, identity (or 1x1 strided) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False), _bn(out_channels), nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), _bn(out_channels),
        )
        self.shortcut = (
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), _bn(out_channels))
            if stride != 1 or in_channels != out_channels else nn.Identity()
        )
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class _Headed(nn.Module):
    """Features, global average pooling, and a linear head when ``out_features`` is given."""

    def __init__(self, features: nn.Module, width: int, out_features: int | None) -> None:
        super().__init__()
        self.features = nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.embedding_size = width
        self.head = nn.Linear(width, out_features) if out_features else None

    def forward(self, x: Tensor) -> Tensor:
        """Logits, or embeddings without a head."""
        z = self.features(x)
        return self.head(z) if self.head is not None else z


class ResNet12(_Headed):
    """Four ResNet-12 blocks (64, 160, 320, 640 channels by default)."""

    def __init__(self, *, input_shape: tuple[int, ...], out_features: int | None = None,
                 channels: Sequence[int] = (64, 160, 320, 640)) -> None:
        widths = [input_shape[0], *channels]
        blocks = [ResNet12Block(a, b) for a, b in zip(widths[:-1], widths[1:])]
        super().__init__(nn.Sequential(*blocks), widths[-1], out_features)


class ResNet18(_Headed):
    """ResNet-18 for small images: a 3x3 stem (no 7x7 conv or max-pool), stages of 2 blocks."""

    def __init__(self, *, input_shape: tuple[int, ...], out_features: int | None = None,
                 channels: Sequence[int] = (64, 128, 256, 512)) -> None:
        stem = nn.Sequential(ThinConv2d(input_shape[0], channels[0], 3, padding=1, bias=False), _bn(channels[0]),
                             nn.ReLU())
        stages, width = [], channels[0]
        for i, out in enumerate(channels):
            stride = 1 if i == 0 else 2
            stages += [BasicBlock(width, out, stride), BasicBlock(out, out, 1)]
            width = out
        super().__init__(nn.Sequential(stem, *stages), width, out_features)
