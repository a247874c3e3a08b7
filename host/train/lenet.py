"""LeNet-5 on the bundled MNIST split: dense training, retraining under fixed masks, FC pruning comparison.

Everything is seeded: a `Recipe` fixes the optimiser, epochs and seed, and two runs of the same recipe on
the same data, torch version and thread count give identical weights. The dense model of a recipe is
cached under `$SQGEN_BUILD_DIR/train` (default `build/train`), keyed by the recipe, the data, the
architecture and the torch version.

`fit` is the one training loop; it takes any module, optional fixed masks on named parameters and an
optional penalty term, so other models (the spectral LeNet-5) can reuse it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:
    raise ImportError("torch is needed for training: pip install 'sqgen[train]'") from None

from host.compress.bim import factorize, magnitude_mask
from host.mnist import load_mnist

# Bump when LeNet5's layers or the training loop change in a way that changes trained weights.
ARCH_VERSION = 1
FC_WEIGHTS = ("fc1.weight", "fc2.weight", "fc3.weight")
# The classifier (fc3, 10 x 84: 840 of 58 920 FC weights) stays dense by default: pruning it saves little,
# and at 10 rows it cannot fill a tile of the index format.
PRUNED_BY_DEFAULT = ("fc1.weight", "fc2.weight")

Data = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
Progress = Callable[[str, dict], None]
# (weights, sparsity, m_t, n_t, r) -> bool mask of the weights' shape, True = kept
MaskFn = Callable[[np.ndarray, float, int, int, int], np.ndarray]


@dataclass(frozen=True)
class Recipe:
    """How to train: optimiser ("adam", or "sgd" with momentum 0.9), learning rate, epochs, batch size, seed."""

    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 32
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "cosine"  # "cosine" (per step, to zero) or "constant"
    seed: int = 0
    # Thread count changes float summation order, hence the last bits of the weights; one thread is also the
    # fastest for a model this small on a shared machine.
    threads: int = 1

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"Recipe.epochs must be >= 0, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"Recipe.lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"Recipe.batch_size must be >= 1, got {self.batch_size}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"Recipe.optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"Recipe.schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.weight_decay < 0:
            raise ValueError(f"Recipe.weight_decay must be >= 0, got {self.weight_decay}")
        if self.threads < 1:
            raise ValueError(f"Recipe.threads must be >= 1, got {self.threads}")

    def replace(self, **changes) -> Recipe:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


DEFAULT_RECIPE = Recipe()
# Both pruned variants are retrained by this same recipe. Measured over seeds 0-4 at s = 0.9: a rate of 5e-4
# instead of 1e-3 left BIM masks about 0.2 points further behind magnitude pruning.
DEFAULT_RETRAIN = Recipe(epochs=10, lr=1e-3)


class LeNet5(nn.Module):
    """Classic LeNet-5 for 28x28 inputs: conv 5x5 (6, padding 2), pool, conv 5x5 (16), pool, FC 120, 84, 10; ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)  # padding 2 makes 28x28 behave like LeNet's 32x32 input
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The convolutional part: (N, 1, 28, 28) -> (N, 400)."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay)


def _torch_masks(model: nn.Module, masks: Mapping[str, np.ndarray]) -> list[tuple[nn.Parameter, torch.Tensor]]:
    params = dict(model.named_parameters())
    out = []
    for name, mask in masks.items():
        if name not in params:
            raise KeyError(f"mask for {name!r}: the model has no such parameter (it has {', '.join(params)})")
        mask = np.asarray(mask)
        if mask.shape != tuple(params[name].shape):
            raise ValueError(f"mask for {name!r}: shape {mask.shape} does not match the parameter's "
                             f"{tuple(params[name].shape)}")
        if mask.dtype != bool:
            raise ValueError(f"mask for {name!r}: expected a bool array (True = kept), got dtype {mask.dtype}")
        out.append((params[name], torch.from_numpy(~mask)))
    return out


def _apply(pruned: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
    with torch.no_grad():
        for param, dropped in pruned:
            param.masked_fill_(dropped, 0.0)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the body with torch using `threads` intra-op threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 1000, threads: int = 1) -> float:
    """Fraction of the images in x that the model classifies as y."""
    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad(), torch_threads(threads):
        for start in range(0, len(x), batch_size):
            logits = model(torch.from_numpy(x[start:start + batch_size]))
            correct += int((logits.argmax(1).numpy() == y[start:start + batch_size]).sum())
    model.train(was_training)
    return correct / len(x)


def fit(model: nn.Module, x: np.ndarray, y: np.ndarray, recipe: Recipe, *,
        masks: Mapping[str, np.ndarray] | None = None,
        penalty: Callable[[nn.Module], torch.Tensor] | None = None,
        eval_data: tuple[np.ndarray, np.ndarray] | None = None,
        progress: Progress | None = None, stage: str = "train") -> list[dict]:
    """Train `model` in place with cross-entropy (+ `penalty(model)`) by `recipe`; returns per-epoch stats.

    `masks` maps parameter names to bool arrays (True = kept): pruned weights are zeroed first and stay exactly zero.
    """
    pruned = _torch_masks(model, masks or {})
    # Shuffling draws from its own generator, so a penalty or model code drawing random numbers cannot shift it.
    generator = torch.Generator().manual_seed(recipe.seed)
    optimizer = _optimizer(model, recipe)
    steps = recipe.epochs * math.ceil(len(x) / recipe.batch_size)
    # A decaying rate ends training at a settled point, which makes the compared accuracies less noisy.
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
                 if recipe.schedule == "cosine" else None)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    _apply(pruned)
    history = []
    model.train()
    with torch_threads(recipe.threads):
        for epoch in range(1, recipe.epochs + 1):
            started = time.perf_counter()
            total_loss, correct = 0.0, 0
            for batch in torch.randperm(len(xs), generator=generator).split(recipe.batch_size):
                logits = model(xs[batch])
                loss = F.cross_entropy(logits, ys[batch])
                objective = loss + penalty(model) if penalty is not None else loss
                optimizer.zero_grad(set_to_none=True)
                objective.backward()
                # Zeroed gradients keep the optimiser state (momentum, Adam moments) at zero on pruned weights, so
                # they do not move; re-zeroing them after the step makes that hold for any optimiser.
                for param, dropped in pruned:
                    if param.grad is not None:
                        param.grad.masked_fill_(dropped, 0.0)
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                _apply(pruned)
                total_loss += loss.item() * len(batch)
                correct += int((logits.argmax(1) == ys[batch]).sum())
            stats = {"epoch": epoch, "epochs": recipe.epochs, "loss": total_loss / len(xs),
                     "train_accuracy": correct / len(xs), "seconds": time.perf_counter() - started}
            if eval_data is not None:
                stats["test_accuracy"] = evaluate(model, *eval_data, threads=recipe.threads)
                model.train()
            history.append(stats)
            if progress is not None:
                progress(stage, stats)
    model.eval()
    return history


def _data(data: Data | None) -> Data:
    return load_mnist() if data is None else data


def train_dense(recipe: Recipe = DEFAULT_RECIPE, *, data: Data | None = None,
                progress: Progress | None = None) -> LeNet5:
    """A LeNet-5 trained from the recipe's seed on the training split (no cache)."""
    x_train, y_train, x_test, y_test = _data(data)
    seed_everything(recipe.seed)
    model = LeNet5()
    fit(model, x_train, y_train, recipe, eval_data=(x_test, y_test) if progress else None,
        progress=progress, stage="dense")
    return model


def cache_dir() -> Path:
    """Where trained dense models are cached: $SQGEN_BUILD_DIR/train, default build/train."""
    return Path(os.environ.get("SQGEN_BUILD_DIR", "build")).resolve() / "train"


def _cache_key(recipe: Recipe, data: Data) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"model": "lenet5", "arch": ARCH_VERSION, "torch": str(torch.__version__),
                              "recipe": dataclasses.asdict(recipe)}, sort_keys=True).encode())
    for array in data:
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def trained_dense(recipe: Recipe = DEFAULT_RECIPE, *, data: Data | None = None, cache: Path | None = None,
                  progress: Progress | None = None) -> tuple[LeNet5, dict]:
    """The dense LeNet-5 of a recipe, from the cache or trained and cached; also its info (recipe, train seconds)."""
    data = _data(data)
    path = (cache or cache_dir()) / f"lenet5-dense-{_cache_key(recipe, data)}.pt"
    model = LeNet5()
    if path.exists():
        saved = torch.load(path, weights_only=True)
        model.load_state_dict(saved["state_dict"])
        model.eval()
        return model, {**saved["info"], "cached": True}
    started = time.perf_counter()
    model = train_dense(recipe, data=data, progress=progress)
    info = {"recipe": dataclasses.asdict(recipe), "train_seconds": time.perf_counter() - started,
            "threads": recipe.threads, "torch": str(torch.__version__)}
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so that a parallel test worker never reads half a file.
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        torch.save({"state_dict": model.state_dict(), "info": info}, tmp)
    os.replace(tmp.name, path)
    return model, {**info, "cached": False}


def trained_fc_weights(recipe: Recipe = DEFAULT_RECIPE, *, cache: Path | None = None) -> dict[str, np.ndarray]:
    """The FC weight matrices of the recipe's dense LeNet-5: fc1.weight (120, 400), fc2 (84, 120), fc3 (10, 84)."""
    model, _ = trained_dense(recipe, cache=cache)
    state = model.state_dict()
    return {name: state[name].numpy().copy() for name in FC_WEIGHTS}


def bim_mask(weights: np.ndarray, sparsity: float, m_t: int, n_t: int, r: int) -> np.ndarray:
    """The binary-index-matrix mask of `host.compress.bim.factorize` (seed 0)."""
    return np.asarray(factorize(weights, sparsity, m_t, n_t, r, seed=0).mask(), dtype=bool)


def layer_tile(shape: tuple[int, int], tile: tuple[int, int]) -> tuple[int, int]:
    """The tile used for a layer: the requested tile clipped to the layer (a larger tile would only pad)."""
    return min(tile[0], shape[0]), min(tile[1], shape[1])


def index_bits(shape: tuple[int, int], tile: tuple[int, int], rank: int) -> int:
    """Index bits of a BIM mask: r * (m_t + n_t) per tile, edge tiles padded to full tiles."""
    m_t, n_t = tile
    return math.ceil(shape[0] / m_t) * math.ceil(shape[1] / n_t) * rank * (m_t + n_t)


def _sparsity(model: nn.Module, names: Iterable[str]) -> dict[str, float]:
    state = model.state_dict()
    return {name: 1 - np.count_nonzero(state[name].numpy()) / state[name].numel() for name in names}


def _retrained(dense: LeNet5, masks: dict[str, np.ndarray], retrain: Recipe, data: Data,
               progress: Progress | None, stage: str) -> dict:
    model = copy.deepcopy(dense)
    started = time.perf_counter()
    _apply(_torch_masks(model, masks))
    before = evaluate(model, data[2], data[3])
    seed_everything(retrain.seed)
    retrain_with_masks(model, masks, recipe=retrain, data=data, progress=progress, stage=stage)
    kept = sum(int(mask.sum()) for mask in masks.values())
    return {
        "test_accuracy_before_retraining": before,
        "test_accuracy": evaluate(model, data[2], data[3]),
        "mask_sparsity": {name: 1 - float(mask.mean()) for name, mask in masks.items()},
        "pruned_layers_sparsity": 1 - kept / sum(mask.size for mask in masks.values()),
        "weight_sparsity": _sparsity(model, FC_WEIGHTS),  # measured on the retrained weights
        "all_fc_sparsity": 1 - sum(np.count_nonzero(model.state_dict()[name].numpy()) for name in FC_WEIGHTS)
        / sum(model.state_dict()[name].numel() for name in FC_WEIGHTS),
        "retrain_seconds": time.perf_counter() - started,
    }


def retrain_with_masks(model: nn.Module, masks: Mapping[str, np.ndarray], epochs: int | None = None, *,
                       recipe: Recipe = DEFAULT_RETRAIN, data: Data | None = None, progress: Progress | None = None,
                       stage: str = "retrain") -> list[dict]:
    """Retrain `model` in place on the training split by `recipe` (`epochs` overrides its epochs), masked weights
    held at exactly zero; returns per-epoch stats."""
    if epochs is not None:
        recipe = recipe.replace(epochs=epochs)
    x_train, y_train, x_test, y_test = _data(data)
    return fit(model, x_train, y_train, recipe, masks=masks, eval_data=(x_test, y_test) if progress else None,
               progress=progress, stage=stage)


def compare_fc_pruning(sparsity: float = 0.9, mask_fn_bim: MaskFn | None = None, *,
                       tile: tuple[int, int] | Mapping[str, tuple[int, int]] = (64, 64),
                       rank: int | Mapping[str, int] = 3,
                       layers: Iterable[str] = PRUNED_BY_DEFAULT, recipe: Recipe = DEFAULT_RECIPE,
                       retrain: Recipe = DEFAULT_RETRAIN, data: Data | None = None, cache: Path | None = None,
                       bim: bool = True, progress: Progress | None = None) -> dict:
    """Test accuracy of the dense LeNet-5, of magnitude pruning and of BIM masks on `layers` at `sparsity`.

    Both pruned variants start from the same dense model and are retrained by the same `retrain` recipe.
    `tile` and `rank` are one value for every layer or a value per layer name; a tile is clipped to its layer.
    `mask_fn_bim(weights, sparsity, m_t, n_t, r)` replaces the BIM factorizer (default: `bim_mask`).
    """
    layers = tuple(layers)
    unknown = [name for name in layers if name not in FC_WEIGHTS]
    if unknown:
        raise ValueError(f"layers: {', '.join(unknown)} not among the FC weights {', '.join(FC_WEIGHTS)}")
    for option, value in (("tile", tile), ("rank", rank)):
        missing = [name for name in layers if isinstance(value, Mapping) and name not in value]
        if missing:
            raise ValueError(f"{option}: no value for {', '.join(missing)}")
    data = _data(data)
    dense, info = trained_dense(recipe, data=data, cache=cache, progress=progress)
    weights = {name: tensor.numpy().copy() for name, tensor in dense.state_dict().items() if name in layers}
    result: dict = {
        "sparsity": sparsity, "pruned_layers": list(layers), "recipe": dataclasses.asdict(recipe),
        "retrain": dataclasses.asdict(retrain),
        "dense": {"test_accuracy": evaluate(dense, data[2], data[3]), "train_seconds": info["train_seconds"],
                  "cached": info["cached"]},
    }

    magnitude = {name: magnitude_mask(w, sparsity) for name, w in weights.items()}
    result["magnitude"] = _retrained(dense, magnitude, retrain, data, progress, "magnitude")
    if not bim:
        return result

    mask_fn = mask_fn_bim or bim_mask
    started = time.perf_counter()
    masks, tiles, ranks, bits = {}, {}, {}, {}
    for name, w in weights.items():
        tiles[name] = layer_tile(w.shape, tile[name] if isinstance(tile, Mapping) else tile)
        ranks[name] = rank[name] if isinstance(rank, Mapping) else rank
        masks[name] = np.asarray(mask_fn(w, sparsity, *tiles[name], ranks[name]))
        if masks[name].shape != w.shape or masks[name].dtype != bool:
            raise ValueError(f"BIM mask for {name}: expected bool {w.shape}, got {masks[name].dtype} "
                             f"{masks[name].shape}")
        bits[name] = index_bits(w.shape, tiles[name], ranks[name])
    factorize_seconds = time.perf_counter() - started
    bim_result = _retrained(dense, masks, retrain, data, progress, "bim")
    total_bits, total_weights = sum(bits.values()), sum(weights[name].size for name in layers)
    result["bim"] = {
        **bim_result,
        "tile": {name: list(t) for name, t in tiles.items()},
        "rank": ranks,
        "index_bits_per_weight": {name: bits[name] / weights[name].size for name in layers},
        "index_bits_per_weight_all_pruned": total_bits / total_weights,
        # r (m_t + n_t) / (m_t n_t): what a full tile costs, without the padding of edge tiles
        "index_bits_per_weight_nominal": {name: ranks[name] * sum(t) / (t[0] * t[1]) for name, t in tiles.items()},
        "kept_magnitude_vs_magnitude_pruning": {
            name: float(np.abs(weights[name])[masks[name]].sum() / np.abs(weights[name])[magnitude[name]].sum())
            for name in layers},
        "factorize_seconds": factorize_seconds,
    }
    result["gap_points"] = round(100 * (result["magnitude"]["test_accuracy"] - result["bim"]["test_accuracy"]), 6)
    return result


def _spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def compare_over_seeds(seeds: Iterable[int], sparsity: float = 0.9, *, recipe: Recipe = DEFAULT_RECIPE,
                       retrain: Recipe = DEFAULT_RETRAIN, bim: bool = True, progress: Progress | None = None,
                       **options) -> dict:
    """`compare_fc_pruning` once per seed (dense training and retraining both reseeded); means and spreads.

    A 1 000-image test set moves in steps of 0.1 point, so single seeds differ by more than the effect
    being measured; the mean over seeds is the figure to compare.
    """
    seeds = list(seeds)
    runs = []
    for seed in seeds:
        runs.append(compare_fc_pruning(sparsity, recipe=recipe.replace(seed=seed), retrain=retrain.replace(seed=seed),
                                       bim=bim, progress=progress, **options))
    variants = ["dense", "magnitude"] + (["bim"] if bim else [])
    summary = {name: _spread([run[name]["test_accuracy"] for run in runs]) for name in variants}
    if bim:
        summary["gap_points"] = _spread([run["gap_points"] for run in runs])
    return {"seeds": seeds, "test_accuracy": summary, "runs": runs}
