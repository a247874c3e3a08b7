"""`python -m hw.sweep`: the grid and its validation, the workload's cycles against the host's planner, the Pareto
front against brute force, resuming from kept results (builds faked, Ray faked), and one real sweep on Ray."""

from __future__ import annotations

import itertools
import json
import re
import sys

import numpy as np
import pytest
from test_build import check_real_build

from hw.build import DEFAULT_PLACER
from hw.config import AcceleratorConfig
from hw.fc_engine import FcEngineParams
from hw.spec.fc_format import FC16_FORMAT, FcFormat
from hw.spec.xor import xor_matrix
from hw.spectral.pipeline import SpectralConvParams
from hw.spectral.spectral_mac import canonical_bins
from hw.sweep import __main__ as cli
from hw.sweep import prepare, sweep
from hw.sweep import run as sweep_run
from hw.sweep.grid import GridError, grid_points, parameters, parse_grid
from hw.sweep.results import pareto_front, point_dir, read_point
from hw.sweep.workload import DEFAULT_WORKLOADS, Workload
from hw.toolchain import BuildError

# --- the grid ------------------------------------------------------------------------------------------------


def test_grid_values_are_parsed_by_the_fields_kind():
    base = AcceleratorConfig.fc_only()
    grid = parse_grid(["seed=1,2", "fc.x_lane_writes=true,false", "spram_regions=fc.xor+fc.bim",
                       "frame_timeout_ms=50,100.5", "router=router2"], base)
    assert grid == {"seed": [1, 2], "fc.x_lane_writes": [True, False], "spram_regions": [("fc.xor", "fc.bim")],
                    "frame_timeout_ms": [50.0, 100.5], "router": ["router2"]}
    names = parameters(base)
    assert {"seed", "router", "lut_mapper", "fc.n_out", "fc.tree_fanin", "act_depth"} <= set(names)
    assert not any(name.startswith("conv.") for name in names)  # fc_only has no conv engine
    assert "conv.p" in parameters(AcceleratorConfig.lenet5()) and "conv.spec.data_bits" in parameters(
        AcceleratorConfig.lenet5())


@pytest.mark.parametrize("spec, message", [
    ("seed=1,x", "--grid seed=x: seed takes integers"),
    ("fc.x_lane_writes=maybe", "--grid fc.x_lane_writes=maybe: fc.x_lane_writes takes true or false"),
    ("nope=1", "--grid nope=1: no parameter nope; this config's: seed, router, placer, lut_mapper"),
    ("conv.p=2", "--grid conv.p=2: this config has no conv engine, so no conv.p"),
    ("fc.m=1", "--grid fc.m=1: fc.m is not a grid parameter (it follows fc.n_out, fc.n_in and fc.seed)"),
    ("board=icebreaker", "--grid board=icebreaker: board is not a grid parameter (the board is --board)"),
    ("seed=1,2,1", "--grid seed: value 1 given twice"),
    ("seed", "--grid seed: expected NAME=V1,V2,..."),
])
def test_grid_refusals_name_the_parameter(spec, message):
    with pytest.raises(GridError) as info:
        parse_grid([spec], AcceleratorConfig.fc_only())
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_a_parameter_given_twice_is_refused():
    with pytest.raises(GridError, match=r"^--grid seed: given twice$"):
        parse_grid(["seed=1", "seed=2"], AcceleratorConfig.fc_only())


@pytest.mark.parametrize("config, spec, message", [
    ("fc_only", "fc.n_out=16,100", "--grid fc.n_out=100: n_out must be in 2..64, got 100"),
    ("fc_only", "fc.tree_fanin=1", "--grid fc.tree_fanin=1: tree_fanin must be >= 2, got 1"),
    ("fc_only", "fc.max_bits=9", "--grid fc.max_bits=9: max_bits must be in 1..8, got 9"),
    ("fc_only", "seed=-1", "--grid seed=-1: seed must be in 0..2147483647, got -1"),
    ("fc_only", "router=router3", "--grid router=router3: router must be one of router1, router2"),
    ("fc_only", "placer=sa", "--grid placer=sa: placer must be one of auto, heap, static"),
    ("fc_only", "lut_mapper=abc", "--grid lut_mapper=abc: lut_mapper 'abc' is available for ecp5, not ice40"),
    ("fc_only", "clock_hz=24000000", "--grid clock_hz=24000000: clock_hz must be the icebreaker's oscillator"),
    ("lenet5", "conv.p=0", "--grid conv.p=0: p must be"),
    ("link", "baud=100", "--grid baud=100: baud must be in 1200.."),
])
def test_every_point_is_validated_by_its_config(config, spec, message):
    base = {"fc_only": AcceleratorConfig.fc_only, "lenet5": AcceleratorConfig.lenet5, "link": AcceleratorConfig}
    with pytest.raises(GridError) as info:
        grid_points(config, None, parse_grid([spec], base[config]()))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_points_are_the_cross_product_with_their_configs():
    base = AcceleratorConfig.fc_only()
    points = grid_points("fc_only", None, parse_grid(["seed=1,2", "fc.tree_fanin=2,4,8"], base))
    assert [p.values for p in points] == [{"seed": s, "fc.tree_fanin": t} for s, t in
                                          itertools.product([1, 2], [2, 4, 8])]
    assert [(p.build["seed"], p.config.fc.tree_fanin) for p in points] == list(itertools.product([1, 2], [2, 4, 8]))
    assert all(p.config.fc.x_lane_writes and p.config.spram_regions == base.spram_regions for p in points)
    assert len({p.key for p in points}) == 6  # the key tells every point apart
    again = grid_points("fc_only", None, parse_grid(["fc.tree_fanin=8,4,2", "seed=2,1"], base))
    assert {p.key for p in again} == {p.key for p in points}  # ... and depends on the point only


def test_two_values_of_one_build_are_refused():
    """conv.max_groups none is the default, max_c_in times the canonical bins: the same build as that number."""
    base = AcceleratorConfig.lenet5()
    default = base.conv.max_c_in * len(canonical_bins(base.conv.n))
    with pytest.raises(GridError, match=rf"^points conv.max_groups=none and conv.max_groups={default} are the same "
                                        r"build \(the same config and build options\): drop one of the values$"):
        grid_points("lenet5", None, parse_grid([f"conv.max_groups=none,{default}"], base))


def test_format_fields_rebuild_the_fc_engine():
    """fc.n_out makes a new FcFormat, so the XOR matrix the engine hard-wires is the new format's."""
    (point,) = grid_points("fc_only", None, parse_grid(["fc.n_out=32"], AcceleratorConfig.fc_only()))
    fc = point.config.fc
    assert fc.fc_format == FcFormat(**{**FC16_FORMAT.__dict__, "n_out": 32})
    assert fc == FcEngineParams.from_matrix(xor_matrix(32, FC16_FORMAT.n_in, FC16_FORMAT.seed),
                                            FC16_FORMAT.max_patches, r=2, m_t=32, max_rows=120, max_cols=400,
                                            max_bits=1, a_bits=16, seed=0, x_lane_writes=True)


def test_conv_max_groups_follows_max_c_in():
    (point,) = grid_points("lenet5", None, parse_grid(["conv.max_c_in=3"], AcceleratorConfig.lenet5()))
    conv = AcceleratorConfig.lenet5().conv
    fresh = SpectralConvParams(n=conv.n, k=conv.k, l=conv.l, padding=conv.padding, relu=conv.relu, p=conv.p,
                               b=conv.b, max_c_in=3, max_c_out=conv.max_c_out, max_height=conv.max_height,
                               max_width=conv.max_width, outs=conv.outs, post=True)
    assert point.config.conv == fresh and point.config.conv.max_groups < conv.max_groups


# --- the workload --------------------------------------------------------------------------------------------


def test_lenet5_cycles_are_the_host_planners():
    """The sweep reads the committed LeNet-5 itself (hw may not import the host); its cycles per layer must be what
    host.accel plans for the same file on the same device."""
    from host.accel import pack_model
    from host.lenet5.compressed import load_model

    config = AcceleratorConfig.lenet5()
    cycles = Workload.load(DEFAULT_WORKLOADS["lenet5"]).cycles(config)
    packed = pack_model(config.describe(), load_model(DEFAULT_WORKLOADS["lenet5"]))
    assert cycles["layers"] == {layer.name: layer.cycles for layer in packed.layers}
    assert cycles["cycles_per_image"] == packed.expected_cycles and cycles["left_out"] == []


def test_fc_only_cycles_are_the_fc_layers_on_the_host_planner():
    from host.accel import AccelInfo, pack_program
    from host.lenet5.compressed import load_model

    config = AcceleratorConfig.fc_only()
    cycles = Workload.load(DEFAULT_WORKLOADS["fc_only"]).cycles(config)
    model = load_model(DEFAULT_WORKLOADS["fc_only"], expected=FC16_FORMAT)
    packed = pack_program(AccelInfo.from_info(config.describe()), [(fc.name, fc, False) for fc in model.fc], (400,))
    assert cycles["layers"] == {layer.name: layer.cycles for layer in packed.layers}
    assert cycles["left_out"] == ["pool1", "pool2"] and "left out: pool1, pool2" in cycles["what"]


@pytest.mark.parametrize("spec, message", [
    ("fc.n_out=32", "point fc.n_out=32: the workload is compressed for another FC format (engine != workload: "
                    "n_out: 32 != 16)"),
    ("fc_xor_depth=1000", "point fc_xor_depth=1000: fc_xor_depth must be at least "),
])
def test_a_point_the_workload_does_not_run_on_is_refused(spec, message):
    with pytest.raises(GridError) as info:
        prepare("fc_only", None, [spec])
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    points, workload, cycles = prepare("fc_only", None, [spec], workload="none")  # without a workload it builds
    assert workload is None and cycles == {} and len(points) == 1


def test_a_conv_schedule_the_workload_lacks_is_refused():
    with pytest.raises(GridError, match=r"^point conv.p=2: layer conv1: layer schedule \(p, b\) must be \(2, 8\)"):
        prepare("lenet5", None, ["conv.p=2,4"])


# --- the Pareto front ----------------------------------------------------------------------------------------


def brute_front(cost, value):
    """The oracle: a point is on the front unless another is no worse in both and better in one."""
    n = len(cost)
    return [not any(cost[j] <= cost[i] and value[j] >= value[i] and (cost[j] < cost[i] or value[j] > value[i])
                    for j in range(n)) for i in range(n)]


@pytest.mark.parametrize("seed", range(20))
def test_pareto_front_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    cost, value = rng.integers(0, 12, n).tolist(), rng.integers(0, 12, n).tolist()  # small ranges: ties
    assert pareto_front(cost, value).tolist() == brute_front(cost, value)


def test_pareto_front_small_cases():
    assert pareto_front([1, 1], [5, 5]).tolist() == [True, True]  # equal points: neither dominates
    assert pareto_front([1, 2, 3], [1, 2, 3]).tolist() == [True, True, True]
    assert pareto_front([1, 2, 3], [3, 2, 1]).tolist() == [True, False, False]


# --- resuming, with the builds and Ray faked -----------------------------------------------------------------


class FakeRay:
    """Enough of Ray's API for `run_points`: tasks run at once, in the caller's process."""

    class exceptions:
        RayError = RuntimeError

    class Ref:
        def __init__(self, value):
            self.value = value

    def __init__(self):
        self.inits = []

    def init(self, **kwargs):
        self.inits.append(kwargs)

    def remote(self, **options):
        ray = self

        def wrap(fn):
            class Task:
                @staticmethod
                def remote(*args):
                    return ray.Ref(fn(*args))
            return Task
        return wrap

    def wait(self, pending, num_returns=1):
        return pending[:num_returns], pending[num_returns:]

    def get(self, ref):
        return ref.value

    def shutdown(self):
        pass


class FakeBuild:
    """hw.build.build's stand-in: a report whose logic cells and Fmax depend on the point; `fail` seeds fail."""

    def __init__(self, fail=()):
        self.calls, self.fail = [], set(fail)

    def __call__(self, config, directory, *, progress, seed=1, router="router1", placer=DEFAULT_PLACER,
                 lut_mapper=None):
        self.calls.append((seed, config.fc.tree_fanin))
        if seed in self.fail:
            raise BuildError("place & route failed: nextpnr-ice40 exited with 1\n    ERROR: it does not fit")
        luts = 4000 + 100 * config.fc.tree_fanin + 7 * seed
        fmax = 18.0 + 2.0 * (8 // config.fc.tree_fanin) + 0.1 * seed
        report = {"board": config.board, "resources": {"ICESTORM_LC": {"used": luts, "available": 5280}},
                  "fmax_mhz": {"cd_sync.clk": fmax}, "constraint_mhz": {"cd_sync.clk": 12.0}, "target_mhz": 12.0,
                  "timing_met": True}
        (directory / "report.json").write_text(json.dumps(report))

        class Result:
            pass
        result = Result()
        result.report = report
        return result


@pytest.fixture
def fakes(monkeypatch):
    ray, fake_build = FakeRay(), FakeBuild()
    monkeypatch.setattr(sweep_run, "import_ray", lambda: ray)
    monkeypatch.setattr(sweep_run, "build", fake_build)
    return ray, fake_build


GRID = ["seed=1,2", "fc.tree_fanin=2,4"]


def test_sweep_writes_results_and_front_and_resumes(tmp_path, fakes, capsys):
    ray, fake_build = fakes
    doc = sweep("fc_only", None, GRID, tmp_path)
    assert len(fake_build.calls) == 4 and ray.inits == [{"num_cpus": 1, "include_dashboard": False,
                                                         "logging_level": 30, "object_store_memory": 100 << 20}]
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(doc)) and (tmp_path / "pareto.png").stat().st_size > 10_000
    points = on_disk["points"]
    assert all(p["status"] == "built" and p["cycles_per_image"] for p in points)
    for p in points:  # images/s at Fmax: the workload's cycles at the reported Fmax
        assert p["images_per_s_at_fmax"] == pytest.approx(p["fmax_mhz"] * 1e6 / p["cycles_per_image"], abs=0.1)
        assert p["images_per_s_at_clock"] == pytest.approx(12e6 / p["cycles_per_image"], abs=0.1)
    expect = brute_front([p["luts"] for p in points], [p["images_per_s_at_fmax"] for p in points])
    assert [p["on_front"] for p in points] == expect and any(expect) and not all(expect)
    assert on_disk["pareto_front"] == [p["label"] for p, on in zip(points, expect) if on]
    assert on_disk["workload"]["model"] == "lenet5_fc16.npz" and "left out: pool1, pool2" in on_disk["workload"]["what"]

    capsys.readouterr()
    ray.inits.clear()
    sweep("fc_only", None, GRID, tmp_path)
    out = capsys.readouterr().out
    assert out.count("cached") == 4 and len(fake_build.calls) == 4 and ray.inits == []  # nothing built, no Ray

    # An unfinished point (no point.json, or half of one) is built again; the others stay cached.
    first, second = (grid_points("fc_only", None, parse_grid(GRID, AcceleratorConfig.fc_only()))[i] for i in (0, 3))
    (point_dir(tmp_path, first.key) / "point.json").unlink()
    (point_dir(tmp_path, second.key) / "point.json").write_text('{"key": "')
    sweep("fc_only", None, GRID, tmp_path)
    assert sorted(fake_build.calls[4:]) == [(1, 2), (2, 4)] and capsys.readouterr().out.count("cached") == 2


def test_failed_points_are_kept_and_retried_on_request(tmp_path, fakes, capsys):
    ray, fake_build = fakes
    fake_build.fail = {2}
    doc = sweep("fc_only", None, ["seed=1,2"], tmp_path)
    failed = [p for p in doc["points"] if p["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"] == ("place & route failed: nextpnr-ice40 exited with 1 "
                                                       "(ERROR: it does not fit)")
    assert failed[0]["luts"] is None and not failed[0]["on_front"]
    stored = read_point(tmp_path, failed[0]["key"])
    assert "ERROR: it does not fit" in stored["error"]  # the whole message is kept
    sweep("fc_only", None, ["seed=1,2"], tmp_path)
    assert len(fake_build.calls) == 2  # a failure is a result too
    fake_build.fail = set()
    doc = sweep("fc_only", None, ["seed=1,2"], tmp_path, retry_failed=True)
    assert len(fake_build.calls) == 3 and all(p["status"] == "built" for p in doc["points"])


def test_a_remote_build_sends_its_products_back(tmp_path, fakes):
    ray, fake_build = fakes
    doc = sweep("fc_only", None, ["seed=1"], tmp_path, address="ray://cluster:10001")
    assert ray.inits[0]["address"] == "ray://cluster:10001" and "working_dir" in ray.inits[0]["runtime_env"]
    (point,) = doc["points"]
    report = json.loads((tmp_path / point["dir"] / "report.json").read_text())  # built elsewhere, written here
    assert report["resources"]["ICESTORM_LC"]["used"] == point["luts"]


# --- the command line ----------------------------------------------------------------------------------------


def test_cli_refuses_a_bad_grid_before_building(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep_run, "build", lambda *a, **k: pytest.fail("nothing may build"))
    assert cli.main(["--config", "fc_only", "--grid", "fc.n_out=16,100", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "error: --grid fc.n_out=100: n_out must be in 2..64, got 100\n"
    assert not (tmp_path / "points").exists()


def test_cli_without_ray_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra has
    assert cli.main(["--config", "link", "--grid", "seed=1,2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "error: hw.sweep needs ray, not installed: pip install -e '.[sweep]' (Ray and matplotlib)\n"


def test_cli_says_in_one_line_when_ray_cannot_start(tmp_path, fakes, capsys):
    ray, fake_build = fakes

    def refuse(**kwargs):
        raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.9:6379\n  (a traceback)")
    ray.init = refuse
    assert cli.main(["--config", "link", "--address", "10.0.0.9:6379", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err == ("error: could not start the Ray cluster at 10.0.0.9:6379: Failed to connect "
                                       "to Ray cluster at 10.0.0.9:6379\n")
    assert fake_build.calls == []


def test_cli_dry_run_lists_points(tmp_path, capsys):
    assert cli.main(["--config", "fc_only", "--grid", "seed=1,2", "--dry-run", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(re.search(r" to build +cycles/image \d+ .*: estimate \d+ logic cells$", line)
                                   for line in lines)
    assert [line.split()[-5] for line in lines] == ["seed=1:", "seed=2:"]


# --- one real sweep ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.cost(seconds=60)
def test_real_sweep_on_ray_then_cached(tmp_path, capsys):
    """Two seeds of the link on the iCEBreaker (its cheapest build) through a local Ray with one worker, each a
    real build (`check_real_build`: the suite's iCE40 build of the link config); the rerun builds nothing."""
    pytest.importorskip("ray")
    argv = ["--config", "link", "--board", "icebreaker", "--grid", "seed=1,2", "--workers", "1",
            "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert [p["values"] for p in doc["points"]] == [{"seed": 1}, {"seed": 2}]
    for p in doc["points"]:
        report = json.loads((tmp_path / p["dir"] / "report.json").read_text())
        assert p["status"] == "built" and report["seed"] == p["values"]["seed"] and report["timing_met"]
        assert p["luts"] == report["resources"]["ICESTORM_LC"]["used"] > 0
        assert p["fmax_mhz"] == min(report["fmax_mhz"].values()) >= 12.0
        check_real_build(tmp_path / p["dir"], AcceleratorConfig(board="icebreaker"))
    assert doc["workload"] is None and doc["objective"]["maximise"] == "fmax_mhz" and doc["pareto_front"]
    assert (tmp_path / "pareto.png").stat().st_size > 10_000
    capsys.readouterr()
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("cached") == 2 and "building" not in out
