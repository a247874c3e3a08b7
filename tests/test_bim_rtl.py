"""The BIM unpacker and sparse expander in RTL against the golden stream model, under cocotb.

Masks come from the real factorizer (`host.compress.bim.factorize`) on Gaussian weights whose shape is not
a multiple of the tile (padded edge tiles), plus tiles built on purpose: P all ones with Z all ones (every
position kept: a row takes n_t values, the most a row can), P all zeros (an empty tile), and rows kept at
random density. Values are random value_width-bit words.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from amaranth import Module, Shape
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from hypothesis import given, settings
from hypothesis import strategies as st

from boards import get_board
from host.compress.bim import factorize
from hw import characterise
from hw.bim_unpacker import BimUnpacker, BimUnpackerParams, SparseExpander, SparseExpanderParams, mask_row_layout
from hw.harness import BimUnpackerHarness
from hw.spec.bim import boolean_product, from_tiles
from hw.spec.bim_stream import (
    ExpanderFormat,
    UnpackerBeatFormat,
    expand,
    expected_dense_rows,
    expected_mask_rows,
    mask_row_beats,
    pack_values,
    scrambled_beats,
    tiles_to_beats,
    unpack_beats,
)
from sim import runner

# (m_t, n_t, r, value_width, values_per_beat, sparsity, weight shape)
CASES = [
    (8, 8, 2, 4, 2, 0.75, (21, 19)),
    (16, 32, 4, 8, 4, 0.9, (40, 70)),
    (64, 64, 8, 8, 8, 0.9, (100, 128)),
    (5, 7, 3, 3, 3, 0.6, (11, 15)),  # nothing a power of two: z_row 3 exists and writes nothing; beats of 3 values
]
IDS = [f"{c[0]}x{c[1]}r{c[2]}-w{c[3]}v{c[4]}" for c in CASES]


def factorized_tiles(m_t: int, n_t: int, r: int, sparsity: float, shape: tuple[int, int],
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """P (T, m_t, r) and Z (T, r, n_t) of the real factorizer, tiles in C order over the tile grid."""
    weights = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    result = factorize(weights, sparsity, m_t, n_t, r, seed=seed)
    assert np.array_equal(result.mask(), from_tiles(boolean_product(result.p, result.z), shape))
    return result.p.reshape(-1, m_t, r), result.z.reshape(-1, r, n_t)


def constructed_tiles(m_t: int, n_t: int, r: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Every position kept, nothing kept, and random P and Z of mixed density (some rows full, some empty)."""
    p = np.stack([np.ones((m_t, r), bool), np.zeros((m_t, r), bool), rng.random((m_t, r)) < 0.4])
    z = np.stack([np.ones((r, n_t), bool), rng.random((r, n_t)) < 0.5, rng.random((r, n_t)) < 0.3])
    p[2, 0], p[2, -1] = True, False  # a full OR of Z rows, an empty last row
    return p, z


def hexes(words: list[int]) -> list[str]:
    return [f"{word:x}" for word in words]


def unpacker_data(p: np.ndarray, z: np.ndarray, full_p: np.ndarray, full_z: np.ndarray,
                  scramble: random.Random) -> dict:
    n_t, r = z.shape[2], z.shape[1]
    canonical, scrambled = tiles_to_beats(p, z), scrambled_beats(p, z, scramble)
    expected = expected_mask_rows(p, z)
    assert unpack_beats(canonical, n_t, r) == expected == unpack_beats(scrambled, n_t, r)
    full_beats = tiles_to_beats(full_p, full_z)
    full_expected = expected_mask_rows(full_p, full_z)
    assert unpack_beats(full_beats, n_t, r) == full_expected
    return {"latency": BimUnpackerParams(p.shape[1], n_t, r).latency, "gap_probability": 0.3,
            "ready_probability": 0.6,
            "random": {"beats": hexes(canonical + scrambled), "expected": hexes(expected + expected)},
            "full_rate": {"beats": hexes(full_beats), "expected": hexes(full_expected)}}


def expander_stream(masks: np.ndarray, fmt: ExpanderFormat, rng: np.random.Generator) -> dict:
    values = rng.integers(0, 1 << fmt.value_width, size=masks.shape)
    mask_beats, value_beats = mask_row_beats(masks), pack_values(masks, values, fmt)
    expected = expected_dense_rows(masks, values, fmt)
    assert expand(mask_beats, value_beats, fmt) == expected
    return {"masks": hexes(mask_beats), "values": hexes(value_beats), "expected": hexes(expected)}


def thinned(masks: np.ndarray, most: int) -> np.ndarray:
    """`masks` with each row's kept positions beyond its first `most` cleared."""
    return masks & (np.cumsum(masks, axis=-1) <= most)


def rows_keeping(m_t: int, n_t: int, tiles: int, low: int, rng: np.random.Generator) -> np.ndarray:
    """Random masks whose every row keeps between `low` and n_t positions."""
    masks = np.zeros((tiles, m_t, n_t), bool)
    for tile in masks:
        for row in tile:
            row[rng.permutation(n_t)[:rng.integers(low, n_t + 1)]] = True
    return masks


@pytest.mark.parametrize("m_t, n_t, r, width, per_beat, sparsity, shape", CASES, ids=IDS)
def test_unpacker_matches_golden_model(tmp_path: Path, m_t, n_t, r, width, per_beat, sparsity, shape):
    seed = m_t * 1000 + n_t
    p, z = factorized_tiles(m_t, n_t, r, sparsity, shape, seed)
    extra_p, extra_z = constructed_tiles(m_t, n_t, r, np.random.default_rng(seed))
    mixed_p, mixed_z = np.concatenate([extra_p[:2], p, extra_p[2:]]), np.concatenate([extra_z[:2], z, extra_z[2:]])
    data = tmp_path / "bim_unpacker.json"
    data.write_text(json.dumps(unpacker_data(mixed_p, mixed_z, p, z, random.Random(seed))))
    sim = runner.build(BimUnpacker(BimUnpackerParams(m_t, n_t, r)), "bim_unpacker")
    runner.run(sim, "sim.tb.bim_unpacker", {"block": "unpacker", "data": str(data)})


@pytest.mark.parametrize("m_t, n_t, r, width, per_beat, sparsity, shape", CASES, ids=IDS)
def test_expander_matches_golden_model(tmp_path: Path, m_t, n_t, r, width, per_beat, sparsity, shape):
    seed = m_t * 1000 + n_t + 1
    rng = np.random.default_rng(seed)
    p, z = factorized_tiles(m_t, n_t, r, sparsity, shape, seed)
    extra_p, extra_z = constructed_tiles(m_t, n_t, r, rng)
    masks = boolean_product(np.concatenate([extra_p[:1], p, extra_p[1:]]),
                            np.concatenate([extra_z[:1], z, extra_z[1:]]))
    fmt = ExpanderFormat(n_t, width, per_beat)
    real = boolean_product(p, z)
    full = thinned(real, per_beat)
    assert (real.sum(axis=-1) > per_beat).any(), "thinning changed nothing: the full-rate stream proves less"
    bound = rows_keeping(m_t, n_t, 2, per_beat + 1, rng)
    data = tmp_path / "bim_expander.json"
    data.write_text(json.dumps({
        "latency": SparseExpanderParams(n_t, width, per_beat).latency, "gap_probability": 0.3,
        "ready_probability": 0.6, "random": expander_stream(masks, fmt, rng),
        "full_rate": expander_stream(full, fmt, rng), "value_bound": expander_stream(bound, fmt, rng)}))
    sim = runner.build(SparseExpander(SparseExpanderParams(n_t, width, per_beat)), "bim_expander")
    runner.run(sim, "sim.tb.bim_unpacker", {"block": "expander", "data": str(data)})


class UnpackExpand(wiring.Component):
    """`BimUnpacker` feeding `SparseExpander`: P/Z beats and packed values in, dense rows out."""

    def __init__(self, unpacker: BimUnpackerParams, expander: SparseExpanderParams):
        self.unpacker, self.expander = BimUnpacker(unpacker), SparseExpander(expander)
        super().__init__({"i": In(stream.Signature(unpacker.beat_layout)),
                          "values": In(stream.Signature(expander.values_layout)),
                          "o": Out(stream.Signature(expander.dense_layout))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.unpacker, m.submodules.expander = self.unpacker, self.expander
        wiring.connect(m, self.unpacker.o, self.expander.mask)
        wiring.connect(m, wiring.flipped(self.i), self.unpacker.i)
        wiring.connect(m, wiring.flipped(self.values), self.expander.values)
        wiring.connect(m, self.expander.o, wiring.flipped(self.o))
        return m


def test_unpacker_feeds_expander(tmp_path: Path):
    """The two chained on real factorizer output: P/Z beats and packed kept values in, dense weight rows out."""
    m_t, n_t, r, width, per_beat = 16, 32, 4, 8, 4
    rng = np.random.default_rng(7)
    p, z = factorized_tiles(m_t, n_t, r, 0.9, (40, 70), 7)
    fmt = ExpanderFormat(n_t, width, per_beat)

    def stream(p: np.ndarray, z: np.ndarray) -> dict:
        masks = boolean_product(p, z)
        weights = rng.integers(0, 1 << width, size=masks.shape)
        expected = expected_dense_rows(masks, weights, fmt)
        return {"masks": hexes(tiles_to_beats(p, z)), "values": hexes(pack_values(masks, weights, fmt)),
                "expected": hexes(expected)}

    # Full rate: only P's first column and a sparse Z row 0, so no row keeps more than values_per_beat values.
    sparse_p, sparse_z = p & (np.arange(r) == 0), np.zeros_like(z)
    for tile in sparse_z:
        tile[0, rng.permutation(n_t)[:rng.integers(0, per_beat + 1)]] = True
    dense_p = np.ones((2, m_t, r), bool)
    dense_z = rng.random((2, r, n_t)) < 0.5
    data = tmp_path / "bim_chain.json"
    data.write_text(json.dumps({
        "latency": BimUnpackerParams(m_t, n_t, r).latency + SparseExpanderParams(n_t, width, per_beat).latency,
        "gap_probability": 0.3, "ready_probability": 0.6, "random": stream(p, z),
        "full_rate": stream(sparse_p, sparse_z),
        "value_bound": stream(dense_p, dense_z)}))
    chain = UnpackExpand(BimUnpackerParams(m_t, n_t, r), SparseExpanderParams(n_t, width, per_beat))
    sim = runner.build(chain, "bim_chain")
    runner.run(sim, "sim.tb.bim_unpacker", {"block": "expander", "mask_port": "i", "data": str(data)})


@pytest.mark.parametrize("m_t, n_t, r", [(8, 8, 2), (16, 32, 4), (64, 64, 8), (5, 7, 3), (1, 1, 1), (9, 3, 3)])
def test_unpacker_layout_matches_stream_spec(m_t, n_t, r):
    """The RTL's StructLayout packs the fields exactly where `hw.spec.bim_stream` puts them."""
    layout = BimUnpackerParams(m_t, n_t, r).beat_layout
    fmt = UnpackerBeatFormat(n_t, r)
    fields = {name: (field.offset, Shape.cast(field.shape).width) for name, field in layout}
    flags = fmt.flags_offset
    assert fields == {"p": (0, r), "z": (fmt.z_offset, n_t), "z_row": (fmt.z_row_offset, fmt.z_row_width),
                      "has_p": (flags, 1), "has_z": (flags + 1, 1), "first": (flags + 2, 1), "last": (flags + 3, 1)}
    assert layout.size == fmt.width
    assert fmt.z_row_width == max(1, int(np.ceil(np.log2(r))))
    assert {name: field.offset for name, field in mask_row_layout(n_t)} == {"row": 0, "last": n_t}


@pytest.mark.parametrize("n_t, width, per_beat", [(8, 4, 2), (32, 8, 4), (7, 3, 5)])
def test_expander_layouts_match_stream_spec(n_t, width, per_beat):
    params = SparseExpanderParams(n_t, width, per_beat)
    fmt = ExpanderFormat(n_t, width, per_beat)
    values = list(range(1, per_beat + 1))
    view = params.values_layout.const(values)
    assert view.as_value().value == fmt.pack_beat(values)
    row = [(3 * j + 1) % (1 << width) for j in range(n_t)]
    dense = params.dense_layout.const({"row": row, "last": 1})
    assert dense.as_value().value == fmt.pack_dense(row, True)
    assert params.window_beats == -(-(n_t + per_beat - 1) // per_beat)


def test_canonical_beats_by_hand():
    """Two 2 × 3 tiles of rank 2: tile 0's Z on two Z-only beats, tile 1's Z riding on tile 0's P beats."""
    p = np.array([[[1, 0], [1, 1]], [[0, 1], [0, 0]]], bool)
    z = np.array([[[1, 0, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]], bool)
    fmt = UnpackerBeatFormat(3, 2)
    beats = [fmt.unpack(beat) for beat in tiles_to_beats(p, z)]
    keys = ("p", "z", "z_row", "has_p", "has_z", "first", "last")
    assert [tuple(b[k] for k in keys) for b in beats] == [
        (0, 0b001, 0, 0, 1, 0, 0), (0, 0b110, 1, 0, 1, 0, 0),
        (0b01, 0b011, 0, 1, 1, 1, 0), (0b11, 0b100, 1, 1, 1, 0, 1),
        (0b10, 0, 0, 1, 0, 1, 0), (0b00, 0, 0, 1, 0, 0, 1),
    ]
    assert expected_mask_rows(p, z) == [0b001, 0b111 | 1 << 3, 0b100, 0b000 | 1 << 3]


def test_expand_by_hand():
    """Values straddle beats; a group's last row drops the rest of its final beat."""
    fmt = ExpanderFormat(4, 4, 3)
    masks = [0b1011, 0b0110 | 1 << 4, 0b0001 | 1 << 4]
    values = [fmt.pack_beat([1, 2, 3]), fmt.pack_beat([4, 5, 0xF]), fmt.pack_beat([6])]
    assert expand(masks, values, fmt) == [
        fmt.pack_dense([1, 2, 0, 3], False), fmt.pack_dense([0, 4, 5, 0], True), fmt.pack_dense([6, 0, 0, 0], True)]
    tiles = np.array([[[1, 1, 0, 1], [0, 1, 1, 0]], [[1, 0, 0, 0], [0, 0, 0, 0]]], bool)
    weights = np.array([[[1, 9, 9, 3], [9, 4, 5, 9]], [[6, 9, 9, 9], [9, 9, 9, 9]]])
    weights[0, 0, 1] = 2
    assert pack_values(tiles, weights, fmt) == [fmt.pack_beat([1, 2, 3]), fmt.pack_beat([4, 5]), fmt.pack_beat([6])]


def test_harness_elaborates_for_both_families(tmp_path: Path):
    """The unpacker's characterisation harness builds a plan for iCE40 and ECP5 with the board's clock constraint."""
    cases = [("icebreaker", "top.pcf", "set_frequency clk12_0__io 12.0"),
             ("ulx3s-85f", "top.lpf", 'FREQUENCY PORT "clk25_0__io" 25000000.0 HZ;')]
    for board_name, constraint_file, expected in cases:
        board = get_board(board_name)
        harness = BimUnpackerHarness(BimUnpackerParams(8, 8, 2), board.uart_resource)
        plan = board.make_platform().prepare(harness, name="top")
        out = tmp_path / board_name
        plan.extract(out)
        assert expected in (out / constraint_file).read_text().splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("board_name", ["icebreaker", "ulx3s-85f"])
def test_characterise_unpacker_64x64r8(tmp_path: Path, board_name):
    """The unpacker alone for (m_t, n_t, r) = (64, 64, 8): it fits, meets the board clock, and the harness keeps
    every unpacker register (nothing optimised away)."""
    params = BimUnpackerParams(64, 64, 8)
    report = characterise.characterise(params, board_name, tmp_path, progress=lambda message: None)

    assert json.loads((tmp_path / characterise.RESULT_FILE).read_text()) == report
    assert report["block"] == "bim_unpacker" and report["params"] == {"m_t": 64, "n_t": 64, "r": 8}
    assert report["meets_board_clock"] and report["fmax_mhz"] >= report["board_clock_mhz"]
    assert report["mask_bits_per_s"] == round(64 * report["fmax_mhz"] * 1e6)
    unpacker, harness = report["unpacker_cells"], report["harness_cells"]
    # Both Z buffers, the output row, and the stage-1 P row.
    assert unpacker["ffs"] >= 2 * 8 * 64 + 64 + 8
    assert harness["ffs"] >= unpacker["ffs"] + params.beat_layout.size + 16
    # Each output bit is a function of 16 inputs (8 P bits, 8 Z bits): at least 5 LUT4s.
    assert unpacker["luts"] >= 5 * 64 and harness["luts"] >= 0.9 * unpacker["luts"]
    for name, use in report["resources"].items():
        assert 0 <= use["used"] <= use["available"], name


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 12), st.integers(1, 10), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_stream_spec_properties(m_t, n_t, r, tiles, seed):
    """Any tiles: canonical and scrambled unpacker streams give the Boolean product, the canonical stream is
    r + T·m_t + (T - 1)·max(0, r - m_t) beats, and the expander's stream rules rebuild the dense rows from the
    packed values."""
    rng = np.random.default_rng(seed)
    p = rng.random((tiles, m_t, r)) < rng.random()
    z = rng.random((tiles, r, n_t)) < rng.random()
    canonical = tiles_to_beats(p, z)
    assert len(canonical) == r + tiles * m_t + (tiles - 1) * max(0, r - m_t)
    expected = expected_mask_rows(p, z)
    scrambled = scrambled_beats(p, z, random.Random(seed))
    assert unpack_beats(canonical, n_t, r) == expected == unpack_beats(scrambled, n_t, r)
    fmt = ExpanderFormat(n_t, int(rng.integers(1, 9)), int(rng.integers(1, 2 * n_t + 2)))
    masks = boolean_product(p, z)
    values = rng.integers(0, 1 << fmt.value_width, size=masks.shape)
    packed = pack_values(masks, values, fmt)
    assert expand(mask_row_beats(masks), packed, fmt) == expected_dense_rows(masks, values, fmt)
