"""SPEC2 overlap-add + output stage in RTL against `hw.spec.spectral`, bit-exact, under cocotb.

Each case streams several maps of random IFFT-output tiles (full signed in_bits range) through one
`OverlapAdd`, each with its own size and requantization constants (shifts from 0, saturating everything, to
63, zeroing everything; biases up to the golden's bound), and compares every output with the golden's
`overlap_add` -> `crop` -> `requantize`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hw.layouts import pack
from hw.spec.spectral.engine import SHIFT_BITS
from hw.spec.spectral.fixed import SpectralFixed, requantize
from hw.spec.spectral.layer import QuantParams
from hw.spec.spectral.operator import crop, overlap_add
from hw.spectral.overlap_add import OverlapAdd, OverlapAddParams
from sim import runner


def golden_map(params: OverlapAddParams, tiles: np.ndarray, h: int, w: int, mult: int, shift: int,
               bias: int) -> np.ndarray:
    """The golden's overlap-add, crop and requantization of one channel's (T_r, T_c, n, n) IFFT outputs."""
    canvas = overlap_add(tiles, params.l)
    assert np.abs(canvas).max() < 1 << (params.ola_bits - 1)
    quant = QuantParams(1.0, 1.0, 0, mult, shift, np.array([bias], dtype=np.int64))
    spec = SpectralFixed(data_bits=params.in_bits, mult_bits=params.mult_bits, out_bits=params.out_bits)
    return requantize(crop(canvas, params.oaa, h, w)[None], quant, spec, params.relu)[0]


def random_maps(params: OverlapAddParams, sizes: list[tuple[int, int]], rng: np.random.Generator) -> dict:
    """Streams and expected outputs for one map per size, each with its own requantization constants."""
    cfg, values, expected = [], [], []
    bias_limit = (1 << (params.ola_bits + params.mult_bits - 1)) - 1
    for index, (h, w) in enumerate(sizes):
        tr, tc = params.oaa.tiles(h, w)
        lim = 1 << (params.in_bits - 1)
        tiles = rng.integers(-lim, lim, size=(tr, tc, params.n, params.n))
        mult = int(rng.integers(1 << (params.mult_bits - 1), 1 << params.mult_bits))
        shift = int(rng.integers(params.in_bits + params.mult_bits - 10, params.in_bits + params.mult_bits - 4))
        bias = int(rng.integers(-(1 << shift + 6), 1 << shift + 6))
        # The edges: no shift (everything saturates), the widest bias, shifts past the product's width.
        shift, bias = [(shift, bias), (0, bias), (shift, bias_limit), (63, -bias_limit)][index % 4]
        out = golden_map(params, tiles, h, w, mult, shift, bias)
        cfg.append(pack(params.cfg_layout, dict(height=h, width=w, out_mult=mult, out_shift=shift, bias=bias)))
        values += [int(v) & ((1 << params.in_bits) - 1) for v in tiles.reshape(-1)]
        expected += [int(v) & ((1 << params.out_bits) - 1) for v in out.reshape(-1)]
    return {"inputs": {"cfg": [f"{c:x}" for c in cfg], "i": [f"{v:x}" for v in values]},
            "expected": [f"{v:x}" for v in expected]}


# (params, map sizes): the default geometry; three tiles overlapping per axis (a = 3) with ReLU and "valid";
# the smallest FFT; an even kernel (crop 2 for "same").
CASES = [
    (OverlapAddParams(max_height=14, max_width=14), [(13, 11), (6, 6), (1, 1), (14, 14)]),
    (OverlapAddParams(n=8, l=3, k=3, padding="valid", max_height=10, max_width=9, relu=True), [(10, 9), (3, 3)]),
    (OverlapAddParams(n=4, l=2, k=3, max_height=7, max_width=8), [(7, 5), (2, 2), (4, 8), (1, 3)]),
    (OverlapAddParams(n=8, l=4, k=4, max_height=9, max_width=8), [(9, 8), (4, 5)]),
]


@pytest.mark.parametrize("params, sizes", CASES, ids=["n8l6k3", "n8l3k3-valid-relu", "n4l2k3", "n8l4k4"])
def test_overlap_add_matches_golden(tmp_path: Path, params: OverlapAddParams, sizes):
    rng = np.random.default_rng(sum(sum(s) for s in sizes) + params.n + params.l)
    streams = random_maps(params, sizes, rng)
    report = tmp_path / "cycles.json"
    data = tmp_path / "overlap_add.json"
    data.write_text(json.dumps({**streams, "gap_probability": 0.3, "ready_probability": 0.6, "report": str(report)}))
    runner.run(runner.build(OverlapAdd(params), "overlap_add"), "sim.tb.streams", {"data": str(data)})

    # Full rate: within a map the input never stalls, and a map costs its input beats plus the drain of
    # the rows its last tile row completes (at most (n + l) rows of output) plus a few cycles of latency.
    cycles = json.loads(report.read_text())
    start, out_start = 0, 0
    for index, (h, w) in enumerate(sizes):
        tr, tc = params.oaa.tiles(h, w)
        h_out, w_out = params.oaa.output_shape(h, w)
        beats, outs = tr * tc * params.n**2, h_out * w_out
        taken = cycles["i"][start:start + beats]
        assert taken == list(range(taken[0], taken[0] + beats)), f"map {index}: input stalled within the map"
        last_out = cycles["o"][out_start + outs - 1]
        assert last_out - taken[-1] <= (params.n + params.l) * w_out + 6, f"map {index}: drain too long"
        if index + 1 < len(sizes):  # the next map's cfg is taken right after this map's last output
            assert cycles["cfg"][index + 1] - last_out <= 2
        start, out_start = start + beats, out_start + outs
    assert len(cycles["o"]) == out_start


def test_params_validation():
    with pytest.raises(ValueError, match="n must be >= l \\+ k - 1"):
        OverlapAddParams(n=8, l=7, k=3)
    with pytest.raises(ValueError, match="padding must be one of"):
        OverlapAddParams(padding="full")
    with pytest.raises(ValueError, match="max_width must be >= 1"):
        OverlapAddParams(max_width=0)
    with pytest.raises(ValueError, match="relu must be a bool"):
        OverlapAddParams(relu=1)
    with pytest.raises(TypeError, match="OverlapAddParams"):
        OverlapAdd({"n": 8})
    p = OverlapAddParams()
    assert p.ola_bits == SpectralFixed().ola_bits(p.oaa) == 20
    assert p.cfg_layout.size == 5 + 5 + 16 + SHIFT_BITS + 36
