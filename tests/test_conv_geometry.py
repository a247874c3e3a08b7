"""One conv engine geometry per network (host.compress.network.engine_geometry): a smaller "same" kernel embedded
centred in the largest (exactly the same convolution), a smaller "valid" one on the engine's N and L with its own
crop; a network mixing 3 x 3 and 5 x 5 kernels compresses onto one geometry and its golden model stays within the
quantization's tolerance of the float network."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from host.compress.network import compress_network, embed_kernel, engine_geometry, layer_geometry
from host.compress.spectral import calibrate, compress_spatial
from host.network import Conv2d, Flatten, FloatNetwork, Linear, MaxPool2d, ReLU
from hw.config import AcceleratorConfig
from hw.spec.spectral.engine import check_layer_fits, crop_offset
from hw.spec.spectral.fixed import spectral_conv_fixed
from hw.spec.spectral.geometry import OaaParams

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("k0, k", [(1, 3), (1, 5), (2, 3), (3, 5), (4, 5), (5, 5), (3, 7), (6, 7)])
def test_a_same_kernel_embedded_centred_convolves_the_same(k0, k):
    w = RNG.normal(size=(3, 2, k0, k0))
    x = RNG.normal(size=(4, 2, 9, 7))
    small = Conv2d("small", w, padding="same")
    large = Conv2d("large", embed_kernel(w, k), padding="same")
    np.testing.assert_allclose(large.forward(x), small.forward(x), atol=1e-5)


def test_embedding_refuses_a_larger_kernel():
    with pytest.raises(ValueError, match="a 5 x 5 kernel does not embed centred in 3 x 3"):
        embed_kernel(np.zeros((1, 1, 5, 5)), 3)


def _mixed() -> FloatNetwork:
    """3 x 3 "same", 5 x 5 "same", 3 x 3 "valid" on 14 x 14, then an FC layer."""
    return FloatNetwork((1, 14, 14), (
        Conv2d("c3", RNG.normal(0, 1 / 3, (4, 1, 3, 3)), RNG.normal(0, 0.05, 4), "same"), ReLU("r1"),
        Conv2d("c5", RNG.normal(0, 0.1, (6, 4, 5, 5)), RNG.normal(0, 0.05, 6), "same"), ReLU("r2"), MaxPool2d("p"),
        Conv2d("v3", RNG.normal(0, 1 / 7, (8, 6, 3, 3)), RNG.normal(0, 0.05, 8), "valid"), ReLU("r3"),
        Flatten("f"), Linear("fc", RNG.normal(0, 0.1, (10, 200)), RNG.normal(0, 0.1, 10))))


def test_one_geometry_for_every_layer():
    net = _mixed()
    engine = engine_geometry(net)
    assert (engine.n, engine.k, engine.l, engine.padding) == (8, 5, 4, "same")
    geometries = [layer_geometry(layer, engine)[0] for layer in net.layers if isinstance(layer, Conv2d)]
    assert [(g.n, g.k, g.l, g.padding) for g in geometries] == [(8, 5, 4, "same"), (8, 5, 4, "same"),
                                                              (8, 3, 4, "valid")]
    # An even largest kernel rounds up to odd; none without a conv; N follows the largest kernel.
    even = FloatNetwork((1, 8, 8), (Conv2d("c", np.ones((1, 1, 4, 4))),))
    assert (engine_geometry(even).n, engine_geometry(even).k, engine_geometry(even).l) == (8, 5, 4)
    assert engine_geometry(FloatNetwork((4,), (Linear("fc", np.ones((2, 4))),))) is None
    seven = FloatNetwork((1, 8, 8), (Conv2d("c", np.ones((1, 1, 3, 3))), Conv2d("d", np.ones((1, 1, 7, 7)))))
    assert (engine_geometry(seven).n, engine_geometry(seven).l) == (16, 10)


def test_a_mixed_network_compresses_onto_one_geometry_and_follows_the_float_network():
    """Conv bins unpruned, so each golden conv layer is held to the float network's own convolution on the same
    codes: 1/2 LSB of output rounding plus the datapath's error, as for a network of one kernel size."""
    net = _mixed()
    x = RNG.random((120, 1, 14, 14)).astype(np.float32)
    model = compress_network(net, x, conv_sparsity=0.0, fc_sparsity=0.0).model
    assert model.metadata["conv_engine"] == [8, 5, 4]
    assert model.metadata["conv_geometry"] == {"c3": [8, 5, 4], "c5": [8, 5, 4], "v3": [8, 3, 4]}
    assert model.metadata["conv_kernels"] == {"c3": 3, "c5": 5, "v3": 3}
    assert {(c.spectral.oaa.n, c.spectral.oaa.l) for c in model.conv_layers()} == {(8, 4)}
    codes = model.quantize(x)
    trace = model.forward(codes, trace=True)
    inputs = {"c3": codes, "c5": trace["c3"], "v3": trace["p"]}
    for layer in model.conv_layers():
        float_layer = net.layer(layer.name)
        q = layer.spectral.quant
        y = float_layer.forward(inputs[layer.name].astype(np.float64) * q.in_scale) / q.out_scale
        y = np.clip(np.maximum(y, 0), -128, 127)
        error = np.abs(trace[layer.name] - y)
        assert error.shape == y.shape and error.max() <= 1.5 and error.mean() <= 0.35, layer.name
    assert trace["v3"].shape == (120, 8, 5, 5) and trace["fc"].shape == (120, 10)


@pytest.mark.parametrize("k, padding, offset", [(1, "valid", -2), (2, "valid", -1), (3, "valid", 0), (4, "valid", 1),
                                                (5, "valid", 2), (4, "same", 0), (3, "same", -1), (5, "same", 0)])
def test_a_layer_on_the_engine_s_n_and_l_is_a_window_of_its_same_output(k, padding, offset):
    """The LeNet-5 conv engine (8, 5, 4) "same": a layer of its N and L runs when its output is a window of the
    engine's, from row and column `crop_offset` (bit for bit on the golden model); the others are refused."""
    engine = AcceleratorConfig.lenet5().describe()["engines"]["conv"]["params"]
    rng = np.random.default_rng(k)
    layer = compress_spatial(rng.normal(0, 0.3, (5, 3, k, k)), OaaParams(8, k, 4, padding), 0.5, p=engine["p"],
                             b=engine["b"], bias=rng.normal(0, 0.1, 5), relu=True)
    layer = calibrate(layer, rng.integers(-128, 128, (4, 3, 11, 9)), in_scale=1 / 64)
    assert crop_offset(engine, layer.oaa) == offset
    if offset < 0 or (padding == "same" and offset):
        with pytest.raises(ValueError, match=rf"^layer \(n, k, l\)=\(8, {k}, 4\) does not match the engine's "
                                             rf"\(8, 5, 4\): its '{padding}' output is no window"):
            check_layer_fits(engine, layer, (3, 11, 9), valid_as_crop=True)
        return
    check_layer_fits(engine, layer, (3, 11, 9), valid_as_crop=True)
    x = rng.integers(-128, 128, (2, 3, 11, 9))
    same = dataclasses.replace(layer, oaa=OaaParams(8, 5, 4, "same"))
    out = spectral_conv_fixed(x, layer)
    h, w = out.shape[-2:]
    np.testing.assert_array_equal(out, spectral_conv_fixed(x, same)[..., offset:offset + h, offset:offset + w])
