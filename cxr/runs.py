"""The run directory (contract version 1): what a training run leaves on disk.

A run directory is the only channel between the trainer (a child process) and whoever follows it
(the app, the command line). See docs/architecture.md for the file list. Every file a reader in
another process may see is written atomically (temp file in the same folder, then ``os.replace``), so
a reader never sees half a file.

States in ``status.json``: queued, running, stopping, stopped, finished, failed, interrupted. A run
whose file says running (or queued, or stopping) but whose process is gone reads as ``interrupted``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from cxr import paths
from cxr.atomic import atomic_write_json, atomic_write_text, json_safe
from cxr.errors import RunError

CONTRACT_VERSION = 1
STATES = ("queued", "running", "stopping", "stopped", "finished", "failed", "interrupted")
# States in which a live process owns the run; a dead pid in one of these means the process was killed.
ACTIVE_STATES = ("queued", "running", "stopping")
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc",
                   "learning_rate", "seconds")

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
HISTORY_FILE = "history.csv"
CHECKPOINT_FILE = "checkpoint.keras"
CHECKPOINT_INFO_FILE = "checkpoint.json"
BEST_WEIGHTS_FILE = "best.weights.h5"
MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
STOP_FILE = "stop"
LOG_FILE = "train.log"
TENSORBOARD_DIR = "tensorboard"


def now_iso() -> str:
    """The current UTC time as an ISO 8601 string with microseconds (sortable as text)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, json.JSONDecodeError) as error:
        raise RunError(f"Cannot read {path}: {error}. Expected a JSON file written by cxr; "
                       f"the run directory may be damaged: delete it or start a new run.") from error


# ------------------------------------------------------------------------------------------ run folders
def run_path(run: str | os.PathLike) -> Path:
    """The folder of ``run``: a run id under ``paths.runs_dir()``, or a path to a run folder.

    Raises ``RunError`` when there is no such run."""
    candidate = Path(run)
    if candidate.is_dir() and (candidate / CONFIG_FILE).exists():
        return candidate.resolve()
    by_id = paths.runs_dir() / str(run)
    if os.sep not in str(run) and by_id.is_dir():
        return by_id
    known = ", ".join(path.name for path in _run_folders()[-5:]) or "none yet"
    raise RunError(f"No training run {str(run)!r} in {paths.runs_dir()}. Expected a run id or a run folder "
                   f"(recent runs: {known}). List runs with `python -m cxr runs`.")


def _run_folders() -> list[Path]:
    root = paths.runs_dir()
    if not root.is_dir():
        return []
    return sorted(path for path in root.iterdir() if path.is_dir() and (path / CONFIG_FILE).exists())


def new_run_id(model: str = "run") -> str:
    """A new, sortable run id: ``YYYYmmdd-HHMMSS-<model>-<6 hex>`` (UTC)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    safe_model = "".join(ch if ch.isalnum() else "-" for ch in model)[:24]
    return f"{stamp}-{safe_model}-{secrets.token_hex(3)}"


def new_run(dataset: Any, config: Any, *, run_dir: str | os.PathLike | None = None,
            state: str = "queued") -> Path:
    """Create a run folder with ``config.json`` and an initial ``status.json``; return its path.

    ``dataset`` is a data set name (or anything with a ``.name``); ``config`` a ``TrainingConfig``.
    ``run_dir`` puts the run somewhere other than ``paths.runs_dir()/<new id>`` (it must not hold a run).
    """
    dataset_name = getattr(dataset, "name", dataset)
    if not isinstance(dataset_name, str) or not dataset_name:
        raise RunError(f"new_run needs a data set name; received {dataset!r}.")
    training = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    if run_dir is None:
        path = paths.runs_dir() / new_run_id(str(training.get("model", "run")))
    else:
        path = Path(run_dir).resolve()
        if (path / CONFIG_FILE).exists():
            raise RunError(f"{path} already holds a run (config.json exists). Choose a new folder, "
                           f"or resume it with `python -m cxr train --resume {path}`.")
    path.mkdir(parents=True, exist_ok=True)
    created = now_iso()
    atomic_write_json(path / CONFIG_FILE, {"version": CONTRACT_VERSION, "dataset": dataset_name,
                                           "dataset_path": str(getattr(dataset, "path", "") or ""),
                                           "training": training, "created": created})
    atomic_write_json(path / STATUS_FILE, {
        "state": state, "epoch": 0, "epochs": training.get("epochs"), "batch": 0, "batches": None,
        "started": None, "updated": created, "pid": None, "pid_created": None, "eta_seconds": None,
        "error": None, "message": "waiting to start" if state == "queued" else "",
        "queued_at": created,
    })
    return path


def write_status(run: str | os.PathLike, *, only_if_state: tuple[str, ...] | None = None, **fields: Any) -> dict:
    """Merge ``fields`` into ``status.json`` (atomically, stamping ``updated``); return the new status.

    The read-merge-write runs under an exclusive lock on ``status.lock`` so that the trainer and the
    process asking it to stop never interleave. With ``only_if_state``, nothing is written unless the
    current state is one of those (the returned status is then the unchanged one).
    """
    import fcntl

    folder = run_path(run)
    path = folder / STATUS_FILE
    with open(folder / "status.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            status = _read_json(path)
        except FileNotFoundError:
            status = {}
        if only_if_state is not None and status.get("state") not in only_if_state:
            return status
        status.update(fields)
        status["updated"] = now_iso()
        if status.get("state") not in STATES:
            raise RunError(f"Unknown run state {status.get('state')!r}; expected one of {', '.join(STATES)}.")
        atomic_write_json(path, status)
    return status


def process_identity() -> dict:
    """``{"pid", "pid_created"}`` of this process, written into ``status.json`` so readers can tell a dead
    (or reused) pid with ``process_alive``."""
    import psutil

    return {"pid": os.getpid(), "pid_created": psutil.Process().create_time()}


# ------------------------------------------------------------------------------------------------ reading
def process_alive(pid: Any, created: float | None = None) -> bool:
    """Whether process ``pid`` on this machine is alive (not a zombie, and the same process: when
    ``created`` — its start time, seconds since the epoch — is given, a reused pid does not count)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    import psutil  # lazy: only status readers need it

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        if created is not None and abs(process.create_time() - float(created)) > 1.0:
            return False
        return True
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return False


def read_status(run: str | os.PathLike) -> dict:
    """``status.json`` of ``run`` as a dict. A run whose state is active (queued, running, stopping) but
    whose process is dead reads as ``interrupted`` (with a ``message`` saying so); the file is not
    changed. Missing fields are filled with ``None``."""
    path = run_path(run)
    try:
        status = _read_json(path / STATUS_FILE)
    except FileNotFoundError:
        status = {"state": "interrupted", "message": "status.json is missing"}
    for key in ("state", "epoch", "epochs", "batch", "batches", "started", "updated", "pid",
                "eta_seconds", "error", "message"):
        status.setdefault(key, None)
    if status["state"] in ACTIVE_STATES and status.get("pid") is not None:
        if not process_alive(status["pid"], status.get("pid_created")):
            status["message"] = (f"the training process (pid {status['pid']}) ended without saying so "
                                 f"while {status['state']}; resume it to continue from the last epoch")
            status["state"] = "interrupted"
            status["eta_seconds"] = None
    return status


def read_config(run: str | os.PathLike) -> dict:
    """``config.json`` of ``run``: ``{"version", "dataset", "training": {...}, "created"}``."""
    path = run_path(run) / CONFIG_FILE
    config = _read_json(path)
    if not isinstance(config, dict) or "training" not in config:
        raise RunError(f"{path} has no 'training' settings; it was not written by cxr (contract version "
                       f"{CONTRACT_VERSION}). Start a new run.")
    return config


def read_history(run: str | os.PathLike) -> pd.DataFrame:
    """``history.csv`` of ``run``: one row per finished epoch, columns ``HISTORY_COLUMNS`` (empty frame
    with those columns when no epoch has finished)."""
    path = run_path(run) / HISTORY_FILE
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame({column: pd.Series(dtype="float64") for column in HISTORY_COLUMNS})
    frame = pd.read_csv(path)
    for column in HISTORY_COLUMNS:
        if column not in frame.columns:
            frame[column] = float("nan")
    return frame


def read_metrics(run: str | os.PathLike) -> dict | None:
    """``metrics.json`` of ``run``, or ``None`` when training has not finished."""
    path = run_path(run) / METRICS_FILE
    try:
        return _read_json(path)
    except FileNotFoundError:
        return None


def read_checkpoint_info(run: str | os.PathLike) -> dict | None:
    """``checkpoint.json`` of ``run`` (``{"epoch": finished epochs, ...}``), or ``None``."""
    path = run_path(run) / CHECKPOINT_INFO_FILE
    try:
        return _read_json(path)
    except FileNotFoundError:
        return None


def append_history_row(run: str | os.PathLike, row: dict) -> None:
    """Add one epoch's row to ``history.csv`` (rewritten atomically so readers never see half a row)."""
    path = run_path(run) / HISTORY_FILE
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    if not existing:
        writer.writeheader()
    writer.writerow({column: json_safe(row.get(column)) for column in HISTORY_COLUMNS})
    atomic_write_text(path, existing + buffer.getvalue())


def truncate_history(run: str | os.PathLike, last_epoch: int) -> None:
    """Drop history rows after ``last_epoch`` (used on resume: a row whose checkpoint was never saved
    belongs to an epoch that will run again)."""
    path = run_path(run) / HISTORY_FILE
    if not path.exists():
        return
    frame = pd.read_csv(path)
    if len(frame) and (frame["epoch"] > last_epoch).any():
        atomic_write_text(path, frame[frame["epoch"] <= last_epoch].to_csv(index=False, lineterminator="\n"))


def request_stop(run: str | os.PathLike) -> None:
    """Ask the trainer of ``run`` to stop after its current batch (it polls for the ``stop`` file)."""
    atomic_write_text(run_path(run) / STOP_FILE, now_iso() + "\n")


def stop_requested(run: str | os.PathLike) -> bool:
    """Whether a stop file is present in ``run``."""
    return (run_path(run) / STOP_FILE).exists()


# ------------------------------------------------------------------------------------------------ listing
@dataclass(frozen=True)
class RunSummary:
    """One line of the run list: who, what, where it stands and its best validation figures."""

    run_id: str
    path: Path
    dataset: str
    model: str
    state: str
    epoch: int | None
    epochs: int | None
    created: str | None
    best_val_auc: float | None = None
    best_val_accuracy: float | None = None
    test_auc: float | None = None
    test_accuracy: float | None = None
    message: str | None = None
    extra: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "path": str(self.path), "dataset": self.dataset, "model": self.model,
                "state": self.state, "epoch": self.epoch, "epochs": self.epochs, "created": self.created,
                "best_val_auc": self.best_val_auc, "best_val_accuracy": self.best_val_accuracy,
                "test_auc": self.test_auc, "test_accuracy": self.test_accuracy, "message": self.message}


def _best(frame: pd.DataFrame, column: str) -> float | None:
    if column not in frame.columns:
        return None
    values = pd.to_numeric(frame[column], errors="coerce").dropna()
    return float(values.max()) if len(values) else None


def _nested(metrics: dict | None, *keys: str) -> float | None:
    value: Any = metrics
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    if isinstance(value, dict):  # cxr.evaluation stores {"value": v, "low": …, "high": …}
        value = value.get("value")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def summarize_run(run: str | os.PathLike) -> RunSummary:
    """A ``RunSummary`` of one run (reads config, status, history and metrics)."""
    path = run_path(run)
    config = read_config(path)
    status = read_status(path)
    history = read_history(path)
    metrics = read_metrics(path)
    test_auc = _nested(metrics, "test", "auc") or _nested(metrics, "test", "roc_auc")
    return RunSummary(
        run_id=path.name, path=path, dataset=str(config.get("dataset")),
        model=str(config["training"].get("model")), state=str(status["state"]),
        epoch=status.get("epoch"), epochs=status.get("epochs"), created=config.get("created"),
        best_val_auc=_best(history, "val_auc"), best_val_accuracy=_best(history, "val_accuracy"),
        test_auc=test_auc, test_accuracy=_nested(metrics, "test", "accuracy"),
        message=status.get("message"))


def list_runs() -> list[RunSummary]:
    """Every run under ``paths.runs_dir()``, newest first. A damaged run folder is listed with state
    ``failed`` and the reason in ``message`` rather than hiding the others."""
    summaries = []
    for path in reversed(_run_folders()):
        try:
            summaries.append(summarize_run(path))
        except (RunError, OSError, ValueError, KeyError) as error:
            summaries.append(RunSummary(run_id=path.name, path=path, dataset="?", model="?", state="failed",
                                        epoch=None, epochs=None, created=None, message=str(error)))
    return summaries


def runs_frame() -> pd.DataFrame:
    """``list_runs()`` as a DataFrame (one row per run), for tables."""
    rows = [summary.to_dict() for summary in list_runs()]
    columns = list(RunSummary.__dataclass_fields__)
    columns.remove("extra")
    return pd.DataFrame(rows, columns=columns)
