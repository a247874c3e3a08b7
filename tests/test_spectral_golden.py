"""Golden model of SPEC2 spectral convolution: the float OaA operator against direct convolution, Hermitian
half spectra, the fixed-point FFT against a scalar reading of its spec and against numpy, the fixed-point
layer stage by stage, and its SQNR."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host.compress.spectral import calibrate, compress_spatial, layer_from_half
from hw.spec.arith import round_shift
from hw.spec.spectral.fixed import (
    SpectralFixed,
    bit_reverse,
    canvas_scale,
    fft2_fixed,
    fft_bounds,
    fft_fixed,
    ifft2_fixed,
    ifft_input,
    layer_sqnr,
    quant_params,
    requantize,
    spectral_conv_fixed,
    spectral_conv_fixed_stages,
    spectral_mac,
    sqnr_db,
    twiddles,
)
from hw.spec.spectral.geometry import (
    OaaParams,
    canonical_mask,
    complete_half,
    half_to_full,
    kernel_spectrum,
    self_conjugate_mask,
)
from hw.spec.spectral.layer import QuantParams, stream_entries
from hw.spec.spectral.operator import conv2d_float, overlap_add, spectral_conv_float, tile_input

SPEC = SpectralFixed()

# --- the float operator ----------------------------------------------------------------------------------


def _direct_conv(x: np.ndarray, w: np.ndarray, padding: str) -> np.ndarray:
    """torch.nn.Conv2d's cross-correlation, tap by tap: y[o] += w[o, i, u, v] * x_pad[i, u:, v:]."""
    c_out, c_in, k, _ = w.shape
    lo = (k - 1) // 2 if padding == "same" else 0
    hi = k - 1 - lo if padding == "same" else 0
    xp = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(lo, hi), (lo, hi)])
    h_out, w_out = xp.shape[-2] - k + 1, xp.shape[-1] - k + 1
    y = np.zeros((*x.shape[:-3], c_out, h_out, w_out))
    for o in range(c_out):
        for i in range(c_in):
            for u in range(k):
                for v in range(k):
                    y[..., o, :, :] += w[o, i, u, v] * xp[..., i, u:u + h_out, v:v + w_out]
    return y


@st.composite
def _conv_case(draw):
    n = draw(st.sampled_from([4, 8, 16]))
    k = draw(st.integers(1, min(5, n)))
    oaa = OaaParams(n, k, draw(st.integers(1, n - k + 1)), draw(st.sampled_from(["same", "valid"])))
    shape = (draw(st.integers(1, 3)), draw(st.integers(k, 19)), draw(st.integers(k, 19)))
    return oaa, shape, draw(st.integers(1, 3)), draw(st.integers(0, 2**32 - 1))


@given(_conv_case())
@settings(max_examples=60, deadline=None)
def test_oaa_equals_direct_convolution(case):
    oaa, (c_in, h, w), c_out, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, c_in, h, w))
    kernels = rng.standard_normal((c_out, c_in, oaa.k, oaa.k))
    y = conv2d_float(x, kernels, oaa)
    expected = _direct_conv(x, kernels, oaa.padding)
    assert y.shape == expected.shape == (2, c_out, *oaa.output_shape(h, w))
    assert np.abs(y - expected).max() <= 1e-12 * max(1.0, np.abs(expected).max()) * c_in * oaa.k**2


@pytest.mark.parametrize("oaa, shape", [
    (OaaParams(8, 3, 6, "same"), (3, 13, 17)), (OaaParams(8, 3, 6, "valid"), (3, 13, 17)),
    (OaaParams(8, 4, 5, "same"), (2, 9, 11)), (OaaParams(8, 5, 4, "valid"), (1, 28, 28)),
    (OaaParams(16, 3, 14, "same"), (2, 15, 30)),
])
def test_oaa_matches_scipy_and_torch(oaa, shape):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((2, shape[0], oaa.k, oaa.k))
    y = conv2d_float(x, w, oaa)
    signal = pytest.importorskip("scipy.signal")
    lo = (oaa.k - 1) // 2 if oaa.padding == "same" else 0
    xp = np.pad(x, [(0, 0), (lo, oaa.k - 1 - lo), (lo, oaa.k - 1 - lo)]) if oaa.padding == "same" else x
    ref = np.stack([sum(signal.correlate2d(xp[i], w[o, i], mode="valid") for i in range(shape[0])) for o in range(2)])
    assert np.allclose(y, ref, rtol=0, atol=1e-11)
    torch = pytest.importorskip("torch")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that an even kernel with padding="same" pads a copy
        ref_t = torch.nn.functional.conv2d(torch.tensor(x)[None], torch.tensor(w), padding=oaa.padding)[0].numpy()
    assert np.allclose(y, ref_t, rtol=0, atol=1e-11)


def test_geometry_validation_names_the_field():
    for kwargs, field in [({"n": 6}, "n must be a power"), ({"n": 2}, r"n must be a power of two in 4\.\.256, got 2"),
                          ({"k": 0}, "k must be"), ({"l": 7}, "n must be >= l"),
                          ({"padding": "full"}, "padding must be"), ({"l": 2.0}, "l must be an integer")]:
        with pytest.raises(ValueError, match=f"^{field}"):
            OaaParams(**kwargs)
    assert OaaParams().bins == 40 and OaaParams().crop == 1 and OaaParams(k=4, l=5).crop == 2
    assert OaaParams(padding="valid").output_shape(10, 12) == (8, 10)
    with pytest.raises(ValueError, match="at least 3 x 3"):
        OaaParams(padding="valid").output_shape(2, 12)


def test_tiles_and_overlap_add_by_hand():
    oaa = OaaParams(4, 2, 3)
    x = np.arange(2 * 4 * 5).reshape(2, 4, 5)
    t = tile_input(x, oaa)
    assert t.shape == (2, 2, 2, 4, 4) and t.dtype == x.dtype
    assert t[1, 1, 0, :1, :3].tolist() == [[35, 36, 37]] and (t[1, 1, 0, 1:] == 0).all() and (t[..., 3] == 0).all()
    assert t[0, 0, 1, :3, :2].tolist() == [[3, 4], [8, 9], [13, 14]]
    canvas = overlap_add(np.ones((2, 3, 4, 4), dtype=np.int64), 3)  # overlap of 1 between neighbours
    assert canvas.shape == (7, 10)
    assert canvas[0].tolist() == [1, 1, 1, 2, 1, 1, 2, 1, 1, 1]
    assert canvas[3, 3] == 4 and canvas[3, 4] == 2 and canvas[6, 9] == 1
    # Tile outputs wider than two tiles (n - l > l) overlap three deep.
    assert overlap_add(np.ones((1, 4, 8, 8)), 3)[0].tolist()[:12] == [1, 1, 1, 2, 2, 2, 3, 3, 2, 3, 3, 2]


# --- Hermitian half spectra ------------------------------------------------------------------------------


def _random_half(rng: np.random.Generator, shape: tuple[int, ...], n: int, density: float = 1.0) -> np.ndarray:
    half = rng.standard_normal((*shape, n, n // 2 + 1)) + 1j * rng.standard_normal((*shape, n, n // 2 + 1))
    half = np.where(self_conjugate_mask(n), half.real, half)
    return np.where(canonical_mask(n) & (rng.random(half.shape) < density), half, 0)


def test_canonical_bins_count():
    for n in (4, 8, 16, 64):
        assert canonical_mask(n).sum() == n * (n // 2 - 1) + 2 * (n // 2 + 1)
        assert self_conjugate_mask(n).sum() == 4
        assert (canonical_mask(n) | ~self_conjugate_mask(n)).all()
    assert canonical_mask(8).sum() == 34


@pytest.mark.parametrize("n", [4, 8, 16])
def test_sparse_half_is_hermitian_and_its_ifft_real(n):
    rng = np.random.default_rng(n)
    half = _random_half(rng, (3,), n, density=0.3)
    full = half_to_full(half)
    neg = (-np.arange(n)) % n
    assert np.allclose(full, np.conj(full[:, neg][:, :, neg]), rtol=0, atol=0)
    assert np.array_equal(full[..., : n // 2 + 1][:, canonical_mask(n)], half[:, canonical_mask(n)])
    spatial = np.fft.ifft2(full)
    assert np.abs(spatial.imag).max() < 1e-15 * n * n
    assert np.allclose(np.fft.irfft2(complete_half(half), s=(n, n)), spatial.real, rtol=0, atol=1e-14)
    assert np.allclose(np.fft.rfft2(spatial.real), complete_half(half), rtol=0, atol=1e-13)


def test_kernel_spectrum_is_the_flipped_kernels_dft():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((2, 3, 3, 3))
    half = kernel_spectrum(w, 8)
    padded = np.zeros((2, 3, 8, 8))
    padded[..., :3, :3] = w[..., ::-1, ::-1]
    assert np.allclose(half_to_full(half), np.fft.fft2(padded), rtol=0, atol=1e-13)
    assert np.array_equal(complete_half(half), half)  # an rfft2 half is already consistent


def _oaa_tile_loops(x: np.ndarray, layer) -> np.ndarray:
    """The layer's operator tile by tile with full complex FFTs (one input map)."""
    o = layer.oaa
    n, l = o.n, o.l  # noqa: E741
    full = half_to_full(layer.half_spectrum())
    tr, tc = -(-x.shape[1] // l), -(-x.shape[2] // l)
    canvas = np.zeros((layer.c_out, tr * l + n - l, tc * l + n - l))
    for r in range(tr):
        for c in range(tc):
            tile = np.zeros((layer.c_in, n, n))
            block = x[:, r * l:(r + 1) * l, c * l:(c + 1) * l]
            tile[:, : block.shape[1], : block.shape[2]] = block
            spectra = np.fft.fft2(tile)
            for out in range(layer.c_out):
                z = np.fft.ifft2((spectra * full[out]).sum(axis=0))
                assert np.abs(z.imag).max() < 1e-9
                canvas[out, r * l:r * l + n, c * l:c * l + n] += z.real
    s = o.crop
    h_out, w_out = o.output_shape(*x.shape[1:])
    y = canvas[:, s:s + h_out, s:s + w_out] + layer.bias[:, None, None]
    return np.maximum(y, 0) if layer.relu else y


@pytest.mark.parametrize("oaa, relu", [(OaaParams(), False), (OaaParams(padding="valid"), True),
                                       (OaaParams(8, 5, 4), True), (OaaParams(16, 3, 6), False)])
def test_pruned_operator_is_tile_fft_multiply_ifft_overlap_add(oaa, relu):
    rng = np.random.default_rng(2)
    half = _random_half(rng, (3, 2), oaa.n, density=0.25)
    layer = layer_from_half(half, oaa, p=4, bias=rng.standard_normal(3), relu=relu)
    x = rng.standard_normal((2, 2, 15, 10))
    y = spectral_conv_float(x, layer)
    for b in range(2):
        assert np.allclose(y[b], _oaa_tile_loops(x[b], layer), rtol=0, atol=1e-11)
    # The pruned operator is no K x K convolution: it differs from every direct conv of the kept kernel.
    spatial = np.fft.irfft2(layer.half_spectrum(), s=(oaa.n, oaa.n))
    assert np.abs(spatial[..., oaa.k:, :]).max() > 1e-3


def test_unpruned_layer_equals_direct_convolution():
    rng = np.random.default_rng(4)
    w, bias = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    layer = compress_spatial(w, OaaParams(), sparsity=0.0, bias=bias)
    assert layer.density() == 1.0
    x = rng.standard_normal((3, 11, 14))
    expected = _direct_conv(x, w, "same") + bias[:, None, None].astype(np.float32)
    assert np.abs(spectral_conv_float(x, layer) - expected).max() < 1e-3  # int16 weights: 2^-15 relative


# --- fixed point: primitives -----------------------------------------------------------------------------


def test_round_shift_is_round_half_up():
    v = np.array([3, -3, 5, 6, -6, -5, 7, -7, 0, 1, -1])
    assert round_shift(v, 1).tolist() == [2, -1, 3, 3, -3, -2, 4, -3, 0, 1, 0]
    assert round_shift(v, 2).tolist() == [1, -1, 1, 2, -1, -1, 2, -2, 0, 0, 0]
    assert round_shift(v, 0).tolist() == v.tolist()


def test_twiddles_and_bit_reversal_by_hand():
    wr, wi = twiddles(8, 16)
    assert wr.tolist() == [16384, 11585, 0, -11585] and wi.tolist() == [0, -11585, -16384, -11585]
    assert bit_reverse(8).tolist() == [0, 4, 2, 6, 1, 5, 3, 7]
    assert bit_reverse(4).tolist() == [0, 2, 1, 3]


def _rs(v: int, s: int) -> int:
    return (v + (1 << (s - 1))) >> s if s else v


def _fft_scalar(x: list[tuple[int, int]], shifts, twiddle_bits: int, inverse: bool) -> list[tuple[int, int]]:
    """The module docstring's 1-D FFT, one butterfly at a time in Python integers."""
    n, f = len(x), twiddle_bits - 2
    bits = n.bit_length() - 1
    x = [x[int(format(k, f"0{bits}b")[::-1], 2)] for k in range(n)]
    for st_, s in enumerate(shifts):
        m = 2 << st_
        for g in range(0, n, m):
            for j in range(m // 2):
                angle = 2 * math.pi * (j * n // m) / n
                wr, wi = math.floor(math.cos(angle) * 2**f + 0.5), math.floor(-math.sin(angle) * 2**f + 0.5)
                wi = -wi if inverse else wi
                (ar, ai), (br, bi) = x[g + j], x[g + j + m // 2]
                tr, ti = _rs(wr * br - wi * bi, f), _rs(wr * bi + wi * br, f)
                x[g + j] = (_rs(ar + tr, s), _rs(ai + ti, s))
                x[g + j + m // 2] = (_rs(ar - tr, s), _rs(ai - ti, s))
    return x


@given(st.sampled_from([2, 4, 8, 16]), st.booleans(), st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_fft_fixed_is_its_scalar_spec(n, inverse, seed):
    rng = np.random.default_rng(seed)
    stages = n.bit_length() - 1
    shifts = tuple(int(s) for s in rng.integers(0, 2, stages))
    re, im = rng.integers(-3000, 3000, (3, n)), rng.integers(-3000, 3000, (3, n))
    got_r, got_i = fft_fixed(re, im, shifts, SPEC, inverse=inverse)
    for row in range(3):
        ref = _fft_scalar(list(zip(re[row].tolist(), im[row].tolist())), shifts, SPEC.twiddle_bits, inverse)
        assert list(zip(got_r[row].tolist(), got_i[row].tolist())) == ref


def test_fft2_fixed_is_rows_then_columns_of_the_scalar_spec():
    rng = np.random.default_rng(7)
    n, spec = 8, SpectralFixed()
    tile = rng.integers(-128, 128, (n, n))
    shifts, g = spec.forward_shifts(n), spec.input_shift(n)
    rows = [_fft_scalar([(int(v) << g, 0) for v in r], shifts[:3], 16, False)[: n // 2 + 1] for r in tile]
    cols = [_fft_scalar([rows[k1][k2] for k1 in range(n)], shifts[3:], 16, False) for k2 in range(n // 2 + 1)]
    re, im = fft2_fixed(tile, spec)
    assert [[(int(re[k1, k2]), int(im[k1, k2])) for k2 in range(n // 2 + 1)] for k1 in range(n)] == \
        [[cols[k2][k1] for k2 in range(n // 2 + 1)] for k1 in range(n)]
    # The inverse: columns, then rows completed by conjugates, real part.
    yr, yi = rng.integers(-60000, 60000, (2, n, n // 2 + 1))
    inv = spec.inverse_shifts(n)
    cols = [_fft_scalar(list(zip(yr[:, k2].tolist(), yi[:, k2].tolist())), inv[:3], 16, True)
            for k2 in range(n // 2 + 1)]
    out = []
    for k1 in range(n):
        row = [cols[k2][k1] for k2 in range(n // 2 + 1)]
        row += [(r, -i) for r, i in row[n // 2 - 1:0:-1]]
        out.append([r for r, _ in _fft_scalar(row, inv[3:], 16, True)])
    assert ifft2_fixed(yr, yi, spec).tolist() == out


@pytest.mark.parametrize("n, data_bits", [(4, 18), (8, 16), (8, 18), (16, 18), (32, 20)])
def test_fixed_fft2_against_numpy_within_the_bound(n, data_bits):
    spec = SpectralFixed(data_bits=data_bits)
    rng = np.random.default_rng(n + data_bits)
    tiles = rng.integers(-128, 128, (64, n, n))
    tiles[0] = 127  # a DC tile: the worst case for growth
    tiles[1] = -128
    e = spec.forward_exponent(n)
    peak, bound = fft_bounds(spec.forward_shifts(n), 128.0 * 2 ** spec.input_shift(n), spec.twiddle_bits)
    assert peak <= 2 ** (data_bits - 1) - 1
    re, im = fft2_fixed(tiles, spec)
    exact = np.fft.rfft2(tiles) * 2.0**-e
    err = np.abs(re + 1j * im - exact)
    assert err.max() <= bound and (err.max() > 0) == (n > 4)  # at n = 4 every twiddle is exact
    assert re[1, 0, 0] == -128 * n * n * 2.0**-e and (re[1] != 0).sum() == 1 and (im[:2] == 0).all()
    assert sqnr_db(exact, re + 1j * im) > 60  # measured 63-79 dB
    # The inverse from any input its clamp allows.
    lim = 1 << (spec.ifft_in_bits - 1)
    yr, yi = rng.integers(-lim, lim, (2, 64, n, n // 2 + 1))
    yr[0], yi[0] = lim - 1, -lim
    yr, yi = ifft_input(yr, yi, 0, spec)
    z = ifft2_fixed(yr, yi, spec)
    ref = np.fft.irfft2(yr + 1j * yi, s=(n, n))
    peak, bound = fft_bounds(spec.inverse_shifts(n), lim * math.sqrt(2), spec.twiddle_bits)
    assert peak <= 2 ** (data_bits - 1) - 1
    assert 0 < np.abs(z - ref).max() <= bound


def test_forward_plan_defaults_and_overflow_checks():
    assert SPEC.data_bits == 18 and SPEC.input_shift(8) == 3 and SPEC.forward_shifts(8) == (0,) * 6
    assert SPEC.forward_exponent(8) == -3 and SPEC.acc_bits == 45 and SPEC.ola_bits(OaaParams()) == 20
    assert SPEC.ola_bits(OaaParams(8, 3, 2)) == 22 and SPEC.inverse_shifts(8) == (1,) * 6
    assert SpectralFixed(data_bits=16).input_shift(8) == 1
    big = SpectralFixed(data_bits=12)  # 8-bit activations, N = 16: growth 2^8 needs shifts
    assert big.input_shift(16) == 0 and sum(big.forward_shifts(16)) == 5 and big.forward_shifts(16)[:3] == (0,) * 3
    assert SpectralFixed(data_bits=16, in_shift=3).forward_shifts(8) == (0, 0, 0, 0, 1, 1)  # shifts as late as can be
    with pytest.raises(ValueError, match="can overflow"):
        SpectralFixed(data_bits=16, in_shift=3, fwd_shifts=(0,) * 6).forward_shifts(8)
    with pytest.raises(ValueError, match="can overflow"):
        SpectralFixed(data_bits=12, fwd_shifts=(0,) * 8).forward_shifts(16)
    with pytest.raises(ValueError, match="must have 6 entries"):
        SpectralFixed(fwd_shifts=(0,) * 8).forward_shifts(8)
    with pytest.raises(OverflowError, match="stage 2"):
        fft_fixed(np.full((1, 8), 20000), np.zeros((1, 8)), (0, 0, 0), SPEC)
    with pytest.raises(ValueError, match="activations must be signed 8-bit"):
        fft2_fixed(np.full((8, 8), 128), SPEC)


@pytest.mark.parametrize("kwargs, field", [
    ({"act_bits": 1}, "act_bits"), ({"data_bits": 8}, "data_bits"), ({"twiddle_bits": 3}, "twiddle_bits"),
    ({"weight_bits": 17}, "weight_bits"), ({"out_bits": 1}, "out_bits"), ({"mult_bits": 0}, "mult_bits"),
    ({"max_c_in": 0}, "max_c_in"), ({"max_c_in": 1 << 20, "data_bits": 30}, "max_c_in"),
    ({"in_shift": -1}, "in_shift"), ({"fwd_shifts": (0, 2, 0, 0, 0, 0)}, "fwd_shifts"),
    ({"fwd_shifts": [0] * 6}, "fwd_shifts"), ({"data_bits": 18.0}, "data_bits"),
])
def test_spec_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field} must"):
        SpectralFixed(**kwargs)
    with pytest.raises(AttributeError):
        SPEC.data_bits = 3  # frozen


# --- fixed point: the layer ------------------------------------------------------------------------------


def _layer(seed: int, c_out=5, c_in=3, oaa=None, relu=False, p=4, b=None, sparsity=0.75, calib=(4, 12, 13)):
    oaa = oaa or OaaParams()
    rng = np.random.default_rng(seed)
    layer = compress_spatial(rng.standard_normal((c_out, c_in, oaa.k, oaa.k)), oaa, sparsity, p=p, b=b,
                             bias=rng.standard_normal(c_out) * 0.5, relu=relu)
    return calibrate(layer, rng.integers(-128, 128, (calib[0], c_in, *calib[1:])), 1 / 64)


def test_sparse_lane_stream_accumulates_to_the_mac():
    layer = _layer(1, p=4, b=8)
    rng = np.random.default_rng(0)
    xr, xi = fft2_fixed(tile_input(rng.integers(-128, 128, (3, 7, 9)), layer.oaa), SPEC)
    acc_r, acc_i = spectral_mac(xr, xi, layer, SPEC)
    s = stream_entries(layer)
    assert (s["re"][~s["valid"]] == 0).all() and (s["im"][~s["valid"]] == 0).all()
    ref_r, ref_i = np.zeros_like(acc_r), np.zeros_like(acc_i)
    k1, k2 = np.divmod(s["index"], layer.oaa.half_cols)
    for slot in range(s["index"].size):  # one lane product at a time, padding included, in stream order
        o, i, a, b = s["out"][slot], s["in"][slot], k1[slot], k2[slot]
        ref_r[o, ..., a, b] += xr[i, ..., a, b] * s["re"][slot] - xi[i, ..., a, b] * s["im"][slot]
        ref_i[o, ..., a, b] += xr[i, ..., a, b] * s["im"][slot] + xi[i, ..., a, b] * s["re"][slot]
    assert np.array_equal(acc_r, ref_r) and np.array_equal(acc_i, ref_i)
    assert (acc_r[..., ~canonical_mask(8)] == 0).all()


def test_ifft_input_rounds_clamps_and_mirrors():
    spec = SpectralFixed(data_bits=10)  # IFFT input: 9 bits, -256..255
    acc_r = np.zeros((8, 5), dtype=np.int64)
    acc_i = np.zeros((8, 5), dtype=np.int64)
    acc_r[0, 1], acc_r[1, 1], acc_r[2, 1], acc_i[3, 1] = 6, -6, 5000, -5000
    acc_r[1, 0], acc_i[1, 0], acc_r[3, 4], acc_i[3, 4] = 11, 7, -9, 13
    yr, yi = ifft_input(acc_r, acc_i, 2, spec)
    assert (yr[0, 1], yr[1, 1], yr[2, 1], yi[3, 1]) == (2, -1, 255, -256)
    assert (yr[1, 0], yi[1, 0], yr[7, 0], yi[7, 0]) == (3, 2, 3, -2)
    assert (yr[3, 4], yi[3, 4], yr[5, 4], yi[5, 4]) == (-2, 3, -2, -3)
    assert acc_r[7, 0] == 0  # the accumulators are left alone


def test_requantize_rounding_saturation_relu_and_bias():
    spec = SpectralFixed()
    q = QuantParams(1.0, 1.0, 0, 3, 2, np.array([0, 2], dtype=np.int64))
    v = np.array([[[1, 2, -2, -3, 1000, -1000]], [[1, 2, -2, -3, 0, -1]]])
    assert requantize(v, q, spec, relu=False).tolist() == [[[1, 2, -1, -2, 127, -128]], [[1, 2, -1, -2, 1, 0]]]
    assert requantize(v, q, spec, relu=True).tolist() == [[[1, 2, 0, 0, 127, 0]], [[1, 2, 0, 0, 1, 0]]]
    with pytest.raises(ValueError, match="mult_bits"):
        requantize(v, QuantParams(1.0, 1.0, 0, 1 << 16, 2, q.bias_q), spec, relu=False)


def test_quant_params_multiplier_and_bias():
    layer = _layer(2)
    q = layer.quant
    ratio = canvas_scale(layer, SPEC) / q.out_scale
    assert 2**15 <= q.out_mult < 2**16 and abs(q.out_mult * 2.0**-q.out_shift / ratio - 1) < 2**-16
    assert np.allclose(q.bias_q * 2.0**-q.out_shift * q.out_scale, layer.bias, rtol=0, atol=q.out_scale * 2**-10)
    again = quant_params(layer, q.in_scale, q.out_scale, q.mac_shift, SPEC)
    assert (again.out_mult, again.out_shift) == (q.out_mult, q.out_shift)


def test_fixed_layer_tracks_the_float_layer_to_half_an_output_step():
    layer = _layer(3, relu=True, calib=(8, 14, 14))
    rng = np.random.default_rng(9)
    x_q = rng.integers(-128, 128, (3, 3, 14, 11))
    y_q = spectral_conv_fixed(x_q, layer)
    assert y_q.shape == (3, 5, 14, 11) and y_q.dtype == np.int64 and y_q.min() >= 0
    y = spectral_conv_float(x_q * layer.quant.in_scale, layer) / layer.quant.out_scale
    inside = y < 126.5
    assert inside.mean() > 0.99
    assert np.abs(y_q - y)[inside].max() < 0.6  # rounding to the output grid, plus a ~55 dB datapath
    assert (y_q[~inside] == 127).all()
    for b in range(3):  # a batch is its samples one by one
        assert np.array_equal(spectral_conv_fixed(x_q[b], layer), y_q[b])


def test_stages_are_consistent():
    layer = _layer(4, oaa=OaaParams(padding="valid"))
    x_q = np.random.default_rng(1).integers(-128, 128, (3, 9, 16))
    st_ = spectral_conv_fixed_stages(x_q, layer, SPEC)
    assert st_["tiles"].shape == (3, 2, 3, 8, 8) and st_["spectrum"][0].shape == (3, 2, 3, 8, 5)
    assert st_["acc"][0].shape == (5, 2, 3, 8, 5) and st_["ifft_out"].shape == (5, 2, 3, 8, 8)
    assert st_["canvas"].shape == (5, 14, 20) and st_["cropped"].shape == st_["out"].shape == (5, 7, 14)
    lim = 1 << (SPEC.ifft_in_bits - 1)
    assert max(np.abs(st_["ifft_in"][0]).max(), np.abs(st_["ifft_in"][1]).max()) <= lim
    assert np.abs(st_["canvas"]).max() < 2 ** (SPEC.ola_bits(layer.oaa) - 1)
    assert np.array_equal(st_["cropped"], st_["canvas"][:, 2:9, 2:16])


def test_fixed_layer_rejects_bad_inputs():
    layer = _layer(5)
    with pytest.raises(ValueError, match="signed 8-bit"):
        spectral_conv_fixed(np.full((3, 6, 6), 200), layer)
    with pytest.raises(ValueError, match="integers"):
        spectral_conv_fixed(np.zeros((3, 6, 6)), layer)
    with pytest.raises(ValueError, match="C_in=3"):
        spectral_conv_fixed(np.zeros((2, 6, 6), dtype=np.int8), layer)
    with pytest.raises(ValueError, match="weight_bits=12"):
        spectral_conv_fixed(np.zeros((3, 6, 6), dtype=np.int8), layer, SpectralFixed(weight_bits=12))
    with pytest.raises(ValueError, match="max_c_in"):
        spectral_conv_fixed(np.zeros((3, 6, 6), dtype=np.int8), layer, SpectralFixed(max_c_in=2))
    uncalibrated = layer_from_half(kernel_spectrum(np.ones((1, 1, 3, 3)), 8), OaaParams())
    with pytest.raises(ValueError, match="calibrate"):
        spectral_conv_fixed(np.zeros((1, 6, 6), dtype=np.int8), uncalibrated)


@pytest.mark.parametrize("c_in, c_out, size, oaa, floor_canvas", [
    (1, 6, 28, OaaParams(8, 5, 4), 48.0),   # LeNet conv1 (5 x 5 kernels: L = 4)
    (6, 16, 14, OaaParams(8, 5, 4), 52.0),  # LeNet conv2
    (16, 16, 20, OaaParams(), 55.0),        # a narrow VGG-like 3 x 3 layer
])
def test_sqnr_floor_at_default_widths(c_in, c_out, size, oaa, floor_canvas):
    """Measured at the defaults: canvas 57-63 dB; the 8-bit output ~39-40 dB, which is the 8-bit format's own
    ceiling for Gaussian-like outputs (40.9 dB with the best clipping), not the datapath's."""
    layer = _layer(6, c_out, c_in, oaa, calib=(8, size, size))
    x_q = np.random.default_rng(11).integers(-128, 128, (4, c_in, size, size))
    db = layer_sqnr(x_q, layer)
    assert db["canvas"] > floor_canvas and db["output"] > 37.0, db
    narrow = layer_sqnr(x_q, calibrate(layer, x_q, 1 / 64, SpectralFixed(data_bits=16)), SpectralFixed(data_bits=16))
    assert narrow["canvas"] < db["canvas"] - 6  # two data bits fewer cost about 12 dB: the test can tell


def test_sqnr_db():
    assert sqnr_db([1.0, 2.0], [1.0, 2.0]) == math.inf
    assert sqnr_db([3.0, 4.0], [3.0, 4.5]) == pytest.approx(20.0)
