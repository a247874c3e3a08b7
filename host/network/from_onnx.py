"""ONNX models -> `FloatNetwork`, with the `onnx` package alone (no torch).

The graph must be one chain from its one input to its one output: every tensor on the way read by exactly one
node, every other input of a node an initializer or a Constant. Supported operators (`SUPPORTED`): Conv (square
kernel, stride 1, no dilation, group 1, "same" or "valid" padding), Relu, MaxPool (2 x 2, stride 2), Flatten
(axis 1), Reshape to (N, -1), Gemm (alpha = beta = 1, transB either way) and MatMul with an optional Add of a
constant bias, BatchNormalization (inference, folded into the Conv or Gemm before it), Identity and Dropout
(skipped). Anything else is refused with one line naming the node (`NetworkImportError`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from host.network.importing import Chain, NetworkImportError, conv_padding, one_line
from host.network.ir import Conv2d, Flatten, FloatNetwork, Linear, MaxPool2d, ReLU

try:
    import onnx
    from onnx import helper, numpy_helper
except ImportError:
    raise ImportError("the onnx package is needed to import ONNX models: pip install 'sqgen[import]'") from None

__all__ = ["SUPPORTED", "from_onnx"]

SUPPORTED = ("Conv (square kernel, stride 1, 'same' or 'valid' padding), Relu, MaxPool (2 x 2, stride 2), "
             "Flatten, Reshape to (N, -1), Gemm, MatMul (+ Add), BatchNormalization (folded), Identity, Dropout")
_DEFAULT_EPSILON = 1e-5


def _label(node: onnx.NodeProto) -> str:
    return f"node {node.name or node.output[0]!r} ({node.op_type})"


def _attrs(node: onnx.NodeProto) -> dict:
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def _const_value(node: onnx.NodeProto) -> np.ndarray:
    (attr,) = node.attribute
    value = helper.get_attribute_value(attr)
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    return np.asarray(value)


class _Graph:
    """One walk along a graph's chain, building the layers."""

    def __init__(self, graph: onnx.GraphProto, input_shape: Sequence[int] | None, source: str) -> None:
        self.source = source
        self.consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.nodes = []
        for node in graph.node:
            if node.op_type == "Constant" and len(node.attribute) == 1:
                self.consts[node.output[0]] = _const_value(node)
            else:
                self.nodes.append(node)
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for name in dict.fromkeys(n for n in node.input if n):
                self.consumers.setdefault(name, []).append(node)
        inputs = [i for i in graph.input if i.name not in self.consts]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise NetworkImportError(
                f"{source}: the graph has inputs {[i.name for i in inputs]} and outputs "
                f"{[o.name for o in graph.output]}; sqgen takes one input and one output")
        self.input, self.output = inputs[0].name, graph.output[0].name
        self.batch, self.input_shape = self._input_shape(inputs[0], input_shape)
        self.chain = Chain()
        self.visited: set[int] = set()

    def _input_shape(self, value: onnx.ValueInfoProto, given: Sequence[int] | None
                     ) -> tuple[int | None, tuple[int, ...]]:
        shape = value.type.tensor_type.shape if value.type.HasField("tensor_type") else None
        dims = ([d.dim_value if d.HasField("dim_value") else None for d in shape.dim]
                if shape is not None and value.type.tensor_type.HasField("shape") else None)
        declared = tuple(dims[1:]) if dims else None
        batch = dims[0] if dims else None
        if given is not None:
            given = tuple(int(d) for d in given)
            if declared is not None and (len(declared) != len(given)
                                         or any(d not in (None, g) for d, g in zip(declared, given))):
                raise NetworkImportError(f"{self.source}: input {value.name!r} is declared (N, "
                                         f"{', '.join(map(str, declared))}), not input_shape {given}")
            return batch, given
        if declared is None or len(declared) not in (1, 3) or None in declared:
            raise NetworkImportError(f"{self.source}: input {value.name!r} has no fixed (N, C, H, W) or "
                                     f"(N, features) shape ({dims}); pass input_shape")
        return batch, declared

    def shape(self) -> tuple[int, ...]:
        return self.chain.shape(self.input_shape, self.source)

    def const(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray | None:
        """Input `index` of `node` as an array (None when the optional input is absent); refused unless constant."""
        if index >= len(node.input) or not node.input[index]:
            return None
        name = node.input[index]
        if name not in self.consts:
            raise NetworkImportError(f"{_label(node)}: its {what} {name!r} is not an initializer or Constant; "
                                     "sqgen takes constant weights on a chain of layers")
        return self.consts[name]

    def refuse(self, node: onnx.NodeProto, what: str) -> NetworkImportError:
        return NetworkImportError(f"{_label(node)}: {what}")

    def name(self, node: onnx.NodeProto) -> str:
        return self.chain.unique(node.name, node.output[0])

    def walk(self) -> FloatNetwork:
        current = self.input
        while True:
            users = self.consumers.get(current, [])
            if current == self.output and not users:
                break
            if len(users) != 1 or current == self.output:
                readers = ", ".join(_label(n) for n in users) or "nothing"
                raise NetworkImportError(
                    f"{self.source}: tensor {current!r} is read by {readers}"
                    f"{' and is the graph output' if current == self.output else ''}; sqgen takes a chain of "
                    "layers, each tensor read once, from the input to the output")
            node = users[0]
            handler = _HANDLERS.get(node.op_type)
            if handler is None:
                raise self.refuse(node, f"unsupported operator; sqgen takes {SUPPORTED}")
            if node.input[0] != current:
                raise self.refuse(node, f"reads {current!r} as input {list(node.input).index(current)}; the "
                                        "activation must be its first input")
            node = handler(self, node)  # a handler may take the next node too (MatMul + Add)
            self.visited.add(id(node))
            for extra in node.output[1:]:
                if extra and (extra in self.consumers or extra == self.output):
                    raise self.refuse(node, f"its second output {extra!r} is used; sqgen takes one output per node")
            current = node.output[0]
        for node in self.nodes:
            if id(node) not in self.visited:
                raise self.refuse(node, f"not on the chain from input {self.input!r} to output {self.output!r}; "
                                        "sqgen takes a chain of layers")
        return self.chain.network(self.input_shape, self.source)


def _conv(g: _Graph, node: onnx.NodeProto) -> onnx.NodeProto:
    weight, bias = g.const(node, 1, "weight"), g.const(node, 2, "bias")
    a = _attrs(node)
    if weight is None or weight.ndim != 4 or weight.shape[2] != weight.shape[3]:
        shape = None if weight is None else weight.shape
        raise g.refuse(node, f"weight of shape {shape}; sqgen takes 2-D convolutions with square kernels "
                             "(c_out, c_in, k, k)")
    k = weight.shape[2]
    for attr, what in (("strides", "stride"), ("dilations", "dilation")):
        if any(v != 1 for v in a.get(attr, [1, 1])):
            raise g.refuse(node, f"{what} {tuple(a[attr])}; sqgen takes {what} 1")
    if a.get("group", 1) != 1:
        raise g.refuse(node, f"group {a['group']}; sqgen takes group 1")
    auto_pad = a.get("auto_pad", "NOTSET")
    if auto_pad == "VALID":
        padding = "valid"
    elif auto_pad == "SAME_UPPER" or (auto_pad == "SAME_LOWER" and k % 2):
        padding = "same"  # SAME_UPPER puts an even kernel's extra row after the map, as Conv2d's "same" does
    elif auto_pad == "NOTSET":
        pads = a.get("pads", [0, 0, 0, 0])
        padding = conv_padding(k, pads[:2], pads[2:])
    else:
        padding = None
    if padding is None:
        pads = tuple(a.get("pads", ())) if auto_pad == "NOTSET" else auto_pad
        raise g.refuse(node, f"padding {pads} with a {k} x {k} kernel; sqgen takes pads all 0 ('valid') or "
                             f"({(k - 1) // 2} before, {k - 1 - (k - 1) // 2} after: 'same')")
    g.chain.add(Conv2d(g.name(node), weight, bias, padding))
    return node


def _relu(g: _Graph, node: onnx.NodeProto) -> onnx.NodeProto:
    g.chain.add(ReLU(g.name(node)))
    return node


def _max_pool(g: _Graph, node: onnx.NodeProto) -> onnx.NodeProto:
    a = _attrs(node)
    found = {"kernel_shape": list(a.get("kernel_shape", [])), "strides": list(a.get("strides", [1, 1])),
             "pads": list(a.get("pads", [0, 0, 0, 0])), "dilations": list(a.get("dilations", [1, 1])),
             "ceil_mode": a.get("ceil_mode", 0), "auto_pad": a.get("auto_pad", "NOTSET")}
    wanted = {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0], "dilations": [1, 1], "ceil_mode": 0}
    wrong = [f"{k}={found[k]}" for k, v in wanted.items() if found[k] != v]
    if found["auto_pad"] not in ("NOTSET", "VALID"):
        wrong.append(f"auto_pad={found['auto_pad']}")
    if wrong:
        raise g.refuse(node, f"{', '.join(wrong)}; sqgen takes 2 x 2 max-pooling with stride 2, no padding, "
                             "ceil_mode 0")
    g.chain.add(MaxPool2d(g.name(node)))
    return node


def _flatten(g: _Graph, node: onnx.NodeProto) -> onnx.NodeProto:
    axis = _attrs(node).get("axis", 1)
    rank = len(g.shape()) + 1
    if axis % rank != 1:
        raise g.refuse(node, f"axis {axis}; sqgen takes Flatten with axis 1 (keeping the batch)")
    g.chain.add(Flatten(g.name(node)))
    return node


def _reshape(g: _Graph, node: onnx.NodeProto) -> onnx.NodeProto:
    target = g.const(node, 1, "shape")
    features = math.prod(g.shape())
    allowzero = _attrs(node).get("allowzero", 0)
    dims = [int(d) for d in target.reshape(-1)] if target is not None else []
    batch_ok = len(dims) == 2 and (dims[0] == 0 and not allowzero or dims[0] == g.batch
                                   or dims[0] == -1 and dims[1] == features)
    if not (batch_ok and dims[1] in (-1, features)):
        raise g.refuse(node, f"reshapes to {dims}; sqgen takes a reshape to (N, -1) or (N, {features})")
    g.chain.add(Flatten(g.name(node)))
    return node


def _bias(g: _Graph, node: onnx.NodeProto, value: np.ndarray | None, size: int) -> np.ndarray | None:
    if value is None:
        return None
    if value.size == 1:
        return np.full(size, value.reshape(()), dtype=np.float32)
    if value.shape not in ((size,), (1, size)):
        raise g.refuse(node, f"bias of shape {value.shape}; sqgen takes one of ({size},) or (1, {size})")
    return value.reshape(size)


def _gemm(g: _Graph, node: onnx.NodeProto) -> onnx.NodeProto:
    a = _attrs(node)
    weight = g.const(node, 1, "weight B")
    wrong = [f"{k}={a[k]}" for k, v in (("alpha", 1.0), ("beta", 1.0), ("transA", 0)) if a.get(k, v) != v]
    if weight is None or weight.ndim != 2:
        wrong.append(f"B of shape {getattr(weight, 'shape', None)}")
    if wrong:
        raise g.refuse(node, f"{', '.join(wrong)}; sqgen takes Gemm with alpha = beta = 1, transA = 0 and a "
                             "constant 2-D B")
    weight = weight if a.get("transB", 0) else weight.T
    g.chain.add(Linear(g.name(node), weight, _bias(g, node, g.const(node, 2, "bias C"), weight.shape[0])))
    return node


def _matmul(g: _Graph, node: onnx.NodeProto) -> onnx.NodeProto:
    weight = g.const(node, 1, "weight")
    if weight is None or weight.ndim != 2:
        raise g.refuse(node, f"weight of shape {getattr(weight, 'shape', None)}; sqgen takes x @ W with a constant "
                             "2-D W (in, out)")
    name, bias = g.name(node), None
    users = g.consumers.get(node.output[0], [])
    if len(users) == 1 and users[0].op_type == "Add" and node.output[0] != g.output:
        add = users[0]
        other = [n for n in add.input if n != node.output[0]]
        if len(other) == 1 and other[0] in g.consts:
            bias = _bias(g, add, g.consts[other[0]], weight.shape[1])
            g.visited.add(id(node))
            node = add
    g.chain.add(Linear(name, weight.T, bias))
    return node


def _batchnorm(g: _Graph, node: onnx.NodeProto) -> onnx.NodeProto:
    a = _attrs(node)
    if a.get("training_mode", 0) or a.get("spatial", 1) != 1:
        raise g.refuse(node, "training mode or spatial = 0; sqgen folds inference-mode BatchNormalization")
    params = [g.const(node, i, what) for i, what in enumerate(("scale", "bias", "mean", "variance"), 1)]
    if any(p is None for p in params):
        raise g.refuse(node, "missing scale, bias, mean or variance")
    g.chain.fold_batchnorm(_label(node), *params, a.get("epsilon", _DEFAULT_EPSILON))
    return node


def _skip(g: _Graph, node: onnx.NodeProto) -> onnx.NodeProto:
    if node.op_type == "Dropout":
        training = g.const(node, 2, "training_mode")
        if training is not None and bool(training):
            raise g.refuse(node, "training_mode is true; sqgen skips Dropout in inference only")
    return node


_HANDLERS: dict[str, Callable[[_Graph, onnx.NodeProto], onnx.NodeProto]] = {
    "Conv": _conv, "Relu": _relu, "MaxPool": _max_pool, "Flatten": _flatten, "Reshape": _reshape, "Gemm": _gemm,
    "MatMul": _matmul, "BatchNormalization": _batchnorm, "Identity": _skip, "Dropout": _skip,
}


def from_onnx(source: str | Path | onnx.ModelProto, input_shape: Sequence[int] | None = None) -> FloatNetwork:
    """The float network of an ONNX model (a path or a loaded `ModelProto`).

    `input_shape` (one sample: (C, H, W) or (features,)) is needed only when the graph's input does not fix it.
    """
    if isinstance(source, onnx.ModelProto):
        model, name = source, source.graph.name or "model"
    else:
        name = str(source)
        try:
            model = onnx.load(name)
        except FileNotFoundError:
            raise NetworkImportError(f"{name}: no such file") from None
        except Exception as error:  # protobuf raises its own DecodeError, among others
            raise NetworkImportError(f"{name}: not an ONNX model ({one_line(error)})") from None
    return _Graph(model.graph, input_shape, name).walk()
