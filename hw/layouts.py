"""Amaranth data layouts as flat field tables, the form INFO publishes and `hw.spec.fields` packs; `struct_layout`,
the Amaranth layout of a `hw.spec.fields` description; and `pack`, a nested value packed straight into a layout's
bits (for testbenches).

A field table maps a dotted name ("group.lanes.0.index") to (offset, width), offsets from the word's LSB.
Nested structs join their names with dots, arrays use the element number as the name part.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from amaranth import Shape, signed, unsigned
from amaranth.lib import data

from hw.spec.fields import Array, Description, Field, Signed


def struct_layout(desc: Description | Array) -> data.Layout:
    """The Amaranth layout of a `hw.spec.fields` description: int widths unsigned, `Signed` signed, `Array`
    an ArrayLayout, nested descriptions StructLayouts; its `layout_fields` are the description's `field_table`."""
    return _shape(desc)


def _shape(field: Field) -> Any:
    if isinstance(field, Signed):
        return signed(field.width)
    if isinstance(field, Array):
        return data.ArrayLayout(_shape(field.elem), field.count)
    if isinstance(field, Mapping):
        return data.StructLayout({name: _shape(member) for name, member in field.items()})
    return unsigned(field)


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
