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
    """One JSON file of docs/figures/: the command that measures it, and whether it writes a build folder."""
    argv: tuple[str, ...]
    build: bool = False

    def command(self) -> str:
        return "python " + " ".join(self.argv)


SOURCES = {
    "build-lenet5": Source(("-m", "hw.build"), build=True),
    "build-fc_only": Source(("-m", "hw.build", "--config", "fc_only"), build=True),
    "build-link-icebreaker": Source(("-m", "hw.build", "--config", "link", "--board", "icebreaker"), build=True),
    "build-link-ulx3s-85f": Source(("-m", "hw.build", "--config", "link", "--board", "ulx3s-85f"), build=True),
    "e2e": Source(("-m", "sim.bench", "e2e")),
    "board": Source(("-m", "sim.bench", "board", "--sim", "verilator", "--fresh")),
    "link": Source(("-m", "sim.bench", "link", "--sim", "verilator")),
}


def refresh(name: str, progress: Callable[[str], None] = lambda message: None) -> Path:
    """Run `SOURCES[name]`'s command and store what it measured as docs/figures/NAME.json."""
    source = SOURCES[name]
    progress(f"{name}: {source.command()}")
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, *source.argv, *(("--out", tmp) if source.build else ())]
        run = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"{name}: `{source.command()}` exited with {run.returncode}")
        if source.build:
            data = {"report": json.loads((Path(tmp) / "report.json").read_text()),
                    "manifest": json.loads((Path(tmp) / "manifest.json").read_text())}
        else:
            data = {"result": json.loads(run.stdout)}
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / f"{name}.json"
    # Paths inside the checkout are stored relative to it: the figures describe the project, not a machine.
    text = json.dumps({"command": source.command(), **data}, indent=2).replace(f"{ROOT}{os.sep}", "")
    path.write_text(text + "\n")
    return path


def load(figures: Path = FIGURES) -> dict[str, dict[str, Any]]:
    """Every stored figure file, by name."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(figures.glob("*.json"))}


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
        parts.append(f"SpectralConv P = {conv['p']}, B = {conv['b']}")
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
        f"LeNet-5 on `lenet5` takes {_int(cycles)} cycles per image ({layers}; the RUN command's count): "
        f"{_int(clock_mhz * 1e6 / cycles)} images/s at the board's {clock_mhz:g} MHz, "
        f"{_int(fmax * 1e6 / cycles)} at Fmax; the NumPy golden backend runs about "
        f"{_int(e2e['golden_images_per_s'])} images/s on this machine, the virtual board "
        f"{e2e['simulation']['wall_seconds_per_image']:g} s per image "
        f"({'bit-exact' if e2e['simulation']['bit_exact_with_golden'] else 'NOT bit-exact'} with it).\n\n"
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
        f"alone (`{figures['link']['command']}`) echoes {link['echo_payload_bytes_per_s'] / 1e3:.0f} kB/s of payload "
        f"each way with {_int(link['payload_bytes'])}-byte frames, {link['simulated_cycles_per_s'] / 1e6:.1f} "
        f"million cycles per second.\n")


BLOCKS: dict[str, Callable[[dict[str, dict[str, Any]]], str]] = {
    "accelerators": accelerators, "link-builds": link_builds, "lenet5-run": lenet5_run,
    "virtual-board": virtual_board,
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
    parser.add_argument("--check", action="store_true", help="only check that README.md is up to date (exit 1 if not)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.check and args.refresh:
        parser.error("--check and --refresh exclude each other")
    for name in args.refresh:
        try:
            refresh(name, progress=lambda message: print(message, file=sys.stderr, flush=True))
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
