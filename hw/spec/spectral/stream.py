"""The beats of `SpectralConv`'s input streams packed from field tables (`hw.spec.fields`): the executable spec
hw and host share.

Streams (`hw.spectral.pipeline.SpectralConv` documents their meaning):

* cfg: one beat per layer, fields height, width, c_in, c_out, mac_shift.
* x: the input map channel by channel, raster order, each value as act_bits two's complement.
* w: per output channel its kernel groups in schedule order (`stream_entries`), fields `group.lanes.<j>.index`,
  `.re`, `.im` and `.chan` (the entry's input channel) for lane j, and `last` on the channel's final group; a
  channel without entries sends one all-padding group (lane j: index j, value 0, channel 0) with `last`.
* quant: one beat per output channel, fields out_mult, out_shift, bias.

Every value is checked against its field (`pack_fields`, bias, re and im signed, the rest unsigned): a layer or
input the engine cannot hold is refused with the field and its range, never cut to fit.
"""

from __future__ import annotations

import numpy as np

from hw.spec.fields import FieldTable, pack_fields
from hw.spec.params import check_range
from hw.spec.spectral.layer import SpectralLayer, stream_entries


def cfg_beat(fields: FieldTable, layer: SpectralLayer, height: int, width: int) -> int:
    """The layer's `cfg` beat for an input of height x width."""
    return pack_fields(fields, {"height": height, "width": width, "c_in": layer.c_in, "c_out": layer.c_out,
                                "mac_shift": layer.quant.mac_shift}, signed=())


def act_beats(x_q: np.ndarray, act_bits: int) -> list[int]:
    """The `x` stream: every value of the map in memory order, as act_bits two's complement."""
    x = np.asarray(x_q)
    if x.dtype.kind not in "iu":
        raise ValueError(f"x must hold integers, got {x.dtype}")
    check_range("x", x, -(1 << (act_bits - 1)), (1 << (act_bits - 1)) - 1)
    mask = (1 << act_bits) - 1
    return [int(v) & mask for v in x.reshape(-1)]


def quant_beats(fields: FieldTable, layer: SpectralLayer) -> list[int]:
    """The `quant` stream: one beat per output channel."""
    q = layer.quant
    # The golden model takes |bias_q| < 2^(w-1) (`spectral_conv_fixed` compares magnitudes), so the packer refuses
    # the one two's complement value past it too: golden and device refuse the same layers.
    top = (1 << (fields["bias"][1] - 1)) - 1
    check_range("bias", q.bias_q, -top, top)
    return [pack_fields(fields, {"out_mult": q.out_mult, "out_shift": q.out_shift, "bias": int(b)}, signed={"bias"})
            for b in q.bias_q]


def kernel_beats(fields: FieldTable, layer: SpectralLayer, lanes: int) -> list[int]:
    """The `w` stream: the layer's kernel groups output channel by output channel (`lanes` entries a group)."""
    ent = stream_entries(layer)
    group_out = ent["out"][::lanes]
    signed = {f"group.lanes.{j}.{part}" for j in range(lanes) for part in ("re", "im")}
    beats = []
    for o in range(layer.c_out):
        groups = []
        for g in np.flatnonzero(group_out == o):
            values = {}
            for j in range(lanes):
                slot = g * lanes + j
                values.update({f"group.lanes.{j}.{part}": ent[key][slot]
                               for part, key in (("index", "index"), ("re", "re"), ("im", "im"), ("chan", "in"))})
            groups.append(values)
        if not groups:  # the channel still needs its `last` beat: all padding (index = bank)
            groups = [{f"group.lanes.{j}.index": j for j in range(lanes)}]
        beats += [pack_fields(fields, {**grp, "last": int(k == len(groups) - 1)}, signed=signed)
                  for k, grp in enumerate(groups)]
    return beats


__all__ = ["cfg_beat", "act_beats", "quant_beats", "kernel_beats"]
