"""Generic multi-stream testbench: every beat a block puts on `o` equals the golden model's.

For blocks whose stimulus is a set of independent input streams (`sim.tb.common.run_data_streams`). Parameters:
`data`, the path of a JSON file holding `inputs` ({port: [hex words]}, each port driven by its own driver),
`expected` (hex words on `o`), `gap_probability`, `ready_probability`, optionally `compute_cycles` (time the
block needs beyond its beats) and `static` ({signal: int}, plain input signals set before reset and held),
and `report`, where the full-rate test writes every port's handshake cycles.
"""

from __future__ import annotations

import json

import cocotb

from sim.tb.common import run_data_streams, tb_data


def _set_static(dut) -> None:
    for name, value in tb_data().get("static", {}).items():
        getattr(dut, name).value = int(value)


@cocotb.test()
async def random_gaps_and_backpressure(dut):
    """Random input gaps on every stream and random output backpressure."""
    data = tb_data()
    _set_static(dut)
    await run_data_streams(dut, data["gap_probability"], data["ready_probability"])


@cocotb.test()
async def fast_producer_slow_consumer(dut):
    """No input gaps into a mostly stalled output: every buffer fills and must hold its data."""
    _set_static(dut)
    await run_data_streams(dut, 0.0, 0.2)


@cocotb.test()
async def full_rate(dut):
    """No gaps, always ready: record every handshake cycle for the test to turn into throughput figures."""
    _set_static(dut)
    cycles = await run_data_streams(dut, 0.0, 1.0)
    with open(tb_data()["report"], "w") as f:
        json.dump(cycles, f)
