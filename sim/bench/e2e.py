"""`python -m sim.bench e2e`: a compressed model end to end (the committed LeNet-5, or any model file), as JSON.

    python -m sim.bench e2e [--model MODEL.npz] [--data SPEC] [--count N] [--config NAME]
                            [--report build/<board>/report.json] [--no-sim]

* model size per layer and in all: the dense weights each layer applies (conv C_out C_in K^2, FC rows cols), the
  bits its compressed format stores and the bits the accelerator stores for it (its words in the device's
  regions: beats x region width, the same for every layer; `host.infer.layer_sizes`), in bits per weight, against
  float32 and int8 dense; for the FC layers together the format's own count (`hw.spec.network.size_report`);
* accuracy on the test split (the LeNet-5's 1 000 MNIST images, or the dataset the model file names, `--data`):
  the float reference and the compressed model as stored in the model file, and the compressed model measured
  here on the golden backend;
* cycles per image: one test sample through the RTL simulation of the whole accelerator (the virtual board,
  `python -m sim.server --config NAME`; by default `lenet5` for the LeNet-5 file and for any other model file the
  accelerator `hw.plan` derives from it, `sim.server --model`, whose resource estimate is given too), bit-exact with
  the golden backend, and per layer (`--no-sim` skips it; a model the config cannot run gets null and the one-line
  reason);
* what the conv layers keep busy over those cycles: the MAC (a kernel group a cycle), its P lanes (a weight's
  product, its 4 real products on the MAC's 4 P DSPs) and the inverse paths (a sample a cycle each), per layer and
  the MAC lanes over the whole image;
* Fmax and resources of a build from its report.json (`--report`); images/s at that Fmax only when the build is of
  the configuration the sizes and cycles are for (its manifest.json equals the device description), else null
  with the reason; images/s at the board's clock always;
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


def model_size(model: Any, info: dict) -> tuple[dict, str | None]:
    """Per layer and in all: dense weights, stored bits in the format and on the device, bits per weight; and why
    the device cannot hold the model (None when it can: then the device's figures are there too)."""
    from host.infer import ConfigMismatch, as_network, layer_sizes, plan_device
    from hw.spec.network import size_report

    try:
        plan, problem = plan_device(info, model), None
    except ConfigMismatch as error:
        plan, problem = None, str(error)
    layers = layer_sizes(model, plan)
    total = layers.pop("all")
    fc = as_network(model).fc_layers()
    total["fc_format_bits_per_weight"] = size_report(fc)["all"]["bits_per_weight"]["total"] if fc else None
    weights, stored = total["weights"], total.get("device_bits", total["format_bits"])
    total.update({"device_bytes": None if plan is None else -(-stored // 8),
                  "float32_bytes": 4 * weights, "int8_bytes": weights,
                  "compression_vs_float32": round(32 * weights / stored, 1) if stored else None,
                  "compression_vs_int8": round(8 * weights / stored, 1) if stored else None,
                  "compression_counts": "device_bits" if plan is not None else "format_bits"})
    return {"layers": layers, "all": total}, problem


def golden_accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> dict:
    """The compressed model on the golden backend over the test samples: accuracy and images/s here."""
    from host.infer import open_backend

    with open_backend("golden", model) as session:
        session.run(x[:8])  # warm-up: first-call costs are not the backend's speed
        started = time.monotonic()
        predictions = session.run(x).predictions
        seconds = time.monotonic() - started
    return {"images": len(x), "accuracy": round(float(np.mean(predictions == y)), 4),
            "images_per_s": round(len(x) / seconds, 1)}


def simulate_one(model: Any, x: np.ndarray, config: str, server: tuple[str, ...] | None = None) -> dict:
    """One test sample through the virtual board of `config` (or of the `sim.server` arguments `server`): its cycles
    (whole and per layer), the INFO it described, bit-exactness, wall clock."""
    from host.infer import open_backend
    from sim.server import start

    expected = open_backend("golden", model).run(x).logits
    with start(*(server or ("--config", config))) as board:
        with open_backend(board.url, model) as session:
            started = time.monotonic()
            result = session.run(x)
            seconds = time.monotonic() - started
            per_layer = session.layer_cycles(x)
            info = session.backend.info
        board.stop()
    return {"cycles": int(result.cycles[0]), "cycles_per_layer": per_layer,
            "bit_exact": bool(np.array_equal(result.logits, expected)), "seconds": seconds, "info": info}


def conv_busy(model: Any, info: dict, measured: dict[str, int]) -> dict | None:
    """What each conv layer keeps busy over the cycles it took on the device (`measured`, by layer name), from the
    cycle model's counts (`hw.spec.spectral.engine.layer_cycles`): the fraction of cycles its MAC issues a kernel
    group, of its P lanes' cycles spent on a weight (each lane's 4 real products are the MAC's 4 P DSPs, so this
    is also their busy fraction) and of its inverse paths' cycles; and over the whole image, the MAC lanes'.
    None without a conv engine."""
    from host.infer import as_network
    from hw.spec.network import program_steps
    from hw.spec.spectral.engine import layer_cycles
    from hw.spec.spectral.fixed import mac_multipliers

    engine = info["engines"].get("conv", {}).get("params")
    if engine is None:
        return None
    layers, products = {}, 0
    for step in program_steps(as_network(model)):
        if step.kind != "conv":
            continue
        cycles = measured[step.layer.name]
        _, h, w = step.in_shape
        counts = layer_cycles(engine, step.layer.spectral, h, w, valid_as_crop=True, pool=step.pool)
        products += counts["products"]
        layers[step.layer.name] = {"cycles": cycles, "mac_busy": round(counts["mac"] / cycles, 4),
                                   "mac_lanes_busy": round(counts["products"] / (engine["p"] * cycles), 4),
                                   "inverse_paths_busy": round(counts["inverse"] / (engine["outs"] * cycles), 4)}
    return {"layers": layers, "mac_dsps": mac_multipliers(engine["p"]), "inverse_paths": engine["outs"],
            "mac_lanes_busy_per_image": round(products / (engine["p"] * sum(measured.values())), 4)}


def read_report(path: Path, info: dict) -> dict:
    """Fmax, resources and timing of an hw.build report.json, and whether its build is the device's config."""
    report = json.loads(path.read_text())
    manifest = path.with_name("manifest.json")
    built = json.loads(manifest.read_text()) if manifest.is_file() else None
    differ = ["no manifest.json beside the report"] if built is None else sorted(
        k for k in set(built) | set(info) if k not in ("bitstream", "sqgen") and built.get(k) != info.get(k))
    return {"path": str(path), "board": report.get("board"), "fmax_mhz": report.get("fmax_mhz"),
            "resources": report.get("resources"), "timing_met": report.get("timing_met"),
            "is_config_build": not differ,
            "differs_from_config_in": differ}


def bench_e2e(model_path: Path, report: Path | None, sim: bool, data: str | None = None, count: int | None = None,
              config: str | None = None) -> dict:
    """The JSON of the module docstring; `config` None: `lenet5` for the LeNet-5 file, else the derived one."""
    from host.infer import dense_weights, load_model, stored_accuracy, test_split
    from host.lenet5.compressed import CompressedLeNet5
    from hw.config import CONFIGS

    model = load_model(model_path, expected=None)
    derived = None
    if config is None and not isinstance(model, CompressedLeNet5):
        from hw.plan import plan

        derived = plan(model)
        config, info = "derived", derived.config.describe()
    else:
        config = config or "lenet5"
        info = CONFIGS[config]().describe()
    x, y, data_name = test_split(model, data)
    x, y = (x, y) if count is None else (x[:count], y[:count])
    out: dict[str, Any] = {"benchmark": "e2e", "model": str(model_path), "data": data_name, "config": config,
                           "board": info["board"], "clock_hz": info["clock_hz"], "baud": info["baud"]}
    if derived is not None:
        out["estimate"] = derived.estimate.describe()
    out["model_size"], problem = model_size(model, info)
    out["device_problem"] = problem
    measured = golden_accuracy(model, x, y)
    stored = stored_accuracy(model)
    out["accuracy"] = {"images": measured["images"],
                       "float": stored["float"],
                       "compressed": measured["accuracy"],
                       "compressed_stored": stored["compressed"],
                       "float_means": "golden fixed-point conv with float32 FC layers (stored in the model file)"
                       if isinstance(model, CompressedLeNet5) else "the float network before compression (stored "
                                                                   "in the model file, on the whole test split)"}
    out["golden_images_per_s"] = measured["images_per_s"]

    cycles = None
    if sim and problem is None:
        run = simulate_one(model, x[:1], config, None if derived is None else ("--model", str(model_path)))
        if run["info"] != info:
            raise RuntimeError(f"the virtual board describes another configuration than {config}'s")
        cycles = run["cycles"]
        out["simulation"] = {"cycles_per_image": cycles, "cycles_per_layer": run["cycles_per_layer"],
                             "bit_exact_with_golden": run["bit_exact"],
                             "wall_seconds_per_image": round(run["seconds"], 1),
                             "virtual_board_images_per_s": round(1 / run["seconds"], 4),
                             "conv_busy": conv_busy(model, info, run["cycles_per_layer"])}
    else:
        out["simulation"] = None
        out["simulation_skipped"] = "--no-sim" if not sim else problem
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
            out["at_fmax"], out["at_fmax_missing"] = None, f"no cycles per image ({out['simulation_skipped']})"
        elif not build["is_config_build"]:
            out["at_fmax"] = None
            out["at_fmax_missing"] = (f"the report is a build of another configuration than {config} (its manifest "
                                      f"differs in {build['differs_from_config_in']}): its Fmax is not this "
                                      "accelerator's")
        else:
            out["at_fmax"] = _rates(weights, cycles, fmax, info["baud"])
    return out


def _rates(weights: int, cycles: int, clock_hz: float, baud: int) -> dict:
    images_per_s = clock_hz / cycles
    return {"clock_hz": clock_hz, "images_per_s": round(images_per_s, 1),
            "decoded_weights_per_s": round(weights * images_per_s),
            "link_bits_per_s": baud, "weights_per_link_bit": round(weights * images_per_s / baud, 1)}


def register(sub) -> None:
    parser = sub.add_parser("e2e", help="a compressed model end to end: size, accuracy, cycles, Fmax, images/s",
                            description="A compressed model (the LeNet-5 or any model file) end to end: model size, "
                                        "accuracy, cycles per image and per layer, Fmax and resources, images/s "
                                        "(JSON).")
    parser.add_argument("--model", type=Path, default=MODEL, metavar="MODEL.npz",
                        help="a model file (default: the compressed LeNet-5, models/lenet5_full.npz)")
    parser.add_argument("--data", default=None, metavar="SPEC",
                        help="the test split: mnist, digits or a .npz (default: MNIST for the LeNet-5, else the "
                             "dataset the model file names)")
    parser.add_argument("--count", type=int, default=None, metavar="N",
                        help="test samples for the golden accuracy (default: the whole split)")
    parser.add_argument("--config", default=None, metavar="NAME",
                        help="the accelerator (hw.config.CONFIGS) the device sizes and the simulation are for "
                             "(default: lenet5 for the LeNet-5 file, else the one hw.plan derives from the model)")
    parser.add_argument("--report", type=Path, default=None, metavar="REPORT.json",
                        help="an hw.build report.json: Fmax and resources (images/s at Fmax when it is a build of "
                             "--config)")
    parser.add_argument("--no-sim", action="store_true", help="skip the RTL simulation of one image")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.report is not None and not args.report.is_file():
        parser.error(f"--report: no such file {args.report}")
    if args.count is not None and args.count < 1:
        parser.error(f"--count must be at least 1, got {args.count}")
    from hw.config import CONFIGS

    if args.config is not None and args.config not in CONFIGS:
        parser.error(f"--config: unknown config {args.config!r}; the configs are {', '.join(sorted(CONFIGS))}")
    try:
        result = bench_e2e(args.model, args.report, not args.no_sim, args.data, args.count, args.config)
    except ValueError as error:  # a model file or dataset that cannot be read: one line
        parser.exit(2, f"error: {error}\n")
    print(json.dumps(result, indent=2))
    return 0
