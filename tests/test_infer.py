"""host.infer: the golden backend end to end, input checks, backend URLs, trace comparison, the run CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from host.compress.model import fc_forward
from host.infer import LAYERS, compare_traces, load_model, open_backend
from host.train.data import load_mnist

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "lenet5_full.npz"


@pytest.fixture(scope="module")
def model():
    return load_model(MODEL)


@pytest.fixture(scope="module")
def test_split():
    _, _, x, y = load_mnist()
    return x, y


@pytest.fixture(scope="module")
def traced(model, test_split):
    with open_backend("golden", model) as session:
        return session.run(test_split[0][:12], trace=True)


def test_trace_shapes_and_consistency(model, traced):
    layers = traced.layers
    assert list(layers) == list(LAYERS)
    shapes = {"conv1": (12, 6, 28, 28), "pool1": (12, 6, 14, 14), "conv2": (12, 16, 10, 10),
              "pool2": (12, 16, 5, 5), "fc1": (12, 120), "fc2": (12, 84), "fc3": (12, 10)}
    assert {k: v.shape for k, v in layers.items()} == shapes
    assert traced.logits.dtype == np.int8 and np.array_equal(traced.logits, layers["fc3"])
    np.testing.assert_array_equal(traced.predictions, traced.logits.argmax(1))
    for name in ("conv1", "conv2", "fc1", "fc2"):  # ReLU layers
        assert layers[name].min() >= 0 and layers[name].max() <= 127
    # The FC part is the model's own fc_forward on the pooled codes (flattened channel-major).
    np.testing.assert_array_equal(fc_forward(model.fc, layers["pool2"])[-1], layers["fc3"])


def test_int8_codes_and_single_images(model, test_split, traced):
    from host.compress.model import quantize_input

    codes = quantize_input(test_split[0][:12]).astype(np.int8)
    with open_backend("golden://", model) as session:
        np.testing.assert_array_equal(session.run(codes).logits, traced.logits)
        np.testing.assert_array_equal(session.run(codes[3]).logits, traced.logits[3:4])


@pytest.mark.parametrize("x, message", [
    (np.zeros((2, 28, 28), np.float32), r"float images must have shape \(N, 1, 28, 28\)"),
    (np.zeros((2, 1, 32, 32), np.float64), r"float images must have shape \(N, 1, 28, 28\)"),
    (np.full((1, 1, 28, 28), 2.0, np.float32), r"values in \[0, 1\]"),
    (np.zeros((2, 3, 28, 28), np.int8), r"int8 codes must have shape \(N, 1, 28, 28\) or \(1, 28, 28\)"),
    (np.zeros((1, 1, 28, 28), np.int32), r"got dtype int32"),
])
def test_bad_input_is_one_line_naming_shape_and_dtype(model, x, message):
    session = open_backend("golden", model)
    with pytest.raises(ValueError, match=message) as info:
        session.run(x)
    assert "\n" not in str(info.value)


def test_backend_urls(model):
    for url in ("tcp://127.0.0.1:4567", "serial:///dev/ttyUSB1?baud=115200"):
        scheme = url.split(":")[0]
        with pytest.raises(NotImplementedError, match=f"backend {scheme}:// is not implemented yet"):
            open_backend(url, model)
    with pytest.raises(ValueError, match="unknown backend 'http://x'"):
        open_backend("http://x", model)


def test_compare_traces_finds_the_first_planted_mismatch(traced):
    a = traced.layers
    assert compare_traces(a, {k: v.copy() for k, v in a.items()}) is None
    b = {k: v.copy() for k, v in a.items()}
    b["fc1"][5, 17] += 1
    b["fc3"][0, 0] += 1  # a later layer differs too: the first one in layer order is reported
    assert compare_traces(a, b) == {"layer": "fc1", "index": (5, 17), "a": int(a["fc1"][5, 17]),
                                    "b": int(a["fc1"][5, 17]) + 1}
    c = {k: v.copy() for k, v in a.items()}
    c["pool1"][2, 3, 4, 5] -= 1
    assert compare_traces(a, c)["layer"] == "pool1" and compare_traces(a, c)["index"] == (2, 3, 4, 5)
    assert compare_traces(a, {k: v for k, v in a.items() if k != "conv2"}) == {"layer": "conv2", "missing": "b"}
    d = dict(a, fc2=a["fc2"][:3])
    assert compare_traces(a, d)["shape_b"] == (3, 84)


def test_run_cli_prints_accuracy_and_count():
    out = subprocess.run([sys.executable, "-m", "host", "run", "--model", str(MODEL), "--backend", "golden",
                          "--count", "20"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["count"] == 20 and 0.8 <= summary["accuracy"] <= 1.0
    bad = subprocess.run([sys.executable, "-m", "host", "run", "--model", str(MODEL), "--backend", "tcp://h:1"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 1 and "tcp:// is not implemented yet" in bad.stderr


@pytest.mark.slow
def test_golden_accuracy_on_the_test_split_equals_the_stored_one(model, test_split):
    x, y = test_split
    with open_backend("golden", model) as session:
        predictions = session.run(x).predictions
    assert float(np.mean(predictions == y)) == model.metadata["test_accuracy"]["golden_fixed"]
