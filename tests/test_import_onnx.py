"""host.network.from_onnx: every supported operator imported and its float forward equal to onnx's reference
evaluator, BatchNormalization folded, every unsupported case refused with its node named, files, and the whole
ONNX path running with torch impossible to import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import BLOCK_TORCH

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from host.network import NetworkError, NetworkImportError, load_network  # noqa: E402
from host.network.from_onnx import from_onnx  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)


def _r(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _bn(prefix: str, channels: int) -> dict[str, np.ndarray]:
    return {f"{prefix}.scale": _r(channels) + 2, f"{prefix}.bias": _r(channels), f"{prefix}.mean": _r(channels),
            f"{prefix}.var": np.abs(_r(channels)) + 0.5}


def _node(op: str, inputs: list[str], output: str, name: str | None = None, **attrs) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], name=output if name is None else name, **attrs)


def _model(nodes: list, weights: dict, x_shape: list | None = ("N", 3, 8, 8), outputs: tuple = ("y",),
           inputs: tuple = ()) -> onnx.ModelProto:
    init = [numpy_helper.from_array(np.asarray(v), k) for k, v in weights.items()]
    graph = helper.make_graph(
        nodes, "test", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape and list(x_shape)),
                        *(helper.make_tensor_value_info(i, TensorProto.FLOAT, None) for i in inputs)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], initializer=init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _same_as_reference(model: onnx.ModelProto, x: np.ndarray, **kwargs):
    net = from_onnx(model, **kwargs)
    ref = ReferenceEvaluator(model).run(None, {"x": x})[0]
    y = net.forward(x)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    return net


@pytest.mark.parametrize("k, attrs, padding", [
    (3, {"pads": [1, 1, 1, 1]}, "same"), (3, {}, "valid"), (5, {"pads": [2, 2, 2, 2]}, "same"),
    (4, {"pads": [1, 1, 2, 2]}, "same"), (4, {"auto_pad": "SAME_UPPER"}, "same"),
    (3, {"auto_pad": "SAME_LOWER"}, "same"),
    (3, {"auto_pad": "VALID"}, "valid"), (1, {"pads": [0, 0, 0, 0], "strides": [1, 1]}, "valid"),
    (2, {"kernel_shape": [2, 2], "dilations": [1, 1], "group": 1}, "valid"),
])
@pytest.mark.parametrize("bias", [True, False])
def test_conv(k, attrs, padding, bias):
    weights = {"w": _r(4, 3, k, k), **({"b": _r(4)} if bias else {})}
    model = _model([_node("Conv", ["x", "w", "b"] if bias else ["x", "w"], "y", name="conv", **attrs)], weights,
                   x_shape=["N", 3, "H", "W"])
    net = _same_as_reference(model, _r(2, 3, 8, 9), input_shape=(3, 8, 9))
    (conv,) = net.layers
    assert (conv.kind, conv.name, conv.padding) == ("Conv2d", "conv", padding)


def _whole_network() -> onnx.ModelProto:
    """Every supported operator on one chain: 3 x 12 x 12 -> 5 classes."""
    weights = {
        "c1.w": _r(6, 3, 3, 3), "c1.b": _r(6), **_bn("bn1", 6), "c2.w": _r(8, 6, 4, 4), **_bn("bn2", 8),
        "flat": np.array([0, -1], dtype=np.int64), "fc1.w": _r(16, 8), "fc1.b": _r(16), **_bn("bn3", 16),
        "fc2.w": _r(16, 12), "fc2.b": _r(12), "fc3.w": _r(12, 5), "fc3.b": _r(1, 5),
    }
    nodes = [
        _node("Conv", ["x", "c1.w", "c1.b"], "c1", pads=[1, 1, 1, 1]),
        _node("BatchNormalization", ["c1", "bn1.scale", "bn1.bias", "bn1.mean", "bn1.var"], "bn1", epsilon=1e-3),
        _node("Relu", ["bn1"], "r1"), _node("MaxPool", ["r1"], "p1", kernel_shape=[2, 2], strides=[2, 2]),
        _node("Conv", ["p1", "c2.w"], "c2"),  # valid: 6 x 6 -> 3 x 3
        _node("BatchNormalization", ["c2", "bn2.scale", "bn2.bias", "bn2.mean", "bn2.var"], "bn2"),
        _node("Relu", ["bn2"], "r2"), _node("MaxPool", ["r2"], "p2", kernel_shape=[2, 2], strides=[2, 2]),  # 1 x 1
        _node("Identity", ["p2"], "id"),
        _node("Reshape", ["id", "flat"], "flat_out", name="reshape"),
        _node("Gemm", ["flat_out", "fc1.w", "fc1.b"], "fc1", transB=1),
        _node("BatchNormalization", ["fc1", "bn3.scale", "bn3.bias", "bn3.mean", "bn3.var"], "bn3"),
        _node("Relu", ["bn3"], "r3"), _node("Dropout", ["r3"], "drop"),
        _node("Gemm", ["drop", "fc2.w", "fc2.b"], "fc2"),  # transB 0: B is (in, out)
        _node("Relu", ["fc2"], "r4"),
        _node("MatMul", ["r4", "fc3.w"], "fc3"), _node("Add", ["fc3.b", "fc3"], "y", name="fc3.add"),  # bias first
    ]
    return _model(nodes, weights, x_shape=["N", 3, 12, 12])


def test_whole_network_equals_the_reference_evaluator():
    net = _same_as_reference(_whole_network(), _r(4, 3, 12, 12))
    assert [(layer.kind, layer.name) for layer in net.layers] == [
        ("Conv2d", "c1"), ("ReLU", "r1"), ("MaxPool2d", "p1"), ("Conv2d", "c2"), ("ReLU", "r2"), ("MaxPool2d", "p2"),
        ("Flatten", "reshape"), ("Linear", "fc1"), ("ReLU", "r3"), ("Linear", "fc2"), ("ReLU", "r4"),
        ("Linear", "fc3")]
    assert net.input_shape == (3, 12, 12) and net.output_shape == (5,)
    assert net.layer("c2").padding == "valid"


@pytest.mark.parametrize("op, attrs, shape_value", [
    ("Flatten", {}, None), ("Flatten", {"axis": -3}, None),
    ("Reshape", {}, [0, -1]), ("Reshape", {}, [-1, 48]), ("Reshape", {}, [1, -1]), ("Reshape", {}, [1, 48]),
])
def test_flatten_and_reshape(op, attrs, shape_value):
    nodes = [_node("Relu", ["x"], "r")]
    if shape_value is None:
        nodes.append(_node(op, ["r"], "f", **attrs))
    else:  # the shape from a Constant node, as exporters write it
        nodes += [helper.make_node("Constant", [], ["shape"], name="shape",
                                   value=numpy_helper.from_array(np.array(shape_value, np.int64))),
                  _node(op, ["r", "shape"], "f", **attrs)]
    nodes.append(_node("Gemm", ["f", "w"], "y", transB=1))
    net = _same_as_reference(_model(nodes, {"w": _r(2, 48)}, x_shape=[1, 3, 4, 4]), _r(1, 3, 4, 4))
    assert [layer.kind for layer in net.layers] == ["ReLU", "Flatten", "Linear"]


def test_matmul_alone_and_features_input():
    model = _model([_node("MatMul", ["x", "w"], "m"), _node("Relu", ["m"], "y")], {"w": _r(6, 4)}, x_shape=["N", 6])
    net = _same_as_reference(model, _r(3, 6))
    assert net.input_shape == (6,) and [layer.kind for layer in net.layers] == ["Linear", "ReLU"]
    assert not net.layers[0].bias.any()


def test_input_shape():
    model = _model([_node("Relu", ["x"], "y")], {}, x_shape=["N", "C", 5, 5])
    with pytest.raises(NetworkImportError, match=r"input 'x' has no fixed \(N, C, H, W\) or \(N, features\) shape "
                                                 r"\(\[None, None, 5, 5\]\); pass input_shape"):
        from_onnx(model)
    assert from_onnx(model, input_shape=(2, 5, 5)).input_shape == (2, 5, 5)
    with pytest.raises(NetworkImportError, match=r"input 'x' is declared \(N, None, 5, 5\), not input_shape "
                                                 r"\(2, 6, 5\)"):
        from_onnx(model, input_shape=(2, 6, 5))
    assert from_onnx(_model([_node("Relu", ["x"], "y")], {}, x_shape=None), input_shape=(7,)).input_shape == (7,)


def _conv_model(**attrs) -> onnx.ModelProto:
    w = attrs.pop("w", _r(4, 3, 3, 3))
    return _model([_node("Conv", ["x", "w"], "y", name="conv", **attrs)], {"w": w})


def _chain(*nodes, weights=None, **kwargs) -> onnx.ModelProto:
    return _model(list(nodes), weights or {}, **kwargs)


BN = ["bn.scale", "bn.bias", "bn.mean", "bn.var"]
REFUSED = [
    (lambda: _chain(_node("Sigmoid", ["x"], "y", name="sig")),
     r"node 'sig' \(Sigmoid\): unsupported operator; sqgen takes Conv"),
    (lambda: _chain(_node("AveragePool", ["x"], "y", name="avg", kernel_shape=[2, 2])),
     r"node 'avg' \(AveragePool\): unsupported operator"),
    (lambda: _conv_model(strides=[2, 2]), r"node 'conv' \(Conv\): stride \(2, 2\); sqgen takes stride 1"),
    (lambda: _conv_model(dilations=[2, 2]), r"node 'conv' \(Conv\): dilation \(2, 2\); sqgen takes dilation 1"),
    (lambda: _conv_model(w=_r(3, 1, 3, 3), group=3), r"node 'conv' \(Conv\): group 3; sqgen takes group 1"),
    (lambda: _conv_model(pads=[1, 1, 0, 0]), r"node 'conv' \(Conv\): padding \(1, 1, 0, 0\) with a 3 x 3 kernel; "
                                             r"sqgen takes pads all 0 \('valid'\) or \(1 before, 1 after: 'same'\)"),
    (lambda: _conv_model(pads=[2, 2, 2, 2]), r"node 'conv' \(Conv\): padding \(2, 2, 2, 2\)"),
    (lambda: _conv_model(w=_r(4, 3, 4, 4), auto_pad="SAME_LOWER"), r"node 'conv' \(Conv\): padding SAME_LOWER with a "
                                                                   r"4 x 4 kernel"),
    (lambda: _conv_model(w=_r(4, 3, 3, 1)), r"node 'conv' \(Conv\): weight of shape \(4, 3, 3, 1\); sqgen takes 2-D "
                                            "convolutions with square kernels"),
    (lambda: _chain(_node("MaxPool", ["x"], "y", name="pool", kernel_shape=[3, 3], strides=[3, 3])),
     r"node 'pool' \(MaxPool\): kernel_shape=\[3, 3\], strides=\[3, 3\]; sqgen takes 2 x 2 max-pooling with stride 2"),
    (lambda: _chain(_node("MaxPool", ["x"], "y", name="pool", kernel_shape=[2, 2])),
     r"node 'pool' \(MaxPool\): strides=\[1, 1\]; sqgen takes 2 x 2"),
    (lambda: _chain(_node("MaxPool", ["x"], "y", name="pool", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)),
     r"node 'pool' \(MaxPool\): ceil_mode=1"),
    (lambda: _chain(_node("MaxPool", ["x"], "y", name="pool", kernel_shape=[2, 2], strides=[2, 2],
                          pads=[1, 1, 1, 1])), r"node 'pool' \(MaxPool\): pads=\[1, 1, 1, 1\]"),
    (lambda: _chain(_node("Flatten", ["x"], "y", name="flat", axis=2)),
     r"node 'flat' \(Flatten\): axis 2; sqgen takes Flatten with axis 1"),
    (lambda: _chain(_node("Reshape", ["x", "s"], "y", name="reshape"), weights={"s": np.array([0, 3, -1])}),
     r"node 'reshape' \(Reshape\): reshapes to \[0, 3, -1\]; sqgen takes a reshape to \(N, -1\) or \(N, 192\)"),
    (lambda: _chain(_node("Reshape", ["x", "s"], "y", name="reshape"), weights={"s": np.array([4, -1])}),
     r"node 'reshape' \(Reshape\): reshapes to \[4, -1\]"),
    (lambda: _chain(_node("Flatten", ["x"], "f"), _node("Gemm", ["f", "w"], "y", name="fc", alpha=2.0),
                    weights={"w": _r(192, 2)}),
     r"node 'fc' \(Gemm\): alpha=2.0; sqgen takes Gemm with alpha = beta = 1, transA = 0 and a constant 2-D B"),
    (lambda: _chain(_node("Flatten", ["x"], "f"), _node("Gemm", ["f", "w"], "y", name="fc", transA=1),
                    weights={"w": _r(192, 2)}), r"node 'fc' \(Gemm\): transA=1"),
    (lambda: _chain(_node("Flatten", ["x"], "f"), _node("Gemm", ["f", "w"], "y", name="fc"), inputs=("w",)),
     r"graph has inputs \['x', 'w'\] and outputs \['y'\]; sqgen takes one input and one output"),
    (lambda: _chain(_node("Identity", ["w0"], "w", name="copy"), _node("Conv", ["x", "w"], "y", name="conv"),
                    weights={"w0": _r(4, 3, 3, 3)}),
     r"node 'conv' \(Conv\): its weight 'w' is not an initializer or Constant; sqgen takes constant weights"),
    (lambda: _chain(_node("Relu", ["x"], "r", name="relu"), _node("BatchNormalization", ["r", *BN], "y", name="bn"),
                    weights=_bn("bn", 3)),
     r"node 'bn' \(BatchNormalization\): a BatchNorm after ReLU 'relu' cannot be folded; sqgen folds it only right "
     "after a Conv2d or Linear"),
    (lambda: _chain(_node("BatchNormalization", ["x", *BN], "y", name="bn", training_mode=1), weights=_bn("bn", 3)),
     r"node 'bn' \(BatchNormalization\): training mode"),
    (lambda: _chain(_node("Conv", ["x", "w"], "c", name="conv"),
                    _node("BatchNormalization", ["c", *BN], "y", name="bn"),
                    weights={"w": _r(4, 3, 3, 3), **_bn("bn", 3)}),
     r"node 'bn' \(BatchNormalization\): BatchNorm parameters of shapes .* do not match the 4 output channels of "
     "'conv'"),
    (lambda: _chain(_node("Relu", ["x"], "r", name="relu"), _node("Add", ["r", "x"], "y", name="residual")),
     r"tensor 'x' is read by node 'relu' \(Relu\), node 'residual' \(Add\); sqgen takes a chain of layers"),
    (lambda: _chain(_node("Relu", ["x"], "r", name="relu"), _node("Add", ["r", "b"], "y", name="add"),
                    weights={"b": _r(1)}), r"node 'add' \(Add\): unsupported operator"),
    (lambda: _chain(_node("Relu", ["x"], "r", name="relu"), _node("Relu", ["r"], "y", name="relu2"),
                    outputs=("r", "y")), "graph has inputs .* and outputs \\['r', 'y'\\]"),
    (lambda: _chain(_node("Relu", ["x"], "y", name="relu"), _node("Relu", ["y"], "z", name="relu2")),
     r"tensor 'y' is read by node 'relu2' \(Relu\) and is the graph output"),
    (lambda: _chain(_node("Relu", ["x"], "y", name="relu"), _node("Identity", ["w"], "unused", name="stray"),
                    weights={"w": _r(1)}), r"node 'stray' \(Identity\): not on the chain from input 'x' to output 'y'"),
    (lambda: _chain(helper.make_node("Dropout", ["x", "", "t"], ["y"], name="drop"),
                    weights={"t": np.array(True)}), r"node 'drop' \(Dropout\): training_mode is true"),
    (lambda: _chain(helper.make_node("Dropout", ["x"], ["d", "mask"], name="drop"),
                    helper.make_node("Cast", ["mask"], ["y"], name="cast", to=1)),
     r"node 'drop' \(Dropout\): its second output 'mask' is used"),
    (lambda: _chain(_node("Relu", ["x"], "r", name="relu"), _node("Mul", ["w", "r"], "y", name="scale"),
                    weights={"w": _r(1)}), r"node 'scale' \(Mul\): unsupported operator"),
    (lambda: _chain(_node("Conv", ["x", "w"], "y", name="conv"), weights={"w": _r(4, 3, 9, 9)}),
     r"test: layer 'conv' \(Conv2d\): a 'valid' 9 x 9 kernel needs a map of at least 9 x 9, gets 8 x 8"),
]


@pytest.mark.parametrize("make, message", REFUSED)
def test_refused_with_the_node_named(make, message):
    with pytest.raises(NetworkImportError, match=message) as caught:
        from_onnx(make())
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, NetworkError) and isinstance(caught.value, ValueError)


def test_files(tmp_path):
    model = _whole_network()
    path = tmp_path / "net.onnx"
    onnx.save(model, path)
    x = _r(2, 3, 12, 12)
    np.testing.assert_allclose(load_network(path).forward(x), from_onnx(model).forward(x))
    assert load_network(str(path), input_shape=(3, 12, 12)).output_shape == (5,)
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a model")
    with pytest.raises(NetworkImportError, match=r"junk.onnx: not an ONNX model \("):
        load_network(tmp_path / "junk.onnx")
    with pytest.raises(NetworkImportError, match="missing.onnx: no such file"):
        load_network(tmp_path / "missing.onnx")
    with pytest.raises(NetworkImportError, match=r"net.h5: unknown suffix '.h5'; sqgen reads .onnx and .pt"):
        load_network(tmp_path / "net.h5")


NO_TORCH = BLOCK_TORCH + """
import numpy as np
from onnx import TensorProto, helper, numpy_helper
from host.network import load_network
from host.network.from_onnx import from_onnx
from host.datasets import load_dataset

w = numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w")
graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[w])
net = from_onnx(helper.make_model(graph))
print(net.forward(np.ones((1, 3, 4, 4), np.float32))[0, 0, 1, 1], load_dataset("digits").sample_shape,
      "torch" in sys.modules)
"""


def test_onnx_path_needs_no_torch():
    out = subprocess.run([sys.executable, "-c", NO_TORCH], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["27.0", "(1,", "8,", "8)", "False"]
