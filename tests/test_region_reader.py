"""`hw.memory.RegionReader` against a plain list: every word of a range, in order, held under backpressure, and
no read ever addressed outside the memory (a simulator that checks bounds, such as CXXRTL, stops on one)."""

from __future__ import annotations

import random

import pytest
from amaranth import Module
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from hw.memory import RegionReader


@pytest.mark.parametrize("depth, ranges", [(5, [(0, 5), (3, 2), (4, 1), (0, 0), (0, 1)]),
                                           (8, [(0, 8), (7, 1), (2, 6)]),
                                           (13, [(0, 13), (12, 1), (5, 8), (0, 13)])])
def test_streams_ranges_and_never_reads_past_the_end(depth: int, ranges: list[tuple[int, int]]):
    words = [(7 * i + 3) & 0xFF for i in range(depth)]
    m = Module()
    m.submodules.mem = mem = Memory(shape=8, depth=depth, init=words)
    m.submodules.reader = reader = RegionReader(8, depth)
    port = mem.read_port()
    m.d.comb += [port.addr.eq(reader.addr), port.en.eq(reader.en), reader.data.eq(port.data)]
    rng = random.Random(depth)
    got: list[list[int]] = []
    enabled_addresses: list[int] = []

    async def testbench(ctx):
        for base, count in ranges:
            ctx.set(reader.base, base)
            ctx.set(reader.count, count)
            ctx.set(reader.start, 1)
            await ctx.tick()
            ctx.set(reader.start, 0)
            out: list[int] = []
            for _ in range(20 * depth + 20):
                ready = rng.random() < 0.6
                ctx.set(reader.o.ready, ready)
                if ctx.get(reader.en):
                    enabled_addresses.append(ctx.get(reader.addr))
                if ready and ctx.get(reader.o.valid):
                    out.append(ctx.get(reader.o.payload))
                await ctx.tick()
                if not ctx.get(reader.busy):
                    break
            got.append(out)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert got == [words[base:base + count] for base, count in ranges]
    assert enabled_addresses and max(enabled_addresses) < depth


def test_hold_keeps_it_behind_a_writer():
    """Held while `addr` is not yet written (what the sequencer does when a layer reads what the one before is
    still writing), the reader hands over every word as written, never the stale word before it, under random
    writes and backpressure; without the hold the same run hands over stale words (the check can fail)."""
    depth = 24
    fresh = [(5 * i + 1) & 0xFF for i in range(depth)]

    def run(gated: bool) -> list[int]:
        m = Module()
        m.submodules.mem = mem = Memory(shape=8, depth=depth, init=[0xEE] * depth)
        m.submodules.reader = reader = RegionReader(8, depth)
        read, write = mem.read_port(), mem.write_port()
        m.d.comb += [read.addr.eq(reader.addr), read.en.eq(reader.en), reader.data.eq(read.data)]
        rng = random.Random(7)
        out: list[int] = []

        async def testbench(ctx):
            ctx.set(reader.count, depth)
            ctx.set(reader.start, 1)
            await ctx.tick()
            ctx.set(reader.start, 0)
            written = 0
            for _ in range(40 * depth):
                ctx.set(reader.hold, gated and ctx.get(reader.addr) >= written)
                ready = rng.random() < 0.7
                ctx.set(reader.o.ready, ready)
                writing = written < depth and rng.random() < 0.3
                ctx.set(write.en, writing)
                ctx.set(write.addr, min(written, depth - 1))
                ctx.set(write.data, fresh[min(written, depth - 1)])
                if ready and ctx.get(reader.o.valid):
                    out.append(ctx.get(reader.o.payload))
                await ctx.tick()
                written += writing
                if not ctx.get(reader.busy):
                    break

        sim = Simulator(m)
        sim.add_clock(1e-6)
        sim.add_testbench(testbench)
        sim.run()
        return out

    assert run(gated=True) == fresh
    assert run(gated=False) != fresh
