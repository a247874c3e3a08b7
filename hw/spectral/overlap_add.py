"""SPEC2 overlap-add and output stage: IFFT tiles in, the cropped, requantized int8 feature map out.

Implements steps 4-5 of `hw.spec.spectral` for one output channel at a time: `overlap_add` (exact integer
sums, `SpectralFixed.ola_bits` wide), `crop` ("same" / "valid") and `requantize` (clamp(rs(v * out_mult +
bias_q, out_shift)), round half up, optional ReLU). `requant_stages` is that output stage alone, shared with
the dense baseline (`hw.baseline.conv`) so both engines end in the same logic.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.spec.params import check_ints
from hw.spec.spectral.engine import SHIFT_BITS
from hw.spec.spectral.geometry import DEFAULT_N, OaaParams

from .rounding import clamp, round_add, shift_down

#: Register stages of `requant_stages`.
REQUANT_STAGES = 4


def requant_stages(m: Module, enable: Value, valid: Value, v: Value, out_mult: Value, out_shift: Value,
                   bias: Value, out_bits: int, relu: bool) -> tuple[Signal, Signal, Signal]:
    """`REQUANT_STAGES` registered stages computing clamp(rs(v * out_mult + bias, out_shift)) to signed out_bits
    (lower bound 0 with `relu`): the product and bias, the rounding add, the shift, the clamp
    (`hw.spectral.rounding`); every register advances on `enable`. Returns (valid, y) of the last stage and
    whether an earlier stage holds a value (to tell when the pipe is empty).

    `v`, `out_mult`, `out_shift` and `bias` are sampled together with `valid`, so they may change every beat.
    """
    # r = v * out_mult + bias: a signed product of v (signed) and out_mult (unsigned) plus a bias at most as
    # wide, so one more bit than the wider of the two.
    r_bits = max(len(v) + len(out_mult) + 1, len(bias)) + 1
    a_valid = Signal(name="rq_a_valid")
    a_r = Signal(signed(r_bits), name="rq_a_r", reset_less=True)
    a_shift = Signal(len(out_shift), name="rq_a_shift", reset_less=True)
    with m.If(enable):
        m.d.sync += [a_valid.eq(valid), a_r.eq(v * out_mult + bias), a_shift.eq(out_shift)]
    b_valid = Signal(name="rq_b_valid")
    b_t = Signal(signed(r_bits + 1), name="rq_b_t", reset_less=True)
    b_shift = Signal(len(out_shift), name="rq_b_shift", reset_less=True)
    with m.If(enable):
        m.d.sync += [b_valid.eq(a_valid), b_t.eq(round_add(m, a_r, a_shift, "rq")), b_shift.eq(a_shift)]
    # The shift of a value this wide and the clamp's compares take a stage each: in one they bounded the LeNet-5
    # build's clock (59 MHz).
    c_valid = Signal(name="rq_c_valid")
    c_s = Signal(signed(r_bits + 1), name="rq_c_s", reset_less=True)
    with m.If(enable):
        m.d.sync += [c_valid.eq(b_valid), c_s.eq(shift_down(b_t, b_shift, r_bits))]
    low = 0 if relu else -(1 << (out_bits - 1))
    high = (1 << (out_bits - 1)) - 1
    d_valid = Signal(name="rq_d_valid")
    d_y = Signal(signed(out_bits), name="rq_d_y", reset_less=True)
    with m.If(enable):
        m.d.sync += [d_valid.eq(c_valid), d_y.eq(clamp(c_s, low, high))]
    busy = Signal(name="rq_busy")
    m.d.comb += busy.eq(a_valid | b_valid | c_valid)
    return d_valid, d_y, busy


@dataclass(frozen=True)
class OverlapAddParams:
    """Structural parameters of `OverlapAdd`; validated on construction, hashable.

    n, l, k, padding: the OaA geometry (`hw.spec.spectral.geometry.OaaParams` rules). max_height, max_width: the
    largest input map (H x W) the canvas buffer holds. in_bits: IFFT output width (`SpectralFixed.data_bits`).
    mult_bits, out_bits: requantization multiplier and output widths. relu: clamp outputs below at 0.
    """

    n: int = DEFAULT_N
    l: int = 6  # noqa: E741 (the paper's name)
    k: int = 3
    padding: str = "same"
    max_height: int = 28
    max_width: int = 28
    in_bits: int = 18
    mult_bits: int = 16
    out_bits: int = 8
    relu: bool = False

    def __post_init__(self) -> None:
        check_ints(self, (("n", 4, None), ("l", 1, None), ("k", 1, None), ("max_height", 1, None),
                          ("max_width", 1, None), ("in_bits", 2, None), ("mult_bits", 1, None), ("out_bits", 2, None)))
        OaaParams(self.n, self.k, self.l, self.padding)  # its errors name the field
        if self.padding == "valid" and min(self.max_height, self.max_width) < self.k:
            raise ValueError(f"max_height and max_width must be >= k={self.k} for 'valid' padding")
        if not isinstance(self.relu, bool):
            raise ValueError(f"relu must be a bool, got {self.relu!r}")

    @property
    def oaa(self) -> OaaParams:
        return OaaParams(self.n, self.k, self.l, self.padding)

    @property
    def ola_bits(self) -> int:
        """Canvas width: in_bits + ceil(log2 a^2), a = ceil(n / l) tiles overlapping per axis (as the golden)."""
        a = -(-self.n // self.l)
        return self.in_bits + (a * a - 1).bit_length()

    @property
    def canvas_rows(self) -> int:
        return -(-self.max_height // self.l) * self.l + self.n - self.l

    @property
    def canvas_cols(self) -> int:
        return -(-self.max_width // self.l) * self.l + self.n - self.l

    @property
    def col_bits(self) -> int:
        """Canvas address = row * 2^col_bits + column."""
        return (self.canvas_cols - 1).bit_length()

    @property
    def row_bits(self) -> int:
        return (self.canvas_rows - 1).bit_length()

    @property
    def depth(self) -> int:
        return self.canvas_rows << self.col_bits

    @property
    def cfg_layout(self) -> data.StructLayout:
        """One beat per map, fields from the LSB."""
        return data.StructLayout({
            "height": self.max_height.bit_length(),
            "width": self.max_width.bit_length(),
            "out_mult": unsigned(self.mult_bits),
            "out_shift": unsigned(SHIFT_BITS),
            "bias": signed(self.ola_bits + self.mult_bits),
        })


class OverlapAdd(wiring.Component):
    """Overlap-add, crop and requantize one output channel's IFFT tiles into its int8 output map.

    Streams (Amaranth valid/ready; payload fields from the LSB):

    * `cfg`: one beat per map, `params.cfg_layout`: the input map's height and width (1..max, at least k
      each for "valid"), and that channel's requantization constants out_mult, out_shift (0..63) and bias
      (`QuantParams.bias_q[o]`). They are run-time values, so one instance serves every channel and layer.
    * `i`: the map's tiles, signed in_bits, one value per beat: tiles in tile raster order (ceil(H/L) x
      ceil(W/L)), each tile's N x N values in raster order (the golden's `ifft_out[o]`).
    * `o`: the output map, signed out_bits, one value per beat in raster order (H_out x W_out).

    The canvas, (ceil(H/L) L + N - L) rows of 2^col_bits words of ola_bits, sits in one `Memory`: each
    input value is read, added (or written alone on its canvas position's first touch, so the buffer needs
    no clearing) and written back two cycles later; two touches of one position are at least N^2 - L beats
    apart, so the read never misses a pending write. Once tile row r is complete, canvas rows below
    (r + 1) L are final and the reader streams the cropped output from them while later tiles arrive. A
    new map's `cfg` is taken once the previous map has been read out and the output pipe is empty.

    Throughput: one input value per cycle, never stalled within a map; the output runs at up to one value
    per cycle behind it. Per map the cost is its T_r T_c N^2 input beats plus the drain of the rows that
    become final with the last tile row (at most (N + L) W_out outputs) and a few cycles of latency.
    """

    def __init__(self, params: OverlapAddParams):
        if not isinstance(params, OverlapAddParams):
            self._MustUse__silence = True
            raise TypeError(f"params must be an OverlapAddParams, got {type(params).__name__}")
        self.params = params
        super().__init__({
            "cfg": In(stream.Signature(params.cfg_layout)),
            "i": In(stream.Signature(signed(params.in_bits))),
            "o": Out(stream.Signature(signed(params.out_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        n, l = p.n, p.l  # noqa: E741
        m.submodules.canvas = canvas = Memory(shape=signed(p.ola_bits), depth=p.depth, init=[])
        rmw_read = canvas.read_port()
        write = canvas.write_port()
        out_read = canvas.read_port()

        cfg = Signal(p.cfg_layout)
        loaded = Signal()  # cfg taken, the map not yet fully read out
        accepted_all = Signal()  # the map's last input value taken
        written = Signal()  # ... and written: every canvas row final
        done_rows = Signal(p.row_bits + 1)  # canvas rows below this are final

        # --- writer: tile (r, c) at canvas (r_base, c_base), value (a, b) within it ---------------------
        r_base = Signal(range(p.canvas_rows + 1))
        c_base = Signal(range(p.canvas_cols + 1))
        a = Signal(range(n))
        b = Signal(range(n))
        last_tile_row = r_base + l >= cfg.height
        last_tile_col = c_base + l >= cfg.width
        tile_end = (a == n - 1) & (b == n - 1)
        # A position is first touched by the earliest tile covering it: no tile above (r = 0 or a >= N - L)
        # and none to the left.
        first = ((r_base == 0) | (a >= n - l)) & ((c_base == 0) | (b >= n - l))
        take = Signal()
        m.d.comb += [
            take.eq(self.i.valid & self.i.ready),
            self.i.ready.eq(loaded & ~accepted_all),
            rmw_read.addr.eq(((r_base + a) << p.col_bits) | (c_base + b)),
        ]
        with m.If(take):
            m.d.sync += b.eq(b + 1)
            with m.If(b == n - 1):
                m.d.sync += [b.eq(0), a.eq(a + 1)]
            with m.If(tile_end):
                m.d.sync += [a.eq(0), c_base.eq(c_base + l)]
                with m.If(last_tile_col):
                    m.d.sync += [c_base.eq(0), r_base.eq(r_base + l)]
                    with m.If(last_tile_row):
                        m.d.sync += [r_base.eq(0), accepted_all.eq(1)]

        w_valid = Signal()
        w_addr = Signal(range(p.depth), reset_less=True)
        w_value = Signal(signed(p.in_bits), reset_less=True)
        w_first = Signal(reset_less=True)
        w_row_done = Signal(reset_less=True)
        w_map_done = Signal(reset_less=True)
        w_rows = Signal(p.row_bits + 1, reset_less=True)
        m.d.sync += [
            w_valid.eq(take), w_addr.eq(rmw_read.addr), w_value.eq(self.i.payload), w_first.eq(first),
            w_row_done.eq(tile_end & last_tile_col), w_map_done.eq(tile_end & last_tile_col & last_tile_row),
            w_rows.eq(r_base + l),
        ]
        m.d.comb += [
            write.en.eq(w_valid), write.addr.eq(w_addr),
            write.data.eq(Mux(w_first, 0, rmw_read.data) + w_value),
        ]
        with m.If(w_valid & w_row_done):
            m.d.sync += done_rows.eq(w_rows)
        with m.If(w_valid & w_map_done):
            m.d.sync += written.eq(1)

        # --- reader: output (y, x) is canvas (s + y, s + x) ---------------------------------------------
        enable = Signal()
        m.d.comb += enable.eq(~self.o.valid | self.o.ready)
        s = p.oaa.crop
        shrink = p.k - 1 if p.padding == "valid" else 0
        y = Signal(range(p.max_height))
        x = Signal(range(p.max_width))
        last_x = x == cfg.width - shrink - 1
        last_y = y == cfg.height - shrink - 1
        issue = Signal()
        m.d.comb += [
            issue.eq(enable & loaded & (written | (y + s < done_rows))),
            out_read.addr.eq(((y + s) << p.col_bits) | (x + s)),
            out_read.en.eq(enable),
        ]
        with m.If(issue):
            m.d.sync += x.eq(x + 1)
            with m.If(last_x):
                m.d.sync += [x.eq(0), y.eq(y + 1)]
                with m.If(last_y):
                    # The map's last read is issued: the canvas and cfg are free for the next map.
                    m.d.sync += [y.eq(0), loaded.eq(0), accepted_all.eq(0), written.eq(0), done_rows.eq(0)]

        r_valid = Signal()
        with m.If(enable):
            m.d.sync += r_valid.eq(issue)
        # The canvas's read data gets a register before the multiplier: a block RAM's output comes late in the
        # cycle, and the DSP column can be far from the canvas's (this path bounded the LeNet-5 build's clock).
        v_valid = Signal()
        v = Signal(signed(p.ola_bits), reset_less=True)
        with m.If(enable):
            m.d.sync += [v_valid.eq(r_valid), v.eq(out_read.data)]
        q_valid, q_y, q_busy = requant_stages(m, enable, v_valid, v, cfg.out_mult, cfg.out_shift, cfg.bias,
                                              p.out_bits, p.relu)
        m.d.comb += [self.o.valid.eq(q_valid), self.o.payload.eq(q_y)]

        # cfg waits for the pipe to drain: its requantization constants are used until the map's last output.
        m.d.comb += self.cfg.ready.eq(~loaded & ~r_valid & ~v_valid & ~q_busy & ~q_valid)
        with m.If(self.cfg.valid & self.cfg.ready):
            m.d.sync += [cfg.eq(self.cfg.payload), loaded.eq(1)]
        return m
