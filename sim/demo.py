"""`make demo`: build the default bitstream, then classify MNIST test images on the virtual board.

    python -m sim.demo [--count N] [--skip-build]

Builds the default bitstream (`python -m hw.build`: the whole LeNet-5 accelerator on the ULX3S-85F) and prints
its report, starts the virtual board of the same accelerator (`python -m sim.server --config lenet5`, its RTL
under Verilator), classifies the first N MNIST test images through it with `python -m host run`
(predictions, accuracy, agreement with the golden backend, cycles per image, images/s at the build's Fmax,
weight bandwidth), and stops the board whatever happens.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from boards import DEFAULT_BOARD
from sim.server import start

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "lenet5_full.npz"
#: Where `python -m hw.build` (no arguments) writes its report: the default config is built for this board.
REPORT = Path("build") / DEFAULT_BOARD / "report.json"
#: Seconds the virtual board waits for its client (it builds the simulation first) or for traffic.
IDLE_TIMEOUT = 300


def step(message: str) -> None:
    print(f"\n== {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20,
                        help="MNIST test images to classify on the virtual board (default: %(default)s)")
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

    step("starting the virtual board: the whole LeNet-5 accelerator's RTL under Verilator "
         "(python -m sim.server --config lenet5; the first start compiles it, a few minutes)")
    try:
        with start("--config", "lenet5", idle_timeout=IDLE_TIMEOUT, quiet=False) as board:
            print(f"virtual board at {board.url}", flush=True)
            step(f"classifying {args.count} MNIST test images through it (python -m host run; the weights are "
                 "loaded once, then each image is LOADed, RUN and its logits READ)")
            report = ["--report", str(REPORT)] if REPORT.is_file() else []
            run = subprocess.run([sys.executable, "-m", "host", "run", "--model", str(MODEL), "--backend", board.url,
                                  "--count", str(args.count), *report])
            step("stopping the virtual board")
            board.stop()
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    print("done" if run.returncode == 0 else "the run failed")
    return run.returncode

if __name__ == "__main__":
    sys.exit(main())
