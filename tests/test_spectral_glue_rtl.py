"""The SPEC2 glue blocks in RTL against `hw.spec.spectral`, bit-exact under cocotb (random input gaps, random
backpressure, a full-rate throughput run):

* `Tiler`: maps in, the golden's `tile_input` tiles out (the `tiles` stage of `spectral_conv_fixed_stages`,
  which `Fft2d` takes), for several map sizes, geometries and both paddings.
* `IfftInput`: the MAC's canonical accumulators in, the golden's `ifft_input` out (the `ifft_in` stage, which
  `Ifft2d` takes), from a calibrated layer and from random accumulators over the full acc_bits range with
  shifts that saturate, round (exact halves included) and zero everything.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from host.compress.spectral import calibrate, compress_spatial
from hw.layouts import pack
from hw.spec.spectral.engine import SHIFT_BITS
from hw.spec.spectral.fixed import SpectralFixed, bit_reverse, ifft_input, spectral_conv_fixed_stages
from hw.spec.spectral.geometry import OaaParams, bins, half_cols
from hw.spec.spectral.operator import tile_input
from hw.spectral.ifft_input import IfftInput, IfftInputParams
from hw.spectral.spectral_mac import canonical_bins
from hw.spectral.tiler import Tiler, TilerParams
from sim import runner


def _hex(words: list[int]) -> list[str]:
    return [f"{w:x}" for w in words]


def _run(tmp_path: Path, dut, name: str, inputs: dict[str, list[int]], expected: list[int],
         static: dict[str, int] | None = None) -> dict[str, list[int]]:
    """Run the glue testbench; return the full-rate run's handshake cycles per port."""
    report = tmp_path / "cycles.json"
    data = tmp_path / f"{name}.json"
    data.write_text(json.dumps({
        "inputs": {port: _hex(words) for port, words in inputs.items()}, "expected": _hex(expected),
        "static": static or {}, "gap_probability": 0.3, "ready_probability": 0.6, "report": str(report)}))
    runner.run(runner.build(dut, name), "sim.tb.streams", {"data": str(data)})
    return json.loads(report.read_text())


def _layer_stages(oaa: OaaParams, c_in: int, c_out: int, hw: tuple[int, int], spec: SpectralFixed, seed: int) -> dict:
    """The fixed-point stages of a calibrated random layer on one random input (C_in, H, W)."""
    rng = np.random.default_rng(seed)
    layer = compress_spatial(rng.standard_normal((c_out, c_in, oaa.k, oaa.k)), oaa, sparsity=0.75, p=4, b=8)
    layer = calibrate(layer, rng.integers(-128, 128, size=(4, c_in, *hw)), in_scale=1 / 64, spec=spec)
    x_q = rng.integers(-128, 128, size=(c_in, *hw))
    return {"layer": layer, "x_q": x_q, **spectral_conv_fixed_stages(x_q, layer, spec)}


# --- Tiler ------------------------------------------------------------------------------------------------


def _tiler_streams(params: TilerParams, maps: list[np.ndarray], tiles: list[np.ndarray]) -> tuple[dict, list[int]]:
    mask = (1 << params.act_bits) - 1
    cfg = [pack(params.cfg_layout, dict(height=x.shape[0], width=x.shape[1])) for x in maps]
    values = [int(v) & mask for x in maps for v in x.ravel()]
    # (T_r, T_c, n, n): tile raster, row-major, each row's columns in bit-reversed order, the first l rows (those
    # below are zero and not sent)
    for t in tiles:
        assert not np.any(t[..., params.l:, :]), "a golden tile has data below its l rows"
    expected = [int(v) & mask for t in tiles for v in t[..., : params.l, bit_reverse(params.n)].ravel()]
    return {"cfg": cfg, "i": values}, expected


def _check_tiler_rate(params: TilerParams, sizes: list[tuple[int, int]], cycles: dict[str, list[int]]) -> None:
    """One output per cycle within every map, and across a map boundary whenever the next map's first band
    (l W' inputs) loads while the previous map's last band (T_c l n outputs) goes out."""
    out = cycles["o"]
    start = 0
    for index, (h, w) in enumerate(sizes):
        tr, tc = params.tiles(h, w)
        beats = tr * tc * params.l * params.n
        taken = out[start:start + beats]
        assert taken == list(range(taken[0], taken[0] + beats)), f"map {index}: output stalled within the map"
        if index + 1 < len(sizes) and params.l * sizes[index + 1][1] <= tc * params.l * params.n:
            assert out[start + beats] == taken[-1] + 1, f"maps {index}, {index + 1}: output gap between maps"
        start += beats
    assert len(out) == start
    first_band = min(sizes[0][0], params.l) * sizes[0][1]
    assert out[0] - cycles["i"][first_band - 1] <= 2, "first tile late"


TILER_CASES = {
    # name: (params, oaa (geometry of the golden model), map sizes)
    "n8l6": (TilerParams(max_height=14, max_width=14), OaaParams(8, 3, 6), [(13, 11), (6, 6), (1, 1), (14, 14),
                                                                         (7, 12), (12, 5)]),
    "n8l3": (TilerParams(n=8, l=3, max_height=10, max_width=9), OaaParams(8, 3, 3, "valid"), [(10, 9), (3, 3),
                                                                                             (4, 7)]),
    "n4l2": (TilerParams(n=4, l=2, max_height=7, max_width=8), OaaParams(4, 3, 2), [(7, 5), (2, 2), (4, 8), (1, 3)]),
    "n8l8": (TilerParams(n=8, l=8, max_height=17, max_width=16), OaaParams(8, 1, 8), [(17, 16), (8, 9)]),
}


@pytest.mark.parametrize("case", TILER_CASES)
def test_tiler_matches_golden_tiles(tmp_path: Path, case: str):
    params, oaa, sizes = TILER_CASES[case]
    rng = np.random.default_rng(len(case) + sum(h * w for h, w in sizes))
    lim = 1 << (params.act_bits - 1)
    maps = [rng.integers(-lim, lim, size=size) for size in sizes]
    maps[0][0, 0], maps[-1][-1, -1] = lim - 1, -lim
    inputs, expected = _tiler_streams(params, maps, [tile_input(x[None], oaa)[0] for x in maps])
    cycles = _run(tmp_path, Tiler(params), f"tiler_{case}", inputs, expected)
    _check_tiler_rate(params, sizes, cycles)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_tiler_feeds_the_golden_fft_stage(tmp_path: Path, padding: str):
    """A calibrated layer's input, channel after channel: the tiles are the golden's `tiles` stage, which the
    FFT stage takes (its spectra are `fft2_fixed` of them), for either padding: the input map is never padded."""
    oaa = OaaParams(8, 3, 6, padding)
    st = _layer_stages(oaa, c_in=3, c_out=2, hw=(14, 13), spec=SpectralFixed(), seed=7)
    assert np.array_equal(st["tiles"], tile_input(st["x_q"], oaa))
    params = TilerParams(max_height=14, max_width=14)
    maps = list(st["x_q"])
    inputs, expected = _tiler_streams(params, maps, list(st["tiles"]))
    cycles = _run(tmp_path, Tiler(params), f"tiler_layer_{padding}", inputs, expected)
    _check_tiler_rate(params, [x.shape for x in maps], cycles)


def test_tiler_params():
    with pytest.raises(ValueError, match="l must be in 1..n=8, got 9"):
        TilerParams(l=9)
    with pytest.raises(ValueError, match="n must be a power of two in 4..256, got 6"):
        TilerParams(n=6)
    with pytest.raises(ValueError, match="max_width must be >= 1, got 0"):
        TilerParams(max_width=0)
    with pytest.raises(ValueError, match="act_bits must be an integer"):
        TilerParams(act_bits=8.0)
    with pytest.raises(TypeError, match="params must be a TilerParams, got OaaParams"):
        Tiler(OaaParams())
    assert TilerParams().cfg_layout.size == 10 and TilerParams().band_size == 6 * 32


# --- IfftInput --------------------------------------------------------------------------------------------


def _ifft_streams(params: IfftInputParams, acc_r: np.ndarray, acc_i: np.ndarray, mac_shift: int,
                  spec: SpectralFixed) -> tuple[dict, list[int]]:
    """Beats for channels (..., n, n/2 + 1) of accumulators: canonical bins ascending in, `ifft_input`
    column-major out, rows bit-reversed."""
    n = params.n
    acc_r, acc_i = acc_r.reshape(-1, bins(n)), acc_i.reshape(-1, bins(n))
    canon = canonical_bins(n)
    beats = [pack(params.in_layout, dict(re=r[k], im=i[k], last=j == len(canon) - 1))
             for r, i in zip(acc_r, acc_i) for j, k in enumerate(canon)]
    yr, yi = ifft_input(acc_r.reshape(-1, n, n // 2 + 1), acc_i.reshape(-1, n, n // 2 + 1), mac_shift, spec)
    yr, yi = yr[:, bit_reverse(n)], yi[:, bit_reverse(n)]  # each column's rows in bit-reversed order
    bits, mask = params.data_bits, (1 << params.data_bits) - 1
    expected = [(int(r) & mask) | ((int(i) & mask) << bits)
                for r, i in zip(yr.swapaxes(-1, -2).ravel(), yi.swapaxes(-1, -2).ravel())]
    return {"i": beats}, expected


def _check_ifft_rate(params: IfftInputParams, cycles: dict[str, list[int]]) -> None:
    """Output every cycle from the first to the last; the first channel's first output `latency` (4) cycles after
    its last input."""
    out = cycles["o"]
    assert out == list(range(out[0], out[0] + len(out))), "output gaps at full rate"
    assert out[0] - cycles["i"][params.canonical - 1] == params.latency == 4


def _random_acc(params: IfftInputParams, shift: int, count: int, rng: np.random.Generator) -> tuple[np.ndarray,
                                                                                                     np.ndarray]:
    """`count` channels of accumulators around the clamp after `shift` (some past it), exact rounding halves
    (both signs), then the extremes of acc_bits, all at random positions."""
    top = 1 << (params.acc_bits - 1)
    reach = min(top, 1 << (params.ifft_in_bits - 1 + shift)) * 5 // 4
    shape = (count, params.n, half_cols(params.n))
    r, i = rng.integers(-reach, reach, size=shape), rng.integers(-reach, reach, size=shape)
    if 0 < shift <= params.acc_bits - 8:  # exact halves k 2^s + 2^(s-1), within acc_bits
        halves = (rng.integers(-64, 64, size=shape) << shift) + (1 << (shift - 1))
        pick = rng.random(shape) < 0.3
        r, i = np.where(pick, halves, r), np.where(pick[:, ::-1], halves, i)
    edge = rng.random(shape)
    r = np.where(edge < 0.05, top - 1, np.where(edge > 0.95, -top, r))
    i = np.where(edge < 0.05, -top, np.where(edge > 0.95, top - 1, i))
    return np.clip(r, -top, top - 1), np.clip(i, -top, top - 1)


IFFT_CASES = {
    # name: (n, spec, mac_shift)
    "n8_shift20": (8, SpectralFixed(), 20),
    "n8_shift0_saturating": (8, SpectralFixed(), 0),
    "n8_shift44": (8, SpectralFixed(), 44),
    "n8_shift63_zero": (8, SpectralFixed(), 63),
    "n4_narrow_shift9": (4, SpectralFixed(data_bits=12, twiddle_bits=10), 9),
}


@pytest.mark.parametrize("case", IFFT_CASES)
def test_ifft_input_matches_golden(tmp_path: Path, case: str):
    n, spec, shift = IFFT_CASES[case]
    params = IfftInputParams.from_spec(spec, n)
    rng = np.random.default_rng(sum(map(ord, case)))
    acc_r, acc_i = _random_acc(params, shift, 6, rng)
    inputs, expected = _ifft_streams(params, acc_r, acc_i, shift, spec)
    cycles = _run(tmp_path, IfftInput(params), f"ifft_input_{case}", inputs, expected, {"mac_shift": shift})
    _check_ifft_rate(params, cycles)


def test_ifft_input_from_the_golden_mac_stage(tmp_path: Path):
    """A calibrated layer: the MAC's `acc` stage in (per tile, output channel after output channel), its
    `ifft_in` stage out, with the layer's own mac_shift."""
    spec = SpectralFixed()
    st = _layer_stages(OaaParams(), c_in=3, c_out=4, hw=(12, 12), spec=spec, seed=3)
    params = IfftInputParams.from_spec(spec)
    shift = st["layer"].quant.mac_shift
    # The MAC emits tile by tile, each tile's output channels in turn: (T_r, T_c, C_out, n, n/2 + 1).
    acc_r, acc_i = (np.moveaxis(a, 0, 2) for a in st["acc"])
    inputs, expected = _ifft_streams(params, acc_r, acc_i, shift, spec)
    yr, yi = (np.moveaxis(a, 0, 2)[..., bit_reverse(params.n), :] for a in st["ifft_in"])
    mask = (1 << params.data_bits) - 1
    assert expected == [(int(r) & mask) | ((int(i) & mask) << params.data_bits)
                        for r, i in zip(yr.swapaxes(-1, -2).ravel(), yi.swapaxes(-1, -2).ravel())]
    cycles = _run(tmp_path, IfftInput(params), "ifft_input_layer", inputs, expected, {"mac_shift": shift})
    _check_ifft_rate(params, cycles)


def test_ifft_input_params():
    with pytest.raises(ValueError, match="n must be a power of two in 4..256, got 12"):
        IfftInputParams(n=12)
    with pytest.raises(ValueError, match="acc_bits must be in 18..64"):
        IfftInputParams(acc_bits=17)
    with pytest.raises(ValueError, match="data_bits must be in 3..30, got 2"):
        IfftInputParams(data_bits=2)
    with pytest.raises(TypeError, match="params must be an IfftInputParams, got TilerParams"):
        IfftInput(TilerParams())
    p = IfftInputParams()
    assert p == IfftInputParams.from_spec(SpectralFixed(), 8)
    assert (p.ifft_in_bits, bins(p.n), p.canonical, SHIFT_BITS) == (17, 40, 34, 6)
