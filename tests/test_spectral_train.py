"""host.train.spectral: the torch SPEC2 layer against the golden operator, ADMM, export; the committed model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from host.train import spectral_model
from host.train.data import load_mnist
from sim.golden.spec2 import OaaParams, canonical_mask, complete_half, oaa_conv_float, self_conjugate_mask

MODEL = Path(__file__).resolve().parents[1] / "models" / "lenet5_spec2.npz"
NO_TORCH = "torch is not installed (the train extra): pip install 'sqgen[train]'"
GEOMETRIES = [  # (oaa, c_in, c_out, h, w)
    (OaaParams(8, 5, 4, "same"), 1, 6, 28, 28),
    (OaaParams(8, 5, 4, "valid"), 6, 16, 14, 14),
    (OaaParams(8, 3, 5, "same"), 2, 3, 9, 13),
    (OaaParams(8, 3, 6, "valid"), 3, 2, 7, 12),
    (OaaParams(16, 5, 7, "valid"), 3, 2, 17, 11),
    (OaaParams(4, 2, 3, "same"), 2, 2, 5, 6),
]


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


@pytest.fixture
def sp():
    torch = pytest.importorskip("torch", reason=NO_TORCH)
    from host.train import spectral

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores
    yield spectral
    torch.set_num_threads(before)


def _random_half(rng, c_out, c_in, n):
    shape = (c_out, c_in, n, n // 2 + 1)
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


# ---- the layer: torch needed ----

@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{g[0].padding}-n{g[0].n}-l{g[0].l}-{g[3]}x{g[4]}")
def test_layer_equals_golden_float_operator(sp, geometry):
    oaa, c_in, c_out, h, w = geometry
    rng = np.random.default_rng(hash((oaa.n, oaa.l, h, w)) % 2**32)
    layer = sp.SpectralConv2d(c_in, c_out, oaa).double()
    # Arbitrary values everywhere, also on the redundant bins: the layer must ignore them as the golden half does.
    half = _random_half(rng, c_out, c_in, oaa.n)
    bias = rng.standard_normal(c_out)
    layer.set_half(half, bias)
    x = rng.standard_normal((3, c_in, h, w))
    got = layer(sp.torch.from_numpy(x)).detach().numpy()
    clean = half.copy()
    clean[..., ~canonical_mask(oaa.n)] = 0
    clean[..., self_conjugate_mask(oaa.n)] = clean[..., self_conjugate_mask(oaa.n)].real
    want = oaa_conv_float(x, complete_half(clean), oaa) + bias[:, None, None]
    assert got.shape == want.shape == (3, c_out, *oaa.output_shape(h, w))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-11 * np.abs(want).max())


def test_layer_initialised_from_spatial_kernels_is_that_conv(sp):
    rng = np.random.default_rng(2)
    for padding, pad in (("same", 2), ("valid", 0)):
        layer = sp.SpectralConv2d(3, 4, OaaParams(8, 5, 4, padding)).double()
        w, b = rng.standard_normal((4, 3, 5, 5)), rng.standard_normal(4)
        layer.set_spatial(w, b)
        x = sp.torch.from_numpy(rng.standard_normal((2, 3, 13, 10)))
        want = sp.torch.nn.functional.conv2d(x, sp.torch.from_numpy(w), sp.torch.from_numpy(b), padding=pad)
        np.testing.assert_allclose(layer(x).detach().numpy(), want.numpy(), atol=1e-12)


def test_layer_matches_exported_golden_layer(sp):
    # The float golden operator of a layer made by the encoder differs from torch only by int16 weight rounding.
    from host.compress.spectral import layer_from_half
    from sim.golden.spec2 import spectral_conv_float

    rng = np.random.default_rng(3)
    oaa = OaaParams(8, 5, 4, "valid")
    layer = sp.SpectralConv2d(2, 3, oaa).double()
    layer.set_half(_random_half(rng, 3, 2, 8), rng.standard_normal(3))
    golden = layer_from_half(layer.half(), oaa, bias=layer.bias.detach().numpy())
    x = rng.standard_normal((2, 2, 12, 12))
    got = layer(sp.torch.from_numpy(x)).detach().numpy()
    want = spectral_conv_float(x, golden)
    assert np.abs(got - want).max() < 1e-3 * np.abs(want).max()


def test_gradcheck(sp):
    torch = sp.torch
    layer = sp.SpectralConv2d(2, 2, OaaParams(4, 2, 3, "same")).double()
    rng = np.random.default_rng(4)
    layer.set_half(_random_half(rng, 2, 2, 4), rng.standard_normal(2))
    x = torch.from_numpy(rng.standard_normal((1, 2, 5, 4))).requires_grad_()
    params = (layer.weight_re, layer.weight_im, layer.bias)

    def f(x, re, im, b):
        return torch.func.functional_call(layer, {"weight_re": re, "weight_im": im, "bias": b}, (x,))

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-7)


def test_redundant_parameters_get_no_gradient(sp):
    layer = sp.SpectralConv2d(2, 3, OaaParams(8, 5, 4, "same"))
    layer(sp.torch.randn(2, 2, 9, 9)).square().sum().backward()
    re, im = layer.weight_re.grad.numpy(), layer.weight_im.grad.numpy()
    assert (re[..., ~canonical_mask(8)] == 0).all()
    assert (im[..., ~canonical_mask(8) | self_conjugate_mask(8)] == 0).all()
    assert np.count_nonzero(re) == 6 * 34 and np.count_nonzero(im) == 6 * 30


# ---- pruning ----

@pytest.mark.parametrize("sparsity", [0.75, 0.5, 0.9])
def test_z_step_keeps_the_largest_canonical_bins(sp, sparsity):
    rng = np.random.default_rng(5)
    half = _random_half(rng, 4, 3, 8)
    z = sp.project(half, sparsity)
    # Brute force: every canonical bin with its magnitude (self-conjugate ones real), sorted by hand.
    candidates = []
    for o in range(4):
        for i in range(3):
            for k1 in range(8):
                for k2 in range(5):
                    if canonical_mask(8)[k1, k2]:
                        v = half[o, i, k1, k2].real if self_conjugate_mask(8)[k1, k2] else half[o, i, k1, k2]
                        candidates.append((abs(v), (o, i, k1, k2), v))
    candidates.sort(key=lambda c: -c[0])
    keep = round((1 - sparsity) * len(candidates))
    assert len(candidates) == 12 * 34
    assert np.count_nonzero(z) == keep
    for _, where, value in candidates[:keep]:
        assert z[where] == value
    assert np.abs(z[..., self_conjugate_mask(8)].imag).max() == 0
    assert not z[..., ~canonical_mask(8)].any()
    assert sp.canonical_sparsity(z) == pytest.approx(1 - keep / len(candidates))


def test_short_admm_run_closes_the_gap(sp, mnist):
    subset = tuple(a[:400] for a in mnist)
    sp.seed_everything(0)
    model = sp.SpectralLeNet5()
    # Measured: relative gaps 0.59, 0.43, 0.03 for both layers.
    recipe = sp.AdmmRecipe(iterations=3, epochs_per_iteration=1, rho0=0.2, rho_growth=3.0,
                           w_step=sp.Recipe(optimizer="sgd", lr=0.02, schedule="constant", batch_size=64))
    z, history = sp.admm_prune(model, 0.75, recipe, subset)
    gaps = [h["relative_gap"] for h in history]
    for name in sp.CONV_LAYERS:
        assert gaps[-1][name] < 0.3 * gaps[0][name]
        assert sp.canonical_sparsity(z[name]) == pytest.approx(0.75, abs=0.002)
    masks = sp.hard_prune(model, z)
    assert sp.model_sparsity(model) == {name: pytest.approx(sp.canonical_sparsity(z[name])) for name in z}
    sp.fit(model, subset[0], subset[1], sp.Recipe(epochs=1, batch_size=64), masks=masks)
    assert sp.model_sparsity(model) == {name: pytest.approx(sp.canonical_sparsity(z[name])) for name in z}


# ---- export ----

def test_export_load_round_trip(sp, mnist, tmp_path):
    sp.seed_everything(1)
    model = sp.SpectralLeNet5()
    sp.magnitude_prune(model, 0.75)
    x = mnist[0][:40]
    exported = sp.export(model, x, metadata={"note": "test"})
    path = tmp_path / "m.npz"
    spectral_model.save(path, exported)
    back = spectral_model.load(path)
    assert back.metadata == {"note": "test"}
    for a, b in zip(exported.convs(), back.convs()):
        assert np.array_equal(a.index, b.index) and np.array_equal(a.re, b.re) and np.array_equal(a.im, b.im)
        assert a.quant.out_mult == b.quant.out_mult and np.array_equal(a.quant.bias_q, b.quant.bias_q)
        assert b.schedule.p == 4 and b.schedule.b == 8 and b.relu
        assert 1 - b.density() == pytest.approx(0.75, abs=0.01)
    for name in spectral_model.FC_FIELDS:
        assert np.array_equal(back.fc[name], model.state_dict()[name].numpy())
    # The float golden path computes what torch computes, up to the int16 spectral weights.
    logits = model(sp.torch.from_numpy(mnist[2][:20])).detach().numpy()
    np.testing.assert_allclose(spectral_model.logits_float(back, mnist[2][:20]), logits, atol=1e-3)
    assert np.array_equal(spectral_model.predict_fixed(back, x), spectral_model.predict_fixed(exported, x))


def test_load_rejects_a_broken_file(tmp_path):
    with np.load(MODEL, allow_pickle=False) as npz:
        fields = {k: npz[k] for k in npz.files}
    fields["conv2/index"] = fields["conv2/index"][::-1].copy()
    with open(tmp_path / "bad.npz", "wb") as f:
        np.savez(f, **fields)
    with pytest.raises(spectral_model.SpectralFormatError, match="conv2: field 'index'"):
        spectral_model.load(tmp_path / "bad.npz")
    del fields["fc3.bias"]
    fields["conv2/index"] = fields["conv2/index"][::-1].copy()
    with open(tmp_path / "bad.npz", "wb") as f:
        np.savez(f, **fields)
    with pytest.raises(spectral_model.SpectralFormatError, match="missing field 'fc3.bias'"):
        spectral_model.load(tmp_path / "bad.npz")


# ---- the committed model: no torch needed ----

def test_inference_does_not_import_torch():
    code = ("import sys; from host.train import spectral_model as m; from host.train.data import load_mnist\n"
            f"model = m.load({str(MODEL)!r}); x = load_mnist()[2][:8]\n"
            "m.predict_fixed(model, x); m.predict_float(model, x); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_committed_model_reproduces_its_accuracy(mnist):
    assert MODEL.stat().st_size < 1_000_000
    model = spectral_model.load(MODEL)
    _, _, x_test, y_test = mnist
    fixed = spectral_model.accuracy(spectral_model.predict_fixed(model, x_test), y_test)
    stored = model.metadata["test_accuracy"]
    assert abs(fixed - stored["golden_fixed"]) <= 0.005
    assert fixed > 0.95
    for layer in model.convs():
        assert 1 - layer.density() == pytest.approx(model.metadata["sparsity_target"], abs=0.01)


def test_cli_without_torch_says_how_to_install():
    # A meta-path finder that refuses torch stands in for an environment without the train extra.
    code = (
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "from host.train.__main__ import main\n"
        "sys.exit(main(['lenet5', '--out', 'unused.npz']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: torch is needed for training: pip install 'sqgen[train]'"
