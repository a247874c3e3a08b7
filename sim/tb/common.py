"""Helpers shared by the cocotb benches: parameters, reset, and valid/ready stream drivers and sinks.

Stream ports of Amaranth components appear in the generated Verilog as `<name>__valid`, `<name>__ready`
and `<name>__payload`. The driver inserts random idle cycles between beats and the sink drops `ready` at
random, so every bench exercises gaps and backpressure. A handshake is sampled at the clock's rising
edge, where the values read are those the flip-flops see.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from sim.runner import PARAMS_ENV

CLOCK_PERIOD_NS = 10


def bench_params() -> dict:
    """The parameters `sim.runner.run` passed to this bench."""
    return json.loads(os.environ.get(PARAMS_ENV, "{}"))


def bench_data() -> dict:
    """The JSON document at the bench parameter `data`: stimulus too large for the environment."""
    with open(bench_params()["data"]) as f:
        return json.load(f)


def hex_words(words: list[str]) -> list[int]:
    """Stream beats written as hex strings (JSON has no integers wide enough for every payload)."""
    return [int(word, 16) for word in words]


def bench_rng(dut) -> random.Random:
    """A generator seeded from cocotb's seed (printed in the log), so a failing run can be replayed."""
    return random.Random(cocotb.RANDOM_SEED)


async def start_clock_and_reset(dut, cycles: int = 2) -> None:
    """Start `clk` and hold `rst` for a few cycles; drive the DUT's inputs to idle values first."""
    cocotb.start_soon(Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, cycles)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


def record_handshakes(dut, *ports: str) -> dict[str, list[int]]:
    """Start a task that lists, per stream port, the cycles (counted from now) on which it hands over a beat."""
    cycles: dict[str, list[int]] = {port: [] for port in ports}
    watched = [(getattr(dut, f"{port}__valid"), getattr(dut, f"{port}__ready"), cycles[port]) for port in ports]

    async def monitor() -> None:
        cycle = 0
        while True:
            await RisingEdge(dut.clk)  # reads after the edge see what the flip-flops saw at it
            for valid, ready, seen in watched:
                if valid.value and ready.value:
                    seen.append(cycle)
            cycle += 1

    cocotb.start_soon(monitor())
    return cycles


class _StreamPort:
    """The clock and the three signals of the DUT stream port `name`."""

    def __init__(self, dut, name: str, rng: random.Random):
        self.clk = dut.clk
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.rng = rng


class StreamDriver(_StreamPort):
    """Drives beats into a DUT stream input, idling a random number of cycles before each beat."""

    def __init__(self, dut, name: str, rng: random.Random, gap_probability: float = 0.3):
        super().__init__(dut, name, rng)
        self.gap_probability = gap_probability
        self.valid.value = 0

    async def send(self, beats: Iterable[int]) -> None:
        for beat in beats:
            while self.rng.random() < self.gap_probability:
                self.valid.value = 0
                await RisingEdge(self.clk)
            self.valid.value = 1
            self.payload.value = int(beat)
            await RisingEdge(self.clk)
            while not self.ready.value:
                await RisingEdge(self.clk)
        self.valid.value = 0


class StreamSink(_StreamPort):
    """Collects beats from a DUT stream output, holding `ready` low at random (backpressure).

    Collecting begins with `start()`, after reset, when the DUT's outputs are defined.
    """

    def __init__(self, dut, name: str, rng: random.Random, ready_probability: float = 0.7):
        super().__init__(dut, name, rng)
        self.ready_probability = ready_probability
        self.beats: list[int] = []
        self.ready.value = 0

    def start(self) -> StreamSink:
        cocotb.start_soon(self._run())
        return self

    async def _run(self) -> None:
        while True:
            ready = self.rng.random() < self.ready_probability
            self.ready.value = int(ready)
            await RisingEdge(self.clk)
            if ready and self.valid.value:
                self.beats.append(int(self.payload.value))

    async def wait_for(self, count: int, timeout_cycles: int) -> list[int]:
        """Wait until `count` beats have arrived; fail if `timeout_cycles` pass first."""
        for _ in range(timeout_cycles):
            if len(self.beats) >= count:
                return self.beats[:count]
            await RisingEdge(self.clk)
        raise AssertionError(f"expected {count} beats within {timeout_cycles} cycles, got {len(self.beats)}")


async def run_streams(dut, gap_probability: float, ready_probability: float) -> dict[str, list[int]]:
    """Drive every input stream, collect `o`, check it word for word; return the handshake cycles per port.

    The stimulus is `bench_data()`: `inputs` ({port: [hex words]}), `expected` (hex words on `o`) and
    optionally `compute_cycles`, time the block needs beyond its beats (it widens the timeout).
    """
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
