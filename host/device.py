"""The device driver: one request, one response, over any `Transport`.

    with Device.open("tcp://127.0.0.1:4567") as dev:
        print(dev.info())
        assert dev.echo(b"hello") == b"hello"
        dev.load(region, 0, beats)            # an accelerator with engines: fill a region,
        cycles = dev.run(0, 2)                # run program descriptors 0 and 1,
        out = dev.read(0, 0, 400)             # read an activation buffer

The payload builders (`load_payloads`, `run_payload`, `read_payloads`) are separate so a testbench can script the
same requests without a device.
"""

from __future__ import annotations

import json
from typing import Any

from hw.spec.protocol import (
    CRC_BYTES,
    HEADER_BYTES,
    LOAD_HEADER_BYTES,
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
    """The device answered with an error status (`status`, else None), a malformed frame, or not at all."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def load_payloads(region: int, offset: int, data: bytes, beat_bytes: int, max_payload: int) -> list[bytes]:
    """LOAD payloads writing `data` (whole beats of `beat_bytes`) into `region` from beat `offset`, each frame
    as many beats as `max_payload` allows."""
    if beat_bytes < 1 or len(data) % beat_bytes:
        raise ValueError(f"data length must be a multiple of the beat size {beat_bytes}, got {len(data)}")
    per_frame = (max_payload - LOAD_HEADER_BYTES) // beat_bytes
    if per_frame < 1:
        raise ValueError(f"max_payload={max_payload} cannot carry one beat of {beat_bytes} bytes")
    beats = len(data) // beat_bytes
    if not 0 <= region <= 0xFF or not 0 <= offset or offset + beats > 0x10000:
        raise ValueError(f"region must be in 0..255 and offset + beats at most 65536, got {region}, {offset}+{beats}")
    out = []
    for first in range(0, beats, per_frame):
        chunk = data[first * beat_bytes:(first + per_frame) * beat_bytes]
        out.append(bytes([region]) + (offset + first).to_bytes(2, "little") + chunk)
    return out


def run_payload(first: int, count: int) -> bytes:
    """The RUN payload for program descriptors first..first+count-1."""
    if not (0 <= first <= 0xFF and 1 <= count <= 0xFF):
        raise ValueError(f"first must be in 0..255 and count in 1..255, got {first}, {count}")
    return bytes([first, count])


def read_payloads(buffer: int, offset: int, length: int, max_payload: int) -> list[bytes]:
    """READ payloads for `length` bytes of activation buffer `buffer` from `offset`, at most max_payload each."""
    if not 0 <= buffer <= 0xFF or offset < 0 or length < 0 or offset + length > 0x10000:
        raise ValueError(f"buffer must be in 0..255 and offset + length at most 65536, got {buffer}, {offset}+{length}")
    return [bytes([buffer]) + (offset + start).to_bytes(2, "little")
            + min(max_payload, length - start).to_bytes(2, "little") for start in range(0, length, max_payload)]


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
            raise DeviceError(f"device answered {_name(Status, frame.code)} to {name}", frame.code)
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

    def _region_beat_bytes(self, region: int) -> int:
        if self._info is None:
            self.info()
        for entry in self._info.get("regions", []):
            if int(entry["id"]) == region:
                return int(entry["bytes"])
        raise ValueError(f"the device has no region {region}")

    def load(self, region: int, offset: int, beats_bytes: bytes) -> None:
        """Write whole beats (each the region's INFO `bytes` long, little-endian) into `region` from beat `offset`."""
        for payload in load_payloads(region, offset, bytes(beats_bytes), self._region_beat_bytes(region),
                                     self.max_payload):
            self.request(Command.LOAD, payload)

    def run(self, first: int, count: int) -> int:
        """Run program descriptors first..first+count-1; returns the clock cycles the device took."""
        answer = self.request(Command.RUN, run_payload(first, count))
        if len(answer) != 4:
            raise DeviceError(f"RUN answer must be 4 bytes (the cycle count), got {len(answer)}")
        return int.from_bytes(answer, "little")

    def read(self, buffer: int, offset: int, length: int) -> bytes:
        """`length` bytes of activation buffer `buffer` (0 = act0, 1 = act1) from `offset`."""
        out = b"".join(self.request(Command.READ, payload)
                       for payload in read_payloads(buffer, offset, length, self.max_payload))
        if len(out) != length:
            raise DeviceError(f"READ answered {len(out)} bytes, asked for {length}")
        return out


def _name(kind, code: int) -> str:
    try:
        return kind(code).name
    except ValueError:
        return f"0x{code:02X}"
