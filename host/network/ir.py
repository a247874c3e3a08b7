"""The float network sqgen takes: an input shape and an ordered list of named layers, NumPy only.

Five kinds of layer, each with its own shape rule and forward pass: `Conv2d` (square kernel, stride 1,
"same" or "valid"), `ReLU`, `MaxPool2d` (2 x 2, stride 2), `Flatten` and `Linear`. A sample is (C, H, W)
or (features,); every forward pass takes a batch (N, *shape). The convolution is computed directly in the
spatial domain, so it is an oracle independent of the spectral golden models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hw.spec.pool import max_pool
from hw.spec.spectral.geometry import PADDINGS

__all__ = ["NetworkError", "Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear", "Layer", "LAYER_KINDS",
           "FloatNetwork"]

Shape = tuple[int, ...]


class NetworkError(ValueError):
    """A float network that cannot exist: bad parameters, or shapes that do not chain (one line naming the layer)."""


def _float_array(name: str, what: str, value: object, ndim: int) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "fiu" or array.ndim != ndim:
        raise NetworkError(f"layer {name!r}: {what} must be a {ndim}-D real array, got {array.dtype} "
                           f"{array.shape}")
    if not np.isfinite(array).all():
        raise NetworkError(f"layer {name!r}: {what} holds NaN or infinite values")
    return np.array(array, dtype=np.float32)  # a copy: the network owns its weights


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise NetworkError(f"a layer's name must be a non-empty string, got {name!r}")


@dataclass(frozen=True, eq=False)
class _Weighted:
    """A layer with weights (outputs first) and a bias per output (zeros when None), kept as float32 copies."""

    name: str
    weight: np.ndarray
    bias: np.ndarray | None = None
    weight_ndim = 2

    def __post_init__(self) -> None:
        _check_name(self.name)
        weight = _float_array(self.name, "weight", self.weight, self.weight_ndim)
        if 0 in weight.shape:
            raise NetworkError(f"layer {self.name!r}: weight of shape {weight.shape} is empty")
        bias = np.zeros(len(weight), np.float32) if self.bias is None else _float_array(self.name, "bias", self.bias, 1)
        if bias.shape != (len(weight),):
            raise NetworkError(f"layer {self.name!r}: bias has shape {bias.shape}, expected ({len(weight)},)")
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "bias", bias)

    def parameters(self) -> int:
        """Weights and biases."""
        return int(self.weight.size + self.bias.size)


@dataclass(frozen=True, eq=False)
class Conv2d(_Weighted):
    """Cross-correlation as torch.nn.Conv2d computes it: weight (c_out, c_in, k, k), bias (c_out,), stride 1.

    "same" pads (k - 1) // 2 rows and columns before the map and the rest after it (symmetric for odd k, the
    extra one at the bottom and right for even k, as torch's padding="same"); "valid" pads nothing.
    """

    padding: str = "same"
    kind = "Conv2d"
    weight_ndim = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weight.shape[2] != self.weight.shape[3]:
            raise NetworkError(f"layer {self.name!r}: weight must be (c_out, c_in, k, k) with a square kernel, "
                               f"got {self.weight.shape}")
        if self.padding not in PADDINGS:
            raise NetworkError(f"layer {self.name!r}: padding must be one of {', '.join(PADDINGS)}, "
                               f"got {self.padding!r}")

    @property
    def c_out(self) -> int:
        return self.weight.shape[0]

    @property
    def c_in(self) -> int:
        return self.weight.shape[1]

    @property
    def k(self) -> int:
        return self.weight.shape[2]

    def pads(self) -> tuple[int, int]:
        """Rows (and columns) of zeros before and after the map."""
        if self.padding == "valid":
            return 0, 0
        before = (self.k - 1) // 2
        return before, self.k - 1 - before

    def out_shape(self, shape: Shape) -> Shape:
        if len(shape) != 3 or shape[0] != self.c_in:
            raise NetworkError(f"layer {self.name!r} (Conv2d): takes ({self.c_in}, H, W), gets {shape}")
        h, w = (size + sum(self.pads()) - self.k + 1 for size in shape[1:])
        if h < 1 or w < 1:
            raise NetworkError(f"layer {self.name!r} (Conv2d): a {self.padding!r} {self.k} x {self.k} kernel needs "
                               f"a map of at least {self.k} x {self.k}, gets {shape[1]} x {shape[2]}")
        return self.c_out, h, w

    def forward(self, x: np.ndarray) -> np.ndarray:
        before, after = self.pads()
        x = np.pad(x, ((0, 0), (0, 0), (before, after), (before, after)))
        h, w = x.shape[2] - self.k + 1, x.shape[3] - self.k + 1
        weight = self.weight.astype(x.dtype)
        # One matrix product per kernel offset: memory stays at one output map, whatever the batch.
        y = np.zeros((x.shape[0], h, w, self.c_out), dtype=x.dtype)
        for u in range(self.k):
            for v in range(self.k):
                y += np.tensordot(x[:, :, u:u + h, v:v + w], weight[:, :, u, v], axes=([1], [1]))
        return y.transpose(0, 3, 1, 2) + self.bias.astype(x.dtype)[:, None, None]

    def describe(self) -> dict:
        return {"c_in": self.c_in, "c_out": self.c_out, "k": self.k, "padding": self.padding,
                "parameters": self.parameters()}


class Linear(_Weighted):
    """y = x weight^T + bias, as torch.nn.Linear: weight (out, in), bias (out,); takes (in,) features."""

    kind = "Linear"

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    def out_shape(self, shape: Shape) -> Shape:
        if shape != (self.in_features,):
            hint = "; a Flatten must come before it" if len(shape) == 3 else ""
            raise NetworkError(f"layer {self.name!r} (Linear): takes ({self.in_features},) features, gets "
                               f"{shape}{hint}")
        return (self.out_features,)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight.T.astype(x.dtype) + self.bias.astype(x.dtype)

    def describe(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "parameters": self.parameters()}


@dataclass(frozen=True, eq=False)
class _Unweighted:
    """A layer with nothing but its name."""

    name: str

    def __post_init__(self) -> None:
        _check_name(self.name)

    def describe(self) -> dict:
        return {}


class ReLU(_Unweighted):
    """max(x, 0), any shape."""

    kind = "ReLU"

    def out_shape(self, shape: Shape) -> Shape:
        return shape

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x, 0)


class MaxPool2d(_Unweighted):
    """2 x 2 max-pooling with stride 2 over (C, H, W); an odd last row or column is dropped, as torch does."""

    kind = "MaxPool2d"

    def out_shape(self, shape: Shape) -> Shape:
        if len(shape) != 3 or min(shape[1:]) < 2:
            raise NetworkError(f"layer {self.name!r} (MaxPool2d): takes (C, H, W) with H, W >= 2, gets {shape}")
        return shape[0], shape[1] // 2, shape[2] // 2

    def forward(self, x: np.ndarray) -> np.ndarray:
        return max_pool(x)


class Flatten(_Unweighted):
    """(C, H, W) -> (C H W,) in row-major order (channel-major, as torch.flatten(x, 1)); features stay as they are."""

    kind = "Flatten"

    def out_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1)


Layer = Conv2d | ReLU | MaxPool2d | Flatten | Linear
#: The layer classes by their `kind`.
LAYER_KINDS: dict[str, type] = {cls.kind: cls for cls in (Conv2d, ReLU, MaxPool2d, Flatten, Linear)}


def _check_input_shape(shape: object) -> Shape:
    try:
        dims = tuple(int(d) for d in shape)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        dims = ()
    if len(dims) not in (1, 3) or min(dims) < 1 or dims != tuple(shape):  # type: ignore[arg-type]
        raise NetworkError(f"input_shape must be (C, H, W) or (features,) of positive integers, got {shape!r}")
    return dims


@dataclass(frozen=True, eq=False)
class FloatNetwork:
    """A chain of named layers from `input_shape` (one sample: (C, H, W) or (features,)) to the output.

    Construction checks that names are unique and that the shapes chain (`NetworkError` naming the first layer
    that does not fit). `forward` and `trace` run the float model on a batch.
    """

    input_shape: Shape
    layers: tuple[Layer, ...]
    shapes: tuple[Shape, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", _check_input_shape(self.input_shape))
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise NetworkError("a network needs at least one layer")
        seen: set[str] = set()
        shapes = []
        shape = self.input_shape
        for layer in self.layers:
            if type(layer) not in LAYER_KINDS.values():
                raise NetworkError(f"layer {getattr(layer, 'name', layer)!r}: not a layer of this module "
                                   f"({', '.join(LAYER_KINDS)}), got {type(layer).__name__}")
            if layer.name in seen:
                raise NetworkError(f"layer {layer.name!r}: the name is used twice")
            seen.add(layer.name)
            shape = layer.out_shape(shape)
            shapes.append(shape)
        object.__setattr__(self, "shapes", tuple(shapes))

    @property
    def output_shape(self) -> Shape:
        return self.shapes[-1]

    def layer(self, name: str) -> Layer:
        """The layer called `name` (KeyError naming the layers there are)."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer {name!r}; the layers are {', '.join(layer.name for layer in self.layers)}")

    def in_shape(self, index: int) -> Shape:
        """The sample shape layer `index` reads."""
        return self.input_shape if index == 0 else self.shapes[index - 1]

    def _batch(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind not in "fiu" or x.shape[1:] != self.input_shape:
            raise NetworkError(f"input must be a real array (N, {', '.join(map(str, self.input_shape))}), got "
                               f"{x.dtype} {x.shape}")
        return x.astype(np.result_type(x.dtype, np.float32), copy=False)

    def trace(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every layer's output for the batch x (N, *input_shape), by layer name, in order (float32, or float64
        for a float64 input)."""
        outputs = {}
        x = self._batch(x)
        for layer in self.layers:
            x = layer.forward(x)
            outputs[layer.name] = x
        return outputs

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The output (N, *output_shape) for the batch x (N, *input_shape)."""
        x = self._batch(x)
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def parameters(self) -> int:
        """Weights and biases in all layers."""
        return sum(layer.parameters() for layer in self.layers if isinstance(layer, _Weighted))

    def describe(self) -> dict:
        """A JSON-able summary: shapes, and per layer its name, kind, shapes and parameters (no weights)."""
        return {
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "parameters": int(self.parameters()),
            "layers": [{"name": layer.name, "kind": layer.kind, "in_shape": list(self.in_shape(i)),
                        "out_shape": list(self.shapes[i]), **layer.describe()}
                       for i, layer in enumerate(self.layers)],
        }
