"""`Crop` in RTL against NumPy slicing, under cocotb (random gaps and backpressure), and the crop identity the
accelerator relies on: a "valid" SPEC2 layer is its "same" twin's output cropped at (k - 1) // 2."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from host.compress.spectral import calibrate, compress_spatial
from hw.layouts import pack
from hw.pool import Crop, CropParams
from hw.spec.spectral.fixed import spectral_conv_fixed
from hw.spec.spectral.geometry import OaaParams
from sim import runner

# (channels, height, width, top, left, out_height, out_width): LeNet's conv2 crop, the whole map, one sample,
# a window touching the bottom-right corner, a window cut at the map's edge, single-row and single-column maps.
CASES = [(16, 14, 14, 2, 2, 10, 10), (3, 5, 7, 0, 0, 5, 7), (2, 4, 4, 3, 1, 1, 1), (4, 9, 6, 4, 2, 5, 4),
         (2, 6, 6, 3, 4, 5, 5), (3, 1, 8, 0, 2, 1, 3), (2, 7, 1, 1, 0, 4, 1)]


def streams(params: CropParams, cases: list[tuple[int, ...]], rng: np.random.Generator) -> dict:
    """Every layer's cfg beat, samples and expected window samples, as hex words."""
    cfg, samples, expected = [], [], []
    mask = (1 << params.bits) - 1
    lim = 1 << (params.bits - 1)
    for c, h, w, top, left, oh, ow in cases:
        x = rng.integers(-lim, lim, (c, h, w))
        cfg.append(pack(params.cfg_layout, {"height": h, "width": w, "channels": c, "top": top, "left": left,
                                            "out_height": oh, "out_width": ow}))
        samples += [int(v) & mask for v in x.reshape(-1)]
        expected += [int(v) & mask for v in x[:, top:top + oh, left:left + ow].reshape(-1)]
    return {"inputs": {"cfg": [f"{v:x}" for v in cfg], "i": [f"{v:x}" for v in samples]},
            "expected": [f"{v:x}" for v in expected]}


def test_crop_matches_slicing(tmp_path: Path):
    params = CropParams(max_height=14, max_width=14, max_channels=16)
    data = tmp_path / "crop.json"
    data.write_text(json.dumps({**streams(params, CASES, np.random.default_rng(3)), "gap_probability": 0.3,
                                "ready_probability": 0.6, "report": str(tmp_path / "cycles.json")}))
    runner.run(runner.build(Crop(params), "crop"), "sim.tb.streams", {"data": str(data)})


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_height": 0}, "max_height must be in 1"),
    ({"max_channels": True}, "max_channels must be an integer"),
    ({"bits": 0}, "bits must be in 1"),
])
def test_params_rejected(kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        CropParams(**kwargs)


@pytest.mark.parametrize(("k", "l", "hw"), [(5, 4, (14, 14)), (3, 6, (13, 11)), (4, 5, (9, 12))])
def test_valid_is_cropped_same(k: int, l: int, hw: tuple[int, int]):  # noqa: E741
    rng = np.random.default_rng(k)
    same = compress_spatial(rng.standard_normal((5, 3, k, k)), OaaParams(8, k, l, "same"), sparsity=0.75,
                            bias=rng.standard_normal(5), relu=True)
    same = calibrate(same, rng.integers(-128, 128, size=(4, 3, *hw)), in_scale=1 / 64)
    valid = dataclasses.replace(same, oaa=OaaParams(8, k, l, "valid"))
    x = rng.integers(-128, 128, size=(2, 3, *hw))
    s = (k - 1) // 2
    h_out, w_out = hw[0] - k + 1, hw[1] - k + 1
    assert np.array_equal(spectral_conv_fixed(x, valid), spectral_conv_fixed(x, same)[..., s:s + h_out, s:s + w_out])
