"""`make demo`: build the default bitstream, then talk to the virtual board through the host driver.

    python -m sim.demo [--board NAME] [--skip-build]

Builds the default board's bitstream and prints its report, starts the virtual board (the same
accelerator in RTL simulation), asks it for INFO, makes an ECHO round trip, and stops it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from boards import BOARDS, DEFAULT_BOARD


def step(message: str) -> None:
    print(f"\n== {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--board", default=DEFAULT_BOARD, choices=sorted(BOARDS),
                        help=f"board to build for and to simulate (default: {DEFAULT_BOARD})")
    parser.add_argument("--skip-build", action="store_true", help="do not build the bitstream")
    args = parser.parse_args(argv)

    from host.device import Device
    from hw.build import BuildError, build, format_report
    from hw.config import AcceleratorConfig

    config = AcceleratorConfig(board=args.board)
    if not args.skip_build:
        step(f"building the {args.board} bitstream (first run compiles the YoWASP tools: about a minute)")
        try:
            result = build(config)
        except BuildError as exc:
            print(f"build failed: {exc}", file=sys.stderr)
            return 1
        print(format_report(result.report))
        print(f"bitstream: {result.bitstream}")

    step("starting the virtual board (the accelerator's RTL under Icarus Verilog)")
    server = subprocess.Popen([sys.executable, "-m", "sim.server", "--port", "0", "--board", args.board,
                               "--idle-timeout", "60"], stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline().strip()
        if not line.startswith("listening on "):
            print(f"the virtual board did not start: {line!r}", file=sys.stderr)
            return 1
        url = "tcp://" + line.removeprefix("listening on ")
        print(f"virtual board at {url}")
        with Device.open(url, timeout=30) as dev:
            step("INFO")
            print(json.dumps(dev.info(), indent=2, sort_keys=True))
            step("ECHO round trip")
            message = b"sqgen says hello through the frame layer " + bytes(range(16))
            started = time.monotonic()
            back = dev.echo(message)
            print(f"sent {len(message)} bytes, got {len(back)} back in {time.monotonic() - started:.2f} s: "
                  f"{'equal' if back == message else 'DIFFERENT'}")
            if back != message:
                return 1
        step("stopping the virtual board")
        server.wait(timeout=60)
        print("done")
        return 0
    finally:
        if server.poll() is None:
            server.kill()


if __name__ == "__main__":
    sys.exit(main())
