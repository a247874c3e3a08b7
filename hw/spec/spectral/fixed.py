"""The bit-exact fixed-point SPEC2 layer (defined in `hw.spec.spectral`), stage by stage as the RTL blocks
compute it, and the scales and SQNR that relate it to the float operator.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hw.spec.arith import round_shift, saturate
from hw.spec.params import check_int
from hw.spec.spectral.geometry import OaaParams, _log2
from hw.spec.spectral.layer import QuantParams, SpectralLayer
from hw.spec.spectral.operator import _channel_mix, crop, oaa_conv_float, overlap_add, spectral_conv_float, tile_input


def twiddles(n: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Forward twiddles W_n^k = exp(-2 pi i k / n), k < n/2, as int64 (re, im) in Q1.(bits - 2), round half up."""
    k = np.arange(n // 2)
    scale = float(1 << (bits - 2))
    return (np.floor(np.cos(2 * np.pi * k / n) * scale + 0.5).astype(np.int64),
            np.floor(-np.sin(2 * np.pi * k / n) * scale + 0.5).astype(np.int64))


def accumulator_bits(data_bits: int, weight_bits: int, max_c_in: int) -> int:
    """Width that holds any sum over max_c_in channels of data_bits x weight_bits complex products: each
    product's real or imaginary part needs data + weight + 1 bits, and the channels ceil(log2 max_c_in) more."""
    return data_bits + weight_bits + 1 + (max_c_in - 1).bit_length()


def mac_multipliers(p: int) -> int:
    """Real multipliers of a P-lane spectral MAC: each lane's complex product X W is four real ones (`spectral_mac`:
    re re, im im, re im, im re), 4 P; the dense baseline it is measured against gets as many."""
    return 4 * p


def bit_reverse(n: int) -> np.ndarray:
    """The bit-reversal permutation of 0..n-1 (n a power of two)."""
    bits = _log2(n)
    idx = np.arange(n)
    out = np.zeros(n, dtype=np.int64)
    for b in range(bits):
        out |= ((idx >> b) & 1) << (bits - 1 - b)
    return out


@dataclass(frozen=True)
class SpectralFixed:
    """Fixed-point widths of the SPEC2 datapath (all signed two's complement but out_mult).

    act_bits: input activations. data_bits: FFT/IFFT data per component. twiddle_bits: twiddles, Q1.(bits-2).
    weight_bits: spectral weights per component (at most 16: int16 in the file). out_bits: outputs.
    mult_bits: the unsigned requantization multiplier. max_c_in: input channels the accumulator is sized for.
    in_shift: left shift of the activations into the FFT data path (guard bits for precision).
    fwd_shifts: per forward stage 0 or 1, row stages then column stages (2 log2 n).
    None for either: in_shift as large as an unshifted forward FFT allows, then stages shift only where the
    worst-case bound needs it. The inverse shifts by 1 at every stage.
    """

    act_bits: int = 8
    data_bits: int = 18
    twiddle_bits: int = 16
    weight_bits: int = 16
    out_bits: int = 8
    mult_bits: int = 16
    max_c_in: int = 1024
    in_shift: int | None = None
    fwd_shifts: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        check_int("act_bits", self.act_bits, 2, 16)
        check_int("data_bits", self.data_bits, self.act_bits + 1, 30,
                  what=f" (more than act_bits={self.act_bits})")
        check_int("twiddle_bits", self.twiddle_bits, 4, 30)
        check_int("weight_bits", self.weight_bits, 2, 16)
        check_int("out_bits", self.out_bits, 2, 16)
        check_int("mult_bits", self.mult_bits, 1, 31)
        check_int("max_c_in", self.max_c_in, 1, 1 << 20)
        if self.acc_bits > 53:
            raise ValueError(f"max_c_in must keep acc_bits <= 53 (exact in the model), got acc_bits={self.acc_bits}")
        if self.in_shift is not None:
            check_int("in_shift", self.in_shift, 0, self.data_bits - self.act_bits)
        if self.fwd_shifts is not None:
            if not isinstance(self.fwd_shifts, tuple) or any(
                    isinstance(s, bool) or s not in (0, 1) for s in self.fwd_shifts):
                raise ValueError(f"fwd_shifts must be a tuple of 0s and 1s, got {self.fwd_shifts!r}")

    @property
    def acc_bits(self) -> int:
        """Accumulator width: no sum over max_c_in channels of complex products can overflow it."""
        return accumulator_bits(self.data_bits, self.weight_bits, self.max_c_in)

    @property
    def ifft_in_bits(self) -> int:
        return self.data_bits - 1

    def ola_bits(self, oaa: OaaParams) -> int:
        """Overlap-add width: up to ceil(n/l)^2 tile outputs meet at a canvas position."""
        a = -(-oaa.n // oaa.l)
        return self.data_bits + (a * a - 1).bit_length()

    def input_shift(self, n: int) -> int:
        """Left shift of the activations into the forward FFT for size n."""
        return _forward_plan(self, n)[0]

    def forward_shifts(self, n: int) -> tuple[int, ...]:
        """The forward stage shifts for size n; ValueError if the plan could overflow."""
        return _forward_plan(self, n)[1]

    def forward_exponent(self, n: int) -> int:
        """sum(forward_shifts) - input_shift: the forward FFT computes DFT(x) 2^-exponent."""
        g, shifts = _forward_plan(self, n)
        return sum(shifts) - g

    def inverse_shifts(self, n: int) -> tuple[int, ...]:
        return (1,) * (2 * _log2(n))


@functools.lru_cache(maxsize=64)
def _forward_plan(spec: SpectralFixed, n: int) -> tuple[int, tuple[int, ...]]:
    stages = 2 * _log2(n)
    top = (1 << (spec.data_bits - 1)) - 1

    def peak(g: int, shifts: tuple[int, ...]) -> float:
        return fft_bounds(shifts, float(1 << (spec.act_bits - 1 + g)), spec.twiddle_bits)[0]

    def greedy(g: int) -> tuple[int, ...]:
        shifts, m = [], float(1 << (spec.act_bits - 1 + g))
        for _ in range(stages):
            s = int(_stage_bounds(m, 0, 0.0, spec.twiddle_bits)[0] > top)
            shifts.append(s)
            m = _stage_bounds(m, s, 0.0, spec.twiddle_bits)[0]
        return tuple(shifts)

    if spec.fwd_shifts is not None and len(spec.fwd_shifts) != stages:
        raise ValueError(f"fwd_shifts must have {stages} entries for n={n}, got {len(spec.fwd_shifts)}")
    base = spec.fwd_shifts if spec.fwd_shifts is not None else (0,) * stages
    if spec.in_shift is not None:
        g = spec.in_shift
    else:
        g = 0
        while g < spec.data_bits - spec.act_bits and peak(g + 1, base) <= top:
            g += 1
    shifts = spec.fwd_shifts if spec.fwd_shifts is not None else greedy(g)
    if (bound := peak(g, shifts)) > top:
        raise ValueError(f"fwd_shifts {shifts} with in_shift={g} can overflow {spec.data_bits}-bit data "
                         f"(bound {bound:.0f})")
    return g, shifts


def _stage_bounds(m: float, s: int, e: float, twiddle_bits: int) -> tuple[float, float]:
    """One butterfly stage: bounds on |value| and on |error vs exact twiddles and no rounding|."""
    half = math.sqrt(0.5)  # a complex number rounded per component moves by at most this
    delta = half * 2.0 ** -(twiddle_bits - 2)  # twiddle quantization, |w_q - w|
    extra = half if s else 0.0
    m_next = (2 * m * (1 + delta) + half) / 2**s + extra
    e_next = (e * (2 + delta) + delta * m + half) / 2**s + extra
    return m_next, e_next


def fft_bounds(shifts: tuple[int, ...], in_max: float, twiddle_bits: int) -> tuple[float, float]:
    """Worst-case (peak magnitude, error magnitude) over stages `shifts` for inputs of magnitude <= in_max,
    the error against the exact transform scaled by 2^-sum(shifts); the peak bounds every stage."""
    m, e, peak = float(in_max), 0.0, float(in_max)
    for s in shifts:
        m, e = _stage_bounds(m, s, e, twiddle_bits)
        peak = max(peak, m)
    return peak, e


def fft_fixed(re: np.ndarray, im: np.ndarray, shifts: tuple[int, ...], spec: SpectralFixed,
              inverse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Radix-2 DIT FFT along the last axis (n = 2^len(shifts)) of int64 (re, im); see `hw.spec.spectral`."""
    re, im = np.asarray(re, dtype=np.int64), np.asarray(im, dtype=np.int64)
    n = re.shape[-1]
    if n != 1 << len(shifts):
        raise ValueError(f"{len(shifts)} stage shifts for an FFT of size {n}")
    perm = bit_reverse(n)
    re, im = re[..., perm], im[..., perm]
    wr, wi = twiddles(n, spec.twiddle_bits)
    if inverse:
        wi = -wi
    frac, lead = spec.twiddle_bits - 2, re.shape[:-1]
    lo, hi = -(1 << (spec.data_bits - 1)), (1 << (spec.data_bits - 1)) - 1
    one = 1 << frac  # W = 1 and W = -+j are exact in Q1.frac: their products need no multiply and no rounding
    for st, s in enumerate(shifts):
        half = 1 << st
        k = np.arange(half) * (n // (2 * half))
        r = re.reshape(*lead, n // (2 * half), 2, half)
        i = im.reshape(*lead, n // (2 * half), 2, half)
        ar, ai, br, bi = r[..., 0, :], i[..., 0, :], r[..., 1, :], i[..., 1, :]
        if half <= 2 and wr[k[0]] == one and (half == 1 or (wr[k[1]] == 0 and abs(wi[k[1]]) == one)):
            tr, ti = br, bi
            if half == 2:  # the second butterfly of each pair turns by W = -+j
                sign = 1 if wi[k[1]] > 0 else -1
                tr, ti = br.copy(), bi.copy()
                tr[..., 1], ti[..., 1] = -sign * bi[..., 1], sign * br[..., 1]
        else:
            tr = round_shift(wr[k] * br - wi[k] * bi, frac)
            ti = round_shift(wr[k] * bi + wi[k] * br, frac)
        re, im = np.empty_like(r), np.empty_like(i)
        re[..., 0, :], re[..., 1, :] = round_shift(ar + tr, s), round_shift(ar - tr, s)
        im[..., 0, :], im[..., 1, :] = round_shift(ai + ti, s), round_shift(ai - ti, s)
        re, im = re.reshape(*lead, n), im.reshape(*lead, n)
        if re.size and (min(re.min(), im.min()) < lo or max(re.max(), im.max()) > hi):
            raise OverflowError(f"FFT stage {st} leaves {spec.data_bits}-bit range: the input is outside what "
                                "the stage schedule was checked for")
    return re, im


def fft2_fixed(tiles: np.ndarray, spec: SpectralFixed) -> tuple[np.ndarray, np.ndarray]:
    """(..., n, n) integer tiles -> (..., n, n/2 + 1) int64 (re, im): row FFTs, columns 0..n/2, column FFTs."""
    tiles = np.asarray(tiles, dtype=np.int64)
    n = tiles.shape[-1]
    lim = 1 << (spec.act_bits - 1)
    if tiles.size and (tiles.min() < -lim or tiles.max() >= lim):
        raise ValueError(f"activations must be signed {spec.act_bits}-bit, in {-lim}..{lim - 1}")
    shifts = spec.forward_shifts(n)
    rows = len(shifts) // 2
    re, im = fft_fixed(tiles << spec.input_shift(n), np.zeros_like(tiles), shifts[:rows], spec)
    re, im = re[..., : n // 2 + 1].swapaxes(-1, -2), im[..., : n // 2 + 1].swapaxes(-1, -2)
    re, im = fft_fixed(re, im, shifts[rows:], spec)
    return re.swapaxes(-1, -2), im.swapaxes(-1, -2)


def ifft2_fixed(re: np.ndarray, im: np.ndarray, spec: SpectralFixed) -> np.ndarray:
    """(..., n, n/2 + 1) int64 (re, im) -> (..., n, n) int64: column IFFTs, rows completed by conjugates,
    row IFFTs, real part."""
    n = re.shape[-2]
    shifts = spec.inverse_shifts(n)
    cols = len(shifts) // 2
    zr, zi = fft_fixed(re.swapaxes(-1, -2), im.swapaxes(-1, -2), shifts[:cols], spec, inverse=True)
    zr, zi = zr.swapaxes(-1, -2), zi.swapaxes(-1, -2)
    mirror = slice(n // 2 - 1, 0, -1)
    fr = np.concatenate([zr, zr[..., mirror]], axis=-1)
    fi = np.concatenate([zi, -zi[..., mirror]], axis=-1)
    return fft_fixed(fr, fi, shifts[cols:], spec, inverse=True)[0]


def spectral_mac(xr: np.ndarray, xi: np.ndarray, layer: SpectralLayer, spec: SpectralFixed) -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
    """Input spectra (..., C_in, T_r, T_c, n, n/2 + 1) -> exact accumulators (..., C_out, T_r, T_c, n, n/2 + 1):
    sum over input channels and stored entries of X * W; bins no entry touches stay 0."""
    if layer.c_in > spec.max_c_in:
        raise ValueError(f"C_in={layer.c_in} exceeds max_c_in={spec.max_c_in}")
    lim = 1 << (spec.weight_bits - 1)
    if layer.nnz and (min(layer.re.min(), layer.im.min()) < -lim or max(layer.re.max(), layer.im.max()) >= lim):
        raise ValueError(f"spectral weights do not fit weight_bits={spec.weight_bits}")
    wr, wi = layer.int_weights()
    wr, wi = wr.astype(np.float64), wi.astype(np.float64)
    xr, xi = np.asarray(xr, dtype=np.float64), np.asarray(xi, dtype=np.float64)

    # float64 matmul is exact here: every product and partial sum is an integer below 2^53 (acc_bits <= 53).
    def mix(w: np.ndarray, x: np.ndarray) -> np.ndarray:
        return np.rint(_channel_mix(w, x)).astype(np.int64)

    return mix(wr, xr) - mix(wi, xi), mix(wr, xi) + mix(wi, xr)


def ifft_input(acc_r: np.ndarray, acc_i: np.ndarray, mac_shift: int, spec: SpectralFixed) -> tuple[np.ndarray,
                                                                                               np.ndarray]:
    """Accumulators -> IFFT input: round-shift by mac_shift, clamp to ifft_in_bits, mirror columns 0 and n/2."""
    yr = saturate(round_shift(acc_r, mac_shift), spec.ifft_in_bits)
    yi = saturate(round_shift(acc_i, mac_shift), spec.ifft_in_bits)
    n = yr.shape[-2]
    rows = np.arange(n // 2 + 1, n)
    for col in (0, n // 2):
        yr[..., rows, col] = yr[..., n - rows, col]
        yi[..., rows, col] = -yi[..., n - rows, col]
    return yr, yi


class DatapathLimitError(ValueError):
    """A layer's value the fixed-point datapath cannot hold; `field` names the QuantParams field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_quant_limits(quant: QuantParams, spec: SpectralFixed, oaa: OaaParams | None = None) -> None:
    """DatapathLimitError unless `spec`'s datapath holds the requantization: out_mult below 2^mult_bits (the
    unsigned multiplier) and, given the layer's geometry `oaa`, |bias_q| below 2^(ola_bits + mult_bits - 1) (it is
    added to a canvas value times out_mult). The golden model checks these before it runs, the loaders at load."""
    if quant.out_mult >= 1 << spec.mult_bits:
        raise DatapathLimitError("out_mult", f"out_mult={quant.out_mult} does not fit mult_bits={spec.mult_bits}")
    if oaa is not None:
        top = spec.ola_bits(oaa) + spec.mult_bits - 1
        if (np.abs(quant.bias_q) >= 1 << top).any():
            raise DatapathLimitError("bias_q", f"bias_q must be below 2^{top} in magnitude")


def requantize(v: np.ndarray, quant: QuantParams, spec: SpectralFixed, relu: bool) -> np.ndarray:
    """Canvas values -> outputs: clamp(rs(v * out_mult + bias_q[o], out_shift)), lower bound 0 with ReLU.
    v is (..., C_out, H, W)."""
    check_quant_limits(quant, spec)
    r = np.asarray(v, dtype=np.int64) * quant.out_mult + quant.bias_q[:, None, None]
    y = saturate(round_shift(r, quant.out_shift), spec.out_bits)
    return np.maximum(y, 0) if relu else y


def spectral_conv_fixed_stages(x_q: np.ndarray, layer: SpectralLayer, spec: SpectralFixed) -> dict[str, Any]:
    """The fixed-point layer stage by stage (what each RTL block must produce): tiles, spectrum (re, im),
    acc (re, im), ifft_in (re, im), ifft_out, canvas, cropped, out."""
    x_q = np.asarray(x_q)
    if x_q.dtype.kind not in "iu":
        raise ValueError(f"activations must be integers, got {x_q.dtype}")
    if x_q.ndim < 3 or x_q.shape[-3] != layer.c_in:
        raise ValueError(f"input must have shape (..., C_in={layer.c_in}, H, W), got {x_q.shape}")
    if layer.quant is None:
        raise ValueError("the layer has no quantization parameters (calibrate it first)")
    check_quant_limits(layer.quant, spec, layer.oaa)
    st: dict[str, Any] = {"tiles": tile_input(x_q.astype(np.int64), layer.oaa)}
    st["spectrum"] = fft2_fixed(st["tiles"], spec)
    st["acc"] = spectral_mac(*st["spectrum"], layer, spec)
    st["ifft_in"] = ifft_input(*st["acc"], layer.quant.mac_shift, spec)
    st["ifft_out"] = ifft2_fixed(*st["ifft_in"], spec)
    st["canvas"] = overlap_add(st["ifft_out"], layer.oaa.l)
    st["cropped"] = crop(st["canvas"], layer.oaa, *x_q.shape[-2:])
    st["out"] = requantize(st["cropped"], layer.quant, spec, bool(layer.relu))
    return st


def spectral_conv_fixed(x_q: np.ndarray, layer: SpectralLayer, spec: SpectralFixed | None = None) -> np.ndarray:
    """The bit-exact layer: signed act_bits integers (..., C_in, H, W) -> int64 (..., C_out, H_out, W_out)."""
    return spectral_conv_fixed_stages(x_q, layer, spec or SpectralFixed())["out"]


def canvas_scale(layer: SpectralLayer, spec: SpectralFixed) -> float:
    """Real value of one canvas LSB: 2^(mac_shift + F) in_scale weight_scale."""
    if layer.quant is None:
        raise ValueError("the layer has no quantization parameters")
    f = spec.forward_exponent(layer.oaa.n)
    return 2.0 ** (layer.quant.mac_shift + f) * layer.quant.in_scale * layer.weight_scale


def quant_params(layer: SpectralLayer, in_scale: float, out_scale: float, mac_shift: int,
                 spec: SpectralFixed) -> QuantParams:
    """out_mult 2^-out_shift ~ canvas LSB / out_scale with out_mult in [2^(mult_bits-1), 2^mult_bits);
    bias_q = round(bias / out_scale * 2^out_shift)."""
    in_scale, out_scale = float(np.float32(in_scale)), float(np.float32(out_scale))
    f = spec.forward_exponent(layer.oaa.n)
    ratio = 2.0 ** (mac_shift + f) * in_scale * layer.weight_scale / out_scale
    frac, exp = math.frexp(ratio)
    mult, shift = round(frac * 2**spec.mult_bits), spec.mult_bits - exp
    if mult == 1 << spec.mult_bits:
        mult, shift = mult >> 1, shift - 1
    if not 0 <= shift <= 62:
        raise ValueError(f"requantization ratio {ratio:g} needs out_shift={shift}, outside 0..62")
    bias_q = np.floor(layer.bias.astype(np.float64) / out_scale * 2.0**shift + 0.5).astype(np.int64)
    return QuantParams(in_scale, out_scale, int(mac_shift), int(mult), int(shift), bias_q)


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """10 log10(sum |ref|^2 / sum |ref - test|^2) (real or complex); inf when they are equal."""
    reference, test = np.asarray(reference), np.asarray(test)
    noise = float(np.sum(np.abs(reference - test) ** 2))
    signal = float(np.sum(np.abs(reference) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(signal / noise) if signal > 0 else -math.inf


def layer_sqnr(x_q: np.ndarray, layer: SpectralLayer, spec: SpectralFixed | None = None) -> dict[str, float]:
    """SQNR (dB) of the fixed-point layer against `spectral_conv_float` on the dequantized input:
    "canvas" before requantization (FFT, MAC, IFFT rounding), "output" after it (as the next layer sees it)."""
    spec = spec or SpectralFixed()
    st = spectral_conv_fixed_stages(x_q, layer, spec)
    x = np.asarray(x_q, dtype=np.float64) * layer.quant.in_scale
    canvas = oaa_conv_float(x, layer.half_spectrum(), layer.oaa)
    return {"canvas": sqnr_db(canvas, st["cropped"] * canvas_scale(layer, spec)),
            "output": sqnr_db(spectral_conv_float(x, layer), st["out"] * layer.quant.out_scale)}
