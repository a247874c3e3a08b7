"""The accelerator's LeNet-5: FcFormat, FC compression (BIM tile order, XOR, requantization), the model file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from host.compress.model import compress_fc_stack, encode_planes, factor_mask, keep_every_row, requantize
from host.compress.xor import bcq_quantize
from host.lenet5.compressed import FcFormatMismatch, ModelFormatError, load_model, model_fields, save_model
from host.lenet5.net import FC_NAMES
from hw.spec.bim import BimMask, BimParams
from hw.spec.fc_format import DEFAULT_FC_FORMAT, FcFormat
from hw.spec.xor import decode_slices

MODEL = Path(__file__).resolve().parents[1] / "models" / "lenet5_full.npz"
SPECTRAL = MODEL.with_name("lenet5_spec2.npz")


@pytest.fixture(scope="module")
def model():
    return load_model(MODEL)


@pytest.fixture(scope="module")
def small_stack():
    """fc1..fc3 of the spectral model compressed on random conv codes (no MNIST, no conv: quick)."""
    from host.lenet5 import spectral as spectral_model

    spectral = spectral_model.load(SPECTRAL)
    weights = [(spectral.fc[f"{n}.weight"], spectral.fc[f"{n}.bias"]) for n in FC_NAMES]
    bims = [factor_mask(w, 0.9, DEFAULT_FC_FORMAT) for w, _ in weights]
    features = np.random.default_rng(0).integers(0, 128, size=(300, 400))
    s_x = float(spectral.conv2.quant.out_scale)
    return weights, bims, features, s_x, compress_fc_stack(weights, bims, features, s_x)


def test_format_checks_and_fields():
    fmt = DEFAULT_FC_FORMAT
    assert fmt.n_t == fmt.n_out <= 64 and fmt.layout.n_t == fmt.n_out
    assert FcFormat.from_fields(fmt.fields()) == fmt
    with pytest.raises(ValueError, match="n_in must be in 1..63"):
        dataclasses.replace(fmt, n_in=64)
    with pytest.raises(ValueError, match="n_out must be in 2..64"):
        dataclasses.replace(fmt, n_out=128)
    with pytest.raises(ValueError, match="field 'a_bits'"):
        FcFormat.from_fields({**fmt.fields(), "a_bits": np.int64(40)})
    with pytest.raises(ValueError, match="missing field 'r'"):
        FcFormat.from_fields({k: v for k, v in fmt.fields().items() if k != "r"})
    assert dataclasses.replace(fmt, r=3).differences(fmt) == ["r: 3 != 2"]


def test_bim_tiles_are_the_tile_major_mask_rows(small_stack):
    """One factorization of the original matrix in m_t x n_out tiles gives the engine's tile-major mask rows."""
    *_, layers = small_stack
    for layer in layers:
        layout = layer.fmt.layout
        real = layout.tile_major(np.ones(layer.shape, dtype=bool), fill=False)
        rows = layer.mask_rows()
        assert rows.shape == real.shape
        np.testing.assert_array_equal(rows[real], layout.tile_major(layer.keep, fill=False)[real])
        # And it is exactly the BIM file's mask: tiles row-major, rows in order.
        np.testing.assert_array_equal(rows[real], layout.tile_major(layer.bim.mask())[real])


def test_xor_slices_decode_to_the_tile_major_planes(small_stack):
    weights, bims, *_ = small_stack
    fmt = DEFAULT_FC_FORMAT
    for (w, _), bim in zip(weights, bims):
        keep = bim.mask()
        alpha, planes = bcq_quantize(w, keep, 2)
        x, counts, positions = encode_planes(planes, keep, fmt)
        decoded = decode_slices(fmt.matrix(), x, counts, positions).reshape(2, -1, fmt.n_out)
        care = fmt.layout.tile_major(keep, fill=False)
        for i in range(2):
            target = fmt.layout.tile_major(planes[i])
            np.testing.assert_array_equal(decoded[i][care], target[care])
        assert care.sum() == keep.sum()


def test_layer_planes_and_mask_round_trip(small_stack):
    weights, bims, *_, layers = small_stack
    for (w, _), bim, layer in zip(weights, bims, layers):
        np.testing.assert_array_equal(layer.keep, bim.mask())
        _, planes = bcq_quantize(w, layer.keep, 1)
        np.testing.assert_array_equal(layer.planes[:, layer.keep], planes[:, layer.keep])


def test_fc_fixed_matches_float_reference(small_stack):
    """Each layer's integer output is its float output / s_y rounded, within one code (a and bias rounding)."""
    _, _, features, s_x, layers = small_stack
    h = features
    for layer in layers:
        out = layer.forward(h)
        ref = layer.forward_float(h * layer.in_scale) / layer.out_scale
        ref = np.clip(np.floor(ref + 0.5), -128 if not layer.relu else 0, 127)
        assert np.abs(out - ref).max() <= 1, layer.name
        assert (np.abs(out - ref) > 0).mean() < 0.05, layer.name
        h = out


def test_requantize_uses_the_largest_shift_that_fits():
    fmt = DEFAULT_FC_FORMAT
    alpha = np.array([[0.5], [0.01], [0.0]], dtype=np.float32)
    a, bias_q, shift = requantize(alpha, np.array([0.1, -0.2, 0.0]), 0.05, 0.1, fmt)
    assert a.max() <= fmt.a_max and 2 * a.max() > fmt.a_max  # one more bit of shift would overflow
    assert a[0, 0] == np.floor(0.25 * 2.0**shift + 0.5)
    assert bias_q.tolist() == [np.floor(1.0 * 2**shift + 0.5), np.floor(-2.0 * 2**shift + 0.5), 0]
    a, _, shift = requantize(np.full((1, 1), 1e-9, dtype=np.float32), np.zeros(1), 1.0, 1.0, fmt)
    assert shift == 31
    with pytest.raises(ValueError, match="a_bits=16"):
        requantize(np.full((1, 1), 1e6, dtype=np.float32), np.zeros(1), 1.0, 1.0, fmt)


def test_keep_every_row_gives_an_empty_row_its_best_z_row():
    params = BimParams(4, 8, 2)
    p = np.zeros((1, 1, 4, 2), dtype=bool)
    p[0, 0, 1:, 0] = True
    z = np.zeros((1, 1, 2, 8), dtype=bool)
    z[0, 0, 0, :3] = True
    z[0, 0, 1, 5:] = True
    bim = BimMask(shape=(4, 8), params=params, p=p, z=z)
    w = np.zeros((4, 8))
    w[0, 6] = 1.0  # row 0 keeps nothing; Z row 1 covers its only weight
    fixed = keep_every_row(bim, w)
    assert fixed.mask()[0].tolist() == [False] * 5 + [True] * 3
    np.testing.assert_array_equal(fixed.mask()[1:], bim.mask()[1:])


def test_save_load_round_trip(model, tmp_path):
    path = tmp_path / "m.npz"
    save_model(path, model)
    again = load_model(path)
    a, b = model_fields(model), model_fields(again)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
    assert again.fmt == DEFAULT_FC_FORMAT


def test_committed_model_is_small_and_describes_itself(model):
    assert MODEL.stat().st_size < 1 << 20
    meta = model.metadata
    assert set(meta["test_accuracy"]) >= {"float_fc", "golden_fixed", "golden_fixed_without_finetune"}
    assert meta["fc_bits"] == 1 and all(abs(s - 0.9) < 0.02 for s in meta["fc_sparsity"].values())
    for layer in model.fc:
        assert 0 <= layer.shift <= 31 and layer.a.max() <= model.fmt.a_max


def _write(tmp_path: Path, fields: dict) -> Path:
    path = tmp_path / "bad.npz"
    with open(path, "wb") as f:
        np.savez(f, **fields)
    return path


@pytest.mark.parametrize("change, message", [
    (lambda f: f.pop("fc1/a"), "missing field 'fc1/a'"),
    (lambda f: f.update({"fc2/bias_q": f["fc2/bias_q"].astype(np.int32)}), "field 'fc2/bias_q': expected int64"),
    (lambda f: f.update({"fc3/a": f["fc3/a"] + (1 << 16)}), "field 'fc3/a': entries must be in 0..65535"),
    # int64's minimum, whose abs() overflows, and the first value past the 32 bits the device holds.
    (lambda f: f.update({"fc1/bias_q": np.where(np.arange(f["fc1/bias_q"].size) == 0, np.iinfo(np.int64).min,
                                                f["fc1/bias_q"])}),
     "field 'fc1/bias_q': entries must be in -2147483648..2147483647 (signed 32 bits)"),
    (lambda f: f.update({"fc2/bias_q": f["fc2/bias_q"] + (1 << 31)}), "field 'fc2/bias_q': entries must be in"),
    (lambda f: f.update({"fc1/shift": np.int64(63)}), "field 'fc1/shift'"),
    (lambda f: f.update({"fc2/x": f["fc2/x"][:-1]}), "field 'fc2/x'"),
    (lambda f: f.update({"fc1/p": f["fc1/p"][:-1]}), "field 'fc1/p'"),
    (lambda f: f.update({"fc2/in_scale": np.float32(0.5)}), "field 'fc2/in_scale'"),
    (lambda f: f.update({"fc_format/m": np.zeros_like(f["fc_format/m"])}), "field 'fc_format/m'"),
    (lambda f: f.pop("conv2/re"), "missing field 'conv2/re'"),
    (lambda f: f.update({"version": np.int64(7)}), "field 'version': unknown version 7"),
])
def test_malformed_files_are_rejected_naming_the_field(model, tmp_path, change, message):
    fields = model_fields(model)
    change(fields)
    path = _write(tmp_path, fields)
    with pytest.raises(ModelFormatError) as info:
        load_model(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


def test_a_file_for_another_fc_format_is_rejected(model, tmp_path):
    fields = model_fields(model)
    fields["fc_format/max_patches"] = np.int64(8)
    path = _write(tmp_path, fields)
    with pytest.raises(FcFormatMismatch, match="another FC configuration.*max_patches: 8 != 4"):
        load_model(path)
    assert load_model(MODEL, expected=None).fmt == DEFAULT_FC_FORMAT
    with pytest.raises(FcFormatMismatch, match="n_in: 6 != 7"):
        load_model(MODEL, expected=dataclasses.replace(DEFAULT_FC_FORMAT, n_in=7))


def test_finetune_keeps_masks_and_learns():
    pytest.importorskip("torch", reason="FC fine-tuning needs torch (the train extra)")
    from host.compress.finetune import finetune_fc

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 20)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    weights = [(rng.normal(size=(16, 20)).astype(np.float32) * 0.1, np.zeros(16, np.float32)),
               (rng.normal(size=(2, 16)).astype(np.float32) * 0.1, np.zeros(2, np.float32))]
    masks = [rng.random((16, 20)) < 0.5, np.ones((2, 16), dtype=bool)]
    seen = []
    tuned = finetune_fc(weights, masks, x, y, bits=1, epochs=5, lr=1e-2, on_epoch=lambda *a: seen.append(a))
    assert not tuned[0][0][~masks[0]].any()
    assert len(seen) == 5 and seen[-1][2] < seen[0][2] and seen[-1][3] > 0.7
    again = finetune_fc(weights, masks, x, y, bits=1, epochs=5, lr=1e-2)
    np.testing.assert_array_equal(tuned[0][0], again[0][0])  # deterministic
