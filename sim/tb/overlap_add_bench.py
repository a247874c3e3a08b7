"""Overlap-add bench: every output value of `hw.spec2.overlap_add.OverlapAdd` equals the golden model's.

Parameters: `data`, the path of a JSON file holding `inputs` ({port: [hex words]}, each port driven by its
own driver), `expected` (hex words on `o`), `gap_probability`, `ready_probability` and `report`, a path
where the full-rate test writes its cycle counts (the format of `sim.tb.common.run_streams`).
"""

from __future__ import annotations

import json

import cocotb

from sim.tb.common import bench_data, run_streams


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
