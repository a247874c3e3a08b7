"""The host link: a UART PHY (8N1) and the frame layer of `hw.spec.protocol`.

Byte streams everywhere: `UartRx` produces one, `UartTx` consumes one, so the frame layer can be driven
by the UART on a board or straight from a socket in the virtual board. The frame layer is two blocks:

* `FrameReceiver` parses request frames from a byte stream, writes the payload into a buffer it does not
  own (the accelerator's memory), checks length and CRC, and emits one `Request` per frame (its command, tag
  and length). It stops taking bytes until that request is accepted, so the consumer may read the buffer
  undisturbed while it answers.
* `FrameTransmitter` turns a `Response` header, the tag to echo and a payload byte stream into a response frame.

Command semantics (which commands exist, what they answer) belong to the accelerator top (`hw.top`).
"""

from __future__ import annotations

import contextlib
import functools
import operator

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from hw.spec.protocol import CRC_INIT, LEN_FIELD_MAX, SYNC_REQUEST, SYNC_RESPONSE, crc16


def _crc16_byte_matrix() -> list[tuple[list[int], list[int]]]:
    """For each bit of the updated CRC: which bits of the old CRC and of the byte it is the XOR of.

    The CRC update is linear over GF(2), so it is fully described by its action on unit vectors,
    taken here from `hw.spec.protocol.crc16` itself rather than written out a second time.
    """
    columns = [crc16(b"\x00", crc=1 << i) for i in range(16)]
    byte_columns = [crc16(bytes([1 << i]), crc=0) for i in range(8)]
    return [([i for i in range(16) if columns[i] >> j & 1], [i for i in range(8) if byte_columns[i] >> j & 1])
            for j in range(16)]


_CRC16_BYTE_MATRIX = _crc16_byte_matrix()


def crc16_byte(crc, byte):
    """CRC-16/CCITT-FALSE of `crc` advanced by one byte: a 24-input XOR network, one byte per cycle."""
    bits = []
    for crc_taps, byte_taps in _CRC16_BYTE_MATRIX:
        terms = [crc[i] for i in crc_taps] + [byte[i] for i in byte_taps]
        bits.append(functools.reduce(operator.xor, terms))
    return Cat(*bits)


class UartRx(wiring.Component):
    """8N1 UART receiver: samples each bit at its middle, `divisor` clock cycles per bit.

    The output holds one byte; a byte that completes while the previous one is still unaccepted is
    dropped and `overrun` pulses. A missing stop bit drops the byte, pulses `frame_error`, and the
    receiver waits for the line to return high before hunting for the next start bit.
    """

    def __init__(self, divisor: int):
        if divisor < 4:
            raise ValueError(f"divisor must be at least 4 clock cycles per bit, got {divisor}")
        self.divisor = divisor
        super().__init__({
            "rx": In(1, init=1),
            "o": Out(stream.Signature(8)),
            "overrun": Out(1),
            "frame_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        line = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, line, init=1)

        timer = Signal(range(d))
        bit = Signal(range(8))
        shreg = Signal(8)
        tick = timer == 0
        with m.If(~tick):
            m.d.sync += timer.eq(timer - 1)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        m.d.sync += [self.overrun.eq(0), self.frame_error.eq(0)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    # Check the start bit at ceil(d/2) cycles: for odd d, a pulse shorter than half a bit
                    # must not pass as a start bit.
                    m.d.sync += timer.eq((d + 1) // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(tick):
                    with m.If(line):  # a glitch, not a start bit
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [timer.eq(d - 1), bit.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(tick):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], line)), timer.eq(d - 1), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(tick):
                    with m.If(~line):
                        m.d.sync += self.frame_error.eq(1)
                        m.next = "BREAK"
                    with m.Elif(self.o.valid & ~self.o.ready):
                        m.d.sync += self.overrun.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        m.next = "IDLE"
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """8N1 UART transmitter, `divisor` clock cycles per bit; the line idles high."""

    def __init__(self, divisor: int):
        if divisor < 1:
            raise ValueError(f"divisor must be at least 1 clock cycle per bit, got {divisor}")
        self.divisor = divisor
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor))
        shreg = Signal(10, init=0x3FF)  # stop, data[7:0], start; shifted out LSB first
        left = Signal(range(11))

        # Ready during the stop bit's last cycle too, so back-to-back bytes leave no extra idle cycle.
        last_cycle = (left == 1) & (timer == 0)
        m.d.comb += [self.tx.eq(shreg[0]), self.i.ready.eq((left == 0) | last_cycle)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [
                shreg.eq(Cat(Const(0, 1), self.i.payload, Const(1, 1))),
                left.eq(10),
                timer.eq(self.divisor - 1),
            ]
        with m.Elif(left != 0):
            with m.If(timer == 0):
                m.d.sync += [shreg.eq(Cat(shreg[1:], Const(1, 1))), left.eq(left - 1),
                             timer.eq(self.divisor - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m


class FrameError(enum.Enum, shape=2):
    """What the receiver found wrong with a frame (the top maps it to a response status)."""

    NONE = 0
    BAD_CRC = 1
    OVERSIZE = 2


Request = data.StructLayout({"command": 8, "tag": 8, "length": 16, "error": FrameError})
#: The tag is not part of a response header: whoever answers, the transmitter echoes the request's (its `tag`).
Response = data.StructLayout({"status": 8, "length": 16})


class BufferWriteSignature(wiring.Signature):
    """A write-only port into a byte buffer (driven by the receiver, served by a memory write port)."""

    def __init__(self, depth: int):
        super().__init__({"addr": Out(range(depth)), "data": Out(8), "en": Out(1)})


class FrameReceiver(wiring.Component):
    """Request frames from a byte stream -> `request` beats, payload written to `buffer`.

    Bytes before a sync byte are skipped. A frame longer than `max_payload` is answered as OVERSIZE right
    after its LEN field (the request carries its tag), and its payload is then skipped as garbage. If
    `timeout_cycles` pass without a byte in the middle of a frame, or `expire` is high, the frame is dropped
    silently and the parser hunts for sync again, so a truncated frame never wedges it. While a request is
    pending (valid, not yet ready) no byte is taken. `busy` is high inside a frame and while its request is
    pending: only then does time matter to it.
    """

    def __init__(self, max_payload: int, timeout_cycles: int):
        if not 1 <= max_payload <= LEN_FIELD_MAX:
            raise ValueError(f"max_payload must be in 1..{LEN_FIELD_MAX}, got {max_payload}")
        if timeout_cycles < 1:
            raise ValueError(f"timeout_cycles must be at least 1, got {timeout_cycles}")
        self.max_payload = max_payload
        self.timeout_cycles = timeout_cycles
        super().__init__({
            "i": In(stream.Signature(8)),
            "request": Out(stream.Signature(Request)),
            "buffer": Out(BufferWriteSignature(max_payload)),
            "busy": Out(1),
            "expire": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        byte = self.i.payload
        took = Signal()
        m.d.comb += took.eq(self.i.valid & self.i.ready)

        crc = Signal(16, init=CRC_INIT)
        next_crc = crc16_byte(crc, byte)
        crc_lo = Signal(8)
        length = self.request.payload.length
        index = Signal(range(self.max_payload))

        # Inter-byte timeout: counts idle cycles inside a frame; every in-frame state leaves on `timed_out`.
        idle = Signal(range(self.timeout_cycles))
        in_frame = Signal()
        timed_out = Signal()
        m.d.comb += timed_out.eq(in_frame & ~took & ((idle == self.timeout_cycles - 1) | self.expire))
        with m.If(in_frame & ~took & ~timed_out):
            m.d.sync += idle.eq(idle + 1)
        with m.Else():
            m.d.sync += idle.eq(0)

        with m.If(self.request.valid & self.request.ready):
            m.d.sync += self.request.valid.eq(0)
        m.d.comb += self.busy.eq(in_frame | self.request.valid)

        def emit(error):
            m.d.sync += [self.request.valid.eq(1), self.request.payload.error.eq(error)]

        with m.FSM() as fsm:
            @contextlib.contextmanager
            def frame_state(name):
                with m.State(name):
                    m.d.comb += [self.i.ready.eq(1), in_frame.eq(1)]
                    with m.If(timed_out):
                        m.next = "HUNT"
                    yield

            with m.State("HUNT"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(took & (byte == SYNC_REQUEST)):
                    m.d.sync += crc.eq(CRC_INIT)
                    m.next = "COMMAND"
            with frame_state("COMMAND"):
                with m.If(took):
                    m.d.sync += [self.request.payload.command.eq(byte), crc.eq(next_crc)]
                    m.next = "TAG"
            with frame_state("TAG"):
                with m.If(took):
                    m.d.sync += [self.request.payload.tag.eq(byte), crc.eq(next_crc)]
                    m.next = "LEN_LO"
            with frame_state("LEN_LO"):
                with m.If(took):
                    m.d.sync += [length[:8].eq(byte), crc.eq(next_crc)]
                    m.next = "LEN_HI"
            with frame_state("LEN_HI"):
                with m.If(took):
                    full = Cat(length[:8], byte)
                    m.d.sync += [length[8:].eq(byte), crc.eq(next_crc), index.eq(0)]
                    with m.If(full > self.max_payload):
                        emit(FrameError.OVERSIZE)
                        m.next = "WAIT"
                    with m.Elif(full == 0):
                        m.next = "CRC_LO"
                    with m.Else():
                        m.next = "PAYLOAD"
            with frame_state("PAYLOAD"):
                m.d.comb += [self.buffer.addr.eq(index), self.buffer.data.eq(byte), self.buffer.en.eq(took)]
                with m.If(took):
                    m.d.sync += [crc.eq(next_crc), index.eq(index + 1)]
                    with m.If(index == length - 1):
                        m.next = "CRC_LO"
            with frame_state("CRC_LO"):
                with m.If(took):
                    m.d.sync += crc_lo.eq(byte)
                    m.next = "CRC_HI"
            with frame_state("CRC_HI"):
                with m.If(took):
                    emit(Mux(Cat(crc_lo, byte) == crc, FrameError.NONE, FrameError.BAD_CRC))
                    m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(self.request.ready):
                    m.next = "HUNT"
        del fsm
        return m


class FrameTransmitter(wiring.Component):
    """A `response` header followed by exactly `length` bytes on `payload` -> one response frame on `o`.

    `tag` is taken with the header: the tag of the request being answered, echoed after the status.
    """

    def __init__(self):
        super().__init__({
            "response": In(stream.Signature(Response)),
            "tag": In(8),
            "payload": In(stream.Signature(8)),
            "o": Out(stream.Signature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        status = Signal(8)
        tag = Signal(8)
        length = Signal(16)
        left = Signal(16)
        crc = Signal(16, init=CRC_INIT)
        sent = Signal()
        m.d.comb += sent.eq(self.o.valid & self.o.ready)

        def field(value, *, in_crc: bool):
            m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(value)]
            if in_crc:
                with m.If(sent):
                    m.d.sync += crc.eq(crc16_byte(crc, value))

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.response.ready.eq(1)
                with m.If(self.response.valid):
                    m.d.sync += [status.eq(self.response.payload.status), tag.eq(self.tag),
                                 length.eq(self.response.payload.length),
                                 left.eq(self.response.payload.length),
                                 crc.eq(CRC_INIT)]
                    m.next = "SYNC"
            with m.State("SYNC"):
                field(SYNC_RESPONSE, in_crc=False)
                with m.If(sent):
                    m.next = "STATUS"
            with m.State("STATUS"):
                field(status, in_crc=True)
                with m.If(sent):
                    m.next = "TAG"
            with m.State("TAG"):
                field(tag, in_crc=True)
                with m.If(sent):
                    m.next = "LEN_LO"
            with m.State("LEN_LO"):
                field(length[:8], in_crc=True)
                with m.If(sent):
                    m.next = "LEN_HI"
            with m.State("LEN_HI"):
                field(length[8:], in_crc=True)
                with m.If(sent & (length == 0)):
                    m.next = "CRC_LO"
                with m.Elif(sent):
                    m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                m.d.comb += [self.o.valid.eq(self.payload.valid), self.o.payload.eq(self.payload.payload),
                             self.payload.ready.eq(self.o.ready)]
                with m.If(sent):
                    m.d.sync += [crc.eq(crc16_byte(crc, self.payload.payload)), left.eq(left - 1)]
                    with m.If(left == 1):
                        m.next = "CRC_LO"
            with m.State("CRC_LO"):
                field(crc[:8], in_crc=False)
                with m.If(sent):
                    m.next = "CRC_HI"
            with m.State("CRC_HI"):
                field(crc[8:], in_crc=False)
                with m.If(sent):
                    m.next = "IDLE"
        return m

