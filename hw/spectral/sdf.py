"""A single-path delay-feedback (SDF) FFT: one n-point radix-2 DIT transform per n samples, one sample per cycle,
with one butterfly per stage. Bit-exact with `hw.spec.spectral.fixed.fft_fixed` along one axis.

`Fft1d` gathers n samples and transforms them in a parallel pipeline n wide, so each of its log2 n levels holds
n / 2 butterflies that work one cycle in n. Here each stage holds one butterfly and works every cycle it is fed.
Stage s (distance D = 2^s) takes its stream in groups of 2D, the golden model's blocks at that stage: the first D
samples (the butterflies' a) wait in registers; each of the next D (b, the j-th of them) meets its a, t = W^k b
with k = j n / 2D, and rs(a + t) leaves at once while rs(a - t) waits; the D differences leave after the D sums,
while the next group's a arrive, so at full rate nothing stalls. Since the golden model permutes its input to
bit-reversed order before its stages, so does the stream: within each transform sample j carries
x[bit_reverse(j)], and the output is in natural order. Each stage's output is a register, so the stages chain
without a combinational path longer than one butterfly (a constant product from `_twiddle_mul` and an adder);
only `ready` passes through a stage.
"""

from __future__ import annotations

from typing import Any

from amaranth import Array, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec.params import check_int
from .fft import FftParams, Transform1d, _rs, _twiddle_mul, complex_layout


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

        def pick(values: list[Any], index: Any) -> Any:
            return values[0] if len(values) == 1 else Array(values)[index]

        # Two delay lines of D, shifted rather than addressed (no multiplexer on either): the group's a, the
        # first at the end when its b comes, and the differences, the first at the end when they leave.
        held = [Signal(self.in_layout, name=f"a{k}") for k in range(d)]
        diffs = [Signal(layout, name=f"diff{k}") for k in range(d)]
        count = Signal(self.stage + 1)  # position in the group of 2D: wraps by itself
        second = count[self.stage]  # the b half
        j = count[:self.stage]
        pending = Signal(range(d + 1))  # differences still to leave

        # t = W^k b for the j-th b: one constant product per distinct twiddle, picked by j.
        b = self.i.payload
        products = []
        for w in self.twiddles:
            (t_re, s_re), (t_im, s_im) = _twiddle_mul(((b.re, 1), (b.im, 1)), w, p.twiddle_bits - 2)
            products.append((t_re if s_re > 0 else -t_re, t_im if s_im > 0 else -t_im))
        t_re = pick([t[0] for t in products], j)
        t_im = pick([t[1] for t in products], j)
        a = held[-1]
        total, difference = Signal(layout), Signal(layout)
        m.d.comb += [
            total.re.eq(_rs(a.re + t_re, self.shift)), total.im.eq(_rs(a.im + t_im, self.shift)),
            difference.re.eq(_rs(a.re - t_re, self.shift)), difference.im.eq(_rs(a.im - t_im, self.shift)),
        ]

        o_valid = Signal()
        o_data = Signal(layout)
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


class SdfFft(Transform1d):
    """One n-point transform per n complex samples, bit-reversed order in, natural order out (`fft_fixed` along
    one axis, whose first step is that permutation), one butterfly per stage.

    Streams `i` and `o`: `complex_layout` beats, transform after transform; sample j of a transform on `i` is
    x[bit_reverse(j)]. `shifts` as `Fft1d`'s (`stage_shifts`). `in_bits`: the input's width, data_bits or one more
    (a conjugate's negated -2^(w-1)); every stage's output is data_bits wide, as the golden model checks.
    Throughput: one sample per cycle in and out. Latency (no stalls): a transform's first output handshake comes
    `latency` = n - 1 + log2 n cycles after its first input handshake (stage s holds 2^s samples and one output
    register).
    """

    def __init__(self, params: FftParams, inverse: bool = False, shifts: tuple[int, ...] | None = None,
                 in_bits: int | None = None):
        try:
            self.in_bits = params.data_bits if in_bits is None else check_int(
                "in_bits", in_bits, params.data_bits, params.data_bits + 1, what=" (data_bits or one more)")
        except ValueError:
            self._MustUse__silence = True  # never built: no "created but never used" warning
            raise
        super().__init__(params, inverse, shifts)

    @property
    def latency(self) -> int:
        return self.params.n - 1 + self.params.log2n

    def _input_layout(self) -> data.StructLayout:
        return complex_layout(self.in_bits)

    def elaborate(self, platform):
        m = Module()
        p = self.params
        sign = -1 if self.inverse else 1
        upstream = wiring.flipped(self.i)
        for stage, shift in enumerate(self.shifts):
            d = 1 << stage
            twiddles = [(wr, sign * wi) for wr, wi in (p.twiddles[j * (p.n // (2 * d))] for j in range(d))]
            m.submodules[f"stage{stage}"] = unit = _SdfStage(p, stage, shift, twiddles,
                                                             self.in_bits if stage == 0 else p.data_bits)
            wiring.connect(m, upstream, unit.i)
            upstream = unit.o
        wiring.connect(m, upstream, wiring.flipped(self.o))
        return m


__all__ = ["SdfFft"]
