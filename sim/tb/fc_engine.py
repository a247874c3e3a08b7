"""FC engine testbench: every output of `hw.fc_engine.FcEngine` equals `hw.spec.fc.fc_fixed`, and the compute
phase takes one slice per cycle.

The stimulus is the generic multi-stream one (`sim.tb.common.run_data_streams`, parameters as in
`sim.tb.streams`): `data` names a JSON file with `inputs` (cfg, x, scale, xor, bim: hex beats of one or
more layers), `expected` (the `o` beats), `gap_probability`, `ready_probability`, `compute_cycles` and
`report`. Besides the handshakes, the full-rate test watches the engine's own `computing` and `slice_take`
signals and writes, per layer, the cycles spent in the compute phase, the slices taken in it and the XOR
beats the decoder took meanwhile.
"""

from __future__ import annotations

import json

import cocotb
from cocotb.triggers import RisingEdge

from sim.tb.common import run_data_streams, tb_data


def watch_compute(dut) -> list[dict[str, int]]:
    """Start a task that appends, per compute phase, its cycles, slices taken and XOR input beats taken."""
    phases: list[dict[str, int]] = []

    async def monitor() -> None:
        current = None
        while True:
            await RisingEdge(dut.clk)
            if dut.rst.value:
                continue
            if dut.computing.value:
                if current is None:
                    current = {"cycles": 0, "slices": 0, "xor_beats": 0}
                    phases.append(current)
                current["cycles"] += 1
                current["slices"] += int(dut.slice_take.value)
                current["xor_beats"] += int(dut.xor__valid.value and dut.xor__ready.value)
            else:
                current = None

    cocotb.start_soon(monitor())
    return phases


@cocotb.test()
async def random_gaps_and_backpressure(dut):
    """Random input gaps on every stream and random output backpressure."""
    data = tb_data()
    await run_data_streams(dut, data["gap_probability"], data["ready_probability"])


@cocotb.test()
async def fast_producer_slow_consumer(dut):
    """No input gaps into a mostly stalled output: outputs must hold while the next layer's beats wait."""
    await run_data_streams(dut, 0.0, 0.2)


@cocotb.test()
async def full_rate(dut):
    """No gaps, always ready: record every handshake and each compute phase's cycles and slices."""
    phases = watch_compute(dut)
    cycles = await run_data_streams(dut, 0.0, 1.0)
    with open(tb_data()["report"], "w") as f:
        json.dump({"handshakes": cycles, "compute": phases}, f)
