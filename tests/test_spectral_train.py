"""host.train.spectral: the torch SPEC2 layer against the golden operator, ADMM, export; the committed model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import BLOCK_TORCH

from host.lenet5 import spectral as spectral_model
from host.mnist import load_mnist
from hw.spec.spectral.geometry import OaaParams, canonical_mask, complete_half, half_to_full, self_conjugate_mask
from hw.spec.spectral.operator import oaa_conv_float

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
    from hw.spec.spectral.operator import spectral_conv_float

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
    # Completed, the pruned spectrum is Hermitian: a bin and its conjugate partner are kept or pruned together.
    full = half_to_full(complete_half(z))
    neg = (-np.arange(8)) % 8
    assert np.array_equal(full, np.conj(full[..., neg, :][..., neg]))
    assert np.abs(np.fft.ifft2(full).imag).max() < 1e-12 * np.abs(full).max()


def test_admm_bookkeeping_is_scaled_admm(sp, mnist):
    # W-steps of zero epochs leave W fixed, so Z and U must follow scaled ADMM by hand: Z = P(W + U), U += W - Z,
    # and U multiplied by rho_old / rho_new when rho grows.
    sp.seed_everything(3)
    model = sp.SpectralLeNet5()
    w = {name: layer.half() for name, layer in model.spectral_layers().items()}
    recipe = sp.AdmmRecipe(iterations=4, rho0=0.5, rho_growth=3.0, w_step=sp.Recipe(epochs=0))
    z, history = sp.admm_prune(model, 0.6, recipe, tuple(a[:10] for a in mnist))
    for name, weights in w.items():
        u = np.zeros_like(weights)
        for iteration in range(4):
            u = u / 3.0 if iteration else u
            want = sp.project(weights + u, 0.6)
            u = u + weights - want
        np.testing.assert_allclose(z[name], want, rtol=1e-12, atol=0)
        assert np.array_equal(model.spectral_layers()[name].half(), weights)
    assert [h["rho"] for h in history] == pytest.approx([0.5, 1.5, 4.5, 13.5])


def test_recipes_check_their_fields(sp):
    with pytest.raises(ValueError, match="AdmmRecipe.rho_growth must be a finite number >= 1, got 0.5"):
        sp.AdmmRecipe(rho_growth=0.5)
    with pytest.raises(ValueError, match="AdmmRecipe.rho0"):
        sp.AdmmRecipe(rho0=0.0)
    with pytest.raises(ValueError, match="AdmmRecipe.iterations"):
        sp.AdmmRecipe(iterations=0)
    with pytest.raises(ValueError, match=r"SpectralRecipe.sparsity must be in \[0, 1\), got 1.0"):
        sp.SpectralRecipe(sparsity=1.0)
    seeded = sp.SpectralRecipe().seeded(7)
    assert {seeded.spatial.seed, seeded.spectral.seed, seeded.admm.w_step.seed, seeded.retrain.seed} == {7}
    assert sp.SpectralRecipe().seeded(0) == sp.SpectralRecipe()


def _admm_short(sp, subset):
    sp.seed_everything(0)
    model = sp.SpectralLeNet5()
    # Measured: relative gaps 0.59, 0.43, 0.03 for both layers.
    recipe = sp.AdmmRecipe(iterations=3, rho0=0.2, rho_growth=3.0,
                           w_step=sp.Recipe(epochs=1, optimizer="sgd", lr=0.02, schedule="constant", batch_size=64))
    z, history = sp.admm_prune(model, 0.75, recipe, subset)
    return model, z, history


def test_short_admm_run_closes_the_gap_and_retraining_keeps_the_mask(sp, mnist):
    subset = tuple(a[:400] for a in mnist)
    model, z, history = _admm_short(sp, subset)
    gaps = [h["relative_gap"] for h in history]
    for name in sp.CONV_LAYERS:
        assert gaps[-1][name] < 0.3 * gaps[0][name]
        assert sp.canonical_sparsity(z[name]) == pytest.approx(0.75, abs=0.002)
    # Deterministic: the same run again gives the same Z to the bit.
    _, again, _ = _admm_short(sp, subset)
    assert all(np.array_equal(z[name], again[name]) for name in z)
    masks = sp.hard_prune(model, z)
    before = {name: layer.half() for name, layer in model.spectral_layers().items()}
    sp.fit(model, subset[0], subset[1], sp.Recipe(epochs=1, batch_size=64), masks=masks)
    for name, layer in model.spectral_layers().items():
        after = layer.half()
        # Exactly Z's bins are nonzero after retraining, and they did move.
        assert np.array_equal(after != 0, z[name] != 0)
        assert not np.array_equal(after, before[name])


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


def _reversed_index(fields):
    return {"conv2/index": fields["conv2/index"][::-1].copy()}


@pytest.mark.parametrize("change, message", [
    (_reversed_index, "conv2: field 'index': indices within a kernel must be strictly ascending"),
    (lambda f: {"conv1/relu": np.int64(0)}, "field 'conv1/relu': must be 1"),
    (lambda f: {"conv2/padding": np.array("same")}, "take 28 x 28 to 7 x 7 after pooling, fc1 needs 5 x 5"),
    (lambda f: {"conv2/in_scale": f["conv2/in_scale"] * np.float32(2)}, "field 'conv2/in_scale': must equal "
                                                                        "conv1/out_scale"),
    (lambda f: {"conv1/in_scale": np.float32(0.01)}, "field 'conv1/in_scale': must be the input scale"),
    (lambda f: {"metadata": np.array("[1, 2]")}, "field 'metadata': expected a JSON object, got list"),
    (lambda f: {"metadata": np.array("{")}, "field 'metadata': not JSON"),
    (lambda f: {"format": np.int64(1)}, "field 'format': expected a string scalar"),
    (lambda f: {"fc2.weight": f["fc2.weight"].astype(np.float64)}, "field 'fc2.weight': expected float32 (84, 120)"),
    (lambda f: {"fc1.bias": np.full(120, np.inf, dtype=np.float32)}, "field 'fc1.bias': has non-finite values"),
    (lambda f: {"fc3.bias": None}, "missing field 'fc3.bias'"),
    (lambda f: {"conv1/out_mult": None}, "conv1: missing field 'out_mult'"),
])
def test_load_rejects_a_broken_file(tmp_path, change, message):
    with np.load(MODEL, allow_pickle=False) as npz:
        fields = {k: npz[k] for k in npz.files}
    for name, value in change(fields).items():
        if value is None:
            del fields[name]
        else:
            fields[name] = value
    path = tmp_path / "bad.npz"
    with open(path, "wb") as f:
        np.savez(f, **fields)
    with pytest.raises(spectral_model.SpectralFormatError) as info:
        spectral_model.load(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text


# ---- the committed model: no torch needed ----



@pytest.mark.cost(seconds=15)
def test_committed_model_reproduces_its_accuracy_without_torch():
    # What a fresh clone without torch can check: the stored golden accuracies, exactly (the golden models are
    # deterministic), the size and the sparsity.
    code = BLOCK_TORCH + (
        "import json\n"
        "from host.lenet5 import spectral as m\n"
        "from host.mnist import load_mnist\n"
        f"model = m.load({str(MODEL)!r})\n"
        "_, _, x, y = load_mnist()\n"
        "print(json.dumps({'fixed': m.accuracy(m.predict_fixed(model, x), y),\n"
        "                  'float': m.accuracy(m.predict_float(model, x), y),\n"
        "                  'sparsity': [1 - layer.density() for layer in model.convs()],\n"
        "                  'metadata': model.metadata}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    got = json.loads(out)
    stored = got["metadata"]["test_accuracy"]
    assert got["fixed"] == stored["golden_fixed"] and got["float"] == stored["golden_float"]
    assert got["fixed"] > 0.96
    assert got["sparsity"] == pytest.approx([got["metadata"]["sparsity_target"]] * 2, abs=0.005)
    assert MODEL.stat().st_size < 1_000_000


@pytest.mark.cost(seconds=20)
def test_committed_model_agrees_with_torch_but_for_near_ties(sp, mnist):
    # The exported weights loaded back into the torch model: the float golden operator must agree on every test
    # image, the fixed-point one on all but a few whose top two torch logits nearly tie.
    torch = sp.torch
    model = spectral_model.load(MODEL)
    net = sp.SpectralLeNet5()
    for name, layer in zip(spectral_model.CONV_NAMES, model.convs()):
        getattr(net, name).set_half(layer.half_spectrum(), layer.bias)
    net.load_state_dict({**net.state_dict(), **{k: torch.from_numpy(v) for k, v in model.fc.items()}})
    net.eval()
    _, _, x, y = mnist
    with torch.no_grad():
        reference = net(torch.from_numpy(x)).numpy()
    assert spectral_model.accuracy(reference.argmax(1), y) == model.metadata["test_accuracy"]["admm_torch"]
    assert np.array_equal(spectral_model.predict_float(model, x), reference.argmax(1))
    top2 = np.sort(reference, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    differ = spectral_model.predict_fixed(model, x) != reference.argmax(1)
    # Measured: 1 image, margin 0.05 (the median margin is 15.7).
    assert differ.sum() <= 3
    assert (margin[differ] < 0.5).all()


def test_cli_without_torch_says_how_to_install():
    code = BLOCK_TORCH + "from host.train.__main__ import main\nsys.exit(main(['lenet5', '--out', 'unused.npz']))\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: torch is needed for training: pip install 'sqgen[train]'"


@pytest.mark.parametrize("argv, message", [
    (["lenet5", "--spectral-sparsity", "1"], "argument --spectral-sparsity: expected a number in [0, 1), got '1'"),
    (["lenet5", "--rho-growth", "0.5"], "argument --rho-growth: expected a number >= 1, got '0.5'"),
    (["lenet5", "--rho0", "nan"], "argument --rho0: expected a number > 0, got 'nan'"),
    (["lenet5", "--admm-epochs", "2.5"], "argument --admm-epochs: expected an integer >= 1, got '2.5'"),
    (["lenet5-fc-prune", "--retrain-lr", "0"], "argument --retrain-lr: expected a number > 0, got '0'"),
])
def test_cli_rejects_out_of_range_numbers(capsys, argv, message):
    from host.train.__main__ import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(message)


def test_bench_admm_rejects_bad_seeds(capsys):
    from sim.bench.__main__ import main

    with pytest.raises(SystemExit):
        main(["admm", "--seeds", "0,0"])
    assert "expected distinct seeds >= 0, got '0,0'" in capsys.readouterr().err


def test_cli_checks_the_output_before_training(sp, tmp_path, capsys):
    from host.train.__main__ import main

    assert main(["lenet5", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: --out: cannot write {tmp_path}"


@pytest.mark.cost(seconds=25)
def test_train_and_export_end_to_end_on_a_small_recipe(sp, mnist, tmp_path):
    from host.train.pipeline import train_and_export

    data = (mnist[0][:600], mnist[1][:600], mnist[2][:200], mnist[3][:200])
    quick = sp.Recipe(epochs=1, batch_size=64)
    recipe = sp.SpectralRecipe(spatial=quick, spectral=quick, retrain=quick, sparsity=0.6,
                               admm=sp.AdmmRecipe(iterations=2, w_step=quick.replace(optimizer="sgd", lr=0.01,
                                                                                     schedule="constant")))
    lines = []
    summary = train_and_export(recipe, tmp_path / "m.npz", data=data, cache=tmp_path, log=lines.append)
    model = spectral_model.load(tmp_path / "m.npz")
    # The stored golden accuracy is what the golden model gives on the split it was measured on, exactly.
    fixed = spectral_model.accuracy(spectral_model.predict_fixed(model, data[2]), data[3])
    assert fixed == model.metadata["test_accuracy"]["golden_fixed"] == summary["export"]["golden_fixed_accuracy"]
    assert model.metadata["recipe"]["admm"]["iterations"] == 2
    assert [1 - layer.density() for layer in model.convs()] == pytest.approx([0.6, 0.6], abs=0.005)
    assert len(summary["admm"]["iterations"]) == 2 and "magnitude" in summary
    assert [line.split(" ", 1)[0] for line in lines] == ["admm", "admm", "dense", "ADMM", "magnitude", "stored"]
