"""cocotb testbench for the UART PHY pair: a `UartRx` and a `UartTx` side by side with independent ports.

DUT ports: `rx`, `o` (stream), `overrun`, `frame_error` of the receiver; `i` (stream), `tx` of the transmitter.
Parameters (`tb_params()`): `divisor` (clock cycles per bit, both PHYs) and optionally `baud_error`, the
relative rate error of the far end (default: random within +-2%, which 8N1 with mid-bit sampling tolerates).

The far end is `UartModel`: it drives a line bit by bit in simulated time, not in clock cycles, so its
edges fall at any phase of the DUT clock, and it decodes a line by sampling each bit at its middle.
`UartModel` and `wait_until` are also used by the pin-level link testbench (`sim.tb.uart_link`).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import cocotb
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, Timer

from sim.tb.common import CLOCK_PERIOD_NS, start_clock_and_reset, tb_params, tb_rng

CLOCK_PERIOD_PS = CLOCK_PERIOD_NS * 1000
MAX_BAUD_ERROR = 0.02


class UartModel:
    """The far end of a serial link: 8N1, `divisor` DUT clock cycles per bit, its own clock off by `error`."""

    def __init__(self, divisor: int, error: float = 0.0):
        self.divisor = divisor
        self.error = error
        self.bit_ps = round(divisor * CLOCK_PERIOD_PS * (1 + error))

    async def idle(self, line, bits: float) -> None:
        """Hold `line` high (idle) for `bits` bit times."""
        line.value = 1
        if bits > 0:
            await Timer(max(1, round(bits * self.bit_ps)), unit="ps")

    async def send(self, line, byte: int, *, stop: int = 1) -> None:
        """Drive one frame (start, 8 data bits LSB first, stop) on `line`; `stop=0` sends a broken stop bit."""
        for bit in [0, *((byte >> i) & 1 for i in range(8)), stop]:
            line.value = bit
            await Timer(self.bit_ps, unit="ps")
        line.value = 1

    async def send_bytes(self, line, data: bytes, rng: random.Random, max_idle_bits: float = 2.0) -> None:
        """Send `data`, each byte after a random idle time (none half of the time, so also back to back)."""
        for byte in data:
            if rng.random() < 0.5:
                await self.idle(line, rng.uniform(0, max_idle_bits))
            await self.send(line, byte)

    async def receive(self, line) -> int:
        """Wait for a start bit on `line` and decode its frame by sampling each bit at its middle."""
        await FallingEdge(line)
        await Timer(self.bit_ps // 2, unit="ps")
        if int(line.value) != 0:
            raise AssertionError(f"start bit on {line._name} shorter than half a bit")
        byte = 0
        for i in range(8):
            await Timer(self.bit_ps, unit="ps")
            byte |= int(line.value) << i
        await Timer(self.bit_ps, unit="ps")
        if int(line.value) != 1:
            raise AssertionError(f"stop bit on {line._name} is low (byte 0x{byte:02X})")
        return byte

    async def collect(self, line, out: list[int]) -> None:
        """Decode `line` forever, appending each byte to `out` (run as a task; its errors fail the test)."""
        while True:
            out.append(await self.receive(line))


async def wait_until(condition: Callable[[], bool], timeout_ps: int, what: str, poll_ps: int = 10_000) -> None:
    """Poll `condition` every `poll_ps`; fail with `what` if it does not hold within `timeout_ps`."""
    waited = 0
    while not condition():
        if waited >= timeout_ps:
            raise AssertionError(f"timed out after {timeout_ps / 1e6:.3f} us waiting for {what}")
        await Timer(poll_ps, unit="ps")
        waited += poll_ps


class RxMonitor:
    """Per cycle: drives `o__ready`, collects the bytes of `o`, records the cycles `overrun`/`frame_error` pulse.

    With `reading` set, `ready` follows bursts of at most `8 * divisor` low cycles: mild enough that a byte
    is always taken before the next one (at least ~9.8 bit times later at -2% rate) completes.
    """

    def __init__(self, dut, rng: random.Random, divisor: int):
        self.dut = dut
        self.rng = rng
        self.divisor = divisor
        self.reading = True
        self.beats: list[int] = []
        self.overruns: list[int] = []
        self.frame_errors: list[int] = []
        self.cycle = 0
        dut.o__ready.value = 0
        cocotb.start_soon(self._run())

    async def _run(self) -> None:
        dut, rng, d = self.dut, self.rng, self.divisor
        ready, hold = 1, 0
        while True:
            if hold == 0:
                ready = 1 - ready
                hold = rng.randint(1, 3 * d) if ready else rng.randint(0, 8 * d)
            else:
                hold -= 1
            drive = ready if self.reading else 0
            dut.o__ready.value = drive
            await RisingEdge(dut.clk)
            self.cycle += 1
            if drive and int(dut.o__valid.value):
                self.beats.append(int(dut.o__payload.value))
            if int(dut.overrun.value):
                self.overruns.append(self.cycle)
            if int(dut.frame_error.value):
                self.frame_errors.append(self.cycle)

    def check_pulses(self, overruns: int, frame_errors: int) -> None:
        """Exactly this many `overrun` and `frame_error` pulses so far, each one cycle wide."""
        for name, cycles, count in (("overrun", self.overruns, overruns),
                                    ("frame_error", self.frame_errors, frame_errors)):
            assert len(cycles) == count, f"{name}: expected {count} pulse cycles, got {len(cycles)} at {cycles}"
            assert all(b - a > 1 for a, b in zip(cycles, cycles[1:])), f"{name} pulse wider than a cycle: {cycles}"


async def setup(dut) -> tuple[int, random.Random, UartModel]:
    """Idle lines, clock and reset; the divisor, the testbench's generator and the far end's model."""
    params = tb_params()
    divisor = params["divisor"]
    rng = tb_rng(dut)
    error = params.get("baud_error")
    if error is None:
        error = rng.uniform(-MAX_BAUD_ERROR, MAX_BAUD_ERROR)
    model = UartModel(divisor, error)
    dut._log.info("divisor %d, far end rate error %+.2f%% (%d ps per bit)", divisor, 100 * error, model.bit_ps)
    dut.rx.value = 1
    dut.i__valid.value = 0
    dut.i__payload.value = 0
    await start_clock_and_reset(dut)
    return divisor, rng, model


def byte_timeout_ps(model: UartModel, count: int) -> int:
    """Generous time for `count` frames with up to two idle bits each, plus the receiver's latency."""
    return count * 13 * model.bit_ps + 20 * model.divisor * CLOCK_PERIOD_PS


@cocotb.test(timeout_time=50, timeout_unit="ms")
async def test_rx_all_bytes_with_backpressure(dut):
    """Every byte value, in random order and spacing, arrives in order; no overrun under mild backpressure."""
    divisor, rng, model = await setup(dut)
    monitor = RxMonitor(dut, rng, divisor)
    data = list(range(256)) + [rng.randrange(256) for _ in range(64)]
    rng.shuffle(data)
    await model.send_bytes(dut.rx, bytes(data), rng)
    await wait_until(lambda: len(monitor.beats) >= len(data), byte_timeout_ps(model, 1), "the last byte")
    await ClockCycles(dut.clk, 2 * divisor)
    assert monitor.beats == data, f"received {bytes(monitor.beats).hex()}, sent {bytes(data).hex()}"
    monitor.check_pulses(overruns=0, frame_errors=0)


@cocotb.test(timeout_time=10, timeout_unit="ms")
async def test_rx_overrun_keeps_first_byte(dut):
    """Bytes completing while the output is still full are dropped with an `overrun` pulse each."""
    divisor, rng, model = await setup(dut)
    monitor = RxMonitor(dut, rng, divisor)
    monitor.reading = False
    first, *dropped = (rng.randrange(256) for _ in range(3))
    await model.send_bytes(dut.rx, bytes([first, *dropped]), rng)
    await ClockCycles(dut.clk, 2 * divisor)
    monitor.check_pulses(overruns=len(dropped), frame_errors=0)
    assert int(dut.o__valid.value) == 1, "the first byte should still be waiting on o"
    assert int(dut.o__payload.value) == first, f"o holds 0x{int(dut.o__payload.value):02X}, first was 0x{first:02X}"
    monitor.reading = True
    await wait_until(lambda: len(monitor.beats) >= 1, byte_timeout_ps(model, 1), "the held byte")
    # Once drained, the receiver works as before.
    after = rng.randrange(256)
    await model.send_bytes(dut.rx, bytes([after]), rng)
    await wait_until(lambda: len(monitor.beats) >= 2, byte_timeout_ps(model, 1), "the byte after the overrun")
    await ClockCycles(dut.clk, 2 * divisor)
    assert monitor.beats == [first, after], f"received {monitor.beats}, expected {[first, after]}"
    monitor.check_pulses(overruns=len(dropped), frame_errors=0)


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def test_rx_broken_stop_bit(dut):
    """A byte with a low stop bit pulses `frame_error` and is dropped; the next good byte still arrives."""
    divisor, rng, model = await setup(dut)
    monitor = RxMonitor(dut, rng, divisor)
    good = []
    broken_values = [0x00, 0xFF, 0x55, *(rng.randrange(256) for _ in range(5))]
    for broken in broken_values:
        before, after = rng.randrange(256), rng.randrange(256)
        await model.send_bytes(dut.rx, bytes([before]), rng)
        await model.send(dut.rx, broken, stop=0)
        # The line must be seen high again before the next start bit is a start bit at all.
        await model.idle(dut.rx, rng.uniform(1, 2))
        await model.send_bytes(dut.rx, bytes([after]), rng)
        good += [before, after]
    await wait_until(lambda: len(monitor.beats) >= len(good), byte_timeout_ps(model, 1), "the last good byte")
    await ClockCycles(dut.clk, 2 * divisor)
    assert monitor.beats == good, f"received {bytes(monitor.beats).hex()}, expected {bytes(good).hex()}"
    monitor.check_pulses(overruns=0, frame_errors=len(broken_values))


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def test_rx_ignores_short_glitch(dut):
    """A low pulse shorter than half a bit is not a start bit: no byte, no error, and bytes after it arrive."""
    divisor, rng, model = await setup(dut)
    monitor = RxMonitor(dut, rng, divisor)
    # Whole cycles below half a bit: the receiver samples the start bit divisor // 2 cycles after seeing it.
    longest_ps = (divisor - 1) // 2 * CLOCK_PERIOD_PS - 100
    good = []
    for _ in range(20):
        await Timer(rng.randrange(1, CLOCK_PERIOD_PS), unit="ps")  # any phase of the DUT clock
        dut.rx.value = 0
        await Timer(rng.randrange(100, longest_ps + 1), unit="ps")
        await model.idle(dut.rx, rng.uniform(2, 3))
        if rng.random() < 0.5:
            good.append(rng.randrange(256))
            await model.send_bytes(dut.rx, bytes(good[-1:]), rng)
            await model.idle(dut.rx, 1)
    good.append(rng.randrange(256))
    await model.send_bytes(dut.rx, bytes(good[-1:]), rng)
    await wait_until(lambda: len(monitor.beats) >= len(good), byte_timeout_ps(model, 1), "the last good byte")
    await ClockCycles(dut.clk, 2 * divisor)
    assert monitor.beats == good, f"received {bytes(monitor.beats).hex()}, expected {bytes(good).hex()}"
    monitor.check_pulses(overruns=0, frame_errors=0)


def capture_every_cycle(dut, signal) -> list[int]:
    """A list that a background task fills with `signal`'s value at every rising clock edge."""
    samples: list[int] = []

    async def sample() -> None:
        while True:
            await RisingEdge(dut.clk)
            samples.append(int(signal.value))

    cocotb.start_soon(sample())
    return samples


def decode_tx_cycles(samples: list[int], divisor: int) -> list[int]:
    """Bytes in a per-cycle capture of a tx line, requiring every bit to last exactly `divisor` cycles.

    Each frame is cut into ten windows of `divisor` samples from its first low sample; each window must be
    one level, so a bit one cycle long or short misaligns the windows and shows as a mixed one.
    """
    out = []
    i = 0
    while True:
        while i < len(samples) and samples[i]:
            i += 1
        if i == len(samples):
            return out
        if len(samples) - i < 10 * divisor:
            raise AssertionError(f"frame starting at cycle {i} cut off by the end of the capture")
        bits = []
        for k in range(10):
            window = samples[i + k * divisor:i + (k + 1) * divisor]
            if len(set(window)) != 1:
                raise AssertionError(f"bit {k} of the frame starting at cycle {i} is not {divisor} cycles of one "
                                     f"level: {window} (frame {samples[i:i + 10 * divisor]})")
            bits.append(window[0])
        if bits[9] != 1:
            raise AssertionError(f"stop bit of the frame starting at cycle {i} is low")
        out.append(sum(bit << k for k, bit in enumerate(bits[1:9])))
        i += 10 * divisor


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def test_tx_bit_timing(dut):
    """Bytes pushed with random gaps leave on `tx` with exact bit timing and decode to the same bytes."""
    divisor, rng, model = await setup(dut)
    samples = capture_every_cycle(dut, dut.tx)
    decoded: list[int] = []
    cocotb.start_soon(model.collect(dut.tx, decoded))

    data = [0x00, 0xFF, 0x55, 0xAA, *(rng.randrange(256) for _ in range(60))]
    for byte in data:
        # Half the bytes are offered at once, so some wait while the previous one is still shifting out.
        if rng.random() < 0.5:
            dut.i__valid.value = 0
            await ClockCycles(dut.clk, rng.randint(1, 15 * divisor))
        dut.i__valid.value = 1
        dut.i__payload.value = byte
        await RisingEdge(dut.clk)
        while not int(dut.i__ready.value):
            await RisingEdge(dut.clk)
    dut.i__valid.value = 0
    await ClockCycles(dut.clk, 12 * divisor)

    assert samples[0] == 1 and samples[-1] == 1, "tx must idle high"
    timed = decode_tx_cycles(samples, divisor)
    assert timed == data, f"tx carried {bytes(timed).hex()}, sent {bytes(data).hex()}"
    assert decoded == data, f"mid-bit decoding gave {bytes(decoded).hex()}, sent {bytes(data).hex()}"


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def test_tx_back_to_back_full_rate(dut):
    """Bytes offered without a gap leave without idle time: one frame every 10 bit times exactly."""
    divisor, rng, model = await setup(dut)
    samples = capture_every_cycle(dut, dut.tx)
    data = [rng.randrange(256) for _ in range(16)]
    for byte in data:
        dut.i__valid.value = 1
        dut.i__payload.value = byte
        await RisingEdge(dut.clk)
        while not int(dut.i__ready.value):
            await RisingEdge(dut.clk)
    dut.i__valid.value = 0
    await ClockCycles(dut.clk, 12 * divisor)

    first = samples.index(0)
    frames = samples[first:first + 10 * divisor * len(data)]
    # Decoding exactly the contiguous span proves each frame starts right where the previous one ends.
    assert decode_tx_cycles(frames, divisor) == data, f"back-to-back frames are not contiguous: {frames}"
