"""Encoder of the XOR-gate weight format: binary-coding quantization, the GF(2) slice solver, choice of n_in.

The format's math (M, slice layout, decode, file) lives in `hw.spec.xor`; this module only produces it.

Solver. Per slice, the care rows of M with their target bits form the system M_care x = t over GF(2).
All slices of a batch are solved at once by elimination on bit-packed rows (uint64 words: bits 0..n_in-1
the row of M, bit n_in the target, then optional tracking bits), one pass over the n_in columns; each
column takes as pivot the first not-yet-pivot row holding it; x follows by back substitution with free
columns 0. The only Python loops are over columns and over batches of slices.

Patches. Greedy first: rows left without a pivot depend on pivot rows; those whose reduced target is 1
are inconsistent and become patches (every pivot row and every consistent dependent row is kept). Slices
left with two or more patches are then searched: with the parity checks the elimination exposes, every
choice of at most two pivot rows to flip is scored (those flips plus the dependent rows still
inconsistent) and the smallest set wins; slices still at three or more retry from a few random row
orders (other bases). Since every set of at most two flips is reachable this way, the patch count is
the minimum whenever that minimum is 0, 1 or 2; above that it is an upper bound (within about 1 % of
slices at the operating points of docs/formats.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from hw.spec.xor import (
    XorParams,
    XorWeights,
    bcq_dequantize,
    care_slices,
    decode_slices,
    planes_to_slices,
    storage_bits,
    xor_matrix,
)

# Row words per solver batch (slices x padded care rows x words): about 16 MB per array.
_BATCH_WORDS = 1 << 21
# Entries of the (slices, K, K) pair table per batch in the patch search.
_PAIR_ENTRIES = 1 << 22
_ONE = np.uint64(1)
# Weights per block of rows in the quantizer.
_BCQ_BLOCK = 1 << 20


def _words(n_bits: int) -> int:
    return -(-n_bits // 64)


def _pack_rows(m: np.ndarray) -> np.ndarray:
    """Rows of M as (words, n_out) uint64, column c at bit c % 64 of word c // 64."""
    n_out, n_in = m.shape
    cols = np.arange(n_in)
    shifted = m.astype(np.uint64) << (cols % 64).astype(np.uint64)
    return np.stack([np.bitwise_or.reduce(shifted[:, cols // 64 == w], axis=1) for w in range(_words(n_in))])


def _get_bit(rows: np.ndarray, bit: int) -> np.ndarray:
    """Bit `bit` of every row of (W, C, K) packed rows, as (C, K) bool."""
    return (rows[bit // 64] & np.uint64(1 << (bit % 64))) != 0


def _as_mask(flags: np.ndarray) -> np.ndarray:
    """bool -> uint64 all ones / all zeros, to select words with & (faster than np.where)."""
    return np.negative(flags.astype(np.int64)).view(np.uint64)


_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(a: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # NumPy >= 2.0
        return np.bitwise_count(a)
    a = np.ascontiguousarray(a, dtype=np.uint64)
    return _POP8[a.view(np.uint8)].reshape(*a.shape, 8).sum(axis=-1, dtype=np.uint8)


def _build_rows(mp: np.ndarray, rows_idx: np.ndarray, valid: np.ndarray, t: np.ndarray, n_in: int,
                track: bool) -> np.ndarray:
    """(W, C, K) packed systems, word-major so each word is one contiguous (C, K) plane: M's care rows,
    target at bit n_in, and with `track` bit n_in + 1 + k set in row k (which rows a row has absorbed)."""
    c_count, k_count = rows_idx.shape
    n_words = _words(n_in + 1 + (k_count if track else 0))
    rows = np.zeros((n_words, c_count, k_count), dtype=np.uint64)
    keep = _as_mask(valid)
    for w in range(mp.shape[0]):
        rows[w] = mp[w][rows_idx] & keep
    rows[n_in // 64] |= (t & valid).astype(np.uint64) << np.uint64(n_in % 64)
    if track:
        bit = n_in + 1 + np.arange(k_count)
        for w in np.unique(bit // 64):
            k = np.flatnonzero(bit // 64 == w)
            rows[w][:, k] |= valid[:, k].astype(np.uint64) << (bit[k] % 64).astype(np.uint64)
    return rows


def _eliminate(rows: np.ndarray, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Forward elimination over GF(2) on (W, C, K) packed rows, in place: (pivot row per column or -1, is-pivot).

    Each slice moves its pivot rows to the top (rank order) as it goes, so a column only touches the rows
    from the batch's smallest rank down, and only the words from the column's own on (a pivot row is zero
    in every earlier column). Rows end in their original order: dependent rows with all coefficients zero,
    pivot rows in echelon form (zero in every earlier pivot column and every free column).
    """
    _, c_count, k_count = rows.shape
    used = np.zeros((c_count, k_count), dtype=bool)
    pivot = np.full((c_count, n_in), -1, dtype=np.int64)
    if k_count == 0:
        return pivot, used
    ar = np.arange(c_count)
    perm = np.tile(np.arange(k_count), (c_count, 1))  # perm[c, position] = original row
    rank = np.zeros(c_count, dtype=np.int64)
    for col in range(n_in):
        r0 = int(rank.min())
        if r0 >= k_count:
            break
        sub = rows[col // 64:, :, r0:]
        position = np.arange(k_count - r0)
        hit = (sub[0] & np.uint64(1 << (col % 64))) != 0
        top = rank - r0
        candidate = hit & (position >= top[:, None])
        has = candidate.any(axis=1)
        top = np.minimum(top, k_count - r0 - 1)
        p = np.where(has, candidate.argmax(axis=1), top)
        # Swap the pivot row up to position rank (the identity where there is no pivot).
        pivot_row, other = sub[:, ar, p], sub[:, ar, top]
        sub[:, ar, top], sub[:, ar, p] = pivot_row, other
        hit[ar, p], hit[ar, top] = hit[ar, top], hit[ar, p]
        perm[ar, r0 + p], perm[ar, r0 + top] = perm[ar, r0 + top], perm[ar, r0 + p]
        select = _as_mask(hit & (position > top[:, None]) & has[:, None])
        for w in range(sub.shape[0]):
            sub[w] ^= pivot_row[w][:, None] & select
        original = perm[ar, r0 + top]
        pivot[:, col] = np.where(has, original, -1)
        used[ar, original] |= has
        rank += has
    rows[:, ar[:, None], perm] = rows.copy()
    return pivot, used


def _solve(mp: np.ndarray, rows_idx: np.ndarray, valid: np.ndarray, t: np.ndarray, n_in: int):
    """x (C, n_in) and inconsistent (C, K) rows of each system after greedy elimination."""
    c_count, k_count = rows_idx.shape
    if k_count == 0:  # no care bits in the whole batch
        return np.zeros((c_count, n_in), dtype=bool), np.zeros(rows_idx.shape, dtype=bool)
    rows = _build_rows(mp, rows_idx, valid, t, n_in, track=False)
    pivot, used = _eliminate(rows, n_in)
    reduced_t = _get_bit(rows, n_in)
    # Back substitution, last column first; free columns are 0. A pivot row's bits at columns below its own
    # are zero, so its parity with the x found so far (columns above) is all that remains.
    ar = np.arange(c_count)
    x = np.zeros((c_count, n_in), dtype=bool)
    packed = np.zeros((rows.shape[0], c_count), dtype=np.uint64)
    for col in range(n_in - 1, -1, -1):
        p = np.maximum(pivot[:, col], 0)
        parity = _popcount(rows[:, ar, p] & packed).sum(axis=0) & 1
        x[:, col] = (pivot[:, col] >= 0) & (reduced_t[ar, p] ^ (parity == 1))
        packed[col // 64] |= x[:, col].astype(np.uint64) << np.uint64(col % 64)
    return x, valid & ~used & reduced_t


def _search_patches(mp: np.ndarray, rows_idx: np.ndarray, valid: np.ndarray, t: np.ndarray,
                    n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Smallest patch set flipping at most two pivot rows: (C, K) bool rows to flip, and its size (C,).

    With tracking bits each dependent row j ends as a parity check (the care rows it combines, itself
    included) with syndrome bit s_j. Flipping targets on a set E makes the system consistent iff the XOR of
    E's columns of the check matrix equals s. A dependent row's column is its own unit vector, so flipping
    pivot rows P leaves exactly the dependent rows set in s ^ XOR(cols of P) to flip: cost |P| + popcount.
    Columns are packed as integers over the dependent rows, so slices with more than 64 of them keep the
    plain greedy set (P empty).
    """
    c_count, k_count = rows_idx.shape
    rows = _build_rows(mp, rows_idx, valid, t, n_in, track=True)
    _, used = _eliminate(rows, n_in)
    dependent = valid & ~used
    syndrome = _get_bit(rows, n_in) & dependent
    usable = dependent.sum(axis=1) <= 64
    rank = np.clip(np.cumsum(dependent, axis=1) - 1, 0, 63).astype(np.uint64)
    weight = np.where(dependent & usable[:, None], _ONE << rank, np.uint64(0))      # (C, j)
    bits = n_in + 1 + np.arange(k_count)
    track = (rows[bits // 64] >> (bits % 64).astype(np.uint64)[:, None, None]) & _ONE  # (k, C, j)
    cols = np.bitwise_or.reduce(track * weight[None], axis=2).T                        # (C, k)
    s = np.bitwise_or.reduce(np.where(syndrome, weight, np.uint64(0)), axis=1)         # (C,)
    pivot = used & usable[:, None]

    big = np.iinfo(np.int64).max // 2
    ar = np.arange(c_count)
    best = syndrome.sum(axis=1).astype(np.int64)
    first = np.full(c_count, -1)
    second = np.full(c_count, -1)
    residual = np.where(usable, s, np.uint64(0))

    one = cols ^ s[:, None]
    cost1 = np.where(pivot, _popcount(one).astype(np.int64) + 1, big)
    k1 = cost1.argmin(axis=1)
    win = cost1[ar, k1] < best
    best = np.where(win, cost1[ar, k1], best)
    first = np.where(win, k1, first)
    residual = np.where(win, one[ar, k1], residual)

    if k_count >= 2:
        upper = np.triu(np.ones((k_count, k_count), dtype=bool), 1)
        two = cols[:, :, None] ^ cols[:, None, :] ^ s[:, None, None]
        cost2 = np.where(pivot[:, :, None] & pivot[:, None, :] & upper, _popcount(two).astype(np.int64) + 2, big)
        flat = cost2.reshape(c_count, -1).argmin(axis=1)
        a, b = flat // k_count, flat % k_count
        win = cost2[ar, a, b] < best
        best = np.where(win, cost2[ar, a, b], best)
        first = np.where(win, a, first)
        second = np.where(win, b, second)
        residual = np.where(win, two[ar, a, b], residual)

    flips = dependent & (((residual[:, None] >> rank) & _ONE) == 1)
    flips[~usable] = syndrome[~usable]
    for chosen in (first, second):
        hit = chosen >= 0
        flips[np.flatnonzero(hit), chosen[hit]] = True
    return flips, best


def _solve_batch(mp, targets, care, n_in, search, restarts, rng):
    """Encode one batch of slices: (x, patch mask over n_out positions)."""
    c_count, n_out = care.shape
    k = care.sum(axis=1)
    k_count = int(k.max(initial=0))
    # Care positions of each slice first, ascending, then padding rows (valid False).
    rows_idx = np.argsort(~care, axis=1, kind="stable")[:, :k_count]
    valid = np.arange(k_count) < k[:, None]
    t = np.take_along_axis(targets, rows_idx, axis=1).astype(bool)
    x, flips = _solve(mp, rows_idx, valid, t, n_in)
    count = flips.sum(axis=1)
    improved = np.zeros(c_count, dtype=bool)
    todo = np.flatnonzero(count >= 2) if search else np.zeros(0, dtype=np.int64)
    step = max(1, _PAIR_ENTRIES // max(1, k_count * k_count))
    for attempt in range(restarts + 1):
        if attempt:  # another basis: the care rows of each slice in a random order, padding still last
            keys = np.where(valid[todo], rng.random((todo.size, k_count)), 2.0)
            perm = np.argsort(keys, axis=1)
        else:
            perm = np.broadcast_to(np.arange(k_count), (todo.size, k_count))
        for start in range(0, todo.size, step):  # batches bound the (slices, K, K) tables of the search
            sel, order = todo[start:start + step], perm[start:start + step]
            ri = np.take_along_axis(rows_idx[sel], order, axis=1)
            va = np.take_along_axis(valid[sel], order, axis=1)
            found, size = _search_patches(mp, ri, va, np.take_along_axis(t[sel], order, axis=1), n_in)
            win = size < count[sel]
            sel, found, order = sel[win], found[win], order[win]
            count[sel] = size[win]
            improved[sel] = True
            # Back to the original row order of the slice.
            flips[sel] = False
            flips[np.repeat(sel, k_count), order.reshape(-1)] = found.reshape(-1)
        todo = todo[count[todo] >= 3]
    if improved.any():
        sel = np.flatnonzero(improved)
        x[sel], left = _solve(mp, rows_idx[sel], valid[sel], t[sel] ^ flips[sel], n_in)
        assert not left.any(), "patch search returned an inconsistent patch set"
    patch = np.zeros((c_count, n_out), dtype=bool)
    ci, ki = np.nonzero(flips)
    patch[ci, rows_idx[ci, ki]] = True
    return x, patch


def encode_slices(m: np.ndarray, targets: np.ndarray, care: np.ndarray, *, search: bool = True,
                  restarts: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encode (S, n_out) target bits on `care` positions: x (S, n_in) uint8, patch_counts (S,), positions.

    decode_slices(m, *result)[care] == targets[care]. search=False keeps the greedy patches; `restarts`
    random row orders are tried for slices the search leaves at 3+ patches (module docstring).
    """
    m = np.asarray(m)
    if m.ndim != 2 or m.shape[0] <= m.shape[1] or m.shape[1] < 1 or ((m != 0) & (m != 1)).any():
        raise ValueError(f"m must be an (n_out, n_in) 0/1 matrix with n_out > n_in >= 1, got shape {m.shape}")
    n_out, n_in = m.shape
    targets = np.asarray(targets)
    care = np.asarray(care)
    if targets.ndim != 2 or targets.shape[1] != n_out or ((targets != 0) & (targets != 1)).any():
        raise ValueError(f"targets must be an (S, n_out={n_out}) 0/1 array, got shape {targets.shape}")
    if care.shape != targets.shape or care.dtype != bool:
        raise ValueError(f"care must be a bool array of shape {targets.shape}, got {care.dtype} {care.shape}")
    if restarts < 0:
        raise ValueError(f"restarts must be >= 0, got {restarts}")
    s_count = targets.shape[0]
    targets = targets.astype(np.uint8)
    mp = _pack_rows(m)
    rng = np.random.default_rng(0)  # restarts are random but the encoding is deterministic

    # Sorting slices by care count keeps the padding to the batch's largest count small.
    k = care.sum(axis=1)
    order = np.argsort(k, kind="stable")
    k_sorted = k[order]
    x = np.zeros((s_count, n_in), dtype=np.uint8)
    patch = np.zeros((s_count, n_out), dtype=bool)
    n_words = _words(n_in + 1)
    start = 0
    while start < s_count:
        guess = max(1, _BATCH_WORDS // (n_words * max(1, int(k_sorted[start]))))
        bound = int(k_sorted[min(start + guess, s_count) - 1])
        stop = min(s_count, start + max(1, _BATCH_WORDS // (n_words * max(1, bound))))
        sel = order[start:stop]
        x[sel], patch[sel] = _solve_batch(mp, targets[sel], care[sel], n_in, search, restarts, rng)
        start = stop
    counts = patch.sum(axis=1).astype(np.int64)
    positions = np.nonzero(patch)[1].astype(np.int64)  # row-major: slice order, ascending within a slice
    return x, counts, positions


# --- binary-coding quantization ----------------------------------------------------------------------------


def _bcq_error(w: np.ndarray, mask: np.ndarray, alpha: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """Per-row squared error on kept weights, of the float32 alpha actually stored."""
    approx = bcq_dequantize(alpha.astype(np.float32), planes, mask)
    diff = np.where(mask, w.astype(np.float64) - approx, 0.0)
    return np.einsum("rc,rc->r", diff, diff)


def _greedy(w: np.ndarray, mask: np.ndarray, bits: int, kept: np.ndarray):
    residual = np.where(mask, w, 0.0)
    alpha = np.zeros((w.shape[0], bits))
    planes = np.zeros((bits, *w.shape), dtype=np.uint8)
    for i in range(bits):
        plane = residual >= 0  # 0 counts as +1
        alpha[:, i] = np.abs(residual).sum(axis=1) / np.maximum(kept, 1)
        residual -= np.where(mask, alpha[:, i, None] * np.where(plane, 1.0, -1.0), 0.0)
        planes[i] = plane
    return alpha, planes


def _fit_alpha(w: np.ndarray, mask: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """Least-squares alpha per row for fixed signs on kept weights (min-norm where singular)."""
    q = planes.shape[0]
    signs = [np.where(mask, planes[i].astype(np.float64) * 2 - 1, 0.0) for i in range(q)]
    gram = np.empty((w.shape[0], q, q))
    rhs = np.empty((w.shape[0], q))
    for i in range(q):
        rhs[:, i] = np.einsum("rc,rc->r", signs[i], w)
        for j in range(i, q):
            gram[:, i, j] = gram[:, j, i] = np.einsum("rc,rc->r", signs[i], signs[j])
    return (np.linalg.pinv(gram) @ rhs[:, :, None])[:, :, 0]


def _fit_signs(w: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Best sign code per weight for fixed alpha: the nearest of the row's 2^q levels."""
    rows, q = alpha.shape
    codes = np.arange(1 << q)
    code_signs = ((codes[:, None] >> np.arange(q)) & 1) * 2.0 - 1.0           # (2^q, q)
    levels = alpha @ code_signs.T                                              # (rows, 2^q)
    order = np.argsort(levels, axis=1, kind="stable")
    sorted_levels = np.take_along_axis(levels, order, axis=1)
    mids = (sorted_levels[:, 1:] + sorted_levels[:, :-1]) / 2
    index = np.zeros(w.shape, dtype=np.int64)
    for t in range(mids.shape[1]):
        index += w > mids[:, t, None]
    code = np.take_along_axis(order, index, axis=1)
    return ((code[None] >> np.arange(q)[:, None, None]) & 1).astype(np.uint8)


def _bcq_rows(w: np.ndarray, mask: np.ndarray, bits: int, als_iters: int) -> tuple[np.ndarray, np.ndarray]:
    kept = mask.sum(axis=1)
    alpha, planes = _greedy(w, mask, bits, kept)
    alpha = alpha.astype(np.float32).astype(np.float64)
    error = _bcq_error(w, mask, alpha, planes)
    for _ in range(als_iters if bits > 1 else 0):  # for q = 1 greedy is already the least-squares fit
        new_alpha = _fit_alpha(w, mask, planes)
        new_planes = _fit_signs(w, new_alpha)
        # Keep alpha >= 0: (alpha_i, b_i) and (-alpha_i, -b_i) give the same weights.
        negative = new_alpha < 0
        new_alpha = np.abs(new_alpha).astype(np.float32).astype(np.float64)
        new_planes ^= negative.T[:, :, None].astype(np.uint8)
        new_error = _bcq_error(w, mask, new_alpha, new_planes)
        better = new_error <= error
        alpha[better], planes[:, better] = new_alpha[better], new_planes[:, better]
        if np.allclose(new_error[better], error[better], rtol=1e-9, atol=0):
            break
        error = np.where(better, new_error, error)
    planes[:, ~mask] = 1
    return alpha.astype(np.float32), planes


def bcq_quantize(w: np.ndarray, mask: np.ndarray, bits: int, *,
                 als_iters: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Binary-coding quantization on kept weights: alpha (rows, bits) float32 >= 0, planes (bits, rows, cols).

    Greedy init (plane i = sign of the residual, alpha_i = its mean magnitude), then up to `als_iters`
    rounds of alternating least squares (alpha given signs, signs given alpha); a row keeps a round only if
    its error does not grow, so the result is never worse than greedy. Pruned positions get plane bit 1.
    """
    w = np.asarray(w, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if w.ndim != 2 or mask.shape != w.shape:
        raise ValueError(f"w and mask must be 2-D of one shape, got {w.shape} and {mask.shape}")
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    rows, cols = w.shape
    alpha = np.empty((rows, bits), dtype=np.float32)
    planes = np.empty((bits, rows, cols), dtype=np.uint8)
    block = max(1, _BCQ_BLOCK // max(1, cols))
    for r in range(0, rows, block):  # rows are independent; blocks bound the float64 temporaries
        alpha[r:r + block], planes[:, r:r + block] = _bcq_rows(w[r:r + block], mask[r:r + block], bits, als_iters)
    return alpha, planes


# --- choosing n_in and the whole matrix ------------------------------------------------------------------


def slice_cost(n_in: int, n_out: int, n_slices: int, n_patches: int) -> int:
    """Stored bits for n_slices slices carrying n_patches patches in all."""
    return storage_bits(n_in, n_out, n_slices, n_patches)["total"]


@dataclass(frozen=True)
class NInChoice:
    n_in: int
    bits_per_slice: dict[int, float]  # candidate n_in -> estimated stored bits per slice on the sample


def choose_n_in(targets: np.ndarray, care: np.ndarray, seed: int, *, sample: int = 8192,
                rng: np.random.Generator | None = None) -> NInChoice:
    """The n_in minimising estimated stored bits, from encoding one random sample of slices per candidate.

    Stored bits fall with n_in while x is cheaper than the patches it saves, then rise; the minimum sits
    near the mean care count per slice. So: start at mean + 0.3 sd and walk each way while the cost keeps
    falling, going two steps past the last improvement to ride out sampling noise.
    """
    n_out = care.shape[1]
    rng = np.random.default_rng(seed) if rng is None else rng
    pick = rng.choice(care.shape[0], size=min(sample, care.shape[0]), replace=False)
    t, c = targets[pick], care[pick]
    p = float(c.mean()) if c.size else 0.0
    costs: dict[int, float] = {}

    def cost(n_in: int) -> float:
        if n_in not in costs:
            _, counts, _ = encode_slices(xor_matrix(n_out, n_in, seed), t, c)
            costs[n_in] = slice_cost(n_in, n_out, len(pick), int(counts.sum())) / max(1, len(pick))
        return costs[n_in]

    start = min(n_out - 1, max(1, round(p * n_out + 0.3 * math.sqrt(n_out * p * (1 - p)))))
    best = cost(start)
    for step in (1, -1):
        n_in, misses = start, 0
        while misses < 2 and 1 <= n_in + step <= n_out - 1:
            n_in += step
            if cost(n_in) < best:
                best, misses = costs[n_in], 0
            else:
                misses += 1
    return NInChoice(min(costs, key=lambda n: (costs[n], n)), dict(sorted(costs.items())))


def encode_xor(alpha: np.ndarray, planes: np.ndarray, mask: np.ndarray, *, n_out: int = 200,
               n_in: int | None = None, max_patches: int = 4, seed: int = 0, keep_mask: bool = True,
               timings: dict[str, float] | None = None) -> XorWeights:
    """Encode quantized bit-planes (bits, rows, cols) on the kept positions; n_in=None picks it. Checks itself.

    `timings`, when given, receives the seconds spent choosing n_in, encoding and checking.
    """
    planes = np.asarray(planes)
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.ndim != 2 or planes.shape[1:] != mask.shape or mask.size == 0:
        raise ValueError(f"mask must be a non-empty 2-D bool array matching planes {planes.shape[1:]}, "
                         f"got {mask.dtype} {mask.shape}")
    bits = planes.shape[0]
    XorParams(n_in if n_in is not None else 1, n_out, bits, max_patches, seed)  # fail before the long part
    clock = {} if timings is None else timings
    started = time.perf_counter()
    targets = planes_to_slices(planes, n_out)
    care = np.tile(care_slices(mask, n_out), (bits, 1))
    if n_in is None:
        n_in = choose_n_in(targets, care, seed).n_in
    clock["choose_n_in"] = time.perf_counter() - started
    started = time.perf_counter()
    params = XorParams(n_in, n_out, bits, max_patches, seed)
    m = xor_matrix(n_out, n_in, seed)
    x, counts, positions = encode_slices(m, targets, care)
    clock["encode"] = time.perf_counter() - started
    started = time.perf_counter()
    decoded = decode_slices(m, x, counts, positions)
    if (decoded[care] != targets[care]).any():
        raise AssertionError("encoder bug: a kept bit does not decode to its target")
    clock["check"] = time.perf_counter() - started
    return XorWeights(params=params, shape=mask.shape, m=m, alpha=np.asarray(alpha, dtype=np.float32), x=x,
                      patch_counts=counts, patch_positions=positions, mask=mask if keep_mask else None)


def compress_xor(weights: np.ndarray, mask: np.ndarray, *, bits: int = 1, n_out: int = 200,
                 n_in: int | None = None, max_patches: int = 4, seed: int = 0, als_iters: int = 10,
                 keep_mask: bool = True, timings: dict[str, float] | None = None) -> XorWeights:
    """`bcq_quantize` then `encode_xor`: a pruned float matrix and its bool mask to the XOR format."""
    weights = np.asarray(weights)
    mask = np.asarray(mask)
    if weights.ndim != 2 or weights.shape != mask.shape or weights.size == 0:
        raise ValueError(f"weights and mask must be non-empty 2-D arrays of one shape, got {weights.shape} "
                         f"and {mask.shape}")
    if mask.dtype != bool:
        raise ValueError(f"mask must be bool, got {mask.dtype}")
    XorParams(n_in if n_in is not None else 1, n_out, bits, max_patches, seed)  # fail before the long part
    started = time.perf_counter()
    alpha, planes = bcq_quantize(weights, mask, bits, als_iters=als_iters)
    if timings is not None:
        timings["quantize"] = time.perf_counter() - started
    return encode_xor(alpha, planes, mask, n_out=n_out, n_in=n_in, max_patches=max_patches, seed=seed,
                      keep_mask=keep_mask, timings=timings)
