"""Multi-layer perceptron backbone (the sinusoid network of Finn et al. 2017: 1-40-40-1, ReLU)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


class MLP(nn.Sequential):
    """Fully connected network: ``in_features -> hidden... -> out_features`` (the last ``input_dims`` dimensions flattened)."""

    def __init__(
        self, *, in_features: int, out_features: int, hidden: Sequence[int] = (40, 40), activation: str = "relu",
        input_dims: int = 1,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        sizes = [in_features, *hidden]
        layers: list[nn.Module] = [nn.Flatten(-input_dims)] if input_dims > 1 else []  # images: their pixels
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(fan_in, fan_out), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(sizes[-1], out_features))
        super().__init__(*layers)
