"""Sparse-quantized fully connected engine: XOR-coded weight bits and BIM masks decoded on the fly.

The layer it computes is `hw.spec.fc.fc_fixed`, on weights stored tile-major (`hw.spec.fc`): bit-plane
slices come from an `XorDecoder` and mask rows from a `BimUnpacker`, one of each per cycle, each covering the
same n_t weights of one row of the matrix against one tile of n_t activations. The beat formats' executable
spec is `hw/spec/fc_stream.py`.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.spec.fc import ACT_BITS, FcLayout
from hw.spec.fc_format import FcFormat
from hw.spec.fc_stream import MAX_SHIFT, FcStreamFormat, cfg_beat_fields, scale_beat_fields

from .bim_unpacker import BimUnpacker, BimUnpackerParams
from .layouts import struct_layout
from .spec.params import check_ints, require_params
from .xor_decoder import XorDecoder, XorDecoderParams, matrix_shape

#: Largest accumulator the golden model's int64 arithmetic represents exactly, with room for the rounding.
MAX_ACC_BITS = 63


@dataclass(frozen=True)
class FcEngineParams:
    """Structural parameters of `FcEngine`; validated on construction (errors name the field), hashable.

    n_in, n_out, max_patches, m, xor_fanin: the XOR decoder's (`XorDecoderParams`); n_out is also the tile
    width n_t. r, m_t: BIM rank and tile height. max_rows, max_cols, max_bits: the largest layer (rows, cols
    and planes q); the actual sizes are run-time `cfg` values. a_bits: unsigned per-row, per-plane scale a;
    bias_bits: signed bias_q; shift_bits: the run-time shift field (0..min(62, 2^shift_bits - 1)).
    tree_fanin: terms one pipeline stage of the adder tree sums. x_lane_writes: how x reaches its memory (below);
    it changes neither the streams nor the timing, only the logic (not part of `describe`).

    x_lane_writes False: each n_t-value word is gathered in a register and written whole, zeros past cols. True:
    each value goes straight into its byte lane (one write enable per lane) and lanes past cols in a layer's last
    column tile are masked where the terms are formed, which saves the n_t x 8-bit register and its muxes.
    """

    n_in: int
    n_out: int
    max_patches: int
    m: tuple[int, ...]
    r: int
    m_t: int
    max_rows: int
    max_cols: int
    max_bits: int = 1
    a_bits: int = 16
    bias_bits: int = 32
    shift_bits: int = 6
    xor_fanin: int = 16
    tree_fanin: int = 4
    #: The `FcFormat` seed M was drawn with (`from_format` sets it), so `fc_format` can name the format; None: M
    #: came as a matrix.
    seed: int | None = None
    x_lane_writes: bool = False

    def __post_init__(self) -> None:
        xor = XorDecoderParams(self.n_in, self.n_out, self.max_patches, self.m, self.xor_fanin)
        object.__setattr__(self, "m", xor.m)
        check_ints(self, (("n_in", 1, None), ("n_out", 2, None), ("max_patches", 1, None), ("xor_fanin", 2, None),
                          ("r", 1, None), ("m_t", 1, None), ("max_rows", 1, None), ("max_cols", 1, None),
                          ("max_bits", 1, 8), ("a_bits", 1, 32), ("bias_bits", 2, 62), ("shift_bits", 1, 6),
                          ("tree_fanin", 2, None)))
        if not isinstance(self.x_lane_writes, (bool, np.bool_)):
            raise ValueError(f"x_lane_writes must be a bool, got {self.x_lane_writes!r}")
        object.__setattr__(self, "x_lane_writes", bool(self.x_lane_writes))
        if self.acc_bits > MAX_ACC_BITS:
            raise ValueError(f"a_bits, bias_bits, max_cols and max_bits need a {self.acc_bits}-bit accumulator, "
                             f"at most {MAX_ACC_BITS}")
        if self.seed is not None:
            check_ints(self, (("seed", 0, 2**63 - 1),))
            fmt = self.fc_format  # FcFormat's own checks, then M must be the seed's
            if tuple(XorDecoderParams.from_matrix(fmt.matrix(), 1).m) != self.m:
                raise ValueError(f"seed {self.seed} does not draw m (xor_matrix({self.n_out}, {self.n_in}, seed))")

    @classmethod
    def from_matrix(cls, m: Any, max_patches: int, **kwargs: Any) -> FcEngineParams:
        """Parameters for an (n_out, n_in) 0/1 XOR matrix `m`, sizes taken from its shape."""
        n_out, n_in = matrix_shape(m)
        return cls(n_in=n_in, n_out=n_out, max_patches=max_patches, m=m, **kwargs)

    @classmethod
    def from_format(cls, fmt: FcFormat, max_rows: int, max_cols: int, **kwargs: Any) -> FcEngineParams:
        """The engine a model compressed for `fmt` runs on: its M, patch lanes, tile, rank, a_bits and planes,
        for layers of up to max_rows x max_cols (the engine pads them to whole tiles itself)."""
        if not isinstance(fmt, FcFormat):
            raise ValueError(f"fmt must be an FcFormat, got {type(fmt).__name__}")
        return cls.from_matrix(fmt.matrix(), fmt.max_patches, r=fmt.r, m_t=fmt.m_t, max_rows=max_rows,
                               max_cols=max_cols, max_bits=fmt.max_planes, a_bits=fmt.a_bits, seed=fmt.seed,
                               **kwargs)

    @property
    def fc_format(self) -> FcFormat | None:
        """The `FcFormat` of models this engine runs (max_planes = max_bits); None without a seed."""
        if self.seed is None:
            return None
        return FcFormat(n_in=self.n_in, n_out=self.n_out, seed=self.seed, max_patches=self.max_patches,
                        m_t=self.m_t, r=self.r, a_bits=self.a_bits, max_planes=self.max_bits)

    @property
    def n_t(self) -> int:
        return self.n_out

    @property
    def xor(self) -> XorDecoderParams:
        return XorDecoderParams(self.n_in, self.n_out, self.max_patches, self.m, self.xor_fanin)

    @property
    def bim(self) -> BimUnpackerParams:
        return BimUnpackerParams(self.m_t, self.n_t, self.r)

    @property
    def layout(self) -> FcLayout:
        return FcLayout(self.m_t, self.n_t)

    @property
    def stream_format(self) -> FcStreamFormat:
        """The beat widths, for `hw.spec.fc_stream` (from `describe`, as the host takes them from INFO)."""
        return FcStreamFormat.from_describe(self.describe())

    @property
    def max_shift(self) -> int:
        return min(MAX_SHIFT, (1 << self.shift_bits) - 1)

    @property
    def x_depth(self) -> int:
        """Activation words (one column tile of n_t int8 values each) of the widest layer."""
        return -(-self.max_cols // self.n_t)

    @property
    def term_bound(self) -> int:
        """Largest |±x|: an int8 activation negated."""
        return 1 << (ACT_BITS - 1)

    @property
    def product_bits(self) -> int:
        """Signed width of a[row, i] times one slice's sum (n_t terms of at most 128 in magnitude)."""
        return (self.term_bound * self.n_t * ((1 << self.a_bits) - 1)).bit_length() + 1

    @property
    def acc_bits(self) -> int:
        """Signed accumulator width: bias_q plus every plane's products over max_cols activations."""
        bound = (1 << (self.bias_bits - 1)) + self.term_bound * self.max_cols * self.max_bits * ((1 << self.a_bits) - 1)
        return bound.bit_length() + 1

    @property
    def tree_stages(self) -> int:
        """Registered stages of the adder tree over n_t terms, tree_fanin terms per stage."""
        stages, terms = 0, self.n_t
        while terms > 1:
            stages, terms = stages + 1, -(-terms // self.tree_fanin)
        return stages

    @property
    def latency(self) -> int:
        """Clock edges from a slice's handshake to its accumulator write: terms, tree, product, add."""
        return self.tree_stages + 3

    @property
    def cfg_layout(self) -> data.StructLayout:
        """One beat per layer, `hw.spec.fc_stream.cfg_beat_fields` (the first field at the LSB)."""
        return struct_layout(cfg_beat_fields(self.max_rows, self.max_cols, self.max_bits, self.shift_bits))

    @property
    def scale_layout(self) -> data.StructLayout:
        """One beat per row: its a values (element i = plane i) and its bias (`scale_beat_fields`)."""
        return struct_layout(scale_beat_fields(self.max_bits, self.a_bits, self.bias_bits))

    def describe(self) -> dict[str, Any]:
        """The parameters as plain JSON-able data."""
        return {**self.xor.describe(), "r": self.r, "m_t": self.m_t, "max_rows": self.max_rows,
                "max_cols": self.max_cols, "max_bits": self.max_bits, "a_bits": self.a_bits,
                "bias_bits": self.bias_bits, "shift_bits": self.shift_bits, "tree_fanin": self.tree_fanin,
                "latency": self.latency}


class FcEngine(wiring.Component):
    """One fully connected layer at a time: y = clamp(rs(Σ_i a_i Σ_c mask (±x) + bias_q, shift)), int8.

    Streams (`amaranth.lib.stream`, valid/ready; payload fields from the LSB, `hw/spec/fc_stream.py`):

    * `cfg`, `params.cfg_layout`: one beat per layer: rows (1..max_rows), cols (1..max_cols), bits (planes q,
      1..max_bits), shift (0..`params.max_shift`), relu. Other values are outside the format (`pack_cfg`
      rejects them).
    * `x`, signed 8 bits: the cols activations; the engine pads them with zeros to whole tiles of n_t.
    * `scale`, `params.scale_layout`: rows beats, row by row: a[row, 0..max_bits - 1] and bias_q[row].
    * `xor`, the XOR decoder's beats (`params.xor.beat_layout`) of the tile-major planes, plane after plane.
    * `bim`, the BIM unpacker's beats (`params.bim.beat_layout`) of the mask's tiles, once per plane.
    * `o`, signed 8 bits: rows outputs, row by row.

    Phases of a layer: (1) cfg taken; (2) load: x written into a memory of n_t-wide words (one per column
    tile), a into a per-row memory, and bias_q into the accumulator memory as each row's initial value;
    (3) compute: one decoded slice (n_t sign bits) and one mask row are taken per cycle, in tile-major order
    (plane, tile row, column tile, row of the tile, as counters); a free-running pipeline reads the
    column tile's activations and the row's a, forms the n_t terms mask ? (sign ? x : -x) : 0, sums them in
    an adder tree (`tree_fanin` terms per stage), multiplies by a[row, plane] and adds the product to acc[row]
    (padding rows past `rows` write nothing); (4) drain, then output: each acc[row] is rounded, shifted,
    clamped to int8 (at 0 with ReLU) and sent. The next cfg is taken after the last output beat; the xor and
    bim streams are not gated, so the decoder and unpacker fill with the next layer's first slices early.

    The accumulator's read-modify-write: acc[row] is read the cycle before its write, through a read port
    transparent to the write port. Updates of one row are m_t or more slices apart (m_t consecutive slices
    are m_t different rows), so at m_t = 1 they come on consecutive cycles: the later one's read shares an
    edge with the earlier one's write and the transparency forwards the new value; an update two or more
    cycles later reads after the write. The pipeline therefore never stalls and the accumulator sets no
    minimum m_t (on FPGAs without write-first block RAM, synthesis adds the address compare and bypass mux).

    Rate: during compute one slice per cycle, whenever the decoder and the unpacker both have one ready. The
    decoder gives one slice per input beat (slices with more than max_patches patches take several beats);
    the unpacker one mask row per P beat, sustained while m_t >= r (a tile with r > m_t costs r - m_t extra Z
    beats). So at full input rate and m_t >= r the compute phase takes one cycle per XOR beat, which is one
    per slice when no slice exceeds max_patches patches. The load takes max(cols, rows) beats; the output
    rows beats after a drain of about `latency` + 4 cycles.
    """

    def __init__(self, params: FcEngineParams):
        require_params(self, params, FcEngineParams)
        self.params = params
        super().__init__({
            "cfg": In(stream.Signature(params.cfg_layout)),
            "x": In(stream.Signature(signed(ACT_BITS))),
            "scale": In(stream.Signature(params.scale_layout)),
            "xor": In(stream.Signature(params.xor.beat_layout)),
            "bim": In(stream.Signature(params.bim.beat_layout)),
            "o": Out(stream.Signature(signed(ACT_BITS))),
        })

    @property
    def latency(self) -> int:
        return self.params.latency

    def elaborate(self, platform):
        m = Module()
        p = self.params
        n_t, m_t, w = p.n_t, p.m_t, ACT_BITS

        m.submodules.decoder = decoder = XorDecoder(p.xor)
        m.submodules.unpacker = unpacker = BimUnpacker(p.bim)
        wiring.connect(m, wiring.flipped(self.xor), decoder.i)
        wiring.connect(m, wiring.flipped(self.bim), unpacker.i)

        # x as raw words of n_t bytes: element j of column tile b at bits [8j, 8j + 8).
        m.submodules.x_mem = x_mem = Memory(shape=unsigned(n_t * w), depth=p.x_depth, init=[])
        x_write, x_read = x_mem.write_port(granularity=w if p.x_lane_writes else None), x_mem.read_port()
        m.submodules.a_mem = a_mem = Memory(shape=p.scale_layout["a"].shape, depth=p.max_rows, init=[])
        a_write, a_read = a_mem.write_port(), a_mem.read_port()
        m.submodules.acc_mem = acc_mem = Memory(shape=signed(p.acc_bits), depth=p.max_rows, init=[])
        acc_write = acc_mem.write_port()
        # Only at m_t = 1 can a row's read share an edge with its previous update's write (class docstring); from
        # m_t = 2 on, updates of a row are at least two cycles apart and a plain read port sees every write.
        acc_read = acc_mem.read_port(transparent_for=(acc_write,) if m_t == 1 else ())

        cfg = Signal(p.cfg_layout)
        loading = Signal()
        computing = Signal()
        outputting = Signal()

        # --- load: x into words, a and the bias (acc's initial value) per row ---------------------------
        x_count = Signal(range(p.max_cols + 1))
        x_pos = Signal(range(n_t))
        x_addr = Signal(range(p.x_depth))
        x_take = Signal()
        m.d.comb += [self.x.ready.eq(loading & (x_count != cfg.cols)), x_take.eq(self.x.valid & self.x.ready)]
        word_end = (x_pos == n_t - 1) | (x_count == cfg.cols - 1)
        # Lanes of the last column tile that hold activations (0..x_last); with lane writes the rest are stale.
        x_last = Signal(range(n_t))
        if p.x_lane_writes:
            m.d.comb += [x_write.en.eq(Cat((x_pos == j) & x_take for j in range(n_t))), x_write.addr.eq(x_addr),
                         x_write.data.eq(Cat(self.x.payload for _ in range(n_t)))]
            with m.If(x_take & (x_count == cfg.cols - 1)):
                m.d.sync += x_last.eq(x_pos)
        else:
            # A word's first value clears the rest, so a partial last tile holds zeros past cols.
            x_word = Signal(n_t * w, reset_less=True)
            word_next = Cat(Mux(x_pos == j, self.x.payload.as_unsigned(), Mux(x_pos == 0, 0, x_word.word_select(j, w)))
                            for j in range(n_t))
            m.d.comb += [x_write.en.eq(x_take & word_end), x_write.addr.eq(x_addr), x_write.data.eq(word_next)]
            with m.If(x_take):
                m.d.sync += x_word.eq(word_next)
        with m.If(x_take):
            m.d.sync += [x_count.eq(x_count + 1), x_pos.eq(x_pos + 1)]
            with m.If(word_end):
                m.d.sync += [x_pos.eq(0), x_addr.eq(x_addr + 1)]

        s_count = Signal(range(p.max_rows + 1))
        s_take = Signal()
        m.d.comb += [self.scale.ready.eq(loading & (s_count != cfg.rows)),
                     s_take.eq(self.scale.valid & self.scale.ready),
                     a_write.en.eq(s_take), a_write.addr.eq(s_count), a_write.data.eq(self.scale.payload.a)]
        with m.If(s_take):
            m.d.sync += s_count.eq(s_count + 1)

        # --- compute, issue: counters in tile-major order ------------------------------------------------
        ci = Signal(range(m_t))
        col_tile = Signal(range(p.x_depth))
        col_base = Signal(range(p.x_depth * n_t + 1))
        row_base = Signal(range(p.max_rows + m_t))
        plane = Signal(range(p.max_bits))
        row = Signal(range(p.max_rows + m_t))
        slice_take = Signal()
        last_slice = Signal()
        m.d.comb += [
            row.eq(row_base + ci),
            decoder.o.ready.eq(computing & unpacker.o.valid),
            unpacker.o.ready.eq(computing & decoder.o.valid),
            slice_take.eq(computing & decoder.o.valid & unpacker.o.valid),
            x_read.addr.eq(col_tile),
            a_read.addr.eq(row),
        ]
        last_col = col_base + n_t >= cfg.cols
        last_row_tile = row_base + m_t >= cfg.rows
        m.d.comb += last_slice.eq((ci == m_t - 1) & last_col & last_row_tile & (plane == cfg.bits - 1))
        with m.If(slice_take):
            m.d.sync += ci.eq(ci + 1)
            with m.If(ci == m_t - 1):
                m.d.sync += [ci.eq(0), col_tile.eq(col_tile + 1), col_base.eq(col_base + n_t)]
                with m.If(last_col):
                    m.d.sync += [col_tile.eq(0), col_base.eq(0), row_base.eq(row_base + m_t)]
                    with m.If(last_row_tile):
                        m.d.sync += [row_base.eq(0), plane.eq(plane + 1)]

        # --- compute pipeline: never stalls, bubbles travel as valid = 0 ----------------------------------
        s1_valid = Signal()
        s1_sign = Signal(n_t, reset_less=True)
        s1_mask = Signal(n_t, reset_less=True)
        s1_row = Signal.like(row, reset_less=True)
        s1_ok = Signal(reset_less=True)
        s1_plane = Signal.like(plane, reset_less=True)
        mask_row = unpacker.o.payload.row
        if p.x_lane_writes:
            # The mask may keep padding columns (a tile's P Z covers all n_t); their x lanes hold stale values.
            mask_row = Cat(mask_row[j] & (~last_col | (x_last >= j)) for j in range(n_t))
        m.d.sync += [s1_valid.eq(slice_take), s1_sign.eq(decoder.o.payload), s1_mask.eq(mask_row),
                     s1_row.eq(row), s1_ok.eq(row < cfg.rows), s1_plane.eq(plane)]

        terms = []
        for j in range(n_t):
            xj = x_read.data.word_select(j, w).as_signed()
            terms.append(Mux(s1_mask[j], Mux(s1_sign[j], xj, -xj), 0))
        bound = p.term_bound
        valid, row_at, ok, a_at = s1_valid, s1_row, s1_ok, a_read.data[s1_plane]
        valids = [s1_valid]
        for stage in range(p.tree_stages):
            chunks = [terms[c:c + p.tree_fanin] for c in range(0, len(terms), p.tree_fanin)]
            bound *= len(chunks[0])
            terms = []
            for c, chunk in enumerate(chunks):
                partial = Signal(signed(bound.bit_length() + 1), name=f"sum{stage}_{c}", reset_less=True)
                m.d.sync += partial.eq(functools.reduce(operator.add, chunk))
                terms.append(partial)
            t_valid = Signal(name=f"sum{stage}_valid")
            t_row = Signal.like(row, name=f"sum{stage}_row", reset_less=True)
            t_ok = Signal(name=f"sum{stage}_ok", reset_less=True)
            t_a = Signal(p.a_bits, name=f"sum{stage}_a", reset_less=True)
            m.d.sync += [t_valid.eq(valid), t_row.eq(row_at), t_ok.eq(ok), t_a.eq(a_at)]
            valid, row_at, ok, a_at = t_valid, t_row, t_ok, t_a
            valids.append(t_valid)
        assert len(terms) == 1, "tree_stages too few for n_t terms"

        # Product, then the add into acc: its read is issued here, a cycle before the write.
        p_valid = Signal()
        p_row = Signal.like(row, reset_less=True)
        p_ok = Signal(reset_less=True)
        p_prod = Signal(signed(p.product_bits), reset_less=True)
        m.d.sync += [p_valid.eq(valid), p_row.eq(row_at), p_ok.eq(ok), p_prod.eq(terms[0] * a_at)]
        w_valid = Signal()
        w_row = Signal.like(row, reset_less=True)
        w_ok = Signal(reset_less=True)
        w_prod = Signal(signed(p.product_bits), reset_less=True)
        m.d.sync += [w_valid.eq(p_valid), w_row.eq(p_row), w_ok.eq(p_ok), w_prod.eq(p_prod)]
        pipe_busy = Signal()
        m.d.comb += pipe_busy.eq(Cat(*valids, p_valid, w_valid).any())

        with m.If(loading):
            m.d.comb += [acc_write.en.eq(s_take), acc_write.addr.eq(s_count),
                         acc_write.data.eq(self.scale.payload.bias)]
        with m.Else():
            m.d.comb += [acc_write.en.eq(w_valid & w_ok), acc_write.addr.eq(w_row),
                         acc_write.data.eq(acc_read.data + w_prod)]

        # --- output: acc[row] rounded, shifted, clamped ------------------------------------------------------
        o_row = Signal(range(p.max_rows + 1))
        out_enable = Signal()
        o_issue = Signal()
        m.d.comb += [out_enable.eq(~self.o.valid | self.o.ready),
                     o_issue.eq(outputting & (o_row != cfg.rows) & out_enable)]
        with m.If(outputting):
            m.d.comb += [acc_read.addr.eq(o_row), acc_read.en.eq(out_enable)]
        with m.Else():
            m.d.comb += [acc_read.addr.eq(p_row), acc_read.en.eq(1)]
        with m.If(o_issue):
            m.d.sync += o_row.eq(o_row + 1)

        # rs(v, s) = (v + 2^(s-1)) >> s is 0 for every acc_bits-wide v once s >= acc_bits (v + 2^(s-1) lies
        # in [0, 2^s)), so the shifter spans acc_bits and wider shifts are a constant.
        half = Signal(p.acc_bits)
        m.d.comb += half.eq((Const(1, p.acc_bits + 1) << cfg.shift)[1:])
        r_valid = Signal()
        q_valid = Signal()
        q_t = Signal(signed(p.acc_bits + 1), reset_less=True)
        shifted = Signal(signed(p.acc_bits + 1))
        m.d.comb += shifted.eq(Mux(cfg.shift >= p.acc_bits, 0, q_t >> cfg.shift))
        low = Mux(cfg.relu, 0, -(1 << (w - 1)))
        high = (1 << (w - 1)) - 1
        with m.If(out_enable):
            m.d.sync += [r_valid.eq(o_issue), q_valid.eq(r_valid), q_t.eq(acc_read.data + half),
                         self.o.valid.eq(q_valid),
                         self.o.payload.eq(Mux(shifted < low, low, Mux(shifted > high, high, shifted)))]

        # --- phases ---------------------------------------------------------------------------------------------
        with m.FSM(name="phase"):
            with m.State("IDLE"):
                m.d.comb += self.cfg.ready.eq(1)
                with m.If(self.cfg.valid):
                    m.d.sync += [cfg.eq(self.cfg.payload), x_count.eq(0), x_pos.eq(0), x_addr.eq(0), s_count.eq(0),
                                 ci.eq(0), col_tile.eq(0), col_base.eq(0), row_base.eq(0), plane.eq(0), o_row.eq(0)]
                    m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += loading.eq(1)
                with m.If((x_count == cfg.cols) & (s_count == cfg.rows)):
                    m.next = "COMPUTE"
            with m.State("COMPUTE"):
                m.d.comb += computing.eq(1)
                with m.If(slice_take & last_slice):
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(~pipe_busy):
                    m.next = "OUTPUT"
            with m.State("OUTPUT"):
                m.d.comb += outputting.eq(1)
                with m.If((o_row == cfg.rows) & ~r_valid & ~q_valid & ~self.o.valid):
                    m.next = "IDLE"
        return m
