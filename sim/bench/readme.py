"""`python -m sim.bench readme [--refresh NAME ...] [--check]`: README.md's measured figures, from benchmark JSON.

Every measured block of README.md sits between `<!-- figures:BLOCK -->` and `<!-- /figures -->` and is rendered
here from the JSON files in docs/figures/, each written by one command of `SOURCES` (a build's report and
manifest, or a benchmark's output). `--refresh NAME` reruns that command and stores its JSON; with no option the
README's blocks are rewritten from the stored JSON; `--check` (tests/test_readme_figures.py) fails when a block differs
from its rendering, so a figure edited by hand, or JSON refreshed without re-rendering, does not go unnoticed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FIGURES = ROOT / "docs" / "figures"
#: The README's line width.
WIDTH = 115
BLOCK = re.compile(r"(<!-- figures:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /figures -->)", re.DOTALL)


@dataclass(frozen=True)
class Source:
    """One JSON file of docs/figures/: the command that measures it, and the JSON files it writes into its `--out`
    folder (each stored under its name's stem; none: the command prints its JSON, stored as `result`)."""
    argv: tuple[str, ...]
    outputs: tuple[str, ...] = ()

    def command(self) -> str:
        return "python " + " ".join(self.argv)


#: What `hw.build` writes: its report and the device's manifest.
BUILD = ("report.json", "manifest.json")
#: What `hw.characterise` writes.
CHARACTERISATION = ("characterisation.json",)

SOURCES = {
    "build-lenet5": Source(("-m", "hw.build"), BUILD),
    "build-fc_only": Source(("-m", "hw.build", "--config", "fc_only"), BUILD),
    "build-link-icebreaker": Source(("-m", "hw.build", "--config", "link", "--board", "icebreaker"), BUILD),
    "build-link-ulx3s-85f": Source(("-m", "hw.build", "--config", "link", "--board", "ulx3s-85f"), BUILD),
    "e2e": Source(("-m", "sim.bench", "e2e")),
    "board": Source(("-m", "sim.bench", "board", "--sim", "verilator", "--fresh")),
    "link": Source(("-m", "sim.bench", "link", "--sim", "verilator")),
    "spectral": Source(("-m", "sim.bench", "spectral")),
    # The VGG-like layers are MAC-bound: the engine sized for them has one inverse path (its DSPs all MAC lanes but
    # the requantizer's).
    "spectral-one-path": Source(("-m", "sim.bench", "spectral", "--outs", "1", "--layers", "vgg_12x12", "vgg")),
    "xor": Source(("-m", "sim.bench", "xor")),
    "bim": Source(("-m", "sim.bench", "bim")),
    "admm": Source(("-m", "sim.bench", "admm")),
    # The SPEC2 transforms on the iCE40 (sim.bench spectral builds them for the ECP5 only); a block that does not fit
    # is recorded, not raised.
    "fft2d-icebreaker": Source(("-m", "hw.characterise", "--block", "fft2d", "--board", "icebreaker"),
                               CHARACTERISATION),
    "ifft2d-icebreaker": Source(("-m", "hw.characterise", "--block", "ifft2d", "--board", "icebreaker"),
                                CHARACTERISATION),
}


def refresh(name: str, progress: Callable[[str], None] = lambda message: None, done: Path | None = None) -> Path:
    """Run `SOURCES[name]`'s command and store what it measured as docs/figures/NAME.json; with `done`, the folder
    that command already wrote its files into (`--out`), store those instead of running it again."""
    source = SOURCES[name]
    if done is not None:
        if not source.outputs:
            raise RuntimeError(f"{name}: `{source.command()}` prints its measurement and writes no files: "
                               "refresh it without --from")
        missing = [file for file in source.outputs if not (done / file).is_file()]
        if missing:
            raise RuntimeError(f"{name}: {done} has no {' or '.join(missing)}: give the --out folder of "
                               f"`{source.command()}`")
        progress(f"{name}: the files of `{source.command()}` in {done}")
        return _store(name, {Path(file).stem: json.loads((done / file).read_text()) for file in source.outputs})
    progress(f"{name}: {source.command()}")
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, *source.argv, *(("--out", tmp) if source.outputs else ())]
        run = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"{name}: `{source.command()}` exited with {run.returncode}")
        if source.outputs:
            data = {Path(file).stem: json.loads((Path(tmp) / file).read_text()) for file in source.outputs}
        else:
            data = {"result": json.loads(run.stdout)}
    return _store(name, data)


def _store(name: str, data: dict[str, Any]) -> Path:
    """docs/figures/NAME.json: `data` under the command that measures it."""
    source = SOURCES[name]
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / f"{name}.json"
    # Paths inside the checkout are stored relative to it: the figures describe the project, not a machine.
    text = json.dumps({"command": source.command(), **data}, indent=2).replace(f"{ROOT}{os.sep}", "")
    path.write_text(text + "\n")
    return path


def load(figures: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every stored figure file (of `figures`, default docs/figures/), by name."""
    return {path.stem: json.loads(path.read_text()) for path in sorted((figures or FIGURES).glob("*.json"))}


# --- numbers as the README writes them -------------------------------------------------------------------------


def _int(value: float) -> str:
    """A count as the README writes it, thousands separated by spaces: 28 190."""
    return f"{round(value):,}".replace(",", " ")


def _mhz(value: float) -> str:
    return f"{value:.1f} MHz"


def _use(resources: dict[str, dict[str, int]], name: str, unit: str) -> str:
    use = resources[name]
    return f"{_int(use['used'])} / {_int(use['available'])} {unit}"


# --- the blocks ------------------------------------------------------------------------------------------------


def _engines(manifest: dict[str, Any], report: dict[str, Any]) -> str:
    engines = manifest.get("engines", {})
    parts = []
    if "conv" in engines:
        conv = engines["conv"]["params"]
        outs = conv.get("outs", 1)  # 1 in a manifest that predates it
        parts.append(f"SpectralConv P = {conv['p']}, B = {conv['b']}"
                     + (f", {outs} output channels in flight" if outs > 1 else ""))
    if "fc" in engines:
        parts.append(f"FC engine n_out = {engines['fc']['params']['n_out']}")
    text = " + ".join(parts) if parts else "link only"
    spram = report["resources"].get("ICESTORM_SPRAM", {}).get("used", 0)
    return text + (", regions in SPRAM" if spram else "")


def _logic(report: dict[str, Any]) -> str:
    resources = report["resources"]
    if "ICESTORM_LC" in resources:
        return _use(resources, "ICESTORM_LC", "LC")
    return f"{_use(resources, 'TRELLIS_COMB', 'LUT4')}, {_int(resources['TRELLIS_FF']['used'])} FF"


def _ram(report: dict[str, Any]) -> str:
    resources = report["resources"]
    if "ICESTORM_RAM" in resources:
        text = _use(resources, "ICESTORM_RAM", "EBR")
        spram = resources.get("ICESTORM_SPRAM", {}).get("used", 0)
        return text + (f", {_use(resources, 'ICESTORM_SPRAM', 'SPRAM')}" if spram else "")
    return _use(resources, "DP16KD", "DP16KD")


def _dsp(report: dict[str, Any]) -> str:
    resources = report["resources"]
    if "ICESTORM_DSP" in resources:
        return f"{resources['ICESTORM_DSP']['used']} / {resources['ICESTORM_DSP']['available']}"
    return _use(resources, "MULT18X18D", "MULT18X18D")


def _fmax(report: dict[str, Any]) -> str:
    return f"{_mhz(min(report['fmax_mhz'].values()))} ({report['target_mhz']:g} MHz)"


BOARD_NAMES = {"ulx3s-85f": "ULX3S-85F", "icebreaker": "iCEBreaker"}


def accelerators(figures: dict[str, dict[str, Any]]) -> str:
    """The accelerators' resource table (builds of the named configs)."""
    rows = ["| config | board | logic | block RAM | DSP | Fmax (target) |", "|---|---|---|---|---|---|"]
    for config, name in (("lenet5", "build-lenet5"), ("fc_only", "build-fc_only")):
        report, manifest = figures[name]["report"], figures[name]["manifest"]
        label = f"`{config}`" + (" (default)" if config == "lenet5" else "")
        rows.append(f"| {label}: {_engines(manifest, report)} | {BOARD_NAMES[report['board']]} | {_logic(report)} | "
                    f"{_ram(report)} | {_dsp(report)} | {_fmax(report)} |")
    return "\n".join(rows) + "\n"


def link_builds(figures: dict[str, dict[str, Any]]) -> str:
    """The link-only builds on both boards."""
    ice, ecp = figures["build-link-icebreaker"]["report"], figures["build-link-ulx3s-85f"]["report"]
    return "\n".join([
        "| | iCEBreaker (iCE40UP5K) | ULX3S-85F (LFE5U-85F) |", "|---|---|---|",
        f"| logic | {_logic(ice)} | {_logic(ecp)} |",
        f"| block RAM | {_ram(ice)} | {_ram(ecp)} |",
        f"| Fmax (target) | {_fmax(ice)} | {_fmax(ecp)} |",
    ]) + "\n"


def _pll_note(report: dict[str, Any]) -> str:
    """" (the PLL on the board's 25 MHz)" for a build clocked by its PLL, else nothing."""
    clock = report.get("clock") or {}
    return f" (the PLL on the board's {clock['oscillator_hz'] / 1e6:g} MHz)" if clock.get("pll") else ""


def _busy(busy: dict[str, Any]) -> str:
    """What the conv layers keep busy, as a sentence: the MAC's lanes and the inverse paths, per layer."""
    layers = busy["layers"]

    def per_layer(key: str) -> str:
        return ", ".join(f"{name} {100 * layer[key]:.0f} %" for name, layer in layers.items())

    return (f"The conv MAC's {busy['mac_dsps']} DSPs multiply a weight in "
            f"{100 * busy['mac_lanes_busy_per_image']:.0f} % of the image's cycles ({per_layer('mac_lanes_busy')} "
            f"of their layers'), its {busy['inverse_paths']} inverse FFT paths take a sample in "
            f"{per_layer('inverse_paths_busy')} (each layer in a RUN of its own): the inverse FFT's sample a cycle "
            "and the forward path's (the tiler's and FFT's load of each input map) bound the conv layers, not the "
            "multipliers.")


def lenet5_run(figures: dict[str, dict[str, Any]]) -> str:
    """Cycles, images/s and the model's accuracy and size on the default accelerator."""
    e2e = figures["e2e"]["result"]
    build = figures["build-lenet5"]["report"]
    cycles = e2e["cycles_per_image"]
    clock_mhz = e2e["clock_hz"] / 1e6
    fmax = min(build["fmax_mhz"].values())
    size, accuracy = e2e["model_size"]["all"], e2e["accuracy"]
    fc = e2e["model_size"]["layers"]
    fc_bits = ", ".join(f"{name} {layer['format_bits_per_weight']:.3f}" for name, layer in fc.items()
                        if layer["kind"] == "fc")
    layers = ", ".join(f"{name} {_int(count)}" for name, count in e2e["simulation"]["cycles_per_layer"].items())
    return (
        f"LeNet-5 on `lenet5` takes {_int(cycles)} cycles per image (the RUN command's count; each layer behind a "
        f"conv layer loads while that one computes, so a RUN per layer takes more: {layers}): "
        f"{_int(clock_mhz * 1e6 / cycles)} images/s at its {clock_mhz:g} MHz clock{_pll_note(build)}, "
        f"{_int(fmax * 1e6 / cycles)} at Fmax; the NumPy golden backend runs about "
        f"{_int(e2e['golden_images_per_s'])} images/s on this machine, the virtual board "
        f"{e2e['simulation']['wall_seconds_per_image']:g} s per image "
        f"({'bit-exact' if e2e['simulation']['bit_exact_with_golden'] else 'NOT bit-exact'} with it). "
        f"{_busy(e2e['simulation']['conv_busy'])}\n\n"
        f"`models/lenet5_full.npz`: {100 * accuracy['compressed']:.1f} % on the {_int(accuracy['images'])}-image "
        f"test split ({100 * accuracy['float']:.1f} % with float FC layers). Its FC layers cost "
        f"{size['fc_format_bits_per_weight']:.3f} bits per weight in their format ({fc_bits}); as the device stores "
        f"them, with every beat padded to its region's word, the whole network takes {_int(size['device_bits'])} "
        f"bits, {size['device_bits_per_weight']:.2f} bits per weight, {size['compression_vs_float32']:g} times less "
        f"than float32 and {size['compression_vs_int8']:g} times less than int8.\n")


def virtual_board(figures: dict[str, dict[str, Any]]) -> str:
    """The virtual board's speed on the whole accelerator and on the link alone."""
    board, link = figures["board"]["result"], figures["link"]["result"]
    return (
        f"On the whole LeNet-5 accelerator (`{figures['board']['command']}`): "
        f"{board['compile_s']:.0f} s to compile, then {_int(board['simulated_cycles_per_s'])} simulated cycles "
        f"per second, {board['seconds_per_image']:g} s per image over {board['images']} images, "
        f"{'every image bit-exact' if board['bit_exact'] else 'NOT bit-exact'} with the golden model. The link "
        f"alone (`{figures['link']['command']}`) echoes {_int(link['echo_payload_bytes_per_s'] / 1e3)} kB/s of payload "
        f"each way with {_int(link['payload_bytes'])}-byte frames, {link['simulated_cycles_per_s'] / 1e6:.1f} "
        f"million cycles per second.\n")


def _board_row(rows: list[dict[str, Any]], board: str) -> dict[str, Any]:
    return next(row for row in rows if row["board"] == board)


def _ecp5(fmax_mhz: float, resources: dict[str, int], dsp: int) -> str:
    """A block built for the ECP5 (`sim.bench spectral`'s stage figures: resources by cell, used only)."""
    return f"{fmax_mhz:.0f} MHz, {_int(resources['TRELLIS_COMB'])} LUT4, {dsp} MULT18X18D"


def _ice40(report: dict[str, Any]) -> str:
    """A SPEC2 block characterised on the iCE40: its figures, or that it does not fit and what ran out."""
    if not report["fits"]:
        # nextpnr names the cell type it ran out of: logic cells, block RAM or DSPs.
        cells = {"ICESTORM_LC": "logic", "ICESTORM_RAM": "block RAM", "ICESTORM_DSP": "DSPs"}
        short = [what for cell, what in cells.items() if cell in report["error"]]
        return "does not fit" + (f" ({short[0]})" if short else "")
    resources = report["resources"]
    return (f"{report['fmax_mhz']:.0f} MHz, {_use(resources, 'ICESTORM_LC', 'LC')}, "
            f"{resources['ICESTORM_DSP']['used']} DSP")


def blocks(figures: dict[str, dict[str, Any]]) -> str:
    """Each block built alone on both boards: the XOR decoder and BIM unpacker (`sim.bench xor`, `bim`), the SPEC2
    stages and the dense baseline (`sim.bench spectral` on the ECP5, `hw.characterise` on the iCE40)."""
    decoders, unpackers = figures["xor"]["result"]["decoder"], figures["bim"]["result"]["unpacker"]
    spectral = figures["spectral"]["result"]
    stages, baseline = spectral["hardware"]["spec2"]["stages"], spectral["hardware"]["baseline"]
    fft_ice = figures["fft2d-icebreaker"]["characterisation"]
    ifft_ice = figures["ifft2d-icebreaker"]["characterisation"]
    ice_budget = fft_ice["resources"]
    fft = stages["fft2d"]["params"]
    twiddles = " (shift-add twiddles)" if fft["twiddle_mult"] == "logic" else ""
    dec = [_board_row(decoders, board) for board in ("icebreaker", "ulx3s-85f")]
    unp = [_board_row(unpackers, board) for board in ("icebreaker", "ulx3s-85f")]
    mac = stages["mac"]
    rows = [
        "| block | iCEBreaker | ULX3S-85F |", "|---|---|---|",
        f"| XOR decoder (n_in, n_out) = ({dec[0]['n_in']}, {dec[0]['n_out']}) | {dec[0]['fmax_mhz']:.0f} MHz, "
        f"{dec[0]['weights_per_s'] / 1e9:.1f} G decoded weights/s | {dec[1]['fmax_mhz']:.0f} MHz, "
        f"{dec[1]['weights_per_s'] / 1e9:.1f} G weights/s |",
        f"| BIM unpacker ({unp[0]['m_t']}, {unp[0]['n_t']}, r = {unp[0]['r']}) | {unp[0]['fmax_mhz']:.0f} MHz, "
        f"{unp[0]['mask_bits_per_s'] / 1e9:.1f} G mask bits/s | {unp[1]['fmax_mhz']:.0f} MHz, "
        f"{unp[1]['mask_bits_per_s'] / 1e9:.1f} G mask bits/s |",
        f"| SPEC2 `Fft2d`, N = {fft['n']}{twiddles} | {_ice40(fft_ice)} | "
        f"{_ecp5(stages['fft2d']['fmax_mhz'], stages['fft2d']['resources'], stages['fft2d']['dsp'])} |",
        f"| SPEC2 `Ifft2d`, N = {stages['ifft2d']['params']['n']} | {_ice40(ifft_ice)} | "
        f"{_ecp5(stages['ifft2d']['fmax_mhz'], stages['ifft2d']['resources'], stages['ifft2d']['dsp'])} |",
        # Not built on the iCE40: the MAC's multipliers (one DSP each there) are more than the UP5K has.
        f"| SPEC2 `SpectralMac`, P = {spectral['p']}, B = {spectral['b']} | not built ({mac['dsp']} multipliers, "
        f"{ice_budget['ICESTORM_DSP']['available']} DSPs) | {_ecp5(mac['fmax_mhz'], mac['resources'], mac['dsp'])} |",
        f"| dense baseline, M = {baseline['m']} (LeNet conv2) | not built ({baseline['m']} map copies of "
        f"{_map_ebr(baseline['params'])} EBR, {ice_budget['ICESTORM_RAM']['available']} EBR) | "
        f"{_ecp5(baseline['fmax_mhz'], baseline['resources'], baseline['dsp'])} |",
    ]
    return "\n".join(rows) + "\n"


def spec2(figures: dict[str, dict[str, Any]]) -> str:
    """SpectralConv against the dense baseline with as many multipliers, per layer, on the engine with four inverse
    paths (the LeNet-5 accelerator's) and with one (`sim.bench spectral`), against the targets."""
    rows = ["| layer | inverse paths (DSPs) | lane slots holding a weight | cycles: one input / streamed | "
            "ops per DSP-cycle against the baseline: one input / streamed | target (streamed) |",
            "|---|---|---|---|---|---|"]
    sources = [figures[name] for name in ("spectral", "spectral-one-path")]
    for source in sources:
        run = source["result"]
        targets = {t["layer"]: t for t in run["targets"]}
        for row in run["layers"]:
            target = targets.get(row["layer"])
            met = "" if target is None else f"{target['ratio']:g}x, {'met' if target['met'] else 'not met'}"
            cycles = row["cycles_model"]
            rows.append(f"| {row['layer']} | {row['outs']} ({run['hardware']['spec2']['dsp']}) | "
                        f"{row['lane_utilization']:.1%} | {_int(cycles['single'])} / {_int(cycles['steady'])} | "
                        f"{row['ratio']['single']:.2f}x / {row['ratio']['steady']:.2f}x | {met} |")
    baseline = sources[0]["result"]["hardware"]["baseline"]
    commands = " and ".join(f"`{source['command']}`" for source in sources)
    return ("\n".join(rows) + "\n\n" + f"The baseline has M = {baseline['m']} multipliers ({baseline['dsp']} DSPs with "
            f"its requantizer); cycles by the cycle model, which the same commands check against the RTL on every "
            f"layer but the full-size VGG one ({commands}).\n")


def _map_ebr(params: dict[str, Any]) -> int:
    """iCE40 EBRs (4 kbit) one lane's copy of the baseline's input map takes: C_in maps of rows and columns rounded up
    to powers of two (`hw.baseline.conv`'s addressing), `act_bits` each."""
    rows, cols = (params["height"] - 1).bit_length(), (params["width"] - 1).bit_length()
    return -(-(params["c_in"] << (rows + cols)) * params["act_bits"] // 4096)


def _and(values: list[Any]) -> str:
    """1, 2 and 3."""
    words = [str(value) for value in values]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _percents(values: list[float]) -> str:
    return ", ".join(f"{100 * value:.1f}" for value in values) + " %"


def _spread(spread: dict[str, Any]) -> str:
    return f"{100 * spread['mean']:.2f} ± {100 * spread['std']:.2f} %"


def formats(figures: dict[str, dict[str, Any]]) -> str:
    """The XOR format's bits per weight at its target point and the BIM masks' index bits and LeNet-5 accuracy."""
    xor, bim = figures["xor"]["result"], figures["bim"]["result"]
    target = xor["target"]
    at = {point["n_out"]: point for point in xor["at_target_point"]}
    main, wide = at[xor["n_out"]], at[max(at)]
    point = next(p for p in xor["points"] if p["sparsity"] == target["sparsity"] and p["bits"] == target["bits"]
                 and p["n_out"] == xor["n_out"])
    sparsity = bim["target"]["sparsity"]
    mask = next(p for p in bim["gaussian"]["points"] if p["sparsity"] == sparsity and p["tile"] == list(BIM_TILE)
                and p["rank"] == BIM_RANK)
    accuracy = bim["accuracy"]
    mean = accuracy["test_accuracy_mean"]
    rows, cols = xor["matrix"]
    exact = "every kept bit exact" if xor["all_kept_bits_recovered"] else "NOT every kept bit recovered"
    return (
        f"Formats (`{figures['xor']['command']}`, `{figures['bim']['command']}`, on a {rows} × {cols} matrix at "
        f"sparsity {target['sparsity']:g} and {sparsity:g}): the XOR format stores {target['bits']}-bit weights in "
        f"{main['bits_per_weight']:.4f} bits/weight at n_out = {main['n_out']} and {wide['bits_per_weight']:.4f} at "
        f"n_out = {wide['n_out']} (bound {point['bound']:g}; the paper reports {xor['paper']['bits_per_weight']:g}), "
        f"{exact}, encoded in {main['encoder_seconds']:.1f} s; a BIM mask costs {mask['index_bits_per_weight']:.3f} "
        f"index bits/weight at {BIM_TILE[0]}×{BIM_TILE[1]} tiles, rank {BIM_RANK}. On LeNet-5 at "
        f"{100 * accuracy['sparsity']:.0f} % FC sparsity, BIM masks ({accuracy['index_bits_per_weight']:.3f} index "
        f"bits/weight) retrained reach {100 * mean['bim']:.2f} % against {100 * mean['magnitude']:.2f} % for "
        f"unstructured magnitude pruning (mean of {len(accuracy['seeds'])} seeds).\n")


#: The BIM configuration the formats paragraph names (the one docs/formats.md discusses at s = 0.9).
BIM_TILE, BIM_RANK = (64, 64), 3


def admm(figures: dict[str, dict[str, Any]]) -> str:
    """LeNet-5's spectral pruning per seed: the stages' accuracies, their spread and training times, and what
    the comparison says."""
    result = figures["admm"]["result"]
    accuracy, recipe, runs = result["test_accuracy"], result["recipe"], result["runs"]
    last = runs[-1]
    seconds = last["seconds"]
    rounds, w_step = recipe["admm"]["iterations"], recipe["admm"]["w_step"]
    rho_last = recipe["admm"]["rho0"] * recipe["admm"]["rho_growth"] ** (rounds - 1)
    pruned = f"{100 * result['sparsity']:.0f} %"
    optimizers = {"adam": "Adam", "sgd": "SGD"}
    images, seeds = result["test_images"], ", ".join(map(str, result["seeds"]))
    threads = result["torch_threads"]

    def row(label: str, key: str, time: str = "") -> str:
        return f"| {label} | {_percents(accuracy[key]['values'])} | {_spread(accuracy[key])} | {time} |"

    table = [
        f"Test accuracy on the {_int(images)}-image split (one image is {100 / images:g} point), seeds {seeds} (each "
        f"seed reruns every stage, dense training included), {threads} torch thread{'s' if threads != 1 else ''}:",
        "",
        f"| model | seeds {seeds} | mean ± std | training time (seed {last['seed']}) |", "|---|---|---|---|",
        row(f"dense spatial LeNet-5 ({recipe['spatial']['epochs']} epochs, "
            f"{optimizers[recipe['spatial']['optimizer']]})", "dense_spatial", f"{seconds['dense_spatial']:.0f} s"),
        row(f"dense spectral (from the spatial one, {recipe['spectral']['epochs']} epochs)", "dense_spectral",
            f"{seconds['dense_spectral']:.0f} s"),
        row(f"{pruned} ADMM ({rounds} × {w_step['epochs']} epochs, {optimizers[w_step['optimizer']]}, ρ "
            f"{recipe['admm']['rho0']:g} → {rho_last:g}) + {recipe['retrain']['epochs']} epochs retraining",
            "admm_retrained", f"{seconds['admm']:.0f} s + {seconds['admm_and_retraining'] - seconds['admm']:.0f} s"),
        row("the same before retraining", "admm_before_retraining"),
        row(f"{pruned} magnitude pruning + {recipe['retrain']['epochs']} epochs retraining", "magnitude_retrained",
            f"{seconds['magnitude_and_retraining']:.0f} s"),
        row("the same before retraining", "magnitude_before_retraining"),
        row("exported ADMM model, golden fixed point (int8 activations, 16-bit weights)", "exported_golden_fixed",
            f"{seconds['golden_fixed_inference']:.0f} s inference"),
        row("exported ADMM model, golden float operator", "exported_golden_float"),
    ]
    return "\n".join(table) + "\n\n" + _admm_findings(result) + "\n"


def _admm_findings(result: dict[str, Any]) -> str:
    """The comparison in words, each claim decided by the figures it states."""
    accuracy, runs, target = result["test_accuracy"], result["runs"], result["target"]
    gap = target["gap_points"]  # dense spectral minus ADMM + retraining, points, paired by seed
    within = "within" if target["met"] else "not within"
    side = "above" if gap["mean"] < 0 else "below"
    by = f"{abs(gap['mean']):.2f} ± {gap['std']:.2f} points, paired by seed"
    if all(value < 0 for value in gap["values"]) or all(value > 0 for value in gap["values"]):
        versus = f"it is {side} it on every seed (by {by})"
    else:
        versus = f"it is {side} it on the mean but not on every seed ({by})"
    seeds = [run["seed"] for run in runs]

    def disagreements(key: str) -> str:
        counts = [run[key] for run in runs]
        if not any(counts):
            return "none"
        images = f"of the {_int(result['test_images'])} test images"
        if len(set(counts)) == 1:
            return f"{counts[0]} {images} for each seed"
        return f"{_and(counts)} {images} (seeds {_and(seeds)})"

    admm, magnitude = accuracy["admm_retrained"], accuracy["magnitude_retrained"]
    difference = abs(admm["mean"] - magnitude["mean"])
    spread = min(admm["std"], magnitude["std"])
    alike = ("indistinguishable at this size" if difference < spread else "apart by more than the seed spread")
    before = 100 * (accuracy["admm_before_retraining"]["mean"] - accuracy["magnitude_before_retraining"]["mean"])
    leader = "ADMM" if before >= 0 else "magnitude pruning"
    extra = result["recipe"]["admm"]["iterations"] * result["recipe"]["admm"]["w_step"]["epochs"]
    return (
        f"ADMM + retraining is {within} {target['admm_within_points_of_dense_spectral']:g} points of the dense "
        f"spectral model: {versus}. The fixed-point golden model disagrees with torch on "
        f"{disagreements('fixed_vs_torch_disagreements')}, the float golden operator on "
        f"{disagreements('float_vs_torch_disagreements')}. After retraining, ADMM and magnitude pruning are {alike} "
        f"({100 * admm['mean']:.2f} against {100 * magnitude['mean']:.2f} %, seed spread "
        f"{100 * spread:.2f} points); before retraining {leader} leads by {abs(before):.1f} points on the mean, and "
        f"ADMM takes {extra} more epochs of training.")


BLOCKS: dict[str, Callable[[dict[str, dict[str, Any]]], str]] = {
    "accelerators": accelerators, "link-builds": link_builds, "lenet5-run": lenet5_run,
    "virtual-board": virtual_board, "blocks": blocks, "spec2": spec2, "formats": formats, "admm": admm,
}


def _wrap(text: str) -> str:
    """Prose paragraphs wrapped as the README's own (tables, whose lines start with `|`, left as they are)."""
    def fill(paragraph: str) -> str:
        if paragraph.startswith("|"):
            return paragraph
        # A count's thousands separators are spaces the wrap must not break at ("263 604").
        glued = re.sub(r"(?<=\d) (?=\d{3}\b)", "\0", paragraph)
        return textwrap.fill(glued, WIDTH, break_long_words=False, break_on_hyphens=False).replace("\0", " ")
    return "\n\n".join(fill(paragraph) for paragraph in text.rstrip("\n").split("\n\n")) + "\n"


def render(text: str, figures: dict[str, dict[str, Any]]) -> str:
    """`text` (a README) with every figure block rendered from `figures`; an unknown block name is an error."""
    def block(match: re.Match) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise ValueError(f"README block figures:{name}: unknown; known blocks are {', '.join(BLOCKS)}")
        return match.group(1) + _wrap(BLOCKS[name](figures)) + match.group(4)
    return BLOCK.sub(block, text)


def register(sub) -> None:
    parser = sub.add_parser("readme", help="render README.md's measured figures from docs/figures/*.json",
                            description="Render README.md's measured figures from the benchmark JSON in "
                                        "docs/figures/ (each file names the command that measured it).")
    parser.add_argument("--refresh", nargs="+", choices=sorted(SOURCES), default=[], metavar="NAME",
                        help=f"rerun these measurements first ({', '.join(SOURCES)}; builds take minutes)")
    parser.add_argument("--from", dest="done", type=Path, default=None, metavar="DIR",
                        help="with one --refresh NAME whose command writes files (a build, a characterisation): "
                             "store the files that command already wrote into DIR (its --out) instead of running "
                             "it again")
    parser.add_argument("--check", action="store_true", help="only check that README.md is up to date (exit 1 if not)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.check and args.refresh:
        parser.error("--check and --refresh exclude each other")
    if args.done is not None and len(args.refresh) != 1:
        parser.error(f"--from takes the files of one measurement: give one --refresh NAME, got {len(args.refresh)}")
    for name in args.refresh:
        try:
            refresh(name, progress=lambda message: print(message, file=sys.stderr, flush=True), done=args.done)
        except (RuntimeError, OSError, json.JSONDecodeError) as error:
            print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
            return 1
    text = README.read_text()
    rendered = render(text, load())
    if args.check:
        if rendered != text:
            print("README.md's figures differ from docs/figures/*.json: run `python -m sim.bench readme`",
                  file=sys.stderr)
            return 1
        return 0
    README.write_text(rendered)
    print(json.dumps({"blocks": [m["name"] for m in BLOCK.finditer(rendered)]}))
    return 0
