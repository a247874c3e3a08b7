"""Build a bitstream for one accelerator config: `python -m hw.build --board ulx3s-85f`.

Amaranth renders the build plan (RTLIL, constraints and the toolchain commands); this module runs those
commands one stage at a time with progress, per-tool logs and clear errors, then writes into the out dir:

* `top.bit` (ECP5) or `top.bin` (iCE40): the bitstream;
* `report.json`: resource use against the device, Fmax per clock against its constraint, tool versions;
* `manifest.json`: `config.describe()` plus the bitstream name, what the host needs (timing met only).

Tools are found through Amaranth's environment variables (`YOSYS`, `NEXTPNR_ECP5`, `ECPPACK`, ...); an
unset one defaults to the YoWASP build of that tool installed with sqgen.

The config is a named one (`--config`) or the one `hw.plan` derives from a compressed network (`--model NET.npz`,
on `--board` or the smallest board it fits); `--plan` prints it with its resource estimate (`hw.estimate`) and
builds nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amaranth.hdl import Elaboratable

from boards import BOARDS, DEFAULT_BOARD, UnknownBoardError, get_board

from .config import CONFIGS, DEFAULT_CONFIG, AcceleratorConfig
from .estimate import estimate
from .plan import PlanError, load_network, plan
from .toolchain import (
    ABC_LUT_MAPPING,
    STAGE_NAMES,
    BuildError,
    find_tool,
    parse_nextpnr_report,
    print_progress,
    report_clocks,
    run_stage,
    timing_failures,
    tool_version,
    yosys_cell_counts,
)

DESIGN_NAME = "top"
NEXTPNR_REPORT = "nextpnr-report.json"
#: Yosys's log of Amaranth's synthesis script (`yosys -l`), its cell statistics at the end.
SYNTHESIS_REPORT = f"{DESIGN_NAME}.rpt"
BITSTREAM = {"ice40": f"{DESIGN_NAME}.bin", "ecp5": f"{DESIGN_NAME}.bit"}

#: Amaranth build overrides per family. Without `-dsp`, synth_ice40 maps multipliers to logic cells and
#: never uses the UP5K's SB_MAC16 blocks.
SYNTH_OVERRIDES: dict[str, dict[str, str]] = {"ice40": {"synth_opts": "-dsp"}}
#: The LUT mappers a build takes: "abc" maps as `ABC_LUT_MAPPING` says.
LUT_MAPPERS = ("abc9", "abc")
#: nextpnr's routers. router1 is the default: on the LeNet-5 accelerator (ULX3S, seed 1) it reaches 44.8 MHz and
#: always converges; router2 routed an earlier netlist of it in half the time at 40.5 MHz, but not the current one.
ROUTERS = ("router1", "router2")
DEFAULT_ROUTER = "router1"
#: nextpnr's placers: "heap" (analytic) or "static" (electrostatic), each followed by simulated-annealing
#: refinement, or "auto" (the default): static on iCE40, and on ECP5 for a design of at least `STATIC_FROM_LUTS`
#: LUT4s after synthesis, heap below. On the LeNet-5 accelerator (ULX3S, 30 461 LUT4) router1 took 203-323 s after
#: static's placement against 422-531 s after heap's, and nextpnr 544 s in all against 994 s at seed 2 (the whole
#: build in the suite: 686 s against 961 s) at the same Fmax (52.3-53.6 MHz); the FC-only iCEBreaker build: 72 s
#: against 80. But static spreads its density over the whole device, which costs a small design on the 85F more
#: than it saves: the dense baseline (2 532 LUT4) 46 s against heap's 37, the link alone (895 LUT4) 21 s against 14.
PLACERS = ("auto", "heap", "static")
DEFAULT_PLACER = "auto"
STATIC_FROM_LUTS = 10_000


class TimingError(BuildError):
    """Place and route finished but a clock misses its constraint; `result` holds the written report."""

    def __init__(self, message: str, result: BuildResult):
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class BuildResult:
    """What one build produced; `report` and `manifest` are the contents of report.json and manifest.json."""

    bitstream: Path
    report: dict[str, Any]
    manifest: dict[str, Any]
    out_dir: Path


def build(config: AcceleratorConfig, out_dir: Path | None = None, *, seed: int = 1,
          progress: Callable[[str], None] = print_progress, design: Elaboratable | None = None,
          synth_opts: str = "", lut_mapper: str | None = None, router: str = DEFAULT_ROUTER,
          placer: str = DEFAULT_PLACER) -> BuildResult:
    """Build `hw.top.BoardTop(config)` into `out_dir` (default `build/<board>/`) and write its reports.

    `design` replaces the accelerator with another top for `config.board` (e.g. one block characterised
    alone). `synth_opts` are added to the family's synthesis options. `lut_mapper` is "abc9" or "abc"
    (`ABC_LUT_MAPPING`); None picks "abc" for an accelerator with the SPEC2 conv engine on ECP5, else "abc9".
    `router` and `placer` are nextpnr's (`ROUTERS`, `PLACERS`). Raises BuildError when a tool is missing or
    fails; TimingError, after writing report.json, when timing fails.
    """
    from .top import BoardTop  # late, so the report helpers here import without the whole design

    board = get_board(config.board)
    out_dir = Path(out_dir if out_dir is not None else Path("build") / board.name).resolve()
    platform = board.make_platform()
    tools = {tool: find_tool(tool) for tool in platform.required_tools}
    bitstream = out_dir / BITSTREAM[board.family]
    # A failed build must not leave the previous build's products looking current.
    for stale in (bitstream, out_dir / NEXTPNR_REPORT, out_dir / "report.json", out_dir / "manifest.json"):
        stale.unlink(missing_ok=True)

    stages = 1 + len(platform.required_tools)  # elaboration, then one stage per tool
    start = time.monotonic()
    progress(f"[1/{stages}] elaborate ...")
    if lut_mapper is None:
        lut_mapper = "abc" if design is None and config.conv is not None and board.family in ABC_LUT_MAPPING \
            else "abc9"
    if lut_mapper not in LUT_MAPPERS:
        raise ValueError(f"lut_mapper must be one of {', '.join(LUT_MAPPERS)}, got {lut_mapper!r}")
    if router not in ROUTERS:
        raise ValueError(f"router must be one of {', '.join(ROUTERS)}, got {router!r}")
    if placer not in PLACERS:
        raise ValueError(f"placer must be one of {', '.join(PLACERS)}, got {placer!r}")
    if lut_mapper == "abc" and board.family not in ABC_LUT_MAPPING:
        raise ValueError(f"lut_mapper 'abc' is available for {', '.join(ABC_LUT_MAPPING)}, not {board.family}")
    overrides = dict(SYNTH_OVERRIDES.get(board.family, {}))
    extra = {"synth_opts": synth_opts, **(ABC_LUT_MAPPING[board.family] if lut_mapper == "abc" else {})}
    for key, value in extra.items():
        if value:
            overrides[key] = f"{overrides.get(key, '')} {value}".strip()
    plan = platform.prepare(design if design is not None else BoardTop(config), name=DESIGN_NAME, **overrides)
    plan.extract(out_dir)
    # Amaranth's own commands as argv lists naming the tool (not its path): what its build script runs.
    commands = json.loads(plan.files[f"build_{DESIGN_NAME}.json"])["commands"]
    progress(f"      {time.monotonic() - start:.1f} s")

    for index, (tool, *args) in enumerate(commands, start=2):
        stage = STAGE_NAMES.get(tool.split("-")[0], tool)
        progress(f"[{index}/{stages}] {stage} ({tool}) ...")
        if tool.startswith("nextpnr-"):
            if placer == "auto":
                placer, why = auto_placer(board.family, _read(out_dir / SYNTHESIS_REPORT))
                progress(f"      {placer} placer ({why})")
            # Timing is judged here rather than by nextpnr, so that the report and bitstream still get
            # written for a design that misses timing.
            args += ["--seed", str(seed), "--placer", placer, "--router", router, "--report", NEXTPNR_REPORT,
                     "--timing-allow-fail"]
        stage_start = time.monotonic()
        try:
            run_stage([tools[tool], *args], out_dir / f"{tool}.log", progress)
        except BuildError as error:
            raise BuildError(f"{stage} failed: {error}") from None
        progress(f"      {time.monotonic() - stage_start:.1f} s")
    build_seconds = round(time.monotonic() - start, 1)
    if not bitstream.is_file():
        raise BuildError(f"the toolchain finished without writing {bitstream}")

    nextpnr_report = json.loads((out_dir / NEXTPNR_REPORT).read_text())
    report = {
        "board": board.name, "device": board.device, "package": board.package, "seed": seed, "placer": placer,
        "router": router,
        **parse_nextpnr_report(nextpnr_report, board, config.clock_hz),
        # What clocks the design: the oscillator, or the PLL on it (`hw.clocking`).
        "clock": {"oscillator_hz": board.clock_hz, "hz": config.clock_hz,
                  "pll": None if config.pll is None else config.pll.describe()},
        "build_seconds": build_seconds,
        "lut_mapper": lut_mapper,
        "tools": {tool: tool_version(tool, path) for tool, path in tools.items()},
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    # A manifest describes the accelerator; another design (a block characterised alone) gets none.
    manifest = {**config.describe(), "bitstream": bitstream.name} if design is None else {}
    result = BuildResult(bitstream=bitstream, report=report, manifest=manifest, out_dir=out_dir)
    if not report["timing_met"]:
        failures = "; ".join(timing_failures(report_clocks(nextpnr_report)))
        raise TimingError(f"timing not met: {failures} (see {out_dir / 'report.json'})", result)
    if manifest:
        (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return result


def auto_placer(family: str, synthesis_report: str) -> tuple[str, str]:
    """The placer "auto" stands for (`PLACERS`), from the design's size in yosys's report, and why in words."""
    if family != "ecp5":
        return "static", f"always on {family}"
    try:
        luts = yosys_cell_counts(synthesis_report, DESIGN_NAME)["luts"]
    except BuildError:
        return "static", "no cell count in the synthesis report"
    if luts >= STATIC_FROM_LUTS:
        return "static", f"{luts} LUT4 >= {STATIC_FROM_LUTS}"
    return "heap", f"{luts} LUT4 < {STATIC_FROM_LUTS}"


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def format_report(report: dict[str, Any]) -> str:
    """A short table of report.json: resources used of available, Fmax against target, build time."""
    # Reports from before the placer was a choice name none: they were placed by nextpnr's default, heap.
    tools = f"seed {report['seed']}, {report.get('placer', 'heap')} placer, {report.get('router', 'router1')}"
    lines = [f"{report['board']}: {report['device']} {report['package']}, {tools}",
             f"  {'resource':<16}{'used':>8}{'available':>11}{'%':>8}"]
    for name, use in report["resources"].items():
        percent = 100 * use["used"] / use["available"] if use["available"] else 0.0
        lines.append(f"  {name:<16}{use['used']:>8}{use['available']:>11}{percent:>7.1f}%")
    for clock, fmax in report["fmax_mhz"].items():
        constraint = report["constraint_mhz"][clock]
        verdict = "PASS" if fmax >= constraint else "FAIL"
        lines.append(f"  Fmax {clock}: {fmax:.2f} MHz (target {constraint:.2f} MHz) {verdict}")
    clock = report.get("clock") or {}
    if clock.get("pll"):
        lines.append(f"  runs at {clock['hz'] / 1e6:g} MHz: PLL from the {clock['oscillator_hz'] / 1e6:g} MHz "
                     f"oscillator (x{clock['pll']['clkfb_div']}/{clock['pll']['clki_div']})")
    else:
        lines.append(f"  runs at {report['target_mhz']:g} MHz, the board's oscillator")
    timing = "met" if report["timing_met"] else "NOT met"
    lines.append(f"  timing {timing}; built in {report['build_seconds']:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hw.build",
        description="Build the sqgen accelerator bitstream for a board and write report.json and "
                    "manifest.json. Tools come from $YOSYS, $NEXTPNR_ICE40, $ICEPACK, $NEXTPNR_ECP5, "
                    "$ECPPACK when set, else from the YoWASP packages.",
        epilog="Writes into DIR the bitstream (top.bit or top.bin), report.json, manifest.json and one log "
               "per tool. Exits 1 when a tool fails or timing is not met (report.json is still written "
               "then), 2 when the --model network cannot run on the board (one line naming the limit).")
    parser.add_argument("--board", default=None,
                        help=f"board to build for: {', '.join(BOARDS)} (default: the config's own; "
                             f"{DEFAULT_BOARD} for {DEFAULT_CONFIG} and link, icebreaker for fc_only; with --model "
                             "the smallest board the network fits)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="output directory (default: build/<board>/)")
    parser.add_argument("--baud", type=int, default=AcceleratorConfig.baud,
                        help="host link baud rate (default: %(default)s)")
    parser.add_argument("--clock", type=float, metavar="MHZ",
                        help="the clock the design runs at, made from the board's oscillator by the PLL on ECP5 "
                             "boards (default: the config's; lenet5 runs at 50 MHz on ECP5, the rest at the "
                             "oscillator)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default: %(default)s)")
    parser.add_argument("--router", default=DEFAULT_ROUTER, choices=ROUTERS,
                        help="nextpnr router: router1 reaches the higher Fmax; router2 is sometimes faster, "
                             "sometimes does not converge (default: %(default)s)")
    parser.add_argument("--placer", default=DEFAULT_PLACER, choices=PLACERS,
                        help="nextpnr placer, each with annealing refinement: static (electrostatic) or heap "
                             f"(analytic); auto (the default): static on iCE40 and for ECP5 designs of at least "
                             f"{STATIC_FROM_LUTS} LUT4s, heap for smaller ones")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--config", default=None, choices=sorted(CONFIGS),
                      help="named accelerator config (hw.config.CONFIGS): lenet5, the whole LeNet-5 (conv and FC "
                           "engines); fc_only, the FC engine alone (fits the iCE40UP5K); link, the host link alone "
                           f"(default: {DEFAULT_CONFIG})")
    what.add_argument("--model", type=Path, metavar="NET.npz",
                      help="instead of --config: the accelerator derived from a compressed network (sqgen-net, "
                           "hw.spec.network) by hw.plan, for --board or else the smallest board it fits")
    parser.add_argument("--plan", action="store_true",
                        help="print the config and its resource estimate (hw.estimate) against the board, and "
                             "build nothing")
    args = parser.parse_args(argv)
    if args.model is not None:
        try:
            derived = plan(load_network(args.model), args.board, baud=args.baud)
        except (PlanError, UnknownBoardError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        config = derived.config
        if args.clock is not None:
            try:
                config = dataclasses.replace(config, clock_hz=round(args.clock * 1e6))
            except ValueError as error:
                parser.error(str(error))
        if args.plan:
            print(derived.format())
            return 0
    else:
        try:
            # --board overrides the board the named config is meant for.
            config = CONFIGS[args.config or DEFAULT_CONFIG](
                baud=args.baud, **({"board": args.board} if args.board else {}),
                **({"clock_hz": round(args.clock * 1e6)} if args.clock is not None else {}))
        except (UnknownBoardError, ValueError) as error:
            parser.error(str(error))
        if args.plan:
            print(estimate(config).format())
            return 0

    try:
        result = build(config, args.out, seed=args.seed, router=args.router, placer=args.placer)
    except TimingError as error:
        print(format_report(error.result.report))
        print(f"error: {error}", file=sys.stderr)
        return 1
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_report(result.report))
    print(f"bitstream: {result.bitstream}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
