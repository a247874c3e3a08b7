"""Byte transports to a device, opened from a URL: the virtual board over TCP or a real board over serial.

    tcp://127.0.0.1:PORT
    serial:///dev/ttyUSB1?baud=115200      (baud defaults to 115200)

Each transport also says how long the device behind it takes for some work (`seconds`), which the host's
timeouts are built on. A board's link moves 10 bits per byte at its baud and its clock runs at INFO's
`clock_hz`. A virtual board (any socket) has no UART (a byte takes a clock cycle) and simulates its clock far
slower than a board runs it: its time is counted at `VIRTUAL_BOARD_CYCLES_PER_S`, a generous floor for
Verilator (the link alone simulates about 3 million cycles per second, the whole LeNet-5 about 360 000).
Icarus is much slower (thousands of cycles per second): give it a longer timeout.
"""

from __future__ import annotations

import socket
import time
from abc import ABC, abstractmethod
from urllib.parse import parse_qs, urlparse

DEFAULT_BAUD = 115_200
#: 8N1: a start bit, 8 data bits and a stop bit per byte.
BITS_PER_BYTE = 10
#: Simulated clock cycles per second a virtual board is counted on for timeouts (module docstring).
VIRTUAL_BOARD_CYCLES_PER_S = 100_000

URL_FORMS = "tcp://HOST:PORT or serial:///dev/DEVICE[?baud=N]"


class Transport(ABC):
    """A byte pipe to a device. `read` returns exactly `n` bytes or raises TimeoutError."""

    @abstractmethod
    def write(self, data: bytes) -> None: ...

    @abstractmethod
    def _read_some(self, n: int, timeout: float) -> bytes: ...

    @abstractmethod
    def close(self) -> None: ...

    def read(self, n: int, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        out = bytearray()
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for {n} bytes (got {len(out)})")
            out += self._read_some(n - len(out), left)
        return bytes(out)

    def read_some(self, n: int, timeout: float) -> bytes:
        """Up to `n` bytes: what has arrived, else the first to arrive within `timeout` seconds; b"" if none."""
        return self._read_some(n, max(timeout, 0.0))

    def drain(self, limit: int = 1 << 20) -> int:
        """Discard the bytes already waiting, without waiting for more (at most `limit`); returns how many."""
        dropped = 0
        while dropped < limit and (data := self._read_some(min(65536, limit - dropped), 0.0)):
            dropped += len(data)
        return dropped

    def seconds(self, link_bytes: int, cycles: int = 0, clock_hz: float | None = None) -> float:
        """Seconds the device takes to move `link_bytes` over this link and run `cycles` clock cycles at
        `clock_hz` (INFO's; None: unknown, counted as nothing); 0 when this transport cannot tell."""
        return 0.0

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SocketTransport(Transport):
    """A connected stream socket to a virtual board (a simulated board's link, or a TCP connection to one)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read_some(self, n: int, timeout: float) -> bytes:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(n)
        except (TimeoutError, BlockingIOError):  # a timeout of 0 makes the socket non-blocking
            return b""
        if not data:
            raise ConnectionError("the device closed the connection")
        return data

    def close(self) -> None:
        self.sock.close()

    def seconds(self, link_bytes: int, cycles: int = 0, clock_hz: float | None = None) -> float:
        return (link_bytes + cycles) / VIRTUAL_BOARD_CYCLES_PER_S


class TcpTransport(SocketTransport):
    def __init__(self, host: str, port: int, connect_timeout: float = 10.0):
        super().__init__(socket.create_connection((host, port), timeout=connect_timeout))


class SerialTransport(Transport):
    def __init__(self, device: str, baud: int):
        import serial  # pyserial; imported here so TCP users never need it loaded

        self.baud = baud
        self.port = serial.Serial(device, baudrate=baud, bytesize=8, parity="N", stopbits=1, timeout=0.1)

    def write(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def _read_some(self, n: int, timeout: float) -> bytes:
        self.port.timeout = min(timeout, 0.1)
        return self.port.read(n)

    def close(self) -> None:
        self.port.close()

    def seconds(self, link_bytes: int, cycles: int = 0, clock_hz: float | None = None) -> float:
        return link_bytes * BITS_PER_BYTE / self.baud + (cycles / clock_hz if clock_hz else 0.0)


def open_transport(url: str) -> Transport:
    """Open the transport a URL names; a malformed URL raises ValueError naming the part at fault."""
    parsed = urlparse(url)
    if parsed.scheme == "tcp":
        if not parsed.hostname or parsed.port is None:
            raise ValueError(f"tcp URL needs a host and a port ({URL_FORMS}), got {url!r}")
        return TcpTransport(parsed.hostname, parsed.port)
    if parsed.scheme == "serial":
        if not parsed.path:
            raise ValueError(f"serial URL needs a device path ({URL_FORMS}), got {url!r}")
        query = parse_qs(parsed.query)
        try:
            baud = int(query.get("baud", [DEFAULT_BAUD])[0])
        except ValueError:
            raise ValueError(f"baud must be an integer, got {query['baud'][0]!r}") from None
        if baud <= 0:
            raise ValueError(f"baud must be positive, got {baud}")
        return SerialTransport(parsed.path, baud)
    raise ValueError(f"unknown transport scheme {parsed.scheme!r}; use {URL_FORMS}")
