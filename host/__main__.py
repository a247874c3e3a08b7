"""sqgen host CLI: talk to a device (real board over serial, virtual board over TCP).

    python -m host info --url tcp://127.0.0.1:PORT
    python -m host echo --url serial:///dev/ttyUSB1?baud=115200 --size 256 --count 10
    python -m host run --model models/lenet5_full.npz --backend golden --count 100
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


def _run(args) -> int:
    from host.infer import load_model, open_backend
    from host.train.data import load_mnist

    model = load_model(args.model)
    _, _, x_test, y_test = load_mnist()
    count = len(x_test) if args.count is None else min(args.count, len(x_test))
    session = open_backend(args.backend, model)
    tty = sys.stderr.isatty()
    started = time.monotonic()
    correct = 0
    with session:
        for start in range(0, count, args.batch):
            stop = min(count, start + args.batch)
            result = session.run(x_test[start:stop])
            correct += int((result.predictions == y_test[start:stop]).sum())
            if tty:
                done = stop * 30 // max(count, 1)
                print(f"\r[{'#' * done}{'.' * (30 - done)}] {stop}/{count}", end="", file=sys.stderr, flush=True)
    if tty:
        print(file=sys.stderr)
    seconds = time.monotonic() - started
    # A hardware backend adds its agreement with the golden model and cycles per image here.
    summary = {"backend": args.backend, "model": args.model, "count": count,
               "accuracy": round(correct / count, 6) if count else None,
               "stored_accuracy": model.metadata.get("test_accuracy", {}).get("golden_fixed"),
               "agreement": None, "cycles_per_image": None, "seconds": round(seconds, 2)}
    print(json.dumps(summary))
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

    run = sub.add_parser("run", help="classify test images with the accelerator's LeNet-5 on a backend",
                         description="Run the compressed LeNet-5 on the first COUNT images of the MNIST test split "
                                     "(host.train.data) and print a JSON summary: accuracy, count, seconds. "
                                     "Backends: golden (NumPy golden models); tcp:// and serial:// are not "
                                     "implemented yet.")
    run.add_argument("--model", required=True, metavar="MODEL.npz", help="model file (python -m host.compress model)")
    run.add_argument("--backend", default="golden", metavar="URL", help="golden (default), later tcp://HOST:PORT "
                                                                         "or serial://DEVICE")
    run.add_argument("--count", type=int, default=None, help="test images to run (default: all 1 000)")
    run.add_argument("--batch", type=int, default=100, help="images per backend call (default: 100)")
    run.set_defaults(run=_run)

    args = parser.parse_args(argv)
    if getattr(args, "batch", 1) < 1:
        parser.error(f"--batch must be at least 1, got {args.batch}")
    if getattr(args, "count", None) is not None and args.count < 0:
        parser.error(f"--count must be at least 0, got {args.count}")
    try:
        return args.run(args)
    except (DeviceError, ValueError, OSError, NotImplementedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
