"""The sweep's grid: parameters named by their dotted path in `AcceleratorConfig`, values parsed and every point
validated by constructing its config before anything builds.

A parameter is a field of the config (`baud`, `act_depth`, `fc_xor_depth`, ...), of one of its engines (`conv.p`,
`conv.b`, `conv.spec.data_bits`, `fc.tree_fanin`, `fc.n_out`, ...) or a build option of `hw.build.build` (`seed`,
`router`, `placer`, `lut_mapper`). The FC engine's format fields (`fc.n_in`, `fc.n_out`, `fc.seed`, `fc.max_patches`,
`fc.m_t`, `fc.r`, `fc.a_bits`, `fc.max_bits`) make a new `FcFormat` and the engine is rebuilt from it
(`FcEngineParams.from_format`), since its XOR matrix follows them; `conv.max_groups` follows `conv.max_c_in` and
`conv.n` unless it is swept itself, as it does in `SpectralConvParams`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from boards import get_board
from hw.spec.params import check_int

from ..build import DEFAULT_PLACER, DEFAULT_ROUTER, LUT_MAPPERS, PLACERS, ROUTERS
from ..config import CONFIGS, AcceleratorConfig
from ..fc_engine import FcEngineParams
from ..spectral.spectral_mac import canonical_bins
from ..toolchain import ABC_LUT_MAPPING

#: Build options a point may set (`hw.build.build`'s keywords) and their defaults; lut_mapper None: hw.build's
#: own choice ("abc" for the conv engine on ECP5, else "abc9").
BUILD_OPTIONS: dict[str, Any] = {"seed": 1, "router": DEFAULT_ROUTER, "placer": DEFAULT_PLACER, "lut_mapper": None}
#: Config fields that are no grid parameter, and why.
NOT_SWEPT = {"board": "the board is --board", "blocks": "it holds no engine parameters",
             "fc.m": "it follows fc.n_out, fc.n_in and fc.seed",
             "conv.spec.fwd_shifts": "it is derived from the widths unless set as a whole"}
#: FC engine fields that are `FcFormat` fields (engine name -> format name).
FC_FORMAT_FIELDS = {"n_in": "n_in", "n_out": "n_out", "seed": "seed", "max_patches": "max_patches", "m_t": "m_t",
                    "r": "r", "a_bits": "a_bits", "max_bits": "max_planes"}


class GridError(ValueError):
    """A grid that cannot be swept: one line naming the parameter and what it takes."""


@dataclass(frozen=True)
class Param:
    """One grid parameter: its dotted name, the kind of value it takes and its value on the base config."""

    name: str
    kind: str  # "int", "int|none", "float", "bool", "str", "names" ('+'-joined strings), "ints" ('+'-joined)
    base: Any


def _kind(annotation: str) -> str | None:
    """The kind of value a field of this annotation (a string, as `from __future__ import annotations` leaves
    it) takes on the command line; None: none the grid parses."""
    text = annotation.replace(" ", "")
    if text.startswith("tuple[str"):
        return "names"
    if text.startswith("tuple[int"):
        return "ints"
    return {"int": "int", "int|None": "int|none", "float": "float", "bool": "bool", "str": "str"}.get(text)


def parameters(base: AcceleratorConfig) -> dict[str, Param]:
    """Every grid parameter of `base`: build options, then config fields, then its engines' (dotted), by name."""
    out = {name: Param(name, "str" if isinstance(value, str) or value is None else "int", value)
           for name, value in BUILD_OPTIONS.items()}

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            if not f.init:
                continue
            name, value = prefix + f.name, getattr(obj, f.name)
            if name in NOT_SWEPT:
                continue
            if dataclasses.is_dataclass(value):
                walk(value, name + ".")
            elif (kind := _kind(str(f.type))) is not None:
                out[name] = Param(name, kind, value)

    walk(base, "")
    return out


def parse_value(param: Param, text: str) -> Any:
    """One command-line value of `param`; GridError naming it and what it takes."""
    def bad(what: str) -> GridError:
        return GridError(f"--grid {param.name}={text}: {param.name} takes {what}")

    kind = param.kind
    if kind == "str":
        return text
    if kind == "bool":
        lowered = text.lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
            raise bad("true or false")
        return lowered in ("true", "1", "yes")
    if kind == "names":
        return () if text.lower() == "none" else tuple(text.split("+"))
    try:
        if kind == "float":
            return float(text)
        if kind == "ints":
            return tuple(int(v) for v in text.split("+"))
        if kind == "int|none" and text.lower() == "none":
            return None
        return int(text)
    except ValueError:
        raise bad({"float": "numbers", "ints": "'+'-joined integers", "int|none": "integers or none"}
                  .get(kind, "integers")) from None


def parse_grid(specs: Sequence[str], base: AcceleratorConfig) -> dict[str, list[Any]]:
    """`--grid NAME=V1,V2,...` arguments as {name: values}, in the order given; GridError (one line) for an unknown
    parameter, a value of the wrong kind, a parameter or a value given twice."""
    known = parameters(base)
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip()
        if not sep or not name or not values:
            raise GridError(f"--grid {spec}: expected NAME=V1,V2,... (e.g. seed=1,2)")
        if name not in known:
            raise GridError(f"--grid {spec}: {_unknown(name, base, known)}")
        if name in grid:
            raise GridError(f"--grid {name}: given twice")
        parsed = [parse_value(known[name], text.strip()) for text in values.split(",")]
        for value, text in zip(parsed, values.split(",")):
            if parsed.count(value) > 1:
                raise GridError(f"--grid {name}: value {text.strip()} given twice")
        grid[name] = parsed
    return grid


def _unknown(name: str, base: AcceleratorConfig, known: dict[str, Param]) -> str:
    if name in NOT_SWEPT:
        return f"{name} is not a grid parameter ({NOT_SWEPT[name]})"
    engine = name.split(".")[0]
    if engine in ("conv", "fc") and getattr(base, engine) is None:
        return f"this config has no {engine} engine, so no {name}"
    return f"no parameter {name}; this config's: {', '.join(known)}"


@dataclass(frozen=True)
class Point:
    """One point of the grid: its values (grid order), its config and build options, its key."""

    index: int
    values: dict[str, Any]
    config: AcceleratorConfig
    build: dict[str, Any]

    @property
    def label(self) -> str:
        """The point's grid values, e.g. "seed=1 fc.tree_fanin=2" (the base config: "base")."""
        return " ".join(f"{name}={_show(value)}" for name, value in self.values.items()) or "base"

    @property
    def key(self) -> str:
        """Hash of everything the build depends on: the whole config and the build options (16 hex digits)."""
        return point_key(self.config, self.build)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "+".join(map(str, value)) or "none"
    return str(value).lower() if isinstance(value, bool) or value is None else str(value)


def point_key(config: AcceleratorConfig, build: dict[str, Any]) -> str:
    """Hash (16 hex digits) of the config's every field, nested ones included, and the build options."""
    text = json.dumps({"config": dataclasses.asdict(config), "build": build}, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def apply(base: AcceleratorConfig, values: dict[str, Any]) -> tuple[AcceleratorConfig, dict[str, Any]]:
    """The config and build options of one point: `base` with `values` (grid names) set; ValueError from the
    constructors (naming their field) for a value out of range."""
    build = {**BUILD_OPTIONS, **{k: v for k, v in values.items() if k in BUILD_OPTIONS}}
    check_int("seed", build["seed"], 0, 2**31 - 1)
    if build["router"] not in ROUTERS:
        raise ValueError(f"router must be one of {', '.join(ROUTERS)}, got {build['router']!r}")
    if build["placer"] not in PLACERS:
        raise ValueError(f"placer must be one of {', '.join(PLACERS)}, got {build['placer']!r}")
    family = get_board(base.board).family
    if build["lut_mapper"] is not None:
        if build["lut_mapper"] not in LUT_MAPPERS:
            raise ValueError(f"lut_mapper must be one of {', '.join(LUT_MAPPERS)}, got {build['lut_mapper']!r}")
        if build["lut_mapper"] == "abc" and family not in ABC_LUT_MAPPING:
            raise ValueError(f"lut_mapper 'abc' is available for {', '.join(ABC_LUT_MAPPING)}, not {family}")
    fields = {k: v for k, v in values.items() if k not in BUILD_OPTIONS}
    top = {k: v for k, v in fields.items() if "." not in k}
    changes: dict[str, Any] = dict(top)
    conv = {k[len("conv."):]: v for k, v in fields.items() if k.startswith("conv.")}
    if conv:
        changes["conv"] = _conv(base.conv, conv)
    fc = {k[len("fc."):]: v for k, v in fields.items() if k.startswith("fc.")}
    if fc:
        changes["fc"] = _fc(base.fc, fc)
    return (dataclasses.replace(base, **changes) if changes else base), build


def _conv(conv: Any, values: dict[str, Any]) -> Any:
    spec = {k[len("spec."):]: v for k, v in values.items() if k.startswith("spec.")}
    own = {k: v for k, v in values.items() if not k.startswith("spec.")}
    if spec:
        own["spec"] = dataclasses.replace(conv.spec, **spec)
    # max_groups defaults to the worst case of max_c_in and n; it follows them unless swept itself.
    if "max_groups" not in own and conv.max_groups == conv.max_c_in * len(canonical_bins(conv.n)):
        own["max_groups"] = None
    return dataclasses.replace(conv, **own)


def _fc(fc: FcEngineParams, values: dict[str, Any]) -> FcEngineParams:
    fmt_changes = {FC_FORMAT_FIELDS[k]: v for k, v in values.items() if k in FC_FORMAT_FIELDS}
    own = {k: v for k, v in values.items() if k not in FC_FORMAT_FIELDS}
    if not fmt_changes:
        return dataclasses.replace(fc, **own)
    fmt = fc.fc_format
    try:
        fmt = dataclasses.replace(fmt, **fmt_changes)
    except ValueError as error:  # FcFormat names max_planes, the engine's max_bits
        message = str(error)
        raise ValueError(message.replace("max_planes", "max_bits", 1) if message.startswith("max_planes")
                         else message) from None
    keep = ("max_rows", "max_cols", "bias_bits", "shift_bits", "xor_fanin", "tree_fanin", "x_lane_writes")
    return FcEngineParams.from_format(fmt, **{k: own.get(k, getattr(fc, k)) for k in keep})


def grid_points(config_name: str, board: str | None, grid: dict[str, list[Any]]) -> list[Point]:
    """Every point of the grid's cross product (the last parameter varying fastest), each config constructed:
    GridError (one line naming the point's parameter and the allowed range) for the first that is not valid."""
    overrides = {"board": board} if board else {}
    base = CONFIGS[config_name](**overrides)
    points = []
    names = list(grid)
    for index, combo in enumerate(itertools.product(*grid.values()) if grid else [()]):
        values = dict(zip(names, combo))
        try:
            config, build = apply(base, values)
        except ValueError as error:
            raise GridError(f"{_blame(str(error), values)}: {error}") from None
        points.append(Point(index, values, config, build))
    seen: dict[str, Point] = {}
    for point in points:  # two points of one build would share (and race for) one directory
        if (twin := seen.setdefault(point.key, point)) is not point:
            raise GridError(f"points {twin.label} and {point.label} are the same build (the same config and build "
                            "options): drop one of the values")
    return points


def _blame(message: str, values: dict[str, Any]) -> str:
    """The grid assignment a constructor's message is about (its field name comes first), else the whole point."""
    field = message.split(" ", 1)[0].strip("'\":,")
    for name, value in values.items():
        if name == field or name.endswith("." + field):
            return f"--grid {name}={_show(value)}"
    return "point " + " ".join(f"{name}={_show(value)}" for name, value in values.items())


__all__ = ["BUILD_OPTIONS", "GridError", "Param", "Point", "parameters", "parse_value", "parse_grid", "apply",
           "point_key", "grid_points"]
