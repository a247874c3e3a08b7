"""The FC engine's fixed format: the parameters baked into the hardware that every compressed FC layer must share.

An FC layer on the accelerator is a BIM keep mask (`hw.spec.bim`, tiles of m_t x n_t with n_t = n_out, rank
r) and binary-coded weights whose bit-planes are XOR-encoded (`hw.spec.xor`, the fixed matrix M =
`xor_matrix(n_out, n_in, seed)`), both of the tile-major matrix of `hw.spec.fc.FcLayout`, and the integer
requantization of `hw.spec.fc.fc_fixed` with unsigned a_bits-wide scales `a`. M's XOR trees, the adder
tree (n_out wide), the P buffer (m_t x r bits), the patch lanes and the `a` multipliers are sized at
elaboration, so a model file is only good for the format it was compressed for: `FcFormat` is that format,
`DEFAULT_FC_FORMAT` the one sqgen builds, `FC16_FORMAT` the narrower one of the iCEBreaker's FC-only build, and
`fields`/`from_fields` its record in a model file. NumPy only.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields

import numpy as np

from hw.spec.bim import BimParams
from hw.spec.fc import FcLayout
from hw.spec.params import check_int
from hw.spec.xor import XorParams, xor_matrix

#: The adder tree sums n_out signed activations per cycle; wider trees cost more than they save (see DEFAULT).
MAX_N_OUT = 64
#: The largest requantization shift the compressor picks for `a` (`host.compress.model.requantize`): at most 31,
#: bias_q = round(bias / s_y 2^shift) stays a signed 32-bit value for |bias| < s_y. It is no limit of the format:
#: model files, the golden model and the FC engine take shifts up to `hw.spec.fc.MAX_SHIFT`.
MAX_SHIFT = 31


@dataclass(frozen=True)
class FcFormat:
    """The FC engine's fixed parameters (validated on construction).

    n_in, n_out, seed: the XOR decoder's matrix M (n_out x n_in, drawn by `xor_matrix`); 1 <= n_in < n_out <= 64.
    max_patches: patch positions per decoder beat (>= 1). m_t, r: BIM tile rows and rank (the tile's columns are
    n_out). a_bits: width of the unsigned per-row, per-plane scale `a` (2..31). max_planes: most bit-planes q a
    layer may have (1..8).
    """

    n_in: int
    n_out: int
    seed: int
    max_patches: int
    m_t: int
    r: int
    a_bits: int
    max_planes: int

    def __post_init__(self) -> None:
        check_int("n_out", self.n_out, 2, MAX_N_OUT)
        check_int("n_in", self.n_in, 1, self.n_out - 1)
        check_int("seed", self.seed, 0, 2**63 - 1)
        check_int("max_patches", self.max_patches, 1, self.n_out)
        check_int("m_t", self.m_t, 1, 4096)
        check_int("r", self.r, 1, 64)
        check_int("a_bits", self.a_bits, 2, 31)
        check_int("max_planes", self.max_planes, 1, 8)

    @property
    def n_t(self) -> int:
        """BIM tile columns: one mask row covers one XOR slice."""
        return self.n_out

    @property
    def layout(self) -> FcLayout:
        """The tile-major layout of `hw.spec.fc`."""
        return FcLayout(self.m_t, self.n_t)

    @property
    def bim_params(self) -> BimParams:
        """BIM tile parameters (m_t, n_t = n_out, r)."""
        return BimParams(self.m_t, self.n_t, self.r)

    def xor_params(self, bits: int) -> XorParams:
        """XOR parameters of a layer with `bits` planes (1..max_planes)."""
        check_int("bits", bits, 1, self.max_planes)
        return XorParams(self.n_in, self.n_out, bits, self.max_patches, self.seed)

    def matrix(self) -> np.ndarray:
        """M: the (n_out, n_in) uint8 0/1 XOR matrix the decoder hard-wires (a fresh copy)."""
        return _matrix(self.n_out, self.n_in, self.seed).copy()

    @property
    def a_max(self) -> int:
        """Largest `a`: 2^a_bits - 1."""
        return (1 << self.a_bits) - 1

    def fields(self) -> dict[str, np.ndarray]:
        """The format as int64 scalars named like its attributes (a model file's `fc_format/...` fields)."""
        return {name: np.int64(value) for name, value in asdict(self).items()}

    @classmethod
    def from_fields(cls, raw: dict[str, np.ndarray]) -> FcFormat:
        """Inverse of `fields`; ValueError "field 'NAME': ..." for a missing, non-integer or out-of-range field."""
        values = {}
        for name in FIELD_NAMES:
            if name not in raw:
                raise ValueError(f"missing field '{name}'")
            value = np.asarray(raw[name])
            if value.shape != () or value.dtype.kind not in "iu":
                raise ValueError(f"field '{name}': expected an integer scalar, got {value.dtype} {value.shape}")
            values[name] = int(value)
        try:
            return cls(**values)
        except ValueError as error:
            raise ValueError(f"field '{str(error).split(' ', 1)[0]}': {error}") from None

    def differences(self, other: FcFormat) -> list[str]:
        """'name: self value != other value' for every parameter that differs (empty when the formats agree)."""
        return [f"{name}: {getattr(self, name)} != {getattr(other, name)}" for name in FIELD_NAMES
                if getattr(self, name) != getattr(other, name)]


FIELD_NAMES = tuple(f.name for f in fields(FcFormat))


@functools.lru_cache(maxsize=8)
def _matrix(n_out: int, n_in: int, seed: int) -> np.ndarray:
    # Drawing M checks GF(2) rank; the cache makes repeated loads of model files cheap.
    return xor_matrix(n_out, n_in, seed)


#: The format sqgen's FC engine is built for (chosen on LeNet-5 at 1 bit and 90 % sparsity, docs/formats.md).
DEFAULT_FC_FORMAT = FcFormat(n_in=6, n_out=64, seed=0, max_patches=4, m_t=32, r=2, a_bits=16, max_planes=4)

#: The FC-only iCEBreaker build's format (`hw.config.AcceleratorConfig.fc_only`, `models/lenet5_fc16.npz`): 16-bit
#: slices make the engine's adder tree and activation word a quarter of the default's, one plane makes a scale beat
#: 48 bits, and n_in = 3 with 2 patch lanes keeps an XOR beat within one 16-bit SPRAM lane (14 bits). On LeNet-5's
#: fc1 at 90 % sparsity that costs 1.3 % more beats than slices (3 242 for 3 200; n_in = 4 would save 23). The model
#: file is `host.compress.model.compress_model(spectral LeNet-5, fmt=FC16_FORMAT)` with the CLI's defaults (1 bit,
#: 90 % sparsity, 20 epochs of fine-tuning, seed 0): 96.5 % golden fixed-point accuracy on the test split.
FC16_FORMAT = FcFormat(n_in=3, n_out=16, seed=0, max_patches=2, m_t=32, r=2, a_bits=16, max_planes=1)

#: The formats by the names the compressor's `--fc-format` takes: `default` for the FC engine of the ECP5 builds,
#: `fc16` for the iCEBreaker's.
FC_FORMATS = {"default": DEFAULT_FC_FORMAT, "fc16": FC16_FORMAT}
