"""iCEBreaker: Lattice iCE40UP5K-SG48, 12 MHz oscillator, host link over the FTDI channel B UART."""

from __future__ import annotations


def _platform():
    from amaranth_boards.icebreaker import ICEBreakerPlatform

    return ICEBreakerPlatform()


def make_board(board_cls):
    return board_cls(
        name="icebreaker",
        description="1BitSquared iCEBreaker (iCE40UP5K-SG48)",
        family="ice40",
        device="iCE40UP5K",
        package="SG48",
        make_platform=_platform,
        clock_resource="clk12",
        clock_hz=12_000_000,
        uart_resource=("uart", 0),
        memory="spram",  # 4 x 256 kbit SPRAM besides the 30 EBRs
        # iCE40UP5K: 5280 logic cells, 30 x 4 kbit EBR, 4 x 256 kbit SPRAM, 8 x 16x16 DSP (SB_MAC16)
        budget={"ICESTORM_LC": 5280, "ICESTORM_RAM": 30, "ICESTORM_SPRAM": 4, "ICESTORM_DSP": 8},
    )
