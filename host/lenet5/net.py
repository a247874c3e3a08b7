"""LeNet-5's layer names and shapes and its input quantization, shared by both model files and the driver.

NumPy only.
"""

from __future__ import annotations

import numpy as np

from host.mnist import IMAGE_SHAPE
from hw.spec import network

__all__ = ["IMAGE_SHAPE", "CONV_NAMES", "FC_NAMES", "FC_SHAPES", "FC_RELU", "FEATURE_SHAPE", "INPUT_SCALE", "BATCH",
           "quantize_input"]

CONV_NAMES = ("conv1", "conv2")
FC_NAMES = ("fc1", "fc2", "fc3")
#: (rows, cols) of each FC layer's weight matrix.
FC_SHAPES = {"fc1": (120, 400), "fc2": (84, 120), "fc3": (10, 84)}
FC_RELU = {"fc1": True, "fc2": True, "fc3": False}
#: The pooled conv2 output the FC layers read: 16 channels of 5 x 5, flattened channel-major as torch does.
FEATURE_SHAPE = (16, 5, 5)
#: Pixels in [0, 1] map to int8 codes 0..127.
INPUT_SCALE = float(np.float32(1 / 127))
#: Images per golden conv call: bounds the int64 intermediates of the fixed-point model to about 100 MB.
BATCH = 250


def quantize_input(x: np.ndarray, scale: float = INPUT_SCALE) -> np.ndarray:
    """Images in [0, 1] -> int64 codes at LeNet-5's input scale (`hw.spec.network.quantize_input`: round half up,
    clamped to int8)."""
    return network.quantize_input(x, scale)
