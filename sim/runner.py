"""Amaranth component -> Verilog -> cocotb 2.x on Icarus, cached per parameter set.

`build(component, name)` converts the component to Verilog and compiles it once per distinct Verilog
text and compile flags (the cache key is their hash: any parameter change rebuilds, nothing else does). `run(...)`
runs a cocotb bench module against a build, passing bench parameters as JSON through the environment
(read back with `sim.tb.common.bench_params()`), and raises with the log's tail when a test fails.

Build products live under `$SQGEN_BUILD_DIR/sim` (default `build/sim` in the working directory).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amaranth.back import verilog

TIMESCALE = ("1ns", "1ps")
# Yosys's Verilog wakes every `always @*` block at time 0 through a reg declared with an initializer.
# Icarus turns such an initializer into a time-0 event only in Verilog-2005 mode; under -g2012 (the
# runner's default) combinational outputs that depend only on reset-valued state stay X forever.
ICARUS_ARGS = ["-g2005"]
PARAMS_ENV = "SQGEN_BENCH_PARAMS"


class SimulationFailed(AssertionError):
    """A cocotb bench reported failures (the message carries the end of its log)."""


def build_root() -> Path:
    return Path(os.environ.get("SQGEN_BUILD_DIR", "build")).resolve() / "sim"


@dataclass(frozen=True)
class SimBuild:
    """A compiled simulation: Icarus's `sim.vvp` for `toplevel` in `directory`."""

    toplevel: str
    directory: Path

    @property
    def verilog(self) -> Path:
        return self.directory / f"{self.toplevel}.v"


@contextlib.contextmanager
def _locked(directory: Path):
    # Parallel pytest workers may ask for the same build; one compiles, the others wait and reuse it.
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _runner():
    from cocotb_tools.runner import get_runner

    if shutil.which("iverilog") is None:
        raise RuntimeError("iverilog not found: install Icarus Verilog "
                           "(apt-get install iverilog, or brew install icarus-verilog)")
    return get_runner("icarus")


def build(component, name: str) -> SimBuild:
    """Convert `component` to Verilog with top module `name` and compile it, reusing a cached build."""
    text = verilog.convert(component, name=name, emit_src=False)
    flags = json.dumps([ICARUS_ARGS, TIMESCALE])
    key = hashlib.sha256((flags + text).encode()).hexdigest()[:16]
    result = SimBuild(toplevel=name, directory=build_root() / f"{name}-{key}")
    with _locked(result.directory):
        if not (result.directory / "sim.vvp").exists():
            result.verilog.write_text(text)
            _runner().build(
                sources=[result.verilog],
                hdl_toplevel=name,
                build_args=ICARUS_ARGS,
                build_dir=result.directory,
                timescale=TIMESCALE,
                log_file=result.directory / "build.log",
            )
    return result


@contextlib.contextmanager
def _outside_pytest():
    # Under pytest the cocotb runner calls sys.exit() on a failing bench; we read the results ourselves.
    saved = os.environ.pop("PYTEST_CURRENT_TEST", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved


def run(
    sim: SimBuild,
    module: str,
    params: dict[str, Any] | None = None,
    *,
    testcase: str | None = None,
    seed: int | None = None,
    log_file: Path | None = None,
    keep: bool = False,
) -> Path:
    """Run cocotb bench `module` (dotted name) on `sim`; raise SimulationFailed unless every test passed.

    Each run gets its own directory under the build (kept when it fails or `keep` is set) and returns it.
    """
    from cocotb_tools.runner import get_results

    run_dir = Path(tempfile.mkdtemp(prefix=f"run-{module.rsplit('.', 1)[-1]}-", dir=sim.directory))
    log = log_file or run_dir / "sim.log"
    results = run_dir / "results.xml"
    with _outside_pytest():
        try:
            _runner().test(
                test_module=module,
                hdl_toplevel=sim.toplevel,
                hdl_toplevel_lang="verilog",
                testcase=testcase,
                seed=seed,
                build_dir=sim.directory,
                test_dir=run_dir,
                results_xml=str(results),
                extra_env={PARAMS_ENV: json.dumps(params or {})},
                timescale=TIMESCALE,
                log_file=log,
            )
        except SystemExit:
            pass  # the results file (or its absence) tells what happened
    try:
        total, failed = get_results(results)
    except RuntimeError:
        total, failed = 0, 0
    if total == 0 or failed:
        tail = log.read_text(errors="replace").splitlines()[-60:] if log.exists() else ["(no log)"]
        raise SimulationFailed(
            f"{module}: {failed} of {total} cocotb tests failed (log: {log})\n" + "\n".join(tail)
        )
    if not keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return run_dir
