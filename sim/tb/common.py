"""Helpers shared by the cocotb testbenches: parameters, reset, valid/ready stream drivers and sinks, and
`run_streams`, the whole drive-collect-check loop of a streaming block.

Stream ports of Amaranth components appear in the generated Verilog as `<name>__valid`, `<name>__ready`
and `<name>__payload`. The driver inserts random idle cycles between beats and the sink drops `ready` at
random, so every testbench exercises gaps and backpressure. A handshake is sampled at the clock's rising
edge, where the values read are those the flip-flops see.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from sim.runner import PARAMS_ENV

CLOCK_PERIOD_NS = 10


def tb_params() -> dict:
    """The parameters `sim.runner.run` passed to this testbench."""
    return json.loads(os.environ.get(PARAMS_ENV, "{}"))


def tb_data() -> dict:
    """The JSON document at the testbench parameter `data`: stimulus too large for the environment."""
    with open(tb_params()["data"]) as f:
        return json.load(f)


def hex_words(words: list[str]) -> list[int]:
    """Stream beats written as hex strings (JSON has no integers wide enough for every payload)."""
    return [int(word, 16) for word in words]


def tb_rng(dut) -> random.Random:
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


#: A mismatch message from (index, got, expected).
Describe = Callable[[int, int, int], str]


def bit_difference(item: str = "output") -> Describe:
    """The usual mismatch message: `item` and its index, both words and the bits they differ in."""
    return lambda index, got, expected: (f"{item} {index}: expected {expected:#x}, got {got:#x} "
                                         f"(differs in bits {got ^ expected:#x})")


def check_words(got: list[int], expected: list[int], describe: Describe | None = None) -> None:
    """Every word of `got` equals its counterpart in `expected`; the first that does not fails with `describe`."""
    describe = describe or bit_difference()
    for index, (g, e) in enumerate(zip(got, expected)):
        assert g == e, describe(index, g, e)


def assert_back_to_back(cycles: list[int], what: str, *, first: int | None = None, count: int | None = None) -> None:
    """`cycles` are `count` handshakes (all there are by default) on consecutive cycles from `first` (by default
    the first of them): `what` ran at one beat per cycle."""
    start = cycles[0] if first is None else first
    count = len(cycles) if count is None else count
    assert cycles == list(range(start, start + count)), (
        f"{what}: {len(cycles)} handshakes at {cycles[:8]}..., expected {count}, one per cycle from cycle {start} on")


async def run_streams(
    dut,
    inputs: dict[str, list[int]],
    expected: list[int],
    *,
    gap_probability: float | dict[str, float],
    ready_probability: float,
    compute_cycles: int = 0,
    settle_cycles: int = 50,
    describe: Describe | None = None,
    sequential: bool = False,
) -> dict[str, list[int]]:
    """Drive `inputs` ({port: beats}) into the DUT and check that `o` carries exactly `expected`.

    Every input port gets its own driver, idling before each beat with `gap_probability` (one for all ports, or
    one per port); `o` is ready with `ready_probability`. With `sequential` the ports are driven one after the
    other in the order given (each starts when the previous one's last beat is taken), else all at once. Every
    output word is checked against `expected` (`describe` words a mismatch, `bit_difference()` by default);
    after `settle_cycles` more cycles no further beat may have come. `compute_cycles`, time the block needs
    beyond its beats, widens the timeout (which only bounds a failing run). Returns the cycles, counted from
    just after reset, on which each input port and `o` handed over a beat.
    """
    gaps = {port: gap_probability[port] if isinstance(gap_probability, dict) else gap_probability
            for port in inputs}
    rng = tb_rng(dut)
    drivers = {port: StreamDriver(dut, port, rng, gap_probability=gaps[port]) for port in inputs}
    sink = StreamSink(dut, "o", rng, ready_probability=ready_probability)
    await start_clock_and_reset(dut)
    sink.start()
    cycles = record_handshakes(dut, *inputs, "o")

    async def send_in_turn() -> None:
        for port, beats in inputs.items():
            await drivers[port].send(beats)

    if sequential:
        cocotb.start_soon(send_in_turn())
    else:
        for port, beats in inputs.items():
            cocotb.start_soon(drivers[port].send(beats))
    offered = sum(len(beats) * (1 + 4 * gaps[port]) / (1 - gaps[port]) for port, beats in inputs.items())
    outputs = len(expected) / (1 - max(gaps.values(), default=0.0))
    timeout = int((offered + compute_cycles + outputs) / ready_probability) * 4 + 500
    got = await sink.wait_for(len(expected), timeout_cycles=timeout)
    check_words(got, expected, describe)
    await ClockCycles(dut.clk, settle_cycles)
    assert len(sink.beats) == len(expected), f"{len(sink.beats) - len(expected)} output beats too many"
    return cycles


def stress_tests(run: Callable[[Any, float, float], Awaitable[object]], module: str) -> tuple[Any, Any]:
    """The two cocotb tests every streaming block's testbench runs, each on `run(dut, gap_probability,
    ready_probability)`, for the testbench module `module` (its `__name__`, under which cocotb finds and names
    them): `random_gaps_and_backpressure`, at the probabilities in `tb_data()`, and `fast_producer_slow_consumer`,
    no input gaps into an output ready a fifth of the time."""

    async def random_gaps_and_backpressure(dut) -> None:
        """Random input gaps and random output backpressure."""
        data = tb_data()
        await run(dut, data["gap_probability"], data["ready_probability"])

    async def fast_producer_slow_consumer(dut) -> None:
        """No input gaps into a mostly stalled output: every buffer fills and must hold its data."""
        await run(dut, 0.0, 0.2)

    tests = []
    for test in (random_gaps_and_backpressure, fast_producer_slow_consumer):
        test.__module__, test.__qualname__ = module, test.__name__
        tests.append(cocotb.test(test))
    return tests[0], tests[1]


async def run_data_streams(dut, gap_probability: float, ready_probability: float) -> dict[str, list[int]]:
    """`run_streams` on the stimulus in `tb_data()`; return the handshake cycles per port.

    The document holds `inputs` ({port: [hex words]}), `expected` (hex words on `o`) and optionally
    `compute_cycles`, time the block needs beyond its beats (it widens the timeout).
    """
    data = tb_data()
    return await run_streams(dut, {port: hex_words(words) for port, words in data["inputs"].items()},
                             hex_words(data["expected"]), gap_probability=gap_probability,
                             ready_probability=ready_probability, compute_cycles=data.get("compute_cycles", 0))
