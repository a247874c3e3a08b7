"""Golden model of the binary-index-matrix mask format: params, Boolean product, tile layout, the .npz file."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hw.spec import bim as golden
from hw.spec.bim import (
    BimFormatError,
    BimMask,
    BimParams,
    boolean_product,
    decode,
    from_tiles,
    tile_grid,
    tiles_to_mask,
    to_tiles,
)

# --- params ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, field", [
    ({"m_t": 0}, "m_t"), ({"n_t": 0}, "n_t"), ({"r": 0}, "r"), ({"r": -2}, "r"),
    ({"m_t": 2.0}, "m_t"), ({"n_t": True}, "n_t"), ({"r": "3"}, "r"),
])
def test_params_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field} must be") as info:
        BimParams(**{"m_t": 4, "n_t": 5, "r": 2, **kwargs})
    assert "\n" not in str(info.value)


def test_params_frozen_and_rank_may_exceed_the_tile():
    params = BimParams(4, 6, 9)  # r > min(m_t, n_t) is allowed
    assert params.tile_bits == 9 * (4 + 6)
    with pytest.raises(AttributeError):
        params.r = 3
    assert BimParams(np.int64(8), 8, 1) == BimParams(8, 8, 1)


# --- Boolean product -------------------------------------------------------------------------------------


def _product_loop(p: np.ndarray, z: np.ndarray) -> np.ndarray:
    """One tile, in plain Python."""
    m, r = p.shape
    n = z.shape[1]
    return np.array([[any(bool(p[i, k]) and bool(z[k, j]) for k in range(r)) for j in range(n)] for i in range(m)],
                    dtype=bool).reshape(m, n)


@given(st.integers(0, 3), st.integers(1, 9), st.integers(1, 9), st.integers(1, 6), st.floats(0.05, 0.95),
       st.integers(0, 2**32 - 1))
@settings(max_examples=80, deadline=None)
def test_boolean_product_matches_matmul_and_a_plain_loop(tiles, m, n, r, density, seed):
    rng = np.random.default_rng(seed)
    p = rng.random((tiles, 2, m, r)) < density
    z = rng.random((tiles, 2, r, n)) < density
    out = boolean_product(p, z)
    assert out.dtype == bool and out.shape == (tiles, 2, m, n)
    assert np.array_equal(out, (p.astype(np.int64) @ z.astype(np.int64)) > 0)
    for index in np.ndindex(tiles, 2):
        assert np.array_equal(out[index], _product_loop(p[index], z[index]))


def test_boolean_product_by_hand():
    p = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    z = np.array([[1, 1, 0], [0, 1, 1]])
    assert boolean_product(p, z).astype(int).tolist() == [[1, 1, 0], [0, 1, 1], [1, 1, 1], [0, 0, 0]]
    # OR, not XOR or a sum: two ranks covering one entry still give one bit.
    assert boolean_product(np.ones((1, 2)), np.ones((2, 1))).tolist() == [[True]]


def test_boolean_product_broadcasts_leading_dims_and_rejects_bad_input():
    z = np.eye(3, dtype=bool)
    p = np.random.default_rng(0).random((5, 4, 3)) < 0.5
    assert np.array_equal(boolean_product(p, z), p)
    with pytest.raises(ValueError, match="disagree"):
        boolean_product(np.ones((4, 3)), np.ones((2, 5)))
    with pytest.raises(ValueError, match="do not broadcast"):
        boolean_product(np.ones((2, 4, 3)), np.ones((3, 3, 5)))
    with pytest.raises(ValueError, match="^p must hold booleans or 0/1"):
        boolean_product(np.full((2, 2), 2), np.ones((2, 2)))
    with pytest.raises(ValueError, match="^z must hold booleans or 0/1"):
        boolean_product(np.ones((2, 2)), np.full((2, 2), 0.5))


# --- tile layout -----------------------------------------------------------------------------------------


def test_tiles_to_mask_layout_by_hand():
    # shape (3, 5), tiles 2 x 3: a 2 x 2 grid, the bottom row of tiles and the right column padded.
    p = np.zeros((2, 2, 2, 1), dtype=bool)
    z = np.zeros((2, 2, 1, 3), dtype=bool)
    p[0, 1, 1, 0] = True   # tile (0, 1), its row 1
    z[0, 1, 0, :] = True   # all its columns: mask row 1, columns 3, 4 (column 5 is padding)
    p[1, 0, :, 0] = True   # tile (1, 0): both rows (row 4 is padding)
    z[1, 0, 0, 2] = True   # column 2: mask row 2, column 2
    mask = tiles_to_mask(p, z, (3, 5))
    expected = np.zeros((3, 5), dtype=bool)
    expected[1, 3:5] = True
    expected[2, 2] = True
    assert np.array_equal(mask, expected)


@given(st.integers(1, 23), st.integers(1, 23), st.integers(1, 8), st.integers(1, 8), st.integers(1, 4),
       st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_tiles_to_mask_matches_a_full_matrix_loop(rows, cols, m_t, n_t, r, seed):
    rng = np.random.default_rng(seed)
    t_r, t_c = tile_grid((rows, cols), m_t, n_t)
    p = rng.random((t_r, t_c, m_t, r)) < 0.4
    z = rng.random((t_r, t_c, r, n_t)) < 0.4
    mask = tiles_to_mask(p, z, (rows, cols))
    expected = np.zeros((rows, cols), dtype=bool)
    for i in range(rows):
        for j in range(cols):
            a, b = i // m_t, j // n_t
            expected[i, j] = any(p[a, b, i % m_t, k] and z[a, b, k, j % n_t] for k in range(r))
    assert np.array_equal(mask, expected)
    # Padding bits are cut off: setting them all changes nothing.
    p_pad, z_pad = p.copy(), z.copy()
    p_pad[-1, :, rows - (t_r - 1) * m_t:, :] = True
    z_pad[:, -1, :, cols - (t_c - 1) * n_t:] = True
    assert np.array_equal(tiles_to_mask(p_pad, z_pad, (rows, cols)), mask)


def test_to_tiles_round_trip_and_padding():
    a = np.arange(35).reshape(5, 7)
    tiles = to_tiles(a, 2, 3, fill=-1)
    assert tiles.shape == (3, 3, 2, 3)
    assert tiles[0, 1].tolist() == [[3, 4, 5], [10, 11, 12]]
    assert tiles[2, 2].tolist() == [[34, -1, -1], [-1, -1, -1]]
    assert np.array_equal(from_tiles(tiles, (5, 7)), a)
    with pytest.raises(ValueError, match="do not cover"):
        from_tiles(tiles, (7, 7))


def test_tiles_to_mask_rejects_disagreeing_factors():
    with pytest.raises(ValueError, match="disagree"):
        tiles_to_mask(np.zeros((1, 2, 4, 2), bool), np.zeros((1, 2, 3, 4), bool), (4, 8))
    with pytest.raises(ValueError, match="do not cover"):
        tiles_to_mask(np.zeros((1, 2, 4, 2), bool), np.zeros((1, 2, 2, 4), bool), (4, 9))


# --- the mask object and its file ------------------------------------------------------------------------


def _random_mask(rng: np.random.Generator, rows=11, cols=20, m_t=4, n_t=8, r=3) -> BimMask:
    t_r, t_c = tile_grid((rows, cols), m_t, n_t)
    return BimMask(shape=(rows, cols), params=BimParams(m_t, n_t, r), p=rng.random((t_r, t_c, m_t, r)) < 0.5,
                   z=rng.random((t_r, t_c, r, n_t)) < 0.5)


def test_mask_object_index_bits_apply_and_checks():
    m = _random_mask(np.random.default_rng(1))
    assert m.grid == (3, 3)
    assert m.index_bits() == 9 * 3 * (4 + 8)
    w = np.random.default_rng(2).standard_normal((11, 20)).astype(np.float32)
    dense = m.apply(w)
    assert dense.dtype == np.float32 and np.array_equal(dense[m.mask()], w[m.mask()])
    assert (dense[~m.mask()] == 0).all() and not np.signbit(dense[~m.mask()]).any()
    with pytest.raises(ValueError, match="values must have shape"):
        m.apply(w.T)
    with pytest.raises(BimFormatError, match="field 'p'"):
        BimMask(shape=m.shape, params=m.params, p=m.p[:, :2], z=m.z)
    with pytest.raises(BimFormatError, match="field 'z'"):
        BimMask(shape=m.shape, params=m.params, p=m.p, z=m.z.astype(np.uint8))
    with pytest.raises(BimFormatError, match="field 'shape'"):
        BimMask(shape=(0, 20), params=m.params, p=m.p, z=m.z)
    with pytest.raises(BimFormatError, match="field 'params'"):
        BimMask(shape=m.shape, params=(4, 8, 3), p=m.p, z=m.z)


@given(st.integers(0, 2**32 - 1), st.integers(1, 30), st.integers(1, 30), st.integers(1, 9), st.integers(1, 9),
       st.integers(1, 5))
@settings(max_examples=40, deadline=None)
def test_file_round_trip(tmp_path_factory, seed, rows, cols, m_t, n_t, r):
    m = _random_mask(np.random.default_rng(seed), rows, cols, m_t, n_t, r)
    path = tmp_path_factory.mktemp("bim") / "w.bim.npz"
    m.save(path)
    back = BimMask.load(path)
    assert back.shape == m.shape and back.params == m.params
    assert np.array_equal(back.p, m.p) and np.array_equal(back.z, m.z)
    assert np.array_equal(decode(path), m.mask())


def test_file_fields_by_hand(tmp_path: Path):
    m = BimMask(shape=(2, 3), params=BimParams(2, 3, 1), p=np.array([[[[1], [0]]]], dtype=bool),
                z=np.array([[[[1, 0, 1]]]], dtype=bool))
    m.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as npz:
        fields = {k: npz[k] for k in npz.files}
    assert sorted(fields) == sorted(golden._FIELDS)
    assert int(fields["version"]) == 1 and fields["shape"].tolist() == [2, 3]
    assert fields["p"].tolist() == [0b10000000] and fields["z"].tolist() == [0b10100000]  # MSB first


def _fields(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _rewrite(path: Path, fields: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **fields)


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    path = tmp_path / "w.bim.npz"
    _random_mask(np.random.default_rng(5)).save(path)  # 9 tiles: p 108 bits, z 216 bits
    return path


@pytest.mark.parametrize("field", list(golden._FIELDS))
def test_missing_field_is_named(good_file, field):
    fields = _fields(good_file)
    del fields[field]
    _rewrite(good_file, fields)
    with pytest.raises(BimFormatError, match=f"missing field '{field}'"):
        BimMask.load(good_file)


def _set_padding_bit(fields):
    p = fields["p"].copy()
    p[-1] |= 1  # 108 bits: the last byte's low four bits are padding
    return {"p": p}


@pytest.mark.parametrize("change, field, message", [
    (lambda f: {"version": np.int64(2)}, "version", "unknown version 2"),
    (lambda f: {"version": np.float64(1)}, "version", "integer scalar"),
    (lambda f: {"m_t": np.int64(0)}, "m_t", "m_t must be >= 1"),
    (lambda f: {"n_t": np.array([8])}, "n_t", "integer scalar"),
    (lambda f: {"r": np.int64(-1)}, "r", "r must be >= 1"),
    (lambda f: {"r": np.int64(4)}, "p", "bytes, expected"),
    (lambda f: {"shape": np.array([11, 0])}, "shape", "positive"),
    (lambda f: {"shape": np.array([11.0, 20.0])}, "shape", "positive integers"),
    (lambda f: {"shape": np.array([11, 20, 1])}, "shape", "positive integers"),
    (lambda f: {"shape": np.array([23, 20])}, "p", "bytes, expected"),
    (lambda f: {"p": f["p"][:-1]}, "p", "bytes, expected"),
    (lambda f: {"z": np.append(f["z"], np.uint8(0))}, "z", "bytes, expected"),
    (lambda f: {"p": f["p"].astype(np.int16)}, "p", "uint8"),
    (lambda f: {"z": f["z"].reshape(-1, 1)}, "z", "1-D uint8"),
    (_set_padding_bit, "p", "padding bits are not zero"),
])
def test_malformed_file_is_rejected_naming_the_field(good_file, change, field, message):
    fields = _fields(good_file)
    fields.update(change(fields))
    _rewrite(good_file, fields)
    with pytest.raises(BimFormatError) as info:
        BimMask.load(good_file)
    text = str(info.value)
    assert f"field '{field}'" in text and message in text and "\n" not in text
    assert text.startswith(str(good_file))


def test_not_an_npz_and_pickles_are_rejected(tmp_path: Path):
    npy = tmp_path / "a.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(BimFormatError, match="not an .npz archive"):
        BimMask.load(npy)
    with pytest.raises(BimFormatError, match="no such file"):
        BimMask.load(tmp_path / "missing.npz")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04" + b"\0" * 40)
    with pytest.raises(BimFormatError, match="unreadable .npz"):
        BimMask.load(broken)
    pickled = tmp_path / "pickled.npz"
    with zipfile.ZipFile(pickled, "w") as z, z.open("version.npy", "w") as f:
        np.lib.format.write_array(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BimFormatError, match="unreadable .npz"):
        BimMask.load(pickled)
