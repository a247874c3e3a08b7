"""The dense baseline convolution: its golden model against independent definitions, and the RTL against
the golden model, bit-exact, under cocotb, with cycles per output measured at full rate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hw.baseline.conv import BaselineConv, BaselineConvParams
from hw.layouts import pack
from hw.spec.arith import round_shift
from hw.spec.baseline import baseline_conv_fixed, conv2d_int
from hw.spec.spectral.geometry import OaaParams
from hw.spec.spectral.operator import conv2d_float
from sim import runner


def loop_conv(x: np.ndarray, w: np.ndarray, padding: str) -> np.ndarray:
    """Cross-correlation straight from the definition, one scalar product at a time."""
    c_out, c_in, k, _ = w.shape
    _, h, wd = x.shape
    p = (k - 1) // 2 if padding == "same" else 0
    h_out, w_out = (h, wd) if padding == "same" else (h - k + 1, wd - k + 1)
    y = np.zeros((c_out, h_out, w_out), dtype=np.int64)
    for o in range(c_out):
        for r in range(h_out):
            for c in range(w_out):
                total = 0
                for i in range(c_in):
                    for u in range(k):
                        for v in range(k):
                            rr, cc = r + u - p, c + v - p
                            if 0 <= rr < h and 0 <= cc < wd:
                                total += int(w[o, i, u, v]) * int(x[i, rr, cc])
                y[o, r, c] = total
    return y


@pytest.mark.parametrize("k, padding, h, w", [(3, "same", 5, 7), (3, "valid", 6, 4), (4, "same", 5, 6),
                                              (1, "valid", 3, 3), (5, "same", 3, 4)])
def test_golden_matches_loop_and_spec2_float(k, padding, h, w):
    rng = np.random.default_rng(k + h + w)
    x = rng.integers(-128, 128, size=(3, h, w))
    wt = rng.integers(-128, 128, size=(2, 3, k, k))
    y = conv2d_int(x, wt, padding)
    assert np.array_equal(y, loop_conv(x, wt, padding))
    # SPEC2's float OaA operator with unpruned kernels is the same convolution.
    n = 8 if k <= 3 else 16
    np.testing.assert_allclose(conv2d_float(x, wt, OaaParams(n=n, k=k, l=n - k + 1, padding=padding)), y,
                               atol=1e-6)


def test_golden_requantizes_like_spec2():
    rng = np.random.default_rng(3)
    x, wt = rng.integers(-128, 128, size=(2, 4, 4)), rng.integers(-128, 128, size=(3, 2, 3, 3))
    bias = np.array([5, -70000, 1 << 20])
    y = baseline_conv_fixed(x, wt, "same", 40000, 18, bias, relu=True)
    expected = np.clip(round_shift(conv2d_int(x, wt, "same") * 40000 + bias[:, None, None], 18), 0, 127)
    assert np.array_equal(y, expected)
    with pytest.raises(ValueError, match="padding must be one of"):
        conv2d_int(x, wt, "full")


def layer_streams(params: BaselineConvParams, runs: int, rng: np.random.Generator) -> dict:
    """`runs` random layers of this shape (weights, quant and map each time) and their golden outputs."""
    quant, weights, acts, expected = [], [], [], []
    a_lim, w_lim = 1 << (params.act_bits - 1), 1 << (params.weight_bits - 1)
    for run in range(runs):
        x = rng.integers(-a_lim, a_lim, size=(params.c_in, params.height, params.width))
        wt = rng.integers(-w_lim, w_lim, size=(params.c_out, params.c_in, params.k, params.k))
        if run == 0:  # the extreme operands, so the widest products and sums occur
            x[0], wt[0] = -a_lim, -w_lim
        mult = int(rng.integers(1 << (params.mult_bits - 1), 1 << params.mult_bits))
        shift = int(params.acc_bits + params.mult_bits - 12 + rng.integers(-2, 3))
        shift = [shift, 0, 63][run % 3]
        limit = 1 << (params.acc_bits + params.mult_bits - 2)
        bias = rng.integers(-limit, limit, size=params.c_out) >> rng.integers(0, 20)
        y = baseline_conv_fixed(x, wt, params.padding, mult, shift, bias, params.relu)
        quant += [pack(params.quant_layout, dict(out_mult=mult, out_shift=shift, bias=b)) for b in bias]
        weights += [int(v) & ((1 << params.weight_bits) - 1) for v in wt.reshape(-1)]
        acts += [int(v) & ((1 << params.act_bits) - 1) for v in x.reshape(-1)]
        expected += [int(v) & ((1 << params.out_bits) - 1) for v in y.reshape(-1)]
    return {"inputs": {name: [f"{v:x}" for v in words] for name, words in
                       (("quant", quant), ("w", weights), ("x", acts))},
            "expected": [f"{v:x}" for v in expected],
            "compute_cycles": len(expected) * params.groups}


RUNS = 3  # layers per case: typical, zero and out-of-range shifts

# Window c_in k^2 against M: several groups with a ragged last one, one group exactly, M = 1, "valid" + ReLU,
# an even kernel.
CASES = [
    BaselineConvParams(c_in=3, c_out=2, height=5, width=6, m=4),
    BaselineConvParams(c_in=1, c_out=3, height=6, width=4, m=9, relu=True),
    BaselineConvParams(c_in=2, c_out=2, height=4, width=5, m=1, padding="valid"),
    BaselineConvParams(c_in=2, c_out=2, height=5, width=5, m=5, k=4, padding="valid", relu=True),
    BaselineConvParams(c_in=4, c_out=2, height=3, width=7, m=8, k=2),
]


@pytest.mark.parametrize("params", CASES, ids=lambda p: f"c{p.c_in}x{p.c_out}k{p.k}m{p.m}{p.padding}")
def test_baseline_rtl_matches_golden(tmp_path: Path, params: BaselineConvParams):
    rng = np.random.default_rng(params.window + params.m)
    streams = layer_streams(params, RUNS, rng)
    report = tmp_path / "cycles.json"
    data = tmp_path / "baseline.json"
    data.write_text(json.dumps({**streams, "gap_probability": 0.3, "ready_probability": 0.6, "report": str(report)}))
    runner.run(runner.build(BaselineConv(params), "baseline_conv"), "sim.tb.streams", {"data": str(data)})

    # Full rate: within a layer one output every `groups` cycles, exactly; the first comes `latency`
    # cycles after the last load's final beat plus its groups.
    cycles = json.loads(report.read_text())
    outs = params.c_out * params.out_shape[0] * params.out_shape[1]
    loads = {"quant": params.c_out, "w": params.c_out * params.window, "x": params.c_in * params.height * params.width}
    for run in range(RUNS):
        got = cycles["o"][run * outs:(run + 1) * outs]
        assert np.all(np.diff(got) == params.groups), f"run {run}: outputs not every {params.groups} cycles"
        loaded = max(cycles[port][(run + 1) * count - 1] for port, count in loads.items())
        assert got[0] - loaded == params.groups + params.latency


def test_params_validation():
    with pytest.raises(ValueError, match="m must be <= c_in \\* k \\* k = 9"):
        BaselineConvParams(c_in=1, c_out=1, height=4, width=4, m=10)
    with pytest.raises(ValueError, match="height and width must be >= k=3"):
        BaselineConvParams(c_in=1, c_out=1, height=2, width=4, m=1, padding="valid")
    with pytest.raises(ValueError, match="c_out must be >= 1"):
        BaselineConvParams(c_in=1, c_out=0, height=4, width=4, m=1)
    with pytest.raises(TypeError, match="BaselineConvParams"):
        BaselineConv(None)
    p = BaselineConvParams(c_in=64, c_out=64, height=56, width=56, m=16)
    assert p.groups == 36 and p.acc_bits == 8 + 8 - 1 + 10
