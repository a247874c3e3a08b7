"""Dense baseline bench: every output of `hw.baseline.conv.BaselineConv` equals `sim.golden.baseline`'s.

Parameters as `sim.tb.overlap_add_bench` (whose stream runner this reuses): `data`, a JSON file with the
`quant`, `w` and `x` streams under `inputs`, the `expected` outputs, gap and ready probabilities, and
`report`, where the full-rate test writes every handshake cycle.
"""

from __future__ import annotations

import json

import cocotb

from sim.tb.common import bench_data, run_streams


@cocotb.test()
async def random_gaps_and_backpressure(dut):
    """Random layers with random input gaps on every stream and random output backpressure."""
    data = bench_data()
    await run_streams(dut, data["gap_probability"], data["ready_probability"])


@cocotb.test()
async def fast_producer_slow_consumer(dut):
    """The loads back to back into a mostly stalled output: the MAC pipe must hold its partial sums."""
    await run_streams(dut, 0.0, 0.2)


@cocotb.test()
async def full_rate(dut):
    """No gaps, always ready: record every handshake cycle for the test to turn into cycles per output."""
    cycles = await run_streams(dut, 0.0, 1.0)
    with open(bench_data()["report"], "w") as f:
        json.dump(cycles, f)
