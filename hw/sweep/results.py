"""A sweep's results: each point's build outcome kept in its directory (what makes a sweep resumable), the figures
of merit, the Pareto front, the table and the plot.

A point's directory is `OUT/points/<key>/`, the key a hash of its whole config and build options
(`hw.sweep.grid.point_key`): the build's products and `point.json`, written once the build has ended (built,
timing missed, or failed), so a point without it is not finished and a rerun builds it again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from boards import get_board

from ..estimate import UNITS

#: point.json's statuses: built (timing met), timing (built, a clock misses its constraint), failed (no bitstream).
STATUSES = ("built", "timing", "failed")
POINT_FILE = "point.json"


def point_dir(out: Path, key: str) -> Path:
    """Where the point with this key builds and keeps its result."""
    return out / "points" / key


def read_point(out: Path, key: str) -> dict[str, Any] | None:
    """The finished point's result (point.json), None when it has not finished (or its file is unreadable)."""
    path = point_dir(out, key) / POINT_FILE
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) and result.get("key") == key and result.get("status") in STATUSES \
        else None


def write_point(out: Path, result: dict[str, Any]) -> Path:
    """Keep a finished point's result in its directory (written whole, then renamed: never half a file)."""
    directory = point_dir(out, result["key"])
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / POINT_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def logic_resource(board: str) -> str:
    """The report's name of the board's logic (LUT) cells: ICESTORM_LC on iCE40, TRELLIS_COMB on ECP5."""
    return UNITS[get_board(board).family]["logic"]


def figures(result: dict[str, Any], cycles: dict[str, Any] | None) -> dict[str, Any]:
    """A finished point's figures of merit from its report: logic cells used, Fmax (the slowest clock's), the clock
    it runs at, and with a workload's `cycles` the images per second at Fmax and at that clock (timing met only)."""
    report = result.get("report")
    if not report:
        return {"luts": None, "fmax_mhz": None, "clock_mhz": None, "images_per_s_at_fmax": None,
                "images_per_s_at_clock": None}
    luts = report["resources"].get(logic_resource(report["board"]), {}).get("used")
    fmax = min(report["fmax_mhz"].values()) if report["fmax_mhz"] else None
    clock = report["target_mhz"]
    out = {"luts": luts, "fmax_mhz": fmax, "clock_mhz": clock, "images_per_s_at_fmax": None,
           "images_per_s_at_clock": None}
    if cycles is not None and fmax is not None:
        per_image = cycles["cycles_per_image"]
        out["images_per_s_at_fmax"] = round(fmax * 1e6 / per_image, 1)
        if report["timing_met"]:
            out["images_per_s_at_clock"] = round(clock * 1e6 / per_image, 1)
    return out


def pareto_front(cost: Sequence[float], value: Sequence[float]) -> np.ndarray:
    """Boolean mask of the points no other point dominates: none has cost <= and value >= with one of them strict
    (less cost is better, more value is better; equal points are all on the front)."""
    c = np.asarray(cost, dtype=float)[:, None]
    v = np.asarray(value, dtype=float)[:, None]
    # dominated[i, j]: point j dominates point i.
    dominated = (c.T <= c) & (v.T >= v) & ((c.T < c) | (v.T > v))
    return ~dominated.any(axis=1)


def objective(has_workload: bool) -> dict[str, str]:
    """What the front trades: images per second at Fmax against logic cells, or without a workload Fmax."""
    return {"maximise": "images_per_s_at_fmax" if has_workload else "fmax_mhz", "minimise": "luts"}


def front_keys(points: Sequence[dict[str, Any]], goal: dict[str, str]) -> list[str]:
    """Keys of the points on the Pareto front of `goal` among those with both figures (failed builds have none)."""
    ranked = [p for p in points if p.get(goal["minimise"]) is not None and p.get(goal["maximise"]) is not None]
    if not ranked:
        return []
    mask = pareto_front([p[goal["minimise"]] for p in ranked], [p[goal["maximise"]] for p in ranked])
    return [p["key"] for p, on in zip(ranked, mask) if on]


def table(points: Sequence[dict[str, Any]], front: Sequence[str], logic: str) -> str:
    """The points as a text table: values, status, logic, Fmax, cycles per image, images/s, '*' on the front."""
    rows = [("point", "status", logic, "Fmax MHz", "cycles/img", "img/s@Fmax", "img/s@clk", "front")]
    def num(p: dict[str, Any], name: str, fmt: str = "{:g}") -> str:
        return "-" if p.get(name) is None else fmt.format(p[name])

    for p in points:
        rows.append((p["label"], p["status"], num(p, "luts"), num(p, "fmax_mhz", "{:.2f}"),
                     num(p, "cycles_per_image"), num(p, "images_per_s_at_fmax", "{:.0f}"),
                     num(p, "images_per_s_at_clock", "{:.0f}"), "*" if p["key"] in front else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(row, widths))).rstrip() for row in rows)


def plot(points: Sequence[dict[str, Any]], front: Sequence[str], goal: dict[str, str], logic: str, title: str,
         path: Path) -> Path:
    """The Pareto plot (PNG): every point with both figures, labelled with its grid values; the front highlighted
    and joined as a staircase; a point that missed timing drawn hollow; how many did not build, noted."""
    import matplotlib
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    shown = [p for p in points if p.get(goal["minimise"]) is not None and p.get(goal["maximise"]) is not None]
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for on_front, colour in ((False, "0.55"), (True, "tab:red")):
        for met in (True, False):
            group = [p for p in shown if (p["key"] in front) == on_front and (p["status"] == "built") == met]
            if group:
                ax.scatter([p[goal["minimise"]] for p in group], [p[goal["maximise"]] for p in group], s=40,
                           facecolors=colour if met else "none", edgecolors=colour, zorder=3,
                           label=("Pareto front" if on_front else "dominated") + ("" if met else ", timing missed"))
    ordered = sorted((p for p in shown if p["key"] in front), key=lambda p: p[goal["minimise"]])
    if len(ordered) > 1:
        ax.step([p[goal["minimise"]] for p in ordered], [p[goal["maximise"]] for p in ordered], where="post",
                color="tab:red", linewidth=1, zorder=2)
    for p in shown:
        ax.annotate(p["label"], (p[goal["minimise"]], p[goal["maximise"]]), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    ax.margins(x=0.25, y=0.1)  # room for the labels, which start right of their points
    missing = len(points) - len(shown)
    if missing:
        ax.text(0.01, 0.01, f"not shown: {missing} point(s) without a build (results.json says why)",
                transform=ax.transAxes, fontsize=7, color="0.35")
    ax.set_xlabel(f"{logic} used (logic cells)")
    ax.set_ylabel("images/s at Fmax" if goal["maximise"] == "images_per_s_at_fmax" else "Fmax (MHz)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, linewidth=0.3)
    if shown:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


__all__ = ["STATUSES", "point_dir", "read_point", "write_point", "logic_resource", "figures", "pareto_front",
           "objective", "front_keys", "table", "plot"]
