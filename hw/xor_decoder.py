"""XOR-gate weight decoder (Kwon et al., CVPR 2020): y = M·x over GF(2), then patch bits flipped.

Each n_out-bit slice of a weight bit-plane is stored as n_in bits `x` plus a list of patch positions (care
bits the encoder could not satisfy). `M` is a structural parameter: it fixes which inputs feed each of the
n_out XOR trees, so it is given at elaboration, while `x` and the patches stream in at run time.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from amaranth import Cat, Module, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .layouts import struct_layout
from .spec.params import check_ints, require_params
from .spec.xor import check_sizes, gf2_rank, position_width
from .spec.xor_stream import beat_fields


def _row_masks(m: Any, n_out: int, n_in: int) -> tuple[int, ...]:
    """`m` as a tuple of n_out row bit-masks (bit i of row j = M[j, i]); ValueError naming `m` otherwise."""
    if isinstance(m, (str, bytes)):
        raise ValueError(f"m must be a matrix or a sequence of row bit-masks, got {type(m).__name__}")
    try:
        array = np.asarray(m, dtype=object)
    except Exception as error:  # ragged nested sequences
        raise ValueError(f"m must be an ({n_out}, {n_in}) 0/1 matrix or {n_out} row bit-masks: {error}") from None
    if array.ndim == 1 and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in array):
        if len(array) != n_out:
            raise ValueError(f"m must have n_out={n_out} rows, got {len(array)} row bit-masks")
        for j, row in enumerate(array):
            if not 0 <= int(row) < 1 << n_in:
                raise ValueError(f"m row {j} bit-mask {int(row):#x} does not fit n_in={n_in} columns")
        return tuple(int(row) for row in array)
    if array.shape != (n_out, n_in):
        raise ValueError(f"m must have shape (n_out, n_in) = ({n_out}, {n_in}), got {array.shape}")
    if not all(isinstance(v, (int, np.integer, bool, np.bool_)) and v in (0, 1) for v in array.flat):
        raise ValueError("m entries must all be 0 or 1")
    return tuple(sum(int(v) << i for i, v in enumerate(row)) for row in array)


def matrix_shape(m: Any) -> tuple[int, int]:
    """(n_out, n_in) of an XOR matrix given as a 2-D array; ValueError naming `m` otherwise."""
    shape = np.shape(m)
    if len(shape) != 2:
        raise ValueError(f"m must be a 2-D (n_out, n_in) matrix, got shape {shape}")
    return shape[0], shape[1]


@dataclass(frozen=True)
class XorDecoderParams:
    """Structural parameters of one `XorDecoder`; validated on construction, hashable.

    `m` may be given as an (n_out, n_in) 0/1 matrix (NumPy array or nested sequences) or as n_out row
    bit-masks (bit i of row j is M[j, i]); it is stored as the tuple of row bit-masks.
    `xor_fanin` is how many terms one pipeline stage XORs together (16: two LUT4 levels).
    """

    n_in: int
    n_out: int
    max_patches: int
    m: tuple[int, ...]
    xor_fanin: int = 16

    def __post_init__(self) -> None:
        check_sizes(self.n_in, self.n_out)
        check_ints(self, (("n_in", 1, None), ("n_out", 2, None), ("max_patches", 1, None), ("xor_fanin", 2, None)))
        rows = _row_masks(self.m, self.n_out, self.n_in)
        object.__setattr__(self, "m", rows)
        if (rank := gf2_rank(self.matrix)) != self.n_in:
            raise ValueError(f"m must have full column rank n_in={self.n_in} over GF(2), got rank {rank}")

    @classmethod
    def from_matrix(cls, m: Any, max_patches: int, **kwargs: Any) -> XorDecoderParams:
        """Parameters for an (n_out, n_in) 0/1 matrix `m`, sizes taken from its shape."""
        n_out, n_in = matrix_shape(m)
        return cls(n_in=n_in, n_out=n_out, max_patches=max_patches, m=m, **kwargs)

    @property
    def matrix(self) -> np.ndarray:
        """M as an (n_out, n_in) uint8 array."""
        return np.array([[row >> i & 1 for i in range(self.n_in)] for row in self.m], dtype=np.uint8)

    @property
    def position_width(self) -> int:
        """Bits per patch position: ceil(log2 n_out)."""
        return position_width(self.n_out)

    @property
    def beat_layout(self) -> data.StructLayout:
        """Layout of one input beat, `hw.spec.xor_stream.beat_fields` (the first field at the LSB)."""
        return struct_layout(beat_fields(self.n_in, self.n_out, self.max_patches))

    @property
    def tree_stages(self) -> int:
        """Pipeline stages of the XOR trees: enough for the widest row (its x terms plus the patch bit)."""
        widest = max(row.bit_count() for row in self.m) + 1
        stages, reach = 1, self.xor_fanin
        while reach < widest:
            stages, reach = stages + 1, reach * self.xor_fanin
        return stages

    @property
    def latency(self) -> int:
        """Clock edges from a slice's `last` input handshake to its output handshake, with no stalls."""
        return 2 + self.tree_stages

    def describe(self) -> dict[str, Any]:
        """The parameters as plain JSON-able data (rows as hex strings)."""
        return {"n_in": self.n_in, "n_out": self.n_out, "max_patches": self.max_patches,
                "xor_fanin": self.xor_fanin, "m": [f"{row:x}" for row in self.m]}


def _xor(terms: Sequence[Value]) -> Value:
    return functools.reduce(operator.xor, terms)


class XorDecoder(wiring.Component):
    """Streams slices in, decoded n_out-bit words out: one slice per cycle when neither side stalls.

    Input `i`, one beat of `params.beat_layout` per transfer, fields from the LSB:

    * `x` (n_in bits): the slice's stored bits. Only the slice's first beat's `x` is used.
    * `positions` (max_patches × ceil(log2 n_out) bits, element 0 lowest): patch positions.
    * `count` (bit_length(max_patches) bits): how many of `positions`, from element 0, are valid in this
      beat; the other elements are ignored. Values above max_patches are outside the format.
    * `last` (1 bit): this beat ends the slice.

    A slice is one or more beats; all but the final one have `last` = 0 and are continuation beats whose
    `x` is ignored and whose valid positions add to the slice's patch list. The canonical stream
    (`hw.spec.xor_stream.slices_to_beats`) fills every beat but the final one with max_patches
    positions, so a slice with k patches takes max(1, ceil(k / max_patches)) beats; the hardware accepts any
    split, including beats with count 0. Each valid position p flips output bit p (a position listed twice
    flips it twice); positions >= n_out match no bit and change nothing.

    Output `o`: one beat per slice, after its `last` beat: bit j = (row j of M)·x mod 2, patches flipped.

    Pipeline: (1) the positions are predecoded into one-hot halves; (2) the patch mask is accumulated
    across the slice's beats and `x` kept from its first beat; (3..) the XOR trees, `xor_fanin` terms per
    stage. Every register advances on one enable, `~o.valid | o.ready`, which is also `i.ready`: the pipe
    moves whenever its output is free or being taken, and holds still (payload stable) under
    backpressure. With no stalls a slice's output handshake comes `params.latency` cycles after the input
    handshake of its last beat (2 + `params.tree_stages`), and one slice per cycle gets through.
    """

    def __init__(self, params: XorDecoderParams):
        require_params(self, params, XorDecoderParams)
        self.params = params
        super().__init__({
            "i": In(stream.Signature(params.beat_layout)),
            "o": Out(stream.Signature(params.n_out)),
        })

    @property
    def latency(self) -> int:
        return self.params.latency

    def elaborate(self, platform):
        m = Module()
        p = self.params
        beat = self.i.payload
        enable = Signal()
        m.d.comb += [enable.eq(~self.o.valid | self.o.ready), self.i.ready.eq(enable)]

        # Stage 1: split each position into low and high halves and decode both to one-hot, the high half
        # gated by "this position is valid"; bit j of the mask is then an AND of two registered bits, so no
        # wide comparator sits between registers.
        lo_width = (p.position_width + 1) // 2
        lo_count = min(1 << lo_width, p.n_out)
        hi_count = -(-p.n_out // (1 << lo_width))
        pre_valid = Signal()
        pre_x = Signal(p.n_in, reset_less=True)
        pre_last = Signal(reset_less=True)
        pre_lo = [Signal(lo_count, name=f"pre_lo{k}", reset_less=True) for k in range(p.max_patches)]
        pre_hi = [Signal(hi_count, name=f"pre_hi{k}", reset_less=True) for k in range(p.max_patches)]
        with m.If(enable):
            m.d.sync += [pre_valid.eq(self.i.valid), pre_x.eq(beat.x), pre_last.eq(beat.last)]
            for k in range(p.max_patches):
                position = beat.positions[k]
                used = beat.count > k
                lo, hi = position[:lo_width], position[lo_width:]
                m.d.sync += [
                    pre_lo[k].eq(Cat(lo == v for v in range(lo_count))),
                    pre_hi[k].eq(Cat(used & (hi == v) for v in range(hi_count))),
                ]

        # Stage 2: the slice being assembled. `first` says the next beat starts a slice: it takes that
        # beat's x and restarts the mask. These registers are the stage's output; `acc_valid` marks a
        # complete slice in them, which the trees take on the same enabled edge as the next beat arrives.
        first = Signal(init=1)
        acc_valid = Signal()
        acc_x = Signal(p.n_in, reset_less=True)
        acc_mask = Signal(p.n_out, reset_less=True)
        beat_mask = Cat(
            _xor([pre_lo[k][j % (1 << lo_width)] & pre_hi[k][j >> lo_width] for k in range(p.max_patches)])
            for j in range(p.n_out))
        with m.If(enable):
            m.d.sync += acc_valid.eq(pre_valid & pre_last)
            with m.If(pre_valid):
                m.d.sync += first.eq(pre_last)
                with m.If(first):
                    m.d.sync += [acc_x.eq(pre_x), acc_mask.eq(beat_mask)]
                with m.Else():
                    m.d.sync += acc_mask.eq(acc_mask ^ beat_mask)

        # Stages 3..: each row's terms (its x bits and its patch bit) XORed `xor_fanin` at a time, every
        # partial sum registered, until one term per row is left.
        terms: list[list[Value]] = [
            [acc_x[i] for i in range(p.n_in) if row >> i & 1] + [acc_mask[j]] for j, row in enumerate(p.m)]
        valid: Value = acc_valid
        for stage in range(p.tree_stages):
            next_terms = []
            for j, row_terms in enumerate(terms):
                chunks = [row_terms[c:c + p.xor_fanin] for c in range(0, len(row_terms), p.xor_fanin)]
                registered = []
                for c, chunk in enumerate(chunks):
                    partial = Signal(name=f"t{stage}_r{j}_{c}", reset_less=True)
                    with m.If(enable):
                        m.d.sync += partial.eq(_xor(chunk))
                    registered.append(partial)
                next_terms.append(registered)
            stage_valid = Signal(name=f"t{stage}_valid")
            with m.If(enable):
                m.d.sync += stage_valid.eq(valid)
            terms, valid = next_terms, stage_valid
        assert all(len(row_terms) == 1 for row_terms in terms), "tree_stages too few for the widest row"

        m.d.comb += [self.o.valid.eq(valid), self.o.payload.eq(Cat(row_terms[0] for row_terms in terms))]
        return m

