"""Shared fixtures: a virtual board served by `python -m sim.server` in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import settings

# Property tests judge results, not speed: a loaded CI machine must not turn a slow example into a failure.
settings.register_profile("sqgen", deadline=None)
settings.load_profile("sqgen")


@dataclass
class VirtualBoard:
    url: str
    process: subprocess.Popen


def start_virtual_board(*args: str, timeout: float = 120.0) -> VirtualBoard:
    """Start a virtual board; its first stdout line gives the port."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sim.server", "--port", "0", "--idle-timeout", "120", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = process.stdout.readline().strip()
    if not line.startswith("listening on 127.0.0.1:"):
        process.kill()
        raise RuntimeError(f"virtual board did not start: {line!r}\n{process.stderr.read()}")
    return VirtualBoard(url="tcp://" + line.removeprefix("listening on "), process=process)


@pytest.fixture
def virtual_board() -> Iterator[VirtualBoard]:
    board = start_virtual_board()
    yield board
    if board.process.poll() is None:
        board.process.kill()
    board.process.wait()
