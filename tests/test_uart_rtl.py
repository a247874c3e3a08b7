"""Pin-level RTL testbenches of the UART: the PHY pair (`UartRx`, `UartTx`) and the whole device behind it."""

from __future__ import annotations

import pytest
from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.config import AcceleratorConfig
from hw.link import UartRx, UartTx
from hw.top import UartAccelerator
from sim.runner import SimulationFailed, build, run


class UartPhyPair(wiring.Component):
    """A `UartRx` and a `UartTx` with the same divisor, each on its own ports, so one testbench tests both."""

    def __init__(self, divisor: int):
        self.divisor = divisor
        super().__init__({
            "rx": In(1, init=1),
            "o": Out(stream.Signature(8)),
            "overrun": Out(1),
            "frame_error": Out(1),
            "i": In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = uart_rx = UartRx(self.divisor)
        m.submodules.uart_tx = uart_tx = UartTx(self.divisor)
        m.d.comb += [uart_rx.rx.eq(self.rx), self.overrun.eq(uart_rx.overrun),
                     self.frame_error.eq(uart_rx.frame_error), self.tx.eq(uart_tx.tx)]
        wiring.connect(m, uart_rx.o, wiring.flipped(self.o))
        wiring.connect(m, wiring.flipped(self.i), uart_tx.i)
        return m


# The smallest divisor the receiver allows and an odd one; each with the far end at an edge of +-2%.
@pytest.mark.parametrize(("divisor", "baud_error"), [(4, 0.02), (13, -0.02)])
def test_uart_phy(divisor, baud_error):
    sim = build(UartPhyPair(divisor), "uart_phy_pair")
    run(sim, "sim.tb.uart", {"divisor": divisor, "baud_error": baud_error}, seed=divisor)


def test_uart_phy_testbench_catches_wrong_bit_time():
    """The TX check must notice bits one cycle longer than it expects."""
    sim = build(UartPhyPair(5), "uart_phy_pair")
    with pytest.raises(SimulationFailed):
        run(sim, "sim.tb.uart", {"divisor": 4, "baud_error": 0.0}, testcase="test_tx_bit_timing", seed=1)


def test_uart_link_end_to_end():
    config = AcceleratorConfig(max_payload=64)
    sim = build(UartAccelerator(config, divisor=8), "uart_accelerator")
    params = {"divisor": 8, "max_payload": config.max_payload, "info": config.info_json().hex()}
    run(sim, "sim.tb.uart_link", params, seed=8)
