"""Factorizer of the binary-index-matrix mask format: binary P, Z per tile whose Boolean product keeps the most |W|.

The format's math (tiles, Boolean product, file) lives in `hw.spec.bim`; this module only produces it.
The goal: a mask of sparsity s, within SPARSITY_TOLERANCE = 0.005 (absolute) over the real, unpadded matrix,
keeping as much sum |W| as possible. Three steps, each vectorized over every tile at once:

1. NMF. |W| of each tile (padding 0) is factored |W| ~= U H, U (m_t x r) and H (r x n_t) non-negative, by
   Lee-Seung multiplicative updates (Frobenius loss) on the whole stack of tiles: four batched matmuls per
   iteration, about 0.07 s at r = 8 on a 4096 x 9216 matrix. Component k of a tile, U[:, k] H[k, :], marks a
   block of large magnitudes. (Factoring |W|^2 or the magnitude-pruning mask instead moved the final kept
   magnitude by at most 0.0021 either way; starting from random factors instead lost 0.015-0.018 at r = 8.)
2. Binarization. Each component is rescaled so that max U[:, k] = max H[k, :]; then one threshold t over
   every factor entry of every tile: P = U >= t, Z = H >= t. The block of k then lies inside
   {U[i, k] H[k, j] >= t^2}: t^2 is one magnitude cut shared by all components and tiles, so strong
   components get large blocks and weak ones none. It kept 0.001-0.011 more of |W| than one quantile per
   factor or a threshold relative to each factor's maximum (same global search; after refinement all three
   end within 0.001). Coverage only grows as t falls; t is searched by bisection over the entries' ranks
   (ties broken at random), so each step sets one bit and moves the count by at most max(m_t, n_t): the
   search lands within max(m_t, n_t) / 2 of the target count.
3. Refinement: alternating greedy bit flips. With Z fixed, row i of a tile's mask depends only on row i of
   P, so the gain of flipping any P[i, k] (kept magnitude and kept count it adds or removes) is exact for
   every row at once: batched matmuls against Z of |W| and of the indicators of entries covered zero times
   (what setting a bit adds) and exactly once (what clearing it removes). Each row proposes its best flip
   under the current price of a kept weight (gain - price * count change; the first price is the magnitude
   at the cut of unstructured pruning); the proposals are ranked by magnitude per weight and cut where the
   total count lands nearest the target. Additions of high value and removals of low value are so traded
   against each other: the sparsity holds while kept magnitude rises, and the cut sets the next price.
   Then the same for Z with P fixed (columns instead of rows), alternating until a round gains under 1e-4
   or after REFINE_ROUNDS rounds. Rows are independent, so the flips taken in one step add exactly. The
   best mask seen within the band is returned (checked exactly against the binarization at the end), so
   refinement never loses to the plain binarization. Refining raised kept magnitude by 0.011-0.027 (7-9 %
   relative); an exact search over all 2^r settings of a row, tried for r <= 5, added at most 0.0012.
   (Measured at s = 0.9 on 512 x 1152 Gaussian matrices, plain and with random row and column scales.)

Restarts. A matrix of under 2^19 weights gets several independent starts (`default_restarts`: up to 8, at
most 2^20 weights in all), and the best mask wins: with few tiles the result depends on the NMF's starting
point (on LeNet-5's fc1 as one 120 x 400 tile at r = 8, eight seeds kept 0.190-0.209 at s = 0.9), while a large
matrix averages that out over its tiles.

Padding (partial edge tiles, tiles larger than the matrix) carries zero magnitude and counts for nothing,
so its bits are whatever the steps leave there; the format cuts it off.
"""

from __future__ import annotations

import time

import numpy as np

from hw.spec.bim import BimMask, BimParams, tile_grid, tiles_to_mask, to_tiles
from hw.spec.params import check_int

SPARSITY_TOLERANCE = 0.005
NMF_ITERS = 60
REFINE_ROUNDS = 12
# Weights per chunk of tile rows in the refinement and the coverage counts: bounds its float32 temporaries
# (a handful of chunk-sized arrays) to some tens of MB.
_CHUNK_WEIGHTS = 1 << 21
_EPS = np.float32(1e-12)
# Refinement stops after a round that raises kept magnitude by less than this fraction.
_CONVERGED = 1e-4


def target_count(n: int, sparsity: float) -> int:
    """Kept weights at `sparsity` among n: round((1 - sparsity) * n)."""
    return int(round((1.0 - sparsity) * n))


def _check_sparsity(sparsity: float) -> float:
    if isinstance(sparsity, (bool, np.bool_)) or not isinstance(sparsity, (int, float, np.integer, np.floating)):
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    return float(sparsity)


def _check_weights(weights: np.ndarray) -> np.ndarray:
    w = np.asarray(weights)
    if w.ndim != 2 or w.size == 0:
        raise ValueError(f"weights must be a non-empty 2-D matrix, got shape {w.shape}")
    if w.dtype.kind not in "fiu":
        raise ValueError(f"weights must be real numbers, got dtype {w.dtype}")
    if not np.isfinite(w).all():
        raise ValueError(f"weights: {int((~np.isfinite(w)).sum())} values are NaN or infinite")
    return w


def magnitude_mask(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """Unstructured magnitude pruning: True on the round((1 - s) n) largest |W| (the upper bound of kept magnitude).

    Among equal |W| at the cut the lower flat (row-major) index is kept, so the mask is reproducible.
    """
    w = _check_weights(weights)
    keep = target_count(w.size, _check_sparsity(sparsity))
    flat = np.zeros(w.size, dtype=bool)
    flat[np.argsort(-np.abs(w), axis=None, kind="stable")[:keep]] = True
    return flat.reshape(w.shape)


def kept_magnitude(weights: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of sum |W| that `mask` keeps (1.0 for an all-zero W)."""
    a = np.abs(np.asarray(weights, dtype=np.float64))
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != a.shape:
        raise ValueError(f"mask shape {mask.shape} does not match weights {a.shape}")
    total = a.sum()
    return float(a[mask].sum() / total) if total > 0 else 1.0


# --- 1. NMF ----------------------------------------------------------------------------------------------


def _nmf(a: np.ndarray, r: int, iters: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Batched multiplicative-update NMF: a (T, m, n) >= 0 -> U (T, m, r), H (T, r, n) >= 0."""
    t, m, n = a.shape
    # Start at the scale where U H matches each tile's mean, so the first updates do not have to find it.
    scale = np.sqrt(a.mean(axis=(1, 2), keepdims=True) / r).astype(np.float32) + _EPS
    u = rng.random((t, m, r), dtype=np.float32) * scale
    h = rng.random((t, r, n), dtype=np.float32) * scale
    for _ in range(iters):
        ut = _transposed(u)
        h *= (ut @ a) / ((ut @ u) @ h + _EPS)
        ht = _transposed(h)
        u *= (a @ ht) / (u @ (h @ ht) + _EPS)
    return u, h


# --- 2. binarization -------------------------------------------------------------------------------------


def _covered(p: np.ndarray, z: np.ndarray, valid_rows: np.ndarray, valid_cols: np.ndarray) -> int:
    """Real (unpadded) entries of the Boolean product of p (T_r, T_c, m, r) and z (T_r, T_c, r, n)."""
    total = 0
    step = max(1, _CHUNK_WEIGHTS // (p.shape[1] * p.shape[2] * z.shape[3]))
    for a0 in range(0, p.shape[0], step):
        c = p[a0:a0 + step].astype(np.float32) @ z[a0:a0 + step].astype(np.float32)
        total += int(np.count_nonzero((c > 0) & valid_rows[a0:a0 + step] & valid_cols))
    return total


def _balance(u: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rescale each component so that max U[:, k] = max H[k, :] = sqrt(max U[:, k] * max H[k, :])."""
    mu = u.max(axis=-2, keepdims=True)                   # (..., 1, r)
    mh = h.max(axis=-1, keepdims=True)                   # (..., r, 1)
    c = np.sqrt(mu * np.swapaxes(mh, -1, -2))            # (..., 1, r)
    fu = np.divide(c, mu, out=np.zeros_like(c), where=mu > 0)
    fh = np.divide(c, np.swapaxes(mh, -1, -2), out=np.zeros_like(c), where=np.swapaxes(mh, -1, -2) > 0)
    return u * fu, h * np.swapaxes(fh, -1, -2)


def _binarize(u: np.ndarray, h: np.ndarray, count: int, valid_rows: np.ndarray, valid_cols: np.ndarray,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """P = U >= t, Z = H >= t with the one threshold t whose coverage is nearest `count` (see the module doc)."""
    u, h = _balance(u, h)
    values = np.concatenate([u.reshape(-1), h.reshape(-1)])
    # Distinct ranks, ties broken at random (an all-zero W, repeated values): each step of the threshold then
    # sets exactly one bit, which moves the coverage by at most max(m_t, n_t), so the search can land that
    # close to `count`.
    shuffled = rng.permutation(values.size)
    order = shuffled[np.argsort(values[shuffled], kind="stable")]
    rank = np.empty(values.size, dtype=np.int64)
    rank[order] = np.arange(values.size)
    ru, rh = rank[:u.size].reshape(u.shape), rank[u.size:].reshape(h.shape)

    def cover(i: int) -> int:  # threshold at rank i: every factor entry of rank >= i is set
        return _covered(ru >= i, rh >= i, valid_rows, valid_cols)

    # cover(0) is every real entry (>= count), cover(values.size) is none; coverage falls as i rises.
    lo, hi = 0, values.size
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if cover(mid) >= count:
            lo = mid
        else:
            hi = mid
    i = lo if cover(lo) - count <= count - cover(hi) else hi
    return ru >= i, rh >= i


# --- 3. refinement ---------------------------------------------------------------------------------------


def _transposed(x: np.ndarray) -> np.ndarray:
    # Copied: NumPy's batched matmul ran 1.6x faster on a contiguous operand than on a transposed view.
    return np.ascontiguousarray(np.swapaxes(x, -1, -2))


def _gains(a: np.ndarray, p: np.ndarray, z: np.ndarray, valid_rows: np.ndarray, valid_cols: np.ndarray,
           side: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact kept-magnitude and kept-count change of flipping each single bit of P (side 'p') or Z ('z')."""
    t_r, t_c, m, r = p.shape
    n = z.shape[-1]
    shape = (t_r, t_c, m, r) if side == "p" else (t_r, t_c, r, n)
    dk = np.empty(shape, dtype=np.float32)
    dc = np.empty(shape, dtype=np.float32)
    step = max(1, _CHUNK_WEIGHTS // (t_c * m * n))
    for a0 in range(0, t_r, step):
        sl = slice(a0, a0 + step)
        pc, zc = p[sl].astype(np.float32), z[sl].astype(np.float32)
        cover = pc @ zc
        valid = valid_rows[sl] & valid_cols
        zero = ((cover == 0) & valid).astype(np.float32)   # entries a set bit would add
        once = ((cover == 1) & valid).astype(np.float32)   # entries a cleared bit would remove
        ac = a[sl]
        # Four products rather than one on a concatenation: the copy would cost more than the matmuls.
        if side == "p":
            zt = _transposed(zc)
            add_k, rem_k, add_c, rem_c = (ac * zero) @ zt, (ac * once) @ zt, zero @ zt, once @ zt
            bits = p[sl]
        else:
            pt = _transposed(pc)
            add_k, rem_k, add_c, rem_c = pt @ (ac * zero), pt @ (ac * once), pt @ zero, pt @ once
            bits = z[sl]
        dk[sl] = np.where(bits, -rem_k, add_k)
        dc[sl] = np.where(bits, -rem_c, add_c)
    return dk, dc


def _flip_step(bits: np.ndarray, dk: np.ndarray, dc: np.ndarray, axis: int, deficit: int,
               price: float) -> tuple[np.ndarray, float, int, float]:
    """One flip per row (axis=-1 of P) or column (axis=-2 of Z), cut to change the count by about `deficit`.

    Returns the new bits, the kept-magnitude change, the count change and the next price.
    """
    score = np.where(dc != 0, dk - price * dc, -np.inf)
    k = np.expand_dims(np.argmax(score, axis=axis), axis)
    cand_k = np.take_along_axis(dk, k, axis).reshape(-1).astype(np.float64)
    cand_c = np.take_along_axis(dc, k, axis).reshape(-1).astype(np.float64)
    live = np.flatnonzero(cand_c != 0)
    if live.size == 0:
        return bits, 0.0, 0, price
    ck, cc = cand_k[live], cand_c[live]
    ratio = ck / cc  # >= 0: magnitude gained per added weight, or lost per removed weight
    order = np.argsort(-ratio, kind="stable")
    ck, cc, ratio = ck[order], cc[order], ratio[order]
    add = cc > 0
    # Price just below ratio[j - 1]: the additions among the first j and the removals after them are taken.
    zero = np.zeros(1)
    add_c = np.concatenate([zero, np.cumsum(np.where(add, cc, 0.0))])
    add_k = np.concatenate([zero, np.cumsum(np.where(add, ck, 0.0))])
    rem_c = np.concatenate([zero, np.cumsum(np.where(add, 0.0, cc))])
    rem_k = np.concatenate([zero, np.cumsum(np.where(add, 0.0, ck))])
    count = add_c + (rem_c[-1] - rem_c)
    gain = add_k + (rem_k[-1] - rem_k)
    miss = np.abs(count - deficit)
    j = int(np.flatnonzero(miss == miss.min())[np.argmax(gain[miss == miss.min()])])
    take = np.zeros(ratio.size, dtype=bool)
    take[:j] = add[:j]
    take[j:] = ~add[j:]
    if 0 < j < ratio.size:
        price = float(0.5 * (ratio[j - 1] + ratio[j]))
    elif j == 0:
        price = float(ratio[0]) * 2.0 + 1e-12   # still short of removals: value kept weights more
    else:
        price = float(ratio[-1]) * 0.5          # still short of additions: value them less
    flat = np.zeros(cand_c.size, dtype=bool)
    flat[live[order[take]]] = True
    chosen = flat.reshape(np.squeeze(k, axis).shape)
    new = bits.copy()
    where = np.expand_dims(chosen, axis) & (np.arange(bits.shape[axis]).reshape(
        (-1, 1) if axis == -2 else (1, -1)) == k)
    new ^= where
    return new, float(gain[j]), int(round(count[j])), price


def _rank(count: int, kept: float, target: int, band: int) -> tuple[int, float]:
    """Sort key of a mask: distance outside the sparsity band first, then more kept magnitude."""
    return max(0, abs(count - target) - band), -kept


def _exact(weights: np.ndarray, p: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, int, float]:
    mask = tiles_to_mask(p, z, weights.shape)
    return mask, int(np.count_nonzero(mask)), float(np.abs(weights[mask]).astype(np.float64).sum())


def _refine(a: np.ndarray, p: np.ndarray, z: np.ndarray, count: int, kept: float, target: int, band: int,
            price: float, rounds: int, valid_rows: np.ndarray, valid_cols: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Alternating greedy flips of P then Z; the best mask within the band (or nearest the target) wins."""

    def key(c: int, k: float) -> tuple[int, float]:
        return _rank(c, k, target, band)

    best = (key(count, kept), p, z)
    history = []
    for _ in range(rounds):
        before = kept
        for side in ("p", "z"):
            dk, dc = _gains(a, p, z, valid_rows, valid_cols, side)
            if side == "p":
                p, gained, moved, price = _flip_step(p, dk, dc, -1, target - count, price)
            else:
                z, gained, moved, price = _flip_step(z, dk, dc, -2, target - count, price)
            kept += gained
            count += moved
            if key(count, kept) < best[0]:
                best = (key(count, kept), p, z)
        history.append({"kept": kept, "count": count, "price": price})
        if kept - before <= _CONVERGED * kept and abs(count - target) <= band:
            break
    return best[1], best[2], history


def default_restarts(n: int) -> int:
    """Independent starts for an n-weight matrix: up to 8 while their total stays within 2^20 weights."""
    return int(min(8, max(1, (1 << 20) // n)))


def factorize(weights: np.ndarray, sparsity: float, m_t: int, n_t: int, r: int, *, seed: int = 0,
              nmf_iters: int = NMF_ITERS, rounds: int = REFINE_ROUNDS, restarts: int | None = None,
              timings: dict[str, float] | None = None, info: dict | None = None) -> BimMask:
    """Binary P, Z per m_t x n_t tile at rank r: a mask of `sparsity` (+-0.5 %) keeping the most |W| (module doc).

    `restarts` independent starts (NMF seeds [seed, i]; default `default_restarts`) keep the best mask: a layer
    of few tiles depends on its starting point far more than a large matrix, whose tiles average it out.
    `rounds` = 0 skips refinement. `timings` receives seconds per step, `info` the chosen start's figures.
    """
    w = _check_weights(weights)
    s = _check_sparsity(sparsity)
    params = BimParams(m_t, n_t, r)
    restarts = default_restarts(w.size) if restarts is None else restarts
    for name, value, low in (("seed", seed, 0), ("nmf_iters", nmf_iters, 0), ("rounds", rounds, 0),
                             ("restarts", restarts, 1)):
        check_int(name, value, low)
    clock = {} if timings is None else timings
    for step in ("nmf", "binarize", "refine"):
        clock[step] = 0.0
    rows, cols = w.shape
    t_r, t_c = tile_grid(w.shape, m_t, n_t)
    target = target_count(w.size, s)
    # |count - target| <= band keeps |count - (1 - s) n| <= tolerance * n despite the rounding of target.
    band = max(0, int(np.floor(SPARSITY_TOLERANCE * w.size - 0.5)))
    a = to_tiles(np.abs(w).astype(np.float32), m_t, n_t)                                   # (T_r, T_c, m, n)
    valid_rows = (np.arange(t_r * m_t) < rows).reshape(t_r, 1, m_t, 1)
    valid_cols = (np.arange(t_c * n_t) < cols).reshape(1, t_c, 1, n_t)
    # The starting price of a kept weight in the refinement: the magnitude at the cut of unstructured pruning.
    price = float(np.partition(np.abs(w).reshape(-1), w.size - target)[w.size - target]) if target else 0.0

    best: tuple | None = None
    for start in range(restarts):
        rng = np.random.default_rng([seed, start])
        started = time.perf_counter()
        u, h = _nmf(a.reshape(-1, m_t, n_t), r, nmf_iters, rng)
        clock["nmf"] += time.perf_counter() - started

        started = time.perf_counter()
        p, z = _binarize(u.reshape(t_r, t_c, m_t, r), h.reshape(t_r, t_c, r, n_t), target, valid_rows, valid_cols,
                         rng)
        _, count, kept = _exact(w, p, z)
        clock["binarize"] += time.perf_counter() - started
        stats = {"start": start, "binarized": {"kept": kept, "count": count}, "rounds": []}

        started = time.perf_counter()
        if rounds:
            p2, z2, stats["rounds"] = _refine(a, p, z, count, kept, target, band, price, rounds, valid_rows,
                                              valid_cols)
            # The refinement tracks its gains in float32; judged exactly, it must beat the binarization to count.
            _, count2, kept2 = _exact(w, p2, z2)
            if _rank(count2, kept2, target, band) <= _rank(count, kept, target, band):
                p, z, count, kept = p2, z2, count2, kept2
        clock["refine"] += time.perf_counter() - started
        if best is None or _rank(count, kept, target, band) < best[0]:
            best = (_rank(count, kept, target, band), p, z, {**stats, "kept": kept, "count": count})
    assert best is not None
    if info is not None:
        info.update({"target": target, "band": band, "restarts": restarts, **best[3]})
    return BimMask(shape=(rows, cols), params=params, p=best[1], z=best[2])
