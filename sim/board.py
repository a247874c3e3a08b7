"""A simulated board in reach of this process: an `Accelerator`'s RTL behind a socket, for servers and tests.

`simulate(config)` compiles the accelerator (cached per design), starts its simulation and yields a
`SimulatedBoard` whose `transport` speaks to it: `host.device.Device(board.transport)` drives it like a
board. Two simulators serve the same bytes:

* `verilator` (`runner.WHOLE`, the default): `sim/board_harness.cpp` around the Verilated model, a
  subprocess with no Python in the loop.
* `icarus`: the cocotb module `sim.tb.board_bridge` under Icarus Verilog (4-state), in a thread.

Either connects back to a private loopback port this module listens on. Both stop the clock while the device
is idle (`Accelerator.busy` low, nothing to send, no input waiting), so an idle board costs no CPU; while it
is busy every cycle is simulated, and the frame timeout counts cycles as on a board. A simulation runs
thousands of times slower than a board's clock, so those cycles would take seconds (Verilator) to hours
(Icarus) of real time, and a frame its host abandoned half sent would swallow the host's next requests for
that long: both also raise `Accelerator.expire` when the host has sent nothing for the config's frame
timeout in real time, which drops a half-received frame as a board does after that time. With `stress`
(a seed) the byte streams get random input gaps and random output backpressure, for tests: the device must
answer the same bytes however its link stutters.
"""

from __future__ import annotations

import json
import pickle
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from host.transport import SocketTransport

from . import runner

#: Seconds to wait for the simulation to connect once it is compiled.
CONNECT_PATIENCE_S = 120.0


class BoardFailed(RuntimeError):
    """The simulation did not start, or ended with an error."""


@dataclass
class SimulatedBoard:
    """A running simulation: `transport` to talk to it; `stats`, once it has ended, its {cycles, seconds,
    sim_seconds} (sim_seconds: the time it spent simulating rather than waiting for the host)."""

    transport: SocketTransport
    simulator: str
    compile_seconds: float
    stats: dict = field(default_factory=dict)


def listen(port: int = 0) -> socket.socket:
    """A socket listening on 127.0.0.1:`port` (0: any free port), for one connection at a time."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1)
    return sock


@contextmanager
def simulate(config, *, simulator: str | None = None, stress: int | None = None, name: str | None = None,
             progress: Callable[[str], None] | None = None) -> Iterator[SimulatedBoard]:
    """Compile and start the simulation of `hw.top.Accelerator(config)`; yield it connected; stop it after.

    `simulator` defaults to `runner.choose(runner.WHOLE)`. Raises BoardFailed if it does not come up, or if
    it ended with an error by the time the block ends.
    """
    from hw.top import Accelerator

    simulator = simulator or runner.choose(runner.WHOLE)
    name = name or "accelerator"  # the cache directory is named after the design's hash as well
    failure: list[BaseException] = []
    listener = listen()
    port = listener.getsockname()[1]
    stats_file = Path(tempfile.mkstemp(prefix="sqgen-board-", suffix=".json")[1])
    stress_args = [] if stress is None else [str(stress)]
    started = time.monotonic()
    process: subprocess.Popen | None = None
    thread: threading.Thread | None = None
    board: SimulatedBoard | None = None
    if simulator == "verilator":
        build = runner.build_board(lambda: Accelerator(config), name, progress=progress,
                                   key=pickle.dumps(config))
        compile_seconds = build.compile_seconds
        process = subprocess.Popen([str(build.executable), str(port), str(config.frame_timeout_ms), str(stats_file),
                                    *stress_args])
        alive = lambda: process.poll() is None  # noqa: E731
    else:
        sim = runner.build(lambda: Accelerator(config), name, simulator="icarus", key=pickle.dumps(config))
        compile_seconds = time.monotonic() - started
        params = {"bridge_port": port, "stats_file": str(stats_file), "stress": stress,
                  "frame_timeout_ms": config.frame_timeout_ms}

        def run() -> None:
            try:
                runner.run(sim, "sim.tb.board_bridge", params, log_file=sim.directory / f"board-{port}.log")
            except BaseException as exc:  # reported to the caller
                failure.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        alive = thread.is_alive
    try:
        conn = _accept(listener, alive)
        if conn is None:
            raise BoardFailed(f"the {simulator} simulation of {name} did not start: "
                              f"{failure[0] if failure else 'it never connected'}")
        board = SimulatedBoard(SocketTransport(conn), simulator, compile_seconds)
        yield board
    finally:
        listener.close()
        if board is not None:
            board.transport.close()  # the simulation ends when its link closes
        if process is not None:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.returncode and not failure:
                failure.append(BoardFailed(f"the Verilator board exited with status {process.returncode}"))
        if thread is not None:
            thread.join(timeout=30)
        if board is not None and stats_file.stat().st_size:
            board.stats = json.loads(stats_file.read_text())
        stats_file.unlink(missing_ok=True)
    if failure:
        raise BoardFailed(f"the {simulator} simulation of {name} failed: {failure[0]}")


def _accept(listener: socket.socket, alive: Callable[[], bool]) -> socket.socket | None:
    listener.settimeout(0.5)
    deadline = time.monotonic() + CONNECT_PATIENCE_S
    while alive() and time.monotonic() < deadline:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)  # SocketTransport sets TCP_NODELAY
        return conn
    return None


def play(transport: SocketTransport, steps: list[dict], timeout: float = 600.0) -> dict[str, bytes]:
    """Send each step's request and check its answer; return the payloads of the named steps.

    A step is `{"send": hex}` plus either `"expect": hex` (the whole response frame, byte for byte) or
    `"status"` and `"length"` (an OK answer whose payload cannot be known in advance, such as RUN's cycle
    count), and optionally `"name"`. Answers must follow each other with no stray byte between them: every
    answer starts exactly where the previous one ended. Raises AssertionError naming the step.
    """
    from hw.spec.protocol import HEADER_BYTES, SYNC_RESPONSE, decode_frame, frame_length

    named: dict[str, bytes] = {}
    for number, step in enumerate(steps):
        request = bytes.fromhex(step["send"])
        what = f"step {number} ({step.get('name', request[:8].hex())})"
        transport.write(request)
        header = transport.read(HEADER_BYTES, timeout)
        assert header[0] == SYNC_RESPONSE, f"{what}: answer starts {header.hex()}"
        frame = header + transport.read(frame_length(header) - HEADER_BYTES, timeout)
        if "expect" in step:
            expected = bytes.fromhex(step["expect"])
            assert frame == expected, f"{what}: expected {expected[:24].hex()}..., got {frame[:24].hex()}..."
        else:
            answer = decode_frame(frame, SYNC_RESPONSE)
            assert (answer.code, len(answer.payload)) == (step["status"], step["length"]), \
                f"{what}: expected status {step['status']} with {step['length']} bytes, got {frame.hex()}"
        if "name" in step:
            named[step["name"]] = decode_frame(frame, SYNC_RESPONSE).payload
    return named
