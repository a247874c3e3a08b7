"""The FC layer's golden model against loop oracles, its tile-major layout against a direct construction, and
the FC engine's stream spec (`hw.spec.fc_stream`) by round trips."""

from __future__ import annotations

import numpy as np
import pytest

from host.compress.xor import encode_slices
from hw.spec.arith import round_shift
from hw.spec.bim import tiles_to_mask
from hw.spec.bim_stream import UnpackerBeatFormat, tiles_to_beats, unpack_beats
from hw.spec.fc import FcLayout, fc_accumulate, fc_fixed
from hw.spec.fc_stream import (
    FcLayer,
    FcStreamFormat,
    layer_streams,
    output_beats,
    tile_major_mask_rows,
    xor_targets,
)
from hw.spec.fields import bits_to_int
from hw.spec.xor import decode_slices, xor_matrix
from hw.spec.xor_stream import BeatFormat


def loop_fc(x, planes, mask, a, bias, shift: int, relu: bool, out_bits: int = 8) -> list[int]:
    """The layer straight from its definition, one weight at a time, in Python integers."""
    q, rows, cols = planes.shape
    lim = 1 << (out_bits - 1)
    out = []
    for r in range(rows):
        acc = int(bias[r])
        for i in range(q):
            s = sum((1 if planes[i, r, c] else -1) * int(x[c]) for c in range(cols) if mask[r, c])
            acc += int(a[r, i]) * s
        v = (acc + (1 << (shift - 1))) >> shift if shift else acc
        v = min(lim - 1, max(-lim, v))
        out.append(max(v, 0) if relu else v)
    return out


@pytest.mark.parametrize("q, rows, cols, a_bits, shift, relu", [
    (1, 5, 7, 16, 9, True), (2, 3, 11, 16, 12, False), (3, 4, 4, 8, 0, False), (2, 6, 9, 32, 40, False),
    (1, 1, 1, 1, 62, True), (4, 2, 13, 20, 20, True),
])
def test_fc_fixed_matches_loops(q, rows, cols, a_bits, shift, relu):
    rng = np.random.default_rng(q * 100 + rows * 10 + cols)
    planes = rng.integers(0, 2, size=(q, rows, cols))
    mask = rng.random((rows, cols)) < 0.6
    a = rng.integers(0, 1 << a_bits, size=(rows, q), dtype=np.int64)
    x = rng.integers(-128, 128, size=cols)
    x[0] = -128  # the asymmetric end of int8
    bias = rng.integers(-(1 << 31), 1 << 31, size=rows) >> rng.integers(0, 31, size=rows)
    assert fc_fixed(x, planes, mask, a, bias, shift, relu).tolist() == loop_fc(x, planes, mask, a, bias, shift, relu)
    acc = fc_accumulate(x, planes, mask, a)
    assert acc.tolist() == [v - int(b) for v, b in zip(loop_fc(x, planes, mask, a, bias, 0, False, 64), bias)]
    # A batch of vectors: each row of the result is the single-vector result.
    xs = rng.integers(-128, 128, size=(3, cols))
    batch = fc_fixed(xs, planes, mask, a, bias, shift, relu, out_bits=12)
    assert batch.tolist() == [loop_fc(v, planes, mask, a, bias, shift, relu, 12) for v in xs]


def test_round_shift_is_half_up():
    v = np.arange(-40, 41)
    for s in (0, 1, 2, 3, 7):
        expected = [int(np.floor(k / 2**s + 0.5)) for k in v.tolist()]
        assert round_shift(v, s).tolist() == expected
    assert round_shift(np.array([-(1 << 40), (1 << 40) - 1]), 62).tolist() == [0, 0]


def test_fc_fixed_rejects_bad_inputs():
    planes, mask, a = np.ones((1, 2, 3)), np.ones((2, 3), dtype=bool), np.ones((2, 1))
    with pytest.raises(ValueError, match="shift must be in 0..62, got 63"):
        fc_fixed(np.zeros(3, dtype=int), planes, mask, a, np.zeros(2), 63, False)
    with pytest.raises(ValueError, match="shapes disagree"):
        fc_accumulate(np.zeros(4, dtype=int), planes, mask, a)
    with pytest.raises(ValueError, match="activations must be integers"):
        fc_accumulate(np.zeros(3), planes, mask, a)


def direct_tile_major(a: np.ndarray, m_t: int, n_t: int, fill) -> tuple[list[list], list[int], list[int]]:
    """Rows of the tile-major matrix, their original rows and column tiles, built tile by tile."""
    rows, cols = a.shape
    out, row_of, col_tile_of = [], [], []
    for ta in range(-(-rows // m_t)):
        for tb in range(-(-cols // n_t)):
            for i in range(m_t):
                r = ta * m_t + i
                out.append([a[r, tb * n_t + j] if r < rows and tb * n_t + j < cols else fill for j in range(n_t)])
                row_of.append(r)
                col_tile_of.append(tb)
    return out, row_of, col_tile_of


@pytest.mark.parametrize("shape, m_t, n_t", [((5, 7), 2, 3), ((6, 6), 3, 2), ((1, 1), 4, 4), ((9, 4), 9, 4),
                                             ((10, 13), 1, 5), ((3, 20), 2, 20)])
def test_tile_major_matches_direct_construction(shape, m_t, n_t):
    a = np.arange(shape[0] * shape[1]).reshape(shape)
    layout = FcLayout(m_t, n_t)
    rows, row_of, col_tile_of = direct_tile_major(a, m_t, n_t, -1)
    assert layout.tile_major(a, fill=-1).tolist() == rows
    assert layout.row_of(shape).tolist() == row_of
    assert layout.col_tile_of(shape).tolist() == col_tile_of
    assert np.array_equal(layout.from_tile_major(layout.tile_major(a), shape), a)
    with pytest.raises(ValueError, match="tile-major"):
        layout.from_tile_major(layout.tile_major(a)[1:], shape)


def test_layout_rejects_bad_tiles():
    with pytest.raises(ValueError, match="m_t must be >= 1, got 0"):
        FcLayout(0, 4)
    with pytest.raises(ValueError, match="n_t must be an integer, got True"):
        FcLayout(2, True)


# --- the stream spec --------------------------------------------------------------------------------------------

FMT = FcStreamFormat(n_t=8, m_t=3, r=2, n_in=5, max_patches=2, max_rows=20, max_cols=40, max_bits=3, a_bits=6,
                     bias_bits=14, shift_bits=5)


def test_cfg_scale_x_round_trip():
    for values in [(1, 1, 1, 0, False), (20, 40, 3, 31, True), (7, 13, 2, 5, True)]:
        beat = FMT.pack_cfg(*values)
        assert FMT.unpack_cfg(beat) == dict(zip(("rows", "cols", "bits", "shift", "relu"), map(int, values)))
    assert beat < 1 << sum(width for _, width in FMT.cfg_fields)
    a = np.array([[0, 63], [17, 1], [5, 9]])
    bias = np.array([-(1 << 13), (1 << 13) - 1, -1])
    beats = FMT.pack_scale(a, bias)
    assert [FMT.unpack_scale(b) for b in beats] == [([0, 63, 0], -8192), ([17, 1, 0], 8191), ([5, 9, 0], -1)]
    assert max(beats) < 1 << FMT.scale_width
    assert FMT.pack_x(np.array([-128, -1, 0, 127])) == [0x80, 0xFF, 0, 0x7F]
    assert output_beats(np.array([-128, 5])) == [0x80, 5]


@pytest.mark.parametrize("call, message", [
    (lambda: FMT.pack_cfg(0, 5, 1, 0, False), r"^rows must be in 1\.\.20, got 0\.\.0$"),
    (lambda: FMT.pack_cfg(3, 41, 1, 0, False), r"^cols must be in 1\.\.40, got 41\.\.41$"),
    (lambda: FMT.pack_cfg(3, 5, 4, 0, False), r"^bits must be in 1\.\.3, got 4\.\.4$"),
    (lambda: FMT.pack_cfg(3, 5, 1, 32, False), r"^shift must be in 0\.\.31, got 32\.\.32$"),
    (lambda: FcStreamFormat(8, 3, 2, 5, 2, 20, 40, 3).pack_cfg(3, 5, 1, 63, False), r"^shift must be in 0\.\.62"),
    (lambda: FMT.pack_scale(np.array([[64]]), np.array([0])), r"^a must be in 0\.\.63, got 64\.\.64$"),
    (lambda: FMT.pack_scale(np.array([[-1]]), np.array([0])), r"^a must be in 0\.\.63, got -1\.\.-1$"),
    (lambda: FMT.pack_scale(np.array([[1]]), np.array([1 << 13])), r"^bias_q must be in -8192\.\.8191"),
    (lambda: FMT.pack_scale(np.ones((2, 4)), np.zeros(2)), r"^a must be \(rows, q <= 3\)"),
    (lambda: FMT.pack_x(np.array([128])), r"^x must be in -128\.\.127, got 128\.\.128$"),
    (lambda: FMT.pack_x(np.zeros(3)), r"^x must be a 1-D integer vector"),
    (lambda: output_beats(np.array([-129])), r"^y must be in -128\.\.127"),
])
def test_stream_values_validated(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def random_layer(fmt: FcStreamFormat, m: np.ndarray, rows: int, cols: int, q: int, rng: np.random.Generator):
    """A random compressed layer of this format, its planes and mask."""
    layout = fmt.layout
    t_r, t_c = layout.grid((rows, cols))
    p = rng.random((t_r, t_c, fmt.m_t, fmt.r)) < 0.5
    z = rng.random((t_r, t_c, fmt.r, fmt.n_t)) < 0.4
    mask = tiles_to_mask(p, z, (rows, cols))
    planes = rng.integers(0, 2, size=(q, rows, cols), dtype=np.uint8)
    xor_x, counts, positions = encode_slices(m, *xor_targets(planes, mask, layout))
    layer = FcLayer(cols=cols, xor_x=xor_x, patch_counts=counts, patch_positions=positions, p=p, z=z,
                    a=rng.integers(0, 1 << fmt.a_bits, size=(rows, q)), bias_q=rng.integers(-99, 99, size=rows),
                    shift=4, relu=True)
    return layer, planes, mask


def parse_xor_beats(fmt: FcStreamFormat, beats: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slices (x, counts, positions) back from decoder beats."""
    beat_fmt = BeatFormat(fmt.n_in, fmt.n_t, fmt.max_patches)
    xs, counts, positions, count, first = [], [], [], 0, True
    for beat in beats:
        x, pos, n, last = beat_fmt.unpack(beat)
        if first:
            xs.append([x >> i & 1 for i in range(fmt.n_in)])
        positions += pos[:n]
        count += n
        first = last
        if last:
            counts.append(count)
            count = 0
    return np.array(xs, dtype=np.uint8), np.array(counts), np.array(positions)


@pytest.mark.parametrize("rows, cols, q", [(7, 19, 2), (3, 8, 1), (1, 1, 3), (20, 40, 3)])
def test_layer_streams_round_trip(rows, cols, q):
    rng = np.random.default_rng(rows * cols + q)
    m = xor_matrix(FMT.n_t, FMT.n_in, 3)
    layer, planes, mask = random_layer(FMT, m, rows, cols, q, rng)
    x = rng.integers(-128, 128, size=cols)
    streams = layer_streams(FMT, layer, x)
    assert FMT.unpack_cfg(streams["cfg"][0]) == {"rows": rows, "cols": cols, "bits": q, "shift": 4, "relu": 1}
    assert [v - 256 * (v >> 7) for v in streams["x"]] == x.tolist()
    assert [FMT.unpack_scale(b)[0][:q] for b in streams["scale"]] == layer.a.tolist()
    assert [FMT.unpack_scale(b)[1] for b in streams["scale"]] == layer.bias_q.tolist()

    # XOR: slice k of plane i decodes to tile-major row k of plane i on every kept weight.
    slices = parse_xor_beats(FMT, streams["xor"])
    decoded = decode_slices(m, *slices).reshape(q, -1, FMT.n_t)
    care = FMT.layout.tile_major(mask, fill=False)
    for i in range(q):
        assert np.array_equal(decoded[i][care], FMT.layout.tile_major(planes[i])[care])
    assert np.array_equal(layer.planes(m) * mask, planes * mask)

    # BIM: the unpacker gives the tile-major mask rows once per plane (padding bits included).
    rows_out = unpack_beats(streams["bim"], FMT.n_t, FMT.r)
    one_plane = [bits_to_int(row) for row in tile_major_mask_rows(layer)]
    assert [row & ((1 << FMT.n_t) - 1) for row in rows_out] == one_plane * q
    assert np.array_equal(FMT.layout.from_tile_major(tile_major_mask_rows(layer), (rows, cols)), mask)
    # q canonical one-plane streams, concatenated, are the same rows.
    per_plane = tiles_to_beats(layer.p.reshape(-1, FMT.m_t, FMT.r), layer.z.reshape(-1, FMT.r, FMT.n_t)) * q
    assert unpack_beats(per_plane, FMT.n_t, FMT.r) == rows_out
    assert len(per_plane) - len(streams["bim"]) == (q - 1) * FMT.r
    assert UnpackerBeatFormat(FMT.n_t, FMT.r).width > FMT.n_t

    assert np.array_equal(layer.output(m, x), fc_fixed(x, planes, mask, layer.a, layer.bias_q, 4, True))
    assert layer.output(m, x).tolist() == loop_fc(x, planes, mask, layer.a, layer.bias_q, 4, True)


def test_layer_streams_rejects_mismatches():
    rng = np.random.default_rng(0)
    m = xor_matrix(FMT.n_t, FMT.n_in, 3)
    layer, _, _ = random_layer(FMT, m, 5, 9, 2, rng)
    with pytest.raises(ValueError, match=r"^x must have shape \(9,\)"):
        layer_streams(FMT, layer, np.zeros(8, dtype=int))
    other = FcStreamFormat(8, 2, 2, 5, 2, 20, 40, 3)
    with pytest.raises(ValueError, match="^p and z must be"):
        layer_streams(other, layer, np.zeros(9, dtype=int))
    with pytest.raises(ValueError, match=r"^bits must be in 1\.\.1"):
        layer_streams(FcStreamFormat(8, 3, 2, 5, 2, 20, 40, 1), layer, np.zeros(9, dtype=int))
    with pytest.raises(ValueError, match="^planes .* and mask .* disagree"):
        xor_targets(np.zeros((1, 3, 4)), np.zeros((3, 5), dtype=bool), FMT.layout)
