"""FFT bench: every output beat of `hw.spectral.fft` (`Fft1d`, `Fft2d`, `Ifft2d`) equals the golden model's.

Parameters: `data`, the path of a JSON file holding `latency`, `period` (cycles per transform at full rate),
`beats_in` / `beats_out` per transform, `in_contiguous` / `out_contiguous` (whether the full-rate run must take
or give a beat every cycle), `gap_probability`, `ready_probability`, and two streams `random` and `full_rate`,
each `{"beats": [int], "expected": [int]}` of raw payload words.
"""

from __future__ import annotations

import cocotb
from cocotb.triggers import ClockCycles

from sim.tb.common import (
    StreamDriver,
    StreamSink,
    bench_data,
    bench_rng,
    record_handshakes,
    start_clock_and_reset,
)


def _check(got: list[int], expected: list[int], beats_out: int) -> None:
    for index, (g, e) in enumerate(zip(got, expected)):
        assert g == e, (f"transform {index // beats_out}, beat {index % beats_out}: expected {e:#x}, got {g:#x}")


async def _run_random(dut, gap_probability: float, ready_probability: float) -> None:
    data = bench_data()
    beats, expected = data["random"]["beats"], data["random"]["expected"]
    rng = bench_rng(dut)
    driver = StreamDriver(dut, "i", rng, gap_probability=gap_probability)
    sink = StreamSink(dut, "o", rng, ready_probability=ready_probability)
    await start_clock_and_reset(dut)
    sink.start()
    cocotb.start_soon(driver.send(beats))
    timeout = int((len(beats) + len(expected)) / ready_probability / (1 - gap_probability)) * 2 + 4 * data["latency"]
    got = await sink.wait_for(len(expected), timeout_cycles=timeout)
    _check(got, expected, data["beats_out"])
    await ClockCycles(dut.clk, 2 * data["latency"] + 20)
    assert len(sink.beats) == len(expected), f"{len(sink.beats) - len(expected)} output beats too many"


@cocotb.test()
async def random_gaps_and_backpressure(dut):
    """Random input gaps and random output backpressure."""
    data = bench_data()
    await _run_random(dut, data["gap_probability"], data["ready_probability"])


@cocotb.test()
async def fast_producer_slow_consumer(dut):
    """No input gaps into a mostly stalled output: every buffer fills and must hold its data."""
    await _run_random(dut, gap_probability=0.0, ready_probability=0.2)


@cocotb.test()
async def full_rate(dut):
    """No gaps, always ready: transform t's first output handshake comes latency + t * period cycles after the
    first input handshake, and the sides the block runs at one beat per cycle never stall."""
    data = bench_data()
    beats, expected = data["full_rate"]["beats"], data["full_rate"]["expected"]
    latency, period, beats_out = data["latency"], data["period"], data["beats_out"]
    rng = bench_rng(dut)
    driver = StreamDriver(dut, "i", rng, gap_probability=0.0)
    sink = StreamSink(dut, "o", rng, ready_probability=1.0)
    await start_clock_and_reset(dut)
    sink.start()

    handshakes = record_handshakes(dut, "i", "o")
    in_cycles, out_cycles = handshakes["i"], handshakes["o"]
    cocotb.start_soon(driver.send(beats))
    transforms = len(expected) // beats_out
    got = await sink.wait_for(len(expected), timeout_cycles=transforms * period + 4 * latency + 50)
    _check(got, expected, beats_out)
    first_in = in_cycles[0]
    starts = [out_cycles[t * beats_out] - first_in for t in range(transforms)]
    assert starts == [latency + t * period for t in range(transforms)], (
        f"first outputs at {starts[:6]}... after the first input, expected {latency} + t * {period}")
    if data["in_contiguous"]:
        assert in_cycles == list(range(first_in, first_in + len(beats))), "input stalled at full rate"
    if data["out_contiguous"]:
        assert out_cycles == list(range(out_cycles[0], out_cycles[0] + len(expected))), "output gaps at full rate"
    cycles = out_cycles[-1] - first_in + 1
    dut._log.info(f"{transforms} transforms in {cycles} cycles (first input to last output; latency {latency}, "
                  f"period {period})")
