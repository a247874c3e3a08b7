"""How `make test` schedules the suite (tests/conftest.py): longest test first, and under xdist a worker that runs
anything shorter gives the longest the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import YIELD_NICENESS

ROOT = Path(__file__).resolve().parents[1]

# Run in a child process: lowering a process's priority cannot be undone.
SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, "tests")
    import pytest
    import conftest

    class Cost:
        def __init__(self, seconds):
            self.kwargs = {"seconds": seconds}

    class Item:
        def __init__(self, seconds, config):
            self.seconds, self.config = seconds, config

        def get_closest_marker(self, name):
            return Cost(self.seconds) if name == "cost" and self.seconds else None

    config = type("Config", (), {"stash": pytest.Stash()})()
    items = [Item(5, config), Item(1200, config), Item(0, config), Item(70, config)]
    conftest.pytest_collection_modifyitems(config, items)
    print(*[item.seconds for item in items])
    print(os.nice(0))
    if len(sys.argv) > 1:
        os.environ["PYTEST_XDIST_WORKER"] = sys.argv[1]
    for item in items:
        conftest.pytest_runtest_setup(item)
        print(os.nice(0), end=" ")
""")


def _run(*args: str) -> list[str]:
    """The script's lines; `args` (a worker name) stands for xdist, whose variable this very run may have set."""
    env = {key: value for key, value in os.environ.items() if key != "PYTEST_XDIST_WORKER"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout.splitlines()


def test_longest_first_and_the_others_give_way_under_xdist():
    order, base, niceness = _run("gw0")
    assert order == "1200 70 5 0"
    # The longest runs at the worker's priority; from the first shorter test on, the worker stays lower, lowered
    # once (Linux caps niceness at 19, which a suite run under `nice` may reach).
    lower = str(min(int(base) + YIELD_NICENESS, 19))
    assert niceness.split() == [base, lower, lower, lower]


def test_no_priority_change_without_xdist():
    order, base, niceness = _run()
    assert order == "1200 70 5 0" and niceness.split() == [base] * 4
