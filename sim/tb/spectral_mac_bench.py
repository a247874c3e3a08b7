"""Spectral MAC bench: every output beat of `hw.spectral.spectral_mac.SpectralMac` equals the golden `acc` stage.

Parameters: `data`, the path of a JSON file holding `p`, `acc_bits`, `gap_probability`, `ready_probability`,
`report` (a path the full-rate test writes its cycle count and lane utilisation to) and two cases, `random`
and `full_rate`, each `{"x": [hex], "w": [hex], "expected": [hex], "groups": int, "useful": int}`: input
spectrum beats, kernel group beats and expected output beats (layouts of `SpectralMacParams`).
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


def _split(word: int, acc_bits: int) -> tuple[int, int, int]:
    """(re, im, last) of an output beat."""
    mask = (1 << acc_bits) - 1

    def signed(v: int) -> int:
        return v - (1 << acc_bits) if v >> (acc_bits - 1) else v

    return signed(word & mask), signed(word >> acc_bits & mask), word >> (2 * acc_bits) & 1


def _check(got: list[int], expected: list[int], acc_bits: int) -> None:
    for index, (g, e) in enumerate(zip(got, expected)):
        assert g == e, (f"output beat {index}: expected (re, im, last) {_split(e, acc_bits)}, "
                        f"got {_split(g, acc_bits)}")


@cocotb.test()
async def random_gaps_and_backpressure(dut):
    """Spectra and groups of 2 x 2 tiles offered concurrently with random gaps into random backpressure."""
    data = bench_data()
    case = data["random"]
    expected = hex_words(case["expected"])
    rng = bench_rng(dut)
    x_driver = StreamDriver(dut, "x", rng, gap_probability=data["gap_probability"])
    w_driver = StreamDriver(dut, "w", rng, gap_probability=data["gap_probability"])
    sink = StreamSink(dut, "o", rng, ready_probability=data["ready_probability"])
    await start_clock_and_reset(dut)
    sink.start()
    cocotb.start_soon(x_driver.send(hex_words(case["x"])))
    cocotb.start_soon(w_driver.send(hex_words(case["w"])))
    budget = int((len(case["x"]) + len(case["w"]) + len(expected)) / data["ready_probability"]) * 3 + 200
    got = await sink.wait_for(len(expected), timeout_cycles=budget)
    _check(got, expected, data["acc_bits"])
    await ClockCycles(dut.clk, 100)
    assert len(sink.beats) == len(expected), f"{len(sink.beats) - len(expected)} output beats too many"


@cocotb.test()
async def full_rate_one_group_per_cycle(dut):
    """Spectrum loaded first, then every group back to back into an always-ready output: no stall at all."""
    data = bench_data()
    case = data["full_rate"]
    expected = hex_words(case["expected"])
    rng = bench_rng(dut)
    x_driver = StreamDriver(dut, "x", rng, gap_probability=0.0)
    w_driver = StreamDriver(dut, "w", rng, gap_probability=0.0)
    sink = StreamSink(dut, "o", rng, ready_probability=1.0)
    await start_clock_and_reset(dut)
    sink.start()

    w_cycles = record_handshakes(dut, "w")["w"]
    await x_driver.send(hex_words(case["x"]))
    cocotb.start_soon(w_driver.send(hex_words(case["w"])))
    got = await sink.wait_for(len(expected), timeout_cycles=len(case["w"]) + len(expected) + 200)
    _check(got, expected, data["acc_bits"])

    groups = case["groups"]
    assert len(w_cycles) == groups, f"{len(w_cycles)} group handshakes, expected {groups}"
    cycles = w_cycles[-1] - w_cycles[0] + 1
    stalls = cycles - groups
    assert stalls == 0, f"{stalls} stall cycles in {cycles} (first at cycle offset " \
                        f"{next(b - a for a, b in zip(w_cycles, w_cycles[1:]) if b - a > 1)})"
    lane_cycles = data["p"] * cycles
    result = {"groups": groups, "cycles": cycles, "useful": case["useful"], "lane_cycles": lane_cycles,
              "utilisation": case["useful"] / lane_cycles}
    dut._log.info(f"full rate: {result}")
    with open(data["report"], "w") as f:
        json.dump(result, f)
