"""Compress weights into sqgen's formats, and decode them back.

    python -m host.compress xor --weights W.npy --mask MASK.npy --bits 1 --n-out 200 [--n-in auto] --out W.xor.npz
    python -m host.compress xor-decode W.xor.npz --out W.npy
    python -m host.compress bim --weights W.npy --sparsity 0.9 --tile 64x64 --rank 8 --out W.bim.npz [--mask-out M.npy]
    python -m host.compress bim-decode W.bim.npz --out MASK.npy [--weights W.npy]
    python -m host.compress model models/lenet5_spec2.npz --fc-bits 1 --fc-sparsity 0.9 --out models/lenet5_full.npz
    python -m host.compress model --from net.onnx --data digits --out net.npz   # or net.pt --input-shape C,H,W
    python -m host.compress model --from mlp.pt --data digits --fc-format fc16 --out mlp.npz   # for the iCEBreaker
    python -m host.compress model --from net.onnx --data digits --retrain [--epochs N] --out net.npz   # torch
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from host.compress.bim import NMF_ITERS, REFINE_ROUNDS


class InputError(Exception):
    """Bad user input: printed as one line, exit status 2."""


def _load_npy(path: str, option: str) -> np.ndarray:
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{option}: no such file: {path}") from None
    except (OSError, ValueError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"{option}: cannot read {path} as a .npy array ({detail})") from None
    if not isinstance(loaded, np.ndarray):  # an .npz archive
        loaded.close()
        raise InputError(f"{option}: {path} is an .npz archive, expected a single .npy array")
    return loaded


def _weights(path: str) -> np.ndarray:
    w = _load_npy(path, "--weights")
    if w.ndim != 2 or w.size == 0:
        raise InputError(f"--weights: expected a non-empty 2-D matrix, got shape {w.shape}")
    if w.dtype.kind not in "fiu":
        raise InputError(f"--weights: expected real numbers, got dtype {w.dtype}")
    if not np.isfinite(w).all():
        raise InputError(f"--weights: {int((~np.isfinite(w)).sum())} values are NaN or infinite")
    return w


def _mask(path: str, shape: tuple[int, ...]) -> np.ndarray:
    mask = _load_npy(path, "--mask")
    if mask.shape != shape:
        raise InputError(f"--mask: shape {mask.shape} does not match the weights' {shape}")
    if mask.dtype == bool:
        return mask
    if mask.dtype.kind not in "fiu" or not np.isin(mask, (0, 1)).all():
        raise InputError(f"--mask: expected a boolean or 0/1 array (1 = kept), got dtype {mask.dtype} "
                         "with other values")
    return mask != 0


def _write(path: str, write) -> None:
    try:
        write(path)
    except OSError as error:
        raise InputError(f"--out: cannot write {path}: {error.strerror or error}") from None


def _n_in(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from None


def _xor(args: argparse.Namespace) -> int:
    from host.compress.xor import compress_xor
    from hw.spec.xor import save_xor

    weights = _weights(args.weights)
    mask = _mask(args.mask, weights.shape)
    timings: dict[str, float] = {}
    try:
        encoded = compress_xor(weights, mask, bits=args.bits, n_out=args.n_out, n_in=args.n_in,
                               max_patches=args.max_patches, seed=args.seed, als_iters=args.als_iters,
                               keep_mask=not args.no_mask, timings=timings)
    except ValueError as error:
        raise InputError(str(error)) from None
    _write(args.out, lambda path: save_xor(path, encoded))
    n = weights.size
    stored = encoded.storage_bits()
    summary = {
        "out": args.out, "shape": list(weights.shape), "kept": int(mask.sum()), "bits": args.bits,
        "n_in": encoded.params.n_in, "n_in_auto": args.n_in is None, "n_out": args.n_out,
        "patches": int(encoded.patch_positions.size),
        "bits_per_weight": round(stored["total"] / n, 5),
        "bits_per_weight_parts": {k: round(v / n, 5) for k, v in stored.items() if k != "total"},
        "alpha_bits_per_weight": round(32 * encoded.alpha.size / n, 5),
        "mask_in_file": not args.no_mask,
        "file_bytes": Path(args.out).stat().st_size,
        "seconds": {k: round(v, 2) for k, v in timings.items()},
    }
    print(json.dumps(summary))
    return 0


def _xor_decode(args: argparse.Namespace) -> int:
    from hw.spec.xor import XorFormatError, load_xor

    try:
        encoded = load_xor(args.file)
    except XorFormatError as error:
        raise InputError(str(error)) from None
    if args.planes:
        _write(args.out, lambda path: np.save(path, encoded.planes()))
        return 0
    if args.mask is not None:
        mask = _mask(args.mask, encoded.shape)
    elif encoded.mask is not None:
        mask = encoded.mask
    else:
        raise InputError(f"{args.file} carries no mask (written with --no-mask): pass --mask MASK.npy")
    _write(args.out, lambda path: np.save(path, encoded.dense(mask)))
    return 0


def _tile(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.strip().isdigit() and int(part) >= 1 for part in parts):
        raise InputError(f"--tile: expected MxN with positive integers (e.g. 64x64), got {text!r}")
    return int(parts[0]), int(parts[1])


def _fraction(text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value < 1.0:
        raise InputError(f"{option}: must be in [0, 1), got {text!r}")
    return value


def _positive(text: str, option: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"{option}: must be an integer >= {low}, got {text!r}") from None
    if value < low:
        raise InputError(f"{option}: must be >= {low}, got {value}")
    return value


def _bim(args: argparse.Namespace) -> int:
    from host.compress.bim import factorize, kept_magnitude, magnitude_mask

    # Options first: they are cheap to check and the weights may be large.
    m_t, n_t = _tile(args.tile)
    sparsity = _fraction(args.sparsity, "--sparsity")
    rank = _positive(args.rank, "--rank", 1)
    seed = _positive(args.seed, "--seed", 0)
    rounds = _positive(args.rounds, "--rounds", 0)
    nmf_iters = _positive(args.nmf_iters, "--nmf-iters", 0)
    weights = _weights(args.weights)
    timings: dict[str, float] = {}
    try:
        factored = factorize(weights, sparsity, m_t, n_t, rank, seed=seed, nmf_iters=nmf_iters, rounds=rounds,
                             timings=timings)
    except ValueError as error:
        raise InputError(str(error)) from None
    mask = factored.mask()
    _write(args.out, factored.save)
    if args.mask_out is not None:
        try:
            np.save(args.mask_out, mask)
        except OSError as error:
            raise InputError(f"--mask-out: cannot write {args.mask_out}: {error.strerror or error}") from None
    kept = kept_magnitude(weights, mask)
    bound = kept_magnitude(weights, magnitude_mask(weights, sparsity))
    summary = {
        "out": args.out, "shape": list(weights.shape), "tile": [m_t, n_t], "rank": rank, "tiles": list(factored.grid),
        "target_sparsity": sparsity, "sparsity": round(1 - float(mask.mean()), 6), "kept": int(mask.sum()),
        "index_bits": factored.index_bits(),
        "index_bits_per_weight": round(factored.index_bits() / weights.size, 5),
        "kept_magnitude": round(kept, 5),
        "magnitude_pruning_kept_magnitude": round(bound, 5),
        "kept_magnitude_vs_magnitude_pruning": round(kept / bound, 5) if bound > 0 else 1.0,
        "file_bytes": Path(args.out).stat().st_size,
        "seconds": {k: round(v, 2) for k, v in timings.items()},
    }
    print(json.dumps(summary))
    return 0


def _bim_decode(args: argparse.Namespace) -> int:
    from hw.spec.bim import BimFormatError, BimMask

    try:
        factored = BimMask.load(args.file)
    except BimFormatError as error:
        raise InputError(str(error)) from None
    if args.weights is None:
        _write(args.out, lambda path: np.save(path, factored.mask()))
        return 0
    weights = _weights(args.weights)
    if weights.shape != factored.shape:
        raise InputError(f"--weights: shape {weights.shape} does not match the mask's {factored.shape}")
    _write(args.out, lambda path: np.save(path, factored.apply(weights)))
    return 0


def _fc_sparsity(text: str) -> float | tuple[float, ...]:
    parts = text.split(",")
    values = []
    for part in parts:
        try:
            values.append(float(part))
        except ValueError:
            values.append(float("nan"))
    if len(values) not in (1, 3) or not all(0.0 <= v < 1.0 for v in values):
        raise InputError(f"--fc-sparsity: expected S or S1,S2,S3 (fc1, fc2, fc3), each in [0, 1), got {text!r}")
    return values[0] if len(values) == 1 else tuple(values)


def _fc_format(args: argparse.Namespace):
    """The FC format `--fc-format` names (default: the FC engine's default) with the options' overrides."""
    import dataclasses

    from hw.spec.fc_format import FC_FORMATS

    if args.fc_format not in FC_FORMATS:
        raise InputError(f"--fc-format: expected one of {', '.join(FC_FORMATS)}, got {args.fc_format!r}")
    overrides = {name: _positive(value, option, 1) for name, value, option in (
        ("n_in", args.n_in, "--n-in"), ("n_out", args.n_out, "--n-out"), ("m_t", args.tile_rows, "--tile-rows"),
        ("r", args.rank, "--rank")) if value is not None}
    try:
        return dataclasses.replace(FC_FORMATS[args.fc_format], **overrides)
    except ValueError as error:
        raise InputError(f"FC format: {error}") from None


def _shape(text: str) -> tuple[int, ...]:
    parts = text.split(",")
    if len(parts) not in (1, 3) or not all(part.strip().isdigit() and int(part) >= 1 for part in parts):
        raise InputError(f"--input-shape: expected C,H,W or FEATURES, positive integers, got {text!r}")
    return tuple(int(part) for part in parts)


def _samples(x, shape: tuple[int, ...], name: str):
    """Samples of the dataset `name` as the network takes them (`host.datasets.as_input`); InputError when they do
    not fit."""
    from host.datasets import DatasetError, as_input

    try:
        return as_input(x, shape, name)
    except DatasetError as error:
        raise InputError(f"--data: {error}") from None


def _retraining(args: argparse.Namespace):
    """With --retrain: `host.train.network` and the recipe its options make (InputError naming the `train` extra
    without torch); (None, None) without it."""
    options = {"--epochs": args.epochs, "--admm-iterations": args.admm_iterations, "--admm-epochs": args.admm_epochs}
    if not args.retrain:
        given = [option for option, value in options.items() if value is not None]
        if given:
            raise InputError(f"{given[0]} needs --retrain")
        return None, None
    lowest = {"--epochs": 0, "--admm-iterations": 0, "--admm-epochs": 1, "--finetune-epochs": 0}
    value = {option: None if text is None else _positive(text, option, lowest[option])
             for option, text in {**options, "--finetune-epochs": args.finetune_epochs}.items()}
    try:
        # host.train sits above host.compress in the floor plan (the compressor never needs torch); this CLI option
        # is the one import that reaches up, written as an exception in pyproject.toml's "host" contract.
        from host.train import network as training
    except ImportError as error:
        raise InputError(str(error).splitlines()[0]) from None
    recipe = training.DEFAULT_NETWORK_RECIPE
    admm = recipe.admm.replace(iterations=value["--admm-iterations"] or recipe.admm.iterations)
    admm = admm.replace(w_step=admm.w_step.replace(epochs=value["--admm-epochs"] or admm.w_step.epochs))
    retrain, finetune = (stage if value[option] is None else stage.replace(epochs=value[option])
                         for stage, option in ((recipe.retrain, "--epochs"), (recipe.finetune, "--finetune-epochs")))
    return training, recipe.replace(admm=None if value["--admm-iterations"] == 0 else admm, retrain=retrain,
                                    finetune=finetune)


def _network_model(args: argparse.Namespace) -> int:
    """`model --from FILE`: a float network (ONNX or PyTorch) compressed after training on --data."""
    from host.compress.network import (
        DEFAULT_CALIBRATION,
        DEFAULT_CONV_SPARSITY,
        DEFAULT_FC_SPARSITY,
        LOSS_WARNING,
        compress_network,
    )
    from host.datasets import load_dataset
    from host.network import TORCH_SUFFIXES, load_network
    from host.network.importing import one_line
    from hw.spec.network import save_model

    if args.spectral is not None:
        raise InputError(f"give either SPECTRAL.npz or --from, not both (got {args.spectral} and --from)")
    if args.data is None:
        raise InputError("--from needs --data: mnist, digits or a .npz dataset (calibration and test samples)")
    fmt = _fc_format(args)
    conv_sparsity = _fraction(args.conv_sparsity, "--conv-sparsity") if args.conv_sparsity is not None \
        else DEFAULT_CONV_SPARSITY
    fc_sparsity = _fraction(args.fc_sparsity, "--fc-sparsity") if args.fc_sparsity is not None \
        else DEFAULT_FC_SPARSITY
    calibration = _positive(args.calibration, "--calibration", 1) if args.calibration is not None \
        else DEFAULT_CALIBRATION
    fft_size = _positive(args.fft_size, "--fft-size", 4) if args.fft_size is not None else None
    seed = _positive(args.seed, "--seed", 0)
    shape = _shape(args.input_shape) if args.input_shape is not None else None
    if args.finetune_epochs is not None and not args.retrain:
        raise InputError("--finetune-epochs is for the spectral LeNet-5, or with --retrain; a network from --from is "
                         "otherwise compressed without retraining")
    training, recipe = _retraining(args)
    try:
        data = load_dataset(args.data)
    except (ValueError, OSError, ImportError) as error:
        raise InputError(f"--data: {one_line(error)}") from None
    if shape is None and Path(args.source).suffix.lower() in TORCH_SUFFIXES:
        shape = data.sample_shape  # a PyTorch file does not record its input
    try:
        net = load_network(args.source, shape)
    except (ValueError, OSError, ImportError) as error:
        raise InputError(one_line(error)) from None
    x_train = _samples(data.x_train, net.input_shape, data.name)
    x_test = _samples(data.x_test, net.input_shape, data.name)
    name = args.name or Path(args.source).stem

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    progress(f"{args.source}: {len(net.layers)} layers, {net.parameters():,} parameters; {data.name}: "
             f"{len(x_train)} training, {len(x_test)} test samples")
    try:
        if training is None:
            result = compress_network(net, x_train, x_test, data.y_test, conv_sparsity=conv_sparsity,
                                      fc_sparsity=fc_sparsity, fc_bits=args.fc_bits, fmt=fmt, fft_size=fft_size,
                                      calibration=calibration, percentile=args.percentile, seed=seed, name=name,
                                      dataset=str(args.data), progress=progress)
        else:
            result = training.retrain_and_compress(
                net, x_train, data.y_train, x_test, data.y_test, conv_sparsity=conv_sparsity, fc_sparsity=fc_sparsity,
                fc_bits=args.fc_bits, fmt=fmt, fft_size=fft_size, recipe=recipe, seed=seed, progress=progress,
                calibration=calibration, percentile=args.percentile, name=name, dataset=str(args.data))
    except ValueError as error:
        raise InputError(one_line(error)) from None
    if result.message is not None:
        progress(f"advice: {result.message}")
    _write(args.out, lambda path: save_model(path, result.model))
    meta = result.model.metadata
    summary = {
        "out": args.out, "file_bytes": Path(args.out).stat().st_size, "name": name, "dataset": meta["dataset"],
        "input_shape": list(net.input_shape),
        "layers": [{"name": layer.name, "kind": layer.kind, "out_shape": list(shape)}
                   for layer, shape in zip(result.model.layers, result.model.shapes)],
        "conv_engine": meta["conv_engine"], "conv_sparsity": meta["conv_sparsity"],
        "fc_bits": meta["fc_bits"], "fc_sparsity": meta["fc_sparsity"], "accuracy": result.accuracy,
        "accuracy_lost": None if result.accuracy["compressed"] is None else
        round(result.accuracy["float"] - result.accuracy["compressed"], 6),
        "loss_warning": LOSS_WARNING, "advice": result.message,
        "fc_bits_per_weight": {name: part["bits_per_weight"] for name, part in meta["sizes"].items()},
        "seconds": meta["compress_seconds"],
    }
    if "retrain" in meta:
        summary["retrain_seconds"] = meta["retrain"]["train_seconds"]
    print(json.dumps(summary, indent=1 if args.pretty else None))
    return 0


def _model(args: argparse.Namespace) -> int:
    import dataclasses

    from host.compress.model import compress_model
    from host.lenet5 import spectral as spectral_model
    from host.lenet5.compressed import save_model
    from hw.spec.spectral.layer import SpectralFormatError

    if args.source is not None:
        return _network_model(args)
    if args.spectral is None:
        raise InputError("give the spectral LeNet-5 (SPECTRAL.npz) or a network to compress (--from FILE)")
    for option, value in (("--data", args.data), ("--input-shape", args.input_shape),
                          ("--conv-sparsity", args.conv_sparsity), ("--fft-size", args.fft_size),
                          ("--calibration", args.calibration), ("--name", args.name),
                          ("--retrain", args.retrain or None), ("--epochs", args.epochs),
                          ("--admm-iterations", args.admm_iterations), ("--admm-epochs", args.admm_epochs)):
        if value is not None:
            raise InputError(f"{option} is for a network from --from, not the spectral LeNet-5")
    sparsity = _fc_sparsity("0.9" if args.fc_sparsity is None else args.fc_sparsity)
    epochs = _positive("20" if args.finetune_epochs is None else args.finetune_epochs, "--finetune-epochs", 0)
    fmt = _fc_format(args)
    fc_bits = 1 if args.fc_bits is None else args.fc_bits
    try:
        spectral = spectral_model.load(args.spectral)
    except SpectralFormatError as error:
        raise InputError(str(error)) from None
    tty = sys.stderr.isatty()
    open_line = [False]

    def progress(message: str) -> None:
        # Per-batch conv messages overwrite each other on a terminal and are left out of a log.
        if message.startswith("conv features ") and "/" in message:
            if tty:
                print(f"\r  {message}", end="", file=sys.stderr, flush=True)
                open_line[0] = True
            return
        print(("\n" if open_line[0] else "") + message, file=sys.stderr, flush=True)
        open_line[0] = False

    started = time.perf_counter()
    try:
        model = compress_model(spectral, fmt=fmt, bits=fc_bits, sparsity=sparsity, finetune_epochs=epochs,
                               finetune_mode=args.finetune_mode, lr=args.lr, seed=_positive(args.seed, "--seed", 0),
                               percentile=args.percentile, progress=progress)
    except ImportError as error:
        raise InputError(str(error)) from None
    except ValueError as error:
        raise InputError(str(error)) from None
    model.metadata["compress_seconds"] = round(time.perf_counter() - started, 1)
    _write(args.out, lambda path: save_model(path, model))
    meta = model.metadata
    summary = {
        "out": args.out, "file_bytes": Path(args.out).stat().st_size, "fc_format": dataclasses.asdict(fmt),
        "fc_bits": fc_bits, "fc_sparsity": meta["fc_sparsity"], "test_accuracy": meta["test_accuracy"],
        "bits_per_weight": {name: part["bits_per_weight"] for name, part in meta["sizes"].items()},
        "seconds": meta["compress_seconds"],
    }
    print(json.dumps(summary, indent=1 if args.pretty else None))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m host.compress", description="Compress pruned weight matrices into sqgen formats.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    xor = sub.add_parser(
        "xor", help="XOR-gate format: binary-coding quantization, slices solved over GF(2), patches",
        description="Quantize the kept weights (binary coding, q bit-planes), encode each bit-plane's n_out-bit "
                    "slices as n_in bits decoded by a fixed XOR network, and write the .npz of "
                    "docs/formats.md. Prints a JSON summary (stored bits per weight and their parts).")
    xor.add_argument("--weights", required=True, metavar="W.npy", help="2-D float matrix (rows, cols)")
    xor.add_argument("--mask", required=True, metavar="MASK.npy",
                     help="pruning mask of the same shape: bool or 0/1, 1 = kept")
    xor.add_argument("--bits", type=int, default=1, metavar="Q", help="bit-planes q (default: 1)")
    xor.add_argument("--n-out", type=int, default=200, help="decoded bits per slice (default: 200)")
    xor.add_argument("--n-in", type=_n_in, default=None, metavar="N|auto",
                     help="stored bits per slice, or 'auto' for the fewest stored bits (default: auto)")
    xor.add_argument("--max-patches", type=int, default=4,
                     help="patch positions per decoder beat, a hardware parameter (default: 4)")
    xor.add_argument("--seed", type=int, default=0, help="seed of the XOR matrix M (default: 0)")
    xor.add_argument("--als-iters", type=int, default=10,
                     help="alternating least-squares rounds after the greedy quantizer (default: 10)")
    xor.add_argument("--no-mask", action="store_true",
                     help="do not store the mask in the file (xor-decode then needs --mask)")
    xor.add_argument("--out", required=True, metavar="W.xor.npz", help="output file")
    xor.set_defaults(run=_xor)

    dec = sub.add_parser(
        "xor-decode", help="decode an XOR-format file to dense weights (or bit-planes)",
        description="Decode an XOR-format .npz to dense float32 weights, pruned positions exactly 0.")
    dec.add_argument("file", metavar="W.xor.npz")
    dec.add_argument("--mask", metavar="MASK.npy", help="pruning mask (default: the one stored in the file)")
    dec.add_argument("--planes", action="store_true",
                     help="write the decoded bit-planes (bits, rows, cols) uint8 instead, 1 = +1")
    dec.add_argument("--out", required=True, metavar="W.npy", help="output .npy")
    dec.set_defaults(run=_xor_decode)

    bim = sub.add_parser(
        "bim", help="binary-index-matrix mask: per-tile Boolean product P Z found from |W|",
        description="Find a pruning mask of the given sparsity (+-0.5 %%) made of tiles that are each the Boolean "
                    "product of binary P (m_t x r) and Z (r x n_t), keeping as much |W| as possible, and write "
                    "the .npz of docs/formats.md. Prints a JSON summary (index bits per weight, kept magnitude "
                    "against unstructured magnitude pruning).")
    bim.add_argument("--weights", required=True, metavar="W.npy", help="2-D float matrix (rows, cols)")
    bim.add_argument("--sparsity", required=True, metavar="S", help="fraction of weights pruned, in [0, 1)")
    bim.add_argument("--tile", required=True, metavar="MxN", help="tile rows x columns, e.g. 64x64")
    bim.add_argument("--rank", required=True, metavar="R", help="rank r of each tile's Boolean product")
    bim.add_argument("--seed", default="0", metavar="N", help="seed of the factorizer (default: 0)")
    bim.add_argument("--rounds", default=str(REFINE_ROUNDS), metavar="N",
                     help=f"rounds of greedy bit flips after binarizing, 0 for none (default: {REFINE_ROUNDS})")
    bim.add_argument("--nmf-iters", default=str(NMF_ITERS), metavar="N",
                     help=f"multiplicative-update NMF iterations (default: {NMF_ITERS})")
    bim.add_argument("--out", required=True, metavar="W.bim.npz", help="output file")
    bim.add_argument("--mask-out", metavar="MASK.npy", help="also write the mask (bool, True = kept), e.g. for "
                                                            "`xor --mask`")
    bim.set_defaults(run=_bim)

    bim_dec = sub.add_parser(
        "bim-decode", help="decode a BIM file to its mask (or to the weights it keeps)",
        description="Decode a BIM .npz to the bool mask (rows, cols), True = kept.")
    bim_dec.add_argument("file", metavar="W.bim.npz")
    bim_dec.add_argument("--weights", metavar="W.npy",
                         help="write these weights with pruned positions exactly 0 instead of the mask")
    bim_dec.add_argument("--out", required=True, metavar="MASK.npy", help="output .npy")
    bim_dec.set_defaults(run=_bim_decode)

    model = sub.add_parser(
        "model", help="compress the spectral LeNet-5, or a network of your own (--from), into the accelerator's "
                      "model",
        description="Compress a spectral LeNet-5 file (models/lenet5_spec2.npz) into the accelerator's model "
                    "(docs/formats.md, 'Compressed LeNet-5'): the conv layers as they are; each FC layer pruned by "
                    "a BIM mask, optionally fine-tuned with the mask fixed (torch), binary-coded, its tile-major "
                    "bit-planes XOR-encoded for the FC engine's fixed format, and requantized to integers "
                    "calibrated on the training split. With --from FILE (.onnx, or a PyTorch file with "
                    "--input-shape) instead: any network sqgen takes, compressed after training on --data "
                    "(docs/formats.md, 'Compressed networks'), its accuracy after each stage (float, spectral, "
                    "pruned, compressed) shown and stored. Progress on stderr; a JSON summary on stdout (accuracies "
                    "on the test split, stored bits per weight of each layer).")
    model.add_argument("spectral", metavar="SPECTRAL.npz", nargs="?", default=None,
                       help="spectral LeNet-5 file (python -m host.train lenet5)")
    model.add_argument("--from", dest="source", metavar="FILE", default=None,
                       help="a float network to compress instead: .onnx, or .pt/.pth/.ts/.torchscript (torch)")
    model.add_argument("--data", metavar="SPEC", default=None,
                       help="with --from: mnist, digits or a .npz (x_train, y_train, x_test, y_test): calibration "
                            "samples (the first of x_train) and the test split the accuracies are measured on")
    model.add_argument("--input-shape", metavar="C,H,W", default=None,
                       help="with --from: one sample's shape, for a PyTorch file (default: the data's) or an ONNX "
                            "graph without a fixed input shape")
    model.add_argument("--conv-sparsity", metavar="S", default=None,
                       help="with --from: fraction of each conv layer's canonical spectral bins pruned (default: 0.5)")
    model.add_argument("--fft-size", metavar="N", default=None,
                       help="with --from: the conv engine's FFT size (default: from the largest kernel, 8 up to 5 x 5)")
    model.add_argument("--calibration", metavar="N", default=None,
                       help="with --from: calibration samples, the first of x_train (default: 500)")
    model.add_argument("--name", default=None, help="with --from: the model's name in its metadata (default: the "
                                                    "file's stem)")
    model.add_argument("--fc-bits", type=int, default=None, metavar="Q",
                       help="bit-planes per FC weight (default: 1; with --from the format's max_planes, 4)")
    model.add_argument("--fc-sparsity", default=None, metavar="S[,S2,S3]",
                       help="fraction of FC weights pruned, one value or fc1,fc2,fc3 (default: 0.9; with --from one "
                            "value for every FC layer, default 0.25)")
    model.add_argument("--retrain", action="store_true",
                       help="with --from: retrain on the training split of --data before compressing (torch, the "
                            "train extra): ADMM pruning of the conv layers' spectral bins, retraining with the conv "
                            "and FC masks fixed, FC fine-tuning through the binary-coded weights")
    model.add_argument("--epochs", default=None, metavar="N",
                       help="with --retrain: epochs of retraining with the masks fixed (default: 10)")
    model.add_argument("--admm-iterations", default=None, metavar="N",
                       help="with --retrain: ADMM rounds, 0 to prune the bins by magnitude at once (default: 6)")
    model.add_argument("--admm-epochs", default=None, metavar="N",
                       help="with --retrain: epochs per ADMM round (default: 2)")
    model.add_argument("--finetune-epochs", default=None, metavar="N",
                       help="epochs of FC fine-tuning with the masks fixed, needs torch; 0 for none (default: 20; "
                            "with --from only with --retrain, default 5)")
    model.add_argument("--finetune-mode", choices=("ste", "float"), default="ste",
                       help="ste: train through the binary-coded weights (straight-through); float: train the "
                            "masked float weights, quantize after (default: ste)")
    model.add_argument("--lr", type=float, default=3e-3, help="fine-tuning learning rate, Adam (default: 0.003)")
    model.add_argument("--seed", default="0", metavar="N", help="seed of the BIM factorizer and the fine-tuning "
                                                                 "(default: 0)")
    model.add_argument("--percentile", type=float, default=100.0,
                       help="percentile of |training outputs| mapped to code 127, per FC layer (default: 100)")
    model.add_argument("--fc-format", default="default", metavar="NAME",
                       help="the FC engine's format the FC layers are compressed for: default (n_out 64, the ECP5 "
                            "builds) or fc16 (n_out 16, 1 plane: the iCEBreaker's); the options below override its "
                            "fields (default: default)")
    for option, name, what in (("--n-in", "n_in", "XOR stored bits per slice"),
                               ("--n-out", "n_out", "XOR slice bits = BIM tile columns"),
                               ("--tile-rows", "tile_rows", "BIM tile rows m_t"), ("--rank", "rank", "BIM rank r")):
        model.add_argument(option, dest=name, metavar="N",
                           help=f"{what}, overriding the --fc-format's (a file made so is for another hardware "
                                "configuration)")
    model.add_argument("--pretty", action="store_true", help="indent the JSON summary")
    model.add_argument("--out", required=True, metavar="MODEL.npz", help="output model file")
    model.set_defaults(run=_model)

    args = parser.parse_args(argv)
    if getattr(args, "als_iters", 0) < 0:
        parser.error(f"--als-iters must be >= 0, got {args.als_iters}")
    started = time.perf_counter()
    try:
        status = args.run(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if sys.stderr.isatty():
        print(f"done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
