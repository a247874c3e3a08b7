"""The virtual board's server (`python -m sim.server`) serves client after client on one simulated device, under
both simulators; a client may leave mid-frame or mid-answer without troubling the next one. (`--once`, which
`sim.server.start` passes by default, is covered by `test_virtual_board.py`: the server leaves with its client.)"""

from __future__ import annotations

import socket
import struct
import time
from urllib.parse import urlparse

import pytest

from host.device import Device
from hw.spec.protocol import Command, encode_request
from sim import runner
from sim.server import start


@pytest.mark.cost(seconds=6)
@pytest.mark.parametrize("simulator", runner.SIMULATORS)
def test_serves_client_after_client(simulator):
    with start("--sim", simulator, idle_timeout=120, once=False) as board:
        address = urlparse(board.url)
        with Device.open(board.url, timeout=10) as dev:
            assert dev.echo(b"first") == b"first"
            size = dev.max_payload
        # A client that asks for long answers, leaves half a frame behind and resets the connection before
        # reading anything: its answers are dropped, its half frame expires in the device.
        rude = socket.create_connection((address.hostname, address.port))
        rude.sendall(b"".join(encode_request(Command.ECHO, bytes(size), tag) for tag in range(4))
                     + encode_request(Command.ECHO, bytes(size), 9)[:20])
        time.sleep(0.2)
        rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        rude.close()
        socket.create_connection((address.hostname, address.port)).close()  # one that leaves at once
        with Device.open(board.url, timeout=10) as dev:
            assert dev.echo(b"second") == b"second"
            assert dev.echo(bytes(size)) == bytes(size)
        board.stop()
        assert board.process.returncode == 0
        log = board.process.stderr.read()
    assert "Traceback" not in log and log.count("client connected") == 4, log
    assert "stopping: interrupted" in log
