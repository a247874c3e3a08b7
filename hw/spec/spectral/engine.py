"""Whether a sparse spectral layer runs on a conv engine, and in how many cycles: the check and the cycle model
the gateware and the host's planner share, on the engine's description (`SpectralConvParams.describe()`, which
INFO publishes as `engines.conv.params`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .geometry import OaaParams
from .layer import SpectralLayer

#: Width of the engine's run-time `mac_shift` and `out_shift` fields.
SHIFT_BITS = 6


def crop_offset(engine: Mapping[str, Any], oaa: OaaParams) -> int:
    """Row (and column) of the engine's "same" output where the output of a layer of geometry `oaa` starts.

    On the engine's N and L the layer's tiles, spectra and overlap-add canvas are the engine's (K only places the
    output window on the canvas), so its output is the canvas from `oaa.crop` and the engine's from its own crop.
    Negative when the layer's output starts before the engine's.
    """
    return oaa.crop - OaaParams(engine["n"], engine["k"], engine["l"], "same").crop


def check_layer_fits(engine: Mapping[str, Any], layer: SpectralLayer, in_shape: Sequence[int], *,
                     valid_as_crop: bool) -> None:
    """ValueError naming the field unless `layer` on an input of `in_shape` (C_in, H, W) runs on `engine`.

    With `valid_as_crop` the engine runs "same" padding and a layer runs as a window of its output (the
    accelerator's post stage crops it): a layer of the engine's N and L whose output starts `crop_offset` >= 0
    rows and columns into the engine's, 0 for a "same" layer (its output is as large). So a "valid" layer of
    any k with k - 1 >= the engine's crop (K - 1 - (K - 1) // 2) runs, a smaller "valid" kernel than K included.
    Without, the layer's geometry and padding must be the engine's own (the engine alone).
    """
    oaa = layer.oaa
    geometry = (engine["n"], engine["k"], engine["l"])
    if valid_as_crop:
        if engine["padding"] != "same":
            raise ValueError(f"the engine must run 'same' padding, it runs {engine['padding']!r}")
        if (oaa.n, oaa.l) != (engine["n"], engine["l"]):
            raise ValueError(f"layer (n, k, l)=({oaa.n}, {oaa.k}, {oaa.l}) does not match the engine's {geometry}")
        offset = crop_offset(engine, oaa)
        if offset < 0 or (oaa.padding == "same" and offset != 0):
            raise ValueError(f"layer (n, k, l)=({oaa.n}, {oaa.k}, {oaa.l}) does not match the engine's {geometry}: "
                             f"its {oaa.padding!r} output is no window of the engine's 'same' output (it would start "
                             f"at row {offset} of it)")
    elif (oaa.n, oaa.k, oaa.l, oaa.padding) != (*geometry, engine["padding"]):
        raise ValueError(f"layer geometry (n, k, l, padding)=({oaa.n}, {oaa.k}, {oaa.l}, {oaa.padding!r}) does not "
                         f"match the engine's ({', '.join(map(repr, (*geometry, engine['padding'])))})")
    if layer.relu != engine["relu"]:
        raise ValueError(f"layer relu={layer.relu} does not match the engine's relu={engine['relu']}")
    if layer.schedule is None or (layer.schedule.p, layer.schedule.b) != (engine["p"], engine["b"]):
        got = None if layer.schedule is None else (layer.schedule.p, layer.schedule.b)
        raise ValueError(f"layer schedule (p, b) must be ({engine['p']}, {engine['b']}), got {got}")
    if layer.quant is None:
        raise ValueError("layer has no quantization parameters (calibrate it first)")
    for name, value, high in (("c_in", layer.c_in, engine["max_c_in"]), ("c_out", layer.c_out, engine["max_c_out"])):
        if not 1 <= value <= high:
            raise ValueError(f"layer {name}={value} outside 1..{high}")
    if len(in_shape) != 3 or in_shape[0] != layer.c_in:
        raise ValueError(f"input must have shape (C_in={layer.c_in}, H, W), got {tuple(in_shape)}")
    low = oaa.k if oaa.padding == "valid" else 1  # a "valid" output needs a whole kernel inside the map
    for name, value, high in (("height", in_shape[1], engine["max_height"]),
                              ("width", in_shape[2], engine["max_width"])):
        if not low <= value <= high:
            raise ValueError(f"input {name}={value} outside {low}..{high}")
    most = int(layer.schedule.groups.max(initial=0))
    if most > engine["max_groups"]:
        raise ValueError(f"an output channel has {most} kernel groups, more than max_groups={engine['max_groups']}")
    top = (1 << SHIFT_BITS) - 1
    for name, value in (("mac_shift", layer.quant.mac_shift), ("out_shift", layer.quant.out_shift)):
        if not 0 <= value <= top:
            raise ValueError(f"layer {name}={value} outside 0..{top} (the engine's {SHIFT_BITS}-bit field)")


def layer_cycles(engine: Mapping[str, Any], layer: SpectralLayer, h: int, w: int, *,
                 valid_as_crop: bool = False, pool: bool = False) -> dict[str, int]:
    """Full-rate cycles of `layer` on an H x W input on `engine` (the figures the RTL tests check); with
    `valid_as_crop` the engine runs its own "same" geometry and the post stage crops (`check_layer_fits`), and
    with `pool` it pools the layer's output 2 x 2.

    `load`: the tiler and forward FFT, C_in T F, F the forward FFT's period per tile (`forward_period`: max(L,
    N/2 + 1) N, the tiler sending a tile's L rows of data and the FFT's column pass the half spectrum's N/2 + 1
    columns). `lead`: the part of it before the compute starts, up to the last
    input channel's first tile, (C_in - 1) T F (its way through the forward FFT is in `latency`; the compute then
    keeps pace with the rest of the load). `compute`: the
    output channels in blocks of the engine's `outs` (its inverse paths); per block the slower of the MAC, T sum
    of G_o (each channel's groups once per tile), and the inverse paths, T N^2, plus the overlap-add's drain of
    the output rows the last tile row completes (the paths take the next block after it; hidden when the next
    block's MAC alone takes longer than its inverse paths and that drain); then the last block's other maps
    leave the output buffers one value a cycle, and no layer is faster than its output, one value a cycle. An
    engine with post stages (`post`) has its paths crop and pool before their buffers, so what leaves is the
    layer's output window, pooled with `pool`; without, the post stage behind the engine does, at its rate.
    `latency`: the first band (L W) and the engine's `latency` (forward FFT, MAC, spectrum read-out, inverse FFT
    and last tile) behind the last group. `single`: one layer alone, lead + compute + latency; `steady`: per layer
    when inputs stream through it back to back.

    What the layer keeps busy, for utilisation figures: `mac`, the cycles the MAC issues a kernel group (T sum of
    G_o); `products`, the complex products of those groups that are weights rather than padding (T times the
    layer's entries; the MAC has P lanes, so `mac` P - `products` lane-cycles multiply padding); `inverse`, the
    samples through the inverse paths (C_out T N^2, shared by `outs` paths, one sample a cycle each).
    """
    g = _geometry(engine, layer, h, w, valid_as_crop, pool)
    tiles, n2, outs, per_block = g["tiles"], g["n2"], g["outs"], g["per_block"]
    hw_out = g["map_out"]
    tail = (layer.c_out - 1) % outs * hw_out  # the last block's maps behind its first
    load = layer.c_in * tiles * g["forward"]
    compute = max(int(per_block.sum()) + tail, layer.c_out * hw_out)
    latency = g["l"] * w + int(engine.get("latency", 0))  # 0 from an INFO that predates it
    lead = load - tiles * g["forward"]
    return {"load": load, "lead": lead, "compute": compute, "latency": latency, "single": lead + compute + latency,
            "steady": max(load, compute), "mac": tiles * int(g["groups"].sum()),
            "products": tiles * int(layer.counts.sum()), "inverse": layer.c_out * tiles * n2}


def _geometry(engine: Mapping[str, Any], layer: SpectralLayer, h: int, w: int, valid_as_crop: bool,
              pool: bool) -> dict[str, Any]:
    """What `layer_cycles` and `chained_cycles` count with: tiles, output map (`map_out`, the values of one
    channel `o` gives), per block of output channels its compute (the slower of the MAC's groups and the inverse
    paths' samples plus the last tile row's drain)."""
    oaa = OaaParams(engine["n"], engine["k"], engine["l"], "same") if valid_as_crop else layer.oaa
    outs = int(engine.get("outs", 1))  # 1 from an INFO that predates it
    t_r, t_c = oaa.tiles(h, w)
    tiles = t_r * t_c
    n2 = int(engine["n"]) ** 2
    h_out, w_out = oaa.output_shape(h, w)
    drained_rows = h_out - max(0, min(h_out, (t_r - 1) * oaa.l - oaa.crop))
    groups = layer.schedule.groups if layer.schedule is not None else np.zeros(layer.c_out)
    blocks = np.add.reduceat(np.maximum(groups, 1), np.arange(0, layer.c_out, outs))
    # A block's overlap-add drains its last tile row's rows before its path takes the next block's first tile, so
    # the drain comes after whichever of the MAC and the inverse paths bounds the block, unless the next block's
    # MAC alone outlasts the inverse paths' samples and that drain (the paths then wait for it anyway).
    drain = drained_rows * w_out
    mac, inverse = tiles * blocks, tiles * n2
    hidden = np.append(mac[1:] >= inverse + drain, False)
    per_block = np.where(hidden, np.maximum(mac, inverse), np.maximum(mac, inverse) + drain)
    map_out = h_out * w_out
    if engine.get("post"):  # False from an INFO that predates it
        rows, cols = layer.oaa.output_shape(h, w)
        map_out = (rows // 2) * (cols // 2) if pool else rows * cols
    forward = int(engine.get("forward_period", n2))  # N^2 from an INFO that predates it (all N rows went in)
    return {"tiles": tiles, "tile_cols": t_c, "n2": n2, "forward": forward, "outs": outs, "h_out": h_out,
            "w_out": w_out,
            "map_out": map_out, "l": oaa.l, "groups": groups, "per_block": per_block}


def chained_cycles(engine: Mapping[str, Any], first: tuple[SpectralLayer, int, int],
                   second: tuple[SpectralLayer, int, int], *, valid_as_crop: bool = False,
                   pools: tuple[bool, bool] = (False, False)) -> int:
    """Cycles of the conv layer `second` (layer, H, W) in a RUN right behind the conv layer `first` whose output it
    reads, from `first`'s end to its own: the sequencer sends `second`'s input as `first` writes it (each word once
    written), so its load overlaps `first`'s compute, and it waits after `first` only for what of its lead its
    input's arrival leaves undone. `pools`: whether each layer's output is pooled (`layer_cycles`' `pool`).

    `first`'s output channel c (block b = c // outs) leaves over the cycles [p_c, e_c] of its compute: the block's
    first channel during the block, the others from their buffers after it, one value a cycle. `second`'s forward
    path, free once `first`'s load is done, loads its input channel c in T F cycles, no sooner than it is written
    (a tile row behind its last value); its compute starts once its channels but the last are in and the last
    one's first tile (and no sooner than `first`'s end). Then its compute and its latency past the forward FFT.
    """
    layer_a, layer_b = first[0], second[0]
    if layer_b.c_in != layer_a.c_out:
        raise ValueError(f"the second layer reads {layer_b.c_in} channels, the first gives {layer_a.c_out}")
    a = layer_cycles(engine, *first, valid_as_crop=valid_as_crop, pool=pools[0])
    b = layer_cycles(engine, *second, valid_as_crop=valid_as_crop, pool=pools[1])
    ga, gb = _geometry(engine, *first, valid_as_crop, pools[0]), _geometry(engine, *second, valid_as_crop, pools[1])
    hw_a = ga["map_out"]
    ends = np.cumsum(ga["per_block"])
    produced, written = np.zeros(layer_a.c_out), np.zeros(layer_a.c_out)
    for c in range(layer_a.c_out):  # one entry per output channel: tens at most
        block, j = divmod(c, ga["outs"])
        after = written[c - 1] + hw_a if c else 0
        written[c] = max(ends[block], after) if j == 0 else max(ends[block] + j * hw_a, after)
        produced[c] = ends[block] - ga["per_block"][block] if j == 0 else written[c] - hw_a
    one = gb["tiles"] * gb["forward"]
    row = gb["tile_cols"] * gb["forward"]
    # The times here count from `first`'s last input channel's first tile in the forward FFT (F after its compute
    # starts): its load ends (T - 1) F after that.
    free = a["load"] - a["lead"] - ga["forward"]
    for c in range(layer_b.c_in - 1):
        free = max(free + one, produced[c] + one, written[c] + row)
    ready = max(free, produced[layer_b.c_in - 1] + gb["l"] * second[2]) + gb["forward"]
    forward = int(engine.get("forward_latency", 0))  # 0 from an INFO that predates it
    return int(max(0, ready - a["compute"])) + b["compute"] + b["latency"] - gb["l"] * second[2] - forward
