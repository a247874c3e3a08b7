"""Wide data registers carry no reset (docs/architecture.md, the abort's `ResetInserter`): the reset is one net to
every flip-flop it clears, and on the LeNet-5 build the FFTs' delay lines and the MAC's pipeline put 5 100 loads on
it, which tripled router1's time. Here yosys's own view after `proc; opt`: a `$sdff*` cell is a register with a
synchronous reset, and none of the transforms' or the MAC's is wider than a counter."""

from __future__ import annotations

import re
import subprocess

import pytest
from amaranth.back import rtlil

from hw.spectral.fft import Fft2d, FftParams, Ifft2d, SdfFft
from hw.spectral.spectral_mac import SpectralMac, SpectralMacParams
from hw.toolchain import find_tool

#: The widest register that may keep a reset: counters and state (the MAC's per-bank valid bits are its depth wide).
WIDEST_RESET = 8


def _registers(component, tmp_path) -> dict[str, dict[int, int]]:
    """Flip-flop cells by kind ("reset": `$sdff*`, "plain": `$dff*`) and width, as `stat -width` counts them."""
    design = tmp_path / "top.il"
    design.write_text(rtlil.convert(component, name="top"))
    stat = tmp_path / "stat.txt"
    # Relative paths: the YoWASP build sees the working directory only.
    subprocess.run([find_tool("yosys"), "-q", "-p", f"read_rtlil {design.name}; hierarchy -top top; proc; flatten; "
                    f"opt; tee -q -o {stat.name} stat -width"], cwd=tmp_path, check=True)
    cells: dict[str, dict[int, int]] = {"reset": {}, "plain": {}}
    for count, kind, width in re.findall(r"^\s+(\d+)\s+\$(sdff|dff)e?_(\d+)$", stat.read_text(), re.M):
        by_width = cells["reset" if kind == "sdff" else "plain"]
        by_width[int(width)] = by_width.get(int(width), 0) + int(count)
    return cells


@pytest.mark.parametrize("make", [
    pytest.param(lambda: SdfFft(FftParams(n=16), inverse=True), id="sdf16"),
    pytest.param(lambda: Fft2d(FftParams()), id="fft2d"),
    pytest.param(lambda: Ifft2d(FftParams()), id="ifft2d"),
    pytest.param(lambda: SpectralMac(SpectralMacParams(p=4, b=8, max_c_in=6, outs=2)), id="mac"),
])
def test_only_narrow_registers_have_a_reset(make, tmp_path):
    cells = _registers(make(), tmp_path)
    wide = {width: count for width, count in cells["reset"].items() if width > WIDEST_RESET}
    assert not wide, f"registers with a reset wider than {WIDEST_RESET} bits (width: count): {wide}"
    assert cells["plain"] and max(cells["plain"]) >= 30, cells  # the wide data registers are there, without one
