"""Type names shared by the functional core and its parts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Union

from torch import Tensor

Params = dict[str, Tensor]
# A step's learning rate: one scalar for every parameter, or a tensor per parameter
# (a scalar per layer for MAML++, the parameter's own shape for Meta-SGD).
LearningRate = Union[float, Tensor, Mapping[str, Tensor]]
LossFn = Callable[[Params, Tensor, Tensor], Tensor]
