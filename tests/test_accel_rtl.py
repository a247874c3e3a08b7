"""The accelerator's regions, sequencer and LOAD / RUN / READ: host packing and the RTL under cocotb.

The host side (`host.accel`) builds every beat and descriptor from the INFO document alone; the tests check it
against the hardware's own layouts and `hw.spectral.streams.encode`. The RTL tests script a whole conversation
with the byte-stream `Accelerator` (random gaps on rx, backpressure on tx): load two conv layers and an input,
run both in one RUN, read the output and compare it with the golden model bit for bit, then every error
status, then a second input on the same weights.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from host.accel import AccelInfo, build_conv_program, input_bytes, plan_conv_layer
from host.compress.spectral import calibrate, compress_spatial
from host.device import load_payloads, read_payloads, run_payload
from host.lenet5.spectral import load as load_model
from hw.config import CONFIGS, AcceleratorConfig
from hw.layouts import layout_fields, pack
from hw.spec.fields import beats_to_bytes
from hw.spec.pool import max_pool
from hw.spec.protocol import Command, Status, encode_request, encode_response
from hw.spec.spectral.fixed import spectral_conv_fixed
from hw.spec.spectral.geometry import OaaParams
from hw.spec.spectral.layer import SpectralLayer
from hw.spectral.pipeline import SpectralConvParams, cycle_model
from hw.spectral.streams import encode
from sim import runner
from sim.board import play as board_play
from sim.board import simulate

MODEL = Path(__file__).resolve().parent.parent / "models" / "lenet5_spec2.npz"

TINY = AcceleratorConfig(
    conv=SpectralConvParams(n=8, k=3, l=6, relu=True, max_c_in=3, max_c_out=3, max_height=8, max_width=8),
    act_depth=128, program_depth=4, conv_w_depth=64, conv_quant_depth=8, max_payload=128)


def make_layer(k: int, l: int, padding: str, c_in: int, c_out: int, hw: tuple[int, int], seed: int,  # noqa: E741
               ) -> SpectralLayer:
    """A 75 %-sparse calibrated random layer with ReLU, for an input of C_in x hw."""
    rng = np.random.default_rng(seed)
    layer = compress_spatial(rng.standard_normal((c_out, c_in, k, k)), OaaParams(8, k, l, padding), sparsity=0.75,
                             bias=rng.standard_normal(c_out) * 0.5, relu=True)
    return calibrate(layer, rng.integers(-128, 128, size=(4, c_in, *hw)), in_scale=1 / 64)


def tiny_layers() -> list[tuple[SpectralLayer, bool]]:
    """2 -> 3 "same" on 8 x 8 with pooling, then 3 -> 2 "valid" (a crop) on 4 x 4 without."""
    return [(make_layer(3, 6, "same", 2, 3, (8, 8), seed=1), True),
            (make_layer(3, 6, "valid", 3, 2, (4, 4), seed=2), False)]


def lenet_layers() -> list[tuple[SpectralLayer, bool]]:
    model = load_model(MODEL)
    return [(model.conv1, True), (model.conv2, True)]


def golden(layers: list[tuple[SpectralLayer, bool]], x: np.ndarray) -> np.ndarray:
    for layer, pool in layers:
        x = spectral_conv_fixed(x, layer)
        x = max_pool(x) if pool else x
    return x


# --- host packing against the hardware's layouts ---------------------------------------------------------------


def test_info_describes_regions_and_descriptor():
    config = AcceleratorConfig.lenet5()
    info = json.loads(config.info_json())
    accel = AccelInfo.from_info(info)
    assert {name: (r.id, r.width, r.bytes, r.depth) for name, r in accel.regions.items()} == {
        "program": (0, config.descriptor_layout.size, (config.descriptor_layout.size + 7) // 8, 16),
        "act0": (1, 8, 1, 6 * 28 * 28), "act1": (2, 8, 1, 6 * 28 * 28),
        "conv.w": (3, config.conv.kernel_layout.size, 21, 512), "conv.quant": (4, config.conv.quant_layout.size, 8, 32),
        "fc.xor": (5, config.fc.xor.beat_layout.size, 5, 2560), "fc.bim": (6, config.fc.bim.beat_layout.size, 9, 2560),
        "fc.scale": (7, config.fc.scale_layout.size, 12, 256)}
    assert accel.descriptor == layout_fields(config.descriptor_layout)
    assert accel.conv_params == config.conv.describe()
    assert accel.conv_streams["w"] == layout_fields(config.conv.kernel_layout)
    # The link-only device says exactly what it said before it could have engines.
    assert set(AcceleratorConfig().describe()) == {"sqgen", "protocol", "board", "clock_hz", "baud", "max_payload",
                                                  "blocks"}
    with pytest.raises(ValueError, match="no engines"):
        AccelInfo.from_info(AcceleratorConfig().describe())
    assert CONFIGS["lenet5"]() == config and CONFIGS["link"]() == AcceleratorConfig()


def test_descriptor_packing_matches_amaranth_layout():
    config = AcceleratorConfig.lenet5()
    accel = AccelInfo.from_info(config.describe())
    values = {"kind": 0, "src": 1, "x_count": 1176, "out_count": 400,
              "conv": {"cfg": {"height": 14, "width": 14, "c_in": 6, "c_out": 16, "mac_shift": 13},
                       "w_start": 15, "w_count": 250, "quant_start": 6, "quant_count": 16},
              "post": {"top": 2, "left": 2, "height": 10, "width": 10, "pool": 1},
              "fc": {"cfg": {"rows": 84, "cols": 120, "bits": 1, "shift": 17, "relu": 1}, "xor_start": 938,
                     "xor_count": 198, "bim_start": 898, "bim_count": 194, "scale_start": 120, "scale_count": 84}}
    flat = {"kind": 0, "src": 1, "x_count": 1176, "out_count": 400, "conv.cfg.height": 14, "conv.cfg.width": 14,
            "conv.cfg.c_in": 6, "conv.cfg.c_out": 16, "conv.cfg.mac_shift": 13, "conv.w_start": 15,
            "conv.w_count": 250, "conv.quant_start": 6, "conv.quant_count": 16, "post.top": 2, "post.left": 2,
            "post.height": 10, "post.width": 10, "post.pool": 1, "fc.cfg.rows": 84, "fc.cfg.cols": 120,
            "fc.cfg.bits": 1, "fc.cfg.shift": 17, "fc.cfg.relu": 1, "fc.xor_start": 938, "fc.xor_count": 198,
            "fc.bim_start": 898, "fc.bim_count": 194, "fc.scale_start": 120, "fc.scale_count": 84}
    assert accel.pack_descriptor(flat) == pack(config.descriptor_layout, values)
    with pytest.raises(ValueError, match="x_count=9999 does not fit 13 bits"):
        accel.pack_descriptor({**flat, "x_count": 9999})
    with pytest.raises(ValueError, match="unknown fields"):
        accel.pack_descriptor({"kidn": 0})


def test_lenet_program_words_are_the_engine_streams():
    config = AcceleratorConfig.lenet5()
    accel = AccelInfo.from_info(config.describe())
    (conv1, _), (conv2, _) = lenet_layers()
    program = build_conv_program(accel, lenet_layers(), (1, 28, 28))
    p1, p2 = program.plans
    x1 = np.zeros((1, 28, 28), dtype=np.int64)
    x2 = np.zeros((6, 14, 14), dtype=np.int64)
    valid = SpectralConvParams(**{**{f: getattr(config.conv, f) for f in ("n", "k", "l", "relu", "p", "b", "max_c_in",
                                                                       "max_c_out")}, "padding": "valid"})
    e1, e2 = encode(config.conv, conv1, x1), encode(valid, conv2, x2)
    assert (p1.w, p1.quant, p2.w, p2.quant) == (e1["w"], e1["quant"], e2["w"], e2["quant"])
    assert (len(p1.w), len(p2.w), len(p1.quant), len(p2.quant)) == (15, 250, 6, 16)
    assert (p1.descriptor["conv.w_start"], p1.descriptor["conv.quant_start"]) == (0, 0)
    assert (p2.descriptor["conv.w_start"], p2.descriptor["conv.quant_start"]) == (15, 6)
    assert (p1.descriptor["src"], p2.descriptor["src"], program.out_buffer) == (0, 1, 0)
    assert (p1.descriptor["x_count"], p1.descriptor["out_count"]) == (784, 1176)
    assert (p2.descriptor["x_count"], p2.descriptor["out_count"]) == (1176, 400)
    assert {k: p2.descriptor[f"post.{k}"] for k in ("top", "left", "height", "width", "pool")} == \
        {"top": 2, "left": 2, "height": 10, "width": 10, "pool": 1}
    assert program.out_shape == (16, 5, 5)
    # Region bytes: little-endian within a beat, ceil(width / 8) bytes each.
    raw = accel.region_bytes("conv.w", p1.w)
    assert len(raw) == 21 * 15 and int.from_bytes(raw[21:42], "little") == p1.w[1]
    assert beats_to_bytes([0x1FF, 0x0102], 9) == bytes([0xFF, 0x01, 0x02, 0x01])


def test_plan_rejects_what_does_not_fit():
    accel = AccelInfo.from_info(TINY.describe())
    layer = make_layer(3, 6, "same", 2, 3, (8, 8), seed=1)
    with pytest.raises(ValueError, match=r"\(n, k, l\)=\(8, 5, 4\) does not match"):
        plan_conv_layer(accel, make_layer(5, 4, "same", 2, 3, (8, 8), seed=1), (2, 8, 8), src=0, pool=True)
    with pytest.raises(ValueError, match="height=9 outside"):
        plan_conv_layer(accel, layer, (2, 9, 8), src=0, pool=False)
    with pytest.raises(ValueError, match="C_in=2"):
        plan_conv_layer(accel, layer, (1, 8, 8), src=0, pool=False)
    with pytest.raises(ValueError, match="conv.w words 60..* run past its depth 64"):
        plan_conv_layer(accel, layer, (2, 8, 8), src=0, pool=False, w_start=60)
    with pytest.raises(ValueError, match="output \\(192 values\\)"):
        plan_conv_layer(accel, make_layer(3, 6, "same", 2, 3, (8, 8), seed=1), (2, 8, 8), src=0, pool=False)
    with pytest.raises(ValueError, match="int8"):
        input_bytes(np.array([200]))
    with pytest.raises(ValueError, match=r"^input height=2 outside 3\.\.8$"):  # a "valid" layer needs a whole kernel
        plan_conv_layer(accel, make_layer(3, 6, "valid", 2, 3, (8, 8), seed=1), (2, 2, 8), src=0, pool=False)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"conv": "big"}, "conv must be a SpectralConvParams"),
    ({"fc": object()}, "fc must be an FcEngineParams or None"),
    ({"act_depth": 0}, "act_depth must be in 1..65536"),
    ({"program_depth": 1 << 17}, "program_depth must be"),
    ({"conv_w_depth": 2.5}, "conv_w_depth must be"),
    ({"conv": SpectralConvParams(k=3, l=6, padding="valid")}, "conv.padding must be 'same'"),
    ({"max_payload": 16}, "max_payload must be at least 25"),
])
def test_config_rejected(kwargs: dict, message: str):
    base = {"conv": SpectralConvParams(k=3, l=6)}
    with pytest.raises(ValueError, match=message):
        AcceleratorConfig(**{**base, **kwargs})


def test_payload_builders_split_frames():
    assert load_payloads(3, 7, bytes(range(50)), 10, 26) == [
        b"\x03\x07\x00" + bytes(range(20)), b"\x03\x09\x00" + bytes(range(20, 40)),
        b"\x03\x0b\x00" + bytes(range(40, 50))]
    with pytest.raises(ValueError, match="multiple of the beat size 10"):
        load_payloads(3, 0, bytes(15), 10, 100)
    assert read_payloads(1, 5, 250, 100) == [b"\x01\x05\x00\x64\x00", b"\x01\x69\x00\x64\x00", b"\x01\xcd\x00\x32\x00"]
    assert run_payload(2, 3) == b"\x02\x03"
    with pytest.raises(ValueError, match="count in 1..255"):
        run_payload(0, 0)


# --- the RTL conversation --------------------------------------------------------------------------------------


class Script:
    """Steps for `sim.board.play`: requests with the exact answer (or status and length) expected."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def expect(self, command: int, payload: bytes, status: Status = Status.OK, answer: bytes = b"",
               budget: int | None = None) -> None:
        default = 8 * (len(payload) + len(answer)) + 2000
        self.steps.append({"send": encode_request(command, payload).hex(), "budget": budget or default,
                           "expect": encode_response(status, answer).hex()})

    def run(self, first: int, count: int, budget: int, name: str) -> None:
        self.steps.append({"send": encode_request(Command.RUN, run_payload(first, count)).hex(), "budget": budget,
                           "status": Status.OK, "length": 4, "name": name})


def conversation(config: AcceleratorConfig, layers: list[tuple[SpectralLayer, bool]], in_shape: tuple[int, int, int],
                 seed: int) -> tuple[Script, int]:
    """LOAD, RUN, READ and compare; every error status; then a second input. Returns the script and the cycle
    model's estimate of one RUN."""
    rng = np.random.default_rng(seed)
    accel = AccelInfo.from_info(config.describe())
    program = build_conv_program(accel, layers, in_shape)
    regions, mp = accel.regions, config.max_payload
    script = Script()
    script.expect(Command.INFO, b"", answer=config.info_json())

    def load(region: str, offset: int, data: bytes) -> None:
        for payload in load_payloads(regions[region].id, offset, data, regions[region].bytes, mp):
            script.expect(Command.LOAD, payload)

    for region, offset, words in program.loads:
        load(region, offset, accel.region_bytes(region, words))
    shape = in_shape
    model = 0
    for plan, (layer, _) in zip(program.plans, layers):
        model += cycle_model(config.conv, layer, *shape[1:])["single"] + 2 * int(np.prod(plan.out_shape))
        shape = plan.out_shape
    budget = 3 * model + 5000

    def infer(x: np.ndarray, name: str) -> None:
        load(("act0", "act1")[program.in_buffer], 0, input_bytes(x))
        script.run(program.first, len(program.plans), budget, name)
        y = golden(layers, x).astype(np.int8).tobytes()
        for payload in read_payloads(program.out_buffer, 0, len(y), mp):
            start = int.from_bytes(payload[1:3], "little")
            script.expect(Command.READ, payload, answer=y[start:start + int.from_bytes(payload[3:5], "little")])

    infer(rng.integers(-128, 128, size=in_shape), "run0")

    # Every error, each leaving the device as it was. The rejected LOADs aim at words the next run uses.
    w, q, act = regions["conv.w"], regions["conv.quant"], regions["act0"]
    junk = rng.integers(0, 256, size=4096, dtype=np.uint8).tobytes()
    n = len(program.plans)
    errors = [
        (Command.LOAD, bytes([0x63, 0, 0]) + junk[:8], Status.UNKNOWN_REGION),
        (Command.LOAD, bytes([w.id, 0, 0]) + junk[:2 * w.bytes + 1], Status.BAD_ARGUMENT),  # not whole beats
        (Command.LOAD, bytes([q.id, 0, 0]) + junk[:(q.depth + 1) * q.bytes], Status.OUT_OF_RANGE),
        (Command.LOAD, bytes([w.id]) + (w.depth - 1).to_bytes(2, "little") + junk[:2 * w.bytes], Status.OUT_OF_RANGE),
        (Command.LOAD, bytes([act.id, 0]), Status.BAD_ARGUMENT),  # no room for the offset
        # An empty LOAD at the program's end is fine and loads no descriptor: the RUNs below still fail.
        (Command.LOAD, bytes([regions["program"].id]) + regions["program"].depth.to_bytes(2, "little"), Status.OK),
        (Command.RUN, run_payload(0, n + 1), Status.OUT_OF_RANGE),  # past the program loaded
        (Command.RUN, run_payload(n, 1), Status.OUT_OF_RANGE),
        (Command.RUN, bytes([0, 0]), Status.BAD_ARGUMENT),
        (Command.RUN, bytes([0, 1, 0]), Status.BAD_ARGUMENT),
        (Command.READ, read_payloads(0, act.depth - 3, 4, mp)[0], Status.OUT_OF_RANGE),
        (Command.READ, bytes([1, 0, 0]) + (mp + 1).to_bytes(2, "little"), Status.OUT_OF_RANGE),
        (Command.READ, bytes([2, 0, 0, 1, 0]), Status.UNKNOWN_REGION),
        (Command.READ, bytes([0, 0, 0, 1]), Status.BAD_ARGUMENT),
        (0x42, b"", Status.UNKNOWN_COMMAND),
    ]
    for command, payload, status in errors:
        script.expect(command, payload, status)
    script.expect(Command.READ, bytes([0, 0, 0, 0, 0]))  # an empty read is fine
    script.expect(Command.ECHO, b"still alive", answer=b"still alive")
    # Descriptors the sequencer refuses when it reaches them: a weight range past its region, and on a device
    # without an FC engine an FC layer.
    past = accel.pack_descriptor({"kind": accel.kinds["conv"], "conv.w_start": w.depth - 1, "conv.w_count": 2})
    refused = [(past, Status.OUT_OF_RANGE)]
    if config.fc is None:
        refused.insert(0, (accel.pack_descriptor({"kind": accel.kinds["fc"]}), Status.BAD_ARGUMENT))
    load("program", n, accel.region_bytes("program", [descriptor for descriptor, _ in refused]))
    for index, (_, status) in enumerate(refused):
        script.expect(Command.RUN, run_payload(n + index, 1), status)

    infer(rng.integers(-128, 128, size=in_shape), "run1")
    return script, model


def play(config: AcceleratorConfig, script: Script, simulator: str) -> dict[str, int]:
    """Play `script` on the simulated board of `config`, its link stuttering at random; the named RUNs' cycles."""
    with simulate(config, simulator=runner.choose(simulator), stress=5) as board:
        named = board_play(board.transport, script.steps)
    return {name: int.from_bytes(payload, "little") for name, payload in named.items()}


def converse(config: AcceleratorConfig, layers: list[tuple[SpectralLayer, bool]], in_shape: tuple[int, int, int],
             simulator: str) -> tuple[list[int], int]:
    """Run the conversation on the RTL; returns both RUNs' cycle counts and the cycle model's estimate."""
    script, model = conversation(config, layers, in_shape, seed=5)
    cycles = play(config, script, simulator)
    return [cycles["run0"], cycles["run1"]], model


def test_tiny_two_layers_and_errors():
    cycles, model = converse(TINY, tiny_layers(), (2, 8, 8), runner.TESTBENCH)
    # Both runs do the same work; the cycle model (no gaps: the sequencer feeds at full rate) bounds it.
    assert abs(cycles[0] - cycles[1]) <= 0.02 * cycles[0]
    assert model // 2 <= cycles[0] <= 2 * model


@pytest.mark.slow
def test_lenet_conv_part_and_errors():
    """LeNet-5's conv layers on the lenet5 board (the design the whole-network tests compile): the tiny board
    above is the conv-only device that refuses an FC descriptor."""
    config = AcceleratorConfig.lenet5()
    cycles, model = converse(config, lenet_layers(), (1, 28, 28), runner.WHOLE)
    assert abs(cycles[0] - cycles[1]) <= 0.02 * cycles[0]
    assert model // 2 <= cycles[0] <= 2 * model
    print(f"LeNet-5 conv part: {cycles} cycles per image (model {model})")


def test_host_side_needs_no_amaranth():
    code = ("import sys, host.accel, host.device; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'amaranth' "
            "or m.startswith('hw.') and not m.startswith('hw.spec')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
