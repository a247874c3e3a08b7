"""2 x 2 max-pooling, the golden model of `hw.pool.MaxPool2` (and LeNet-5's pooling in every golden path).

NumPy only. Pooling works on the integer codes as they are: it commutes with the monotone quantization.
"""

from __future__ import annotations

import numpy as np


def max_pool(x: np.ndarray) -> np.ndarray:
    """2 x 2 max-pooling with stride 2 over the last two axes (odd edges dropped, as torch does)."""
    *lead, h, w = x.shape
    x = x[..., : h // 2 * 2, : w // 2 * 2]
    return x.reshape(*lead, h // 2, 2, w // 2, 2).max(axis=(-3, -1))
