"""The FC-only iCEBreaker configuration: its SPRAM region memory, the FC engine's lane writes, its format and model.

`hw.memory.SpramMemory` runs under cocotb as its behavioural SPRAM lanes, against a model of its contract; the FC
engine with `x_lane_writes` runs the cases of `test_fc_engine_rtl` (stale activation lanes included); a tiny
FC-only device with its weight and activation regions in SPRAM runs three layers through the byte streams, like
`test_accel_fc_rtl`'s; and `AcceleratorConfig.fc_only()` is checked against `models/lenet5_fc16.npz`. The build on
the iCEBreaker itself is `tests/test_build.py::test_fc_only_builds_on_icebreaker` (slow).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from test_accel_fc_rtl import TINY_FC, add_inference, golden_fc, start_tiny_fc
from test_accel_rtl import play
from test_fc_engine_rtl import CASES, check_compute_rate, make_layer, run_case, small_params

from boards import get_board
from host.accel import AccelInfo, pack_model, pack_program
from host.lenet5.compressed import load_model
from hw.config import AcceleratorConfig
from hw.fc_engine import FcEngineParams
from hw.memory import SpramMemory, SpramParams
from hw.spec.fc_format import DEFAULT_FC_FORMAT, FC16_FORMAT
from hw.spec.protocol import Command, Status
from hw.spec.xor import xor_matrix
from sim import runner

MODEL = Path(__file__).resolve().parent.parent / "models" / "lenet5_fc16.npz"


# --- the SPRAM region memory ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "depth"), [(23, 300), (14, 64), (48, 40)])
def test_spram_memory_matches_contract(width: int, depth: int):
    """One, two (the second partly used) and three lanes: writes, reads, holds and reads after writes."""
    params = SpramParams(width, depth)
    sim = runner.build(SpramMemory(params), f"spram_{width}x{depth}")
    runner.run(sim, "sim.tb.spram", {"width": width, "depth": depth, "cycles": 3000,
                                           "idle_probability": 0.3, "write_probability": 0.3})


def test_spram_memory_per_platform():
    """SB_SPRAM256KA lanes on iCE40, a plain Memory on ECP5 (true dual-port block RAM there)."""
    from amaranth.hdl import Fragment

    params = SpramParams(23, 8192)
    assert (params.lanes, params.addr_width) == (2, 13)

    def parts(board: str) -> list[tuple[str, str, str | None]]:
        fragment = Fragment.get(SpramMemory(params), get_board(board).make_platform())
        return [(type(sub).__name__, name, getattr(sub, "type", None)) for sub, name, *_ in fragment.subfragments]

    assert parts("icebreaker") == [("Instance", f"lane{k}", "SB_SPRAM256KA") for k in range(2)]
    assert parts("ulx3s-85f") == [("MemoryInstance", "cells", None)]


@pytest.mark.parametrize(("width", "depth", "message"), [
    (0, 4, r"^width must be >= 1, got 0$"),
    (16, 16385, r"^depth must be in 1\.\.16384, got 16385$"),
    (16, True, r"^depth must be an integer, got True$"),
])
def test_spram_params_rejected(width, depth, message):
    with pytest.raises(ValueError, match=message):
        SpramParams(width, depth)


# --- the FC engine with lane writes -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mt1-r1-q2", "mt3-r1-narrow"])
def test_fc_engine_lane_writes_match_golden(tmp_path: Path, name: str):
    """`test_fc_engine_rtl`'s cases with x written lane by lane: a narrower layer after a wider one leaves stale
    lanes in the last column tile, which the masking must keep out of the sums."""
    n_out, n_in, kwargs, specs = CASES[name]
    seed = n_out * 100 + n_in
    rng = np.random.default_rng(seed)
    m = xor_matrix(n_out, n_in, seed)
    params = small_params(m, **kwargs, x_lane_writes=True)
    layers = [make_layer(params, m, spec, rng) for spec in specs]
    assert any(later.cols % n_out and earlier.cols > later.cols
               for (later, _, _), (earlier, _, _) in zip(layers[1:], layers))
    report = run_case(tmp_path, params, m, layers, "fc_engine_lanes")
    check_compute_rate(params, layers, report)


def test_x_lane_writes_checked_and_private():
    params = FcEngineParams.from_format(FC16_FORMAT, max_rows=8, max_cols=8, x_lane_writes=True)
    assert params.describe() == dataclasses.replace(params, x_lane_writes=False).describe()  # INFO unchanged
    with pytest.raises(ValueError, match=r"^x_lane_writes must be a bool, got 1$"):
        dataclasses.replace(params, x_lane_writes=1)


# --- a tiny device with SPRAM regions ---------------------------------------------------------------------------

TINY_SPRAM = dataclasses.replace(TINY_FC, fc=dataclasses.replace(TINY_FC.fc, x_lane_writes=True),
                                 spram_regions=("fc.xor", "fc.bim", "fc.scale", "act0"))


def test_tiny_fc_with_spram_regions():
    """Three layers in one RUN and one by one, every output read back; a LOAD refused past an SPRAM region's end
    writes nothing; a second input on the same weights."""
    config, mp = TINY_SPRAM, TINY_SPRAM.max_payload
    assert config.info_json() == TINY_FC.info_json()  # where a region lives is not the host's business
    run = start_tiny_fc(config, layer_seed=11, input_seed=12)
    accel, layers, packed, x1, slices, budget, rng, script = (run.accel, run.layers, run.packed, run.x1, run.slices,
                                                              run.budget, run.rng, run.script)
    xor = accel.regions["fc.xor"]
    junk = bytes(rng.integers(0, 256, size=4 * xor.bytes, dtype=np.uint8))
    script.expect(Command.LOAD, bytes([xor.id]) + (xor.depth - 3).to_bytes(2, "little") + junk, Status.OUT_OF_RANGE)
    script.expect(Command.LOAD, bytes([xor.id, 0, 0]) + junk[:xor.bytes + 1], Status.BAD_ARGUMENT)
    add_inference(script, accel, packed, x1, golden_fc(layers, x1), mp, budget, "x1")
    cycles = play(config, script, runner.TESTBENCH)
    assert cycles["x0"] == cycles["x1"] >= slices


# --- the fc_only config and its model ---------------------------------------------------------------------------


def test_fc_only_config_runs_its_model():
    config = AcceleratorConfig.fc_only()
    assert config.board == "icebreaker" and config.fc.fc_format == FC16_FORMAT != DEFAULT_FC_FORMAT
    assert config.fc.x_lane_writes and config.spram_regions == ("fc.xor", "fc.bim")
    model = load_model(MODEL, expected=FC16_FORMAT)
    accel = AccelInfo.from_info(json.loads(config.info_json()))
    packed = pack_program(accel, [(layer.name, layer, False) for layer in model.fc], (400,))
    used = {name: len(words) for name, words in packed.regions.items()}
    assert used == {"fc.xor": 4196, "fc.bim": 4166, "fc.scale": 214, "program": 3}
    assert all(used[name] <= config.region(name).depth for name in used)
    assert [r.width for r in config.regions if r.name in config.spram_regions] == [14, 23]  # 1 + 2 SPRAM lanes
    with pytest.raises(ValueError, match="FC format does not match"):
        pack_model(AcceleratorConfig.lenet5().describe(), model)
    assert model.metadata["test_accuracy"]["golden_fixed"] >= 0.95


@pytest.mark.parametrize(("overrides", "message"), [
    ({"spram_regions": ["fc.xor"]}, r"^spram_regions must be a tuple of distinct region names"),
    ({"spram_regions": ("fc.xor", "fc.xor")}, r"^spram_regions must be a tuple of distinct region names"),
    ({"spram_regions": ("conv.w",)}, r"^spram_regions: no region 'conv.w'; this config has \["),
    ({"fc_xor_depth": 20000}, r"^spram_regions: region 'fc.xor' has 20000 words, an SPRAM 16384$"),
    ({"spram_regions": ("fc.xor", "fc.bim", "fc.scale")}, r"^spram_regions need 6 SPRAM cells .*icebreaker has 4$"),
])
def test_spram_regions_rejected(overrides: dict, message: str):
    with pytest.raises(ValueError, match=message):
        AcceleratorConfig.fc_only(**overrides)


def test_lenet5_unchanged_by_spram_option():
    config = AcceleratorConfig.lenet5()
    assert config.spram_regions == () and not config.fc.x_lane_writes
    assert config.fc.fc_format == DEFAULT_FC_FORMAT

