"""The device driver: one request, one response, over any `Transport`.

    with Device.open("tcp://127.0.0.1:4567") as dev:
        print(dev.info())
        assert dev.echo(b"hello") == b"hello"
"""

from __future__ import annotations

import json
from typing import Any

from .protocol import (
    CRC_BYTES,
    HEADER_BYTES,
    SYNC_RESPONSE,
    Command,
    ProtocolError,
    Status,
    decode_frame,
    encode_request,
)
from .transport import Transport, open_transport

#: Bytes of noise tolerated before a response's sync byte (a board that was mid-answer when we attached).
MAX_SKIPPED_BYTES = 1 << 16


class DeviceError(RuntimeError):
    """The device answered with an error status, a malformed frame, or not at all."""


class Device:
    """A connected sqgen device (real board or virtual board)."""

    def __init__(self, transport: Transport, timeout: float = 5.0):
        self.transport = transport
        self.timeout = timeout
        self._info: dict[str, Any] | None = None

    @classmethod
    def open(cls, url: str, timeout: float = 5.0) -> Device:
        """Connect to the device a URL names (see `host.transport`)."""
        return cls(open_transport(url), timeout)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, command: int, payload: bytes = b"") -> bytes:
        """Send one request and return the payload of its OK response; anything else raises DeviceError."""
        name = _name(Command, command)
        self.transport.write(encode_request(command, payload))
        try:
            frame = decode_frame(self._read_response(), SYNC_RESPONSE)
        except ProtocolError as exc:
            raise DeviceError(f"bad response to {name}: {exc}") from None
        if frame.code != Status.OK:
            raise DeviceError(f"device answered {_name(Status, frame.code)} to {name}")
        return frame.payload

    def _read_response(self) -> bytes:
        try:
            for _ in range(MAX_SKIPPED_BYTES):
                sync = self.transport.read(1, self.timeout)
                if sync[0] == SYNC_RESPONSE:
                    break
            else:
                raise DeviceError(f"no response sync byte 0x{SYNC_RESPONSE:02X} in {MAX_SKIPPED_BYTES} bytes")
            header = self.transport.read(HEADER_BYTES - 1, self.timeout)
            rest = self.transport.read(int.from_bytes(header[1:3], "little") + CRC_BYTES, self.timeout)
        except TimeoutError as exc:
            raise DeviceError(f"no complete response: {exc}") from None
        return sync + header + rest

    def info(self) -> dict[str, Any]:
        """The device's self-description (sqgen and protocol versions, board, clock, blocks, max payload)."""
        raw = self.request(Command.INFO)
        try:
            self._info = json.loads(raw)
        except ValueError as exc:
            raise DeviceError(f"INFO payload is not JSON: {exc}") from None
        return self._info

    @property
    def max_payload(self) -> int:
        if self._info is None:
            self.info()
        return int(self._info["max_payload"])

    def echo(self, data: bytes) -> bytes:
        """Send `data` and return what the device sent back (it should be equal)."""
        if len(data) > self.max_payload:
            raise ValueError(f"echo payload length must be in 0..{self.max_payload}, got {len(data)}")
        return self.request(Command.ECHO, data)


def _name(kind, code: int) -> str:
    try:
        return kind(code).name
    except ValueError:
        return f"0x{code:02X}"
