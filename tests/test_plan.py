"""An accelerator derived from a compressed network (hw.plan) and its resource estimate (hw.estimate): the committed
LeNet-5 against the named `lenet5` config, an FC-only digits MLP (64 -> 32 -> 10) on the iCEBreaker, networks refused
with the limit named, the estimate against the measured builds (README's, in docs/figures/build-*.json, and the
calibration builds below) within `hw.estimate.TOLERANCE`, the memory mapping against yosys's choices, and the
`--model` / `--plan` command lines. The derived digits MLP accelerator runs on the virtual board, bit-exact with the
golden backend (`tests/test_build.py` builds it with `--model`, and places and routes the FC-only one on the
iCEBreaker)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from host.accel import pack_network
from host.compress.network import compress_network
from host.device import Device
from host.infer import DeviceBackend, Session, compare_traces, load_model, open_backend
from host.lenet5.compressed import load_model as load_lenet5
from host.lenet5.compressed import to_network
from host.network import Conv2d, Flatten, FloatNetwork, Linear, MaxPool2d, ReLU
from hw import build as hwbuild
from hw.config import AcceleratorConfig
from hw.estimate import TOLERANCE, UNITS, Memory, estimate, map_memory
from hw.fc_engine import FcEngineParams
from hw.plan import PlanError, plan, program_steps
from hw.spec.fc_format import DEFAULT_FC_FORMAT, FC16_FORMAT
from hw.spec.network import CompressedNetwork, FlattenLayer, PoolLayer, save_model
from sim import server
from sim.bench import readme
from sim.server import start

ROOT = Path(__file__).resolve().parents[1]


def _mlp(sizes: tuple[int, ...], fmt, seed: int = 0) -> CompressedNetwork:
    """A random float MLP of these layer sizes (ReLU between), compressed for `fmt` at FC sparsity 0.25."""
    rng = np.random.default_rng(seed)
    layers = []
    for i, (cols, rows) in enumerate(zip(sizes, sizes[1:]), start=1):
        layers.append(Linear(f"fc{i}", rng.normal(0, cols ** -0.5, (rows, cols)).astype(np.float32),
                             np.zeros(rows, dtype=np.float32)))
        if i < len(sizes) - 1:
            layers.append(ReLU(f"relu{i}"))
    samples = rng.random((100, sizes[0])).astype(np.float32)
    return compress_network(FloatNetwork((sizes[0],), layers), samples, fmt=fmt, fc_sparsity=0.25).model


@pytest.fixture(scope="module")
def digits() -> CompressedNetwork:
    """The digits MLP (8 x 8 images, 64 -> 32 -> 10) compressed for the FC-only iCEBreaker format."""
    return _mlp((64, 32, 10), FC16_FORMAT)


@pytest.fixture(scope="module")
def lenet5() -> CompressedNetwork:
    return to_network(load_lenet5(ROOT / "models" / "lenet5_full.npz"))


def _within(resource: str, estimated: int, measured: int) -> bool:
    relative, absolute = TOLERANCE[resource]
    return abs(estimated - measured) <= max(relative * measured, absolute)


def _check_holds(derived, model: CompressedNetwork) -> None:
    """The host packs `model` for the derived device, and the regions hold exactly the words the plan counted."""
    packed = pack_network(derived.config.describe(), model)
    assert {name: len(words) for name, words in packed.regions.items()} == derived.words
    for name, words in derived.words.items():
        assert words <= derived.config.region(name).depth


# --- derived configs -------------------------------------------------------------------------------------------


def test_lenet5_derived_is_the_named_config_but_for_depths(lenet5):
    """The committed LeNet-5 on the ULX3S: the same conv and FC engines as `AcceleratorConfig.lenet5()`, the conv
    regions as deep (265 kernel groups and 22 quant beats plus 25 %, rounded up to their RAMs: 512 and 32). What
    differs, and why: the activation buffers hold the largest map a descriptor reads or writes (conv1's pooled
    6 x 14 x 14 = 1 176 codes, rounded up to the 2 048 of its DP16KD; the named config keeps conv1's unpooled
    4 704); the program its 5 descriptors (rounded up to 8, within their address bits; the named config 16); the FC
    regions the model's words plus 25 % rounded up to their block RAMs (fc.xor 1 200 and fc.bim 1 158 words ->
    1 536, three 512-word PDPW16KD rows; fc.scale 214 -> 512, one row) where the named config has 2 560, 2 560 and
    256."""
    derived = plan(lenet5, "ulx3s-85f")
    named = AcceleratorConfig.lenet5()
    config = derived.config
    assert config.conv == named.conv and config.fc == named.fc
    fields = ("act_depth", "program_depth", "conv_w_depth", "conv_quant_depth", "fc_xor_depth", "fc_bim_depth",
              "fc_scale_depth", "spram_regions", "board", "baud", "max_payload")
    differ = {name: (getattr(config, name), getattr(named, name)) for name in fields
              if getattr(config, name) != getattr(named, name)}
    assert differ == {"act_depth": (2048, 4704), "program_depth": (8, 16), "fc_xor_depth": (1536, 2560),
                      "fc_bim_depth": (1536, 2560), "fc_scale_depth": (512, 256)}
    assert derived.words == {"program": 5, "conv.w": 265, "conv.quant": 22, "fc.xor": 1200, "fc.bim": 1158,
                             "fc.scale": 214}
    assert [step.name for step in derived.steps] == ["pool1", "pool2", "fc1", "fc2", "fc3"]
    assert derived.estimate.fits and derived.headroom == 0.25
    _check_holds(derived, lenet5)
    # Without a board: the smallest it fits, which is not the iCEBreaker (the conv engine alone is over it).
    assert plan(lenet5).config.board == "ulx3s-85f"


def test_digits_mlp_fits_the_icebreaker(digits):
    """64 -> 32 -> 10 compressed for FC16_FORMAT: the iCEBreaker, the smallest board, takes it. The engine is the
    model's (n_out 16, one plane) for 32 rows; its 64 columns would leave x in 4 words of 128 bits that yosys makes
    flip-flops (about 900 LCs: over the UP5K), so max_cols grows to 80 and x takes block RAM. SPRAM holds the
    regions that save the most EBR."""
    derived = plan(digits)
    config = derived.config
    assert config.board == "icebreaker" and config.conv is None
    assert config.fc.fc_format == FC16_FORMAT and config.fc.x_lane_writes
    assert (config.fc.max_rows, config.fc.max_cols) == (32, 80)
    assert any("max_cols 64 -> 80" in note for note in derived.notes)
    assert config.spram_regions and "program" not in config.spram_regions
    assert derived.estimate.fits
    total = derived.estimate.describe()["total"]
    assert total["ICESTORM_SPRAM"] <= 4 and total["ICESTORM_RAM"] <= 30 and total["ICESTORM_LC"] <= 5280
    _check_holds(derived, digits)
    # Sized to the model's 64 columns the same config is over the UP5K's LCs.
    exact = AcceleratorConfig(**{**{f: getattr(config, f) for f in ("board", "act_depth", "program_depth",
                                                                    "fc_xor_depth", "fc_bim_depth", "fc_scale_depth",
                                                                    "spram_regions")},
                                 "fc": FcEngineParams.from_format(FC16_FORMAT, 32, 64, x_lane_writes=True)})
    assert not estimate(exact).fits


def test_plan_describe_and_format(digits):
    derived = plan(digits, "icebreaker")
    doc = json.loads(json.dumps(derived.describe()))
    assert doc["board"] == "icebreaker" and doc["conv"] is None and doc["fc"]["n_out"] == 16
    assert doc["regions"]["fc.xor"]["used"] == derived.words["fc.xor"]
    assert doc["estimate"]["fits"] is True
    text = derived.format()
    assert "board: icebreaker" in text and "fc engine: n_in=3 n_out=16" in text
    assert re.search(r"^  total +\d+ +\d+ +\d+ +\d+$", text, re.M)


def _cnn(relu2: bool = True) -> CompressedNetwork:
    """1 x 8 x 8 -> conv 3 x 3 (2 channels, ReLU) -> pool -> conv 3 x 3 (4 channels) -> flatten -> FC 64 -> 10."""
    rng = np.random.default_rng(0)
    layers = [Conv2d("conv1", rng.normal(0, 0.3, (2, 1, 3, 3))), ReLU("relu1"), MaxPool2d("pool1"),
              Conv2d("conv2", rng.normal(0, 0.3, (4, 2, 3, 3))), *([ReLU("relu2")] if relu2 else []),
              Flatten("flatten"), Linear("fc", rng.normal(0, 0.2, (10, 64)))]
    return compress_network(FloatNetwork((1, 8, 8), layers), rng.random((50, 1, 8, 8)).astype(np.float32)).model


def test_cnn_derives_its_conv_engine():
    """A CNN's conv engine takes the layers' one geometry (K = 3 at N = 8: L = 6), ReLU and schedule, up to their
    largest channels and input map; the pool is conv1's post stage, the flatten no descriptor."""
    model = _cnn()
    derived = plan(model, "ulx3s-85f")
    conv = derived.config.conv
    assert (conv.n, conv.k, conv.l, conv.padding, conv.relu) == (8, 3, 6, "same", True)
    assert (conv.p, conv.b) == (model.conv_layers()[0].spectral.schedule.p, model.conv_layers()[0].spectral.schedule.b)
    assert (conv.max_c_in, conv.max_c_out, conv.max_height, conv.max_width) == (2, 4, 8, 8)
    assert [(s.name, s.kind, s.pool) for s in derived.steps] == [("pool1", "conv", True), ("conv2", "conv", False),
                                                                 ("fc", "fc", False)]
    assert derived.estimate.fits
    _check_holds(derived, model)


def test_inverse_paths_only_where_they_pay():
    """A small CNN's conv layers wait on the inverse FFT (a few groups a channel and tile against its 64 cycles):
    it gets four inverse paths. A layer of 32 input channels keeps its MAC busy longer than that on every channel
    (about 70 groups a tile), so more paths would not make it faster: it keeps one, the logic saved."""
    rng = np.random.default_rng(1)
    layers = [Conv2d("conv", rng.normal(0, 0.1, (8, 32, 3, 3))), ReLU("relu"), Flatten("flatten"),
              Linear("fc", rng.normal(0, 0.1, (10, 512)))]
    wide = compress_network(FloatNetwork((32, 8, 8), layers), rng.random((50, 32, 8, 8)).astype(np.float32)).model
    groups = wide.conv_layers()[0].spectral.schedule.groups
    assert groups.min() > 64
    derived = plan(wide, "ulx3s-85f")
    assert derived.conv_outs == 1 and derived.estimate.fits
    four = dataclasses.replace(derived, config=dataclasses.replace(
        derived.config, conv=dataclasses.replace(derived.config.conv, outs=4)))
    assert four.conv_compute >= derived.conv_compute / 1.03
    small = plan(_cnn(), "ulx3s-85f")
    assert small.conv_outs == 4


def test_conv_layers_must_share_the_engine_relu():
    with pytest.raises(PlanError, match=r"^the conv layers differ in relu \(conv1 True, conv2 False\); the conv "
                                        r"engine fixes it for all of them$"):
        plan(_cnn(relu2=False))


# --- refusals --------------------------------------------------------------------------------------------------


def test_default_format_mlp_is_refused_on_the_icebreaker_naming_the_limit(digits):
    """The same MLP compressed for the default format (64-wide slices, four planes): its FC engine alone is over
    the UP5K's logic, and the message says so with the budget; the ULX3S takes it."""
    wide = _mlp((64, 32, 10), DEFAULT_FC_FORMAT)
    with pytest.raises(PlanError, match=r"^fc engine needs \d+ LC, icebreaker has 5280"):
        plan(wide, "icebreaker")
    assert plan(wide).config.board == "ulx3s-85f"


def test_lenet5_is_refused_on_the_icebreaker(lenet5):
    with pytest.raises(PlanError, match=r"conv engine needs \d+ LC, icebreaker has 5280.*conv engine needs \d+ DSP, "
                                        r"icebreaker has 8"):
        plan(lenet5, "icebreaker")


# A layer past the largest region (784 -> 512 -> 10 at FC16_FORMAT) now runs in passes:
# tests/test_fc_passes.py::test_a_layer_past_the_icebreakers_regions_is_planned_in_passes.


def test_steps_the_device_cannot_run_are_refused():
    pooled_input = CompressedNetwork((1, 8, 8), 1.0, (PoolLayer("p"), FlattenLayer("f")))
    with pytest.raises(PlanError, match="layer p: the device pools only in a conv layer's post stage"):
        program_steps(pooled_input)
    with pytest.raises(PlanError, match="no conv or FC layer"):
        program_steps(CompressedNetwork((16,), 1.0, (FlattenLayer("f"),)))


# --- the estimate against builds ---------------------------------------------------------------------------------


def _readme_builds() -> list[tuple[AcceleratorConfig, dict[str, int]]]:
    """The builds README's Measured figures come from (docs/figures/build-*.json): (config, {resource: used}) for
    lenet5, fc_only and the link alone on both boards."""
    figures = readme.load()

    def used(name: str, resources: tuple[str, ...]) -> dict[str, int]:
        report = figures[name]["report"]["resources"]
        return {resource: report[resource]["used"] for resource in resources}

    return [
        (AcceleratorConfig.lenet5(), used("build-lenet5", ("TRELLIS_COMB", "TRELLIS_FF", "DP16KD", "MULT18X18D"))),
        (AcceleratorConfig.fc_only(), used("build-fc_only",
                                           ("ICESTORM_LC", "ICESTORM_RAM", "ICESTORM_SPRAM", "ICESTORM_DSP"))),
        (AcceleratorConfig(board="icebreaker"), used("build-link-icebreaker", ("ICESTORM_LC", "ICESTORM_RAM"))),
        (AcceleratorConfig(), used("build-link-ulx3s-85f", ("TRELLIS_COMB", "TRELLIS_FF", "DP16KD"))),
    ]


def _fc16(rows: int, cols: int) -> AcceleratorConfig:
    return AcceleratorConfig.fc_only(fc=FcEngineParams.from_format(FC16_FORMAT, rows, cols, x_lane_writes=True),
                                     act_depth=cols)


#: Calibration builds besides README's (`hw.build.build(config)`, nextpnr seed 1): what nextpnr reported used.
#: The 32 x 64 one does not fit: its figure is nextpnr's packer's count before it gave up placing.
CALIBRATION_BUILDS = [
    (lambda: AcceleratorConfig.fc_only(board="ulx3s-85f"),
     {"TRELLIS_COMB": 4768, "TRELLIS_FF": 1957, "DP16KD": 26, "MULT18X18D": 1}),
    (lambda: AcceleratorConfig.lenet5(conv=None),
     {"TRELLIS_COMB": 8870, "TRELLIS_FF": 3860, "DP16KD": 30, "MULT18X18D": 1}),
    (lambda: _fc16(128, 784), {"ICESTORM_LC": 4982, "ICESTORM_RAM": 27, "ICESTORM_SPRAM": 3, "ICESTORM_DSP": 1}),
    (lambda: _fc16(32, 64), {"ICESTORM_LC": 5586}),
    (lambda: plan(_mlp((784, 128, 10), FC16_FORMAT), "icebreaker").config,  # derived; 22.7 MHz, timing met
     {"ICESTORM_LC": 4714, "ICESTORM_RAM": 25, "ICESTORM_SPRAM": 4, "ICESTORM_DSP": 1}),
]


def check_estimate(config: AcceleratorConfig, measured: dict[str, int]) -> None:
    """Each measured count (the family's unit names) within `hw.estimate.TOLERANCE` of the estimate's total."""
    total = estimate(config).describe()["total"]
    family = "ice40" if config.board == "icebreaker" else "ecp5"
    resource = {name: generic for generic, name in UNITS[family].items()}
    for name, used in measured.items():
        assert _within(resource[name], total[name], used), (config.board, name, total[name], used)


@pytest.mark.parametrize("index", range(4), ids=["lenet5", "fc_only", "link-icebreaker", "link-ulx3s"])
def test_estimate_matches_the_readme_builds(index):
    check_estimate(*_readme_builds()[index])


@pytest.mark.parametrize("index", range(len(CALIBRATION_BUILDS)),
                         ids=["fc_only-ulx3s", "lenet5-fc-only", "fc16-128x784", "fc16-32x64", "mlp-784-128-10"])
def test_estimate_matches_the_calibration_builds(index):
    make, measured = CALIBRATION_BUILDS[index]
    check_estimate(make(), measured)


@pytest.mark.parametrize("family, mem, kind, cells", [
    ("ice40", Memory(("program",), 114, 3, 1, 1, 114), "logic", 0),          # 8 RAM4K would cost more than 342 bits
    ("ice40", Memory(("rx_fifo",), 8, 15, 1, 1, 8), "block", 1),
    ("ice40", Memory(("info",), 8, 115, 1, 0, 8), "logic", 0),               # a small ROM goes to LUTs
    ("ice40", Memory(("x",), 128, 25, 1, 1, 8), "block", 8),                 # per-lane writes: 16-bit mode
    ("ice40", Memory(("x",), 128, 4, 1, 1, 8), "logic", 0),                  # 512 bits tie 8 RAM4K: logic
    ("ecp5", Memory(("x",), 512, 7, 1, 1, 512), "distributed", 128),
    ("ecp5", Memory(("bim",), 23, 8192, 1, 1, 23), "block", 12),             # 12 DP16KD of 8192 x 2
    ("ecp5", Memory(("xor",), 34, 2560, 1, 1, 34), "block", 5),              # 5 PDPW16KD of 512 x 36
    ("ecp5", Memory(("acc",), 90, 10, 2, 1, 90), "distributed", 46),         # a copy per read port
])
def test_memories_map_as_yosys_maps_them(family, mem, kind, cells):
    """`map_memory` against yosys 0.70's memory_libmap on these memories of the fc_only, LeNet-5 and link builds."""
    mapping = map_memory(family, mem)
    assert (mapping.kind, mapping.cells) == (kind, cells)


# --- command lines ---------------------------------------------------------------------------------------------


def test_build_plan_prints_the_derived_config_and_estimate(digits, tmp_path, capsys):
    path = tmp_path / "digits.npz"
    save_model(path, digits)
    assert hwbuild.main(["--model", str(path), "--board", "icebreaker", "--plan", "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("board: icebreaker (iCE40UP5K, 12 MHz)\nprogram: fc1 (fc 64 -> 32), fc2 (fc 32 -> 10)")
    assert "fc engine: n_in=3 n_out=16" in out and "estimate:" in out and "ICESTORM" not in out
    assert re.search(r"^  icebreaker +5280 +30 +4 +8$", out, re.M)
    assert not (tmp_path / "b").exists()  # nothing built
    # --plan for a named config: its estimate alone.
    assert hwbuild.main(["--config", "fc_only", "--plan"]) == 0
    assert re.search(r"^  total +\d+ +25 +3 +1$", capsys.readouterr().out, re.M)


def test_build_model_error_paths(digits, lenet5, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        hwbuild.main(["--model", "net.npz", "--config", "lenet5"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert hwbuild.main(["--model", str(tmp_path / "missing.npz"), "--plan"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'missing.npz'}: no such file\n"
    assert hwbuild.main(["--model", str(ROOT / "models" / "lenet5_full.npz"), "--plan"]) == 2
    err = capsys.readouterr().err
    assert "expected 'sqgen-net', got 'sqgen-lenet5-full'" in err and "to_network" in err and err.count("\n") == 1
    path = tmp_path / "lenet5.npz"
    save_model(path, lenet5)
    assert hwbuild.main(["--model", str(path), "--board", "icebreaker", "--plan"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: conv engine needs ") and "icebreaker has 5280" in err and err.count("\n") == 1


def test_server_model_refused_before_compiling(tmp_path, capsys):
    """`python -m sim.server --model`: a network the board cannot run exits 2 with the reason, nothing compiled."""
    assert server.main(["--model", str(tmp_path / "missing.npz"), "--once"]) == 2
    assert "missing.npz: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        server.main(["--model", "net.npz", "--config", "lenet5"])


# --- the derived accelerator at work ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.cost(seconds=10)
def test_derived_digits_mlp_on_the_virtual_board_bit_exact(digits, tmp_path):
    """`python -m sim.server --model digits.npz` serves the derived accelerator (the iCEBreaker's clock), and the
    host runs the network on it bit-exact with the golden backend at every layer. Under Icarus: a small MLP runs
    in seconds there, and its design is test_examples's mlp_digits board, so the suite compiles it once."""
    path = tmp_path / "digits.npz"
    save_model(path, digits)
    model = load_model(path, expected=None)
    x = np.random.default_rng(1).random((3, 64)).astype(np.float32)
    golden = open_backend("golden", model).run(x, trace=True)
    with start("--model", str(path), "--sim", "icarus", once=False) as board:
        with Device.open(board.url, timeout=300) as dev:
            assert dev.info()["board"] == "icebreaker"
            session = Session(DeviceBackend(dev, model, name=board.url), model)
            result = session.run(x, trace=True)
        board.stop()
    assert compare_traces(golden.layers, result.layers) is None
    np.testing.assert_array_equal(result.logits, golden.logits)
