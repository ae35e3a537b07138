"""Turn a cached data set into a trained model, writing the run directory as it goes.

``train(dataset, config, run_dir)`` is what the child process ``python -m cxr train`` runs:
- input: ``tf.data`` from the uint8 arrays (no float64 copy of the data set), shuffled, batched,
  augmented on the fly with Keras preprocessing layers (train split only), prefetched;
- model: ``cxr.models.build_model(config.model, …)`` under a ``tf.distribute`` strategy;
- callbacks (``RunCallback``) write ``status.json`` (≤ 4 times a second), one ``history.csv`` row and
  a checkpoint per epoch, TensorBoard logs, and honour stop requests (the ``stop`` file or SIGTERM)
  after the current batch;
- at the end: ``model.keras`` (best-validation weights when early stopping is on), then
  ``cxr.run_results.write_run_results`` for metrics.json, predictions.csv and the model card.

Why augmentation lives in the tf.data map and not in the model: the saved model then holds no random
layers, loads with ``safe_mode`` and predicts the same thing every time.

Stopping in the middle of an epoch keeps the checkpoint of the last finished epoch; the unfinished
epoch is discarded and runs again on resume, so ``history.csv`` never loses or repeats an epoch.
"""

from __future__ import annotations

import json
import math
import os
import signal
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxr import runs
from cxr.atomic import atomic_path, atomic_write_json
from cxr.config import TrainingConfig
from cxr.errors import CxrError, DatasetError, RunError
from cxr.live_progress import BatchLog, BatchTimer, truncate_batch_log

STATUS_INTERVAL_SECONDS = 0.25  # at most 4 status writes a second: live enough, cheap enough
_stop_signal = {"received": False}


# ------------------------------------------------------------------------------------------- data sets
@dataclass
class ArrayDataset:
    """An in-memory data set with the ``cxr.datasets.Dataset`` interface that training uses.

    ``arrays`` maps a split name ("train", "val", "test") to ``(images (n, s, s) uint8, labels (n,) int)``.
    ``groups`` optionally maps a split to patient ids (n,) so validation can be carved by patient.
    """

    name: str
    arrays: dict[str, tuple[np.ndarray, np.ndarray]]
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self) -> None:
        if "train" not in self.arrays:
            raise DatasetError(f"Data set {self.name!r} has splits {sorted(self.arrays)}; a 'train' split "
                               f"is needed to train.")
        for split, (images, labels) in self.arrays.items():
            images = np.asarray(images)
            if images.ndim == 4 and images.shape[-1] == 1:
                images = images[..., 0]
            if images.ndim != 3 or images.shape[1] != images.shape[2] or images.dtype != np.uint8:
                raise DatasetError(f"Split {split!r} of {self.name!r} holds images of shape {images.shape} "
                                   f"and dtype {images.dtype}; expected (n, s, s) uint8 square images.")
            labels = np.asarray(labels).reshape(-1).astype(np.int64)
            if len(labels) != len(images) or not np.isin(labels, (0, 1)).all():
                raise DatasetError(f"Split {split!r} of {self.name!r} has {len(labels)} labels for "
                                   f"{len(images)} images (values {np.unique(labels)[:5]}); expected one "
                                   f"label 0 (normal) or 1 (pneumonia) per image.")
            self.arrays[split] = (images, labels)

    @property
    def image_size(self) -> int:
        return int(self.arrays["train"][0].shape[1])

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(split for split in ("train", "val", "test") if split in self.arrays)

    def images(self, split: str) -> np.ndarray:
        return self.arrays[split][0]

    def labels(self, split: str) -> np.ndarray:
        return self.arrays[split][1]

    @classmethod
    def from_npz(cls, path: str | os.PathLike) -> ArrayDataset:
        """Read a MedMNIST-style ``.npz``: ``{split}_images`` (n, s, s) uint8 and ``{split}_labels``."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {split: (archive[f"{split}_images"], archive[f"{split}_labels"])
                          for split in ("train", "val", "test") if f"{split}_images" in archive}
        except (OSError, ValueError, KeyError) as error:
            raise DatasetError(f"Cannot read {path} as a MedMNIST-style .npz ({error}); expected arrays "
                               f"train_images/train_labels (and val_, test_).") from error
        return cls(name=path.stem, arrays=arrays, path=path.resolve())


def resolve_dataset(name_or_path: str | os.PathLike):
    """A ``.npz`` file path gives an ``ArrayDataset``; anything else goes to ``cxr.datasets.load_dataset``."""
    if str(name_or_path).endswith(".npz") and Path(name_or_path).is_file():
        return ArrayDataset.from_npz(name_or_path)
    from cxr.datasets import load_dataset

    return load_dataset(name_or_path)


def split_validation(labels: np.ndarray, fraction: float, seed: int | None,
                     groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation) with about ``fraction`` of each class in validation.

    With ``groups`` (patient ids), all images of a patient land on the same side (no leakage).
    Each class keeps at least one image on each side. Raises ``DatasetError`` when a class has fewer
    than two images (or patients) to split.
    """
    labels = np.asarray(labels).reshape(-1)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups).reshape(-1)
    generator = np.random.default_rng(seed)
    validation = []
    for label in (0, 1):
        class_groups = np.unique(groups[labels == label])
        if len(class_groups) < 2:
            raise DatasetError(f"Class {label} has {len(class_groups)} image group(s) in train; at least 2 "
                               f"are needed to carve a validation split. Add images of that class.")
        count = min(len(class_groups) - 1, max(1, round(fraction * len(class_groups))))
        chosen = generator.choice(class_groups, size=count, replace=False)
        validation.append(np.flatnonzero(np.isin(groups, chosen) & (labels == label)))
    validation_index = np.sort(np.concatenate(validation))
    train_index = np.setdiff1d(np.arange(len(labels)), validation_index)
    return train_index, validation_index


def _patient_groups(dataset, split: str) -> np.ndarray | None:
    groups = getattr(dataset, "groups", None)
    if isinstance(groups, dict) and split in groups:
        return np.asarray(groups[split])
    manifest = getattr(dataset, "manifest", None)
    try:
        rows = manifest[manifest["split"] == split]
        if "patient_id" in rows and len(rows) == len(dataset.labels(split)):
            return rows["patient_id"].astype(str).to_numpy()
    except (TypeError, KeyError, AttributeError):
        pass
    return None


def _import_fraction(dataset) -> float | None:
    """The validation fraction an imported data set's "val" split was carved at (None: not known)."""
    info = getattr(dataset, "info", None)
    try:
        return float(info["data_config"]["validation_fraction"])
    except (TypeError, KeyError, ValueError):
        return None


def training_arrays(dataset, config: TrainingConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train", "val", ["test"]: (images (n, s, s) uint8, labels (n,) int64)}`` for ``config``.

    Uses the data set's own "val" split when it has one and it was carved (by patient, at import) at
    ``config.validation_fraction``; an imported split carved at another fraction is pooled with train
    and re-split at the fraction asked. Without a "val" split, carves ``config.validation_fraction``
    of train. Re-splits and carves are by patient when ids are known, stratified by class."""
    if int(dataset.image_size) != config.image_size:
        raise DatasetError(f"Data set {dataset.name!r} holds {dataset.image_size} px images but the "
                           f"training settings ask for image_size={config.image_size}. Set image_size to "
                           f"{dataset.image_size}, or re-import the data at {config.image_size} px.")
    splits = tuple(dataset.splits)
    images, labels = dataset.images("train"), np.asarray(dataset.labels("train")).astype(np.int64)
    arrays = {}
    if "val" in splits and _import_fraction(dataset) not in (None, config.validation_fraction):
        # The control asks for another validation share than the import carved: pool and re-split.
        val_images, val_labels = dataset.images("val"), np.asarray(dataset.labels("val")).astype(np.int64)
        train_groups, val_groups = _patient_groups(dataset, "train"), _patient_groups(dataset, "val")
        groups = None
        if train_groups is not None and val_groups is not None:
            groups = np.concatenate([train_groups.astype(str), val_groups.astype(str)])
        images, labels = np.concatenate([images, val_images]), np.concatenate([labels, val_labels])
        train_index, validation_index = split_validation(labels, config.validation_fraction, config.seed, groups)
        arrays["train"] = (images[train_index], labels[train_index])
        arrays["val"] = (images[validation_index], labels[validation_index])
        print(f"validation: train and val of {dataset.name!r} (carved at {_import_fraction(dataset)} on import) "
              f"re-split by patient at {config.validation_fraction}: {len(validation_index)} validation images",
              flush=True)
    elif "val" in splits:
        arrays["train"] = (images, labels)
        arrays["val"] = (dataset.images("val"), np.asarray(dataset.labels("val")).astype(np.int64))
    else:
        train_index, validation_index = split_validation(labels, config.validation_fraction,
                                                         config.seed, _patient_groups(dataset, "train"))
        arrays["train"] = (images[train_index], labels[train_index])
        arrays["val"] = (images[validation_index], labels[validation_index])
    if "test" in splits:
        arrays["test"] = (dataset.images("test"), np.asarray(dataset.labels("test")).astype(np.int64))
    for split in ("train", "val"):
        if len(np.unique(arrays[split][1])) < 2:
            raise DatasetError(f"The {split} split of {dataset.name!r} holds one class only; both normal "
                               f"and pneumonia images are needed to train and validate.")
    return arrays


def class_weights(labels: np.ndarray, mode: str) -> dict[int, float] | None:
    """``{0: w0, 1: w1}`` for "balanced" (n / (2 · count), scikit-learn's rule), ``None`` for "none"."""
    if mode == "none":
        return None
    labels = np.asarray(labels).reshape(-1)
    counts = np.bincount(labels, minlength=2)
    return {label: float(len(labels) / (2 * counts[label])) if counts[label] else 0.0 for label in (0, 1)}


# ------------------------------------------------------------------------------------- tf.data pipeline
def build_augmentation(config: TrainingConfig):
    """The tutorial's augmentation as Keras preprocessing layers, or ``None`` when every strength is 0.

    Rotation ±``rotation_degrees``, zoom ±``zoom`` (height and width independently, like Keras'
    old ImageDataGenerator), shifts ``width_shift``/``height_shift`` (fractions), horizontal flip; then
    (not in the tutorial) brightness ±``brightness``·255 and contrast ×(1 ± ``contrast``) per image.
    Input and output: (n, s, s, 1) float32, values 0–255.
    """
    from cxr.tensorflow_loader import keras
    from cxr.tensorflow_loader import keras_layers as layers

    seed = config.seed
    steps = []
    if config.rotation_degrees > 0:
        steps.append(layers.RandomRotation(config.rotation_degrees / 360.0, fill_mode="nearest", seed=seed))
    if config.zoom > 0:
        steps.append(layers.RandomZoom(config.zoom, config.zoom, fill_mode="nearest",
                                       seed=None if seed is None else seed + 1))
    if config.width_shift > 0 or config.height_shift > 0:
        steps.append(layers.RandomTranslation(config.height_shift, config.width_shift, fill_mode="nearest",
                                              seed=None if seed is None else seed + 2))
    if config.horizontal_flip:
        steps.append(layers.RandomFlip("horizontal", seed=None if seed is None else seed + 3))
    # Intensity changes after the geometric ones: exposure and contrast differ between machines and
    # hospitals (Kermany's test normals look different from its train ones), and the network should
    # not read the diagnosis from them. Both layers clip to 0-255. getattr: a duck-typed config object
    # without these settings (older callers) means no intensity augmentation.
    brightness, contrast = getattr(config, "brightness", 0.0), getattr(config, "contrast", 0.0)
    if brightness > 0:
        steps.append(layers.RandomBrightness(brightness, value_range=(0, 255),
                                             seed=None if seed is None else seed + 4))
    if contrast > 0:
        steps.append(layers.RandomContrast(contrast, value_range=(0, 255),
                                           seed=None if seed is None else seed + 5))
    # Acquisition changes that are not affine (cxr.photometric): a contrast curve, sharpness, noise, the
    # background level; and random resized crops. getattr as above.
    photometric, random_crop = getattr(config, "photometric", 0.0), getattr(config, "random_crop", 0.0)
    if photometric > 0 or random_crop > 0:
        from cxr.photometric import RandomPhotometric, RandomResizedCrop

        if random_crop > 0:
            steps.insert(0, RandomResizedCrop(random_crop, seed=None if seed is None else seed + 6))
        if photometric > 0:
            steps.append(RandomPhotometric(photometric, seed=None if seed is None else seed + 7))
    return keras.Sequential(steps, name="augmentation") if steps else None


def make_dataset(images: np.ndarray, labels: np.ndarray, *, batch_size: int, training: bool,
                 augmentation=None, seed: int | None = None, weights: dict[int, float] | None = None,
                 max_batches: int | None = None):
    """A ``tf.data.Dataset`` of batches ``(images (b, s, s, 1), labels (b, 1) float32[, weights (b,)])``.

    Images stay uint8 until a batch is formed; with ``augmentation`` (train only) they become float32
    0–255 in the map. ``training`` shuffles (whole split, reshuffled each epoch, seeded when ``seed``).
    """
    from cxr.tensorflow_loader import tensorflow as tf

    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., np.newaxis]  # a view: (n, s, s) -> (n, s, s, 1), no copy
    targets = np.asarray(labels, dtype=np.float32).reshape(-1, 1)
    tensors: tuple = (images, targets)
    if weights is not None:
        table = np.array([weights[0], weights[1]], dtype=np.float32)
        tensors = (images, targets, table[np.asarray(labels).reshape(-1).astype(np.int64)])
    dataset = tf.data.Dataset.from_tensor_slices(tensors)
    if training:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if max_batches is not None:
        dataset = dataset.take(max_batches)
    if augmentation is not None and training:
        def augment(batch_images, *rest):
            return (augmentation(tf.cast(batch_images, tf.float32), training=True), *rest)

        dataset = dataset.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    # In-memory tensors have no files to shard: split by element across workers.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


# ------------------------------------------------------------------------------------------- strategies
def tf_config_role() -> tuple[str | None, int]:
    """(task type, index) from ``$TF_CONFIG``, or (None, 0) when unset."""
    try:
        task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    except json.JSONDecodeError as error:
        raise CxrError(f"TF_CONFIG is not valid JSON ({error}); expected "
                       f'{{"cluster": {{"worker": ["host:port", ...]}}, "task": {{"type": "worker", '
                       f'"index": 0}}}}.') from error
    return task.get("type"), int(task.get("index", 0))


def is_chief(strategy_name: str) -> bool:
    """Whether this process writes the run directory: always, except a non-chief multi-worker task."""
    if strategy_name != "multi-worker":
        return True
    task_type, index = tf_config_role()
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    if task_type == "chief":
        return True
    return task_type in (None, "worker") and index == 0 and "chief" not in cluster


def make_strategy(name: str):
    """The ``tf.distribute`` strategy called ``name`` (default, mirrored, multi-worker)."""
    from cxr.tensorflow_loader import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        if "TF_CONFIG" not in os.environ:
            raise CxrError("strategy 'multi-worker' needs TF_CONFIG describing the cluster; received none. "
                           'Set TF_CONFIG=\'{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": '
                           '{"type": "worker", "index": 0}}\' on each machine (see README).')
        tf_config_role()  # validates the JSON
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    raise CxrError(f"Unknown strategy {name!r}; choose default, mirrored or multi-worker.")


# ---------------------------------------------------------------------------------------- stop requests
class StopRequested(Exception):
    """Raised from a callback to leave ``fit`` right after the current batch."""


def install_stop_signal_handler() -> None:
    """Make SIGTERM a stop request (finish the batch, save, state ``stopped``) instead of a kill."""
    def handle(signum, frame):  # noqa: ARG001
        _stop_signal["received"] = True

    signal.signal(signal.SIGTERM, handle)


def stop_signal_received() -> bool:
    return _stop_signal["received"]


# ------------------------------------------------------------------------------------------- callbacks
def process_identity() -> dict:
    """``{"pid", "pid_created"}`` of this process, so readers can tell a dead (or reused) pid."""
    import psutil

    return {"pid": os.getpid(), "pid_created": psutil.Process().create_time()}


def _current_learning_rate(model) -> float:
    from cxr.tensorflow_loader import keras

    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def _resumable_plateau(state: dict | None, **settings):
    """``ReduceLROnPlateau`` whose counters survive a resume (Keras resets them in on_train_begin)."""
    from cxr.tensorflow_loader import keras

    class ResumablePlateau(keras.callbacks.ReduceLROnPlateau):
        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if state:
                self.best = state.get("best", self.best)
                self.wait = state.get("wait", 0)
                self.cooldown_counter = state.get("cooldown_counter", 0)

        def state(self) -> dict:
            return {"best": float(self.best), "wait": int(self.wait),
                    "cooldown_counter": int(self.cooldown_counter)}

    return ResumablePlateau(**settings)


def make_run_callback(run_dir: Path, config: TrainingConfig, *, steps_per_epoch: int, initial_epoch: int,
                      checkpoint_state: dict | None, plateau=None, write_files: bool = True,
                      validation_batches: int = 0):
    """The callback that writes the run directory (see module docstring); ``write_files=False`` for a
    non-chief multi-worker task, which trains but leaves the files to the chief."""
    from cxr.tensorflow_loader import keras

    class RunCallback(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
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
            if not write_files or (not force and now - self.last_write < STATUS_INTERVAL_SECONDS):
                return
            self.last_write = now
            self.batch_log.flush()  # the batch rows travel with the status writes: no extra wake-ups
            runs.write_status(run_dir, **fields)

        def _eta(self, batch: int, validating: bool = False) -> float | None:
            return self.timer.seconds_left(batches_left=steps_per_epoch - batch,
                                           epochs_left=config.epochs - self.epoch - 1,
                                           steps_per_epoch=steps_per_epoch,
                                           validation_batches=self.validation_batches, validating=validating)

        def _check_stop(self) -> None:
            reason = None
            if stop_signal_received():
                reason = "SIGTERM"
            # One stat() per batch: microseconds next to a training step, and the stop is exact.
            elif write_files and runs.stop_requested(run_dir):
                reason = "stop file"
            if reason is not None:
                if self.batch_log is not None:
                    self.batch_log.flush()  # the last batches before the stop stay in the log
                raise StopRequested(reason)

        def on_train_begin(self, logs=None):
            self._status(force=True, state="running", epochs=config.epochs, batches=steps_per_epoch,
                         epoch=initial_epoch + 1, batch=0, message="training", error=None,
                         **process_identity(), started=runs.now_iso())

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            self.epoch_started = time.monotonic()
            self.timer.epoch_begin(self.epoch_started)
            self.epoch_learning_rate = _current_learning_rate(self.model)
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
            self._status(force=True, batch=steps_per_epoch, message="validating",
                         eta_seconds=self._eta(steps_per_epoch, validating=True))

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
            if write_files:
                self.batch_log.flush()
                if improved:
                    self.model.save_weights(str(run_dir / runs.BEST_WEIGHTS_FILE))
                # History first, checkpoint second: a kill between them leaves a row whose checkpoint
                # is missing, and resume drops that row and runs the epoch again.
                runs.append_history_row(run_dir, row)
                self.save_checkpoint(epoch + 1)
            if config.early_stopping and self.wait >= config.early_stopping_patience:
                self.model.stop_training = True
                self._status(force=True, message=f"early stopping: no better {self.monitor} for "
                                                 f"{self.wait} epochs (best at epoch {self.best_epoch})")
            if stop_signal_received() or (write_files and runs.stop_requested(run_dir)):
                raise StopRequested("stop request at the end of an epoch")

        def save_checkpoint(self, finished_epochs: int) -> None:
            # A full disk (ENOSPC) or a kill mid-write drops the partial file and keeps the last checkpoint.
            with atomic_path(run_dir / runs.CHECKPOINT_FILE) as temporary:
                self.model.save(str(temporary))
            atomic_write_json(run_dir / runs.CHECKPOINT_INFO_FILE, {
                "epoch": finished_epochs, "best_value": self.best_value, "best_epoch": self.best_epoch,
                "monitor": self.monitor, "wait": self.wait, "saved": runs.now_iso(),
                "plateau": plateau.state() if plateau is not None else None,
            })

    return RunCallback()


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
    model = build_model(config.model, (config.image_size, config.image_size, 1), **settings)
    learning_rate: Any = config.learning_rate
    if config.schedule == "cosine":
        alpha = min(1.0, config.min_learning_rate / config.learning_rate)
        learning_rate = keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=max(1, config.epochs * steps_per_epoch), alpha=alpha)
    compile_model(model, optimizer=config.optimizer, learning_rate=learning_rate,
                  label_smoothing=getattr(config, "label_smoothing", 0.0))
    return model


def _prebuild_for_multi_worker(model, strategy, train_data) -> None:
    """Work around Keras 3.15 under MultiWorkerMirroredStrategy: ``fit`` first reduces a distributed
    batch of the nested (x, y, w) structure to build the model symbolically, and the collective reduce
    refuses nests ("Attempt to convert a value (PerReplica…) to a Tensor"). Build from one local batch
    instead and skip that step (the instance attribute shadows the method on this model only)."""
    with strategy.scope():
        model._symbolic_build(data_batch=next(iter(train_data)))
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    _patch_keras_multi_worker_reduce()


def _patch_keras_multi_worker_reduce() -> None:
    """Work around Keras 3.15 under MultiWorkerMirroredStrategy (tensorflow/tensorflow#72388): the
    train step reduces each scalar metric with ``strategy.reduce("MEAN", v, axis=0)``, which fails on a
    0-d value ("Invalid reduction dimension 0 for input with 0 dimensions"). Reduce scalars across
    replicas with ``axis=None`` instead (the values are already synchronized, so the mean is exact).
    Only called for the multi-worker strategy; other strategies never reach the patched branch."""
    from cxr.tensorflow_loader import import_keras

    import_keras()  # quietly, before reaching into Keras' internals
    from keras.src.backend.tensorflow import trainer as tensorflow_trainer

    original = tensorflow_trainer.reduce_per_replica
    if getattr(original, "cxr_patched", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if tensorflow_trainer._collective_all_reduce_multi_worker(strategy) and reduction in ("auto", "mean"):
            from keras.src import tree

            def reduce_one(value):
                rank = getattr(getattr(value, "shape", None), "rank", None)
                return strategy.reduce("MEAN", value, axis=0 if rank else None)

            return tree.map_structure(reduce_one, values)
        return original(values, strategy, reduction)

    reduce_per_replica.cxr_patched = True
    tensorflow_trainer.reduce_per_replica = reduce_per_replica


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
    from cxr.population_detector import fit_for_run

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

    ``dataset``: anything with the ``Dataset`` interface (``cxr.datasets.Dataset``, ``ArrayDataset``).
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


def _train(dataset, config: TrainingConfig, run_dir: Path, *, resume: bool, chief: bool,
           extra_callbacks: tuple, verbose) -> TrainingResult:
    strategy = make_strategy(config.strategy)  # first: multi-worker must start before other TF work
    from cxr.tensorflow_loader import keras

    _set_determinism(config.seed)
    (run_dir / runs.STOP_FILE).unlink(missing_ok=True)
    arrays = training_arrays(dataset, config)
    train_images, train_labels = arrays["train"]
    steps_per_epoch = math.ceil(len(train_images) / config.batch_size)
    if config.max_batches_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, config.max_batches_per_epoch)
    # Multi-worker splits each batch across workers; every worker must shuffle the same way.
    data_seed = config.seed if config.seed is not None or config.strategy != "multi-worker" else 0
    train_data = make_dataset(train_images, train_labels, batch_size=config.batch_size, training=True,
                              augmentation=build_augmentation(config), seed=data_seed,
                              weights=class_weights(train_labels, config.class_weighting),
                              max_batches=config.max_batches_per_epoch)
    validation_data = make_dataset(*arrays["val"], batch_size=config.batch_size, training=False)

    checkpoint_state, initial_epoch = None, 0
    if resume:
        checkpoint_state = runs.read_checkpoint_info(run_dir)
        if checkpoint_state and not (run_dir / runs.CHECKPOINT_FILE).exists():
            checkpoint_state = None
    with strategy.scope():
        if checkpoint_state:
            initial_epoch = int(checkpoint_state["epoch"])
            from cxr.models import register_layers

            register_layers()
            model = keras.models.load_model(run_dir / runs.CHECKPOINT_FILE, safe_mode=True)
        else:
            model = _build_compiled_model(config, steps_per_epoch)
    if chief:
        runs.truncate_history(run_dir, initial_epoch)
        truncate_batch_log(run_dir, initial_epoch)
        if initial_epoch == 0:
            (run_dir / runs.HISTORY_FILE).unlink(missing_ok=True)

    callbacks: list = list(extra_callbacks)
    plateau = None
    if config.schedule == "plateau":
        plateau = _resumable_plateau((checkpoint_state or {}).get("plateau"), monitor="val_accuracy",
                                     patience=config.plateau_patience, factor=config.plateau_factor,
                                     min_lr=config.min_learning_rate, verbose=1)
        callbacks.append(plateau)
    if chief and tensorboard_available():
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / runs.TENSORBOARD_DIR),
                                                     update_freq="epoch", write_graph=False))
    elif chief:
        print("note: the tensorboard package is not installed; no TensorBoard logs for this run "
              "(pip install tensorboard)", flush=True)
    run_callback = make_run_callback(run_dir, config, steps_per_epoch=steps_per_epoch,
                                     initial_epoch=initial_epoch, checkpoint_state=checkpoint_state,
                                     plateau=plateau, write_files=chief,
                                     validation_batches=math.ceil(len(arrays["val"][1]) / config.batch_size))
    callbacks.append(run_callback)  # last: it checkpoints after the plateau callback changed the rate

    if config.strategy == "multi-worker":
        _prebuild_for_multi_worker(model, strategy, train_data)
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
