"""SPEC2's overlap-and-add geometry and the bins of the rfft2 half: which a sparse kernel stores, how a half
becomes the full Hermitian spectrum, and the spectral weights of spatial kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hw.spec.params import check_int, to_int

PADDINGS = ("same", "valid")
# Largest FFT size: linear indices must fit the file's uint16 field.
MAX_N = 256
#: The FFT size sqgen builds, and the default of every parameter class that takes one.
DEFAULT_N = 8


def check_fft_size(n: object, high: int = MAX_N) -> int:
    """`n` as an int; ValueError unless it is a power of two in 4..high (`MAX_N`, or a block's own limit)."""
    n = to_int("n", n)
    if not 4 <= n <= high or n & (n - 1):
        raise ValueError(f"n must be a power of two in 4..{high}, got {n}")
    return n


def half_cols(n: int) -> int:
    """Columns of the rfft2 half: n/2 + 1."""
    return n // 2 + 1


def bins(n: int) -> int:
    """Bins of the rfft2 half: n (n/2 + 1)."""
    return n * half_cols(n)


def _log2(n: int) -> int:
    return n.bit_length() - 1


@dataclass(frozen=True)
class OaaParams:
    """Overlap-and-add geometry: FFT size n (power of two, 4..256), kernel size k, tile size l, padding.

    n >= l + k - 1 so that an unpruned kernel's tile convolution does not wrap around.
    """

    n: int = DEFAULT_N
    k: int = 3
    l: int = 6  # noqa: E741 (the paper's name)
    padding: str = "same"

    def __post_init__(self) -> None:
        check_fft_size(self.n)
        check_int("k", self.k, 1)
        check_int("l", self.l, 1)
        if self.n < self.l + self.k - 1:
            raise ValueError(f"n must be >= l + k - 1 = {self.l + self.k - 1}, got {self.n}")
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {self.padding!r}")

    @property
    def half_cols(self) -> int:
        return half_cols(self.n)

    @property
    def bins(self) -> int:
        """Bins of the rfft2 half: n (n/2 + 1)."""
        return bins(self.n)

    @property
    def crop(self) -> int:
        """Canvas row/column of output (0, 0)."""
        return self.k - 1 - (self.k - 1) // 2 if self.padding == "same" else self.k - 1

    def output_shape(self, h: int, w: int) -> tuple[int, int]:
        """(H_out, W_out) for an H x W input map."""
        if self.padding == "same":
            return h, w
        if h < self.k or w < self.k:
            raise ValueError(f"'valid' padding needs a map of at least {self.k} x {self.k}, got {h} x {w}")
        return h - self.k + 1, w - self.k + 1

    def tiles(self, h: int, w: int) -> tuple[int, int]:
        """Tile rows and columns covering an H x W map."""
        return -(-h // self.l), -(-w // self.l)


def canonical_mask(n: int) -> np.ndarray:
    """(n, n/2 + 1) bool: the bins a sparse kernel may store (columns 0 and n/2 only rows 0..n/2)."""
    mask = np.ones((n, n // 2 + 1), dtype=bool)
    mask[n // 2 + 1:, [0, n // 2]] = False
    return mask


def self_conjugate_mask(n: int) -> np.ndarray:
    """(n, n/2 + 1) bool: the four bins equal to their own conjugate partner (values there must be real)."""
    mask = np.zeros((n, n // 2 + 1), dtype=bool)
    mask[np.ix_([0, n // 2], [0, n // 2])] = True
    return mask


def complete_half(half: np.ndarray) -> np.ndarray:
    """Copy of a (..., n, n/2 + 1) half with the non-canonical bins of columns 0 and n/2 set to their partners'
    conjugates, so that it is the rfft2 half of a real array (given real self-conjugate bins)."""
    out = np.array(half, dtype=np.complex128)
    n = out.shape[-2]
    rows = np.arange(n // 2 + 1, n)
    for col in (0, n // 2):
        out[..., rows, col] = np.conj(out[..., n - rows, col])
    return out


def half_to_full(half: np.ndarray) -> np.ndarray:
    """(..., n, n/2 + 1) canonical half -> the full Hermitian (..., n, n) spectrum."""
    h = complete_half(half)
    n = h.shape[-2]
    full = np.empty((*h.shape[:-1], n), dtype=np.complex128)
    full[..., : n // 2 + 1] = h
    neg = (-np.arange(n)) % n
    full[..., n // 2 + 1:] = np.conj(h[..., neg, :][..., n // 2 - 1:0:-1])
    return full


def kernel_spectrum(w: np.ndarray, n: int) -> np.ndarray:
    """(C_out, C_in, K, K) spatial kernels -> (C_out, C_in, n, n/2 + 1) complex spectral weights of the
    cross-correlation: rfft2 of each kernel flipped in both axes, zero-padded to n x n."""
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise ValueError(f"kernels must have shape (C_out, C_in, K, K), got {w.shape}")
    if w.shape[2] > n:
        raise ValueError(f"kernel size {w.shape[2]} exceeds n={n}")
    return np.fft.rfft2(w[..., ::-1, ::-1], s=(n, n))
