"""Make a stopped or interrupted run usable: evaluate its best finished epoch as if training had ended there.

A run stopped by its user (or killed) keeps ``checkpoint.keras`` (the last finished epoch) and
``best.weights.h5`` (the epoch with the best validation AUC so far), but no ``model.keras`` nor
``metrics.json``, so the Evaluate and Predict pages could not use it even when it was the best run.
``finalize_stopped_run`` loads the checkpoint, puts the best epoch's weights in it, and runs the same
end-of-training step as a finished run (``model.keras``, calibration and threshold on validation, test
metrics, model card).

The run keeps its state (``stopped`` or ``interrupted``), so it can still be resumed; ``status.json``
records ``finalized_after_epoch`` (the finished epochs when it was evaluated) and ``finalized_epoch`` (the
epoch whose weights were used). An evaluation is current while ``finalized_after_epoch`` equals the
checkpoint's epoch; after a resume and a new stop it can be done again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from cxr import runs
from cxr.errors import RunError
from cxr.run_text import describe_end

FINALIZABLE_STATES = ("stopped", "interrupted")
FINALIZE_LOCK_FILE = "finalize.lock"


def finished_epochs(run: str | os.PathLike) -> int:
    """Epochs of ``run`` whose checkpoint was saved (0 when none)."""
    info = runs.read_checkpoint_info(run) or {}
    if not (runs.run_path(run) / runs.CHECKPOINT_FILE).exists():
        return 0
    return int(info.get("epoch") or 0)


def evaluation_is_current(run: str | os.PathLike, status: dict | None = None) -> bool:
    """Whether ``run`` has a ``model.keras`` and ``metrics.json`` made from its latest finished epochs (a
    finished run, or a stopped one evaluated since its last epoch)."""
    path = runs.run_path(run)
    if not ((path / runs.MODEL_FILE).is_file() and (path / runs.METRICS_FILE).is_file()):
        return False
    status = runs.read_status(path) if status is None else status
    if status.get("state") == "finished":
        return True
    if status.get("state") not in FINALIZABLE_STATES:
        return False
    return status.get("finalized_after_epoch") == finished_epochs(path)


def has_usable_model(run: str | os.PathLike) -> bool:
    """Whether ``run`` can be used to predict and be evaluated now: it is not training and has a model and
    metrics (finished, or stopped/interrupted and finalized)."""
    path = runs.run_path(run)
    status = runs.read_status(path)
    if status.get("state") in runs.ACTIVE_STATES:
        return False
    return (path / runs.MODEL_FILE).is_file() and (path / runs.METRICS_FILE).is_file()


def can_finalize(run: str | os.PathLike, status: dict | None = None) -> tuple[bool, str]:
    """``(True, "")`` when ``run`` can be finalized now, else ``(False, why not)`` in plain words."""
    path = runs.run_path(run)
    status = runs.read_status(path) if status is None else status
    state = status.get("state")
    if state not in FINALIZABLE_STATES:
        return False, f"the run is {state}; only a stopped or interrupted run is finalized this way"
    if finished_epochs(path) == 0:
        return False, "the run stopped before its first epoch ended, so there is no model to evaluate"
    if evaluation_is_current(path, status):
        return False, "the run is already evaluated from its best epoch"
    return True, ""


@contextlib.contextmanager
def _exclusive(path: Path):
    """One finalization of a run at a time (two browser sessions may press the button together)."""
    with open(path / FINALIZE_LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise RunError(f"Run {path.name} is already being evaluated; wait for it to finish.") from error
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load_dataset(config: dict):
    from cxr.datasets import load_dataset

    reference = config.get("dataset_path") or config.get("dataset")
    if not reference or not Path(str(reference)).exists():
        reference = config.get("dataset")
    return load_dataset(reference)


def finalize_stopped_run(run: str | os.PathLike, *, dataset=None) -> dict:
    """Evaluate a stopped or interrupted ``run`` from its best finished epoch; returns its metrics dict.

    ``dataset``: the data set it trained on (anything with the ``cxr.datasets.Dataset`` interface); by
    default the one named in its ``config.json``. The validation split is rebuilt exactly as training
    built it (same settings, same seed). Writes ``model.keras``, ``metrics.json``, ``predictions.csv`` and
    the model card; the state stays as it was. Raises ``RunError`` when the run is training, finished, or
    has no finished epoch.
    """
    path = runs.run_path(run)
    allowed, reason = can_finalize(path)
    if not allowed:
        raise RunError(f"Run {path.name} cannot be evaluated from a checkpoint: {reason}.")
    with _exclusive(path):
        from cxr.atomic import atomic_write_json
        from cxr.config import TrainingConfig
        from cxr.model_card import write_model_card
        from cxr.pipeline import training_arrays
        from cxr.tensorflow_loader import keras
        from cxr.training import save_final_model

        stored = runs.read_config(path)
        config = TrainingConfig.from_dict(stored["training"])
        if dataset is None:
            dataset = _load_dataset(stored)
        info = runs.read_checkpoint_info(path) or {}
        epochs_done = finished_epochs(path)
        status = runs.read_status(path)
        state = status["state"]
        model = keras.models.load_model(path / runs.CHECKPOINT_FILE, safe_mode=True)
        best_epoch = epochs_done
        if (path / runs.BEST_WEIGHTS_FILE).exists() and info.get("best_epoch"):
            model.load_weights(str(path / runs.BEST_WEIGHTS_FILE))
            best_epoch = int(info["best_epoch"])
        # The run's own threshold rule, as at the end of a finished run.
        metrics = save_final_model(path, model, training_arrays(dataset, config), config.batch_size,
                                   config.threshold_settings())
        ended = describe_end(state, epochs_done, config.epochs)
        metrics["training_ended"] = {"state": state, "finished_epochs": epochs_done, "planned_epochs": config.epochs,
                                     "model_epoch": best_epoch}
        metrics.setdefault("notes", []).append(
            f"{ended}; the model is the weights of epoch {best_epoch} (best validation AUC of the finished "
            f"epochs), evaluated as a finished run would be.")
        atomic_write_json(path / runs.METRICS_FILE, metrics)
        write_model_card(path, metrics)
        runs.write_status(path, finalized_after_epoch=epochs_done, finalized_epoch=best_epoch,
                          finalized_at=runs.now_iso(),
                          message=f"{ended}; evaluated with the weights of epoch {best_epoch}")
    return metrics


def main(argv: list[str] | None = None) -> int:
    """``python -m cxr.stopped_runs RUN``: finalize one stopped or interrupted run from the shell."""
    import sys

    arguments = sys.argv[1:] if argv is None else argv
    if len(arguments) != 1:
        print("usage: python -m cxr.stopped_runs RUN_ID_OR_FOLDER", file=sys.stderr)
        return 2
    try:
        metrics = finalize_stopped_run(arguments[0])
    except RunError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"threshold {metrics['threshold']:.3f}; " + metrics["notes"][-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
