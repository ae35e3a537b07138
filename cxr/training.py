"""Turn a cached data set into a trained model, writing the run directory as it goes.

``train(dataset, config, run_dir)`` is what the child process ``python -m cxr train`` runs:
- input (``cxr.pipeline``): ``tf.data`` from the uint8 arrays (no float64 copy of the data set), shuffled,
  batched, augmented on the fly with Keras preprocessing layers (train split only), prefetched;
- model: ``cxr.models.build_model(config.model, …)`` under a ``tf.distribute`` strategy
  (``cxr.distribution``);
- callbacks (``cxr.callbacks.RunCallback``) write ``status.json`` (≤ 4 times a second), one ``history.csv``
  row and a checkpoint per epoch, TensorBoard logs, and honour stop requests (``cxr.stop_requests``: the
  ``stop`` file or SIGTERM) after the current batch;
- at the end (``save_final_model``): ``model.keras`` (best-validation weights when early stopping is on),
  the population detector, then ``cxr.run_results.write_run_results`` for metrics.json, predictions.csv and
  the model card.

Stopping in the middle of an epoch keeps the checkpoint of the last finished epoch; the unfinished
epoch is discarded and runs again on resume, so ``history.csv`` never loses or repeats an epoch.
"""

from __future__ import annotations

import math
import os
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxr import runs
from cxr.atomic import atomic_path
from cxr.config import TrainingConfig
from cxr.distribution import is_chief, make_strategy, prebuild_for_multi_worker
from cxr.errors import CxrError, RunError
from cxr.live_progress import truncate_batch_log
from cxr.pipeline import build_augmentation, class_weights, make_dataset, training_arrays
from cxr.stop_requests import StopRequested


# ---------------------------------------------------------------------------------------------- training
def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package (needed by ``tf.summary``) is installed."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def _set_determinism(seed: int | None) -> None:
    from cxr.tensorflow_loader import keras
    from cxr.tensorflow_loader import tensorflow as tf

    if seed is None:
        return
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _build_compiled_model(config: TrainingConfig, steps_per_epoch: int):
    from cxr.models import TRANSFER_MODELS, build_model, compile_model
    from cxr.tensorflow_loader import keras

    settings: dict[str, Any] = {"dropout_rate": config.dropout_rate}
    if config.model in TRANSFER_MODELS:
        weights = getattr(config, "weights", "imagenet")
        settings["weights"] = None if weights in (None, "none") else weights
        # None lets the builder decide (frozen with pretrained weights, trainable from a random start).
        settings["trainable_backbone"] = True if getattr(config, "train_backbone", False) else None
    model = build_model(config.model, (config.image_size, config.image_size, 1), **settings)
    learning_rate: Any = config.learning_rate
    if config.schedule == "cosine":
        alpha = min(1.0, config.min_learning_rate / config.learning_rate)
        learning_rate = keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=max(1, config.epochs * steps_per_epoch), alpha=alpha)
    compile_model(model, optimizer=config.optimizer, learning_rate=learning_rate,
                  label_smoothing=getattr(config, "label_smoothing", 0.0))
    return model


def _scores(model, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (n,), logits (n,)) of ``model`` on uint8 ``images`` (n, s, s)."""
    from cxr.models import logit_model

    logits = logit_model(model).predict(images[..., np.newaxis], batch_size=batch_size, verbose=0)
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    return 1.0 / (1.0 + np.exp(-logits)), logits


def save_final_model(run_dir: Path, model, arrays: dict, batch_size: int,
                     threshold_settings: dict | None = None) -> dict:
    """Save ``model.keras``, fit its population detector, score it on validation and test, and write the run's
    results (``cxr.run_results.write_run_results``: metrics.json, predictions.csv, model card) with the threshold
    chosen by ``threshold_settings`` (``TrainingConfig.threshold_settings()``); returns the metrics."""
    from cxr.run_results import write_run_results

    with atomic_path(run_dir / runs.MODEL_FILE) as temporary:  # a partial file (full disk) must not stay behind
        model.save(str(temporary))
    from cxr.population_check import fit_for_run

    try:
        dataset_name = runs.read_config(run_dir).get("dataset")
    except (CxrError, OSError):
        dataset_name = None
    fit_for_run(run_dir, arrays, model, dataset=dataset_name)
    results, logits = {}, {}
    for split in ("val", "test"):
        if split in arrays:
            score, logit = _scores(model, arrays[split][0], batch_size)
            results[split] = (arrays[split][1], score)
            logits[split] = logit
    empty = (np.zeros(0, np.int64), np.zeros(0))
    return write_run_results(run_dir, val_true=results["val"][0], val_score=results["val"][1],
                             test_true=results.get("test", empty)[0], test_score=results.get("test", empty)[1],
                             val_logits=logits["val"], test_logits=logits.get("test"), **(threshold_settings or {}))


@dataclass
class TrainingResult:
    """What ``train`` returns: the final state and where things are."""

    state: str  # finished, stopped
    run_dir: Path
    epochs_done: int
    metrics: dict | None = None


def train(dataset, config: TrainingConfig, run_dir: str | os.PathLike, *, resume: bool = False,
          extra_callbacks: tuple = (), verbose: int | str = "auto") -> TrainingResult:
    """Train ``config.model`` on ``dataset`` writing ``run_dir`` (created by ``runs.new_run``).

    ``dataset``: a ``cxr.datasets.Dataset`` (imported, or in memory: ``Dataset.from_arrays`` / ``from_npz``).
    ``resume``: continue from ``checkpoint.keras`` (same settings; history is appended). A stop request
    returns state "stopped"; any other error marks the run "failed" (message in status.json) and raises.
    """
    run_dir = Path(run_dir)
    chief = is_chief(config.strategy)
    if not chief:
        # A non-chief worker trains in lockstep but writes to a scratch folder (Keras' multi-worker rule).
        run_dir = Path(tempfile.mkdtemp(prefix="cxr-worker-"))
        runs.new_run(getattr(dataset, "name", "dataset"), config, run_dir=run_dir, state="running")
    elif not (run_dir / runs.CONFIG_FILE).exists():
        raise RunError(f"{run_dir} is not a run directory (no config.json); create it with "
                       f"cxr.runs.new_run(dataset, config).")
    try:
        return _train(dataset, config, run_dir, resume=resume, chief=chief,
                      extra_callbacks=extra_callbacks, verbose=verbose)
    except (StopRequested, KeyboardInterrupt) as reason:
        return _mark_stopped(run_dir, config, "keyboard" if isinstance(reason, KeyboardInterrupt)
                             else "signal" if "SIGTERM" in str(reason) else "user")
    except BaseException as error:
        runs.write_status(run_dir, state="failed", eta_seconds=None, error=f"{type(error).__name__}: {error}",
                          message="training failed; see train.log", traceback=traceback.format_exc()[-4000:])
        raise
    finally:
        if not chief:
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)


def _mark_stopped(run_dir: Path, config: TrainingConfig, stop_reason: str) -> TrainingResult:
    """State ``stopped`` at the last finished epoch (the unfinished one is discarded, so the progress
    stands there, not at the batch where the stop came), in plain words."""
    from cxr.run_text import describe_end

    done = int((runs.read_checkpoint_info(run_dir) or {}).get("epoch", 0))
    ended = describe_end("stopped", done, config.epochs, stop_reason=stop_reason)
    runs.write_status(run_dir, state="stopped", eta_seconds=None, stop_reason=stop_reason, epoch=done, batch=0,
                      message=f"{ended}; resume it to continue, or evaluate it as it is")
    return TrainingResult("stopped", run_dir, done)


def _input_data(arrays: dict, config: TrainingConfig) -> tuple[Any, Any, int]:
    """(training ``tf.data`` — shuffled, augmented, class-weighted —, validation ``tf.data``, steps per epoch)."""
    train_images, train_labels = arrays["train"]
    steps_per_epoch = math.ceil(len(train_images) / config.batch_size)
    if config.max_batches_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, config.max_batches_per_epoch)
    # Multi-worker splits each batch across workers; every worker must shuffle the same way.
    data_seed = config.seed if config.seed is not None or config.strategy != "multi-worker" else 0
    train_data = make_dataset(train_images, train_labels, batch_size=config.batch_size, training=True,
                              augmentation=build_augmentation(config), seed=data_seed,
                              weights=class_weights(train_labels, config.class_weighting),
                              max_batches=config.max_batches_per_epoch, mixup=getattr(config, "mixup", 0.0))
    validation_data = make_dataset(*arrays["val"], batch_size=config.batch_size, training=False)
    return train_data, validation_data, steps_per_epoch


def _load_checkpoint(run_dir: Path):
    """The model and optimizer state of the last finished epoch (``checkpoint.keras``), for a resume."""
    from cxr.models import register_layers
    from cxr.tensorflow_loader import keras

    register_layers()
    return keras.models.load_model(run_dir / runs.CHECKPOINT_FILE, safe_mode=True)


def _callbacks(config: TrainingConfig, run_dir: Path, *, chief: bool, checkpoint_state: dict | None,
               initial_epoch: int, steps_per_epoch: int, validation_batches: int) -> list:
    """The learning-rate plateau (when asked), TensorBoard (chief, when installed) and ``RunCallback`` last:
    it checkpoints after the plateau callback changed the rate."""
    from cxr.callbacks import ResumablePlateau, RunCallback
    from cxr.tensorflow_loader import keras

    callbacks: list = []
    plateau = None
    if config.schedule == "plateau":
        plateau = ResumablePlateau((checkpoint_state or {}).get("plateau"), monitor="val_accuracy",
                                   patience=config.plateau_patience, factor=config.plateau_factor,
                                   min_lr=config.min_learning_rate, verbose=1)
        callbacks.append(plateau)
    if chief and tensorboard_available():
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / runs.TENSORBOARD_DIR),
                                                     update_freq="epoch", write_graph=False))
    elif chief:
        print("note: the tensorboard package is not installed; no TensorBoard logs for this run "
              "(pip install tensorboard)", flush=True)
    callbacks.append(RunCallback(run_dir, config, steps_per_epoch=steps_per_epoch, initial_epoch=initial_epoch,
                                 checkpoint_state=checkpoint_state, plateau=plateau, write_files=chief,
                                 validation_batches=validation_batches))
    return callbacks


def _train(dataset, config: TrainingConfig, run_dir: Path, *, resume: bool, chief: bool,
           extra_callbacks: tuple, verbose) -> TrainingResult:
    strategy = make_strategy(config.strategy)  # first: multi-worker must start before other TF work

    _set_determinism(config.seed)
    (run_dir / runs.STOP_FILE).unlink(missing_ok=True)
    arrays = training_arrays(dataset, config)
    train_data, validation_data, steps_per_epoch = _input_data(arrays, config)

    checkpoint_state = runs.read_checkpoint_info(run_dir) if resume else None
    if checkpoint_state and not (run_dir / runs.CHECKPOINT_FILE).exists():
        checkpoint_state = None
    initial_epoch = int(checkpoint_state["epoch"]) if checkpoint_state else 0
    with strategy.scope():
        model = (_load_checkpoint(run_dir) if checkpoint_state
                 else _build_compiled_model(config, steps_per_epoch))
    if chief:
        runs.truncate_history(run_dir, initial_epoch)
        truncate_batch_log(run_dir, initial_epoch)
        if initial_epoch == 0:
            (run_dir / runs.HISTORY_FILE).unlink(missing_ok=True)

    callbacks = list(extra_callbacks) + _callbacks(
        config, run_dir, chief=chief, checkpoint_state=checkpoint_state, initial_epoch=initial_epoch,
        steps_per_epoch=steps_per_epoch, validation_batches=math.ceil(len(arrays["val"][1]) / config.batch_size))
    if config.strategy == "multi-worker":
        prebuild_for_multi_worker(model, strategy, train_data)
    if initial_epoch < config.epochs:
        if verbose == "auto":
            verbose = 1 if os.isatty(1) else 2  # per-batch bar in a terminal, one line per epoch in a log
        model.fit(train_data, validation_data=validation_data, epochs=config.epochs,
                  initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose,
                  shuffle=False)  # tf.data already shuffles (seeded); Keras' own flag would only warn
    epochs_done = len(runs.read_history(run_dir)) if chief else config.epochs

    if chief:
        runs.write_status(run_dir, state="running", message="saving and evaluating", eta_seconds=None)
    if config.early_stopping and (run_dir / runs.BEST_WEIGHTS_FILE).exists():
        model.load_weights(str(run_dir / runs.BEST_WEIGHTS_FILE))
    metrics = None
    if chief:
        metrics = save_final_model(run_dir, model, arrays, config.batch_size, config.threshold_settings())
        runs.write_status(run_dir, state="finished", eta_seconds=None, batch=steps_per_epoch,
                          epoch=epochs_done, message=f"finished after {epochs_done} epochs")
    else:
        # Every worker saves (saving can involve collective ops); non-chief copies go to scratch.
        model.save(str(run_dir / runs.MODEL_FILE))
    return TrainingResult("finished", run_dir, epochs_done, metrics)
