"""Overlap-add bench: every output value of `hw.spec2.overlap_add.OverlapAdd` equals the golden model's.

Parameters: `data`, the path of a JSON file holding `inputs` ({port: [hex words]}, each port driven by its
own driver), `expected` (hex words on `o`), `gap_probability`, `ready_probability` and `report`, a path
where the full-rate test writes its cycle counts. The same runner serves `sim.tb.baseline_bench`.
"""

from __future__ import annotations

import json

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


async def run_streams(dut, gap_probability: float, ready_probability: float) -> dict[str, list[int]]:
    """Drive every input stream, collect `o`, check it word for word; return the handshake cycles per port."""
    data = bench_data()
    expected = hex_words(data["expected"])
    rng = bench_rng(dut)
    drivers = {port: StreamDriver(dut, port, rng, gap_probability=gap_probability) for port in data["inputs"]}
    sink = StreamSink(dut, "o", rng, ready_probability=ready_probability)
    await start_clock_and_reset(dut)
    sink.start()
    cycles = record_handshakes(dut, *data["inputs"], "o")
    for port, words in data["inputs"].items():
        cocotb.start_soon(drivers[port].send(hex_words(words)))
    beats = sum(len(words) for words in data["inputs"].values())
    timeout = int((beats * (1 + 4 * gap_probability) + data.get("compute_cycles", 0) + len(expected))
                  / ready_probability) * 2 + 500
    got = await sink.wait_for(len(expected), timeout_cycles=timeout)
    for index, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"output {index}: expected {e:#x}, got {g:#x}"
    await ClockCycles(dut.clk, 50)
    assert len(sink.beats) == len(expected), f"{len(sink.beats) - len(expected)} output beats too many"
    return cycles


@cocotb.test()
async def random_gaps_and_backpressure(dut):
    """Random maps with random input gaps on every stream and random output backpressure."""
    data = bench_data()
    await run_streams(dut, data["gap_probability"], data["ready_probability"])


@cocotb.test()
async def fast_producer_slow_consumer(dut):
    """The same streams back to back into a mostly stalled output: the pipe must hold its values."""
    await run_streams(dut, 0.0, 0.2)


@cocotb.test()
async def full_rate(dut):
    """No gaps, always ready: record every handshake cycle for the test to turn into throughput figures."""
    cycles = await run_streams(dut, 0.0, 1.0)
    with open(bench_data()["report"], "w") as f:
        json.dump(cycles, f)
