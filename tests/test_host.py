"""Host driver: URL parsing and every way a response can go wrong, against a scripted transport."""

from __future__ import annotations

import pytest

from host.device import Device, DeviceError
from host.transport import Transport, open_transport
from hw.spec.protocol import Command, Status, encode_request, encode_response


class ScriptedTransport(Transport):
    """Answers each write with the next scripted bytes; records what was written."""

    def __init__(self, *answers: bytes):
        self.answers = list(answers)
        self.written: list[bytes] = []
        self.buffer = bytearray()

    def write(self, data: bytes) -> None:
        self.written.append(data)
        if self.answers:
            self.buffer += self.answers.pop(0)

    def _read_some(self, n: int, timeout: float) -> bytes:
        data, self.buffer = bytes(self.buffer[:n]), self.buffer[n:]
        return data

    def close(self) -> None:
        pass


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
    transport = ScriptedTransport(b"\x00\xff" + encode_response(Status.OK, b"pong"))
    assert Device(transport).request(Command.ECHO, b"pong") == b"pong"
    assert transport.written == [encode_request(Command.ECHO, b"pong")]


@pytest.mark.parametrize("answer, message", [
    (encode_response(Status.BAD_CRC), "device answered BAD_CRC to ECHO"),
    (encode_response(Status.UNKNOWN_COMMAND), "device answered UNKNOWN_COMMAND to ECHO"),
    (encode_response(0x99), "device answered 0x99 to ECHO"),
    (encode_response(Status.OK, b"abc")[:-1] + b"\x00", "bad response to ECHO: CRC mismatch"),
    (encode_response(Status.OK, b"abc")[:5], "no complete response"),
    (b"", "no complete response"),
])
def test_bad_responses_raise_clear_errors(answer, message):
    with pytest.raises(DeviceError, match=message):
        Device(ScriptedTransport(answer), timeout=0.05).request(Command.ECHO, b"abc")


def test_info_must_be_json_and_limits_echo_length():
    with pytest.raises(DeviceError, match="not JSON"):
        Device(ScriptedTransport(encode_response(Status.OK, b"{nope"))).info()
    dev = Device(ScriptedTransport(encode_response(Status.OK, b'{"max_payload": 8}')))
    with pytest.raises(ValueError, match=r"echo payload length must be in 0\.\.8, got 9"):
        dev.echo(bytes(9))
