"""Conv layers on an accelerator, built from its INFO alone: region beats, layer descriptors, LOAD / RUN / READ.

NumPy and `host.protocol` only (the beat packing is `sim.golden.spec2_stream`, the executable spec the hardware
shares): nothing here needs Amaranth. INFO (or `manifest.json`) gives the regions, the conv engine's
parameters and stream layouts, and the descriptor layout.

    accel = AccelInfo.from_info(dev.info())
    program = build_conv_program(accel, [(model.conv1, True), (model.conv2, True)], (1, 28, 28))
    load_program(dev, accel, program)
    y, cycles = run_conv_program(dev, accel, program, x_q)

The engine runs "same" padding; a "valid" layer is the "same" output cropped at (k - 1) // 2 to H - k + 1 by
W - k + 1, which the descriptor's post-stage window does. The pool flag adds a 2 x 2 max-pool after the crop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.golden import spec2_stream as beats
from sim.golden.spec2 import SpectralLayer


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

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> AccelInfo:
        """Parse an INFO document; ValueError if the device has no engines."""
        if "regions" not in info or "descriptor" not in info:
            raise ValueError("the device has no engines (INFO lists no regions): it answers INFO and ECHO only")
        regions = {r["name"]: RegionInfo(int(r["id"]), str(r["name"]), int(r["width"]), int(r["bytes"]),
                                         int(r["depth"])) for r in info["regions"]}
        conv = info.get("engines", {}).get("conv")
        return cls(regions=regions, buffers={k: int(v) for k, v in info["buffers"].items()},
                   descriptor=beats.fields_from_json(info["descriptor"]["fields"]),
                   descriptor_width=int(info["descriptor"]["width"]),
                   kinds={k: int(v) for k, v in info["descriptor"]["kinds"].items()},
                   conv_params=None if conv is None else dict(conv["params"]),
                   conv_streams=None if conv is None else {name: beats.fields_from_json(fields)
                                                           for name, fields in conv["streams"].items()},
                   max_payload=int(info["max_payload"]))

    @property
    def act_depth(self) -> int:
        return self.regions["act0"].depth

    def region_bytes(self, name: str, words: Sequence[int]) -> bytes:
        """Words of region `name` in LOAD's byte format."""
        return beats.beats_to_bytes(words, self.regions[name].width)

    def pack_descriptor(self, values: Mapping[str, int]) -> int:
        """One program word from named descriptor fields (missing fields 0); ValueError on a value too wide."""
        for name, value in values.items():
            if name in self.descriptor and not 0 <= int(value) < 1 << self.descriptor[name][1]:
                raise ValueError(f"descriptor field {name}={value} does not fit {self.descriptor[name][1]} bits")
        return beats.pack_fields(self.descriptor, values)


@dataclass(frozen=True)
class ConvLayerPlan:
    """One conv layer on the device: its descriptor fields, its region words and the shapes in and out."""

    descriptor: dict[str, int]
    w: list[int]
    quant: list[int]
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]


def plan_conv_layer(accel: AccelInfo, layer: SpectralLayer, in_shape: tuple[int, int, int], *, src: int,
                    pool: bool, w_start: int = 0, quant_start: int = 0) -> ConvLayerPlan:
    """The descriptor and the conv.w / conv.quant words of `layer` on an input of `in_shape` read from buffer
    `src`, its weights placed at `w_start` and `quant_start`; ValueError naming what does not fit."""
    p = accel.conv_params
    if p is None:
        raise ValueError("the device has no conv engine")
    oaa = layer.oaa
    if (oaa.n, oaa.k, oaa.l) != (p["n"], p["k"], p["l"]):
        raise ValueError(f"layer (n, k, l)=({oaa.n}, {oaa.k}, {oaa.l}) does not match the engine's "
                         f"({p['n']}, {p['k']}, {p['l']})")
    if p["padding"] != "same":
        raise ValueError(f"the engine must run 'same' padding, it runs {p['padding']!r}")
    if layer.relu != p["relu"]:
        raise ValueError(f"layer relu={layer.relu} does not match the engine's relu={p['relu']}")
    if layer.schedule is None or (layer.schedule.p, layer.schedule.b) != (p["p"], p["b"]):
        got = None if layer.schedule is None else (layer.schedule.p, layer.schedule.b)
        raise ValueError(f"layer schedule (p, b) must be ({p['p']}, {p['b']}), got {got}")
    if layer.quant is None:
        raise ValueError("layer has no quantization parameters (calibrate it first)")
    c_in, h, w = in_shape
    if c_in != layer.c_in:
        raise ValueError(f"input must have C_in={layer.c_in} channels, got {c_in}")
    for name, value, high in (("c_in", layer.c_in, p["max_c_in"]), ("c_out", layer.c_out, p["max_c_out"]),
                              ("height", h, p["max_height"]), ("width", w, p["max_width"])):
        if not 1 <= value <= high:
            raise ValueError(f"layer {name}={value} outside the engine's 1..{high}")
    most = int(layer.schedule.groups.sum(axis=1).max(initial=0))
    if most > p["max_groups"]:
        raise ValueError(f"an output channel has {most} kernel groups, more than max_groups={p['max_groups']}")
    # "same" is the engine's own output; "valid" is its window at (k - 1) // 2 (the offsets of OaaParams.crop).
    h_out, w_out = oaa.output_shape(h, w)
    top = 0 if oaa.padding == "same" else (oaa.k - 1) // 2
    out_h, out_w = (h_out // 2, w_out // 2) if pool else (h_out, w_out)
    if pool and min(out_h, out_w) < 1:
        raise ValueError(f"a {h_out} x {w_out} map is too small to pool")
    streams = accel.conv_streams
    w_words = beats.kernel_beats(streams["w"], layer, p["p"])
    q_words = beats.quant_beats(streams["quant"], layer)
    for region, start, words in (("conv.w", w_start, w_words), ("conv.quant", quant_start, q_words)):
        if start + len(words) > accel.regions[region].depth:
            raise ValueError(f"{region} words {start}..{start + len(words) - 1} run past its depth "
                             f"{accel.regions[region].depth}")
    x_count, out_count = c_in * h * w, layer.c_out * out_h * out_w
    for name, value in (("input", x_count), ("output", out_count)):
        if value > accel.act_depth:
            raise ValueError(f"the layer's {name} ({value} values) does not fit an activation buffer of "
                             f"{accel.act_depth}")
    cfg = beats.unpack_fields(streams["cfg"], beats.cfg_beat(streams["cfg"], layer, h, w))
    descriptor = {"kind": accel.kinds["conv"], "src": src, "x_count": x_count, "out_count": out_count,
                  **{f"conv.cfg.{name}": value for name, value in cfg.items()},
                  "conv.w_start": w_start, "conv.w_count": len(w_words),
                  "conv.quant_start": quant_start, "conv.quant_count": len(q_words),
                  "post.top": top, "post.left": top, "post.height": h_out, "post.width": w_out,
                  "post.pool": int(pool)}
    return ConvLayerPlan(descriptor, w_words, q_words, (c_in, h, w), (layer.c_out, out_h, out_w))


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
    cycles = device.run(program.first, len(program.plans))
    size = int(np.prod(program.out_shape))
    return output_array(device.read(program.out_buffer, 0, size), program.out_shape), cycles


__all__ = ["AccelInfo", "RegionInfo", "ConvLayerPlan", "ConvProgram", "plan_conv_layer", "build_conv_program",
           "input_bytes", "output_array", "load_program", "run_conv_program"]
