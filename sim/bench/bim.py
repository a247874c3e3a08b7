"""`python -m sim.bench bim`: binary-index-matrix masks, as JSON.

    python -m sim.bench bim [--quick] [--sparsity 0.8 0.9 0.95] [--tiles 32x32 ...] [--ranks 2 ...] [--no-lenet]

Index bits per weight (r (m_t + n_t) per tile, padded tiles included) for every tile size and rank swept,
next to the masks' other encodings at the same sparsity (bitmap, CSR, relative-index CSR with 4-bit gaps,
the entropy of a random mask), and the fraction of sum |W| each factored mask keeps against unstructured
magnitude pruning (its upper bound) with the factorizer's time, on a random standard-normal matrix
(4096 x 9216 unless told) and on LeNet-5's trained FC layers (`host.train.lenet.trained_fc_weights`;
reported as skipped, with the reason, when that cannot run). A random matrix has no low-rank structure, so
its kept magnitude sits well below magnitude pruning's. Also LeNet-5's accuracy with BIM masks against
magnitude pruning (both retrained, several seeds) and the (64, 64, 8) unpacker built alone per board.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from .common import add_matrix_arguments, entropy, matrix_shape, progress, sparsity_arg, tile_arg

BIM_TILES = ((32, 32), (64, 64), (128, 128))
BIM_RANKS = (2, 3, 4, 8, 16)
BIM_SPARSITIES = (0.8, 0.9, 0.95)
#: At s = 0.9: index storage under 0.10 bits/weight, and LeNet-5 within 0.5 accuracy points of magnitude pruning.
BIM_TARGET = {"sparsity": 0.9, "index_bits_per_weight": 0.10, "accuracy_gap_points": 0.5}
# Configurations costing this many index bits per weight or more are not swept: at s = 0.9 a random mask's
# entropy is 0.47, so they cannot compete.
BIM_MAX_BITS = 0.5


def mask_encodings(mask: np.ndarray) -> dict:
    """Bits per weight of a (rows, cols) mask in the usual encodings, and the entropy of a random mask like it.

    CSR: 16 bits per kept weight (its column) + 32-bit row pointers (rows + 1). Relative-index CSR: every
    stored entry holds the number of pruned positions skipped since the previous one (or the row start) in
    4 bits; a run of g > 15 pruned positions takes g // 16 filler entries (a stored zero sitting at every 16th
    position) -- 4 bits each, plus the same row pointers. Fillers also cost a stored value, counted apart.
    """
    rows, cols = mask.shape
    n = mask.size
    r_idx, c_idx = np.nonzero(mask)
    nnz = r_idx.size
    starts = np.ones(nnz, dtype=bool)
    starts[1:] = r_idx[1:] != r_idx[:-1]
    previous = np.where(starts, -1, np.concatenate([[-1], c_idx[:-1]]))
    fillers = int(((c_idx - previous - 1) // 16).sum())
    pointers = 32 * (rows + 1)
    density = nnz / n
    return {
        "bitmap": 1.0,
        "csr_16bit_columns": round((16 * nnz + pointers) / n, 5),
        "relative_csr_4bit_gaps": round((4 * (nnz + fillers) + pointers) / n, 5),
        "relative_csr_filler_entries_per_kept": round(fillers / max(nnz, 1), 5),
        "entropy_random_mask": round(entropy(density), 5),
    }


def _bim_configs(shape: tuple[int, int], tiles, ranks, max_bits: float) -> list[tuple[tuple[int, int], int, float]]:
    """(tile, rank, index bits per weight) for every swept configuration cheaper than max_bits."""
    from hw.spec.bim import tile_grid

    configs = []
    for tile in tiles:
        t_r, t_c = tile_grid(shape, *tile)
        for rank in ranks:
            bits = t_r * t_c * rank * (tile[0] + tile[1]) / (shape[0] * shape[1])
            if bits < max_bits:
                configs.append((tuple(tile), rank, bits))
    return configs


def bim_point(weights: np.ndarray, sparsity: float, tile: tuple[int, int], rank: int, seed: int,
              magnitude: float) -> dict:
    """Factorize `weights` at one point; index bits, achieved sparsity, kept magnitude and time."""
    from host.compress.bim import factorize, kept_magnitude

    timings: dict[str, float] = {}
    factored = factorize(weights, sparsity, *tile, rank, seed=seed, timings=timings)
    mask = factored.mask()
    kept = kept_magnitude(weights, mask)
    return {
        "sparsity": sparsity,
        "tile": list(tile),
        "rank": rank,
        "index_bits_per_weight": round(factored.index_bits() / weights.size, 5),
        "achieved_sparsity": round(1 - float(mask.mean()), 5),
        "kept_magnitude": round(kept, 5),
        "magnitude_pruning_kept_magnitude": round(magnitude, 5),
        "kept_vs_magnitude_pruning": round(kept / magnitude, 5) if magnitude > 0 else 1.0,
        "factorizer_seconds": round(sum(timings.values()), 2),
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "_index_bits": factored.index_bits(),
        "_kept_abs": float(np.abs(weights[mask]).astype(np.float64).sum()),
    }


def _strip(point: dict) -> dict:
    return {k: v for k, v in point.items() if not k.startswith("_")}


def _at_target(points: list[dict]) -> dict:
    """The configurations within the index-bit target at the target sparsity, best kept magnitude first."""
    eligible = [p for p in points if p["sparsity"] == BIM_TARGET["sparsity"]
                and p["index_bits_per_weight"] <= BIM_TARGET["index_bits_per_weight"]]
    eligible.sort(key=lambda p: -p["kept_magnitude"])
    return {"target": BIM_TARGET, "configs": [
        {k: p[k] for k in ("tile", "rank", "index_bits_per_weight", "kept_magnitude",
                           "magnitude_pruning_kept_magnitude", "kept_vs_magnitude_pruning", "factorizer_seconds")
         if k in p} for p in eligible]}



def bench_bim_gaussian(shape: tuple[int, int], sparsities: list[float], tiles, ranks, max_bits: float,
                       seed: int) -> dict:
    from host.compress.bim import kept_magnitude, magnitude_mask

    weights = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    configs = _bim_configs(shape, tiles, ranks, max_bits)
    encodings, points = [], []
    for s in sparsities:
        magnitude = magnitude_mask(weights, s)
        bound = kept_magnitude(weights, magnitude)
        encodings.append({"sparsity": s, **mask_encodings(magnitude),
                          "magnitude_pruning_kept_magnitude": round(bound, 5),
                          "random_mask_kept_magnitude": round(1 - s, 5)})
        for tile, rank, _ in configs:
            point = _strip(bim_point(weights, s, tile, rank, seed, bound))
            points.append(point)
            progress(f"gaussian s={s} tile={tile[0]}x{tile[1]} r={rank}: {point['index_bits_per_weight']} bits/weight,"
                      f" kept {point['kept_magnitude']} of {point['magnitude_pruning_kept_magnitude']}, "
                      f"{point['factorizer_seconds']} s")
    return {
        "matrix": list(shape),
        "weights": "standard normal",
        "mask_encodings": encodings,
        "points": points,
        "at_target": _at_target(points),
    }


def _clip(tile: tuple[int, int] | None, shape: tuple[int, ...]) -> tuple[int, int]:
    """The tile a layer uses: the requested one clipped to the layer, or the whole layer for None."""
    return (shape[0], shape[1]) if tile is None else (min(tile[0], shape[0]), min(tile[1], shape[1]))


def bench_bim_lenet(sparsities: list[float], tiles, ranks, max_bits: float, seed: int) -> dict:
    """The sweep on LeNet-5's trained FC layers (those the retraining prunes), tiles clipped to each layer."""
    try:
        from host.train.lenet import PRUNED_BY_DEFAULT, trained_fc_weights
    except Exception as error:  # torch missing, or host.train not there at all
        return {"skipped": f"cannot import host.train.lenet.trained_fc_weights: {type(error).__name__}: {error}"}
    from host.compress.bim import kept_magnitude, magnitude_mask
    from hw.spec.bim import tile_grid

    started = time.perf_counter()
    try:
        layers = {name: w for name, w in trained_fc_weights().items() if name in PRUNED_BY_DEFAULT}
    except Exception as error:  # training data missing, and the like
        return {"skipped": f"trained_fc_weights() failed: {type(error).__name__}: {error}"}
    weights_seconds = time.perf_counter() - started
    # Tiles as the retraining uses them: clipped to the layer (a larger tile would only pad); the whole layer too.
    swept = [*tiles, None]
    points, encodings = [], []
    total = sum(w.size for w in layers.values())
    for s in sparsities:
        bounds = {name: kept_magnitude(w, magnitude_mask(w, s)) for name, w in layers.items()}
        abs_total = {name: float(np.abs(w).astype(np.float64).sum()) for name, w in layers.items()}
        magnitude_all = sum(bounds[n] * abs_total[n] for n in layers) / sum(abs_total.values())
        encodings.append({"sparsity": s, "layers": {name: mask_encodings(magnitude_mask(w, s))
                                                     for name, w in layers.items()},
                          "magnitude_pruning_kept_magnitude": round(magnitude_all, 5)})
        seen = set()
        for tile in swept:
            for rank in ranks:
                clipped = {name: _clip(tile, w.shape) for name, w in layers.items()}
                key = (tuple(clipped.values()), rank)
                bits = sum(math.prod(tile_grid(w.shape, *clipped[name])) * rank * sum(clipped[name])
                           for name, w in layers.items()) / total
                if key in seen or bits >= max_bits:
                    continue
                seen.add(key)
                per_layer = {name: bim_point(w, s, clipped[name], rank, seed, bounds[name])
                             for name, w in layers.items()}
                kept = sum(p["_kept_abs"] for p in per_layer.values()) / sum(abs_total.values())
                points.append({
                    "sparsity": s,
                    "tile": "whole layer" if tile is None else list(tile),
                    "rank": rank,
                    "index_bits_per_weight": round(bits, 5),
                    "kept_magnitude": round(kept, 5),
                    "magnitude_pruning_kept_magnitude": round(magnitude_all, 5),
                    "kept_vs_magnitude_pruning": round(kept / magnitude_all, 5),
                    "factorizer_seconds": round(sum(p["factorizer_seconds"] for p in per_layer.values()), 2),
                    "layers": {name: {k: v for k, v in _strip(p).items() if k in (
                        "tile", "index_bits_per_weight", "achieved_sparsity", "kept_magnitude",
                        "kept_vs_magnitude_pruning")} for name, p in per_layer.items()},
                })
        progress(f"lenet s={s}: {len(points)} points so far")
    return {
        "layers": {name: list(w.shape) for name, w in layers.items()},
        "weights": "host.train.lenet.trained_fc_weights() (dense LeNet-5, default recipe), layers the retraining "
                   "prunes; kept magnitude and index bits summed over them",
        "weights_seconds": round(weights_seconds, 2),
        "mask_encodings": encodings,
        "points": points,
        "at_target": _at_target(points),
    }


def bench_bim(shape: tuple[int, int], sparsities: list[float], tiles, ranks, max_bits: float, seed: int,
              lenet: bool) -> dict:
    result = {
        "benchmark": "bim",
        "index_bits": "r (m_t + n_t) per tile, padded edge tiles included, divided by rows x cols",
        "kept_magnitude": "fraction of sum |W| the mask keeps; magnitude pruning at the same sparsity is its "
                          "upper bound, a random mask keeps 1 - s on average",
        "sparsity_tolerance": 0.005,
        "target": BIM_TARGET,
        "gaussian": bench_bim_gaussian(shape, sparsities, tiles, ranks, max_bits, seed),
    }
    result["lenet"] = (bench_bim_lenet(sparsities, tiles, ranks, max_bits, seed) if lenet
                       else {"skipped": "--no-lenet"})
    points = result["gaussian"]["points"] + result["lenet"].get("points", [])
    result["all_within_sparsity_tolerance"] = all(
        all(abs(layer["achieved_sparsity"] - p["sparsity"]) <= 0.005 for layer in p["layers"].values())
        if "layers" in p else abs(p["achieved_sparsity"] - p["sparsity"]) <= 0.005 for p in points)
    return result


#: LeNet-5 tiles that keep index storage under 0.10 bits/weight with padding counted (one tile row per layer).
BIM_LENET_TILES = {"fc1.weight": (60, 80), "fc2.weight": (84, 60)}
BIM_LENET_RANK = 3


def bench_bim_accuracy(sparsity: float, seeds: list[int]) -> dict:
    """LeNet-5 test accuracy at `sparsity` on fc1/fc2: magnitude pruning vs BIM masks, both retrained alike."""
    try:
        from host.train import lenet
    except ImportError as error:  # the train extra (torch) is missing
        return {"skipped": str(error)}
    result = lenet.compare_over_seeds(seeds, sparsity, tile=BIM_LENET_TILES, rank=BIM_LENET_RANK)
    summary = result["test_accuracy"]
    gap = summary["gap_points"]["mean"]
    return {
        "sparsity": sparsity, "pruned_layers": list(BIM_LENET_TILES), "rank": BIM_LENET_RANK,
        "tiles": {name: f"{m}x{n}" for name, (m, n) in BIM_LENET_TILES.items()},
        "index_bits_per_weight": round(result["runs"][0]["bim"]["index_bits_per_weight_all_pruned"], 4),
        "seeds": seeds,
        "test_accuracy_mean": {name: round(summary[name]["mean"], 4) for name in ("dense", "magnitude", "bim")},
        "gap_points_mean": round(gap, 2),
        "gap_points_per_seed": summary["gap_points"]["values"],
        "meets_target": gap <= BIM_TARGET["accuracy_gap_points"],
    }


def bench_unpacker(boards: list[str], m_t: int = 64, n_t: int = 64, r: int = 8) -> list[dict]:
    """Mask bits per second (n_t x Fmax) of the BIM unpacker built alone for each board."""
    from hw import characterise  # the hardware flow, only when asked for

    rows = []
    for board in boards:
        report = characterise.characterise_bim(characterise.BimUnpackerParams(m_t, n_t, r), board,
                                               progress=lambda message: None)
        rows.append({"board": board, "m_t": m_t, "n_t": n_t, "r": r, "fmax_mhz": report["fmax_mhz"],
                     "mask_bits_per_s": round(n_t * report["fmax_mhz"] * 1e6), "resources": report["resources"]})
    return rows


def register(sub) -> None:
    parser = sub.add_parser("bim", help="binary-index-matrix masks: index bits per weight, kept magnitude, time",
                            description="Index bits per weight of BIM masks per tile size and rank, next to bitmap, "
                                        "CSR, relative-index CSR and entropy; kept magnitude against magnitude "
                                        "pruning; factorizer time. On a random matrix and LeNet-5's FC layers.")
    add_matrix_arguments(parser)
    parser.add_argument("--sparsity", type=sparsity_arg, nargs="+", default=list(BIM_SPARSITIES), metavar="S",
                        help=f"sparsities (default: {' '.join(map(str, BIM_SPARSITIES))})")
    parser.add_argument("--tiles", type=tile_arg, nargs="+", default=list(BIM_TILES), metavar="MxN",
                        help=f"tile sizes (default: {' '.join(f'{m}x{n}' for m, n in BIM_TILES)})")
    parser.add_argument("--ranks", type=int, nargs="+", default=list(BIM_RANKS), metavar="R",
                        help=f"ranks (default: {' '.join(map(str, BIM_RANKS))})")
    parser.add_argument("--max-index-bits", type=float, default=BIM_MAX_BITS, metavar="B",
                        help=f"skip configurations with this many index bits per weight or more "
                             f"(default: {BIM_MAX_BITS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the matrix and the factorizer (default: 0)")
    parser.add_argument("--no-lenet", action="store_true", help="skip LeNet-5's FC layers (which may train LeNet-5)")
    parser.add_argument("--accuracy-seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4], metavar="SEED",
                        help="LeNet-5 accuracy at s = 0.9, magnitude vs BIM masks, both retrained, averaged over "
                             "these seeds (default: 0 1 2 3 4; none to skip)")
    parser.add_argument("--unpacker-boards", nargs="*", default=["icebreaker", "ulx3s-85f"], metavar="BOARD",
                        help="build the (64, 64, 8) unpacker alone for these boards and report n_t x Fmax "
                             "(default: icebreaker ulx3s-85f; none to skip)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    shape = matrix_shape(args, parser)
    if any(r < 1 for r in args.ranks):
        parser.error(f"--ranks must be >= 1, got {args.ranks}")
    result = bench_bim(shape, args.sparsity, args.tiles, args.ranks, args.max_index_bits, args.seed,
                       lenet=not args.no_lenet)
    if args.accuracy_seeds and not args.no_lenet:
        result["accuracy"] = bench_bim_accuracy(BIM_TARGET["sparsity"], args.accuracy_seeds)
    if args.unpacker_boards:
        result["unpacker"] = bench_unpacker(args.unpacker_boards)
    print(json.dumps(result, indent=2))
    return 0 if result["all_within_sparsity_tolerance"] else 1
