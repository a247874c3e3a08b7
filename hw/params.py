"""What every block generator checks of its parameters before it builds anything."""

from __future__ import annotations


def require_params(component: object, params: object, expected: type) -> None:
    """TypeError unless `params` is an `expected`, the block's frozen parameter dataclass.

    The half-built component is marked as deliberately unused, so Amaranth does not warn about it too.
    """
    if not isinstance(params, expected):
        component._MustUse__silence = True
        article = "an" if expected.__name__[0] in "AEIOUX" else "a"  # "an XorDecoderParams": X reads "ex"
        raise TypeError(f"params must be {article} {expected.__name__}, got {type(params).__name__}")
