"""The host-link protocol: the one home of its constants, its CRC and its frame codec.

Both the hardware (`hw.link`, `hw.top`) and the host (`host.device`) import this module, so a constant
changes in one place. It is pure Python with no dependencies, cheap to import everywhere.

Frames, host to device::

    0xA5 | CMD (1) | TAG (1) | LEN (2, little-endian) | PAYLOAD (LEN bytes) | CRC (2, little-endian)

and device to host::

    0x5A | STATUS (1) | TAG (1) | LEN (2, little-endian) | PAYLOAD (LEN bytes) | CRC (2, little-endian)

The CRC is CRC-16/CCITT-FALSE over every byte between the sync byte and the CRC (CMD/STATUS, TAG, LEN,
PAYLOAD). A response carries the TAG of the request it answers, whatever its status, so the host can tell its
answer from a late or duplicated one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from importlib import metadata

PROTOCOL_VERSION = 2

SYNC_REQUEST = 0xA5
SYNC_RESPONSE = 0x5A

#: Bytes before the payload (sync, code, tag, two length bytes) and after it (two CRC bytes).
HEADER_BYTES = 5
CRC_BYTES = 2
#: Where the tag and the LEN field sit in a frame.
TAG_OFFSET = 2
LEN_OFFSET = 3
#: A tag is one byte; the host counts its requests modulo this.
TAG_COUNT = 0x100
#: A device drops a frame whose next byte does not come within its frame timeout; this is the default one.
DEFAULT_FRAME_TIMEOUT_MS = 100.0
#: The LEN field is 16 bits; a device's own limit (`max_payload` in INFO) is at most this.
LEN_FIELD_MAX = 0xFFFF

CRC_POLY = 0x1021
CRC_INIT = 0xFFFF


class Command(enum.IntEnum):
    """Request codes (the CMD byte)."""

    INFO = 0x01  #: payload ignored; answers a JSON document describing the device
    ECHO = 0x02  #: answers the request's payload unchanged
    LOAD = 0x03  #: region id u8, beat offset u16, whole beats: writes them into the region; answers nothing
    RUN = 0x04  #: first layer u8, count u8: runs those program descriptors; answers the cycles taken, u32
    READ = 0x05  #: buffer id u8, offset u16, length u16: answers that many bytes of the activation buffer


class Status(enum.IntEnum):
    """Response codes (the STATUS byte). Error responses carry an empty payload, except STALLED (`Stall`)."""

    OK = 0
    BAD_CRC = 1
    UNKNOWN_COMMAND = 2  #: also LOAD, RUN and READ on a device without engines
    LENGTH_OVER_MAX = 3
    BAD_ARGUMENT = 4  #: malformed payload: wrong length, not whole beats, RUN count 0, or a bad descriptor kind
    UNKNOWN_REGION = 5  #: LOAD's region id or READ's buffer id is not on this device
    OUT_OF_RANGE = 6  #: past a region's depth, the program loaded so far, a buffer, or max_payload
    STALLED = 7  #: a RUN's layer made no progress for the device's watchdog_cycles and was aborted (`Stall`)


class Waiting(enum.IntFlag):
    """What an aborted layer still had outstanding: a STALLED answer's second byte."""

    X = 0x01  #: the source buffer's streamer held activations the engine did not take
    CONV_W = 0x02  #: the conv.w streamer held kernel groups
    CONV_QUANT = 0x04  #: the conv.quant streamer held quant beats
    FC_XOR = 0x08  #: the fc.xor streamer held XOR beats
    FC_BIM = 0x10  #: the fc.bim streamer held BIM beats
    FC_SCALE = 0x20  #: the fc.scale streamer held scale beats
    CFG = 0x40  #: a cfg beat (the engine's, the crop's or the pool's) was not taken
    OUTPUT = 0x80  #: the values written so far were not the descriptor's out_count


#: A STALLED answer's payload: the descriptor's program index (u8), `Waiting` flags (u8), then the cycles from
#: the RUN's start to the abort (u32, little-endian).
STALLED_PAYLOAD_BYTES = 6

#: Bytes before the beats of a LOAD payload (region id u8, beat offset u16) and the fixed RUN and READ payloads.
LOAD_HEADER_BYTES = 3
RUN_PAYLOAD_BYTES = 2
READ_PAYLOAD_BYTES = 5


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ CRC_POLY) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray | memoryview, crc: int = CRC_INIT) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor) of `data`.

    Pass a previous result as `crc` to continue over more data.
    """
    for byte in bytes(data):
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[(crc >> 8) ^ byte]
    return crc


class ProtocolError(ValueError):
    """A frame that cannot be encoded or decoded; the message names the field at fault."""


@dataclass(frozen=True)
class Frame:
    """A decoded frame: `code` is the CMD byte of a request or the STATUS byte of a response."""

    code: int
    payload: bytes
    tag: int


@dataclass(frozen=True)
class Stall:
    """A STALLED answer's payload: which program word stalled, what it was waiting for, when it was aborted."""

    layer: int
    waiting: Waiting
    cycles: int

    @classmethod
    def decode(cls, payload: bytes | bytearray | memoryview) -> Stall:
        """The payload's fields; ProtocolError unless it is STALLED_PAYLOAD_BYTES long."""
        payload = bytes(payload)
        if len(payload) != STALLED_PAYLOAD_BYTES:
            raise ProtocolError(f"STALLED payload must be {STALLED_PAYLOAD_BYTES} bytes, got {len(payload)}")
        return cls(payload[0], Waiting(payload[1]), int.from_bytes(payload[2:], "little"))

    def __str__(self) -> str:
        waiting = ", ".join(flag.name.lower() for flag in Waiting if flag in self.waiting) or "nothing"
        return f"layer {self.layer} made no progress (waiting: {waiting}), aborted after {self.cycles} cycles"


def _byte_field(value: object, field: str) -> int:
    # bool is an int to Python, never a command, status or tag.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"{field} must be an int in 0..255, got {type(value).__name__} {value!r}")
    if not 0 <= value <= 0xFF:
        raise ProtocolError(f"{field} must be in 0..255, got {value}")
    return int(value)


def _encode(sync: int, code: int, payload: bytes | bytearray | memoryview, tag: int, field: str) -> bytes:
    code, tag = _byte_field(code, field), _byte_field(tag, "tag")
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"payload must be bytes, bytearray or memoryview, got {type(payload).__name__}")
    payload = bytes(payload)
    if len(payload) > LEN_FIELD_MAX:
        raise ProtocolError(f"payload length must be in 0..{LEN_FIELD_MAX}, got {len(payload)}")
    body = bytes([code, tag]) + len(payload).to_bytes(2, "little") + payload
    return bytes([sync]) + body + crc16(body).to_bytes(2, "little")


def encode_request(command: int, payload: bytes | bytearray | memoryview = b"", tag: int = 0) -> bytes:
    """A host-to-device frame; ProtocolError (one line naming the field and its range) for what cannot be sent."""
    return _encode(SYNC_REQUEST, command, payload, tag, "command")


def encode_response(status: int, payload: bytes | bytearray | memoryview = b"", tag: int = 0) -> bytes:
    """A device-to-host frame answering the request tagged `tag`; ProtocolError as `encode_request`."""
    return _encode(SYNC_RESPONSE, status, payload, tag, "status")


def frame_length(header: bytes | bytearray) -> int:
    """The whole frame's length in bytes from its first HEADER_BYTES bytes (its LEN field)."""
    return HEADER_BYTES + int.from_bytes(header[LEN_OFFSET:LEN_OFFSET + 2], "little") + CRC_BYTES


def decode_frame(data: bytes, sync: int) -> Frame:
    """Decode exactly one frame starting with `sync`; raise ProtocolError naming the bad field."""
    data = bytes(data)
    if len(data) < HEADER_BYTES + CRC_BYTES:
        raise ProtocolError(f"frame length must be at least {HEADER_BYTES + CRC_BYTES} bytes, got {len(data)}")
    if data[0] != sync:
        raise ProtocolError(f"sync byte must be 0x{sync:02X}, got 0x{data[0]:02X}")
    length = int.from_bytes(data[LEN_OFFSET:LEN_OFFSET + 2], "little")
    if len(data) != frame_length(data):
        raise ProtocolError(f"frame length must be {frame_length(data)} bytes for LEN={length}, got {len(data)}")
    body, received = data[1:-CRC_BYTES], int.from_bytes(data[-CRC_BYTES:], "little")
    expected = crc16(body)
    if received != expected:
        raise ProtocolError(f"CRC mismatch: frame carries 0x{received:04X}, contents give 0x{expected:04X}")
    return Frame(code=data[1], payload=data[HEADER_BYTES:-CRC_BYTES], tag=data[TAG_OFFSET])


def split_frames(data: bytes, sync: int) -> tuple[list[bytes], bytes]:
    """Cut a byte stream into raw frames, skipping bytes before each sync byte.

    Returns the complete frames (CRC not checked) and the unconsumed tail (a partial frame, or b"").
    """
    frames: list[bytes] = []
    pos = 0
    while True:
        start = data.find(bytes([sync]), pos)
        if start < 0:
            return frames, b""
        if len(data) - start < HEADER_BYTES:
            return frames, data[start:]
        end = start + frame_length(data[start:start + HEADER_BYTES])
        if end > len(data):
            return frames, data[start:]
        frames.append(data[start:end])
        pos = end


def sqgen_version() -> str:
    """The installed sqgen distribution's version (reported by INFO and written into manifests)."""
    try:
        return metadata.version("sqgen")
    except metadata.PackageNotFoundError:
        return "0+unknown"
