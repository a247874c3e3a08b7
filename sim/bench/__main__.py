"""`python -m sim.bench NAME [options]`: run one benchmark (see `sim.bench`)."""

from __future__ import annotations

import argparse
import sys

from . import admm, bim, board, e2e, readme, spectral, xor

BENCHMARKS = (xor, bim, spectral, admm, e2e, board, readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.bench", description="sqgen benchmarks (JSON on stdout).")
    sub = parser.add_subparsers(dest="name", required=True, metavar="NAME")
    for module in BENCHMARKS:
        module.register(sub)
    args = parser.parse_args(argv)
    return args.run(args, parser)


if __name__ == "__main__":
    sys.exit(main())
