"""Characterisation harnesses of the SPEC2 blocks (`python -m hw.characterise --block fft2d|mac|oaa|baseline`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from boards import get_board
from hw import characterise
from hw.harness import SPECTRAL_BLOCKS, StreamHarness, spectral_block, spectral_harness
from hw.toolchain import nextpnr_error, rtlil_multipliers, yosys_dsp_cells


def test_spectral_block_defaults():
    """The defaults the brief asks for: N=8 SpectralFixed FFT, MAC P=4 B=8, OaA 28x28, baseline LeNet conv2, M=16."""
    assert spectral_block("fft2d").params["n"] == 8
    assert spectral_block("fft2d").params["data_bits"] == 18
    mac = spectral_block("mac").params
    assert (mac["p"], mac["b"]) == (4, 8)
    oaa = spectral_block("oaa").params
    assert (oaa["max_height"], oaa["max_width"]) == (28, 28)
    base = spectral_block("baseline").params
    assert (base["c_in"], base["c_out"], base["height"], base["width"], base["k"], base["m"]) == (6, 16, 14, 14, 5, 16)
    with pytest.raises(ValueError):
        spectral_block("nope")


@pytest.mark.parametrize(("key", "board_name"), [
    (key, board) for key in SPECTRAL_BLOCKS for board in ("icebreaker", "ulx3s-85f")
    # The whole layer takes seconds to elaborate; the iCE40's harness differs only in its pins, which every other
    # block checks (and the layer does not fit the UP5K).
    if (key, board) != ("conv", "icebreaker")])
def test_spectral_harness_elaborates(key, board_name):
    """Every SPEC2 harness builds a plan for iCE40 and ECP5: each input stream driven, each output observed."""
    board = get_board(board_name)
    block = spectral_block(key)
    harness = spectral_harness(block, board.uart_resource)
    plan = board.make_platform().prepare(harness, name="top")
    il = plan.files["top.il"]
    for port in block.inputs:
        assert len(block.inputs) == 1 or f"{port}_source" in il
    if key in ("mac", "baseline", "conv"):
        assert rtlil_multipliers(il) > 0


def test_multi_stream_harness_limits():
    block = spectral_block("baseline")
    with pytest.raises(ValueError, match="input"):
        StreamHarness(block.make(), inputs=("quant", "w", "x", "x", "x"))


def test_nextpnr_error_line():
    log = "Info: foo\nERROR: Unable to place cell 'x', no BELs remaining to implement cell type 'ICESTORM_DSP'\nbar\n"
    assert nextpnr_error(log).startswith("ERROR: Unable to place cell")
    assert nextpnr_error("a\nlast\n") == "last"


@pytest.mark.slow
@pytest.mark.cost(seconds=60)
def test_characterise_spectral_ulx3s(tmp_path: Path):
    """The dense baseline on the ULX3S, placed and routed: timing met at the 25 MHz board clock, its multipliers
    on DSPs and its maps in block RAM, within budget. (The baseline is the one SPEC2 block no build holds: the
    FFTs and the MAC are in the LeNet-5 build, and the whole SpectralConv trips an abc9 assert in Yosys 0.70's
    default ECP5 flow; `sim.bench spectral` builds its stages.)"""
    block = spectral_block("baseline")
    report = characterise.characterise_spectral(block, "ulx3s-85f", tmp_path, alone=False,
                                                progress=lambda message: None)
    assert json.loads((tmp_path / characterise.RESULT_FILE).read_text()) == report
    assert report["fits"], report.get("error")
    assert report["board_clock_mhz"] == 25.0
    assert report["meets_board_clock"] and report["fmax_mhz"] >= 25.0
    assert report["multipliers_on_dsps"]
    # M = 16 lane multipliers plus the requantizer's 23 x 16 bit product (two DSPs); one block RAM per lane's
    # copy of the map.
    assert report["dsp"] >= 16 and report["bram"] >= 16
    budget = get_board("ulx3s-85f").budget
    for name, use in report["resources"].items():
        assert use["used"] <= budget.get(name, use["available"])
    assert report["resources"]["TRELLIS_COMB"]["used"] < budget["TRELLIS_COMB"] // 4


@pytest.mark.slow
@pytest.mark.cost(seconds=15)
def test_spectral_mac_products_are_its_only_multipliers_each_on_a_dsp(tmp_path: Path):
    """The spectral MAC synthesised alone for the ECP5: P lanes of four real products are the RTL's only `$mul`
    cells (no address arithmetic multiplies), and each becomes one MULT18X18D. At P = 2 lanes, B = 4 banks and 16
    input channels: the default's lane, bank and accumulator structure at a quarter of the synthesis (the default
    MAC is placed and routed in the LeNet-5 build)."""
    block = spectral_block("mac", mac_p=2, mac_b=4, mac_max_c_in=16)
    report = characterise.synthesise_alone(block.make(), block.name, "mac", "ecp5", tmp_path)
    dsps = yosys_dsp_cells(report, block.name)
    assert rtlil_multipliers((tmp_path / "mac.il").read_text()) == dsps == 4 * block.params["p"] == 8
