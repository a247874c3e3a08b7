"""`hw.memory.SpramMemory` in simulation (its behavioural SPRAM lanes) against a Python model of its contract.

Parameters: `width`, `depth`, `cycles`, `idle_probability`, `write_probability`. Each cycle drives a write, a
read, a cycle with neither (the read data must hold, as a streamer under backpressure needs), or now and then
both (outside the contract: the write goes ahead and the read data is the model's all ones). Reads go mostly
to written addresses, and every read's data is checked against the model one edge later.
"""

from __future__ import annotations

import cocotb
from cocotb.triggers import RisingEdge

from sim.tb.common import start_clock_and_reset, tb_params, tb_rng


@cocotb.test()
async def random_accesses(dut):
    """Random writes, reads, idle cycles and holds against a dict of written words."""
    params = tb_params()
    width, depth, cycles = params["width"], params["depth"], params["cycles"]
    rng = tb_rng(dut)
    undefined = (1 << width) - 1  # the model's stand-in for the cell's undefined output after a write
    dut.write__en.value = 0
    dut.read__en.value = 0
    await start_clock_and_reset(dut)

    words: dict[int, int] = {}
    expected: int | None = None  # read data after the last edge; None: never read yet
    op = ("idle", 0, 0)
    checked = holds = 0
    for cycle in range(cycles):
        kind, addr, data = op
        # The inputs driven since the last edge are sampled at this one; the data seen here is the last edge's.
        await RisingEdge(dut.clk)
        if expected is not None:
            got = int(dut.read__data.value)
            assert got == expected, f"cycle {cycle}: read data {got:#x}, expected {expected:#x}"
            checked += 1
        if kind in ("write", "both"):
            words[addr] = data
            expected = undefined
        elif kind == "read":
            expected = words.get(addr)  # an address never written is undefined on the cell: not checked
        else:
            holds += expected is not None

        roll = rng.random()
        if roll < params["idle_probability"]:
            op = ("idle", 0, 0)
        elif roll < params["idle_probability"] + params["write_probability"]:
            op = ("write", rng.randrange(depth), rng.getrandbits(width))
        elif roll < 0.98 or not words:
            addr = rng.choice(list(words)) if words and rng.random() < 0.9 else rng.randrange(depth)
            op = ("read", addr, 0)
        else:
            op = ("both", rng.randrange(depth), rng.getrandbits(width))
        kind, addr, data = op
        dut.write__en.value = int(kind in ("write", "both"))
        dut.read__en.value = int(kind in ("read", "both"))
        dut.write__addr.value = addr
        dut.read__addr.value = addr if kind == "read" else rng.randrange(depth)  # a write's address must win
        dut.write__data.value = data if kind in ("write", "both") else rng.getrandbits(width)
    assert checked > cycles // 2 and holds > cycles // 10, (checked, holds)
    dut._log.info(f"{checked} read-data checks, {holds} of them on held data, {len(words)} words written")
