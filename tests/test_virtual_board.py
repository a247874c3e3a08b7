"""Host driver <-> virtual board (the accelerator's RTL under the default simulator, served on TCP)."""

from __future__ import annotations

import json
import random
import subprocess
import sys

from host.device import Device
from hw.config import AcceleratorConfig
from hw.spec.link import LinkModel
from hw.spec.protocol import Command, Status, encode_request, encode_response


def test_info_and_200_random_echoes(virtual_board):
    rng = random.Random(2)
    with Device.open(virtual_board.url, timeout=30) as dev:
        info = dev.info()
        assert info == AcceleratorConfig().describe()  # the server simulates the default config
        sizes = [0, 1, dev.max_payload] + [rng.randint(0, dev.max_payload) for _ in range(197)]
        for size in sizes:
            data = rng.randbytes(size)
            assert dev.echo(data) == data
    # The server serves one client and exits when it leaves.
    assert virtual_board.process.wait(timeout=60) == 0


def test_raw_error_frames_then_good_frame(virtual_board):
    """The RTL answers bad frames over the socket exactly as the golden model does, and keeps working."""
    config = AcceleratorConfig()
    model = LinkModel(config.max_payload, config.info_json())
    corrupt = bytearray(encode_request(Command.ECHO, b"hello", 0x31))
    corrupt[6] ^= 0x04
    requests = [
        b"\x00\x13garbage" + bytes(corrupt),
        encode_request(0x77, b"?", 0x32),
        bytes([0xA5, Command.ECHO, 0x33]) + (config.max_payload + 1).to_bytes(2, "little"),
        encode_request(Command.ECHO, b"after errors", 0x34),
    ]
    expected_statuses = [Status.BAD_CRC, Status.UNKNOWN_COMMAND, Status.LENGTH_OVER_MAX, Status.OK]
    with Device.open(virtual_board.url, timeout=30) as dev:
        for request, status, tag in zip(requests, expected_statuses, (0x31, 0x32, 0x33, 0x34)):
            expected = model.feed(request)
            assert expected[1:3] == bytes([status, tag])  # each answer echoes its frame's tag
            dev.transport.write(request)
            assert dev.transport.read(len(expected), timeout=30) == expected
        assert expected == encode_response(Status.OK, b"after errors", 0x34)


def test_cli_info_and_echo(virtual_board):
    run = [sys.executable, "-m", "host"]
    # One client per server: use the CLI for a single echo run, which also covers info (max payload).
    out = subprocess.run(run + ["echo", "--url", virtual_board.url, "--size", "100", "--count", "5"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "5 echoes of 100 bytes came back equal" in out.stdout


def test_cli_info_prints_json(virtual_board):
    out = subprocess.run([sys.executable, "-m", "host", "info", "--url", virtual_board.url],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["protocol"] == 2
