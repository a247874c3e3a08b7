"""Board registry: `get_board(name)` returns a `Board` describing how sqgen uses that board.

Each board module defines one `BOARD`. A board names its amaranth-boards platform, its clock, the UART
resource that carries the host link, the on-chip memory kind the accelerator may use, and its resource
budget (what the device offers; `hw.build` reports use against it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import icebreaker, ulx3s_85f


@dataclass(frozen=True)
class Board:
    """How sqgen uses one FPGA board."""

    name: str
    description: str
    family: str  #: "ice40" or "ecp5": selects the nextpnr flavour
    device: str
    package: str
    make_platform: Callable[[], Any] = field(repr=False)  #: a platform instance that builds without a programmer
    clock_resource: str = "clk"
    clock_hz: int = 0
    uart_resource: tuple[str, int] = ("uart", 0)
    memory: str = "bram"  #: on-chip memory kind available for buffers
    budget: dict[str, int] = field(default_factory=dict)  #: resource name -> amount available on the device


BOARDS: dict[str, Board] = {b.name: b for b in (icebreaker.make_board(Board), ulx3s_85f.make_board(Board))}

DEFAULT_BOARD = "ulx3s-85f"


class UnknownBoardError(KeyError):
    def __str__(self) -> str:
        return self.args[0]


def get_board(name: str) -> Board:
    """The board called `name`; an unknown name raises UnknownBoardError listing the known ones."""
    try:
        return BOARDS[name]
    except KeyError:
        raise UnknownBoardError(f"unknown board {name!r}; known boards: {', '.join(sorted(BOARDS))}") from None
