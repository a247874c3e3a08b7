"""What the benchmarks share: matrix sizes, argument types and the entropy bound."""

from __future__ import annotations

import argparse
import math
import sys

#: A weight matrix of AlexNet's FC6 size, and the small one of `--quick`.
FULL = (4096, 9216)
QUICK = (256, 2304)


def entropy(p: float) -> float:
    """Bits per element of a random binary mask keeping each element with probability p."""
    return 0.0 if p in (0.0, 1.0) else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def progress(message: str) -> None:
    """A progress line on stderr when a person is watching (JSON goes to stdout)."""
    if sys.stderr.isatty():
        print(message, file=sys.stderr)


def add_matrix_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help=f"a {QUICK[0]} x {QUICK[1]} matrix instead of {FULL[0]} x {FULL[1]} (for CI)")
    parser.add_argument("--rows", type=int, help="matrix rows (overrides --quick)")
    parser.add_argument("--cols", type=int, help="matrix columns (overrides --quick)")


def matrix_shape(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[int, int]:
    """The matrix `--quick`, `--rows` and `--cols` ask for; a parser error if it is empty."""
    rows, cols = QUICK if args.quick else FULL
    rows, cols = args.rows or rows, args.cols or cols
    if rows < 1 or cols < 1:
        parser.error(f"--rows and --cols must be positive, got {rows} x {cols}")
    return rows, cols


def tile_arg(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.isdigit() and int(part) >= 1 for part in parts):
        raise argparse.ArgumentTypeError(f"expected MxN with positive integers, e.g. 64x64, got {text!r}")
    return int(parts[0]), int(parts[1])


def sparsity_arg(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"sparsity must be in [0, 1), got {text}")
    return value


def seed_list_arg(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 0,1,2, got {text!r}") from None
    if any(seed < 0 for seed in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct seeds >= 0, got {text!r}")
    return seeds
