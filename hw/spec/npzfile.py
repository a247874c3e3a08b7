"""Reading the formats' `.npz` files: one place for the checks every format makes before its own.

Each format validates its fields itself; this module turns the ways a file can fail to be a readable
`.npz` at all into the format's own one-line error, and prefixes the path to whatever the format reports.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

T = TypeVar("T")

#: What every .npz (a zip archive) starts with.
ZIP_MAGIC = b"PK\x03\x04"


def read_npz(path: str | Path, error: type[Exception]) -> dict[str, np.ndarray]:
    """All arrays of the archive at `path` (no pickles); `error` with a one-line reason if it cannot be read."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    if magic != ZIP_MAGIC:
        raise error(f"{path}: not an .npz archive")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        detail = (str(exc).splitlines() or [""])[0]
        raise error(f"{path}: unreadable .npz ({type(exc).__name__}: {detail})") from None


def load_checked(path: str | Path, error: type[Exception], from_fields: Callable[[dict[str, np.ndarray]], T]) -> T:
    """`from_fields(read_npz(path))`, with the path put in front of any `error` the format raises."""
    raw = read_npz(path, error)
    try:
        return from_fields(raw)
    except error as exc:
        raise error(f"{path}: {exc}") from None
