"""Spectral MAC testbench: every output beat of `hw.spectral.spectral_mac.SpectralMac` equals the golden `acc` stage.

Parameters: `data`, the path of a JSON file holding `p`, `acc_bits`, `gap_probability`, `ready_probability`,
`report` (a path the full-rate test writes its cycle count and lane utilisation to) and two cases, `random`
and `full_rate`, each `{"x": [hex], "w": [hex], "expected": [hex], "groups": int, "useful": int}`: input
spectrum beats, kernel group beats and expected output beats (layouts of `SpectralMacParams`).
"""

from __future__ import annotations

import json

import cocotb

from sim.tb.common import assert_back_to_back, hex_words, run_streams, tb_data


def _split(word: int, acc_bits: int) -> tuple[int, int, int]:
    """(re, im, last) of an output beat."""
    mask = (1 << acc_bits) - 1

    def signed(v: int) -> int:
        return v - (1 << acc_bits) if v >> (acc_bits - 1) else v

    return signed(word & mask), signed(word >> acc_bits & mask), word >> (2 * acc_bits) & 1


async def _run(dut, case: str, gap_probability: float, ready_probability: float, *,
               sequential: bool = False) -> dict[str, list[int]]:
    """Drive `case`'s spectra into `x` and groups into `w`, check every output beat; return the handshake cycles."""
    data = tb_data()
    beats = {port: hex_words(data[case][port]) for port in ("x", "w")}
    acc_bits = data["acc_bits"]
    # No early start: a group waits for its whole buffer (SpectralConv's benches drive `ready_slots` from the
    # spectra it writes).
    dut.ready_slots.value = 0
    return await run_streams(
        dut, beats, hex_words(data[case]["expected"]), gap_probability=gap_probability,
        ready_probability=ready_probability, settle_cycles=100, sequential=sequential,
        describe=lambda i, g, e: (f"output beat {i}: expected (re, im, last) {_split(e, acc_bits)}, "
                                  f"got {_split(g, acc_bits)}"))


@cocotb.test()
async def random_gaps_and_backpressure(dut):
    """Spectra and groups of 2 x 2 tiles offered concurrently with random gaps into random backpressure."""
    data = tb_data()
    await _run(dut, "random", data["gap_probability"], data["ready_probability"])


@cocotb.test()
async def full_rate_one_group_per_cycle(dut):
    """Spectrum loaded first, then every group back to back into an always-ready output: no stall at all."""
    data = tb_data()
    case = data["full_rate"]
    w_cycles = (await _run(dut, "full_rate", 0.0, 1.0, sequential=True))["w"]

    groups = case["groups"]
    assert len(w_cycles) == groups, f"{len(w_cycles)} group handshakes, expected {groups}"
    assert_back_to_back(w_cycles, "group input (w)")
    cycles = w_cycles[-1] - w_cycles[0] + 1
    lane_cycles = data["p"] * cycles
    result = {"groups": groups, "cycles": cycles, "useful": case["useful"], "lane_cycles": lane_cycles,
              "utilisation": case["useful"] / lane_cycles}
    dut._log.info(f"full rate: {result}")
    with open(data["report"], "w") as f:
        json.dump(result, f)
