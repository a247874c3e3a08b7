"""The beats of `Spec2Conv`'s input streams, packed from field tables: the executable spec hw and host share.

A field table maps a dotted field name to (offset, width) from the word's LSB: `hw.layouts.layout_fields`
makes one from an Amaranth layout, and the device's INFO publishes the same tables, so the host packs
beats without importing the hardware. Pure Python and NumPy.

Streams (`hw.spectral.pipeline.Spec2Conv` documents their meaning):

* cfg: one beat per layer, fields height, width, c_in, c_out, mac_shift.
* x: the input map channel by channel, raster order, each value as act_bits two's complement.
* w: per output channel its kernel groups in schedule order (`stream_entries`), fields `group.lanes.<j>.index`,
  `.re`, `.im` for lane j, `group.chan` (the group's input channel) and `last` on the channel's final group;
  a channel without entries sends one all-padding group (lane j: index j, value 0) with `last`.
* quant: one beat per output channel, fields out_mult, out_shift, bias.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .spec2 import SpectralLayer, stream_entries

FieldTable = Mapping[str, tuple[int, int]]


def fields_from_json(records: Iterable[Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
    """INFO's list of {name, offset, width} records as a field table."""
    return {str(r["name"]): (int(r["offset"]), int(r["width"])) for r in records}


def word_bits(fields: FieldTable) -> int:
    """Bits a word of this table spans (its highest field's end)."""
    return max((offset + width for offset, width in fields.values()), default=0)


def pack_fields(fields: FieldTable, values: Mapping[str, Any]) -> int:
    """One word: each named value, two's complement truncated to its field's width; missing fields are 0."""
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}; known: {sorted(fields)}")
    word = 0
    for name, value in values.items():
        offset, width = fields[name]
        word |= (int(value) & ((1 << width) - 1)) << offset
    return word


def unpack_fields(fields: FieldTable, word: int) -> dict[str, int]:
    """Every field of `word` as an unsigned integer."""
    return {name: (int(word) >> offset) & ((1 << width) - 1) for name, (offset, width) in fields.items()}


def beats_to_bytes(beats: Sequence[int], width: int) -> bytes:
    """Beats of `width` bits as ceil(width / 8) little-endian bytes each (the link's LOAD format)."""
    size = (width + 7) // 8
    mask = (1 << width) - 1
    return b"".join((int(beat) & mask).to_bytes(size, "little") for beat in beats)


def cfg_beat(fields: FieldTable, layer: SpectralLayer, height: int, width: int) -> int:
    """The layer's `cfg` beat for an input of height x width."""
    return pack_fields(fields, {"height": height, "width": width, "c_in": layer.c_in, "c_out": layer.c_out,
                                "mac_shift": layer.quant.mac_shift})


def act_beats(x_q: np.ndarray, act_bits: int) -> list[int]:
    """The `x` stream: every value of the map in memory order, as act_bits two's complement."""
    mask = (1 << act_bits) - 1
    return [int(v) & mask for v in np.asarray(x_q).reshape(-1)]


def quant_beats(fields: FieldTable, layer: SpectralLayer) -> list[int]:
    """The `quant` stream: one beat per output channel."""
    q = layer.quant
    return [pack_fields(fields, {"out_mult": q.out_mult, "out_shift": q.out_shift, "bias": int(b)})
            for b in q.bias_q]


def kernel_beats(fields: FieldTable, layer: SpectralLayer, lanes: int) -> list[int]:
    """The `w` stream: the layer's kernel groups output channel by output channel (`lanes` entries a group)."""
    ent = stream_entries(layer)
    group_out, group_in = ent["out"][::lanes], ent["in"][::lanes]
    beats = []
    for o in range(layer.c_out):
        groups = []
        for g in np.flatnonzero(group_out == o):
            values = {"group.chan": int(group_in[g])}
            for j in range(lanes):
                slot = g * lanes + j
                values.update({f"group.lanes.{j}.index": ent["index"][slot], f"group.lanes.{j}.re": ent["re"][slot],
                               f"group.lanes.{j}.im": ent["im"][slot]})
            groups.append(values)
        if not groups:  # the channel still needs its `last` beat: all padding (index = bank)
            groups = [{f"group.lanes.{j}.index": j for j in range(lanes)}]
        beats += [pack_fields(fields, {**grp, "last": int(k == len(groups) - 1)}) for k, grp in enumerate(groups)]
    return beats


__all__ = ["FieldTable", "fields_from_json", "word_bits", "pack_fields", "unpack_fields", "beats_to_bytes",
           "cfg_beat", "act_beats", "quant_beats", "kernel_beats"]
