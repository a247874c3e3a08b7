"""The exported spectral LeNet-5 (docs/formats.md, "Spectral LeNet-5 model"): file I/O and inference. NumPy only.

The conv layers run through the golden models of `hw.spec.spectral`: `predict_fixed` with the bit-exact
fixed-point layers (int8 activations: the image quantized by INPUT_SCALE, each conv layer's output in its
calibrated out_scale, max-pooling on the integers, which commutes with the monotone quantization), and
`predict_float` with the float operator. The FC layers are float32 in both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from host.lenet5 import net
from host.lenet5.net import BATCH, CONV_NAMES, INPUT_SCALE, quantize_input
from hw.spec.network import ModelFormatError, check_header, header_fields, save_fields
from hw.spec.npzfile import load_checked
from hw.spec.pool import max_pool
from hw.spec.spectral.file import layer_fields, layer_from_fields
from hw.spec.spectral.fixed import DatapathLimitError, SpectralFixed, check_quant_limits, spectral_conv_fixed
from hw.spec.spectral.layer import SpectralFormatError, SpectralLayer
from hw.spec.spectral.operator import spectral_conv_float

FORMAT = "sqgen-lenet5-spec2"
VERSION = 1
#: The float FC arrays (torch's state_dict names) and their shapes.
FC_SHAPES = {f"{name}.{part}": shape if part == "weight" else shape[:1]
             for name, shape in net.FC_SHAPES.items() for part in ("weight", "bias")}
FC_FIELDS = tuple(FC_SHAPES)

__all__ = ["SpectralFormatError", "SpectralLeNetModel", "check_convs", "load", "save", "predict_fixed", "predict_float",
           "accuracy"]


@dataclass(frozen=True, eq=False)
class SpectralLeNetModel:
    """Two calibrated sparse spectral conv layers, float32 FC weights and biases, and a JSON-able metadata dict."""

    conv1: SpectralLayer
    conv2: SpectralLayer
    fc: dict[str, np.ndarray]
    metadata: dict = field(default_factory=dict)

    def convs(self) -> tuple[SpectralLayer, SpectralLayer]:
        """(conv1, conv2)."""
        return self.conv1, self.conv2


def _classifier(model: SpectralLeNetModel, features: np.ndarray) -> np.ndarray:
    fc = model.fc
    h = features.reshape(len(features), -1).astype(np.float32)
    h = np.maximum(h @ fc["fc1.weight"].T + fc["fc1.bias"], 0)
    h = np.maximum(h @ fc["fc2.weight"].T + fc["fc2.bias"], 0)
    return h @ fc["fc3.weight"].T + fc["fc3.bias"]


def logits_fixed(model: SpectralLeNetModel, x: np.ndarray) -> np.ndarray:
    """(N, 1, 28, 28) images in [0, 1] -> (N, 10) logits, conv layers by the bit-exact fixed-point golden model."""
    out = []
    for start in range(0, len(x), BATCH):
        h = quantize_input(x[start:start + BATCH])
        for layer in model.convs():
            h = max_pool(spectral_conv_fixed(h, layer))
        out.append(_classifier(model, h * model.conv2.quant.out_scale))
    return np.concatenate(out) if out else np.zeros((0, 10), dtype=np.float32)


def logits_float(model: SpectralLeNetModel, x: np.ndarray) -> np.ndarray:
    """(N, 1, 28, 28) images -> (N, 10) logits, conv layers by the float golden operator (no quantization)."""
    out = []
    for start in range(0, len(x), BATCH):
        h = np.asarray(x[start:start + BATCH], dtype=np.float64)
        for layer in model.convs():
            h = max_pool(spectral_conv_float(h, layer))
        out.append(_classifier(model, h))
    return np.concatenate(out) if out else np.zeros((0, 10), dtype=np.float32)


def predict_fixed(model: SpectralLeNetModel, x: np.ndarray) -> np.ndarray:
    """Predicted digits with the fixed-point conv layers."""
    return logits_fixed(model, x).argmax(1)


def predict_float(model: SpectralLeNetModel, x: np.ndarray) -> np.ndarray:
    """Predicted digits with the float golden conv operator."""
    return logits_float(model, x).argmax(1)


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of predictions equal to the labels."""
    return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


# --- the file ----------------------------------------------------------------------------------------------


def save(path: str | Path, model: SpectralLeNetModel) -> None:
    """Write the container: each conv layer's fields (`layer_fields`, as in its own file) prefixed by "conv1/" or
    "conv2/", the FC arrays as float32, metadata as a JSON string; one uncompressed np.savez archive."""
    fields: dict[str, np.ndarray] = header_fields(FORMAT, VERSION, model.metadata)
    for name, layer in zip(CONV_NAMES, model.convs()):
        if layer.quant is None:
            raise ValueError(f"{name} has no quantization parameters (calibrate it first)")
        fields.update({f"{name}/{key}": value for key, value in layer_fields(layer).items()})
    for name in FC_FIELDS:
        fields[name] = np.asarray(model.fc[name], dtype=np.float32)
    save_fields(path, fields)


def _bad(field_name: str, message: str) -> SpectralFormatError:
    return SpectralFormatError(f"field '{field_name}': {message}")


def _conv(raw: dict[str, np.ndarray], name: str) -> SpectralLayer:
    sub = {key.removeprefix(f"{name}/"): value for key, value in raw.items() if key.startswith(f"{name}/")}
    try:
        # The layer file's own checks, field by field, so the container can never hold a layer its file would refuse.
        layer = layer_from_fields(sub)
    except SpectralFormatError as error:
        raise SpectralFormatError(f"{name}: {error}") from None
    if layer.quant is None:
        raise SpectralFormatError(f"{name}: missing field 'in_scale' (the fixed-point model needs the quantization "
                                  "fields)")
    return layer


def check_convs(conv1: SpectralLayer, conv2: SpectralLayer) -> None:
    """What LeNet-5's inference relies on in its conv layers beyond their own checks (every file holding them runs
    this): calibrated within the golden datapath's limits, ReLU in both, 1 -> 6 -> 16 channels, a geometry taking a
    28 x 28 image to fc1's 16 x 5 x 5 after the two poolings, and the scale chain (conv1 reads the image's codes,
    conv2 conv1's); SpectralFormatError naming the field (`conv1/...`, `conv2/...`)."""
    for name, layer in zip(CONV_NAMES, (conv1, conv2)):
        if layer.quant is None:
            raise SpectralFormatError(f"missing field '{name}/in_scale' (the fixed-point model needs the quantization "
                                      "fields)")
        if not layer.relu:
            raise _bad(f"{name}/relu", "must be 1 (LeNet-5 applies ReLU after each conv layer)")
        try:
            check_quant_limits(layer.quant, SpectralFixed(), layer.oaa)
        except DatapathLimitError as error:
            raise _bad(f"{name}/{error.field}", str(error)) from None
    shapes = [(conv1.c_in, conv1.c_out), (conv2.c_in, conv2.c_out)]
    for name, got, want in zip(CONV_NAMES, shapes, [(1, 6), (6, 16)]):
        for channels, a, b in zip(("c_in", "c_out"), got, want):
            if a != b:
                raise _bad(f"{name}/{channels}", f"conv layers must be 1 -> 6 and 6 -> 16 channels, got {shapes}")
    # The geometry must bring a 28 x 28 image to fc1's 400 inputs (16 x 5 x 5 after the two poolings); only k and
    # padding change a layer's output size.
    try:
        h, w = conv1.oaa.output_shape(28, 28)
        h, w = conv2.oaa.output_shape(h // 2, w // 2)
    except ValueError:  # a "valid" kernel larger than its input map
        h = w = 0
    if (h // 2, w // 2) != (5, 5):
        raise SpectralFormatError(f"fields 'conv1/k', 'conv1/padding', 'conv2/k', 'conv2/padding': conv1 and conv2 "
                                  f"(n, k, l, padding) take 28 x 28 to {h // 2} x {w // 2} after pooling, fc1 needs "
                                  "5 x 5")
    # Each layer's integers were derived from its input scale: the chain must be the one inference runs.
    if conv1.quant.in_scale != INPUT_SCALE:
        raise _bad("conv1/in_scale", f"must be the input scale float32(1/127) = {INPUT_SCALE}, got "
                                     f"{conv1.quant.in_scale}")
    if conv2.quant.in_scale != conv1.quant.out_scale:
        raise _bad("conv2/in_scale", f"must equal conv1/out_scale = {conv1.quant.out_scale}, got "
                                     f"{conv2.quant.in_scale}")


def _from_fields(raw: dict[str, np.ndarray]) -> SpectralLeNetModel:
    try:
        metadata = check_header(raw, FORMAT, VERSION)
    except ModelFormatError as error:  # the model files' header rules, raised as this file's error
        raise SpectralFormatError(str(error)) from None
    conv1, conv2 = (_conv(raw, name) for name in CONV_NAMES)
    check_convs(conv1, conv2)
    fc = {}
    for name in FC_FIELDS:
        if name not in raw:
            raise SpectralFormatError(f"missing field '{name}'")
        if raw[name].dtype != np.float32 or raw[name].shape != FC_SHAPES[name]:
            raise _bad(name, f"expected float32 {FC_SHAPES[name]}, got {raw[name].dtype} {raw[name].shape}")
        if not np.isfinite(raw[name]).all():
            raise _bad(name, "has non-finite values")
        fc[name] = raw[name]
    return SpectralLeNetModel(conv1=conv1, conv2=conv2, fc=fc, metadata=metadata)


def load(path: str | Path) -> SpectralLeNetModel:
    """Read and check a spectral LeNet-5 file; SpectralFormatError (one line, naming the field) if malformed."""
    return load_checked(path, SpectralFormatError, _from_fields)
