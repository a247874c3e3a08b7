"""Run a compressed model on a backend chosen by URL: the accelerator's LeNet-5 (`models/lenet5_full.npz`) or any
compressed network (`python -m host.compress model --from ...`).

    from host.infer import load_model, open_backend
    with open_backend("tcp://127.0.0.1:4567", load_model("models/lenet5_full.npz")) as session:
        result = session.run(images)                 # result.logits (N, 10) int8, result.predictions (N,)
        trace = session.run(images, trace=True).layers   # conv1, pool1, conv2, pool2, fc1, fc2, fc3
        session.cycles                               # the device's RUN cycles, one per image run so far

`load_model` reads either file by its `format` field: `sqgen-lenet5-full` (a `CompressedLeNet5`) or `sqgen-net`
(a `hw.spec.network.CompressedNetwork`); the backends run both as a `CompressedNetwork` (`as_network`). A trace
holds every layer's output by the model's layer names, flattens left out (they are the layer before's codes,
reshaped; `trace_names`).

Backends: `golden` (the NumPy golden models end to end), `tcp://HOST:PORT` (the virtual board of
`python -m sim.server --config lenet5`) and `serial://DEVICE[?baud=N]` (a board). All three take the same
input and give the same integers.

Input: float samples (N, *input_shape) (quantized here as the model's input_scale says; LeNet-5's images must be
in [0, 1]), or int8 codes (N, *input_shape) or one sample, passed as they are. `golden` computes each layer with
the bit-exact golden model (spectral fixed-point conv, integer max-pool, `hw.spec.fc.fc_fixed`).

A device backend (`DeviceBackend`) reads INFO on open and refuses, before sending anything, a model the device
cannot run (`ConfigMismatch`, one line saying what differs); it LOADs the weights and the program once
(`host.accel.pack_network`: a conv layer with the pool after it is one descriptor, a flatten none), then per image
LOADs the input into the source buffer, RUNs the whole program and READs the last layer's output (an FC layer run
in passes, `host.accel.run_layers`, with a RUN per pass and its rows moved by the host). With `trace` it
RUNs the layers one by one and READs each output; a pooled conv layer's unpooled output comes from an extra
descriptor (the same conv layer with the pool off, appended to the program). A command the device refuses raises
`host.device.DeviceError` and leaves the session usable: every image reloads its input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import numpy as np

from host.accel import AccelInfo, Packed, input_bytes, load_packed, output_array, pack_network, run_layers
from host.datasets import NAMED, DatasetError, as_input, load_dataset
from host.lenet5 import compressed as lenet5_file
from host.lenet5.compressed import CompressedLeNet5, FcFormatMismatch, ModelFormatError, to_network
from host.lenet5.net import IMAGE_SHAPE
from hw.spec import network as network_file
from hw.spec.fc_format import DEFAULT_FC_FORMAT, FcFormat
from hw.spec.fields import unpack_fields
from hw.spec.network import CompressedNetwork, ConvLayer, FlattenLayer, quantize_input, scalar_field, size_report
from hw.spec.npzfile import read_npz

__all__ = ["LAYERS", "BACKENDS", "Backend", "GoldenBackend", "DeviceBackend", "DevicePlan", "TraceStep",
           "RunResult", "Session", "ConfigMismatch", "SessionOrderError", "Model", "compare_traces", "load_model",
           "as_network", "trace_names", "stored_accuracy", "test_split", "layer_sizes", "open_backend", "plan_device",
           "dense_weights", "FcFormatMismatch", "ModelFormatError"]

#: Every layer output a LeNet-5 trace holds, in order.
LAYERS = ("conv1", "pool1", "conv2", "pool2", "fc1", "fc2", "fc3")
#: A model file's contents: the compressed LeNet-5 or any compressed network.
Model = CompressedLeNet5 | CompressedNetwork
#: The model file formats `load_model` reads, by their `format` field.
FORMATS = {lenet5_file.FORMAT: lenet5_file.model_from_fields, network_file.FORMAT: network_file.model_from_fields}
#: Bits of one stored spectral entry: its uint16 canonical index and int16 re and im.
SPECTRAL_ENTRY_BITS = 48
#: Descriptor fields that count a layer's words per region.
REGION_COUNTS = {"conv.w": "conv.w_count", "conv.quant": "conv.quant_count", "fc.xor": "fc.xor_count",
                 "fc.bim": "fc.bim_count", "fc.scale": "fc.scale_count"}
#: URL schemes `open_backend` knows.
BACKENDS = ("golden", "tcp", "serial")
#: Seconds to wait for one answer: a RUN on the virtual board simulates some 50 000 cycles at a few thousand
#: cycles per second, on a board it takes milliseconds.
DEFAULT_TIMEOUT = {"tcp": 600.0, "serial": 10.0}


class ConfigMismatch(ValueError):
    """The model cannot run on this device (its INFO says otherwise); the one-line message says what differs."""


class SessionOrderError(RuntimeError):
    """A command out of order: running before the weights are loaded, or after the session is closed."""


def load_model(path: str | Path, expected: FcFormat | None = DEFAULT_FC_FORMAT) -> Model:
    """Read and check a model file, by its `format` field a `CompressedLeNet5` (`host.lenet5.compressed`) or a
    `CompressedNetwork` (`hw.spec.network`): ModelFormatError naming the field, or FcFormatMismatch when the file
    was compressed for another FC engine than `expected` (None: any)."""
    raw = read_npz(path, ModelFormatError)
    try:
        kind = scalar_field(raw, "format", "str")
        if kind not in FORMATS:
            raise network_file.field_error("format", f"expected {' or '.join(map(repr, FORMATS))}, got {kind!r}")
        return FORMATS[kind](raw, expected)
    except FcFormatMismatch as error:
        raise FcFormatMismatch(f"{path}: {error}") from None
    except ModelFormatError as error:
        raise ModelFormatError(f"{path}: {error}") from None


def as_network(model: Model) -> CompressedNetwork:
    """The model as a `CompressedNetwork` (the LeNet-5 by `to_network`: conv1, pool1, conv2, pool2, flatten, fc1,
    fc2, fc3)."""
    return model if isinstance(model, CompressedNetwork) else to_network(model)


def trace_names(net: CompressedNetwork) -> tuple[str, ...]:
    """The layers a trace holds, in order: all but the flattens (their codes are the layer before's, reshaped)."""
    return tuple(layer.name for layer in net.layers if not isinstance(layer, FlattenLayer))


def stored_accuracy(model: Model) -> dict[str, float | None]:
    """The test accuracies a model file stores: `float` (LeNet-5: float32 FC layers) and `compressed` (the golden
    fixed-point model), None where the file has none."""
    if isinstance(model, CompressedLeNet5):
        stored = model.metadata.get("test_accuracy", {})
        return {"float": stored.get("float_fc"), "compressed": stored.get("golden_fixed")}
    stored = model.metadata.get("accuracy") or {}
    return {"float": stored.get("float"), "compressed": stored.get("compressed")}


def test_split(model: Model, spec: str | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """The test samples (shaped as the model takes them) and labels to run `model` on, and the data's name: the
    dataset `spec` names (`host.datasets.load_dataset`), by default the LeNet-5's MNIST or the dataset a network's
    file names (a name, or a .npz that is there). Samples of a network of (features,) inputs are flattened
    channel-major. ValueError (one line) when there is no dataset or it does not fit."""
    if spec is None:
        spec = "mnist" if isinstance(model, CompressedLeNet5) else model.metadata.get("dataset")
        if spec not in NAMED and not (str(spec).lower().endswith(".npz") and Path(str(spec)).is_file()):
            raise ValueError(f"--data: the model file names no dataset sqgen knows ({spec!r}); give --data "
                             f"{' | '.join(NAMED)} | PATH.npz")
    data = load_dataset(spec)
    try:
        x = as_input(data.x_test, as_network(model).input_shape, data.name)
    except DatasetError as error:
        raise ValueError(f"--data: {error}") from None
    return x, data.y_test, data.name


def layer_sizes(model: Model, plan: DevicePlan | None = None) -> dict[str, dict[str, Any]]:
    """Per conv and FC layer, and in "all": the weights it applies counted dense (`dense_weights`), the bits its
    compressed format stores (conv: SPECTRAL_ENTRY_BITS per spectral entry, its schedule and constants apart; FC:
    `size_report`'s total, XOR payload, BIM index, a and bias_q) and, on a device (`plan`), the bits of its words in
    the device's regions (beats x region width, the program apart), each also per weight."""
    net = as_network(model)
    weights = net.dense_weights()
    fc = size_report(net.fc_layers())
    out: dict[str, dict[str, Any]] = {}
    for layer in net.layers:
        if isinstance(layer, ConvLayer):
            bits = SPECTRAL_ENTRY_BITS * layer.spectral.nnz
        elif layer.name in fc:
            bits = fc[layer.name]["bits"]["total"]
        else:
            continue
        out[layer.name] = {"kind": layer.kind, "weights": weights[layer.name], "format_bits": bits,
                           "format_bits_per_weight": round(bits / weights[layer.name], 4)}
    parts = ["format_bits"]
    if plan is not None:
        parts.append("device_bits")
        regions = plan.accel.regions
        for name, word in zip(plan.weights_of, plan.packed.program):
            fields = unpack_fields(plan.accel.descriptor, word)
            by_region = {region: fields[count] * regions[region].width for region, count in REGION_COUNTS.items()
                         if fields.get(count)}
            device = sum(by_region.values())
            out[name].update(device_bits=device, device_bits_by_region=by_region,
                             device_bits_per_weight=round(device / out[name]["weights"], 4))
    total = sum(entry["weights"] for entry in out.values())
    out["all"] = {"weights": total}
    for part in parts:
        bits = sum(entry[part] for name, entry in out.items() if name != "all")
        out["all"].update({part: bits, f"{part}_per_weight": round(bits / total, 4) if total else None})
    if plan is not None:
        out["all"]["program_bits"] = len(plan.packed.program) * plan.accel.regions["program"].width
    return out


def dense_weights(model: Model) -> dict[str, int]:
    """Weights each layer applies per image, counted dense (conv C_out C_in K^2, FC rows cols), and their "all"."""
    return as_network(model).dense_weights()


def as_codes(x: np.ndarray, input_scale: float, shape: tuple[int, ...] = IMAGE_SHAPE,
             unit_range: bool = True) -> np.ndarray:
    """(N, *shape) float samples (in [0, 1] with `unit_range`) or int8 codes, or one (*shape) int8 sample -> int64
    codes (N, *shape).

    ValueError (one line naming the expected shape and dtype) for anything else.
    """
    x = np.asarray(x)
    dims = ", ".join(map(str, shape))
    noun = "images" if len(shape) == 3 else "samples"
    in_range = " in [0, 1]" if unit_range else ""
    if x.dtype == np.int8:
        if x.shape == shape:
            x = x[None]
        if x.ndim != len(shape) + 1 or x.shape[1:] != shape:
            raise ValueError(f"int8 codes must have shape (N, {dims}) or ({dims}{',' * (len(shape) == 1)}), got "
                             f"{x.shape}")
        return x.astype(np.int64)
    if x.dtype.kind == "f":
        if x.ndim != len(shape) + 1 or x.shape[1:] != shape:
            with_range = " with values in [0, 1]" if unit_range else ""
            raise ValueError(f"float {noun} must have shape (N, {dims}){with_range}, got {x.shape}")
        if not np.isfinite(x).all() or unit_range and (x.min(initial=0) < 0 or x.max(initial=0) > 1):
            raise ValueError(f"float {noun} must have values{in_range} (finite)")
        return quantize_input(x, input_scale)
    raise ValueError(f"expected float {noun} (N, {dims}){in_range} or int8 codes (N, {dims}), got dtype {x.dtype}")


@dataclass
class RunResult:
    """What `Session.run` returns: the last layer's int8 codes (N, *output_shape; LeNet-5's logits (N, 10)),
    predictions (N,), every layer when traced, and on a device the cycles each image's RUN took (N,)."""

    logits: np.ndarray
    predictions: np.ndarray
    layers: dict[str, np.ndarray] | None = None
    cycles: np.ndarray | None = None


class Backend(Protocol):
    """Something that runs the model on int8 codes: the golden models, a virtual board, a real board."""

    name: str

    def run_layers(self, codes: np.ndarray, trace: bool) -> tuple[dict[str, np.ndarray], list[int] | None]:
        """int64 codes (N, *input_shape) -> (the last layer's codes by its name and, with trace, every layer of
        `trace_names` as integer codes; the device cycles per image, or None)."""
        ...

    def close(self) -> None:
        """Release the device or connection."""
        ...


class GoldenBackend:
    """The NumPy golden models end to end (`CompressedNetwork.forward`): spectral fixed-point conv, integer
    max-pool, `fc_fixed`."""

    name = "golden"

    def __init__(self, model: Model):
        self.model = model
        self.net = as_network(model)

    def run_layers(self, codes: np.ndarray, trace: bool) -> tuple[dict[str, np.ndarray], None]:
        """The int64 output codes of every layer of `trace_names` for int64 codes (N, *input_shape), and the last
        layer's; only the last unless `trace`."""
        out = self.net.forward(codes, trace=trace)
        output = self.net.names[-1]
        wanted = (*trace_names(self.net), output) if trace else (output,)
        return {name: out[name] for name in dict.fromkeys(wanted)}, None

    def close(self) -> None:
        """Nothing to release."""


# --- the device backend ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceStep:
    """One RUN of a traced image: descriptor `word` alone, then READ `layer`'s output (`shape`) from `buffer`.
    `counted`: the descriptor belongs to the inference program, so its cycles are the image's. `cycles`: what the
    engine's cycle model expects of it (RUN's wait). `passes`: the program layer's index when it runs in passes
    (`host.accel.run_layers` runs it instead of `word` alone)."""

    layer: str
    word: int
    buffer: int
    shape: tuple[int, ...]
    counted: bool
    cycles: int = 0
    passes: int | None = None


@dataclass(frozen=True)
class DevicePlan:
    """The model laid out on one device: `packed` (`host.accel.pack_network`: regions, program, output buffers),
    the extra descriptors traces need (program words from `trace_first`), and the trace's RUN/READ steps.
    `trace_problem` says why the device cannot trace (None when it can); `net` is the model as a network and
    `weights_of`, per program word, the model layer whose weights it holds (a pooled conv layer's conv)."""

    accel: AccelInfo
    packed: Packed
    trace_words: tuple[int, ...]
    trace_first: int
    trace: tuple[TraceStep, ...]
    trace_problem: str | None = None
    net: CompressedNetwork | None = None
    weights_of: tuple[str, ...] = ()


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


def plan_device(info: Mapping[str, Any], model: Model) -> DevicePlan:
    """Lay `model` out on the device INFO describes; ConfigMismatch (one line) when the device cannot run it."""
    net = as_network(model)
    try:
        accel = AccelInfo.from_info(info)
        packed = pack_network(accel, net)
    except (ValueError, KeyError) as error:
        raise ConfigMismatch(f"model file for another configuration: {error}") from None
    trace_first = packed.first + len(packed.program)
    words: list[int] = []
    steps: list[TraceStep] = []
    weights_of: list[str] = []
    problem = None
    for i, out in enumerate(packed.layers):
        pooled = unpack_fields(accel.descriptor, packed.program[out.word]).get("post.pool", 0)
        conv = net.names[net.names.index(out.name) - 1] if pooled else None
        weights_of.append(conv or out.name)
        if conv is not None and problem is None:
            try:
                word, shape = _unpooled_word(accel, packed.program[out.word], out.shape, conv)
                steps.append(TraceStep(conv, trace_first + len(words), out.buffer, shape, False, out.first_cycles))
                words.append(word)
            except ValueError as error:
                problem = str(error)
        steps.append(TraceStep(out.name, packed.first + out.word, out.buffer, tuple(out.shape), True, out.first_cycles,
                               i if out.passes else None))
    depth = accel.regions["program"].depth
    if problem is None and trace_first + len(words) > depth:
        problem = (f"a trace needs {trace_first + len(words)} program words (the {len(words)} unpooled conv layers "
                   f"after the program), the device holds {depth}")
    if [s.layer for s in steps] != list(trace_names(net)) and problem is None:
        problem = f"the packed program's layers {[s.layer for s in steps]} are not {list(trace_names(net))}"
    return DevicePlan(accel, packed, tuple(words), trace_first, tuple(steps), problem, net, tuple(weights_of))


class DeviceBackend:
    """The model on an sqgen device (`host.device.Device`, or anything with its info/load/run/read): checks the
    model against INFO, LOADs weights and program once (`load`), then runs images; keeps the device's cycles."""

    def __init__(self, device: Any, model: Model, *, name: str = "device", load: bool = True):
        self.device = device
        self.model = model
        self.name = name
        self.info = device.info()
        self.plan = plan_device(self.info, model)
        self.net = self.plan.net
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

    def _checked(self, codes: np.ndarray, trace: bool) -> np.ndarray:
        self._check_open()
        if not self.loaded:
            raise SessionOrderError(f"run before load: {self.name} holds no weights for this session yet "
                                    "(call load() first)")
        if trace and self.plan.trace_problem:
            raise ConfigMismatch(f"cannot trace on {self.name}: {self.plan.trace_problem}")
        codes = np.asarray(codes)
        shape = self.plan.packed.input_shape
        if codes.ndim != len(shape) + 1 or codes.shape[1:] != shape:
            raise ValueError(f"codes must have shape (N, {', '.join(map(str, shape))}), got {codes.shape}")
        return codes

    def _load_input(self, x: np.ndarray) -> None:
        packed = self.plan.packed
        data = input_bytes(x)  # checks the int8 range before anything is sent
        self.device.load(self.plan.accel.regions[("act0", "act1")[packed.input_buffer]].id, 0, data)

    def run_layers(self, codes: np.ndarray, trace: bool) -> tuple[dict[str, np.ndarray], list[int]]:
        """Each image: LOAD it, RUN (the whole program, or layer by layer with `trace`), READ; int64 outputs."""
        codes = self._checked(codes, trace)
        packed = self.plan.packed
        output = self.net.names[-1]
        outs: dict[str, list[np.ndarray]] = {step.layer: [] for step in self.plan.trace} if trace else {}
        last_outs: list[np.ndarray] = []
        cycles = []
        for x in codes:
            self._load_input(x)
            if trace:
                total = 0
                for step in self.plan.trace:
                    spent = (run_layers(self.device, packed, step.passes, step.passes + 1) if step.passes is not None
                             else self.device.run(step.word, 1, expected_cycles=step.cycles))
                    total += spent if step.counted else 0
                    outs[step.layer].append(self._read(step.buffer, step.shape))
                cycles.append(total)
                last_outs.append(outs[packed.layers[-1].name][-1])
            else:
                cycles.append(run_layers(self.device, packed))
                last = packed.layers[-1]
                last_outs.append(self._read(last.buffer, last.shape))
        result = {name: np.stack(v) if v else np.zeros((0, *self._shape(name)), dtype=np.int64)
                  for name, v in outs.items()}
        # The program's last output is the model's, up to a flatten after it.
        result[output] = np.stack(last_outs).reshape(-1, *self.net.output_shape) if last_outs else \
            np.zeros((0, *self.net.output_shape), dtype=np.int64)
        return result, cycles

    def layer_cycles(self, x: np.ndarray) -> dict[str, int]:
        """The cycles each program word takes on one sample's int64 codes (`x`: input_shape), RUN one at a time,
        by the model layer whose weights it holds (a pooled conv layer's conv name)."""
        (x,) = self._checked(np.asarray(x)[None], False)
        self._load_input(x)
        packed = self.plan.packed
        return {name: run_layers(self.device, packed, i, i + 1) for i, name in enumerate(self.plan.weights_of)}

    def bytes_loaded(self) -> dict[str, int]:
        """Bytes a session LOADs: the model once (weights and program, the trace's extra descriptors included),
        then per sample its input and, for FC layers in passes, streamed weights and moved rows (as many READ), and
        READs per sample (the output; a trace reads every layer)."""
        regions = self.plan.accel.regions
        model = sum(len(data) for _, _, data in self.plan.packed.loads())
        model += len(self.plan.trace_words) * regions["program"].bytes
        return {"model": model, "input_per_sample": int(np.prod(self.plan.packed.input_shape)),
                "passes_per_sample": self.plan.packed.per_image_bytes()["load"],
                "output_per_sample": self.plan.packed.output_count}

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

    def __init__(self, backend: Backend, model: Model):
        self.backend = backend
        self.model = model
        self.net = as_network(model)
        self.cycles: list[int] = []

    @property
    def cycles_per_image(self) -> float | None:
        """Mean RUN cycles per image over the images run so far; None before any (or on golden)."""
        return float(np.mean(self.cycles)) if self.cycles else None

    def run(self, x: np.ndarray, trace: bool = False) -> RunResult:
        """Samples (module docstring) -> RunResult with the last layer's int8 codes (LeNet-5: logits (N, 10)) and
        predictions (the argmax of each sample's codes); every layer of `trace_names` if trace."""
        layers, cycles = self.backend.run_layers(self._codes(x), trace)
        if cycles is not None:
            self.cycles.extend(cycles)
        logits = layers[self.net.names[-1]].astype(np.int8)
        return RunResult(logits=logits, predictions=logits.reshape(len(logits), -1).argmax(axis=1),
                         layers={k: layers[k] for k in trace_names(self.net)} if trace else None,
                         cycles=None if cycles is None else np.asarray(cycles, dtype=np.int64))

    def _codes(self, x: np.ndarray) -> np.ndarray:
        return as_codes(x, self.net.input_scale, self.net.input_shape, isinstance(self.model, CompressedLeNet5))

    def layer_cycles(self, x: np.ndarray) -> dict[str, int] | None:
        """On a device, the cycles each program word takes on one sample `x` (RUN one at a time), by the model
        layer whose weights it holds; None on the golden backend."""
        run = getattr(self.backend, "layer_cycles", None)
        return None if run is None else run(self._codes(x)[0])

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


def open_backend(url: str, model: Model, timeout: float | None = None) -> Session:
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
    """The first difference between two traces, in layer order (a's, then b's others): {"layer", "index" (tuple),
    "a", "b"}, or {"layer", "shape_a", "shape_b"} for a shape mismatch, {"layer", "missing"} for a layer in one
    only; None if they agree on every layer both hold."""
    for name in dict.fromkeys([*a, *b]):
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
