"""One config describes one accelerator instance: the board, the link and (later) the blocks.

`AcceleratorConfig.describe()` is the single source of what the device says about itself: the INFO
response's JSON is built from it at elaboration, and `hw.build` writes the same document into
`manifest.json`, so the host never guesses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from boards import DEFAULT_BOARD, get_board
from host.protocol import LEN_FIELD_MAX, PROTOCOL_VERSION, sqgen_version

#: A UART bit must last at least this many clock cycles for the receiver's mid-bit sampling to work.
MIN_CYCLES_PER_BIT = 4


@dataclass(frozen=True)
class AcceleratorConfig:
    """Parameters of one accelerator build; validated on construction."""

    board: str = DEFAULT_BOARD
    baud: int = 115_200
    #: Largest request payload the device accepts (bytes); sizes the payload buffer.
    max_payload: int = 1024
    #: A frame whose next byte does not arrive within this time is dropped and the parser resyncs.
    frame_timeout_ms: float = 100.0
    #: Blocks present and their parameters (name -> parameter dict); none yet.
    blocks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        get_board(self.board)  # raises with the list of known boards
        if not 1 <= self.max_payload <= LEN_FIELD_MAX:
            raise ValueError(f"max_payload must be in 1..{LEN_FIELD_MAX}, got {self.max_payload}")
        top_baud = self.clock_hz // MIN_CYCLES_PER_BIT
        if not 1200 <= self.baud <= top_baud:
            raise ValueError(f"baud must be in 1200..{top_baud} for a {self.clock_hz} Hz clock, got {self.baud}")
        if not 0.01 <= self.frame_timeout_ms <= 10_000:
            raise ValueError(f"frame_timeout_ms must be in 0.01..10000, got {self.frame_timeout_ms}")

    @property
    def clock_hz(self) -> int:
        return get_board(self.board).clock_hz

    @property
    def uart_divisor(self) -> int:
        """Clock cycles per UART bit, rounded to nearest."""
        return round(self.clock_hz / self.baud)

    @property
    def frame_timeout_cycles(self) -> int:
        return max(1, round(self.frame_timeout_ms * 1e-3 * self.clock_hz))

    def describe(self) -> dict[str, Any]:
        """What the device reports about itself (INFO payload and manifest.json)."""
        return {
            "sqgen": sqgen_version(),
            "protocol": PROTOCOL_VERSION,
            "board": self.board,
            "clock_hz": self.clock_hz,
            "baud": self.baud,
            "max_payload": self.max_payload,
            "blocks": self.blocks,
        }

    def info_json(self) -> bytes:
        """The INFO response payload: `describe()` as compact JSON."""
        return json.dumps(self.describe(), separators=(",", ":"), sort_keys=True).encode()
