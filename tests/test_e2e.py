"""End to end: MNIST test images through the RTL simulation of the whole accelerator (the virtual board of
`python -m sim.server --config lenet5`), bit-exact with the golden backend at every layer; bad input from the
host, each refused with a clear error and followed by a good inference on the same connection.

The virtual board serves one client, so one test holds the whole conversation. A traced image costs about
twice an untraced one (the conv layers run again with the pool off, for conv1 and conv2 unpooled).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from host.accel import pack_model
from host.compress.spectral import schedule_layer
from host.device import Device, DeviceError
from host.infer import (
    ConfigMismatch,
    DeviceBackend,
    Session,
    SessionOrderError,
    compare_traces,
    load_model,
    open_backend,
)
from host.lenet5.compressed import save_model
from host.mnist import load_mnist
from hw.config import AcceleratorConfig
from hw.spec.protocol import Status
from sim.server import start

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "lenet5_full.npz"
#: Seconds per device answer: one RUN of the whole network simulates about 49 000 cycles.
TIMEOUT = 600


@pytest.fixture(scope="module")
def model():
    return load_model(MODEL)


@pytest.fixture(scope="module")
def images():
    _, _, x, y = load_mnist()
    return x[:4], y[:4]


@pytest.fixture
def lenet5_board():
    with start("--config", "lenet5") as board:
        yield board


class SmallBuffers:
    """The device as seen through an INFO whose activation buffers hold 1 000 values (too few for pool1's 1 176)."""

    def __init__(self, device: Device):
        self.device = device

    def info(self) -> dict:
        info = self.device.info()
        return {**info, "regions": [{**r, "depth": 1000} if r["name"] in ("act0", "act1") else r
                                    for r in info["regions"]]}


def traced_image_matches(session: Session, golden: dict, x: np.ndarray, i: int) -> None:
    result = session.run(x[i:i + 1], trace=True)
    assert compare_traces({k: v[i:i + 1] for k, v in golden.items()}, result.layers) is None


def test_mnist_through_the_virtual_board_bit_exact_at_every_layer(lenet5_board, model, images, tmp_path):
    x, y = images
    golden = open_backend("golden", model).run(x, trace=True)
    conv2 = model.conv2
    other = dataclasses.replace(model, conv2=dataclasses.replace(
        conv2, schedule=schedule_layer(conv2.counts, conv2.index, p=2, b=8)))
    save_model(tmp_path / "two_lanes.npz", other)

    with Device.open(lenet5_board.url, timeout=TIMEOUT) as dev:
        # A command out of order: RUN before any program is loaded. The device refuses it.
        with pytest.raises(DeviceError) as refused:
            dev.run(0, 5)
        assert refused.value.status == Status.OUT_OF_RANGE

        # A model file for another configuration (conv2 scheduled for 2 MAC lanes), and a layer larger than the
        # buffers: both refused on INFO alone, before anything is loaded.
        with pytest.raises(ConfigMismatch, match=r"^model file for another configuration: layer pool2: layer "
                                                 r"schedule \(p, b\) must be \(4, 8\), got \(2, 8\)$"):
            DeviceBackend(dev, load_model(tmp_path / "two_lanes.npz"))
        with pytest.raises(ConfigMismatch, match=r"layer pool1: the layer's output \(1176 values\) does not fit an "
                                                 r"activation buffer of 1000"):
            DeviceBackend(SmallBuffers(dev), model)

        # Running before loading is refused on the host; then the first good image, traced.
        backend = DeviceBackend(dev, model, name=lenet5_board.url, load=False)
        session = Session(backend, model)
        with pytest.raises(SessionOrderError, match="run before load"):
            session.run(x[:1])
        backend.load()
        traced_image_matches(session, golden.layers, x, 0)

        # Wrong shape and dtype: refused on the host.
        for bad, message in ((x[:1, 0], r"shape \(N, 1, 28, 28\)"), (x[:1].astype(np.int32), "dtype int32"),
                             (np.zeros((1, 1, 32, 32), np.int8), r"got \(1, 1, 32, 32\)")):
            with pytest.raises(ValueError, match=message):
                session.run(bad)
        traced_image_matches(session, golden.layers, x, 1)

        # A LOAD the device refuses (past the end of a region) writes nothing: the next images still match.
        scale = backend.plan.accel.regions["fc.scale"]
        with pytest.raises(DeviceError) as refused:
            dev.load(scale.id, scale.depth - 1, bytes(2 * scale.bytes))
        assert refused.value.status == Status.OUT_OF_RANGE
        traced_image_matches(session, golden.layers, x, 2)
        result = session.run(x[3:4])
        np.testing.assert_array_equal(result.logits, golden.logits[3:4])

    # A traced image runs each descriptor in a RUN of its own, so conv2 cannot load while conv1 computes, as it
    # does in the one RUN of an untraced image. Both within 1 % of the cycle models.
    cycles, layers = session.cycles, backend.plan.packed.layers
    alone, chained = sum(layer.first_cycles for layer in layers), sum(layer.cycles for layer in layers)
    assert len(cycles) == 4 and cycles[0] == cycles[1] == cycles[2] and chained < 0.85 * alone
    assert abs(cycles[0] - alone) <= 0.01 * alone and abs(cycles[3] - chained) <= 0.01 * chained, (cycles, alone,
                                                                                                   chained)
    print(f"LeNet-5 on the virtual board: {cycles} cycles per image; predictions {golden.predictions} "
          f"(labels {y})")


def test_run_cli_on_the_virtual_board(lenet5_board):
    out = subprocess.run([sys.executable, "-m", "host", "run", "--model", str(MODEL), "--backend", lenet5_board.url,
                          "--count", "2", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["count"] == 2 and summary["agreement"] == 1.0 and summary["bit_exact"] == 1.0
    # The RTL's cycles (13 480, README) within 1 % of the cycle model's, conv2 and fc1 loading behind the layer before.
    model = sum(layer.cycles for layer in pack_model(AcceleratorConfig.lenet5().describe(), load_model(MODEL)).layers)
    assert 12_000 <= model <= 16_000 and abs(summary["cycles_per_image"] - model) <= 0.01 * model, model
    at_clock = summary["bandwidth_at_clock"]
    # The lenet5 config runs at 50 MHz on the ULX3S (its PLL from the 25 MHz oscillator), as INFO says.
    assert at_clock["clock_hz"] == 50e6 and at_clock["link_bits_per_s"] == 115_200
    assert at_clock["decoded_weights_per_s"] == round(61_470 * 50e6 / summary["cycles_per_image"])
    assert "2/2 images" in out.stderr
