"""`python -m sim.bench spectral` (or `spec2`): SPEC2 spectral convolution against the dense spatial baseline on
equal DSPs, as JSON.

    python -m sim.bench spectral [--p 4] [--outs 4] [--sparsity 0.75] [--no-build] [--no-sim] [--layers vgg ...]
                                 [--whole-layer]


Per layer (LeNet-5 conv1 and conv2, a VGG-like 64 -> 64 layer at 56 x 56, and the same VGG layer on a 12 x 12
map): spatial-equivalent operations 2 H_out W_out K^2 C_in C_out, the sparse spectral layer's lane utilisation,
cycles of `SpectralConv` from its cycle model (`hw.spectral.pipeline.cycle_model`), checked against the RTL
simulation (bit-exact outputs, full rate) on every layer but the full-size VGG one, and cycles of the dense
baseline (`hw.baseline.conv`, one output per ceil(C_in K^2 / M) cycles, as its bench checks). DSPs and Fmax
come from ECP5-85F builds (`hw.characterise`): SpectralConv's stages one by one (DSPs summed, Fmax the lowest),
the baseline whole, with M = 4 P multipliers, the MAC lanes' real multipliers. With `--outs` SpectralConv has
that many output channels in flight (at most the layer's C_out): its inverse stages (IFFT, overlap-add with its
requantizer) count once per path. Effective operations per DSP
per cycle are given for one layer alone (`single`: the forward FFT's load up to the last input channel's
first tile, then the compute beside the rest of it) and for a
stream of inputs through the layer (`steady`: the next input loads while this one computes, which the MAC's
double buffer does); the targets (`TARGETS`) are steady ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hw.config import CONV_OUTS
from hw.spec.spectral.fixed import mac_multipliers

#: What SpectralConv is to reach, in effective operations per DSP per cycle against the baseline with M = 4 P
#: multipliers, at 75 % spectral sparsity, inputs streamed through the layer: 1.5x on LeNet-5's conv2 and 8x on
#: the VGG-like layer.
TARGETS = ({"layer": "lenet_conv2", "sparsity": 0.75, "ratio": 1.5, "measure": "steady"},
           {"layer": "vgg", "sparsity": 0.75, "ratio": 8.0, "measure": "steady"})


@dataclass(frozen=True)
class LayerSpec:
    name: str
    c_in: int
    c_out: int
    height: int
    width: int
    k: int
    l: int  # noqa: E741
    padding: str
    relu: bool
    simulate: bool
    inputs: int = 1  # inputs streamed back to back in the simulation (2: the steady state is measured too)

    @property
    def out_shape(self) -> tuple[int, int]:
        crop = 0 if self.padding == "same" else self.k - 1
        return self.height - crop, self.width - crop

    @property
    def ops(self) -> int:
        """Spatial-equivalent operations: 2 H_out W_out K^2 C_in C_out (a multiply and an add per product)."""
        h, w = self.out_shape
        return 2 * h * w * self.k * self.k * self.c_in * self.c_out


LAYERS = (
    LayerSpec("lenet_conv1", 1, 6, 28, 28, 5, 4, "same", True, simulate=True),
    LayerSpec("lenet_conv2", 6, 16, 14, 14, 5, 4, "valid", True, simulate=True),
    LayerSpec("vgg_12x12", 64, 64, 12, 12, 3, 6, "same", True, simulate=True, inputs=2),
    LayerSpec("vgg", 64, 64, 56, 56, 3, 6, "same", True, simulate=False),
)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_layer(spec: LayerSpec, p: int, b: int, sparsity: float, seed: int) -> tuple[Any, list[np.ndarray]]:
    """A random spatial layer pruned to `sparsity` in the spectral domain, scheduled and calibrated; its inputs."""
    from host.compress.spectral import calibrate, compress_spatial
    from hw.spec.spectral.geometry import DEFAULT_N, OaaParams

    rng = np.random.default_rng([seed, spec.c_in, spec.c_out, spec.height])
    oaa = OaaParams(DEFAULT_N, spec.k, spec.l, spec.padding)
    w = rng.standard_normal((spec.c_out, spec.c_in, spec.k, spec.k)) / np.sqrt(spec.c_in * spec.k ** 2)
    layer = compress_spatial(w, oaa, sparsity=sparsity, p=p, b=b, bias=rng.standard_normal(spec.c_out) * 0.1,
                             relu=spec.relu)
    inputs = [rng.integers(-128, 128, size=(spec.c_in, spec.height, spec.width)) for _ in range(spec.inputs)]
    return calibrate(layer, np.stack(inputs[:1]), in_scale=1 / 64), inputs


def conv_params(spec: LayerSpec, p: int, b: int, outs: int = 1) -> Any:
    """The smallest `SpectralConvParams` that runs `spec` with `outs` output channels in flight (at most C_out)."""
    from hw.spectral.pipeline import SpectralConvParams

    return SpectralConvParams(k=spec.k, l=spec.l, padding=spec.padding, relu=spec.relu, p=p, b=b,
                           max_c_in=spec.c_in, max_c_out=spec.c_out, max_height=spec.height, max_width=spec.width,
                           outs=min(outs, spec.c_out))


#: SpectralConv's stages with multipliers or timing of their own, characterised one by one (the tiler and the
#: glue are small counters and buffers). The whole layer does not go through Yosys 0.70's abc9 on ECP5 (an
#: internal assert in ABC_OPS_REINTEGRATE), so its DSPs are the stages' sum and its Fmax their minimum.
SPEC2_STAGES = ("fft2d", "mac", "ifft2d", "oaa")
#: The stages each output channel in flight has one of.
SPEC2_PATH_STAGES = ("ifft2d", "oaa")


def _characterised(key: str, board: str, **kwargs: Any) -> dict[str, Any]:
    from hw import characterise

    block = characterise.spectral_block(key, **kwargs)
    _progress(f"[bench] building {block.name} for {board} ...")
    started = time.perf_counter()
    report = characterise.characterise_spectral(block, board, alone=False, progress=lambda message: None)
    if not report.get("fits"):
        raise RuntimeError(f"{block.name} does not build for {board}: {report.get('error')}")
    return {"dsp": report["dsp"], "fmax_mhz": report["fmax_mhz"], "params": report["params"],
            "resources": {k: v["used"] for k, v in report["resources"].items()},
            "build_seconds": round(time.perf_counter() - started, 1)}


def hardware(p: int, b: int, board: str, build: bool, whole_layer: bool = False, outs: int = 1) -> dict[str, Any]:
    """DSPs, Fmax and logic of SpectralConv (P lanes, `outs` inverse paths) and of the baseline (M = 4 P) built for
    `board`.

    SpectralConv is built stage by stage (DSPs summed, the lowest Fmax: minutes), or with `whole_layer` as one
    layer (`hw.characterise --block conv`: about 20 minutes on 2 cores), which is the Fmax it really reaches.
    """
    m = mac_multipliers(p)
    if not build:
        # Without builds the DSPs are counted from the design (`hw.estimate.conv_dsps`: the MAC lanes' and each
        # path's requantizer's); the baseline M and its requantizer's 2 likewise. No Fmax.
        from boards import get_board
        from hw.estimate import conv_dsps
        from hw.spectral.pipeline import SpectralConvParams

        dsp = conv_dsps(get_board(board).family, SpectralConvParams(p=p, b=b, outs=outs))
        return {"measured": False, "spec2": {"dsp": dsp, "fmax_mhz": None},
                "baseline": {"dsp": m + 2, "fmax_mhz": None, "m": m}}
    if whole_layer:
        if outs != 1:
            raise ValueError("--whole-layer builds one inverse path: use --outs 1 with it")
        conv = _characterised("conv", board, mac_p=p, mac_b=b)
        spec2 = {"dsp": conv["dsp"], "fmax_mhz": conv["fmax_mhz"],
                 "luts": conv["resources"].get("TRELLIS_COMB", 0), "whole_layer": conv}
    else:
        stages = {key: _characterised(key, board, mac_p=p, mac_b=b) for key in SPEC2_STAGES}
        copies = {key: outs if key in SPEC2_PATH_STAGES else 1 for key in stages}
        spec2 = {"dsp": sum(stage["dsp"] * copies[key] for key, stage in stages.items()),
                 "fmax_mhz": min(stage["fmax_mhz"] for stage in stages.values()),
                 "luts": sum(stage["resources"].get("TRELLIS_COMB", 0) * copies[key] for key, stage in stages.items()),
                 "stages": stages, "outs": outs}
    baseline = _characterised("baseline", board, baseline_m=m)
    baseline["luts"] = baseline["resources"].get("TRELLIS_COMB", 0)
    return {"measured": True, "board": board, "spec2": spec2, "baseline": {**baseline, "m": m}}


def _rates(ops: int, cycles: int, dsp: int, fmax_mhz: float | None) -> dict[str, Any]:
    per_cycle = ops / cycles
    return {"cycles": int(cycles), "ops_per_cycle": round(per_cycle, 2),
            "ops_per_dsp_per_cycle": round(per_cycle / dsp, 3),
            "gops": round(per_cycle * fmax_mhz / 1e3, 3) if fmax_mhz else None}


def bench_layer(spec: LayerSpec, p: int, b: int, sparsity: float, seed: int, hw: dict[str, Any],
                simulate: bool, workdir: Path, outs: int = 1) -> dict[str, Any]:
    """One layer's figures: operations, utilisation, SpectralConv and baseline cycles and rates, their ratio."""
    from host.compress.spectral import schedule_stats
    from hw.spectral.pipeline import cycle_model

    layer, inputs = make_layer(spec, p, b, sparsity, seed)
    params = conv_params(spec, p, b, outs)
    model = cycle_model(params, layer, spec.height, spec.width)
    stats = schedule_stats(layer)
    row: dict[str, Any] = {
        "layer": spec.name, "c_in": spec.c_in, "c_out": spec.c_out, "height": spec.height, "width": spec.width,
        "k": spec.k, "l": spec.l, "padding": spec.padding, "outs": params.outs, "ops": spec.ops,
        "spectral_density": round(layer.density(), 4), "lane_utilization": round(stats["utilization"], 4),
        "groups": stats["groups"],
        "cycles_model": model,
    }
    if simulate and spec.simulate:
        from sim.spectral import simulate_layers, span

        _progress(f"[bench] simulating {spec.name} ({spec.inputs} input(s), full rate) ...")
        started = time.perf_counter()
        cycles = simulate_layers(params, [(layer, x) for x in inputs], f"bench_{spec.name}_p{p}_o{params.outs}",
                                 workdir, testcase="full_rate")
        simulated = span(cycles)
        predicted = model["single"] + (spec.inputs - 1) * model["steady"]
        row["cycles_sim"] = {"inputs": spec.inputs, "cycles": simulated, "model": predicted,
                             "model_error": round(predicted / simulated - 1, 4),
                             "seconds": round(time.perf_counter() - started, 1)}
    m = hw["baseline"]["m"]
    h_out, w_out = spec.out_shape
    base_cycles = spec.c_out * h_out * w_out * -(-spec.c_in * spec.k * spec.k // m)
    s2, base = hw["spec2"], hw["baseline"]
    row["spec2"] = {measure: _rates(spec.ops, model[measure], s2["dsp"], s2["fmax_mhz"])
                    for measure in ("single", "steady")}
    row["baseline"] = {"m": m, **_rates(spec.ops, base_cycles, base["dsp"], base["fmax_mhz"])}
    row["ratio"] = {measure: round(row["spec2"][measure]["ops_per_dsp_per_cycle"]
                                   / row["baseline"]["ops_per_dsp_per_cycle"], 2) for measure in ("single", "steady")}
    return row


def bench_spec2(p: int, b: int, sparsity: float, seed: int, board: str, build: bool, simulate: bool,
                layers: list[str] | None = None, whole_layer: bool = False, outs: int = 1) -> dict[str, Any]:
    """The whole benchmark as one JSON-able dict."""
    hw = hardware(p, b, board, build, whole_layer, outs)
    chosen = [spec for spec in LAYERS if layers is None or spec.name in layers]
    with tempfile.TemporaryDirectory(prefix="spec2-bench-") as tmp:
        rows = [bench_layer(spec, p, b, sparsity, seed, hw, simulate, Path(tmp), outs) for spec in chosen]
    return {"p": p, "b": b, "outs": outs, "sparsity": sparsity, "seed": seed, "hardware": hw, "layers": rows,
            "targets": targets(rows, sparsity)}


def targets(rows: list[dict[str, Any]], sparsity: float) -> list[dict[str, Any]]:
    """`TARGETS` on the layers benchmarked at their sparsity, each with the ratio reached and whether it is met."""
    reached = {row["layer"]: row["ratio"] for row in rows}
    return [{**target, "reached": reached[target["layer"]][target["measure"]],
             "met": reached[target["layer"]][target["measure"]] >= target["ratio"]}
            for target in TARGETS if target["layer"] in reached and target["sparsity"] == sparsity]


def register(sub) -> None:
    from .common import sparsity_arg

    parser = sub.add_parser("spectral", aliases=["spec2"],
                            help="SPEC2 vs dense baseline: cycles, DSPs, Fmax, ops per DSP per cycle",
                            description="SpectralConv against the dense spatial baseline with as many multipliers, "
                                        "on LeNet-5's conv layers and a VGG-like layer: cycles (model, checked "
                                        "against bit-exact RTL simulation), DSPs and Fmax of ECP5 builds, "
                                        "effective operations per DSP per cycle.")
    parser.add_argument("--p", type=int, default=4, help="MAC lanes; the baseline gets 4 P multipliers (default: 4)")
    parser.add_argument("--b", type=int, help="spectrum banks (default: 2 P)")
    parser.add_argument("--outs", type=int, default=CONV_OUTS,
                        help="output channels in flight, each with its own inverse path; a layer with fewer output "
                             "channels gets as many as it has (default: %(default)s, as the LeNet-5 accelerator)")
    parser.add_argument("--sparsity", type=sparsity_arg, default=0.75, help="spectral sparsity (default: 0.75)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random layers and inputs (default: 0)")
    parser.add_argument("--board", default="ulx3s-85f", help="board the engines are built for (default: ulx3s-85f)")
    parser.add_argument("--no-build", action="store_true",
                        help="skip the builds: DSPs counted from the design, no Fmax or GOP/s")
    parser.add_argument("--no-sim", action="store_true", help="skip the RTL simulations (cycle model only)")
    parser.add_argument("--whole-layer", action="store_true",
                        help="build SpectralConv as one layer (its real Fmax, about 20 min) instead of stage by stage")
    parser.add_argument("--layers", nargs="+", metavar="NAME", help="only these layers (default: all)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    known = [spec.name for spec in LAYERS]
    if args.layers and not set(args.layers) <= set(known):
        parser.error(f"--layers must name some of {', '.join(known)}, got {' '.join(args.layers)}")
    b = args.b or 2 * args.p
    if args.p < 1 or b < args.p or b & (b - 1) or b > 40:
        parser.error(f"--p must be >= 1 and --b a power of two in P..40, got P={args.p}, B={b}")
    if not 1 <= args.outs <= 16:
        parser.error(f"--outs must be in 1..16, got {args.outs}")
    if args.whole_layer and args.outs != 1:
        parser.error("--whole-layer builds one inverse path: use it with --outs 1")
    result = bench_spec2(args.p, b, args.sparsity, args.seed, args.board, not args.no_build, not args.no_sim,
                         args.layers, args.whole_layer, args.outs)
    print(json.dumps(result, indent=2))
    return 0
