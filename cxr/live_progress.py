"""What a run shows while an epoch is still going: measured time left, and the loss batch by batch.

- ``BatchTimer``: the time left from measured batch times. The first batch of a training session is
  left out (it traces and compiles the graph: on two CPU cores it took as long as a hundred batches,
  which made the first estimate of a 70-second run read 16 minutes), and no estimate is given before
  ``MIN_MEASURED_BATCHES`` batches were timed. Validation time is measured at the end of each epoch.
- The batch log ``batches.csv`` in the run directory: one row per training batch (epoch, batch, the
  epoch's running mean loss and accuracy as Keras reports them, seconds since the epoch began). Rows are
  buffered and appended a few times a second with one ``write`` each, so the file costs no more than the
  status updates; a reader ignores an unfinished last line.
"""

from __future__ import annotations

import csv
import io
import os
from collections import deque
from pathlib import Path
from typing import Any

import pandas as pd

from cxr import runs
from cxr.atomic import atomic_write_text

BATCH_LOG_FILE = "batches.csv"
BATCH_COLUMNS = ("epoch", "batch", "loss", "accuracy", "seconds")
MIN_MEASURED_BATCHES = 3  # fewer timed batches than this give no estimate, rather than a guess
RECENT_BATCHES = 50  # the time per batch is the mean of the latest ones: follows a machine that slows down
VALIDATION_STEP_RATIO = 0.35  # a validation batch (forward pass only) against a training batch, until measured
TAIL_BYTES = 256 * 1024  # the reader looks at the end of the log only: the current epoch is there


class BatchTimer:
    """Measures training batches and validation passes; ``seconds_left`` turns them into the time left.

    Call ``epoch_begin(now)``, ``batch_end(now)`` after each training batch, and ``validation_begin(now)``
    / ``validation_end(now)`` around each validation pass (``now``: ``time.monotonic()``).
    """

    def __init__(self) -> None:
        self.recent: deque[float] = deque(maxlen=RECENT_BATCHES)
        self.measured = 0
        self.session_batches = 0
        self.first_batch_extra = 0.0  # the first batch of a later epoch waits for the shuffle buffer
        self.validation_seconds: float | None = None
        self.epochs_begun = 0
        self._last = None
        self._first_of_epoch = False
        self._validation_started = None

    def epoch_begin(self, now: float) -> None:
        self.epochs_begun += 1
        self._last = now
        self._first_of_epoch = True

    def batch_end(self, now: float) -> None:
        if self._last is None:
            self._last = now
            return
        seconds, self._last = now - self._last, now
        self.session_batches += 1
        if self.session_batches == 1:
            return  # graph tracing and compilation: not what the next batches will cost
        if self._first_of_epoch and self.epochs_begun > 1:
            typical = self.seconds_per_batch()
            if typical is not None:
                self.first_batch_extra = max(0.0, seconds - typical)
            self._first_of_epoch = False
            return
        self._first_of_epoch = False
        self.recent.append(seconds)
        self.measured += 1

    def validation_begin(self, now: float) -> None:
        self._validation_started = now

    def validation_end(self, now: float) -> None:
        if self._validation_started is not None:
            self.validation_seconds = now - self._validation_started
            self._validation_started = None

    def seconds_per_batch(self) -> float | None:
        if self.measured < MIN_MEASURED_BATCHES or not self.recent:
            return None
        return sum(self.recent) / len(self.recent)

    def seconds_left(self, *, batches_left: int, epochs_left: int, steps_per_epoch: int,
                     validation_batches: int, validating: bool = False) -> float | None:
        """Seconds until the last epoch's validation ends, or ``None`` before enough batches were timed.

        ``batches_left``: training batches still to run in the current epoch; ``epochs_left``: whole
        epochs after it; ``validation_batches``: batches of one validation pass (used only until a pass was
        measured); ``validating``: the current epoch's batches are done and its validation is running.
        """
        per_batch = self.seconds_per_batch()
        if per_batch is None:
            return None
        validation = self.validation_seconds
        if validation is None:
            validation = VALIDATION_STEP_RATIO * per_batch * validation_batches
        current = (0.0 if validating else batches_left * per_batch) + validation
        per_epoch = self.first_batch_extra + steps_per_epoch * per_batch + validation
        return round(current + epochs_left * per_epoch, 1)


# ---------------------------------------------------------------------------------------------- batch log
class BatchLog:
    """Buffers batch rows of one run and appends them to ``batches.csv`` on ``flush``."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / BATCH_LOG_FILE
        self.rows: list[dict[str, Any]] = []

    def add(self, epoch: int, batch: int, logs: dict | None, seconds: float) -> None:
        """One finished batch: ``epoch`` and ``batch`` 1-based, ``logs`` as Keras passes them."""
        logs = logs or {}
        row: dict[str, Any] = {"epoch": int(epoch), "batch": int(batch), "seconds": round(float(seconds), 3)}
        for name in ("loss", "accuracy"):
            value = logs.get(name)
            row[name] = None if value is None else round(float(value), 5)
        self.rows.append(row)

    def flush(self) -> None:
        if not self.rows:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=BATCH_COLUMNS, lineterminator="\n")
        if not self.path.exists():
            writer.writeheader()
        writer.writerows(self.rows)
        self.rows = []
        # One write of whole lines: a reader sees complete rows or an unfinished last line it skips.
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, buffer.getvalue().encode("utf-8"))
        finally:
            os.close(descriptor)


def _empty() -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype="float64") for column in BATCH_COLUMNS})


def read_batch_log(run: str | os.PathLike, *, epoch: int | None = None) -> pd.DataFrame:
    """Rows of ``batches.csv`` (columns ``BATCH_COLUMNS``), only those of ``epoch`` when given.

    Reads at most the last ``TAIL_BYTES`` of the file (the current epoch is at its end), so following
    a long run stays cheap; ``epoch=None`` reads the whole file."""
    path = runs.run_path(run) / BATCH_LOG_FILE
    try:
        size = path.stat().st_size
        with open(path, "rb") as file:
            if epoch is not None and size > TAIL_BYTES:
                file.seek(size - TAIL_BYTES)
                data = file.read()
                data = data[data.find(b"\n") + 1:]  # the first line is probably cut
            else:
                data = file.read()
    except FileNotFoundError:
        return _empty()
    text = data.decode("utf-8", errors="replace")
    text = text[: text.rfind("\n") + 1]  # an unfinished last line is still being written
    lines = [line for line in text.splitlines() if line and not line.startswith("epoch,")]
    if not lines:
        return _empty()
    frame = pd.read_csv(io.StringIO("\n".join(lines)), names=list(BATCH_COLUMNS), header=None)
    frame = frame.apply(pd.to_numeric, errors="coerce").dropna(subset=["epoch", "batch"])
    if epoch is not None:
        frame = frame[frame["epoch"] == epoch]
    return frame.reset_index(drop=True)


def truncate_batch_log(run: str | os.PathLike, last_epoch: int) -> None:
    """Drop the rows of epochs after ``last_epoch`` (on resume the unfinished epoch runs again)."""
    path = runs.run_path(run) / BATCH_LOG_FILE
    if not path.exists():
        return
    if last_epoch <= 0:
        path.unlink(missing_ok=True)
        return
    frame = read_batch_log(run)
    kept = frame[frame["epoch"] <= last_epoch]
    if len(kept) == len(frame):
        return
    kept = kept.astype({"epoch": "int64", "batch": "int64"})
    atomic_write_text(path, kept.to_csv(index=False, lineterminator="\n"))
