"""Run the accelerator's LeNet-5 (`models/lenet5_full.npz`) on a backend chosen by URL.

    from host.infer import load_model, open_backend
    with open_backend("tcp://127.0.0.1:4567", load_model("models/lenet5_full.npz")) as session:
        result = session.run(images)                 # result.logits (N, 10) int8, result.predictions (N,)
        trace = session.run(images, trace=True).layers   # conv1, pool1, conv2, pool2, fc1, fc2, fc3
        session.cycles                               # the device's RUN cycles, one per image run so far

Backends: `golden` (the NumPy golden models end to end), `tcp://HOST:PORT` (the virtual board of
`python -m sim.server --config lenet5`) and `serial://DEVICE[?baud=N]` (a board). All three take the same
input and give the same integers.

Input: (N, 1, 28, 28) float images in [0, 1] (quantized here as the model's input_scale says), or int8 codes
(N, 1, 28, 28) or one (1, 28, 28) image, passed as they are. `golden` computes each layer with the bit-exact
golden model (spectral fixed-point conv, integer max-pool, `hw.spec.fc.fc_fixed`).

A device backend (`DeviceBackend`) reads INFO on open and refuses, before sending anything, a model the device
cannot run (`ConfigMismatch`, one line saying what differs); it LOADs the weights and the program once, then per
image LOADs the input into the source buffer, RUNs the whole program and READs the logits. With `trace` it RUNs
the layers one by one and READs each output; the unpooled conv1 and conv2 come from two extra descriptors (the
same conv layers with the pool off, appended to the program). A command the device refuses raises
`host.device.DeviceError` and leaves the session usable: every image reloads its input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import numpy as np

from host.accel import AccelInfo, Packed, input_bytes, load_packed, output_array, pack_model
from host.lenet5.compressed import CompressedLeNet5, FcFormatMismatch, ModelFormatError
from host.lenet5.compressed import load_model as _load_model
from host.lenet5.net import BATCH, IMAGE_SHAPE, quantize_input
from hw.spec.fc_format import DEFAULT_FC_FORMAT, FcFormat
from hw.spec.fields import unpack_fields
from hw.spec.pool import max_pool
from hw.spec.spectral.fixed import spectral_conv_fixed

__all__ = ["LAYERS", "BACKENDS", "Backend", "GoldenBackend", "DeviceBackend", "DevicePlan", "TraceStep",
           "RunResult", "Session", "ConfigMismatch", "SessionOrderError", "compare_traces", "load_model",
           "open_backend", "plan_device", "dense_weights", "FcFormatMismatch", "ModelFormatError"]

#: Every layer output a trace holds, in order.
LAYERS = ("conv1", "pool1", "conv2", "pool2", "fc1", "fc2", "fc3")
#: URL schemes `open_backend` knows.
BACKENDS = ("golden", "tcp", "serial")
#: Seconds to wait for one answer: a RUN on the virtual board simulates some 50 000 cycles at a few thousand
#: cycles per second, on a board it takes milliseconds.
DEFAULT_TIMEOUT = {"tcp": 600.0, "serial": 10.0}
#: The pooled conv layers a trace also needs unpooled: (pooled layer, unpooled layer).
UNPOOLED = {"pool1": "conv1", "pool2": "conv2"}


class ConfigMismatch(ValueError):
    """The model cannot run on this device (its INFO says otherwise); the one-line message says what differs."""


class SessionOrderError(RuntimeError):
    """A command out of order: running before the weights are loaded, or after the session is closed."""


def load_model(path: str | Path, expected: FcFormat | None = DEFAULT_FC_FORMAT) -> CompressedLeNet5:
    """Read and check a model file (`host.lenet5.compressed.load_model`): ModelFormatError naming the field, or
    FcFormatMismatch when the file was compressed for another FC engine than `expected` (None: any)."""
    return _load_model(path, expected)


def dense_weights(model: CompressedLeNet5) -> dict[str, int]:
    """Weights each layer applies per image, counted dense (conv C_out C_in K^2, FC rows cols), and their "all"."""
    out = {f"conv{i}": conv.c_out * conv.c_in * conv.oaa.k ** 2 for i, conv in enumerate(model.convs(), start=1)}
    out.update({layer.name: layer.shape[0] * layer.shape[1] for layer in model.fc})
    out["all"] = sum(out.values())
    return out


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
    """What `Session.run` returns: int8 logits (N, 10), predictions (N,), every layer when traced, and on a
    device the cycles each image's RUN took (N,)."""

    logits: np.ndarray
    predictions: np.ndarray
    layers: dict[str, np.ndarray] | None = None
    cycles: np.ndarray | None = None


class Backend(Protocol):
    """Something that runs the model on int8 codes: the golden models, a virtual board, a real board."""

    name: str

    def run_layers(self, codes: np.ndarray, trace: bool) -> tuple[dict[str, np.ndarray], list[int] | None]:
        """int64 codes (N, 1, 28, 28) -> ({"fc3": logits} and, with trace, every layer of LAYERS as integer
        codes; the device cycles per image, or None)."""
        ...

    def close(self) -> None:
        """Release the device or connection."""
        ...


class GoldenBackend:
    """The NumPy golden models end to end: spectral fixed-point conv, integer max-pool, `fc_fixed`."""

    name = "golden"

    def __init__(self, model: CompressedLeNet5):
        self.model = model

    def run_layers(self, codes: np.ndarray, trace: bool) -> tuple[dict[str, np.ndarray], None]:
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
                for name, v in parts.items() if trace or name == "fc3"}, None

    def close(self) -> None:
        """Nothing to release."""


# --- the device backend ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceStep:
    """One RUN of a traced image: descriptor `word` alone, then READ `layer`'s output (`shape`) from `buffer`.
    `counted`: the descriptor belongs to the inference program, so its cycles are the image's."""

    layer: str
    word: int
    buffer: int
    shape: tuple[int, ...]
    counted: bool


@dataclass(frozen=True)
class DevicePlan:
    """The model laid out on one device: `packed` (`host.accel.pack_model`: regions, program, output buffers),
    the extra descriptors traces need (program words from `trace_first`), and the trace's RUN/READ steps.
    `trace_problem` says why the device cannot trace (None when it can)."""

    accel: AccelInfo
    packed: Packed
    trace_words: tuple[int, ...]
    trace_first: int
    trace: tuple[TraceStep, ...]
    trace_problem: str | None = None


def _unpooled_word(accel: AccelInfo, word: int, pooled_shape: tuple[int, ...], layer: str) -> tuple[int, tuple]:
    """The descriptor `word` of a pooled conv layer with the pool off: same weights, source and window; the output
    is the cropped map. ValueError when that map does not fit an activation buffer."""
    fields = unpack_fields(accel.descriptor, word)
    shape = (int(pooled_shape[0]), fields["post.height"], fields["post.width"])
    count = int(np.prod(shape))
    if count > accel.act_depth:
        raise ValueError(f"a trace needs {layer}'s unpooled output ({count} values) in one activation buffer, the "
                         f"device's hold {accel.act_depth}")
    return accel.pack_descriptor({**fields, "post.pool": 0, "out_count": count}), shape


def plan_device(info: Mapping[str, Any], model: CompressedLeNet5) -> DevicePlan:
    """Lay `model` out on the device INFO describes; ConfigMismatch (one line) when the device cannot run it."""
    try:
        accel = AccelInfo.from_info(info)
        packed = pack_model(accel, model)
    except (ValueError, KeyError) as error:
        raise ConfigMismatch(f"model file for another configuration: {error}") from None
    trace_first = packed.first + len(packed.program)
    words: list[int] = []
    steps: list[TraceStep] = []
    problem = None
    for i, out in enumerate(packed.layers):
        if out.name in UNPOOLED and problem is None:
            try:
                word, shape = _unpooled_word(accel, packed.program[i], out.shape, UNPOOLED[out.name])
                steps.append(TraceStep(UNPOOLED[out.name], trace_first + len(words), out.buffer, shape, False))
                words.append(word)
            except ValueError as error:
                problem = str(error)
        steps.append(TraceStep(out.name, packed.first + i, out.buffer, tuple(out.shape), True))
    depth = accel.regions["program"].depth
    if problem is None and trace_first + len(words) > depth:
        problem = (f"a trace needs {trace_first + len(words)} program words (the {len(words)} unpooled conv layers "
                   f"after the program), the device holds {depth}")
    if [s.layer for s in steps] != list(LAYERS) and problem is None:
        problem = f"the packed program's layers {[s.layer for s in steps]} are not {list(LAYERS)}"
    return DevicePlan(accel, packed, tuple(words), trace_first, tuple(steps), problem)


class DeviceBackend:
    """The model on an sqgen device (`host.device.Device`, or anything with its info/load/run/read): checks the
    model against INFO, LOADs weights and program once (`load`), then runs images; keeps the device's cycles."""

    def __init__(self, device: Any, model: CompressedLeNet5, *, name: str = "device", load: bool = True):
        self.device = device
        self.model = model
        self.name = name
        self.info = device.info()
        self.plan = plan_device(self.info, model)
        self.loaded = False
        self.closed = False
        if load:
            self.load()

    def load(self) -> None:
        """LOAD every weight region and the program (and the trace's extra descriptors)."""
        self._check_open()
        self.loaded = False  # a LOAD refused half way leaves the device with part of the model
        load_packed(self.device, self.plan.packed)
        if self.plan.trace_words:
            program = self.plan.accel.regions["program"]
            self.device.load(program.id, self.plan.trace_first,
                             self.plan.accel.region_bytes("program", self.plan.trace_words))
        self.loaded = True

    def _check_open(self) -> None:
        if self.closed:
            raise SessionOrderError(f"the session on {self.name} is closed")

    def run_layers(self, codes: np.ndarray, trace: bool) -> tuple[dict[str, np.ndarray], list[int]]:
        """Each image: LOAD it, RUN (the whole program, or layer by layer with `trace`), READ; int64 outputs."""
        self._check_open()
        if not self.loaded:
            raise SessionOrderError(f"run before load: {self.name} holds no weights for this session yet "
                                    "(call load() first)")
        if trace and self.plan.trace_problem:
            raise ConfigMismatch(f"cannot trace on {self.name}: {self.plan.trace_problem}")
        codes = np.asarray(codes)
        packed = self.plan.packed
        if codes.ndim != 4 or codes.shape[1:] != packed.input_shape:
            raise ValueError(f"codes must have shape (N, {', '.join(map(str, packed.input_shape))}), got {codes.shape}")
        names = LAYERS if trace else ("fc3",)
        outs: dict[str, list[np.ndarray]] = {name: [] for name in names}
        cycles = []
        in_region = self.plan.accel.regions[("act0", "act1")[packed.input_buffer]].id
        for x in codes:
            data = input_bytes(x)  # checks the int8 range before anything is sent
            self.device.load(in_region, 0, data)
            if trace:
                total = 0
                for step in self.plan.trace:
                    spent = self.device.run(step.word, 1)
                    total += spent if step.counted else 0
                    outs[step.layer].append(self._read(step.buffer, step.shape))
                cycles.append(total)
            else:
                cycles.append(self.device.run(packed.first, len(packed.program)))
                last = packed.layers[-1]
                outs["fc3"].append(self._read(last.buffer, last.shape))
        return {name: np.stack(v) if v else np.zeros((0, *self._shape(name)), dtype=np.int64)
                for name, v in outs.items()}, cycles

    def _read(self, buffer: int, shape: tuple[int, ...]) -> np.ndarray:
        return output_array(self.device.read(buffer, 0, int(np.prod(shape))), shape)

    def _shape(self, layer: str) -> tuple[int, ...]:
        return next(step.shape for step in self.plan.trace if step.layer == layer)

    def close(self) -> None:
        """Close the device connection (idempotent)."""
        if not self.closed:
            self.closed = True
            self.device.close()


class Session:
    """A model on a backend: `run` checks and quantizes the input and returns logits and predictions; `cycles`
    holds the device's RUN cycles of every image run so far (empty on the golden backend)."""

    def __init__(self, backend: Backend, model: CompressedLeNet5):
        self.backend = backend
        self.model = model
        self.cycles: list[int] = []

    @property
    def cycles_per_image(self) -> float | None:
        """Mean RUN cycles per image over the images run so far; None before any (or on golden)."""
        return float(np.mean(self.cycles)) if self.cycles else None

    def run(self, x: np.ndarray, trace: bool = False) -> RunResult:
        """Images (module docstring) -> RunResult with int8 logits (N, 10) and predictions; every layer if trace."""
        codes = as_codes(x, self.model.input_scale)
        layers, cycles = self.backend.run_layers(codes, trace)
        if cycles is not None:
            self.cycles.extend(cycles)
        logits = layers["fc3"].astype(np.int8)
        return RunResult(logits=logits, predictions=logits.argmax(axis=1),
                         layers={k: layers[k] for k in LAYERS} if trace else None,
                         cycles=None if cycles is None else np.asarray(cycles, dtype=np.int64))

    def close(self) -> None:
        """Close the backend."""
        self.backend.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def backend_scheme(url: str) -> str:
    """The scheme of a backend URL: golden, tcp or serial; ValueError for anything else."""
    scheme = urlparse(url).scheme or url.rstrip(":/")
    if scheme not in BACKENDS:
        raise ValueError(f"unknown backend {url!r}: expected golden, tcp://HOST:PORT or serial://DEVICE[?baud=N]")
    return scheme


def open_backend(url: str, model: CompressedLeNet5, timeout: float | None = None) -> Session:
    """A Session on the backend `url` names: "golden" (or "golden://"), "tcp://HOST:PORT" or "serial://DEVICE";
    a device backend checks the model against INFO and loads it (`timeout`: seconds per answer)."""
    scheme = backend_scheme(url)
    if scheme == "golden":
        return Session(GoldenBackend(model), model)
    from host.device import Device  # the golden backend needs no transport

    device = Device.open(url, DEFAULT_TIMEOUT[scheme] if timeout is None else timeout)
    try:
        return Session(DeviceBackend(device, model, name=url), model)
    except BaseException:
        device.close()
        raise


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
