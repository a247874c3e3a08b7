"""The spectral LeNet-5 pipeline end to end: train, prune, export, check against the golden models (CLI and bench)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import spectral, spectral_model
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
                     magnitude: bool = True, progress: Progress | None = None,
                     log: Callable[[str], None] | None = None) -> dict:
    """Run `spectral.train_pipeline`, export the ADMM model to `out` (None: not written) and summarise."""
    started = time.perf_counter()
    data = _data(data)
    x_train, _, x_test, y_test = data
    result = spectral.train_pipeline(recipe, data=data, magnitude=magnitude, progress=progress)
    models = result.pop("models")
    admm = models["admm"]
    exported = spectral.export(admm, x_train[:CALIBRATION_IMAGES])
    check = golden_check(exported, admm, x_test, y_test)
    train_seconds = time.perf_counter() - started
    metadata = {
        "model": "lenet5-spec2", "sparsity_target": recipe.sparsity,
        "conv_sparsity": {name: 1 - layer.density() for name, layer in zip(spectral_model.CONV_NAMES,
                                                                         exported.convs())},
        "test_accuracy": {"spatial": result["spatial"]["test_accuracy"],
                          "spectral": result["spectral"]["test_accuracy"],
                          "admm_torch": result["admm"]["test_accuracy"],
                          "golden_fixed": check["golden_fixed_accuracy"],
                          "golden_float": check["golden_float_accuracy"]},
        "fixed_vs_torch_disagreements": check["fixed_vs_torch_disagreements"],
        "input_scale": spectral_model.INPUT_SCALE, "calibration_images": CALIBRATION_IMAGES,
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
        acc = metadata["test_accuracy"]
        lines = [f"dense spatial {100 * acc['spatial']:.1f}%, dense spectral {100 * acc['spectral']:.1f}%, "
                 f"ADMM {100 * recipe.sparsity:.0f}% + retraining {100 * acc['admm_torch']:.1f}% (torch), "
                 f"{100 * acc['golden_fixed']:.1f}% (golden fixed point, {check['fixed_vs_torch_disagreements']} "
                 f"predictions differ from torch)"]
        if "magnitude" in result:
            lines.append(f"magnitude {100 * recipe.sparsity:.0f}% + retraining "
                         f"{100 * result['magnitude']['test_accuracy']:.1f}%")
        sparsity = ", ".join(f"{k} {100 * v:.1f}%" for k, v in metadata["conv_sparsity"].items())
        size = f", {summary['export']['file_bytes']} bytes in {out}" if out is not None else ""
        lines.append(f"stored sparsity {sparsity}{size}; {train_seconds:.0f} s")
        for line in lines:
            log(line)
    return summary


def bench_admm(sparsity: float = 0.75, committed: str | Path | None = None,
               progress: Progress | None = None) -> dict:
    """The `python -m host.bench admm` figures: the whole pipeline's accuracies and times, the exported model
    against torch, and the committed model's golden fixed-point accuracy against the one stored in it."""
    data = _data(None)
    summary = train_and_export(spectral.SpectralRecipe(sparsity=sparsity), None, data=data, progress=progress)
    accuracy = {"dense_spatial": summary["spatial"]["test_accuracy"],
                "dense_spectral": summary["spectral"]["test_accuracy"],
                "admm_retrained": summary["admm"]["test_accuracy"],
                "magnitude_retrained": summary["magnitude"]["test_accuracy"],
                "admm_before_retraining": summary["admm"]["test_accuracy_before_retraining"],
                "magnitude_before_retraining": summary["magnitude"]["test_accuracy_before_retraining"],
                "exported_golden_fixed": summary["export"]["golden_fixed_accuracy"],
                "exported_golden_float": summary["export"]["golden_float_accuracy"]}
    gap = 100 * (accuracy["dense_spectral"] - accuracy["admm_retrained"])
    result = {"sparsity": sparsity, "test_images": len(data[3]), "test_accuracy": accuracy,
              "target": {"admm_within_points_of_dense_spectral": 0.5, "gap_points": round(gap, 6),
                         "met": gap <= 0.5},
              "fixed_vs_torch_disagreements": summary["export"]["fixed_vs_torch_disagreements"],
              "float_vs_torch_disagreements": summary["export"]["float_vs_torch_disagreements"],
              "conv_sparsity": summary["export"]["conv_sparsity"],
              "seconds": {"dense_spatial": summary["spatial"]["train_seconds"],
                          "dense_spatial_cached": summary["spatial"]["cached"],
                          "dense_spectral": summary["spectral"]["train_seconds"],
                          "admm": summary["admm"]["admm_seconds"],
                          "admm_and_retraining": summary["admm"]["train_seconds"],
                          "magnitude_and_retraining": summary["magnitude"]["train_seconds"],
                          "golden_fixed_inference": summary["export"]["golden_fixed_seconds"],
                          "total": summary["wall_seconds"]},
              "threads": 1, "recipe": summary["recipe"]}
    if committed is not None and Path(committed).exists():
        model = spectral_model.load(committed)
        fixed = spectral_model.accuracy(spectral_model.predict_fixed(model, data[2]), data[3])
        result["committed_model"] = {"path": str(committed), "file_bytes": Path(committed).stat().st_size,
                                     "golden_fixed_accuracy": fixed,
                                     "stored_golden_fixed_accuracy": model.metadata["test_accuracy"]["golden_fixed"],
                                     "stored_test_accuracy": model.metadata["test_accuracy"]}
    return result
