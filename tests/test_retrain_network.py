"""host.train.network: any float network retrained for compression. A tiny CNN and MLP trained in float on
scikit-learn's digits (torch, seed 0) compress far better retrained than after training alone, even on a short
recipe; the model file loads and its golden pass gives the stored accuracy; the same seed gives the same model;
`python -m host.compress model --from FILE --retrain` end to end, its refusals, and its one-line error without
torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import BLOCK_TORCH

pytest.importorskip("sklearn")

from host.compress.model import accuracy  # noqa: E402
from host.compress.network import RETRAINED_STAGES, Retrained, compress_network  # noqa: E402
from host.datasets import load_dataset  # noqa: E402
from host.network import FloatNetwork, Linear, ReLU  # noqa: E402
from hw.spec.network import load_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NO_TORCH = "torch is not installed (the train extra): pip install 'sqgen[train]'"
#: The networks' options: the compressor's defaults for the CNN; FC sparsity 0.5 for the MLP, where post-training
#: compression loses most (its default 0.25 loses nothing to recover on this MLP).
OPTIONS = {"cnn": {}, "mlp": {"fc_sparsity": 0.5}}
CALIBRATION = 300


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def train():
    pytest.importorskip("torch", reason=NO_TORCH)
    from host.train import network

    return network


@pytest.fixture(scope="module")
def modules(train, digits):
    """The two networks trained in float (Adam, rate 0.01, 15 epochs, seed 0), as torch modules."""
    from torch import nn

    from host.train.lenet import Recipe, fit, seed_everything

    out = {}
    for name in ("cnn", "mlp"):
        seed_everything(0)
        out[name] = (nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                   nn.Conv2d(4, 8, 5, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(128, 10))
                     if name == "cnn" else nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)))
        fit(out[name], digits.x_train, digits.y_train, Recipe(epochs=15, lr=0.01, batch_size=64, schedule="constant"))
    return out


@pytest.fixture(scope="module")
def nets(modules):
    from host.network.from_torch import from_torch

    return {name: from_torch(module, (1, 8, 8)) for name, module in modules.items()}


@pytest.fixture(scope="module")
def quick(train):
    """A short recipe: 2 ADMM rounds of 1 epoch, 2 epochs of retraining, 1 of FC fine-tuning."""
    from host.train.lenet import Recipe
    from host.train.spectral import AdmmRecipe

    return train.NetworkRecipe(admm=AdmmRecipe(iterations=2, w_step=Recipe(epochs=1, optimizer="sgd", lr=1e-2,
                                                                             schedule="constant")),
                               retrain=Recipe(epochs=2), finetune=Recipe(epochs=1))


@pytest.fixture(scope="module")
def results(train, nets, quick, digits):
    """Per network: post-training compression and retraining + compression, at the same options."""
    out = {}
    for name, net in nets.items():
        post = compress_network(net, digits.x_train, digits.x_test, digits.y_test, calibration=CALIBRATION,
                                **OPTIONS[name])
        retrained = train.retrain_and_compress(net, digits.x_train, digits.y_train, digits.x_test, digits.y_test,
                                               recipe=quick, calibration=CALIBRATION, **OPTIONS[name])
        out[name] = post, retrained
    return out


@pytest.mark.cost(seconds=12)
def test_retraining_beats_post_training_compression(results):
    # Measured (seed 0, torch 2.13, one thread; 359 test samples): CNN float 98.3 %, post-training 81.9 %, retrained
    # 98.1 %; MLP float 94.4 %, post-training 73.5 %, retrained 94.4 %.
    for name, margin in (("cnn", 0.12), ("mlp", 0.15)):
        post, retrained = results[name]
        acc = retrained.accuracy
        assert list(acc) == list(RETRAINED_STAGES)
        assert acc["compressed"] - post.accuracy["compressed"] >= margin, (name, post.accuracy, acc)
        assert acc["float"] - acc["compressed"] <= 0.015, (name, acc)
        assert acc["retrained"] > acc["pruned"] and acc["spectral"] == acc["float"] == post.accuracy["float"]
        assert retrained.message is None


def test_the_model_file_loads_and_its_golden_pass_gives_the_stored_accuracy(results, digits, tmp_path):
    from hw.spec.network import save_model

    for name, (_, result) in results.items():
        save_model(tmp_path / f"{name}.npz", result.model)
        model = load_model(tmp_path / f"{name}.npz")
        logits = model.forward(model.quantize(digits.x_test))[model.names[-1]]
        assert accuracy(logits, digits.y_test) == model.metadata["accuracy"]["compressed"]
        assert model.metadata["accuracy"] == result.accuracy
        retrain = model.metadata["retrain"]
        assert retrain["recipe"]["retrain"]["epochs"] == 2 and retrain["seed"] == 0 and retrain["threads"] == 1
        if name == "cnn":  # ADMM's bins, stored: the conv layers keep half of them
            assert list(retrain["conv_sparsity"].values()) == pytest.approx([0.5, 0.5], abs=0.005)
            assert list(model.metadata["conv_sparsity"].values()) == pytest.approx([0.5, 0.5], abs=0.005)


def test_the_same_seed_gives_the_same_model(train, nets, quick, digits):
    runs = [train.retrain_network(nets["mlp"], digits.x_train, digits.y_train, digits.x_test, digits.y_test,
                                  recipe=quick, fc_sparsity=0.5, seed=seed) for seed in (3, 3, 4)]
    for (w, b, bim), (w2, b2, bim2) in zip(runs[0].fcs.values(), runs[1].fcs.values()):
        assert np.array_equal(w, w2) and np.array_equal(b, b2) and np.array_equal(bim.mask(), bim2.mask())
        assert np.array_equal(w[~bim.mask()], np.zeros((~bim.mask()).sum()))  # pruned weights exactly 0
    assert runs[0].accuracy == runs[1].accuracy
    assert any(not np.array_equal(a[0], c[0]) for a, c in zip(runs[0].fcs.values(), runs[2].fcs.values()))


def test_compress_network_refuses_retrained_weights_that_miss_a_layer(digits):
    net = FloatNetwork((64,), (Linear("fc1", np.ones((8, 64))), ReLU("relu"), Linear("fc2", np.ones((10, 8)))))
    x = digits.x_train.reshape(len(digits.x_train), -1)
    with pytest.raises(ValueError, match="layer 'fc2': no retrained weights"):
        compress_network(net, x, retrained=Retrained(convs={}, fcs={"fc1": (np.ones((8, 64)), np.zeros(8), None)}))


def test_retraining_needs_one_output_per_class(train, digits):
    net = FloatNetwork((64,), (Linear("fc1", np.ones((8, 64))),))
    x = digits.x_train[:40].reshape(40, -1)
    with pytest.raises(ValueError, match=r"one output per class: the network gives \(8,\), the labels need \(10,\)"):
        train.retrain_network(net, x, digits.y_train[:40], x, digits.y_train[:40])


def _cli(*args: str, prefix: str = "") -> subprocess.CompletedProcess:
    code = prefix + "import sys\nfrom host.compress.__main__ import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


@pytest.mark.cost(seconds=10)
def test_cli_retrains_and_shows_every_stage(modules, tmp_path, digits):
    import torch

    torch.save(modules["cnn"], tmp_path / "cnn.pt")
    done = _cli("model", "--from", tmp_path / "cnn.pt", "--data", "digits", "--retrain", "--epochs", "1",
                "--admm-iterations", "1", "--admm-epochs", "1", "--finetune-epochs", "1", "--calibration", "200",
                "--out", tmp_path / "cnn.npz")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    acc = summary["accuracy"]
    assert list(acc) == list(RETRAINED_STAGES) and summary["retrain_seconds"] > 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("accuracy ")]
    assert lines == [f"accuracy {stage}: {100 * acc[stage]:.1f} %" for stage in RETRAINED_STAGES[:-1]] + [
        f"accuracy compressed (golden fixed point): {100 * acc['compressed']:.1f} %"]
    for stage in ("admm 1 epoch 1/1: ", "admm 1/1: rho 0.02", "retrain epoch 1/1: ", "fc fine-tune epoch 1/1: "):
        assert stage in done.stderr
    model = load_model(tmp_path / "cnn.npz")
    assert model.metadata["accuracy"] == acc
    logits = model.forward(model.quantize(digits.x_test))[model.names[-1]]
    assert accuracy(logits, digits.y_test) == acc["compressed"]
    recipe = model.metadata["retrain"]["recipe"]
    assert (recipe["admm"]["iterations"], recipe["admm"]["w_step"]["epochs"], recipe["retrain"]["epochs"],
            recipe["finetune"]["epochs"]) == (1, 1, 1, 1)


@pytest.mark.parametrize("args, message", [
    (["--from", "net.onnx", "--data", "digits", "--epochs", "3"], "--epochs needs --retrain"),
    (["--from", "net.onnx", "--data", "digits", "--admm-epochs", "3"], "--admm-epochs needs --retrain"),
    (["--from", "net.onnx", "--data", "digits", "--retrain", "--admm-epochs", "0"], "--admm-epochs: must be >= 1"),
    (["--from", "net.onnx", "--data", "digits", "--retrain", "--epochs", "x"], "--epochs: must be an integer >= 0"),
    (["models/lenet5_spec2.npz", "--retrain"], "--retrain is for a network from --from"),
])
def test_cli_retrain_refusals_are_one_line(capsys, tmp_path, args, message):
    from host.compress.__main__ import main

    assert main(["model", *args, "--out", str(tmp_path / "out.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_cli_retrain_without_torch_names_the_train_extra(tmp_path):
    done = _cli("model", "--from", "net.onnx", "--data", "digits", "--retrain", "--out", tmp_path / "out.npz",
                prefix=BLOCK_TORCH)
    assert done.returncode == 2
    assert done.stderr == "error: torch is needed for training: pip install 'sqgen[train]'\n"
