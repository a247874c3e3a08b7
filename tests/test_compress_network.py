"""host.compress.network: post-training compression of any float network into a compressed network, held to the
float network's own forward pass (host.network.ir) within bounds derived from the quantization."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from host.compress.network import STAGES, advice, choose_geometry, compress_network, plan
from host.network import Conv2d, Flatten, FloatNetwork, Linear, MaxPool2d, NetworkError, ReLU
from hw.spec.fc_format import DEFAULT_FC_FORMAT
from hw.spec.network import ConvLayer, PoolLayer, load_model, model_fields, save_model
from hw.spec.spectral.operator import spectral_conv_float


def _mlp(seed: int = 0) -> FloatNetwork:
    rng = np.random.default_rng(seed)
    return FloatNetwork((64,), (Linear("fc1", rng.normal(0, 64 ** -0.5, (32, 64)), rng.normal(0, 0.1, 32)),
                                ReLU("relu1"),
                                Linear("fc2", rng.normal(0, 32 ** -0.5, (10, 32)), rng.normal(0, 0.1, 10))))


def _cnn(seed: int = 0) -> FloatNetwork:
    """1 -> 4 -> 8 channels on 12 x 12: a 3 x 3 "same" conv whose ReLU comes after its pooling, a 5 x 5 "valid" one,
    and ONNX-like names."""
    rng = np.random.default_rng(seed)
    return FloatNetwork((1, 12, 12), (
        Conv2d("/conv1/Conv", rng.normal(0, 1 / 3, (4, 1, 3, 3)), rng.normal(0, 0.05, 4), "same"),
        MaxPool2d("/pool1/MaxPool"), ReLU("/relu1/Relu"),
        Conv2d("/conv2/Conv", rng.normal(0, 0.1, (8, 4, 5, 5)), rng.normal(0, 0.05, 8), "valid"),
        ReLU("/relu2/Relu"), Flatten("/Flatten"),
        Linear("/fc/Gemm", rng.normal(0, 32 ** -0.5, (10, 32)), rng.normal(0, 0.1, 10))))


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(1)
    return rng.random((200, 64)).astype(np.float32), rng.random((200, 1, 12, 12)).astype(np.float32)


@pytest.fixture(scope="module")
def mlp(samples):
    return compress_network(_mlp(), samples[0], fc_sparsity=0.25, fc_bits=2).model


@pytest.fixture(scope="module")
def cnn(samples):
    """Conv bins unpruned (so the float network's own convolution is the reference), FC pruned."""
    return compress_network(_cnn(), samples[1], conv_sparsity=0.0, fc_sparsity=0.25).model


def test_geometry_follows_the_engine():
    assert [(o.n, o.l) for o in (choose_geometry(k, "same") for k in (1, 3, 5, 7, 9))] == \
        [(8, 8), (8, 6), (8, 4), (16, 10), (16, 8)]
    assert choose_geometry(3, "valid", n=4).l == 2
    with pytest.raises(ValueError, match="n must be a power of two"):
        choose_geometry(3, "same", n=12)
    with pytest.raises(ValueError, match="needs an FFT size n >= 5"):
        choose_geometry(5, "same", n=4)


def test_plan_fuses_relus_and_names_fields():
    steps = plan(_cnn())
    assert [(s.kind, s.name, s.relu, s.float_name) for s in steps] == [
        ("conv", "conv1_Conv", True, None), ("pool", "pool1_MaxPool", False, "/relu1/Relu"),
        ("conv", "conv2_Conv", True, "/relu2/Relu"), ("flatten", "Flatten", False, "/Flatten"),
        ("fc", "fc_Gemm", False, "/fc/Gemm")]
    with pytest.raises(NetworkError, match="'r' \\(ReLU\\): sqgen fuses a ReLU"):
        plan(FloatNetwork((1, 4, 4), (MaxPool2d("p"), ReLU("r"))))


def _fc_bound(layer, x_codes: np.ndarray) -> np.ndarray:
    """Per sample, the most a golden FC output code can differ from the float layer (dense weights, real input)
    clipped to int8: 1/2 of the output's round half up, plus per plane alpha's rounding to a (1/2 LSB of 2^shift,
    times sum |x|) and the bias's (1/2 of 2^-shift)."""
    total = np.abs(x_codes).sum(axis=1, keepdims=True)
    return 0.5 + 2.0 ** -layer.shift * (0.5 * layer.bits * total + 0.5) + 1e-3


def test_mlp_golden_within_the_quantization_bound_of_the_float_layers(mlp, samples):
    x = samples[0]
    codes = mlp.quantize(x)
    trace = mlp.forward(codes, trace=True)
    h = codes
    for layer in mlp.layers:
        float_layer = Linear(layer.name, layer.dense(), layer.bias)
        y = float_layer.forward(h.astype(np.float64) * layer.in_scale) / layer.out_scale
        y = np.clip(np.maximum(y, 0) if layer.relu else y, -128, 127)
        assert (np.abs(trace[layer.name] - y) <= _fc_bound(layer, h)).all()
        h = trace[layer.name]
    assert trace["fc2"].dtype == np.int64 and trace["fc2"].shape == (200, 10)


def test_cnn_golden_within_the_quantization_bound_of_the_float_layers(cnn, samples):
    """Each conv layer against the float network's convolution on the same (dequantized) input codes: 1/2 LSB of
    output rounding plus the datapath's error (int16 spectral weights, the FFTs' roundings: canvas SQNR above
    55 dB, docs/formats.md, well under 1/2 LSB at this scale on average and under 1 LSB at worst)."""
    x = samples[1]
    net = _cnn()
    codes = cnn.quantize(x)
    trace = cnn.forward(codes, trace=True)
    inputs = (codes, trace["pool1_MaxPool"])
    for layer, float_layer, h in zip(cnn.conv_layers(), (net.layers[0], net.layers[3]), inputs, strict=True):
        q = layer.spectral.quant
        y = float_layer.forward(h.astype(np.float64) * q.in_scale) / q.out_scale
        y = np.clip(np.maximum(y, 0), -128, 127)  # both convs have a ReLU fused
        error = np.abs(trace[layer.name] - y)
        assert error.max() <= 1.5 and error.mean() <= 0.35
    fc = cnn.fc_layers()[0]
    features = trace["Flatten"]
    y = np.clip(Linear("fc", fc.dense(), fc.bias).forward(features * fc.in_scale) / fc.out_scale, -128, 127)
    assert (np.abs(trace[fc.name] - y) <= _fc_bound(fc, features)).all()
    # End to end against the float network with the compressed FC weights: the errors compound (each layer's
    # rounding reaches the next through its weights) but stay within an output code on average.
    reference = FloatNetwork(net.input_shape, (*net.layers[:-1], Linear("fc", fc.dense(), fc.bias)))
    logits = reference.forward(cnn.quantize(x) * cnn.input_scale) / fc.out_scale
    golden = trace[fc.name]
    assert np.abs(golden - logits).mean() <= 1.0
    assert (golden.argmax(axis=1) == logits.argmax(axis=1)).mean() >= 0.9


def test_pruned_conv_follows_its_spectral_operator(samples):
    model = compress_network(_cnn(), samples[1][:50], conv_sparsity=0.5, fc_sparsity=0.0).model
    conv = model.conv_layers()[0]
    assert abs(1 - conv.spectral.density() - 0.5) < 0.05
    codes = model.quantize(samples[1][:50])
    q = conv.spectral.quant
    y = np.clip(spectral_conv_float(codes * q.in_scale, conv.spectral) / q.out_scale, -128, 127)
    error = np.abs(model.forward(codes, trace=True)[conv.name] - y)
    assert error.max() <= 1.5 and error.mean() <= 0.35


def test_round_trip_bit_for_bit(mlp, cnn, samples, tmp_path):
    for model, x in ((mlp, samples[0]), (cnn, samples[1])):
        path = tmp_path / "net.npz"
        save_model(path, model)
        loaded = load_model(path)
        a, b = model_fields(model), model_fields(loaded)
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
        codes = model.quantize(x)
        for name, out in model.forward(codes, trace=True).items():
            np.testing.assert_array_equal(loaded.forward(codes, trace=True)[name], out)
        assert loaded.metadata == model.metadata and loaded.shapes == model.shapes


def test_layers_and_metadata(cnn):
    assert cnn.names == ("conv1_Conv", "pool1_MaxPool", "conv2_Conv", "Flatten", "fc_Gemm")
    assert cnn.shapes == ((4, 12, 12), (4, 6, 6), (8, 2, 2), (32,), (10,))
    assert isinstance(cnn.layers[0], ConvLayer) and isinstance(cnn.layers[1], PoolLayer)
    geometry = [(c.spectral.oaa.n, c.spectral.oaa.k, c.spectral.oaa.l, c.spectral.oaa.padding) for c in
                cnn.conv_layers()]
    # One engine geometry (the largest kernel's): the 3 x 3 "same" kernel embedded in 5 x 5.
    assert geometry == [(8, 5, 4, "same"), (8, 5, 4, "valid")]
    assert cnn.metadata["conv_engine"] == [8, 5, 4] and cnn.metadata["conv_kernels"] == {"conv1_Conv": 3,
                                                                                       "conv2_Conv": 5}
    assert [c.spectral.relu for c in cnn.conv_layers()] == [True, True] and not cnn.fc_layers()[0].relu
    assert cnn.fmt == DEFAULT_FC_FORMAT and cnn.fc_layers()[0].bits == DEFAULT_FC_FORMAT.max_planes
    assert cnn.metadata["float_layers"]["pool1_MaxPool"] == "/relu1/Relu"
    assert cnn.metadata["accuracy"] == dict.fromkeys(STAGES)  # no test samples given
    assert cnn.dense_weights() == {"conv1_Conv": 100, "conv2_Conv": 800, "fc_Gemm": 320, "all": 1220}  # as run


def test_accuracy_per_stage_and_the_advice(samples):
    """Labels from the float network itself: its accuracy is 1 and each stage's shows what it lost."""
    net = _mlp()
    x = samples[0]
    y = net.forward(x).argmax(axis=1)
    result = compress_network(net, x[:100], x[100:], y[100:], fc_sparsity=0.0)
    acc = result.accuracy
    assert list(acc) == list(STAGES) and acc["float"] == acc["spectral"] == acc["pruned"] == 1.0
    assert acc["compressed"] >= 0.9 and result.model.metadata["accuracy"] == acc
    heavy = compress_network(net, x[:100], x[100:], y[100:], fc_sparsity=0.9, fc_bits=1)
    assert heavy.accuracy["compressed"] < 0.9
    assert heavy.message is not None and "try a lower sparsity (fc_sparsity 0.9 -> 0.45)" in heavy.message
    acc = {"float": 0.95, "spectral": 0.95, "pruned": 0.945, "compressed": 0.90}
    assert "quantization; try fc_bits 3" in advice(acc, 0.5, 0.25, 2, DEFAULT_FC_FORMAT, {"conv", "fc"})
    assert advice({**acc, "compressed": 0.94}, 0.5, 0.25, 2, DEFAULT_FC_FORMAT, {"fc"}) is None


def test_refusals(samples):
    with pytest.raises(ValueError, match="fc_sparsity must be in"):
        compress_network(_mlp(), samples[0], fc_sparsity=1.0)
    with pytest.raises(ValueError, match="bits must be in 1..4"):
        compress_network(_mlp(), samples[0], fc_bits=5)
    with pytest.raises(ValueError, match="x_train must be real samples"):
        compress_network(_mlp(), samples[1])


def test_no_torch_on_this_path():
    code = ("import sys, numpy as np; from host.compress.network import compress_network; "
            "from host.network import FloatNetwork, Linear; "
            "net = FloatNetwork((8,), (Linear('fc', np.ones((4, 8))),)); "
            "compress_network(net, np.random.default_rng(0).random((20, 8))); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
