"""Accelerator bench: a scripted conversation with the byte-stream `Accelerator`, every answer checked.

Requests go in on `rx` with random gaps, answers come out of `tx` under random backpressure. The script is
the JSON document at parameter `data`: `steps`, each `{"send": hex, "budget": cycles}` plus either
`"expect": hex` (the whole response frame, byte for byte) or `"status"` and `"length"` (an OK answer whose
payload the test cannot know in advance, such as RUN's cycle count), and optionally `"name"`: the payload
of a named step is written to `report` ({name: hex}) for the test to inspect.
"""

from __future__ import annotations

import json

import cocotb
from cocotb.triggers import ClockCycles

from host.protocol import CRC_BYTES, HEADER_BYTES, SYNC_RESPONSE, decode_frame
from sim.tb.common import StreamDriver, StreamSink, bench_data, bench_rng, start_clock_and_reset


@cocotb.test()
async def scripted_conversation(dut):
    """Each step's request, then exactly its answer; no stray bytes in between."""
    script = bench_data()
    rng = bench_rng(dut)
    driver = StreamDriver(dut, "rx", rng, gap_probability=0.3)
    sink = StreamSink(dut, "tx", rng, ready_probability=0.6)
    await start_clock_and_reset(dut)
    sink.start()
    received = 0
    report: dict[str, str] = {}
    for number, step in enumerate(script["steps"]):
        request = bytes.fromhex(step["send"])
        await driver.send(request)
        budget = int(step["budget"])
        header = bytes(await sink.wait_for(received + HEADER_BYTES, budget))[received:]
        assert header[0] == SYNC_RESPONSE, f"step {number}: answer starts {header.hex()}"
        size = HEADER_BYTES + int.from_bytes(header[2:4], "little") + CRC_BYTES
        frame = bytes(await sink.wait_for(received + size, budget))[received:]
        received += size
        what = f"step {number} ({step.get('name', request[:8].hex())})"
        if "expect" in step:
            expected = bytes.fromhex(step["expect"])
            assert frame == expected, f"{what}: expected {expected[:24].hex()}..., got {frame[:24].hex()}..."
        else:
            answer = decode_frame(frame, SYNC_RESPONSE)
            assert (answer.code, len(answer.payload)) == (step["status"], step["length"]), \
                f"{what}: expected status {step['status']} with {step['length']} bytes, got {frame.hex()}"
        if "name" in step:
            report[step["name"]] = decode_frame(frame, SYNC_RESPONSE).payload.hex()
        await ClockCycles(dut.clk, 20)
        assert len(sink.beats) == received, f"{what}: unexpected extra bytes {bytes(sink.beats[received:]).hex()}"
    with open(script["report"], "w") as f:
        json.dump(report, f)
