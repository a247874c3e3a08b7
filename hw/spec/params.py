"""What every block generator and format checks of its parameters: the one home of the integer and range checks
and of their messages ("NAME must be an integer, got VALUE", "NAME must be >= LOW, got VALUE", "NAME must be in
LOW..HIGH, got VALUE")."""

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


def to_int(name: str, value: object) -> int:
    """`value` as a plain int; ValueError "NAME must be an integer, got VALUE" unless `is_int`."""
    if not is_int(value):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def check_int(name: str, value: object, low: int, high: int | None = None, *, what: str = "") -> int:
    """`value` as a plain int; ValueError naming `name` unless it is an integer in low..high (high None: no bound).

    `what` follows the bound in the message, e.g. " (more than act_bits=8)" for a bound set by another field.
    """
    value = to_int(name, value)
    if value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in {low}..{high}"
        raise ValueError(f"{name} must be {allowed}{what}, got {value}")
    return value


def check_ints(owner: object, bounds: Iterable[tuple[str, int, int | None]]) -> None:
    """`check_int` on each (field, low, high) of the frozen dataclass `owner`, in order, storing each as a plain
    int (NumPy integers too, so equal parameters hash equal)."""
    for name, low, high in bounds:
        object.__setattr__(owner, name, check_int(name, getattr(owner, name), low, high))


def check_range(name: str, values: object, low: int, high: int) -> None:
    """ValueError naming `name` unless every entry of the array `values` is in low..high (reports min..max)."""
    values = np.asarray(values)
    if values.size and (values.min() < low or values.max() > high):
        raise ValueError(f"{name} must be in {low}..{high}, got {int(values.min())}..{int(values.max())}")
