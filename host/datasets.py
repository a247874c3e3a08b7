"""The data a network is compressed and evaluated on, named on the command line (`load_dataset`). NumPy only.

* `mnist`: the 5 000 bundled MNIST samples (`host.mnist`): 4 000 training and 1 000 test images, (1, 28, 28).
* `digits`: scikit-learn's 1 797 handwritten digits (8 x 8, 0..16; an optional dependency), as (1, 8, 8) images
  scaled to [0, 1]. No random numbers: in file order, every fifth sample (positions 4, 9, 14, ...) is a test
  sample, the others training samples (1 438 and 359).
* `PATH.npz`: an archive with x_train, y_train, x_test, y_test: samples (N, C, H, W) or (N, features) of real
  numbers, finite; labels (N,) of non-negative integers, one per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from host.mnist import DataError, load_mnist
from hw.spec.npzfile import read_npz

__all__ = ["Dataset", "DatasetError", "NAMED", "FIELDS", "load_dataset", "as_input"]

#: The datasets known by name; anything ending in .npz is read as a file.
NAMED = ("mnist", "digits")
FIELDS = ("x_train", "y_train", "x_test", "y_test")
DIGITS_TEST_EVERY = 5


class DatasetError(ValueError):
    """A dataset that cannot be loaded: one line naming the dataset and, for a file, the field."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Samples float32 (N, *sample_shape) and labels int64 (N,) of both splits, and the dataset's name (a file's
    stem)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One sample's shape: (C, H, W) or (features,), a network's input shape."""
        return tuple(self.x_train.shape[1:])

    @property
    def classes(self) -> int:
        """Number of classes: the largest label plus one."""
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def _mnist() -> Dataset:
    try:
        return Dataset(*load_mnist(), name="mnist")
    except DataError as error:
        raise DatasetError(f"mnist: {error}") from None


def _digits() -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetError("digits: scikit-learn is needed: pip install 'sqgen[import]'") from None
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    test = np.arange(len(y)) % DIGITS_TEST_EVERY == DIGITS_TEST_EVERY - 1
    return Dataset(x[~test], y[~test], x[test], y[test], name="digits")


def _checked(raw: dict[str, np.ndarray], name: str, stem: str) -> Dataset:
    missing = [field for field in FIELDS if field not in raw]
    if missing:
        raise DatasetError(f"{name}: missing field {missing[0]!r} (a dataset holds {', '.join(FIELDS)})")
    for field in ("x_train", "x_test"):
        x = raw[field]
        if x.dtype.kind not in "fiu" or x.ndim not in (2, 4) or len(x) == 0:
            raise DatasetError(f"{name}: field {field!r}: expected real samples (N, C, H, W) or (N, features), "
                               f"N >= 1, got {x.dtype} {x.shape}")
        if not np.isfinite(x).all():
            raise DatasetError(f"{name}: field {field!r}: {int((~np.isfinite(x)).sum())} values are NaN or infinite")
    if raw["x_train"].shape[1:] != raw["x_test"].shape[1:]:
        raise DatasetError(f"{name}: field 'x_test': samples of shape {raw['x_test'].shape[1:]}, but x_train's are "
                           f"{raw['x_train'].shape[1:]}")
    for field, samples in (("y_train", "x_train"), ("y_test", "x_test")):
        y = raw[field]
        if y.dtype.kind not in "iu" or y.shape != (len(raw[samples]),):
            raise DatasetError(f"{name}: field {field!r}: expected integer labels ({len(raw[samples])},), one per "
                               f"sample of {samples}, got {y.dtype} {y.shape}")
        if y.min() < 0:
            raise DatasetError(f"{name}: field {field!r}: labels must be >= 0, got {int(y.min())}")
    return Dataset(raw["x_train"].astype(np.float32), raw["y_train"].astype(np.int64),
                   raw["x_test"].astype(np.float32), raw["y_test"].astype(np.int64), name=stem)


def load_dataset(spec: str | Path) -> Dataset:
    """The dataset `spec` names: `mnist`, `digits` or a path ending in .npz (see the module docstring)."""
    if str(spec).lower().endswith(".npz"):
        path = Path(spec)
        return _checked(read_npz(path, DatasetError), str(path), path.stem)
    if spec == "mnist":
        return _mnist()
    if spec == "digits":
        return _digits()
    raise DatasetError(f"unknown dataset {str(spec)!r}: expected {', '.join(NAMED)} or a .npz file")


def as_input(x: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Samples `x` (N, ...) of the dataset `name` as a network of input `shape` takes them: as they are, or flattened
    channel-major for a network of (features,) inputs; DatasetError when they do not fit."""
    if tuple(x.shape[1:]) == tuple(shape):
        return x
    if len(shape) == 1 and math.prod(x.shape[1:]) == shape[0]:
        return x.reshape(len(x), -1)
    raise DatasetError(f"{name}'s samples are {tuple(x.shape[1:])}, the network takes {tuple(shape)}")
