"""Benchmarks that print JSON.

    python -m sim.bench link [--size BYTES] [--count N]

`link`: ECHO throughput through the virtual board (host driver -> TCP -> RTL under Icarus and back), in
payload bytes per second each way, and the simulator's speed in simulated clock cycles per second.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def bench_link(size: int | None, count: int) -> dict:
    from host.device import Device

    with tempfile.TemporaryDirectory() as tmp:
        stats_path = Path(tmp) / "stats.json"
        server = subprocess.Popen([sys.executable, "-m", "sim.server", "--port", "0", "--stats", str(stats_path)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            line = server.stdout.readline().strip()
            if not line.startswith("listening on "):
                raise RuntimeError(f"the virtual board did not start: {line!r}")
            rng = random.Random(0)
            with Device.open("tcp://" + line.removeprefix("listening on "), timeout=60) as dev:
                size = dev.max_payload if size is None else size
                payloads = [rng.randbytes(size) for _ in range(count)]
                dev.echo(b"warm-up")
                started = time.monotonic()
                for data in payloads:
                    if dev.echo(data) != data:
                        raise RuntimeError("echo came back different")
                seconds = time.monotonic() - started
            server.wait(timeout=60)
        finally:
            if server.poll() is None:
                server.kill()
        stats = json.loads(stats_path.read_text())
    return {
        "benchmark": "link",
        "payload_bytes": size,
        "echoes": count,
        "echo_payload_bytes_per_s": round(size * count / seconds, 1),
        "echo_round_trips_per_s": round(count / seconds, 2),
        "simulated_cycles": stats["cycles"],
        "simulated_cycles_per_s": round(stats["cycles"] / stats["seconds"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.bench", description="sqgen benchmarks (JSON output).")
    sub = parser.add_subparsers(dest="name", required=True)
    link = sub.add_parser("link", help="virtual-board ECHO throughput and simulator speed")
    link.add_argument("--size", type=int, default=None, help="payload bytes per echo (default: the maximum)")
    link.add_argument("--count", type=int, default=50, help="echoes to time (default: 50)")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error(f"--count must be at least 1, got {args.count}")
    print(json.dumps(bench_link(args.size, args.count), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
