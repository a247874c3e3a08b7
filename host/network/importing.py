"""What the ONNX and PyTorch importers share: their one error type, the padding and BatchNorm rules, and the
chain of layers they build. NumPy only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from host.network.ir import Conv2d, FloatNetwork, Layer, Linear, NetworkError

__all__ = ["NetworkImportError", "conv_padding", "fold_batchnorm", "Chain"]


class NetworkImportError(NetworkError):
    """A network sqgen cannot take: one line naming the node or module and what is supported."""


def one_line(error: BaseException) -> str:
    """The first line of an error's message (or its type's name): refusals stay one line."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def conv_padding(k: int, before: Sequence[int], after: Sequence[int]) -> str | None:
    """"valid" for no padding, "same" for (k - 1) // 2 rows and columns before the map and the rest after it
    (`Conv2d`'s rule), None for any other padding. `before` and `after` are (rows, columns)."""
    before, after = tuple(int(p) for p in before), tuple(int(p) for p in after)
    if before == after == (0, 0):
        return "valid"
    if before == ((k - 1) // 2,) * 2 and after == (k - 1 - (k - 1) // 2,) * 2:
        return "same"
    return None


def fold_batchnorm(weight: np.ndarray, bias: np.ndarray, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray,
                   var: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Weight and bias of a Conv2d or Linear followed by inference-mode BatchNorm over its output channels, as one
    layer: w gamma / sqrt(var + eps) per output channel, (b - mean) gamma / sqrt(var + eps) + beta. In float64."""
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + float(eps))
    weight = np.asarray(weight, np.float64) * scale.reshape(-1, *(1,) * (np.ndim(weight) - 1))
    bias = (np.asarray(bias, np.float64) - np.asarray(mean, np.float64)) * scale + np.asarray(beta, np.float64)
    return weight, bias


class Chain:
    """The layers an importer has taken so far, with unique names; BatchNorm folds into the layer just taken."""

    def __init__(self) -> None:
        self.layers: list[Layer] = []
        self._names: set[str] = set()

    def unique(self, name: str, fallback: str) -> str:
        """`name` (or `fallback` if empty), with a suffix _2, _3, ... if a layer already has it."""
        base = name or fallback
        name, n = base, 1
        while name in self._names:
            n += 1
            name = f"{base}_{n}"
        return name

    def add(self, layer: Layer) -> None:
        self._names.add(layer.name)
        self.layers.append(layer)

    def fold_batchnorm(self, where: str, gamma: object, beta: object, mean: object, var: object, eps: float,
                       after: tuple[type, ...] = (Conv2d, Linear)) -> None:
        """Fold a BatchNorm (`where` names it) into the layer taken just before, one of `after`; refused otherwise."""
        last = self.layers[-1] if self.layers else None
        if not isinstance(last, after):
            found = f"after {last.kind} {last.name!r}" if last is not None else "on the input"
            raise NetworkImportError(f"{where}: a BatchNorm {found} cannot be folded; sqgen folds it only right "
                                     f"after a {' or '.join(cls.kind for cls in after)}")
        channels = last.weight.shape[0]
        params = [np.asarray(value, np.float64).reshape(-1) for value in (gamma, beta, mean, var)]
        if any(p.shape != (channels,) for p in params):
            raise NetworkImportError(f"{where}: BatchNorm parameters of shapes {[p.shape for p in params]} do not "
                                     f"match the {channels} output channels of {last.name!r}")
        weight, bias = fold_batchnorm(last.weight, last.bias, *params, eps)
        self.layers[-1] = dataclasses.replace(last, weight=weight, bias=bias)

    def shape(self, input_shape: Sequence[int], source: str) -> tuple[int, ...]:
        """The sample shape the layers taken so far output (`input_shape` before the first)."""
        return self.network(input_shape, source).output_shape if self.layers else tuple(input_shape)

    def network(self, input_shape: Sequence[int], source: str) -> FloatNetwork:
        """The float network of the layers taken; shape errors become refusals prefixed with `source`."""
        try:
            return FloatNetwork(tuple(input_shape), tuple(self.layers))
        except NetworkError as error:
            raise NetworkImportError(f"{source}: {one_line(error)}") from None
