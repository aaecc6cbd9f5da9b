"""How a hyperparameter is searched in a space file: a float or int range, choices, or a fixed value."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FloatRange(_Strict):
    """A float searched in ``[low, high]``, optionally on a log scale or on a grid of ``step``."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        _check_range(self.low, self.high, self.log)
        if self.step is not None and self.log:
            raise ValueError("step and log cannot be combined (Optuna steps on a linear scale)")
        return self


class IntRange(_Strict):
    """An integer searched in ``[low, high]`` with ``step``."""

    type: Literal["int"]
    low: int
    high: int
    step: PositiveInt = 1
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        _check_range(self.low, self.high, self.log)
        return self


class Categorical(_Strict):
    """One of ``choices``."""

    type: Literal["categorical"]
    choices: list[Union[StrictBool, StrictInt, StrictFloat, StrictStr]] = Field(min_length=1)


Range = Annotated[Union[FloatRange, IntRange, Categorical], Field(discriminator="type")]
# A hyperparameter is searched (a range or choices) or fixed (a plain value).
ParamSpec = Union[Range, StrictBool, StrictInt, StrictFloat, StrictStr]
MethodSpace = dict[str, ParamSpec]
SEARCHED = (FloatRange, IntRange, Categorical)


def _check_range(low: float, high: float, log: bool) -> None:
    if low > high:
        raise ValueError(f"low ({low}) must be <= high ({high})")
    if log and low <= 0:
        raise ValueError(f"a log-scale range needs low > 0, got {low}")
