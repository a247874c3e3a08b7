"""Binary-index-matrix (BIM) mask unpacker and sparse expander (Lee et al., arXiv 1905.05686).

A tile's pruning mask is the Boolean product of two small binary matrices, mask[i, j] = OR_k P[i, k] AND
Z[k, j] with P m_t × r and Z r × n_t, so a tile's index costs r·(m_t + n_t) bits instead of m_t·n_t.
`BimUnpacker` streams P and Z in and mask rows out, one row per cycle; `SparseExpander` turns a mask row
and a packed stream of the kept values into the dense row, zeros at pruned positions. Chained, kept
weights travel packed while the compute sees dense rows.

The beat streams' executable spec is `hw/spec/bim_stream.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from amaranth import Cat, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .layouts import struct_layout
from .spec.bim_stream import dense_row_fields, mask_row_fields, unpacker_beat_fields, value_beat_fields
from .spec.params import check_ints, require_params


def mask_row_layout(n_t: int) -> data.StructLayout:
    """One mask row: `row` (n_t bits, bit j = mask[i, j]) and `last` (the tile's last row), from the LSB."""
    return struct_layout(mask_row_fields(n_t))


@dataclass(frozen=True)
class BimUnpackerParams:
    """Tile shape (m_t rows × n_t columns) and rank r of the BIM format; validated on construction, hashable.

    m_t does not shape the hardware (tiles are delimited by the beats' `first`/`last` tags); it is the
    format's tile height, kept here so a configuration says which format it unpacks. As in the format
    (`hw.spec.bim.BimParams`), r may exceed min(m_t, n_t); with r > m_t a tile costs r input beats.
    """

    m_t: int
    n_t: int
    r: int

    def __post_init__(self) -> None:
        check_ints(self, (("m_t", 1, None), ("n_t", 1, None), ("r", 1, None)))

    @property
    def z_row_width(self) -> int:
        """Bits of a beat's Z row index: ceil(log2 r), at least 1."""
        return self.beat_layout["z_row"].width

    @property
    def beat_layout(self) -> data.StructLayout:
        """Layout of one input beat, `hw.spec.bim_stream.unpacker_beat_fields` (the first field at the LSB)."""
        return struct_layout(unpacker_beat_fields(self.n_t, self.r))

    @property
    def row_layout(self) -> data.StructLayout:
        return mask_row_layout(self.n_t)

    @property
    def latency(self) -> int:
        """Clock edges from a P beat's input handshake to its row's output handshake, with no stalls."""
        return 2

    def describe(self) -> dict[str, Any]:
        return {"m_t": self.m_t, "n_t": self.n_t, "r": self.r}


class BimUnpacker(wiring.Component):
    """P and Z beats in, mask rows out: one row per P beat, one P beat per cycle when the output keeps up.

    Input `i`, one beat of `params.beat_layout` per transfer, fields from the LSB:

    * `p` (r bits, bit k = P[i, k]): a P row of the current tile, used when `has_p`.
    * `z` (n_t bits, bit j = Z[k, j]): row k = `z_row` of the *next* tile's Z, used when `has_z`.
    * `z_row` (ceil(log2 r) bits, at least 1): which Z row `z` is; values >= r write nothing.
    * `has_p`: the beat carries a P row and yields one output row. `has_z`: the beat carries a Z row.
    * `first`, `last` (read only with `has_p`): the P row is its tile's first / last.

    Z is double-buffered. `has_z` beats write the shadow Z; a beat with `has_p` and `first` makes the
    shadow the tile's Z (before its own P row is applied; its own `z`, if any, goes to the new shadow, i.e.
    belongs to the tile after). So a tile's Z rows ride on the previous tile's P beats: the canonical stream
    (`hw.spec.bim_stream.tiles_to_beats`) is r Z-only beats for tile 0, then per tile m_t P beats, the
    first min(m_t, r) of them also carrying the next tile's Z rows, plus r - m_t Z-only beats when r > m_t.
    T tiles take r + T·m_t + (T - 1)·max(0, r - m_t) beats for T·m_t rows: with m_t >= r, one mask row per
    cycle sustained across tiles, after the r beats that load the first tile's Z.

    Output `o`, `params.row_layout`: `row` bit j = OR_k P[i, k] AND Z[k, j]; `last` copied from the P beat.

    Pipeline: (1) the P row, `last` and the Z buffers are registered on the input handshake; (2) the AND-OR
    against the active Z into the output register. A Z copy and the previous tile's last row in stage 1
    happen on the same edge, so that row still sees the old Z. Every register advances on one enable,
    `~o.valid | o.ready`, which is also `i.ready`; under backpressure everything, payload included, holds.

    The copy (shadow to active, r·n_t flip-flops on one clock enable) is the critical path on iCE40 and ECP5
    at (64, 64, 8). A ping-pong pair of banks with a select bit instead measured no faster on iCE40 with a
    third more logic cells (the 2-bank AND-OR and its 64-wide P fanout become the path), so the copy stays.
    """

    def __init__(self, params: BimUnpackerParams):
        require_params(self, params, BimUnpackerParams)
        self.params = params
        super().__init__({
            "i": In(stream.Signature(params.beat_layout)),
            "o": Out(stream.Signature(params.row_layout)),
        })

    @property
    def latency(self) -> int:
        return self.params.latency

    def elaborate(self, platform):
        m = Module()
        p = self.params
        beat = self.i.payload
        enable = Signal()
        accept = Signal()
        m.d.comb += [enable.eq(~self.o.valid | self.o.ready), self.i.ready.eq(enable),
                     accept.eq(self.i.valid & enable)]

        # Z needs no reset: the format loads a tile's Z before its first P row reads it.
        shadow = [Signal(p.n_t, name=f"z_shadow{k}", reset_less=True) for k in range(p.r)]
        active = [Signal(p.n_t, name=f"z_active{k}", reset_less=True) for k in range(p.r)]
        with m.If(accept & beat.has_p & beat.first):
            m.d.sync += [a.eq(s) for a, s in zip(active, shadow)]
        with m.If(accept & beat.has_z):
            for k in range(p.r):
                with m.If(beat.z_row == k):
                    m.d.sync += shadow[k].eq(beat.z)

        s1_valid = Signal()
        s1_p = Signal(p.r, reset_less=True)
        s1_last = Signal(reset_less=True)
        with m.If(enable):
            m.d.sync += [s1_valid.eq(self.i.valid & beat.has_p), s1_p.eq(beat.p), s1_last.eq(beat.last)]

        row = 0
        for k in range(p.r):
            row = row | (active[k] & s1_p[k].replicate(p.n_t))
        with m.If(enable):
            m.d.sync += [self.o.valid.eq(s1_valid), self.o.payload.row.eq(row), self.o.payload.last.eq(s1_last)]
        return m


@dataclass(frozen=True)
class SparseExpanderParams:
    """Row width n_t and the packing of kept values (value_width bits, values_per_beat per beat); hashable."""

    n_t: int
    value_width: int
    values_per_beat: int

    def __post_init__(self) -> None:
        check_ints(self, (("n_t", 1, None), ("value_width", 1, None), ("values_per_beat", 1, None)))

    @property
    def window_beats(self) -> int:
        """Value beats one row can touch: its first value may sit anywhere in the head beat."""
        return -(-(self.n_t + self.values_per_beat - 1) // self.values_per_beat)

    @property
    def queue_beats(self) -> int:
        """Value beats buffered: the window plus one, so intake need not wait on the row that frees a slot."""
        return self.window_beats + 1

    @property
    def mask_layout(self) -> data.StructLayout:
        return mask_row_layout(self.n_t)

    @property
    def values_layout(self) -> data.ArrayLayout:
        """One value beat: values_per_beat values of value_width bits, element 0 lowest (`value_beat_fields`)."""
        return struct_layout(value_beat_fields(self.value_width, self.values_per_beat))

    @property
    def dense_layout(self) -> data.StructLayout:
        """One dense row: `row` (n_t values of value_width bits, element j lowest) and `last` (`dense_row_fields`)."""
        return struct_layout(dense_row_fields(self.n_t, self.value_width))

    @property
    def latency(self) -> int:
        """Clock edges from a mask row's input handshake to its dense row's, when its values are there."""
        return 3

    def describe(self) -> dict[str, Any]:
        return {"n_t": self.n_t, "value_width": self.value_width, "values_per_beat": self.values_per_beat}


def _inclusive_prefix_counts(bits: list[Value]) -> list[Value]:
    """Sklansky parallel prefix: element j = bits[0] + ... + bits[j], log2(n) adder levels deep."""
    sums = [b.as_unsigned() for b in bits]
    step = 1
    while step < len(sums):
        sums = [s + sums[(j & ~(2 * step - 1)) + step - 1] if j & step else s for j, s in enumerate(sums)]
        step *= 2
    return sums


class SparseExpander(wiring.Component):
    """Mask rows and packed kept values in, dense rows out: one row per cycle while the values keep up.

    Input `mask`, `params.mask_layout`: a mask row (bit j = 1: position j is kept) and `last`.

    Input `values`, `params.values_layout`: values_per_beat values of value_width bits, element 0 lowest.
    The values form one continuous stream: each row takes the next popcount(row) values, in position
    order, and beats straddle rows. A row with `last` ends a group (a tile): the rest of the beat holding
    its final value is padding and dropped, so each group's values start on a beat boundary
    (`hw.spec.bim_stream.pack_values`).

    Output `o`, `params.dense_layout`: element j of `row` is the value of index prefix(j) (the number of
    kept positions before j) among the row's values when bit j is set, else 0; `last` copied.

    Rate: a row leaves as soon as the value beats it reaches are buffered; the expander takes a value beat
    every cycle it has a free slot (it buffers `queue_beats`). With value beats offered every cycle and the
    output ready, row n (from the stream's start) issues at full rate while the beats it reaches number at
    most n + 1 — e.g. whenever no row keeps more than values_per_beat values — and otherwise waits for them:
    rows then flow at values_per_beat / (values kept per row, with group padding) per cycle.

    Pipeline: (1) the mask row registered; (2) its exclusive prefix counts and popcount registered; the row
    waits here until its values are buffered, then (3) is placed by a mux per position, reaching only the
    j + values_per_beat values position j can take, into the output register, while the consumed beats
    leave the queue. Output under backpressure holds, payload included; `latency` is 3.
    """

    def __init__(self, params: SparseExpanderParams):
        require_params(self, params, SparseExpanderParams)
        self.params = params
        super().__init__({
            "mask": In(stream.Signature(params.mask_layout)),
            "values": In(stream.Signature(params.values_layout)),
            "o": Out(stream.Signature(params.dense_layout)),
        })

    @property
    def latency(self) -> int:
        return self.params.latency

    def elaborate(self, platform):
        m = Module()
        p = self.params
        n, w, v = p.n_t, p.value_width, p.values_per_beat
        window, depth = p.window_beats, p.queue_beats

        out_free = Signal()
        issue = Signal()
        s2_free = Signal()
        s1_free = Signal()

        # Value queue: slot 0 is the head beat, `head` values of it already taken by earlier rows.
        slots = [Signal(v * w, name=f"slot{b}", reset_less=True) for b in range(depth)]
        count = Signal(range(depth + 1))
        head = Signal(range(v))

        # Stage 1: the mask row.
        s1_valid = Signal()
        s1_row = Signal(n, reset_less=True)
        s1_last = Signal(reset_less=True)
        m.d.comb += [s1_free.eq(~s1_valid | s2_free), self.mask.ready.eq(s1_free)]
        with m.If(s1_free):
            m.d.sync += [s1_valid.eq(self.mask.valid), s1_row.eq(self.mask.payload.row),
                         s1_last.eq(self.mask.payload.last)]

        # Stage 2: the row with its prefix counts, waiting for its values.
        inclusive = _inclusive_prefix_counts(list(s1_row))
        count_width = n.bit_length()
        s2_valid = Signal()
        s2_row = Signal(n, reset_less=True)
        s2_last = Signal(reset_less=True)
        s2_kept = Signal(count_width, reset_less=True)
        s2_prefix = [Signal(max(1, j.bit_length()), name=f"s2_prefix{j}", reset_less=True) for j in range(n)]
        m.d.comb += s2_free.eq(~s2_valid | issue)
        with m.If(s2_free):
            m.d.sync += [s2_valid.eq(s1_valid), s2_row.eq(s1_row), s2_last.eq(s1_last),
                         s2_kept.eq(inclusive[-1])]
            m.d.sync += [s2_prefix[j].eq(inclusive[j - 1] if j else 0) for j in range(n)]

        # The row reaches values head .. head + kept - 1 of the queue; `reach` of them in all.
        reach = Signal(range(v + n))
        m.d.comb += reach.eq(head + s2_kept)
        have = Signal()
        m.d.comb += [have.eq(count * v >= reach), out_free.eq(~self.o.valid | self.o.ready),
                     issue.eq(s2_valid & have & out_free)]

        # Beats the row finishes (whole beats), and the one it leaves partly used unless it ends a group.
        whole = Signal(range(window + 1))
        m.d.comb += whole.eq(sum((reach >= b * v).as_unsigned() for b in range(1, window + 1)))
        partial = Signal()
        m.d.comb += partial.eq(reach != whole * v)
        pop = Signal(range(window + 1))
        with m.If(issue):
            m.d.comb += pop.eq(whole + (s2_last & partial))
            m.d.sync += head.eq(Mux(s2_last, 0, reach - whole * v))

        push = Signal()
        m.d.comb += [self.values.ready.eq(count < depth), push.eq(self.values.valid & self.values.ready)]
        m.d.sync += count.eq(count - pop + push)
        slot_in = Signal(range(depth))
        m.d.comb += slot_in.eq(count - pop)
        for b in range(depth):
            shifted = Signal(v * w, name=f"shifted{b}")
            with m.Switch(pop):
                for d in range(window + 1):
                    with m.Case(d):
                        m.d.comb += shifted.eq(slots[b + d] if b + d < depth else 0)
            m.d.sync += slots[b].eq(Mux(push & (slot_in == b), self.values.payload.as_value(), shifted))

        # Position j takes value head + prefix(j) <= j + v - 1 of the window.
        values = Cat(slots[:window])
        dense = [Mux(s2_row[j], values[:(j + v) * w].word_select(head + s2_prefix[j], w), 0) for j in range(n)]
        with m.If(out_free):
            m.d.sync += [self.o.valid.eq(s2_valid & have), self.o.payload.row.eq(Cat(dense)),
                         self.o.payload.last.eq(s2_last)]
        return m
