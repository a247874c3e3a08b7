"""sqgen host CLI: talk to a device (real board over serial, virtual board over TCP).

    python -m host info --url tcp://127.0.0.1:PORT
    python -m host echo --url serial:///dev/ttyUSB1?baud=115200 --size 256 --count 10
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from .device import Device, DeviceError
from .transport import URL_FORMS


def _info(args) -> int:
    with Device.open(args.url, args.timeout) as dev:
        print(json.dumps(dev.info(), indent=2, sort_keys=True))
    return 0


def _echo(args) -> int:
    rng = random.Random(args.seed)
    with Device.open(args.url, args.timeout) as dev:
        if not 0 <= args.size <= dev.max_payload:
            print(f"error: --size must be in 0..{dev.max_payload} for this device, got {args.size}", file=sys.stderr)
            return 2
        started = time.monotonic()
        for i in range(args.count):
            data = rng.randbytes(args.size)
            back = dev.echo(data)
            if back != data:
                first = next((k for k, (a, b) in enumerate(zip(data, back)) if a != b), min(len(data), len(back)))
                print(f"error: echo {i + 1}/{args.count} differs at byte {first} "
                      f"(sent {len(data)} bytes, got {len(back)})", file=sys.stderr)
                return 1
            if sys.stderr.isatty():
                print(f"\recho {i + 1}/{args.count}", end="", file=sys.stderr, flush=True)
        seconds = time.monotonic() - started
    if sys.stderr.isatty():
        print(file=sys.stderr)
    rate = args.size * args.count / seconds if seconds else float("inf")
    print(f"{args.count} echoes of {args.size} bytes came back equal in {seconds:.2f} s "
          f"({rate:,.0f} payload bytes/s each way)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m host", description="Talk to an sqgen device.")
    sub = parser.add_subparsers(dest="command", required=True)

    def device_command(name: str, help: str):
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--url", required=True, help=f"device URL: {URL_FORMS}")
        p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each response (default: 5)")
        return p

    device_command("info", "print the device's self-description (JSON)").set_defaults(run=_info)
    echo = device_command("echo", "send random payloads and check they come back unchanged")
    echo.add_argument("--size", type=int, default=64, help="payload bytes per echo (default: 64)")
    echo.add_argument("--count", type=int, default=1, help="number of echoes (default: 1)")
    echo.add_argument("--seed", type=int, default=0, help="seed of the random payloads (default: 0)")
    echo.set_defaults(run=_echo)

    args = parser.parse_args(argv)
    if getattr(args, "count", 1) < 0:
        parser.error(f"--count must be at least 0, got {args.count}")
    try:
        return args.run(args)
    except (DeviceError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
