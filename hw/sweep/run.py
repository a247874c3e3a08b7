"""Running a sweep's points on Ray: a local Ray with N workers by default, a cluster when given its address.

Each unfinished point is one Ray task (`build_point`, one CPU: yosys and nextpnr from YoWASP run one thread) that
builds it with `hw.build.build`. On the local Ray it builds straight into the point's directory; on a cluster it
builds in a temporary directory of whatever node runs it and sends the products back, and the driver writes them
into the point's directory. The driver keeps each point's result (`point.json`) as soon as it ends, so a sweep
stopped half way resumes where it was; a task lost to a crashed worker is reported and left unfinished.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..build import BITSTREAM, NEXTPNR_REPORT, TimingError, build
from ..config import AcceleratorConfig
from ..toolchain import BuildError
from .grid import Point
from .results import point_dir, read_point, write_point

#: What `pip install` adds for `hw.sweep` (pyproject.toml's `sweep` extra).
INSTALL_HINT = "pip install -e '.[sweep]' (Ray and matplotlib)"
#: The products a remote build sends back: bitstream, reports, the tools' logs.
PRODUCTS = (*BITSTREAM.values(), "report.json", "manifest.json", NEXTPNR_REPORT)
#: Kept out of what a cluster's nodes get of the working tree.
SHIP_EXCLUDES = ["build", "**/__pycache__", "*.pt", "*.onnx"]  # .git and .venv: Ray leaves them out itself


class RayStartError(RuntimeError):
    """Ray did not start, or the cluster could not be reached: one line saying which and why."""


def build_point(config: AcceleratorConfig, options: dict[str, Any], out_dir: str | None, label: str
                ) -> dict[str, Any]:
    """Build one point (a Ray task): into `out_dir`, or with None into a temporary directory whose products come
    back in `files`. Returns status ("built", "timing" or "failed"), report, error, seconds, host, files."""
    def say(message: str) -> None:
        print(f"[{label}] {message.strip()}", flush=True)

    start = time.monotonic()
    directory = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="sqgen-sweep-"))
    say(f"start on {socket.gethostname()}")
    status, report, error = "built", None, None
    try:
        opts = {k: v for k, v in options.items() if v is not None}  # lut_mapper None: hw.build's own choice
        report = build(config, directory, progress=say, **opts).report
    except TimingError as exc:
        status, report, error = "timing", exc.result.report, str(exc)
    except (BuildError, ValueError) as exc:
        status, error = "failed", str(exc)
    files = {}
    if out_dir is None:
        files = {name: (directory / name).read_bytes() for name in PRODUCTS if (directory / name).is_file()}
        files.update({p.name: p.read_bytes() for p in directory.glob("*.log")})
        shutil.rmtree(directory, ignore_errors=True)
    return {"status": status, "report": report, "error": error, "seconds": round(time.monotonic() - start, 1),
            "host": socket.gethostname(), "files": files}


def point_result(point: Point, outcome: dict[str, Any]) -> dict[str, Any]:
    """What point.json keeps of a point and its build's outcome."""
    return {"key": point.key, "label": point.label, "values": point.values, "build": point.build,
            "config": dataclasses.asdict(point.config), "status": outcome["status"], "error": outcome["error"],
            "report": outcome["report"], "seconds": outcome["seconds"], "host": outcome["host"]}


def import_ray() -> Any:
    """The ray module, imported with its log deduplication off (it folds lines that differ only in numbers, as
    two points' progress lines do); ImportError when it is not installed."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray
    return ray


def run_points(points: list[Point], out: Path, *, workers: int = 1, address: str | None = None,
               retry_failed: bool = False, say: Callable[[str], None] = print,
               done: Callable[[Point, dict[str, Any], bool], None] | None = None) -> dict[str, dict[str, Any]]:
    """Every point's result by key: finished ones read back ("cached"), the others built on Ray (`workers` local
    CPUs, or the cluster at `address`) and kept as each ends. `done(point, result, cached)` is told of each."""
    total = len(points)
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for point in points:
        cached = read_point(out, point.key)
        if cached is not None and not (retry_failed and cached["status"] == "failed"):
            results[point.key] = cached
            if done:
                done(point, cached, True)
        else:
            todo.append(point)
    if not todo:
        return results
    ray = import_ray()
    say(f"building {len(todo)} of {total} points on "
        + (f"the Ray cluster at {address}" if address else f"a local Ray with {workers} worker(s)"))
    import logging
    try:
        if address:
            root = Path(__file__).resolve().parents[2]
            ray.init(address=address, logging_level=logging.WARNING,
                     runtime_env={"working_dir": str(root), "excludes": SHIP_EXCLUDES})
        else:
            ray.init(num_cpus=workers, include_dashboard=False, logging_level=logging.WARNING,
                     object_store_memory=100 * 1024 * 1024)
    except Exception as error:  # Ray raises ConnectionError, RuntimeError or its own, depending on what failed
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        reason = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise RayStartError(f"could not start {where}: {reason}") from None
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(build_point)
        refs = {}
        for point in todo:
            directory = point_dir(out, point.key)
            directory.mkdir(parents=True, exist_ok=True)
            label = f"{point.index + 1}/{total} {point.label}"
            # Absolute: a local worker need not share the driver's working directory.
            refs[task.remote(point.config, point.build, None if address else str(directory.resolve()), label)] = point
        pending = list(refs)
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            point = refs[finished[0]]
            try:
                outcome = ray.get(finished[0])
            except ray.exceptions.RayError as error:  # the worker died: not a build result, so not kept
                say(f"[{point.index + 1}/{total} {point.label}] lost: {str(error).splitlines()[0]} (rerun to retry)")
                continue
            directory = point_dir(out, point.key)
            for name, data in outcome.pop("files").items():
                (directory / name).write_bytes(data)
            result = point_result(point, outcome)
            write_point(out, result)
            results[point.key] = result
            if done:
                done(point, result, False)
    finally:
        ray.shutdown()
    return results


__all__ = ["INSTALL_HINT", "RayStartError", "build_point", "point_result", "import_ray", "run_points"]
