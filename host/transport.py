"""Byte transports to a device, opened from a URL: the virtual board over TCP or a real board over serial.

    tcp://127.0.0.1:PORT
    serial:///dev/ttyUSB1?baud=115200      (baud defaults to 115200)
"""

from __future__ import annotations

import socket
import time
from abc import ABC, abstractmethod
from urllib.parse import parse_qs, urlparse

DEFAULT_BAUD = 115_200

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

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SocketTransport(Transport):
    """A connected stream socket (a simulated board's link, or a TCP connection)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read_some(self, n: int, timeout: float) -> bytes:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(n)
        except TimeoutError:
            return b""
        if not data:
            raise ConnectionError("the device closed the connection")
        return data

    def close(self) -> None:
        self.sock.close()


class TcpTransport(SocketTransport):
    def __init__(self, host: str, port: int, connect_timeout: float = 10.0):
        super().__init__(socket.create_connection((host, port), timeout=connect_timeout))


class SerialTransport(Transport):
    def __init__(self, device: str, baud: int):
        import serial  # pyserial; imported here so TCP users never need it loaded

        self.port = serial.Serial(device, baudrate=baud, bytesize=8, parity="N", stopbits=1, timeout=0.1)

    def write(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def _read_some(self, n: int, timeout: float) -> bytes:
        self.port.timeout = min(timeout, 0.1)
        return self.port.read(n)

    def close(self) -> None:
        self.port.close()


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
