"""The fixed point's rounding shift as gateware: clamp(rs(v, s)), rs(v, s) = (v + 2^(s-1)) >> s (round half up,
v for s = 0), in steps that each get a register stage of their own: the rounding add, then the shift and clamp
(`IfftInput`), or the shift, then the clamp (`requant_stages`, whose value is wider).

The golden model is `hw.spec.spectral.fixed`'s `rs`. In one stage, the shift amount's decoder, the add's carry chain,
the shifter and the clamp's compares made the paths that bounded the LeNet-5 build's clock.
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal, Value, unsigned


def round_add(m: Module, v: Value, shift: Value, name: str) -> Value:
    """v + 2^(shift-1) (v for shift = 0), one bit wider than v: the first step of rs(v, shift)."""
    bits = len(v)
    half = Signal(unsigned(bits), name=f"{name}_half")
    m.d.comb += half.eq((Const(1, bits + 1) << shift)[1:])
    return v + half


def shift_down(t: Value, shift: Value, bits: int) -> Value:
    """t >> shift for t = `round_add`(v, shift) of a `bits`-wide v: rs(v, shift), unclamped."""
    # For s >= bits, v + 2^(s-1) lies in [0, 2^s): the result is 0 whatever v is, so the shifter need only span
    # the value's width and the wide shifts are a constant.
    return Mux(shift >= bits, 0, t >> shift)


def clamp(v: Value, low: int, high: int) -> Value:
    """v limited to low..high."""
    return Mux(v < low, low, Mux(v > high, high, v))


def shift_clamp(t: Value, shift: Value, bits: int, low: int, high: int) -> Value:
    """clamp(t >> shift, low, high) for t = `round_add`(v, shift) of a `bits`-wide v: rs(v, shift) clamped, in one
    stage (a wide value's shifter and clamp take a stage each, as the requantizer's do)."""
    return clamp(shift_down(t, shift, bits), low, high)


__all__ = ["round_add", "shift_down", "clamp", "shift_clamp"]
