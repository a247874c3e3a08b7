"""FFT testbench: every output beat of `hw.spectral.fft` (`SdfFft`, `Fft2d`, `Ifft2d`) equals the golden model's.

Parameters: `data`, the path of a JSON file holding `latency`, `period` (cycles per transform at full rate),
`beats_in` / `beats_out` per transform, `in_contiguous` / `out_contiguous` (whether the full-rate run must take
or give a beat every cycle), `gap_probability`, `ready_probability`, and two streams `random` and `full_rate`,
each `{"beats": [int], "expected": [int]}` of raw payload words.
"""

from __future__ import annotations

import cocotb

from sim.tb.common import assert_back_to_back, run_streams, stress_tests, tb_data


async def _run(dut, stream: str, gap_probability: float, ready_probability: float) -> dict[str, list[int]]:
    """Drive `stream` into `i` and check every beat on `o`; return the handshake cycles."""
    data = tb_data()
    beats, expected = data[stream]["beats"], data[stream]["expected"]
    latency, period, beats_out = data["latency"], data["period"], data["beats_out"]
    transforms = len(expected) // beats_out
    return await run_streams(
        dut, {"i": beats}, expected, gap_probability=gap_probability, ready_probability=ready_probability,
        compute_cycles=transforms * period + 4 * latency, settle_cycles=2 * latency + 20,
        describe=lambda i, g, e: f"transform {i // beats_out}, beat {i % beats_out}: expected {e:#x}, got {g:#x}")


random_gaps_and_backpressure, fast_producer_slow_consumer = stress_tests(
    lambda dut, gaps, ready: _run(dut, "random", gaps, ready), __name__)


@cocotb.test()
async def full_rate(dut):
    """No gaps, always ready: transform t's first output handshake comes latency + t * period cycles after the
    first input handshake, and the sides the block runs at one beat per cycle never stall."""
    data = tb_data()
    beats, expected = data["full_rate"]["beats"], data["full_rate"]["expected"]
    latency, period, beats_out = data["latency"], data["period"], data["beats_out"]
    handshakes = await _run(dut, "full_rate", gap_probability=0.0, ready_probability=1.0)
    in_cycles, out_cycles = handshakes["i"], handshakes["o"]
    transforms = len(expected) // beats_out
    first_in = in_cycles[0]
    starts = [out_cycles[t * beats_out] - first_in for t in range(transforms)]
    assert starts == [latency + t * period for t in range(transforms)], (
        f"first outputs at {starts[:6]}... after the first input, expected {latency} + t * {period}")
    if data["in_contiguous"]:
        assert_back_to_back(in_cycles, "input", count=len(beats))
    if data["out_contiguous"]:
        assert_back_to_back(out_cycles, "output", count=len(expected))
    cycles = out_cycles[-1] - first_in + 1
    dut._log.info(f"{transforms} transforms in {cycles} cycles (first input to last output; latency {latency}, "
                  f"period {period})")
