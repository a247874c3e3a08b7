"""Spectral LeNet-5: a torch layer computing the SPEC2 golden operator, ADMM spectral pruning, retraining, export.

`SpectralConv2d` holds the real and imaginary parts of the rfft2 half spectrum (C_out, C_in, n, n/2 + 1) and
computes `hw.spec.spectral.operator.spectral_conv_float`: tiles, rfft2, multiply-accumulate over input channels,
irfft2, overlap-add, crop, bias. Only canonical bins are free parameters: the forward pass reads the real
part of the four self-conjugate bins and fills the non-canonical bins of columns 0 and n/2 with their
partners' conjugates (`complete_half`), so the parameters at those positions get no gradient and are kept 0.

Pruning (`admm_prune`): W-step = the training loop with the penalty rho/2 ||W - Z + U||^2 over canonical bins,
Z-step = the largest |W + U| canonical bins per layer to the target sparsity (`project`), U += W - Z; rho grows
geometrically per round and the scaled dual U is rescaled with it. Penalty and Z-step use the same norm (each
canonical bin once, a self-conjugate bin by its real part), so the Z-step is the exact projection for it. Then
the mask of the last Z is fixed and the model retrained ("spectral retraining"). `magnitude_prune` is the
baseline: the same mask rule applied once to the dense spectra.

Pruning and retraining take any module whose `spectral_layers()` names its `SpectralConv2d` layers (the spectral
LeNet-5 here, any float network in `host.train.network`). The exported model (`export`) is read and run without
torch by `host.lenet5.spectral`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:
    raise ImportError("torch is needed for training: pip install 'sqgen[train]'") from None

from host.compress.spectral import calibrate, layer_from_half, prune_mask
from host.lenet5 import spectral as spectral_model
from host.lenet5.net import INPUT_SCALE, quantize_input
from hw.spec.pool import max_pool
from hw.spec.spectral.fixed import spectral_conv_fixed
from hw.spec.spectral.geometry import OaaParams, canonical_mask, kernel_spectrum, self_conjugate_mask

from .lenet import (
    DEFAULT_RECIPE,
    Data,
    LeNet5,
    Progress,
    Recipe,
    _data,
    evaluate,
    fit,
    seed_everything,
    trained_dense,
)

# The two conv layers of LeNet-5 through the SPEC2 operator (N = 8, L = 4 fits K = 5: 4 + 5 - 1 = 8).
CONV1_OAA = OaaParams(n=8, k=5, l=4, padding="same")
CONV2_OAA = OaaParams(n=8, k=5, l=4, padding="valid")
CONV_LAYERS = ("conv1", "conv2")


def _real_masks(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Where the real and the imaginary parameters are free: canonical bins, imaginary not at self-conjugate ones."""
    canonical = canonical_mask(n)
    return canonical, canonical & ~self_conjugate_mask(n)


class SpectralConv2d(nn.Module):
    """OaA convolution with free spectral weights (real and imaginary parts of the rfft2 half), the golden operator."""

    def __init__(self, c_in: int, c_out: int, oaa: OaaParams, bias: bool = True) -> None:
        super().__init__()
        self.c_in, self.c_out, self.oaa = c_in, c_out, oaa
        shape = (c_out, c_in, oaa.n, oaa.half_cols)
        self.weight_re = nn.Parameter(torch.zeros(shape))
        self.weight_im = nn.Parameter(torch.zeros(shape))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        mask_re, mask_im = _real_masks(oaa.n)
        self.register_buffer("mask_re", torch.from_numpy(mask_re), persistent=False)
        self.register_buffer("mask_im", torch.from_numpy(mask_im), persistent=False)
        noncanonical = ~canonical_mask(oaa.n)
        self.register_buffer("noncanonical", torch.from_numpy(noncanonical), persistent=False)
        self.register_buffer("partner_rows", torch.from_numpy((-np.arange(oaa.n)) % oaa.n), persistent=False)
        # A default init like nn.Conv2d's, through the spectrum so that the layer starts as a spatial conv.
        w = torch.empty(c_out, c_in, oaa.k, oaa.k)
        nn.init.kaiming_uniform_(w, a=5 ** 0.5)
        self.set_spatial(w.numpy(), None)

    def set_spatial(self, w: np.ndarray, bias: np.ndarray | None) -> None:
        """Set the spectral weights to those of spatial kernels w (C_out, C_in, K, K) (`kernel_spectrum`) and bias."""
        self.set_half(kernel_spectrum(np.asarray(w), self.oaa.n), bias)

    def set_half(self, half: np.ndarray, bias: np.ndarray | None = None) -> None:
        """Set the weights from a (C_out, C_in, n, n/2 + 1) complex half; redundant bins are stored as 0."""
        half = np.asarray(half)
        with torch.no_grad():
            dtype = self.weight_re.dtype
            self.weight_re.copy_(torch.from_numpy(np.where(self.mask_re.numpy(), half.real, 0.0)).to(dtype))
            self.weight_im.copy_(torch.from_numpy(np.where(self.mask_im.numpy(), half.imag, 0.0)).to(dtype))
            if bias is not None and self.bias is not None:
                self.bias.copy_(torch.as_tensor(np.asarray(bias)).to(dtype))

    def half(self) -> np.ndarray:
        """The canonical spectral weights as a complex128 (C_out, C_in, n, n/2 + 1) array, non-canonical bins 0."""
        re = (self.weight_re * self.mask_re).detach().double().numpy()
        im = (self.weight_im * self.mask_im).detach().double().numpy()
        return re + 1j * im

    def completed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(re, im) of the full rfft2 half: canonical parameters, their conjugates elsewhere (`complete_half`)."""
        re, im = self.weight_re * self.mask_re, self.weight_im * self.mask_im
        re = torch.where(self.noncanonical, re[..., self.partner_rows, :], re)
        im = torch.where(self.noncanonical, -im[..., self.partner_rows, :], im)
        return re, im

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, l = self.oaa.n, self.oaa.l  # noqa: E741
        batch, c, h, w = x.shape
        tr, tc = self.oaa.tiles(h, w)
        x = F.pad(x, (0, tc * l - w, 0, tr * l - h))
        tiles = x.reshape(batch, c, tr, l, tc, l).permute(0, 1, 2, 4, 3, 5)
        spectra = torch.fft.rfft2(tiles, s=(n, n))  # (B, C_in, T_r, T_c, n, n/2 + 1), zero-padded L x L tiles
        re, im = self.completed()
        y = torch.einsum("birckq,oikq->borckq", spectra, torch.complex(re, im))
        z = torch.fft.irfft2(y, s=(n, n))  # (B, C_out, T_r, T_c, n, n)
        # Overlap-add is exactly fold: n x n blocks at stride l, summed where they overlap.
        blocks = z.permute(0, 1, 4, 5, 2, 3).reshape(batch, self.c_out * n * n, tr * tc)
        canvas = F.fold(blocks, output_size=(tr * l + n - l, tc * l + n - l), kernel_size=n, stride=l)
        h_out, w_out = self.oaa.output_shape(h, w)
        s = self.oaa.crop
        out = canvas[..., s:s + h_out, s:s + w_out]
        return out + self.bias[:, None, None] if self.bias is not None else out


class SpectralLeNet5(nn.Module):
    """LeNet-5 with both conv layers spectral (N = 8, L = 4); pooling and FC layers as in `LeNet5`."""

    def __init__(self) -> None:
        super().__init__()
        reference = LeNet5()  # the FC definitions come from the spatial model
        self.conv1 = SpectralConv2d(1, 6, CONV1_OAA)
        self.conv2 = SpectralConv2d(6, 16, CONV2_OAA)
        self.fc1, self.fc2, self.fc3 = reference.fc1, reference.fc2, reference.fc3

    @classmethod
    def from_spatial(cls, spatial: LeNet5) -> SpectralLeNet5:
        """The spectral model computing the same function as a spatial LeNet-5 (to float rounding)."""
        model = cls()
        state = spatial.state_dict()
        for name in CONV_LAYERS:
            getattr(model, name).set_spatial(state[f"{name}.weight"].double().numpy(), state[f"{name}.bias"].numpy())
        for name in ("fc1", "fc2", "fc3"):
            getattr(model, name).load_state_dict(getattr(spatial, name).state_dict())
        return model

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The convolutional part: (N, 1, 28, 28) -> (N, 400)."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(self.features(x)))
        return self.fc3(F.relu(self.fc2(x)))

    def spectral_layers(self) -> dict[str, SpectralConv2d]:
        """The spectral conv layers by name."""
        return {name: getattr(self, name) for name in CONV_LAYERS}


# --- pruning -----------------------------------------------------------------------------------------------


def project(half: np.ndarray, sparsity: float) -> np.ndarray:
    """The Z-step: keep the round((1 - sparsity) * canonical bins) largest-magnitude canonical bins of the layer
    (self-conjugate ones by their real part), zero elsewhere; returns the pruned half (non-canonical bins 0)."""
    half = np.asarray(half, dtype=np.complex128).copy()
    n = half.shape[-2]
    half[..., self_conjugate_mask(n)] = half[..., self_conjugate_mask(n)].real
    return np.where(prune_mask(half, sparsity, "layer"), half, 0)


def layer_masks(model: nn.Module, halves: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Parameter masks (True = kept) for `fit` from pruned halves: the nonzero canonical bins of each of the model's
    `spectral_layers()`, under the parameters' names in the model."""
    names = {id(param): name for name, param in model.named_parameters()}
    masks = {}
    for name, layer in model.spectral_layers().items():
        keep = halves[name] != 0
        masks[names[id(layer.weight_re)]] = keep & layer.mask_re.numpy()
        masks[names[id(layer.weight_im)]] = keep & layer.mask_im.numpy()
    return masks


def canonical_sparsity(half: np.ndarray) -> float:
    """Zero canonical bins over canonical bins."""
    canonical = np.broadcast_to(canonical_mask(half.shape[-2]), half.shape)
    return 1 - np.count_nonzero(half[canonical]) / canonical.sum()


@dataclass(frozen=True)
class AdmmRecipe:
    """ADMM pruning: `iterations` rounds of a W-step (the `w_step` recipe: its epochs are per round, its seed plus
    the round number shuffles the round), a Z-step and a dual update; rho = rho0 * rho_growth ** round."""

    iterations: int = 8
    rho0: float = 2e-2
    rho_growth: float = 2.0
    # SGD, not Adam: Adam normalises each parameter's step to about lr whatever rho is, so a growing rho would not
    # tighten W towards Z (measured: the gap ||W - Z|| stalled at half of ||W|| for conv1). A constant rate, so
    # that the penalty's pull does not fade within a round.
    w_step: Recipe = Recipe(epochs=2, optimizer="sgd", lr=1e-2, schedule="constant")

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"AdmmRecipe.iterations must be >= 1, got {self.iterations}")
        if not (math.isfinite(self.rho0) and self.rho0 > 0):
            raise ValueError(f"AdmmRecipe.rho0 must be a finite number > 0, got {self.rho0}")
        if not (math.isfinite(self.rho_growth) and self.rho_growth >= 1):
            raise ValueError(f"AdmmRecipe.rho_growth must be a finite number >= 1, got {self.rho_growth}")

    def replace(self, **changes) -> AdmmRecipe:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def rho(self, iteration: int) -> float:
        """The penalty weight of round `iteration` (0-based)."""
        return self.rho0 * self.rho_growth ** iteration


@dataclass(frozen=True)
class SpectralRecipe:
    """The whole pipeline: dense spatial training, dense spectral fine-tuning, ADMM, retraining with fixed masks."""

    spatial: Recipe = DEFAULT_RECIPE
    spectral: Recipe = Recipe(epochs=6, lr=3e-4)
    admm: AdmmRecipe = AdmmRecipe()
    retrain: Recipe = Recipe(epochs=8, lr=3e-4)
    sparsity: float = 0.75

    def __post_init__(self) -> None:
        if not 0 <= self.sparsity < 1:
            raise ValueError(f"SpectralRecipe.sparsity must be in [0, 1), got {self.sparsity}")

    def replace(self, **changes) -> SpectralRecipe:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def seeded(self, seed: int) -> SpectralRecipe:
        """The same recipe with every stage's seed set to `seed` (dense training included)."""
        return self.replace(spatial=self.spatial.replace(seed=seed), spectral=self.spectral.replace(seed=seed),
                            admm=self.admm.replace(w_step=self.admm.w_step.replace(seed=seed)),
                            retrain=self.retrain.replace(seed=seed))


def _penalty(targets: dict[str, tuple[torch.Tensor, torch.Tensor]], rho: float) -> Callable[[nn.Module], torch.Tensor]:
    """rho / 2 ||W - T||^2 over the free (canonical) parameters of each spectral layer, T = Z - U."""
    def penalty(model: nn.Module) -> torch.Tensor:
        total = torch.zeros(())
        for name, layer in model.spectral_layers().items():
            t_re, t_im = targets[name]
            total = total + ((layer.weight_re - t_re) * layer.mask_re).pow(2).sum()
            total = total + ((layer.weight_im - t_im) * layer.mask_im).pow(2).sum()
        return rho / 2 * total
    return penalty


def admm_prune(model: nn.Module, sparsity: float, recipe: AdmmRecipe, data: Data, *,
               progress: Progress | None = None,
               log: Callable[[str], None] | None = None) -> tuple[dict[str, np.ndarray], list[dict]]:
    """ADMM on the spectral weights of the model's `spectral_layers()`, in place; returns the last Z (pruned halves)
    and, per round, rho and the relative primal residual ||W - Z|| / ||W|| per layer (`log`: one line per round)."""
    x_train, y_train, x_test, y_test = data
    layers = model.spectral_layers()
    z = {name: project(layer.half(), sparsity) for name, layer in layers.items()}
    u = {name: np.zeros_like(h) for name, h in z.items()}
    history = []
    for iteration in range(recipe.iterations):
        rho = recipe.rho(iteration)
        if iteration:
            # U is the dual scaled by 1 / rho: keep the unscaled dual rho U when rho grows (Boyd et al. 2011, 3.4.1).
            u = {name: value * (recipe.rho(iteration - 1) / rho) for name, value in u.items()}
        dtype = next(iter(layers.values())).weight_re.dtype
        targets = {name: (torch.from_numpy((z[name] - u[name]).real).to(dtype),
                          torch.from_numpy((z[name] - u[name]).imag).to(dtype)) for name in layers}
        step = recipe.w_step.replace(seed=recipe.w_step.seed + iteration)
        fit(model, x_train, y_train, step, penalty=_penalty(targets, rho),
            eval_data=(x_test, y_test) if progress else None, progress=progress, stage=f"admm {iteration + 1}")
        gaps = {}
        for name, layer in layers.items():
            w = layer.half()
            z[name] = project(w + u[name], sparsity)
            u[name] = u[name] + w - z[name]
            gaps[name] = float(np.linalg.norm(w - z[name]) / max(np.linalg.norm(w), 1e-30))
        history.append({"iteration": iteration + 1, "rho": rho, "relative_gap": gaps})
        if log is not None:
            log(f"admm {iteration + 1}/{recipe.iterations}: rho {rho:.3g}, ||W - Z|| / ||W|| "
                + ", ".join(f"{name} {gap:.3f}" for name, gap in gaps.items()))
    return z, history


def hard_prune(model: nn.Module, halves: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Zero the model's spectral weights outside the nonzero bins of `halves` (in place); returns the `fit` masks."""
    masks = layer_masks(model, halves)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(torch.from_numpy(mask).to(params[name].dtype))
    return masks


def magnitude_prune(model: nn.Module, sparsity: float) -> dict[str, np.ndarray]:
    """The baseline: prune each layer's dense spectrum once by magnitude (in place); returns the `fit` masks."""
    return hard_prune(model, {name: project(layer.half(), sparsity) for name, layer in model.spectral_layers().items()})


def model_sparsity(model: nn.Module) -> dict[str, float]:
    """Canonical-bin sparsity of each spectral layer."""
    return {name: canonical_sparsity(layer.half()) for name, layer in model.spectral_layers().items()}


def train_pipeline(recipe: SpectralRecipe = SpectralRecipe(), *, data: Data | None = None, cache: Path | None = None,
                   magnitude: bool = True, progress: Progress | None = None,
                   log: Callable[[str], None] | None = None) -> dict:
    """Dense spatial (cached) -> dense spectral -> ADMM + retraining (and magnitude + retraining); the models, their
    test accuracies and wall times."""
    data = _data(data)
    x_train, y_train, x_test, y_test = data
    evaluation = (x_test, y_test) if progress else None
    spatial, info = trained_dense(recipe.spatial, data=data, cache=cache, progress=progress)
    result: dict = {"spatial": {"test_accuracy": evaluate(spatial, x_test, y_test),
                                "train_seconds": info["train_seconds"], "cached": info["cached"]}}

    started = time.perf_counter()
    seed_everything(recipe.spectral.seed)
    dense = SpectralLeNet5.from_spatial(spatial)
    result["spectral_from_spatial_accuracy"] = evaluate(dense, x_test, y_test)
    fit(dense, x_train, y_train, recipe.spectral, eval_data=evaluation, progress=progress, stage="spectral")
    result["spectral"] = {"test_accuracy": evaluate(dense, x_test, y_test),
                          "train_seconds": time.perf_counter() - started}

    started = time.perf_counter()
    admm = copy.deepcopy(dense)
    z, history = admm_prune(admm, recipe.sparsity, recipe.admm, data, progress=progress, log=log)
    admm_seconds = time.perf_counter() - started
    masks = hard_prune(admm, z)
    before = evaluate(admm, x_test, y_test)
    fit(admm, x_train, y_train, recipe.retrain, masks=masks, eval_data=evaluation, progress=progress,
        stage="retrain")
    result["admm"] = {"test_accuracy_before_retraining": before, "test_accuracy": evaluate(admm, x_test, y_test),
                      "sparsity": model_sparsity(admm), "admm_seconds": admm_seconds,
                      "train_seconds": time.perf_counter() - started, "iterations": history}

    if magnitude:
        started = time.perf_counter()
        mag = copy.deepcopy(dense)
        masks = magnitude_prune(mag, recipe.sparsity)
        before = evaluate(mag, x_test, y_test)
        fit(mag, x_train, y_train, recipe.retrain, masks=masks, eval_data=evaluation, progress=progress,
            stage="magnitude")
        result["magnitude"] = {"test_accuracy_before_retraining": before,
                               "test_accuracy": evaluate(mag, x_test, y_test), "sparsity": model_sparsity(mag),
                               "train_seconds": time.perf_counter() - started}
        result["models"] = {"spectral": dense, "admm": admm, "magnitude": mag}
    else:
        result["models"] = {"spectral": dense, "admm": admm}
    return result


# --- export ------------------------------------------------------------------------------------------------


def export(model: SpectralLeNet5, calibration: np.ndarray, metadata: dict | None = None, p: int = 4,
           b: int = 8) -> spectral_model.SpectralLeNetModel:
    """The model in the exported form (`spectral_model.save` writes it): conv layers as calibrated sparse spectral
    layers (p lanes, b banks), FC layers float32; `calibration` are training images (N, 1, 28, 28) in [0, 1]."""
    state = {name: tensor.detach().float().numpy() for name, tensor in model.state_dict().items()}
    convs = {}
    x_q = quantize_input(calibration)
    in_scale = INPUT_SCALE
    for name, layer in model.spectral_layers().items():
        sparse = layer_from_half(layer.half(), layer.oaa, p=p, b=b, bias=state[f"{name}.bias"], relu=True)
        sparse = calibrate(sparse, x_q, in_scale)
        convs[name] = sparse
        # The next layer's calibration input: this layer's fixed-point output, pooled as inference does.
        x_q = max_pool(spectral_conv_fixed(x_q, sparse))
        in_scale = sparse.quant.out_scale
    fc = {name: state[name] for name in spectral_model.FC_FIELDS}
    return spectral_model.SpectralLeNetModel(conv1=convs["conv1"], conv2=convs["conv2"], fc=fc,
                                             metadata=dict(metadata or {}))
