"""The audit log: one JSON line per prediction, for private deployments that must account for what was asked.

Opt-in with ``CXR_AUDIT_LOG=/path/audit.jsonl`` (see ``cxr.deployment``). A line holds the time (UTC), the
model's id and version, the SHA-256 of the uploaded file's bytes, P(pneumonia), the label, the threshold and the
population verdict. Never the image, never the file name (names of medical images often carry a patient's name).

Many sessions of one server (threads) and several servers (processes) may share one file: each line is written
with a single ``write`` on a file opened in append mode while an exclusive lock (``<path>.lock``, ``flock``) is
held, so lines never interleave or tear. Rotation happens under the same lock: when the next line would take the
file past its size limit, ``audit.jsonl`` becomes ``audit.jsonl.1`` (``.1`` becomes ``.2`` …, the oldest
beyond ``backups`` is deleted).

Read it with pandas: ``pd.read_json("audit.jsonl", lines=True)``.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

try:  # POSIX; elsewhere only the threads of one process are kept apart
    import fcntl
except ImportError:  # pragma: no cover - not on the Linux servers this runs on
    fcntl = None

FIELDS = ("time", "model_id", "model_version", "sha256", "bytes", "probability", "label", "threshold", "error",
          "population", "population_score", "population_percentile", "population_reason")
_THREAD_LOCK = threading.Lock()  # flock already separates threads (one open file each); this keeps it cheap


def sha256_of(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (a model's version in the log)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def utc_now() -> str:
    """The current time as ISO 8601 in UTC with milliseconds: ``2026-11-26T10:52:23.123+00:00``."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def record_of(result: Any, data: bytes, *, model_id: str, model_version: str, time: str | None = None) -> dict:
    """One audit record for ``result`` (a ``cxr.predict.PredictionResult``) of the file ``data``.

    Keys are ``FIELDS``; ``probability`` is in [0, 1] or ``None`` (the image could not be read), ``label`` is
    "normal", "pneumonia" or ``None`` (unreadable, or withheld for an image outside the model's population),
    ``error`` is ``True`` when the image could not be read (its message is not kept: it may quote the file
    name), ``population`` is "in", "outside", "unknown" or ``None`` (no verdict).
    """
    verdict = getattr(result, "population", None)
    verdict = verdict.to_dict() if hasattr(verdict, "to_dict") else (verdict if isinstance(verdict, dict) else None)
    verdict = verdict or {}
    reasons = verdict.get("reasons") or ()
    return {
        "time": time or utc_now(),
        "model_id": str(model_id),
        "model_version": str(model_version),
        "sha256": sha256_of(data),
        "bytes": len(data),
        "probability": _number(getattr(result, "probability", None)),
        "label": getattr(result, "label", None),
        "threshold": _number(getattr(result, "threshold", None)),
        "error": bool(getattr(result, "error", None)),
        "population": verdict.get("status"),
        "population_score": _number(verdict.get("score")),
        "population_percentile": _number(verdict.get("percentile")),
        "population_reason": "; ".join(str(reason) for reason in reasons) or None,
    }


def _number(value: Any) -> float | None:
    """A finite float, or ``None`` (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class AuditLog:
    """Appends records to ``path`` as JSON lines, rotating at ``max_bytes`` and keeping ``backups`` old files."""

    def __init__(self, path: str | os.PathLike, *, max_bytes: int = 100_000_000, backups: int = 5) -> None:
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.backups = int(backups)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    @classmethod
    def from_settings(cls, settings: Any) -> AuditLog | None:
        """The log described by ``cxr.deployment.AuditSettings``, or ``None`` when it is off."""
        if not settings.enabled:
            return None
        return cls(settings.path, max_bytes=settings.max_bytes, backups=settings.backups)

    def write(self, records: Iterable[dict]) -> int:
        """Append each record as one line; returns the number of lines written. Raises ``OSError`` when the
        file cannot be written (the caller decides whether the prediction is still shown)."""
        lines = [(json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n")
                 .encode("utf-8") for record in records]
        if not lines:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            for line in lines:
                self._rotate_if_full(len(line))
                descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    written = os.write(descriptor, line)
                    while written < len(line):  # a short write (rare, on a nearly full disk): finish the line
                        written += os.write(descriptor, line[written:])
                finally:
                    os.close(descriptor)
        return len(lines)

    def files(self) -> list[Path]:
        """The log and its rotated files that exist, newest first."""
        candidates = [self.path] + [self._backup(number) for number in range(1, self.backups + 1)]
        return [candidate for candidate in candidates if candidate.exists()]

    # ----------------------------------------------------------------------------------------- internals
    def _backup(self, number: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{number}")

    def _rotate_if_full(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size == 0 or size + incoming <= self.max_bytes:
            return
        if self.backups == 0:
            self.path.unlink()
            return
        self._backup(self.backups).unlink(missing_ok=True)
        for number in range(self.backups - 1, 0, -1):
            if self._backup(number).exists():
                os.replace(self._backup(number), self._backup(number + 1))
        os.replace(self.path, self._backup(1))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with _THREAD_LOCK:
            if fcntl is None:  # pragma: no cover
                yield
                return
            descriptor = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT, 0o640)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
                yield
            finally:
                os.close(descriptor)  # closing releases the lock
