"""Golden model of the device's side of the host link: which response frames a request byte stream gets.

This is the executable spec the frame-layer RTL is checked against, byte for byte:

* Bytes are skipped until the sync byte 0xA5. Then CMD, TAG, LEN (little-endian) are read.
* LEN > max_payload: answered LENGTH_OVER_MAX at once; the parser hunts for sync again, so the frame's
  remaining bytes are skipped as garbage.
* Otherwise LEN payload bytes and the CRC are read. A CRC mismatch is answered BAD_CRC; a good frame with
  an unknown command UNKNOWN_COMMAND; INFO answers the device's JSON and ECHO the payload (status OK).
  Error responses carry no payload. Every response carries the TAG byte of the frame it answers, as
  received (under a CRC mismatch too).
* `timeout()` models the frame timeout (and the virtual board's `expire`): a partial frame is dropped without
  an answer.
"""

from __future__ import annotations

from .protocol import (
    CRC_BYTES,
    HEADER_BYTES,
    LEN_OFFSET,
    SYNC_REQUEST,
    TAG_OFFSET,
    Command,
    Status,
    crc16,
    encode_response,
    frame_length,
)


class LinkModel:
    """Feed request bytes in; get the response bytes the device must send."""

    def __init__(self, max_payload: int, info: bytes):
        self.max_payload = max_payload
        self.info = info
        self._partial = bytearray()  # bytes of the frame being parsed, from its sync byte on

    def timeout(self) -> None:
        self._partial.clear()

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            if not self._partial:
                if byte == SYNC_REQUEST:
                    self._partial.append(byte)
                continue
            self._partial.append(byte)
            frame = self._partial
            if len(frame) < HEADER_BYTES:
                continue
            tag = frame[TAG_OFFSET]
            if int.from_bytes(frame[LEN_OFFSET:LEN_OFFSET + 2], "little") > self.max_payload:
                out += encode_response(Status.LENGTH_OVER_MAX, tag=tag)
                frame.clear()
            elif len(frame) == frame_length(frame):
                out += self._answer(bytes(frame))
                frame.clear()
        return bytes(out)

    def _answer(self, frame: bytes) -> bytes:
        command, tag, payload = frame[1], frame[TAG_OFFSET], frame[HEADER_BYTES:-CRC_BYTES]
        if crc16(frame[1:-CRC_BYTES]) != int.from_bytes(frame[-CRC_BYTES:], "little"):
            return encode_response(Status.BAD_CRC, tag=tag)
        if command == Command.INFO:
            return encode_response(Status.OK, self.info, tag)
        if command == Command.ECHO:
            return encode_response(Status.OK, payload, tag)
        return encode_response(Status.UNKNOWN_COMMAND, tag=tag)
