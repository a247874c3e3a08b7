"""`python -m sim.bench e2e`'s figures that need no simulation: what the conv layers keep busy."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.infer import as_network, load_model
from hw.config import CONFIGS
from sim.bench.e2e import conv_busy

MODEL = Path(__file__).resolve().parents[1] / "models" / "lenet5_full.npz"


def test_conv_busy_is_the_mac_s_groups_lanes_and_inverse_samples_over_the_measured_cycles():
    model = load_model(MODEL, expected=None)
    info = CONFIGS["lenet5"]().describe()
    measured = {"conv1": 14_000, "conv2": 16_000, "fc1": 1_500, "fc2": 400, "fc3": 100}
    busy = conv_busy(model, info, measured)
    conv1, conv2 = (layer.spectral for layer in as_network(model).layers if layer.kind == "conv")
    # The lenet5 engine: 8 x 8 transforms giving 4 x 4 output tiles, P = 4 lanes, four inverse paths. conv1's 28 x 28
    # map is 7 x 7 tiles; conv2's 14 x 14 input runs "same" (its "valid" output a crop of it): 4 x 4 tiles.
    assert busy["mac_dsps"] == 16 and busy["inverse_paths"] == 4
    for name, layer, tiles in (("conv1", conv1, 49), ("conv2", conv2, 16)):
        got, cycles = busy["layers"][name], measured[name]
        assert got["cycles"] == cycles
        assert got["mac_busy"] == pytest.approx(tiles * layer.schedule.groups.sum() / cycles, abs=5e-5)
        assert got["mac_lanes_busy"] == pytest.approx(tiles * layer.counts.sum() / (4 * cycles), abs=5e-5)
        assert got["inverse_paths_busy"] == pytest.approx(layer.c_out * tiles * 64 / (4 * cycles), abs=5e-5)
        # Padding in a group takes a lane but is no weight.
        assert 0 < got["mac_lanes_busy"] <= got["mac_busy"] < 1
    products = 49 * conv1.counts.sum() + 16 * conv2.counts.sum()
    assert busy["mac_lanes_busy_per_image"] == pytest.approx(products / (4 * 32_000), abs=5e-5)


def test_conv_busy_is_none_without_a_conv_engine():
    model = load_model(MODEL, expected=None)
    assert conv_busy(model, CONFIGS["fc_only"]().describe(), {"fc1": 1_500}) is None
