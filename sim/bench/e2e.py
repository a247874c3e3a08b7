"""`python -m sim.bench e2e`: the compressed LeNet-5 end to end, as JSON.

    python -m sim.bench e2e [--model MODEL.npz] [--report build/<board>/report.json] [--no-sim]

* model size per layer and in all: the dense weights each layer applies (conv C_out C_in K^2, FC rows cols), the
  bits the accelerator stores for it (its words in the device's regions: beats x region width, the same for
  every layer) and for the FC layers the compressed format's own count (`host.lenet5.compressed.size_report`),
  in bits per weight, against float32 and int8 dense;
* accuracy on the 1 000-image test split: the uncompressed reference (golden fixed-point conv, float32 FC, as
  stored in the model file) and the compressed model, measured here on the golden backend;
* cycles per image: one MNIST image through the RTL simulation of the whole accelerator (the virtual board,
  `python -m sim.server --config lenet5`), bit-exact with the golden backend (`--no-sim` skips it);
* Fmax and resources of a build from its report.json (`--report`); images/s at that Fmax only when the build is of
  the LeNet-5 configuration (its manifest.json equals the device description), else null with the reason;
  images/s at the board's clock always;
* images/s of the golden NumPy backend on this machine, and of the virtual board (wall clock).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from sim.demo import MODEL  # the committed, compressed LeNet-5

#: Descriptor fields that count each layer's words per region.
REGION_COUNTS = {"conv.w": "conv.w_count", "conv.quant": "conv.quant_count", "fc.xor": "fc.xor_count",
                 "fc.bim": "fc.bim_count", "fc.scale": "fc.scale_count"}
#: Names of the packed program's layers -> the model's layers (a conv layer is packed with its pool).
PACKED_TO_LAYER = {"pool1": "conv1", "pool2": "conv2", "fc1": "fc1", "fc2": "fc2", "fc3": "fc3"}


def model_size(model: Any, info: dict) -> dict:
    """Per layer and in all: dense weights, stored bits on the device (and in the FC format), bits per weight."""
    from host.accel import AccelInfo, pack_model
    from host.infer import dense_weights
    from host.lenet5.compressed import size_report
    from hw.spec.fields import unpack_fields

    accel = AccelInfo.from_info(info)
    packed = pack_model(accel, model)
    weights = dense_weights(model)
    fc_format = size_report(model.fc)
    layers: dict[str, dict] = {}
    for out, word in zip(packed.layers, packed.program):
        fields = unpack_fields(accel.descriptor, word)
        name = PACKED_TO_LAYER[out.name]
        bits = {region: fields[count] * accel.regions[region].width for region, count in REGION_COUNTS.items()
                if count in fields and fields[count]}
        entry = {"weights": weights[name], "device_bits": sum(bits.values()), "device_bits_by_region": bits,
                 "device_bits_per_weight": round(sum(bits.values()) / weights[name], 4)}
        if name in fc_format:
            entry["format_bits"] = fc_format[name]["bits"]["total"]
            entry["format_bits_per_weight"] = fc_format[name]["bits_per_weight"]["total"]
        layers[name] = entry
    total_weights = weights["all"]
    device_bits = sum(entry["device_bits"] for entry in layers.values())
    program_bits = len(packed.program) * accel.regions["program"].width
    return {"layers": layers, "all": {
        "weights": total_weights, "device_bits": device_bits,
        "device_bits_per_weight": round(device_bits / total_weights, 4),
        "device_bytes": -(-device_bits // 8), "program_bits": program_bits,
        "float32_bytes": 4 * total_weights, "int8_bytes": total_weights,
        "compression_vs_float32": round(32 * total_weights / device_bits, 1),
        "compression_vs_int8": round(8 * total_weights / device_bits, 1),
        "fc_format_bits_per_weight": fc_format["all"]["bits_per_weight"]["total"]}}


def golden_accuracy(model: Any) -> dict:
    """The compressed model on the golden backend over the whole test split: accuracy and images/s here."""
    from host.infer import open_backend
    from host.mnist import load_mnist

    _, _, x, y = load_mnist()
    with open_backend("golden", model) as session:
        session.run(x[:8])  # warm-up: first-call costs are not the backend's speed
        started = time.monotonic()
        predictions = session.run(x).predictions
        seconds = time.monotonic() - started
    return {"images": len(x), "accuracy": round(float(np.mean(predictions == y)), 4),
            "images_per_s": round(len(x) / seconds, 1)}


def simulate_one(model: Any) -> dict:
    """One MNIST image through the virtual board: its cycles, the INFO it described, bit-exactness, wall clock."""
    from host.infer import open_backend
    from host.mnist import load_mnist
    from sim.server import start

    x = load_mnist()[2][:1]
    expected = open_backend("golden", model).run(x).logits
    with start("--config", "lenet5") as board:
        with open_backend(board.url, model) as session:
            started = time.monotonic()
            result = session.run(x)
            seconds = time.monotonic() - started
            info = session.backend.info
        board.stop()
    return {"cycles": int(result.cycles[0]), "bit_exact": bool(np.array_equal(result.logits, expected)),
            "seconds": round(seconds, 1), "info": info}


def read_report(path: Path, info: dict) -> dict:
    """Fmax, resources and timing of an hw.build report.json, and whether its build is the device's config."""
    report = json.loads(path.read_text())
    manifest = path.with_name("manifest.json")
    built = json.loads(manifest.read_text()) if manifest.is_file() else None
    differ = ["no manifest.json beside the report"] if built is None else sorted(
        k for k in set(built) | set(info) if k not in ("bitstream", "sqgen") and built.get(k) != info.get(k))
    return {"path": str(path), "board": report.get("board"), "fmax_mhz": report.get("fmax_mhz"),
            "resources": report.get("resources"), "timing_met": report.get("timing_met"),
            "is_lenet5_build": not differ,
            "differs_from_lenet5_in": differ}


def bench_e2e(model_path: Path, report: Path | None, sim: bool) -> dict:
    """The JSON of the module docstring."""
    from host.infer import dense_weights, load_model
    from hw.config import CONFIGS

    model = load_model(model_path, expected=None)
    info = CONFIGS["lenet5"]().describe()
    out: dict[str, Any] = {"benchmark": "e2e", "model": str(model_path), "board": info["board"],
                           "clock_hz": info["clock_hz"], "baud": info["baud"]}
    out["model_size"] = model_size(model, info)
    measured = golden_accuracy(model)
    stored = model.metadata.get("test_accuracy", {})
    out["accuracy"] = {"images": measured["images"],
                       "float": stored.get("float_fc"),
                       "compressed": measured["accuracy"],
                       "compressed_stored": stored.get("golden_fixed"),
                       "float_means": "golden fixed-point conv with float32 FC layers (stored in the model file)"}
    out["golden_images_per_s"] = measured["images_per_s"]

    cycles = None
    if sim:
        run = simulate_one(model)
        if run["info"] != info:
            raise RuntimeError("the virtual board describes another configuration than hw.config's lenet5")
        cycles = run["cycles"]
        out["simulation"] = {"cycles_per_image": cycles, "bit_exact_with_golden": run["bit_exact"],
                             "wall_seconds_per_image": run["seconds"],
                             "virtual_board_images_per_s": round(1 / run["seconds"], 4)}
    else:
        out["simulation"] = None
        out["simulation_skipped"] = "--no-sim"
    out["cycles_per_image"] = cycles

    weights = dense_weights(model)["all"]
    out["decoded_weights_per_image"] = weights
    out["at_clock"] = None if cycles is None else _rates(weights, cycles, info["clock_hz"], info["baud"])
    if report is None:
        out["build"] = None
        out["build_missing"] = "no --report given (python -m hw.build writes build/<board>/report.json)"
        out["at_fmax"], out["at_fmax_missing"] = None, "no --report given"
    else:
        build = read_report(report, info)
        out["build"] = build
        fmax = min(build["fmax_mhz"].values()) * 1e6 if build["fmax_mhz"] else None
        if cycles is None:
            out["at_fmax"], out["at_fmax_missing"] = None, "no cycles per image (--no-sim)"
        elif not build["is_lenet5_build"]:
            out["at_fmax"] = None
            out["at_fmax_missing"] = ("the report is a build of another configuration than the LeNet-5 accelerator "
                                      f"(its manifest differs in {build['differs_from_lenet5_in']}): its Fmax is "
                                      "not this accelerator's")
        else:
            out["at_fmax"] = _rates(weights, cycles, fmax, info["baud"])
    return out


def _rates(weights: int, cycles: int, clock_hz: float, baud: int) -> dict:
    images_per_s = clock_hz / cycles
    return {"clock_hz": clock_hz, "images_per_s": round(images_per_s, 1),
            "decoded_weights_per_s": round(weights * images_per_s),
            "link_bits_per_s": baud, "weights_per_link_bit": round(weights * images_per_s / baud, 1)}


def register(sub) -> None:
    parser = sub.add_parser("e2e", help="the compressed LeNet-5 end to end: size, accuracy, cycles, Fmax, images/s",
                            description="The compressed LeNet-5 end to end: model size, accuracy, cycles per image, "
                                        "Fmax and resources, images/s (JSON).")
    parser.add_argument("--model", type=Path, default=MODEL, metavar="MODEL.npz",
                        help="compressed LeNet-5 (default: models/lenet5_full.npz)")
    parser.add_argument("--report", type=Path, default=None, metavar="REPORT.json",
                        help="an hw.build report.json: Fmax and resources (images/s at Fmax when it is a lenet5 build)")
    parser.add_argument("--no-sim", action="store_true", help="skip the RTL simulation of one image")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.report is not None and not args.report.is_file():
        parser.error(f"--report: no such file {args.report}")
    print(json.dumps(bench_e2e(args.model, args.report, not args.no_sim), indent=2))
    return 0
