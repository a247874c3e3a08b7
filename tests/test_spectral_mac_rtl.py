"""The SPEC2 sparse spectral MAC in RTL against the golden model's MAC stage, under cocotb.

Layers come from the real encoder (`host.compress.spectral.compress_spatial`: random 3 x 3 kernels, 75 %
spectral sparsity, B = 2P banks, its conflict-free schedule), calibrated, and run through
`spectral_conv_fixed_stages`: the input spectra are its `spectrum` stage, every output beat must equal its
`acc` stage; behind them a tile at full scale in every channel gives the largest sums an accumulator sized for
MAX_C_IN channels must hold. A second, wider layer (32 input channels, one tile) checks one group per cycle and
gives the lane utilisation from the testbench's cycle count.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from host.compress.spectral import calibrate, compress_spatial, schedule_stats
from hw.layouts import pack
from hw.spec.spectral.fixed import SpectralFixed, spectral_conv_fixed_stages
from hw.spec.spectral.geometry import OaaParams, canonical_mask
from hw.spec.spectral.layer import stream_entries
from hw.spectral.spectral_mac import SpectralMac, SpectralMacParams, canonical_bins
from sim import runner

SPEC = SpectralFixed()
OAA = OaaParams(n=8, k=3, l=6, padding="same")
MAX_C_IN = 32
#: The accumulator width `SpectralConv` gives a MAC of MAX_C_IN channels (40 bits): exact, and no wider.
ACC_BITS = replace(SPEC, max_c_in=MAX_C_IN).acc_bits
LANES = [2, 4, 8]


def make_layer(c_out: int, c_in: int, p: int, hw: int, seed: int, sparsity: float = 0.75):
    """An encoded, calibrated layer and the fixed-point stages of one random input (C_in, hw, hw)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((c_out, c_in, 3, 3))
    layer = compress_spatial(w, OAA, sparsity=sparsity, p=p, b=2 * p)
    samples = rng.integers(-128, 128, size=(4, c_in, hw, hw))
    layer = calibrate(layer, samples, in_scale=1 / 64, spec=SPEC)
    x_q = rng.integers(-128, 128, size=(c_in, hw, hw))
    return layer, spectral_conv_fixed_stages(x_q, layer, SPEC)


def streams(layer, stages: dict, params: SpectralMacParams, rng: np.random.Generator) -> dict:
    """Input spectrum beats, entry beats and expected output beats, tile after tile, as hex strings."""
    sr, si = stages["spectrum"]  # (C_in, T_r, T_c, n, n/2 + 1)
    ar, ai = stages["acc"]  # (C_out, T_r, T_c, n, n/2 + 1)
    tiles = sr.shape[1] * sr.shape[2]
    sr, si = sr.reshape(layer.c_in, tiles, -1), si.reshape(layer.c_in, tiles, -1)
    ar, ai = ar.reshape(layer.c_out, tiles, -1), ai.reshape(layer.c_out, tiles, -1)
    ent = stream_entries(layer)
    p = params.p
    group_out = ent["out"][::p]
    slots = {key: ent[key].reshape(-1, p) for key in ("index", "re", "im", "in", "valid")}
    canon = canonical_bins(layer.oaa.n)
    assert canon == list(np.flatnonzero(canonical_mask(layer.oaa.n)))

    x_beats, w_beats, expected, groups, useful = [], [], [], 0, 0
    for t in range(tiles):
        # Every bin of the half, the channels interleaved in a random order: the bins may come in any order.
        order = [(i, q) for i in range(layer.c_in) for q in range(params.bins)]
        rng.shuffle(order)
        for n, (i, q) in enumerate(order):
            x_beats.append(pack(params.write_layout, {"re": sr[i, t, q], "im": si[i, t, q], "index": q, "chan": i,
                                                      "last": n == len(order) - 1}))
        for o in range(layer.c_out):
            mine = np.flatnonzero(group_out == o)
            beats = []
            for g in mine:
                # A group's lanes may read different input channels (several kernels of the output channel).
                beats.append({"lanes": [{"index": slots["index"][g, j], "re": slots["re"][g, j],
                                         "im": slots["im"][g, j], "chan": slots["in"][g, j]} for j in range(p)]})
                useful += int(slots["valid"][g].sum())
            if not beats:  # an output channel without entries still needs its last_out beat
                beats.append({"lanes": [{"index": j, "re": 0, "im": 0, "chan": 0} for j in range(p)]})
            beats[-1]["last_out"] = 1
            beats[-1]["last_tile"] = int(o == layer.c_out - 1)
            groups += len(beats)
            w_beats += [pack(params.entry_layout, {"last_out": 0, "last_tile": 0, **b}) for b in beats]
            expected += [pack(params.out_layout, {"re": ar[o, t, q], "im": ai[o, t, q], "last": q == canon[-1]})
                         for q in canon]
    return {"x": [f"{b:x}" for b in x_beats], "w": [f"{b:x}" for b in w_beats],
            "expected": [f"{b:x}" for b in expected], "groups": groups, "useful": useful}


def extreme_tile(params: SpectralMacParams) -> dict:
    """One tile of `params.max_c_in` channels at full scale, every bin -2^(data_bits-1) (1 + j), into two output
    channels whose weights give the largest positive and the most negative real part a product can have, summed
    over every channel: the sums an accumulator of `params.acc_bits` must hold. The expected sums are Python
    integers from the definition."""
    low = -(1 << (params.data_bits - 1))
    w_low, w_high = -(1 << (params.weight_bits - 1)), (1 << (params.weight_bits - 1)) - 1
    p, b, c_in = params.p, params.b, params.max_c_in
    x_beats = [pack(params.write_layout, {"re": low, "im": low, "index": q, "chan": i,
                                          "last": i == c_in - 1 and q == params.bins - 1})
               for i in range(c_in) for q in range(params.bins)]
    # Every bin of every channel, p banks at a time, so a group's lanes sit on distinct, ascending banks;
    # a bank past the last bin gets a padding entry (value 0, index = its bank).
    groups = [(i, [(a * b + k, True) if a * b + k < params.bins else (k, False) for k in range(g, g + p)])
              for i in range(c_in) for a in range(params.bank_depth) for g in range(0, b, p)]
    canon = canonical_bins(params.n)
    w_beats, expected = [], []
    for o, (wr, wi) in enumerate([(w_low, w_high), (w_high, w_low)]):
        for n, (chan, lanes) in enumerate(groups):
            entries = [{"index": q, "re": wr if real else 0, "im": wi if real else 0, "chan": chan}
                       for q, real in lanes]
            last = n == len(groups) - 1
            w_beats.append(pack(params.entry_layout, {"lanes": entries, "last_out": last,
                                                      "last_tile": last and o == 1}))
        re, im = c_in * (low * wr - low * wi), c_in * (low * wi + low * wr)
        expected += [pack(params.out_layout, {"re": re, "im": im, "last": q == canon[-1]}) for q in canon]
    return {"x": x_beats, "w": w_beats, "expected": expected}


def group_counts(layer) -> np.ndarray:
    """Groups per output channel."""
    return layer.schedule.groups


@pytest.mark.parametrize("p", LANES, ids=[f"p{p}-b{2 * p}" for p in LANES])
def test_mac_matches_golden_acc_stage(tmp_path: Path, p: int):
    params = SpectralMacParams(n=OAA.n, p=p, b=2 * p, max_c_in=MAX_C_IN, data_bits=SPEC.data_bits,
                               weight_bits=SPEC.weight_bits, acc_bits=ACC_BITS)
    rng = np.random.default_rng(100 + p)

    # Small layer, 2 x 2 tiles: both spectrum buffers and both accumulator buffers cycle several times.
    small, small_stages = make_layer(c_out=4, c_in=3, p=p, hw=12, seed=p)
    random_case = streams(small, small_stages, params, rng)
    # Then a tile at full scale: the accumulators, sized exactly for MAX_C_IN channels, hold its extreme sums.
    for port, beats in extreme_tile(params).items():
        random_case[port] += [f"{beat:x}" for beat in beats]

    # Wide layer, one tile: every output channel takes enough groups to hide the previous one's drain
    # (34 canonical bins, plus the pipeline latency), so nothing but the MAC limits the rate (at 8 lanes, half
    # the bins kept: a group takes entries of several kernels, so 75 % sparse channels are too short).
    wide, wide_stages = make_layer(c_out=4, c_in=MAX_C_IN, p=p, hw=6, seed=10 + p, sparsity=0.5 if p == 8 else 0.75)
    assert group_counts(wide)[1:].min() >= len(params.canonical) + 2 * params.latency
    full_rate = streams(wide, wide_stages, params, rng)
    stats = schedule_stats(wide)
    assert (full_rate["groups"], full_rate["useful"]) == (stats["groups"], stats["entries"])

    case = tmp_path / "spectral_mac.json"
    report = tmp_path / "report.json"
    case.write_text(json.dumps({"p": p, "acc_bits": params.acc_bits, "gap_probability": 0.3,
                                "ready_probability": 0.6, "random": random_case, "full_rate": full_rate,
                                "report": str(report)}))
    sim = runner.build(SpectralMac(params), f"spectral_mac_p{p}")
    runner.run(sim, "sim.tb.spectral_mac", {"data": str(case)})

    measured = json.loads(report.read_text())
    assert measured["cycles"] == stats["groups"]  # one group per cycle, no stall
    assert measured["utilisation"] == pytest.approx(stats["utilization"])
    print(f"P={p} B={2 * p}: {measured}")


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 12}, "n must be a power of two"),
    ({"p": 0}, "p must be >= 1, got 0"),
    ({"p": 4, "b": 2}, "b must be a power of two in p=4"),
    ({"p": 3, "b": 6}, "b must be a power of two"),
    ({"b": 64}, "b must be a power of two in p=4..40"),
    ({"max_c_in": 0}, "max_c_in must be >= 1, got 0"),
    ({"acc_bits": 40}, "acc_bits must be at least"),
    ({"max_c_in": 8, "slots": 4}, "slots must be at least max_c_in=8"),
    ({"p": 2.0}, "p must be an integer"),
])
def test_params_rejected(kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        SpectralMacParams(**kwargs)


def test_params_defaults_match_golden_widths():
    """The default widths are `SpectralFixed`'s, the accumulator sized for its max_c_in."""
    params = SpectralMacParams(max_c_in=SPEC.max_c_in)
    assert (params.data_bits, params.weight_bits, params.acc_bits) == (SPEC.data_bits, SPEC.weight_bits,
                                                                        SPEC.acc_bits)
    assert params.min_acc_bits == SPEC.acc_bits
    with pytest.raises(TypeError, match="params must be a SpectralMacParams"):
        SpectralMac({"n": 8})
