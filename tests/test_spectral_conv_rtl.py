"""The whole SPEC2 layer (`hw.spectral.pipeline.SpectralConv`) in RTL against `spectral_conv_fixed`, bit-exact.

Random calibrated layers at 75 % spectral sparsity under cocotb, with random input gaps on all four input
streams and random output backpressure: the LeNet-5 layers back to back in one run (1 -> 6 at 28 x 28,
6 -> 16 at 14 x 14, K = 5, L = 4, ReLU) on the lenet5 config's engine (four output channels in flight, each
path cropping and pooling: conv1's map pooled, conv2's cropped to its "valid" 10 x 10 and pooled), a
VGG-like 64 -> 64 layer on a reduced 12 x 12 map (K = 3, L = 6, one channel in flight) and small "valid"
layers on odd-sized maps with three channels in flight (5 = 3 + 2 and 2 output channels: a short last block,
a layer narrower than the paths). The full-rate runs check the cycle model the benchmark uses.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from host.compress.spectral import calibrate, compress_spatial
from hw.config import AcceleratorConfig
from hw.spec.spectral.fixed import spectral_conv_fixed
from hw.spec.spectral.layer import SpectralLayer
from hw.spectral.pipeline import SpectralConvParams, cycle_model
from hw.spectral.streams import decode_output, encode
from sim.spectral import simulate_layers, span

LENET = AcceleratorConfig.lenet5().conv  # N = 8, K = 5, L = 4, ReLU, P = 4, B = 8, 6 -> 16 on 28 x 28, outs = 4, post
VGG = SpectralConvParams(k=3, l=6, max_c_in=64, max_c_out=64, max_height=12, max_width=12)
VALID = SpectralConvParams(k=3, l=6, padding="valid", max_c_in=4, max_c_out=5, max_height=16, max_width=16, outs=3)


def make_layer(params: SpectralConvParams, c_in: int, c_out: int, hw: tuple[int, int], seed: int,
               ) -> tuple[SpectralLayer, np.ndarray]:
    """A magnitude-pruned (75 %), calibrated random layer for `params` and one random input (C_in, H, W)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((c_out, c_in, params.k, params.k))
    layer = compress_spatial(w, params.oaa, sparsity=0.75, p=params.p, b=params.b,
                             bias=rng.standard_normal(c_out) * 0.5, relu=params.relu)
    layer = calibrate(layer, rng.integers(-128, 128, size=(4, c_in, *hw)), in_scale=1 / 64, spec=params.spec)
    return layer, rng.integers(-128, 128, size=(c_in, *hw))


@pytest.mark.cost(seconds=35)
def test_lenet_layers_back_to_back(tmp_path: Path):
    conv1 = (*make_layer(LENET, 1, 6, (28, 28), seed=1), (0, 0, 28, 28, True))
    conv2 = (*make_layer(LENET, 6, 16, (14, 14), seed=2), (2, 2, 10, 10, True))
    cycles = simulate_layers(LENET, [conv1, conv2], "spectral_conv_lenet", tmp_path)
    model = [cycle_model(LENET, layer, *x.shape[1:], pool=True) for layer, x, _ in (conv1, conv2)]
    # The second layer's load overlaps the first's compute, so the run lies between the two bounds.
    assert model[0]["single"] + model[1]["compute"] <= span(cycles) <= model[0]["single"] + model[1]["single"]


@pytest.mark.cost(seconds=10)
def test_compute_starts_while_the_last_input_map_loads(tmp_path: Path):
    """A one-channel layer's groups start as its tiles come in: the layer takes its compute and latency (its lead
    is none), not its whole load and then the compute."""
    layer, x = make_layer(LENET, 1, 6, (28, 28), seed=6)
    cycles = simulate_layers(LENET, [(layer, x)], "spectral_conv_lenet", tmp_path)
    model = cycle_model(LENET, layer, 28, 28)
    # 49 tiles of 40 cycles: the tiler sends each tile's L = 4 rows of data, the column pass reads 8 x 5 values.
    assert model["lead"] == 0 and model["load"] == 49 * 40
    assert span(cycles) == pytest.approx(model["single"], rel=0.01)
    assert span(cycles) < model["load"] + model["compute"]


@pytest.mark.cost(seconds=45)
def test_vgg_like_layer(tmp_path: Path):
    layer, x = make_layer(VGG, 64, 64, (12, 12), seed=3)
    cycles = simulate_layers(VGG, [(layer, x)], "spectral_conv_vgg", tmp_path)
    model = cycle_model(VGG, layer, 12, 12)
    assert span(cycles) == pytest.approx(model["single"], rel=0.01)


@pytest.mark.cost(seconds=20)
def test_valid_padding_odd_map(tmp_path: Path):
    layers = [make_layer(VALID, 3, 5, (13, 11), seed=4), make_layer(VALID, 4, 2, (7, 16), seed=5)]
    # On Verilator like the other whole layers: Icarus took 31 s to run these two small layers on the three-path
    # engine, Verilator 17 s to compile it and 2 s to run them.
    simulate_layers(VALID, layers, "spectral_conv_valid", tmp_path)


@pytest.mark.cost(seconds=20)
def test_post_stages_odd_windows(tmp_path: Path):
    """Each path crops and pools its own maps: windows of odd size, so the pools drop a last column or row after
    their final output, which the next layer must wait for (`post_busy`)."""
    engine = dataclasses.replace(VALID, post=True)
    layers = [(*make_layer(engine, 3, 5, (13, 11), seed=4), (1, 0, 10, 9, True)),  # 11 x 9 -> 5 x 4
              (*make_layer(engine, 4, 2, (7, 16), seed=5), (0, 1, 5, 13, True)),  # 5 x 14 -> 2 x 6
              (*make_layer(engine, 2, 4, (9, 9), seed=7), (2, 3, 4, 2, False))]  # a crop alone
    simulate_layers(engine, layers, "spectral_conv_valid_post", tmp_path)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n": 6}, "n must be a power of two"),
    ({"k": 9}, "l"),
    ({"padding": "full"}, "padding"),
    ({"relu": 1}, "relu must be a bool"),
    ({"p": 3, "b": 6}, "b must be a power of two"),
    ({"b": 2}, "b must be a power of two in p=4"),
    ({"max_c_in": 0}, "max_c_in must be >= 1, got 0"),
    ({"max_c_in": 2048}, "max_c_in must be at most spec.max_c_in=1024"),
    ({"max_height": 2, "padding": "valid"}, "at least k=3"),
    ({"max_groups": 0}, "max_groups must be >= 1, got 0"),
    ({"outs": 0}, "outs must be in 1..16, got 0"),
    ({"outs": 17, "max_c_out": 32}, "outs must be in 1..16, got 17"),
    ({"outs": 5, "max_c_out": 4}, "outs must be at most max_c_out=4"),
    ({"spec": None}, "spec must be a SpectralFixed"),
])
def test_params_rejected(kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        SpectralConvParams(**kwargs)


def test_accumulators_sized_for_the_engine():
    """The MAC's accumulators (and the IFFT input reading them) are the narrowest the MAC accepts for the engine's
    own max_c_in, not the format's width for 1024 channels: the sums stay exact, with less LUT RAM."""
    for params in (LENET, VGG):
        assert params.mac.acc_bits == params.mac.min_acc_bits == params.ifft_input.acc_bits
        assert params.describe()["acc_bits"] == params.mac.acc_bits
    assert LENET.mac.acc_bits < VGG.mac.acc_bits < LENET.spec.acc_bits


def test_encode_rejects_mismatches():
    layer, x = make_layer(VALID, 3, 5, (13, 11), seed=6)
    with pytest.raises(ValueError, match="input height=17 outside 3..16"):
        encode(VALID, layer, np.zeros((3, 17, 11), dtype=np.int64))
    with pytest.raises(ValueError, match=r"input must have shape \(C_in=3, H, W\)"):
        encode(VALID, layer, x[:2])
    with pytest.raises(ValueError, match="geometry"):
        encode(LENET, layer, x)
    small = SpectralConvParams(k=3, l=6, padding="valid", max_c_in=4, max_c_out=5, max_height=16, max_width=16,
                            max_groups=1)
    with pytest.raises(ValueError, match="more than max_groups=1"):
        encode(small, layer, x)
    with pytest.raises(ValueError, match="c_out=5 outside 1..4"):
        encode(SpectralConvParams(k=3, l=6, padding="valid", max_c_in=4, max_c_out=4), layer, x)


def test_decode_output_sign_extends_and_checks_count():
    layer, x = make_layer(VALID, 3, 5, (13, 11), seed=7)
    y = spectral_conv_fixed(x, layer, VALID.spec)
    assert (y < 0).any() and (y > 0).any()
    words = [int(v) & 0xFF for v in y.reshape(-1)]
    assert (decode_output(VALID, words, y.shape) == y).all()
    with pytest.raises(ValueError, match=f"expected {y.size} output values"):
        decode_output(VALID, words[:-1], y.shape)
