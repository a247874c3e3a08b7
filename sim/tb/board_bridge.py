"""The virtual board's simulator side under cocotb (Icarus): the `Accelerator`'s byte streams bridged to a socket.

`sim.server --sim icarus` runs this cocotb module with parameters `bridge_port` (where to connect),
`stats_file` (where to write the simulated cycle count at the end) and `frame_timeout_ms` (the config's), and
optionally `stress` (a seed: random input gaps and output backpressure, as `sim/board_harness.cpp` does with
one). Bytes from the socket go in on `rx`; bytes out of `tx` go back to the socket. The bridge steps the clock
cycle by cycle only while bytes move. While the device computes (or waits for the rest of a frame) with
nothing to send it waits in the simulator for `tx.valid` to rise or `busy` to fall (`tx` not ready meanwhile,
which valid/ready allows), in slices short enough to look at the socket every few milliseconds, and pulses
`expire` once the host has sent nothing for the frame timeout in real time (a frame the host abandoned half
sent is dropped as soon as on a board, not after the frame timeout's cycles at Icarus' speed). While the
device is idle it blocks on the socket with the clock stopped: nothing in an idle device counts time.
`sim/board_harness.cpp` does the same under Verilator, with no Python in the loop.
"""

from __future__ import annotations

import json
import random
import select
import socket
import time
from collections import deque

import cocotb
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge
from cocotb.utils import get_sim_time

from hw.spec.protocol import DEFAULT_FRAME_TIMEOUT_MS
from sim.tb.common import CLOCK_PERIOD_NS, start_clock_and_reset, tb_params

#: The most simulated cycles a computing device runs between looks at the socket (the host may have gone) ...
COMPUTE_SLICE = 4096
#: ... and the real time a slice should take at most: slices start at MIN_SLICE cycles and double while they
#: take less than half of it, so `expire` comes within a few milliseconds of the frame timeout.
SLICE_SECONDS = 0.005
MIN_SLICE = 16
#: Cycles between looks at the socket while bytes move and none is waiting (a select() per cycle would cost
#: more than the cycle).
POLL_CYCLES = 64
#: With `stress`: the chance of an idle cycle before each input byte (repeated), and of `tx` not ready.
GAP_PROBABILITY = 0.3
STALL_PROBABILITY = 0.4


@cocotb.test()
async def serve(dut):
    params = tb_params()
    conn = socket.create_connection(("127.0.0.1", params["bridge_port"]))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    dut.rx__valid.value = 0
    dut.rx__payload.value = 0
    dut.tx__ready.value = 0
    dut.expire.value = 0
    await start_clock_and_reset(dut)

    clk = dut.clk
    stress = params.get("stress")
    rng = random.Random(stress)
    offering = False
    stepped = 0
    pending: deque[int] = deque()
    outgoing = bytearray()
    started = time.monotonic()
    waited = 0.0
    start_time = get_sim_time("ns")
    open_ = True
    frame_timeout = params.get("frame_timeout_ms", DEFAULT_FRAME_TIMEOUT_MS) / 1000
    last_input = time.monotonic()
    compute_slice = MIN_SLICE

    def poll(timeout: float | None) -> bool:
        """Move socket input to `pending`; False once the peer has closed."""
        nonlocal last_input
        readable, _, _ = select.select([conn], [], [], timeout)
        if readable:
            try:
                data = conn.recv(65536)
            except ConnectionError:
                return False
            if not data:
                return False
            pending.extend(data)
            last_input = time.monotonic()
        return True

    # Handle reads and writes cost more than the simulator's cycle: each signal is touched only when needed.
    tx_valid = False
    driven = {"ready": None, "valid": None}

    def drive(ready: bool, valid: bool) -> None:
        if driven["ready"] != ready:
            dut.tx__ready.value = int(ready)
            driven["ready"] = ready
        if driven["valid"] != valid:
            dut.rx__valid.value = int(valid)
            driven["valid"] = valid

    while open_:  # once the host has gone there is nobody to answer
        if outgoing and (not tx_valid or len(outgoing) >= 4096):
            try:
                conn.sendall(outgoing)
            except ConnectionError:
                break  # the host left mid-answer
            outgoing.clear()
        if not pending and not tx_valid:
            drive(False, False)
            if not dut.busy.value:
                # Idle: the clock stops until the host sends something.
                blocked = time.monotonic()
                open_ = poll(None)
                waited += time.monotonic() - blocked
                continue
            # Computing: let the simulator run until there is something to send or the device is done.
            sliced = time.monotonic()
            await First(RisingEdge(dut.tx__valid), FallingEdge(dut.busy), ClockCycles(clk, compute_slice))
            await RisingEdge(clk)
            took = time.monotonic() - sliced
            if took > SLICE_SECONDS:
                compute_slice = max(MIN_SLICE, int(compute_slice * SLICE_SECONDS / took))
            elif took < SLICE_SECONDS / 2:
                compute_slice = min(COMPUTE_SLICE, 2 * compute_slice)
            tx_valid = bool(dut.tx__valid.value)
            open_ = poll(0)
            if open_ and not pending and time.monotonic() - last_input >= frame_timeout:
                # The host has been silent for the frame timeout: drop a half-received frame, as a board does.
                last_input = time.monotonic()
                dut.expire.value = 1
                await RisingEdge(clk)
                dut.expire.value = 0
                tx_valid = bool(dut.tx__valid.value)
            continue

        if not offering and pending:
            offering = stress is None or rng.random() >= GAP_PROBABILITY
        ready = stress is None or rng.random() >= STALL_PROBABILITY
        drive(ready, offering)
        if offering:
            dut.rx__payload.value = pending[0]
        await RisingEdge(clk)
        if offering and dut.rx__ready.value:
            pending.popleft()
            offering = False
        tx_valid = bool(dut.tx__valid.value)
        if ready and tx_valid:
            outgoing.append(int(dut.tx__payload.value))
        stepped += 1
        if not pending and stepped % POLL_CYCLES == 0:
            open_ = poll(0)

    conn.close()
    if params.get("stats_file"):
        cycles = round((get_sim_time("ns") - start_time) / CLOCK_PERIOD_NS)
        seconds = time.monotonic() - started
        with open(params["stats_file"], "w") as f:
            json.dump({"cycles": cycles, "seconds": seconds, "sim_seconds": seconds - waited}, f)
