"""BIM benches: every output beat of `hw.bim_unpacker.BimUnpacker` / `SparseExpander` equals the golden model's.

Parameters: `block` ("unpacker" or "expander"; the other block's tests are skipped), `mask_port` (the
expander's mask-row input: "mask", or "i" for an unpacker chained in front of it) and `data`, the path of
a JSON file holding `latency`, `gap_probability`, `ready_probability` and streams of hex beats:

* unpacker: `random` and `full_rate`, each `{"beats": [...], "expected": [...]}`.
* expander: `random`, `full_rate` and `value_bound`, each `{"masks": [...], "values": [...], "expected": [...]}`.

`full_rate` streams run with no gaps into an always-ready output and must move one row per cycle;
`value_bound` rows keep more values than a beat holds, so the value stream sets the pace.
"""

from __future__ import annotations

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge

from sim.tb.common import (
    StreamDriver,
    StreamSink,
    bench_data,
    bench_params,
    bench_rng,
    hex_words,
    start_clock_and_reset,
)

_PARAMS = bench_params()
_BLOCK = _PARAMS.get("block")
assert _BLOCK in ("unpacker", "expander"), f"bench parameter block must be unpacker or expander, got {_BLOCK!r}"


def _check(got: list[int], expected: list[int]) -> None:
    for index, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"row {index}: expected {e:#x}, got {g:#x} (differs in bits {g ^ e:#x})"


class _Handshakes:
    """Cycle numbers of the handshakes on some stream ports, counted from when `start` is called."""

    def __init__(self, dut, ports: list[str]):
        self.dut = dut
        self.cycles: dict[str, list[int]] = {port: [] for port in ports}

    def start(self) -> _Handshakes:
        cocotb.start_soon(self._run())
        return self

    async def _run(self) -> None:
        # Reads after the edge see what the flip-flops saw at it (writes land later in the time step).
        cycle = 0
        while True:
            await RisingEdge(self.dut.clk)
            for port, cycles in self.cycles.items():
                if getattr(self.dut, f"{port}__valid").value and getattr(self.dut, f"{port}__ready").value:
                    cycles.append(cycle)
            cycle += 1


async def _expect_no_more(dut, sink: StreamSink, count: int, latency: int) -> None:
    await ClockCycles(dut.clk, 4 * latency + 20)
    assert len(sink.beats) == count, f"{len(sink.beats) - count} output beats too many"


# ---------------------------------------------------------------------------------------------------------------
# BimUnpacker


async def _unpacker_random(dut, gap_probability: float, ready_probability: float) -> None:
    data = bench_data()
    beats, expected = hex_words(data["random"]["beats"]), hex_words(data["random"]["expected"])
    rng = bench_rng(dut)
    driver = StreamDriver(dut, "i", rng, gap_probability=gap_probability)
    sink = StreamSink(dut, "o", rng, ready_probability=ready_probability)
    await start_clock_and_reset(dut)
    sink.start()
    cocotb.start_soon(driver.send(beats))
    got = await sink.wait_for(len(expected), timeout_cycles=int(len(beats) / ready_probability) * 4 + 200)
    _check(got, expected)
    await _expect_no_more(dut, sink, len(expected), data["latency"])


@cocotb.test(skip=_BLOCK != "unpacker")
async def unpacker_random_gaps_and_backpressure(dut):
    """Canonical and scrambled streams (idle beats, Z rows out of order and rewritten), gaps, backpressure."""
    data = bench_data()
    await _unpacker_random(dut, data["gap_probability"], data["ready_probability"])


@cocotb.test(skip=_BLOCK != "unpacker")
async def unpacker_fast_producer_slow_consumer(dut):
    """The same beats offered back to back into a mostly stalled output: the pipe fills and must hold."""
    await _unpacker_random(dut, gap_probability=0.0, ready_probability=0.2)


@cocotb.test(skip=_BLOCK != "unpacker")
async def unpacker_full_rate_one_row_per_cycle(dut):
    """Canonical stream, no gaps, always ready: every beat taken on consecutive cycles, then one row per cycle;
    r + T·m_t beats give T·m_t rows, from first input to last output in r + T·m_t + latency cycles."""
    data = bench_data()
    beats, expected = hex_words(data["full_rate"]["beats"]), hex_words(data["full_rate"]["expected"])
    latency = data["latency"]
    rng = bench_rng(dut)
    driver = StreamDriver(dut, "i", rng, gap_probability=0.0)
    sink = StreamSink(dut, "o", rng, ready_probability=1.0)
    await start_clock_and_reset(dut)
    sink.start()
    handshakes = _Handshakes(dut, ["i", "o"]).start()
    cocotb.start_soon(driver.send(beats))
    got = await sink.wait_for(len(expected), timeout_cycles=len(beats) + 4 * latency + 50)
    _check(got, expected)
    in_cycles, out_cycles = handshakes.cycles["i"], handshakes.cycles["o"]
    n_in, n_out = len(beats), len(expected)
    first_in = in_cycles[0]
    assert in_cycles == list(range(first_in, first_in + n_in)), "input stalled at full rate"
    first_out = first_in + n_in - n_out + latency  # the first P beat follows the r Z-only beats
    assert out_cycles[:n_out] == list(range(first_out, first_out + n_out)), (
        f"outputs at {out_cycles[:8]}..., expected from cycle {first_out} on, one per cycle")
    cycles = out_cycles[n_out - 1] - first_in + 1
    dut._log.info(f"{n_in} beats -> {n_out} rows in {cycles} cycles (first input to last output, "
                  f"latency {latency})")
    assert cycles == n_in + latency


# ---------------------------------------------------------------------------------------------------------------
# SparseExpander


async def _expander_run(dut, stream: dict, mask_gap: float, value_gap: float, ready: float,
                        handshakes: bool = False) -> tuple[int, dict[str, list[int]]]:
    """Drive one expander stream; check every row; return (cycles from first mask in to last row out, cycles)."""
    masks, values, expected = (hex_words(stream[key]) for key in ("masks", "values", "expected"))
    latency = bench_data()["latency"]
    mask_port = _PARAMS.get("mask_port", "mask")
    rng = bench_rng(dut)
    mask_driver = StreamDriver(dut, mask_port, rng, gap_probability=mask_gap)
    value_driver = StreamDriver(dut, "values", rng, gap_probability=value_gap)
    sink = StreamSink(dut, "o", rng, ready_probability=ready)
    await start_clock_and_reset(dut)
    sink.start()
    monitor = _Handshakes(dut, [mask_port, "values", "o"]).start()
    cocotb.start_soon(mask_driver.send(masks))
    cocotb.start_soon(value_driver.send(values))
    slowest = max(len(masks) / (1 - mask_gap), len(values) / (1 - value_gap))
    got = await sink.wait_for(len(expected), timeout_cycles=int(slowest / ready) * 4 + 200)
    _check(got, expected)
    await _expect_no_more(dut, sink, len(expected), latency)
    cycles = monitor.cycles["o"][len(expected) - 1] - monitor.cycles[mask_port][0] + 1
    return cycles, monitor.cycles


@cocotb.test(skip=_BLOCK != "expander")
async def expander_random_gaps_and_backpressure(dut):
    """Real masks, random values, independent gaps on both inputs, output backpressure."""
    data = bench_data()
    gap, ready = data["gap_probability"], data["ready_probability"]
    await _expander_run(dut, data["random"], gap, gap, ready)


@cocotb.test(skip=_BLOCK != "expander")
async def expander_fast_producers_slow_consumer(dut):
    """Both inputs offered back to back into a mostly stalled output: queue and pipe fill and must hold."""
    await _expander_run(dut, bench_data()["random"], 0.0, 0.0, 0.2)


@cocotb.test(skip=_BLOCK != "expander")
async def expander_starved_of_values(dut):
    """Mask rows back to back, values trickling in: rows wait in stage 2 for their values."""
    await _expander_run(dut, bench_data()["random"], 0.0, 0.8, 0.9)


@cocotb.test(skip=_BLOCK != "expander")
async def expander_full_rate_one_row_per_cycle(dut):
    """No row keeps more than values_per_beat values; no gaps, always ready: N rows leave on N consecutive
    cycles, first input to last output in N + latency cycles."""
    data = bench_data()
    stream, latency = data["full_rate"], data["latency"]
    n = len(stream["expected"])
    cycles, handshakes = await _expander_run(dut, stream, 0.0, 0.0, 1.0)
    mask_port = _PARAMS.get("mask_port", "mask")
    first_in = handshakes[mask_port][0]
    out = handshakes["o"][:n]
    dut._log.info(f"{n} rows in {cycles} cycles (first mask row in to last row out, latency {latency})")
    assert out == list(range(out[0], out[0] + n)), f"rows left at {out[:12]}..., not one per cycle"
    if mask_port == "mask":
        assert handshakes["mask"][:n] == list(range(first_in, first_in + n)), "mask input stalled at full rate"
        assert cycles == n + latency


@cocotb.test(skip=_BLOCK != "expander")
async def expander_value_bound_rate(dut):
    """Rows keep more than values_per_beat values: with both inputs unthrottled the value stream sets the pace,
    one beat per cycle, so the last row leaves two cycles after the last value beat arrives."""
    data = bench_data()
    stream = data["value_bound"]
    n, beats = len(stream["expected"]), len(stream["values"])
    cycles, handshakes = await _expander_run(dut, stream, 0.0, 0.0, 1.0)
    values = handshakes["values"][:beats]
    assert values == list(range(values[0], values[0] + beats)), "value input stalled while rows wait for values"
    dut._log.info(f"{n} rows, {beats} value beats in {cycles} cycles ({n / cycles:.2f} rows per cycle)")
    assert handshakes["o"][n - 1] == values[-1] + 2
