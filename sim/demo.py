"""`make demo`: build the default bitstream, then classify MNIST test images on the virtual board.

    python -m sim.demo [--count N] [--skip-build]

Builds the default bitstream (`python -m hw.build`: the whole LeNet-5 accelerator on the ULX3S-85F) and prints
its report, starts the virtual board of the same accelerator (`python -m sim.server --config lenet5`, its RTL
under Icarus Verilog), classifies the first N MNIST test images through it with `python -m host run`
(predictions, accuracy, agreement with the golden backend, cycles per image, images/s at the build's Fmax,
weight bandwidth), and stops the board whatever happens.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from boards import DEFAULT_BOARD

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "lenet5_full.npz"
#: Where `python -m hw.build` (no arguments) writes its report: the default config is built for this board.
REPORT = Path("build") / DEFAULT_BOARD / "report.json"
#: Seconds the virtual board waits for its client (it builds the simulation first) or for traffic.
IDLE_TIMEOUT = 300


def step(message: str) -> None:
    print(f"\n== {message}", flush=True)


def start_board(config: str = "lenet5") -> tuple[subprocess.Popen, str | None]:
    """Start `python -m sim.server --config CONFIG`; (the process, its tcp:// URL or None if it did not start)."""
    server = subprocess.Popen([sys.executable, "-m", "sim.server", "--config", config,
                               "--port", "0", "--idle-timeout", str(IDLE_TIMEOUT)], stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline().strip()
    if not line.startswith("listening on "):
        return server, None
    return server, "tcp://" + line.removeprefix("listening on ")


def stop_board(server: subprocess.Popen) -> None:
    """Wait for the board to leave after its client did; kill it if it does not."""
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4,
                        help="MNIST test images to classify on the virtual board, about 25 s each (default: 4)")
    parser.add_argument("--skip-build", action="store_true", help="do not build the bitstream")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error(f"--count must be at least 1, got {args.count}")

    if not args.skip_build:
        step("building the default bitstream (python -m hw.build: the whole LeNet-5 accelerator on the "
             "ULX3S-85F; about 10 minutes, the first run also compiles the YoWASP tools)")
        if subprocess.run([sys.executable, "-m", "hw.build"]).returncode:
            print("the build failed", file=sys.stderr)
            return 1

    step("starting the virtual board: the whole LeNet-5 accelerator's RTL under Icarus Verilog "
         "(python -m sim.server --config lenet5)")
    server, url = start_board()
    try:
        if url is None:
            print("the virtual board did not start", file=sys.stderr)
            return 1
        print(f"virtual board at {url}", flush=True)
        step(f"classifying {args.count} MNIST test images through it (python -m host run; the weights are "
             "loaded once, then each image is LOADed, RUN and its logits READ)")
        report = ["--report", str(REPORT)] if REPORT.is_file() else []
        run = subprocess.run([sys.executable, "-m", "host", "run", "--model", str(MODEL), "--backend", url,
                              "--count", str(args.count), *report])
        step("stopping the virtual board")
        stop_board(server)
        print("done" if run.returncode == 0 else "the run failed")
        return run.returncode
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


if __name__ == "__main__":
    sys.exit(main())
