"""`python -m hw.sweep`: a grid of builds of one config on one board, on Ray, with results JSON and a Pareto plot."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from boards import BOARDS

from ..config import CONFIGS
from . import GridError, estimates, prepare, sweep
from .grid import parameters
from .results import read_point
from .run import INSTALL_HINT, RayStartError, import_ray

EPILOG = """\
A grid parameter is a field of the config, dotted into its engines: conv.p, conv.b, conv.n, conv.spec.data_bits,
fc.tree_fanin, fc.xor_fanin, fc.x_lane_writes, fc.n_out (the FC format's fields, fc.n_in, fc.n_out, fc.seed,
fc.max_patches, fc.m_t, fc.r, fc.a_bits, fc.max_bits, rebuild the engine from the new format), act_depth,
fc_xor_depth, clock_hz (ECP5: made by the PLL), ... and the build options seed (nextpnr's), router (router1,
router2), placer (auto, static, heap) and lut_mapper (abc9, abc). --params lists a config's. Booleans take true/false;
a tuple takes '+'-joined values (spram_regions=fc.xor+fc.bim). Every point is validated, and characterised with
the workload, before anything builds: a bad value is one line naming the parameter and the allowed range (exit 2).

The workload gives images/s: its cycles per image on the point's engines by their cycle models, at the Fmax the
build reached (and at the clock the design runs at, when timing is met). Defaults: lenet5 runs
models/lenet5_full.npz (the whole LeNet-5), fc_only models/lenet5_fc16.npz's FC layers, link none (its front is
then Fmax against logic cells). A workload runs only on the engine it was compressed for (its conv schedule's p
and b, its FC format), so a grid over those takes a workload compressed for its one value, or --workload none.

Writes into DIR: points/<key>/ per point (the build's products and point.json, the key a hash of the point's
config and build options), results.json (every point and the Pareto front) and pareto.png. A rerun skips the
points that have finished ("cached"); a failed build is kept as failed unless --retry-failed. Exit status 0 when
every point built (a missed timing is a result), 1 when a build failed or Ray did not start (or reach --address),
2 for a bad grid or a missing extra.

Ray and matplotlib are the sweep extra: pip install -e '.[sweep]'. On a cluster (--address) each node needs
sqgen's dependencies (YoWASP tools included); the working tree is shipped to it with Ray's runtime_env."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hw.sweep", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Build a grid of variants of one accelerator config on one board (on Ray, resumable) and "
                    "compare them: logic cells, Fmax, images/s by the engines' cycle models, the Pareto front.")
    parser.add_argument("--config", required=True, choices=sorted(CONFIGS),
                        help="the named config the grid varies (hw.config.CONFIGS)")
    parser.add_argument("--board", choices=sorted(BOARDS), help="the board (default: the config's own)")
    parser.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2,...",
                        help="one grid parameter and its values; repeat for more (the points are their cross "
                             "product), e.g. --grid seed=1,2 --grid fc.tree_fanin=2,4")
    parser.add_argument("--workload", default="default", metavar="NET.npz|none",
                        help="the compressed network whose cycles per image give images/s (default: the "
                             "config's, see below; none: no workload)")
    parser.add_argument("--workers", type=int, default=1,
                        help="builds at once on the local Ray, one CPU each (default: %(default)s)")
    parser.add_argument("--address", metavar="ADDR",
                        help="a Ray cluster instead of the local Ray: host:port, or ray://host:port (Ray Client)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="output directory (default: build/sweep/<config>-<board>)")
    parser.add_argument("--retry-failed", action="store_true", help="build again the points whose build failed")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the points (cached or not, cycles per image) and build nothing")
    parser.add_argument("--params", action="store_true",
                        help="list the config's grid parameters and their values on it, and build nothing")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")

    try:
        if args.params:
            base = CONFIGS[args.config](**({"board": args.board} if args.board else {}))
            for param in parameters(base).values():
                print(f"{param.name:<24} {param.kind:<9} {param.base!r}")
            return 0
        points, loaded, cycles = prepare(args.config, args.board, args.grid, args.workload)
    except GridError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = args.out or Path("build") / "sweep" / f"{args.config}-{points[0].config.board}"
    if args.dry_run:
        estimated = estimates(points)
        for point in points:
            done = read_point(out, point.key)
            per_image = cycles[point.key]["cycles_per_image"] if point.key in cycles else "-"
            e = estimated[point.key]
            fit = f"estimate {e['logic']} logic cells" + ("" if e["fits"] else ", over: " + "; ".join(e["over"]))
            print(f"{point.index + 1:>3}  {point.key}  {'cached' if done else 'to build':<9} "
                  f"cycles/image {per_image:<8} {point.label}: {fit}")
        return 0
    try:
        import_ray()
        import matplotlib  # noqa: F401 (the plot's; checked before the builds rather than after)
    except ImportError as error:
        print(f"error: hw.sweep needs {error.name}, not installed: {INSTALL_HINT}", file=sys.stderr)
        return 2
    command = shlex.join(["python", "-m", "hw.sweep", *(sys.argv[1:] if argv is None else argv)])
    try:
        document = sweep(args.config, args.board, args.grid, out, workload=args.workload, workers=args.workers,
                         address=args.address, retry_failed=args.retry_failed, command=command,
                         prepared=(points, loaded, cycles))
    except RayStartError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 1 if any(p["status"] in ("failed", "unfinished") for p in document["points"]) else 0


if __name__ == "__main__":
    sys.exit(main())
