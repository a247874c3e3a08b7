"""host.mnist (the bundled MNIST split, NumPy only); host.train: LeNet-5 training, retraining under masks, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import BLOCK_TORCH

from host.mnist import N_TEST, N_TRAIN, load_mnist, split_indices


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


# ---- data: no torch needed ----

def test_mnist_shapes_and_ranges(mnist):
    x_train, y_train, x_test, y_test = mnist
    assert x_train.shape == (N_TRAIN, 1, 28, 28) == (4000, 1, 28, 28)
    assert x_test.shape == (N_TEST, 1, 28, 28) == (1000, 1, 28, 28)
    assert x_train.dtype == x_test.dtype == np.float32
    assert y_train.dtype == y_test.dtype == np.int64
    for x in (x_train, x_test):
        assert x.min() == 0.0 and x.max() == 1.0
        # real digits: mostly background, a stroke in the middle, nothing on the border rows
        assert 0.05 < x.mean() < 0.25
        assert x[:, :, 13:15, 13:15].mean() > 5 * x[:, :, :1, :].mean()


def test_mnist_labels_balanced_and_interleaved(mnist):
    _, y_train, _, y_test = mnist
    assert np.bincount(y_train, minlength=10).tolist() == [400] * 10
    assert np.bincount(y_test, minlength=10).tolist() == [100] * 10
    # interleaved by digit, so that any prefix is balanced
    assert y_train[:20].tolist() == list(range(10)) * 2
    assert y_test[-10:].tolist() == list(range(10))


def test_mnist_split_fixed_and_disjoint(mnist):
    train, test = split_indices()
    assert len(train) == 4000 and len(test) == 1000
    assert len(np.union1d(train, test)) == 5000
    # every fifth image of each digit (the file is sorted by label, 500 per digit) is a test image
    assert sorted(test.tolist()) == [d * 500 + k for d in range(10) for k in range(4, 500, 5)]
    again = load_mnist()
    for a, b in zip(mnist, again):
        assert np.array_equal(a, b)
        assert a is not b
    # no image is in both splits
    x_train, _, x_test, _ = mnist
    train_rows = {row.tobytes() for row in x_train.reshape(len(x_train), -1)}
    assert not any(row.tobytes() in train_rows for row in x_test.reshape(len(x_test), -1))


def test_data_module_does_not_import_torch():
    code = "import sys, host.mnist as d; d.load_mnist(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_lenet_without_torch_says_how_to_install():
    code = BLOCK_TORCH + (
        "from host.train.__main__ import main\n"
        "sys.exit(main(['lenet5-fc-prune']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: torch is needed for training: pip install 'sqgen[train]'"


# ---- training: torch needed ----

# Each test below takes the `lenet` fixture, which skips it (reason shown by -ra) when torch is absent; the data
# tests above still run.
NO_TORCH = "torch is not installed (the train extra): pip install 'sqgen[train]'"


@pytest.fixture
def lenet():
    torch = pytest.importorskip("torch", reason=NO_TORCH)
    from host.train import lenet

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: one thread is the fastest for a model this small
    yield lenet
    torch.set_num_threads(before)


def test_lenet5_shapes(lenet):
    model = lenet.LeNet5()
    assert model(lenet.torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters() if name in lenet.FC_WEIGHTS}
    assert shapes == {"fc1.weight": (120, 400), "fc2.weight": (84, 120), "fc3.weight": (10, 84)}


def test_one_epoch_is_well_above_chance(lenet, mnist):
    # Measured: 85.8 % after one epoch (seed 0), about 1 s on one thread; chance is 10 %.
    x_train, y_train, x_test, y_test = mnist
    model = lenet.train_dense(lenet.DEFAULT_RECIPE.replace(epochs=1, schedule="constant"), data=mnist)
    assert lenet.evaluate(model, x_test, y_test) > 0.80


def test_same_seed_same_weights_other_seed_other_weights(lenet, mnist):
    subset = tuple(a[:800] for a in mnist)
    recipe = lenet.Recipe(epochs=1, seed=3)
    a = lenet.train_dense(recipe, data=subset).state_dict()
    b = lenet.train_dense(recipe, data=subset).state_dict()
    c = lenet.train_dense(recipe.replace(seed=4), data=subset).state_dict()
    assert all(lenet.torch.equal(a[k], b[k]) for k in a)
    assert not lenet.torch.equal(a["fc1.weight"], c["fc1.weight"])


def test_retraining_keeps_masked_weights_exactly_zero(lenet, mnist):
    subset = tuple(a[:800] for a in mnist)
    model = lenet.train_dense(lenet.Recipe(epochs=1), data=subset)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(1)
    masks = {"fc1.weight": rng.random((120, 400)) < 0.1, "fc2.weight": rng.random((84, 120)) < 0.1}
    # SGD with momentum and weight decay: both would move pruned weights if only the gradient were masked
    recipe = lenet.Recipe(epochs=2, optimizer="sgd", lr=0.05, weight_decay=1e-3)
    lenet.retrain_with_masks(model, masks, recipe=recipe, data=subset)
    after = model.state_dict()
    for name, mask in masks.items():
        w = after[name].numpy()
        assert (w[~mask] == 0).all()
        assert np.count_nonzero(w[mask]) == mask.sum()
        assert not np.array_equal(w[mask], before[name].numpy()[mask])  # the kept weights did train
    assert not lenet.torch.equal(after["fc3.weight"], before["fc3.weight"])  # unmasked layers train as usual


def test_masks_are_checked(lenet):
    model = lenet.LeNet5()
    with pytest.raises(KeyError, match="fc9.weight"):
        lenet.retrain_with_masks(model, {"fc9.weight": np.ones((2, 2), bool)}, 0)
    with pytest.raises(ValueError, match=r"shape \(84, 120\)"):
        lenet.retrain_with_masks(model, {"fc1.weight": np.ones((84, 120), bool)}, 0)
    with pytest.raises(ValueError, match="bool"):
        lenet.retrain_with_masks(model, {"fc1.weight": np.ones((120, 400))}, 0)


def test_magnitude_mask_keeps_the_largest(lenet):
    w = np.array([[0.1, -5.0, 0.3], [2.0, -0.2, 0.0]], dtype=np.float32)
    assert lenet.magnitude_mask(w, 0.5).tolist() == [[False, True, True], [True, False, False]]
    big = np.random.default_rng(0).standard_normal((120, 400))
    mask = lenet.magnitude_mask(big, 0.9)
    assert mask.sum() == 4800
    assert np.abs(big[mask]).min() >= np.abs(big[~mask]).max()


def test_index_bits(lenet):
    assert lenet.layer_tile((84, 120), (64, 64)) == (64, 64)
    assert lenet.layer_tile((10, 84), (64, 64)) == (10, 64)
    assert lenet.index_bits((64, 64), (64, 64), 3) == 384           # 0.094 bits per weight
    assert lenet.index_bits((120, 400), (64, 64), 3) == 2 * 7 * 384  # edge tiles padded
    assert lenet.index_bits((120, 400), (120, 80), 4) == 5 * 4 * 200


def _rectangle_mask(weights, sparsity, m_t, n_t, r):
    """A stand-in for the BIM factorizer: the first weights in row-major order, as many as `sparsity` keeps."""
    mask = np.zeros(weights.shape, dtype=bool)
    keep = round((1 - sparsity) * weights.size)
    mask.flat[:keep] = True
    return mask


def test_compare_fc_pruning_plumbing(lenet, mnist, tmp_path):
    subset = tuple(a[:600] for a in mnist)
    calls = []

    def mask_fn(weights, sparsity, m_t, n_t, r):
        calls.append((weights.shape, sparsity, m_t, n_t, r))
        return _rectangle_mask(weights, sparsity, m_t, n_t, r)

    recipe, retrain = lenet.Recipe(epochs=1), lenet.Recipe(epochs=1, lr=5e-4)
    result = lenet.compare_fc_pruning(0.8, mask_fn, tile={"fc1.weight": (120, 80), "fc2.weight": (64, 64)},
                                      rank=4, recipe=recipe, retrain=retrain, data=subset, cache=tmp_path)
    assert calls == [((120, 400), 0.8, 120, 80, 4), ((84, 120), 0.8, 64, 64, 4)]
    assert not result["dense"]["cached"]
    for variant in ("magnitude", "bim"):
        sparsity = result[variant]["weight_sparsity"]
        assert sparsity["fc1.weight"] == pytest.approx(0.8, abs=1e-9)
        assert sparsity["fc2.weight"] == pytest.approx(0.8, abs=1e-9)
        assert sparsity["fc3.weight"] == 0.0
        assert 0.1 < result[variant]["test_accuracy"] <= 1
    assert result["bim"]["index_bits_per_weight"]["fc1.weight"] == pytest.approx(5 * 4 * 200 / 48000)
    assert result["gap_points"] == pytest.approx(
        100 * (result["magnitude"]["test_accuracy"] - result["bim"]["test_accuracy"]), abs=1e-6)
    # the dense model now comes from the cache, identical
    again = lenet.compare_fc_pruning(0.8, mask_fn, tile=(64, 64), rank=4, recipe=recipe, retrain=retrain,
                                     data=subset, cache=tmp_path, bim=False)
    assert again["dense"]["cached"] and again["dense"]["test_accuracy"] == result["dense"]["test_accuracy"]
    assert again["magnitude"] == result["magnitude"] | {"retrain_seconds": again["magnitude"]["retrain_seconds"]}
    assert "bim" not in again


def test_compare_with_the_bim_factorizer(lenet, mnist, tmp_path):
    pytest.importorskip("host.compress.bim", reason="the BIM factorizer (host.compress.bim) is not there yet")
    subset = tuple(a[:600] for a in mnist)
    result = lenet.compare_fc_pruning(0.9, tile={"fc1.weight": (60, 80), "fc2.weight": (84, 60)}, rank=3,
                                      recipe=lenet.Recipe(epochs=1), retrain=lenet.Recipe(epochs=1), data=subset,
                                      cache=tmp_path)
    bim = result["bim"]
    for name in ("fc1.weight", "fc2.weight"):
        assert bim["weight_sparsity"][name] == pytest.approx(0.9, abs=0.005)
        assert 0 < bim["kept_magnitude_vs_magnitude_pruning"][name] <= 1
    assert bim["index_bits_per_weight"] == pytest.approx({"fc1.weight": 10 * 3 * 140 / 48000,
                                                          "fc2.weight": 2 * 3 * 144 / 10080})


def test_trained_fc_weights_are_cached(lenet, tmp_path, monkeypatch):
    trained = []
    real = lenet.train_dense
    monkeypatch.setattr(lenet, "train_dense", lambda *a, **k: trained.append(1) or real(*a, **k))
    recipe = lenet.Recipe(epochs=1)
    first = lenet.trained_fc_weights(recipe, cache=tmp_path)
    second = lenet.trained_fc_weights(recipe, cache=tmp_path)
    assert len(trained) == 1
    assert {k: v.shape for k, v in first.items()} == {"fc1.weight": (120, 400), "fc2.weight": (84, 120),
                                                      "fc3.weight": (10, 84)}
    assert all(np.array_equal(first[k], second[k]) and first[k].dtype == np.float32 for k in first)
    lenet.trained_fc_weights(recipe.replace(seed=1), cache=tmp_path)
    assert len(trained) == 2 and len(list(tmp_path.glob("*.pt"))) == 2


def test_cli_rejects_bad_options(lenet):
    from host.train.__main__ import main

    for bad in (["--tile", "64by64"], ["--sparsity", "1.5"], ["--rank", "fc4=3"], ["--seeds", "a"]):
        with pytest.raises(SystemExit) as exit:
            main(["lenet5-fc-prune", *bad])
        assert exit.value.code == 2
    assert main(["lenet5-fc-prune", "--layers", "fc1,fc7"]) == 2
    assert main(["lenet5-fc-prune", "--tile", "fc1=64x64", "--skip-bim"]) == 2


def test_cli_summary(lenet, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "host.train", "lenet5-fc-prune", "--sparsity", "0.9", "--epochs", "1",
         "--retrain-epochs", "1", "--skip-bim"],
        capture_output=True, text=True, env={**os.environ, "SQGEN_BUILD_DIR": str(tmp_path)},
        timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["dense"]["test_accuracy"] > 0.8
    assert summary["magnitude"]["weight_sparsity"]["fc1.weight"] == pytest.approx(0.9)
    assert summary["wall_seconds"] > 0
    assert "dense epoch   1/1" in result.stderr and "magnitude epoch   1/1" in result.stderr
    assert list((tmp_path / "train").glob("lenet5-dense-*.pt"))
