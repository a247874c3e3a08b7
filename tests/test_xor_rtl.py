"""The XOR-gate weight decoder in RTL against the golden model, fed with real encoder output, under cocotb.

Slices come from `host.compress.xor.encode_slices` on random targets with random care masks (care
probability 0.05-0.3 per slice, i.e. 70-95 % sparsity), plus slices built on purpose around max_patches
(0, max_patches, max_patches + 1, 2 * max_patches + 1 patches, ...) so continuation beats are always
exercised. Fields the decoder must ignore are filled with noise.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from amaranth import Shape

from boards import get_board
from host.compress.xor import encode_slices
from hw import characterise
from hw.harness import XorDecoderHarness, random_full_rank_matrix
from hw.spec.fields import bits_to_int
from hw.spec.xor import decode_slices, xor_matrix
from hw.spec.xor_stream import BeatFormat, expected_words, scramble_ignored, slices_to_beats
from hw.toolchain import yosys_cell_counts
from hw.xor_decoder import XorDecoder, XorDecoderParams
from sim import runner

# (n_in, n_out, max_patches, encoder slices): the paper's toy, FleXOR-like ratios, and a wide one.
CASES = [(3, 4, 1, 400), (16, 128, 4, 200), (24, 200, 2, 150), (64, 512, 3, 60)]
FULL_RATE_SLICES = 100


def constructed_slices(n_in: int, n_out: int, max_patches: int, rng: np.random.Generator):
    """Random x with patch counts chosen around max_patches; the first and last positions included."""
    mp = max_patches
    counts = [k for k in (0, 1, mp - 1, mp, mp + 1, 2 * mp, 2 * mp + 1, 3 * mp + 2) if k <= n_out]
    counts += [n_out] if n_out <= 8 else []  # every bit flipped, for the toy
    x = rng.integers(0, 2, size=(len(counts), n_in), dtype=np.uint8)
    positions = [rng.permutation(n_out)[:k].tolist() for k in counts]
    if len(positions) > 2:
        positions[2 if counts[2] else 3][0] = 0
        positions[-1][-1] = n_out - 1
    return x, counts, positions


def encoder_slices(m: np.ndarray, count: int, care_range: tuple[float, float], rng: np.random.Generator):
    """`count` slices encoded by the real encoder from random targets and care masks."""
    n_out = m.shape[0]
    targets = rng.integers(0, 2, size=(count, n_out), dtype=np.uint8)
    care = rng.random((count, n_out)) < rng.uniform(*care_range, size=(count, 1))
    x, counts, flat = encode_slices(m, targets, care)
    decoded = decode_slices(m, x, counts, flat)
    assert (decoded[care] == targets[care]).all(), "encoder output does not decode to its care bits"
    splits = np.cumsum(np.asarray(counts))[:-1]
    return np.asarray(x, dtype=np.uint8), [int(c) for c in counts], [p.tolist() for p in np.split(flat, splits)]


def shuffled(parts, rng: np.random.Generator):
    """Concatenate (x, counts, positions-per-slice) parts in a random slice order; flatten the positions."""
    x = np.concatenate([p[0] for p in parts])
    counts = [c for p in parts for c in p[1]]
    positions = [ps for p in parts for ps in p[2]]
    order = rng.permutation(len(counts))
    flat = [int(q) for i in order for q in positions[i]]
    return x[order], np.array([counts[i] for i in order], dtype=np.int64), np.array(flat, dtype=np.int64)


def stream(m: np.ndarray, max_patches: int, slices, scramble: random.Random | None = None) -> dict:
    x, counts, flat = slices
    fmt = BeatFormat(m.shape[1], m.shape[0], max_patches)
    beats = slices_to_beats(x, counts, flat, max_patches, n_out=m.shape[0])
    if scramble is not None:
        beats = scramble_ignored(beats, fmt, scramble)
    return {"beats": [f"{b:x}" for b in beats], "expected": [f"{w:x}" for w in expected_words(m, x, counts, flat)],
            "slices": len(counts), "max_count": int(counts.max(initial=0))}


def random_split_beats(fmt: BeatFormat, slices, rng: random.Random) -> list[int]:
    """The slices as beats again, each slice's patches split at random (count-0 beats included)."""
    x, counts, flat = slices
    beats, offset = [], 0
    for row, count in zip(x, counts):
        left = [int(q) for q in flat[offset:offset + count]]
        offset += count
        first = True
        while True:
            take = rng.randint(0, min(len(left), fmt.max_patches))
            done = not left[take:] and rng.random() < 0.7
            beats.append(fmt.pack(bits_to_int(row) if first else 0, left[:take], last=done))
            left, first = left[take:], False
            if done:
                break
    return beats


@pytest.mark.parametrize("n_in, n_out, max_patches, n_slices", CASES, ids=[f"{c[0]}x{c[1]}-p{c[2]}" for c in CASES])
def test_decoder_matches_golden_model(tmp_path: Path, n_in, n_out, max_patches, n_slices):
    seed = n_in * 1000 + n_out
    rng = np.random.default_rng(seed)
    m = xor_matrix(n_out, n_in, seed)
    params = XorDecoderParams.from_matrix(m, max_patches)

    mixed = shuffled([encoder_slices(m, n_slices, (0.05, 0.3), rng),
                      constructed_slices(n_in, n_out, max_patches, rng)], rng)
    random_stream = stream(m, max_patches, mixed, scramble=random.Random(seed))
    assert random_stream["max_count"] > 2 * max_patches  # slices spanning three or more beats
    # The same slices again with their patches split across beats at random.
    fmt = BeatFormat(n_in, n_out, max_patches)
    random_stream["beats"] += [f"{b:x}" for b in random_split_beats(fmt, mixed, random.Random(seed + 1))]
    random_stream["expected"] += random_stream["expected"]
    # Positions past n_out (when n_out is not a power of two) match no bit.
    beyond = list(range(n_out, 1 << fmt.position_width))[-max_patches:]
    if beyond:
        x = mixed[0][0]
        random_stream["beats"].append(f"{fmt.pack(bits_to_int(x), beyond, last=True):x}")
        random_stream["expected"].append(f"{bits_to_int(m.astype(int) @ x % 2):x}")

    # Full rate: one beat per slice, so at most max_patches patches each.
    low = encoder_slices(m, 3 * FULL_RATE_SLICES, (0.02, 0.1), rng)
    keep = [i for i, c in enumerate(low[1]) if c <= max_patches][:FULL_RATE_SLICES]
    full = (low[0][keep], np.array([low[1][i] for i in keep]), np.array([q for i in keep for q in low[2][i]]))
    full_rate = stream(m, max_patches, full)
    assert len(full_rate["beats"]) == full_rate["slices"] >= FULL_RATE_SLICES // 2

    data = tmp_path / "xor_decoder.json"
    data.write_text(json.dumps({"latency": params.latency, "gap_probability": 0.3, "ready_probability": 0.6,
                                "random": random_stream, "full_rate": full_rate}))
    sim = runner.build(XorDecoder(params), "xor_decoder")
    runner.run(sim, "sim.tb.xor_decoder", {"data": str(data)})


@pytest.mark.parametrize("n_in, n_out, max_patches", [(3, 4, 1), (24, 200, 2), (5, 9, 4), (64, 512, 3)])
def test_beat_layout_matches_stream_spec(n_in, n_out, max_patches):
    """The RTL's StructLayout packs the fields exactly where `hw.spec.xor_stream` puts them."""
    m = xor_matrix(n_out, n_in, 1)
    layout = XorDecoderParams.from_matrix(m, max_patches).beat_layout
    fmt = BeatFormat(n_in, n_out, max_patches)
    fields = {name: (field.offset, field.width) for name, field in layout}
    assert fields == {
        "x": (0, n_in),
        "positions": (fmt.positions_offset, max_patches * fmt.position_width),
        "count": (fmt.count_offset, fmt.count_width),
        "last": (fmt.last_offset, 1),
    }
    assert layout.size == fmt.width
    assert Shape.cast(layout["positions"].shape.elem_shape).width == fmt.position_width
    assert fmt.position_width == int(np.ceil(np.log2(n_out)))


def test_slices_to_beats_splits_patches():
    """A slice with k patches takes max(1, ceil(k / max_patches)) beats; x on the first, last on the final."""
    fmt = BeatFormat(3, 6, 2)
    x = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=np.uint8)
    beats = slices_to_beats(x, np.array([0, 5, 2]), np.array([4, 0, 3, 5, 1, 2, 0]), 2, n_out=6)
    assert [fmt.unpack(b) for b in beats] == [
        (0b101, [0, 0], 0, True),
        (0b110, [4, 0], 2, False), (0, [3, 5], 2, False), (0, [1, 0], 1, True),
        (0b111, [2, 0], 2, True),
    ]


def test_harness_elaborates_for_both_families(tmp_path: Path):
    """The characterisation harness builds a plan for iCE40 and ECP5 with the board's clock constraint."""
    params = XorDecoderParams.from_matrix(xor_matrix(4, 3, 1), 1)
    cases = [("icebreaker", "top.pcf", "set_frequency clk12_0__io 12.0"),
             ("ulx3s-85f", "top.lpf", 'FREQUENCY PORT "clk25_0__io" 25000000.0 HZ;')]
    for board_name, constraint_file, expected in cases:
        board = get_board(board_name)
        plan = board.make_platform().prepare(XorDecoderHarness(params, board.uart_resource), name="top")
        out = tmp_path / board_name
        plan.extract(out)
        assert expected in (out / constraint_file).read_text().splitlines()


def test_yosys_cell_counts():
    log = ("=== xor_decoder ===\n\n     1588 wires\n        2   SB_DFF\n      732   SB_DFFE\n     1202   SB_LUT4\n"
           "        3   SB_CARRY\n\n=== design hierarchy ===\n     99   SB_LUT4\n")
    assert yosys_cell_counts(log, "xor_decoder") == {"luts": 1202, "ffs": 734}
    ecp5 = "=== top ===\n     1223   LUT4\n       85   PFUMX\n        4   CCU2C\n      861   TRELLIS_FF\n"
    assert yosys_cell_counts(ecp5, "top") == {"luts": 1231, "ffs": 861}


@pytest.mark.slow
@pytest.mark.parametrize("board_name", ["icebreaker", "ulx3s-85f"])
def test_characterise_24x200(tmp_path: Path, board_name):
    """The decoder alone for (n_in, n_out) = (24, 200), max_patches 2: it fits, meets the board clock, and the
    harness keeps every decoder register (nothing optimised away)."""
    params = XorDecoderParams.from_matrix(random_full_rank_matrix(200, 24, 1), 2)
    report = characterise.characterise(params, board_name, tmp_path, progress=lambda message: None)

    assert json.loads((tmp_path / characterise.RESULT_FILE).read_text()) == report
    assert report["meets_board_clock"] and report["fmax_mhz"] >= report["board_clock_mhz"]
    assert report["weights_per_s"] == round(200 * report["fmax_mhz"] * 1e6)
    decoder, harness = report["decoder_cells"], report["harness_cells"]
    # Registers the decoder must have: x, the patch mask, the last tree stage, and a stage of partial sums.
    assert decoder["ffs"] >= 24 + 3 * 200
    assert harness["ffs"] >= decoder["ffs"] + params.beat_layout.size + 16
    assert decoder["luts"] >= 2 * 200 and harness["luts"] >= 0.9 * decoder["luts"]
    for name, use in report["resources"].items():
        assert 0 <= use["used"] <= use["available"], name
