"""How a one-line message quotes a value a user gave: a short prefix, whatever the value's size or nesting."""

from __future__ import annotations

import reprlib
from typing import Any

_SHORT = reprlib.Repr()  # Python 3.11's Repr takes no keyword arguments
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxset = 1, 4, 4, 4, 4
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 60, 60, 40


def short(value: Any) -> str:
    """``repr(value)`` cut to a short prefix (strings, lists and nesting bounded): what an error message quotes."""
    return _SHORT.repr(value)
