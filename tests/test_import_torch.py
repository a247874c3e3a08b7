"""host.network.from_torch: nn.Sequential walked, plain forwards traced by torch.fx, TorchScript (scripted and
traced) frozen and walked, modules saved whole; each float forward equal to torch's own (BatchNorm folded), each
unsupported case refused with its module or node named."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from host.network import NetworkImportError, load_network  # noqa: E402
from host.network.from_torch import from_torch  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel"),
              pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")]


def _randomize_batchnorm(module: nn.Module) -> nn.Module:
    """Running statistics and affine parameters away from their defaults, so that folding them shows."""
    generator = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            with torch.no_grad():
                for tensor, low, high in ((m.running_mean, -1, 1), (m.running_var, 0.5, 2), (m.weight, 0.5, 2),
                                          (m.bias, -1, 1)):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)
    return module.eval()


def _sequential() -> nn.Sequential:
    torch.manual_seed(0)
    return _randomize_batchnorm(nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True)),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 4, padding="same"), nn.ReLU(), nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Conv2d(8, 8, 3, padding="valid", bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Flatten(), nn.Dropout(0.3),
        nn.Sequential(nn.Linear(8, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Identity()),
        nn.Linear(12, 5)))


X = np.random.default_rng(0).random((4, 3, 12, 12), dtype=np.float32)


def _same_as_torch(module: nn.Module, source=None, x: np.ndarray = X):
    net = from_torch(module if source is None else source, x.shape[1:])
    with torch.no_grad():
        ref = module.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net.forward(x), ref, rtol=1e-4, atol=1e-5)
    return net


def test_sequential():
    net = _same_as_torch(_sequential())
    assert [(layer.kind, layer.name) for layer in net.layers] == [
        ("Conv2d", "0.0"), ("ReLU", "0.2"), ("MaxPool2d", "1"), ("Conv2d", "2"), ("ReLU", "3"), ("MaxPool2d", "4"),
        ("Conv2d", "5"), ("ReLU", "7"), ("Flatten", "8"), ("Linear", "10.0"), ("ReLU", "10.2"), ("Linear", "11")]
    assert [net.layer(n).padding for n in ("0.0", "2", "5")] == ["same", "same", "valid"]


@pytest.mark.parametrize("kind", ["script", "trace"])
def test_torchscript(kind, tmp_path):
    module = _sequential()
    scripted = torch.jit.script(module) if kind == "script" else torch.jit.trace(module, torch.from_numpy(X))
    net = _same_as_torch(module, scripted)
    assert [layer.kind for layer in net.layers] == [layer.kind for layer in from_torch(module, X.shape[1:]).layers]
    assert [layer.name for layer in net.layers if layer.kind in ("Conv2d", "Linear")] == ["0.0", "2", "5", "10.0", "11"]
    path = tmp_path / "net.pt"
    torch.jit.save(scripted, path)
    np.testing.assert_allclose(load_network(path, X.shape[1:]).forward(X), net.forward(X), rtol=1e-6)


class Plain(nn.Module):
    """A forward fx follows: functions, methods and a reshape by x.size(0)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 5, padding=2)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 3 * 3, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        x = F.max_pool2d(x.relu(), kernel_size=2, stride=2)
        x = F.dropout(x.contiguous().view(x.size(0), -1), 0.5, self.training)
        x = torch.relu(self.fc(x))
        return self.out(torch.flatten(x, 1))


def test_fx_traced_forward():
    torch.manual_seed(0)
    net = _same_as_torch(_randomize_batchnorm(Plain()))
    assert [(layer.kind, layer.name) for layer in net.layers] == [
        ("Conv2d", "conv"), ("ReLU", "relu"), ("MaxPool2d", "max_pool2d"), ("ReLU", "relu_1"),
        ("MaxPool2d", "max_pool2d_1"), ("Flatten", "view"), ("Linear", "fc"), ("ReLU", "relu_2"),
        ("Flatten", "flatten"), ("Linear", "out")]


def test_lenet5_as_trained_and_saved_whole(tmp_path):
    from host.train.lenet import LeNet5

    torch.manual_seed(0)
    model = LeNet5().eval()
    x = np.random.default_rng(1).random((3, 1, 28, 28), dtype=np.float32)
    net = _same_as_torch(model, x=x)
    assert net.describe()["parameters"] == sum(p.numel() for p in model.parameters())
    path = tmp_path / "lenet5.pth"
    torch.save(model, path)
    np.testing.assert_array_equal(load_network(path, (1, 28, 28)).forward(x), net.forward(x))
    torch.save(model.state_dict(), tmp_path / "state.pt")
    with pytest.raises(NetworkImportError, match=r"state.pt: holds a OrderedDict, not a module \(a state_dict has no "
                                                 r"architecture\); save the module whole"):
        load_network(tmp_path / "state.pt", (1, 28, 28))
    with pytest.raises(NetworkImportError, match="lenet5.pth: a PyTorch file does not record its input shape"):
        load_network(path)
    with pytest.raises(NetworkImportError, match="nothing.pt: no such file"):
        from_torch(tmp_path / "nothing.pt", (1, 28, 28))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x) + x


class Fork(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x) * F.relu(x)


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        if x.sum() > 0:
            return self.conv(x)
        return x


class Tail(nn.Module):
    def __init__(self, tail) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.tail = tail

    def forward(self, x):
        return self.tail(self.conv(x))


REFUSED = [
    (nn.Sequential(nn.Conv2d(3, 4, 3, stride=2)), r"module '0' \(Conv2d\): stride \(2, 2\); sqgen takes stride 1"),
    (nn.Sequential(nn.Sequential(nn.ReLU(), nn.Conv2d(3, 4, 3, dilation=2))),
     r"module '0.1' \(Conv2d\): dilation \(2, 2\); sqgen takes dilation 1"),
    (nn.Sequential(nn.Conv2d(3, 3, 3, groups=3)), r"module '0' \(Conv2d\): groups 3, padding_mode 'zeros'; sqgen "
                                                  "takes groups 1 and zero padding"),
    (nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect")), r"padding_mode 'reflect'"),
    (nn.Sequential(nn.Conv2d(3, 3, 3, padding=2)),
     r"module '0' \(Conv2d\): padding \(2, 2\) with a 3 x 3 kernel; sqgen takes 'same' \(or 1 for an odd kernel\) or "
     r"'valid' \(or 0\)"),
    (nn.Sequential(nn.Conv2d(3, 3, 4, padding=1)), r"module '0' \(Conv2d\): padding \(1, 1\) with a 4 x 4 kernel"),
    (nn.Sequential(nn.Conv2d(3, 3, (3, 1))), r"module '0' \(Conv2d\): weight \(3, 3, 3, 1\); sqgen takes 2-D "
                                             "convolutions with square kernels"),
    (nn.Sequential(nn.MaxPool2d(3)), r"module '0' \(MaxPool2d\): kernel_size=\(3, 3\), stride=\(3, 3\); sqgen takes "
                                     r"2 x 2 max-pooling with stride 2"),
    (nn.Sequential(nn.MaxPool2d(2, stride=1)), r"module '0' \(MaxPool2d\): stride=\(1, 1\)"),
    (nn.Sequential(nn.MaxPool2d(2, ceil_mode=True)), r"module '0' \(MaxPool2d\): ceil_mode=True"),
    (nn.Sequential(nn.AvgPool2d(2)), r"module '0' \(AvgPool2d\): unsupported; sqgen takes nn.Conv2d"),
    (nn.Sequential(nn.Flatten(), nn.Sigmoid()), r"module '1' \(Sigmoid\): unsupported"),
    (nn.Sequential(nn.Flatten(0)), r"module '0' \(Flatten\): flattens dimensions 0..-1; sqgen takes flatten\(x, 1\)"),
    (nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3)),
     r"module '1' \(BatchNorm2d\): a BatchNorm after ReLU '0' cannot be folded; sqgen folds it only right after a "
     "Conv2d"),
    (nn.Sequential(nn.Flatten(), nn.Linear(432, 4), nn.BatchNorm2d(4)),
     r"module '2' \(BatchNorm2d\): a BatchNorm after Linear '1' cannot be folded; sqgen folds it only right after a "
     "Conv2d$"),
    (nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False)),
     r"module '1' \(BatchNorm2d\): no running statistics"),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(10, 4)),
     r"Sequential: layer '1' \(Linear\): takes \(10,\) features, gets \(4, 10, 10\); a Flatten must come before it"),
    (Residual(), r"node 'add' \(call_function add\): unsupported"),
    (Fork(), r"node 'relu' \(call_function relu\): reads 'x' while the chain is at 'conv'; sqgen takes a chain of "
             "layers, each output read once"),
    (Tail(nn.Identity()), None),  # accepted: checks the Tail harness itself
    (Tail(nn.Tanh()), r"module 'tail' \(Tanh\): unsupported"),
    (Branchy(), r"Branchy: torch.fx cannot trace Branchy \(.*\); save it as TorchScript or build it of nn.Sequential"),
]


@pytest.mark.parametrize("module, message", REFUSED)
def test_refused_with_the_module_named(module, message):
    if message is None:
        assert from_torch(module, (3, 12, 12)).output_shape == (2, 12, 12)
        return
    with pytest.raises(NetworkImportError, match=message) as caught:
        from_torch(module, (3, 12, 12))
    assert "\n" not in str(caught.value)


class Functions(nn.Module):
    def __init__(self, step) -> None:
        super().__init__()
        self.step = step

    def forward(self, x):
        return self.step(x)


@pytest.mark.parametrize("step, message", [
    (lambda x: torch.sigmoid(x), r"node 'sigmoid' \(call_function sigmoid\): unsupported"),
    (lambda x: F.max_pool2d(x, 2, 1), r"node 'max_pool2d' \(call_function max_pool2d\): stride=\(1, 1\)"),
    (lambda x: torch.flatten(x), r"node 'flatten' \(call_function flatten\): flattens dimensions 0..-1"),
    (lambda x: x.view(x.size(0), 3, -1), r"node 'view' \(call_method view\): reshapes to \['x.size\(0\)', 3, -1\]; "
                                         r"sqgen takes x.view\(x.size\(0\), -1\) or x.view\(-1, 432\)"),
    (lambda x: x.view(-1, 4), r"reshapes to \[-1, 4\]"),
    (lambda x: x.view(x.size(1), -1), r"node 'size' \(call_method size\): unsupported"),
    (lambda x: (x, x), r"node 'output' \(output output\): returns \(x, x\)"),
])
def test_fx_refusals(step, message):
    with pytest.raises(NetworkImportError, match=message):
        from_torch(Functions(step), (3, 12, 12))


class OwnWeight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2, 432))

    def forward(self, x):
        return F.linear(x.flatten(1), self.w)


def test_fx_refuses_a_bare_parameter():
    with pytest.raises(NetworkImportError, match=r"node 'w' \(get_attr w\): reads a parameter or buffer outside a "
                                                 "module"):
        from_torch(OwnWeight(), (3, 12, 12))


def test_fx_accepts_reshapes_to_features():
    for step in (lambda x: x.reshape(-1, 432), lambda x: x.view(x.size(0), 432), lambda x: x.flatten(1)):
        assert [layer.kind for layer in from_torch(Functions(step), (3, 12, 12)).layers] == ["Flatten"]


def test_torchscript_refusals():
    traced = torch.jit.trace(nn.Sequential(nn.Conv2d(3, 3, 3), nn.Sigmoid()), torch.zeros(1, 3, 12, 12))
    with pytest.raises(NetworkImportError, match=r"node aten::sigmoid \(1\): unsupported; sqgen takes"):
        from_torch(traced, (3, 12, 12))
    traced = torch.jit.trace(nn.Sequential(nn.Conv2d(3, 3, 3, stride=2)), torch.zeros(1, 3, 12, 12))
    with pytest.raises(NetworkImportError, match=r"node aten::_convolution \(0\): stride \(2, 2\)"):
        from_torch(traced, (3, 12, 12))
    traced = torch.jit.trace(Residual(), torch.zeros(1, 3, 12, 12))
    with pytest.raises(NetworkImportError, match=r"node aten::add \(unnamed\): reads 'x', computed at run time; sqgen "
                                                 "takes a chain of layers"):
        from_torch(traced, (3, 12, 12))
    traced = torch.jit.trace(Fork(), torch.zeros(1, 3, 12, 12))
    with pytest.raises(NetworkImportError, match=r"node aten::relu \(unnamed\): does not read the output of the "
                                                 "layer before"):
        from_torch(traced, (3, 12, 12))
