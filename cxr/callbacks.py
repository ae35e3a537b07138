"""Keras callbacks of a training run. Imports Keras at the top: only ``cxr.training`` imports this module,
inside ``train``, so ``import cxr`` stays light.

``RunCallback`` writes the run directory (``status.json``, ``batches.csv``, ``history.csv``, best weights,
``checkpoint.keras`` + ``checkpoint.json``) and honours stop requests (the ``stop`` file or SIGTERM) after
the current batch; ``ResumablePlateau`` is ``ReduceLROnPlateau`` with counters that survive a resume.
"""

from __future__ import annotations

import time
from pathlib import Path

from cxr import runs
from cxr.atomic import atomic_path, atomic_write_json
from cxr.config import TrainingConfig
from cxr.live_progress import BatchLog, BatchTimer
from cxr.stop_requests import StopRequested, stop_signal_received
from cxr.tensorflow_loader import keras

STATUS_INTERVAL_SECONDS = 0.25  # at most 4 status writes a second: live enough, cheap enough


class ResumablePlateau(keras.callbacks.ReduceLROnPlateau):
    """``ReduceLROnPlateau`` whose counters survive a resume (Keras resets them in on_train_begin).

    ``resume_state``: what ``state()`` returned when the checkpoint was saved, or ``None``."""

    def __init__(self, resume_state: dict | None = None, **settings) -> None:
        super().__init__(**settings)
        self.resume_state = resume_state

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.resume_state:
            self.best = self.resume_state.get("best", self.best)
            self.wait = self.resume_state.get("wait", 0)
            self.cooldown_counter = self.resume_state.get("cooldown_counter", 0)

    def state(self) -> dict:
        return {"best": float(self.best), "wait": int(self.wait),
                "cooldown_counter": int(self.cooldown_counter)}


def current_learning_rate(model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class RunCallback(keras.callbacks.Callback):
    """Writes the run directory as training goes: ``status.json`` (at most 4 times a second), ``batches.csv``,
    one ``history.csv`` row, the best weights and a checkpoint per epoch; stops on a stop request.

    ``write_files=False`` for a non-chief multi-worker task, which trains but leaves the files to the chief.
    """

    def __init__(self, run_dir: Path, config: TrainingConfig, *, steps_per_epoch: int, initial_epoch: int,
                 checkpoint_state: dict | None, plateau: ResumablePlateau | None = None, write_files: bool = True,
                 validation_batches: int = 0) -> None:
        super().__init__()
        self.run_dir, self.config, self.plateau, self.write_files = run_dir, config, plateau, write_files
        self.steps_per_epoch, self.initial_epoch = steps_per_epoch, initial_epoch
        state = checkpoint_state or {}
        self.monitor = "val_auc"
        self.best_value = state.get("best_value")
        self.best_epoch = state.get("best_epoch")
        self.wait = int(state.get("wait", 0))
        self.last_write = 0.0
        self.epoch_started = time.monotonic()
        self.session_started = time.monotonic()
        self.batches_done = 0
        self.epoch = initial_epoch
        self.epoch_learning_rate = None
        self.timer = BatchTimer()
        self.batch_log = BatchLog(run_dir) if write_files else None
        self.validation_batches = validation_batches

    # -- status
    def _status(self, force: bool = False, **fields) -> None:
        now = time.monotonic()
        if not self.write_files or (not force and now - self.last_write < STATUS_INTERVAL_SECONDS):
            return
        self.last_write = now
        self.batch_log.flush()  # the batch rows travel with the status writes: no extra wake-ups
        runs.write_status(self.run_dir, **fields)

    def _eta(self, batch: int, validating: bool = False) -> float | None:
        return self.timer.seconds_left(batches_left=self.steps_per_epoch - batch,
                                       epochs_left=self.config.epochs - self.epoch - 1,
                                       steps_per_epoch=self.steps_per_epoch,
                                       validation_batches=self.validation_batches, validating=validating)

    def _check_stop(self) -> None:
        reason = None
        if stop_signal_received():
            reason = "SIGTERM"
        # One stat() per batch: microseconds next to a training step, and the stop is exact.
        elif self.write_files and runs.stop_requested(self.run_dir):
            reason = "stop file"
        if reason is not None:
            if self.batch_log is not None:
                self.batch_log.flush()  # the last batches before the stop stay in the log
            raise StopRequested(reason)

    def on_train_begin(self, logs=None):
        self._status(force=True, state="running", epochs=self.config.epochs, batches=self.steps_per_epoch,
                     epoch=self.initial_epoch + 1, batch=0, message="training", error=None,
                     **runs.process_identity(), started=runs.now_iso())

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.epoch_started = time.monotonic()
        self.timer.epoch_begin(self.epoch_started)
        self.epoch_learning_rate = current_learning_rate(self.model)
        self._status(force=True, state="running", epoch=epoch + 1, batch=0, message="training")

    def on_train_batch_end(self, batch, logs=None):
        self.batches_done += 1
        now = time.monotonic()
        self.timer.batch_end(now)
        if self.batch_log is not None:
            self.batch_log.add(self.epoch + 1, batch + 1, logs, now - self.epoch_started)
        self._status(batch=batch + 1, epoch=self.epoch + 1, eta_seconds=self._eta(batch + 1))
        self._check_stop()

    def on_test_begin(self, logs=None):
        self.timer.validation_begin(time.monotonic())
        self._status(force=True, batch=self.steps_per_epoch, message="validating",
                     eta_seconds=self._eta(self.steps_per_epoch, validating=True))

    def on_test_end(self, logs=None):
        self.timer.validation_end(time.monotonic())

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        seconds = time.monotonic() - self.epoch_started
        row = {"epoch": epoch + 1, "learning_rate": self.epoch_learning_rate, "seconds": round(seconds, 3)}
        row.update({key: float(logs[key]) for key in runs.HISTORY_COLUMNS if key in logs})
        value = logs.get(self.monitor)
        improved = value is not None and (self.best_value is None or value > self.best_value)
        if improved:
            self.best_value, self.best_epoch, self.wait = float(value), epoch + 1, 0
        else:
            self.wait += 1
        if self.write_files:
            self.batch_log.flush()
            if improved:
                self.model.save_weights(str(self.run_dir / runs.BEST_WEIGHTS_FILE))
            # History first, checkpoint second: a kill between them leaves a row whose checkpoint
            # is missing, and resume drops that row and runs the epoch again.
            runs.append_history_row(self.run_dir, row)
            self.save_checkpoint(epoch + 1)
        if self.config.early_stopping and self.wait >= self.config.early_stopping_patience:
            self.model.stop_training = True
            self._status(force=True, message=f"early stopping: no better {self.monitor} for "
                                             f"{self.wait} epochs (best at epoch {self.best_epoch})")
        if stop_signal_received() or (self.write_files and runs.stop_requested(self.run_dir)):
            raise StopRequested("stop request at the end of an epoch")

    def save_checkpoint(self, finished_epochs: int) -> None:
        # A full disk (ENOSPC) or a kill mid-write drops the partial file and keeps the last checkpoint.
        with atomic_path(self.run_dir / runs.CHECKPOINT_FILE) as temporary:
            self.model.save(str(temporary))
        atomic_write_json(self.run_dir / runs.CHECKPOINT_INFO_FILE, {
            "epoch": finished_epochs, "best_value": self.best_value, "best_epoch": self.best_epoch,
            "monitor": self.monitor, "wait": self.wait, "saved": runs.now_iso(),
            "plateau": self.plateau.state() if self.plateau is not None else None,
        })


__all__ = ["RunCallback", "ResumablePlateau", "current_learning_rate"]
