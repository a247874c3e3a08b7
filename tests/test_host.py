"""Host driver: URL parsing, every way a response can go wrong, and the tags that pair each request with its
answer, against a scripted transport (no device, milliseconds)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from host.device import Device, DeviceError
from host.transport import Transport, open_transport
from hw.spec.protocol import Command, Stall, Status, Waiting, encode_request, encode_response

Answer = bytes | Callable[[bytes], bytes]


class ScriptedTransport(Transport):
    """Answers each write with the next scripted answer (bytes, or a function of the request frame); records
    what was written and the timeout of each read. Bytes put in `buffer` beforehand are waiting already."""

    def __init__(self, *answers: Answer, seconds_per_byte: float = 0.0):
        self.answers = list(answers)
        self.written: list[bytes] = []
        self.buffer = bytearray()
        self.timeouts: list[float] = []
        self.seconds_per_byte = seconds_per_byte

    def write(self, data: bytes) -> None:
        self.written.append(data)
        if self.answers:
            answer = self.answers.pop(0)
            self.buffer += answer(data) if callable(answer) else answer

    def _read_some(self, n: int, timeout: float) -> bytes:
        if timeout:
            self.timeouts.append(timeout)
        data, self.buffer = bytes(self.buffer[:n]), self.buffer[n:]
        if not data:
            time.sleep(min(timeout, 0.001))  # as a link would wait, rather than spin
        return data

    def close(self) -> None:
        pass

    def seconds(self, link_bytes: int, cycles: int = 0, clock_hz: float | None = None) -> float:
        return link_bytes * self.seconds_per_byte + (cycles / clock_hz if clock_hz else 0.0)


def answer(status: int, payload: bytes = b"", before: bytes = b"", after: bytes = b"") -> Callable[[bytes], bytes]:
    """The device's answer to a request, with its tag, between other bytes on the wire."""
    return lambda request: before + encode_response(status, payload, request[2]) + after


def info_answer(**info) -> Callable[[bytes], bytes]:
    return answer(Status.OK, json.dumps({"max_payload": 64, "clock_hz": 1000, **info}).encode())


@pytest.mark.parametrize("url, field", [
    ("tcp://127.0.0.1", "host and a port"),
    ("tcp://:1234", "host and a port"),
    ("serial://", "device path"),
    ("serial:///dev/ttyUSB9?baud=fast", "baud must be an integer"),
    ("serial:///dev/ttyUSB9?baud=0", "baud must be positive"),
    ("udp://127.0.0.1:5", "unknown transport scheme 'udp'"),
    ("127.0.0.1:5", "unknown transport scheme"),
])
def test_bad_urls_are_named(url, field):
    with pytest.raises(ValueError, match=field):
        open_transport(url)


def test_request_skips_noise_and_returns_payload():
    transport = ScriptedTransport(b"\x00\xff" + encode_response(Status.OK, b"pong", 0x41))
    dev = Device(transport)
    dev.next_tag = 0x41
    assert dev.request(Command.ECHO, b"pong") == b"pong"
    assert transport.written == [encode_request(Command.ECHO, b"pong", 0x41)]
    assert dev.next_tag == 0x42


def test_tags_count_modulo_256():
    dev = Device(ScriptedTransport(*[answer(Status.OK, b"x")] * 3))
    dev.next_tag = 0xFE
    for _ in range(3):
        dev.request(Command.ECHO, b"x")
    assert [frame[2] for frame in dev.transport.written] == [0xFE, 0xFF, 0x00]


@pytest.mark.parametrize("reply, message", [
    (answer(Status.BAD_CRC), r"^device answered BAD_CRC to ECHO$"),
    (answer(Status.UNKNOWN_COMMAND), r"^device answered UNKNOWN_COMMAND to ECHO$"),
    (answer(0x99), r"^device answered 0x99 to ECHO$"),
    (lambda r: encode_response(Status.OK, b"abc", r[2])[:-1] + b"\x00", "^bad response to ECHO: CRC mismatch"),
    (lambda r: encode_response(Status.OK, b"abc", r[2])[:6], r"^no complete response to ECHO \(tag 0x..\) in .* s "
                                                             r"\(6 of its 10 bytes came\)$"),
    (b"", r"^no complete response to ECHO \(tag 0x..\) in [0-9.]+ s$"),
])
def test_bad_responses_raise_clear_errors(reply, message):
    with pytest.raises(DeviceError, match=message):
        Device(ScriptedTransport(reply), timeout=0.05).request(Command.ECHO, b"abc")


def test_info_must_be_json_and_limits_echo_length():
    with pytest.raises(DeviceError, match="not JSON"):
        Device(ScriptedTransport(answer(Status.OK, b"{nope"))).info()
    dev = Device(ScriptedTransport(answer(Status.OK, b'{"max_payload": 8}')))
    with pytest.raises(ValueError, match=r"echo payload length must be in 0\.\.8, got 9"):
        dev.echo(bytes(9))


def test_answers_to_other_requests_and_garbage_are_dropped():
    """Each request gets its own answer however the stream around it is littered: bytes waiting before it goes
    out (drained), garbage with sync bytes, a duplicated earlier answer, an answer with another tag (whose
    payload even holds a well-formed frame with this request's tag), a damaged frame, the head of a late answer
    that never completes."""
    def littered(request: bytes) -> bytes:
        tag = request[2]
        other = (tag + 7) % 256
        damaged = bytearray(encode_response(Status.OK, b"zz", other))
        damaged[-1] ^= 1
        return (b"\x5a\x00" + encode_response(Status.OK, b"dup", (tag - 1) % 256) + b"\x13\x5a"
                + encode_response(Status.OK, encode_response(Status.OK, b"evil", tag), other) + bytes(damaged)
                + encode_response(Status.OK, bytes(200), other)[:9] + encode_response(Status.OK, b"mine", tag))

    transport = ScriptedTransport(littered, answer(Status.OK, b"next"))
    dev = Device(transport, timeout=0.05)
    transport.buffer += encode_response(Status.OK, b"stale", dev.next_tag)  # waiting before the request
    assert dev.request(Command.ECHO, b"mine") == b"mine"
    assert dev.request(Command.ECHO, b"next") == b"next"  # nothing left over
    assert transport.buffer == b""


def test_after_a_failure_the_next_request_works():
    """A timeout (only answers to other requests came), a damaged answer and BAD_CRC each raise DeviceError; the
    request after each gets its own answer. After BAD_CRC (the device may hold the rest of a frame) the next
    request waits 1.25 frame timeouts."""
    def wrong_tags(request: bytes) -> bytes:
        return b"".join(encode_response(Status.OK, b"x", (request[2] + k) % 256) for k in (1, 2, 255))

    def damaged(request: bytes) -> bytes:
        frame = bytearray(encode_response(Status.OK, b"x", request[2]))
        frame[5] ^= 0x10
        return bytes(frame)

    transport = ScriptedTransport(info_answer(frame_timeout_ms=20), wrong_tags, answer(Status.OK, b"a"), damaged,
                                  answer(Status.OK, b"b"), answer(Status.BAD_CRC), answer(Status.OK, b"c"))
    dev = Device(transport, timeout=0.02)
    dev.info()
    with pytest.raises(DeviceError, match="^no complete response to ECHO"):
        dev.echo(b"a")
    assert dev.echo(b"a") == b"a"
    with pytest.raises(DeviceError, match="^bad response to ECHO: CRC mismatch"):
        dev.echo(b"b")
    assert dev.echo(b"b") == b"b"
    with pytest.raises(DeviceError, match="^device answered BAD_CRC to ECHO$"):
        dev.echo(b"c")
    started = time.monotonic()
    assert dev.echo(b"c") == b"c"
    assert time.monotonic() - started >= 0.02


def test_timeouts_fit_the_work():
    """The least wait is `timeout`; a RUN whose cycles are given gets twice their time at INFO's clock, and an
    answer whose header announces a long payload twice its time on the link."""
    run_answer = answer(Status.OK, (1234).to_bytes(4, "little"))
    transport = ScriptedTransport(info_answer(clock_hz=1000), run_answer, run_answer, seconds_per_byte=0.0005)
    dev = Device(transport, timeout=0.05)
    dev.info()
    assert dev.run(0, 1) == 1234
    assert transport.timeouts[-1] == pytest.approx(0.05, abs=0.005)
    assert dev.run(0, 1, expected_cycles=300) == 1234
    assert transport.timeouts[-1] == pytest.approx(2 * (0.3 + 0.0005 * (9 + 7)), abs=0.005)
    transport.answers.append(lambda r: encode_response(Status.OK, bytes(400), r[2])[:10])
    started = time.monotonic()
    with pytest.raises(DeviceError, match=r"^no complete response to INFO .*\(10 of its 407 bytes came\)$"):
        dev.request(Command.INFO)
    assert time.monotonic() - started >= 2 * 0.0005 * 402 - 0.005


def test_a_run_waits_for_the_watchdog_too():
    """A stalled layer is answered after INFO's watchdog_cycles without progress, so a RUN's timeout adds them to
    the expected cycles at INFO's clock; a Device that has no INFO yet asks for it first."""
    run_answer = answer(Status.OK, (77).to_bytes(4, "little"))
    transport = ScriptedTransport(info_answer(clock_hz=1000, watchdog_cycles=200), run_answer, run_answer,
                                  seconds_per_byte=0.0005)
    dev = Device(transport, timeout=0.05)
    assert dev.run(0, 1) == 77
    assert [frame[1] for frame in transport.written] == [Command.INFO, Command.RUN]  # CMD follows the sync byte
    assert transport.timeouts[-1] == pytest.approx(2 * (0.2 + 0.0005 * (9 + 7)), abs=0.005)
    assert dev.run(0, 1, expected_cycles=300) == 77
    assert transport.timeouts[-1] == pytest.approx(2 * (0.5 + 0.0005 * (9 + 7)), abs=0.005)


def test_stalled_run_names_the_layer():
    """A STALLED answer raises DeviceError with the aborted layer, what it waited for and the cycles; the next
    request goes out at once (the device answered a whole frame)."""
    stall = bytes([3, Waiting.X | Waiting.OUTPUT]) + (5000).to_bytes(4, "little")
    transport = ScriptedTransport(answer(Status.STALLED, stall), answer(Status.STALLED, b"\x03"),
                                  answer(Status.OK, b"ok"))
    dev = Device(transport, timeout=0.05)
    with pytest.raises(DeviceError, match=r"^device answered STALLED to RUN: layer 3 made no progress \(waiting: x, "
                                          r"output\), aborted after 5000 cycles$") as caught:
        dev.request(Command.RUN, b"\x00\x05")
    assert caught.value.status == Status.STALLED
    assert caught.value.stall == Stall(3, Waiting.X | Waiting.OUTPUT, 5000)
    with pytest.raises(DeviceError, match=r"^device answered STALLED to RUN: STALLED payload must be 6 bytes, got 1$"):
        dev.request(Command.RUN, b"\x00\x05")
    started = time.monotonic()
    assert dev.request(Command.ECHO, b"ok") == b"ok" and time.monotonic() - started < 0.05
