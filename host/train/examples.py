"""The example networks of `models/` (torch, the `train` extra): each a float network trained here and saved as a user
saves theirs, then compressed by the user's own command (`EXAMPLES[name].compress`; `make examples` runs both):

    python -m host.train example mlp_digits --out models/mlp_digits.pt
    python -m host.compress model --from models/mlp_digits.pt --data digits --fc-format fc16 --retrain \\
        --out models/mlp_digits.npz

* `mlp_digits`: 64 -> 32 -> 10 on scikit-learn's digits, its FC layers for the iCEBreaker's format (`fc16`);
* `cnn3_mnist`: three 3 x 3 conv layers (1 -> 4 -> 8 -> 16 channels, each pooled) and one FC layer on MNIST;
* `onnx_digits`: a CNN with BatchNorm, a "valid" convolution and two FC layers on the digits, exported to ONNX
  (`torch.onnx.export`), which the compressor reads without torch.

Deterministic: a seed sets every initial weight and the shuffling, torch runs on one thread (`Recipe`).
"""

from __future__ import annotations

import io
import shlex
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from host.datasets import load_dataset

from .lenet import Recipe, evaluate, fit, seed_everything

__all__ = ["Example", "EXAMPLES", "train_example", "save_example"]


@dataclass(frozen=True)
class Example:
    """An example network: its dataset, its float module, how it is trained, the file it is saved as and the options
    of `python -m host.compress model` that compress it."""

    name: str
    data: str
    build: Callable[[], nn.Module]
    recipe: Recipe
    suffix: str
    options: tuple[str, ...]

    @property
    def source(self) -> str:
        """The float network's file under models/."""
        return f"models/{self.name}{self.suffix}"

    @property
    def compress(self) -> str:
        """The command that compresses the float network into models/NAME.npz."""
        return shlex.join(["python", "-m", "host.compress", "model", "--from", self.source, "--data", self.data,
                           *self.options, "--out", f"models/{self.name}.npz"])


def _named(*layers: tuple[str, nn.Module]) -> nn.Module:
    # Module names become the layers' names in the model file, the traces and the per-layer reports.
    return nn.Sequential(OrderedDict(layers))


def _mlp() -> nn.Module:
    return _named(("flatten", nn.Flatten()), ("fc1", nn.Linear(64, 32)), ("relu1", nn.ReLU()),
                  ("fc2", nn.Linear(32, 10)))


def _cnn3() -> nn.Module:
    # 28 -> 14 -> 7 -> 3: the last pool drops the odd row and column, as the device's pool does.
    return _named(("conv1", nn.Conv2d(1, 4, 3, padding=1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
                  ("conv2", nn.Conv2d(4, 8, 3, padding=1)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
                  ("conv3", nn.Conv2d(8, 16, 3, padding=1)), ("relu3", nn.ReLU()), ("pool3", nn.MaxPool2d(2)),
                  ("flatten", nn.Flatten()), ("fc1", nn.Linear(16 * 3 * 3, 10)))


def _onnx_cnn() -> nn.Module:
    # 8 x 8 -> pooled 4 x 4 -> "valid" 2 x 2: the device runs the valid layer as its "same" output cropped. The
    # BatchNorm is folded into conv1 on import.
    return _named(("conv1", nn.Conv2d(1, 4, 3, padding=1)), ("bn1", nn.BatchNorm2d(4)), ("relu1", nn.ReLU()),
                  ("pool1", nn.MaxPool2d(2)), ("conv2", nn.Conv2d(4, 8, 3)), ("relu2", nn.ReLU()),
                  ("flatten", nn.Flatten()), ("fc1", nn.Linear(8 * 2 * 2, 32)), ("relu3", nn.ReLU()),
                  ("fc2", nn.Linear(32, 10)))


#: Adam at a constant rate 0.01, batch 64, seed 0, one thread (the README's digits networks are trained so too).
_RECIPE = Recipe(epochs=30, lr=0.01, batch_size=64, schedule="constant")

EXAMPLES = {e.name: e for e in (
    Example("mlp_digits", "digits", _mlp, _RECIPE, ".pt", ("--fc-format", "fc16", "--retrain",
                                                                   "--finetune-epochs", "80")),
    Example("cnn3_mnist", "mnist", _cnn3, _RECIPE.replace(epochs=15), ".pt", ("--retrain",)),
    Example("onnx_digits", "digits", _onnx_cnn, _RECIPE.replace(lr=3e-3, batch_size=32), ".onnx", ("--retrain",)),
)}


def train_example(example: Example, seed: int = 0, progress: Callable[[str], None] | None = None
                  ) -> tuple[nn.Module, float]:
    """The example's float module trained on its dataset's training split from `seed`, in eval mode, and its test
    accuracy."""
    data = load_dataset(example.data)
    seed_everything(seed)
    module = example.build()

    def epoch(stage: str, stats: dict) -> None:
        if progress is not None:
            progress(f"{stage} epoch {stats['epoch']}/{stats['epochs']}: loss {stats['loss']:.4f}, "
                     f"train {100 * stats['train_accuracy']:.1f} %")

    fit(module, data.x_train, data.y_train, example.recipe.replace(seed=seed), progress=epoch)
    module.eval()
    return module, evaluate(module, data.x_test, data.y_test, threads=example.recipe.threads)


def save_example(example: Example, module: nn.Module, path: str | Path) -> int:
    """Save the trained module as the example's kind of file: the whole module (`torch.save`) for .pt, an ONNX graph
    of one sample's shape and any batch for .onnx. Returns the bytes written."""
    path = Path(path)
    if example.suffix == ".onnx":
        shape = load_dataset(example.data).sample_shape
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated but needs no onnxscript, which the train extra does not pin.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(module, (torch.zeros(1, *shape),), buffer, dynamo=False, input_names=["x"],
                              output_names=["logits"], dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}},
                              training=torch.onnx.TrainingMode.EVAL)
        path.write_bytes(buffer.getvalue())
    else:
        torch.save(module, path)
    return path.stat().st_size
