"""What every block generator checks of its parameters before it builds anything."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def require_params(component: object, params: object, expected: type) -> None:
    """TypeError unless `params` is an `expected`, the block's frozen parameter dataclass.

    The half-built component is marked as deliberately unused, so Amaranth does not warn about it too.
    """
    if not isinstance(params, expected):
        component._MustUse__silence = True
        article = "an" if expected.__name__[0] in "AEIOUX" else "a"  # "an XorDecoderParams": X reads "ex"
        raise TypeError(f"params must be {article} {expected.__name__}, got {type(params).__name__}")


def is_int(value: object) -> bool:
    """True for a Python or NumPy integer, not a bool: what a parameter dataclass accepts as a count or width."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_ints(owner: object, bounds: Iterable[tuple[str, int, int | None]]) -> None:
    """ValueError naming the first field of `owner` that is not an integer in low..high (high None: no bound)."""
    for name, low, high in bounds:
        value = getattr(owner, name)
        if not is_int(value) or value < low or (high is not None and value > high):
            allowed = f">= {low}" if high is None else f"in {low}..{high}"
            raise ValueError(f"{name} must be an integer {allowed}, got {value!r}")
