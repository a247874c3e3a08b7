"""The accelerator's LeNet-5 (docs/formats.md, "Compressed LeNet-5"): the model, its golden forward pass, its file.

NumPy only. Two calibrated sparse spectral conv layers (`hw.spec.spectral`) and three compressed FC layers
(`CompressedFcLayer`, the FC layer of every compressed network, `hw.spec.network`): each a BIM keep mask
of the layer's matrix in tiles of m_t x n_out (`FcFormat`, the BIM file's tile order is the engine's
`FcLayout.tile_major`), binary-coded kept weights in q planes with alpha per original row, the planes of the
tile-major padded matrix XOR-encoded in n_out-bit slices for the decoder's fixed M, and the requantization
(a, bias_q, shift) that `hw.spec.fc.fc_fixed` runs. `host.compress.model` makes one from a spectral LeNet-5;
`to_network` gives the same model as a generic `CompressedNetwork`.

Every layer's file fields reuse the XOR and BIM files' encodings (`hw.spec.xor.xor_fields` /
`xor_from_fields`, `hw.spec.bim.bim_fields` / `bim_from_fields`), and the conv layers are stored with the
spectral layer file's fields (`hw.spec.spectral.file.layer_fields` / `layer_from_fields`), so one definition of
each encoding and its checks serves every file.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from host.lenet5.net import BATCH, CONV_NAMES, FC_NAMES, FC_SHAPES, FEATURE_SHAPE, IMAGE_SHAPE, INPUT_SCALE
from host.lenet5.spectral import check_convs
from hw.spec.fc_format import DEFAULT_FC_FORMAT, FcFormat
from hw.spec.network import (
    BIAS_BITS,
    CompressedFcLayer,
    CompressedNetwork,
    ConvLayer,
    FcFormatMismatch,
    FlattenLayer,
    ModelFormatError,
    PoolLayer,
    check_header,
    conv_layer_from_fields,
    fc_format_fields,
    fc_format_from_fields,
    fc_layer_fields,
    fc_layer_from_fields,
    header_fields,
    read_model,
    save_fields,
    scalar_field,
    size_report,
    untile,
)
from hw.spec.network import field_error as _bad
from hw.spec.pool import max_pool
from hw.spec.spectral.file import layer_fields
from hw.spec.spectral.fixed import spectral_conv_fixed
from hw.spec.spectral.layer import SpectralFormatError, SpectralLayer

__all__ = ["FORMAT", "VERSION", "BIAS_BITS", "ModelFormatError", "FcFormatMismatch", "CompressedFcLayer", "untile",
           "CompressedLeNet5", "conv_features", "fc_forward", "size_report", "model_fields", "save_model",
           "model_from_fields", "load_model", "to_network"]

FORMAT = "sqgen-lenet5-full"
VERSION = 1


# --- the whole model -----------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CompressedLeNet5:
    """Two calibrated sparse spectral conv layers, three compressed FC layers of one FcFormat, and metadata."""

    conv1: SpectralLayer
    conv2: SpectralLayer
    fc: tuple[CompressedFcLayer, CompressedFcLayer, CompressedFcLayer]
    fmt: FcFormat
    metadata: dict = field(default_factory=dict)
    input_scale: float = INPUT_SCALE

    def __post_init__(self) -> None:
        _validate_model(self)

    def convs(self) -> tuple[SpectralLayer, SpectralLayer]:
        """(conv1, conv2)."""
        return self.conv1, self.conv2

    def layer(self, name: str) -> CompressedFcLayer:
        """The FC layer called `name` (fc1, fc2, fc3)."""
        return self.fc[FC_NAMES.index(name)]


def _validate_model(model: CompressedLeNet5) -> None:
    for name, conv in zip(CONV_NAMES, model.convs()):
        if not isinstance(conv, SpectralLayer) or conv.quant is None:
            raise ModelFormatError(f"{name}: must be a calibrated SpectralLayer (with quantization fields)")
    try:
        check_convs(model.conv1, model.conv2)  # the spectral LeNet-5's own checks: ReLU, channels, geometry, scales
    except SpectralFormatError as error:
        raise ModelFormatError(str(error)) from None
    if len(model.fc) != len(FC_NAMES):
        raise ModelFormatError(f"expected {len(FC_NAMES)} FC layers, got {len(model.fc)}")
    scale = float(np.float32(model.conv2.quant.out_scale))
    for name, layer in zip(FC_NAMES, model.fc):
        if layer.name != name or layer.shape != FC_SHAPES[name]:
            raise _bad(f"{name}/shape", f"expected layer {name} of shape {FC_SHAPES[name]}, got {layer.name} "
                                        f"{layer.shape}")
        if layer.fmt != model.fmt:
            raise _bad(f"{name}/fmt", "differs from the model's FcFormat")
        # Each layer reads the previous one's int8 codes, so its s_x must be that layer's s_y exactly.
        if float(np.float32(layer.in_scale)) != scale:
            raise _bad(f"{name}/in_scale", f"{layer.in_scale!r} differs from the previous layer's output scale "
                                           f"{scale!r}")
        scale = float(np.float32(layer.out_scale))


# --- golden forward pass -------------------------------------------------------------------------------------


def conv_features(convs: Sequence[SpectralLayer], x_q: np.ndarray,
                  progress: Callable[[str], None] | None = None) -> np.ndarray:
    """int8 image codes (N, 1, 28, 28) -> pooled conv2 codes (N, 16, 5, 5) int64, by the bit-exact golden model."""
    out = []
    for start in range(0, len(x_q), BATCH):
        h = np.asarray(x_q[start:start + BATCH], dtype=np.int64)
        for layer in convs:
            h = max_pool(spectral_conv_fixed(h, layer))
        out.append(h)
        if progress is not None:
            progress(f"conv features {min(start + BATCH, len(x_q))}/{len(x_q)}")
    return np.concatenate(out) if out else np.zeros((0, *FEATURE_SHAPE), dtype=np.int64)


def fc_forward(layers: Sequence[CompressedFcLayer], features: np.ndarray) -> list[np.ndarray]:
    """Pooled conv2 codes (N, 16, 5, 5) or (N, 400) -> every FC layer's int64 output codes, in order."""
    h = np.asarray(features).reshape(len(features), -1)
    outs = []
    for layer in layers:
        h = layer.forward(h)
        outs.append(h)
    return outs


# --- the file ------------------------------------------------------------------------------------------------


def model_fields(model: CompressedLeNet5) -> dict[str, np.ndarray]:
    """Every array of the model file (docs/formats.md), by field name."""
    out: dict[str, np.ndarray] = {**header_fields(FORMAT, VERSION, model.metadata),
                                  "input_scale": np.float32(model.input_scale)}
    for name, conv in zip(CONV_NAMES, model.convs()):
        out.update({f"{name}/{k}": v for k, v in layer_fields(conv).items()})
    out.update(fc_format_fields(model.fmt))
    for layer in model.fc:
        out.update(fc_layer_fields(layer))
    return out


def save_model(path: str | Path, model: CompressedLeNet5) -> None:
    """Write the model file: one uncompressed np.savez archive of `model_fields`."""
    save_fields(path, model_fields(model))


def model_from_fields(raw: dict[str, np.ndarray], expected: FcFormat | None = DEFAULT_FC_FORMAT) -> CompressedLeNet5:
    """Check and decode a model file's arrays (see `load_model`)."""
    metadata = check_header(raw, FORMAT, VERSION)
    input_scale = scalar_field(raw, "input_scale", "float")
    if input_scale != INPUT_SCALE:
        raise _bad("input_scale", f"expected float32(1/127) = {INPUT_SCALE!r}, got {input_scale!r}")
    fmt = fc_format_from_fields(raw, expected)
    convs = [conv_layer_from_fields(raw, name) for name in CONV_NAMES]

    def fixed_shape(name: str) -> Callable[[tuple[int, ...]], None]:
        def check(shape: tuple[int, ...]) -> None:
            if shape != FC_SHAPES[name]:
                raise _bad(f"{name}/shape", f"expected {FC_SHAPES[name]}, got {shape}")
        return check

    layers = tuple(fc_layer_from_fields(raw, name, fmt, fixed_shape(name)) for name in FC_NAMES)
    return CompressedLeNet5(conv1=convs[0], conv2=convs[1], fc=layers, fmt=fmt, metadata=metadata,
                            input_scale=input_scale)


def load_model(path: str | Path, expected: FcFormat | None = DEFAULT_FC_FORMAT) -> CompressedLeNet5:
    """Read and check a model file; ModelFormatError (one line: path, field) if malformed, its subclass
    FcFormatMismatch if compressed for another FcFormat than `expected` (None accepts any)."""
    return read_model(path, functools.partial(model_from_fields, expected=expected))


# --- as a generic compressed network -------------------------------------------------------------------------


def to_network(model: CompressedLeNet5) -> CompressedNetwork:
    """The same model as a `hw.spec.network.CompressedNetwork`: conv1, pool1, conv2, pool2, flatten, fc1,
    fc2, fc3 (the layers of a `host.infer` trace, plus the flatten), every integer shared, so its golden forward
    pass gives the same codes at every layer."""
    layers = [layer for i, (name, conv) in enumerate(zip(CONV_NAMES, model.convs()), start=1)
              for layer in (ConvLayer(name, conv), PoolLayer(f"pool{i}"))]
    metadata = {**model.metadata, "name": "lenet5", "dataset": "mnist", "converted_from": FORMAT}
    return CompressedNetwork(input_shape=IMAGE_SHAPE, input_scale=model.input_scale,
                             layers=(*layers, FlattenLayer("flatten"), *model.fc), fmt=model.fmt, metadata=metadata)
