"""XOR decoder bench: every output word of `hw.xor_decoder.XorDecoder` equals the golden model's.

Parameters: `data`, the path of a JSON file (the streams are too large for the environment) holding
`latency` and two streams, `random` and `full_rate`, each `{"beats": [hex], "expected": [hex]}`, plus
`gap_probability` and `ready_probability` for the random stream. The full-rate stream has one beat per
slice and runs with no gaps and `o.ready` always high. The random stream also runs with no input gaps
into an output that is ready only a fifth of the time.
"""

from __future__ import annotations

import cocotb
from cocotb.triggers import ClockCycles

from sim.tb.common import (
    StreamDriver,
    StreamSink,
    bench_data,
    bench_rng,
    hex_words,
    record_handshakes,
    start_clock_and_reset,
)


def _check(got: list[int], expected: list[int]) -> None:
    for index, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"slice {index}: expected {e:#x}, got {g:#x} (differs in bits {g ^ e:#x})"


async def _run_random(dut, gap_probability: float, ready_probability: float) -> None:
    data = bench_data()
    stream = data["random"]
    beats, expected = hex_words(stream["beats"]), hex_words(stream["expected"])
    rng = bench_rng(dut)
    driver = StreamDriver(dut, "i", rng, gap_probability=gap_probability)
    sink = StreamSink(dut, "o", rng, ready_probability=ready_probability)
    await start_clock_and_reset(dut)
    sink.start()
    cocotb.start_soon(driver.send(beats))
    got = await sink.wait_for(len(expected), timeout_cycles=int(len(beats) / ready_probability) * 4 + 200)
    _check(got, expected)
    await ClockCycles(dut.clk, 4 * data["latency"] + 20)
    assert len(sink.beats) == len(expected), f"{len(sink.beats) - len(expected)} output beats too many"


@cocotb.test()
async def random_gaps_and_backpressure(dut):
    """Real encoder output with continuation beats, random input gaps and output backpressure."""
    data = bench_data()
    await _run_random(dut, data["gap_probability"], data["ready_probability"])


@cocotb.test()
async def fast_producer_slow_consumer(dut):
    """The same stream offered back to back into a mostly stalled output: the pipe fills and must hold."""
    await _run_random(dut, gap_probability=0.0, ready_probability=0.2)


@cocotb.test()
async def full_rate_one_slice_per_cycle(dut):
    """No gaps, always ready: N one-beat slices go from first input to last output in N + latency cycles."""
    data = bench_data()
    stream = data["full_rate"]
    beats, expected = hex_words(stream["beats"]), hex_words(stream["expected"])
    latency = data["latency"]
    rng = bench_rng(dut)
    driver = StreamDriver(dut, "i", rng, gap_probability=0.0)
    sink = StreamSink(dut, "o", rng, ready_probability=1.0)
    await start_clock_and_reset(dut)
    sink.start()

    handshakes = record_handshakes(dut, "i", "o")
    in_cycles, out_cycles = handshakes["i"], handshakes["o"]
    cocotb.start_soon(driver.send(beats))
    got = await sink.wait_for(len(expected), timeout_cycles=len(beats) + 4 * latency + 50)
    _check(got, expected)
    n = len(beats)
    first_in, last_out = in_cycles[0], out_cycles[n - 1]
    assert in_cycles == list(range(first_in, first_in + n)), "input stalled at full rate"
    assert out_cycles[:n] == list(range(first_in + latency, first_in + latency + n)), (
        f"outputs at {out_cycles[:8]}..., expected from cycle {first_in + latency} on, one per cycle")
    cycles = last_out - first_in + 1
    dut._log.info(f"{n} slices in {cycles} cycles (first input to last output handshake, latency {latency})")
    assert cycles == n + latency
