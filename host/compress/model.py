"""The compressor: the accelerator's LeNet-5 (`host.lenet5.compressed`) from a spectral LeNet-5. NumPy only.

The spectral LeNet-5 (`host.lenet5.spectral`) keeps its two fixed-point spectral conv layers; each FC layer
becomes what the FC engine runs (`hw.spec.fc`):

1. a keep mask: a BIM factorization (`host.compress.bim.factorize`) of the layer's matrix in tiles of
   m_t x n_out (`FcFormat`). The BIM file orders tiles row-major and rows within a tile, which is exactly
   `FcLayout.tile_major`, so its P, Z give the mask-row stream the engine reads;
2. optionally the layer fine-tuned with that mask fixed (`host.compress.finetune`, torch);
3. binary coding of the kept weights in q planes, alpha per original row (`bcq_quantize`);
4. the planes of the tile-major padded matrix cut into n_out-bit slices (one tile row = one slice) and encoded
   for the decoder's fixed M (`encode_slices`), care bits = the kept, real positions;
5. the requantization: activation scales s_x (input) and s_y (output, calibrated on the training split through
   the integer pipeline itself), a = round(alpha s_x / s_y 2^shift) unsigned in a_bits with the largest shift
   <= 31 that fits, bias_q = round(bias / s_y 2^shift).

The model, its golden forward pass and its file are `host.lenet5.compressed`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from host.compress.bim import factorize
from host.compress.xor import bcq_quantize, encode_slices
from host.lenet5.compressed import CompressedFcLayer, CompressedLeNet5, conv_features, fc_forward, size_report
from host.lenet5.net import FC_NAMES, FC_RELU, quantize_input
from hw.spec.bim import BimMask, to_tiles
from hw.spec.fc import ACT_BITS
from hw.spec.fc_format import DEFAULT_FC_FORMAT, MAX_SHIFT, FcFormat
from hw.spec.xor import bcq_dequantize, planes_to_slices

#: Largest int8 output code: the calibrated |output| maps to it.
OUT_MAX = (1 << (ACT_BITS - 1)) - 1
#: Percentile of the training outputs that maps to OUT_MAX (module docstring; docs/formats.md has the measurement).
DEFAULT_PERCENTILE = 100.0

Progress = Callable[[str], None]


# --- compression ---------------------------------------------------------------------------------------------


def factor_mask(weight: np.ndarray, sparsity: float, fmt: FcFormat, seed: int = 0) -> BimMask:
    """The layer's BIM keep mask at `sparsity`, factored on the original matrix in the engine's m_t x n_out tiles."""
    return factorize(weight, sparsity, fmt.m_t, fmt.n_t, fmt.r, seed=seed)


def keep_every_row(bim: BimMask, weight: np.ndarray) -> BimMask:
    """`bim` with each empty row given the one P bit (tile, rank) that keeps the most |W| of that row.

    Used on the output layer: a class whose row keeps nothing has a constant logit and can only win by default.
    """
    keep = bim.mask()
    empty = np.flatnonzero(~keep.any(axis=1))
    if empty.size == 0:
        return bim
    m_t, n_t = bim.params.m_t, bim.params.n_t
    magnitude = to_tiles(np.abs(np.asarray(weight, dtype=np.float64)), m_t, n_t)   # (T_r, T_c, m_t, n_t)
    a, local = empty // m_t, empty % m_t
    gain = np.einsum("ecn,ecrn->ecr", magnitude[a, :, local, :], bim.z[a].astype(np.float64))  # (E, T_c, r)
    best = gain.reshape(len(empty), -1).argmax(axis=1)
    tile, k = np.divmod(best, bim.params.r)
    useful = gain.reshape(len(empty), -1).max(axis=1) > 0  # a row no Z row reaches cannot be helped
    p = bim.p.copy()
    p[a[useful], tile[useful], local[useful], k[useful]] = True
    return BimMask(shape=bim.shape, params=bim.params, p=p, z=bim.z)


def encode_planes(planes: np.ndarray, keep: np.ndarray, fmt: FcFormat) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """XOR-encode (q, rows, cols) planes in the tile-major layout: x (q S, n_in), patch_counts, patch_positions.

    Care bits are the kept real positions; pruned and padding positions are don't-care.
    """
    q = planes.shape[0]
    layout = fmt.layout
    # Padding gets bit 1 like the quantizer's pruned positions; it is never a care bit, so any value would do.
    tile_major = np.stack([layout.tile_major(plane, fill=1) for plane in planes])
    targets = planes_to_slices(tile_major, fmt.n_out)
    care = np.tile(layout.tile_major(np.asarray(keep, dtype=bool), fill=False), (q, 1))
    return encode_slices(fmt.matrix(), targets, care)


def requantize(alpha: np.ndarray, bias: np.ndarray, in_scale: float, out_scale: float,
               fmt: FcFormat) -> tuple[np.ndarray, np.ndarray, int]:
    """(a, bias_q, shift): a = round(alpha s_x / s_y 2^shift) in 0..2^a_bits - 1 with the largest shift <= 31 that
    fits, bias_q = round(bias / s_y 2^shift) (both rounded half up)."""
    ratio = np.asarray(alpha, dtype=np.float64) * (float(in_scale) / float(out_scale))
    top = float(ratio.max()) if ratio.size else 0.0
    shift = MAX_SHIFT if top == 0 else min(MAX_SHIFT, int(np.floor(np.log2(fmt.a_max / top))))
    while shift >= 0 and np.floor(top * 2.0**shift + 0.5) > fmt.a_max:  # log2 can land one too high
        shift -= 1
    if shift < 0:
        raise ValueError(f"alpha * s_x / s_y reaches {top:.4g}, beyond a_bits={fmt.a_bits} even at shift 0")
    a = np.floor(ratio * 2.0**shift + 0.5).astype(np.int64)
    bias_q = np.floor(np.asarray(bias, dtype=np.float64) / float(out_scale) * 2.0**shift + 0.5).astype(np.int64)
    return a, bias_q, shift


def calibrate_scale(y: np.ndarray, percentile: float, relu: bool) -> float:
    """s_y (float32-exact): the `percentile` of the |outputs| (of max(y, 0) for a ReLU layer) maps to 127."""
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    y = np.asarray(y, dtype=np.float64)
    span = float(np.percentile(np.maximum(y, 0) if relu else np.abs(y), percentile)) if y.size else 0.0
    return float(np.float32(span / OUT_MAX)) if span > 0 else 1.0


def compress_fc(name: str, weight: np.ndarray, bias: np.ndarray, bim: BimMask, x_codes: np.ndarray, in_scale: float,
                *, fmt: FcFormat = DEFAULT_FC_FORMAT, bits: int = 1, relu: bool = True,
                percentile: float = DEFAULT_PERCENTILE) -> CompressedFcLayer:
    """One FC layer: binary coding of the kept weights, tile-major XOR encoding, s_y calibrated on `x_codes`.

    x_codes (N, cols): the integer inputs this layer sees on the calibration images (previous layer's codes).
    """
    keep = bim.mask()
    alpha, planes = bcq_quantize(weight, keep, bits)
    x, counts, positions = encode_planes(planes, keep, fmt)
    y = np.asarray(x_codes, dtype=np.float64) * in_scale @ bcq_dequantize(alpha, planes, keep).T.astype(np.float64)
    out_scale = calibrate_scale(y + bias, percentile, relu)
    in_scale = float(np.float32(in_scale))
    a, bias_q, shift = requantize(alpha, bias, in_scale, out_scale, fmt)
    return CompressedFcLayer(name=name, fmt=fmt, bim=bim, x=x, patch_counts=counts, patch_positions=positions,
                             alpha=alpha, bias=np.asarray(bias, dtype=np.float32), a=a, bias_q=bias_q,
                             shift=int(shift), relu=bool(relu), in_scale=in_scale, out_scale=out_scale)


def compress_fc_stack(weights: Sequence[tuple[np.ndarray, np.ndarray]], bims: Sequence[BimMask],
                      features: np.ndarray, in_scale: float, *, fmt: FcFormat = DEFAULT_FC_FORMAT, bits: int = 1,
                      percentile: float = DEFAULT_PERCENTILE
                      ) -> tuple[CompressedFcLayer, CompressedFcLayer, CompressedFcLayer]:
    """fc1, fc2, fc3 in order, each calibrated on the integer codes the compressed layers before it produce."""
    h = np.asarray(features).reshape(len(features), -1)
    layers = []
    for name, (w, b), bim in zip(FC_NAMES, weights, bims):
        layer = compress_fc(name, w, b, bim, h, in_scale, fmt=fmt, bits=bits, relu=FC_RELU[name],
                            percentile=percentile)
        layers.append(layer)
        h, in_scale = layer.forward(h), layer.out_scale
    return tuple(layers)


def _sparsities(sparsity: float | Sequence[float]) -> tuple[float, ...]:
    values = (sparsity,) * len(FC_NAMES) if np.isscalar(sparsity) else tuple(sparsity)
    if len(values) != len(FC_NAMES) or not all(0.0 <= float(s) < 1.0 for s in values):
        raise ValueError(f"sparsity must be one value or {len(FC_NAMES)} (fc1, fc2, fc3), each in [0, 1), "
                         f"got {sparsity!r}")
    return tuple(float(s) for s in values)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of argmax(logits) equal to the labels (ties go to the lower class, as np.argmax)."""
    return float(np.mean(np.asarray(logits).argmax(axis=1) == np.asarray(labels))) if len(labels) else 0.0


def _float_logits(weights: Sequence[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    h = np.asarray(x, dtype=np.float64)
    for i, (w, b) in enumerate(weights):
        h = h @ np.asarray(w, dtype=np.float64).T + b
        h = np.maximum(h, 0) if i < len(weights) - 1 else h
    return h


def compress_model(spectral: Any, *, fmt: FcFormat = DEFAULT_FC_FORMAT, bits: int = 1,
                   sparsity: float | Sequence[float] = 0.9, finetune_epochs: int = 0, finetune_mode: str = "ste",
                   lr: float = 3e-3, seed: int = 0, percentile: float = DEFAULT_PERCENTILE,
                   data: tuple[np.ndarray, ...] | None = None, progress: Progress | None = None) -> CompressedLeNet5:
    """The accelerator's model from a `host.lenet5.spectral.SpectralLeNetModel` (module docstring).

    finetune_epochs > 0 needs torch (ImportError saying so otherwise). `data`: (x_train, y_train, x_test, y_test)
    as `host.mnist.load_mnist` gives them (the default). Accuracies go into the metadata.
    """
    sparsities = _sparsities(sparsity)
    fmt.xor_params(bits)  # bits within 1..max_planes before the long part
    if finetune_epochs < 0:
        raise ValueError(f"finetune_epochs must be >= 0, got {finetune_epochs}")
    if finetune_epochs:
        try:
            from host.compress.finetune import finetune_fc
        except ImportError as error:
            raise ImportError(f"--finetune-epochs {finetune_epochs} needs torch ({error}); "
                              "pass --finetune-epochs 0 to compress without fine-tuning") from None
    say = progress or (lambda message: None)
    if data is None:
        from host.mnist import load_mnist
        data = load_mnist()
    x_train, y_train, x_test, y_test = data
    convs = (spectral.conv1, spectral.conv2)
    s_x = float(np.float32(spectral.conv2.quant.out_scale))
    say("conv features of the training split (golden fixed point)")
    f_train = conv_features(convs, quantize_input(x_train), progress).reshape(len(x_train), -1)
    say("conv features of the test split")
    f_test = conv_features(convs, quantize_input(x_test), progress).reshape(len(x_test), -1)
    source = [(spectral.fc[f"{n}.weight"], spectral.fc[f"{n}.bias"]) for n in FC_NAMES]
    acc: dict[str, float] = {"float_fc": accuracy(_float_logits(source, f_test * s_x), y_test)}

    bims = []
    for name, (w, _), s in zip(FC_NAMES, source, sparsities):
        say(f"{name}: BIM mask at sparsity {s} (tile {fmt.m_t}x{fmt.n_t}, rank {fmt.r})")
        bim = factor_mask(w, s, fmt, seed)
        bims.append(keep_every_row(bim, w) if name == FC_NAMES[-1] else bim)
    say("binary coding, XOR encoding and calibration without fine-tuning")
    plain = compress_fc_stack(source, bims, f_train, s_x, fmt=fmt, bits=bits, percentile=percentile)
    acc["compressed_float_without_finetune"] = accuracy(
        _float_logits([(layer.dense(), layer.bias) for layer in plain], f_test * s_x), y_test)
    acc["golden_fixed_without_finetune"] = accuracy(fc_forward(plain, f_test)[-1], y_test)
    layers = plain
    if finetune_epochs:
        def epoch(i: int, n: int, loss: float, train_acc: float) -> None:
            say(f"fine-tuning epoch {i}/{n}: loss {loss:.4f}, training accuracy {train_acc:.4f}")

        tuned = finetune_fc(source, [b.mask() for b in bims], (f_train * s_x).astype(np.float32), y_train,
                            bits=bits, epochs=finetune_epochs, mode=finetune_mode, lr=lr, seed=seed,
                            on_epoch=epoch)
        acc["float_fc_finetuned"] = accuracy(_float_logits(tuned, f_test * s_x), y_test)
        say("binary coding, XOR encoding and calibration of the fine-tuned layers")
        layers = compress_fc_stack(tuned, bims, f_train, s_x, fmt=fmt, bits=bits, percentile=percentile)
    acc["compressed_float"] = accuracy(_float_logits([(la.dense(), la.bias) for la in layers], f_test * s_x), y_test)
    acc["golden_fixed"] = accuracy(fc_forward(layers, f_test)[-1], y_test)
    source_meta = getattr(spectral, "metadata", {}) or {}
    metadata = {
        "model": "lenet5-full",
        "test_accuracy": acc,
        "spectral_model_test_accuracy": source_meta.get("test_accuracy", {}),
        "test_split": "host.train.data: every fifth image of each digit (1 000 images)",
        "test_images": len(y_test), "calibration_images": len(y_train),
        "fc_bits": bits, "fc_sparsity_target": dict(zip(FC_NAMES, sparsities)),
        "fc_sparsity": {la.name: round(1 - float(la.keep.mean()), 6) for la in layers},
        "finetune": {"epochs": finetune_epochs, "mode": finetune_mode, "lr": lr, "seed": seed} if finetune_epochs
        else None,
        "calibration_percentile": percentile, "bim_seed": seed,
        "sizes": size_report(layers),
    }
    return CompressedLeNet5(conv1=spectral.conv1, conv2=spectral.conv2, fc=layers, fmt=fmt, metadata=metadata)
