"""Your own network end to end, without a simulator: a tiny MLP and a tiny CNN built with onnx.helper (random
hidden layers, the last one fitted by ridge regression on scikit-learn's digits, so they classify), compressed by
`python -m host.compress model --from`, run by `python -m host run` on the golden backend; the refusals (one line,
exit status 2); the golden backend on a sqgen-net file against `CompressedNetwork.forward`; the device backend's
packing of any network (`host.accel.pack_network`) against a fake device, and its one-line refusals of what the
LeNet-5 accelerator cannot run. tests/test_own_network_board.py runs one through the virtual board."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("sklearn")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from host.accel import network_steps, pack_network  # noqa: E402
from host.compress.network import compress_network  # noqa: E402
from host.datasets import load_dataset  # noqa: E402
from host.infer import (  # noqa: E402
    ConfigMismatch,
    DeviceBackend,
    Session,
    compare_traces,
    layer_sizes,
    load_model,
    open_backend,
    trace_names,
)
from host.network import Conv2d, Flatten, FloatNetwork, Linear, MaxPool2d, ReLU  # noqa: E402
from hw.config import AcceleratorConfig  # noqa: E402
from hw.spec.fields import unpack_fields  # noqa: E402
from hw.spec.network import load_model as load_network_model  # noqa: E402
from hw.spec.pool import max_pool  # noqa: E402
from hw.spec.spectral.fixed import spectral_conv_fixed  # noqa: E402
from hw.spec.spectral.geometry import OaaParams  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LENET5_INFO = AcceleratorConfig.lenet5().describe()


def _node(op: str, inputs: list[str], output: str, **attrs) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], name=output, **attrs)


def _onnx(nodes: list, weights: dict, shape: tuple[int, ...]) -> onnx.ModelProto:
    init = [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in weights.items()]
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], initializer=init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _readout(features: np.ndarray, labels: np.ndarray, ridge: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """The ridge-regression linear classifier of the features (one-hot targets): (weight (10, F), bias (10,)).
    Plain least squares gives large cancelling weights that a few bit-planes cannot hold."""
    f = np.c_[features, np.ones(len(features))]
    solution = np.linalg.solve(f.T @ f + ridge * np.eye(f.shape[1]), f.T @ np.eye(10)[labels])
    return solution[:-1].T, solution[-1]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def nets(digits, tmp_path_factory):
    """mlp.onnx: Flatten, Gemm 64 -> 48, Relu, Gemm 48 -> 10. cnn.onnx: 3 x 3 conv 1 -> 4, Relu, MaxPool, 5 x 5 conv
    4 -> 8 (both "same"), Relu, Flatten, Gemm 128 -> 10. Random features, ridge readout."""
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("nets")
    x = digits.x_train.astype(np.float64)
    w1, b1 = rng.normal(0, 0.25, (48, 64)), rng.normal(0, 0.1, 48)
    w2, b2 = _readout(np.maximum(x.reshape(len(x), -1) @ w1.T + b1, 0), digits.y_train)
    onnx.save(_onnx([_node("Flatten", ["x"], "flatten"), _node("Gemm", ["flatten", "w1", "b1"], "fc1", transB=1),
                     _node("Relu", ["fc1"], "relu1"), _node("Gemm", ["relu1", "w2", "b2"], "logits", transB=1)],
                    {"w1": w1, "b1": b1, "w2": w2, "b2": b2}, (1, 8, 8)), d / "mlp.onnx")
    c1, c2 = rng.normal(0, 1 / 3, (4, 1, 3, 3)), rng.normal(0, 0.1, (8, 4, 5, 5))
    h = MaxPool2d("p").forward(np.maximum(Conv2d("c1", c1).forward(x), 0))
    w3, b3 = _readout(np.maximum(Conv2d("c2", c2).forward(h), 0).reshape(len(h), -1), digits.y_train)
    onnx.save(_onnx([_node("Conv", ["x", "c1"], "conv1", pads=[1, 1, 1, 1]), _node("Relu", ["conv1"], "relu1"),
                     _node("MaxPool", ["relu1"], "pool1", kernel_shape=[2, 2], strides=[2, 2]),
                     _node("Conv", ["pool1", "c2"], "conv2", pads=[2, 2, 2, 2]), _node("Relu", ["conv2"], "relu2"),
                     _node("Flatten", ["relu2"], "flatten"), _node("Gemm", ["flatten", "w3", "b3"], "logits",
                                                                    transB=1)],
                    {"c1": c1, "c2": c2, "w3": w3, "b3": b3}, (1, 8, 8)), d / "cnn.onnx")
    return d


def _cli(*args: str, module: str = "host.compress") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


@pytest.fixture(scope="module")
def compressed(nets):
    """Both networks compressed by the CLI, unpruned (quantization alone), and the CLI's answers."""
    out = {}
    for name in ("mlp", "cnn"):
        done = _cli("model", "--from", nets / f"{name}.onnx", "--data", "digits", "--out", nets / f"{name}.npz",
                    "--conv-sparsity", "0", "--fc-sparsity", "0", "--calibration", "300")
        assert done.returncode == 0, done.stderr
        out[name] = done
    return out


@pytest.mark.cost(seconds=15)
def test_compress_cli_shows_every_stage_and_stores_the_accuracies(nets, compressed):
    for name in ("mlp", "cnn"):
        summary = json.loads(compressed[name].stdout)
        acc = summary["accuracy"]
        assert list(acc) == ["float", "spectral", "pruned", "compressed"] and acc["float"] > 0.85
        assert acc["float"] - acc["compressed"] <= 0.03, acc
        for stage in ("float", "spectral", "pruned"):
            assert f"accuracy {stage}: {100 * acc[stage]:.1f} %" in compressed[name].stderr
        assert "accuracy compressed (golden fixed point)" in compressed[name].stderr
        model = load_network_model(nets / f"{name}.npz")
        assert model.metadata["accuracy"] == acc and model.metadata["dataset"] == "digits"
        assert summary["out"] == str(nets / f"{name}.npz") and summary["fc_bits"] == 4
    cnn = json.loads(compressed["cnn"].stdout)
    assert cnn["conv_engine"] == [8, 5, 4]
    assert [(layer["name"], layer["kind"]) for layer in cnn["layers"]] == [
        ("conv1", "conv"), ("pool1", "pool"), ("conv2", "conv"), ("flatten", "flatten"), ("logits", "fc")]
    assert "conv1: 1 -> 4 channels, k=3 same, embedded in 5 x 5" in compressed["cnn"].stderr


def test_the_advice_when_too_much_is_lost(nets, tmp_path):
    done = _cli("model", "--from", nets / "mlp.onnx", "--data", "digits", "--out", tmp_path / "heavy.npz",
                "--fc-sparsity", "0.9", "--fc-bits", "1", "--calibration", "200")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["accuracy_lost"] > 0.02 and summary["advice"].startswith("the compressed model loses")
    assert f"advice: {summary['advice']}" in done.stderr


def _onnx_with_sigmoid() -> onnx.ModelProto:
    return _onnx([_node("Flatten", ["x"], "flatten"), _node("Gemm", ["flatten", "w"], "fc", transB=1),
                  _node("Sigmoid", ["fc"], "logits")], {"w": np.ones((10, 64))}, (1, 8, 8))


@pytest.mark.parametrize("case, message", [
    ("sigmoid", r"node 'logits' \(Sigmoid\)"),
    ("garbage", r"garbage.onnx: not an ONNX model"),
    ("missing", r"missing.onnx: no such file"),
    ("no-data", r"--from needs --data"),
    ("bad-data", r"--data: unknown dataset 'nope'"),
    ("bad-npz", r"--data: .*bad.npz: field 'y_train'"),
    ("wrong-shape", r"--data: .*samples are \(1, 2, 2\), the network takes \(1, 8, 8\)"),
    ("both", r"give either SPECTRAL.npz or --from"),
    ("sparsity", r"--conv-sparsity: must be in \[0, 1\)"),
    ("input-shape", r"--input-shape: expected C,H,W or FEATURES"),
])
def test_compress_cli_refusals_are_one_line(nets, tmp_path, case, message):
    (tmp_path / "sigmoid.onnx").write_bytes(_onnx_with_sigmoid().SerializeToString())
    (tmp_path / "garbage.onnx").write_bytes(b"not a protobuf at all")
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((3, 1, 8, 8)), y_train=np.zeros(3), x_test=np.zeros((2, 1, 8, 8)),
             y_test=np.zeros(2, dtype=np.int64))
    np.savez(tmp_path / "small.npz", x_train=np.zeros((3, 1, 2, 2)), y_train=np.zeros(3, dtype=np.int64),
             x_test=np.zeros((2, 1, 2, 2)), y_test=np.zeros(2, dtype=np.int64))
    mlp, out = nets / "mlp.onnx", tmp_path / "out.npz"
    args = {"sigmoid": ["--from", tmp_path / "sigmoid.onnx", "--data", "digits"],
            "garbage": ["--from", tmp_path / "garbage.onnx", "--data", "digits"],
            "missing": ["--from", tmp_path / "missing.onnx", "--data", "digits"],
            "no-data": ["--from", mlp], "bad-data": ["--from", mlp, "--data", "nope"],
            "bad-npz": ["--from", mlp, "--data", tmp_path / "bad.npz"],
            "wrong-shape": ["--from", mlp, "--data", tmp_path / "small.npz"],
            "both": ["models/lenet5_spec2.npz", "--from", mlp, "--data", "digits"],
            "sparsity": ["--from", mlp, "--data", "digits", "--conv-sparsity", "1.5"],
            "input-shape": ["--from", tmp_path / "net.pt", "--data", "digits", "--input-shape", "1,8"]}[case]
    done = _cli("model", *args, "--out", out)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert re.search(message, done.stderr), done.stderr
    assert not out.exists()


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
def test_a_pytorch_file_takes_the_data_s_sample_shape(tmp_path, digits):
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(128, 10))
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 8, 8)), tmp_path / "net.pt")
    done = _cli("model", "--from", tmp_path / "net.pt", "--data", "digits", "--out", tmp_path / "net.npz",
                "--calibration", "100")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["input_shape"] == [1, 8, 8]
    assert load_network_model(tmp_path / "net.npz").names[0] == "0"


def test_run_cli_on_the_golden_backend(nets, compressed, digits):
    model = load_network_model(nets / "cnn.npz")
    expected = model.forward(model.quantize(digits.x_test[:40]))["logits"].argmax(axis=1)
    for extra in ([], ["--data", "digits"]):  # the file names its dataset
        done = _cli("run", "--model", nets / "cnn.npz", *extra, "--backend", "golden", "--count", "40", "--json",
                    module="host")
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert summary["data"] == "digits" and summary["count"] == 40
        assert summary["predictions"] == expected.tolist()
        assert summary["accuracy"] == round(float(np.mean(expected == digits.y_test[:40])), 6)
        assert summary["stored_accuracy"] == model.metadata["accuracy"]["compressed"]
        assert summary["stored_float_accuracy"] == model.metadata["accuracy"]["float"]
        assert summary["cycles_per_image"] is None and summary["cycles_per_layer"] is None
    layers = summary["layers"]
    assert list(layers) == ["conv1", "conv2", "logits", "all"]
    assert layers["conv1"]["weights"] == 100 and layers["logits"]["weights"] == 1280
    assert layers["all"]["format_bits"] == sum(layers[n]["format_bits"] for n in ("conv1", "conv2", "logits"))
    # The MLP reads the (1, 8, 8) digits as they are: its first layer is a flatten.
    text = _cli("run", "--model", nets / "mlp.npz", "--count", "12", module="host")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[1].startswith("images         12 (digits test split") and lines[2].startswith("accuracy ")
    assert any(line.startswith("layer fc1      fc 3,072 weights") for line in lines)
    bad = _cli("run", "--model", nets / "mlp.npz", "--data", "mnist", "--count", "2", module="host")
    assert bad.returncode == 1 and bad.stderr.strip().endswith("the network takes (1, 8, 8)")


def test_golden_backend_on_a_network_file_is_its_forward_pass(nets, compressed, digits):
    model = load_model(nets / "cnn.npz")
    assert model is not None and model.names[-1] == "logits"
    codes = model.quantize(digits.x_test[:30])
    reference = model.forward(codes, trace=True)
    with open_backend("golden", model) as session:
        result = session.run(digits.x_test[:30], trace=True)
        again = session.run(codes.astype(np.int8))
    assert list(result.layers) == list(trace_names(model)) == ["conv1", "pool1", "conv2", "logits"]
    for name, codes_out in result.layers.items():
        np.testing.assert_array_equal(codes_out, reference[name], err_msg=name)
    np.testing.assert_array_equal(result.logits, reference["logits"])
    np.testing.assert_array_equal(again.logits, result.logits)
    with pytest.raises(ValueError, match=r"float images must have shape \(N, 1, 8, 8\), got \(2, 64\)"):
        session.run(np.zeros((2, 64), np.float32))
    mlp = load_model(nets / "mlp.npz")
    with pytest.raises(ValueError, match=r"int8 codes must have shape \(N, 1, 8, 8\) or \(1, 8, 8\)"):
        open_backend("golden", mlp).run(np.zeros((3, 64), np.int8))


# --- the device backend, on a fake device ---------------------------------------------------------------------


class NetworkFake:
    """LOAD / RUN / READ on regions in Python; each descriptor is computed by the golden model of the engine on the
    layer whose weights start where it says (conv.w_start, fc.xor_start; what pack_network laid out): a conv layer
    as the conv engine runs it, "same" on its own geometry, then the descriptor's crop window, pooled when it says
    so."""

    def __init__(self, model, info=LENET5_INFO):
        self._info = info
        self.regions = {r["id"]: r for r in info["regions"]}
        self.acts = [np.zeros(r["depth"], dtype=np.int64) for r in info["regions"][1:3]]
        self.program: dict[int, int] = {}
        self.fields = {f["name"]: (f["offset"], f["width"]) for f in info["descriptor"]["fields"]}
        self.layers = {}
        steps = network_steps(model)
        for (_, layer, _), word in zip(steps, pack_network(info, model).program):
            self.layers[self._start(unpack_fields(self.fields, word))] = layer

    @staticmethod
    def _start(d: dict) -> tuple[int, int]:
        return d["kind"], d["conv.w_start"] if d["kind"] == 0 else d["fc.xor_start"]

    def info(self):
        return self._info

    def load(self, region: int, offset: int, data: bytes) -> None:
        size = self.regions[region]["bytes"]
        if region in (1, 2):
            self.acts[region - 1][offset:offset + len(data)] = np.frombuffer(data, dtype=np.int8)
        if region == 0:
            for k in range(len(data) // size):
                self.program[offset + k] = int.from_bytes(data[k * size:(k + 1) * size], "little")

    def run(self, first: int, count: int, expected_cycles: int | None = None) -> int:
        assert expected_cycles, "RUN's wait must come from the engines' cycle models"
        cycles = 0
        for word in range(first, first + count):
            d = unpack_fields(self.fields, self.program[word])
            layer = self.layers[self._start(d)]
            x = self.acts[d["src"]][:d["x_count"]]
            if d["kind"] == 0:
                engine = self._info["engines"]["conv"]["params"]
                same = dataclasses.replace(layer, oaa=OaaParams(engine["n"], engine["k"], engine["l"], "same"))
                y = spectral_conv_fixed(x.reshape(layer.c_in, d["conv.cfg.height"], d["conv.cfg.width"]), same)
                top, left = d["post.top"], d["post.left"]
                y = y[:, top:top + d["post.height"], left:left + d["post.width"]]
                y = max_pool(y) if d["post.pool"] else y
            else:
                y = layer.forward(x)
            assert y.size == d["out_count"]
            self.acts[1 - d["src"]][:y.size] = y.reshape(-1)
            cycles += 1000 if d["kind"] == 0 else 100
        return cycles

    def read(self, buffer: int, offset: int, length: int) -> bytes:
        return self.acts[buffer][offset:offset + length].astype(np.int8).tobytes()

    def close(self) -> None:
        pass


def test_device_backend_runs_any_network_as_the_golden_one(nets, compressed, digits):
    for name, words in (("cnn", [("pool1", True), ("conv2", False), ("logits", False)]),
                        ("mlp", [("fc1", False), ("logits", False)])):
        model = load_model(nets / f"{name}.npz")
        assert [(step, pool) for step, _, pool in network_steps(model)] == words
        device = NetworkFake(model)
        session = Session(DeviceBackend(device, model), model)
        golden = open_backend("golden", model).run(digits.x_test[:3], trace=True)
        result = session.run(digits.x_test[:3])
        np.testing.assert_array_equal(result.logits, golden.logits)
        traced = session.run(digits.x_test[:2], trace=True)
        assert list(traced.layers) == list(trace_names(model))
        assert compare_traces({k: v[:2] for k, v in golden.layers.items()}, traced.layers) is None
        expected = sum(1000 if kind == "conv" else 100 for kind in
                       ["conv" if hasattr(layer, "oaa") else "fc" for _, layer, _ in network_steps(model)])
        assert session.cycles == [expected] * 5
        per_layer = session.layer_cycles(digits.x_test[:1])
        assert per_layer == {("conv1" if step == "pool1" else step): 1000 if hasattr(layer, "oaa") else 100
                             for step, layer, _ in network_steps(model)}
        loaded = session.backend.bytes_loaded()
        assert loaded["input_per_sample"] == 64 and loaded["output_per_sample"] == 10 and loaded["model"] > 0
        sizes = layer_sizes(model, session.backend.plan)
        assert sizes["all"]["device_bits"] == sum(v["device_bits"] for k, v in sizes.items() if k != "all")


def test_a_smaller_valid_kernel_runs_as_a_window_of_the_engine_s_output(digits):
    """A 5 x 5 "same" conv sets the engine's geometry (8, 5, 4); a 3 x 3 "valid" conv keeps k = 3 on N = 8, L = 4,
    and the device runs it as the engine's "same" output from row and column 0 (its crop 2 minus the engine's 2)."""
    rng = np.random.default_rng(3)
    net = FloatNetwork((1, 8, 8), (Conv2d("conv1", rng.normal(0, 0.2, (4, 1, 5, 5))), ReLU("relu1"),
                                   MaxPool2d("pool1"), Conv2d("conv2", rng.normal(0, 0.3, (6, 4, 3, 3)),
                                                              padding="valid"),
                                   ReLU("relu2"), Flatten("flat"), Linear("fc", rng.normal(0, 0.2, (10, 24)))))
    model = compress_network(net, digits.x_train[:200], fc_sparsity=0.0, fc_bits=2).model
    assert [c.spectral.oaa for c in model.conv_layers()] == [OaaParams(8, 5, 4, "same"), OaaParams(8, 3, 4, "valid")]
    packed = pack_network(LENET5_INFO, model)
    fields = {f["name"]: (f["offset"], f["width"]) for f in LENET5_INFO["descriptor"]["fields"]}
    window = unpack_fields(fields, packed.program[1])
    assert [window[f"post.{name}"] for name in ("top", "left", "height", "width", "pool")] == [0, 0, 2, 2, 0]
    session = Session(DeviceBackend(NetworkFake(model), model), model)
    golden = open_backend("golden", model).run(digits.x_test[:20], trace=True)
    traced = session.run(digits.x_test[:20], trace=True)
    assert compare_traces(golden.layers, traced.layers) is None
    np.testing.assert_array_equal(traced.logits, golden.logits)


def _conv_net(c_out: int = 4, size: int = 8, relu: bool = True, padding: str = "same", k: int = 5,
              pool_first: bool = False, rows: int = 10) -> FloatNetwork:
    rng = np.random.default_rng(1)
    layers = [MaxPool2d("p0")] if pool_first else []
    conv = Conv2d("conv", rng.normal(0, 0.2, (c_out, 1, k, k)), padding=padding)
    side = (size // 2 if pool_first else size) - (0 if padding == "same" else k - 1)
    features = c_out * side * side
    layers += [conv, *([ReLU("relu")] if relu else []), Flatten("flat"),
               Linear("fc", rng.normal(0, 0.1, (rows, features)))]
    return FloatNetwork((1, size, size), tuple(layers))


@pytest.mark.parametrize("net, message", [
    (_conv_net(c_out=20), r"layer conv: layer c_out=20 outside 1..16"),
    (_conv_net(size=32), r"layer conv: input height=32 outside 1..28"),
    (_conv_net(relu=False), r"layer conv: layer relu=False does not match the engine's relu=True"),
    (_conv_net(padding="valid", k=3), r"layer conv: layer \(n, k, l\)=\(8, 3, 6\) does not match the engine's "
                                      r"\(8, 5, 4\)"),
    (_conv_net(k=7), r"layer conv: layer \(n, k, l\)=\(16, 7, 10\) does not match the engine's \(8, 5, 4\)"),
    (_conv_net(pool_first=True), r"layer p0: the device pools only in a conv layer's post stage, and this pool "
                                 r"follows the input"),
    # More rows than the engine's 120 run in passes (hw.spec.fc_passes); more columns cannot.
    (_conv_net(c_out=16), r"layer fc: 1024 columns, the FC engine takes at most 400 \(max_cols; a layer is split "
                          r"into passes by rows only\)"),
])
def test_what_the_lenet5_accelerator_cannot_run_is_refused_in_one_line(net, message):
    x = np.random.default_rng(2).random((40, *net.input_shape))
    model = compress_network(net, x, fc_sparsity=0.0, fc_bits=1).model
    with pytest.raises(ConfigMismatch, match=f"^model file for another configuration: {message}") as error:
        DeviceBackend(_InfoOnly(), model)
    assert "\n" not in str(error.value)


class _InfoOnly:
    """A device that only answers INFO: a refusal must come before anything is loaded."""

    def info(self):
        return LENET5_INFO

    def load(self, *args):
        raise AssertionError("nothing may be loaded")


def test_the_e2e_benchmark_takes_any_model(nets, compressed):
    from sim.bench.e2e import bench_e2e

    result = bench_e2e(nets / "cnn.npz", None, sim=False, count=50)
    model = load_model(nets / "cnn.npz")
    assert result["data"] == "digits" and result["device_problem"] is None and result["simulation"] is None
    assert result["accuracy"]["images"] == 50 and result["accuracy"]["float"] == model.metadata["accuracy"]["float"]
    assert result["accuracy"]["compressed_stored"] == model.metadata["accuracy"]["compressed"]
    sizes = result["model_size"]
    assert list(sizes["layers"]) == ["conv1", "conv2", "logits"]
    assert sizes["all"]["device_bits"] == sum(layer["device_bits"] for layer in sizes["layers"].values())
    fc_bits = sizes["layers"]["logits"]["format_bits_per_weight"]
    assert sizes["all"]["fc_format_bits_per_weight"] == pytest.approx(fc_bits, abs=1e-4)
    # A model the config cannot run: its sizes in the format alone, no cycles, and the reason.
    small = bench_e2e(nets / "cnn.npz", None, sim=True, count=10, config="fc_only")
    assert small["device_problem"].endswith("the device has no conv engine: it cannot run this network's conv "
                                            "layers")
    assert small["simulation"] is None and small["simulation_skipped"] == small["device_problem"]
    assert "device_bits" not in small["model_size"]["all"] and small["model_size"]["all"]["format_bits"] > 0
