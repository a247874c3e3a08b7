"""ULX3S with the LFE5U-85F: 25 MHz oscillator, host link over the FTDI (US1) UART."""

from __future__ import annotations


def _platform():
    from amaranth_boards.ulx3s import ULX3S_85F_Platform

    class Platform(ULX3S_85F_Platform):
        # The upstream platform lists openFPGALoader among its required tools because it can program the
        # board; building a bitstream does not need it.
        @property
        def required_tools(self):
            return [tool for tool in super().required_tools if tool != "openFPGALoader"]

    return Platform()


def make_board(board_cls):
    return board_cls(
        name="ulx3s-85f",
        description="Radiona ULX3S (Lattice ECP5 LFE5U-85F-6BG381C)",
        family="ecp5",
        device="LFE5U-85F",
        package="BG381",
        make_platform=_platform,
        clock_resource="clk25",
        clock_hz=25_000_000,
        uart_resource=("uart", 0),
        memory="bram",
        # LFE5U-85F: 83640 LUT4, 83640 FF, 208 x 18 kbit DP16KD, 156 x 18x18 multipliers
        budget={"TRELLIS_COMB": 83640, "TRELLIS_FF": 83640, "DP16KD": 208, "MULT18X18D": 156},
    )
