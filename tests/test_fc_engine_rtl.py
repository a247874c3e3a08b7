"""The sparse-quantized FC engine in RTL against `hw.spec.fc.fc_fixed`, bit-exact, under cocotb.

Each case runs several layers back to back through one engine, every stream with random gaps and the output
with random backpressure, then again at full rate, where each layer's compute phase must take one slice per
cycle. Weights are random bit-planes XOR-encoded by `host.compress.xor.encode_slices` (patches included) on
the tile-major layout, masks the Boolean product of random BIM factors (or `host.compress.bim.factorize`
for the LeNet-5 fc1-sized layer). The expected outputs come from the original planes and mask, not from the
decoded stream, so the whole chain is checked against the spec.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from host.compress.bim import factorize
from host.compress.xor import encode_slices
from hw.fc_engine import FcEngine, FcEngineParams
from hw.spec.bim import tiles_to_mask
from hw.spec.fc import fc_accumulate, fc_fixed
from hw.spec.fc_stream import FcLayer, layer_streams, output_beats, xor_targets
from hw.spec.xor import xor_matrix
from sim import runner


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a case: its shape, planes, ReLU, and how its constants are drawn."""

    rows: int
    cols: int
    bits: int
    relu: bool
    shift: str = "fit"  # "fit" (outputs spread over int8), "zero", "max"
    kind: str = "random"  # "random", "extreme" (all kept, x = -128, a and |bias| at their maximum)


def fitted_shift(acc: np.ndarray, limit: int, out_bits: int) -> int:
    """A shift that brings the largest |acc| below 2^out_bits: outputs spread over that many bits."""
    return int(min(limit, max(0, int(np.abs(acc).max()).bit_length() - out_bits)))


def make_layer(params: FcEngineParams, m: np.ndarray, spec: LayerSpec, rng: np.random.Generator,
               factors: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[FcLayer, np.ndarray, np.ndarray]:
    """A compressed random layer of `spec`, an input vector and its golden output (from the original planes)."""
    rows, cols, q = spec.rows, spec.cols, spec.bits
    layout = params.layout
    t_r, t_c = layout.grid((rows, cols))
    if factors is not None:
        p, z = factors
    elif spec.kind == "extreme":
        p = np.ones((t_r, t_c, params.m_t, params.r), dtype=bool)
        z = np.ones((t_r, t_c, params.r, params.n_t), dtype=bool)
    else:
        p = rng.random((t_r, t_c, params.m_t, params.r)) < 0.5
        z = rng.random((t_r, t_c, params.r, params.n_t)) < 0.45
    mask = tiles_to_mask(p, z, (rows, cols))
    a_max = (1 << params.a_bits) - 1
    b_lim = 1 << (params.bias_bits - 1)
    if spec.kind == "extreme":
        # Every product at its largest: row r's planes all -1 (r even) or all +1 (r odd) against x = -128.
        planes = np.broadcast_to((np.arange(rows) % 2)[None, :, None], (q, rows, cols)).astype(np.uint8)
        x = np.full(cols, -128)
        a = np.full((rows, q), a_max)
        bias = np.where(np.arange(rows) % 2 == 0, b_lim - 1, -b_lim)
    else:
        planes = rng.integers(0, 2, size=(q, rows, cols), dtype=np.uint8)
        x = rng.integers(-128, 128, size=cols)
        a = rng.integers(0, a_max + 1, size=(rows, q))
        bias = np.zeros(rows, dtype=np.int64)
    acc = fc_accumulate(x, planes, mask, a) + bias
    # Random layers saturate some outputs; extreme ones none, so a wrapped accumulator would show.
    fit = fitted_shift(acc, params.max_shift, 8 if spec.kind == "random" else 7)
    shift = {"fit": fit, "zero": 0, "max": params.max_shift}[spec.shift]
    if spec.kind == "random":
        spread = max(1, min(b_lim - 1, 64 << shift))
        bias = rng.integers(-spread, spread + 1, size=rows)
    targets, care = xor_targets(planes, mask, layout)
    xor_x, counts, positions = encode_slices(m, targets, care)
    layer = FcLayer(cols=cols, xor_x=xor_x, patch_counts=counts, patch_positions=positions, p=p, z=z, a=a,
                    bias_q=bias, shift=shift, relu=spec.relu)
    y = fc_fixed(x, planes, mask, a, bias, shift, spec.relu)
    assert np.array_equal(layer.output(m, x), y)  # the encoding keeps every kept bit
    return layer, x, y


def case_streams(params: FcEngineParams, m: np.ndarray, layers: list[tuple[FcLayer, np.ndarray, np.ndarray]]) -> dict:
    """All layers' beats, port by port, and their expected outputs, as the streams testbench reads them."""
    fmt = params.stream_format
    inputs: dict[str, list[str]] = {port: [] for port in ("cfg", "x", "scale", "xor", "bim")}
    expected: list[str] = []
    for layer, x, y in layers:
        for port, beats in layer_streams(fmt, layer, x).items():
            inputs[port] += [f"{b:x}" for b in beats]
        expected += [f"{b:x}" for b in output_beats(y)]
    slices = sum(layer.bits * layer.slices_per_plane for layer, _, _ in layers)
    return {"inputs": inputs, "expected": expected, "compute_cycles": slices + 64 * len(layers)}


def run_case(tmp_path: Path, params: FcEngineParams, m: np.ndarray, layers, name: str) -> dict:
    """Run the FC engine testbench on `layers`; return the full-rate report (handshakes and compute phases)."""
    streams = case_streams(params, m, layers)
    report = tmp_path / "report.json"
    data = tmp_path / "fc.json"
    data.write_text(json.dumps({**streams, "gap_probability": 0.3, "ready_probability": 0.6, "report": str(report)}))
    runner.run(runner.build(FcEngine(params), name), "sim.tb.fc_engine", {"data": str(data)})
    return json.loads(report.read_text())


def xor_beats(layer: FcLayer, max_patches: int) -> int:
    """Decoder beats of a layer: one per slice, more for slices with over max_patches patches."""
    return int(np.maximum(1, -(-np.asarray(layer.patch_counts) // max_patches)).sum())


def check_compute_rate(params: FcEngineParams, layers, report: dict) -> list[dict]:
    """Per layer (full-rate run): every slice taken in the compute phase, which lasts one cycle per slice plus
    at most the input streams' extra beats (continuation XOR beats; Z-only BIM beats when r > m_t) and one."""
    phases = report["compute"]
    assert len(phases) == len(layers)
    for index, ((layer, _, _), phase) in enumerate(zip(layers, phases)):
        slices = layer.bits * layer.slices_per_plane
        assert phase["slices"] == slices, f"layer {index}: {phase}"
        extra_xor = xor_beats(layer, params.max_patches) - slices
        extra_bim = (slices // params.m_t - 1) * max(0, params.r - params.m_t)
        assert slices <= phase["cycles"] <= slices + extra_xor + extra_bim + 1, (
            f"layer {index}: {phase}, {extra_xor} extra XOR beats, {extra_bim} extra BIM beats")
    return phases


def small_params(m: np.ndarray, **kwargs) -> FcEngineParams:
    return FcEngineParams.from_matrix(m, **kwargs)


# (XOR n_out, n_in, engine params, layers). m_t = 1 puts updates of one accumulator row on consecutive slices
# (at full rate, consecutive cycles: the read-modify-write hazard); r = 3 > m_t = 2 makes the unpacker insert
# Z-only beats between tiles; narrow a, bias and shift fields, a two-input adder tree, and layers at max_cols
# and max_bits with every product at its largest.
CASES = {
    "mt1-r1-q2": (8, 4, dict(max_patches=1, r=1, m_t=1, max_rows=9, max_cols=21, max_bits=2), [
        LayerSpec(7, 19, 2, True), LayerSpec(9, 21, 1, False, shift="zero"), LayerSpec(1, 1, 2, False),
        LayerSpec(5, 8, 1, True, shift="max"), LayerSpec(3, 21, 2, False, kind="extreme", shift="max"),
        LayerSpec(2, 21, 2, False, kind="extreme")]),
    "mt2-r3-fanin2": (12, 5, dict(max_patches=1, r=3, m_t=2, max_rows=11, max_cols=30, max_bits=2, tree_fanin=2), [
        LayerSpec(11, 25, 2, False), LayerSpec(3, 30, 1, True), LayerSpec(6, 12, 2, True)]),
    "mt3-r1-narrow": (16, 7, dict(max_patches=2, r=1, m_t=3, max_rows=13, max_cols=40, max_bits=1, a_bits=4,
                                  bias_bits=12, shift_bits=4), [
        LayerSpec(13, 40, 1, False), LayerSpec(4, 17, 1, True), LayerSpec(2, 40, 1, False, kind="extreme"),
        LayerSpec(13, 1, 1, False, shift="max")]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fc_engine_matches_golden(tmp_path: Path, name: str):
    n_out, n_in, kwargs, specs = CASES[name]
    seed = n_out * 100 + n_in
    rng = np.random.default_rng(seed)
    m = xor_matrix(n_out, n_in, seed)
    params = small_params(m, **kwargs)
    layers = [make_layer(params, m, spec, rng) for spec in specs]
    assert sum(int(layer.patch_counts.max()) > params.max_patches for layer, _, _ in layers) >= 1
    report = run_case(tmp_path, params, m, layers, "fc_engine")
    check_compute_rate(params, layers, report)


def test_fc_engine_full_rate(tmp_path: Path):
    """m_t >= r and no slice over max_patches patches: the compute phase is exactly one cycle per slice."""
    n_out, n_in = 16, 12
    m = xor_matrix(n_out, n_in, 7)
    params = small_params(m, max_patches=4, r=2, m_t=4, max_rows=20, max_cols=64, max_bits=2)
    rng = np.random.default_rng(7)
    layers = [make_layer(params, m, spec, rng) for spec in (LayerSpec(17, 50, 2, True), LayerSpec(20, 64, 1, False))]
    for layer, _, _ in layers:
        assert layer.patch_counts.max() <= params.max_patches
    report = run_case(tmp_path, params, m, layers, "fc_engine")
    for (layer, _, _), phase in zip(layers, check_compute_rate(params, layers, report)):
        assert phase["cycles"] == phase["slices"] == layer.bits * layer.slices_per_plane
        # The decoder takes a beat on every compute cycle but for the few it had already taken during the load.
        assert phase["xor_beats"] >= phase["cycles"] - params.xor.latency


def lenet_fc(rng: np.random.Generator) -> tuple[FcEngineParams, np.ndarray, list]:
    """LeNet-5 fc1 (120 x 400, q = 1) then fc2 (84 x 120, q = 2): 90 % sparse BIM masks of 48 x 64 tiles at
    r = 3 from `factorize`, XOR n_out = 64 with patches, one engine sized for fc1."""
    n_out, n_in, m_t, r = 64, 12, 48, 3
    m = xor_matrix(n_out, n_in, 5)
    params = small_params(m, max_patches=2, r=r, m_t=m_t, max_rows=120, max_cols=400, max_bits=2)
    layers = []
    for rows, cols, q in ((120, 400, 1), (84, 120, 2)):
        bim = factorize(rng.standard_normal((rows, cols)), 0.9, m_t, n_out, r, seed=0)
        layers.append(make_layer(params, m, LayerSpec(rows, cols, q, True), rng, factors=(bim.p, bim.z)))
    return params, m, layers


def test_fc_engine_lenet_fc(tmp_path: Path):
    rng = np.random.default_rng(120400)
    params, m, layers = lenet_fc(rng)
    for layer, _, _ in layers:
        assert 0.88 <= 1 - layer.mask().mean() <= 0.92
    assert layers[0][0].patch_counts.max() > params.max_patches  # some slices take several decoder beats
    report = run_case(tmp_path, params, m, layers, "fc_engine")
    for (layer, _, _), phase in zip(layers, check_compute_rate(params, layers, report)):
        assert phase["cycles"] <= xor_beats(layer, params.max_patches) + 1


# --- parameters -------------------------------------------------------------------------------------------------

TOY_M = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]


def toy(**overrides) -> FcEngineParams:
    fields = {"n_in": 3, "n_out": 4, "max_patches": 1, "m": TOY_M, "r": 1, "m_t": 2, "max_rows": 4, "max_cols": 8,
              **overrides}
    return FcEngineParams(**fields)


@pytest.mark.parametrize("overrides, message", [
    ({"r": 0}, r"^r must be >= 1, got 0$"),
    ({"m_t": 0}, r"^m_t must be >= 1, got 0$"),
    ({"m_t": 2.0}, r"^m_t must be an integer, got 2\.0$"),
    ({"max_rows": 0}, r"^max_rows must be >= 1, got 0$"),
    ({"max_cols": -3}, r"^max_cols must be >= 1, got -3$"),
    ({"max_bits": 0}, r"^max_bits must be in 1\.\.8, got 0$"),
    ({"max_bits": 9}, r"^max_bits must be in 1\.\.8, got 9$"),
    ({"a_bits": 0}, r"^a_bits must be in 1\.\.32, got 0$"),
    ({"a_bits": True}, r"^a_bits must be an integer, got True$"),
    ({"bias_bits": 1}, r"^bias_bits must be in 2\.\.62, got 1$"),
    ({"shift_bits": 7}, r"^shift_bits must be in 1\.\.6, got 7$"),
    ({"tree_fanin": 1}, r"^tree_fanin must be >= 2, got 1$"),
    ({"n_out": 3}, r"^n_out must be greater than n_in=3, got 3$"),
    ({"max_patches": 0}, r"^max_patches must be >= 1, got 0$"),
    ({"m": TOY_M[:3]}, r"^m must have shape \(n_out, n_in\) = \(4, 3\), got \(3, 3\)$"),
    ({"a_bits": 32, "bias_bits": 62, "max_cols": 1 << 20, "max_bits": 8},
     r"^a_bits, bias_bits, max_cols and max_bits need a 64-bit"),
])
def test_bad_parameters_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        toy(**overrides)


def test_engine_takes_only_params():
    with pytest.raises(TypeError, match=r"^params must be a FcEngineParams, got dict$"):
        FcEngine({"n_in": 3})


def test_params_derived_widths():
    p = toy(m=np.array(TOY_M), max_rows=np.int64(4))
    assert p.m == (0b001, 0b010, 0b100, 0b111) and type(p.max_rows) is int and hash(p) == hash(toy())
    assert p.n_t == 4 and p.x_depth == 2 and p.tree_stages == 1 and p.latency == 4
    # |acc| <= 2^31 + 128 * 8 * 1 * (2^16 - 1) < 2^32: 32 bits and a sign.
    assert p.acc_bits == 33 and p.product_bits == (512 * 65535).bit_length() + 1
    assert toy(n_in=3, n_out=4, tree_fanin=2).tree_stages == 2
    assert toy(max_bits=3).describe()["max_bits"] == 3


def test_layouts_match_stream_format():
    """The engine's StructLayouts put every field where `hw.spec.fc_stream` packs it."""
    p = toy(max_rows=100, max_cols=300, max_bits=3, a_bits=5, bias_bits=20, shift_bits=5)
    fmt = p.stream_format
    offset = 0
    for (name, width), (field_name, field) in zip(fmt.cfg_fields, p.cfg_layout):
        assert (name, offset, width) == (field_name, field.offset, field.width)
        offset += width
    assert p.cfg_layout.size == offset
    assert p.scale_layout.size == fmt.scale_width
    beat = fmt.pack_scale(np.array([[3, 31, 0]]), np.array([-5]))[0]
    a_field, bias_field = p.scale_layout["a"], p.scale_layout["bias"]
    assert [beat >> (a_field.offset + i * 5) & 31 for i in range(3)] == [3, 31, 0]
    assert beat >> bias_field.offset == (-5) & ((1 << 20) - 1)
    assert fmt.max_shift == p.max_shift == 31
