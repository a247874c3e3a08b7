"""Compression benchmarks that print JSON.

    python -m host.bench xor [--quick] [--sparsity 0.91 ...] [--bits 1 ...] [--rows R --cols C] [--n-out 200]
    python -m host.bench bim [--quick] [--sparsity 0.8 0.9 0.95] [--tiles 32x32 ...] [--ranks 2 ...] [--no-lenet]
    python -m host.bench spec2 [--p 4] [--sparsity 0.75] [--no-build] [--no-sim] [--layers vgg ...]
    python -m host.bench admm [--sparsity 0.75] [--seeds 0,1,2] [--model models/lenet5_spec2.npz]

`xor`: the XOR-gate format on a random standard-normal matrix (AlexNet FC6 size, 4096 x 9216, unless told)
under a random unstructured mask (each weight kept with probability 1 - s), for every sparsity s and bit
count q asked for. Per point: stored bits per weight (x + patch positions + patch counts, the format's
payload; alpha and the mask reported apart), the bound (1 - s) q, n_in as `--n-in auto` picks it, the
encoder's time by step, and a check that every kept bit comes back exactly through a written and
re-read file. The paper's figure (0.28 bits/weight at s = 0.91, q = 1) is printed alongside, and the
target point is also evaluated at n_out = 256. `decoder`: the (24, 200) decoder built alone per board
(`hw.characterise`), its Fmax and decoded weights per second (n_out x Fmax).

`bim`: the binary-index-matrix mask format. Index bits per weight (r (m_t + n_t) per tile, padded tiles
included) for every tile size and rank swept, next to the masks' other encodings at the same sparsity
(bitmap, CSR, relative-index CSR with 4-bit gaps, the entropy of a random mask), and the fraction of sum |W|
each factored mask keeps against unstructured magnitude pruning (its upper bound) with the factorizer's
time, on a random standard-normal matrix (4096 x 9216 unless told) and on LeNet-5's trained FC layers
(`host.train.lenet.trained_fc_weights`; reported as skipped, with the reason, when that cannot run).
A random matrix has no low-rank structure, so its kept magnitude sits well below magnitude pruning's.

`spec2`: SPEC2 spectral convolution against the dense baseline on equal DSPs (`host.bench_spec2`).

`admm`: LeNet-5 with SPEC2 spectral conv layers (`host.train.pipeline.bench_admm`; needs torch): test accuracy of
the dense spatial and dense spectral models, of ADMM and of magnitude spectral pruning, each retrained, and of
the exported ADMM model through the golden fixed-point model, per seed (every stage reseeded) with mean and
standard deviation; the exported models' disagreements with torch; the training times (one torch thread);
whether the committed model's stored golden accuracy is reproduced. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PAPER = {"sparsity": 0.91, "bits": 1, "bits_per_weight": 0.28, "source": "Kwon et al., CVPR 2020 (AlexNet FC)"}
TARGET = {"sparsity": 0.91, "bits": 1, "bits_per_weight": 0.12, "encoder_seconds": 60.0}
FULL = (4096, 9216)
QUICK = (256, 2304)
SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.91, 0.95)


def _entropy(p: float) -> float:
    return 0.0 if p in (0.0, 1.0) else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def bench_point(weights: np.ndarray, sparsity: float, bits: int, n_out: int, max_patches: int, seed: int) -> dict:
    """Compress `weights` under a random mask of `sparsity` with q = `bits`; the figures of one point."""
    from host.compress.xor import bcq_quantize, encode_xor
    from hw.spec.xor import bcq_dequantize, load_xor, save_xor

    rng = np.random.default_rng([seed, round(sparsity * 1e6)])
    mask = rng.random(weights.shape) >= sparsity
    n = weights.size
    started = time.perf_counter()
    alpha, planes = bcq_quantize(weights, mask, bits)
    timings = {"quantize": time.perf_counter() - started}
    encoded = encode_xor(alpha, planes, mask, n_out=n_out, max_patches=max_patches, seed=seed, keep_mask=False,
                         timings=timings)

    # The whole round trip through the file: every kept bit, and the dense weights bit for bit.
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.xor.npz"
        save_xor(path, encoded)
        file_bits = path.stat().st_size * 8
        loaded = load_xor(path)
    decoded = loaded.planes()
    recovered = bool(np.array_equal(decoded[:, mask], planes[:, mask]))
    dense_ok = bool(np.array_equal(loaded.dense(mask), bcq_dequantize(alpha, planes, mask)))
    verify = time.perf_counter() - started

    stored = encoded.storage_bits()
    counts = encoded.patch_counts
    slices = counts.size
    beats = np.maximum(1, -(-counts // max_patches)).sum()
    return {
        "sparsity": sparsity,
        "bits": bits,
        "kept_fraction": round(float(mask.mean()), 5),
        "n_in": encoded.params.n_in,
        "n_out": n_out,
        "bits_per_weight": round(stored["total"] / n, 5),
        "bound": round((1 - sparsity) * bits, 5),
        "parts_bits_per_weight": {k: round(v / n, 5) for k, v in stored.items() if k != "total"},
        "alpha_bits_per_weight": round(32 * encoded.alpha.size / n, 5),
        "mask_bits_per_weight": {"bitmap": 1.0, "entropy": round(_entropy(1 - sparsity), 5)},
        "file_bits_per_weight": round(file_bits / n, 5),
        "slices": slices,
        "patches_per_slice": round(float(counts.mean()), 5),
        "patches_max": int(counts.max(initial=0)),
        "patch_histogram": np.bincount(counts).tolist(),
        "decoder_beats_per_slice": round(float(beats / slices), 5),
        "kept_bits_recovered": recovered,
        "dense_weights_equal": dense_ok,
        "seconds": {**{k: round(v, 2) for k, v in timings.items()}, "verify": round(verify, 2)},
        "encoder_seconds": round(timings["quantize"] + timings["choose_n_in"] + timings["encode"], 2),
    }


def bench_xor(shape: tuple[int, int], sparsities: list[float], bits: list[int], n_out: int, max_patches: int,
              seed: int) -> dict:
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal(shape, dtype=np.float32)
    points = []
    for s in sparsities:
        for q in bits:
            point = bench_point(weights, s, q, n_out, max_patches, seed)
            points.append(point)
            if sys.stderr.isatty():
                print(f"s={s} q={q}: {point['bits_per_weight']} bits/weight, n_in={point['n_in']}, "
                      f"{point['encoder_seconds']} s", file=sys.stderr)
    result = {
        "benchmark": "xor",
        "matrix": list(shape),
        "weights": "standard normal",
        "mask": "random unstructured: each weight kept with probability 1 - sparsity",
        "n_out": n_out,
        "n_in": "auto",
        "max_patches": max_patches,
        "stored_bits": "x (n_in per slice) + patch positions (ceil(log2 n_out) each) + patch counts "
                       "(unary: count + 1 per slice); alpha (32 bits per row and plane) and the mask apart",
        "paper": PAPER,
        "target": TARGET,
        "points": points,
    }
    # The target point at the configured n_out and at 256, where a patch position's 8 bits are fully used.
    if TARGET["sparsity"] in sparsities and TARGET["bits"] in bits:
        result["at_target_point"] = []
        for size in sorted({n_out, 256}):
            at = next((p for p in points if p["sparsity"] == TARGET["sparsity"] and p["bits"] == TARGET["bits"]
                       and p["n_out"] == size), None)
            if at is None:
                at = bench_point(weights, TARGET["sparsity"], TARGET["bits"], size, max_patches, seed)
                points.append(at)
            result["at_target_point"].append({
                "n_out": size,
                "n_in": at["n_in"],
                "bits_per_weight": at["bits_per_weight"],
                "meets_bits_target": at["bits_per_weight"] <= TARGET["bits_per_weight"],
                "encoder_seconds": at["encoder_seconds"],
                "meets_time_target": at["encoder_seconds"] <= TARGET["encoder_seconds"],
                "every_kept_bit_recovered": at["kept_bits_recovered"],
            })
    result["all_kept_bits_recovered"] = all(p["kept_bits_recovered"] and p["dense_weights_equal"] for p in points)
    return result


def bench_decoder(boards: list[str], n_in: int = 24, n_out: int = 200, max_patches: int = 2) -> list[dict]:
    """Decoded weights per second (n_out x Fmax) of the XOR decoder built alone for each board."""
    from hw import characterise  # the hardware flow, only when asked for
    from hw.spec.xor import xor_matrix

    params = characterise.XorDecoderParams.from_matrix(xor_matrix(n_out, n_in, 1), max_patches)
    rows = []
    for board in boards:
        report = characterise.characterise(params, board, progress=lambda message: None)
        rows.append({"board": board, "n_in": n_in, "n_out": n_out, "fmax_mhz": report["fmax_mhz"],
                     "weights_per_s": report["weights_per_s"], "resources": report["resources"]})
    return rows


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
        "entropy_random_mask": round(_entropy(density), 5),
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


def _progress(message: str) -> None:
    if sys.stderr.isatty():
        print(message, file=sys.stderr)


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
            _progress(f"gaussian s={s} tile={tile[0]}x{tile[1]} r={rank}: {point['index_bits_per_weight']} bits/weight,"
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
        _progress(f"lenet s={s}: {len(points)} points so far")
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


def _tile_arg(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.isdigit() and int(part) >= 1 for part in parts):
        raise argparse.ArgumentTypeError(f"expected MxN with positive integers, e.g. 64x64, got {text!r}")
    return int(parts[0]), int(parts[1])


def _sparsity(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"sparsity must be in [0, 1), got {text}")
    return value


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 0,1,2, got {text!r}") from None
    if any(seed < 0 for seed in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct seeds >= 0, got {text!r}")
    return seeds


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["e2e"]:  # its own options and help: host.bench_e2e
        from host.bench_e2e import main as bench_e2e_main
        return bench_e2e_main(given[1:])
    parser = argparse.ArgumentParser(prog="python -m host.bench", description="sqgen compression benchmarks (JSON).")
    sub = parser.add_subparsers(dest="name", required=True)
    sub.add_parser("e2e", help="the compressed LeNet-5 end to end: size, accuracy, cycles, Fmax, images/s (JSON)")
    xor = sub.add_parser("xor", help="XOR-gate format: stored bits per weight, bound, encoder time",
                         description="Stored bits per weight of the XOR-gate format on a random matrix, per "
                                     "sparsity and bit count, with every kept bit checked after a file round trip.")
    xor.add_argument("--quick", action="store_true",
                     help=f"a {QUICK[0]} x {QUICK[1]} matrix instead of {FULL[0]} x {FULL[1]} (for CI)")
    xor.add_argument("--rows", type=int, help="matrix rows (overrides --quick)")
    xor.add_argument("--cols", type=int, help="matrix columns (overrides --quick)")
    xor.add_argument("--sparsity", type=_sparsity, nargs="+", default=list(SPARSITIES), metavar="S",
                     help=f"sparsities (default: {' '.join(map(str, SPARSITIES))})")
    xor.add_argument("--bits", type=int, nargs="+", default=[1, 2, 3], metavar="Q", help="bit counts (default: 1 2 3)")
    xor.add_argument("--n-out", type=int, default=200, help="decoded bits per slice (default: 200)")
    xor.add_argument("--max-patches", type=int, default=4, help="patch positions per decoder beat (default: 4)")
    xor.add_argument("--seed", type=int, default=0, help="seed of the matrix, the masks and M (default: 0)")
    xor.add_argument("--decoder-boards", nargs="*", default=["icebreaker", "ulx3s-85f"], metavar="BOARD",
                     help="build the (24, 200) decoder alone for these boards and report n_out x Fmax "
                          "(default: icebreaker ulx3s-85f; none to skip)")
    bim = sub.add_parser("bim", help="binary-index-matrix masks: index bits per weight, kept magnitude, time",
                         description="Index bits per weight of BIM masks per tile size and rank, next to bitmap, "
                                     "CSR, relative-index CSR and entropy; kept magnitude against magnitude "
                                     "pruning; factorizer time. On a random matrix and LeNet-5's FC layers.")
    bim.add_argument("--quick", action="store_true",
                     help=f"a {QUICK[0]} x {QUICK[1]} matrix instead of {FULL[0]} x {FULL[1]} (for CI)")
    bim.add_argument("--rows", type=int, help="matrix rows (overrides --quick)")
    bim.add_argument("--cols", type=int, help="matrix columns (overrides --quick)")
    bim.add_argument("--sparsity", type=_sparsity, nargs="+", default=list(BIM_SPARSITIES), metavar="S",
                     help=f"sparsities (default: {' '.join(map(str, BIM_SPARSITIES))})")
    bim.add_argument("--tiles", type=_tile_arg, nargs="+", default=list(BIM_TILES), metavar="MxN",
                     help=f"tile sizes (default: {' '.join(f'{m}x{n}' for m, n in BIM_TILES)})")
    bim.add_argument("--ranks", type=int, nargs="+", default=list(BIM_RANKS), metavar="R",
                     help=f"ranks (default: {' '.join(map(str, BIM_RANKS))})")
    bim.add_argument("--max-index-bits", type=float, default=BIM_MAX_BITS, metavar="B",
                     help=f"skip configurations with this many index bits per weight or more (default: {BIM_MAX_BITS})")
    bim.add_argument("--seed", type=int, default=0, help="seed of the matrix and the factorizer (default: 0)")
    bim.add_argument("--no-lenet", action="store_true", help="skip LeNet-5's FC layers (which may train LeNet-5)")
    bim.add_argument("--accuracy-seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4], metavar="SEED",
                     help="LeNet-5 accuracy at s = 0.9, magnitude vs BIM masks, both retrained, averaged over these "
                          "seeds (default: 0 1 2 3 4; none to skip)")
    bim.add_argument("--unpacker-boards", nargs="*", default=["icebreaker", "ulx3s-85f"], metavar="BOARD",
                     help="build the (64, 64, 8) unpacker alone for these boards and report n_t x Fmax "
                          "(default: icebreaker ulx3s-85f; none to skip)")
    spec2 = sub.add_parser("spec2", help="SPEC2 vs dense baseline: cycles, DSPs, Fmax, ops per DSP per cycle",
                           description="Spec2Conv against the dense spatial baseline with as many multipliers, "
                                       "on LeNet-5's conv layers and a VGG-like layer: cycles (model, checked "
                                       "against bit-exact RTL simulation), DSPs and Fmax of ECP5 builds, "
                                       "effective operations per DSP per cycle.")
    spec2.add_argument("--p", type=int, default=4, help="MAC lanes; the baseline gets 4 P multipliers (default: 4)")
    spec2.add_argument("--b", type=int, help="spectrum banks (default: 2 P)")
    spec2.add_argument("--sparsity", type=_sparsity, default=0.75, help="spectral sparsity (default: 0.75)")
    spec2.add_argument("--seed", type=int, default=0, help="seed of the random layers and inputs (default: 0)")
    spec2.add_argument("--board", default="ulx3s-85f", help="board the engines are built for (default: ulx3s-85f)")
    spec2.add_argument("--no-build", action="store_true",
                       help="skip the builds: DSPs counted from the design, no Fmax or GOP/s")
    spec2.add_argument("--no-sim", action="store_true", help="skip the RTL simulations (cycle model only)")
    spec2.add_argument("--whole-layer", action="store_true",
                       help="build Spec2Conv as one layer (its real Fmax, about 20 min) instead of stage by stage")
    spec2.add_argument("--layers", nargs="+", metavar="NAME", help="only these layers (default: all)")
    admm = sub.add_parser("admm", help="LeNet-5 spectral pruning: ADMM vs magnitude, retrained; golden accuracy",
                          description="Train LeNet-5 with SPEC2 spectral conv layers, prune them by ADMM and by "
                                      "magnitude, retrain both, export the ADMM model and run it through the golden "
                                      "fixed-point model, once per seed; also check the committed model.")
    admm.add_argument("--sparsity", type=_sparsity, default=0.75, help="spectral sparsity (default: 0.75)")
    admm.add_argument("--seeds", type=_seed_list, default=[0, 1, 2],
                      help="comma-separated seeds; each runs the whole pipeline, dense training included "
                           "(default: 0,1,2)")
    admm.add_argument("--model", default="models/lenet5_spec2.npz",
                      help="committed model to check with the golden backend (default: models/lenet5_spec2.npz)")
    args = parser.parse_args(argv)
    if args.name == "admm":
        try:
            from host.train.pipeline import bench_admm
        except ImportError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        result = bench_admm(args.sparsity, args.seeds, args.model, log=lambda text: print(text, file=sys.stderr,
                                                                                          flush=True))
        print(json.dumps(result, indent=2))
        return 0
    if args.name == "spec2":
        from host.bench_spec2 import LAYERS, bench_spec2

        known = [spec.name for spec in LAYERS]
        if args.layers and not set(args.layers) <= set(known):
            parser.error(f"--layers must name some of {', '.join(known)}, got {' '.join(args.layers)}")
        b = args.b or 2 * args.p
        if args.p < 1 or b < args.p or b & (b - 1) or b > 40:
            parser.error(f"--p must be >= 1 and --b a power of two in P..40, got P={args.p}, B={b}")
        result = bench_spec2(args.p, b, args.sparsity, args.seed, args.board, not args.no_build, not args.no_sim,
                             args.layers, args.whole_layer)
        print(json.dumps(result, indent=2))
        return 0
    if args.name == "bim":
        rows, cols = QUICK if args.quick else FULL
        rows, cols = args.rows or rows, args.cols or cols
        if rows < 1 or cols < 1:
            parser.error(f"--rows and --cols must be positive, got {rows} x {cols}")
        if any(r < 1 for r in args.ranks):
            parser.error(f"--ranks must be >= 1, got {args.ranks}")
        result = bench_bim((rows, cols), args.sparsity, args.tiles, args.ranks, args.max_index_bits, args.seed,
                           lenet=not args.no_lenet)
        if args.accuracy_seeds and not args.no_lenet:
            result["accuracy"] = bench_bim_accuracy(BIM_TARGET["sparsity"], args.accuracy_seeds)
        if args.unpacker_boards:
            result["unpacker"] = bench_unpacker(args.unpacker_boards)
        print(json.dumps(result, indent=2))
        return 0 if result["all_within_sparsity_tolerance"] else 1
    rows, cols = QUICK if args.quick else FULL
    rows, cols = args.rows or rows, args.cols or cols
    if rows < 1 or cols < 1:
        parser.error(f"--rows and --cols must be positive, got {rows} x {cols}")
    if any(not 1 <= q <= 8 for q in args.bits):
        parser.error(f"--bits must be in 1..8, got {args.bits}")
    try:
        result = bench_xor((rows, cols), args.sparsity, args.bits, args.n_out, args.max_patches, args.seed)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.decoder_boards:
        result["decoder"] = bench_decoder(args.decoder_boards)
    print(json.dumps(result, indent=2))
    return 0 if result["all_kept_bits_recovered"] else 1


if __name__ == "__main__":
    sys.exit(main())
