"""The design's clock: the ECP5 PLL's dividers against a brute-force search of the sysCLOCK ranges, the configs'
clocks and their refusals, and the board top's PLL and constraints (elaborated, no tools)."""

from __future__ import annotations

import itertools
import json
import re

import pytest

from boards import get_board
from hw.clocking import Ecp5PllParams
from hw.config import AcceleratorConfig
from hw.top import BoardTop

MHZ = 1_000_000


def brute_force_reachable(in_hz: int) -> set[int]:
    """Integer output frequencies of an EHXPLLL with CLKOP fed back, by trying every divider in float arithmetic
    (Lattice TN1263's ranges, written out here apart from hw.clocking's)."""
    out = set()
    for ci, fb, op in itertools.product(range(1, 129), range(1, 81), range(1, 129)):
        f_out = in_hz * fb / ci
        if (3.125e6 <= in_hz / ci <= 400e6 and 3.125e6 <= f_out <= 400e6 and 400e6 <= f_out * op <= 800e6
                and (in_hz * fb) % ci == 0):
            out.add(in_hz * fb // ci)
    return out


@pytest.fixture(scope="module")
def reachable_25() -> set[int]:
    return brute_force_reachable(25 * MHZ)


@pytest.mark.parametrize("target", [25 * MHZ, 37_500_000, 40 * MHZ, 45 * MHZ, 50 * MHZ, 62_500_000, 100 * MHZ])
def test_pll_makes_the_clock_exactly_within_its_ranges(target, reachable_25):
    assert target in reachable_25
    p = Ecp5PllParams.for_frequency(25 * MHZ, target)
    assert 25 * MHZ * p.clkfb_div == target * p.clki_div  # exact, not rounded
    assert 400 * MHZ <= target * p.clkop_div <= 800 * MHZ and 3_125_000 * p.clki_div <= 25 * MHZ


def test_every_clock_the_brute_force_reaches_is_reached_and_no_other(reachable_25):
    # Every seventh reachable clock from 4 to 120 MHz, and its neighbours 1 Hz off (never reachable from 25 MHz).
    for target in sorted(f for f in reachable_25 if 4 * MHZ <= f <= 120 * MHZ)[::7]:
        assert Ecp5PllParams.for_frequency(25 * MHZ, target).out_hz == target
        for near in (target - 1, target + 1):
            assert near not in reachable_25
            with pytest.raises(ValueError, match=rf"clock_hz {near} is not reachable from the 25000000 Hz"):
                Ecp5PllParams.for_frequency(25 * MHZ, near)


def test_an_unreachable_clock_names_the_nearest_reachable_ones(reachable_25):
    with pytest.raises(ValueError) as error:
        Ecp5PllParams.for_frequency(25 * MHZ, 44_100_000)
    named = [int(f) for f in re.findall(r"\d+", str(error.value).split("nearest are")[1])]
    closest = sorted(reachable_25, key=lambda f: abs(f - 44_100_000))[:4]
    assert sorted(named) == sorted(closest)


@pytest.mark.parametrize("value, message", [
    (1000, r"clock_hz must be in 3125000\.\.400000000, got 1000"),
    ("40M", r"clock_hz must be an integer, got '40M'"),
    (401 * MHZ, r"clock_hz must be in 3125000\.\.400000000"),
])
def test_bad_clocks_are_refused_naming_the_field(value, message):
    with pytest.raises(ValueError, match=message):
        AcceleratorConfig(clock_hz=value)


def test_configs_run_at_their_clocks():
    assert AcceleratorConfig().clock_hz == 25 * MHZ and AcceleratorConfig().pll is None
    lenet5 = AcceleratorConfig.lenet5()
    assert lenet5.clock_hz == 50 * MHZ and lenet5.pll.clkfb_div == lenet5.pll.clki_div * 2
    # Everything timed in cycles follows the clock: the UART's bit, the frame timeout.
    assert lenet5.uart_divisor == round(50 * MHZ / 115_200)
    assert lenet5.frame_timeout_cycles == round(lenet5.frame_timeout_ms * 1e-3 * 50 * MHZ)
    assert json.loads(lenet5.info_json())["clock_hz"] == 50 * MHZ
    assert AcceleratorConfig.lenet5(clock_hz=25 * MHZ).pll is None
    fc_only = AcceleratorConfig.fc_only()
    assert fc_only.clock_hz == get_board("icebreaker").clock_hz and fc_only.pll is None
    with pytest.raises(ValueError, match=r"clock_hz must be the icebreaker's oscillator, 12000000 Hz .*got 20000000"):
        AcceleratorConfig.fc_only(clock_hz=20 * MHZ)


def test_board_top_clocks_the_design_from_the_pll(tmp_path):
    config = AcceleratorConfig(clock_hz=40 * MHZ)
    plan = get_board(config.board).make_platform().prepare(BoardTop(config), name="top")
    plan.extract(tmp_path)
    rtlil, lpf = (tmp_path / "top.il").read_text(), (tmp_path / "top.lpf").read_text()
    cell = rtlil[rtlil.index("cell \\EHXPLLL"):]
    cell = cell[:cell.index("\n  end")]
    for name, value in (("CLKI_DIV", 5), ("CLKFB_DIV", 8), ("CLKOP_DIV", 15)):
        assert re.search(rf"parameter \\{name} {value}\b", cell), name
    assert 'parameter \\FEEDBK_PATH "CLKOP"' in cell
    # The oscillator pin keeps its 25 MHz constraint and the PLL's output gets its own 40 MHz one.
    assert 'FREQUENCY PORT "clk25_0__io" 25000000.0 HZ;' in lpf
    assert re.search(r'FREQUENCY NET "[^"]+" 40000000\.0 HZ;', lpf)
    # Without a PLL the board's clock drives the design directly, as before.
    plan = get_board(config.board).make_platform().prepare(BoardTop(AcceleratorConfig()), name="top")
    plan.extract(tmp_path / "plain")
    assert "EHXPLLL" not in (tmp_path / "plain" / "top.il").read_text()
