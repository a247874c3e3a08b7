"""BIM testbenches: every output beat of `hw.bim_unpacker.BimUnpacker` / `SparseExpander` equals the golden model's.

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

from sim.tb.common import assert_back_to_back, bit_difference, hex_words, run_streams, tb_data, tb_params

_PARAMS = tb_params()
_BLOCK = _PARAMS.get("block")
assert _BLOCK in ("unpacker", "expander"), f"testbench parameter block must be unpacker or expander, got {_BLOCK!r}"


async def _run(dut, inputs: dict[str, list[int]], expected: list[int], gap_probability: float | dict[str, float],
               ready_probability: float) -> dict[str, list[int]]:
    """Drive `inputs`, check every row on `o`; return the handshake cycles per port."""
    latency = tb_data()["latency"]
    return await run_streams(dut, inputs, expected, gap_probability=gap_probability,
                             ready_probability=ready_probability, compute_cycles=4 * latency,
                             settle_cycles=4 * latency + 20, describe=bit_difference("row"))


# ---------------------------------------------------------------------------------------------------------------
# BimUnpacker


async def _unpacker_run(dut, stream: str, gap_probability: float, ready_probability: float) -> dict[str, list[int]]:
    data = tb_data()[stream]
    beats, expected = hex_words(data["beats"]), hex_words(data["expected"])
    return await _run(dut, {"i": beats}, expected, gap_probability, ready_probability)


@cocotb.test(skip=_BLOCK != "unpacker")
async def unpacker_random_gaps_and_backpressure(dut):
    """Canonical and scrambled streams (idle beats, Z rows out of order and rewritten), gaps, backpressure."""
    data = tb_data()
    await _unpacker_run(dut, "random", data["gap_probability"], data["ready_probability"])


@cocotb.test(skip=_BLOCK != "unpacker")
async def unpacker_fast_producer_slow_consumer(dut):
    """The same beats offered back to back into a mostly stalled output: the pipe fills and must hold."""
    await _unpacker_run(dut, "random", gap_probability=0.0, ready_probability=0.2)


@cocotb.test(skip=_BLOCK != "unpacker")
async def unpacker_full_rate_one_row_per_cycle(dut):
    """Canonical stream, no gaps, always ready: every beat taken on consecutive cycles, then one row per cycle;
    r + T·m_t beats give T·m_t rows, from first input to last output in r + T·m_t + latency cycles."""
    data = tb_data()
    latency = data["latency"]
    n_in, n_out = len(data["full_rate"]["beats"]), len(data["full_rate"]["expected"])
    handshakes = await _unpacker_run(dut, "full_rate", gap_probability=0.0, ready_probability=1.0)
    in_cycles, out_cycles = handshakes["i"], handshakes["o"]
    first_in = in_cycles[0]
    assert_back_to_back(in_cycles, "input", count=n_in)
    first_out = first_in + n_in - n_out + latency  # the first P beat follows the r Z-only beats
    assert_back_to_back(out_cycles[:n_out], "output", first=first_out, count=n_out)
    cycles = out_cycles[n_out - 1] - first_in + 1
    dut._log.info(f"{n_in} beats -> {n_out} rows in {cycles} cycles (first input to last output, "
                  f"latency {latency})")
    assert cycles == n_in + latency


# ---------------------------------------------------------------------------------------------------------------
# SparseExpander


async def _expander_run(dut, stream: dict, mask_gap: float, value_gap: float,
                        ready: float) -> tuple[int, dict[str, list[int]]]:
    """Drive one expander stream; check every row; return (cycles from first mask in to last row out, cycles)."""
    masks, values, expected = (hex_words(stream[key]) for key in ("masks", "values", "expected"))
    mask_port = _PARAMS.get("mask_port", "mask")
    handshakes = await _run(dut, {mask_port: masks, "values": values}, expected,
                            {mask_port: mask_gap, "values": value_gap}, ready)
    cycles = handshakes["o"][len(expected) - 1] - handshakes[mask_port][0] + 1
    return cycles, handshakes


@cocotb.test(skip=_BLOCK != "expander")
async def expander_random_gaps_and_backpressure(dut):
    """Real masks, random values, independent gaps on both inputs, output backpressure."""
    data = tb_data()
    gap, ready = data["gap_probability"], data["ready_probability"]
    await _expander_run(dut, data["random"], gap, gap, ready)


@cocotb.test(skip=_BLOCK != "expander")
async def expander_fast_producers_slow_consumer(dut):
    """Both inputs offered back to back into a mostly stalled output: queue and pipe fill and must hold."""
    await _expander_run(dut, tb_data()["random"], 0.0, 0.0, 0.2)


@cocotb.test(skip=_BLOCK != "expander")
async def expander_starved_of_values(dut):
    """Mask rows back to back, values trickling in: rows wait in stage 2 for their values."""
    await _expander_run(dut, tb_data()["random"], 0.0, 0.8, 0.9)


@cocotb.test(skip=_BLOCK != "expander")
async def expander_full_rate_one_row_per_cycle(dut):
    """No row keeps more than values_per_beat values; no gaps, always ready: N rows leave on N consecutive
    cycles, first input to last output in N + latency cycles."""
    data = tb_data()
    stream, latency = data["full_rate"], data["latency"]
    n = len(stream["expected"])
    cycles, handshakes = await _expander_run(dut, stream, 0.0, 0.0, 1.0)
    mask_port = _PARAMS.get("mask_port", "mask")
    out = handshakes["o"][:n]
    dut._log.info(f"{n} rows in {cycles} cycles (first mask row in to last row out, latency {latency})")
    assert_back_to_back(out, "output", count=n)
    if mask_port == "mask":
        assert_back_to_back(handshakes["mask"][:n], "mask input", count=n)
        assert cycles == n + latency


@cocotb.test(skip=_BLOCK != "expander")
async def expander_value_bound_rate(dut):
    """Rows keep more than values_per_beat values: with both inputs unthrottled the value stream sets the pace,
    one beat per cycle, so the last row leaves two cycles after the last value beat arrives."""
    data = tb_data()
    stream = data["value_bound"]
    n, beats = len(stream["expected"]), len(stream["values"])
    cycles, handshakes = await _expander_run(dut, stream, 0.0, 0.0, 1.0)
    values = handshakes["values"][:beats]
    assert_back_to_back(values, "value input (rows waiting for values)", count=beats)
    dut._log.info(f"{n} rows, {beats} value beats in {cycles} cycles ({n / cycles:.2f} rows per cycle)")
    assert handshakes["o"][n - 1] == values[-1] + 2
