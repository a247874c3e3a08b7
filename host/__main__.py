"""sqgen host CLI: talk to a device (real board over serial, virtual board over TCP), run a compressed model on it.

    python -m host info --url tcp://127.0.0.1:PORT
    python -m host echo --url serial:///dev/ttyUSB1?baud=115200 --size 256 --count 10
    python -m host run --model models/lenet5_full.npz --backend tcp://127.0.0.1:PORT --count 100
    python -m host run --model net.npz --data digits --backend golden --count 500

`run` classifies the first COUNT samples of a test split (the LeNet-5's MNIST, or `--data`: mnist, digits or a
.npz; a network's file names its own) on a backend (golden, tcp://, serial://) and reports accuracy, the stored
accuracies, each conv and FC layer's size (bits per weight in its format, and on a device in its regions),
agreement with the golden backend, cycles per image and on a device per layer (each program word RUN alone on
the first sample), the bytes LOADed and READ, and the effective weight bandwidth:

* decoded weights per image: the weights the layers apply to one image, counted dense (conv C_out C_in K^2,
  FC rows x cols; 61 470 for LeNet-5), each of which the engines decode on chip from the compressed format;
* images/s at the clock: the device clock (INFO's clock_hz, or the Fmax of `--report report.json`) over the
  cycles one image's RUN takes;
* effective weight bandwidth: decoded weights per image x images/s, in weights/s, against the link's raw bit
  rate (INFO's baud, the virtual board's too): how many weights per link bit the accelerator applies, which is
  what keeping the compressed weights on chip buys over streaming them.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

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


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, a line per tenth of the work otherwise."""

    def __init__(self, total: int, width: int = 30):
        self.total, self.width = total, width
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self.shown = -1

    def update(self, done: int) -> None:
        rate = done / max(time.monotonic() - self.started, 1e-9)
        filled = done * self.width // max(self.total, 1)
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} images, {rate:.2f} images/s"
        if self.tty:
            print(f"\r{line}", end="", file=sys.stderr, flush=True)
        elif done * 10 // max(self.total, 1) != self.shown or done == self.total:
            self.shown = done * 10 // max(self.total, 1)
            print(line, file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _fmax_hz(report_path: str, info: dict | None) -> float:
    """The slowest clock's Fmax of an `hw.build` report.json, in Hz. ValueError when its build is of another
    configuration than the device (the manifest.json beside it differs from INFO): its Fmax says nothing here."""
    path = Path(report_path)
    with path.open() as f:
        report = json.load(f)
    try:
        fmax = 1e6 * min(float(v) for v in report["fmax_mhz"].values())
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ValueError(f"{report_path}: not an hw.build report.json (no fmax_mhz per clock)") from None
    manifest = path.with_name("manifest.json")
    if info is not None and manifest.is_file():
        built = json.loads(manifest.read_text())
        differ = sorted(k for k in set(built) | set(info) if k not in ("bitstream", "sqgen") and
                        built.get(k) != info.get(k))
        if differ:
            raise ValueError(f"--report {report_path} is a build of another configuration than the device's "
                             f"(manifest.json and INFO differ in {', '.join(differ)})")
    return fmax


def bandwidth(weights_per_image: int, cycles_per_image: float, clock_hz: float, baud: float) -> dict:
    """The effective weight bandwidth (module docstring): images/s at `clock_hz`, decoded weights/s, and their
    ratio to the link's raw bit rate."""
    images_per_s = clock_hz / cycles_per_image
    weights_per_s = weights_per_image * images_per_s
    return {"clock_hz": clock_hz, "images_per_s": round(images_per_s, 2),
            "decoded_weights_per_s": round(weights_per_s), "link_bits_per_s": baud,
            "weights_per_link_bit": round(weights_per_s / baud, 1)}


def _run(args) -> int:
    import numpy as np

    from host.infer import (
        as_network,
        backend_scheme,
        compare_traces,
        dense_weights,
        layer_sizes,
        load_model,
        open_backend,
        stored_accuracy,
        test_split,
    )

    scheme = backend_scheme(args.backend)
    if args.report and scheme == "golden":
        raise ValueError("--report needs a device backend (tcp:// or serial://): golden counts no cycles")
    # The device, not the file, says which FC format it runs: a device backend checks the model against INFO.
    model = load_model(args.model, expected=None)
    net = as_network(model)
    x_test, y_test, data_name = test_split(model, args.data)
    count = len(x_test) if args.count is None else min(args.count, len(x_test))
    x, y = x_test[:count], y_test[:count]
    batch = args.batch or (100 if scheme == "golden" else 1)
    progress = Progress(count)
    logits, mismatch, layer_cycles = [], None, None
    with open_backend(args.backend, model, timeout=args.timeout) as session:
        info = getattr(session.backend, "info", None)
        fmax_hz = _fmax_hz(args.report, info) if args.report else None  # refused before any image is run
        started = time.monotonic()
        golden = open_backend("golden", model) if scheme != "golden" else None
        for start in range(0, count, batch):
            stop = min(count, start + batch)
            result = session.run(x[start:stop], trace=args.trace)
            logits.append(result.logits)
            if args.trace and golden is not None and mismatch is None:
                diff = compare_traces(golden.run(x[start:stop], trace=True).layers, result.layers)
                if diff is not None:
                    mismatch = {**diff, "index": [start + diff["index"][0], *diff["index"][1:]]} \
                        if "index" in diff else diff
            progress.update(stop)
        seconds = time.monotonic() - started
        cycles = session.cycles_per_image
        if count:
            layer_cycles = session.layer_cycles(x[:1])
        plan = getattr(session.backend, "plan", None)
        loaded = session.backend.bytes_loaded() if plan is not None else None
    progress.finish()
    logits = np.concatenate(logits) if logits else np.zeros((0, *net.output_shape), dtype=np.int8)
    predictions = logits.reshape(len(logits), -1).argmax(axis=1)
    stored = stored_accuracy(model)
    summary = {"backend": args.backend, "model": args.model, "data": data_name, "count": count,
               "accuracy": round(float(np.mean(predictions == y)), 6) if count else None,
               "stored_accuracy": stored["compressed"], "stored_float_accuracy": stored["float"],
               "agreement": None, "bit_exact": None, "first_mismatch": mismatch,
               "cycles_per_image": None if cycles is None else round(cycles, 1),
               "cycles_per_layer": layer_cycles, "bytes_loaded": loaded,
               "layers": layer_sizes(model, plan),
               "decoded_weights_per_image": dense_weights(model)["all"],
               "bandwidth_at_clock": None, "bandwidth_at_fmax": None,
               "seconds": round(seconds, 2), "images_per_s": round(count / seconds, 3) if seconds else None,
               "predictions": predictions.tolist(), "labels": y.tolist()}
    if golden is not None and count:
        reference = np.concatenate([golden.run(x[i:i + 250]).logits for i in range(0, count, 250)])
        reference, flat = reference.reshape(count, -1), logits.reshape(count, -1)
        summary["agreement"] = round(float(np.mean(reference.argmax(axis=1) == predictions)), 6)
        summary["bit_exact"] = round(float(np.mean((reference == flat).all(axis=1))), 6)
    if info is not None and cycles:
        summary["board"] = info.get("board")
        weights, baud = summary["decoded_weights_per_image"], float(info["baud"])
        summary["bandwidth_at_clock"] = bandwidth(weights, cycles, float(info["clock_hz"]), baud)
        if fmax_hz is not None:
            summary["bandwidth_at_fmax"] = bandwidth(weights, cycles, fmax_hz, baud)
    print(json.dumps(summary) if args.json else _format_summary(summary))
    if summary["bit_exact"] is not None and summary["bit_exact"] < 1:
        print(f"error: the backend's outputs differ from the golden backend's on "
              f"{round((1 - summary['bit_exact']) * count)} of {count} images", file=sys.stderr)
        return 1
    return 0


def _format_summary(s: dict) -> str:
    """The run summary as aligned lines for a terminal."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f} %"

    data = "MNIST" if s["data"] == "mnist" else s["data"]
    lines = [f"backend        {s['backend']}" + (f" ({s['board']})" if s.get("board") else ""),
             f"images         {s['count']} ({data} test split, from the first)",
             f"accuracy       {pct(s['accuracy'])} (stored golden accuracy on the whole split: "
             f"{pct(s['stored_accuracy'])}; float {pct(s['stored_float_accuracy'])})"]
    cycles = s["cycles_per_layer"] or {}
    for name, size in s["layers"].items():
        device = f", {size['device_bits_per_weight']:.3f} on the device" if "device_bits_per_weight" in size else ""
        spent = f", {cycles[name]:,} cycles" if name in cycles else ""
        what = f"{size['kind']} " if "kind" in size else ""
        lines.append(f"{'layer ' + name if name != 'all' else 'all layers':<14} {what}{size['weights']:,} weights, "
                     f"{size['format_bits_per_weight']:.3f} bits/weight{device}{spent}")
    if s["count"] <= 20:
        shown = " ".join(map(str, s["predictions"]))
        lines.append(f"predictions    {shown} (labels {' '.join(map(str, s['labels']))})")
    if s["agreement"] is not None:
        lines.append(f"golden         predictions agree on {pct(s['agreement'])}, logits bit-exact on "
                     f"{pct(s['bit_exact'])}" + ("" if s["first_mismatch"] is None else
                                                f"; first mismatch {s['first_mismatch']}"))
    if s["cycles_per_image"] is not None:
        lines.append(f"cycles/image   {s['cycles_per_image']:,.0f}")
    if s["bytes_loaded"] is not None:
        b = s["bytes_loaded"]
        lines.append(f"link           {b['model']:,} bytes LOADed once (weights, program), then per image "
                     f"{b['input_per_sample']:,} in and {b['output_per_sample']:,} out"
                     + (f", {b['passes_per_sample']:,} for FC passes" if b.get("passes_per_sample") else ""))
    for key, label in (("bandwidth_at_clock", "at clock"), ("bandwidth_at_fmax", "at Fmax")):
        b = s[key]
        if b is not None:
            lines.append(f"{label:<14} {b['clock_hz'] / 1e6:.2f} MHz: {b['images_per_s']:,.1f} images/s, "
                         f"{s['decoded_weights_per_image']:,} decoded weights/image -> "
                         f"{b['decoded_weights_per_s'] / 1e6:,.1f} M weights/s against a {b['link_bits_per_s']:,.0f} "
                         f"bit/s link ({b['weights_per_link_bit']:,.0f} weights per link bit)")
    lines.append(f"wall clock     {s['seconds']:.1f} s ({s['images_per_s']} images/s on this backend)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m host", description="Talk to an sqgen device.")
    sub = parser.add_subparsers(dest="command", required=True)

    def device_command(name: str, help: str):
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--url", required=True, help=f"device URL: {URL_FORMS}")
        p.add_argument("--timeout", type=float, default=5.0,
                       help="least seconds to wait for each response; longer answers get longer (default: 5)")
        return p

    device_command("info", "print the device's self-description (JSON)").set_defaults(run=_info)
    echo = device_command("echo", "send random payloads and check they come back unchanged")
    echo.add_argument("--size", type=int, default=64, help="payload bytes per echo (default: 64)")
    echo.add_argument("--count", type=int, default=1, help="number of echoes (default: 1)")
    echo.add_argument("--seed", type=int, default=0, help="seed of the random payloads (default: 0)")
    echo.set_defaults(run=_echo)

    run = sub.add_parser("run", help="run a compressed model (the LeNet-5 or your own network) on test samples on a "
                                      "backend",
                         description="Run a compressed model (python -m host.compress model) on the first COUNT "
                                     "samples of a test split (the LeNet-5's MNIST, or --data) on a backend and print "
                                     "accuracy, each layer's size in bits per weight, agreement with the golden "
                                     "backend, cycles per image and per layer, bytes loaded and the effective weight "
                                     "bandwidth. Decoded weights "
                                     "per image: the weights the layers apply to one image counted dense (conv "
                                     "C_out*C_in*K^2, FC rows*cols). Effective weight bandwidth: decoded weights per "
                                     "image x images/s at the device clock (INFO clock_hz, or the Fmax of --report), "
                                     "compared with the link's raw bit rate (INFO baud, also on the virtual board).")
    run.add_argument("--model", required=True, metavar="MODEL.npz", help="model file (python -m host.compress model)")
    run.add_argument("--data", metavar="SPEC", default=None,
                     help="mnist, digits or a .npz with x_test, y_test (default: MNIST for the LeNet-5, else the "
                          "dataset the model file names)")
    run.add_argument("--backend", default="golden", metavar="URL",
                     help="golden (NumPy golden models), tcp://HOST:PORT (python -m sim.server --config lenet5) or "
                          "serial://DEVICE[?baud=N] (a board)")
    run.add_argument("--count", type=int, default=None, help="test samples to run (default: the whole split)")
    run.add_argument("--batch", type=int, default=None,
                     help="images per backend call (default: 100 on golden, 1 on a device)")
    run.add_argument("--trace", action="store_true",
                     help="run layer by layer and compare every layer with the golden backend")
    run.add_argument("--report", metavar="REPORT.json", default=None,
                     help="an hw.build report.json: also give images/s and bandwidth at its Fmax")
    run.add_argument("--timeout", type=float, default=None,
                     help="least seconds to wait for each device answer (default: 600 on tcp, 10 on serial)")
    run.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    run.set_defaults(run=_run)

    args = parser.parse_args(argv)
    if (getattr(args, "batch", None) or 1) < 1:
        parser.error(f"--batch must be at least 1, got {args.batch}")
    if getattr(args, "count", None) is not None and args.count < 0:
        parser.error(f"--count must be at least 0, got {args.count}")
    try:
        return args.run(args)
    except (DeviceError, ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
