"""Packing for the device never cuts a value to fit: `pack_fields` refuses a value outside its field with the
field and its range, and the conv engine's packers refuse exactly the layers the golden model refuses (out_mult,
the shifts, the input channels, bias_q), so golden and device cannot disagree without an error; an FC layer's
shift is taken to the same bound by model files, the golden model and the FC engine."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host.accel import AccelInfo, plan_conv_layer, plan_fc_layer
from host.compress.spectral import calibrate, compress_spatial
from host.lenet5.compressed import load_model, model_fields
from hw.config import AcceleratorConfig
from hw.spec.fc import MAX_SHIFT, fc_fixed
from hw.spec.fields import pack_fields, unpack_fields
from hw.spec.network import ModelFormatError
from hw.spec.spectral.fixed import SpectralFixed, spectral_conv_fixed
from hw.spec.spectral.geometry import OaaParams
from hw.spec.spectral.layer import SpectralFormatError, SpectralLayer

MODEL = Path(__file__).resolve().parents[1] / "models" / "lenet5_full.npz"
ACCEL = AccelInfo.from_info(AcceleratorConfig.lenet5().describe())
#: The golden datapath of the device: its multiplier width (the quant beat's out_mult field) and input channels.
SPEC = SpectralFixed(mult_bits=ACCEL.conv_streams["quant"]["out_mult"][1], max_c_in=ACCEL.conv_params["max_c_in"])


@settings(derandomize=True, max_examples=300)
@given(width=st.integers(1, 40), value=st.integers(-(1 << 41), 1 << 41), signed=st.sampled_from([None, False, True]))
def test_pack_fields_refuses_what_does_not_fit_and_keeps_what_does(width, value, signed):
    table = {"low": (0, 3), "f": (3, width)}
    names = None if signed is None else ({"f"} if signed else set())
    low = -(1 << (width - 1)) if signed is not False else 0
    high = (1 << (width - 1)) - 1 if signed else (1 << width) - 1
    if low <= value <= high:
        word = pack_fields(table, {"low": 5, "f": value}, signed=names)
        assert unpack_fields(table, word) == {"low": 5, "f": value % (1 << width)}
    else:
        with pytest.raises(ValueError, match=rf"^field f={value} does not fit {width} bits \(.*{low}\.\.{high}\)$"):
            pack_fields(table, {"low": 5, "f": value}, signed=names)


@pytest.mark.parametrize("value", [1.5, "3", None, np.float64(2.0)])
def test_pack_fields_refuses_what_is_no_integer(value):
    with pytest.raises(ValueError, match="^field f=.* is not an integer$"):
        pack_fields({"f": (0, 8)}, {"f": value})


@pytest.fixture(scope="module")
def convs() -> tuple[SpectralLayer, SpectralLayer]:
    return load_model(MODEL).convs()


def _refusals(layer: SpectralLayer, in_shape: tuple[int, int, int]) -> tuple[str | None, str | None]:
    """(golden model's refusal, device packer's refusal), None where it takes the layer."""
    golden = device = None
    try:
        spectral_conv_fixed(np.zeros((1, *in_shape), dtype=np.int64), layer, SPEC)
    except ValueError as error:
        golden = str(error)
    try:
        plan_conv_layer(ACCEL, layer, in_shape, src=0, pool=False)
    except ValueError as error:
        device = str(error)
    return golden, device


BIAS_TOP = 1 << (SPEC.ola_bits(OaaParams(8, 5, 4, "same")) + SPEC.mult_bits - 1)
QUANT_CASES = [("out_mult", v) for v in (1, 1 << 15, (1 << 16) - 1, 1 << 16, 130_996, (1 << 31) - 1)] + \
              [(name, v) for name in ("out_shift", "mac_shift") for v in (0, 31, 62)] + \
              [("bias_q", v) for v in (0, BIAS_TOP - 1, BIAS_TOP, 1 - BIAS_TOP, -BIAS_TOP, 1 << 62, 1 - (1 << 63))]


@pytest.mark.parametrize("conv", [0, 1])
@pytest.mark.parametrize("name, value", QUANT_CASES)
def test_golden_and_device_refuse_the_same_quantization(convs, conv, name, value):
    layer = convs[conv]
    q = layer.quant
    if name == "bias_q":
        change = {"bias_q": np.where(np.arange(layer.c_out) == 0, value, q.bias_q).astype(np.int64)}
    else:
        change = {name: value}
    try:
        layer = dataclasses.replace(layer, quant=dataclasses.replace(q, **change))
    except SpectralFormatError:
        pytest.skip("the layer itself refuses it")  # neither packer nor golden model ever sees such a layer
    golden, device = _refusals(layer, (layer.c_in, 28, 28) if conv == 0 else (layer.c_in, 14, 14))
    assert (golden is None) == (device is None), (golden, device)
    if device is not None:
        field = {"bias_q": "bias", "out_mult": "out_mult"}[name]
        assert field in device and "\n" not in device, device
    expected_refused = (name == "out_mult" and value >= 1 << SPEC.mult_bits) or (
        name == "bias_q" and abs(value) >= BIAS_TOP)
    assert (device is not None) == expected_refused, device


@pytest.mark.parametrize("c_in", [ACCEL.conv_params["max_c_in"], ACCEL.conv_params["max_c_in"] + 1])
def test_golden_and_device_refuse_the_same_input_channels(c_in):
    rng = np.random.default_rng(c_in)
    layer = compress_spatial(rng.standard_normal((2, c_in, 5, 5)), OaaParams(8, 5, 4, "same"), 0.75, p=4, b=8,
                             bias=rng.standard_normal(2), relu=True)
    layer = calibrate(layer, rng.integers(-128, 128, (1, c_in, 8, 8)), 0.02)
    golden, device = _refusals(layer, (c_in, 8, 8))
    assert (golden is None) == (device is None) == (c_in <= ACCEL.conv_params["max_c_in"]), (golden, device)


@pytest.mark.parametrize("shift", [0, 31, 32, MAX_SHIFT, MAX_SHIFT + 1])
def test_files_golden_and_device_take_the_same_fc_shifts(shift, tmp_path):
    model = load_model(MODEL)
    fc3 = model.fc[2]
    fields = model_fields(model)
    fields["fc3/shift"] = np.int64(shift)
    path = tmp_path / "shift.npz"
    with open(path, "wb") as f:
        np.savez(f, **fields)
    assert ACCEL.fc_stream_format().max_shift == MAX_SHIFT

    def golden() -> np.ndarray:
        return fc_fixed(np.ones((1, 84), dtype=np.int64), fc3.planes, fc3.keep, fc3.a, fc3.bias_q, shift, False)

    def device() -> dict:
        return plan_fc_layer(ACCEL, dataclasses.replace(fc3.engine_layer(), shift=shift), src=0).descriptor

    if shift <= MAX_SHIFT:
        assert load_model(path).fc[2].shift == shift
        golden()
        assert device()["fc.cfg.shift"] == shift
        return
    with pytest.raises(ModelFormatError, match=rf"field 'fc3/shift': must be an integer in 0\.\.{MAX_SHIFT}, got"):
        load_model(path)
    with pytest.raises(ValueError, match=rf"shift must be in 0\.\.{MAX_SHIFT}"):
        golden()
    with pytest.raises(ValueError, match="shift"):
        device()
