"""The host link under faults: `host.device.Device` talks to a simulated board of the `link` config (a 40 ms frame
timeout) through a proxy that drops, duplicates, corrupts (one bit), delays past the host's timeout or truncates
planned frames, requests and answers alike. No answer may ever go to another request; every failure is a
DeviceError; after each failure the next clean request succeeds."""

from __future__ import annotations

import heapq
import itertools
import random
import select
import socket
import threading
import time
from collections import Counter

import pytest

from host.device import Device, DeviceError
from hw.config import AcceleratorConfig
from hw.spec.protocol import SYNC_REQUEST, SYNC_RESPONSE, TAG_OFFSET, Command, split_frames
from sim.board import listen, simulate

FAULTS = ("drop", "duplicate", "flip", "delay", "truncate")
DIRECTIONS = ("request", "answer")
#: The device's frame timeout: shorter than the link config's 100 ms, since after each failure the host waits it
#: out (its quiet time, `host.device.QUIET_FACTOR` of it), and most of the test is those waits.
FRAME_TIMEOUT_MS = 40.0
#: The host's least wait for an answer (the link config answers an ECHO in well under a millisecond here) ...
TIMEOUT = 1e-3 * FRAME_TIMEOUT_MS
#: ... and how late a delayed frame comes: after the host has given up, about when its next request goes (the
#: host waits out the device's frame timeout after a failure).
DELAY = 1.25 * TIMEOUT
FAULTED_REQUESTS = 500
#: The least wait of the clean request after each failure: it is not faulted, so only a loaded machine (the suite's
#: other worker building a bitstream) makes it slower than TIMEOUT, and it must succeed.
FOLLOW_UP_TIMEOUT = 2.0


class FaultProxy:
    """A TCP proxy between one host and a virtual board that damages the frames it is told to, by direction and
    tag (`plan`), one fault per frame; a frame may overtake a delayed one. Each direction runs in a thread."""

    def __init__(self, board: socket.socket, seed: int):
        self.listener = listen()
        self.url = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.board = board
        self.plans: dict[tuple[str, int], str] = {}
        self.lock = threading.Lock()
        self.seed = seed
        self.queued = {direction: 0 for direction in DIRECTIONS}
        self.threads: list[threading.Thread] = []
        self.running = True

    def plan(self, direction: str, tag: int, fault: str) -> None:
        with self.lock:
            self.plans[direction, tag] = fault

    def start(self) -> None:
        """Take the host's connection (made already) and start relaying it to the board."""
        host, _ = self.listener.accept()
        board = self.board
        for sock in (host, board):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for index, (direction, src, dst, sync) in enumerate((("request", host, board, SYNC_REQUEST),
                                                              ("answer", board, host, SYNC_RESPONSE))):
            rng = random.Random(self.seed * 2 + index)
            thread = threading.Thread(target=self._pump, args=(direction, src, dst, sync, rng), daemon=True)
            thread.start()
            self.threads.append(thread)
        self.sockets = (host, board)

    def settle(self) -> None:
        """Wait until no delayed frame is left to send."""
        while any(self.queued.values()):
            time.sleep(0.005)

    def close(self) -> None:
        self.running = False
        for thread in self.threads:
            thread.join(timeout=5)
        for sock in (*getattr(self, "sockets", ())[:1], self.listener):  # the board's socket is its owner's
            sock.close()

    def _pump(self, direction: str, src: socket.socket, dst: socket.socket, sync: int, rng: random.Random) -> None:
        received = b""
        due: list[tuple[float, int, bytes]] = []  # (when, order, bytes)
        order = itertools.count()
        while self.running:
            now = time.monotonic()
            while due and due[0][0] <= now:
                dst.sendall(heapq.heappop(due)[2])
            self.queued[direction] = len(due)
            wait = min(0.01, due[0][0] - now) if due else 0.01
            if not select.select([src], [], [], max(wait, 0.0))[0]:
                continue
            data = src.recv(65536)
            if not data:
                return
            frames, received = split_frames(received + data, sync)
            for frame in frames:
                with self.lock:
                    fault = self.plans.pop((direction, frame[TAG_OFFSET]), None)
                now = time.monotonic()
                if fault == "drop":
                    continue
                if fault == "flip":
                    flipped = bytearray(frame)
                    flipped[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
                    frame = bytes(flipped)
                elif fault == "truncate":
                    frame = frame[:rng.randint(1, len(frame) - 1)]
                copies = 2 if fault == "duplicate" else 1
                for _ in range(copies):
                    heapq.heappush(due, (now + (DELAY if fault == "delay" else 0.0), next(order), frame))
            self.queued[direction] = len(due)


def exchange(dev: Device, rng: random.Random, info: bytes) -> str:
    """One ECHO (random payload and length) or, now and then, INFO: 'ok', 'wrong' (another request's data) or
    the kind of DeviceError; any other exception propagates."""
    if rng.random() < 0.1:
        expected, call = info, lambda: dev.request(Command.INFO)
    else:
        size = rng.choice([0, 1, dev.max_payload, rng.randint(0, dev.max_payload)])
        expected = rng.randbytes(size)
        call = lambda: dev.echo(expected)  # noqa: E731
    try:
        return "ok" if call() == expected else "wrong"
    except DeviceError as exc:
        message = str(exc)
        for kind in ("no complete response", "bad response", "device answered [A-Z_]+"):
            if message.startswith(kind.split(" [")[0]):
                return message.split(" to ")[0] if kind.startswith("device") else kind
        return f"DeviceError: {message}"


@pytest.mark.cost(seconds=30)
def test_no_answer_goes_to_another_request_under_faults():
    rng = random.Random(20240611)
    config = AcceleratorConfig(frame_timeout_ms=FRAME_TIMEOUT_MS)
    info = config.info_json()
    faulted: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    follow_ups: Counter[str] = Counter()
    started = time.monotonic()
    with simulate(config) as board:
        proxy = FaultProxy(board.transport.sock, seed=7)
        try:
            with Device.open(proxy.url, timeout=TIMEOUT) as dev:
                proxy.start()
                assert dev.info() == config.describe()
                for _ in range(FAULTED_REQUESTS):
                    proxy.settle()  # one fault at a time: a failure is this request's doing
                    direction, fault = rng.choice(DIRECTIONS), rng.choice(FAULTS)
                    proxy.plan(direction, dev.next_tag, fault)
                    faulted[f"{direction} {fault}"] += 1
                    outcome = exchange(dev, rng, info)
                    outcomes[f"{direction} {fault}: {outcome}"] += 1
                    if outcome not in ("ok", "wrong"):
                        dev.timeout = FOLLOW_UP_TIMEOUT
                        follow_ups[exchange(dev, rng, info)] += 1
                        dev.timeout = TIMEOUT
                proxy.settle()
                assert dev.echo(b"the end") == b"the end"
        finally:
            proxy.close()
    wrong = sum(n for key, n in outcomes.items() if key.endswith(": wrong")) + follow_ups["wrong"]
    failures = sum(n for key, n in outcomes.items() if not key.endswith((": ok", ": wrong")))
    print(f"\n{sum(faulted.values())} faulted requests in {time.monotonic() - started:.1f} s: {wrong} answers to "
          f"another request, {failures} DeviceErrors, each followed by a clean request "
          f"({follow_ups['ok']} succeeded)")
    for key, n in sorted(outcomes.items()):
        print(f"  {key:<45} {n}")
    assert wrong == 0
    assert not [key for key in outcomes if "DeviceError:" in key], outcomes
    assert follow_ups == Counter(ok=failures), follow_ups
    assert sum(faulted.values()) >= 500
