"""Exploring the design space of an existing engine: `python -m hw.sweep --config fc_only --grid seed=1,2
--grid fc.tree_fanin=2,4`.

A grid over a named config's parameters for a board (`hw.sweep.grid`: dotted config fields such as `conv.p`,
`fc.n_out`, `act_depth`, `clock_hz`, and the build options `seed`, `router`, `placer`, `lut_mapper`), every point
validated by constructing its config and characterised with a workload by the engines' cycle models
(`hw.sweep.workload`) before anything builds; then each point is built with `hw.build` on Ray (`hw.sweep.run`: local
with N workers, or a cluster), its result kept in its own directory so that a rerun builds only what has not
finished (`hw.sweep.results`). Out: `results.json` (every point: its values, status, logic cells, Fmax, cycles per
image, images/s at Fmax and at its clock, the estimate; the Pareto front) and `pareto.png` (images/s at Fmax against
logic cells, the front highlighted, the points labelled).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from boards import UnknownBoardError

from ..config import CONFIGS
from ..estimate import estimate
from ..plan import PlanError
from .grid import GridError, Point, grid_points, parse_grid
from .results import figures, front_keys, logic_resource, objective, plot, table
from .run import run_points
from .workload import DEFAULT_WORKLOADS, Workload

RESULTS_FILE, PLOT_FILE = "results.json", "pareto.png"


def prepare(config: str, board: str | None, specs: Sequence[str], workload: str | Path | None = "default"
            ) -> tuple[list[Point], Workload | None, dict[str, dict[str, Any]]]:
    """The grid's points, the workload (None: none) and each point's cycles by key, all checked: GridError, one line
    naming the parameter (or point) and what it allows, for the first thing that is not valid."""
    if config not in CONFIGS:
        raise GridError(f"--config {config}: no such config; the configs: {', '.join(sorted(CONFIGS))}")
    try:
        base = CONFIGS[config](**({"board": board} if board else {}))
    except (UnknownBoardError, ValueError) as error:
        raise GridError(f"--config {config}" + (f" --board {board}" if board else "") + f": {error}") from None
    points = grid_points(config, board, parse_grid(specs, base))
    path = DEFAULT_WORKLOADS.get(config) if workload == "default" else workload
    if path is None or str(path).lower() == "none":
        return points, None, {}
    try:
        loaded = Workload.load(path)
    except PlanError as error:
        raise GridError(f"--workload: {error}") from None
    cycles = {}
    for point in points:
        try:
            cycles[point.key] = loaded.cycles(point.config)
        except PlanError as error:
            where = f"point {point.label}" if point.values else "the config"
            raise GridError(f"{where}: {error}") from None
    return points, loaded, cycles


def estimates(points: Sequence[Point]) -> dict[str, dict[str, Any]]:
    """Each point's resource estimate (`hw.estimate`) by key: logic cells, whether it fits, what is over."""
    out = {}
    for point in points:
        e = estimate(point.config)
        out[point.key] = {"logic": e.total("logic"), "fits": e.fits, "over": e.over()}
    return out


def entry(point: Point, result: dict[str, Any] | None, cycles: dict[str, Any] | None,
          estimated: dict[str, Any]) -> dict[str, Any]:
    """One point in results.json: its values, where it built, its status and figures, its cycles and estimate."""
    result = result or {"status": "unfinished", "report": None, "error": None, "seconds": None}
    report = result.get("report") or {}
    return {"index": point.index, "key": point.key, "label": point.label, "values": point.values,
            "build": point.build, "dir": f"points/{point.key}", "status": result["status"],
            "error": _reason(result.get("error")),
            **figures(result, cycles), "timing_met": report.get("timing_met"),
            "cycles_per_image": None if cycles is None else cycles["cycles_per_image"],
            "layer_cycles": None if cycles is None else cycles["layers"],
            "resources": {name: use["used"] for name, use in report.get("resources", {}).items()},
            "build_seconds": result.get("seconds"), "estimate": estimated}


def sweep(config: str, board: str | None, specs: Sequence[str], out: Path, *, workload: str | Path | None = "default",
          workers: int = 1, address: str | None = None, retry_failed: bool = False, command: str = "",
          say: Callable[[str], None] = print, prepared: tuple | None = None) -> dict[str, Any]:
    """Run the sweep (`prepare`, unless `prepared` is its result, then `run_points`) and write `results.json` and
    `pareto.png` into `out`; returns the results document. GridError before anything builds when the grid or the
    workload is not valid."""
    points, loaded, cycles = prepared or prepare(config, board, specs, workload)
    out = Path(out)
    estimated = estimates(points)
    for point in points:
        for line in estimated[point.key]["over"]:
            say(f"[{point.index + 1}/{len(points)} {point.label}] estimate: {line} (building it anyway)")
    board_name = points[0].config.board
    logic = logic_resource(board_name)
    goal = objective(loaded is not None)

    def done(point: Point, result: dict[str, Any], cached: bool) -> None:
        e = entry(point, result, cycles.get(point.key), estimated[point.key])
        what = "cached" if cached else f"{result['status']} in {result['seconds']:g} s"
        if e["fmax_mhz"] is None:
            figures_text = (e["error"] or "no report")
        else:
            figures_text = f"{e['luts']} {logic}, Fmax {e['fmax_mhz']:.2f} MHz"
            if e["images_per_s_at_fmax"] is not None:
                figures_text += f", {e['images_per_s_at_fmax']:.0f} images/s at Fmax"
        say(f"[{point.index + 1}/{len(points)} {point.label}] {what}: {figures_text}")

    say(f"sweep: {len(points)} points of {config} on {board_name} into {out}")
    results = run_points(points, out, workers=workers, address=address, retry_failed=retry_failed, say=say,
                         done=done)
    entries = [entry(p, results.get(p.key), cycles.get(p.key), estimated[p.key]) for p in points]
    front = front_keys(entries, goal)
    for e in entries:
        e["on_front"] = e["key"] in front
    document = {
        "command": command, "config": config, "board": board_name,
        "grid": {name: list(values) for name, values in _grid(points).items()},
        "workload": None if loaded is None else {
            "model": str(loaded.path.name), "what": next(iter(cycles.values()))["what"]},
        "objective": goal, "logic_resource": logic,
        "points": entries, "pareto_front": [e["label"] for e in entries if e["on_front"]],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS_FILE).write_text(json.dumps(document, indent=2, default=str) + "\n")
    title = f"hw.sweep: {config} on {board_name}" + (f", {loaded.path.name}" if loaded else "")
    plot(entries, front, goal, logic, title, out / PLOT_FILE)
    say(table(entries, front, logic))
    say(f"results: {out / RESULTS_FILE}\nplot: {out / PLOT_FILE}")
    return document


def _reason(error: str | None) -> str | None:
    """A build error in one line: its first, and the tool's first ERROR line from the log tail it quotes (why
    nextpnr gave up, e.g. a design larger than the device)."""
    if not error:
        return None
    lines = error.splitlines()
    tool = next((line.strip() for line in lines[1:] if line.strip().startswith("ERROR:")), None)
    return lines[0] + (f" ({tool})" if tool else "")


def _grid(points: list[Point]) -> dict[str, list[Any]]:
    values: dict[str, list[Any]] = {}
    for point in points:
        for name, value in point.values.items():
            if value not in values.setdefault(name, []):
                values[name].append(value)
    return values


__all__ = ["GridError", "RESULTS_FILE", "PLOT_FILE", "prepare", "estimates", "entry", "sweep"]
