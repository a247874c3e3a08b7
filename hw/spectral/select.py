"""Choosing one of several gateware values: `pick` by an index over all of them, `select` by a selector over some.

The SPEC2 blocks choose among per-lane, per-bank and per-path copies of a value everywhere; with one copy there is
nothing to choose, and the choice must then cost nothing (no multiplexer, no selector bits).
"""

from __future__ import annotations

from typing import Any

from amaranth import Array


def pick(values: list[Any], index: Any) -> Any:
    """values[index]; no multiplexer when there is one value."""
    return values[0] if len(values) == 1 else Array(values)[index]


def select(sel: Any, options: dict[int, Any]) -> Any:
    """options[sel] for sel among the keys (the first option otherwise), as one indexed choice over every value
    of sel rather than a chain of compares: synthesis makes it a balanced mux tree (two LUT levels for the five
    banks a lane of the spectral MAC meets at p = 4, b = 8)."""
    keys = list(options)
    if len(keys) == 1:
        return options[keys[0]]
    return Array(options.get(key, options[keys[0]]) for key in range(1 << len(sel)))[sel]


__all__ = ["pick", "select"]
