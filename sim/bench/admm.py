"""`python -m sim.bench admm`: LeNet-5's spectral pruning, ADMM against magnitude, as JSON (needs torch).

    python -m sim.bench admm [--sparsity 0.75] [--seeds 0,1,2] [--model models/lenet5_spec2.npz]

LeNet-5 with SPEC2 spectral conv layers (`host.train.pipeline.bench_admm`): test accuracy of the dense spatial
and dense spectral models, of ADMM and of magnitude spectral pruning, each retrained, and of the exported ADMM
model through the golden fixed-point model, per seed (every stage reseeded) with mean and standard deviation;
the exported models' disagreements with torch; the training times (one torch thread); whether the committed
model's stored golden accuracy is reproduced. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

from .common import seed_list_arg, sparsity_arg


def register(sub) -> None:
    parser = sub.add_parser("admm", help="LeNet-5 spectral pruning: ADMM vs magnitude, retrained; golden accuracy",
                            description="Train LeNet-5 with SPEC2 spectral conv layers, prune them by ADMM and by "
                                        "magnitude, retrain both, export the ADMM model and run it through the "
                                        "golden fixed-point model, once per seed; also check the committed model.")
    parser.add_argument("--sparsity", type=sparsity_arg, default=0.75, help="spectral sparsity (default: 0.75)")
    parser.add_argument("--seeds", type=seed_list_arg, default=[0, 1, 2],
                        help="comma-separated seeds; each runs the whole pipeline, dense training included "
                             "(default: 0,1,2)")
    parser.add_argument("--model", default="models/lenet5_spec2.npz",
                        help="committed model to check with the golden backend (default: models/lenet5_spec2.npz)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        from host.train.pipeline import bench_admm
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = bench_admm(args.sparsity, args.seeds, args.model,
                        log=lambda text: print(text, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=2))
    return 0
