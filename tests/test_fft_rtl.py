"""The SPEC2 FFT blocks in RTL against the golden fixed-point model (`fft_fixed`, `fft2_fixed`, `ifft2_fixed`),
bit-exact under cocotb, with random input gaps, random backpressure and a full-rate throughput run.

Inputs: random values over the range each block is specified for (int8 activations for `Fft2d`, the clamped
and mirrored `ifft_input` values for `Ifft2d`) plus edge cases: all max, all min, impulses. The default
shift-and-add twiddles everywhere, `*` twiddles (`twiddle_mult="dsp"`) in one case per transform kind; the CSD
helpers themselves against Python integer products in the Amaranth simulator.
"""

from __future__ import annotations

import functools
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from amaranth import Module, Signal, signed
from amaranth.back import rtlil
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from hw.spec.arith import round_shift
from hw.spec.spectral.fixed import (
    SpectralFixed,
    bit_reverse,
    fft2_fixed,
    fft_fixed,
    ifft2_fixed,
    ifft_input,
    twiddles,
)
from hw.spectral.fft import (
    Fft2d,
    FftParams,
    Ifft2d,
    SdfFft,
    _twiddle_mul,
    complex_layout,
    csd_digits,
    shift_add,
)
from hw.toolchain import rtlil_multipliers
from sim import runner

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
    runner.run(runner.build(dut, name), "sim.tb.fft", {"data": str(data)})


# --- SdfFft -----------------------------------------------------------------------------------------------


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
    # name: (n, spec, inverse, shifts or None, input limit, twiddle_mult)
    "fwd8": (8, SpectralFixed(), False, None, 1 << 13, "logic"),
    "inv8": (8, SpectralFixed(), True, None, 1 << 16, "logic"),
    "fwd16_shifted": (16, SpectralFixed(act_bits=6, data_bits=14, twiddle_bits=12), False, (1, 0, 1, 1), 1 << 12,
                      "logic"),
    # n = 16 has every kind of twiddle: trivial, |wr| = |wi| and general.
    "inv16_dsp": (16, SpectralFixed(), True, None, 1 << 16, "dsp"),
}


@pytest.mark.parametrize("case", FFT1D_CASES)
def test_sdf_fft_matches_golden(tmp_path: Path, case: str):
    """The one-butterfly-per-stage transform: bit-reversed order in, the golden transform in natural order out,
    under random gaps and backpressure, and at one sample per cycle after n - 1 + log2 n cycles plus one per stage
    with twiddle products."""
    n, spec, inverse, shifts, limit, twiddle_mult = FFT1D_CASES[case]
    params = FftParams.from_spec(spec, n, twiddle_mult)
    dut = SdfFft(params, inverse=inverse, shifts=shifts)
    # One register per stage, and one more ahead of each stage with twiddle products (all from the third).
    assert dut.latency == n - 1 + params.log2n + max(0, params.log2n - 2)
    rng = np.random.default_rng(SEED + 1)
    bits, order = params.data_bits, bit_reverse(n)

    def stream(re: np.ndarray, im: np.ndarray) -> dict:
        out_re, out_im = fft_fixed(re, im, dut.shifts, spec, inverse=inverse)
        return {"beats": _complex_words(re[:, order], im[:, order], bits),
                "expected": _complex_words(out_re, out_im, bits)}

    random_stream = stream(*_fft1d_inputs(n, limit, 30, rng))
    full_stream = stream(rng.integers(-limit, limit, size=(12, n)), rng.integers(-limit, limit, size=(12, n)))
    _run(tmp_path, dut, f"sdf_{case}", random_stream, full_stream, n, n, True, True)


def test_sdf_fft_checks_its_shifts_and_input_width():
    with pytest.raises(ValueError, match=r"shifts must be a tuple of 3 0s and 1s, got \(0, 2, 0\)"):
        SdfFft(FftParams(), shifts=(0, 2, 0))
    with pytest.raises(ValueError, match=r"in_bits must be in 18\.\.19 \(data_bits or one more\), got 20"):
        SdfFft(FftParams(), in_bits=20)
    # The first stage takes the wider input: the built design's input port is 2 x 19 bits.
    assert re.search(r"wire width 38 input \d+ +\\i__payload\n", rtlil.convert(SdfFft(FftParams(), in_bits=19)))


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
    # name: (n, spec, twiddle_mult, rows sent: None for all n)
    "n8": (8, SpectralFixed(), "logic", None),
    "n8_shift_every_stage": (8, SpectralFixed(data_bits=14, in_shift=5), "logic", None),
    "n4_narrow": (4, SpectralFixed(data_bits=12, twiddle_bits=10), "logic", None),
    "n8_dsp": (8, SpectralFixed(), "dsp", None),
    # LeNet's tiles (L = 4): the column pass bounds, 40 cycles a tile; L = 6: the row pass, 48.
    "n8_rows4": (8, SpectralFixed(), "logic", 4),
    "n8_rows6": (8, SpectralFixed(), "logic", 6),
}


@pytest.mark.parametrize("case", FFT2D_CASES)
def test_fft2d_matches_golden(tmp_path: Path, case: str):
    n, spec, twiddle_mult, rows = FFT2D_CASES[case]
    params = FftParams.from_spec(spec, n, twiddle_mult, rows=rows)
    dut = Fft2d(params)
    assert dut.period == max(params.rows, params.half_cols) * n
    rng = np.random.default_rng(SEED)

    def stream(tiles: np.ndarray) -> dict:
        tiles = tiles.copy()
        tiles[..., params.rows:, :] = 0  # the rows not sent: the golden transform sees them as zeros
        re, im = fft2_fixed(tiles, spec)
        # The block emits the half spectrum column-major.
        # Each row's columns go in bit-reversed order (as the tiler gives them); only the rows sent.
        return {"beats": _real_words(tiles[..., : params.rows, bit_reverse(n)], spec.act_bits),
                "expected": _complex_words(re.swapaxes(-1, -2), im.swapaxes(-1, -2), params.data_bits)}

    random_stream = stream(_tiles(n, spec.act_bits, 6, rng))
    full_stream = stream(_tiles(n, spec.act_bits, 0, rng)[:4])
    _run(tmp_path, dut, f"fft2d_{case}", random_stream, full_stream, params.rows * n, n * params.half_cols,
         params.rows >= params.half_cols, False)


# --- Ifft2d -----------------------------------------------------------------------------------------------


def _half_spectra(n: int, spec: SpectralFixed, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
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
    "n8": (8, SpectralFixed()),
    "n4_narrow": (4, SpectralFixed(data_bits=12, twiddle_bits=10)),
}


@pytest.mark.parametrize("case", IFFT2D_CASES)
def test_ifft2d_matches_golden(tmp_path: Path, case: str):
    n, spec = IFFT2D_CASES[case]
    params = FftParams.from_spec(spec, n)
    dut = Ifft2d(params)
    rng = np.random.default_rng(SEED)
    bits = params.data_bits

    def stream(re: np.ndarray, im: np.ndarray) -> dict:
        # The block takes the half spectrum column-major, each column's rows in bit-reversed order (as `IfftInput`
        # gives them), and emits the tile row-major.
        order = bit_reverse(n)
        return {"beats": _complex_words(re[..., order, :].swapaxes(-1, -2), im[..., order, :].swapaxes(-1, -2), bits),
                "expected": _real_words(ifft2_fixed(re, im, spec), bits)}

    random_stream = stream(*_half_spectra(n, spec, 6, rng))
    full_stream = stream(*(a[:4] for a in _half_spectra(n, spec, 4, rng)))
    _run(tmp_path, dut, f"ifft2d_{case}", random_stream, full_stream, n * params.half_cols, n * n, False, True)


# --- parameters -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, spec", [(8, SpectralFixed()), (16, SpectralFixed()), (4, SpectralFixed(data_bits=12,
                                                                                           twiddle_bits=10))])
def test_params_mirror_spec(n: int, spec: SpectralFixed):
    params = FftParams.from_spec(spec, n)
    assert params.in_shift == spec.input_shift(n) and params.fwd_shifts == spec.forward_shifts(n)
    assert params.inverse_shifts + params.inverse_shifts == spec.inverse_shifts(n)
    wr, wi = twiddles(n, spec.twiddle_bits)
    assert params.twiddles == tuple(zip(wr.tolist(), wi.tolist()))


def test_default_params_are_the_default_spec():
    assert FftParams() == FftParams.from_spec(SpectralFixed(), 8)


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
    ({"twiddle_mult": "lut"}, "twiddle_mult must be one of logic, dsp, got 'lut'"),
    ({"twiddle_mult": None}, "twiddle_mult must be one of logic, dsp, got None"),
])
def test_params_rejected(kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FftParams(**kwargs)


def test_components_check_their_arguments():
    with pytest.raises(TypeError, match="params must be an? FftParams, got SpectralFixed"):
        Fft2d(SpectralFixed())
    with pytest.raises(TypeError, match="params must be an? FftParams, got SpectralFixed"):
        SdfFft(SpectralFixed())
    with pytest.raises(ValueError, match="shifts must be a tuple of 3 0s and 1s"):
        SdfFft(FftParams(), shifts=(1, 1))


def test_params_describe_twiddle_mult():
    assert FftParams().twiddle_mult == "logic"
    assert FftParams.from_spec(SpectralFixed(), 8, "dsp").describe()["twiddle_mult"] == "dsp"
    assert FftParams().describe() == {"n": 8, "data_bits": 18, "twiddle_bits": 16, "act_bits": 8, "in_shift": 3,
                                      "fwd_shifts": [0] * 6, "twiddle_mult": "logic", "rows": 8}
    assert FftParams(rows=4).forward_period == 40 and FftParams(rows=6).forward_period == 48
    with pytest.raises(ValueError, match=r"^rows must be in 1\.\.8, got 9"):
        FftParams(rows=9)


# --- shift-and-add constant multiplication ----------------------------------------------------------------


@functools.cache
def _min_signed_digits(c: int) -> int:
    """Fewest nonzero digits in {-1, 0, 1} of any signed-binary c, by brute recursion on the lowest digit."""
    if c in (0, 1, -1):
        return abs(c)
    if c % 2 == 0:
        return _min_signed_digits(c // 2)
    return 1 + min(_min_signed_digits((c - 1) // 2), _min_signed_digits((c + 1) // 2))


@settings(max_examples=300)
@given(st.integers(-(1 << 70), 1 << 70))
def test_csd_digits_are_canonical(c: int):
    digits = csd_digits(c)
    assert sum(sign << shift for shift, sign in digits) == c
    assert all(sign in (1, -1) for _, sign in digits)
    shifts = [shift for shift, _ in digits]
    assert all(b - a >= 2 for a, b in zip(shifts, shifts[1:])), f"adjacent nonzero digits in {digits}"
    if abs(c) < 1 << 20:
        assert len(digits) == _min_signed_digits(c)


def _simulate(products: list[tuple[tuple[int, ...], int]], inputs: list[Signal], values: list[tuple[int, ...]],
              ) -> None:
    """Assert that `shift_add` of each (constants, bias), one constant per input, equals the integer sum for every
    tuple of input values, in the Amaranth simulator."""
    m = Module()
    outputs = []
    for index, (constants, bias) in enumerate(products):
        out = Signal(signed(96), name=f"out{index}")
        m.d.comb += out.eq(shift_add(list(zip(constants, inputs)), bias))
        outputs.append((out, constants, bias))
    sim = Simulator(m)

    async def testbench(ctx):
        for vals in values:
            for signal, value in zip(inputs, vals):
                ctx.set(signal, value)
            for out, constants, bias in outputs:
                expected = sum(c * v for c, v in zip(constants, vals)) + bias
                assert ctx.get(out) == expected, f"{constants} . {vals} + {bias}"

    sim.add_testbench(testbench)
    _run_pysim(sim)


def test_shift_add_small_constants_exhaustive():
    """Every constant in -70..70 against every value of a signed and an unsigned input, with biases."""
    x, y = Signal(signed(5)), Signal(3)
    biases = (0, 1, -1, 6, -8, 1 << 4)
    products = [((c, (c * 7 + 3) % 61 - 30), biases[c % len(biases)]) for c in range(-70, 71)]
    _simulate(products, [x, y], [(a, b) for a in range(-16, 16) for b in range(8)])


def _run_pysim(sim: Simulator) -> None:
    """sim.run() on a thread of its own, its exceptions raised here. CPython 3.11 keeps frames in stack chunks
    and maps a new chunk for a call that does not fit the current one, unmapping it on return: deep in pytest's
    stack, every call of pysim's large generated evaluators did that (the twiddle test took 55 s, 46 of them in
    the kernel). A fresh thread's stack has room (5 s)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(sim.run).result()


@settings(max_examples=40)
@given(st.lists(st.integers(-(1 << 24), 1 << 24), min_size=3, max_size=3), st.integers(-(1 << 30), 1 << 30),
       st.lists(st.tuples(st.integers(-(1 << 17), (1 << 17) - 1), st.integers(-(1 << 9), (1 << 9) - 1),
                          st.integers(0, (1 << 12) - 1)), min_size=1, max_size=8))
def test_shift_add_wide_constants(constants: list[int], bias: int, values: list[tuple[int, int, int]]):
    inputs = [Signal(signed(18)), Signal(signed(10)), Signal(12)]
    extremes = [(-(1 << 17), -(1 << 9), (1 << 12) - 1), ((1 << 17) - 1, (1 << 9) - 1, 0)]
    _simulate([(tuple(constants), bias), (tuple(constants[:1]), 0)], inputs, values + extremes)


@pytest.mark.parametrize("twiddle_bits", [16, 10])
def test_twiddle_mul_is_the_golden_product(twiddle_bits: int):
    """Shift-add twiddle products (shared constant or not) and the moves of 1 and +-i equal rs(wr br - wi bi, f),
    rs(wr bi + wi br, f) for every forward and inverse twiddle of n = 4..64, over 19-bit operands."""
    frac = twiddle_bits - 2
    ws = sorted({w for n in (4, 8, 16, 32, 64) for wr, wi in FftParams(n=n, twiddle_bits=twiddle_bits).twiddles
                 for w in ((wr, wi), (wr, -wi))})
    br, bi = Signal(signed(19)), Signal(signed(19))
    m = Module()
    outputs = []
    for w in ws:
        t_re, t_im = Signal(signed(40)), Signal(signed(40))
        m.d.comb += [t.eq(v) for t, v in zip((t_re, t_im), _twiddle_mul((br, bi), w, frac))]
        outputs.append((w, t_re, t_im))
    rng = np.random.default_rng(SEED)
    top = 1 << 18
    values = [(-top, -top), (top - 1, top - 1), (-top, top - 1), (0, 0), (1, -1)]
    values += [tuple(int(v) for v in rng.integers(-top, top, size=2)) for _ in range(150)]
    sim = Simulator(m)

    async def testbench(ctx):
        for b_re, b_im in values:
            ctx.set(br, b_re)
            ctx.set(bi, b_im)
            for (wr, wi), t_re, t_im in outputs:
                expected = (round_shift(wr * b_re - wi * b_im, frac), round_shift(wr * b_im + wi * b_re, frac))
                assert (ctx.get(t_re), ctx.get(t_im)) == expected, f"w = {(wr, wi)}, b = {(b_re, b_im)}"

    sim.add_testbench(testbench)
    _run_pysim(sim)


def _multipliers(component) -> int:
    return rtlil_multipliers(rtlil.convert(component))


@pytest.mark.parametrize("n", [8, 16])
def test_logic_twiddles_use_no_multiplier(n: int):
    """The transforms ask for no `$mul` (so no DSP) with the default twiddles, and one per `*` with "dsp". The 2-D
    blocks are their SDFs and a transpose: at n = 8 only (at 16 they take seconds to elaborate and add no twiddle)."""
    for inverse in (False, True):
        assert _multipliers(SdfFft(FftParams(n=n), inverse)) == 0
        assert _multipliers(SdfFft(FftParams(n=n, twiddle_mult="dsp"), inverse)) > 0
    for block in (Fft2d, Ifft2d) if n == 8 else ():
        assert _multipliers(block(FftParams(n=n))) == 0
        assert _multipliers(block(FftParams(n=n, twiddle_mult="dsp"))) > 0
