"""Atomic file writes: a reader in another process sees either the old file or the whole new one.

Each write goes to a temp file in the target's folder (so ``os.replace`` is a rename on one file system)
and is renamed over the target only once complete; on any failure (a full disk, a kill) the temp file is
removed and the old file stays. Imports nothing of cxr, so every module may use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temp path beside ``path`` (same suffix, e.g. ``.keras`` for Keras' savers) for a writer that wants a
    file name; on a clean exit it replaces ``path``, on an exception it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(handle)
    temporary = Path(temp_name)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (flushed to disk before the rename)."""
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON with sorted keys to ``path`` atomically.

    numpy scalars become numbers, paths strings, tuples lists, and NaN or infinity ``null``."""
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, sort_keys=True) + "\n")


def json_safe(obj: Any) -> Any:
    """``obj`` with numpy scalars, paths and non-finite floats turned into plain JSON values."""
    if isinstance(obj, dict):
        return {str(key): json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(value) for value in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        obj = obj.item()
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    return obj


__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "json_safe"]
