"""Beat layouts are written once, as `hw.spec.fields` descriptions: the gateware's Amaranth layouts
(`hw.layouts.struct_layout`) and the spec's field tables (`field_table`) must put every field at the same bits."""

from __future__ import annotations

import pytest
from amaranth import signed, unsigned
from amaranth.lib import data

from hw.bim_unpacker import BimUnpackerParams, SparseExpanderParams, mask_row_layout
from hw.fc_engine import FcEngineParams
from hw.layouts import layout_fields, struct_layout
from hw.spec import bim_stream, fc_stream, xor_stream
from hw.spec.fields import Array, Signed, field_table, field_width, signed_fields
from hw.spec.xor import xor_matrix
from hw.xor_decoder import XorDecoderParams

XOR = [(3, 4, 1), (24, 200, 2), (5, 9, 4), (64, 512, 3), (8, 33, 8)]
BIM = [(8, 2), (32, 4), (64, 8), (7, 3), (1, 1), (3, 3), (16, 17)]
EXPANDER = [(8, 4, 2), (32, 8, 4), (7, 3, 5), (1, 1, 1)]
FC_CFG = [(4, 8, 1, 6), (100, 300, 3, 5), (1, 1, 8, 1), (4096, 777, 4, 6)]
FC_SCALE = [(1, 16, 32), (3, 5, 20), (8, 32, 2), (4, 16, 62)]

DESCRIPTIONS = (
    [pytest.param(xor_stream.beat_fields(*p), id=f"xor{p}") for p in XOR]
    + [pytest.param(bim_stream.unpacker_beat_fields(*p), id=f"bim{p}") for p in BIM]
    + [pytest.param(bim_stream.mask_row_fields(n_t), id=f"mask_row{n_t}") for n_t, _ in BIM]
    + [pytest.param(bim_stream.value_beat_fields(w, v), id=f"values{(w, v)}") for _, w, v in EXPANDER]
    + [pytest.param(bim_stream.dense_row_fields(n_t, w), id=f"dense{(n_t, w)}") for n_t, w, _ in EXPANDER]
    + [pytest.param(fc_stream.cfg_beat_fields(*p), id=f"fc_cfg{p}") for p in FC_CFG]
    + [pytest.param(fc_stream.scale_beat_fields(*p), id=f"fc_scale{p}") for p in FC_SCALE]
    + [pytest.param({"a": Signed(3), "b": Array({"x": 2, "y": Array(Signed(2), 3)}, 2), "c": {"d": 1, "e": 5}},
                    id="nested")]
)


def signed_leaves(shape, name: str = "") -> set[str]:
    """The dotted names of an Amaranth layout's signed leaf fields."""
    if isinstance(shape, data.StructLayout):
        return set().union(*(signed_leaves(f.shape, f"{name}.{m}" if name else m) for m, f in shape))
    if isinstance(shape, data.ArrayLayout):
        return set().union(*(signed_leaves(shape.elem_shape, f"{name}.{j}" if name else str(j))
                             for j in range(shape.length)))
    return {name} if shape.signed else set()


@pytest.mark.parametrize("desc", DESCRIPTIONS)
def test_struct_layout_has_the_field_table(desc):
    layout = struct_layout(desc)
    assert layout_fields(layout) == field_table(desc)
    assert layout.size == field_width(desc)
    assert signed_leaves(layout) == signed_fields(desc)


def test_field_table_names_and_positions():
    desc = {"a": Signed(3), "b": Array({"x": 2, "y": Array(1, 2)}, 2), "c": 5}
    assert field_table(desc) == {
        "a": (0, 3),
        "b.0.x": (3, 2), "b.0.y.0": (5, 1), "b.0.y.1": (6, 1),
        "b.1.x": (7, 2), "b.1.y.0": (9, 1), "b.1.y.1": (10, 1),
        "c": (11, 5),
    }
    assert field_table(Array(4, 3)) == {"0": (0, 4), "1": (4, 4), "2": (8, 4)}
    assert signed_fields(desc) == {"a"}
    assert signed_fields({"s": Array({"x": Signed(2), "y": 1}, 2)}) == {"s.0.x", "s.1.x"}
    assert signed_fields(Array(4, 3)) == frozenset()


def test_struct_layout_shapes():
    layout = struct_layout({"u": 4, "s": Signed(5), "a": Array(Signed(2), 3), "n": {"x": 1}})
    assert isinstance(layout, data.StructLayout)
    assert layout["u"].shape == unsigned(4)
    assert layout["s"].shape == signed(5)
    assert layout["a"].shape == data.ArrayLayout(signed(2), 3)
    assert layout["n"].shape == data.StructLayout({"x": unsigned(1)})
    assert struct_layout(Array(3, 2)) == data.ArrayLayout(unsigned(3), 2)


def test_known_bit_positions():
    """A few beats' fields, spelled out."""
    assert field_table(xor_stream.beat_fields(3, 4, 1)) == {"x": (0, 3), "positions.0": (3, 2), "count": (5, 1),
                                                             "last": (6, 1)}
    assert field_table(bim_stream.unpacker_beat_fields(7, 3)) == {
        "p": (0, 3), "z": (3, 7), "z_row": (10, 2), "has_p": (12, 1), "has_z": (13, 1), "first": (14, 1),
        "last": (15, 1)}
    assert field_table(fc_stream.cfg_beat_fields(100, 300, 3, 5)) == {
        "rows": (0, 7), "cols": (7, 9), "bits": (16, 2), "shift": (18, 5), "relu": (23, 1)}
    assert field_table(fc_stream.scale_beat_fields(2, 5, 20)) == {"a.0": (0, 5), "a.1": (5, 5), "bias": (10, 20)}


@pytest.mark.parametrize("n_in, n_out, max_patches", XOR)
def test_xor_decoder_layout_is_the_stream_format(n_in, n_out, max_patches):
    params = XorDecoderParams.from_matrix(xor_matrix(n_out, n_in, 1), max_patches)
    fmt = xor_stream.BeatFormat(n_in, n_out, max_patches)
    assert layout_fields(params.beat_layout) == fmt.table
    assert params.beat_layout.size == fmt.width
    assert fmt.signed == signed_leaves(params.beat_layout) == frozenset()


@pytest.mark.parametrize("n_t, r", BIM)
def test_bim_unpacker_layouts_are_the_stream_format(n_t, r):
    params = BimUnpackerParams(4, n_t, r)
    assert layout_fields(params.beat_layout) == bim_stream.UnpackerBeatFormat(n_t, r).table
    assert bim_stream.UnpackerBeatFormat(n_t, r).signed == signed_leaves(params.beat_layout) == frozenset()
    assert layout_fields(params.row_layout) == layout_fields(mask_row_layout(n_t)) == {"row": (0, n_t),
                                                                                       "last": (n_t, 1)}


@pytest.mark.parametrize("n_t, width, per_beat", EXPANDER)
def test_expander_layouts_are_the_stream_format(n_t, width, per_beat):
    params = SparseExpanderParams(n_t, width, per_beat)
    fmt = bim_stream.ExpanderFormat(n_t, width, per_beat)
    assert layout_fields(params.values_layout) == fmt.value.table
    assert layout_fields(params.dense_layout) == fmt.dense.table
    assert (fmt.value.signed, fmt.dense.signed) == (signed_leaves(params.values_layout),
                                                    signed_leaves(params.dense_layout))
    assert layout_fields(params.mask_layout) == field_table(bim_stream.mask_row_fields(n_t))


@pytest.mark.parametrize("cfg, scale", list(zip(FC_CFG, FC_SCALE)))
def test_fc_engine_layouts_are_the_stream_format(cfg, scale):
    max_rows, max_cols, max_bits, shift_bits = cfg
    _, a_bits, bias_bits = scale
    params = FcEngineParams.from_matrix(xor_matrix(4, 3, 1), 1, r=1, m_t=2, max_rows=max_rows, max_cols=max_cols,
                                        max_bits=max_bits, shift_bits=shift_bits, a_bits=a_bits, bias_bits=bias_bits)
    fmt = params.stream_format
    assert layout_fields(params.cfg_layout) == fmt.cfg.table
    assert layout_fields(params.scale_layout) == fmt.scale.table
    assert params.scale_layout["bias"].shape == signed(bias_bits)
    assert fmt.scale.signed == signed_leaves(params.scale_layout) == {"bias"}
    assert fmt.cfg.signed == signed_leaves(params.cfg_layout) == frozenset()
