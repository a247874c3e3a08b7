"""The virtual board's simulator side: the `Accelerator`'s byte streams bridged to a TCP socket.

`sim.server` runs this cocotb module with parameters `bridge_port` (where to connect) and `stats_file`
(where to write the simulated cycle count at the end). Bytes from the socket go in on `rx`; bytes out of
`tx` go back to the socket. The bridge spins the clock cycle by cycle while anything is in flight; once
the design has been quiet for a while it parks the streams (`rx` idle, `tx` not ready, which valid/ready
allows) and waits on the socket, advancing simulated time only in coarse steps so a device that is
still computing is not frozen.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections import deque

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge

from sim.tb.common import bench_params, start_clock_and_reset

QUIET_CYCLES = 256  #: cycles without traffic before the bridge parks and waits on the socket
PARK_CYCLES = 1024  #: simulated cycles advanced per wait while parked
PARK_WAIT_S = 0.02  #: how long one parked wait blocks on the socket


@cocotb.test()
async def serve(dut):
    params = bench_params()
    conn = socket.create_connection(("127.0.0.1", params["bridge_port"]))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    dut.rx__valid.value = 0
    dut.rx__payload.value = 0
    dut.tx__ready.value = 0
    await start_clock_and_reset(dut)

    clk = dut.clk
    pending: deque[int] = deque()
    outgoing = bytearray()
    cycles = 0
    quiet = 0
    started = time.monotonic()
    open_ = True

    def poll(timeout: float) -> bool:
        """Move socket input to `pending`; False once the peer has closed."""
        readable, _, _ = select.select([conn], [], [], timeout)
        if readable:
            data = conn.recv(65536)
            if not data:
                return False
            pending.extend(data)
        return True

    while open_:  # once the host has gone there is nobody to answer
        if outgoing:
            conn.sendall(outgoing)
            outgoing.clear()
        if not pending and quiet >= QUIET_CYCLES:
            # Parked: streams idle, wait for the host, let simulated time pass coarsely.
            dut.rx__valid.value = 0
            dut.tx__ready.value = 0
            open_ = poll(PARK_WAIT_S)
            if not pending:
                await ClockCycles(clk, PARK_CYCLES)
                cycles += PARK_CYCLES
                if dut.tx__valid.value:
                    quiet = 0
                continue
            quiet = 0
        elif cycles % 64 == 0:
            open_ = poll(0)

        dut.tx__ready.value = 1
        if pending:
            dut.rx__valid.value = 1
            dut.rx__payload.value = pending[0]
        else:
            dut.rx__valid.value = 0
        await RisingEdge(clk)
        cycles += 1
        busy = False
        if pending and dut.rx__ready.value:
            pending.popleft()
            busy = True
        if dut.tx__valid.value:
            outgoing.append(int(dut.tx__payload.value))
            busy = True
        quiet = 0 if busy else quiet + 1

    conn.close()
    if params.get("stats_file"):
        with open(params["stats_file"], "w") as f:
            json.dump({"cycles": cycles, "seconds": time.monotonic() - started}, f)
