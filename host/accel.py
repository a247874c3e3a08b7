"""Layers on an accelerator, built from its INFO alone: region beats, layer descriptors, LOAD / RUN / READ.

NumPy and `hw.spec.protocol` only (the beat packing is `hw.spec.fields` with `hw.spec.spectral.stream` and
`hw.spec.fc_stream`, the executable specs the hardware shares): nothing here needs Amaranth. INFO (or
`manifest.json`) gives the regions, each engine's parameters and stream layouts, and the descriptor layout.

The whole compressed LeNet-5 (`host.lenet5.compressed.CompressedLeNet5`) in one program:

    packed = pack_model(dev.info(), model)      # ValueError naming what does not fit this device
    load_packed(dev, packed)                    # every region and the program, once
    logits, cycles = run_packed(dev, packed, x_q)   # one image (1, 28, 28) int8 codes -> (10,) int64

`Packed.layers` names each layer's output (pool1, pool2, fc1, fc2, fc3: buffer, shape) for traces: RUN
`packed.first + i` alone and READ that buffer. Conv layers alone: `build_conv_program` and `run_conv_program`.
Any compressed network (`hw.spec.network.CompressedNetwork`): `pack_network`, the chain conv[+pool] ... flatten
... fc ... (a pool is the conv layer's post stage before it, a flatten costs nothing: the buffers hold maps
channel-major), named by each descriptor's last layer.

The conv engine runs "same" padding; a "valid" layer (of the engine's K, or a smaller k on its N and L) is the
"same" output cropped to H - k + 1 by W - k + 1 from row and column `crop_offset` (the layer's crop minus the
engine's: (k - 1) // 2 at k = K), which the descriptor's post-stage window does. The pool flag adds a 2 x 2
max-pool after the crop.
An FC layer reads its cols activations from the source buffer and writes its rows outputs; its regions hold
the engine's xor, bim (all planes' tiles, one canonical stream) and scale beats. A layer with more rows than the
engine takes, or more words than its regions hold, runs in passes of output rows (`hw.spec.fc_passes.schedule`,
the rule `hw.plan` sizes configs by): each pass its own descriptor reading the same input. The sequencer writes
every layer's output from address 0 of the other buffer, so a pass cannot write its rows at their offset; the host
runs the passes one RUN each (`run_layers`), the first pass last so that its rows land in place, READs the other
passes' rows and LOADs them after it. The layer keeps one program word, into which each pass's descriptor is
LOADed before its RUN (a descriptor per pass would cost program depth, which on the iCE40 is block RAM or logic).
A streamed layer's passes (when the resident words leave too little room) share one slot after the resident
words, and each pass's words are LOADed there before its RUN, every image.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hw.spec import fc_passes, fc_stream
from hw.spec.fields import beats_to_bytes, fields_from_json, pack_fields, unpack_fields, word_bits
from hw.spec.network import CompressedNetwork, ConvLayer, program_steps
from hw.spec.run import ConvRun, conv_run_cycles, fc_run_cycles
from hw.spec.spectral.engine import check_layer_fits, crop_offset
from hw.spec.spectral.layer import SpectralLayer
from hw.spec.spectral.stream import cfg_beat, kernel_beats, quant_beats


@dataclass(frozen=True)
class RegionInfo:
    """A LOAD-able region as INFO describes it."""

    id: int
    name: str
    width: int
    bytes: int
    depth: int


@dataclass(frozen=True)
class AccelInfo:
    """What the host needs of an accelerator's INFO: regions, buffers, descriptor layout, conv engine."""

    regions: dict[str, RegionInfo]
    buffers: dict[str, int]
    descriptor: dict[str, tuple[int, int]]
    descriptor_width: int
    kinds: dict[str, int]
    conv_params: dict[str, Any] | None
    conv_streams: dict[str, dict[str, tuple[int, int]]] | None
    max_payload: int
    fc_params: dict[str, Any] | None = None
    fc_streams: dict[str, dict[str, tuple[int, int]]] | None = None
    #: The `FcFormat` fields (`hw.spec.fc_format.FIELD_NAMES`) of the models the FC engine runs.
    fc_format: dict[str, int] | None = None
    #: Cycles the device spends on each descriptor besides its engine's (INFO `descriptor.overhead_cycles`).
    overhead_cycles: int = 0

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> AccelInfo:
        """Parse an INFO document; ValueError if the device has no engines."""
        if "regions" not in info or "descriptor" not in info:
            raise ValueError("the device has no engines (INFO lists no regions): it answers INFO and ECHO only")
        regions = {r["name"]: RegionInfo(int(r["id"]), str(r["name"]), int(r["width"]), int(r["bytes"]),
                                         int(r["depth"])) for r in info["regions"]}
        conv = info.get("engines", {}).get("conv")
        fc = info.get("engines", {}).get("fc")
        return cls(regions=regions, buffers={k: int(v) for k, v in info["buffers"].items()},
                   descriptor=fields_from_json(info["descriptor"]["fields"]),
                   descriptor_width=int(info["descriptor"]["width"]),
                   kinds={k: int(v) for k, v in info["descriptor"]["kinds"].items()},
                   conv_params=None if conv is None else dict(conv["params"]),
                   conv_streams=None if conv is None else {name: fields_from_json(fields)
                                                           for name, fields in conv["streams"].items()},
                   max_payload=int(info["max_payload"]),
                   fc_params=None if fc is None else dict(fc["params"]),
                   fc_streams=None if fc is None else {name: fields_from_json(fields)
                                                       for name, fields in fc["streams"].items()},
                   fc_format=None if fc is None else {k: int(v) for k, v in fc["format"].items()},
                   overhead_cycles=int(info["descriptor"].get("overhead_cycles", 0)))

    @property
    def act_depth(self) -> int:
        return self.regions["act0"].depth

    def region_bytes(self, name: str, words: Sequence[int]) -> bytes:
        """Words of region `name` in LOAD's byte format."""
        return beats_to_bytes(words, self.regions[name].width)

    def fc_stream_format(self) -> fc_stream.FcStreamFormat:
        """The FC engine's beat widths (`hw.spec.fc_stream`), checked against INFO's field tables."""
        p, streams = self.fc_params, self.fc_streams
        if p is None or streams is None:
            raise ValueError("the device has no FC engine")
        fmt = fc_stream.FcStreamFormat.from_describe(p)
        # The packers follow the format's widths; INFO's tables are the hardware's: they must agree.
        cfg = [(name, width) for name, (_, width) in sorted(streams["cfg"].items(), key=lambda f: f[1][0])]
        if cfg != list(fmt.cfg_fields) or word_bits(streams["scale"]) != fmt.scale_width:
            raise ValueError("the FC engine's INFO cfg/scale tables do not match hw.spec.fc_stream's format")
        for name in ("xor", "bim", "scale"):
            if word_bits(streams[name]) != self.regions[f"fc.{name}"].width:
                raise ValueError(f"region fc.{name} is {self.regions[f'fc.{name}'].width} bits wide, the engine's "
                                 f"{name} beat {word_bits(streams[name])}")
        return fmt

    def pack_descriptor(self, values: Mapping[str, int]) -> int:
        """One program word from named descriptor fields (missing fields 0, all unsigned); ValueError naming the
        field and its range on a value too wide."""
        try:
            return pack_fields(self.descriptor, values, signed=())
        except ValueError as error:
            raise ValueError(f"descriptor {error}") from None


@dataclass(frozen=True)
class ConvLayerPlan:
    """One conv layer on the device: its descriptor fields, its region words and the shapes in and out."""

    descriptor: dict[str, int]
    w: list[int]
    quant: list[int]
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    #: The descriptor's cycles on the device, what RUN waits for: the engine's full-rate cycles
    #: (`hw.spec.spectral.engine.layer_cycles`) and the sequencer's overhead.
    cycles: int = 0


def plan_conv_layer(accel: AccelInfo, layer: SpectralLayer, in_shape: tuple[int, int, int], *, src: int,
                    pool: bool, w_start: int = 0, quant_start: int = 0) -> ConvLayerPlan:
    """The descriptor and the conv.w / conv.quant words of `layer` on an input of `in_shape` read from buffer
    `src`, its weights placed at `w_start` and `quant_start`; ValueError naming what does not fit."""
    p = accel.conv_params
    if p is None:
        raise ValueError("the device has no conv engine")
    check_layer_fits(p, layer, in_shape, valid_as_crop=True)
    oaa = layer.oaa
    c_in, h, w = in_shape
    # The engine's "same" output cropped: "same" is the whole of it, "valid" its window from the layer's crop
    # minus the engine's (the offsets of OaaParams.crop on one canvas).
    h_out, w_out = oaa.output_shape(h, w)
    top = crop_offset(p, oaa)
    out_h, out_w = (h_out // 2, w_out // 2) if pool else (h_out, w_out)
    if pool and min(out_h, out_w) < 1:
        raise ValueError(f"a {h_out} x {w_out} map is too small to pool")
    streams = accel.conv_streams
    w_words = kernel_beats(streams["w"], layer, p["p"])
    q_words = quant_beats(streams["quant"], layer)
    for region, start, words in (("conv.w", w_start, w_words), ("conv.quant", quant_start, q_words)):
        if start + len(words) > accel.regions[region].depth:
            raise ValueError(f"{region} words {start}..{start + len(words) - 1} run past its depth "
                             f"{accel.regions[region].depth}")
    x_count, out_count = c_in * h * w, layer.c_out * out_h * out_w
    for name, value in (("input", x_count), ("output", out_count)):
        if value > accel.act_depth:
            raise ValueError(f"the layer's {name} ({value} values) does not fit an activation buffer of "
                             f"{accel.act_depth}")
    cfg = unpack_fields(streams["cfg"], cfg_beat(streams["cfg"], layer, h, w))
    descriptor = {"kind": accel.kinds["conv"], "src": src, "x_count": x_count, "out_count": out_count,
                  **{f"conv.cfg.{name}": value for name, value in cfg.items()},
                  "conv.w_start": w_start, "conv.w_count": len(w_words),
                  "conv.quant_start": quant_start, "conv.quant_count": len(q_words),
                  "post.top": top, "post.left": top, "post.height": h_out, "post.width": w_out,
                  "post.pool": int(pool)}
    return ConvLayerPlan(descriptor, w_words, q_words, (c_in, h, w), (layer.c_out, out_h, out_w),
                         conv_run_cycles(p, (layer, h, w, pool), None) + accel.overhead_cycles)


@dataclass(frozen=True)
class ConvProgram:
    """Layers laid out on the device: descriptors (program words from `first`), region loads, buffers used."""

    plans: list[ConvLayerPlan]
    descriptors: list[int]
    loads: list[tuple[str, int, list[int]]]
    first: int
    in_buffer: int
    out_buffer: int

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return self.plans[0].in_shape

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return self.plans[-1].out_shape


def build_conv_program(accel: AccelInfo, layers: Sequence[tuple[SpectralLayer, bool]],
                       in_shape: tuple[int, int, int], *, first: int = 0, in_buffer: int = 0) -> ConvProgram:
    """A chain of (layer, pool) starting on `in_buffer`, alternating buffers, weights packed from word 0."""
    if not layers:
        raise ValueError("layers must not be empty")
    plans, shape, src, w_at, q_at = [], tuple(in_shape), in_buffer, 0, 0
    for layer, pool in layers:
        plan = plan_conv_layer(accel, layer, shape, src=src, pool=pool, w_start=w_at, quant_start=q_at)
        plans.append(plan)
        shape, src, w_at, q_at = plan.out_shape, 1 - src, w_at + len(plan.w), q_at + len(plan.quant)
    if first + len(plans) > accel.regions["program"].depth:
        raise ValueError(f"{len(plans)} descriptors from {first} do not fit the program's "
                         f"{accel.regions['program'].depth}")
    descriptors = [accel.pack_descriptor(plan.descriptor) for plan in plans]
    loads = [("conv.w", 0, [w for plan in plans for w in plan.w]),
             ("conv.quant", 0, [q for plan in plans for q in plan.quant]),
             ("program", first, descriptors)]
    return ConvProgram(plans, descriptors, loads, first, in_buffer, src)


@dataclass(frozen=True)
class FcLayerPlan:
    """One FC layer on the device: its descriptor fields, its fc.xor / fc.bim / fc.scale words, cols in, rows out."""

    descriptor: dict[str, int]
    xor: list[int]
    bim: list[int]
    scale: list[int]
    cols: int
    rows: int
    #: The descriptor's cycles on the device: the engine's (`hw.spec.fc_stream.fc_layer_cycles`) and the
    #: sequencer's overhead.
    cycles: int = 0


def check_fc_format(accel: AccelInfo, fmt: Any) -> None:
    """ValueError listing what differs when a model's `FcFormat` is not the one the device's FC engine runs."""
    if accel.fc_format is None:
        raise ValueError("the device has no FC engine")
    ours = {name: int(v) for name, v in fmt.fields().items()}
    diff = [f"{k}: model {ours.get(k)} != device {v}" for k, v in accel.fc_format.items() if ours.get(k) != v]
    if diff:
        raise ValueError(f"the model's FC format does not match the device's FC engine ({'; '.join(diff)})")


def _fits(accel: AccelInfo, region: str, start: int, count: int) -> None:
    depth = accel.regions[region].depth
    if start + count > depth:
        raise ValueError(f"region {region} needs {start + count} words (words {start}..{start + count - 1}), "
                         f"the device has {depth}")


def plan_fc_layer(accel: AccelInfo, layer: Any, *, src: int, xor_start: int = 0, bim_start: int = 0,
                  scale_start: int = 0) -> FcLayerPlan:
    """The descriptor and fc.xor / fc.bim / fc.scale words of an FC layer (`hw.spec.fc_stream.FcLayer` or
    `host.lenet5.compressed.CompressedFcLayer`) reading buffer `src`, its words placed at the given starts."""
    fmt = accel.fc_stream_format()
    if hasattr(layer, "fmt"):
        check_fc_format(accel, layer.fmt)
    stream_layer = _engine_layer(layer)
    rows, cols = stream_layer.shape
    for name, value in (("cols", cols), ("rows", rows)):
        if value > accel.act_depth:
            raise ValueError(f"the layer's {name} ({value}) do not fit an activation buffer of {accel.act_depth}")
    streams = fc_stream.layer_streams(fmt, stream_layer, np.zeros(cols, dtype=np.int64))
    for region, start, words in (("fc.xor", xor_start, streams["xor"]), ("fc.bim", bim_start, streams["bim"]),
                                 ("fc.scale", scale_start, streams["scale"])):
        _fits(accel, region, start, len(words))
    cfg = fmt.unpack_cfg(streams["cfg"][0])
    if pack_fields(accel.fc_streams["cfg"], cfg, signed=()) != streams["cfg"][0]:
        raise ValueError("the FC engine's cfg beat layout disagrees with hw.spec.fc_stream's")
    descriptor = {"kind": accel.kinds["fc"], "src": src, "x_count": cols, "out_count": rows,
                  **{f"fc.cfg.{name}": value for name, value in cfg.items()},
                  "fc.xor_start": xor_start, "fc.xor_count": len(streams["xor"]),
                  "fc.bim_start": bim_start, "fc.bim_count": len(streams["bim"]),
                  "fc.scale_start": scale_start, "fc.scale_count": len(streams["scale"])}
    return FcLayerPlan(descriptor, streams["xor"], streams["bim"], streams["scale"], cols, rows,
                       fc_run_cycles(accel.fc_params, cols, rows, len(streams["xor"]), None)
                       + accel.overhead_cycles)


@dataclass(frozen=True)
class FcPassRun:
    """One pass of an FC layer split by rows (`hw.spec.fc_passes`): its descriptor (a program word, LOADed into
    the layer's word before its RUN), the rows start..stop-1 of the layer's output it computes, its cycles, and
    for a streamed layer the words to LOAD before its RUN: (region, first word, words)."""

    descriptor: int
    start: int
    stop: int
    cycles: int
    loads: tuple[tuple[str, int, tuple[int, ...]], ...] = ()


@dataclass(frozen=True)
class LayerOut:
    """Where one layer of a packed program leaves its output: the activation buffer and its shape there."""

    name: str
    buffer: int
    shape: tuple[int, ...]
    #: Cycles the layer is expected to take on the device (its engine's cycle model), for RUN's wait: in a RUN
    #: behind the layer before (a layer behind a conv layer loads while it computes: a conv layer's cycles are then
    #: `chained_cycles`, an FC layer's leave out its load: `hw.spec.run`).
    cycles: int = 0
    #: Its (first) descriptor's program word after `Packed.first`.
    word: int = 0
    #: An FC layer run in passes: each pass (`run_layers` runs them); empty for a layer of one descriptor.
    passes: tuple[FcPassRun, ...] = ()
    #: Its cycles when a RUN starts with it (0: `cycles`).
    alone_cycles: int = 0

    @property
    def first_cycles(self) -> int:
        """Its cycles as the first layer of a RUN."""
        return self.alone_cycles or self.cycles

    @property
    def count(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class Packed:
    """A network laid out on one device: what to LOAD once, and how to RUN it and READ its result.

    regions: region name -> its words from word 0 (the program's from `first`). program: the descriptors (RUN
    first, len(program)). input_buffer, input_shape: where and what the input is. layers: each layer's output
    (buffer, shape), in order; output_buffer and output_count are the last layer's. region_ids, region_widths:
    every region of the device (activation buffers included), for LOAD.
    """

    regions: dict[str, list[int]]
    program: list[int]
    first: int
    input_buffer: int
    input_shape: tuple[int, ...]
    layers: list[LayerOut]
    region_ids: dict[str, int] = field(default_factory=dict)
    region_widths: dict[str, int] = field(default_factory=dict)

    @property
    def output_buffer(self) -> int:
        return self.layers[-1].buffer

    @property
    def output_count(self) -> int:
        return self.layers[-1].count

    @property
    def expected_cycles(self) -> int:
        """The program's cycles by the engines' cycle models: what `Device.run` waits for (with its margin)."""
        return sum(layer.cycles for layer in self.layers)

    def loads(self) -> list[tuple[int, int, bytes]]:
        """(region id, first word, LOAD bytes) of every region, program last: `Device.load`'s arguments."""
        order = sorted(self.regions, key=lambda name: name == "program")
        return [(self.region_ids[name], self.first if name == "program" else 0,
                 beats_to_bytes(self.regions[name], self.region_widths[name])) for name in order]

    def pass_loads(self, layer: LayerOut, run: FcPassRun) -> list[tuple[int, int, bytes]]:
        """(region id, first word, LOAD bytes) LOADed before each RUN of a pass: a streamed pass's words, and
        its descriptor into the layer's program word when the layer has several passes."""
        loads = [(self.region_ids[name], start, beats_to_bytes(list(words), self.region_widths[name]))
                 for name, start, words in run.loads]
        if len(layer.passes) > 1:
            loads.append((self.region_ids["program"], self.first + layer.word,
                          beats_to_bytes([run.descriptor], self.region_widths["program"])))
        return loads

    def per_image_bytes(self) -> dict[str, int]:
        """Bytes each image moves beyond its input and output for the layers run in passes: streamed weights and
        pass descriptors LOADed, pass outputs READ and LOADed back after the first pass's rows."""
        loaded = sum(len(data) for layer in self.layers for run in layer.passes
                     for _, _, data in self.pass_loads(layer, run))
        moved = sum(run.stop - run.start for layer in self.layers for run in layer.passes[1:])
        return {"passes": sum(len(layer.passes) for layer in self.layers), "weights_and_descriptors": loaded,
                "read": moved, "load": loaded + moved}


def pack_program(accel: AccelInfo, layers: Sequence[tuple[str, Any, bool]], in_shape: tuple[int, ...], *,
                 first: int = 0, in_buffer: int = 0) -> Packed:
    """(name, layer, pool) steps, conv (`SpectralLayer`) or FC, chained from `in_buffer` with the buffers
    alternating and each region's words packed from 0; ValueError (one line) naming what does not fit."""
    if not layers:
        raise ValueError("layers must not be empty")
    regions: dict[str, list[int]] = {}
    outs: list[LayerOut] = []
    descriptors: list[int] = []
    shape, src = tuple(in_shape), in_buffer

    def at(name: str) -> int:
        return len(regions.get(name, []))

    try:
        schedules = fc_schedules(accel, {name: layer for name, layer, _ in layers
                                         if not isinstance(layer, SpectralLayer)})
        fc_error = None
    except ValueError as error:
        schedules, fc_error = {}, error  # said when the FC layers are reached: a conv layer before may fail first
    slot = {region: fc_passes.resident_words(list(schedules.values()), region) for region in fc_passes.REGIONS}
    before: ConvRun | None = None  # the conv layer before (`hw.spec.run`: a layer behind one loads early)
    for name, layer, pool in layers:
        alone, layer_in = 0, shape
        if fc_error is not None and not isinstance(layer, SpectralLayer):
            raise fc_error
        passes: list[FcPassRun] = []
        pass_descriptors: list[dict[str, int]] = []
        try:
            if isinstance(layer, SpectralLayer):
                if len(shape) != 3:
                    raise ValueError(f"a conv layer needs a (C, H, W) input, got {shape}")
                plan = plan_conv_layer(accel, layer, shape, src=src, pool=pool, w_start=at("conv.w"),
                                       quant_start=at("conv.quant"))
                words = {"conv.w": plan.w, "conv.quant": plan.quant}
                if before is not None:
                    alone = plan.cycles
                    chained = conv_run_cycles(accel.conv_params, (layer, *shape[1:], pool), before)
                    plan = dataclasses.replace(plan, cycles=chained + accel.overhead_cycles)
                shape = plan.out_shape
            elif len(schedules[name].passes) == 1 and not schedules[name].streamed:
                count = int(np.prod(shape))
                fc_plan = plan_fc_layer(accel, layer, src=src, xor_start=at("fc.xor"), bim_start=at("fc.bim"),
                                        scale_start=at("fc.scale"))
                if fc_plan.cols != count:
                    raise ValueError(f"it reads {fc_plan.cols} activations, the layer before gives {count}")
                if before is not None:  # it loads while the conv layer before it runs
                    alone = fc_plan.cycles
                    loaded = fc_run_cycles(accel.fc_params, fc_plan.cols, fc_plan.rows, len(fc_plan.xor), before)
                    fc_plan = dataclasses.replace(fc_plan, cycles=loaded + accel.overhead_cycles)
                plan = fc_plan
                words = {"fc.xor": fc_plan.xor, "fc.bim": fc_plan.bim, "fc.scale": fc_plan.scale}
                shape = (fc_plan.rows,)
            else:
                passes, pass_descriptors, words = _fc_passes(accel, layer, schedules[name], int(np.prod(shape)),
                                                             src, at, slot)
                shape = (passes[-1].stop,)
        except (ValueError, KeyError) as error:
            raise ValueError(f"layer {name}: {error.args[0] if isinstance(error, KeyError) else error}") from None
        for region, new in words.items():
            regions.setdefault(region, []).extend(new)
        word = len(descriptors)
        if passes:
            packed_passes = [accel.pack_descriptor(fields) for fields in pass_descriptors]
            passes = [dataclasses.replace(run, descriptor=value) for run, value in zip(passes, packed_passes)]
            descriptors.append(packed_passes[0])
            cycles = sum(run.cycles for run in passes)
        else:
            descriptors.append(accel.pack_descriptor(plan.descriptor))
            cycles = plan.cycles
        src = 1 - src
        outs.append(LayerOut(name, src, shape, cycles, word, tuple(passes), alone))
        # The sequencer starts a layer's load (conv or FC) while the conv layer before computes (`hw.sequencer`).
        before = (layer, *layer_in[1:], pool) if isinstance(layer, SpectralLayer) else None
    _fits(accel, "program", first, len(descriptors))
    regions["program"] = descriptors
    return Packed(regions=regions, program=descriptors, first=first, input_buffer=in_buffer,
                  input_shape=tuple(in_shape), layers=outs,
                  region_ids={name: region.id for name, region in accel.regions.items()},
                  region_widths={name: region.width for name, region in accel.regions.items()})


def _engine_layer(layer: Any) -> fc_stream.FcLayer:
    """An FC layer as the engine takes it: an `FcLayer` already, or a model's FC layer converted."""
    return layer if isinstance(layer, fc_stream.FcLayer) else layer.engine_layer()


def fc_schedules(accel: AccelInfo, layers: Mapping[str, Any]) -> dict[str, fc_passes.FcSchedule]:
    """How each FC layer (by name) runs on this device's engine and regions (`hw.spec.fc_passes.schedule`): in one
    descriptor, in resident passes, or streamed. ValueError, one line naming the layer and the limit."""
    if not layers:
        return {}
    fmt = accel.fc_stream_format()
    engine = {name: _engine_layer(layer) for name, layer in layers.items()}
    for name, layer in layers.items():
        if hasattr(layer, "fmt"):
            try:
                check_fc_format(accel, layer.fmt)
            except ValueError as error:
                raise ValueError(f"layer {name}: {error}") from None
    depths = {region: accel.regions[region].depth for region in fc_passes.REGIONS}
    return dict(zip(engine, fc_passes.schedule(fmt, list(engine.values()), depths, names=list(engine))))


def _fc_passes(accel: AccelInfo, layer: Any, schedule: fc_passes.FcSchedule, count: int, src: int, at: Any,
               slot: Mapping[str, int]) -> tuple[list[FcPassRun], list[dict[str, int]], dict[str, list[int]]]:
    """An FC layer's passes: their runs (descriptors packed by the caller), descriptor fields, and resident words
    (a streamed layer's passes all start at the `slot`, their words LOADed per image)."""
    whole = _engine_layer(layer)
    rows, cols = whole.shape
    if cols != count:
        raise ValueError(f"it reads {cols} activations, the layer before gives {count}")
    if rows > accel.act_depth:
        raise ValueError(f"the layer's rows ({rows}) do not fit an activation buffer of {accel.act_depth}")
    runs, descriptors, words = [], [], {region: [] for region in fc_passes.REGIONS}
    for one in schedule.passes:
        part = fc_passes.pass_layer(whole, one.start, one.stop)
        starts = {region: slot[region] if schedule.streamed else at(region) + len(words[region])
                  for region in fc_passes.REGIONS}
        plan = plan_fc_layer(accel, part, src=src, xor_start=starts["fc.xor"], bim_start=starts["fc.bim"],
                             scale_start=starts["fc.scale"])
        new = {"fc.xor": plan.xor, "fc.bim": plan.bim, "fc.scale": plan.scale}
        loads: tuple[tuple[str, int, tuple[int, ...]], ...] = ()
        if schedule.streamed:
            loads = tuple((region, starts[region], tuple(new[region])) for region in fc_passes.REGIONS)
        else:
            for region in fc_passes.REGIONS:
                words[region] += new[region]
        runs.append(FcPassRun(0, one.start, one.stop, plan.cycles, loads))
        descriptors.append(plan.descriptor)
    return runs, descriptors, {region: new for region, new in words.items() if new}


def network_steps(net: CompressedNetwork) -> list[tuple[str, Any, bool]]:
    """`net`'s (name, layer, pool) steps for `pack_program`, by the step rule (`hw.spec.network.program_steps`): a
    conv step runs its layer's `SpectralLayer`, an FC step its layer. ValueError, one line, for what it refuses."""
    return [(step.name, step.layer.spectral if isinstance(step.layer, ConvLayer) else step.layer, step.pool)
            for step in program_steps(net)]


def pack_network(info: Mapping[str, Any] | AccelInfo, net: CompressedNetwork) -> Packed:
    """Any compressed network as one program from buffer 0, the buffers alternating (`network_steps`,
    `pack_program`). ValueError, one line naming the layer and the limit, when the device cannot run it: an engine
    it lacks, the FC format, a conv layer's geometry, channels or map size, an FC layer's rows or cols, a region
    or buffer too small."""
    accel = info if isinstance(info, AccelInfo) else AccelInfo.from_info(info)
    needed = {"conv": bool(net.conv_layers()), "fc": bool(net.fc_layers())}
    missing = [kind for kind, present in (("conv", accel.conv_params), ("fc", accel.fc_params))
               if needed[kind] and present is None]
    if missing:
        raise ValueError(f"the device has no {' and no '.join(missing)} engine: it cannot run this network's "
                         f"{' and '.join(missing)} layers")
    if needed["fc"]:
        check_fc_format(accel, net.fmt)
    return pack_program(accel, network_steps(net), net.input_shape)


def pack_model(info: Mapping[str, Any] | AccelInfo, model: Any) -> Packed:
    """A compressed LeNet-5 (`host.lenet5.compressed.CompressedLeNet5`) as one program of five layers: conv1
    ("same", pooled), conv2 ("valid" as a crop, pooled), fc1, fc2 (ReLU), fc3, from buffer 0 alternating; any
    other `CompressedNetwork` by `pack_network`.
    ValueError, one line naming the layer and the region or buffer, when the device cannot hold it."""
    if isinstance(model, CompressedNetwork):
        return pack_network(info, model)
    accel = info if isinstance(info, AccelInfo) else AccelInfo.from_info(info)
    missing = [name for name, present in (("conv", accel.conv_params), ("fc", accel.fc_params)) if present is None]
    if missing:
        raise ValueError(f"the device has no {' and no '.join(missing)} engine: it cannot run the whole LeNet-5")
    check_fc_format(accel, model.fmt)
    steps = [("pool1", model.conv1, True), ("pool2", model.conv2, True),
             *((layer.name, layer, False) for layer in model.fc)]
    return pack_program(accel, steps, (1, 28, 28))


def load_packed(device: Any, packed: Packed) -> None:
    """LOAD every region's words and the program (`device`: a `host.device.Device`)."""
    for region_id, offset, data in packed.loads():
        device.load(region_id, offset, data)


def run_packed(device: Any, packed: Packed, x_q: np.ndarray) -> tuple[np.ndarray, int]:
    """LOAD one input, RUN every layer (in one RUN unless a layer runs in passes, `run_layers`), READ the last
    output: (output int64, cycles the RUNs took)."""
    x = np.asarray(x_q)
    if x.shape != packed.input_shape:
        raise ValueError(f"input must have shape {packed.input_shape}, got {x.shape}")
    device.load(packed.region_ids[("act0", "act1")[packed.input_buffer]], 0, input_bytes(x))
    cycles = run_layers(device, packed)
    last = packed.layers[-1]
    return output_array(device.read(last.buffer, 0, last.count), last.shape), cycles


def run_layers(device: Any, packed: Packed, start: int = 0, stop: int | None = None) -> int:
    """RUN layers start..stop-1 of `packed` on the input the device holds; the cycles the RUNs took. Layers of one
    descriptor each go in one RUN; a layer in passes runs pass by pass (module docstring): a streamed pass's words
    LOADed, the pass RUN, its rows READ, the first pass last, then the other passes' rows LOADed after its own."""
    stop = len(packed.layers) if stop is None else stop
    cycles, i = 0, start
    while i < stop:
        if not packed.layers[i].passes:
            j = i
            while j < stop and not packed.layers[j].passes:
                j += 1
            expected = packed.layers[i].first_cycles + sum(layer.cycles for layer in packed.layers[i + 1:j])
            cycles += device.run(packed.first + packed.layers[i].word, j - i, expected_cycles=expected)
            i = j
            continue
        layer = packed.layers[i]
        rows = b""
        for run in (*layer.passes[1:], layer.passes[0]):
            for region_id, offset, data in packed.pass_loads(layer, run):
                device.load(region_id, offset, data)
            cycles += device.run(packed.first + layer.word, 1, expected_cycles=run.cycles)
            if run is not layer.passes[0]:
                rows += device.read(layer.buffer, 0, run.stop - run.start)
        device.load(packed.region_ids[("act0", "act1")[layer.buffer]], layer.passes[1].start, rows)
        i += 1
    return cycles


def input_bytes(x_q: np.ndarray) -> bytes:
    """An int8 map (C, H, W) as the bytes an activation buffer holds (two's complement, memory order)."""
    x = np.asarray(x_q)
    if x.min(initial=0) < -128 or x.max(initial=0) > 127:
        raise ValueError("activations must be int8 (-128..127)")
    return x.astype(np.int8).tobytes()


def output_array(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Activation buffer bytes as a signed int64 array of `shape`."""
    return np.frombuffer(data, dtype=np.int8).astype(np.int64).reshape(shape)


def load_program(device: Any, accel: AccelInfo, program: ConvProgram) -> None:
    """LOAD the program's weight words and descriptors (`device`: a `host.device.Device`)."""
    for region, offset, words in program.loads:
        device.load(accel.regions[region].id, offset, accel.region_bytes(region, words))


def run_conv_program(device: Any, accel: AccelInfo, program: ConvProgram, x_q: np.ndarray,
                     ) -> tuple[np.ndarray, int]:
    """LOAD one input, RUN the program, READ its output: (output (C, H, W) int64, cycles the RUN took)."""
    x = np.asarray(x_q)
    if x.shape != program.in_shape:
        raise ValueError(f"input must have shape {program.in_shape}, got {x.shape}")
    device.load(accel.regions[("act0", "act1")[program.in_buffer]].id, 0, input_bytes(x))
    cycles = device.run(program.first, len(program.plans), expected_cycles=sum(plan.cycles for plan in program.plans))
    size = int(np.prod(program.out_shape))
    return output_array(device.read(program.out_buffer, 0, size), program.out_shape), cycles


__all__ = ["AccelInfo", "RegionInfo", "ConvLayerPlan", "ConvProgram", "plan_conv_layer", "build_conv_program",
           "FcLayerPlan", "plan_fc_layer", "check_fc_format", "FcPassRun", "LayerOut", "Packed", "pack_program",
           "pack_model", "fc_schedules", "network_steps", "pack_network",
           "load_packed", "run_packed", "run_layers", "input_bytes", "output_array", "load_program", "run_conv_program"]
