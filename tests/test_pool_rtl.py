"""`MaxPool2` in RTL against the golden 2 x 2 max-pooling, bit-exact, under cocotb (random gaps and backpressure)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hw.layouts import pack
from hw.pool import MaxPool2, MaxPoolParams
from hw.spec.pool import max_pool
from sim import runner


def loop_pool(x: np.ndarray) -> np.ndarray:
    """An independent 2 x 2 / stride 2 max-pool over (C, H, W), odd edges dropped."""
    c, h, w = x.shape
    out = np.empty((c, h // 2, w // 2), dtype=x.dtype)
    for k in range(c):
        for i in range(h // 2):
            for j in range(w // 2):
                out[k, i, j] = max(x[k, 2 * i, 2 * j], x[k, 2 * i, 2 * j + 1], x[k, 2 * i + 1, 2 * j],
                                   x[k, 2 * i + 1, 2 * j + 1])
    return out


def test_golden_max_pool_matches_loop():
    rng = np.random.default_rng(1)
    for shape in [(3, 6, 8), (2, 7, 5), (1, 2, 2), (4, 3, 9)]:
        x = rng.integers(-128, 128, shape)
        assert np.array_equal(max_pool(x), loop_pool(x)), shape


def streams(params: MaxPoolParams, shapes: list[tuple[int, int, int]], rng: np.random.Generator) -> dict:
    """Every layer's cfg beat, samples and expected pooled samples, as hex words."""
    cfg, samples, expected = [], [], []
    mask = (1 << params.bits) - 1
    lim = 1 << (params.bits - 1)
    for c, h, w in shapes:
        x = rng.integers(-lim, lim, (c, h, w))
        cfg.append(pack(params.cfg_layout, {"height": h, "width": w, "channels": c}))
        samples += [int(v) & mask for v in x.reshape(-1)]
        expected += [int(v) & mask for v in loop_pool(x).reshape(-1)]
    return {"inputs": {"cfg": [f"{v:x}" for v in cfg], "i": [f"{v:x}" for v in samples]},
            "expected": [f"{v:x}" for v in expected]}


# LeNet's two pools, odd heights and widths, the smallest map, a single channel.
SHAPES = [(6, 28, 28), (16, 10, 10), (3, 7, 5), (2, 2, 2), (1, 9, 12), (5, 3, 3)]


def test_max_pool_matches_golden(tmp_path: Path):
    params = MaxPoolParams(max_height=28, max_width=28, max_channels=16)
    data = tmp_path / "pool.json"
    report = tmp_path / "cycles.json"
    data.write_text(json.dumps({**streams(params, SHAPES, np.random.default_rng(7)), "gap_probability": 0.3,
                                "ready_probability": 0.6, "report": str(report)}))
    runner.run(runner.build(MaxPool2(params), "max_pool"), "sim.tb.streams", {"data": str(data)})
    # Full rate: every sample is taken on consecutive cycles within a layer.
    taken = json.loads(report.read_text())["i"]
    first = taken[:6 * 28 * 28]
    assert first == list(range(first[0], first[0] + len(first)))


@pytest.mark.parametrize("name, value", [("max_height", 1), ("max_width", 0), ("max_channels", 0), ("bits", 1),
                                         ("max_height", 1 << 17), ("bits", 8.0)])
def test_params_rejected(name: str, value):
    with pytest.raises(ValueError, match=f"^{name} must be (an integer|in \\d+\\.\\.\\d+), got"):
        MaxPoolParams(**{name: value})
