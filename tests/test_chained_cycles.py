"""`hw.spec.spectral.engine.chained_cycles`, the cycle model of a conv layer loading behind the conv layer before it
in one RUN, on the committed LeNet-5's layers and the `lenet5` engine: what it may hide and what it cannot. (Its
figures against the RTL: `tests/test_accel_fc_rtl.py`, `tests/test_e2e.py`.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from host.infer import as_network, load_model
from hw.config import AcceleratorConfig
from hw.spec.spectral.engine import chained_cycles, layer_cycles

MODEL = Path(__file__).resolve().parents[1] / "models" / "lenet5_full.npz"
ENGINE = AcceleratorConfig.lenet5().conv.describe()


@pytest.fixture(scope="module")
def convs():
    return [layer.spectral for layer in as_network(load_model(MODEL, expected=None)).layers if layer.kind == "conv"]


def test_behind_a_long_layer_most_of_the_lead_is_hidden(convs):
    """conv2 behind conv1 (28 x 28, its six channels in two blocks of four paths, both pooled as in LeNet-5's
    program): conv2's input maps load while conv1 computes, the last as conv1's last block writes it; what is left
    after conv1 is conv2's compute and its latency past the forward FFT, which nothing hides, and at most a small
    part of its lead (the 3 200 cycles it waits alone)."""
    conv1, conv2 = convs
    alone = layer_cycles(ENGINE, conv2, 14, 14, valid_as_crop=True, pool=True)
    floor = alone["compute"] + alone["latency"] - 4 * 14 - ENGINE["forward_latency"]
    chained = chained_cycles(ENGINE, (conv1, 28, 28), (conv2, 14, 14), valid_as_crop=True, pools=(True, True))
    assert floor <= chained < floor + alone["lead"] / 4 < alone["single"]


def test_behind_a_short_layer_the_load_shows(convs):
    """conv1 on a 4 x 4 map computes in a few hundred cycles, far less than conv2's six maps of 16 tiles take to
    load: conv2 then waits for most of its lead after conv1's end, but never more than alone."""
    conv1, conv2 = convs
    alone = layer_cycles(ENGINE, conv2, 14, 14, valid_as_crop=True)
    short = layer_cycles(ENGINE, conv1, 4, 4, valid_as_crop=True)
    chained = chained_cycles(ENGINE, (conv1, 4, 4), (conv2, 14, 14), valid_as_crop=True)
    assert short["compute"] < alone["lead"] / 4
    assert alone["single"] - alone["lead"] < chained <= alone["single"]
    assert chained > chained_cycles(ENGINE, (conv1, 28, 28), (conv2, 14, 14), valid_as_crop=True) + 3000


def test_the_layers_must_chain(convs):
    conv1, conv2 = convs
    with pytest.raises(ValueError, match="the second layer reads 1 channels, the first gives 16"):
        chained_cycles(ENGINE, (conv2, 14, 14), (conv1, 28, 28), valid_as_crop=True)
