"""The virtual board: the accelerator's RTL simulated, served on a TCP socket.

    python -m sim.server [--port N] [--config NAME | --model NET.npz [--trace]] [--board NAME] [--sim icarus|verilator]
                         [--idle-timeout S] [--once]

Prints `listening on 127.0.0.1:PORT` as its first line on stdout once the simulation is compiled (progress
goes to stderr), then serves clients speaking the link protocol one after the other, all to the same
simulated device (what one LOADs the next finds), until no client comes or nothing moves for
`--idle-timeout` seconds, or it is interrupted (Ctrl-C, SIGTERM); `--once` exits when the first client
leaves. A client may leave at any point, mid-answer or mid-frame too: before the next one is served the
server ECHOes a nonce of its own until the device answers it, dropping everything before (the rest of the
last client's answers; a frame it left half sent is dropped by the device after its frame timeout), so each
client starts on a device that has answered everything and waits for a frame. Only the loopback interface is
used; a port already in use is reported before anything is compiled.

The UART PHY is bypassed: the socket's bytes drive the `Accelerator`'s byte streams directly (the PHY has
its own testbenches). `sim.board.simulate` runs the simulation (Verilator by default, a C++ harness with no
Python in the loop; `--sim icarus` the cocotb bridge under Icarus) and this process relays bytes between the
client and it. An idle board stops its clock and uses no CPU.

`--config` picks a named config of `hw.config.CONFIGS` (default `link`, the link alone); `--config lenet5`
serves the whole LeNet-5 accelerator; `--model NET.npz` the accelerator `hw.plan` derives from a compressed network
(on `--board`, else the smallest board it fits; `--trace` with room for `host run --trace`). `--board` and
`--max-payload` override what the config says.
`start()` runs the server as a subprocess for tests, the demo and the benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from boards import BOARDS, DEFAULT_BOARD


def log(message: str) -> None:
    print(f"sim.server: {message}", file=sys.stderr, flush=True)


#: Why a session ended: the client left (the server may serve the next one), or the server must stop.
CLIENT_LEFT = "client disconnected"
SIMULATOR_CLOSED = "simulator closed the link"


def _drop_waiting(board: socket.socket) -> bool:
    """Read and drop what the board has sent so far; False once it has closed its link."""
    board.setblocking(False)
    try:
        while board.recv(65536):
            pass
        return False
    except BlockingIOError:
        return True
    except ConnectionError:
        return False
    finally:
        board.setblocking(True)


def _next_client(public: socket.socket, board: socket.socket, deadline: float) -> socket.socket | str:
    """The next client to connect before `deadline`, or why there is none; what the board sends meanwhile is
    dropped."""
    selector = selectors.DefaultSelector()
    selector.register(public, selectors.EVENT_READ)
    selector.register(board, selectors.EVENT_READ)
    try:
        while (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(timeout=left):
                if key.fileobj is board and not _drop_waiting(board):
                    return SIMULATOR_CLOSED
                if key.fileobj is public:
                    client, _ = public.accept()
                    client.settimeout(None)
                    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    return client
        return "no client connected before the idle timeout"
    finally:
        selector.close()


def _settle(board: socket.socket, max_payload: int, silence: float, idle_timeout: float) -> str | None:
    """Make sure the device has answered all a client that has gone sent it, and holds no frame of it half
    received: ECHO a nonce and drop everything the board sends until its answer. A probe that landed in a half
    frame gets no answer of its own; once the board has been silent for `silence` s (longer each time) another
    goes. Returns why the server must stop instead (the simulation closed its link, or `idle_timeout` passed)."""
    from host.device import take_response
    from hw.spec.protocol import Command, Status, encode_request

    received = bytearray()
    started = time.monotonic()
    while time.monotonic() - started < idle_timeout:
        nonce = os.urandom(min(8, max_payload))
        board.sendall(encode_request(Command.ECHO, nonce, nonce[0]))
        quiet_until = time.monotonic() + silence
        while (left := quiet_until - time.monotonic()) > 0:
            if not select.select([board], [], [], left)[0]:
                continue
            try:
                data = board.recv(65536)
            except ConnectionError:
                data = b""
            if not data:
                return SIMULATOR_CLOSED
            received += data
            quiet_until = time.monotonic() + silence
            while (answer := take_response(received, nonce[0])[0]) is not None:
                if answer.code == Status.OK and answer.payload == nonce:
                    return None
        silence = min(2 * silence, 5.0)
    return f"the device did not answer for {idle_timeout:g} s"


def _relay(client: socket.socket, board: socket.socket, idle_timeout: float) -> str:
    """Copy bytes both ways until one side closes or nothing moves for `idle_timeout` seconds; returns why it
    ended."""
    selector = selectors.DefaultSelector()
    selector.register(client, selectors.EVENT_READ, board)
    selector.register(board, selectors.EVENT_READ, client)
    last = time.monotonic()
    try:
        while True:
            events = selector.select(timeout=1.0)
            for key, _ in events:
                try:
                    data = key.fileobj.recv(65536)
                except ConnectionError:
                    data = b""
                if not data:
                    return CLIENT_LEFT if key.fileobj is client else SIMULATOR_CLOSED
                try:
                    key.data.sendall(data)
                except ConnectionError:  # the client left mid-answer: nobody to answer
                    return CLIENT_LEFT if key.data is client else SIMULATOR_CLOSED
                last = time.monotonic()
            if time.monotonic() - last > idle_timeout:
                return f"idle for {idle_timeout:g} s"
    finally:
        selector.close()


def serve(port: int, board: str | None, idle_timeout: float, stats_path: Path | None = None,
          max_payload: int | None = None, config_name: str = "link", sim: str | None = None,
          once: bool = False, model: Path | None = None, trace: bool = False) -> int:
    """Build the simulation of config `config_name` (or of the config `hw.plan` derives from the network file
    `model`), announce the port, serve clients one after the other (the first only with `once`) until none comes
    or one idles for `idle_timeout` s; returns the exit code."""
    from hw.config import CONFIGS
    from hw.plan import PlanError, load_network, plan
    from sim import runner
    from sim.board import BoardFailed, listen, simulate

    sim = sim or runner.choose(runner.WHOLE)
    try:
        public = listen(port)
    except OSError as exc:
        log(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}; pick another --port (0: any free port)")
        return 1
    if model is not None:
        try:
            config = plan(load_network(model), board, trace=trace,
                          **({"max_payload": max_payload} if max_payload else {})).config
        except PlanError as exc:
            log(str(exc))
            public.close()
            return 2
        config_name = str(model)
    else:
        overrides = {**({"board": board} if board else {}), **({"max_payload": max_payload} if max_payload else {})}
        config = CONFIGS[config_name](**overrides)
    log(f"building the simulation of {config_name} on {config.board} with {sim}")
    started = time.monotonic()
    try:
        with simulate(config, simulator=sim, progress=log) as device:
            log(f"simulation running after {time.monotonic() - started:.1f} s")
            print(f"listening on 127.0.0.1:{public.getsockname()[1]}", flush=True)
            board_link = device.transport.sock
            try:
                while True:
                    client = _next_client(public, board_link, time.monotonic() + idle_timeout)
                    if isinstance(client, str):
                        log(f"stopping: {client}")
                        break
                    log("client connected")
                    with client:
                        reason = _relay(client, board_link, idle_timeout)
                    if once or reason != CLIENT_LEFT:
                        log(f"stopping: {reason}")
                        break
                    # Whatever the client left behind (answers still to come, a frame half sent) goes now, so
                    # that the next client starts on a device that has answered everything and waits for a frame.
                    reason = _settle(board_link, config.max_payload, 1.5e-3 * config.frame_timeout_ms, idle_timeout)
                    if reason is not None:
                        log(f"stopping: {reason}")
                        break
                    log("client disconnected; waiting for the next client")
            except KeyboardInterrupt:
                log("stopping: interrupted")
            finally:
                public.close()
    except (BoardFailed, runner.SimulatorMissing, RuntimeError) as exc:
        log(str(exc))
        return 1
    stats = device.stats
    if stats:
        busy = stats.get("sim_seconds", stats["seconds"])
        rate = stats["cycles"] / busy if busy else 0.0
        log(f"simulated {stats['cycles']} cycles in {busy:.2f} s of simulation ({rate:,.0f} cycles/s)")
        if stats_path is not None:
            stats_path.write_text(json.dumps(stats) + "\n")
    return 0


@dataclass
class VirtualBoard:
    """A running `python -m sim.server` subprocess and the URL it serves."""

    url: str
    process: subprocess.Popen
    once: bool = True

    def stop(self, timeout: float = 30) -> None:
        """End the server cleanly (its stats written): wait for it to leave after its client did (`once`), or
        ask it to stop; kill it if it does not leave within `timeout` seconds."""
        if not self.once and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def start(*args: str, idle_timeout: float = 300, quiet: bool = True, once: bool = True) -> Iterator[VirtualBoard]:
    """Run `python -m sim.server --port 0 ARGS...` until the block ends; yields it once it listens.

    `once` (the default here, for a caller with one client: its exit status and stats follow that client)
    passes `--once`; without it the server serves client after client until `stop()`. Raises RuntimeError
    with the server's messages if it does not come up. `quiet` hides its progress (stderr) unless it fails.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "sim.server", "--port", "0", "--idle-timeout", str(idle_timeout),
         *(["--once"] if once else []), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE if quiet else None, text=True,
    )
    try:
        line = process.stdout.readline().strip()
        if not line.startswith("listening on 127.0.0.1:"):
            process.kill()
            errors = process.stderr.read() if quiet else ""
            raise RuntimeError(f"the virtual board did not start: {line!r}\n{errors}")
        yield VirtualBoard(url="tcp://" + line.removeprefix("listening on "), process=process, once=once)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def main(argv: list[str] | None = None) -> int:
    from hw.config import CONFIGS
    from sim import runner

    parser = argparse.ArgumentParser(
        prog="python -m sim.server",
        description="Serve the accelerator's RTL simulation as a virtual board on 127.0.0.1 (one client at a "
                    "time, client after client).",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: 0, any free port)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--config", default="link", choices=sorted(CONFIGS),
                      help="named accelerator config (hw.config.CONFIGS) to simulate (default: %(default)s, the "
                           "link alone; lenet5: the whole accelerator)")
    what.add_argument("--model", type=Path, default=None, metavar="NET.npz",
                      help="instead of --config: the accelerator hw.plan derives from a compressed network "
                           "(sqgen-net), on --board or else the smallest board it fits")
    parser.add_argument("--trace", action="store_true",
                        help="with --model: room for a trace of every layer (host run --trace): activation buffers "
                             "for the pooled conv layers' unpooled outputs and a descriptor each")
    parser.add_argument("--board", default=None, choices=sorted(BOARDS),
                        help=f"board whose clock and link settings are simulated (default: the config's, "
                             f"{DEFAULT_BOARD} for the link alone; with --model the smallest the network fits)")
    parser.add_argument("--sim", default=None, choices=runner.SIMULATORS,
                        help=f"simulator (default: ${runner.SIM_ENV}, else {runner.WHOLE}: fast, compiles once per "
                             "design; icarus: 4-state, compiles in seconds, runs ~50x slower)")
    parser.add_argument("--idle-timeout", type=float, default=300.0, metavar="S",
                        help="exit after S seconds without a client or without traffic (default: 300)")
    parser.add_argument("--once", action="store_true", help="exit when the first client leaves")
    parser.add_argument("--max-payload", type=int, default=None, metavar="BYTES",
                        help="override the configuration's maximum request payload")
    parser.add_argument("--stats", type=Path, default=None, metavar="FILE",
                        help="write {cycles, seconds, sim_seconds} of the simulation as JSON when done")
    args = parser.parse_args(argv)
    if args.trace and args.model is None:
        parser.error("--trace is for a derived accelerator (--model)")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in 0..65535, got {args.port}")
    if args.idle_timeout <= 0:
        parser.error(f"--idle-timeout must be positive, got {args.idle_timeout}")
    try:
        sim = args.sim or runner.choose(runner.WHOLE)
    except ValueError as exc:
        parser.error(str(exc))
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it as Ctrl-C does: cleanly
    try:
        return serve(args.port, args.board, args.idle_timeout, args.stats, args.max_payload, args.config, sim,
                     args.once, args.model, args.trace)
    except KeyboardInterrupt:
        log("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
