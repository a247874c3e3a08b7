"""Retraining any float network for compression (torch, the `train` extra): what LeNet-5 gets, for every network
sqgen takes (`host.network.ir.FloatNetwork`).

1. **Spectral model** (`SpectralNetwork`): the float chain in torch, each Conv2d a `SpectralConv2d` at the geometry
   the compressor gives it (`host.compress.network.engine_geometry`, `layer_geometry`: a smaller "same" kernel
   embedded in the engine's K), set from its spatial kernels, so it computes the float network to float rounding.
2. **Conv pruning**: ADMM on the canonical spectral bins to `conv_sparsity` per layer (`host.train.spectral
   .admm_prune`), then the bins outside the last Z dropped (`hard_prune`).
3. **FC masks**: each Linear's BIM keep mask at `fc_sparsity` in the FC format's tiles (`factor_mask`; the output
   layer keeps every row, `keep_every_row`), factored from its weights after ADMM.
4. **Retraining** of the whole network with both kinds of mask fixed (`host.train.lenet.fit`).
5. **FC fine-tuning**: the conv layers frozen, each Linear trained through its kept weights binary-coded in
   `fc_bits` planes (straight through, `host.compress.finetune.coded_weight`), its mask fixed.

The retrained spectra, weights and masks go to `host.compress.network.compress_network` as `Retrained`, which
compresses them into the same `sqgen-net` model as post-training compression. Accuracy on the test split is
measured after each stage: `float`, `spectral` (the conversion), `pruned` (after ADMM, masks applied, before
retraining), `retrained` (after fine-tuning, float activations) and, by the compressor, `compressed`.

Deterministic: one seed sets torch's generator (the layers' initial values, then overwritten), every stage's
shuffling and the BIM factorizer; torch runs on `NetworkRecipe.threads` threads (one by default).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:
    raise ImportError("torch is needed for training: pip install 'sqgen[train]'") from None

from host.compress.finetune import binary_coded, coded_weight
from host.compress.model import accuracy, factor_mask, keep_every_row
from host.compress.network import (
    DEFAULT_CONV_SPARSITY,
    DEFAULT_FC_SPARSITY,
    CompressionResult,
    Retrained,
    compress_network,
    engine_geometry,
    layer_geometry,
    plan,
)
from host.network.ir import Conv2d, Flatten, FloatNetwork, Linear, MaxPool2d, ReLU
from hw.spec.bim import BimMask
from hw.spec.fc_format import DEFAULT_FC_FORMAT, FcFormat
from hw.spec.spectral.geometry import OaaParams

from .lenet import Recipe, evaluate, fit, seed_everything, torch_threads
from .spectral import AdmmRecipe, SpectralConv2d, admm_prune, hard_prune, model_sparsity, project

__all__ = ["NetworkRecipe", "DEFAULT_NETWORK_RECIPE", "CodedLinear", "SpectralNetwork", "retrain_network",
           "retrain_and_compress"]

Say = Callable[[str], None]


@dataclass(frozen=True)
class NetworkRecipe:
    """How a network is retrained: ADMM rounds (`admm`; None or a network without convs: the bins are pruned by
    magnitude at once), retraining with every mask fixed (`retrain`), FC fine-tuning through the binary-coded
    weights (`finetune`; 0 epochs: none)."""

    admm: AdmmRecipe | None = AdmmRecipe(iterations=6, w_step=Recipe(epochs=2, optimizer="sgd", lr=1e-2,
                                                                      schedule="constant"))
    retrain: Recipe = Recipe(epochs=10, lr=1e-3)
    finetune: Recipe = Recipe(epochs=5, lr=1e-3)

    def replace(self, **changes) -> NetworkRecipe:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def seeded(self, seed: int) -> NetworkRecipe:
        """The same recipe with every stage's seed set to `seed`."""
        admm = None if self.admm is None else self.admm.replace(w_step=self.admm.w_step.replace(seed=seed))
        return self.replace(admm=admm, retrain=self.retrain.replace(seed=seed),
                            finetune=self.finetune.replace(seed=seed))

    @property
    def threads(self) -> int:
        """torch's threads: the retraining stage's."""
        return self.retrain.threads


DEFAULT_NETWORK_RECIPE = NetworkRecipe()


class CodedLinear(nn.Linear):
    """nn.Linear that, once `code` gave it a keep mask and planes, computes with its kept weights binary-coded
    (straight through: the gradient reaches the float weights)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features)
        self.keep: torch.Tensor | None = None
        self.bits = 0

    def code(self, keep: np.ndarray, bits: int) -> None:
        """Compute from now on through the weights kept by `keep` (bool, the weight's shape), in `bits` planes."""
        self.keep = torch.from_numpy(np.asarray(keep, dtype=np.float32))
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.keep is None:
            return super().forward(x)
        return F.linear(x, coded_weight(self.weight, self.keep, self.bits), self.bias)

    def computed_weight(self) -> np.ndarray:
        """The weight this layer computes with (float32): binary-coded once coded, else as it is."""
        with torch.no_grad():
            w = self.weight if self.keep is None else binary_coded(self.weight, self.keep, self.bits)
            return w.numpy().copy()


def _module(layer: Conv2d | ReLU | MaxPool2d | Flatten | Linear, engine: OaaParams | None) -> nn.Module:
    """The torch module computing `layer`, its weights copied (a Conv2d spectral at its engine geometry)."""
    if isinstance(layer, Conv2d):
        oaa, weight = layer_geometry(layer, engine)
        conv = SpectralConv2d(layer.c_in, layer.c_out, oaa)
        conv.set_spatial(weight.astype(np.float64), layer.bias)
        return conv
    if isinstance(layer, Linear):
        linear = CodedLinear(layer.in_features, layer.out_features)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(layer.weight))
            linear.bias.copy_(torch.from_numpy(layer.bias))
        return linear
    if isinstance(layer, MaxPool2d):
        return nn.MaxPool2d(2)  # floor mode: an odd last row or column dropped, as the float network does
    return nn.ReLU() if isinstance(layer, ReLU) else nn.Flatten()


class SpectralNetwork(nn.Module):
    """A float network in torch, layer for layer, its convs spectral on one engine geometry (`engine`)."""

    def __init__(self, net: FloatNetwork, engine: OaaParams | None) -> None:
        super().__init__()
        self.names = [layer.name for layer in net.layers]
        self.body = nn.ModuleList(_module(layer, engine) for layer in net.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.body:
            x = module(x)
        return x

    def spectral_layers(self) -> dict[str, SpectralConv2d]:
        """The spectral conv layers by float layer name."""
        return {name: m for name, m in zip(self.names, self.body) if isinstance(m, SpectralConv2d)}

    def linear_layers(self) -> dict[str, CodedLinear]:
        """The Linear layers by float layer name."""
        return {name: m for name, m in zip(self.names, self.body) if isinstance(m, CodedLinear)}


def _epoch_line(say: Say) -> Callable[[str, dict], None]:
    def line(stage: str, stats: dict) -> None:
        say(f"{stage} epoch {stats['epoch']}/{stats['epochs']}: loss {stats['loss']:.4f}, training "
            f"{100 * stats['train_accuracy']:.1f} %, test {100 * stats['test_accuracy']:.1f} % "
            f"({stats['seconds']:.1f} s)")
    return line


def retrain_network(net: FloatNetwork, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                    y_test: np.ndarray, *, conv_sparsity: float = DEFAULT_CONV_SPARSITY,
                    fc_sparsity: float = DEFAULT_FC_SPARSITY, fc_bits: int | None = None,
                    fmt: FcFormat = DEFAULT_FC_FORMAT, fft_size: int | None = None,
                    recipe: NetworkRecipe = DEFAULT_NETWORK_RECIPE, seed: int = 0,
                    progress: Say | None = None) -> Retrained:
    """`net` retrained for compression at these options (module docstring) on (x_train, y_train), measured on
    (x_test, y_test); every stage seeded by `seed`. Progress (each stage's accuracy, one line per epoch and per
    ADMM round) goes to `progress`."""
    started = time.perf_counter()
    say = progress or (lambda message: None)
    fc_bits = fmt.max_planes if fc_bits is None else fc_bits
    for option, value in (("conv_sparsity", conv_sparsity), ("fc_sparsity", fc_sparsity)):
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"{option} must be in [0, 1), got {value}")
    fmt.xor_params(fc_bits)  # bits within 1..max_planes before the long part
    steps = plan(net)  # a ReLU the compressor cannot fuse is refused before any training
    classes = net.output_shape[0] if len(net.output_shape) == 1 else 0
    labels = max(int(np.max(y_train, initial=0)), int(np.max(y_test, initial=0))) + 1
    if labels > classes:
        raise ValueError(f"retraining needs one output per class: the network gives {net.output_shape}, the labels "
                         f"need ({labels},)")
    recipe = recipe.seeded(seed)
    x_train, x_test = (np.ascontiguousarray(x, dtype=np.float32) for x in (x_train, x_test))
    y_train, y_test = (np.ascontiguousarray(y, dtype=np.int64) for y in (y_train, y_test))
    data = (x_train, y_train, x_test, y_test)
    epochs = _epoch_line(say)
    acc: dict[str, float | None] = {}

    def measured(stage: str, value: float) -> None:
        acc[stage] = value
        say(f"accuracy {stage}: {100 * value:.1f} %")

    with torch_threads(recipe.threads):
        measured("float", accuracy(net.forward(x_test.astype(np.float64)), y_test))
        seed_everything(seed)
        model = SpectralNetwork(net, engine_geometry(net, fft_size))
        measured("spectral", evaluate(model, x_test, y_test, threads=recipe.threads))
        convs, linears = model.spectral_layers(), model.linear_layers()
        history: list[dict] = []
        if convs and recipe.admm is not None:
            say(f"ADMM: {recipe.admm.iterations} rounds of {recipe.admm.w_step.epochs} epochs, conv bins to "
                f"sparsity {conv_sparsity:g}")
            z, history = admm_prune(model, conv_sparsity, recipe.admm, data, progress=epochs, log=say)
        else:
            z = {name: project(layer.half(), conv_sparsity) for name, layer in convs.items()}
        masks = hard_prune(model, z)

        last_fc = steps[-1].source.name if steps[-1].kind == "fc" else None
        bims: dict[str, BimMask] = {}
        params = {id(param): name for name, param in model.named_parameters()}
        for name, layer in linears.items():
            w = layer.weight.detach().numpy().copy()
            bim = factor_mask(w, fc_sparsity, fmt, seed)
            bims[name] = keep_every_row(bim, w) if name == last_fc else bim
            masks[params[id(layer.weight)]] = bims[name].mask()
        with torch.no_grad():
            for name, layer in linears.items():
                layer.weight.mul_(torch.from_numpy(bims[name].mask()))
        measured("pruned", evaluate(model, x_test, y_test, threads=recipe.threads))

        fit(model, x_train, y_train, recipe.retrain, masks=masks, eval_data=(x_test, y_test), progress=epochs,
            stage="retrain")
        if linears and recipe.finetune.epochs:
            for layer in convs.values():
                layer.requires_grad_(False)
            for name, layer in linears.items():
                layer.code(bims[name].mask(), fc_bits)
            fc_masks = {params[id(layer.weight)]: bims[name].mask() for name, layer in linears.items()}
            fit(model, x_train, y_train, recipe.finetune, masks=fc_masks, eval_data=(x_test, y_test),
                progress=epochs, stage="fc fine-tune")
        measured("retrained", evaluate(model, x_test, y_test, threads=recipe.threads))

    info = {"recipe": dataclasses.asdict(recipe), "seed": seed, "train_samples": len(x_train),
            "conv_sparsity": {name: round(value, 6) for name, value in model_sparsity(model).items()},
            "admm_relative_gap": [entry["relative_gap"] for entry in history],
            "torch": str(torch.__version__), "threads": recipe.threads,
            "train_seconds": round(time.perf_counter() - started, 3)}
    return Retrained(
        convs={name: (layer.half(), layer.bias.detach().numpy().copy()) for name, layer in convs.items()},
        fcs={name: (layer.computed_weight(), layer.bias.detach().numpy().copy(), bims[name])
             for name, layer in linears.items()},
        accuracy=acc, info=info)


def retrain_and_compress(net: FloatNetwork, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                         y_test: np.ndarray, *, conv_sparsity: float = DEFAULT_CONV_SPARSITY,
                         fc_sparsity: float = DEFAULT_FC_SPARSITY, fc_bits: int | None = None,
                         fmt: FcFormat = DEFAULT_FC_FORMAT, fft_size: int | None = None,
                         recipe: NetworkRecipe = DEFAULT_NETWORK_RECIPE, seed: int = 0, progress: Say | None = None,
                         **options) -> CompressionResult:
    """`retrain_network`, then `compress_network` of the retrained weights at the same options (`options`: its
    others: calibration, percentile, p, b, name, dataset); the accuracy of every stage in the result and the
    model's metadata, the training's recipe and time in its `retrain`."""
    retrained = retrain_network(net, x_train, y_train, x_test, y_test, conv_sparsity=conv_sparsity,
                                fc_sparsity=fc_sparsity, fc_bits=fc_bits, fmt=fmt, fft_size=fft_size, recipe=recipe,
                                seed=seed, progress=progress)
    return compress_network(net, x_train, x_test, y_test, conv_sparsity=conv_sparsity, fc_sparsity=fc_sparsity,
                            fc_bits=fc_bits, fmt=fmt, fft_size=fft_size, seed=seed, progress=progress,
                            retrained=retrained, **options)
