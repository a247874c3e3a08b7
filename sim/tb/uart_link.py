"""Pin-level end-to-end testbench of `UartAccelerator`: request frames in on `rx`, response frames out on `tx`.

The far end (`UartModel`) sends each request as serial bits and decodes `tx` by mid-bit sampling; what
comes back must be, byte for byte, what `LinkModel` says the device answers. Requests go one at a time:
the next is sent only once the previous answer has fully arrived, as a host does.

Parameters (`tb_params()`): `divisor`, `max_payload`, `info` (the INFO JSON, hex), optionally `baud_error`.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.triggers import Timer

from hw.spec.link import LinkModel
from hw.spec.protocol import CRC_BYTES, HEADER_BYTES, SYNC_REQUEST, Command, encode_request
from sim.tb.common import start_clock_and_reset, tb_params, tb_rng
from sim.tb.uart import MAX_BAUD_ERROR, UartModel, wait_until

UNKNOWN_COMMAND = 0x7E


def _no_sync(rng: random.Random, n: int) -> bytes:
    """`n` random bytes without the request sync byte (garbage the parser must skip)."""
    return bytes(rng.choice([b for b in range(256) if b != SYNC_REQUEST]) for _ in range(n))


def requests(rng: random.Random, max_payload: int) -> list[tuple[str, bytes]]:
    """(name, bytes on the wire) of each request the testbench sends, in order, each with a random tag."""
    def request(command: int, payload: bytes) -> bytes:
        return encode_request(command, payload, rng.getrandbits(8))

    def echo(n: int) -> bytes:
        return request(Command.ECHO, rng.randbytes(n))

    bad_crc = bytearray(echo(rng.randint(1, max_payload)))
    bad_crc[-1 - rng.randrange(CRC_BYTES)] ^= 1 << rng.randrange(8)
    bad_payload = bytearray(echo(rng.randint(1, max_payload)))
    bad_payload[HEADER_BYTES + rng.randrange(len(bad_payload) - HEADER_BYTES - CRC_BYTES)] ^= 1 << rng.randrange(8)
    # An oversize frame is answered after its LEN field; the rest of it is garbage to skip, so keep it free
    # of sync bytes (else it would start a frame of its own, which the golden model covers but obscures).
    oversize = request(Command.ECHO, _no_sync(rng, max_payload + 1))
    while SYNC_REQUEST in oversize[1:]:
        oversize = request(Command.ECHO, _no_sync(rng, max_payload + 1))

    return [
        ("INFO", request(Command.INFO, b"")),
        ("ECHO of 0 bytes", echo(0)),
        (f"ECHO of {max_payload} bytes", echo(max_payload)),
        ("ECHO of 1 byte", echo(1)),
        *((f"ECHO of random length #{k}", echo(rng.randint(1, max_payload))) for k in range(5)),
        ("ECHO of sync bytes", request(Command.ECHO, bytes([SYNC_REQUEST] * 9))),
        ("corrupt CRC", bytes(bad_crc)),
        ("corrupt payload", bytes(bad_payload)),
        ("unknown command", request(UNKNOWN_COMMAND, rng.randbytes(rng.randint(0, 8)))),
        ("INFO with a payload (ignored)", request(Command.INFO, rng.randbytes(5))),
        ("oversize ECHO", oversize),
        ("LEN 0xFFFF header only", bytes([SYNC_REQUEST, Command.ECHO, rng.getrandbits(8), 0xFF, 0xFF])),
        ("garbage then INFO", _no_sync(rng, 7) + request(Command.INFO, b"")),
        ("ECHO after all that", echo(rng.randint(1, max_payload))),
    ]


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def test_requests_over_uart(dut):
    """Each request's response, decoded from `tx`, equals the golden model's."""
    params = tb_params()
    divisor, max_payload, info = params["divisor"], params["max_payload"], bytes.fromhex(params["info"])
    rng = tb_rng(dut)
    error = params.get("baud_error")
    if error is None:
        error = rng.uniform(-MAX_BAUD_ERROR, MAX_BAUD_ERROR)
    model = UartModel(divisor, error)
    dut._log.info("divisor %d, far end rate error %+.2f%%", divisor, 100 * error)
    dut.rx.value = 1
    await start_clock_and_reset(dut)

    received: list[int] = []
    cocotb.start_soon(model.collect(dut.tx, received))
    golden = LinkModel(max_payload, info)
    expected = bytearray()
    for name, request in requests(rng, max_payload):
        answer = golden.feed(request)
        expected += answer
        # The answer may start before the request is fully sent (oversize), so decode while sending.
        await model.send_bytes(dut.rx, request, rng)
        # The request is sent by now: time for the answer, with slack for the device's latency.
        timeout_ps = (len(answer) + 4) * 11 * model.bit_ps
        total = len(expected)
        await wait_until(lambda total=total: len(received) >= total, timeout_ps,
                         f"the answer to {name} ({len(answer)} bytes)", poll_ps=model.bit_ps)
        got = bytes(received[total - len(answer):])
        assert got == answer, f"{name}: request {request.hex()}\n  answered {got.hex()}\n  expected {answer.hex()}"
        dut._log.info("%s: %d request bytes, %d answer bytes as expected", name, len(request), len(answer))

    # Nothing else may follow the last answer.
    await Timer(30 * model.bit_ps, unit="ps")
    extra = bytes(received[len(expected):])
    assert not extra, f"extra bytes after the last answer: {extra.hex()}"
