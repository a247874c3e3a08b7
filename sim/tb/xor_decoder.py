"""XOR decoder testbench: every output word of `hw.xor_decoder.XorDecoder` equals the golden model's.

Parameters: `data`, the path of a JSON file (the streams are too large for the environment) holding
`latency` and two streams, `random` and `full_rate`, each `{"beats": [hex], "expected": [hex]}`, plus
`gap_probability` and `ready_probability` for the random stream. The full-rate stream has one beat per
slice and runs with no gaps and `o.ready` always high. The random stream also runs with no input gaps
into an output that is ready only a fifth of the time.
"""

from __future__ import annotations

import cocotb

from sim.tb.common import assert_back_to_back, bit_difference, hex_words, run_streams, stress_tests, tb_data


async def _run(dut, stream: str, gap_probability: float, ready_probability: float) -> dict[str, list[int]]:
    """Drive `stream` into `i` and check every slice on `o`; return the handshake cycles."""
    data = tb_data()
    beats, expected = hex_words(data[stream]["beats"]), hex_words(data[stream]["expected"])
    latency = data["latency"]
    return await run_streams(dut, {"i": beats}, expected, gap_probability=gap_probability,
                             ready_probability=ready_probability, compute_cycles=4 * latency,
                             settle_cycles=4 * latency + 20, describe=bit_difference("slice"))


# The random stream is real encoder output with continuation beats.
random_gaps_and_backpressure, fast_producer_slow_consumer = stress_tests(
    lambda dut, gaps, ready: _run(dut, "random", gaps, ready), __name__)


@cocotb.test()
async def full_rate_one_slice_per_cycle(dut):
    """No gaps, always ready: N one-beat slices go from first input to last output in N + latency cycles."""
    data = tb_data()
    latency, n = data["latency"], len(data["full_rate"]["beats"])
    handshakes = await _run(dut, "full_rate", gap_probability=0.0, ready_probability=1.0)
    in_cycles, out_cycles = handshakes["i"], handshakes["o"]
    first_in, last_out = in_cycles[0], out_cycles[n - 1]
    assert_back_to_back(in_cycles, "input", count=n)
    assert_back_to_back(out_cycles[:n], "output", first=first_in + latency, count=n)
    cycles = last_out - first_in + 1
    dut._log.info(f"{n} slices in {cycles} cycles (first input to last output handshake, latency {latency})")
    assert cycles == n + latency
