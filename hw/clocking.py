"""The design's clock on a board: the oscillator itself, or an ECP5 PLL (EHXPLLL) multiplying it.

A board's oscillator is slow next to what the accelerator's timing allows (the ULX3S's 25 MHz against some
53 MHz of Fmax for the LeNet-5 build), so an `AcceleratorConfig` names the clock the design runs at and the
board top makes it. `Ecp5PllParams.for_frequency` finds the dividers that give that clock exactly from the
oscillator within the sysCLOCK PLL's ranges (Lattice TN1263: input 8..400 MHz, phase detector 3.125..400 MHz,
VCO 400..800 MHz, output 3.125..400 MHz, CLKOP fed back): f_out = f_in CLKFB_DIV / CLKI_DIV and
f_vco = f_out CLKOP_DIV. An unreachable frequency is one line naming the nearest ones that are.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import cache

from amaranth import ClockDomain, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from hw.spec.params import check_int

#: EHXPLLL ranges (Hz) and divider ranges.
PFD_HZ = (3_125_000, 400_000_000)
VCO_HZ = (400_000_000, 800_000_000)
OUT_HZ = (3_125_000, 400_000_000)
IN_HZ = (8_000_000, 400_000_000)
CLKI_DIVS = range(1, 129)
CLKFB_DIVS = range(1, 81)
CLKOP_DIVS = range(1, 129)


@dataclass(frozen=True)
class Ecp5PllParams:
    """An EHXPLLL with CLKOP fed back: in_hz from the oscillator, out_hz = in_hz clkfb_div / clki_div."""

    in_hz: int
    clki_div: int
    clkfb_div: int
    clkop_div: int

    def __post_init__(self) -> None:
        check_int("in_hz", self.in_hz, *IN_HZ)
        check_int("clki_div", self.clki_div, CLKI_DIVS.start, CLKI_DIVS.stop - 1)
        check_int("clkfb_div", self.clkfb_div, CLKFB_DIVS.start, CLKFB_DIVS.stop - 1)
        check_int("clkop_div", self.clkop_div, CLKOP_DIVS.start, CLKOP_DIVS.stop - 1)
        for name, value, (low, high) in (("phase detector", self.pfd_hz, PFD_HZ), ("VCO", self.vco_hz, VCO_HZ),
                                         ("output", self.out_hz, OUT_HZ)):
            if not low <= value <= high:
                raise ValueError(f"PLL {name} frequency {float(value) / 1e6:.3f} MHz outside "
                                 f"{low / 1e6:g}..{high / 1e6:g} MHz")

    @property
    def pfd_hz(self) -> Fraction:
        return Fraction(self.in_hz, self.clki_div)

    @property
    def out_hz(self) -> Fraction:
        return Fraction(self.in_hz * self.clkfb_div, self.clki_div)

    @property
    def vco_hz(self) -> Fraction:
        return self.out_hz * self.clkop_div

    @classmethod
    def for_frequency(cls, in_hz: int, out_hz: int) -> Ecp5PllParams:
        """The dividers that make exactly `out_hz` from `in_hz` (the VCO nearest 600 MHz, then the smallest input
        divider: a faster phase detector has less jitter); ValueError naming the nearest reachable ones."""
        return _for_frequency(check_int("in_hz", in_hz, *IN_HZ), check_int("clock_hz", out_hz, *OUT_HZ))

    def describe(self) -> dict[str, int]:
        return {"in_hz": self.in_hz, "clki_div": self.clki_div, "clkfb_div": self.clkfb_div,
                "clkop_div": self.clkop_div, "vco_hz": int(self.vco_hz)}


def _output_dividers(out_hz: Fraction) -> range:
    """CLKOP_DIV values that keep the VCO (out_hz CLKOP_DIV) in range."""
    low, high = -(-VCO_HZ[0] // out_hz), VCO_HZ[1] // out_hz
    return range(max(low, CLKOP_DIVS.start), min(high, CLKOP_DIVS.stop - 1) + 1)


def _reachable(in_hz: int):
    """(CLKI_DIV, CLKFB_DIV, output Hz) of every integer output frequency the PLL can make from `in_hz`."""
    for ci in CLKI_DIVS:
        if PFD_HZ[0] <= Fraction(in_hz, ci) <= PFD_HZ[1]:
            for fb in CLKFB_DIVS:
                out = Fraction(in_hz * fb, ci)
                if out.denominator == 1 and OUT_HZ[0] <= out <= OUT_HZ[1] and _output_dividers(out):
                    yield ci, fb, int(out)


@cache
def _for_frequency(in_hz: int, out_hz: int) -> Ecp5PllParams:
    found = [Ecp5PllParams(in_hz, ci, fb, op) for ci, fb, out in _reachable(in_hz) if out == out_hz
             for op in _output_dividers(Fraction(out))]
    if found:
        return min(found, key=lambda p: (abs(p.vco_hz - 600_000_000), p.clki_div))
    nearest = sorted({out for _, _, out in _reachable(in_hz)}, key=lambda f: abs(f - out_hz))[:4]
    raise ValueError(f"clock_hz {out_hz} is not reachable from the {in_hz} Hz oscillator with the ECP5 PLL; "
                     f"the nearest are {', '.join(str(f) for f in sorted(nearest))} Hz")


def add_pll_domain(m: Module, platform, params: Ecp5PllParams, clk_pin) -> None:
    """Define `m`'s `sync` domain from an EHXPLLL on the oscillator pin `clk_pin` (a board resource requested with
    dir="-"), held in reset until the PLL locks and two cycles more (`ResetSynchronizer`); and constrain it, so
    place and route times the design at `params.out_hz`."""
    m.submodules.clk_buffer = clk_in = io.Buffer("i", clk_pin)
    m.domains.sync = sync = ClockDomain("sync")
    locked = Signal()
    m.submodules.pll = Instance(
        "EHXPLLL",
        a_FREQUENCY_PIN_CLKI=f"{params.in_hz / 1e6:g}", a_FREQUENCY_PIN_CLKOP=f"{float(params.out_hz) / 1e6:g}",
        a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
        p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED", p_DPHASE_SOURCE="DISABLED",
        p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB", p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
        p_CLKI_DIV=params.clki_div, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=params.clkop_div,
        p_CLKOP_CPHASE=params.clkop_div // 2, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=params.clkfb_div,
        i_CLKI=clk_in.i, i_CLKFB=sync.clk, i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1,
        i_PHASESTEP=1, i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0,
        o_CLKOP=sync.clk, o_LOCK=locked,
    )
    m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")
    platform.add_clock_constraint(sync.clk, float(params.out_hz))


__all__ = ["Ecp5PllParams", "add_pll_domain"]
