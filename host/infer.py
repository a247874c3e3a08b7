"""Run the accelerator's LeNet-5 (`models/lenet5_full.npz`) on a backend: today the NumPy golden models.

    from host.infer import load_model, open_backend
    session = open_backend("golden", load_model("models/lenet5_full.npz"))
    result = session.run(images)                 # result.logits (N, 10) int8, result.predictions (N,)
    trace = session.run(images, trace=True).layers   # conv1, pool1, conv2, pool2, fc1, fc2, fc3

Input: (N, 1, 28, 28) float images in [0, 1] (quantized here as the model's input_scale says), or int8 codes
(N, 1, 28, 28) or one (1, 28, 28) image, passed as they are. Every backend implements `Backend.run_layers`;
`golden` computes each layer with the bit-exact golden model (spectral fixed-point conv, integer max-pool,
`sim.golden.fc.fc_fixed`). A hardware backend (tcp:// virtual board, serial:// board) will implement the same
protocol; until it exists, `open_backend` raises NotImplementedError naming the scheme.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

import numpy as np

from host.compress.model import (
    CompressedLeNet5,
    FcFormatMismatch,
    ModelFormatError,
    max_pool,
    quantize_input,
)
from host.compress.model import load_model as _load_model
from sim.golden.fc_format import DEFAULT_FC_FORMAT, FcFormat
from sim.golden.spec2 import spectral_conv_fixed

__all__ = ["LAYERS", "Backend", "GoldenBackend", "RunResult", "Session", "compare_traces", "load_model",
           "open_backend", "FcFormatMismatch", "ModelFormatError", "BACKENDS"]

#: Every layer output a trace holds, in order.
LAYERS = ("conv1", "pool1", "conv2", "pool2", "fc1", "fc2", "fc3")
IMAGE_SHAPE = (1, 28, 28)
#: URL schemes `open_backend` knows: golden runs now; the others are the hardware backends still to come.
BACKENDS = ("golden", "tcp", "serial")
#: Images per golden conv call: bounds the int64 intermediates of the fixed-point model.
BATCH = 250


def load_model(path: str | Path, expected: FcFormat | None = DEFAULT_FC_FORMAT) -> CompressedLeNet5:
    """Read and check a model file (`host.compress.model.load_model`): ModelFormatError naming the field, or
    FcFormatMismatch when the file was compressed for another FC engine than `expected` (None: any)."""
    return _load_model(path, expected)


def as_codes(x: np.ndarray, input_scale: float) -> np.ndarray:
    """(N, 1, 28, 28) float images in [0, 1] or int8 codes, or one (1, 28, 28) int8 image -> int64 codes (N, 1, 28, 28).

    ValueError (one line naming the expected shape and dtype) for anything else.
    """
    x = np.asarray(x)
    if x.dtype == np.int8:
        if x.shape == IMAGE_SHAPE:
            x = x[None]
        if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE:
            raise ValueError(f"int8 codes must have shape (N, 1, 28, 28) or (1, 28, 28), got {x.shape}")
        return x.astype(np.int64)
    if x.dtype.kind == "f":
        if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE:
            raise ValueError(f"float images must have shape (N, 1, 28, 28) with values in [0, 1], got {x.shape}")
        if not np.isfinite(x).all() or x.min(initial=0) < 0 or x.max(initial=0) > 1:
            raise ValueError("float images must have values in [0, 1] (finite)")
        return quantize_input(x, input_scale)
    raise ValueError(f"expected float images (N, 1, 28, 28) in [0, 1] or int8 codes (N, 1, 28, 28), got dtype "
                     f"{x.dtype}")


@dataclass
class RunResult:
    """What `Session.run` returns: int8 logits (N, 10), predictions (N,), every layer when traced, and what a
    hardware backend can add (cycles per image; agreement with the golden model)."""

    logits: np.ndarray
    predictions: np.ndarray
    layers: dict[str, np.ndarray] | None = None
    extra: dict = field(default_factory=dict)


class Backend(Protocol):
    """Something that runs the model on int8 codes: the golden models, a virtual board, a real board."""

    name: str

    def run_layers(self, codes: np.ndarray, trace: bool) -> dict[str, np.ndarray]:
        """int64 codes (N, 1, 28, 28) -> {"fc3": logits} and, with trace, every layer of LAYERS (integer codes)."""
        ...

    def close(self) -> None:
        """Release the device or connection."""
        ...


class GoldenBackend:
    """The NumPy golden models end to end: spectral fixed-point conv, integer max-pool, `fc_fixed`."""

    name = "golden"

    def __init__(self, model: CompressedLeNet5):
        self.model = model

    def run_layers(self, codes: np.ndarray, trace: bool) -> dict[str, np.ndarray]:
        """Every layer's int64 output codes for int64 codes (N, 1, 28, 28); only fc3 unless `trace`."""
        parts: dict[str, list[np.ndarray]] = {name: [] for name in LAYERS}
        for start in range(0, len(codes), BATCH):
            h = codes[start:start + BATCH]
            out = {}
            for i, conv in enumerate(self.model.convs(), start=1):
                h = spectral_conv_fixed(h, conv)
                out[f"conv{i}"] = h
                h = max_pool(h)
                out[f"pool{i}"] = h
            h = h.reshape(len(h), -1)  # channel-major flatten, as torch's
            for layer in self.model.fc:
                h = layer.forward(h)
                out[layer.name] = h
            for name in LAYERS if trace else ("fc3",):
                parts[name].append(out[name])
        empty = {"fc3": np.zeros((0, 10), dtype=np.int64)}
        return {name: np.concatenate(v) if v else empty.get(name, np.zeros(0, dtype=np.int64))
                for name, v in parts.items() if trace or name == "fc3"}

    def close(self) -> None:
        """Nothing to release."""


class Session:
    """A model on a backend: `run` checks and quantizes the input and returns logits and predictions."""

    def __init__(self, backend: Backend, model: CompressedLeNet5):
        self.backend = backend
        self.model = model

    def run(self, x: np.ndarray, trace: bool = False) -> RunResult:
        """Images (module docstring) -> RunResult with int8 logits (N, 10) and predictions; every layer if trace."""
        codes = as_codes(x, self.model.input_scale)
        layers = self.backend.run_layers(codes, trace)
        logits = layers["fc3"].astype(np.int8)
        return RunResult(logits=logits, predictions=logits.argmax(axis=1),
                         layers={k: layers[k] for k in LAYERS} if trace else None)

    def close(self) -> None:
        """Close the backend."""
        self.backend.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_backend(url: str, model: CompressedLeNet5) -> Session:
    """A Session on the backend `url` names: "golden" (or "golden://"); "tcp://HOST:PORT" and "serial://DEVICE"
    raise NotImplementedError until the FC engine is on the board; anything else ValueError."""
    scheme = urlparse(url).scheme or url.rstrip(":/")
    if scheme == "golden":
        return Session(GoldenBackend(model), model)
    if scheme in ("tcp", "serial"):
        raise NotImplementedError(f"backend {scheme}:// is not implemented yet: the accelerator does not run the "
                                  "LeNet-5 layers yet (use --backend golden)")
    raise ValueError(f"unknown backend {url!r}: expected golden, tcp://HOST:PORT or serial://DEVICE[?baud=N]")


def compare_traces(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict | None:
    """The first difference between two traces, in LAYERS order: {"layer", "index" (tuple), "a", "b"}, or
    {"layer", "shape_a", "shape_b"} for a shape mismatch, {"layer", "missing"} for a layer in one only; None if
    they agree on every layer both hold."""
    for name in LAYERS:
        if (name in a) != (name in b):
            return {"layer": name, "missing": "b" if name in a else "a"}
        if name not in a:
            continue
        x, y = np.asarray(a[name]), np.asarray(b[name])
        if x.shape != y.shape:
            return {"layer": name, "shape_a": x.shape, "shape_b": y.shape}
        diff = np.flatnonzero(x.reshape(-1) != y.reshape(-1))
        if diff.size:
            index = tuple(int(i) for i in np.unravel_index(diff[0], x.shape))
            return {"layer": name, "index": index, "a": int(x[index]), "b": int(y[index])}
    return None
