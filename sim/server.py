"""The virtual board: the accelerator's RTL simulated, served on a TCP socket.

    python -m sim.server [--port N] [--config NAME] [--board NAME] [--sim icarus|verilator] [--idle-timeout S]

Prints `listening on 127.0.0.1:PORT` as its first line on stdout once the simulation is compiled (progress
goes to stderr), serves one client speaking the link protocol, and exits when that client disconnects or
nothing happens for `--idle-timeout` seconds. Only the loopback interface is used; a port already in use is
reported before anything is compiled.

The UART PHY is bypassed: the socket's bytes drive the `Accelerator`'s byte streams directly (the PHY has
its own testbenches). `sim.board.simulate` runs the simulation (Verilator by default, a C++ harness with no
Python in the loop; `--sim icarus` the cocotb bridge under Icarus) and this process relays bytes between the
client and it. An idle board stops its clock and uses no CPU.

`--config` picks a named config of `hw.config.CONFIGS` (default `link`, the link alone); `--config lenet5`
serves the whole LeNet-5 accelerator. `--board` and `--max-payload` override what the config says.
`start()` runs the server as a subprocess for tests, the demo and the benchmarks.
"""

from __future__ import annotations

import argparse
import json
import selectors
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


def _accept(sock: socket.socket, deadline: float, what: str) -> socket.socket:
    sock.settimeout(max(0.0, deadline - time.monotonic()))
    try:
        conn, _ = sock.accept()
    except TimeoutError:
        raise TimeoutError(f"no {what} connected before the idle timeout") from None
    conn.settimeout(None)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def _relay(client: socket.socket, board: socket.socket, idle_timeout: float) -> str:
    """Copy bytes both ways until one side closes or nothing moves for `idle_timeout` seconds."""
    selector = selectors.DefaultSelector()
    selector.register(client, selectors.EVENT_READ, board)
    selector.register(board, selectors.EVENT_READ, client)
    last = time.monotonic()
    while True:
        events = selector.select(timeout=1.0)
        for key, _ in events:
            try:
                data = key.fileobj.recv(65536)
            except ConnectionError:
                data = b""
            if not data:
                return "client disconnected" if key.fileobj is client else "simulator closed the link"
            try:
                key.data.sendall(data)
            except ConnectionError:
                return "client disconnected" if key.data is client else "simulator closed the link"
            last = time.monotonic()
        if time.monotonic() - last > idle_timeout:
            return f"idle for {idle_timeout:g} s"


def serve(port: int, board: str | None, idle_timeout: float, stats_path: Path | None = None,
          max_payload: int | None = None, config_name: str = "link", sim: str | None = None) -> int:
    """Build the simulation of config `config_name`, announce the port, serve one client; returns the exit code."""
    from hw.config import CONFIGS
    from sim import runner
    from sim.board import BoardFailed, listen, simulate

    sim = sim or runner.choose(runner.WHOLE)
    try:
        public = listen(port)
    except OSError as exc:
        log(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}; pick another --port (0: any free port)")
        return 1
    overrides = {**({"board": board} if board else {}), **({"max_payload": max_payload} if max_payload else {})}
    config = CONFIGS[config_name](**overrides)
    log(f"building the simulation of {config_name} on {config.board} with {sim}")
    started = time.monotonic()
    try:
        with simulate(config, simulator=sim, progress=log) as device:
            log(f"simulation running after {time.monotonic() - started:.1f} s")
            print(f"listening on 127.0.0.1:{public.getsockname()[1]}", flush=True)
            try:
                client = _accept(public, time.monotonic() + idle_timeout, "client")
            except TimeoutError as exc:
                log(str(exc))
                return 0
            finally:
                public.close()
            log("client connected")
            log(f"stopping: {_relay(client, device.transport.sock, idle_timeout)}")
            client.close()
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

    def stop(self, timeout: float = 30) -> None:
        """Wait for the server to leave after its client did; kill it if it does not."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def start(*args: str, idle_timeout: float = 300, quiet: bool = True) -> Iterator[VirtualBoard]:
    """Run `python -m sim.server --port 0 ARGS...` until the block ends; yields it once it listens.

    Raises RuntimeError with the server's messages if it does not come up. `quiet` hides its progress
    (stderr) unless it fails.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "sim.server", "--port", "0", "--idle-timeout", str(idle_timeout), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE if quiet else None, text=True,
    )
    try:
        line = process.stdout.readline().strip()
        if not line.startswith("listening on 127.0.0.1:"):
            process.kill()
            errors = process.stderr.read() if quiet else ""
            raise RuntimeError(f"the virtual board did not start: {line!r}\n{errors}")
        yield VirtualBoard(url="tcp://" + line.removeprefix("listening on "), process=process)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def main(argv: list[str] | None = None) -> int:
    from hw.config import CONFIGS
    from sim import runner

    parser = argparse.ArgumentParser(
        prog="python -m sim.server",
        description="Serve the accelerator's RTL simulation as a virtual board on 127.0.0.1 (one client).",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: 0, any free port)")
    parser.add_argument("--config", default="link", choices=sorted(CONFIGS),
                        help="named accelerator config (hw.config.CONFIGS) to simulate (default: %(default)s, the "
                             "link alone; lenet5: the whole accelerator)")
    parser.add_argument("--board", default=None, choices=sorted(BOARDS),
                        help=f"board whose clock and link settings are simulated (default: the config's, "
                             f"{DEFAULT_BOARD} for the link alone)")
    parser.add_argument("--sim", default=None, choices=runner.SIMULATORS,
                        help=f"simulator (default: ${runner.SIM_ENV}, else {runner.WHOLE}: fast, compiles once per "
                             "design; icarus: 4-state, compiles in seconds, runs ~50x slower)")
    parser.add_argument("--idle-timeout", type=float, default=300.0, metavar="S",
                        help="exit after S seconds without a client or without traffic (default: 300)")
    parser.add_argument("--max-payload", type=int, default=None, metavar="BYTES",
                        help="override the configuration's maximum request payload")
    parser.add_argument("--stats", type=Path, default=None, metavar="FILE",
                        help="write {cycles, seconds, sim_seconds} of the simulation as JSON when done")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in 0..65535, got {args.port}")
    if args.idle_timeout <= 0:
        parser.error(f"--idle-timeout must be positive, got {args.idle_timeout}")
    try:
        sim = args.sim or runner.choose(runner.WHOLE)
    except ValueError as exc:
        parser.error(str(exc))
    return serve(args.port, args.board, args.idle_timeout, args.stats, args.max_payload, args.config, sim)


if __name__ == "__main__":
    sys.exit(main())
