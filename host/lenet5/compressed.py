"""The accelerator's LeNet-5 (docs/formats.md, "Compressed LeNet-5"): the model, its golden forward pass, its file.

NumPy only. Two calibrated sparse spectral conv layers (`hw.spec.spectral`) and three compressed FC layers
(`CompressedFcLayer`): each a BIM keep mask of the layer's matrix in tiles of m_t x n_out (`FcFormat`, the BIM
file's tile order is the engine's `FcLayout.tile_major`), binary-coded kept weights in q planes with alpha per
original row, the planes of the tile-major padded matrix XOR-encoded in n_out-bit slices for the decoder's fixed
M, and the requantization (a, bias_q, shift) that `hw.spec.fc.fc_fixed` runs. `host.compress.model` makes one
from a spectral LeNet-5.

Every layer's file fields reuse the XOR and BIM files' encodings (`hw.spec.xor.xor_fields` /
`xor_from_fields`, `hw.spec.bim.bim_fields` / `bim_from_fields`), and the conv layers are stored with the
spectral layer file's fields (`hw.spec.spectral.file.layer_fields` / `layer_from_fields`), so one definition of
each encoding and its checks serves every file.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from host.lenet5.net import BATCH, CONV_NAMES, FC_NAMES, FC_SHAPES, FEATURE_SHAPE, INPUT_SCALE
from hw.spec import fc_stream
from hw.spec.bim import BimFormatError, BimMask, bim_fields, bim_from_fields, boolean_product, from_tiles
from hw.spec.fc import fc_fixed
from hw.spec.fc_format import DEFAULT_FC_FORMAT, FIELD_NAMES, MAX_SHIFT, FcFormat
from hw.spec.npzfile import read_npz
from hw.spec.pool import max_pool
from hw.spec.spectral.file import layer_fields, layer_from_fields
from hw.spec.spectral.fixed import spectral_conv_fixed
from hw.spec.spectral.layer import SpectralFormatError, SpectralLayer
from hw.spec.xor import (
    XorFormatError,
    XorWeights,
    bcq_dequantize,
    decode_slices,
    xor_fields,
    xor_from_fields,
)

FORMAT = "sqgen-lenet5-full"
VERSION = 1
#: bias_q is a signed 32-bit integer: the range the loader enforces, the size report counts and the FC engine's
#: default `bias_bits` holds.
BIAS_BITS = 32


class ModelFormatError(ValueError):
    """A malformed or inconsistent compressed LeNet-5 file or object; the message names the field."""


class FcFormatMismatch(ModelFormatError):
    """A well-formed model file compressed for another FC engine configuration (`FcFormat`)."""


def _bad(name: str, message: str) -> ModelFormatError:
    return ModelFormatError(f"field '{name}': {message}")


# --- one FC layer --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CompressedFcLayer:
    """One compressed FC layer (checked on construction; errors name the field as `name/field`).

    bim: the keep mask of the (rows, cols) matrix in tiles of fmt.m_t x fmt.n_out. x, patch_counts,
    patch_positions: the XOR slices of the tile-major planes, plane after plane (`hw.spec.xor` layout).
    alpha (rows, bits) float32 and bias (rows,) float32: the float layer the integers stand for. a (rows, bits)
    and bias_q (rows,) int64, shift, relu: `hw.spec.fc.fc_fixed`'s parameters. in_scale, out_scale: s_x, s_y.
    """

    name: str
    fmt: FcFormat
    bim: BimMask
    x: np.ndarray
    patch_counts: np.ndarray
    patch_positions: np.ndarray
    alpha: np.ndarray
    bias: np.ndarray
    a: np.ndarray
    bias_q: np.ndarray
    shift: int
    relu: bool
    in_scale: float
    out_scale: float

    def __post_init__(self) -> None:
        _validate_fc(self)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the layer's matrix."""
        return self.bim.shape

    @property
    def bits(self) -> int:
        """Bit-planes q."""
        return int(self.alpha.shape[1])

    @property
    def tile_major_shape(self) -> tuple[int, int]:
        """(T_r T_c m_t, n_t): the padded tile-major matrix the engine streams."""
        t_r, t_c = self.fmt.layout.grid(self.shape)
        return t_r * t_c * self.fmt.m_t, self.fmt.n_t

    def xor_weights(self) -> XorWeights:
        """The planes as an XOR-format matrix of the tile-major shape (alpha per tile-major row, 0 on padding)."""
        rows = self.shape[0]
        owner = self.fmt.layout.row_of(self.shape)
        alpha = np.where((owner < rows)[:, None], self.alpha[np.minimum(owner, rows - 1)], 0).astype(np.float32)
        return XorWeights(params=self.fmt.xor_params(self.bits), shape=self.tile_major_shape, m=self.fmt.matrix(),
                          alpha=alpha, x=self.x, patch_counts=self.patch_counts,
                          patch_positions=self.patch_positions)

    def mask_rows(self) -> np.ndarray:
        """The BIM mask rows as the engine unpacks them: (T_r T_c m_t, n_t) bool, padding bits included."""
        return boolean_product(self.bim.p, self.bim.z).reshape(-1, self.fmt.n_t)

    def engine_layer(self) -> fc_stream.FcLayer:
        """The layer as the FC engine consumes it (`hw.spec.fc_stream.FcLayer`)."""
        return fc_stream.FcLayer(cols=self.shape[1], xor_x=self.x, patch_counts=self.patch_counts,
                                 patch_positions=self.patch_positions, p=self.bim.p, z=self.bim.z, a=self.a,
                                 bias_q=self.bias_q, shift=int(self.shift), relu=bool(self.relu))

    @functools.cached_property
    def keep(self) -> np.ndarray:
        """(rows, cols) bool keep mask."""
        return self.bim.mask()

    @functools.cached_property
    def planes_tile_major(self) -> np.ndarray:
        """(bits, T_r T_c m_t, n_t) uint8 decoded planes, 1 = +1 (don't-care where pruned or padded)."""
        y = decode_slices(self.fmt.matrix(), self.x, self.patch_counts, self.patch_positions)
        return y.reshape(self.bits, -1, self.fmt.n_t)

    @functools.cached_property
    def planes(self) -> np.ndarray:
        """(bits, rows, cols) uint8 decoded planes in the matrix's own layout."""
        return untile(self.planes_tile_major, self.shape, self.fmt)

    def dense(self) -> np.ndarray:
        """The float32 weights the layer stands for: sum_i alpha_i b_i on kept positions, exactly 0 elsewhere."""
        return bcq_dequantize(self.alpha, self.planes, self.keep)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Integer input codes (..., cols) -> int64 output codes (..., rows), bit-exact with the FC engine."""
        return fc_fixed(x, self.planes, self.keep, self.a, self.bias_q, self.shift, self.relu)

    def forward_float(self, x: np.ndarray) -> np.ndarray:
        """Float reference: dense() on float inputs (..., cols) plus bias, ReLU if the layer has it (float64)."""
        y = np.asarray(x, dtype=np.float64) @ self.dense().T.astype(np.float64) + self.bias
        return np.maximum(y, 0) if self.relu else y

    def storage_bits(self) -> dict[str, int]:
        """Stored bits: XOR payload (x, patch positions, patch counts), BIM index, `a`, bias_q; and their total."""
        xor = self.xor_weights().storage_bits()
        out = {"xor": xor["total"], "xor_x": xor["x"], "xor_patch_positions": xor["patch_positions"],
               "xor_patch_counts": xor["patch_counts"], "bim_index": self.bim.index_bits(),
               "a": int(self.a.size) * self.fmt.a_bits, "bias_q": self.shape[0] * BIAS_BITS}
        out["total"] = out["xor"] + out["bim_index"] + out["a"] + out["bias_q"]
        return out


def untile(tile_major: np.ndarray, shape: tuple[int, int], fmt: FcFormat) -> np.ndarray:
    """(..., T_r T_c m_t, n_t) tile-major matrices -> (..., rows, cols), padding cut off."""
    t_r, t_c = fmt.layout.grid(shape)
    lead = tile_major.shape[:-2]
    tiles = tile_major.reshape(-1, t_r, t_c, fmt.m_t, fmt.n_t)
    return np.stack([from_tiles(t, shape) for t in tiles]).reshape(*lead, *shape)


def _validate_fc(layer: CompressedFcLayer) -> None:
    n = layer.name
    fmt = layer.fmt
    if not isinstance(fmt, FcFormat):
        raise _bad(f"{n}/fmt", f"must be an FcFormat, got {type(fmt).__name__}")
    if not isinstance(layer.bim, BimMask):
        raise _bad(f"{n}/p", f"must be a BimMask, got {type(layer.bim).__name__}")
    if layer.bim.params != fmt.bim_params:
        raise _bad(f"{n}/p", f"BIM tile {layer.bim.params} differs from the format's {fmt.bim_params}")
    rows, _ = layer.bim.shape
    alpha = layer.alpha
    if not isinstance(alpha, np.ndarray) or alpha.dtype != np.float32 or alpha.ndim != 2 or alpha.shape[0] != rows:
        got = f"{alpha.dtype} {alpha.shape}" if isinstance(alpha, np.ndarray) else type(alpha).__name__
        raise _bad(f"{n}/alpha", f"expected float32 of shape ({rows}, bits), got {got}")
    if not 1 <= alpha.shape[1] <= fmt.max_planes:
        raise _bad(f"{n}/alpha", f"{alpha.shape[1]} planes, allowed 1..{fmt.max_planes} (max_planes)")
    if not np.isfinite(alpha).all() or (alpha < 0).any():
        raise _bad(f"{n}/alpha", "must be finite and >= 0")
    q = alpha.shape[1]
    for fname, value, dtype, shape in (("bias", layer.bias, np.float32, (rows,)), ("a", layer.a, np.int64, (rows, q)),
                                       ("bias_q", layer.bias_q, np.int64, (rows,))):
        if not isinstance(value, np.ndarray) or value.dtype != dtype or value.shape != shape:
            got = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
            raise _bad(f"{n}/{fname}", f"expected {np.dtype(dtype)} of shape {shape}, got {got}")
    if not np.isfinite(layer.bias).all():
        raise _bad(f"{n}/bias", "has non-finite values")
    if (layer.a < 0).any() or (layer.a > fmt.a_max).any():
        raise _bad(f"{n}/a", f"entries must be in 0..{fmt.a_max} (a_bits={fmt.a_bits}), got "
                             f"{int(layer.a.min())}..{int(layer.a.max())}")
    # Compared as they are: abs() of int64's minimum overflows.
    low, high = -(1 << (BIAS_BITS - 1)), (1 << (BIAS_BITS - 1)) - 1
    if (layer.bias_q < low).any() or (layer.bias_q > high).any():
        raise _bad(f"{n}/bias_q", f"entries must be in {low}..{high} (signed {BIAS_BITS} bits), got "
                                  f"{int(layer.bias_q.min())}..{int(layer.bias_q.max())}")
    if isinstance(layer.shift, (bool, np.bool_)) or not isinstance(layer.shift, (int, np.integer)) \
            or not 0 <= layer.shift <= MAX_SHIFT:
        raise _bad(f"{n}/shift", f"must be an integer in 0..{MAX_SHIFT}, got {layer.shift!r}")
    if not isinstance(layer.relu, (bool, np.bool_)):
        raise _bad(f"{n}/relu", f"must be a bool, got {layer.relu!r}")
    for fname in ("in_scale", "out_scale"):
        value = getattr(layer, fname)
        if not isinstance(value, (float, np.floating)) or not np.isfinite(value) or value <= 0:
            raise _bad(f"{n}/{fname}", f"must be a finite float > 0, got {value!r}")
    s = q * layer.tile_major_shape[0]
    if not isinstance(layer.x, np.ndarray) or layer.x.dtype != np.uint8 or layer.x.shape != (s, fmt.n_in):
        got = f"{layer.x.dtype} {layer.x.shape}" if isinstance(layer.x, np.ndarray) else type(layer.x).__name__
        raise _bad(f"{n}/x", f"expected uint8 of shape ({s}, {fmt.n_in}) (slices, n_in), got {got}")
    try:
        layer.xor_weights()  # the XOR format's own checks: bits 0/1, counts, positions in range and ascending
    except XorFormatError as error:
        raise ModelFormatError(_prefixed(str(error), n)) from None


def _prefixed(message: str, prefix: str) -> str:
    """Turn another format's "field 'x': ..." / "missing field 'x'" into "field 'PREFIX/x': ..."."""
    return re.sub(r"field '([^']*)'", lambda m: f"field '{prefix}/{m.group(1)}'", message, count=1)


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
    shapes = [(model.conv1.c_in, model.conv1.c_out), (model.conv2.c_in, model.conv2.c_out)]
    if shapes != [(1, 6), (6, 16)]:
        raise ModelFormatError(f"conv layers must be 1 -> 6 and 6 -> 16 channels, got {shapes}")
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


# --- the size report -----------------------------------------------------------------------------------------


def size_report(layers: Sequence[CompressedFcLayer]) -> dict[str, Any]:
    """Per layer and over all: stored bits and bits per weight of each part (`CompressedFcLayer.storage_bits`)."""
    report: dict[str, Any] = {}
    total: dict[str, int] = {}
    weights = 0
    for layer in layers:
        bits = layer.storage_bits()
        n = layer.shape[0] * layer.shape[1]
        report[layer.name] = {"weights": n, "kept": int(layer.keep.sum()), "bits": bits,
                              "bits_per_weight": {k: round(v / n, 5) for k, v in bits.items()}}
        weights += n
        for key, value in bits.items():
            total[key] = total.get(key, 0) + value
    report["all"] = {"weights": weights, "kept": sum(report[n.name]["kept"] for n in layers), "bits": total,
                     "bits_per_weight": {k: round(v / weights, 5) for k, v in total.items()}}
    return report


# --- the file ------------------------------------------------------------------------------------------------


def _decode(decode: Callable[[Mapping[str, np.ndarray]], Any], fields: Mapping[str, np.ndarray],
            error: type[Exception], prefix: str) -> Any:
    """`decode` (another format's checked field decoder) on `fields`; its one-line error with field names under
    `prefix`."""
    try:
        return decode(fields)
    except error as exc:
        raise ModelFormatError(_prefixed(str(exc), prefix)) from None


def model_fields(model: CompressedLeNet5) -> dict[str, np.ndarray]:
    """Every array of the model file (docs/formats.md), by field name."""
    out: dict[str, np.ndarray] = {"format": np.array(FORMAT), "version": np.int64(VERSION),
                                  "metadata": np.array(json.dumps(model.metadata, sort_keys=True)),
                                  "input_scale": np.float32(model.input_scale)}
    for name, conv in zip(CONV_NAMES, model.convs()):
        out.update({f"{name}/{k}": v for k, v in layer_fields(conv).items()})
    out.update({f"fc_format/{k}": v for k, v in model.fmt.fields().items()})
    out["fc_format/m"] = np.packbits(model.fmt.matrix().reshape(-1))
    for layer in model.fc:
        xor = xor_fields(layer.xor_weights())
        bim = bim_fields(layer.bim)
        n = layer.name
        out.update({
            f"{n}/shape": np.array(layer.shape, dtype=np.int64), f"{n}/bits": np.int64(layer.bits),
            f"{n}/x": xor["x"], f"{n}/patch_counts": xor["patch_counts"],
            f"{n}/patch_positions": xor["patch_positions"], f"{n}/alpha": layer.alpha,
            f"{n}/p": bim["p"], f"{n}/z": bim["z"],
            f"{n}/a": layer.a, f"{n}/bias_q": layer.bias_q, f"{n}/shift": np.int64(layer.shift),
            f"{n}/relu": np.int64(layer.relu), f"{n}/bias": layer.bias,
            f"{n}/in_scale": np.float32(layer.in_scale), f"{n}/out_scale": np.float32(layer.out_scale),
        })
    return out


def save_model(path: str | Path, model: CompressedLeNet5) -> None:
    """Write the model file: one uncompressed np.savez archive of `model_fields`."""
    fields = model_fields(model)
    with open(path, "wb") as f:
        np.savez(f, **fields)


def _scalar(raw: dict[str, np.ndarray], name: str, kind: str) -> Any:
    if name not in raw:
        raise ModelFormatError(f"missing field '{name}'")
    value = raw[name]
    if kind == "int" and (value.shape != () or value.dtype.kind not in "iu"):
        raise _bad(name, f"expected an integer scalar, got {value.dtype} {value.shape}")
    if kind == "float" and (value.shape != () or value.dtype != np.float32):
        raise _bad(name, f"expected a float32 scalar, got {value.dtype} {value.shape}")
    if kind == "str" and (value.shape != () or value.dtype.kind != "U"):
        raise _bad(name, f"expected a string scalar, got {value.dtype} {value.shape}")
    return int(value) if kind == "int" else float(value) if kind == "float" else str(value)


def _array(raw: dict[str, np.ndarray], name: str, dtype: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
    if name not in raw:
        raise ModelFormatError(f"missing field '{name}'")
    value = raw[name]
    if value.dtype != dtype or (shape is not None and value.shape != shape) or (shape is None and value.ndim != 1):
        want = shape if shape is not None else "(n,)"
        raise _bad(name, f"expected {np.dtype(dtype)} of shape {want}, got {value.dtype} {value.shape}")
    return value


def _fc_from_fields(raw: dict[str, np.ndarray], name: str, fmt: FcFormat) -> CompressedFcLayer:
    shape = tuple(int(v) for v in _array(raw, f"{name}/shape", np.int64, (2,)))
    if shape != FC_SHAPES[name]:
        raise _bad(f"{name}/shape", f"expected {FC_SHAPES[name]}, got {shape}")
    bits = _scalar(raw, f"{name}/bits", "int")
    if not 1 <= bits <= fmt.max_planes:
        raise _bad(f"{name}/bits", f"must be in 1..{fmt.max_planes} (max_planes), got {bits}")
    rows = shape[0]
    alpha = _array(raw, f"{name}/alpha", np.float32, (rows, bits))
    relu = _scalar(raw, f"{name}/relu", "int")
    if relu not in (0, 1):
        raise _bad(f"{name}/relu", f"must be 0 or 1, got {relu}")
    p = fmt.bim_params
    bim = _decode(bim_from_fields, {"version": np.int64(1), "shape": np.array(shape, dtype=np.int64),
                                 "m_t": np.int64(p.m_t), "n_t": np.int64(p.n_t), "r": np.int64(p.r),
                                 "p": _array(raw, f"{name}/p", np.uint8), "z": _array(raw, f"{name}/z", np.uint8)},
                  BimFormatError, name)
    t_r, t_c = fmt.layout.grid(shape)
    xor_params = dataclasses.asdict(fmt.xor_params(bits))
    xor = _decode(xor_from_fields, {
        "version": np.int64(1), **{k: np.int64(v) for k, v in xor_params.items()},
        "shape": np.array((t_r * t_c * fmt.m_t, fmt.n_t), dtype=np.int64),
        "m": np.packbits(fmt.matrix().reshape(-1)), "alpha": np.zeros((t_r * t_c * fmt.m_t, bits), dtype=np.float32),
        "x": _array(raw, f"{name}/x", np.uint8), "patch_counts": _array(raw, f"{name}/patch_counts", np.uint8),
        "patch_positions": _array(raw, f"{name}/patch_positions", np.uint8)}, XorFormatError, name)
    return CompressedFcLayer(name=name, fmt=fmt, bim=bim, x=xor.x, patch_counts=xor.patch_counts,
                   patch_positions=xor.patch_positions, alpha=alpha,
                   bias=_array(raw, f"{name}/bias", np.float32, (rows,)),
                   a=_array(raw, f"{name}/a", np.int64, (rows, bits)),
                   bias_q=_array(raw, f"{name}/bias_q", np.int64, (rows,)),
                   shift=_scalar(raw, f"{name}/shift", "int"), relu=bool(relu),
                   in_scale=_scalar(raw, f"{name}/in_scale", "float"),
                   out_scale=_scalar(raw, f"{name}/out_scale", "float"))


def model_from_fields(raw: dict[str, np.ndarray], expected: FcFormat | None = DEFAULT_FC_FORMAT) -> CompressedLeNet5:
    """Check and decode a model file's arrays (see `load_model`)."""
    fmt_name = _scalar(raw, "format", "str")
    if fmt_name != FORMAT:
        raise _bad("format", f"expected {FORMAT!r}, got {fmt_name!r}")
    version = _scalar(raw, "version", "int")
    if version != VERSION:
        raise _bad("version", f"unknown version {version} (this reader knows {VERSION})")
    try:
        metadata = json.loads(_scalar(raw, "metadata", "str"))
    except json.JSONDecodeError as error:
        raise _bad("metadata", f"not JSON ({error})") from None
    if not isinstance(metadata, dict):
        raise _bad("metadata", f"expected a JSON object, got {type(metadata).__name__}")
    input_scale = _scalar(raw, "input_scale", "float")
    if input_scale != INPUT_SCALE:
        raise _bad("input_scale", f"expected float32(1/127) = {INPUT_SCALE!r}, got {input_scale!r}")
    try:
        fmt = FcFormat.from_fields({k.removeprefix("fc_format/"): v for k, v in raw.items()
                                    if k.startswith("fc_format/") and k.removeprefix("fc_format/") in FIELD_NAMES})
    except ValueError as error:
        raise ModelFormatError(_prefixed(str(error), "fc_format")) from None
    if expected is not None and fmt != expected:
        raise FcFormatMismatch(f"field 'fc_format': model file for another FC configuration "
                               f"({'; '.join(fmt.differences(expected))}; file != expected)")
    m = _array(raw, "fc_format/m", np.uint8)
    if m.size != -(-fmt.n_out * fmt.n_in // 8) or not np.array_equal(
            np.unpackbits(m)[:fmt.n_out * fmt.n_in], fmt.matrix().reshape(-1)):
        raise _bad("fc_format/m", f"differs from xor_matrix(n_out={fmt.n_out}, n_in={fmt.n_in}, seed={fmt.seed}) "
                                  "as this NumPy draws it (the decoder hard-wires that one)")
    convs = []
    for name in CONV_NAMES:
        sub = {k.removeprefix(f"{name}/"): v for k, v in raw.items() if k.startswith(f"{name}/")}
        convs.append(_decode(layer_from_fields, sub, SpectralFormatError, name))
        if convs[-1].quant is None:
            raise ModelFormatError(f"missing field '{name}/in_scale' (the fixed-point model needs the quantization "
                                   "fields)")
    layers = tuple(_fc_from_fields(raw, name, fmt) for name in FC_NAMES)
    return CompressedLeNet5(conv1=convs[0], conv2=convs[1], fc=layers, fmt=fmt, metadata=metadata,
                            input_scale=input_scale)


def load_model(path: str | Path, expected: FcFormat | None = DEFAULT_FC_FORMAT) -> CompressedLeNet5:
    """Read and check a model file; ModelFormatError (one line: path, field) if malformed, its subclass
    FcFormatMismatch if compressed for another FcFormat than `expected` (None accepts any)."""
    raw = read_npz(path, ModelFormatError)
    try:
        return model_from_fields(raw, expected)
    except FcFormatMismatch as error:
        raise FcFormatMismatch(f"{path}: {error}") from None
    except ModelFormatError as error:
        raise ModelFormatError(f"{path}: {error}") from None
