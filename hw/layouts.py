"""Amaranth data layouts as flat field tables, the form INFO publishes and `hw.spec.fields` packs, and `pack`,
a nested value packed straight into a layout's bits (for testbenches).

A field table maps a dotted name ("group.lanes.0.index") to (offset, width), offsets from the word's LSB.
Nested structs join their names with dots, arrays use the element number as the name part.
"""

from __future__ import annotations

from typing import Any

from amaranth import Shape
from amaranth.lib import data


def layout_fields(layout: Any, prefix: str = "") -> dict[str, tuple[int, int]]:
    """The leaf fields of a struct or array layout as {dotted name: (offset, width)}."""
    fields: dict[str, tuple[int, int]] = {}
    _flatten(layout, prefix, 0, fields)
    return fields


def _flatten(shape: Any, name: str, offset: int, out: dict[str, tuple[int, int]]) -> None:
    if isinstance(shape, data.StructLayout):
        for member, field in shape:
            _flatten(field.shape, f"{name}.{member}" if name else member, offset + field.offset, out)
    elif isinstance(shape, data.ArrayLayout):
        size = _width(shape.elem_shape)
        for j in range(shape.length):
            _flatten(shape.elem_shape, f"{name}.{j}" if name else str(j), offset + j * size, out)
    else:
        out[name] = (offset, _width(shape))


def _width(shape: Any) -> int:
    return shape.size if isinstance(shape, data.Layout) else Shape.cast(shape).width


def pack(shape: Any, value: Any) -> int:
    """A value of `shape` as the unsigned integer Amaranth lays out: dicts for structs (missing fields 0),
    sequences for arrays, ints (two's complement) otherwise."""
    if isinstance(shape, data.StructLayout):
        return sum(pack(field.shape, value.get(name, 0)) << field.offset for name, field in shape)
    if isinstance(shape, data.ArrayLayout):
        size = _width(shape.elem_shape)
        return sum(pack(shape.elem_shape, v) << (j * size) for j, v in enumerate(value))
    return int(value) & ((1 << _width(shape)) - 1)


def fields_json(layout: Any) -> list[dict[str, Any]]:
    """`layout_fields` as JSON-ready records {name, offset, width}, LSB first."""
    return [{"name": name, "offset": offset, "width": width} for name, (offset, width) in layout_fields(layout).items()]
