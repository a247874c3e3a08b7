"""The float networks sqgen takes, and where they come from: `ir` (the network: layers, shapes, a NumPy forward
pass), `from_onnx` (ONNX models, no torch), `from_torch` (PyTorch modules, torch imported only when used).

`load_network(path, input_shape)` picks the importer from the file's suffix; both refuse what sqgen cannot
run with one line naming the node or module (`NetworkImportError`, a `NetworkError`, a `ValueError`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from host.network.importing import NetworkImportError
from host.network.ir import LAYER_KINDS, Conv2d, Flatten, FloatNetwork, Layer, Linear, MaxPool2d, NetworkError, ReLU

__all__ = ["Conv2d", "Flatten", "FloatNetwork", "LAYER_KINDS", "Layer", "Linear", "MaxPool2d", "NetworkError",
           "NetworkImportError", "ReLU", "load_network"]

#: Suffixes read as PyTorch files (a module saved whole, or TorchScript); everything else must be .onnx.
TORCH_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript")


def load_network(path: str | Path, input_shape: Sequence[int] | None = None) -> FloatNetwork:
    """The float network in an .onnx or PyTorch file (`TORCH_SUFFIXES`). `input_shape` (one sample) is required for
    PyTorch, which does not record it, and for an ONNX graph whose input shape is not fixed."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        from host.network.from_onnx import from_onnx

        return from_onnx(path, input_shape)
    if suffix in TORCH_SUFFIXES:
        if input_shape is None:
            raise NetworkImportError(f"{path}: a PyTorch file does not record its input shape; pass input_shape")
        from host.network.from_torch import from_torch

        return from_torch(path, input_shape)
    raise NetworkImportError(f"{path}: unknown suffix {suffix!r}; sqgen reads .onnx and {', '.join(TORCH_SUFFIXES)}")
