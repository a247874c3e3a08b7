"""The spectral LeNet-5 pipeline end to end: train, prune, export, check against the golden models (CLI and bench)."""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from host.lenet5 import spectral as spectral_model
from host.lenet5.net import CONV_NAMES, INPUT_SCALE

from . import spectral
from .lenet import Data, Progress, _data, torch, torch_threads

# Training images the conv layers' quantization is calibrated on (the first ones: balanced by digit).
CALIBRATION_IMAGES = 500


def torch_predictions(model: spectral.SpectralLeNet5, x: np.ndarray) -> np.ndarray:
    """Predicted digits of the torch model."""
    model.eval()
    with torch.no_grad(), torch_threads(1):
        return np.concatenate([model(torch.from_numpy(x[s:s + 1000])).argmax(1).numpy()
                               for s in range(0, len(x), 1000)])


def golden_check(exported: spectral_model.SpectralLeNetModel, torch_model: spectral.SpectralLeNet5,
                 x: np.ndarray, y: np.ndarray) -> dict:
    """Accuracy of the exported model with the fixed-point and float golden conv layers, and how many predictions
    differ from the torch model's."""
    started = time.perf_counter()
    fixed = spectral_model.predict_fixed(exported, x)
    fixed_seconds = time.perf_counter() - started
    floating = spectral_model.predict_float(exported, x)
    reference = torch_predictions(torch_model, x)
    return {"golden_fixed_accuracy": spectral_model.accuracy(fixed, y),
            "golden_float_accuracy": spectral_model.accuracy(floating, y),
            "torch_accuracy": spectral_model.accuracy(reference, y),
            "fixed_vs_torch_disagreements": int((fixed != reference).sum()),
            "float_vs_torch_disagreements": int((floating != reference).sum()),
            "golden_fixed_seconds": fixed_seconds}


def train_and_export(recipe: spectral.SpectralRecipe, out: str | Path | None, *, data: Data | None = None,
                     cache: Path | None = None, magnitude: bool = True, progress: Progress | None = None,
                     log: Callable[[str], None] | None = None) -> dict:
    """Run `spectral.train_pipeline` (dense spatial model cached in `cache`, default `lenet.cache_dir()`), export the
    ADMM model to `out` (None: not written) and summarise."""
    started = time.perf_counter()
    data = _data(data)
    x_train, _, x_test, y_test = data
    result = spectral.train_pipeline(recipe, data=data, cache=cache, magnitude=magnitude, progress=progress,
                                     log=log)
    models = result.pop("models")
    admm = models["admm"]
    exported = spectral.export(admm, x_train[:CALIBRATION_IMAGES])
    check = golden_check(exported, admm, x_test, y_test)
    train_seconds = time.perf_counter() - started
    metadata = {
        "model": "lenet5-spec2", "sparsity_target": recipe.sparsity,
        "conv_sparsity": {name: 1 - layer.density() for name, layer in zip(CONV_NAMES, exported.convs())},
        "test_accuracy": {"spatial": result["spatial"]["test_accuracy"],
                          "spectral": result["spectral"]["test_accuracy"],
                          "admm_torch": result["admm"]["test_accuracy"],
                          "golden_fixed": check["golden_fixed_accuracy"],
                          "golden_float": check["golden_float_accuracy"]},
        "fixed_vs_torch_disagreements": check["fixed_vs_torch_disagreements"],
        "input_scale": INPUT_SCALE, "calibration_images": CALIBRATION_IMAGES,
        "recipe": dataclasses.asdict(recipe), "torch": str(torch.__version__),
        "test_split": "host.train.data: every fifth image of each digit (1 000 images)",
    }
    summary = {**result, "export": {**check, "conv_sparsity": metadata["conv_sparsity"]},
               "recipe": metadata["recipe"], "wall_seconds": train_seconds}
    if out is not None:
        exported = dataclasses.replace(exported, metadata=metadata)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        spectral_model.save(out, exported)
        summary["export"]["path"] = str(out)
        summary["export"]["file_bytes"] = Path(out).stat().st_size
    if log is not None:
        pct = "{:.1%}".format
        admm_run = result["admm"]
        log(f"dense spatial {pct(result['spatial']['test_accuracy'])}, dense spectral "
            f"{pct(result['spectral']['test_accuracy'])}")
        log(f"ADMM {recipe.sparsity:.0%} + retraining {pct(admm_run['test_accuracy'])} "
            f"({pct(admm_run['test_accuracy_before_retraining'])} before retraining); exported: golden fixed point "
            f"{pct(check['golden_fixed_accuracy'])}, float {pct(check['golden_float_accuracy'])}; fixed point differs "
            f"from torch on {check['fixed_vs_torch_disagreements']} of {len(y_test)} test images")
        if "magnitude" in result:
            log(f"magnitude {recipe.sparsity:.0%} + retraining {pct(result['magnitude']['test_accuracy'])} "
                f"({pct(result['magnitude']['test_accuracy_before_retraining'])} before retraining)")
        sparsity = ", ".join(f"{k} {v:.1%}" for k, v in metadata["conv_sparsity"].items())
        size = f", {summary['export']['file_bytes']} bytes in {out}" if out is not None else ""
        log(f"stored sparsity {sparsity}{size}; {train_seconds:.0f} s")
    return summary


# Accuracies `bench_admm` reports per seed, by name: where each comes from in `train_and_export`'s summary.
_ACCURACIES = {
    "dense_spatial": ("spatial", "test_accuracy"),
    "dense_spectral": ("spectral", "test_accuracy"),
    "admm_retrained": ("admm", "test_accuracy"),
    "magnitude_retrained": ("magnitude", "test_accuracy"),
    "admm_before_retraining": ("admm", "test_accuracy_before_retraining"),
    "magnitude_before_retraining": ("magnitude", "test_accuracy_before_retraining"),
    "exported_golden_fixed": ("export", "golden_fixed_accuracy"),
    "exported_golden_float": ("export", "golden_float_accuracy"),
}
_SECONDS = {
    "dense_spatial": ("spatial", "train_seconds"),
    "dense_spectral": ("spectral", "train_seconds"),
    "admm": ("admm", "admm_seconds"),
    "admm_and_retraining": ("admm", "train_seconds"),
    "magnitude_and_retraining": ("magnitude", "train_seconds"),
    "golden_fixed_inference": ("export", "golden_fixed_seconds"),
}
# What ADMM + retraining may lose against the dense spectral model, in points of test accuracy (mean over seeds).
TARGET_POINTS = 0.5


def spread(values: list[float]) -> dict:
    """Per-seed values, their mean and sample standard deviation (0 for one value)."""
    return {"values": values, "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def bench_admm(sparsity: float = 0.75, seeds: Sequence[int] = (0, 1, 2), committed: str | Path | None = None, *,
               progress: Progress | None = None, log: Callable[[str], None] | None = None) -> dict:
    """The `python -m sim.bench admm` figures: per seed (every stage reseeded) the whole pipeline's accuracies and
    training times with their means and spreads, the exported models against torch, and the committed model's
    golden fixed-point accuracy against the one stored in it."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds: need at least one seed")
    data = _data(None)
    recipe = spectral.SpectralRecipe(sparsity=sparsity)
    runs = []
    for seed in seeds:
        if log is not None:
            log(f"seed {seed}")
        summary = train_and_export(recipe.seeded(seed), None, data=data, progress=progress, log=log)
        runs.append({"seed": seed,
                     "test_accuracy": {key: summary[stage][field] for key, (stage, field) in _ACCURACIES.items()},
                     "seconds": {**{key: summary[stage][field] for key, (stage, field) in _SECONDS.items()},
                                 "total": summary["wall_seconds"]},
                     "dense_spatial_cached": summary["spatial"]["cached"],
                     "fixed_vs_torch_disagreements": summary["export"]["fixed_vs_torch_disagreements"],
                     "float_vs_torch_disagreements": summary["export"]["float_vs_torch_disagreements"],
                     "conv_sparsity": summary["export"]["conv_sparsity"]})
    accuracy = {key: spread([run["test_accuracy"][key] for run in runs]) for key in _ACCURACIES}
    seconds = {key: spread([run["seconds"][key] for run in runs]) for key in (*_SECONDS, "total")}
    # The paired per-seed gap: both models of a seed share the dense spectral model ADMM starts from.
    gaps = spread([100 * (run["test_accuracy"]["dense_spectral"] - run["test_accuracy"]["admm_retrained"])
                   for run in runs])
    result = {"sparsity": sparsity, "seeds": seeds, "test_images": len(data[3]), "test_accuracy": accuracy,
              "target": {"admm_within_points_of_dense_spectral": TARGET_POINTS, "gap_points": gaps,
                         "met": gaps["mean"] <= TARGET_POINTS},
              "train_seconds": seconds, "torch_threads": recipe.spatial.threads, "cpu_count": os.cpu_count(),
              "recipe": dataclasses.asdict(recipe), "runs": runs}
    if committed is not None and Path(committed).exists():
        model = spectral_model.load(committed)
        fixed = spectral_model.accuracy(spectral_model.predict_fixed(model, data[2]), data[3])
        stored = model.metadata.get("test_accuracy", {})
        result["committed_model"] = {"path": str(committed), "file_bytes": Path(committed).stat().st_size,
                                     "golden_fixed_accuracy": fixed, "stored_test_accuracy": stored,
                                     "reproduced": fixed == stored.get("golden_fixed")}
    return result
