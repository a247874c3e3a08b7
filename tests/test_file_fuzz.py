"""Malformed files of every format (docs/formats.md, "Malformed files"): whatever is wrong with a field or with the
archive, the format's loader answers with its own one-line error naming the field or the file, never with another
exception, and never allocates what the file only declares.

Each kind starts from a small valid file (the two LeNet-5 kinds from the committed models, whose shapes the format
fixes; a compressed network of every layer kind built in `hw.spec.network`'s own terms). Every field is mutated
(wrong dtype, wrong shape, extreme values, missing, extra, swapped with another field), and each archive is damaged
at the zip and .npy level (truncation, flipped bytes, a bad CRC, sizes larger than the file, forged .npy headers,
duplicate members, a compression bomb, encryption, other compression methods, a member that is no array). A mutation
that happens to give a valid file may load: the only outcomes allowed are "loaded" and the format's own error.
"""

from __future__ import annotations

import io
import math
import re
import resource
import struct
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host.compress.model import compress_fc, factor_mask
from host.compress.spectral import calibrate, compress_spatial
from host.lenet5 import compressed, spectral
from hw.spec import network
from hw.spec.bim import BimFormatError, BimMask, BimParams, bim_fields, decode, tile_grid
from hw.spec.fc_format import DEFAULT_FC_FORMAT
from hw.spec.pool import max_pool
from hw.spec.spectral.file import layer_fields, load_spectral, save_spectral
from hw.spec.spectral.geometry import OaaParams, bins, canonical_mask, self_conjugate_mask
from hw.spec.spectral.layer import Schedule, SpectralFormatError, SpectralLayer
from hw.spec.xor import XorFormatError, XorParams, XorWeights, load_xor, num_slices, xor_fields, xor_matrix

MODELS = Path(__file__).resolve().parents[1] / "models"

# --- the valid files -------------------------------------------------------------------------------------------


def _xor() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    rows, cols, bits, n_in, n_out = 5, 41, 2, 5, 12
    s = bits * num_slices(rows * cols, n_out)
    counts = rng.integers(0, 3, size=s).astype(np.int64)
    positions = np.concatenate([np.sort(rng.choice(n_out, size=c, replace=False)) for c in counts]).astype(np.int64)
    return xor_fields(XorWeights(params=XorParams(n_in, n_out, bits, 2, 3), shape=(rows, cols),
                                 m=xor_matrix(n_out, n_in, 3), alpha=rng.random((rows, bits), dtype=np.float32),
                                 x=rng.integers(0, 2, (s, n_in), dtype=np.uint8), patch_counts=counts,
                                 patch_positions=positions, mask=rng.random((rows, cols)) < 0.3))


def _spectral() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    layer = compress_spatial(rng.standard_normal((4, 3, 3, 3)), OaaParams(8, 3, 5, "valid"), 0.7, p=3, b=4,
                             bias=rng.standard_normal(4), relu=True)
    return layer_fields(calibrate(layer, rng.integers(-128, 128, (2, 3, 9, 9)), 0.02))


def _bim() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    t_r, t_c = tile_grid((11, 20), 4, 8)
    return bim_fields(BimMask(shape=(11, 20), params=BimParams(4, 8, 3), p=rng.random((t_r, t_c, 4, 3)) < 0.5,
                              z=rng.random((t_r, t_c, 3, 8)) < 0.5))


def _network() -> dict[str, np.ndarray]:
    """conv (3 x 3 "same", 1 -> 2, ReLU), pool, flatten, FC 18 -> 4, on 6 x 6 inputs at scale 1/64."""
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (8, 1, 6, 6))
    conv = compress_spatial(rng.standard_normal((2, 1, 3, 3)), OaaParams(8, 3, 6, "same"), 0.5, p=2, b=4,
                            bias=rng.standard_normal(2), relu=True)
    conv = calibrate(conv, x, 1 / 64)
    features = max_pool(network.ConvLayer("conv", conv).forward(x)).reshape(len(x), -1)
    weight = rng.standard_normal((4, 18))
    fc = compress_fc("fc", weight, rng.standard_normal(4), factor_mask(weight, 0.25, DEFAULT_FC_FORMAT), features,
                     conv.quant.out_scale, bits=2, relu=False)
    model = network.CompressedNetwork((1, 6, 6), 1 / 64, (network.ConvLayer("conv", conv), network.PoolLayer("pool"),
                                                          network.FlattenLayer("flatten"), fc),
                                      metadata={"name": "tiny"})
    return network.model_fields(model)


def _committed(name: str) -> Callable[[], dict[str, np.ndarray]]:
    def fields() -> dict[str, np.ndarray]:
        with np.load(MODELS / name, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    return fields


def _load_xor(path: Path) -> object:
    weights = load_xor(path)
    weights.planes()  # decoding what was loaded must not allocate what the file only declares either
    return weights


@dataclass(frozen=True)
class Kind:
    """A file format: its error type, its loader, and the fields of a valid file."""

    error: type[ValueError]
    load: Callable[[Path], object]
    build: Callable[[], dict[str, np.ndarray]]


KINDS = {
    "xor": Kind(XorFormatError, _load_xor, _xor),
    "spectral": Kind(SpectralFormatError, load_spectral, _spectral),
    "bim": Kind(BimFormatError, decode, _bim),
    "lenet5_spec2": Kind(SpectralFormatError, spectral.load, _committed("lenet5_spec2.npz")),
    "lenet5_full": Kind(compressed.ModelFormatError, compressed.load_model, _committed("lenet5_full.npz")),
    "network": Kind(network.ModelFormatError, network.load_model, _network),
}
_VALID: dict[str, dict[str, np.ndarray]] = {}


def valid_fields(kind: str) -> dict[str, np.ndarray]:
    """A fresh copy of the valid file's arrays."""
    if kind not in _VALID:
        _VALID[kind] = KINDS[kind].build()
    return {name: np.array(value) for name, value in _VALID[kind].items()}


# --- field mutations -------------------------------------------------------------------------------------------

FIELD_MUTATIONS = ("dtype", "shape", "extreme", "missing", "extra", "swap")
DTYPES = ("int64", "int32", "uint8", "uint16", "uint64", "int16", "float32", "float64", "bool", "complex64", "<U8",
          "|S4", ">i8")
SHAPES = ("append", "drop", "newaxis", "scalar", "empty", "double")
INT_EXTREMES = (-2**63, 2**63 - 1, -1, 0, 1, 2**31 - 1, 2**31, -2**31 - 1, 2**32, 255, 65536, 2**64 - 1)
FLOAT_EXTREMES = (np.nan, np.inf, -np.inf, 0.0, -0.0, float(np.finfo(np.float32).max), 1e-45, -1.0, 1e30)
# JSON nested past Python's stack and a number past int's digit limit first: the sweep tries the first two.
STR_EXTREMES = ("[" * 100_000 + "]" * 100_000, '{"a": ' + "1" * 5000 + "}", "", "same", "valid", "sqgen-lenet5-spec2",
                "sqgen-lenet5-full", "x" * 300, "{}", "[1]", "null", '{"a": NaN}', "\u00ff", "\U0010ffff")


def _cast(value: np.ndarray, dtype: str) -> np.ndarray:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            return value.astype(dtype)
        except (TypeError, ValueError, OverflowError):
            return np.zeros(value.shape, dtype=dtype)


def _reshaped(value: np.ndarray, how: str) -> np.ndarray:
    flat = value.reshape(-1)
    first = flat[:1] if flat.size else np.zeros(1, dtype=value.dtype)
    return {"append": lambda: np.concatenate([flat, first]), "drop": lambda: flat[:-1],
            "newaxis": lambda: value[None], "scalar": lambda: first.reshape(()), "empty": lambda: flat[:0],
            "double": lambda: np.concatenate([flat, flat])}[how]()


def extremes(value: np.ndarray) -> tuple:
    """The extreme values tried on a field of `value`'s dtype."""
    kind = value.dtype.kind
    return INT_EXTREMES if kind in "iub" else FLOAT_EXTREMES if kind in "fc" else STR_EXTREMES


def _with_extreme(value: np.ndarray, extreme: object, index: int | None) -> np.ndarray:
    """`value` with one entry (`index`) or every entry (None) set to `extreme`, in a dtype that holds it."""
    kind = value.dtype.kind
    if kind in "iub":
        dtype = value.dtype if kind != "b" else np.dtype(np.int64)
        info = np.iinfo(dtype)
        if not info.min <= extreme <= info.max:
            dtype = np.dtype(np.uint64) if extreme > np.iinfo(np.int64).max else np.dtype(np.int64)
    elif kind in "fc":
        dtype = value.dtype
    else:
        dtype = np.dtype(f"<U{max(1, len(str(extreme)), value.dtype.itemsize // 4)}")
    out = value.astype(dtype) if value.size else np.zeros(1, dtype=dtype)
    with np.errstate(all="ignore"):
        if index is None or out.ndim == 0:
            out[...] = extreme
        else:
            out.reshape(-1)[index % out.size] = extreme
    return out


def mutate_field(fields: dict[str, np.ndarray], name: str, how: str, arg: object = None,
                 index: int | None = None) -> dict[str, np.ndarray]:
    """`fields` with field `name` mutated `how` (one of FIELD_MUTATIONS); `arg` picks the variant."""
    fields = dict(fields)
    value = fields[name]
    if how == "dtype":
        target = str(arg) if arg is not None and np.dtype(str(arg)) != value.dtype else \
            ("float64" if value.dtype.kind != "f" else "int64")
        fields[name] = _cast(value, target)
    elif how == "shape":
        fields[name] = _reshaped(value, str(arg or "append"))
    elif how == "extreme":
        fields[name] = _with_extreme(value, extremes(value)[0] if arg is None else arg, index)
    elif how == "missing":
        del fields[name]
    elif how == "extra":
        prefix = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
        fields[f"{prefix}{arg or 'extra'}"] = value
    elif how == "swap":
        others = sorted(set(fields) - {name})
        fields[name] = fields[others[(index or 0) % len(others)]]
    else:
        raise AssertionError(how)
    return fields


def save(fields: dict[str, np.ndarray]) -> bytes:
    """The np.savez archive of `fields`."""
    buf = io.BytesIO()
    np.savez(buf, **fields)
    return buf.getvalue()


def npy(value: np.ndarray) -> bytes:
    """`value` as an .npy file."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=False)
    return buf.getvalue()


# --- archive damage --------------------------------------------------------------------------------------------

ZIP_MUTATIONS = ("truncate", "flip", "crc", "sizes", "header", "duplicate", "bomb", "encrypted", "method", "stranger",
                 "compressed", "empty")
HEADERS = ("shape_larger", "shape_huge", "shape_8gib", "shape_negative", "shape_float", "descr_object", "descr_struct",
           "descr_void", "descr_datetime", "descr_garbage", "descr_empty_str", "fortran", "fortran_str", "no_shape",
           "extra_key", "nested", "not_dict", "version", "magic", "header_len", "utf8", "truncated_header")


@dataclass
class Member:
    """One zip entry as written: its stored bytes and what its headers declare."""

    name: str
    data: bytes
    method: int = zipfile.ZIP_STORED
    crc: int | None = None
    size: int | None = None
    compressed_size: int | None = None
    flags: int = 0


def members(blob: bytes) -> list[Member]:
    """The (stored) members of a valid archive."""
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        return [Member(info.filename, archive.read(info)) for info in archive.infolist()]


def write_zip(entries: list[Member]) -> bytes:
    """A zip archive of `entries`, headers as each declares (defaults: the truth)."""
    out, central = bytearray(), bytearray()
    for m in entries:
        name = m.name.encode()
        crc = zlib.crc32(m.data) if m.crc is None else m.crc
        size = len(m.data) if m.size is None else m.size
        csize = len(m.data) if m.compressed_size is None else m.compressed_size
        offset = len(out)
        out += struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, m.flags, m.method, 0, 0, crc, csize, size, len(name), 0)
        out += name + m.data
        central += struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, m.flags, m.method, 0, 0, crc, csize, size,
                               len(name), 0, 0, 0, 0, 0, offset) + name
    return bytes(out + central + struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(entries), len(entries),
                                             len(central), len(out), 0))


def _npy_parts(npy: bytes) -> tuple[dict, bytes]:
    f = io.BytesIO(npy)
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    return {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran, "shape": shape}, npy[f.tell():]


def npy_header(text: str, version: tuple[int, int] = (1, 0), magic: bytes = b"\x93NUMPY") -> bytes:
    """An .npy header holding `text` (padded as numpy pads it)."""
    raw = text.encode("utf8" if version[0] >= 3 else "latin1")
    length = 4 if version[0] >= 2 else 2
    pad = -(len(magic) + 2 + length + len(raw) + 1) % 64
    raw += b" " * pad + b"\n"
    return magic + bytes(version) + (struct.pack("<I", len(raw)) if length == 4 else struct.pack("<H", len(raw))) + raw


def forged_npy(npy: bytes, how: str) -> bytes:
    """A member's .npy bytes with a forged header (`how` in HEADERS) and the original data."""
    header, data = _npy_parts(npy)
    count = math.prod(header["shape"])
    d, f, s = repr(header["descr"]), repr(header["fortran_order"]), repr(header["shape"])
    text = {
        "shape_larger": f"{{'descr': {d}, 'fortran_order': {f}, 'shape': ({count + 1},), }}",
        "shape_huge": f"{{'descr': {d}, 'fortran_order': {f}, 'shape': ({2**33}, {2**33}), }}",
        "shape_8gib": f"{{'descr': '<i8', 'fortran_order': False, 'shape': ({2**30},), }}",
        "shape_negative": f"{{'descr': {d}, 'fortran_order': {f}, 'shape': (-1,), }}",
        "shape_float": f"{{'descr': {d}, 'fortran_order': {f}, 'shape': (1.5,), }}",
        "descr_object": f"{{'descr': '|O', 'fortran_order': {f}, 'shape': {s}, }}",
        "descr_struct": f"{{'descr': [('a', '<i8'), ('b', '|O')], 'fortran_order': {f}, 'shape': {s}, }}",
        "descr_void": f"{{'descr': '|V8', 'fortran_order': {f}, 'shape': {s}, }}",
        "descr_datetime": f"{{'descr': '<M8[s]', 'fortran_order': {f}, 'shape': {s}, }}",
        "descr_garbage": f"{{'descr': 'zz9', 'fortran_order': {f}, 'shape': {s}, }}",
        "descr_empty_str": f"{{'descr': '<U0', 'fortran_order': {f}, 'shape': {s}, }}",
        "fortran": f"{{'descr': {d}, 'fortran_order': True, 'shape': {s}, }}",
        "fortran_str": f"{{'descr': {d}, 'fortran_order': 'yes', 'shape': {s}, }}",
        "no_shape": f"{{'descr': {d}, 'fortran_order': {f}, }}",
        "extra_key": f"{{'descr': {d}, 'fortran_order': {f}, 'shape': {s}, 'x': 1, }}",
        "nested": "{'descr': " + "[" * 3000 + "]" * 3000 + "}",
        "not_dict": "[1, 2, 3]",
        "utf8": f"{{'descr': {d}, 'fortran_order': {f}, 'shape': {s}, }}",
    }.get(how, f"{{'descr': {d}, 'fortran_order': {f}, 'shape': {s}, }}")
    if how == "version":
        return npy_header(text, (9, 9)) + data
    if how == "magic":
        return npy_header(text, magic=b"\x93NUMPZ") + data
    if how == "header_len":
        return b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31) + text.encode() + data
    if how == "truncated_header":
        return npy_header(text)[:20]
    return npy_header(text, (3, 0) if how in ("utf8", "nested") else (1, 0)) + data


_BOMB: list[tuple[bytes, int, int]] = []


def _deflated(data: bytes) -> bytes:
    """`data` as raw deflate blocks ending on a byte boundary with no reference outside them: repeatable."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush(zlib.Z_FULL_FLUSH)


def bomb(megabytes: int = 512) -> tuple[bytes, int, int]:
    """A deflated .npy of `megabytes` MiB of zeros, about 1000 times smaller, declared honestly: (data, crc, size)."""
    if not _BOMB:
        header = npy_header(f"{{'descr': '|u1', 'fortran_order': False, 'shape': ({megabytes << 20},), }}")
        chunk = bytes(1 << 20)
        crc = zlib.crc32(header)
        for _ in range(megabytes):
            crc = zlib.crc32(chunk, crc)
        data = _deflated(header) + _deflated(chunk) * megabytes + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
        _BOMB.append((data, crc, len(header) + (megabytes << 20)))
    return _BOMB[0]


def damage(blob: bytes, how: str, pick: int, arg: int, variant: str = "") -> bytes:
    """The archive `blob` damaged `how` (one of ZIP_MUTATIONS); `pick` chooses the member or position, `arg` the
    value, `variant` a forged header (HEADERS)."""
    entries = members(blob)
    m = entries[pick % len(entries)]
    if how == "truncate":
        return blob[:pick % len(blob)]
    if how == "flip":
        out = bytearray(blob)
        for k in range(1 + arg % 8):
            out[(pick * (k + 1) * 7919) % len(out)] ^= 1 + (arg + k) % 255
        return bytes(out)
    if how == "crc":
        if arg % 2 and m.data:
            m.crc = zlib.crc32(m.data)
            data = bytearray(m.data)
            data[arg % len(data)] ^= 0x5A
            m.data = bytes(data)
        else:
            m.crc = (zlib.crc32(m.data) + 1 + arg) & 0xFFFFFFFF
    elif how == "sizes":
        big = (len(blob) + 1, 1 << 31, 0xFFFFFFFE, len(m.data) + 1)[arg % 4]
        if arg % 3 == 0:
            m.size = big
        elif arg % 3 == 1:
            m.size = m.compressed_size = big
        else:
            m.compressed_size = big
    elif how == "header":
        m.data = forged_npy(m.data, variant or HEADERS[arg % len(HEADERS)])
    elif how == "duplicate":
        entries.append(Member(m.name, entries[arg % len(entries)].data))
    elif how == "bomb":
        data, crc, size = bomb()
        entries[pick % len(entries)] = Member(m.name, data, zipfile.ZIP_DEFLATED, crc, size)
    elif how == "encrypted":
        m.flags |= 1
    elif how == "method":
        m.method = (zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA, 99)[arg % 4]
    elif how == "stranger":
        entries.append(Member(("notes.txt", "conv1/", "x.npy.bak", "version")[arg % 4], b"hello"))
    elif how == "compressed":
        with zipfile.ZipFile(out := io.BytesIO(), "w", zipfile.ZIP_DEFLATED) as archive:
            for e in entries:
                archive.writestr(e.name, e.data)
        return out.getvalue()
    elif how == "empty":
        entries = []
    else:
        raise AssertionError(how)
    return write_zip(entries)


# --- running the loaders ---------------------------------------------------------------------------------------

STATS: Counter[str] = Counter()


def attempt(kind: str, path: Path, blob: bytes, *, names_field: bool) -> str:
    """Load `blob` (written to `path`) as `kind`: "loaded" or "refused" (the format's own error, one line, naming
    the file and, for a field mutation, the field or fields at fault); any other exception propagates."""
    path.write_bytes(blob)
    STATS["tried"] += 1
    try:
        KINDS[kind].load(path)
    except KINDS[kind].error as error:
        text = str(error)
        assert "\n" not in text and text.startswith(f"{path}: "), text
        assert not names_field or re.search(r"fields? '", text), text
        STATS["refused"] += 1
        return "refused"
    except Exception:
        STATS["raw"] += 1
        raise
    STATS["loaded"] += 1
    return "loaded"


@pytest.fixture(scope="module", autouse=True)
def memory_guard() -> Iterator[None]:
    """A few GiB of address space above what the process holds: a loader allocating what a file only declares
    fails here (MemoryError, a raw exception) instead of swapping; the counts are printed at the end."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        held = int(f.read().split()[0]) * resource.getpagesize()
    limit = held + (2 << 30)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        print(f"\nmalformed files tried: {STATS['tried']}, refused with the format's error: {STATS['refused']}, "
              f"loaded (the mutation gave a valid file): {STATS['loaded']}, raw exceptions: {STATS['raw']}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def sweep_cases(kind: str) -> Iterator[tuple[str, bytes]]:
    """Every field of the valid file x every field mutation, a few variants each: (what, the archive)."""
    base = valid_fields(kind)
    stored = {name: npy(value) for name, value in base.items()}

    def archive(fields: dict[str, np.ndarray]) -> bytes:
        # As np.savez writes it, each unchanged member serialized once.
        return write_zip([Member(f"{name}.npy", stored[name] if value is base.get(name) else npy(value))
                          for name, value in fields.items()])

    for name in sorted(base):
        value = base[name]
        variants = {
            "dtype": ("float64" if value.dtype.kind != "f" else "int64",), "shape": ("append",),
            "extreme": extremes(value)[:2], "missing": (None,), "extra": ("extra",), "swap": (None,),
        }
        for how, args in variants.items():
            for arg in args:
                yield f"{name} {how} {arg}", archive(mutate_field(base, name, how, arg))


@pytest.mark.cost(seconds=15)
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_field_every_mutation(kind, workdir):
    path = workdir / f"sweep_{kind}.npz"
    assert attempt(kind, path, save(valid_fields(kind)), names_field=True) == "loaded"
    for label, blob in sweep_cases(kind):
        try:
            attempt(kind, path, blob, names_field=True)
        except AssertionError as error:
            raise AssertionError(f"{kind}: {label}: {error}") from None


@pytest.mark.cost(seconds=15)
@pytest.mark.parametrize("kind", list(KINDS))
@settings(derandomize=True, max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_field_mutations(kind, workdir, data):
    base = valid_fields(kind)
    name = data.draw(st.sampled_from(sorted(base)), label="field")
    how = data.draw(st.sampled_from(FIELD_MUTATIONS), label="mutation")
    value = base[name]
    arg = {"dtype": st.sampled_from(DTYPES), "shape": st.sampled_from(SHAPES),
           "extreme": st.sampled_from(extremes(value)), "extra": st.sampled_from(("extra", "version", "x", "a"))}
    index = data.draw(st.integers(0, max(0, value.size - 1)), label="index")
    chosen = data.draw(arg.get(how, st.none()), label="arg")
    every = data.draw(st.booleans(), label="every entry") if how == "extreme" else False
    fields = mutate_field(base, name, how, chosen, None if every else index)
    attempt(kind, workdir / f"field_{kind}.npz", save(fields), names_field=True)


@pytest.mark.cost(seconds=15)
@pytest.mark.parametrize("kind", list(KINDS))
@settings(derandomize=True, max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_archive_damage(kind, workdir, data):
    blob = save(valid_fields(kind))
    how = data.draw(st.sampled_from(ZIP_MUTATIONS), label="damage")
    pick = data.draw(st.integers(0, len(blob) - 1), label="pick")
    arg = data.draw(st.integers(0, 1 << 16), label="arg")
    variant = data.draw(st.sampled_from(HEADERS), label="header") if how == "header" else ""
    outcome = attempt(kind, workdir / f"zip_{kind}.npz", damage(blob, how, pick, arg, variant), names_field=False)
    assert outcome == "refused" or how in ("flip", "compressed", "header"), how


#: (pick, arg) per damage for the sweep: every variant `damage` distinguishes.
SWEEP_ARGS = {"truncate": [(p, 0) for p in (0, 4, 30, 100, 1000, 10**9 - 1)], "flip": [(p, a) for p in (5, 77, 501)
                                                                                        for a in (0, 7)],
              "crc": [(3, 0), (3, 1)], "sizes": [(3, a) for a in range(12)], "header": [(3, 0)],
              "duplicate": [(3, 3), (3, 4)], "bomb": [(3, 0)], "encrypted": [(0, 0), (3, 0)],
              "method": [(3, a) for a in range(4)], "stranger": [(3, a) for a in range(4)], "compressed": [(0, 0)],
              "empty": [(0, 0)]}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("how", ZIP_MUTATIONS)
def test_every_archive_damage(kind, how, workdir):
    blob = save(valid_fields(kind))
    variants = HEADERS if how == "header" else ("",)
    for (pick, arg), variant in ((args, v) for args in SWEEP_ARGS[how] for v in variants):
        outcome = attempt(kind, workdir / f"zipsweep_{kind}.npz", damage(blob, how, pick, arg, variant),
                          names_field=False)
        if how == "compressed":
            assert outcome == "loaded"  # np.savez_compressed writes a valid file too
        elif how not in ("flip", "header"):
            assert outcome == "refused", (how, pick, arg)


def test_a_valid_schedule_over_many_banks_loads_in_memory_its_size_allows(workdir):
    # Every canonical bin of four n = 256 kernels, one lane over all 33 024 banks: a 1.3 MB file whose schedule
    # check once built a groups x banks table (4 GiB).
    n, c_out = 256, 4
    canonical = np.flatnonzero(canonical_mask(n).reshape(-1))
    index = np.tile(canonical, c_out).astype(np.int64)
    counts = np.full((c_out, 1), canonical.size, dtype=np.int64)
    layer = SpectralLayer(OaaParams(n, 3, n - 2, "same"), c_out, 1, counts, index, np.ones(index.size, np.int16),
                          np.where(self_conjugate_mask(n).reshape(-1)[index], 0, 1).astype(np.int16), 0.5,
                          np.zeros(c_out, np.float32),
                          schedule=Schedule(1, bins(n), counts[:, 0].copy(), np.tile(np.arange(canonical.size), c_out)))
    save_spectral(workdir / "wide.npz", layer)
    assert load_spectral(workdir / "wide.npz").nnz == index.size


@pytest.mark.parametrize("kind", ["lenet5_spec2", "lenet5_full"])
@pytest.mark.parametrize("change, message", [
    (lambda f: {"conv1/relu": np.int64(0)}, "field 'conv1/relu': must be 1"),
    (lambda f: {"conv2/relu": np.int64(0)}, "field 'conv2/relu': must be 1"),
    (lambda f: {"conv2/padding": np.array("same")}, "take 28 x 28 to 7 x 7 after pooling, fc1 needs 5 x 5"),
    (lambda f: {"conv1/in_scale": np.float32(0.01)}, "field 'conv1/in_scale': must be the input scale"),
    (lambda f: {"conv2/in_scale": f["conv2/in_scale"] * np.float32(2)}, "field 'conv2/in_scale': must equal "
                                                                        "conv1/out_scale"),
    (lambda f: {"conv1/out_mult": np.int64(1 << 16)}, "field 'conv1/out_mult': out_mult=65536 does not fit "
                                                      "mult_bits=16"),
    (lambda f: {"conv2/bias_q": np.where(np.arange(16) == 3, -(1 << 35), f["conv2/bias_q"])},
     "field 'conv2/bias_q': bias_q must be below 2^35 in magnitude"),
])
def test_both_lenet5_files_run_the_same_conv_checks(kind, change, message, workdir):
    fields = valid_fields(kind)
    fields.update(change(fields))
    path = workdir / f"conv_{kind}.npz"
    assert attempt(kind, path, save(fields), names_field=True) == "refused"
    with pytest.raises(KINDS[kind].error, match=re.escape(message)):
        KINDS[kind].load(path)
