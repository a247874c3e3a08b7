"""The accelerator top, built from one `AcceleratorConfig`.

`Accelerator` is the device seen through its byte streams: frame receiver, payload buffer, command
dispatch and frame transmitter; it is what the virtual board simulates. `UartAccelerator` puts the UART
PHY in front of it (serial lines as ports, for pin-level testbenches), and `BoardTop` binds that to a board's
pins; it is what `hw.build` turns into a bitstream.

Commands (constants in `hw.spec.protocol`); every answer carries the tag of the request it answers:

* INFO answers `config.info_json()`, held in a ROM written at elaboration.
* ECHO answers the request's payload, read back from the payload buffer.
* LOAD, RUN and READ go to `hw.sequencer.Sequencer` (regions, engines, layer sequencing) when the config
  has an engine; a link-only config answers them UNKNOWN_COMMAND and elaborates exactly as before.
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import fifo, io, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from boards import get_board
from hw.spec.protocol import Command, Status

from .clocking import add_pll_domain
from .config import AcceleratorConfig
from .link import FrameError, FrameReceiver, FrameTransmitter, UartRx, UartTx
from .memory import RegionReader
from .sequencer import Sequencer

#: Bytes the UART receiver can absorb while the device is busy answering (the host waits for each answer).
UART_RX_FIFO_DEPTH = 16


class Accelerator(wiring.Component):
    """The device behind its byte streams: requests in on `rx`, responses out on `tx`.

    `busy` is low only when the device waits for a request's first byte with nothing to finish: no frame
    half received, no request being served, no answer byte left to send. A simulator may then stop the
    clock until the host sends something (nothing in the device counts time while it waits). `expire`
    high drops a half-received frame as the frame timeout does: a simulator, whose clock runs far slower
    than a board's, raises it when its host has been silent for the frame timeout in real time, so a host
    sees a frame it abandoned dropped as soon as on a board. Nothing drives it on a board (it stays low).
    """

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)), "busy": Out(1),
                          "expire": In(1)})

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        info = cfg.info_json()

        m.submodules.receiver = receiver = FrameReceiver(cfg.max_payload, cfg.frame_timeout_cycles)
        m.submodules.transmitter = transmitter = FrameTransmitter()
        wiring.connect(m, wiring.flipped(self.rx), receiver.i)
        wiring.connect(m, transmitter.o, wiring.flipped(self.tx))
        m.d.comb += receiver.expire.eq(self.expire)

        m.submodules.buffer = buffer = Memory(shape=8, depth=cfg.max_payload, init=[])
        write = buffer.write_port()
        m.d.comb += [write.addr.eq(receiver.buffer.addr), write.data.eq(receiver.buffer.data),
                     write.en.eq(receiver.buffer.en)]
        m.submodules.info_rom = info_rom = Memory(shape=8, depth=len(info), init=info)

        sources = {"buffer": (buffer, cfg.max_payload), "info": (info_rom, len(info))}
        readers = {}
        ports = {}
        for name, (mem, depth) in sources.items():
            m.submodules[f"{name}_reader"] = reader = readers[name] = RegionReader(8, depth)
            port = ports[name] = mem.read_port()
            m.d.comb += [port.addr.eq(reader.addr), port.en.eq(reader.en), reader.data.eq(port.data)]

        request = receiver.request.payload
        # The transmitter takes the tag with the header, while the request is pending, whoever answers.
        m.d.comb += transmitter.tag.eq(request.tag)
        status = Signal(8)
        length = Signal(16)
        with m.Switch(request.error):
            with m.Case(FrameError.BAD_CRC):
                m.d.comb += status.eq(Status.BAD_CRC)
            with m.Case(FrameError.OVERSIZE):
                m.d.comb += status.eq(Status.LENGTH_OVER_MAX)
            with m.Default():
                with m.Switch(request.command):
                    with m.Case(Command.INFO):
                        m.d.comb += [status.eq(Status.OK), length.eq(len(info))]
                    with m.Case(Command.ECHO):
                        m.d.comb += [status.eq(Status.OK), length.eq(request.length)]
                    with m.Default():
                        m.d.comb += status.eq(Status.UNKNOWN_COMMAND)

        # The request is held (and with it the receiver, so the buffer is stable) until the answer's last
        # payload byte has gone to the transmitter.
        sequencer = None
        to_sequencer = Signal()
        if cfg.has_engines:
            m.submodules.sequencer = sequencer = Sequencer(cfg)
            m.d.comb += [sequencer.command.eq(request.command), sequencer.length.eq(request.length),
                         sequencer.buf_data.eq(ports["buffer"].data)]
            with m.If(request.error == FrameError.NONE):
                with m.Switch(request.command):
                    with m.Case(Command.LOAD, Command.RUN, Command.READ):
                        m.d.comb += to_sequencer.eq(1)

        source = Signal(range(len(sources)))
        with m.FSM() as fsm:
            with m.State("IDLE"):
                if sequencer is not None:
                    with m.If(receiver.request.valid & to_sequencer):
                        m.d.comb += sequencer.start.eq(1)
                        m.next = "SEQUENCER"
                with m.If(receiver.request.valid & ~to_sequencer if sequencer is not None else receiver.request.valid):
                    m.d.comb += [transmitter.response.valid.eq(1),
                                 transmitter.response.payload.status.eq(status),
                                 transmitter.response.payload.length.eq(length)]
                    with m.If(transmitter.response.ready):
                        with m.If(length == 0):
                            m.d.comb += receiver.request.ready.eq(1)
                        with m.Else():
                            is_info = request.command == Command.INFO
                            m.d.sync += source.eq(is_info)
                            m.d.comb += [readers["buffer"].start.eq(~is_info), readers["info"].start.eq(is_info),
                                         readers["buffer"].count.eq(length), readers["info"].count.eq(length)]
                            m.next = "ANSWER"
            with m.State("ANSWER"):
                for index, reader in enumerate(readers.values()):
                    with m.If(source == index):
                        wiring.connect(m, reader.o, transmitter.payload)
                        with m.If(~reader.busy):
                            m.d.comb += receiver.request.ready.eq(1)
                            m.next = "IDLE"
            if sequencer is not None:
                with m.State("SEQUENCER"):
                    # The sequencer reads the payload through the buffer's read port, answers, then lets go.
                    wiring.connect(m, sequencer.response, transmitter.response)
                    wiring.connect(m, sequencer.payload, transmitter.payload)
                    m.d.comb += [ports["buffer"].addr.eq(sequencer.buf_addr), ports["buffer"].en.eq(sequencer.buf_en)]
                    with m.If(~sequencer.busy):
                        m.d.comb += receiver.request.ready.eq(1)
                        m.next = "IDLE"
        # The transmitter's frame tail (the CRC) goes out after the FSM is back in IDLE: tx.valid covers it.
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE") | receiver.busy | transmitter.o.valid)
        return m


class UartAccelerator(wiring.Component):
    """`Accelerator` behind an 8N1 UART: `rx` and `tx` are the serial lines (idle high).

    `divisor` (clock cycles per bit) defaults to the config's clock and baud; testbenches pass a small one.
    A FIFO absorbs bytes that arrive while the device is still answering.
    """

    def __init__(self, config: AcceleratorConfig, divisor: int | None = None):
        self.config = config
        self.divisor = config.uart_divisor if divisor is None else divisor
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = uart_rx = UartRx(self.divisor)
        m.submodules.uart_tx = uart_tx = UartTx(self.divisor)
        m.submodules.rx_fifo = rx_fifo = fifo.SyncFIFOBuffered(width=8, depth=UART_RX_FIFO_DEPTH)
        m.submodules.accelerator = accelerator = Accelerator(self.config)
        m.d.comb += [uart_rx.rx.eq(self.rx), self.tx.eq(uart_tx.tx)]
        wiring.connect(m, uart_rx.o, rx_fifo.w_stream)
        wiring.connect(m, rx_fifo.r_stream, accelerator.rx)
        wiring.connect(m, accelerator.tx, uart_tx.i)
        return m


class BoardTop(wiring.Component):
    """`UartAccelerator` bound to a board's link UART, clocked at the config's `clock_hz`: the board's oscillator,
    or a PLL on it (`hw.clocking`)."""

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        board = get_board(self.config.board)
        if self.config.pll is not None:
            add_pll_domain(m, platform, self.config.pll, platform.request(board.clock_resource, 0, dir="-"))
        uart = platform.request(*board.uart_resource, dir="-")
        m.submodules.rx_pin = rx_pin = io.Buffer("i", uart.rx)
        m.submodules.tx_pin = tx_pin = io.Buffer("o", uart.tx)
        m.submodules.core = core = UartAccelerator(self.config)
        m.d.comb += [core.rx.eq(rx_pin.i), tx_pin.o.eq(core.tx)]
        return m
