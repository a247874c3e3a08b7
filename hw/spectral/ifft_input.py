"""SPEC2 IFFT input stage: the MAC's canonical accumulators in, the `Ifft2d`'s half spectrum out.

Implements `hw.spec.spectral.fixed.ifft_input` for one output channel at a time: Y = clamp(rs(acc, mac_shift)) to
signed data_bits - 1 per component (round half up), then the non-canonical bins of columns 0 and n/2 (rows
n/2 + 1..n - 1) are the conjugates of their partners (rows n - k1). The golden model does not force the four
self-conjugate bins real, and neither does this block: it passes them through as it does every bin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from amaranth import Module, Mux, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..spec.params import check_int, check_ints, require_params
from ..spec.spectral.engine import SHIFT_BITS
from ..spec.spectral.geometry import DEFAULT_N, bins, check_fft_size, half_cols
from .fft import complex_layout
from .rounding import round_add, shift_clamp
from .spectral_mac import canonical_bins


@dataclass(frozen=True)
class IfftInputParams:
    """Structural parameters of `IfftInput`; validated on construction, hashable.

    n: FFT size (power of two, 4..256). acc_bits: the MAC's accumulator width (`SpectralFixed.acc_bits`, 45).
    data_bits: the IFFT data path (`SpectralFixed.data_bits`, 18); values are clamped to data_bits - 1.
    """

    n: int = DEFAULT_N
    acc_bits: int = 45
    data_bits: int = 18

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", check_fft_size(self.n))
        check_ints(self, (("data_bits", 3, 30),))
        acc_bits = check_int("acc_bits", self.acc_bits, self.data_bits, 64, what=" (at least data_bits)")
        object.__setattr__(self, "acc_bits", acc_bits)

    @classmethod
    def from_spec(cls, spec: Any, n: int = DEFAULT_N) -> IfftInputParams:
        """The parameters of a `hw.spec.spectral.fixed.SpectralFixed` at FFT size n."""
        return cls(n=n, acc_bits=spec.acc_bits, data_bits=spec.data_bits)

    @property
    def ifft_in_bits(self) -> int:
        return self.data_bits - 1

    @property
    def latency(self) -> int:
        """Cycles from a channel's last beat in to its first beat out (at full rate)."""
        return 4

    @property
    def canonical(self) -> int:
        """Canonical bins, beats in per channel (34 at n = 8)."""
        return len(canonical_bins(self.n))

    @property
    def in_layout(self) -> data.StructLayout:
        """One accumulated canonical bin, as `SpectralMacParams.out_layout`."""
        return data.StructLayout({"re": signed(self.acc_bits), "im": signed(self.acc_bits), "last": 1})


class IfftInput(wiring.Component):
    """One output channel's exact canonical accumulators in, its IFFT input half spectrum out.

    * `mac_shift` (input signal, SHIFT_BITS wide, 0..63): the layer's `QuantParams.mac_shift`, a run-time
      value sampled with every `i` beat (hold it steady over a layer; it may change between channels).
    * `i` (`params.in_layout`, = `SpectralMac.o`): per channel the canonical bins in ascending linear index
      (`canonical_bins`), acc_bits re/im. `last` is not used: a channel is always `params.canonical` beats.
    * `o` (`complex_layout(data_bits)`, = `Ifft2d.i`): per channel the n x (n/2 + 1) half spectrum
      column-major (k2 = 0..n/2 outer, k1 inner in bit-reversed order, `hw.spec.spectral.fixed.bit_reverse`,
      the order the column IFFT takes), each value the golden `ifft_input`'s.

    Each taken beat is rounded, then shifted and clamped (two registered stages) and written to a ping-pong
    buffer (`Memory`, 2 x n (n/2 + 1) words of 2 (data_bits - 1) bits, column-major addresses): one channel
    fills while the previous one is read out. Mirrored bins are read from their partner's address and the
    imaginary part negated on the way out (-(-2^(data_bits-2)) fits data_bits).

    Throughput: `o` gives one beat per cycle, n (n/2 + 1) per channel (40 at n = 8), and `i` takes one per
    cycle whenever a buffer is free, so back to back a channel costs n (n/2 + 1) cycles (the input stalls
    for the difference). Latency: a channel's first output can be taken `params.latency` (4) cycles after its
    last input.
    """

    def __init__(self, params: IfftInputParams):
        require_params(self, params, IfftInputParams)
        self.params = params
        super().__init__({
            "mac_shift": In(SHIFT_BITS),
            "i": In(stream.Signature(params.in_layout)),
            "o": Out(stream.Signature(complex_layout(params.data_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        # The half spectrum's bins (n (n/2 + 1)) are the beats out per channel.
        n, cols, size, bits = p.n, half_cols(p.n), bins(p.n), p.ifft_in_bits
        m.submodules.buffer = buffer = Memory(shape=complex_layout(bits), depth=2 * size, init=[])
        write, read = buffer.write_port(), buffer.read_port(transparent_for=())
        full = Signal(2)  # bank b holds a whole channel not yet read

        # --- writer: canonical bin (k1, k2) at column-major address k2 n + k1 ----------------------------
        write_bank, k1, k2 = Signal(), Signal(range(n)), Signal(range(cols))
        take = Signal()
        m.d.comb += [take.eq(self.i.valid & self.i.ready), self.i.ready.eq(~full.bit_select(write_bank, 1))]
        # Rows past n/2 hold only columns 1..n/2 - 1: their first canonical column is 1, their last n/2 - 1.
        lower = k1 > n // 2
        row_end = Mux(lower, k2 == cols - 2, k2 == cols - 1)
        channel_end = (k1 == n - 1) & row_end
        with m.If(take):
            m.d.sync += k2.eq(k2 + 1)
            with m.If(row_end):
                m.d.sync += [k1.eq(k1 + 1), k2.eq(Mux(k1 + 1 > n // 2, 1, 0))]
                with m.If(channel_end):
                    m.d.sync += [k1.eq(0), k2.eq(0), write_bank.eq(~write_bank)]

        # Two registered stages: the rounding add, then the shift and clamp (`hw.spectral.rounding`).
        a_valid, a_end = Signal(), Signal()
        a_bank = Signal(reset_less=True)
        a_addr = Signal(range(size), reset_less=True)
        a_shift = Signal(SHIFT_BITS, reset_less=True)
        a_re, a_im = (Signal(signed(p.acc_bits + 1), name=f"a_{part}", reset_less=True) for part in ("re", "im"))
        m.d.sync += [
            a_valid.eq(take), a_end.eq(take & channel_end), a_bank.eq(write_bank), a_addr.eq(k2 * n + k1),
            a_shift.eq(self.mac_shift),
            a_re.eq(round_add(m, self.i.payload.re, self.mac_shift, "re")),
            a_im.eq(round_add(m, self.i.payload.im, self.mac_shift, "im")),
        ]
        w_valid, w_end = Signal(), Signal()
        w_bank = Signal(reset_less=True)
        w_addr = Signal(range(size), reset_less=True)
        w_value = Signal(complex_layout(bits), reset_less=True)
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        m.d.sync += [
            w_valid.eq(a_valid), w_end.eq(a_end), w_bank.eq(a_bank), w_addr.eq(a_addr),
            w_value.re.eq(shift_clamp(a_re, a_shift, p.acc_bits, low, high)),
            w_value.im.eq(shift_clamp(a_im, a_shift, p.acc_bits, low, high)),
        ]
        m.d.comb += [write.en.eq(w_valid), write.addr.eq(w_bank * size + w_addr), write.data.eq(w_value)]

        # --- reader: bin (k1, k2) column-major, k1 bit-reversed; mirrored bins from (n - k1, k2), conjugated ------
        read_bank, r1, r2 = Signal(), Signal(range(n)), Signal(range(cols))
        advance, issue = Signal(), Signal()
        row = r1[::-1]  # k1 at position r1 of the column: bit-reversed, as the column FFT (`SdfFft`) takes it
        mirror = ((r2 == 0) | (r2 == cols - 1)) & (row > n // 2)
        source = Mux(mirror, n - row, row)
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready), issue.eq(advance & full.bit_select(read_bank, 1)),
                     read.en.eq(advance), read.addr.eq(read_bank * size + r2 * n + source)]
        negate = Signal(reset_less=True)
        with m.If(advance):
            m.d.sync += [self.o.valid.eq(issue), negate.eq(mirror)]
        read_end = (r1 == n - 1) & (r2 == cols - 1)
        with m.If(issue):
            m.d.sync += r1.eq(r1 + 1)
            with m.If(r1 == n - 1):
                m.d.sync += [r1.eq(0), r2.eq(r2 + 1)]
                with m.If(r2 == cols - 1):
                    m.d.sync += [r2.eq(0), read_bank.eq(~read_bank)]
        m.d.comb += [self.o.payload.re.eq(read.data.re),
                     self.o.payload.im.eq(Mux(negate, -read.data.im, read.data.im))]

        # Set and cleared bits are different banks: the writer only fills an empty bank, the reader a full one.
        set_bit, clear_bit = Signal(2), Signal(2)
        m.d.comb += [set_bit.eq(Value.cast(w_end) << w_bank),
                     clear_bit.eq(Value.cast(issue & read_end) << read_bank)]
        m.d.sync += full.eq((full | set_bit) & ~clear_bit)
        return m


__all__ = ["IfftInput", "IfftInputParams"]
