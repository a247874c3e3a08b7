"""A compressed network of any supported shape (docs/formats.md, "Compressed networks"): the model, its golden
forward pass, its file. NumPy only.

An input shape, (C, H, W) or (features,), and its int8 input scale, then an ordered chain of named layers of four
kinds: `ConvLayer` (a calibrated sparse spectral conv layer of `hw.spec.spectral`, its geometry in its `OaaParams`,
ReLU and quantization in the layer), `PoolLayer` (2 x 2 max-pooling on the codes), `FlattenLayer` (channel-major)
and `CompressedFcLayer` (a BIM keep mask, binary-coded planes XOR-encoded for the FC engine's fixed M, and the
integer requantization of `hw.spec.fc.fc_fixed`); every FC layer shares one `FcFormat`. Each layer reads the int8
codes of the one before at that layer's scale, so the scales chain exactly: a conv or FC layer's `in_scale` is
the previous conv or FC layer's `out_scale` (the input scale for the first); pooling and flattening keep it.

The golden forward pass (`CompressedNetwork.forward`) is integer end to end, bit-exact with the engines' specs:
`spectral_conv_fixed`, `max_pool`, `fc_fixed`. The file reuses the spectral layer file's fields
(`hw.spec.spectral.file.layer_fields` / `layer_from_fields`) and the XOR and BIM files' encodings
(`hw.spec.xor.xor_fields` / `xor_from_fields`, `hw.spec.bim.bim_fields` / `bim_from_fields`), as the compressed
LeNet-5 file does (`host.lenet5.compressed`, which takes its FC layer and the FC field codecs from here).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from hw.spec import fc_stream
from hw.spec.bim import BimFormatError, BimMask, bim_fields, bim_from_fields, boolean_product, from_tiles
from hw.spec.fc import ACT_BITS, MAX_SHIFT, fc_fixed
from hw.spec.fc_format import DEFAULT_FC_FORMAT, FIELD_NAMES, FcFormat
from hw.spec.npzfile import read_npz
from hw.spec.pool import max_pool
from hw.spec.spectral.file import layer_fields, layer_from_fields
from hw.spec.spectral.fixed import DatapathLimitError, SpectralFixed, check_quant_limits, spectral_conv_fixed
from hw.spec.spectral.layer import SpectralFormatError, SpectralLayer
from hw.spec.xor import (
    XorFormatError,
    XorWeights,
    bcq_dequantize,
    decode_slices,
    xor_fields,
    xor_from_fields,
)

__all__ = ["FORMAT", "VERSION", "BIAS_BITS", "KINDS", "ModelFormatError", "FcFormatMismatch", "ConvLayer",
           "PoolLayer", "FlattenLayer", "CompressedFcLayer", "CompressedNetwork", "quantize_input", "spectral_batch",
           "untile", "Step", "program_steps",
           "size_report", "model_fields", "save_model", "model_from_fields", "load_model"]

FORMAT = "sqgen-net"
VERSION = 1
#: bias_q is a signed 32-bit integer: the range the loader enforces, the size report counts and the FC engine's
#: default `bias_bits` holds.
BIAS_BITS = 32
#: The layer kinds, as the file's `kinds` field names them.
KINDS = ("conv", "pool", "flatten", "fc")
#: A layer name: its fields are stored as NAME/field, so no '/' and nothing a field prefix already uses.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
RESERVED_NAMES = ("fc_format",)
#: int8 codes in and out of every layer.
CODE_MIN, CODE_MAX = -(1 << (ACT_BITS - 1)), (1 << (ACT_BITS - 1)) - 1
#: Bytes of int64 intermediates one golden batch may hold (the spectral datapath's stages of the largest layer).
BATCH_BYTES = 1 << 27
MAX_BATCH = 1024

T = TypeVar("T")


class ModelFormatError(ValueError):
    """A malformed or inconsistent compressed model file or object; the message names the field."""


class FcFormatMismatch(ModelFormatError):
    """A well-formed model file compressed for another FC engine configuration (`FcFormat`)."""


def field_error(name: str, message: str) -> ModelFormatError:
    """ModelFormatError "field 'NAME': MESSAGE"."""
    return ModelFormatError(f"field '{name}': {message}")


def quantize_input(x: np.ndarray, scale: float) -> np.ndarray:
    """Samples -> int64 codes floor(x / scale + 1/2) (round half up), clamped to int8."""
    return np.clip(np.floor(np.asarray(x, dtype=np.float64) / scale + 0.5), CODE_MIN, CODE_MAX).astype(np.int64)


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
    kind = "fc"

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

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """(rows,) for an input of (cols,) features; ModelFormatError naming `name/shape` otherwise."""
        _check_features(self.name, self.shape, shape)
        return (self.shape[0],)

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


def _check_features(name: str, shape: tuple[int, ...], features: tuple[int, ...]) -> None:
    """ModelFormatError naming `name/shape` unless a (rows, cols) layer can read samples of shape `features`."""
    if tuple(features) != (shape[1],):
        hint = "; a flatten must come before it" if len(features) == 3 else ""
        raise field_error(f"{name}/shape", f"{tuple(shape)} takes ({shape[1]},) features, gets {tuple(features)}"
                                           f"{hint}")


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
        raise field_error(f"{n}/fmt", f"must be an FcFormat, got {type(fmt).__name__}")
    if not isinstance(layer.bim, BimMask):
        raise field_error(f"{n}/p", f"must be a BimMask, got {type(layer.bim).__name__}")
    if layer.bim.params != fmt.bim_params:
        raise field_error(f"{n}/p", f"BIM tile {layer.bim.params} differs from the format's {fmt.bim_params}")
    rows, _ = layer.bim.shape
    alpha = layer.alpha
    if not isinstance(alpha, np.ndarray) or alpha.dtype != np.float32 or alpha.ndim != 2 or alpha.shape[0] != rows:
        got = f"{alpha.dtype} {alpha.shape}" if isinstance(alpha, np.ndarray) else type(alpha).__name__
        raise field_error(f"{n}/alpha", f"expected float32 of shape ({rows}, bits), got {got}")
    if not 1 <= alpha.shape[1] <= fmt.max_planes:
        raise field_error(f"{n}/alpha", f"{alpha.shape[1]} planes, allowed 1..{fmt.max_planes} (max_planes)")
    if not np.isfinite(alpha).all() or (alpha < 0).any():
        raise field_error(f"{n}/alpha", "must be finite and >= 0")
    q = alpha.shape[1]
    for fname, value, dtype, shape in (("bias", layer.bias, np.float32, (rows,)), ("a", layer.a, np.int64, (rows, q)),
                                       ("bias_q", layer.bias_q, np.int64, (rows,))):
        if not isinstance(value, np.ndarray) or value.dtype != dtype or value.shape != shape:
            got = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
            raise field_error(f"{n}/{fname}", f"expected {np.dtype(dtype)} of shape {shape}, got {got}")
    if not np.isfinite(layer.bias).all():
        raise field_error(f"{n}/bias", "has non-finite values")
    if (layer.a < 0).any() or (layer.a > fmt.a_max).any():
        raise field_error(f"{n}/a", f"entries must be in 0..{fmt.a_max} (a_bits={fmt.a_bits}), got "
                                    f"{int(layer.a.min())}..{int(layer.a.max())}")
    # Compared as they are: abs() of int64's minimum overflows.
    low, high = -(1 << (BIAS_BITS - 1)), (1 << (BIAS_BITS - 1)) - 1
    if (layer.bias_q < low).any() or (layer.bias_q > high).any():
        raise field_error(f"{n}/bias_q", f"entries must be in {low}..{high} (signed {BIAS_BITS} bits), got "
                                         f"{int(layer.bias_q.min())}..{int(layer.bias_q.max())}")
    if isinstance(layer.shift, (bool, np.bool_)) or not isinstance(layer.shift, (int, np.integer)) \
            or not 0 <= layer.shift <= MAX_SHIFT:
        raise field_error(f"{n}/shift", f"must be an integer in 0..{MAX_SHIFT}, got {layer.shift!r}")
    if not isinstance(layer.relu, (bool, np.bool_)):
        raise field_error(f"{n}/relu", f"must be a bool, got {layer.relu!r}")
    for fname in ("in_scale", "out_scale"):
        value = getattr(layer, fname)
        if not isinstance(value, (float, np.floating)) or not np.isfinite(value) or value <= 0:
            raise field_error(f"{n}/{fname}", f"must be a finite float > 0, got {value!r}")
    s = q * layer.tile_major_shape[0]
    if not isinstance(layer.x, np.ndarray) or layer.x.dtype != np.uint8 or layer.x.shape != (s, fmt.n_in):
        got = f"{layer.x.dtype} {layer.x.shape}" if isinstance(layer.x, np.ndarray) else type(layer.x).__name__
        raise field_error(f"{n}/x", f"expected uint8 of shape ({s}, {fmt.n_in}) (slices, n_in), got {got}")
    try:
        layer.xor_weights()  # the XOR format's own checks: bits 0/1, counts, positions in range and ascending
    except XorFormatError as error:
        raise ModelFormatError(prefixed(str(error), n)) from None


def prefixed(message: str, prefix: str) -> str:
    """Turn another format's "field 'x': ..." / "missing field 'x'" into "field 'PREFIX/x': ..."."""
    return re.sub(r"field '([^']*)'", lambda m: f"field '{prefix}/{m.group(1)}'", message, count=1)


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
                     "bits_per_weight": {k: round(v / weights, 5) for k, v in total.items()} if weights else {}}
    return report


# --- the other layers ----------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ConvLayer:
    """A calibrated sparse spectral conv layer: kernel size, tile, FFT size and padding in `spectral.oaa`, ReLU in
    `spectral.relu`, the fixed-point parameters in `spectral.quant`. `kernel_size`: the size k of the spatial
    kernels the layer stands for, 1..K (K = `spectral.oaa.k`; a smaller "same" kernel embedded in K x K, a "valid"
    one keeps its own K); None gives K."""

    name: str
    spectral: SpectralLayer
    kernel_size: int | None = None
    kind = "conv"

    def __post_init__(self) -> None:
        if not isinstance(self.spectral, SpectralLayer) or self.spectral.quant is None:
            raise ModelFormatError(f"{self.name}: must be a calibrated SpectralLayer (with quantization fields)")
        if self.spectral.schedule is None:
            raise ModelFormatError(f"{self.name}: the spectral layer has no schedule (the file carries it)")
        oaa = self.spectral.oaa
        try:  # what the golden datapath (`forward`) holds
            check_quant_limits(self.spectral.quant, SpectralFixed(), oaa)
        except DatapathLimitError as error:
            raise field_error(f"{self.name}/{error.field}", str(error)) from None
        k = oaa.k if self.kernel_size is None else self.kernel_size
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or not 1 <= k <= oaa.k:
            raise field_error(f"{self.name}/kernel_size", f"must be an integer in 1..{oaa.k} (k), got {k!r}")
        if oaa.padding == "valid" and k != oaa.k:
            raise field_error(f"{self.name}/kernel_size", f"a 'valid' layer keeps its own kernel size k={oaa.k}, "
                                                          f"got {k}")
        object.__setattr__(self, "kernel_size", int(k))

    @property
    def in_scale(self) -> float:
        return float(self.spectral.quant.in_scale)

    @property
    def out_scale(self) -> float:
        return float(self.spectral.quant.out_scale)

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """(C_out, H_out, W_out) for a (C_in, H, W) map; ModelFormatError naming the field otherwise."""
        layer = self.spectral
        if len(shape) != 3:
            raise field_error(f"{self.name}/c_in", f"takes a (C_in={layer.c_in}, H, W) map, gets {tuple(shape)}")
        if shape[0] != layer.c_in:
            raise field_error(f"{self.name}/c_in", f"{layer.c_in} input channels, the map before has {shape[0]}")
        try:
            return (layer.c_out, *layer.oaa.output_shape(*shape[1:]))
        except ValueError as error:
            raise field_error(f"{self.name}/k", str(error)) from None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """int8 codes (..., C_in, H, W) -> int64 codes, bit-exact (`spectral_conv_fixed`)."""
        return spectral_conv_fixed(x, self.spectral)


@dataclass(frozen=True, eq=False)
class PoolLayer:
    """2 x 2 max-pooling with stride 2 on the codes (`hw.spec.pool.max_pool`; an odd last row or column dropped)."""

    name: str
    kind = "pool"

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) != 3 or min(shape[1:]) < 2:
            raise field_error("layers", f"layer {self.name!r} (pool) takes (C, H, W) with H, W >= 2, gets "
                                        f"{tuple(shape)}")
        return shape[0], shape[1] // 2, shape[2] // 2

    def forward(self, x: np.ndarray) -> np.ndarray:
        return max_pool(x)


@dataclass(frozen=True, eq=False)
class FlattenLayer:
    """(C, H, W) -> (C H W,), channel-major as torch.flatten(x, 1); features stay as they are."""

    name: str
    kind = "flatten"

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(shape),)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1)


def spectral_batch(layer: SpectralLayer, height: int, width: int) -> int:
    """Samples per golden call of a spectral layer on H x W maps: its int64 stages (re and im, before and after the
    channel mix) within BATCH_BYTES, at most MAX_BATCH."""
    oaa = layer.oaa
    per_sample = 4 * 8 * (layer.c_in + layer.c_out) * math.prod(oaa.tiles(height, width)) * oaa.n ** 2
    return max(1, min(MAX_BATCH, BATCH_BYTES // per_sample))


Layer = ConvLayer | PoolLayer | FlattenLayer | CompressedFcLayer
#: The layer classes by their kind.
LAYER_CLASSES: dict[str, type] = {cls.kind: cls for cls in (ConvLayer, PoolLayer, FlattenLayer, CompressedFcLayer)}


# --- the whole network ---------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CompressedNetwork:
    """The input shape of one sample and its int8 scale, the chain of layers, the FcFormat every FC layer shares,
    and JSON-able metadata (`name`, `dataset`, `accuracy` per stage, ...). Checked on construction: names, the
    shapes and the scales chain (ModelFormatError naming the field)."""

    input_shape: tuple[int, ...]
    input_scale: float
    layers: tuple[Layer, ...]
    fmt: FcFormat = DEFAULT_FC_FORMAT
    metadata: dict = field(default_factory=dict)
    shapes: tuple[tuple[int, ...], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        _validate_network(self)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shapes[-1]

    def layer(self, name: str) -> Layer:
        """The layer called `name` (KeyError naming the layers there are)."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer {name!r}; the layers are {', '.join(self.names)}")

    def in_shape(self, index: int) -> tuple[int, ...]:
        """The sample shape layer `index` reads."""
        return self.input_shape if index == 0 else self.shapes[index - 1]

    def fc_layers(self) -> tuple[CompressedFcLayer, ...]:
        return tuple(layer for layer in self.layers if isinstance(layer, CompressedFcLayer))

    def conv_layers(self) -> tuple[ConvLayer, ...]:
        return tuple(layer for layer in self.layers if isinstance(layer, ConvLayer))

    def output_scale(self) -> float:
        """The scale of the last layer's codes (of the input's when no conv or FC layer is there)."""
        scale = self.input_scale
        for layer in self.layers:
            scale = getattr(layer, "out_scale", scale)
        return float(scale)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Float samples (N, *input_shape) -> int64 codes at `input_scale` (round half up, clamped to int8)."""
        return quantize_input(x, self.input_scale)

    def dense_weights(self) -> dict[str, int]:
        """Weights each layer applies per sample, counted dense (conv C_out C_in k^2 of its `kernel_size`, FC rows
        cols), and "all"."""
        out = {layer.name: layer.spectral.c_out * layer.spectral.c_in * layer.kernel_size ** 2
               for layer in self.conv_layers()}
        out.update({layer.name: layer.shape[0] * layer.shape[1] for layer in self.fc_layers()})
        out["all"] = sum(out.values())
        return out

    def batch_size(self) -> int:
        """Samples per golden batch: the smallest `spectral_batch` of the conv layers (MAX_BATCH without)."""
        return min((spectral_batch(layer.spectral, *self.in_shape(i)[1:]) for i, layer in enumerate(self.layers)
                    if isinstance(layer, ConvLayer)), default=MAX_BATCH)

    def forward(self, codes: np.ndarray, *, trace: bool = False, batch: int | None = None) -> dict[str, np.ndarray]:
        """int8 codes (N, *input_shape) (any integer dtype) -> int64 output codes by layer name: only the last
        layer's, or with `trace` every layer's in order. Bit-exact with the engines' specs; run in batches."""
        codes = np.asarray(codes)
        if codes.dtype.kind not in "iu" or codes.shape[1:] != self.input_shape:
            raise ValueError(f"codes must be integers of shape (N, {', '.join(map(str, self.input_shape))}), got "
                             f"{codes.dtype} {codes.shape}")
        if codes.size and (codes.min() < CODE_MIN or codes.max() > CODE_MAX):
            raise ValueError(f"codes must be in {CODE_MIN}..{CODE_MAX} (int8), got {codes.min()}..{codes.max()}")
        step = batch or self.batch_size()
        wanted = self.names if trace else self.names[-1:]
        parts: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
        for start in range(0, len(codes), step):
            h = codes[start:start + step].astype(np.int64)
            for layer in self.layers:
                h = layer.forward(h)
                if layer.name in parts:
                    parts[layer.name].append(h)
        shapes = dict(zip(self.names, self.shapes))
        return {name: np.concatenate(v) if v else np.zeros((0, *shapes[name]), dtype=np.int64)
                for name, v in parts.items()}

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Float samples (N, *input_shape) -> the last layer's int64 codes, by the golden forward pass."""
        return self.forward(self.quantize(x))[self.names[-1]]


def _validate_network(model: CompressedNetwork) -> None:
    shape = model.input_shape
    if not isinstance(shape, tuple) or len(shape) not in (1, 3) or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, (bool, np.bool_)) and d >= 1 for d in shape):
        raise field_error("input_shape", f"must be (C, H, W) or (features,) of positive integers, got {shape!r}")
    object.__setattr__(model, "input_shape", tuple(int(d) for d in shape))
    scale = model.input_scale
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (float, np.floating)) or not (
            math.isfinite(scale) and scale > 0):
        raise field_error("input_scale", f"must be a finite float > 0, got {scale!r}")
    if not isinstance(model.fmt, FcFormat):
        raise field_error("fc_format", f"must be an FcFormat, got {type(model.fmt).__name__}")
    if not isinstance(model.metadata, dict):
        raise field_error("metadata", f"must be a dict, got {type(model.metadata).__name__}")
    if not model.layers:
        raise field_error("layers", "a network needs at least one layer")
    seen: set[str] = set()
    shapes = []
    shape, scale, source = model.input_shape, float(np.float32(scale)), "input_scale"
    for layer in model.layers:
        if type(layer) not in LAYER_CLASSES.values():
            raise field_error("kinds", f"layer {getattr(layer, 'name', layer)!r}: not one of {', '.join(KINDS)}, got "
                                       f"{type(layer).__name__}")
        name = layer.name
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name in RESERVED_NAMES:
            raise field_error("layers", f"layer name {name!r} must match {NAME_PATTERN.pattern} and not be one of "
                                        f"{', '.join(RESERVED_NAMES)}")
        if name in seen:
            raise field_error("layers", f"layer name {name!r} is used twice")
        seen.add(name)
        if isinstance(layer, CompressedFcLayer) and layer.fmt != model.fmt:
            raise field_error(f"{name}/fmt", "differs from the model's FcFormat")
        if isinstance(layer, (ConvLayer, CompressedFcLayer)):
            # A layer reads the codes of the one before, so its s_x must be that layer's s_y exactly.
            if float(np.float32(layer.in_scale)) != scale:
                raise field_error(f"{name}/in_scale", f"{layer.in_scale!r} differs from the scale of its input codes "
                                                      f"({source}) {scale!r}")
            scale, source = float(np.float32(layer.out_scale)), f"{name}/out_scale"
        shape = layer.out_shape(shape)
        shapes.append(shape)
    object.__setattr__(model, "shapes", tuple(shapes))


# --- the device's program ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One layer descriptor of a network's program: the layer it runs, whether its pool follows as its post
    stage, the name of the last layer it covers (the pool's when pooled), the shapes it reads and writes."""

    name: str
    layer: ConvLayer | CompressedFcLayer
    pool: bool
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    @property
    def kind(self) -> str:
        return self.layer.kind


def program_steps(model: CompressedNetwork) -> list[Step]:
    """The step rule: one descriptor per conv layer, with the pool right after it as its post stage, and one per FC
    layer; a flatten costs nothing (the buffers hold maps channel-major, as a flatten reads them).

    ValueError, one line, for a pool that does not follow a conv layer (the device pools only in a conv layer's
    post stage) and for a network with no conv or FC layer.
    """
    steps: list[Step] = []
    layers = model.layers
    for i, layer in enumerate(layers):
        if isinstance(layer, FlattenLayer):
            continue
        if isinstance(layer, PoolLayer):
            if i == 0 or not isinstance(layers[i - 1], ConvLayer):
                before = "the input" if i == 0 else f"{layers[i - 1].kind} layer {layers[i - 1].name!r}"
                raise ValueError(f"layer {layer.name}: the device pools only in a conv layer's post stage, and this "
                                 f"pool follows {before}")
            steps[-1] = dataclasses.replace(steps[-1], name=layer.name, pool=True, out_shape=model.shapes[i])
            continue
        steps.append(Step(layer.name, layer, False, model.in_shape(i), model.shapes[i]))
    if not steps:
        raise ValueError("the network has no conv or FC layer: nothing for the device to run")
    return steps


# --- the file ------------------------------------------------------------------------------------------------


def decode_fields(decode: Callable[[Mapping[str, np.ndarray]], Any], fields: Mapping[str, np.ndarray],
                  error: type[Exception], prefix: str) -> Any:
    """`decode` (another format's checked field decoder) on `fields`; its one-line error with field names under
    `prefix`."""
    try:
        return decode(fields)
    except error as exc:
        raise ModelFormatError(prefixed(str(exc), prefix)) from None


def scalar_field(raw: Mapping[str, np.ndarray], name: str, kind: str) -> Any:
    """The scalar field `name` as int, float (float32 in the file) or str (`kind`); ModelFormatError naming it."""
    if name not in raw:
        raise ModelFormatError(f"missing field '{name}'")
    value = raw[name]
    if kind == "int" and (value.shape != () or value.dtype.kind not in "iu"):
        raise field_error(name, f"expected an integer scalar, got {value.dtype} {value.shape}")
    if kind == "float" and (value.shape != () or value.dtype != np.float32):
        raise field_error(name, f"expected a float32 scalar, got {value.dtype} {value.shape}")
    if kind == "str" and (value.shape != () or value.dtype.kind != "U"):
        raise field_error(name, f"expected a string scalar, got {value.dtype} {value.shape}")
    return int(value) if kind == "int" else float(value) if kind == "float" else str(value)


def array_field(raw: Mapping[str, np.ndarray], name: str, dtype: Any,
                shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The array field `name` of `dtype` and `shape` (None: any 1-D); ModelFormatError naming it."""
    if name not in raw:
        raise ModelFormatError(f"missing field '{name}'")
    value = raw[name]
    if value.dtype != dtype or (shape is not None and value.shape != shape) or (shape is None and value.ndim != 1):
        want = shape if shape is not None else "(n,)"
        raise field_error(name, f"expected {np.dtype(dtype)} of shape {want}, got {value.dtype} {value.shape}")
    return value


def header_fields(name: str, version: int, metadata: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The fields a model file starts with: its `format` name, `version` and `metadata` (JSON, keys sorted)."""
    return {"format": np.array(name), "version": np.int64(version),
            "metadata": np.array(json.dumps(metadata, sort_keys=True))}


def check_header(raw: Mapping[str, np.ndarray], name: str, version: int) -> dict:
    """A model file's `format` (must be `name`) and `version` (must be `version`) checked; its metadata
    (`metadata_field`). ModelFormatError naming the field."""
    fmt_name = scalar_field(raw, "format", "str")
    if fmt_name != name:
        raise field_error("format", f"expected {name!r}, got {fmt_name!r}")
    got = scalar_field(raw, "version", "int")
    if got != version:
        raise field_error("version", f"unknown version {got} (this reader knows {version})")
    return metadata_field(raw)


def metadata_field(raw: Mapping[str, np.ndarray]) -> dict:
    """The `metadata` field: a JSON object; ModelFormatError naming it otherwise."""
    text = scalar_field(raw, "metadata", "str")
    try:
        metadata = json.loads(text)
    except (ValueError, RecursionError) as error:  # also numbers past int's digit limit, nesting past the stack's
        raise field_error("metadata", f"not JSON ({str(error)[:120]})") from None
    if not isinstance(metadata, dict):
        raise field_error("metadata", f"expected a JSON object, got {type(metadata).__name__}")
    return metadata


def fc_format_fields(fmt: FcFormat) -> dict[str, np.ndarray]:
    """The `fc_format/...` fields: the format's integers and its matrix M, packed."""
    out = {f"fc_format/{k}": v for k, v in fmt.fields().items()}
    out["fc_format/m"] = np.packbits(fmt.matrix().reshape(-1))
    return out


def fc_format_from_fields(raw: Mapping[str, np.ndarray], expected: FcFormat | None) -> FcFormat:
    """The file's FcFormat, checked (M as this NumPy draws it); FcFormatMismatch if it is not `expected` (None
    accepts any)."""
    try:
        fmt = FcFormat.from_fields({k.removeprefix("fc_format/"): v for k, v in raw.items()
                                    if k.startswith("fc_format/") and k.removeprefix("fc_format/") in FIELD_NAMES})
    except ValueError as error:
        raise ModelFormatError(prefixed(str(error), "fc_format")) from None
    if expected is not None and fmt != expected:
        raise FcFormatMismatch(f"field 'fc_format': model file for another FC configuration "
                               f"({'; '.join(fmt.differences(expected))}; file != expected)")
    m = array_field(raw, "fc_format/m", np.uint8)
    if m.size != -(-fmt.n_out * fmt.n_in // 8) or not np.array_equal(
            np.unpackbits(m)[:fmt.n_out * fmt.n_in], fmt.matrix().reshape(-1)):
        raise field_error("fc_format/m", f"differs from xor_matrix(n_out={fmt.n_out}, n_in={fmt.n_in}, "
                                         f"seed={fmt.seed}) as this NumPy draws it (the decoder hard-wires that one)")
    return fmt


def fc_layer_fields(layer: CompressedFcLayer) -> dict[str, np.ndarray]:
    """The layer's fields, named `NAME/field` (docs/formats.md, the compressed LeNet-5 file's `fcK/...`)."""
    xor = xor_fields(layer.xor_weights())
    bim = bim_fields(layer.bim)
    n = layer.name
    return {
        f"{n}/shape": np.array(layer.shape, dtype=np.int64), f"{n}/bits": np.int64(layer.bits),
        f"{n}/x": xor["x"], f"{n}/patch_counts": xor["patch_counts"],
        f"{n}/patch_positions": xor["patch_positions"], f"{n}/alpha": layer.alpha,
        f"{n}/p": bim["p"], f"{n}/z": bim["z"],
        f"{n}/a": layer.a, f"{n}/bias_q": layer.bias_q, f"{n}/shift": np.int64(layer.shift),
        f"{n}/relu": np.int64(layer.relu), f"{n}/bias": layer.bias,
        f"{n}/in_scale": np.float32(layer.in_scale), f"{n}/out_scale": np.float32(layer.out_scale),
    }


def fc_layer_from_fields(raw: Mapping[str, np.ndarray], name: str, fmt: FcFormat,
                         check_shape: Callable[[tuple[int, ...]], None] | None = None) -> CompressedFcLayer:
    """The FC layer `name` of a file's arrays, every field checked. `check_shape(shape)` raises ModelFormatError
    if the declared (rows, cols) do not fit where the layer is (before anything of that size is made)."""
    shape = tuple(int(v) for v in array_field(raw, f"{name}/shape", np.int64, (2,)))
    if check_shape is not None:
        check_shape(shape)
    if min(shape) < 1:
        raise field_error(f"{name}/shape", f"expected two positive integers, got {shape}")
    bits = scalar_field(raw, f"{name}/bits", "int")
    if not 1 <= bits <= fmt.max_planes:
        raise field_error(f"{name}/bits", f"must be in 1..{fmt.max_planes} (max_planes), got {bits}")
    rows = shape[0]
    alpha = array_field(raw, f"{name}/alpha", np.float32, (rows, bits))
    relu = scalar_field(raw, f"{name}/relu", "int")
    if relu not in (0, 1):
        raise field_error(f"{name}/relu", f"must be 0 or 1, got {relu}")
    p = fmt.bim_params
    # The BIM factors' byte counts are checked against the declared shape here, before the tile-major arrays of
    # that shape are made below.
    bim = decode_fields(bim_from_fields, {
        "version": np.int64(1), "shape": np.array(shape, dtype=np.int64), "m_t": np.int64(p.m_t),
        "n_t": np.int64(p.n_t), "r": np.int64(p.r), "p": array_field(raw, f"{name}/p", np.uint8),
        "z": array_field(raw, f"{name}/z", np.uint8)}, BimFormatError, name)
    t_r, t_c = fmt.layout.grid(shape)
    xor_params = dataclasses.asdict(fmt.xor_params(bits))
    xor = decode_fields(xor_from_fields, {
        "version": np.int64(1), **{k: np.int64(v) for k, v in xor_params.items()},
        "shape": np.array((t_r * t_c * fmt.m_t, fmt.n_t), dtype=np.int64),
        "m": np.packbits(fmt.matrix().reshape(-1)), "alpha": np.zeros((t_r * t_c * fmt.m_t, bits), dtype=np.float32),
        "x": array_field(raw, f"{name}/x", np.uint8),
        "patch_counts": array_field(raw, f"{name}/patch_counts", np.uint8),
        "patch_positions": array_field(raw, f"{name}/patch_positions", np.uint8)}, XorFormatError, name)
    return CompressedFcLayer(name=name, fmt=fmt, bim=bim, x=xor.x, patch_counts=xor.patch_counts,
                             patch_positions=xor.patch_positions, alpha=alpha,
                             bias=array_field(raw, f"{name}/bias", np.float32, (rows,)),
                             a=array_field(raw, f"{name}/a", np.int64, (rows, bits)),
                             bias_q=array_field(raw, f"{name}/bias_q", np.int64, (rows,)),
                             shift=scalar_field(raw, f"{name}/shift", "int"), relu=bool(relu),
                             in_scale=scalar_field(raw, f"{name}/in_scale", "float"),
                             out_scale=scalar_field(raw, f"{name}/out_scale", "float"))


def conv_layer_from_fields(raw: Mapping[str, np.ndarray], name: str) -> SpectralLayer:
    """The calibrated spectral conv layer `name` of a file's arrays (the spectral layer file's fields under
    `name/`), every field checked; the six quantization fields are required."""
    sub = {k.removeprefix(f"{name}/"): v for k, v in raw.items() if k.startswith(f"{name}/")}
    layer = decode_fields(layer_from_fields, sub, SpectralFormatError, name)
    if layer.quant is None:
        raise ModelFormatError(f"missing field '{name}/in_scale' (the fixed-point model needs the quantization "
                               "fields)")
    return layer


def model_fields(model: CompressedNetwork) -> dict[str, np.ndarray]:
    """Every array of the model file (docs/formats.md, "Compressed networks"), by field name."""
    out: dict[str, np.ndarray] = {
        **header_fields(FORMAT, VERSION, model.metadata),
        "input_shape": np.array(model.input_shape, dtype=np.int64), "input_scale": np.float32(model.input_scale),
        "layers": np.array(model.names, dtype=str), "kinds": np.array([layer.kind for layer in model.layers]),
        **fc_format_fields(model.fmt),
    }
    for layer in model.layers:
        if isinstance(layer, ConvLayer):
            out.update({f"{layer.name}/{k}": v for k, v in layer_fields(layer.spectral).items()})
            out[f"{layer.name}/kernel_size"] = np.int64(layer.kernel_size)
        elif isinstance(layer, CompressedFcLayer):
            out.update(fc_layer_fields(layer))
    return out


def save_fields(path: str | Path, fields: Mapping[str, np.ndarray]) -> None:
    """Write a model file: one uncompressed np.savez archive of `fields`."""
    with open(path, "wb") as f:
        np.savez(f, **fields)


def read_model(path: str | Path, decode: Callable[[Mapping[str, np.ndarray]], T]) -> T:
    """`decode` (a model file's checked field decoder) on the arrays of the file at `path` (`read_npz`, which
    trusts nothing in it); its ModelFormatError, or FcFormatMismatch, with the path in front."""
    raw = read_npz(path, ModelFormatError)
    try:
        return decode(raw)
    except FcFormatMismatch as error:
        raise FcFormatMismatch(f"{path}: {error}") from None
    except ModelFormatError as error:
        raise ModelFormatError(f"{path}: {error}") from None


def save_model(path: str | Path, model: CompressedNetwork) -> None:
    """Write the model file: one uncompressed np.savez archive of `model_fields`."""
    save_fields(path, model_fields(model))


def _names_and_kinds(raw: Mapping[str, np.ndarray]) -> list[tuple[str, str]]:
    names, kinds = (raw.get(name) for name in ("layers", "kinds"))
    for field_name, value in (("layers", names), ("kinds", kinds)):
        if value is None:
            raise ModelFormatError(f"missing field '{field_name}'")
        if value.dtype.kind != "U" or value.ndim != 1 or value.size == 0:
            raise field_error(field_name, f"expected a non-empty 1-D array of strings, got {value.dtype} {value.shape}")
    if kinds.shape != names.shape:
        raise field_error("kinds", f"{kinds.size} kinds for {names.size} layers")
    for i, (name, kind) in enumerate(zip(names.tolist(), kinds.tolist())):
        if kind not in KINDS:
            raise field_error("kinds", f"layer {i} ({name!r}) has kind {kind!r}; the kinds are {', '.join(KINDS)}")
        if not NAME_PATTERN.fullmatch(name) or name in RESERVED_NAMES:
            raise field_error("layers", f"layer name {name!r} must match {NAME_PATTERN.pattern} and not be one of "
                                        f"{', '.join(RESERVED_NAMES)}")
    if len(set(names.tolist())) != names.size:
        raise field_error("layers", "a layer name is used twice")
    return list(zip(names.tolist(), kinds.tolist()))


def _fits(name: str, features: tuple[int, ...], declared: tuple[int, ...]) -> None:
    _check_features(name, declared, features)


def model_from_fields(raw: Mapping[str, np.ndarray], expected: FcFormat | None = DEFAULT_FC_FORMAT
                      ) -> CompressedNetwork:
    """Check and decode a model file's arrays (see `load_model`)."""
    metadata = check_header(raw, FORMAT, VERSION)
    dims = raw.get("input_shape")
    if dims is None:
        raise ModelFormatError("missing field 'input_shape'")
    if dims.dtype != np.int64 or dims.shape not in ((1,), (3,)) or (dims < 1).any():
        raise field_error("input_shape", f"expected int64 (C, H, W) or (features,), positive, got {dims.dtype} "
                                         f"{dims.tolist()}")
    input_shape = tuple(int(d) for d in dims)
    input_scale = scalar_field(raw, "input_scale", "float")
    fmt = fc_format_from_fields(raw, expected)
    layers: list[Layer] = []
    shape = input_shape
    for name, kind in _names_and_kinds(raw):
        if kind == "conv":
            spectral = conv_layer_from_fields(raw, name)
            # Files written before kernel_size existed stored every kernel at its layer's own k.
            size = scalar_field(raw, f"{name}/kernel_size", "int") if f"{name}/kernel_size" in raw else None
            layer: Layer = ConvLayer(name, spectral, size)
        elif kind == "fc":
            layer = fc_layer_from_fields(raw, name, fmt, functools.partial(_fits, name, shape))
        else:
            layer = LAYER_CLASSES[kind](name)
        shape = layer.out_shape(shape)
        layers.append(layer)
    return CompressedNetwork(input_shape=input_shape, input_scale=input_scale, layers=tuple(layers), fmt=fmt,
                             metadata=metadata)


def load_model(path: str | Path, expected: FcFormat | None = DEFAULT_FC_FORMAT) -> CompressedNetwork:
    """Read and check a model file; ModelFormatError (one line: path, field) if malformed, its subclass
    FcFormatMismatch if compressed for another FcFormat than `expected` (None accepts any)."""
    return read_model(path, functools.partial(model_from_fields, expected=expected))
