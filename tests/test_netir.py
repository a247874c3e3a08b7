"""host.network.ir: the float network's layers, shape inference and its refusals, the NumPy forward pass (the
direct convolution against a brute-force loop and, when torch is there, torch's conv2d), describe()."""

from __future__ import annotations

import json

import numpy as np
import pytest

from host.network import Conv2d, Flatten, FloatNetwork, Linear, MaxPool2d, NetworkError, ReLU


def _brute_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, padding: str) -> np.ndarray:
    """Cross-correlation by its definition, one output value at a time."""
    n, c_in, h, wd = x.shape
    c_out, _, k, _ = w.shape
    top = (k - 1) // 2 if padding == "same" else 0
    h_out, w_out = (h, wd) if padding == "same" else (h - k + 1, wd - k + 1)
    y = np.zeros((n, c_out, h_out, w_out))
    for s in range(n):
        for o in range(c_out):
            for r in range(h_out):
                for c in range(w_out):
                    total = b[o]
                    for i in range(c_in):
                        for u in range(k):
                            for v in range(k):
                                rr, cc = r + u - top, c + v - top
                                if 0 <= rr < h and 0 <= cc < wd:
                                    total += w[o, i, u, v] * x[s, i, rr, cc]
                    y[s, o, r, c] = total
    return y


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_conv_equals_the_definition(k, padding):
    rng = np.random.default_rng(k)
    x = rng.standard_normal((2, 2, 6, 7))
    w, b = rng.standard_normal((3, 2, k, k)), rng.standard_normal(3)
    conv = Conv2d("conv", w, b, padding)
    y = conv.forward(x)
    assert y.dtype == np.float64
    assert y.shape[1:] == conv.out_shape((2, 6, 7))
    np.testing.assert_allclose(y, _brute_conv(x, conv.weight, conv.bias, padding), rtol=1e-6, atol=1e-6)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("k, padding", [(3, "same"), (4, "same"), (5, "valid"), (2, "valid")])
def test_conv_equals_torch(k, padding):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 11, 9)).astype(np.float32)
    w, b = rng.standard_normal((5, 3, k, k)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), padding=padding)
    y = Conv2d("c", w, b, padding).forward(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref.numpy(), rtol=1e-4, atol=1e-4)


def _lenet() -> FloatNetwork:
    rng = np.random.default_rng(1)
    return FloatNetwork((1, 28, 28), [
        Conv2d("conv1", rng.standard_normal((6, 1, 5, 5)), rng.standard_normal(6), "same"), ReLU("relu1"),
        MaxPool2d("pool1"),
        Conv2d("conv2", rng.standard_normal((16, 6, 5, 5)), None, "valid"), ReLU("relu2"), MaxPool2d("pool2"),
        Flatten("flatten"),
        Linear("fc1", rng.standard_normal((120, 400)), rng.standard_normal(120)), ReLU("relu3"),
        Linear("fc2", rng.standard_normal((10, 120)))])


def test_shapes_forward_trace_and_describe():
    net = _lenet()
    assert net.shapes[:7] == ((6, 28, 28), (6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 10, 10), (16, 5, 5), (400,))
    assert net.output_shape == (10,)
    x = np.random.default_rng(2).random((3, 1, 28, 28), dtype=np.float32)
    trace = net.trace(x)
    assert list(trace) == [layer.name for layer in net.layers]
    assert all(trace[layer.name].shape == (3, *shape) for layer, shape in zip(net.layers, net.shapes))
    np.testing.assert_array_equal(net.forward(x), trace["fc2"])
    # the steps by hand: pooling drops nothing here, flattening is channel-major
    pooled = trace["relu2"].reshape(3, 16, 5, 2, 5, 2).max(axis=(3, 5))
    np.testing.assert_array_equal(trace["pool2"], pooled)
    np.testing.assert_array_equal(trace["flatten"], pooled.reshape(3, 400))
    fc1 = net.layer("fc1")
    np.testing.assert_allclose(trace["fc1"], pooled.reshape(3, 400) @ fc1.weight.T + fc1.bias, rtol=1e-5)
    assert net.forward(x.astype(np.float64)).dtype == np.float64

    described = json.loads(json.dumps(net.describe()))
    assert described["input_shape"] == [1, 28, 28] and described["output_shape"] == [10]
    assert described["parameters"] == 156 + 16 * 151 + 120 * 401 + 10 * 121 == net.parameters()  # absent bias: 0s
    assert described["layers"][3] == {"name": "conv2", "kind": "Conv2d", "in_shape": [6, 14, 14],
                                      "out_shape": [16, 10, 10], "c_in": 6, "c_out": 16, "k": 5, "padding": "valid",
                                      "parameters": 2416}
    assert described["layers"][1] == {"name": "relu1", "kind": "ReLU", "in_shape": [6, 28, 28],
                                      "out_shape": [6, 28, 28]}
    assert net.layer("conv2").bias.tolist() == [0.0] * 16
    with pytest.raises(KeyError, match="no layer 'fc9'; the layers are conv1, relu1"):
        net.layer("fc9")


def test_max_pool_drops_an_odd_edge_and_features_input():
    x = np.arange(2 * 5 * 7, dtype=np.float32).reshape(1, 2, 5, 7)
    net = FloatNetwork((2, 5, 7), [MaxPool2d("pool"), Flatten("flat")])
    assert net.shapes == ((2, 2, 3), (12,))
    np.testing.assert_array_equal(net.forward(x), x[:, :, 1:4:2, 1:6:2].reshape(1, 12))
    mlp = FloatNetwork([4], [Linear("fc", np.eye(3, 4)), ReLU("relu"), Flatten("flat")])
    np.testing.assert_array_equal(mlp.forward(np.array([[-1.0, 2.0, 3.0, 4.0]])), [[0.0, 2.0, 3.0]])


W3 = np.zeros((4, 3, 3, 3))


@pytest.mark.parametrize("input_shape, layers, message", [
    ((2, 8, 8), [Conv2d("conv1", W3)], r"layer 'conv1' \(Conv2d\): takes \(3, H, W\), gets \(2, 8, 8\)"),
    ((3, 8, 8), [Conv2d("c", W3), Linear("fc", np.zeros((2, 256)))],
     r"layer 'fc' \(Linear\): takes \(256,\) features, gets \(4, 8, 8\); a Flatten must come before it"),
    ((3, 8, 8), [Conv2d("c", W3), Flatten("f"), Linear("fc", np.zeros((2, 250)))],
     r"layer 'fc' \(Linear\): takes \(250,\) features, gets \(256,\)$"),
    ((3, 2, 8), [Conv2d("c", W3, padding="valid")], r"layer 'c' \(Conv2d\): a 'valid' 3 x 3 kernel needs a map of "
                                                     r"at least 3 x 3, gets 2 x 8"),
    ((3, 8, 1), [MaxPool2d("pool")], r"layer 'pool' \(MaxPool2d\): takes \(C, H, W\) with H, W >= 2, gets"),
    ((10,), [MaxPool2d("pool")], r"layer 'pool' \(MaxPool2d\)"),
    ((10,), [Conv2d("conv", W3)], r"layer 'conv' \(Conv2d\): takes \(3, H, W\), gets \(10,\)"),
    ((10,), [ReLU("a"), ReLU("a")], "layer 'a': the name is used twice"),
    ((10,), [], "at least one layer"),
    ((0, 4, 4), [ReLU("a")], "input_shape must be"),
    ((4, 4), [ReLU("a")], "input_shape must be"),
    ((2.5,), [ReLU("a")], "input_shape must be"),
    ((10,), ["relu"], "not a layer of this module"),
])
def test_shapes_that_do_not_chain_are_refused(input_shape, layers, message):
    with pytest.raises(NetworkError, match=message):
        FloatNetwork(input_shape, layers)


@pytest.mark.parametrize("make, message", [
    (lambda: Conv2d("c", np.zeros((4, 3, 3, 2))), r"layer 'c': weight must be \(c_out, c_in, k, k\) with a square"),
    (lambda: Conv2d("c", np.zeros((4, 3, 3))), "layer 'c': weight must be a 4-D real array"),
    (lambda: Conv2d("c", W3, np.zeros(3)), r"layer 'c': bias has shape \(3,\), expected \(4,\)"),
    (lambda: Conv2d("c", W3, padding="full"), "padding must be one of same, valid, got 'full'"),
    (lambda: Linear("fc", np.full((2, 2), np.nan)), "layer 'fc': weight holds NaN or infinite values"),
    (lambda: Linear("fc", np.zeros((2, 2), dtype=complex)), "layer 'fc': weight must be a 2-D real array"),
    (lambda: Linear("", np.zeros((2, 2))), "a layer's name must be a non-empty string"),
])
def test_bad_layers_are_refused(make, message):
    with pytest.raises(NetworkError, match=message):
        make()


def test_forward_checks_its_input_and_layers_own_their_weights():
    w = np.ones((2, 3))
    net = FloatNetwork((3,), [Linear("fc", w)])
    w[:] = 5  # the caller's array changes; the layer's copy does not
    np.testing.assert_array_equal(net.forward(np.ones((1, 3))), [[3.0, 3.0]])
    with pytest.raises(NetworkError, match=r"input must be a real array \(N, 3\), got float64 \(3,\)"):
        net.forward(np.ones(3))
