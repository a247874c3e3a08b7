"""`python -m sim.bench link` and `python -m sim.bench board`: the simulated board's speed, as JSON.

    python -m sim.bench link [--size BYTES] [--count N] [--sim icarus|verilator|both]
    python -m sim.bench board [--config lenet5] [--images N] [--sim icarus|verilator|both] [--fresh]

`link`: ECHO throughput through the virtual board (`python -m sim.server`: host driver -> TCP -> RTL and
back), in payload bytes per second each way, and the simulator's speed in simulated clock cycles per second.
`board`: MNIST images through a whole accelerator's simulated board (`sim.board.simulate`, no server): the
compile time (`--fresh`: into an empty build folder, so nothing comes from the cache), the weights' load
time, seconds per image, and simulated cycles per second while simulating, per simulator.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from sim.demo import MODEL  # the committed, compressed LeNet-5


def bench_link(size: int | None, count: int, simulator: str) -> dict:
    from host.device import Device
    from sim.server import start

    with tempfile.TemporaryDirectory() as tmp:
        stats_path = Path(tmp) / "stats.json"
        with start("--stats", str(stats_path), "--sim", simulator) as board:
            rng = random.Random(0)
            with Device.open(board.url, timeout=60) as dev:
                size = dev.max_payload if size is None else size
                payloads = [rng.randbytes(size) for _ in range(count)]
                dev.echo(b"warm-up")
                started = time.monotonic()
                for data in payloads:
                    if dev.echo(data) != data:
                        raise RuntimeError("echo came back different")
                seconds = time.monotonic() - started
            board.stop(timeout=60)
        stats = json.loads(stats_path.read_text())
    return {
        "benchmark": "link",
        "simulator": simulator,
        "payload_bytes": size,
        "echoes": count,
        "echo_payload_bytes_per_s": round(size * count / seconds, 1),
        "echo_round_trips_per_s": round(count / seconds, 2),
        "simulated_cycles": stats["cycles"],
        "simulated_cycles_per_s": round(stats["cycles"] / stats.get("sim_seconds", stats["seconds"]), 1),
    }


def bench_board(config_name: str, images: int, simulator: str, fresh: bool) -> dict:
    """The `board` benchmark on one simulator."""
    import os

    import numpy as np

    from host.device import Device
    from host.infer import DeviceBackend, Session, load_model, open_backend
    from host.mnist import load_mnist
    from hw.config import CONFIGS
    from sim.board import simulate

    model = load_model(MODEL)
    x = load_mnist()[2][:images]
    expected = open_backend("golden", model).run(x).logits
    config = CONFIGS[config_name]()
    with tempfile.TemporaryDirectory() as tmp:
        saved = os.environ.get("SQGEN_BUILD_DIR")
        if fresh:
            os.environ["SQGEN_BUILD_DIR"] = tmp
        started = time.monotonic()
        try:
            with simulate(config, simulator=simulator) as board:
                ready = time.monotonic() - started
                device = Device(board.transport, timeout=3600)
                loading = time.monotonic()
                session = Session(DeviceBackend(device, model, name=f"{simulator} board"), model)
                loaded = time.monotonic() - loading
                first = time.monotonic()
                result = session.run(x)
                seconds = time.monotonic() - first
        finally:
            if fresh and saved is None:
                del os.environ["SQGEN_BUILD_DIR"]
            elif fresh:
                os.environ["SQGEN_BUILD_DIR"] = saved
    stats = board.stats
    return {
        "benchmark": "board",
        "simulator": simulator,
        "config": config_name,
        "compile_s": round(board.compile_seconds if simulator == "verilator" else ready, 1),
        "from_cache": not fresh and board.compile_seconds == 0.0 and simulator == "verilator",
        "weights_load_s": round(loaded, 2),
        "images": images,
        "cycles_per_image": int(np.mean(result.cycles)),
        "seconds_per_image": round(seconds / images, 3),
        "bit_exact": bool(np.array_equal(result.logits, expected)),
        "simulated_cycles": stats.get("cycles"),
        "simulated_cycles_per_s": round(stats["cycles"] / stats["sim_seconds"]) if stats.get("sim_seconds") else None,
    }


def register(sub) -> None:
    from sim import runner

    simulators = [*runner.SIMULATORS, "both"]
    link = sub.add_parser("link", help="virtual-board ECHO throughput and simulator speed")
    link.add_argument("--size", type=int, default=None, help="payload bytes per echo (default: the maximum)")
    link.add_argument("--count", type=int, default=50, help="echoes to time (default: 50)")
    link.add_argument("--sim", default="both", choices=simulators, help="simulator(s) (default: %(default)s)")
    link.set_defaults(run=run)
    board = sub.add_parser("board", help="MNIST images through a whole accelerator's simulated board")
    board.add_argument("--config", default="lenet5", choices=["lenet5"], help="named config (default: %(default)s)")
    board.add_argument("--images", type=int, default=20, help="MNIST test images (default: %(default)s)")
    board.add_argument("--sim", default="both", choices=simulators, help="simulator(s) (default: %(default)s)")
    board.add_argument("--icarus-images", type=int, default=1, metavar="N",
                       help="images on Icarus, which runs ~100x slower (default: %(default)s)")
    board.add_argument("--fresh", action="store_true", help="compile into an empty build folder (time the compile)")
    board.set_defaults(run=run)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from sim import runner

    for name in ("count", "images", "icarus_images"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    chosen = runner.SIMULATORS if args.sim == "both" else (args.sim,)
    if args.name == "link":
        results = [bench_link(args.size, args.count, simulator) for simulator in chosen]
    else:
        results = [bench_board(args.config, args.icarus_images if simulator == "icarus" else args.images,
                               simulator, args.fresh) for simulator in chosen]
    print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    return 0
