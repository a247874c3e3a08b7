"""Your own network through the RTL: a small CNN (1 -> 4 -> 8 channels, 5 x 5 "same" kernels, each pooled, then FC
392 -> 32 -> 10) compressed for the LeNet-5 accelerator's engines and run on its virtual board
(`sim.server --config lenet5`, Verilator), bit-exact with the golden backend at every layer, through the Python API
and through `python -m host run`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from host.compress.network import compress_network
from host.device import Device
from host.infer import DeviceBackend, Session, compare_traces, load_model, open_backend, trace_names
from host.mnist import load_mnist
from host.network import Conv2d, Flatten, FloatNetwork, Linear, MaxPool2d, ReLU
from hw.spec.network import save_model
from sim.server import start

pytestmark = [pytest.mark.slow, pytest.mark.cost(seconds=60)]

ROOT = Path(__file__).resolve().parents[1]
#: Seconds per device answer: one RUN simulates some 45 000 cycles.
TIMEOUT = 600


@pytest.fixture(scope="module")
def small_cnn(tmp_path_factory):
    """Random conv layers and hidden FC layer, the output layer fitted by ridge regression on MNIST's training
    split; compressed on 300 calibration images (the accuracy does not matter here, bit-exactness does)."""
    rng = np.random.default_rng(0)
    x_train, y_train, x_test, y_test = load_mnist()
    c1, c2 = rng.normal(0, 0.2, (4, 1, 5, 5)), rng.normal(0, 0.1, (8, 4, 5, 5))
    w1, b1 = rng.normal(0, 392 ** -0.5, (32, 392)), rng.normal(0, 0.1, 32)
    body = FloatNetwork((1, 28, 28), (Conv2d("conv1", c1), ReLU("relu1"), MaxPool2d("pool1"), Conv2d("conv2", c2),
                                      ReLU("relu2"), MaxPool2d("pool2"), Flatten("flatten"), Linear("fc1", w1, b1),
                                      ReLU("relu3")))
    features = np.c_[body.forward(x_train[:2000].astype(np.float64)), np.ones(2000)]
    solution = np.linalg.solve(features.T @ features + 10 * np.eye(33), features.T @ np.eye(10)[y_train[:2000]])
    net = FloatNetwork(body.input_shape, (*body.layers, Linear("fc2", solution[:-1].T, solution[-1])))
    # Two planes: four (the default) would need 3 478 fc.xor words, the accelerator holds 2 560.
    result = compress_network(net, x_train[:300], x_test[:200], y_test[:200], fc_sparsity=0.25, fc_bits=2,
                              name="small_cnn", dataset="mnist")
    path = tmp_path_factory.mktemp("board") / "small_cnn.npz"
    save_model(path, result.model)
    return path


def test_a_small_cnn_on_the_lenet5_board_bit_exact_at_every_layer(small_cnn):
    model = load_model(small_cnn)
    x = load_mnist()[2][:3]
    golden = open_backend("golden", model).run(x, trace=True)
    assert list(golden.layers) == list(trace_names(model)) == ["conv1", "pool1", "conv2", "pool2", "fc1", "fc2"]
    with start("--config", "lenet5", once=False) as board:
        with Device.open(board.url, timeout=TIMEOUT) as dev:
            session = Session(DeviceBackend(dev, model, name=board.url), model)
            assert [s.layer for s in session.backend.plan.trace] == list(trace_names(model))
            for i in range(2):
                traced = session.run(x[i:i + 1], trace=True)
                assert compare_traces({k: v[i:i + 1] for k, v in golden.layers.items()}, traced.layers) is None
            result = session.run(x[2:3])
            np.testing.assert_array_equal(result.logits, golden.logits[2:3])
            per_layer = session.layer_cycles(x[:1])
            assert list(per_layer) == ["conv1", "conv2", "fc1", "fc2"]
            # A traced image runs a RUN per descriptor; the last image one RUN, in which conv2 and fc1 load while
            # the conv layer before them computes.
            cycles, layers = session.cycles, session.backend.plan.packed.layers
            assert len(cycles) == 3 and cycles[0] == cycles[1] and cycles[2] < 0.9 * cycles[0]
            assert abs(sum(per_layer.values()) - cycles[0]) <= 0.01 * cycles[0]
            # RUN's wait comes from the engines' cycle models and INFO's per-descriptor overhead: each layer alone
            # and the one RUN within 1 % of the RTL's count.
            modelled = {name: out.first_cycles for name, out in zip(per_layer, layers)}
            assert all(abs(per_layer[k] - modelled[k]) <= 0.01 * modelled[k] for k in per_layer), \
                (per_layer, modelled)
            in_run = sum(out.cycles for out in layers)
            assert abs(cycles[2] - in_run) <= 0.01 * in_run, (cycles, in_run)
        out = subprocess.run([sys.executable, "-m", "host", "run", "--model", str(small_cnn), "--backend", board.url,
                              "--count", "2", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=900)
        board.stop()
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["data"] == "mnist" and summary["bit_exact"] == 1.0 and summary["agreement"] == 1.0
    assert list(summary["cycles_per_layer"]) == ["conv1", "conv2", "fc1", "fc2"]
    assert summary["bytes_loaded"]["input_per_sample"] == 784 and summary["bytes_loaded"]["output_per_sample"] == 10
    assert summary["layers"]["all"]["device_bits"] > 0
    print(f"small CNN on the lenet5 virtual board: {cycles} cycles per image, per layer {per_layer}")
