"""An FC layer larger than the FC engine or its weight regions runs in passes of output rows: the one rule.

A pass is a block of whole tile rows of the layer (`hw.spec.fc.FcLayout`: m_t output rows each, the layer's last
one possibly short). Its XOR slices (each plane's, in order), its BIM tiles, its scale rows are exactly the
layer's for those rows, so the pass is itself a compressed layer of the same format (`pass_layer`), and its
output is those rows of the layer's output bit for bit: output row r depends only on row r's weights, a and
bias_q, and on the shift and ReLU all rows share. A layer splits by rows only: its columns are summed into one
requantized value per row, so a column block's partial sum is not an int8 the next pass could add to.

`schedule(fmt, layers, depths)` decides how a program's FC layers run on an engine (`fmt`, an
`hw.spec.fc_stream.FcStreamFormat`: max_rows x max_cols) with weight regions of `depths` words (fc.xor, fc.bim,
fc.scale):

* every layer is cut into as few passes as the engine's max_rows allows (one pass when it has no more rows);
* the layers' passes stay *resident* (loaded once, each pass its own descriptor) as long as all of them fit the
  regions together;
* otherwise the largest layers (by XOR words, then by position) are *streamed*, one after the other, until the
  rest fits: a streamed layer's passes share one slot after the resident words, cut to what the slot holds, and
  the host LOADs each pass's words into the slot before it RUNs it, for every image.

ValueError, one line naming the limit, when a layer has more columns than the engine takes or one tile row of it
does not fit what the regions leave. `hw.plan` sizes a config by this rule and `host.accel` packs by it, so both
see the same passes. NumPy and `hw.spec` only.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hw.spec.bim_stream import tiles_to_beats
from hw.spec.fc_stream import FcLayer, FcStreamFormat
from hw.spec.xor_stream import BeatFormat, slices_to_beats

#: The weight regions an FC pass takes words of.
REGIONS = ("fc.xor", "fc.bim", "fc.scale")


@dataclass(frozen=True)
class FcPass:
    """Rows start..stop-1 of a layer, and the words its streams take in each weight region."""

    start: int
    stop: int
    words: tuple[tuple[str, int], ...]

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def count(self, region: str) -> int:
        """Words the pass takes in `region` (one of `REGIONS`)."""
        return dict(self.words)[region]


@dataclass(frozen=True)
class FcSchedule:
    """How one layer runs: its passes, and whether their words are streamed (LOADed per image into the slot)."""

    passes: tuple[FcPass, ...]
    streamed: bool = False

    def words(self, region: str) -> int:
        """Words all its passes take in `region`."""
        return sum(p.count(region) for p in self.passes)

    def slot(self, region: str) -> int:
        """Words its largest pass takes in `region`: what a streamed layer needs of the slot."""
        return max(p.count(region) for p in self.passes)


def pass_layer(layer: FcLayer, start: int, stop: int) -> FcLayer:
    """Rows start..stop-1 of `layer` as a layer of their own: whole tile rows (start a multiple of m_t, stop one
    too or the layer's rows), their XOR slices of every plane, BIM tiles, a, bias_q; shift and ReLU shared."""
    rows, cols = layer.shape
    m_t = layer.layout.m_t
    if not 0 <= start < stop <= rows or start % m_t or (stop % m_t and stop != rows):
        raise ValueError(f"rows {start}..{stop - 1} are not whole tile rows of {m_t} of a {rows}-row layer")
    t_r, t_c = layer.layout.grid(layer.shape)
    tr0, tr1 = start // m_t, -(-stop // m_t)
    per_row = t_c * m_t  # slices of one tile row in one plane
    slices = np.concatenate([np.arange(plane * t_r * per_row + tr0 * per_row, plane * t_r * per_row + tr1 * per_row)
                             for plane in range(layer.bits)])
    counts = np.asarray(layer.patch_counts, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    positions = np.asarray(layer.patch_positions)
    kept = np.concatenate([positions[offsets[s]:offsets[s + 1]] for s in slices]) if len(slices) else positions[:0]
    return FcLayer(cols=cols, xor_x=np.asarray(layer.xor_x)[slices], patch_counts=counts[slices],
                   patch_positions=kept.astype(positions.dtype), p=np.asarray(layer.p)[tr0:tr1],
                   z=np.asarray(layer.z)[tr0:tr1], a=np.asarray(layer.a)[start:stop],
                   bias_q=np.asarray(layer.bias_q)[start:stop], shift=layer.shift, relu=layer.relu)


@functools.lru_cache(maxsize=32)
def _xor_before(layer: FcLayer, n_in: int, n_t: int, max_patches: int, t_r: int) -> np.ndarray:
    """XOR beats of the layer's tile rows 0..k-1, for k = 0..t_r (cached: `hw.plan` asks for every candidate)."""
    beats = slices_to_beats(layer.xor_x, layer.patch_counts, layer.patch_positions, max_patches, n_out=n_t)
    last = BeatFormat(n_in, n_t, max_patches).last_offset
    ends = np.fromiter(((beat >> last) & 1 for beat in beats), dtype=np.int64, count=len(beats))
    # Beat k belongs to slice (number of slice ends before it); tile rows are contiguous in each plane.
    per_slice = np.bincount(np.concatenate([[0], np.cumsum(ends)[:-1]]), minlength=len(layer.patch_counts))
    per_tile_row = per_slice.reshape(layer.bits, t_r, -1).sum(axis=(0, 2))
    return np.concatenate([[0], np.cumsum(per_tile_row)])


@functools.lru_cache(maxsize=256)
def _bim_words(tiles: int, m_t: int, r: int, n_t: int) -> int:
    """Beats of the canonical BIM stream of `tiles` tiles (it depends on their number, not their bits)."""
    return len(tiles_to_beats(np.zeros((tiles, m_t, r), dtype=bool), np.zeros((tiles, r, n_t), dtype=bool)))


class _Words:
    """Words of any block of whole tile rows of one layer, from the layer's own streams: XOR beats per tile row
    (the canonical stream's `last` flags end each slice), BIM beats by tile count, one scale beat per row."""

    def __init__(self, fmt: FcStreamFormat, layer: FcLayer):
        self.fmt, self.layer = fmt, layer
        self.rows = layer.shape[0]
        self.t_r, self.t_c = layer.layout.grid(layer.shape)
        self.xor_before = _xor_before(layer, fmt.n_in, fmt.n_t, fmt.max_patches, self.t_r)

    def of(self, tr0: int, tr1: int) -> FcPass:
        """The pass of tile rows tr0..tr1-1."""
        start, stop = tr0 * self.fmt.m_t, min(tr1 * self.fmt.m_t, self.rows)
        tiles = (tr1 - tr0) * self.t_c * self.layer.bits
        words = {"fc.xor": int(self.xor_before[tr1] - self.xor_before[tr0]),
                 "fc.bim": _bim_words(tiles, self.fmt.m_t, self.fmt.r, self.fmt.n_t), "fc.scale": stop - start}
        return FcPass(start, stop, tuple((name, words[name]) for name in REGIONS))


def split_rows(fmt: FcStreamFormat, layer: FcLayer, room: Mapping[str, int] | None = None) -> tuple[FcPass, ...]:
    """`layer` cut greedily into passes of whole tile rows, each of at most the engine's max_rows rows and, with
    `room`, at most room[region] words in each weight region. ValueError naming the limit when the engine takes
    fewer columns, or fewer rows than one tile row, or one tile row needs more words than `room` gives."""
    rows, cols = layer.shape
    if cols > fmt.max_cols:
        raise ValueError(f"{cols} columns, the FC engine takes at most {fmt.max_cols} (max_cols; a layer is split "
                         f"into passes by rows only)")
    if layer.layout.m_t != fmt.m_t:
        raise ValueError(f"the layer's tiles have {layer.layout.m_t} rows, the engine's {fmt.m_t}")
    tile_rows = fmt.max_rows // fmt.m_t if rows > fmt.max_rows else -(-rows // fmt.m_t)
    if tile_rows < 1:
        raise ValueError(f"the FC engine takes {fmt.max_rows} rows (max_rows), fewer than one tile row of "
                         f"{fmt.m_t}: a layer of {rows} rows cannot be split into passes")
    words = _Words(fmt, layer)
    passes: list[FcPass] = []
    tr0 = 0
    while tr0 < words.t_r:
        tr1 = min(tr0 + tile_rows, words.t_r)
        while room is not None and tr1 > tr0 and _over(words.of(tr0, tr1), room):
            tr1 -= 1
        if tr1 == tr0:
            one = words.of(tr0, tr0 + 1)
            region = next(name for name in REGIONS if one.count(name) > room[name])
            raise ValueError(f"rows {one.start}..{one.stop - 1} (one tile row) need {one.count(region)} {region} "
                             f"words, {room[region]} are free")
        passes.append(words.of(tr0, tr1))
        tr0 = tr1
    return tuple(passes)


def _over(one: FcPass, room: Mapping[str, int]) -> bool:
    return any(one.count(name) > room[name] for name in REGIONS)


def schedule(fmt: FcStreamFormat, layers: Sequence[FcLayer], depths: Mapping[str, int],
             names: Sequence[str] | None = None) -> tuple[FcSchedule, ...]:
    """How each of a program's FC layers runs on this engine and these region depths (module docstring): passes by
    max_rows, resident while all fit, else the largest streamed through one slot. ValueError naming the limit
    (and the layer, by `names` or its index)."""
    names = _names(names, layers)
    plans = _by_rows(fmt, layers, names)
    order = _largest_first(plans)
    streamed: set[int] = set()
    while True:
        resident = {name: sum(plans[i].words(name) for i in range(len(plans)) if i not in streamed)
                    for name in REGIONS}
        if all(resident[name] <= depths[name] for name in REGIONS):
            room = {name: depths[name] - resident[name] for name in REGIONS}
            out = list(plans)
            try:
                for i in sorted(streamed):
                    out[i] = FcSchedule(split_rows(fmt, layers[i], room), True)
                return tuple(out)
            except ValueError as error:
                if len(streamed) == len(plans):  # nothing resident left to make room
                    raise ValueError(f"layer {names[i]} streamed in passes: {error}") from None
        streamed.add(order[len(streamed)])


def needed_words(fmt: FcStreamFormat, layers: Sequence[FcLayer], streamed: int = 0,
                 names: Sequence[str] | None = None) -> dict[str, int]:
    """Words each weight region needs for `schedule` to run the layers with every one cut by max_rows and the
    `streamed` largest (its order) streamed: the resident layers' words and the largest streamed pass (the slot).
    Deeper regions may let `schedule` keep more resident, never fewer."""
    names = _names(names, layers)
    plans = _by_rows(fmt, layers, names)
    out = set(_largest_first(plans)[:streamed])
    return {name: sum(plans[i].words(name) for i in range(len(plans)) if i not in out)
            + max((plans[i].slot(name) for i in out), default=0) for name in REGIONS}


def _names(names: Sequence[str] | None, layers: Sequence[FcLayer]) -> list[str]:
    return list(names) if names is not None else [f"#{i}" for i in range(len(layers))]


def _by_rows(fmt: FcStreamFormat, layers: Sequence[FcLayer], names: Sequence[str]) -> list[FcSchedule]:
    """Each layer cut by the engine's max_rows alone; ValueError naming the layer."""
    plans = []
    for name, layer in zip(names, layers):
        try:
            plans.append(FcSchedule(split_rows(fmt, layer)))
        except ValueError as error:
            raise ValueError(f"layer {name}: {error}") from None
    return plans


def _largest_first(plans: Sequence[FcSchedule]) -> list[int]:
    """The order layers are streamed in: most XOR words first, then the earlier."""
    return sorted(range(len(plans)), key=lambda i: (-plans[i].words("fc.xor"), i))


def resident_words(schedules: Sequence[FcSchedule], region: str) -> int:
    """Words the resident layers take in `region`: where the slot of the streamed ones starts."""
    return sum(s.words(region) for s in schedules if not s.streamed)


__all__ = ["REGIONS", "FcPass", "FcSchedule", "pass_layer", "split_rows", "schedule", "needed_words",
           "resident_words"]
