"""hw.spec.network: the compressed model of any network, its golden forward pass and its file; the committed
LeNet-5 as such a model, layer for layer the same integers as its own golden path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from host.compress.network import compress_network
from host.lenet5.compressed import load_model as load_lenet5
from host.lenet5.compressed import to_network
from host.network import Conv2d, Flatten, FloatNetwork, Linear, MaxPool2d, ReLU
from hw.spec.fc_format import DEFAULT_FC_FORMAT
from hw.spec.network import (
    FORMAT,
    CompressedNetwork,
    ConvLayer,
    FcFormatMismatch,
    FlattenLayer,
    ModelFormatError,
    PoolLayer,
    load_model,
    model_fields,
    save_model,
)

LENET5 = Path(__file__).resolve().parents[1] / "models" / "lenet5_full.npz"


@pytest.fixture(scope="module")
def lenet5():
    return load_lenet5(LENET5)


@pytest.fixture(scope="module")
def small():
    """A tiny CNN compressed on random samples: conv (3 x 3, same), pool, conv (3 x 3, valid), flatten, two FC."""
    rng = np.random.default_rng(0)
    net = FloatNetwork((1, 8, 8), (
        Conv2d("conv1", rng.normal(0, 1 / 3, (4, 1, 3, 3)), padding="same"), ReLU("relu1"), MaxPool2d("pool1"),
        Conv2d("conv2", rng.normal(0, 1 / 6, (8, 4, 3, 3)), rng.normal(0, 0.1, 8), "valid"), ReLU("relu2"),
        Flatten("flatten"), Linear("fc1", rng.normal(0, 1 / 8, (16, 32))), ReLU("relu3"),
        Linear("fc2", rng.normal(0, 1 / 4, (10, 16)), rng.normal(0, 0.1, 10))))
    x = rng.random((64, 1, 8, 8))
    return compress_network(net, x, name="small", dataset="random").model, x


@pytest.mark.cost(seconds=10)
def test_lenet5_as_a_network_gives_the_same_codes_at_every_layer(lenet5):
    from host.infer import GoldenBackend
    from host.lenet5.net import quantize_input
    from host.mnist import load_mnist

    net = to_network(lenet5)
    assert net.names == ("conv1", "pool1", "conv2", "pool2", "flatten", "fc1", "fc2", "fc3")
    assert net.shapes[-4:] == ((400,), (120,), (84,), (10,)) and net.input_shape == (1, 28, 28)
    assert net.input_scale == lenet5.input_scale and net.fmt == lenet5.fmt
    codes = quantize_input(load_mnist()[2][:200])
    np.testing.assert_array_equal(net.quantize(load_mnist()[2][:200]), codes)
    reference, _ = GoldenBackend(lenet5).run_layers(codes, trace=True)
    traced = net.forward(codes, trace=True, batch=64)  # batches change nothing
    for name, codes_out in reference.items():
        np.testing.assert_array_equal(traced[name], codes_out, err_msg=name)
    np.testing.assert_array_equal(traced["flatten"], traced["pool2"].reshape(200, -1))
    assert net.dense_weights()["all"] == 61470


def test_lenet5_round_trips_bit_for_bit(lenet5, tmp_path):
    net = to_network(lenet5)
    path = tmp_path / "lenet5.npz"
    save_model(path, net)
    loaded = load_model(path)
    a, b = model_fields(net), model_fields(loaded)
    assert a.keys() == b.keys() and str(a["format"]) == FORMAT
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
    assert loaded.metadata["converted_from"] == "sqgen-lenet5-full" and loaded.metadata["name"] == "lenet5"
    codes = np.random.default_rng(0).integers(0, 128, (3, 1, 28, 28))
    for name, out in net.forward(codes, trace=True).items():
        np.testing.assert_array_equal(loaded.forward(codes, trace=True)[name], out)


def _write(tmp_path: Path, fields: dict) -> Path:
    path = tmp_path / "bad.npz"
    with open(path, "wb") as f:
        np.savez(f, **fields)
    return path


def _kinds(f: dict, index: int, kind: str) -> None:
    kinds = f["kinds"].tolist()
    kinds[index] = kind
    f["kinds"] = np.array(kinds)


@pytest.mark.parametrize("change, message", [
    # wrong dtype
    (lambda f: f.update({"fc1/a": f["fc1/a"].astype(np.int32)}), "field 'fc1/a': expected int64"),
    (lambda f: f.update({"input_scale": np.float64(f["input_scale"])}), "field 'input_scale': expected a float32"),
    (lambda f: f.update({"conv2/re": f["conv2/re"].astype(np.int32)}), "field 'conv2/re': expected int16"),
    (lambda f: f.update({"layers": np.arange(6)}), "field 'layers': expected a non-empty 1-D array of strings"),
    # missing field
    (lambda f: f.pop("conv1/re"), "missing field 'conv1/re'"),
    (lambda f: f.pop("fc2/bias_q"), "missing field 'fc2/bias_q'"),
    (lambda f: f.pop("kinds"), "missing field 'kinds'"),
    (lambda f: f.pop("conv2/out_scale"), "missing field 'conv2/out_scale'"),
    # bad layer kind, bad names
    (lambda f: _kinds(f, 1, "avgpool"), "field 'kinds': layer 1 ('pool1') has kind 'avgpool'"),
    (lambda f: f.update({"kinds": f["kinds"][:-1]}), "field 'kinds': 5 kinds for 6 layers"),
    (lambda f: f.update({"layers": np.array(["conv1", "pool1", "pool1", "flatten", "fc1", "fc2"])}),
     "field 'layers': a layer name is used twice"),
    (lambda f: f.update({"layers": np.array(["conv1", "a/b", "conv2", "flatten", "fc1", "fc2"])}),
     "field 'layers': layer name 'a/b' must match"),
    # the shape chain broken
    (lambda f: f.update({"input_shape": np.array([2, 8, 8])}), "field 'conv1/c_in': 1 input channels, the map "
                                                               "before has 2"),
    (lambda f: f.update({"input_shape": np.array([64])}), "field 'conv1/c_in': takes a (C_in=1, H, W) map"),
    (lambda f: f.update({"fc2/shape": np.array([10, 17])}), "field 'fc2/shape': (10, 17) takes (17,) features, "
                                                            "gets (16,)"),
    (lambda f: f.update({"layers": np.array(["conv1", "pool1", "conv2", "fc1", "flatten", "fc2"]),
                         "kinds": np.array(["conv", "pool", "conv", "fc", "flatten", "fc"])}),
     "field 'fc1/shape': (16, 32) takes (32,) features, gets (8, 2, 2); a flatten must come before it"),
    (lambda f: f.update({"input_shape": np.array([1, 2, 2])}), "field 'conv2/k': 'valid' padding needs a map"),
    # scales that do not chain
    (lambda f: f.update({"conv2/in_scale": np.float32(0.5)}), "field 'conv2/in_scale': 0.5 differs from the scale "
                                                              "of its input codes (conv1/out_scale)"),
    (lambda f: f.update({"fc1/in_scale": np.float32(0.5)}), "field 'fc1/in_scale'"),
    # the rest of the file
    (lambda f: f.update({"format": np.array("sqgen-lenet5-full")}), "field 'format': expected 'sqgen-net'"),
    (lambda f: f.update({"version": np.int64(2)}), "field 'version': unknown version 2"),
    (lambda f: f.update({"metadata": np.array("[1]")}), "field 'metadata': expected a JSON object"),
    (lambda f: f.update({"fc1/p": f["fc1/p"][:-1]}), "field 'fc1/p'"),
    (lambda f: f.update({"fc_format/m": np.zeros_like(f["fc_format/m"])}), "field 'fc_format/m'"),
    (lambda f: f.update({"conv1/kernel_size": np.int64(4)}), "field 'conv1/kernel_size': must be an integer in 1..3"),
    (lambda f: f.update({"conv2/kernel_size": np.int64(2)}), "field 'conv2/kernel_size': a 'valid' layer keeps its "
                                                             "own kernel size k=3, got 2"),
    (lambda f: f.update({"conv1/kernel_size": np.float32(2)}), "field 'conv1/kernel_size': expected an integer"),
    # what the golden datapath holds
    (lambda f: f.update({"conv1/out_mult": np.int64(1 << 16)}), "field 'conv1/out_mult': out_mult=65536 does not "
                                                                "fit mult_bits=16"),
    (lambda f: f.update({"conv2/bias_q": np.full(8, 1 << 40)}), "field 'conv2/bias_q': bias_q must be below 2^"),
])
def test_malformed_files_are_rejected_naming_the_field(small, tmp_path, change, message):
    fields = model_fields(small[0])
    change(fields)
    path = _write(tmp_path, fields)
    with pytest.raises(ModelFormatError) as info:
        load_model(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


def test_a_smaller_kernel_embedded_counts_its_own_dense_weights(small, tmp_path):
    """A conv layer stores the size of the kernels it stands for: a 2 x 2 "same" kernel embedded in the 3 x 3
    geometry counts 4 dense weights per kernel; a file without the field (older ones) gives the layer's own k."""
    model, _ = small
    conv1 = model.layers[0]
    assert conv1.kernel_size == 3 and model.dense_weights()["conv1"] == 4 * 1 * 9
    embedded = dataclasses.replace(model, layers=(ConvLayer("conv1", conv1.spectral, 2), *model.layers[1:]))
    assert embedded.dense_weights()["conv1"] == 4 * 1 * 4
    assert embedded.dense_weights()["all"] == model.dense_weights()["all"] - 4 * 5
    save_model(tmp_path / "embedded.npz", embedded)
    loaded = load_model(tmp_path / "embedded.npz")
    assert [c.kernel_size for c in loaded.conv_layers()] == [2, 3]
    fields = model_fields(embedded)
    assert fields["conv1/kernel_size"] == 2 and fields["conv1/kernel_size"].dtype == np.int64
    del fields["conv1/kernel_size"], fields["conv2/kernel_size"]
    assert [c.kernel_size for c in load_model(_write(tmp_path, fields)).conv_layers()] == [3, 3]


def test_a_pool_for_the_flatten_is_a_broken_chain(small, tmp_path):
    fields = model_fields(small[0])
    _kinds(fields, 3, "pool")
    with pytest.raises(ModelFormatError, match=r"field 'fc1/shape': \(16, 32\) takes \(32,\) features, gets "
                                               r"\(8, 1, 1\)"):
        load_model(_write(tmp_path, fields))


def test_a_file_for_another_fc_format_is_rejected(small, tmp_path):
    fields = model_fields(small[0])
    fields["fc_format/n_in"] = np.int64(7)
    with pytest.raises(FcFormatMismatch, match="another FC configuration.*n_in: 7 != 6"):
        load_model(_write(tmp_path, fields))


def test_construction_checks_the_chain(small):
    model, x = small
    layers = model.layers
    with pytest.raises(ModelFormatError, match="field 'layers': layer name 'conv1' is used twice"):
        CompressedNetwork(model.input_shape, model.input_scale, (*layers, layers[0]))
    with pytest.raises(ModelFormatError, match="field 'input_scale': 0.25 differs|field 'conv1/in_scale'"):
        CompressedNetwork(model.input_shape, 0.25, layers)
    with pytest.raises(ModelFormatError, match="field 'input_shape'"):
        CompressedNetwork((1, 8), model.input_scale, layers)
    with pytest.raises(ModelFormatError, match="field 'fc_format'|field 'fc1/fmt'"):
        CompressedNetwork(model.input_shape, model.input_scale, layers,
                          dataclasses.replace(DEFAULT_FC_FORMAT, max_patches=8))
    pooled = CompressedNetwork(model.input_shape, model.input_scale, (PoolLayer("p"), FlattenLayer("f")))
    assert pooled.shapes == ((1, 4, 4), (16,)) and pooled.batch_size() > 1
    codes = model.quantize(x)
    assert model.forward(codes)["fc2"].shape == (64, 10) and list(model.forward(codes)) == ["fc2"]
    assert model.forward(codes[:0], trace=True)["pool1"].shape == (0, 4, 4, 4)
    with pytest.raises(ValueError, match="codes must be in -128..127"):
        model.forward(codes + 200)
    with pytest.raises(ValueError, match=r"codes must be integers of shape \(N, 1, 8, 8\)"):
        model.forward(x)
    assert model.metadata["name"] == "small" and model.metadata["dataset"] == "random"
