"""The SPEC2 FFT blocks in RTL against the golden fixed-point model (`fft_fixed`, `fft2_fixed`, `ifft2_fixed`),
bit-exact under cocotb, with random input gaps, random backpressure and a full-rate throughput run.

Inputs: random values over the range each block is specified for (int8 activations for `Fft2d`, the clamped
and mirrored `ifft_input` values for `Ifft2d`) plus edge cases: all max, all min, impulses.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hw.spec2.fft import Fft1d, Fft2d, FftParams, Ifft2d, complex_layout
from sim import runner
from sim.golden.spec2 import Spec2Fixed, fft2_fixed, fft_fixed, ifft2_fixed, ifft_input, twiddles

SEED = 5


def _word(values: np.ndarray, bits: int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64) & ((1 << bits) - 1)


def _complex_words(re: np.ndarray, im: np.ndarray, bits: int) -> list[int]:
    """Payload words of `complex_layout(bits)`: re in the low bits, im above."""
    return [int(w) for w in (_word(re, bits) | (_word(im, bits) << bits)).ravel()]


def _real_words(values: np.ndarray, bits: int) -> list[int]:
    return [int(w) for w in _word(values, bits).ravel()]


def _run(tmp_path: Path, dut, name: str, random_stream: dict, full_stream: dict, beats_in: int, beats_out: int,
         in_contiguous: bool, out_contiguous: bool) -> None:
    data = tmp_path / f"{name}.json"
    data.write_text(json.dumps({
        "latency": dut.latency, "period": dut.period, "beats_in": beats_in, "beats_out": beats_out,
        "in_contiguous": in_contiguous, "out_contiguous": out_contiguous,
        "gap_probability": 0.3, "ready_probability": 0.6, "random": random_stream, "full_rate": full_stream}))
    runner.run(runner.build(dut, name), "sim.tb.fft_bench", {"data": str(data)})


# --- Fft1d ------------------------------------------------------------------------------------------------


def _fft1d_inputs(n: int, limit: int, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`count` random transforms with components in -limit..limit-1, then all max, all min, impulses."""
    re = rng.integers(-limit, limit, size=(count, n))
    im = rng.integers(-limit, limit, size=(count, n))
    edge_re, edge_im = [np.full(n, limit - 1), np.full(n, -limit)], [np.full(n, limit - 1), np.full(n, -limit)]
    for position, value in ((0, limit - 1), (1, -limit), (n - 1, limit - 1)):
        impulse = np.zeros(n, dtype=np.int64)
        impulse[position] = value
        edge_re += [impulse, np.zeros(n, dtype=np.int64)]
        edge_im += [np.zeros(n, dtype=np.int64), impulse]
    return np.concatenate([re, np.array(edge_re)]), np.concatenate([im, np.array(edge_im)])


FFT1D_CASES = {
    # name: (n, spec, inverse, shifts or None, input limit)
    "fwd8": (8, Spec2Fixed(), False, None, 1 << 13),
    "inv8": (8, Spec2Fixed(), True, None, 1 << 16),
    "fwd16_shifted": (16, Spec2Fixed(act_bits=6, data_bits=14, twiddle_bits=12), False, (1, 0, 1, 1), 1 << 12),
}


@pytest.mark.parametrize("case", FFT1D_CASES)
def test_fft1d_matches_golden(tmp_path: Path, case: str):
    n, spec, inverse, shifts, limit = FFT1D_CASES[case]
    params = FftParams.from_spec(spec, n)
    dut = Fft1d(params, inverse=inverse, shifts=shifts)
    rng = np.random.default_rng(SEED)
    bits = params.data_bits

    def stream(re: np.ndarray, im: np.ndarray) -> dict:
        out_re, out_im = fft_fixed(re, im, dut.shifts, spec, inverse=inverse)
        return {"beats": _complex_words(re, im, bits), "expected": _complex_words(out_re, out_im, bits)}

    random_stream = stream(*_fft1d_inputs(n, limit, 30, rng))
    full_stream = stream(rng.integers(-limit, limit, size=(12, n)), rng.integers(-limit, limit, size=(12, n)))
    _run(tmp_path, dut, f"fft1d_{case}", random_stream, full_stream, n, n, True, True)


# --- Fft2d ------------------------------------------------------------------------------------------------


def _tiles(n: int, act_bits: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` random tiles, then all max, all min, a max impulse at (0, 0), a min one at (n-1, n-1), and a
    checkerboard of max and min."""
    lo, hi = -(1 << (act_bits - 1)), (1 << (act_bits - 1)) - 1
    tiles = [rng.integers(lo, hi + 1, size=(n, n)) for _ in range(count)]
    tiles += [np.full((n, n), hi), np.full((n, n), lo)]
    first, last = np.zeros((n, n), dtype=np.int64), np.zeros((n, n), dtype=np.int64)
    first[0, 0], last[-1, -1] = hi, lo
    board = np.where((np.arange(n)[:, None] + np.arange(n)) % 2 == 0, hi, lo)
    return np.array(tiles + [first, last, board])


FFT2D_CASES = {
    "n8": (8, Spec2Fixed()),
    "n8_shift_every_stage": (8, Spec2Fixed(data_bits=14, in_shift=5)),
    "n4_narrow": (4, Spec2Fixed(data_bits=12, twiddle_bits=10)),
}


@pytest.mark.parametrize("case", FFT2D_CASES)
def test_fft2d_matches_golden(tmp_path: Path, case: str):
    n, spec = FFT2D_CASES[case]
    params = FftParams.from_spec(spec, n)
    dut = Fft2d(params)
    rng = np.random.default_rng(SEED)

    def stream(tiles: np.ndarray) -> dict:
        re, im = fft2_fixed(tiles, spec)
        # The block emits the half spectrum column-major.
        return {"beats": _real_words(tiles, spec.act_bits),
                "expected": _complex_words(re.swapaxes(-1, -2), im.swapaxes(-1, -2), params.data_bits)}

    random_stream = stream(_tiles(n, spec.act_bits, 6, rng))
    full_stream = stream(_tiles(n, spec.act_bits, 0, rng)[:4])
    _run(tmp_path, dut, f"fft2d_{case}", random_stream, full_stream, n * n, n * params.half_cols, True, False)


# --- Ifft2d -----------------------------------------------------------------------------------------------


def _half_spectra(n: int, spec: Spec2Fixed, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """IFFT inputs as `ifft_input` makes them (clamped, columns 0 and n/2 mirrored) from random accumulators
    (past the clamp at times), then all max, all min (its mirrored -min needs the top bit), and impulses."""
    top = 1 << (spec.ifft_in_bits - 1)
    shape = (n, n // 2 + 1)
    acc_r = [rng.integers(-top - top // 4, top + top // 4, size=shape) for _ in range(count)]
    acc_i = [rng.integers(-top - top // 4, top + top // 4, size=shape) for _ in range(count)]
    acc_r += [np.full(shape, top - 1), np.full(shape, -top), np.zeros(shape, dtype=np.int64)]
    acc_i += [np.full(shape, top - 1), np.full(shape, -top), np.zeros(shape, dtype=np.int64)]
    acc_r[-1][0, 0] = top - 1
    dc = np.zeros(shape, dtype=np.int64)
    dc[1, 1] = -top
    acc_r.append(np.zeros(shape, dtype=np.int64))
    acc_i.append(dc)
    return ifft_input(np.array(acc_r), np.array(acc_i), 0, spec)


IFFT2D_CASES = {
    "n8": (8, Spec2Fixed()),
    "n4_narrow": (4, Spec2Fixed(data_bits=12, twiddle_bits=10)),
}


@pytest.mark.parametrize("case", IFFT2D_CASES)
def test_ifft2d_matches_golden(tmp_path: Path, case: str):
    n, spec = IFFT2D_CASES[case]
    params = FftParams.from_spec(spec, n)
    dut = Ifft2d(params)
    rng = np.random.default_rng(SEED)
    bits = params.data_bits

    def stream(re: np.ndarray, im: np.ndarray) -> dict:
        # The block takes the half spectrum column-major and emits the tile row-major.
        return {"beats": _complex_words(re.swapaxes(-1, -2), im.swapaxes(-1, -2), bits),
                "expected": _real_words(ifft2_fixed(re, im, spec), bits)}

    random_stream = stream(*_half_spectra(n, spec, 6, rng))
    full_stream = stream(*(a[:4] for a in _half_spectra(n, spec, 4, rng)))
    _run(tmp_path, dut, f"ifft2d_{case}", random_stream, full_stream, n * params.half_cols, n * n, False, True)


# --- parameters -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, spec", [(8, Spec2Fixed()), (16, Spec2Fixed()), (4, Spec2Fixed(data_bits=12,
                                                                                           twiddle_bits=10))])
def test_params_mirror_spec(n: int, spec: Spec2Fixed):
    params = FftParams.from_spec(spec, n)
    assert params.in_shift == spec.input_shift(n) and params.fwd_shifts == spec.forward_shifts(n)
    assert params.inverse_shifts + params.inverse_shifts == spec.inverse_shifts(n)
    wr, wi = twiddles(n, spec.twiddle_bits)
    assert params.twiddles == tuple(zip(wr.tolist(), wi.tolist()))


def test_default_params_are_the_default_spec():
    assert FftParams() == FftParams.from_spec(Spec2Fixed(), 8)


def test_complex_layout_packs_re_low():
    layout = complex_layout(18)
    assert {name: (field.offset, field.width) for name, field in layout} == {"re": (0, 18), "im": (18, 18)}


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 6}, "n must be a power of two in 4..64, got 6"),
    ({"n": 128}, "n must be a power of two in 4..64, got 128"),
    ({"n": 8.0}, "n must be an integer"),
    ({"data_bits": 8}, "data_bits must be in 9..30"),
    ({"twiddle_bits": 3}, "twiddle_bits must be in 4..30"),
    ({"act_bits": 1}, "act_bits must be in 2..16"),
    ({"in_shift": 11}, "in_shift must be in 0..10"),
    ({"fwd_shifts": (0, 0)}, "fwd_shifts must have 6 entries for n=8, got 2"),
    ({"fwd_shifts": (0, 0, 2, 0, 0, 0)}, "fwd_shifts must be a tuple of 0s and 1s"),
    ({"fwd_shifts": [0] * 6}, "fwd_shifts must be a tuple of 0s and 1s"),
])
def test_params_rejected(kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FftParams(**kwargs)


def test_components_check_their_arguments():
    with pytest.raises(TypeError, match="params must be an? FftParams, got Spec2Fixed"):
        Fft2d(Spec2Fixed())
    with pytest.raises(ValueError, match="shifts must be a tuple of 3 0s and 1s"):
        Fft1d(FftParams(), shifts=(1, 1))
