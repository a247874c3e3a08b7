"""PyTorch models -> `FloatNetwork`; torch is imported only when `from_torch` runs.

Three ways in, one supported set (`SUPPORTED`): an `nn.Sequential` (nested ones too) is walked module by module;
any other `nn.Module` is traced with `torch.fx` (its forward must be a plain chain: modules, `F.relu`,
`F.max_pool2d`, `torch.flatten(x, 1)`, `x.view(x.size(0), -1)`, dropout); a TorchScript module (scripted or traced)
is frozen and its graph's operators walked. Layers take the module paths as names (`features.0`); BatchNorm folds
into the Conv2d or Linear just before it, using its running statistics, so the network is imported as in
`eval()` mode. Anything else is refused with one line naming the module or node (`NetworkImportError`).
"""

from __future__ import annotations

import contextlib
import math
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from host.network.importing import Chain, NetworkImportError, conv_padding, one_line
from host.network.ir import Conv2d, Flatten, FloatNetwork, Linear, MaxPool2d, ReLU

if TYPE_CHECKING:
    import torch

__all__ = ["SUPPORTED", "from_torch", "load_torch"]

SUPPORTED = ("nn.Conv2d (square kernel, stride 1, 'same' or 'valid' padding, zeros padding mode), nn.ReLU, "
             "nn.MaxPool2d(2), nn.Flatten(), nn.Linear, nn.BatchNorm2d/1d (folded), nn.Dropout, nn.Identity, "
             "nested nn.Sequential; in a traced forward also F.relu, F.max_pool2d, torch.flatten(x, 1), "
             "x.view(x.size(0), -1)")
# A batch dimension kept by a reshape: x.size(0) in a view's shape.
_BATCH = object()


def _torch() -> Any:
    try:
        import torch
        import torch.fx  # noqa: F401 (a submodule, imported for symbolic tracing)
    except ImportError:
        raise ImportError("torch is needed to import PyTorch models: pip install 'sqgen[train]'") from None
    return torch


@contextlib.contextmanager
def _quiet_deprecation() -> Iterator[None]:
    """TorchScript is deprecated in torch; reading a file someone already saved with it is still what they asked."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _numpy(tensor: Any) -> np.ndarray | None:
    return None if tensor is None else tensor.detach().cpu().numpy()


def _pair(value: Any) -> tuple[int, ...]:
    values = tuple(value) if isinstance(value, list | tuple) else (value, value)
    return tuple(int(v) for v in values)


class _Builder:
    """The supported operations with torch's own parameter conventions, shared by the three ways in."""

    def __init__(self, input_shape: Sequence[int], source: str) -> None:
        self.chain = Chain()
        self.input_shape = tuple(int(d) for d in input_shape)
        self.source = source

    def rank(self) -> int:
        """The rank of the tensor the chain is at, the batch included."""
        return len(self.chain.shape(self.input_shape, self.source)) + 1

    def conv(self, where: str, name: str, weight: np.ndarray, bias: np.ndarray | None, stride: Any, padding: Any,
             dilation: Any, groups: int, padding_mode: str = "zeros", transposed: bool = False) -> None:
        if weight.ndim != 4 or weight.shape[2] != weight.shape[3] or transposed:
            found = "a transposed convolution" if transposed else f"weight {weight.shape}"
            raise NetworkImportError(f"{where}: {found}; sqgen takes 2-D convolutions with square kernels")
        for what, value in (("stride", stride), ("dilation", dilation)):
            if set(_pair(value)) != {1}:
                raise NetworkImportError(f"{where}: {what} {_pair(value)}; sqgen takes {what} 1")
        if groups != 1 or padding_mode != "zeros":
            raise NetworkImportError(f"{where}: groups {groups}, padding_mode {padding_mode!r}; sqgen takes groups 1 "
                                     "and zero padding")
        k = weight.shape[2]
        kind = padding if isinstance(padding, str) else conv_padding(k, _pair(padding), _pair(padding))
        if kind not in ("same", "valid"):
            raise NetworkImportError(f"{where}: padding {padding!r} with a {k} x {k} kernel; sqgen takes 'same' "
                                     f"(or {(k - 1) // 2} for an odd kernel) or 'valid' (or 0)")
        self.chain.add(Conv2d(self.chain.unique(name, "conv"), weight, bias, kind))

    def relu(self, name: str) -> None:
        self.chain.add(ReLU(self.chain.unique(name, "relu")))

    def max_pool(self, where: str, name: str, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 dilation: Any = 1, ceil_mode: bool = False, return_indices: bool = False) -> None:
        stride = kernel_size if stride is None or stride == [] else stride
        found = {"kernel_size": _pair(kernel_size), "stride": _pair(stride), "padding": _pair(padding),
                 "dilation": _pair(dilation), "ceil_mode": bool(ceil_mode), "return_indices": bool(return_indices)}
        wanted = {"kernel_size": (2, 2), "stride": (2, 2), "padding": (0, 0), "dilation": (1, 1), "ceil_mode": False,
                  "return_indices": False}
        wrong = [f"{key}={found[key]}" for key in wanted if found[key] != wanted[key]]
        if wrong:
            raise NetworkImportError(f"{where}: {', '.join(wrong)}; sqgen takes 2 x 2 max-pooling with stride 2, no "
                                     "padding")
        self.chain.add(MaxPool2d(self.chain.unique(name, "pool")))

    def flatten(self, where: str, name: str, start_dim: int = 0, end_dim: int = -1) -> None:
        rank = self.rank()
        if start_dim % rank != 1 or end_dim % rank != rank - 1:
            raise NetworkImportError(f"{where}: flattens dimensions {start_dim}..{end_dim}; sqgen takes flatten(x, 1) "
                                     "(all but the batch)")
        self.chain.add(Flatten(self.chain.unique(name, "flatten")))

    def reshape(self, where: str, name: str, dims: Sequence[Any]) -> None:
        features = math.prod(self.chain.shape(self.input_shape, self.source))
        if not (len(dims) == 2 and (dims[0] is _BATCH and dims[1] in (-1, features)
                                    or dims[0] == -1 and dims[1] == features)):
            shown = ["x.size(0)" if d is _BATCH else d for d in dims]
            raise NetworkImportError(f"{where}: reshapes to {shown}; sqgen takes x.view(x.size(0), -1) or "
                                     f"x.view(-1, {features})")
        self.chain.add(Flatten(self.chain.unique(name, "flatten")))

    def linear(self, name: str, weight: np.ndarray, bias: np.ndarray | None) -> None:
        self.chain.add(Linear(self.chain.unique(name, "linear"), weight, bias))

    def batchnorm(self, where: str, weight: np.ndarray | None, bias: np.ndarray | None, mean: np.ndarray | None,
                  var: np.ndarray | None, eps: float, after: tuple[type, ...] = (Conv2d, Linear)) -> None:
        if mean is None or var is None:
            raise NetworkImportError(f"{where}: no running statistics (track_running_stats=False); sqgen folds a "
                                     "BatchNorm with running mean and variance")
        ones = np.ones_like(mean)
        self.chain.fold_batchnorm(where, ones if weight is None else weight, 0 * ones if bias is None else bias,
                                  mean, var, eps, after)

    def network(self) -> FloatNetwork:
        return self.chain.network(self.input_shape, self.source)


def _module(build: _Builder, path: str, module: torch.nn.Module) -> None:
    """Take one leaf module (its path names the layer)."""
    from torch import nn

    where = f"module {path!r} ({type(module).__name__})"
    kind = type(module)
    if kind is nn.Conv2d:
        build.conv(where, path, _numpy(module.weight), _numpy(module.bias), module.stride, module.padding,
                   module.dilation, module.groups, module.padding_mode)
    elif kind is nn.ReLU:
        build.relu(path)
    elif kind is nn.MaxPool2d:
        build.max_pool(where, path, module.kernel_size, module.stride, module.padding, module.dilation,
                       module.ceil_mode, module.return_indices)
    elif kind is nn.Flatten:
        build.flatten(where, path, module.start_dim, module.end_dim)
    elif kind is nn.Linear:
        build.linear(path, _numpy(module.weight), _numpy(module.bias))
    elif kind in (nn.BatchNorm2d, nn.BatchNorm1d):
        build.batchnorm(where, _numpy(module.weight), _numpy(module.bias), _numpy(module.running_mean),
                        _numpy(module.running_var), module.eps, (Conv2d,) if kind is nn.BatchNorm2d else (Linear,))
    elif kind not in (nn.Dropout, nn.Identity):
        raise NetworkImportError(f"{where}: unsupported; sqgen takes {SUPPORTED}")


def _sequential(build: _Builder, module: torch.nn.Module, prefix: str = "") -> None:
    from torch import nn

    for name, child in module.named_children():
        if type(child) is nn.Sequential:
            _sequential(build, child, f"{prefix}{name}.")
        else:
            _module(build, f"{prefix}{name}", child)


def _bind(args: Sequence[Any], kwargs: dict, names: Sequence[str]) -> dict:
    """A call's arguments after its input, by parameter name."""
    return {**dict(zip(names, args)), **kwargs}


def _fx(build: _Builder, module: torch.nn.Module) -> None:
    torch = _torch()
    functional = torch.nn.functional
    try:
        graph = torch.fx.symbolic_trace(module)
    except Exception as error:  # a forward fx cannot follow raises whatever its Python raises
        raise NetworkImportError(f"{build.source}: torch.fx cannot trace {type(module).__name__} "
                                 f"({one_line(error)}); save it as TorchScript or build it of nn.Sequential") from None
    graph.graph.eliminate_dead_code()  # what the output does not depend on is not a layer
    relus = (functional.relu, torch.relu, torch.relu_)
    dropouts = (functional.dropout, torch.dropout)
    current = None
    chain, batch_sizes = set(), set()
    for node in graph.graph.nodes:
        target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", node.target)
        where = f"node {node.name!r} ({node.op} {target})"
        if node.op == "placeholder":
            if current is not None:
                raise NetworkImportError(f"{where}: a second input; sqgen takes a forward of one input")
            current = node
            chain.add(node)
            continue
        if node.op == "get_attr":
            raise NetworkImportError(f"{where}: reads a parameter or buffer outside a module; sqgen takes weights held "
                                     "by the modules it supports")
        if node.op == "output":
            if node.args[0] is not current:
                raise NetworkImportError(f"{where}: returns {node.args[0]!r}; sqgen takes a forward returning the "
                                         "last layer's output")
            break
        data = node.args[0] if node.args else node.kwargs.get("input")
        args, kwargs = node.args[1:], dict(node.kwargs)
        kwargs.pop("input", None)
        if node.op == "call_method" and node.target == "size" and data in chain \
                and _bind(args, kwargs, ["dim"]).get("dim") == 0:
            batch_sizes.add(node)  # every tensor on the chain has the same batch size
            continue
        if data is not current:
            raise NetworkImportError(f"{where}: reads {getattr(data, 'name', data)!r} while the chain is at "
                                     f"{current.name!r}; sqgen takes a chain of layers, each output read once")
        if node.op == "call_module":
            _module(build, node.target, graph.get_submodule(node.target))
        elif (node.op == "call_function" and node.target in relus) or (node.op == "call_method" and target == "relu"):
            build.relu(node.name)
        elif node.op == "call_function" and node.target is functional.max_pool2d:
            build.max_pool(where, node.name, **_bind(args, kwargs, ["kernel_size", "stride", "padding", "dilation",
                                                                   "ceil_mode", "return_indices"]))
        elif (node.op == "call_function" and node.target is torch.flatten) or (node.op == "call_method"
                                                                               and target == "flatten"):
            build.flatten(where, node.name, **_bind(args, kwargs, ["start_dim", "end_dim"]))
        elif node.op == "call_method" and target in ("view", "reshape"):
            dims = args[0] if len(args) == 1 and isinstance(args[0], list | tuple) else args
            build.reshape(where, node.name, [_BATCH if d in batch_sizes else d for d in dims])
        elif not ((node.op == "call_function" and node.target in dropouts)
                  or (node.op == "call_method" and target == "contiguous")):
            raise NetworkImportError(f"{where}: unsupported; sqgen takes {SUPPORTED}")
        current = node
        chain.add(node)


_SCRIPT_SKIPPED = ("aten::dropout", "aten::dropout_", "aten::feature_dropout", "aten::contiguous")


def _script(build: _Builder, module: torch.jit.ScriptModule) -> None:
    torch = _torch()
    try:
        with _quiet_deprecation():
            graph = torch.jit.freeze(module.eval(), optimize_numerics=False).graph
    except Exception as error:  # freezing reports through RuntimeError and its own types
        raise NetworkImportError(f"{build.source}: cannot freeze the TorchScript module ({one_line(error)})") from None
    inputs = list(graph.inputs())[1:]  # after the module itself
    if len(inputs) != 1:
        raise NetworkImportError(f"{build.source}: forward takes {len(inputs)} inputs; sqgen takes one")
    current = inputs[0].unique()
    # Only what the output depends on: a scripted module's input checks (x.dim() compared, a branch that raises)
    # read the chain's tensors too but compute nothing of the output.
    live: set[int] = set()
    pending = list(graph.outputs())
    while pending:
        v = pending.pop()
        if v.unique() not in live:
            live.add(v.unique())
            pending.extend(v.node().inputs())
    values: dict[int, Any] = {}  # constants
    lists: dict[int, list] = {}  # lists of values, resolved where a layer reads them
    batch_sizes: set[int] = set()  # x.size(0) of a tensor on the chain
    chain = {current}

    def value(v: Any, where: str) -> Any:
        if v.unique() in batch_sizes:
            return _BATCH
        if v.unique() in lists:
            return [value(item, where) for item in lists[v.unique()]]
        if v.unique() not in values:
            raise NetworkImportError(f"{where}: reads {v.debugName()!r}, computed at run time; sqgen takes a chain "
                                     "of layers with constant weights and parameters")
        return values[v.unique()]

    for node in graph.nodes():
        if not any(v.unique() in live for v in node.outputs()):
            continue
        kind = node.kind()
        ins = list(node.inputs())
        if kind == "prim::Constant":
            values[node.output().unique()] = node.output().toIValue()
            continue
        if kind == "prim::ListConstruct":
            lists[node.output().unique()] = ins
            continue
        # A frozen parameter keeps its path ("self.features.0.weight"); a traced module's scope names the rest.
        weight_name = ins[1].debugName() if len(ins) > 1 else ""
        if weight_name.startswith("self."):
            name = weight_name[len("self."):].rpartition(".")[0]
        else:
            name = node.scopeName().rpartition("__module.")[2]
        where = f"node {kind} ({name or 'unnamed'})"
        if kind == "aten::size" and len(ins) == 2 and ins[0].unique() in chain:
            if value(ins[1], where) != 0:
                raise NetworkImportError(f"{where}: x.size({value(ins[1], where)}); sqgen reads only x.size(0), in a "
                                         "reshape")
            batch_sizes.add(node.output().unique())
            continue
        if not ins or ins[0].unique() != current:
            raise NetworkImportError(f"{where}: does not read the output of the layer before; sqgen takes a chain "
                                     "of layers, each output read once")
        args = [value(v, where) for v in ins[1:]]
        if kind in ("aten::conv2d", "aten::_convolution_mode"):  # the latter: a traced padding="same" or "valid"
            weight, bias, stride, padding, dilation, groups = args
            build.conv(where, name, _numpy(weight), _numpy(bias), stride, padding, dilation, groups)
        elif kind == "aten::_convolution":
            weight, bias, stride, padding, dilation, transposed, _, groups = args[:8]
            build.conv(where, name, _numpy(weight), _numpy(bias), stride, padding, dilation, groups,
                       transposed=transposed)
        elif kind == "aten::batch_norm":
            weight, bias, mean, var, training, _, eps = args[:7]
            if training:
                raise NetworkImportError(f"{where}: batch statistics (training); sqgen folds running statistics")
            build.batchnorm(where, _numpy(weight), _numpy(bias), _numpy(mean), _numpy(var), eps)
        elif kind in ("aten::relu", "aten::relu_"):
            build.relu(name)
        elif kind == "aten::max_pool2d":
            build.max_pool(where, name, *args)
        elif kind == "aten::flatten":
            build.flatten(where, name, *args)
        elif kind in ("aten::view", "aten::reshape"):
            build.reshape(where, name, args[0])
        elif kind == "aten::linear":
            build.linear(name, _numpy(args[0]), _numpy(args[1]))
        elif kind not in _SCRIPT_SKIPPED:
            raise NetworkImportError(f"{where}: unsupported; sqgen takes {SUPPORTED}")
        current = node.output().unique()
        chain.add(current)
    outputs = list(graph.outputs())
    if len(outputs) != 1 or outputs[0].unique() != current:
        raise NetworkImportError(f"{build.source}: forward returns {[v.debugName() for v in outputs]}; sqgen takes "
                                 "a forward returning the last layer's output")


def load_torch(path: str | Path) -> torch.nn.Module:
    """A module saved whole (`torch.save(model)`, unpickled: load only files you trust) or as TorchScript."""
    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise NetworkImportError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            scripted = any(name.endswith("/constants.pkl") for name in archive.namelist())
        if scripted:
            try:
                with _quiet_deprecation():
                    return torch.jit.load(str(path), map_location="cpu")
            except Exception as error:  # TorchScript reports a bad archive through RuntimeError and others
                raise NetworkImportError(f"{path}: unreadable TorchScript ({one_line(error)})") from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # unpickling raises whatever the pickled classes raise
        raise NetworkImportError(f"{path}: cannot load a module ({one_line(error)}); a module saved whole needs its "
                                 "class importable, or save it as TorchScript") from None
    if not isinstance(loaded, torch.nn.Module):
        raise NetworkImportError(f"{path}: holds a {type(loaded).__name__}, not a module (a state_dict has no "
                                 "architecture); save the module whole (torch.save(model)) or as TorchScript")
    return loaded


def from_torch(source: str | Path | torch.nn.Module, input_shape: Sequence[int]) -> FloatNetwork:
    """The float network of a PyTorch module, in memory or saved (`load_torch`), for samples of `input_shape`
    ((C, H, W) or (features,): a module does not record the shape it takes)."""
    torch = _torch()
    module = source if isinstance(source, torch.nn.Module) else load_torch(source)
    build = _Builder(input_shape, type(module).__name__ if module is source else str(source))
    if isinstance(module, torch.jit.ScriptModule):
        _script(build, module)
    elif type(module) is torch.nn.Sequential:
        _sequential(build, module)
    else:
        _fx(build, module)
    return build.network()
