"""Reading the formats' `.npz` files: one place for the checks every format makes before its own.

Each format validates its fields itself; this module reads the archive without trusting it and turns every way a
file can fail to be a readable `.npz` into the format's own one-line error naming the file (and the field, where
one member is at fault), and prefixes the path to whatever the format reports. Nothing the file only declares is
allocated: every member's size is checked against the file, its .npy header against the member and the limits
below, before its data is read; pickles (object arrays), records, encrypted members, compression other than
deflate and members that appear twice are refused.
"""

from __future__ import annotations

import ast
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

import numpy as np

T = TypeVar("T")

#: What every .npz (a zip archive) starts with.
ZIP_MAGIC = b"PK\x03\x04"
#: What every .npy member starts with, and the .npy versions read.
NPY_MAGIC = b"\x93NUMPY"
NPY_VERSIONS = {(1, 0): 2, (2, 0): 4, (3, 0): 4}
#: The longest .npy header read (numpy's own default limit).
MAX_HEADER = 10_000
#: The most members an archive may hold.
MAX_MEMBERS = 10_000
#: The most bytes the deflated members of one archive may inflate to (the formats are written uncompressed; a
#: compressed copy of the largest benchmark file inflates to a few MB), and the most a member may inflate per byte
#: stored (deflate cannot do better than about 1032:1, so a member declaring more misstates its size).
MAX_INFLATED = 1 << 28
MAX_RATIO = 1032
#: dtype kinds a field may have: booleans, integers, floats, complex numbers, bytes and strings.
KINDS = "biufcSU"
#: The most weights (rows x cols, tile padding included) a matrix in a format file may declare: 2^28, seven times
#: AlexNet's fc6. Its decoded planes and masks take a byte per weight, so what a file declares stays allocatable.
MAX_WEIGHTS = 1 << 28

# What the zip and zlib layers raise on a damaged archive (their messages go into the format's error).
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, struct.error, zlib.error,
               NotImplementedError, RuntimeError, OverflowError, IndexError, KeyError)


def read_npz(path: str | Path, error: type[Exception]) -> dict[str, np.ndarray]:
    """All arrays of the archive at `path` (no pickles); `error` with a one-line reason if it cannot be read."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    if magic != ZIP_MAGIC:
        raise error(f"{path}: not an .npz archive")

    def unreadable(detail: str) -> Exception:
        return error(f"{path}: unreadable .npz ({detail})")

    try:
        with zipfile.ZipFile(path) as archive:
            return _arrays(archive, size, unreadable)
    except error:
        raise
    except _ZIP_ERRORS as exc:
        detail = (str(exc).splitlines() or [""])[0][:200]
        raise unreadable(f"{type(exc).__name__}: {detail}") from None


def _arrays(archive: zipfile.ZipFile, size: int, unreadable: Callable[[str], Exception]) -> dict[str, np.ndarray]:
    """Every member as an array, each checked against the file before it is read."""
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise unreadable(f"{len(infos)} members, at most {MAX_MEMBERS} are read")
    seen: set[str] = set()
    inflated = 0
    for info in infos:
        name = info.filename
        if name in seen:
            raise unreadable(f"member '{name}' appears twice")
        seen.add(name)
        if not name.endswith(".npy"):
            raise unreadable(f"member '{name}' is not an .npy array")
        if info.flag_bits & 0x1:
            raise unreadable(f"member '{name}' is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise unreadable(f"member '{name}' uses compression method {info.compress_type} (only stored and "
                             "deflated members are read)")
        # A local header is at least 30 bytes and the name: the member's data cannot end later than this allows.
        if info.header_offset + 30 + len(name.encode()) + info.compress_size > size:
            raise unreadable(f"member '{name}' declares {info.compress_size} bytes at offset {info.header_offset}, "
                             f"past the end of the {size}-byte file")
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise unreadable(f"member '{name}' is stored in {info.compress_size} bytes but declares {info.file_size}")
        if info.compress_type == zipfile.ZIP_DEFLATED:
            inflated += info.file_size
            if info.file_size > MAX_RATIO * max(info.compress_size, 1) or inflated > MAX_INFLATED:
                raise unreadable(f"member '{name}' declares {info.file_size} bytes inflated from "
                                 f"{info.compress_size} (at most {MAX_RATIO} times, {MAX_INFLATED} bytes in all)")
    return {info.filename[:-4]: _member(archive, info, unreadable) for info in infos}


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, unreadable: Callable[[str], Exception]) -> np.ndarray:
    """One .npy member: its header checked, then exactly the bytes it declares read (and the CRC with them)."""
    field = info.filename[:-4]

    def bad(detail: str) -> Exception:
        return unreadable(f"field '{field}': {detail}")

    with archive.open(info) as f:
        dtype, shape, fortran, offset = _header(f, bad)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes != info.file_size - offset:
            raise bad(f"{dtype} {shape} is {nbytes} bytes, the member holds {info.file_size - offset}")
        data = f.read(nbytes)
        if len(data) != nbytes or f.read(1):
            raise bad(f"{len(data)} bytes of data, the header declares {nbytes}")
    if dtype.kind == "U":
        # UCS-4 code units past U+10FFFF are no characters: NumPy would hand them on as broken strings.
        units = np.frombuffer(data, dtype=dtype.byteorder.replace("|", "=") + "u4")
        if (units > 0x10FFFF).any():
            raise bad("a string holds a code point past U+10FFFF")
    return np.frombuffer(bytearray(data), dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _header(f: IO[bytes], bad: Callable[[str], Exception]) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """(dtype, shape, fortran order, header bytes) of an .npy member, every entry checked."""
    if f.read(len(NPY_MAGIC)) != NPY_MAGIC:
        raise bad("not an .npy array")
    version = tuple(f.read(2))
    if version not in NPY_VERSIONS:
        raise bad(f".npy version {'.'.join(map(str, version))} is not read (1.0, 2.0, 3.0 are)")
    width = NPY_VERSIONS[version]
    length = int.from_bytes(f.read(width), "little")
    if length > MAX_HEADER:
        raise bad(f".npy header of {length} bytes, at most {MAX_HEADER} are read")
    raw = f.read(length)
    if len(raw) != length:
        raise bad(f".npy header truncated ({len(raw)} of {length} bytes)")
    try:
        header = ast.literal_eval(raw.decode("utf8" if version >= (3, 0) else "latin1"))
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError, UnicodeDecodeError):
        raise bad(".npy header is not a Python literal") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise bad(".npy header must be a dict of exactly descr, fortran_order and shape")
    shape, fortran, descr = header["shape"], header["fortran_order"], header["descr"]
    if not isinstance(shape, tuple) or len(shape) > 32 or not all(type(n) is int and n >= 0 for n in shape):
        raise bad(f".npy shape must be a tuple of at most 32 sizes >= 0, got {str(shape)[:80]}")
    if not isinstance(fortran, bool):
        raise bad(f".npy fortran_order must be True or False, got {str(fortran)[:80]}")
    if not isinstance(descr, str):
        raise bad("records are not read (the .npy descr must be one dtype)")
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError, KeyError, SyntaxError, OverflowError):
        raise bad(f"unknown dtype {descr[:80]!r}") from None
    if dtype.kind not in KINDS or dtype.fields is not None or dtype.subdtype is not None or dtype.itemsize == 0:
        raise bad(f"dtype {descr[:80]!r} is not read (only booleans, numbers, bytes and strings: no objects, which "
                  "would be pickles, and no records)")
    return dtype, shape, fortran, len(NPY_MAGIC) + 2 + width + length


def load_checked(path: str | Path, error: type[Exception], from_fields: Callable[[dict[str, np.ndarray]], T]) -> T:
    """`from_fields(read_npz(path))`, with the path put in front of any `error` the format raises."""
    raw = read_npz(path, error)
    try:
        return from_fields(raw)
    except error as exc:
        raise error(f"{path}: {exc}") from None
