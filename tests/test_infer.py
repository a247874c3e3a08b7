"""host.infer: the golden backend end to end, input checks, backend URLs, trace comparison, the run CLI; the
device backend's host side (model against INFO, order, refused commands) on a fake device, no simulator.

`FakeDevice` answers LOAD, RUN and READ from what was loaded: it decodes each descriptor with INFO's field table
and computes the layer it names with the golden models, so the backend's packing, buffer bookkeeping and traces
are checked end to end without the RTL (tests/test_e2e.py runs the same on the virtual board)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from host.compress.spectral import schedule_layer
from host.device import DeviceError
from host.infer import (
    LAYERS,
    ConfigMismatch,
    DeviceBackend,
    Session,
    SessionOrderError,
    compare_traces,
    dense_weights,
    load_model,
    open_backend,
    plan_device,
)
from host.lenet5.compressed import fc_forward, save_model
from host.mnist import load_mnist
from hw.config import AcceleratorConfig
from hw.spec.fields import unpack_fields
from hw.spec.pool import max_pool
from hw.spec.protocol import Status
from hw.spec.spectral.fixed import spectral_conv_fixed

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "lenet5_full.npz"


@pytest.fixture(scope="module")
def model():
    return load_model(MODEL)


@pytest.fixture(scope="module")
def test_split():
    _, _, x, y = load_mnist()
    return x, y


@pytest.fixture(scope="module")
def traced(model, test_split):
    with open_backend("golden", model) as session:
        return session.run(test_split[0][:12], trace=True)


def test_trace_shapes_and_consistency(model, traced):
    layers = traced.layers
    assert list(layers) == list(LAYERS)
    shapes = {"conv1": (12, 6, 28, 28), "pool1": (12, 6, 14, 14), "conv2": (12, 16, 10, 10),
              "pool2": (12, 16, 5, 5), "fc1": (12, 120), "fc2": (12, 84), "fc3": (12, 10)}
    assert {k: v.shape for k, v in layers.items()} == shapes
    assert traced.logits.dtype == np.int8 and np.array_equal(traced.logits, layers["fc3"])
    np.testing.assert_array_equal(traced.predictions, traced.logits.argmax(1))
    for name in ("conv1", "conv2", "fc1", "fc2"):  # ReLU layers
        assert layers[name].min() >= 0 and layers[name].max() <= 127
    # The FC part is the model's own fc_forward on the pooled codes (flattened channel-major).
    np.testing.assert_array_equal(fc_forward(model.fc, layers["pool2"])[-1], layers["fc3"])


def test_int8_codes_and_single_images(model, test_split, traced):
    from host.lenet5.net import quantize_input

    codes = quantize_input(test_split[0][:12]).astype(np.int8)
    with open_backend("golden://", model) as session:
        np.testing.assert_array_equal(session.run(codes).logits, traced.logits)
        np.testing.assert_array_equal(session.run(codes[3]).logits, traced.logits[3:4])


@pytest.mark.parametrize("x, message", [
    (np.zeros((2, 28, 28), np.float32), r"float images must have shape \(N, 1, 28, 28\)"),
    (np.zeros((2, 1, 32, 32), np.float64), r"float images must have shape \(N, 1, 28, 28\)"),
    (np.full((1, 1, 28, 28), 2.0, np.float32), r"values in \[0, 1\]"),
    (np.zeros((2, 3, 28, 28), np.int8), r"int8 codes must have shape \(N, 1, 28, 28\) or \(1, 28, 28\)"),
    (np.zeros((1, 1, 28, 28), np.int32), r"got dtype int32"),
])
def test_bad_input_is_one_line_naming_shape_and_dtype(model, x, message):
    session = open_backend("golden", model)
    with pytest.raises(ValueError, match=message) as info:
        session.run(x)
    assert "\n" not in str(info.value)


def test_backend_urls(model):
    with pytest.raises(ValueError, match="unknown backend 'http://x'"):
        open_backend("http://x", model)
    with pytest.raises(ValueError, match="tcp URL needs a host and a port"):
        open_backend("tcp://127.0.0.1", model)
    with pytest.raises(OSError):  # nothing listens on port 1
        open_backend("tcp://127.0.0.1:1", model, timeout=5)


def test_compare_traces_finds_the_first_planted_mismatch(traced):
    a = traced.layers
    assert compare_traces(a, {k: v.copy() for k, v in a.items()}) is None
    b = {k: v.copy() for k, v in a.items()}
    b["fc1"][5, 17] += 1
    b["fc3"][0, 0] += 1  # a later layer differs too: the first one in layer order is reported
    assert compare_traces(a, b) == {"layer": "fc1", "index": (5, 17), "a": int(a["fc1"][5, 17]),
                                    "b": int(a["fc1"][5, 17]) + 1}
    c = {k: v.copy() for k, v in a.items()}
    c["pool1"][2, 3, 4, 5] -= 1
    assert compare_traces(a, c)["layer"] == "pool1" and compare_traces(a, c)["index"] == (2, 3, 4, 5)
    assert compare_traces(a, {k: v for k, v in a.items() if k != "conv2"}) == {"layer": "conv2", "missing": "b"}
    d = dict(a, fc2=a["fc2"][:3])
    assert compare_traces(a, d)["shape_b"] == (3, 84)


def test_run_cli_prints_accuracy_and_count():
    run = [sys.executable, "-m", "host", "run", "--model", str(MODEL)]
    out = subprocess.run(run + ["--backend", "golden", "--count", "20", "--json"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["count"] == 20 and 0.8 <= summary["accuracy"] <= 1.0
    assert summary["decoded_weights_per_image"] == 61_470 and summary["cycles_per_image"] is None
    assert "20/20 images" in out.stderr  # the progress bar
    text = subprocess.run(run + ["--count", "5"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert text.returncode == 0 and text.stdout.splitlines()[2].startswith("accuracy ")
    bad = subprocess.run(run + ["--backend", "tcp://127.0.0.1:1"], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_golden_accuracy_on_the_test_split_equals_the_stored_one(model, test_split):
    x, y = test_split
    with open_backend("golden", model) as session:
        predictions = session.run(x).predictions
    assert float(np.mean(predictions == y)) == model.metadata["test_accuracy"]["golden_fixed"]


# --- the device backend against a fake device ----------------------------------------------------------------

LENET5_INFO = AcceleratorConfig.lenet5().describe()
CYCLES = {0: 1000, 1: 100}  # per descriptor, by kind: the fake's "clock"


class FakeDevice:
    """LOAD / RUN / READ over regions held in Python, each descriptor computed by the golden models (module
    docstring). `fail` maps a command name to a status answered once; `log` records every command sent."""

    def __init__(self, model, info=LENET5_INFO):
        self.model, self._info = model, info
        self.regions = {r["id"]: r for r in info.get("regions", [])}
        self.words: dict[int, dict[int, int]] = {i: {} for i in self.regions}
        self.acts = [np.zeros(r["depth"], dtype=np.int64) for r in info.get("regions", [])[1:3]]
        self.fail: dict[str, int] = {}
        self.log: list[tuple] = []
        self.expected_cycles: list[int | None] = []  # what each RUN was told to expect (its wait)
        self.closed = False

    def _answer(self, command: str) -> None:
        if command in self.fail:
            raise DeviceError(f"device answered {Status(self.fail[command]).name} to {command}",
                              self.fail.pop(command))

    def info(self):
        self.log.append(("INFO",))
        return self._info

    def load(self, region: int, offset: int, data: bytes) -> None:
        self.log.append(("LOAD", region, offset, len(data)))
        self._answer("LOAD")
        if region not in self.regions:
            raise DeviceError("device answered UNKNOWN_REGION to LOAD", Status.UNKNOWN_REGION)
        size = self.regions[region]["bytes"]
        if offset + len(data) // size > self.regions[region]["depth"]:
            raise DeviceError("device answered OUT_OF_RANGE to LOAD", Status.OUT_OF_RANGE)
        if region in (1, 2):
            self.acts[region - 1][offset:offset + len(data)] = np.frombuffer(data, dtype=np.int8)
        for k in range(len(data) // size):
            self.words[region][offset + k] = int.from_bytes(data[k * size:(k + 1) * size], "little")

    def run(self, first: int, count: int, expected_cycles: int | None = None) -> int:
        self.log.append(("RUN", first, count))
        self.expected_cycles.append(expected_cycles)
        self._answer("RUN")
        program = self.words[0]
        if first + count > (max(program) + 1 if program else 0):
            raise DeviceError("device answered OUT_OF_RANGE to RUN", Status.OUT_OF_RANGE)
        fields = {f["name"]: (f["offset"], f["width"]) for f in self._info["descriptor"]["fields"]}
        cycles = 0
        for word in range(first, first + count):
            d = unpack_fields(fields, program[word])
            x = self.acts[d["src"]][:d["x_count"]]
            if d["kind"] == 0:
                conv = {784: self.model.conv1, 1176: self.model.conv2}[d["x_count"]]
                h = 28 if conv is self.model.conv1 else 14
                y = spectral_conv_fixed(x.reshape(1, conv.c_in, h, h), conv)[0]
                y = max_pool(y) if d["post.pool"] else y
            else:
                y = {400: self.model.fc[0], 120: self.model.fc[1], 84: self.model.fc[2]}[d["x_count"]].forward(x[None])
            assert y.size == d["out_count"]
            self.acts[1 - d["src"]][:y.size] = y.reshape(-1)
            cycles += CYCLES[d["kind"]]
        return cycles

    def read(self, buffer: int, offset: int, length: int) -> bytes:
        self.log.append(("READ", buffer, offset, length))
        self._answer("READ")
        return self.acts[buffer][offset:offset + length].astype(np.int8).tobytes()

    def close(self) -> None:
        self.closed = True


def with_region(info: dict, name: str, **changes) -> dict:
    """A copy of INFO with one region's entry changed."""
    return {**info, "regions": [{**r, **changes} if r["name"] == name else r for r in info["regions"]]}


def test_plan_appends_unpooled_conv_descriptors_for_traces(model):
    plan = plan_device(LENET5_INFO, model)
    steps = [(s.layer, s.word, s.buffer, s.shape, s.counted) for s in plan.trace]
    assert steps == [("conv1", 5, 1, (6, 28, 28), False), ("pool1", 0, 1, (6, 14, 14), True),
                     ("conv2", 6, 0, (16, 10, 10), False), ("pool2", 1, 0, (16, 5, 5), True),
                     ("fc1", 2, 1, (120,), True), ("fc2", 3, 0, (84,), True), ("fc3", 4, 1, (10,), True)]
    assert plan.trace_problem is None and plan.trace_first == 5
    # The unpooled descriptors are the pooled ones with the pool off and the whole window written.
    for word, extra in zip(plan.packed.program[:2], plan.trace_words):
        a, b = unpack_fields(plan.accel.descriptor, word), unpack_fields(plan.accel.descriptor, extra)
        assert {k: v for k, v in a.items() if k not in ("post.pool", "out_count")} == \
            {k: v for k, v in b.items() if k not in ("post.pool", "out_count")}
        assert (a["post.pool"], b["post.pool"]) == (1, 0) and b["out_count"] == 4 * a["out_count"]
    assert dense_weights(model) == {"conv1": 150, "conv2": 2400, "fc1": 48000, "fc2": 10080, "fc3": 840,
                                    "all": 61470}


def fc_format_changed(info: dict, **changes) -> dict:
    fc = info["engines"]["fc"]
    return {**info, "engines": {**info["engines"], "fc": {**fc, "format": {**fc["format"], **changes}}}}


def conv_params_changed(info: dict, **changes) -> dict:
    conv = info["engines"]["conv"]
    return {**info, "engines": {**info["engines"], "conv": {**conv, "params": {**conv["params"], **changes}}}}


@pytest.mark.parametrize("info, message", [
    (fc_format_changed(LENET5_INFO, n_in=4), r"FC format does not match .*n_in: model 6 != device 4"),
    (conv_params_changed(LENET5_INFO, l=6), r"layer pool1: layer \(n, k, l\)=\(8, 5, 4\) does not match the "
                                            r"engine's \(8, 5, 6\)"),
    (conv_params_changed(LENET5_INFO, p=2), r"layer pool1: layer schedule \(p, b\) must be \(2, 8\), got \(4, 8\)"),
    (with_region(LENET5_INFO, "act0", depth=1000), r"layer pool1: the layer's output \(1176 values\) does not fit "
                                                   r"an activation buffer of 1000"),
    (with_region(LENET5_INFO, "fc.xor", depth=200),  # too small for fc1's passes (hw.spec.fc_passes) too
     r"layer fc1 streamed in passes: rows 0\.\.31 \(one tile row\) need \d+ fc.xor words, 200 are free"),
    (with_region(LENET5_INFO, "program", depth=4), r"region program needs 5 words"),
    (AcceleratorConfig().describe(), r"the device has no engines"),
    ({k: v for k, v in LENET5_INFO.items() if k != "engines"} | {"engines": {"conv": LENET5_INFO["engines"]["conv"]}},
     r"no fc engine"),
])
def test_model_for_another_configuration_is_one_line_before_any_load(model, info, message):
    device = FakeDevice(model, info)
    with pytest.raises(ConfigMismatch, match=f"^model file for another configuration: .*{message}") as error:
        DeviceBackend(device, model)
    assert "\n" not in str(error.value)
    assert device.log == [("INFO",)]  # refused on INFO alone: nothing loaded


def test_a_model_file_scheduled_for_other_lanes_is_refused(model, tmp_path):
    conv2 = model.conv2
    other = dataclasses.replace(model, conv2=dataclasses.replace(
        conv2, schedule=schedule_layer(conv2.counts, conv2.index, p=2, b=8)))
    save_model(tmp_path / "p2.npz", other)
    with pytest.raises(ConfigMismatch, match=r"layer pool2: layer schedule \(p, b\) must be \(4, 8\), got \(2, 8\)"):
        DeviceBackend(FakeDevice(model), load_model(tmp_path / "p2.npz"))


def test_device_backend_matches_golden_with_cycles_and_traces(model, test_split, traced):
    device = FakeDevice(model)
    session = Session(DeviceBackend(device, model), model)
    loads = [entry for entry in device.log if entry[0] == "LOAD"]
    assert {entry[1] for entry in loads} == {0, 3, 4, 5, 6, 7}  # every weight region and the program, once
    result = session.run(test_split[0][:3])
    np.testing.assert_array_equal(result.logits, traced.logits[:3])
    np.testing.assert_array_equal(result.cycles, [2 * 1000 + 3 * 100] * 3)
    assert [e for e in device.log if e[0] == "RUN"] == [("RUN", 0, 5)] * 3
    # RUN's wait is sized by the engines' cycle models: within 1 % of the 13 480 cycles the RTL takes for one
    # LeNet-5 image (README, `python -m sim.bench e2e`; conv2 and fc1 load while the layer before computes).
    assert len(set(device.expected_cycles)) == 1 and abs(device.expected_cycles[0] - 13_480) <= 135
    assert [e for e in device.log if e[0] == "READ"] == [("READ", 1, 0, 10)] * 3
    trace = session.run(test_split[0][3:5], trace=True)
    assert compare_traces({k: v[3:5] for k, v in traced.layers.items()}, trace.layers) is None
    # Each traced descriptor waits for its own layer, alone in its RUN: the two conv layers 7 500 to 10 500 cycles
    # (conv2 with its whole load before its compute), the FC ones fewer.
    per_word = device.expected_cycles[3:3 + 7]
    assert all(7_000 < e < 11_000 for e in per_word[:4]) and all(0 < e < 2_000 for e in per_word[4:]), per_word
    # Only the program's descriptors count: the unpooled ones are extra work for the trace.
    assert session.cycles == [2300] * 5 and session.cycles_per_image == 2300
    session.close()
    assert device.closed
    with pytest.raises(SessionOrderError, match="closed"):
        session.run(test_split[0][:1])


def test_bad_input_sends_nothing_and_the_session_keeps_working(model, test_split, traced):
    device = FakeDevice(model)
    session = Session(DeviceBackend(device, model), model)
    before = len(device.log)
    for bad in (np.zeros((1, 28, 28), np.float32), np.zeros((1, 1, 28, 28), np.int16),
                np.full((1, 1, 28, 28), -0.5, np.float32), np.zeros((2, 1, 14, 14), np.int8)):
        with pytest.raises(ValueError, match="must have|got dtype|values in"):
            session.run(bad)
    assert len(device.log) == before
    np.testing.assert_array_equal(session.run(test_split[0][:1]).logits, traced.logits[:1])


@pytest.mark.parametrize("command", ["LOAD", "RUN", "READ"])
def test_a_refused_command_leaves_the_session_usable(model, test_split, traced, command):
    device = FakeDevice(model)
    session = Session(DeviceBackend(device, model), model)
    device.fail[command] = Status.OUT_OF_RANGE
    with pytest.raises(DeviceError) as error:
        session.run(test_split[0][:2], trace=command == "READ")
    assert error.value.status == Status.OUT_OF_RANGE
    np.testing.assert_array_equal(session.run(test_split[0][:2]).logits, traced.logits[:2])
    assert session.cycles == [2300, 2300]  # the failed image left no cycle count


def test_run_before_load_is_refused_on_the_host_and_by_the_device(model, test_split, traced):
    device = FakeDevice(model)
    backend = DeviceBackend(device, model, load=False)
    session = Session(backend, model)
    with pytest.raises(SessionOrderError, match=r"^run before load: device holds no weights"):
        session.run(test_split[0][:1])
    assert all(entry[0] == "INFO" for entry in device.log)
    with pytest.raises(DeviceError, match="OUT_OF_RANGE to RUN"):  # the fake, like the RTL, counts program words
        device.run(0, 5)
    device.fail["LOAD"] = Status.BAD_CRC  # a load refused half way: still not loaded
    with pytest.raises(DeviceError):
        backend.load()
    with pytest.raises(SessionOrderError):
        session.run(test_split[0][:1])
    backend.load()
    np.testing.assert_array_equal(session.run(test_split[0][:1]).logits, traced.logits[:1])


def test_trace_needs_room_for_the_unpooled_maps(model, test_split, traced):
    info = with_region(with_region(LENET5_INFO, "act0", depth=4000), "act1", depth=4000)
    session = Session(DeviceBackend(FakeDevice(model, info), model), model)
    assert "conv1's unpooled output (4704 values)" in session.backend.plan.trace_problem
    np.testing.assert_array_equal(session.run(test_split[0][:1]).logits, traced.logits[:1])
    with pytest.raises(ConfigMismatch, match=r"cannot trace on device: a trace needs conv1's unpooled output"):
        session.run(test_split[0][:1], trace=True)


def test_report_fmax_only_from_a_build_of_the_same_configuration(tmp_path):
    from host.__main__ import _fmax_hz, bandwidth

    report = tmp_path / "report.json"
    report.write_text(json.dumps({"fmax_mhz": {"sync": 60.5, "other": 80.0}}))
    assert _fmax_hz(str(report), LENET5_INFO) == 60.5e6  # no manifest beside it: taken as it is
    (tmp_path / "manifest.json").write_text(json.dumps({**LENET5_INFO, "bitstream": "top.bit"}))
    assert _fmax_hz(str(report), LENET5_INFO) == 60.5e6
    (tmp_path / "manifest.json").write_text(json.dumps(AcceleratorConfig().describe()))
    with pytest.raises(ValueError, match="build of another configuration .* differ in buffers, clock_hz, "
                                         "descriptor, engines"):
        _fmax_hz(str(report), LENET5_INFO)
    report.write_text("{}")
    with pytest.raises(ValueError, match="not an hw.build report.json"):
        _fmax_hz(str(report), None)
    assert bandwidth(61_470, 50_000, 25e6, 115_200) == {
        "clock_hz": 25e6, "images_per_s": 500.0, "decoded_weights_per_s": 30_735_000, "link_bits_per_s": 115_200,
        "weights_per_link_bit": 266.8}


def test_inference_needs_neither_torch_nor_amaranth():
    # Of hw only its bottom layer, hw.spec (NumPy alone): no gateware.
    code = ("import sys, host.infer, host.__main__; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'amaranth', 'cocotb') "
            "or m.startswith('hw.') and not m.startswith('hw.spec')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"
