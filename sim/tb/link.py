"""Frame layer testbench: the byte-stream `Accelerator` answers exactly as `hw.spec.link.LinkModel` says.

Requests go in with random inter-byte gaps and random tags, responses come out under random backpressure.
Parameters: `max_payload`, `timeout_cycles`, `info` (hex of the INFO payload), `frames` (how many random frames).
"""

from __future__ import annotations

import random

import cocotb
from cocotb.triggers import ClockCycles

from hw.spec.link import LinkModel
from hw.spec.protocol import SYNC_REQUEST, Command, Status, encode_request, encode_response
from sim.tb.common import StreamDriver, StreamSink, start_clock_and_reset, tb_params, tb_rng


class Testbench:
    def __init__(self, dut):
        self.params = tb_params()
        self.max_payload = self.params["max_payload"]
        self.timeout_cycles = self.params["timeout_cycles"]
        self.rng = tb_rng(dut)
        self.model = LinkModel(self.max_payload, bytes.fromhex(self.params["info"]))
        self.driver = StreamDriver(dut, "rx", self.rng, gap_probability=0.3)
        self.sink = StreamSink(dut, "tx", self.rng, ready_probability=0.6)
        self.received = 0
        dut.expire.value = 0

    @classmethod
    async def start(cls, dut) -> Testbench:
        tb = cls(dut)  # idles the input stream (and `expire`) before reset, so no X reaches the design
        await start_clock_and_reset(dut)
        tb.sink.start()
        return tb

    async def exchange(self, data: bytes) -> None:
        """Send `data`, then check that exactly the model's answer arrives."""
        expected = self.model.feed(data)
        await self.driver.send(data)
        budget = 20 * (len(data) + len(expected)) + 200
        got = bytes(await self.sink.wait_for(self.received + len(expected), budget))[self.received:]
        assert got == expected, f"after {data[:16].hex()}...: expected {expected[:24].hex()}, got {got[:24].hex()}"
        self.received += len(expected)
        await ClockCycles(self.driver.clk, 50)
        assert len(self.sink.beats) == self.received, f"unexpected extra bytes {bytes(self.sink.beats[self.received:])}"

    def garbage(self, n: int, allow_sync: bool = False) -> bytes:
        values = range(256) if allow_sync else [b for b in range(256) if b != 0xA5]
        return bytes(self.rng.choice(values) for _ in range(n))

    def random_frame(self) -> bytes:
        rng = self.rng
        kind = rng.choice(["echo", "echo", "echo", "info", "unknown", "bad_crc", "oversize"])
        length = rng.choice([0, 1, self.max_payload, rng.randint(0, self.max_payload)])
        payload = bytes(rng.getrandbits(8) for _ in range(length))
        tag = rng.getrandbits(8)
        if kind == "echo":
            return encode_request(Command.ECHO, payload, tag)
        if kind == "info":
            return encode_request(Command.INFO, payload, tag)
        if kind == "unknown":
            return encode_request(rng.choice([0x00, 0x03, 0x7F, 0xFF]), payload, tag)
        if kind == "bad_crc":
            good = encode_request(Command.ECHO, payload, tag)
            frame = bytearray(good)
            frame[rng.randrange(1, len(frame))] ^= 1 << rng.randrange(8)
            if frame[3:5] != good[3:5]:
                frame[3:5] = good[3:5]  # keep the length: a CRC error, not a short frame
                frame[-1] ^= 0x01
            return bytes(frame)
        oversize = rng.randint(self.max_payload + 1, 0xFFFF)
        header = bytes([SYNC_REQUEST, Command.ECHO, tag]) + oversize.to_bytes(2, "little")
        return header + self.garbage(rng.randint(0, 8))


@cocotb.test()
async def random_frames_with_garbage(dut):
    """Random good and bad frames, garbage between them, every response byte as the model says."""
    tb = await Testbench.start(dut)
    for _ in range(tb.params["frames"]):
        await tb.exchange(tb.garbage(tb.rng.randint(0, 4)) + tb.random_frame())


@cocotb.test()
async def each_error_status_then_good_frame(dut):
    """Each error status is produced, and a good frame right after it still works."""
    tb = await Testbench.start(dut)
    good = encode_request(Command.ECHO, b"still alive", 0x55)
    corrupt = bytearray(encode_request(Command.ECHO, b"x" * 5, 0x11))
    corrupt[-2] ^= 0xFF
    cases = {
        Status.BAD_CRC: (bytes(corrupt), 0x11),
        Status.UNKNOWN_COMMAND: (encode_request(0x42, b"abc", 0x22), 0x22),
        Status.LENGTH_OVER_MAX: (bytes([SYNC_REQUEST, Command.ECHO, 0x33]) + (tb.max_payload + 1).to_bytes(2, "little"),
                                 0x33),
    }
    for status, (frame, tag) in cases.items():
        # The model agrees with the protocol: the error status, echoing the frame's tag.
        assert tb.model.feed(frame) == encode_response(status, tag=tag)
        tb.model.timeout()
        await tb.exchange(frame)
        await tb.exchange(good)


@cocotb.test()
async def truncated_frame_times_out(dut):
    """A frame cut short is dropped after the inter-byte timeout; the next frame is answered."""
    tb = await Testbench.start(dut)
    full = encode_request(Command.ECHO, bytes(range(10)))
    for cut in (1, 3, 4, 9, len(full) - 1):
        await tb.exchange(full[:cut])  # no answer expected yet
        await ClockCycles(dut.clk, tb.timeout_cycles + 10)
        tb.model.timeout()
        await tb.exchange(encode_request(Command.ECHO, bytes([cut]) * 3))


@cocotb.test()
async def truncated_frame_expires_on_request(dut):
    """`expire` drops a half-received frame at once, as the timeout would; outside a frame it changes nothing."""
    tb = await Testbench.start(dut)
    full = encode_request(Command.ECHO, bytes(range(10)), 0x7E)
    for cut in (1, 2, 5, len(full) - 1):
        await tb.exchange(full[:cut])
        dut.expire.value = 1
        await ClockCycles(dut.clk, 1)
        dut.expire.value = 0
        tb.model.timeout()
        await tb.exchange(encode_request(Command.ECHO, bytes([cut]) * 3, cut))
    dut.expire.value = 1  # between frames it changes nothing
    await ClockCycles(dut.clk, 5)
    dut.expire.value = 0
    await tb.exchange(full)


@cocotb.test()
async def arbitrary_byte_noise_never_wedges(dut):
    """Noise that may contain sync bytes: the RTL agrees with the model, then recovers after a timeout."""
    tb = await Testbench.start(dut)
    for _ in range(5):
        await tb.exchange(tb.garbage(tb.rng.randint(1, 3 * tb.max_payload), allow_sync=True))
        await ClockCycles(dut.clk, tb.timeout_cycles + 10)
        tb.model.timeout()
        await tb.exchange(encode_request(Command.ECHO, random.Random(1).randbytes(7)))
