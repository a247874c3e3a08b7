"""Post-training compression of any supported float network: a `host.network.ir.FloatNetwork` and calibration
samples -> a `hw.spec.network.CompressedNetwork`, without retraining. NumPy only (no torch).

The float chain becomes the compressed one layer by layer; each ReLU is fused into the Conv2d or Linear before it
(through max-pools and flattens, which commute with it), so a ReLU anywhere else is refused.

1. **Input.** The samples' int8 scale: the largest |x| of the calibration samples maps to code 127.
2. **Conv2d -> sparse spectral layer** (`host.compress.spectral.compress_spatial`, any kernel size k, "same" or
   "valid"), all on one conv engine geometry (`engine_geometry`): K the network's largest kernel (rounded up to odd),
   FFT size N (`choose_geometry`: the smallest power of two >= max(8, 2 (K - 1)), so tiles of L = N - K + 1 >= N/2,
   and the engine's N = 8 up to K = 5) or one given. A "same" kernel smaller than K is embedded centred in K x K
   (`embed_kernel`: the same output exactly); a "valid" one keeps its own k on the engine's N and L (its output is
   the window of the engine's "same" output from row k - 1 - (K - 1) // 2). The kernels' spectra are
   magnitude-pruned to `conv_sparsity` of the canonical bins per layer, int16 weights, scheduled for p lanes and b
   banks; then calibrated (`calibrate`) on the integer codes the compressed layers before it produce on the
   samples.
3. **Linear -> compressed FC layer**, as `host.compress.model` does for LeNet-5's, at any shape (the first after
   the convs reads the flattened C H W codes): a BIM keep mask at `fc_sparsity` in the engine's m_t x n_out tiles
   (`factor_mask`; the output layer keeps every row, `keep_every_row`), binary coding in `fc_bits` planes, the
   tile-major planes XOR-encoded for the engine's M, the output scale calibrated on the samples' codes and the
   integer requantization (`compress_fc`); `fc_bits` planes, by default as many as the format allows.
4. **Accuracy** after each stage on labelled test samples: `float` (the float network), `spectral` (convs as
   unpruned spectral layers, float operator), `pruned` (spectral bins and FC weights pruned, float weights and
   activations) and `compressed` (the golden fixed-point model end to end). When the compressed model is more
   than `LOSS_WARNING` below the float one, `CompressionResult.message` says where it was lost and suggests a
   lower sparsity (or more FC bits).

Retraining (`host.train.network`, torch) hands its weights in as `Retrained`: each conv layer's pruned spectrum
replaces the magnitude-pruned one, each Linear's weights and the BIM mask they were trained under replace the float
ones and the mask factored here, and the accuracies it measured (`RETRAINED_STAGES`) come before `compressed`.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from host.compress.model import DEFAULT_PERCENTILE, accuracy, compress_fc, factor_mask, keep_every_row
from host.compress.spectral import calibrate, compress_spatial, layer_from_half
from host.network.ir import Conv2d, Flatten, FloatNetwork, Linear, MaxPool2d, NetworkError, ReLU
from hw.spec.bim import BimMask
from hw.spec.fc import ACT_BITS
from hw.spec.fc_format import DEFAULT_FC_FORMAT, FcFormat
from hw.spec.network import (
    NAME_PATTERN,
    RESERVED_NAMES,
    CompressedNetwork,
    ConvLayer,
    FlattenLayer,
    Layer,
    PoolLayer,
    quantize_input,
    size_report,
    spectral_batch,
)
from hw.spec.pool import max_pool
from hw.spec.spectral.geometry import DEFAULT_N, OaaParams, check_fft_size
from hw.spec.spectral.layer import SpectralLayer
from hw.spec.spectral.operator import spectral_conv_float

__all__ = ["DEFAULT_CONV_SPARSITY", "DEFAULT_FC_SPARSITY", "DEFAULT_CALIBRATION", "LOSS_WARNING",
           "STAGES", "RETRAINED_STAGES", "Step", "Retrained", "CompressionResult", "choose_geometry",
           "engine_geometry", "embed_kernel", "layer_geometry", "plan", "compress_network"]

#: Without retraining pruning costs accuracy fast, FC pruning most on small layers (a BIM mask of one or two tiles
#: keeps whole blocks): docs/formats.md, "Compressed networks", has the measurements behind these.
DEFAULT_CONV_SPARSITY = 0.5
DEFAULT_FC_SPARSITY = 0.25
#: Calibration samples (the first of x_train): enough for a one-parameter fit per layer, few enough to be quick.
DEFAULT_CALIBRATION = 500
#: Accuracy lost between the float and the compressed model above which the result suggests a lower sparsity.
LOSS_WARNING = 0.02
#: The accuracy stages, in order.
STAGES = ("float", "spectral", "pruned", "compressed")
#: The accuracy stages with retraining: `pruned` is then before retraining, `retrained` after it (`Retrained`).
RETRAINED_STAGES = ("float", "spectral", "pruned", "retrained", "compressed")

Progress = Callable[[str], None]


def choose_geometry(k: int, padding: str, n: int | None = None) -> OaaParams:
    """The overlap-add geometry of a k x k conv: FFT size `n`, or the smallest power of two >= max(DEFAULT_N,
    2 (k - 1)); tile L = N - k + 1 (the largest an unpruned kernel allows without wrap-around)."""
    if n is None:
        n = DEFAULT_N
        while n < 2 * (k - 1):
            n *= 2
    n = check_fft_size(n)
    if n < k:
        raise ValueError(f"a {k} x {k} kernel needs an FFT size n >= {k}, got n={n}")
    return OaaParams(n=n, k=k, l=n - k + 1, padding=padding)


def engine_geometry(net: FloatNetwork, n: int | None = None) -> OaaParams | None:
    """The one conv engine geometry of `net` ("same"; None without a Conv2d): K the largest kernel, rounded up to
    odd (the engine's "same" output is then centred on every smaller kernel), N and L by `choose_geometry`."""
    kernels = [layer.k for layer in net.layers if isinstance(layer, Conv2d)]
    if not kernels:
        return None
    k = max(kernels)
    return choose_geometry(k + 1 - k % 2, "same", n)


def embed_kernel(w: np.ndarray, k: int) -> np.ndarray:
    """Kernels (C_out, C_in, k0, k0) in k x k zeros, at (k - 1) // 2 - (k0 - 1) // 2 from the top left: a "same"
    convolution (k0 - 1) // 2 rows and columns of zeros before the map gives then exactly the same output."""
    w = np.asarray(w)
    k0 = w.shape[-1]
    at = (k - 1) // 2 - (k0 - 1) // 2
    if k0 > k or at + k0 > k:
        raise ValueError(f"a {k0} x {k0} kernel does not embed centred in {k} x {k}")
    out = np.zeros((*w.shape[:-2], k, k), dtype=w.dtype)
    out[..., at:at + k0, at:at + k0] = w
    return out


def layer_geometry(conv: Conv2d, engine: OaaParams) -> tuple[OaaParams, np.ndarray]:
    """The geometry and spatial kernels of `conv` on the conv engine of geometry `engine`: "same" (and 1 x 1,
    where "valid" is the same) embedded in the engine's K; "valid" with its own k on the engine's N and L."""
    if conv.padding == "same" or conv.k == 1:
        return dataclasses.replace(engine, padding="same"), embed_kernel(conv.weight, engine.k)
    return OaaParams(n=engine.n, k=conv.k, l=engine.l, padding="valid"), conv.weight


# --- the plan: which compressed layer each float layer becomes ------------------------------------------------


@dataclass
class Step:
    """One layer of the compressed chain: its kind, its (field-safe) name, the float layer it comes from, whether a
    ReLU was fused into it, and the float layer whose output it reproduces (None when a ReLU fused into it sits
    further down the float chain)."""

    kind: str
    name: str
    source: Conv2d | Linear | MaxPool2d | Flatten
    relu: bool = False
    float_name: str | None = None


_KIND = {Conv2d: "conv", MaxPool2d: "pool", Flatten: "flatten", Linear: "fc"}


def _field_name(name: str, taken: set[str]) -> str:
    """`name` made a layer name of the file (`NAME_PATTERN`; '/' and the like become '_'), unique in `taken`."""
    base = re.sub(r"[^A-Za-z0-9_.\-]+", "_", name).strip("_.-") or "layer"
    if not NAME_PATTERN.fullmatch(base) or base in RESERVED_NAMES:
        base = f"layer_{base}"
    out, i = base, 1
    while out in taken:
        i += 1
        out = f"{base}_{i}"
    taken.add(out)
    return out


def plan(net: FloatNetwork) -> list[Step]:
    """The compressed chain of `net`: one step per Conv2d, MaxPool2d, Flatten and Linear, each ReLU fused into the
    Conv2d or Linear before it (NetworkError naming the ReLU when there is none)."""
    steps: list[Step] = []
    taken: set[str] = set()
    for layer in net.layers:
        if isinstance(layer, ReLU):
            weighted = [s for s in steps if s.kind in ("conv", "fc")]
            if not weighted:
                raise NetworkError(f"layer {layer.name!r} (ReLU): sqgen fuses a ReLU into the Conv2d or Linear "
                                   "before it (through max-pools and flattens), and there is none")
            target = weighted[-1]
            target.relu = True
            if target is not steps[-1]:
                target.float_name = None
            steps[-1].float_name = layer.name
            continue
        steps.append(Step(_KIND[type(layer)], _field_name(layer.name, taken), layer, float_name=layer.name))
    return steps


# --- compression ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Retrained:
    """Weights retrained for compression (`host.train.network`), by float layer name: per Conv2d its pruned spectrum
    (C_out, C_in, N, N/2 + 1) at its `layer_geometry` and its bias, per Linear its weight, bias and the BIM mask
    it was trained under; the accuracies measured while training (`RETRAINED_STAGES` but `compressed`), and what
    the model's metadata records of the training (`retrain`: recipe, seconds)."""

    convs: dict[str, tuple[np.ndarray, np.ndarray]]
    fcs: dict[str, tuple[np.ndarray, np.ndarray, BimMask]]
    accuracy: dict[str, float | None] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def check(self, steps: Sequence[Step]) -> None:
        """ValueError naming the first conv or FC layer of `steps` with no retrained weights."""
        for step in steps:
            weights = {"conv": self.convs, "fc": self.fcs}.get(step.kind)
            if weights is not None and step.source.name not in weights:
                raise ValueError(f"layer {step.source.name!r}: no retrained weights (the retrained layers are "
                                 f"{', '.join([*self.convs, *self.fcs]) or 'none'})")


@dataclass
class CompressionResult:
    """The compressed model, its accuracy after each stage (`STAGES`; None without labelled test samples, or when
    the output is not one score per class), and a suggestion when too much was lost (else None)."""

    model: CompressedNetwork
    accuracy: dict[str, float | None] = field(default_factory=dict)
    message: str | None = None


def _input_scale(x: np.ndarray) -> float:
    peak = float(np.abs(np.asarray(x, dtype=np.float64)).max(initial=0.0))
    return float(np.float32(peak / ((1 << (ACT_BITS - 1)) - 1))) if peak > 0 else 1.0


def _batched(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int) -> np.ndarray:
    parts = [run(x[start:start + batch]) for start in range(0, len(x), batch)]
    return np.concatenate(parts) if parts else np.zeros((0,))


def _float_chain(steps: Sequence[Step], convs: dict[str, SpectralLayer],
                 fcs: dict[str, tuple[np.ndarray, np.ndarray]]) -> Callable[[np.ndarray], np.ndarray]:
    """The chain in float64 with these conv layers (float operator, their bias and ReLU) and FC weights."""
    def run(x: np.ndarray) -> np.ndarray:
        h = np.asarray(x, dtype=np.float64)
        for step in steps:
            if step.kind == "conv":
                h = spectral_conv_float(h, convs[step.name])
            elif step.kind == "pool":
                h = max_pool(h)
            elif step.kind == "flatten":
                h = h.reshape(len(h), -1)
            else:
                w, b = fcs[step.name]
                h = h @ w.T.astype(np.float64) + b
                h = np.maximum(h, 0) if step.relu else h
        return h
    return run


def _check_options(conv_sparsity: float, fc_sparsity: float, fc_bits: int, fmt: FcFormat, calibration: int) -> None:
    for name, value in (("conv_sparsity", conv_sparsity), ("fc_sparsity", fc_sparsity)):
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    fmt.xor_params(fc_bits)  # bits within 1..max_planes
    if calibration < 1:
        raise ValueError(f"calibration must be >= 1 sample, got {calibration}")


def advice(acc: dict[str, float | None], conv_sparsity: float, fc_sparsity: float, fc_bits: int, fmt: FcFormat,
           kinds: set[str]) -> str | None:
    """A one-line suggestion when the compressed model is more than LOSS_WARNING below the float one."""
    if acc.get("float") is None or acc.get("compressed") is None:
        return None
    lost = acc["float"] - acc["compressed"]
    if lost <= LOSS_WARNING:
        return None
    # After retraining, what pruning still costs is what the retrained model lacks.
    pruned = acc["retrained"] if acc.get("retrained") is not None else acc["pruned"]
    pruning = acc["spectral"] - pruned
    head = (f"the compressed model loses {100 * lost:.1f} points ({100 * acc['float']:.1f} % -> "
            f"{100 * acc['compressed']:.1f} %)")
    if pruning >= lost / 2:
        lower = [f"{name} {value:g} -> {value / 2:g}" for name, value, kind in
                 (("conv_sparsity", conv_sparsity, "conv"), ("fc_sparsity", fc_sparsity, "fc"))
                 if kind in kinds and value > 0]
        return f"{head}, {100 * pruning:.1f} of them to pruning: try a lower sparsity ({', '.join(lower)})"
    more = f"; try fc_bits {fc_bits + 1}" if "fc" in kinds and fc_bits < fmt.max_planes else ""
    return (f"{head}, {100 * max(pruning, 0):.1f} of them to pruning and the rest to quantization{more}, or a "
            "lower sparsity")


def compress_network(net: FloatNetwork, x_train: np.ndarray, x_test: np.ndarray | None = None,
                     y_test: np.ndarray | None = None, *, conv_sparsity: float = DEFAULT_CONV_SPARSITY,
                     fc_sparsity: float = DEFAULT_FC_SPARSITY, fc_bits: int | None = None,
                     fmt: FcFormat = DEFAULT_FC_FORMAT, fft_size: int | None = None, p: int = 4, b: int | None = None,
                     calibration: int = DEFAULT_CALIBRATION, percentile: float = DEFAULT_PERCENTILE, seed: int = 0,
                     name: str = "", dataset: str = "", progress: Progress | None = None,
                     retrained: Retrained | None = None) -> CompressionResult:
    """`net` compressed after training (module docstring): calibrated on the first `calibration` samples of
    x_train (N, *input_shape), evaluated on (x_test, y_test) when given. Every conv layer runs on one engine
    geometry (`engine_geometry`; `fft_size` fixes its N, by default the largest kernel's); p, b: the conv
    engine's lanes and banks (b defaults to 2 p); fc_bits: binary-coding planes (default the format's max_planes:
    without retraining one plane loses much); `retrained`: weights and masks retrained for these options, used
    instead of pruning the float ones."""
    started = time.perf_counter()
    say = progress or (lambda message: None)
    fc_bits = fmt.max_planes if fc_bits is None else fc_bits
    _check_options(conv_sparsity, fc_sparsity, fc_bits, fmt, calibration)
    x_train = np.asarray(x_train)
    if x_train.dtype.kind not in "fiu" or x_train.shape[1:] != net.input_shape or len(x_train) == 0:
        raise ValueError(f"x_train must be real samples (N >= 1, {', '.join(map(str, net.input_shape))}), got "
                         f"{x_train.dtype} {x_train.shape}")
    steps = plan(net)
    if retrained is not None:
        retrained.check(steps)
    last_fc = steps[-1].name if steps[-1].kind == "fc" else None
    samples = x_train[:calibration]
    input_scale = _input_scale(samples)
    h = quantize_input(samples, input_scale)
    scale = input_scale
    layers: list[Layer] = []
    unpruned: dict[str, SpectralLayer] = {}
    pruned_fc: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    source_fc: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    geometry: dict[str, list[int]] = {}
    engine = engine_geometry(net, fft_size)
    for step in steps:
        src = step.source
        if step.kind == "conv":
            oaa, weight = layer_geometry(src, engine)
            geometry[step.name] = [oaa.n, oaa.k, oaa.l]
            embedded = f", embedded in {oaa.k} x {oaa.k}" if oaa.k != src.k else ""
            say(f"{step.name}: {src.c_in} -> {src.c_out} channels, k={src.k} {src.padding}{embedded}, spectral "
                f"N={oaa.n} L={oaa.l}, {conv_sparsity:g} of the bins pruned")
            if retrained is None:
                unpruned[step.name] = compress_spatial(weight, oaa, 0.0, p, b, src.bias, step.relu)
                spectral = compress_spatial(weight, oaa, conv_sparsity, p, b, src.bias, step.relu)
            else:
                half, bias = retrained.convs[src.name]
                spectral = layer_from_half(half, oaa, p, b, bias, step.relu)
            spectral = calibrate(spectral, h, scale, batch=spectral_batch(spectral, *h.shape[-2:]))
            layer: Layer = ConvLayer(step.name, spectral)
        elif step.kind == "fc":
            w, bias = src.weight, src.bias
            say(f"{step.name}: {w.shape[0]} x {w.shape[1]}, BIM mask at sparsity {fc_sparsity:g} (tile "
                f"{fmt.m_t}x{fmt.n_t}, rank {fmt.r}), {fc_bits}-bit binary coding, XOR encoding")
            if retrained is None:
                bim = factor_mask(w, fc_sparsity, fmt, seed)
                bim = keep_every_row(bim, w) if step.name == last_fc else bim
            else:
                w, bias, bim = retrained.fcs[src.name]
            source_fc[step.name] = (w, bias)
            pruned_fc[step.name] = (np.where(bim.mask(), w, 0).astype(np.float32), bias)
            layer = compress_fc(step.name, w, bias, bim, h, scale, fmt=fmt, bits=fc_bits, relu=step.relu,
                                percentile=percentile)
        elif step.kind == "pool":
            layer = PoolLayer(step.name)
        else:
            layer = FlattenLayer(step.name)
        layers.append(layer)
        step_batch = spectral_batch(layer.spectral, *h.shape[-2:]) if isinstance(layer, ConvLayer) else max(1, len(h))
        h = _batched(layer.forward, h, step_batch)
        scale = getattr(layer, "out_scale", scale)
    model = CompressedNetwork(input_shape=net.input_shape, input_scale=input_scale, layers=tuple(layers), fmt=fmt)

    acc: dict[str, float | None] = dict.fromkeys(STAGES if retrained is None else RETRAINED_STAGES)
    if retrained is not None:
        acc.update((stage, value) for stage, value in retrained.accuracy.items() if stage in acc)
    classes = len(model.output_shape) == 1
    if x_test is not None and y_test is not None and classes and len(y_test):
        batch = model.batch_size()
        x_test = np.asarray(x_test)
        pruned_conv = {layer.name: layer.spectral for layer in model.conv_layers()}
        runs = {"float": lambda x: net.forward(x.astype(np.float64)),
                "spectral": _float_chain(steps, unpruned, source_fc),
                "pruned": _float_chain(steps, pruned_conv, pruned_fc)} if retrained is None else {}
        for stage, run in runs.items():
            acc[stage] = accuracy(_batched(run, x_test, batch), y_test)
            say(f"accuracy {stage}: {100 * acc[stage]:.1f} %")
        acc["compressed"] = accuracy(model.forward(model.quantize(x_test), batch=batch)[model.names[-1]], y_test)
        say(f"accuracy compressed (golden fixed point): {100 * acc['compressed']:.1f} %")
    kinds = {step.kind for step in steps}
    message = advice(acc, conv_sparsity, fc_sparsity, fc_bits, fmt, kinds)
    fc_layers = model.fc_layers()
    metadata: dict[str, Any] = {
        "name": name, "dataset": dataset, "accuracy": acc,
        "test_samples": 0 if y_test is None else len(y_test), "calibration_samples": len(samples),
        "conv_sparsity_target": conv_sparsity,
        "conv_sparsity": {layer.name: round(1 - layer.spectral.density(), 6) for layer in model.conv_layers()},
        "conv_engine": None if engine is None else [engine.n, engine.k, engine.l],
        "conv_kernels": {step.name: step.source.k for step in steps if step.kind == "conv"},
        "conv_geometry": geometry,
        "conv_schedule": {layer.name: [layer.spectral.schedule.p, layer.spectral.schedule.b]
                          for layer in model.conv_layers()},
        "fc_sparsity_target": fc_sparsity,
        "fc_sparsity": {layer.name: round(1 - float(layer.keep.mean()), 6) for layer in fc_layers},
        "fc_bits": fc_bits, "calibration_percentile": percentile, "bim_seed": seed,
        "float_layers": {step.name: step.float_name for step in steps},
        "sizes": size_report(fc_layers) if fc_layers else {},
        "compress_seconds": round(time.perf_counter() - started, 3),
    }
    if retrained is not None:
        metadata["retrain"] = retrained.info
    model = CompressedNetwork(input_shape=model.input_shape, input_scale=model.input_scale, layers=model.layers,
                              fmt=fmt, metadata=metadata)
    return CompressionResult(model=model, accuracy=acc, message=message)

