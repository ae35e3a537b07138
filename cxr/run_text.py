"""Runs as people read them: a name with its best validation AUC, its state in plain words, its progress.

Every page that lets someone choose a run uses ``run_labels`` so a run reads the same everywhere
("fast on kermany, 26 Nov 2026, 10:52 UTC · best validation AUC 0.874"), not as a bare id
("20261126-105222-fast-3fa2c1").
Pure functions of ``cxr.runs`` records (a ``RunSummary``, a status dict): no I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cxr.runs import RunSummary

ENDED_STATES = ("stopped", "interrupted", "failed")


def _when(created: Any) -> str:
    """``"2026-11-26T10:52:22.1+00:00"`` -> ``"26 Nov 2026, 10:52 UTC"``; ``""`` when unknown."""
    try:
        moment = datetime.fromisoformat(str(created))
    except (TypeError, ValueError):
        return ""
    zone = moment.tzname() or ""
    return moment.strftime("%d %b %Y, %H:%M") + (" UTC" if zone in ("UTC", "UTC+00:00") else f" {zone}".rstrip())


def describe_end(state: str, epochs_done: int, epochs: int | None, *, stop_reason: str | None = None) -> str:
    """Plain words for how a run ended: "Stopped by you after epoch 7 of 20"."""
    of = f" of {epochs}" if epochs else ""
    after = f"after epoch {epochs_done}{of}" if epochs_done else "before its first epoch ended"
    if state == "stopped":
        who = {"signal": "Stopped by a shutdown signal", "keyboard": "Stopped with Ctrl-C",
               "queue": "Cancelled while waiting in the queue"}.get(stop_reason or "", "Stopped by you")
        return who if stop_reason == "queue" else f"{who} {after}"
    if state == "interrupted":
        return f"Interrupted {after} (the training process ended without finishing)"
    if state == "failed":
        return f"Failed {after}"
    if state == "finished":
        return f"Finished after {epochs_done} epoch{'s' if epochs_done != 1 else ''}"
    return str(state)


def run_name(summary: RunSummary) -> str:
    """"fast on kermany, 26 Nov 2026, 10:52 UTC": the model, the data set and when the run was created."""
    model, dataset = summary.model, summary.dataset
    name = f"{model} on {dataset}" if model not in (None, "?") and dataset not in (None, "?") else summary.run_id
    when = _when(summary.created)
    return f"{name}, {when}" if when else name


def run_label(summary: RunSummary) -> str:
    """``run_name`` plus the best validation AUC, and the state when it is not "finished":
    "fast on kermany, 26 Nov 2026, 10:52 UTC · best validation AUC 0.874 · stopped". A run that is still
    training reads "… · training" without a figure: its best AUC changes every epoch, and a label drawn once
    would soon be stale."""
    state = summary.state
    if state in ("queued", "running", "stopping"):
        return f"{run_name(summary)} · {'waiting in the queue' if state == 'queued' else 'training'}"
    parts = [run_name(summary)]
    auc = summary.best_val_auc
    parts.append(f"best validation AUC {auc:.3f}" if isinstance(auc, (int, float)) and auc == auc
                 else "no validation AUC recorded")
    if state and state != "finished":
        parts.append(str(state))
    return " · ".join(parts)


def run_labels(summaries: Iterable[RunSummary]) -> dict[str, str]:
    """``{run_id: run_label}``; two runs that would read the same get the end of their id added."""
    summaries = list(summaries)
    labels = {summary.run_id: run_label(summary) for summary in summaries}
    counts: dict[str, int] = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    return {run_id: (f"{label} · #{run_id.rsplit('-', 1)[-1]}" if counts[label] > 1 else label)
            for run_id, label in labels.items()}


def state_text(status: dict, finished_epochs: int) -> str:
    """The state of a run in plain words: "Training", "Stopped by you after epoch 7 of 20", …"""
    state = status.get("state")
    epochs = status.get("epochs")
    if state == "queued":
        return "Waiting in the queue"
    if state == "running":
        return "Saving and evaluating" if status.get("message") == "saving and evaluating" else "Training"
    if state == "stopping":
        return "Stopping after the current batch"
    if state == "finished":
        return describe_end("finished", finished_epochs, epochs)
    text = describe_end(str(state), finished_epochs, epochs, stop_reason=_stop_reason(status))
    if status.get("finalized_epoch") and status.get("finalized_after_epoch") == finished_epochs:
        text += f"; evaluated with the weights of epoch {status['finalized_epoch']}"
    return text


def _stop_reason(status: dict) -> str | None:
    """``status["stop_reason"]``, or (runs written before that field) guessed from the message."""
    if status.get("stop_reason"):
        return str(status["stop_reason"])
    message = str(status.get("message") or "")
    if "SIGTERM" in message:
        return "signal"
    if "Ctrl-C" in message:
        return "keyboard"
    if "cancelled while queued" in message:
        return "queue"
    return None


def progress(status: dict, finished_epochs: int) -> tuple[float, str]:
    """Overall progress in [0, 1] and its line.

    While training: "Epoch 3 of 12 · batch 40 of 163 · about 2 min 10 s left" (the time only once the
    trainer has measured batches). A run that ended stands at its finished epochs ("7 of 20 epochs
    finished"), not at the batch where it stopped, since the unfinished epoch is discarded; how it ended is
    ``state_text``.
    """
    state = status.get("state")
    epochs = int(status.get("epochs") or 0)
    if state == "finished":
        return 1.0, f"{finished_epochs} of {epochs} epochs finished" if epochs else "finished"
    if state in ENDED_STATES:
        fraction = min(1.0, finished_epochs / epochs) if epochs else 0.0
        return fraction, f"{finished_epochs} of {epochs} epochs finished" if epochs else ""
    if state == "queued":
        return 0.0, "Waiting in the queue"
    epoch = int(status.get("epoch") or 0)
    batch = int(status.get("batch") or 0)
    batches = int(status.get("batches") or 0)
    # "epoch" is the epoch in progress (1-based) while batches run.
    done = max(0, epoch - 1) + (batch / batches if batches else 0.0)
    fraction = min(1.0, done / epochs) if epochs else 0.0
    parts = [f"Epoch {epoch} of {epochs}" if epochs else f"Epoch {epoch}"]
    if batches:
        parts.append(f"batch {batch} of {batches}")
    if status.get("message") == "validating":
        parts.append("validating")
    eta = status.get("eta_seconds")
    if eta is not None:
        parts.append(f"about {format_seconds(eta)} left")
    elif state == "running":
        parts.append("time left: measuring the first batches")
    return fraction, " · ".join(parts)


def format_seconds(seconds: float | None) -> str:
    """``75`` -> ``"1 min 15 s"``; ``None`` -> ``"unknown"``."""
    if seconds is None:
        return "unknown"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, seconds = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
