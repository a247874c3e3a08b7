"""Golden model of the XOR-gate weight format: M, slice layout, decode, BCQ dequantization, the .npz file."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hw.spec import xor as golden
from hw.spec.xor import (
    XorFormatError,
    XorParams,
    XorWeights,
    bcq_dequantize,
    care_slices,
    decode_slices,
    gf2_rank,
    load_xor,
    planes_to_slices,
    save_xor,
    slices_to_planes,
    storage_bits,
    xor_matrix,
)

# --- M ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_out, n_in", [(4, 3), (2, 1), (200, 1), (200, 4), (200, 20), (512, 64), (130, 129)])
def test_xor_matrix_properties(n_out, n_in):
    m = xor_matrix(n_out, n_in, seed=7)
    assert m.shape == (n_out, n_in) and m.dtype == np.uint8
    assert set(np.unique(m)) <= {0, 1}
    assert m.any(axis=1).all(), "a zero row"
    assert gf2_rank(m) == n_in
    assert np.array_equal(m, xor_matrix(n_out, n_in, seed=7)), "not deterministic"


def test_xor_matrix_seeds_differ_and_rows_look_bernoulli():
    a, b = xor_matrix(200, 24, 0), xor_matrix(200, 24, 1)
    assert not np.array_equal(a, b)
    assert 0.45 < a.mean() < 0.55


def test_gf2_rank_known_answers():
    assert gf2_rank(np.eye(5, dtype=np.uint8)) == 5
    assert gf2_rank([[1, 1, 0], [0, 1, 1], [1, 0, 1]]) == 2  # the rows sum to zero over GF(2)
    assert gf2_rank(np.zeros((3, 4))) == 0
    assert gf2_rank([[1, 0], [1, 0], [0, 1]]) == 2


@pytest.mark.parametrize("args, field", [
    ((4, 0, 0), "n_in"), ((3, 3, 0), "n_out"), ((2, 5, 0), "n_out"), ((4, 3, -1), "seed"),
    ((4.0, 3, 0), "n_out"), ((4, True, 0), "n_in"),
])
def test_xor_matrix_rejects_bad_arguments(args, field):
    with pytest.raises(ValueError, match=f"^{field} must be") as info:
        xor_matrix(*args)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs, field", [
    ({"n_in": 0}, "n_in"), ({"n_out": 20}, "n_out"), ({"bits": 0}, "bits"), ({"bits": 9}, "bits"),
    ({"max_patches": 0}, "max_patches"), ({"seed": -3}, "seed"), ({"n_in": 2.5}, "n_in"),
])
def test_params_validation_names_the_field(kwargs, field):
    base = {"n_in": 20, "n_out": 200, "bits": 1, "max_patches": 4, "seed": 0}
    with pytest.raises(ValueError, match=f"^{field} must be"):
        XorParams(**{**base, **kwargs})
    params = XorParams(**base)
    with pytest.raises(AttributeError):
        params.n_in = 3  # frozen
    assert params.position_width == 8


# --- decoding --------------------------------------------------------------------------------------------


def _decode_reference(m, x, counts, positions):
    """Slice by slice, in plain Python."""
    out, offset = [], 0
    for row, count in zip(x, counts):
        y = [sum(int(m[j, i]) * int(row[i]) for i in range(m.shape[1])) % 2 for j in range(m.shape[0])]
        for p in positions[offset:offset + count]:
            y[p] ^= 1
        offset += count
        out.append(y)
    return np.array(out, dtype=np.uint8).reshape(len(out), m.shape[0])


@given(st.integers(1, 12), st.integers(1, 20), st.integers(0, 12), st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_decode_slices_matches_a_plain_loop(n_in, extra, n_slices, seed):
    rng = np.random.default_rng(seed)
    n_out = n_in + extra
    m = xor_matrix(n_out, n_in, seed % 1000)
    x = rng.integers(0, 2, size=(n_slices, n_in), dtype=np.uint8)
    counts = rng.integers(0, 4, size=n_slices)
    positions = rng.integers(0, n_out, size=int(counts.sum()))  # duplicates allowed: they flip twice
    y = decode_slices(m, x, counts, positions)
    assert y.dtype == np.uint8 and y.shape == (n_slices, n_out)
    assert np.array_equal(y, _decode_reference(m, x, counts, positions))


def test_decode_slices_paper_sized_toy():
    m = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 1], [1, 1, 1]], dtype=np.uint8)
    x = np.array([[1, 0, 1], [0, 1, 1]], dtype=np.uint8)
    assert decode_slices(m, x, np.array([0, 0]), np.array([], dtype=int)).tolist() == [[0, 1, 1, 0], [1, 1, 0, 0]]
    assert decode_slices(m, x, np.array([1, 2]), np.array([3, 0, 1])).tolist() == [[0, 1, 1, 1], [0, 0, 0, 0]]


@pytest.mark.parametrize("counts, positions, message", [
    ([1, 0], [4], "patch_positions must be in 0..3"),
    ([1, 0], [], "patch_positions must be 1-D of length"),
    ([-1, 1], [0, 0], "patch_counts must be >= 0"),
    ([1], [0], "patch_counts must have shape"),
])
def test_decode_slices_rejects_inconsistent_patches(counts, positions, message):
    m = xor_matrix(4, 3, 0)
    with pytest.raises(ValueError, match=message):
        decode_slices(m, np.zeros((2, 3), dtype=np.uint8), np.array(counts), np.array(positions, dtype=int))


def test_slice_layout_flattens_row_major_and_pads_the_end():
    planes = np.arange(2 * 3 * 5).reshape(2, 3, 5) % 2
    slices = planes_to_slices(planes, 4)  # 15 bits per plane -> 4 slices, the last with 1 padding bit
    assert slices.shape == (8, 4)
    assert slices[:4].reshape(-1)[:15].tolist() == planes[0].reshape(-1).tolist()
    assert slices[3, 3] == 0 and slices[7, 3] == 0
    assert np.array_equal(slices_to_planes(slices, (3, 5)), planes)
    care = care_slices(np.ones((3, 5), dtype=bool), 4)
    assert care.shape == (4, 4) and care.sum() == 15 and not care[3, 3]


def test_bcq_dequantize_signs_and_pruning():
    alpha = np.array([[1.0, 0.25], [2.0, 0.5]], dtype=np.float32)
    planes = np.array([[[1, 0, 1], [0, 0, 1]], [[1, 1, 0], [0, 1, 1]]], dtype=np.uint8)
    mask = np.array([[True, True, False], [True, True, True]])
    w = bcq_dequantize(alpha, planes, mask)
    assert w.dtype == np.float32
    assert w.tolist() == [[1.25, -0.75, 0.0], [-2.5, -1.5, 2.5]]
    assert (np.signbit(w[~mask]) == 0).all()  # exactly +0.0


def test_storage_bits_by_hand():
    # 10 slices of n_in=20 at n_out=200: 200 x bits; 3 patches of 8 bits; counts unary: 10 + 3.
    assert storage_bits(20, 200, 10, 3) == {"x": 200, "patch_positions": 24, "patch_counts": 13, "total": 237}
    assert storage_bits(3, 4, 1, 0)["patch_positions"] == 0


# --- the file --------------------------------------------------------------------------------------------


def _weights(rng: np.random.Generator, rows=5, cols=41, bits=2, n_in=5, n_out=12, with_mask=True) -> XorWeights:
    params = XorParams(n_in, n_out, bits, 2, 3)
    s = bits * golden.num_slices(rows * cols, n_out)
    counts = rng.integers(0, 3, size=s).astype(np.int64)
    positions = np.concatenate([np.sort(rng.choice(n_out, size=c, replace=False)) for c in counts]).astype(np.int64)
    return XorWeights(
        params=params, shape=(rows, cols), m=xor_matrix(n_out, n_in, 3),
        alpha=rng.random((rows, bits), dtype=np.float32), x=rng.integers(0, 2, (s, n_in), dtype=np.uint8),
        patch_counts=counts, patch_positions=positions,
        mask=rng.random((rows, cols)) < 0.3 if with_mask else None)


def _same(a: XorWeights, b: XorWeights) -> bool:
    fields = ("m", "alpha", "x", "patch_counts", "patch_positions")
    masks = (a.mask is None and b.mask is None) or np.array_equal(a.mask, b.mask)
    return a.params == b.params and a.shape == b.shape and masks and all(
        np.array_equal(getattr(a, f), getattr(b, f)) and getattr(a, f).dtype == getattr(b, f).dtype for f in fields)


@given(st.integers(0, 2**32 - 1), st.integers(1, 9), st.integers(1, 70), st.integers(1, 3), st.booleans())
@settings(max_examples=30, deadline=None)
def test_file_round_trip(tmp_path_factory, seed, rows, cols, bits, with_mask):
    rng = np.random.default_rng(seed)
    w = _weights(rng, rows, cols, bits, with_mask=with_mask)
    path = tmp_path_factory.mktemp("xor") / "w.xor.npz"
    save_xor(path, w)
    assert _same(load_xor(path), w)


def test_unary_counts_code_by_hand():
    packed = golden._pack_unary(np.array([0, 2, 1]))
    assert np.unpackbits(packed)[:6].tolist() == [0, 1, 1, 0, 1, 0]
    assert golden._unpack_unary(packed, 3).tolist() == [0, 2, 1]


def _fields(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _rewrite(path: Path, fields: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **fields)


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    path = tmp_path / "w.xor.npz"
    w = _weights(np.random.default_rng(5))
    assert (w.patch_counts >= 2).any()
    save_xor(path, w)
    return path


@pytest.mark.parametrize("field", list(golden._FIELDS))
def test_missing_field_is_named(good_file, field):
    fields = _fields(good_file)
    del fields[field]
    _rewrite(good_file, fields)
    with pytest.raises(XorFormatError, match=f"missing field '{field}'"):
        load_xor(good_file)


def _counts_total(fields) -> int:
    p = XorParams(int(fields["n_in"]), int(fields["n_out"]), int(fields["bits"]))
    s = p.bits * golden.num_slices(int(np.prod(fields["shape"])), p.n_out)
    return int(golden._unpack_unary(fields["patch_counts"], s).sum())


def _position_over_n_out(fields):
    n = _counts_total(fields)
    values = golden._unpack_fixed(fields["patch_positions"], n, 4, "patch_positions")
    values[0] = 13  # n_out = 12; 4-bit fields hold up to 15
    return {"patch_positions": golden._pack_fixed(values, 4)}


def _positions_descending(fields):
    n = _counts_total(fields)
    p = XorParams(int(fields["n_in"]), int(fields["n_out"]), int(fields["bits"]))
    s = p.bits * golden.num_slices(int(np.prod(fields["shape"])), p.n_out)
    counts = golden._unpack_unary(fields["patch_counts"], s)
    values = golden._unpack_fixed(fields["patch_positions"], n, 4, "patch_positions")
    start = int(np.cumsum(counts)[np.argmax(counts >= 2)] - counts[np.argmax(counts >= 2)])
    values[start], values[start + 1] = values[start + 1], values[start]
    return {"patch_positions": golden._pack_fixed(values, 4)}


@pytest.mark.parametrize("change, field, message", [
    (lambda f: {"version": np.int64(2)}, "version", "unknown version 2"),
    (lambda f: {"version": np.float64(1)}, "version", "integer scalar"),
    (lambda f: {"n_in": np.int64(12)}, "n_out", "greater than n_in"),
    (lambda f: {"bits": np.int64(0)}, "bits", "bits must be"),
    (lambda f: {"shape": np.array([5, 0])}, "shape", "positive"),
    (lambda f: {"x": f["x"][:-1]}, "x", "bytes, expected"),
    (lambda f: {"m": f["m"][:-1]}, "m", "bytes, expected"),
    (lambda f: {"m": np.zeros_like(f["m"])}, "m", "rank"),
    (lambda f: {"alpha": f["alpha"][:, :1]}, "alpha", "shape"),
    (lambda f: {"alpha": f["alpha"].astype(np.float64)}, "alpha", "float32"),
    (lambda f: {"alpha": np.full_like(f["alpha"], np.nan)}, "alpha", "non-finite"),
    (lambda f: {"alpha": -f["alpha"] - 1}, "alpha", "scales must be >= 0"),
    (lambda f: {"patch_counts": f["patch_counts"][:2]}, "patch_counts", "terminating zero bits"),
    (lambda f: {"patch_counts": np.append(f["patch_counts"], np.uint8(0))}, "patch_counts", "bytes, expected"),
    (lambda f: {"patch_positions": np.append(f["patch_positions"], np.uint8(0))}, "patch_positions", "bytes"),
    (_position_over_n_out, "patch_positions", "outside 0..11"),
    (_positions_descending, "patch_positions", "strictly ascending"),
    (lambda f: {"x": f["x"].astype(np.int16)}, "x", "uint8"),
    (lambda f: {"mask": f["mask"][:-1]}, "mask", "bytes, expected"),
])
def test_malformed_file_is_rejected_naming_the_field(good_file, change, field, message):
    fields = _fields(good_file)
    fields.update(change(fields))
    _rewrite(good_file, fields)
    with pytest.raises(XorFormatError) as info:
        load_xor(good_file)
    text = str(info.value)
    assert f"field '{field}'" in text and message in text and "\n" not in text
    assert text.startswith(str(good_file))


@pytest.mark.parametrize("shape", [[5, 30], [6, 41], [1, 1]])
def test_shape_disagreeing_with_the_payload_is_rejected(good_file, shape):
    fields = _fields(good_file)
    fields["shape"] = np.array(shape)
    _rewrite(good_file, fields)
    with pytest.raises(XorFormatError, match=r"field '(patch_counts|patch_positions|mask|x|alpha)'"):
        load_xor(good_file)


def test_not_an_npz_and_pickles_are_rejected(tmp_path: Path):
    npy = tmp_path / "a.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(XorFormatError, match="not an .npz archive"):
        load_xor(npy)
    with pytest.raises(XorFormatError, match="no such file"):
        load_xor(tmp_path / "missing.npz")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04" + b"\0" * 40)
    with pytest.raises(XorFormatError, match="unreadable .npz"):
        load_xor(broken)
    pickled = tmp_path / "pickled.npz"
    with zipfile.ZipFile(pickled, "w") as z, z.open("version.npy", "w") as f:
        np.lib.format.write_array(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(XorFormatError, match="unreadable .npz"):
        load_xor(pickled)


def test_weights_object_checks_itself():
    rng = np.random.default_rng(1)
    w = _weights(rng)
    with pytest.raises(XorFormatError, match="field 'x'"):
        XorWeights(params=w.params, shape=w.shape, m=w.m, alpha=w.alpha, x=w.x[:-1], patch_counts=w.patch_counts,
                   patch_positions=w.patch_positions)
    with pytest.raises(XorFormatError, match="field 'patch_positions'"):
        XorWeights(params=w.params, shape=w.shape, m=w.m, alpha=w.alpha, x=w.x, patch_counts=w.patch_counts,
                   patch_positions=w.patch_positions[:-1])


def test_dense_needs_a_mask_and_zeroes_pruned_weights():
    rng = np.random.default_rng(2)
    w = _weights(rng, with_mask=False)
    with pytest.raises(ValueError, match="no mask"):
        w.dense()
    mask = rng.random(w.shape) < 0.5
    dense = w.dense(mask)
    assert (dense[~mask] == 0).all()
    assert np.array_equal(dense, bcq_dequantize(w.alpha, w.planes(), mask))
