"""Shared fixtures: a virtual board served by `python -m sim.server` in a subprocess (`sim.server.start`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import settings

from sim.server import VirtualBoard, start

# Property tests judge results, not speed: a loaded CI machine must not turn a slow example into a failure.
settings.register_profile("sqgen", deadline=None)
settings.load_profile("sqgen")


@pytest.fixture
def virtual_board() -> Iterator[VirtualBoard]:
    """The link-only virtual board (the default simulator: $SQGEN_SIM, else Verilator)."""
    with start(idle_timeout=120) as board:
        yield board
