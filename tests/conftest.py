"""Shared fixtures: a virtual board served by `python -m sim.server` in a subprocess (`sim.server.start`)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from sim import runner
from sim.server import VirtualBoard, start

#: Python that a test's subprocess runs first to stand in for an environment without the train extra: a meta-path
#: finder that refuses torch and its submodules.
BLOCK_TORCH = (
    "import sys\n"
    "class NoTorch:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'torch' or name.startswith('torch.'):\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
    "sys.meta_path.insert(0, NoTorch())\n"
)

# Property tests judge results, not speed: a loaded CI machine must not turn a slow example into a failure.
settings.register_profile("sqgen", deadline=None)
settings.load_profile("sqgen")

# Each Verilator design compiles once per suite and runs for seconds: g++ at -O1 costs less than the default -Os
# and the model runs as fast here (the four Verilator-heavy tests: 185 -> 176 CPU-s). The virtual boards the
# tests start inherit it.
os.environ.setdefault(runner.VERILATOR_OPT_ENV, "-O1")


#: The expected seconds of the collection's longest test (`pytest_collection_modifyitems`).
LONGEST = pytest.StashKey[float]()
#: How far a worker that runs anything but the longest test lowers its priority (`pytest_runtest_setup`).
YIELD_NICENESS = 10


def expected_seconds(item: pytest.Item) -> float:
    """A test's expected run time: `@pytest.mark.cost(seconds=N)`; an unmarked slow test counts 60 s, any other
    nothing."""
    if (cost := item.get_closest_marker("cost")) is not None:
        return float(cost.kwargs["seconds"])
    return 60.0 if item.get_closest_marker("slow") is not None else 0.0


def pytest_collection_modifyitems(config, items):
    """Longest first: `make test` hands tests to its workers one at a time (`--maxschedchunk 1`), so the long
    ones start first and the short ones fill in around them."""
    items.sort(key=expected_seconds, reverse=True)  # stable: the rest keep their order
    config.stash[LONGEST] = expected_seconds(items[0]) if items else 0.0


#: Whether this process has lowered its priority already.
_yielded = [False]


def pytest_runtest_setup(item):
    """Under xdist, the suite's longest test (the LeNet-5 place and route, which bounds `make test`) gets its core
    to itself: a worker that takes any shorter test lowers its own priority once, for good, and the processes it
    starts inherit that (Verilator's parallel compiles, torch's threads, Ray), so bursts of extra threads do not
    slow the single-threaded nextpnr that the whole run waits for."""
    if "PYTEST_XDIST_WORKER" in os.environ and not _yielded[0] \
            and expected_seconds(item) < item.config.stash.get(LONGEST, 0.0):
        os.nice(YIELD_NICENESS)
        _yielded[0] = True


@pytest.fixture
def virtual_board() -> Iterator[VirtualBoard]:
    """The link-only virtual board (the default simulator: $SQGEN_SIM, else Verilator)."""
    with start(idle_timeout=120) as board:
        yield board
