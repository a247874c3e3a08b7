"""The device driver: one request, one response, over any `Transport`.

    with Device.open("tcp://127.0.0.1:4567") as dev:
        print(dev.info())
        assert dev.echo(b"hello") == b"hello"
        dev.load(region, 0, beats)            # an accelerator with engines: fill a region,
        cycles = dev.run(0, 2)                # run program descriptors 0 and 1,
        out = dev.read(0, 0, 400)             # read an activation buffer

The payload builders (`load_payloads`, `run_payload`, `read_payloads`) are separate so a testbench can script the
same requests without a device.

Every request carries a tag (a counter per `Device`) and its answer echoes it. Before a request the driver
drops the bytes already waiting; then it reads until the answer with its tag arrives, dropping answers with
other tags (late ones, duplicates) and bytes that are no frame, so it never returns another request's data.
An answer that fails its CRC, an error status (STALLED naming the layer the device aborted, `DeviceError.stall`)
or no answer in time raise DeviceError, and the next request works normally: after a failure that may have
left a frame half parsed in the device (no answer, a corrupt one, BAD_CRC, LENGTH_OVER_MAX) the next request
first lets the link fall silent for the device's frame timeout, so the device has dropped whatever it held.
How long an answer may take is the work's time on the transport (`Transport.seconds`: the request and answer
bytes, and for a RUN the cycles the caller expects plus INFO's `watchdog_cycles`, after which a stalled layer is
answered), twice over, and never less than `timeout`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from hw.spec.protocol import (
    CRC_BYTES,
    DEFAULT_FRAME_TIMEOUT_MS,
    HEADER_BYTES,
    LOAD_HEADER_BYTES,
    SYNC_RESPONSE,
    TAG_COUNT,
    TAG_OFFSET,
    Command,
    Frame,
    ProtocolError,
    Stall,
    Status,
    decode_frame,
    encode_request,
    frame_length,
)

from .transport import Transport, open_transport

#: How many times its estimated work an answer may take (`Transport.seconds`); `Device.timeout` is the floor.
WORK_MARGIN = 2.0
#: After a failure the next request waits this many of the device's frame timeouts (INFO's `frame_timeout_ms`
#: when it gives one, else the default) from the failed request, with a margin for the device to notice.
QUIET_FACTOR = 1.25
#: Statuses after which the device may still hold part of the frame (the rest of an oversize frame, or a frame
#: whose LEN was corrupted): the next request waits for the device's frame timeout first.
LINK_STATUSES = (Status.BAD_CRC, Status.LENGTH_OVER_MAX)


class DeviceError(RuntimeError):
    """The device answered with an error status (`status`, else None), a malformed frame, or not at all.

    `stall`: for STALLED, the aborted layer's index, what it waited for and the cycles until the abort.
    """

    def __init__(self, message: str, status: int | None = None, stall: Stall | None = None):
        super().__init__(message)
        self.status = status
        self.stall = stall


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


def take_response(buf: bytearray, tag: int) -> tuple[Frame | None, int | None]:
    """Look through `buf` (the bytes received since a request went out) for the answer tagged `tag`.

    Returns (that answer, None) and removes it and what came before it from `buf`; else (None, the LEN of the
    tagged answer whose header has come but not the rest, or None), keeping in `buf` only what may still grow
    into a frame. Answers with another tag and bytes that are no frame are dropped. A tagged answer that fails
    its CRC raises ProtocolError.
    """
    pos = 0
    keep: int | None = None  # where the first frame still arriving starts
    while (start := buf.find(SYNC_RESPONSE, pos)) >= 0:
        if len(buf) - start < HEADER_BYTES:
            keep = start if keep is None else keep
            break
        end = start + frame_length(buf[start:start + HEADER_BYTES])
        ours = buf[start + TAG_OFFSET] == tag
        if end > len(buf):
            keep = start if keep is None else keep
            if ours:  # our answer, still arriving: what follows its header is its payload, not frames
                del buf[:keep]
                return None, end - start - HEADER_BYTES - CRC_BYTES
            pos = start + 1  # another answer still arriving, or a sync byte in garbage: look further too
            continue
        try:
            frame = decode_frame(bytes(buf[start:end]), SYNC_RESPONSE)
        except ProtocolError:
            if ours and keep is None:
                del buf[:end]
                raise
            pos = start + 1  # garbage that looked like a frame, or a damaged answer to another request
            continue
        if ours:
            del buf[:end]
            return frame, None
        if keep is None:  # another request's answer, late or duplicated
            del buf[:end]
            pos = 0
        else:
            pos = end
    del buf[:len(buf) if keep is None else keep]
    return None, None


class Device:
    """A connected sqgen device (real board or virtual board).

    `timeout`: the least seconds to wait for any answer (longer work gets longer, see the module docstring).
    """

    def __init__(self, transport: Transport, timeout: float = 5.0):
        self.transport = transport
        self.timeout = timeout
        self._info: dict[str, Any] | None = None
        #: The next request's tag. A random start keeps a new session from taking a late answer to an earlier
        #: session's request for its own.
        self.next_tag = os.urandom(1)[0]
        self._quiet_until = 0.0  # time.monotonic() before which the next request waits (the module docstring)

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

    def request(self, command: int, payload: bytes = b"", cycles: int = 0) -> bytes:
        """Send one request and return the payload of its OK response; anything else raises DeviceError.

        `cycles`: the clock cycles the device is expected to spend on it (0: as good as none), for the timeout.
        """
        tag = self.next_tag
        frame = encode_request(command, payload, tag)
        name = _name(Command, command)
        self.next_tag = (tag + 1) % TAG_COUNT
        time.sleep(max(0.0, self._quiet_until - time.monotonic()))
        self.transport.drain()
        self.transport.write(frame)
        # By then the device has had the whole request and dropped, after its frame timeout, what it may hold.
        info = self._info or {}
        quiet = (time.monotonic() + self.transport.seconds(len(frame)) +
                 QUIET_FACTOR * 1e-3 * float(info.get("frame_timeout_ms", DEFAULT_FRAME_TIMEOUT_MS)))
        budget = max(self.timeout, WORK_MARGIN * self.transport.seconds(len(frame) + HEADER_BYTES + CRC_BYTES,
                                                                        cycles, info.get("clock_hz")))
        try:
            answer = self._answer(tag, name, budget)
        except DeviceError:
            self._quiet_until = quiet
            raise
        if answer.code == Status.STALLED:
            try:
                stall = Stall.decode(answer.payload)
            except ProtocolError as exc:
                raise DeviceError(f"device answered STALLED to {name}: {exc}", answer.code) from None
            raise DeviceError(f"device answered STALLED to {name}: {stall}", answer.code, stall)
        if answer.code != Status.OK:
            if answer.code in LINK_STATUSES:
                self._quiet_until = quiet
            raise DeviceError(f"device answered {_name(Status, answer.code)} to {name}", answer.code)
        return answer.payload

    def _answer(self, tag: int, name: str, budget: float) -> Frame:
        """The answer tagged `tag` (any status), within `budget` seconds; more once its header announces a
        long payload."""
        started = time.monotonic()
        deadline = started + budget
        buf = bytearray()
        extended = False
        while True:
            try:
                frame, pending = take_response(buf, tag)
            except ProtocolError as exc:
                raise DeviceError(f"bad response to {name}: {exc}") from None
            if frame is not None:
                return frame
            if pending is not None and not extended:
                extended = True
                deadline = max(deadline, time.monotonic() +
                               WORK_MARGIN * self.transport.seconds(pending + CRC_BYTES))
            left = deadline - time.monotonic()
            if left <= 0:
                got = "" if pending is None else f" ({len(buf)} of its {HEADER_BYTES + pending + CRC_BYTES} bytes came)"
                raise DeviceError(f"no complete response to {name} (tag 0x{tag:02X}) in "
                                  f"{time.monotonic() - started:.3g} s{got}")
            buf += self.transport.read_some(65536, left)

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

    def run(self, first: int, count: int, expected_cycles: int | None = None) -> int:
        """Run program descriptors first..first+count-1; returns the clock cycles the device took.

        The timeout fits the run at INFO's clock_hz: `expected_cycles` (when the caller knows them) plus INFO's
        `watchdog_cycles`, the quiet a layer may have before the device aborts it and answers STALLED.
        """
        payload = run_payload(first, count)
        if self._info is None:
            self.info()  # its clock_hz and watchdog_cycles
        watchdog = int(self._info.get("watchdog_cycles", 0))
        answer = self.request(Command.RUN, payload, (expected_cycles or 0) + watchdog)
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
