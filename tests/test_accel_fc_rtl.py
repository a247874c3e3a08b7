"""The FC engine inside the accelerator: host packing from INFO, and whole programs through the RTL's byte streams.

The quick RTL case is a tiny FC-only device running three random FC layers (`hw.spec.fc_stream` layers,
golden outputs from `fc_fixed` on the original planes and mask) in one RUN and then one by one, every
intermediate read back, plus every error the FC regions and descriptors add, with the device checked usable
afterwards. The slow case is the whole compressed LeNet-5 of `models/lenet5_full.npz` on
`AcceleratorConfig.lenet5()` with MNIST test images, compared bit for bit with `host.lenet5.compressed`'s golden
path, and its cycles per image split conv / FC. The virtual board served with `--config fc_only` runs the FC
part of LeNet-5 compressed for that config's format through `host.device` and the `host.accel` helpers.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from test_accel_rtl import Script, play

from host.accel import AccelInfo, Packed, input_bytes, pack_model, pack_program, plan_fc_layer
from host.compress.xor import encode_slices
from host.device import load_payloads, read_payloads, run_payload
from host.lenet5.compressed import conv_features, fc_forward, load_model
from hw.config import CONFIGS, REGION_IDS, AcceleratorConfig
from hw.fc_engine import FcEngineParams
from hw.layouts import layout_fields, pack
from hw.spec.bim import tiles_to_mask
from hw.spec.fc import fc_accumulate, fc_fixed
from hw.spec.fc_format import DEFAULT_FC_FORMAT, FC16_FORMAT, FcFormat
from hw.spec.fc_stream import FcLayer, xor_targets
from hw.spec.protocol import Command, Status
from sim import runner

MODEL = Path(__file__).resolve().parent.parent / "models" / "lenet5_full.npz"
#: LeNet-5 compressed for `FC16_FORMAT`, the format of `AcceleratorConfig.fc_only()`.
MODEL_FC16 = MODEL.with_name("lenet5_fc16.npz")

TINY_FORMAT = FcFormat(n_in=3, n_out=8, seed=1, max_patches=2, m_t=4, r=2, a_bits=8, max_planes=2)
TINY_FC = AcceleratorConfig(fc=FcEngineParams.from_format(TINY_FORMAT, max_rows=12, max_cols=20), act_depth=24,
                            program_depth=4, fc_xor_depth=128, fc_bim_depth=128, fc_scale_depth=24, max_payload=64)


def random_fc(fmt: FcFormat, rows: int, cols: int, bits: int, relu: bool, rng: np.random.Generator,
              ) -> tuple[FcLayer, np.ndarray, np.ndarray]:
    """A random compressed layer of `fmt` (about a quarter of its weights kept), its planes and its mask."""
    layout = fmt.layout
    t_r, t_c = layout.grid((rows, cols))
    p = rng.random((t_r, t_c, fmt.m_t, fmt.r)) < 0.5
    z = rng.random((t_r, t_c, fmt.r, fmt.n_t)) < 0.5
    mask = tiles_to_mask(p, z, (rows, cols))
    planes = rng.integers(0, 2, size=(bits, rows, cols), dtype=np.uint8)
    a = rng.integers(0, fmt.a_max + 1, size=(rows, bits))
    probe = fc_accumulate(rng.integers(-128, 128, size=(8, cols)), planes, mask, a)
    shift = max(0, int(np.abs(probe).max()).bit_length() - 8)  # outputs spread over int8, some saturate
    bias = rng.integers(-(64 << shift), (64 << shift) + 1, size=rows)
    xor_x, counts, positions = encode_slices(fmt.matrix(), *xor_targets(planes, mask, layout))
    layer = FcLayer(cols=cols, xor_x=xor_x, patch_counts=counts, patch_positions=positions, p=p, z=z, a=a,
                    bias_q=bias, shift=shift, relu=relu)
    return layer, planes, mask


def tiny_fc_layers(seed: int) -> list[tuple[str, FcLayer, np.ndarray, np.ndarray]]:
    """20 -> 12 (2 planes, ReLU) -> 6 (1 plane, ReLU) -> 5 (2 planes), on the tiny format."""
    rng = np.random.default_rng(seed)
    shapes = [("fc1", 12, 20, 2, True), ("fc2", 6, 12, 1, True), ("fc3", 5, 6, 2, False)]
    return [(name, *random_fc(TINY_FORMAT, rows, cols, bits, relu, rng)) for name, rows, cols, bits, relu in shapes]


def golden_fc(layers: list[tuple[str, FcLayer, np.ndarray, np.ndarray]], x: np.ndarray) -> list[np.ndarray]:
    """Every layer's int8 output from the original planes and mask (not the decoded streams)."""
    outs = []
    for _, layer, planes, mask in layers:
        x = fc_fixed(x, planes, mask, layer.a, layer.bias_q, layer.shift, layer.relu)
        outs.append(x)
    return outs


# --- configs, INFO and packing ---------------------------------------------------------------------------------


def test_info_describes_fc_engine_regions_and_descriptor():
    config = AcceleratorConfig.lenet5()
    info = json.loads(config.info_json())
    accel = AccelInfo.from_info(info)
    f = config.fc
    assert {name: (r.id, r.width, r.depth) for name, r in accel.regions.items() if name.startswith("fc.")} == {
        "fc.xor": (5, f.xor.beat_layout.size, 2560), "fc.bim": (6, f.bim.beat_layout.size, 2560),
        "fc.scale": (7, f.scale_layout.size, 256)}
    assert [REGION_IDS[n] for n in ("fc.xor", "fc.bim", "fc.scale")] == [5, 6, 7]
    assert accel.fc_params == f.describe() and accel.fc_params["m"] == f.xor.describe()["m"]
    assert FcFormat(**accel.fc_format) == DEFAULT_FC_FORMAT == f.fc_format
    assert accel.fc_streams["scale"] == layout_fields(f.scale_layout)
    assert accel.fc_streams["bim"] == layout_fields(f.bim.beat_layout)
    assert (f.max_rows, f.max_cols, f.max_bits) == (120, 400, 4)
    # The conv fields sit where they did before the FC engine existed; the FC fields follow them.
    conv_only = dataclasses.replace(config, fc=None)
    assert {k: v for k, v in accel.descriptor.items() if not k.startswith("fc.")} == \
        layout_fields(conv_only.descriptor_layout)
    assert conv_only.describe()["regions"][1:] == info["regions"][1:5]  # the program word only grows
    fc_only = AcceleratorConfig.fc_only()
    assert "post" not in fc_only.describe() and "conv" not in fc_only.describe()["engines"]
    assert not any(name.startswith(("conv", "post")) for name in layout_fields(fc_only.descriptor_layout))
    assert set(CONFIGS) == {"link", "lenet5", "fc_only"} and fc_only.board == "icebreaker"


def test_fc_descriptor_packing_matches_amaranth_layout():
    config = TINY_FC
    accel = AccelInfo.from_info(config.describe())
    _, layer, _, _ = tiny_fc_layers(seed=3)[0]
    plan = plan_fc_layer(accel, layer, src=1, xor_start=5, bim_start=7, scale_start=2)
    d = plan.descriptor
    nested = {"kind": 1, "src": 1, "x_count": 20, "out_count": 12,
              "fc": {"cfg": {"rows": 12, "cols": 20, "bits": 2, "shift": layer.shift, "relu": 1},
                     "xor_start": 5, "xor_count": len(plan.xor), "bim_start": 7, "bim_count": len(plan.bim),
                     "scale_start": 2, "scale_count": 12}}
    assert accel.pack_descriptor(d) == pack(config.descriptor_layout, nested)
    assert len(plan.bim) > 2 * 15 and len(plan.xor) >= 2 * 3 * 3 * 4  # both planes' tiles, one stream


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"fc": object()}, "fc must be an FcEngineParams"),
    ({"fc": FcEngineParams.from_matrix(TINY_FORMAT.matrix(), 2, r=2, m_t=4, max_rows=4, max_cols=4)},
     "fc must be built with FcEngineParams.from_format"),
    ({"fc": FcEngineParams.from_format(TINY_FORMAT, max_rows=4, max_cols=40)}, "fc.max_cols must be at most"),
    ({"fc_bim_depth": 0}, "fc_bim_depth must be in 1..65536"),
    ({"fc_scale_depth": 1 << 17}, "fc_scale_depth must be"),
])
def test_fc_config_rejected(kwargs: dict, message: str):
    base = {"fc": FcEngineParams.from_format(TINY_FORMAT, max_rows=4, max_cols=4), "act_depth": 32}
    with pytest.raises(ValueError, match=message):
        AcceleratorConfig(**{**base, **kwargs})


def test_from_format_and_seed_checked():
    params = FcEngineParams.from_format(DEFAULT_FC_FORMAT, max_rows=120, max_cols=400)
    assert (params.n_in, params.n_out, params.max_patches, params.m_t, params.r, params.a_bits, params.max_bits) \
        == (6, 64, 4, 32, 2, 16, 4)
    assert params.fc_format == DEFAULT_FC_FORMAT
    with pytest.raises(ValueError, match="seed 5 does not draw m"):
        dataclasses.replace(params, seed=5)
    with pytest.raises(ValueError, match="fmt must be an FcFormat"):
        FcEngineParams.from_format("default", 1, 1)


def test_pack_model_lays_out_lenet5():
    model = load_model(MODEL)
    packed = pack_model(AcceleratorConfig.lenet5().describe(), model)
    assert [(o.name, o.buffer, o.shape) for o in packed.layers] == [
        ("pool1", 1, (6, 14, 14)), ("pool2", 0, (16, 5, 5)), ("fc1", 1, (120,)), ("fc2", 0, (84,)),
        ("fc3", 1, (10,))]
    assert (packed.output_buffer, packed.output_count, packed.first, len(packed.program)) == (1, 10, 0, 5)
    assert {k: len(v) for k, v in packed.regions.items()} == {
        "conv.w": 265, "conv.quant": 22, "fc.xor": 1200, "fc.bim": 1158, "fc.scale": 214, "program": 5}
    accel = AccelInfo.from_info(AcceleratorConfig.lenet5().describe())
    fc2 = plan_fc_layer(accel, model.fc[1], src=1, xor_start=938, bim_start=898, scale_start=120)
    assert packed.program[3] == accel.pack_descriptor(fc2.descriptor)
    assert [region_id for region_id, _, _ in packed.loads()][-1] == REGION_IDS["program"]
    # A region too small for every layer at once: the largest, fc1, is streamed in passes through the words the
    # others leave (hw.spec.fc_passes); too small for one tile row of it, refused naming the limit.
    streamed = pack_model(AcceleratorConfig.lenet5(fc_bim_depth=1100).describe(), model)
    assert [len(o.passes) for o in streamed.layers] == [0, 0, 2, 0, 0]
    assert all(run.loads for run in streamed.layers[2].passes) and len(streamed.regions["fc.bim"]) <= 1100
    with pytest.raises(ValueError, match=r"^layer fc1 streamed in passes: rows 0\.\.31 \(one tile row\) need 226 "
                                         r"fc.bim words, 200 are free$"):
        pack_model(AcceleratorConfig.lenet5(fc_bim_depth=200).describe(), model)
    with pytest.raises(ValueError, match="no conv engine"):
        pack_model(AcceleratorConfig.fc_only().describe(), model)
    other = AcceleratorConfig.lenet5(fc=FcEngineParams.from_format(
        dataclasses.replace(DEFAULT_FC_FORMAT, seed=2), max_rows=120, max_cols=400)).describe()
    with pytest.raises(ValueError, match=r"FC format does not match .*\(seed: model 0 != device 2\)"):
        pack_model(other, model)
    with pytest.raises(ValueError, match=r"^layer pool1: the layer's output \(1176 values\) does not fit an "
                                         r"activation buffer of 1000$"):
        pack_model(AcceleratorConfig.lenet5(act_depth=1000).describe(), model)


# --- the RTL conversations -------------------------------------------------------------------------------------


def add_loads(script: Script, accel: AccelInfo, packed: Packed, max_payload: int) -> None:
    """LOAD every region of `packed`, split into frames."""
    for region_id, offset, data in packed.loads():
        size = next(r.bytes for r in accel.regions.values() if r.id == region_id)
        for payload in load_payloads(region_id, offset, data, size, max_payload):
            script.expect(Command.LOAD, payload)


def add_read(script: Script, buffer: int, expected: bytes, max_payload: int) -> None:
    """READ `len(expected)` bytes of `buffer` from 0 and expect exactly them."""
    for payload in read_payloads(buffer, 0, len(expected), max_payload):
        start, size = int.from_bytes(payload[1:3], "little"), int.from_bytes(payload[3:5], "little")
        script.expect(Command.READ, payload, answer=expected[start:start + size])


def add_inference(script: Script, accel: AccelInfo, packed: Packed, x: np.ndarray, outs: list[np.ndarray],
                  max_payload: int, budget: int, name: str) -> None:
    """One input: all layers in one RUN (cycles as `name`) and the output read; then each layer alone (cycles as
    `name`.LAYER) with its output read."""
    act = ("act0", "act1")[packed.input_buffer]
    for payload in load_payloads(accel.regions[act].id, 0, input_bytes(x), 1, max_payload):
        script.expect(Command.LOAD, payload)
    script.run(packed.first, len(packed.program), budget, name)
    add_read(script, packed.output_buffer, input_bytes(outs[-1]), max_payload)
    # The layers overwrote the input's buffer on the way: load it again for the layer-by-layer pass.
    for payload in load_payloads(accel.regions[act].id, 0, input_bytes(x), 1, max_payload):
        script.expect(Command.LOAD, payload)
    for index, (out, y) in enumerate(zip(packed.layers, outs)):
        script.run(packed.first + index, 1, budget, f"{name}.{out.name}")
        add_read(script, out.buffer, input_bytes(y), max_payload)


@dataclasses.dataclass
class TinyFcRun:
    """A tiny FC device's conversation so far (INFO, every LOAD, inference "x0"), and what a test goes on with."""

    accel: AccelInfo
    layers: list
    packed: Packed
    x0: np.ndarray
    x1: np.ndarray
    slices: int
    budget: int
    rng: np.random.Generator
    script: Script


def start_tiny_fc(config: AcceleratorConfig, layer_seed: int, input_seed: int) -> TinyFcRun:
    """Three random FC layers packed for `config`, two random inputs, and the script up to the first inference."""
    accel = AccelInfo.from_info(config.describe())
    layers = tiny_fc_layers(seed=layer_seed)
    packed = pack_program(accel, [(name, layer, False) for name, layer, _, _ in layers], (20,))
    rng = np.random.default_rng(input_seed)
    x0, x1 = rng.integers(-128, 128, size=20), rng.integers(-128, 128, size=20)
    slices = sum(layer.bits * layer.slices_per_plane for _, layer, _, _ in layers)
    budget = 20 * (slices + 200)
    script = Script()
    script.expect(Command.INFO, b"", answer=config.info_json())
    add_loads(script, accel, packed, config.max_payload)
    add_inference(script, accel, packed, x0, golden_fc(layers, x0), config.max_payload, budget, "x0")
    return TinyFcRun(accel, layers, packed, x0, x1, slices, budget, rng, script)


def test_tiny_fc_only_layers_and_errors():
    config, mp = TINY_FC, TINY_FC.max_payload
    run = start_tiny_fc(config, layer_seed=7, input_seed=8)
    accel, layers, packed, x0, x1 = run.accel, run.layers, run.packed, run.x0, run.x1
    slices, budget, rng, script = run.slices, run.budget, run.rng, run.script

    # The FC regions' errors, each refused with nothing written; the rejected LOADs aim at words the run uses.
    regions = accel.regions
    xor, bim, scale = regions["fc.xor"], regions["fc.bim"], regions["fc.scale"]
    junk = rng.integers(0, 256, size=1024, dtype=np.uint8).tobytes()
    for payload, status in [
        (bytes([xor.id]) + (xor.depth - 3).to_bytes(2, "little") + junk[:4 * xor.bytes], Status.OUT_OF_RANGE),
        (bytes([bim.id]) + (bim.depth - 1).to_bytes(2, "little") + junk[:2 * bim.bytes], Status.OUT_OF_RANGE),
        (bytes([scale.id]) + (scale.depth - 2).to_bytes(2, "little") + junk[:3 * scale.bytes], Status.OUT_OF_RANGE),
        (bytes([scale.id, 0, 0]) + junk[:scale.bytes + 1], Status.BAD_ARGUMENT),  # not whole beats
        (bytes([REGION_IDS["conv.w"], 0, 0]) + junk[:20], Status.UNKNOWN_REGION),  # no conv engine here
        (bytes([8, 0, 0]) + junk[:4], Status.UNKNOWN_REGION),
    ]:
        script.expect(Command.LOAD, payload, status)
    # Descriptors refused when the sequencer reaches them: a conv layer (no conv engine), and each FC range past
    # its region. The first layer still runs when it precedes a refused one, and its output stays.
    n = len(packed.program)
    good = layers[0][1]
    base = plan_fc_layer(accel, good, src=0).descriptor
    bad = [accel.pack_descriptor({"kind": accel.kinds["conv"]}),
           accel.pack_descriptor({**base, "fc.xor_start": xor.depth - 2}),
           accel.pack_descriptor({**base, "fc.bim_start": 1, "fc.bim_count": bim.depth}),
           accel.pack_descriptor({**base, "fc.scale_start": scale.depth - 11}),
           accel.pack_descriptor({**base, "out_count": config.act_depth + 1})]
    for payload in load_payloads(regions["program"].id, n, accel.region_bytes("program", bad[:1]), regions[
            "program"].bytes, mp):
        script.expect(Command.LOAD, payload)
    script.expect(Command.RUN, run_payload(n, 1), Status.BAD_ARGUMENT)
    for descriptor in bad[1:]:
        script.expect(Command.LOAD, bytes([regions["program"].id, n, 0]) + accel.region_bytes("program",
                                                                                               [descriptor]))
        script.expect(Command.RUN, run_payload(n, 1), Status.OUT_OF_RANGE)
    # fc1 from act0, then the refused descriptor: fc1's output is in act1 all the same.
    script.expect(Command.LOAD, bytes([regions["act0"].id, 0, 0]) + input_bytes(x0))
    script.expect(Command.LOAD, bytes([regions["program"].id, n - 1, 0]) + accel.region_bytes("program", [
        accel.pack_descriptor(base)]))
    script.expect(Command.RUN, run_payload(n - 1, 2), Status.OUT_OF_RANGE)
    add_read(script, 1, input_bytes(golden_fc(layers[:1], x0)[0]), mp)
    script.expect(Command.ECHO, b"alive", answer=b"alive")

    # Usable afterwards: restore fc3's descriptor and infer again on the same weights.
    script.expect(Command.LOAD, bytes([regions["program"].id, n - 1, 0]) + accel.region_bytes(
        "program", packed.program[-1:]))
    add_inference(script, accel, packed, x1, golden_fc(layers, x1), mp, budget, "x1")
    cycles = play(config, script, runner.TESTBENCH)
    assert cycles["x0"] == cycles["x1"]  # the sequencer feeds the engine at full rate whatever the data
    per_layer = [cycles[f"x0.{out.name}"] for out in packed.layers]
    assert cycles["x0"] >= slices and abs(sum(per_layer) - cycles["x0"]) <= 10
    print(f"tiny FC: {cycles['x0']} cycles, per layer {per_layer}, {slices} slices")


@pytest.mark.slow
def test_lenet5_whole_model_on_mnist():
    from host.lenet5.net import quantize_input
    from host.mnist import load_mnist

    config, mp = AcceleratorConfig.lenet5(), AcceleratorConfig.lenet5().max_payload
    accel = AccelInfo.from_info(json.loads(config.info_json()))
    model = load_model(MODEL)
    packed = pack_model(accel, model)
    _, _, x_test, y_test = load_mnist()
    images = quantize_input(x_test[:2])
    script = Script()
    script.expect(Command.INFO, b"", answer=config.info_json())
    add_loads(script, accel, packed, mp)
    for i, image in enumerate(images):
        pool1 = conv_features([model.conv1], image[None])[0]
        pool2 = conv_features(model.convs(), image[None])[0]
        outs = [pool1, pool2, *(y[0] for y in fc_forward(model.fc, pool2[None]))]
        add_inference(script, accel, packed, image, outs, mp, 2_000_000, f"image{i}")
    cycles = play(config, script, runner.WHOLE)
    # In one RUN each layer behind a conv layer loads while that one computes; a RUN per layer cannot overlap them.
    # Both within 1 % of the cycle models (`LayerOut.cycles`, `LayerOut.first_cycles`).
    in_run, alone = sum(out.cycles for out in packed.layers), sum(out.first_cycles for out in packed.layers)
    for i in range(len(images)):
        layer = {out.name: cycles[f"image{i}.{out.name}"] for out in packed.layers}
        assert abs(cycles[f"image{i}"] - in_run) <= 0.01 * in_run, (cycles[f"image{i}"], in_run)
        assert abs(sum(layer.values()) - alone) <= 0.01 * alone, (layer, alone)
        print(f"LeNet-5 image {i} (label {y_test[i]}): {cycles[f'image{i}']} cycles in one RUN (model {in_run}); "
              f"layer by layer {sum(layer.values())} (model {alone}): {layer}")


def test_virtual_board_fc_only_runs_lenet5_fc_part():
    """`python -m sim.server --config fc_only` served, driven by `host.device` and `host.accel`: the three FC layers
    of LeNet-5 compressed for fc_only's format (`models/lenet5_fc16.npz`) on golden conv features of two MNIST
    images, in one RUN each."""
    from host.accel import load_packed, run_packed
    from host.device import Device
    from host.lenet5.net import quantize_input
    from host.mnist import load_mnist
    from sim.server import start as start_virtual_board

    model = load_model(MODEL_FC16, expected=FC16_FORMAT)
    features = conv_features(model.convs(), quantize_input(load_mnist()[2][:2])).reshape(2, -1)
    expected = fc_forward(model.fc, features)[-1]
    with start_virtual_board("--config", "fc_only", idle_timeout=120) as board:
        with Device.open(board.url, timeout=120) as dev:
            info = dev.info()
            assert info == AcceleratorConfig.fc_only().describe()
            packed = pack_program(AccelInfo.from_info(info), [(layer.name, layer, False) for layer in model.fc],
                                  (400,))
            load_packed(dev, packed)
            for x, y in zip(features, expected):
                logits, cycles = run_packed(dev, packed, x)
                assert np.array_equal(logits, y) and cycles > 0
        assert board.process.wait(timeout=60) == 0
