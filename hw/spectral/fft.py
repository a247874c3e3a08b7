"""Streaming fixed-point FFTs for SPEC2, bit-exact with `hw.spec.spectral.fixed` (fft_fixed, fft2_fixed, ifft2_fixed).

* `SdfFft`: one n-point radix-2 DIT transform per n complex samples, one sample per cycle, with one butterfly per
  stage (single-path delay feedback, SDF); bit-reversed order in, natural order out.
* `_Transpose`: a ping-pong tile buffer (`amaranth.lib.memory.Memory`, two banks): row-major in, column by column
  out, each column's rows in the order a table gives (bit-reversed for the `SdfFft` after it; a row may be read
  twice).
* `Fft2d`: the row SDF (the tiler gives each row's columns in bit-reversed order), the bins 0..n/2 of each row
  into the transpose, the column SDF.
* `Ifft2d`: the column SDF (`IfftInput` gives each column's rows in bit-reversed order), the transpose, which
  reads each row's n bins from the n/2 + 1 it holds (the mirrored ones twice, conjugated on the way), the row SDF.

SDF stage s (distance D = 2^s) takes its stream in groups of 2D, the golden model's blocks at that stage: the first
D samples (the butterflies' a) wait in a shift register; each of the next D (b, the j-th of them) meets its a,
t = W^k b with k = j n / 2D, and rs(a + t) leaves at once while rs(a - t) waits; the D differences leave after the
D sums, while the next group's a arrive, so at full rate nothing stalls. Each stage's output is a register, so the
stages chain without a combinational path longer than one butterfly; only `ready` passes through a stage. A stage
whose twiddles need products (not 1 or +-i) has them computed a register ahead (`_TwiddleStage`), so that no path
holds both a constant product and a butterfly. A
parallel pipeline n wide would transform a whole vector per cycle, n times what a sample-per-cycle stream needs,
and with its serial/parallel converters it cost more: alone on the ECP5 (inverse, n = 8), 2 611 LUT4 and 1 774
flip-flops against the SDF's 1 506 and 663.

Twiddles 1 and -i (+i inverse) are wired as moves: rs(2^f v, f) = v exactly, so this equals the golden model's
multiply-and-round. The other twiddles are compile-time constants, so by default (`FftParams.twiddle_mult`
"logic") their products are shift-and-add networks in LUTs: each constant in canonical signed digits
(`csd_digits`), the shifted terms summed by a balanced adder tree with the rounding constant folded in
(`shift_add`); when |wr| = |wi| (W^(n/8), W^(3n/8), n >= 8) the two components share one constant:
t = |wr| (sr br - si bi, sr bi + si br). A stage's twiddles for its second D/2 b are those of its first D/2 times
-i (+i inverse), so it builds the first half's exact products only and swaps and negates them for the second
(`_twiddled`). Both ways compute the golden model's exact integer products before its one rounding, so
the result is bit-exact. Why not DSPs: DSP blocks are the budget the SPEC2-vs-baseline comparison
counts (the baseline spends them on its M weight multipliers, and an iCE40 UP5K has 8), and spending them on
constants wastes them. "dsp" keeps plain `*` by a constant, which Yosys maps to DSPs (MULT18X18D, SB_MAC16), for
comparison.

Widths and the stage schedule come from `FftParams` (`FftParams.from_spec(SpectralFixed(), n)` mirrors the golden
spec). Registers are data_bits wide: results outside that range wrap, where the golden model raises; the golden
stage plan is what proves the range sufficient for activations of act_bits (forward) and the IFFT's clamped input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from amaranth import Array, Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..spec.params import check_int, check_ints, is_int, require_params
from ..spec.spectral.fixed import bit_reverse
from ..spec.spectral.geometry import DEFAULT_N, check_fft_size, half_cols
from .select import pick

#: Largest size the blocks are built for (`check_fft_size` bounds the golden model at 256).
MAX_N = 64
#: `FftParams.twiddle_mult`: "logic" shift-and-add networks (no DSP), "dsp" `*` by a constant (Yosys: DSP blocks).
TWIDDLE_MULTS = ("logic", "dsp")


def complex_layout(width: int) -> data.StructLayout:
    """A complex sample: `re` in the low `width` bits, `im` above, both signed."""
    return data.StructLayout({"re": signed(width), "im": signed(width)})


@dataclass(frozen=True)
class FftParams:
    """Structural parameters of the FFT blocks; validated on construction, hashable.

    n: FFT size (power of two, 4..64). data_bits: data path per component. twiddle_bits: twiddles, Q1.(bits-2).
    act_bits: `Fft2d` input activations. in_shift: their left shift into the data path. fwd_shifts: per forward
    stage 0 or 1, the log2 n row stages then the log2 n column stages (None: all 0). The inverse shifts 1 per
    stage. Defaults are `SpectralFixed()`'s at n = 8; `from_spec` takes any spec's (with its overflow-checked plan).
    twiddle_mult: how non-trivial twiddle products are built, "logic" (CSD shift-and-add, no DSP; the default,
    since DSPs are the budget SPEC2 is compared on and twiddles are constants) or "dsp" (`*`, mapped to DSPs).
    Both are bit-exact with the golden model. rows: the rows of each tile `Fft2d` takes (1..n, None: n); the
    rows below are zero and not sent, as an overlap-add tile's are below its L rows of data.
    """

    n: int = DEFAULT_N
    data_bits: int = 18
    twiddle_bits: int = 16
    act_bits: int = 8
    in_shift: int = 3
    fwd_shifts: tuple[int, ...] | None = None
    twiddle_mult: str = "logic"
    rows: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", check_fft_size(self.n, MAX_N))
        object.__setattr__(self, "rows", self.n if self.rows is None else check_int("rows", self.rows, 1, self.n))
        check_ints(self, (("act_bits", 2, 16),))
        data_bits = check_int("data_bits", self.data_bits, self.act_bits + 1, 30,
                              what=f" (more than act_bits={self.act_bits})")
        object.__setattr__(self, "data_bits", data_bits)
        check_ints(self, (("twiddle_bits", 4, 30), ("in_shift", 0, self.data_bits - self.act_bits)))
        stages = 2 * self.log2n
        shifts = (0,) * stages if self.fwd_shifts is None else self.fwd_shifts
        if not isinstance(shifts, tuple) or any(not is_int(s) or s not in (0, 1) for s in shifts):
            raise ValueError(f"fwd_shifts must be a tuple of 0s and 1s, got {self.fwd_shifts!r}")
        if len(shifts) != stages:
            raise ValueError(f"fwd_shifts must have {stages} entries for n={self.n}, got {len(shifts)}")
        object.__setattr__(self, "fwd_shifts", shifts)
        if not isinstance(self.twiddle_mult, str) or self.twiddle_mult not in TWIDDLE_MULTS:
            raise ValueError(f"twiddle_mult must be one of {', '.join(TWIDDLE_MULTS)}, got {self.twiddle_mult!r}")

    @classmethod
    def from_spec(cls, spec: Any, n: int = DEFAULT_N, twiddle_mult: str = "logic", rows: int | None = None,
                  ) -> FftParams:
        """The parameters a `hw.spec.spectral.fixed.SpectralFixed` gives size n (its plan raises if it could
        overflow), `Fft2d` taking `rows` rows of each tile."""
        return cls(n=n, data_bits=spec.data_bits, twiddle_bits=spec.twiddle_bits, act_bits=spec.act_bits,
                   in_shift=spec.input_shift(n), fwd_shifts=tuple(spec.forward_shifts(n)), twiddle_mult=twiddle_mult,
                   rows=rows)

    def describe(self) -> dict[str, Any]:
        """The parameters as plain JSON values."""
        return {"n": self.n, "data_bits": self.data_bits, "twiddle_bits": self.twiddle_bits,
                "act_bits": self.act_bits, "in_shift": self.in_shift, "fwd_shifts": list(self.fwd_shifts),
                "twiddle_mult": self.twiddle_mult, "rows": self.rows}

    @property
    def log2n(self) -> int:
        return self.n.bit_length() - 1

    @property
    def half_cols(self) -> int:
        """Columns of the half spectrum: n/2 + 1."""
        return half_cols(self.n)

    @property
    def row_shifts(self) -> tuple[int, ...]:
        return self.fwd_shifts[: self.log2n]

    @property
    def col_shifts(self) -> tuple[int, ...]:
        return self.fwd_shifts[self.log2n:]

    @property
    def inverse_shifts(self) -> tuple[int, ...]:
        return (1,) * self.log2n

    @property
    def product_stages(self) -> int:
        """Stages of a one-dimensional transform whose twiddles need products (all but 1 and +-i: the stages
        from the third on), each with a `_TwiddleStage`, one cycle of latency, ahead of its butterflies."""
        return max(0, self.log2n - 2)

    @property
    def forward_latency(self) -> int:
        """`Fft2d.latency`: rows n + n + (n/2 + 1) + 2 (log2 n + product_stages) - 1 cycles from a tile's first
        input to its first output."""
        return self.rows * self.n + self.n + self.half_cols + 2 * (self.log2n + self.product_stages) - 1

    @property
    def forward_period(self) -> int:
        """`Fft2d.period`: cycles per tile at full rate, the slower pass's: the row pass's rows x n samples or the
        column pass's n x (n/2 + 1)."""
        return max(self.rows, self.half_cols) * self.n

    @property
    def inverse_latency(self) -> int:
        """`Ifft2d.latency`: n (n/2 + 1) + 2 n + 2 (log2 n + product_stages) - 1 cycles, first input to first
        output."""
        return self.n * self.half_cols + 2 * self.n + 2 * (self.log2n + self.product_stages) - 1

    @property
    def twiddles(self) -> tuple[tuple[int, int], ...]:
        """Forward W_n^k, k < n/2, as (re, im) Q1.(twiddle_bits - 2), rounded half up (the golden `twiddles`)."""
        scale = float(1 << (self.twiddle_bits - 2))
        return tuple((math.floor(math.cos(2 * math.pi * k / self.n) * scale + 0.5),
                      math.floor(-math.sin(2 * math.pi * k / self.n) * scale + 0.5)) for k in range(self.n // 2))


def _rs(v: Value, s: int) -> Value:
    """Round half up, shift right: (v + 2^(s-1)) >> s (arithmetic on signed values)."""
    return (v + (1 << (s - 1))) >> s if s else v


def csd_digits(c: int) -> tuple[tuple[int, int], ...]:
    """c in canonical signed digits: (shift, +1 or -1) pairs, shifts ascending, no two adjacent, fewest nonzero."""
    digits = []
    shift = 0
    while c:
        if c & 1:
            digit = 2 - (c & 3)  # +1 if c = 1 mod 4, -1 if c = 3 mod 4: leaves c - digit divisible by 4
            digits.append((shift, digit))
            c -= digit
        c >>= 1
        shift += 1
    return tuple(digits)


# A shift-add term: sign * value * 2^shift, value signed.
_Term = tuple[int, Value, int]


def _combine(low: _Term, high: _Term) -> _Term:
    """low + high (low's shift <= high's), keeping low's sign; low's bits below high's shift bypass the adder."""
    sign, a, k = low
    high_sign, b, high_k = high
    d = high_k - k
    if d == 0 or d >= len(a):
        total = a + (b << d) if sign == high_sign else a - (b << d)
    else:
        # a + b 2^d = ((a >> d) + b) 2^d + (a mod 2^d): the carry chain only spans the upper part.
        upper = (a >> d) + b if sign == high_sign else (a >> d) - b
        total = Cat(a[:d], upper).as_signed()
    return sign, total, k


def _as_signed(x: Any) -> Value:
    """x as a signed value of the same integer (one zero bit on top of an unsigned one)."""
    x = Value.cast(x)
    return x if x.shape().signed else Cat(x, Const(0, 1)).as_signed()


def shift_add(products: Sequence[tuple[int, Any]], bias: int = 0) -> Value:
    """sum(c * x) + bias for integer constants c: a balanced adder tree over the CSD terms of every c, no multiplier."""
    terms: list[_Term] = sorted(((digit, _as_signed(x), shift) for c, x in products for shift, digit in csd_digits(c)),
                                key=lambda term: term[2])
    constant = bias
    if terms and terms[0][0] < 0:
        # The tree keeps its lowest term's sign, so make that one positive: -x 2^k = ~x 2^k + 2^k, the 2^k joining
        # the constant (free when there is one already, as the rounding constant of every twiddle product).
        _, x, shift = terms[0]
        terms[0] = (1, ~x, shift)
        constant += 1 << shift
    if constant:
        zeros = (constant & -constant).bit_length() - 1
        terms = sorted([*terms, (1, Const(constant >> zeros), zeros)], key=lambda term: term[2])
    if not terms:
        return Const(0)
    while len(terms) > 1:
        # Adjacent pairs in shift order: ceil(log2 terms) adder levels, each as narrow as the bypass allows.
        terms = [_combine(terms[i], terms[i + 1]) for i in range(0, len(terms) - 1, 2)] + terms[len(terms) & ~1:]
    _, value, shift = terms[0]
    return value << shift


def _signed_sum(sa: int, a: Value, sb: int, b: Value) -> tuple[int, Value]:
    """sa a + sb b (signs +-1) as (sign, value): one adder, value = a + b or a difference."""
    if sa == sb:
        return sa, a + b
    return (1, a - b) if sa > 0 else (1, b - a)


def _twiddle_mul(b: tuple[Value, Value], w: tuple[int, int], frac: int, mult: str = "logic") -> tuple[Value, Value]:
    """(wr + i wi) b, each component rounded by `frac` bits as the golden model rounds it; 1 and -i/+i exactly, as
    moves (and a negation). `mult` "logic": shift-and-add networks (`shift_add`, the rounding constant inside),
    one constant shared by both components when |wr| = |wi|; "dsp": `*`. Either way the exact integer products,
    then the golden rounding."""
    br, bi = b
    wr, wi = w
    one = 1 << frac
    if (wr, wi) == (one, 0):
        return br, bi
    if (wr, wi) == (0, -one):  # -i b = bi - i br
        return bi, -br
    if (wr, wi) == (0, one):  # i b = -bi + i br
        return -bi, br
    if mult == "dsp":
        return _rs(wr * br - wi * bi, frac), _rs(wr * bi + wi * br, frac)
    re, im = _exact_product(b, w, (1 << frac) >> 1)  # with rs's rounding constant 2^(frac-1) (0 when frac = 0)
    return re >> frac, im >> frac


def _exact_product(b: tuple[Value, Value], w: tuple[int, int], bias: int = 0) -> tuple[Value, Value]:
    """(wr br - wi bi + bias, wr bi + wi br + bias), exact, as shift-and-add networks (`shift_add`); one constant
    shared by both components when |wr| = |wi|."""
    br, bi = b
    wr, wi = w
    if wr != 0 and abs(wr) == abs(wi):
        # wr br - wi bi = |wr| (sr br - si bi), wr bi + wi br = |wr| (sr bi + si br): one adder in front, then one
        # constant's terms per component instead of two.
        c, sr, si = abs(wr), (1 if wr > 0 else -1), (1 if wi > 0 else -1)
        su, u = _signed_sum(sr, br, -si, bi)
        sv, v = _signed_sum(sr, bi, si, br)
        return shift_add([(su * c, u)], bias), shift_add([(sv * c, v)], bias)
    return shift_add([(wr, br), (-wi, bi)], bias), shift_add([(wr, bi), (wi, br)], bias)


def stage_shifts(params: FftParams, inverse: bool, shifts: tuple[int, ...] | None) -> tuple[int, ...]:
    """A one-dimensional transform's stage shifts: `shifts` checked, or by default the forward row stages
    (`FftParams.row_shifts`), 1 per stage when `inverse`."""
    if shifts is None:
        shifts = params.inverse_shifts if inverse else params.row_shifts
    if not isinstance(shifts, tuple) or len(shifts) != params.log2n or any(
            not is_int(s) or s not in (0, 1) for s in shifts):
        raise ValueError(f"shifts must be a tuple of {params.log2n} 0s and 1s, got {shifts!r}")
    return shifts


def _hand_over(m: Module, upstream: Any, downstream: Any) -> None:
    """valid/ready between two stream ports whose payloads the caller connects."""
    m.d.comb += [downstream.valid.eq(upstream.valid), upstream.ready.eq(downstream.ready)]


class _SdfStage(wiring.Component):
    """Stage `stage` of an n-point SDF transform: groups of 2D samples in, D = 2^stage; sums then differences out.
    `twiddles[j]` is W^k for the j-th b of a group (already conjugated for an inverse)."""

    def __init__(self, params: FftParams, stage: int, shift: int, twiddles: list[tuple[int, int]], in_bits: int):
        self.params, self.stage, self.shift, self.twiddles = params, stage, shift, twiddles
        self.in_layout = complex_layout(in_bits)
        super().__init__({"i": In(stream.Signature(self.in_layout)),
                          "o": Out(stream.Signature(complex_layout(params.data_bits)))})

    def elaborate(self, platform):
        m = Module()
        p, d = self.params, 1 << self.stage
        layout = complex_layout(p.data_bits)

        # Two delay lines of D, shifted rather than addressed (no multiplexer on either): the group's a, the
        # first at the end when its b comes, and the differences, the first at the end when they leave.
        # Data registers have no reset (it would put them on the chip-wide reset net, docs/architecture.md): nothing
        # leaves them but through `pending` and `o_valid`, which have one.
        held = [Signal(self.in_layout, name=f"a{k}", reset_less=True) for k in range(d)]
        diffs = [Signal(layout, name=f"diff{k}", reset_less=True) for k in range(d)]
        count = Signal(self.stage + 1)  # position in the group of 2D: wraps by itself
        second = count[self.stage]  # the b half
        j = count[:self.stage]
        pending = Signal(range(d + 1))  # differences still to leave

        b = self.i.payload
        t_re, t_im = _twiddled(p, self.stage, self.twiddles, b, j)
        a = held[-1]
        total, difference = Signal(layout), Signal(layout)
        m.d.comb += [
            total.re.eq(_rs(a.re + t_re, self.shift)), total.im.eq(_rs(a.im + t_im, self.shift)),
            difference.re.eq(_rs(a.re - t_re, self.shift)), difference.im.eq(_rs(a.im - t_im, self.shift)),
        ]

        o_valid = Signal()
        o_data = Signal(layout, reset_less=True)
        load = Signal()  # the output register takes a new value (or empties) on this edge
        m.d.comb += [load.eq(~o_valid | self.o.ready), self.o.valid.eq(o_valid), self.o.payload.eq(o_data)]
        # A sum may only leave once the previous group's differences have: the b half waits for them.
        m.d.comb += self.i.ready.eq(~second | (load & (pending == 0)))
        accept = self.i.valid & self.i.ready

        def shift_in(line: list[Signal], value: Any) -> list[Any]:
            return [line[0].eq(value), *(line[k].eq(line[k - 1]) for k in range(1, d))]

        with m.If(load):
            with m.If(pending != 0):
                m.d.sync += [o_valid.eq(1), o_data.eq(diffs[-1]), pending.eq(pending - 1)]
                m.d.sync += shift_in(diffs, diffs[0])  # the B half's shifts wait for pending == 0: no clash
            with m.Else():
                m.d.sync += [o_valid.eq(self.i.valid & second), o_data.eq(total)]
        with m.If(accept):
            m.d.sync += [count.eq(count + 1), *shift_in(held, b)]  # in the B half this moves the next a up
            with m.If(second):
                m.d.sync += shift_in(diffs, difference)
                with m.If(j == d - 1):
                    m.d.sync += pending.eq(d)
        return m


def _twiddled(params: FftParams, stage: int, twiddles: list[tuple[int, int]], b: Any,
              j: Value) -> tuple[Value, Value]:
    """t = W^k b for the j-th b of a group of stage `stage`, rounded as the golden model rounds it."""
    p = params
    frac = p.twiddle_bits - 2
    if all(w == twiddles[0] for w in twiddles):  # one twiddle (W^0 after a `_TwiddleStage`): nothing to choose
        return _twiddle_mul((b.re, b.im), twiddles[0], frac, p.twiddle_mult)
    half = len(twiddles) // 2
    rotation = twiddles[half] if half else None  # W^(n/4): -i forward, +i inverse
    if p.twiddle_mult == "logic" and half >= 2 and twiddles[0] == (1 << frac, 0) and all(
            twiddles[q + half] == _rotated(twiddles[q], rotation, frac) for q in range(half)):
        # The twiddles of the second half are those of the first times -i (+i inverse), so their exact
        # products are the first half's, swapped and one negated: one set of constant products, picked by
        # j mod D/2, arranged by the half, then one rounding adder per component. W^0's "product" is b 2^frac.
        # rs(-x) = (~x + 2^(frac-1) + 1) >> frac: the negation is an inversion and the rounding adder's +1.
        exact = [(b.re << frac, b.im << frac)] + [_exact_product((b.re, b.im), w) for w in twiddles[1:half]]
        q, second = j[:stage - 1], j[stage - 1]
        x, y = pick([e[0] for e in exact], q), pick([e[1] for e in exact], q)
        if rotation[1] < 0:  # -i (x + i y) = y - i x
            (re, re_neg), (im, im_neg) = (Mux(second, y, x), 0), (Mux(second, ~x, y), second)
        else:  # +i (x + i y) = -y + i x
            (re, re_neg), (im, im_neg) = (Mux(second, ~y, x), second), (Mux(second, x, y), 0)
        bias = 1 << (frac - 1)  # twiddle_bits >= 4: frac >= 2
        return ((re + Cat(re_neg, Const(bias >> 1, frac - 1))) >> frac,
                (im + Cat(im_neg, Const(bias >> 1, frac - 1))) >> frac)
    # Otherwise one constant product per distinct twiddle, picked by j.
    products = [_twiddle_mul((b.re, b.im), w, frac, p.twiddle_mult) for w in twiddles]
    return pick([t[0] for t in products], j), pick([t[1] for t in products], j)


def _moves_only(twiddles: list[tuple[int, int]], frac: int) -> bool:
    """Whether every twiddle is 1 or +-i, products that are moves (`_twiddle_mul`), not arithmetic."""
    one = 1 << frac
    return all(w in ((one, 0), (0, one), (0, -one)) for w in twiddles)


class _TwiddleStage(wiring.Component):
    """The twiddle products of SDF stage `stage`, one register ahead of its butterflies: of each group of 2D
    samples the first D (the butterflies' a) pass as they are, the j-th of the next D leaves as W^k b, and the
    `_SdfStage` after it meets them with W^0. The constant products and the butterfly's adds and rounding in one
    cycle were the LeNet-5 build's critical path (18.5 ns). `o` is one bit wider than `i`: |W^k b| < 2^in_bits."""

    def __init__(self, params: FftParams, stage: int, twiddles: list[tuple[int, int]], in_bits: int):
        self.params, self.stage, self.twiddles, self.in_bits = params, stage, twiddles, in_bits
        super().__init__({"i": In(stream.Signature(complex_layout(in_bits))),
                          "o": Out(stream.Signature(complex_layout(in_bits + 1)))})

    def elaborate(self, platform):
        m = Module()
        count = Signal(self.stage + 1)  # position in the group of 2D: wraps by itself
        second, j = count[self.stage], count[:self.stage]
        b = self.i.payload
        t_re, t_im = _twiddled(self.params, self.stage, self.twiddles, b, j)
        o_valid = Signal()
        o_data = Signal(complex_layout(self.in_bits + 1), reset_less=True)  # `o_valid` qualifies it
        load = Signal()
        m.d.comb += [load.eq(~o_valid | self.o.ready), self.i.ready.eq(load),
                     self.o.valid.eq(o_valid), self.o.payload.eq(o_data)]
        with m.If(load):
            m.d.sync += [o_valid.eq(self.i.valid), o_data.re.eq(Mux(second, t_re, b.re)),
                         o_data.im.eq(Mux(second, t_im, b.im))]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += count.eq(count + 1)
        return m


def _rotated(w: tuple[int, int], rotation: tuple[int, int], frac: int) -> tuple[int, int]:
    """w times the rotation +-i (as `FftParams.twiddles` gives it, magnitude 2^frac)."""
    wr, wi = w
    return (wi, -wr) if rotation == (0, -(1 << frac)) else (-wi, wr) if rotation == (0, 1 << frac) else (None, None)


class SdfFft(wiring.Component):
    """One n-point transform per n complex samples, bit-reversed order in, natural order out (`fft_fixed` along
    one axis, whose first step is that permutation), one butterfly per stage.

    Streams `i` and `o`: `complex_layout` beats, transform after transform; sample j of a transform on `i` is
    x[bit_reverse(j)]. `shifts` defaults to the forward row stages (`FftParams.row_shifts`), or 1 per stage when
    `inverse` (twiddles (wr, -wi)); see `stage_shifts`. `in_bits`: the input's width, data_bits or one more (a
    conjugate's negated -2^(w-1)); every stage's output is data_bits wide, as the golden model checks.
    Throughput: one sample per cycle in and out. Latency (no stalls): a transform's first output handshake comes
    `latency` = n - 1 + log2 n + product_stages cycles after its first input handshake (stage s holds 2^s samples
    and one output register; a stage with twiddle products one register more, `_TwiddleStage`).
    """

    def __init__(self, params: FftParams, inverse: bool = False, shifts: tuple[int, ...] | None = None,
                 in_bits: int | None = None):
        try:
            require_params(self, params, FftParams)
            shifts = stage_shifts(params, inverse, shifts)
            self.in_bits = params.data_bits if in_bits is None else check_int(
                "in_bits", in_bits, params.data_bits, params.data_bits + 1, what=" (data_bits or one more)")
        except (TypeError, ValueError):
            self._MustUse__silence = True  # never built: no "created but never used" warning
            raise
        self.params, self.inverse, self.shifts = params, bool(inverse), shifts
        super().__init__({"i": In(stream.Signature(complex_layout(self.in_bits))),
                          "o": Out(stream.Signature(complex_layout(params.data_bits)))})

    @property
    def latency(self) -> int:
        return self.params.n - 1 + self.params.log2n + self.params.product_stages

    @property
    def period(self) -> int:
        """Cycles per transform at full rate."""
        return self.params.n

    def elaborate(self, platform):
        m = Module()
        p = self.params
        sign = -1 if self.inverse else 1
        upstream = wiring.flipped(self.i)
        for stage, shift in enumerate(self.shifts):
            d = 1 << stage
            twiddles = [(wr, sign * wi) for wr, wi in (p.twiddles[j * (p.n // (2 * d))] for j in range(d))]
            in_bits = self.in_bits if stage == 0 else p.data_bits
            if not _moves_only(twiddles, p.twiddle_bits - 2):
                m.submodules[f"twiddle{stage}"] = products = _TwiddleStage(p, stage, twiddles, in_bits)
                wiring.connect(m, upstream, products.i)
                upstream, in_bits, twiddles = products.o, in_bits + 1, [twiddles[0]] * d
            m.submodules[f"stage{stage}"] = unit = _SdfStage(p, stage, shift, twiddles, in_bits)
            wiring.connect(m, upstream, unit.i)
            upstream = unit.o
        wiring.connect(m, upstream, wiring.flipped(self.o))
        return m


class _Transpose(wiring.Component):
    """rows x cols tiles in row-major order in, column-major out; two banks so one fills while the other drains.

    The read port's data register is the output register: it reads ahead only when the output is free or
    being taken, and holds its data otherwise.
    """

    def __init__(self, shape: Any, rows: int, cols: int, reads: Sequence[int] | None = None):
        self.shape, self.rows, self.cols = shape, rows, cols
        #: The rows each column gives, in order (None: 0, 1, ..., rows - 1); a row may be read more than once, and
        #: a row past the stored ones (>= rows) gives zeros.
        self.reads = tuple(range(rows)) if reads is None else tuple(reads)
        assert set(range(rows)) <= set(self.reads)
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.rows, self.cols
        size = rows * cols
        m.submodules.memory = memory = Memory(shape=self.shape, depth=2 * size, init=[])
        write, read = memory.write_port(), memory.read_port(transparent_for=())
        full = Signal(2)  # bank b holds a whole tile not yet read
        write_bank, write_index = Signal(), Signal(range(size))
        m.d.comb += [self.i.ready.eq(~full.bit_select(write_bank, 1)),
                     write.addr.eq(Mux(write_bank, size, 0) + write_index), write.data.eq(self.i.payload),
                     write.en.eq(self.i.valid & self.i.ready)]
        with m.If(write.en):
            m.d.sync += write_index.eq(write_index + 1)
            with m.If(write_index == size - 1):
                m.d.sync += [write_index.eq(0), write_bank.eq(~write_bank)]

        reads = len(self.reads)
        read_bank, row, col = Signal(), Signal(range(reads)), Signal(range(cols))  # row: the position in `reads`
        advance, issue = Signal(), Signal()
        if self.reads == tuple(range(rows)):
            offset = Signal(range(size))  # row * cols + col, kept incrementally
            with m.If(issue):
                m.d.sync += offset.eq(Mux(row == rows - 1, Mux(col == cols - 1, 0, col + 1), offset + cols))
        else:  # the row's offset from a table
            offset = Array(Const(min(r, rows - 1) * cols, range(size)) for r in self.reads)[row] + col
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready), issue.eq(advance & full.bit_select(read_bank, 1)),
                     read.en.eq(advance), read.addr.eq(Mux(read_bank, size, 0) + offset)]
        with m.If(advance):
            m.d.sync += self.o.valid.eq(issue)
        if max(self.reads) < rows:
            m.d.comb += self.o.payload.eq(read.data)
        else:  # a row past the stored ones reads as zero
            stored = Signal(reset_less=True)
            with m.If(advance):
                m.d.sync += stored.eq(Array(Const(r < rows) for r in self.reads)[row])
            m.d.comb += self.o.payload.eq(Mux(stored, read.data, 0))
        with m.If(issue):
            m.d.sync += row.eq(row + 1)
            with m.If(row == reads - 1):
                m.d.sync += [row.eq(0), col.eq(col + 1)]
                with m.If(col == cols - 1):
                    m.d.sync += [col.eq(0), read_bank.eq(~read_bank)]

        # Set and cleared bits are different banks: the writer only fills an empty bank, the reader a full one.
        set_bit = Signal(2)
        clear_bit = Signal(2)
        m.d.comb += [set_bit.eq(Value.cast(write.en & (write_index == size - 1)) << write_bank),
                     clear_bit.eq(Value.cast(issue & (row == reads - 1) & (col == cols - 1)) << read_bank)]
        m.d.sync += full.eq((full | set_bit) & ~clear_bit)
        return m


class _TileTransform(wiring.Component):
    """The ports and timing `Fft2d` and `Ifft2d` share: one n x n tile per n^2 cycles, real samples on one side
    and the half spectrum (`complex_layout(data_bits)`) on the other; `inverse` says which side is which.

    Twiddle products follow `params.twiddle_mult`: by default shift-and-add logic and no DSP at all, because DSPs
    are the budget SPEC2 is compared with the baseline on and the twiddles are constants; "dsp" uses `*`.
    """

    inverse: bool

    def __init__(self, params: FftParams):
        require_params(self, params, FftParams)
        self.params = params
        spectrum = complex_layout(params.data_bits)
        i, o = (spectrum, signed(params.data_bits)) if self.inverse else (signed(params.act_bits), spectrum)
        super().__init__({"i": In(stream.Signature(i)), "o": Out(stream.Signature(o))})

    @property
    def latency(self) -> int:
        """Cycles from a tile's first input handshake to its first output handshake, with no stalls."""
        return self.params.inverse_latency if self.inverse else self.params.forward_latency

    @property
    def period(self) -> int:
        """Cycles per tile at full rate."""
        return self.params.forward_period if not self.inverse else self.params.n ** 2


class Fft2d(_TileTransform):
    """Forward 2-D FFT of n x n real tiles (`fft2_fixed`): row FFTs, columns 0..n/2 kept, column FFTs.

    Stream `i`: signed act_bits activations, a tile's first `params.rows` rows row-major (the rows below are
    zero), each row's columns in bit-reversed order (as the `Tiler` gives them; rows n beats). Stream `o`: the
    n x (n/2 + 1) half spectrum, `complex_layout(data_bits)`, **column-major**: column k2 = 0..n/2, and within it
    k1 = 0..n-1 (n (n/2 + 1) beats per tile).

    Throughput: one tile per `FftParams.forward_period` cycles, max(rows, n/2 + 1) n: the row pass transforms
    only the rows sent (a zero row's transform is zero, exactly, in the fixed point too), and the column pass
    reads the others as zeros. Latency (no stalls): first output handshake `latency` =
    `FftParams.forward_latency` cycles after the tile's first input handshake. Both passes are `SdfFft`s.
    """

    inverse = False

    def elaborate(self, platform):
        m = Module()
        p = self.params
        layout = complex_layout(p.data_bits)
        # Both passes are one butterfly per stage (`SdfFft`), which takes each row or column in bit-reversed order:
        # the tiler gives each row so, the transpose reads each column's rows so.
        m.submodules.row_fft = row_fft = SdfFft(p, shifts=p.row_shifts)
        m.submodules.transpose = transpose = _Transpose(layout, p.rows, p.half_cols, reads=bit_reverse(p.n).tolist())
        m.submodules.col_fft = col_fft = SdfFft(p, shifts=p.col_shifts)
        _hand_over(m, self.i, row_fft.i)
        m.d.comb += [row_fft.i.payload.re.eq(self.i.payload << p.in_shift), row_fft.i.payload.im.eq(0)]
        # A row's bins leave in natural order: 0..n/2 go on to the transpose, the other n/2 - 1 (their conjugates)
        # are dropped.
        k2 = Signal(p.log2n)
        keep = k2 <= p.n // 2
        with m.If(row_fft.o.valid & row_fft.o.ready):
            m.d.sync += k2.eq(k2 + 1)
        m.d.comb += [transpose.i.valid.eq(row_fft.o.valid & keep), row_fft.o.ready.eq(~keep | transpose.i.ready),
                     transpose.i.payload.eq(row_fft.o.payload)]
        wiring.connect(m, transpose.o, col_fft.i)
        wiring.connect(m, col_fft.o, wiring.flipped(self.o))
        return m


class Ifft2d(_TileTransform):
    """Inverse 2-D FFT of n x (n/2 + 1) half spectra (`ifft2_fixed`): column IFFTs, each row completed by
    Z[k2] = conj Z[n - k2] for k2 > n/2, row IFFTs, real part; every stage shifts by 1.

    Stream `i`: `complex_layout(data_bits)`, a half spectrum column-major (column k2 = 0..n/2, within it k1 in
    bit-reversed order, as `IfftInput` gives them); values as `ifft_input` makes them (17-bit clamped, mirrored).
    Stream `o`: signed data_bits, the n x n real tile row-major.

    Throughput: one output sample per cycle, one tile per n^2 cycles (input n (n/2 + 1) beats per tile, taken
    with stalls). Latency (no stalls): first output handshake `latency` = `FftParams.inverse_latency` cycles
    after the tile's first input handshake. Both passes are `SdfFft`s.
    """

    inverse = True

    def elaborate(self, platform):
        m = Module()
        p = self.params
        n, cols = p.n, p.half_cols
        layout = complex_layout(p.data_bits)
        # Both passes are one butterfly per stage (`SdfFft`), which takes each column or row in bit-reversed order:
        # `IfftInput` gives each column so; the transpose reads each row's n bins k = bit_reverse(j) from the
        # n/2 + 1 it holds, bins above n/2 as the conjugates of their mirrors. A negated imaginary part can need
        # one more bit (-(-2^(w-1))), so the row pass takes data_bits + 1.
        order = bit_reverse(n).tolist()
        m.submodules.col_fft = col_fft = SdfFft(p, inverse=True, shifts=p.inverse_shifts)
        m.submodules.transpose = transpose = _Transpose(layout, cols, n, reads=[min(k, n - k) for k in order])
        m.submodules.row_fft = row_fft = SdfFft(p, inverse=True, shifts=p.inverse_shifts, in_bits=p.data_bits + 1)
        wiring.connect(m, wiring.flipped(self.i), col_fft.i)
        wiring.connect(m, col_fft.o, transpose.i)
        _hand_over(m, transpose.o, row_fft.i)
        j = Signal(p.log2n)  # the position in the row of the bin the transpose gives
        with m.If(transpose.o.valid & transpose.o.ready):
            m.d.sync += j.eq(j + 1)
        mirrored = Array(Const(int(k >= cols), 1) for k in order)[j]
        bin_ = transpose.o.payload
        m.d.comb += [row_fft.i.payload.re.eq(bin_.re), row_fft.i.payload.im.eq(Mux(mirrored, -bin_.im, bin_.im))]
        _hand_over(m, row_fft.o, self.o)
        m.d.comb += self.o.payload.eq(row_fft.o.payload.re)
        return m


__all__ = ["FftParams", "SdfFft", "Fft2d", "Ifft2d", "complex_layout", "stage_shifts", "MAX_N"]
