"""FC layers larger than the engine or its regions run in passes of output rows (`hw.spec.fc_passes`): a pass is
whole tile rows of the layer, a compressed layer of its own whose output is exactly those rows of the layer's
(against `fc_fixed` on the planes and mask the random layer was made of, and against the compressed network's
golden forward pass); the split's shapes, words and errors; the schedule (resident while everything fits, the
largest layers streamed through one slot otherwise); `hw.plan` planning passes where it used to refuse; and on
the simulated board (Icarus) a compressed MLP whose first layer runs in passes, resident and streamed, bit-exact
with the golden backend at every layer. Slow: 784 -> 128 -> 10 and 784 -> 512 -> 10 (fc1 in 4 streamed passes) on
the virtual board of the iCEBreaker accelerator both derive (Verilator), bit-exact at every layer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_accel_fc_rtl import TINY_FC, TINY_FORMAT, random_fc

from boards import get_board
from host.accel import AccelInfo, pack_network
from host.compress.network import compress_network
from host.device import Device
from host.infer import DeviceBackend, Session, compare_traces, open_backend
from host.network import FloatNetwork, Linear, ReLU
from hw.config import MIN_CYCLES_PER_BIT
from hw.plan import PlanError, plan
from hw.spec.fc import fc_fixed
from hw.spec.fc_format import DEFAULT_FC_FORMAT, FC16_FORMAT
from hw.spec.fc_passes import needed_words, pass_layer, schedule, split_rows
from hw.spec.fc_stream import layer_streams
from sim import runner
from sim.board import simulate

#: TINY_FC's engine (4-row tiles of 8 columns, up to 12 rows, three tile rows, and 20 columns) with regions deep
#: enough for the 20 -> 20 -> 10 MLP below.
PASSES = dataclasses.replace(TINY_FC, fc_xor_depth=256, fc_bim_depth=256, fc_scale_depth=32)
FMT = PASSES.fc.stream_format


def _layer(rows: int, cols: int = 20, seed: int = 0):
    """A random layer of TINY_FORMAT (two planes, ReLU), its planes and mask (the oracle's own inputs)."""
    return random_fc(TINY_FORMAT, rows, cols, 2, True, np.random.default_rng(seed))


def _words(layer) -> dict[str, int]:
    """Words of the layer's own streams (packed for an engine of any number of rows)."""
    streams = layer_streams(dataclasses.replace(FMT, max_rows=64), layer, np.zeros(layer.shape[1], dtype=np.int64))
    return {f"fc.{name}": len(streams[name]) for name in ("xor", "bim", "scale")}


# --- one layer ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [5, 12, 22, 24])
def test_every_tile_row_split_gives_the_unsplit_rows_bit_exact(rows):
    """Cut at any tile-row boundary, the passes' outputs side by side are the unsplit layer's, which are
    `fc_fixed` of the planes and mask the layer was encoded from (not decoded from it)."""
    layer, planes, mask = _layer(rows)
    x = np.random.default_rng(1).integers(-128, 128, size=(6, 20))
    oracle = fc_fixed(x, planes, mask, layer.a, layer.bias_q, layer.shift, layer.relu)
    m = TINY_FORMAT.matrix()
    np.testing.assert_array_equal(layer.output(m, x), oracle)
    bounds = [*range(0, rows, TINY_FORMAT.m_t), rows]
    for cut in bounds[1:-1]:
        parts = [pass_layer(layer, 0, cut), pass_layer(layer, cut, rows)]
        assert [p.shape for p in parts] == [(cut, 20), (rows - cut, 20)]
        np.testing.assert_array_equal(np.concatenate([p.output(m, x) for p in parts], axis=-1), oracle)
    single = [pass_layer(layer, start, stop) for start, stop in zip(bounds, bounds[1:])]
    np.testing.assert_array_equal(np.concatenate([p.output(m, x) for p in single], axis=-1), oracle)


def test_split_rows_follows_the_engine_and_the_room():
    layer, _, _ = _layer(22)
    passes = split_rows(FMT, layer)
    assert [(p.start, p.stop) for p in passes] == [(0, 12), (12, 22)]
    # Each pass's words are what its own streams take, and the XOR and scale words add up to the layer's.
    for p in passes:
        assert dict(p.words) == _words(pass_layer(layer, p.start, p.stop))
    whole = _words(layer)
    assert sum(p.count("fc.xor") for p in passes) == whole["fc.xor"]
    assert sum(p.count("fc.scale") for p in passes) == 22
    # A layer the engine takes whole is one pass of its own words.
    small, _, _ = _layer(12)
    (one,) = split_rows(FMT, small)
    assert (one.start, one.stop, dict(one.words)) == (0, 12, _words(small))
    # A max_rows that is not whole tile rows is rounded down to them.
    odd = dataclasses.replace(FMT, max_rows=10)
    assert [(p.start, p.stop) for p in split_rows(odd, layer)] == [(0, 8), (8, 16), (16, 22)]
    # Room for two tile rows' XOR words at most: passes of at most two tile rows, each within the room.
    per_tile_row = [split_rows(dataclasses.replace(FMT, max_rows=4), layer)[k].count("fc.xor") for k in range(6)]
    room = {"fc.xor": max(a + b for a, b in zip(per_tile_row, per_tile_row[1:])), "fc.bim": 999, "fc.scale": 99}
    tight = split_rows(FMT, layer, room)
    assert all(p.count("fc.xor") <= room["fc.xor"] and p.rows <= 8 for p in tight) and len(tight) >= 3
    assert [p.start for p in tight[1:]] == [p.stop for p in tight[:-1]] and tight[-1].stop == 22


def test_split_errors_name_the_limit():
    layer, _, _ = _layer(22)
    wide, _, _ = _layer(8, cols=24)
    with pytest.raises(ValueError, match=r"^24 columns, the FC engine takes at most 20 \(max_cols; a layer is split "
                                         r"into passes by rows only\)$"):
        split_rows(FMT, wide)
    with pytest.raises(ValueError, match=r"^the FC engine takes 3 rows \(max_rows\), fewer than one tile row of 4"):
        split_rows(dataclasses.replace(FMT, max_rows=3), layer)
    with pytest.raises(ValueError, match=r"^rows 0\.\.3 \(one tile row\) need \d+ fc\.xor words, 5 are free$"):
        split_rows(FMT, layer, {"fc.xor": 5, "fc.bim": 999, "fc.scale": 99})
    for start, stop in ((0, 6), (2, 8), (8, 8), (20, 23)):
        with pytest.raises(ValueError, match=r"are not whole tile rows of 4 of a 22-row layer$"):
            pass_layer(layer, start, stop)


def test_schedule_keeps_resident_what_fits_and_streams_the_largest():
    big, _, _ = _layer(22, seed=2)
    small, _, _ = _layer(10, seed=3)
    layers = [small, big]
    total = {r: sum(_words(pass_layer(lay, p.start, p.stop))[r] for lay in layers for p in split_rows(FMT, lay))
             for r in ("fc.xor", "fc.bim", "fc.scale")}
    resident = schedule(FMT, layers, total)
    assert [(len(s.passes), s.streamed) for s in resident] == [(1, False), (2, False)]
    # One word short of holding both: the larger (by XOR words) streams, cut to the room the small one leaves.
    short = {**total, "fc.xor": total["fc.xor"] - 1}
    streamed = schedule(FMT, layers, short)
    assert [s.streamed for s in streamed] == [False, True]
    room = short["fc.xor"] - streamed[0].words("fc.xor")
    assert all(p.count("fc.xor") <= room for p in streamed[1].passes)
    # needed_words sizes regions for exactly that: with them the schedule streams at most the largest.
    need = needed_words(FMT, layers, streamed=1)
    again = schedule(FMT, layers, need)
    assert [s.streamed for s in again] == [False, True] and [len(s.passes) for s in again] == [1, 2]
    with pytest.raises(ValueError, match=r"^layer a streamed in passes: rows 0\.\.3 \(one tile row\) need \d+ "
                                         r"fc\.xor words, 3 are free$"):
        schedule(FMT, layers, {**total, "fc.xor": 3}, names=["a", "b"])


# --- a compressed network ----------------------------------------------------------------------------------------


def _mlp(sizes: tuple[int, ...], fmt, seed: int = 0):
    rng = np.random.default_rng(seed)
    layers = []
    for i, (cols, rows) in enumerate(zip(sizes, sizes[1:]), start=1):
        layers.append(Linear(f"fc{i}", rng.normal(0, cols ** -0.5, (rows, cols)).astype(np.float32),
                             rng.normal(0, 0.1, rows).astype(np.float32)))
        if i < len(sizes) - 1:
            layers.append(ReLU(f"relu{i}"))
    samples = rng.random((100, sizes[0])).astype(np.float32)
    return compress_network(FloatNetwork((sizes[0],), layers), samples, fmt=fmt, fc_sparsity=0.25).model


@pytest.fixture(scope="module")
def tiny_mlp():
    """20 -> 20 -> 10 at TINY_FORMAT: fc1 has more rows than the engine's 12."""
    return _mlp((20, 20, 10), TINY_FORMAT)


def test_the_golden_forward_pass_of_the_passes_is_the_layers(tiny_mlp):
    fc1 = tiny_mlp.fc_layers()[0]
    x = np.random.default_rng(4).integers(-128, 128, size=(8, 20))
    passes = split_rows(FMT, fc1.engine_layer())
    assert len(passes) == 2
    m = TINY_FORMAT.matrix()
    out = np.concatenate([pass_layer(fc1.engine_layer(), p.start, p.stop).output(m, x) for p in passes], axis=-1)
    np.testing.assert_array_equal(out, fc1.forward(x))


def test_the_host_packs_the_passes_the_rule_gives(tiny_mlp):
    """On PASSES fc1 runs in two resident passes from one program word; with a smaller fc.xor region it is
    streamed: its words are not in the region, each pass LOADs them (and its descriptor) per image."""
    info = PASSES.describe()
    packed = pack_network(info, tiny_mlp)
    fc1, fc2 = packed.layers
    assert [(r.start, r.stop, bool(r.loads)) for r in fc1.passes] == [(0, 12, False), (12, 20, False)]
    assert fc2.passes == () and len(packed.program) == 2 and fc2.word == 1
    assert fc1.cycles == sum(r.cycles for r in fc1.passes)
    xor_total = len(packed.regions["fc.xor"])
    small = _with_depth(info, "fc.xor", xor_total - 1)
    streamed = pack_network(small, tiny_mlp)
    assert [bool(r.loads) for r in streamed.layers[0].passes] and all(r.loads for r in streamed.layers[0].passes)
    assert len(streamed.regions["fc.xor"]) < xor_total
    per_image = streamed.per_image_bytes()
    assert per_image["passes"] >= 2 and per_image["read"] == 20 - streamed.layers[0].passes[0].stop
    assert per_image["weights_and_descriptors"] > 0


def _with_depth(info: dict, region: str, depth: int) -> dict:
    return {**info, "regions": [{**r, "depth": depth} if r["name"] == region else r for r in info["regions"]]}


# --- planned ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp_512():
    """784 -> 512 -> 10 at FC16_FORMAT: fc1 alone is more XOR words than a region can hold (65 536: LOAD's u16
    offsets), and more than the UP5K's SPRAM."""
    return _mlp((784, 512, 10), FC16_FORMAT)


@pytest.mark.cost(seconds=20)
def test_a_layer_past_the_icebreakers_regions_is_planned_in_passes(mlp_512):
    """The plan streams fc1 in passes through a slot instead of refusing, names them, and the host packs the same
    passes on the derived config."""
    model = mlp_512
    derived = plan(model, "icebreaker")
    assert derived.estimate.fits
    fc1 = derived.passes["fc1"]
    assert fc1.streamed and len(fc1.passes) >= 2 and all(p.rows <= derived.config.fc.max_rows for p in fc1.passes)
    assert fc1.passes[0].start == 0 and fc1.passes[-1].stop == 512
    assert not derived.passes["fc2"].streamed and len(derived.passes["fc2"].passes) == 1
    assert f"passes: fc1 in {len(fc1.passes)} passes of rows 0..{fc1.passes[0].stop - 1}," in derived.format()
    assert derived.describe()["passes"]["fc1"]["streamed"] is True
    packed = pack_network(derived.config.describe(), model)
    assert [(r.start, r.stop) for r in packed.layers[0].passes] == [(p.start, p.stop) for p in fc1.passes]
    for region in ("fc.xor", "fc.bim", "fc.scale"):
        slot = max(len(words) for r in packed.layers[0].passes for name, _, words in r.loads if name == region)
        assert len(packed.regions.get(region, [])) + slot <= derived.config.region(region).depth


def test_what_passes_cannot_fix_is_still_refused_in_one_line():
    """The default format's FC engine is over the UP5K's logic however few rows a pass has."""
    with pytest.raises(PlanError, match=r"^fc engine needs \d+ LC, icebreaker has 5280$"):
        plan(_mlp((64, 48, 10), DEFAULT_FC_FORMAT), "icebreaker")


# --- on the simulated board --------------------------------------------------------------------------------------


class _Smaller:
    """A device whose INFO shows a region smaller than it is: the host packs for it, the device runs it."""

    def __init__(self, device: Device, region: str, depth: int):
        self.device, self.region, self.depth = device, region, depth

    def info(self) -> dict:
        return _with_depth(self.device.info(), self.region, self.depth)

    def __getattr__(self, name: str):
        return getattr(self.device, name)


@pytest.mark.cost(seconds=40)
def test_an_mlp_in_passes_runs_bit_exact_on_the_board(tiny_mlp):
    """20 -> 20 -> 10 on PASSES (Icarus): fc1 in two resident passes, then streamed through a smaller fc.xor;
    every layer's every byte equals the golden backend's, and the RUN cycles are the passes' cycle models."""
    x = np.random.default_rng(5).integers(-128, 128, size=(3, 20)).astype(np.int8)
    golden = open_backend("golden", tiny_mlp).run(x, trace=True)
    resident_info = AccelInfo.from_info(PASSES.describe())
    xor_total = len(pack_network(resident_info, tiny_mlp).regions["fc.xor"])
    with simulate(PASSES, simulator=runner.choose(runner.TESTBENCH)) as board:
        dev = Device(board.transport, timeout=300)
        for device, passes_loaded in ((dev, False), (_Smaller(dev, "fc.xor", xor_total - 1), True)):
            backend = DeviceBackend(device, tiny_mlp, name="tiny")
            fc1 = backend.plan.packed.layers[0]
            assert len(fc1.passes) == 2 and all(bool(r.loads) == passes_loaded for r in fc1.passes)
            session = Session(backend, tiny_mlp)
            traced = session.run(x, trace=True)
            assert compare_traces(golden.layers, traced.layers) is None
            plain = session.run(x)
            np.testing.assert_array_equal(plain.logits, golden.logits)
            np.testing.assert_array_equal(traced.layers["fc1"], golden.layers["fc1"])
            expected = backend.plan.packed.expected_cycles
            assert all(abs(c - expected) <= 4 * len(backend.plan.packed.layers) for c in session.cycles), \
                (session.cycles, expected)


@pytest.mark.slow
@pytest.mark.cost(seconds=45)
def test_784_mlps_run_bit_exact_on_the_derived_icebreaker_board(mlp_512):
    """784 -> 128 -> 10 and 784 -> 512 -> 10 derive the same iCEBreaker accelerator (the 512-row layer in 4 streamed
    passes of 128 rows). On its virtual board (Verilator; the UART at the fastest baud the clock allows, so the
    181 648 bytes an image of the larger one LOADs simulate in a second) both run on two inputs with every byte of
    every layer equal to the golden backend's and the RUN cycles those of the (passes') cycle models."""
    baud = get_board("icebreaker").clock_hz // MIN_CYCLES_PER_BIT
    mlp_128 = _mlp((784, 128, 10), FC16_FORMAT)
    derived = plan(mlp_512, "icebreaker", baud=baud)
    assert plan(mlp_128, "icebreaker", baud=baud).config == derived.config
    x = np.random.default_rng(7).integers(-128, 128, size=(2, 784)).astype(np.int8)
    with simulate(derived.config) as board:
        dev = Device(board.transport, timeout=600)
        for model, passes in ((mlp_128, 0), (mlp_512, 4)):
            golden = open_backend("golden", model).run(x, trace=True)
            backend = DeviceBackend(dev, model, name="icebreaker")
            fc1 = backend.plan.packed.layers[0]
            assert len(fc1.passes) == passes and all(run.loads for run in fc1.passes)
            if passes:
                assert [(r.start, r.stop) for r in fc1.passes] == [(p.start, p.stop)
                                                                  for p in derived.passes["fc1"].passes]
            session = Session(backend, model)
            traced = session.run(x, trace=True)
            plain = session.run(x)
            assert compare_traces(golden.layers, traced.layers) is None
            np.testing.assert_array_equal(plain.logits, golden.logits)
            expected = backend.plan.packed.expected_cycles
            assert all(abs(c - expected) <= 16 for c in session.cycles), (session.cycles, expected)
            per_image = backend.bytes_loaded()["passes_per_sample"]
            assert per_image == backend.plan.packed.per_image_bytes()["load"] and (per_image > 180_000) == (passes > 0)
