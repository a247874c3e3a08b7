"""Protocol codec: CRC known answers, frame round trips (tags included) and every way a frame can be wrong."""

from __future__ import annotations

import binascii

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hw.spec import protocol
from hw.spec.link import LinkModel
from hw.spec.protocol import (
    SYNC_REQUEST,
    SYNC_RESPONSE,
    Command,
    ProtocolError,
    Status,
    crc16,
    decode_frame,
    encode_request,
    encode_response,
    split_frames,
)


def test_crc_known_answers():
    assert crc16(b"123456789") == 0x29B1  # the catalogued check value of CRC-16/CCITT-FALSE
    assert crc16(b"") == 0xFFFF
    assert crc16(b"\x00") == 0xE1F0


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_crc_matches_independent_oracle_and_continues(a, b):
    # binascii.crc_hqx is the same polynomial, unreflected; with init 0xFFFF it is CCITT-FALSE.
    assert crc16(a) == binascii.crc_hqx(a, 0xFFFF)
    assert crc16(b, crc=crc16(a)) == crc16(a + b)


def test_frame_layout_by_hand():
    frame = encode_request(Command.ECHO, b"\x10\x20\x30", tag=0x7C)
    body = bytes([0x02, 0x7C, 0x03, 0x00, 0x10, 0x20, 0x30])
    assert frame == bytes([0xA5]) + body + binascii.crc_hqx(body, 0xFFFF).to_bytes(2, "little")
    assert encode_response(Status.OK)[:5] == bytes([0x5A, 0x00, 0x00, 0x00, 0x00])
    assert encode_response(Status.BAD_CRC, tag=0xE1)[:5] == bytes([0x5A, 0x01, 0xE1, 0x00, 0x00])


@given(st.integers(0, 255), st.binary(max_size=2000), st.integers(0, 255))
def test_round_trip(code, payload, tag):
    for sync, encode in ((SYNC_REQUEST, encode_request), (SYNC_RESPONSE, encode_response)):
        for data in (payload, bytearray(payload), memoryview(payload)):
            frame = decode_frame(encode(code, data, tag), sync)
            assert (frame.code, frame.payload, frame.tag) == (code, payload, tag)


@given(st.binary(min_size=0, max_size=64), st.data())
def test_any_single_bit_flip_is_detected(payload, data):
    frame = bytearray(encode_request(Command.ECHO, payload))
    position = data.draw(st.integers(0, len(frame) - 1))
    frame[position] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(ProtocolError):
        decode_frame(bytes(frame), SYNC_REQUEST)


@pytest.mark.parametrize("frame, field", [
    (b"", "frame length"),
    (b"\x5A\x00\x00\x00\xFF", "frame length"),
    (bytes([0x11]) + encode_response(0)[1:], "sync byte"),
    (encode_response(0, b"abc")[:-1], "frame length"),
    (encode_response(0, b"abc") + b"\x00", "frame length"),
    (encode_response(0, b"abc")[:-2] + b"\x00\x00", "CRC"),
])
def test_malformed_frames_name_the_field(frame, field):
    with pytest.raises(ProtocolError, match=field):
        decode_frame(frame, SYNC_RESPONSE)


@pytest.mark.parametrize("call, message", [
    (lambda: encode_request(256), r"^command must be in 0\.\.255, got 256$"),
    (lambda: encode_response(-1), r"^status must be in 0\.\.255, got -1$"),
    (lambda: encode_request(1, b"", 256), r"^tag must be in 0\.\.255, got 256$"),
    (lambda: encode_response(0, b"", -1), r"^tag must be in 0\.\.255, got -1$"),
    (lambda: encode_request("1"), r"^command must be an int in 0\.\.255, got str '1'$"),
    (lambda: encode_request(1.0), r"^command must be an int in 0\.\.255, got float 1\.0$"),
    (lambda: encode_response(True), r"^status must be an int in 0\.\.255, got bool True$"),
    (lambda: encode_request(1, b"", None), r"^tag must be an int in 0\.\.255, got NoneType None$"),
    (lambda: encode_request(1, "text"), r"^payload must be bytes, bytearray or memoryview, got str$"),
    (lambda: encode_response(0, [1, 2]), r"^payload must be bytes, bytearray or memoryview, got list$"),
    (lambda: encode_request(1, bytes(protocol.LEN_FIELD_MAX + 1)),
     r"^payload length must be in 0\.\.65535, got 65536$"),
])
def test_unencodable_frames_name_the_field(call, message):
    with pytest.raises(ProtocolError, match=message):
        call()


@given(st.lists(st.tuples(st.binary(max_size=8).map(lambda g: g.replace(b"\x5a", b"")),
                          st.integers(0, 255), st.binary(max_size=100), st.integers(0, 255)), max_size=6),
       st.integers(0, 10))
def test_split_frames_skips_garbage_and_keeps_partial_tail(items, cut):
    stream = b"".join(garbage + encode_response(code, payload, tag) for garbage, code, payload, tag in items)
    frames, tail = split_frames(stream, SYNC_RESPONSE)
    assert [(decode_frame(f, SYNC_RESPONSE).payload, decode_frame(f, SYNC_RESPONSE).tag) for f in frames] == \
        [(p, t) for _, _, p, t in items]
    assert tail == b""
    if items:
        last = encode_response(*items[-1][1:])
        frames, tail = split_frames(stream[: len(stream) - 1 - cut % (len(last) - 1)], SYNC_RESPONSE)
        assert len(frames) == len(items) - 1 and last.startswith(tail) and tail


INFO = b'{"board":"x"}'


@given(st.binary(max_size=40).map(lambda g: g.replace(b"\xa5", b"")), st.binary(max_size=32), st.integers(0, 255))
def test_link_model_answers(garbage, payload, tag):
    """Every answer, whatever its status, carries the tag of the frame it answers."""
    model = LinkModel(max_payload=32, info=INFO)
    assert model.feed(garbage + encode_request(Command.ECHO, payload, tag)) == encode_response(Status.OK, payload, tag)
    assert model.feed(encode_request(Command.INFO, payload, tag)) == encode_response(Status.OK, INFO, tag)
    assert model.feed(encode_request(0x33, payload, tag)) == encode_response(Status.UNKNOWN_COMMAND, tag=tag)
    bad = bytearray(encode_request(Command.ECHO, payload, tag))
    bad[-1] ^= 0x80
    assert model.feed(bytes(bad)) == encode_response(Status.BAD_CRC, tag=tag)


def test_link_model_oversize_truncation_and_split_delivery():
    model = LinkModel(max_payload=4, info=INFO)
    # Oversize is answered right after LEN, with the frame's tag; the rest of that frame is skipped as garbage.
    assert model.feed(encode_request(Command.ECHO, b"12345", 9)) == encode_response(Status.LENGTH_OVER_MAX, tag=9)
    assert model.feed(encode_request(Command.ECHO, b"1234", 10)) == encode_response(Status.OK, b"1234", 10)
    # A truncated frame gets no answer; after a timeout the next frame is parsed from scratch.
    assert model.feed(encode_request(Command.ECHO, b"12", 11)[:6]) == b""
    model.timeout()
    frame = encode_request(Command.ECHO, b"ab", 12)
    assert b"".join(model.feed(frame[i : i + 1]) for i in range(len(frame))) == encode_response(Status.OK, b"ab", 12)
