"""Fine-tuning of the FC layers of a compressed LeNet-5 with their keep masks fixed (torch, the `train` extra).

The conv layers are not trained: their outputs come once from the bit-exact golden fixed-point path (the pooled
conv2 codes times conv2's out_scale), so the FC layers learn on exactly the features the accelerator gives them.
Two modes:

* "ste": every forward pass uses the binary-coded weights the compressor will store, w ~ sum_i alpha_i b_i on the
  kept positions (greedy binary coding per row: b_i = sign of the residual, alpha_i its mean magnitude over the
  kept weights, as `host.compress.xor.bcq_quantize` starts), while the gradient reaches the float weights
  unchanged (straight-through estimator). Pruned weights stay exactly 0.
* "float": plain masked float training; the compressor quantizes afterwards.

Deterministic: a seeded generator shuffles, torch runs with a fixed thread count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    raise ImportError("torch is needed for FC fine-tuning: pip install 'sqgen[train]'") from None

MODES = ("ste", "float")
#: Reported after each epoch: (epoch, epochs, mean training loss, training accuracy).
EpochCallback = Callable[[int, int, float, float], None]


def binary_coded(w: torch.Tensor, mask: torch.Tensor, bits: int) -> torch.Tensor:
    """Greedy binary coding of each row's kept weights in `bits` planes (0 counts as +1); 0 where pruned."""
    residual = w * mask
    kept = mask.sum(dim=1, keepdim=True).clamp(min=1)
    out = torch.zeros_like(w)
    for _ in range(bits):
        sign = torch.where(residual >= 0, 1.0, -1.0) * mask
        alpha = (residual.abs() * mask).sum(dim=1, keepdim=True) / kept
        out = out + alpha * sign
        residual = residual - alpha * sign
    return out


def coded_weight(w: torch.Tensor, mask: torch.Tensor, bits: int, mode: str = "ste") -> torch.Tensor:
    """The weight a layer trains through in `mode` (module docstring): "ste" the binary-coded kept weights with the
    masked float weights' gradient, "float" the masked float weights."""
    if mode == "float":
        return w * mask
    # Straight through: the value is the binary-coded matrix, the gradient that of the masked float one.
    masked = w * mask
    return masked + (binary_coded(w.detach(), mask, bits) - masked).detach()


def finetune_fc(weights: Sequence[tuple[np.ndarray, np.ndarray]], masks: Sequence[np.ndarray],
                features: np.ndarray, labels: np.ndarray, *, bits: int, epochs: int, mode: str = "ste",
                lr: float = 1e-3, batch_size: int = 64, seed: int = 0, threads: int = 1,
                on_epoch: EpochCallback | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train an MLP (ReLU between layers) of masked `weights` [(W, b), ...] on float `features` (N, cols).

    Adam with a cosine-decaying rate, cross-entropy. Returns the new float32 (W, b) with pruned weights exactly 0.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if len(weights) != len(masks) or not weights:
        raise ValueError(f"weights and masks must be non-empty and of one length, got {len(weights)} and {len(masks)}")
    if epochs < 0 or batch_size < 1 or threads < 1:
        raise ValueError(f"epochs >= 0, batch_size >= 1 and threads >= 1 required, got {epochs}, {batch_size}, "
                         f"{threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        params, keep = [], []
        for (w, b), mask in zip(weights, masks):
            mask_t = torch.from_numpy(np.asarray(mask, dtype=np.float32))
            w_t = torch.nn.Parameter(torch.from_numpy(np.asarray(w, dtype=np.float32)) * mask_t)
            b_t = torch.nn.Parameter(torch.from_numpy(np.asarray(b, dtype=np.float32).copy()))
            params.append((w_t, b_t))
            keep.append(mask_t)
        optimizer = torch.optim.Adam([p for pair in params for p in pair], lr=lr)
        steps = max(1, epochs * math.ceil(len(features) / batch_size))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        xs = torch.from_numpy(np.asarray(features, dtype=np.float32))
        ys = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        for epoch in range(1, epochs + 1):
            total, correct = 0.0, 0
            for batch in torch.randperm(len(xs), generator=generator).split(batch_size):
                h = xs[batch]
                for i, ((w_t, b_t), mask_t) in enumerate(zip(params, keep)):
                    h = F.linear(h, coded_weight(w_t, mask_t, bits, mode), b_t)
                    if i < len(params) - 1:
                        h = F.relu(h)
                loss = F.cross_entropy(h, ys[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                with torch.no_grad():  # Adam moves pruned weights through its moments; keep them at 0
                    for (w_t, _), mask_t in zip(params, keep):
                        w_t.mul_(mask_t)
                total += loss.item() * len(batch)
                correct += int((h.argmax(1) == ys[batch]).sum())
            if on_epoch is not None:
                on_epoch(epoch, epochs, total / len(xs), correct / len(xs))
        return [(w_t.detach().numpy().astype(np.float32).copy(), b_t.detach().numpy().astype(np.float32).copy())
                for w_t, b_t in params]
    finally:
        torch.set_num_threads(before)
