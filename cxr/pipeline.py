"""The training input: a data set's splits as arrays, class weights, and the ``tf.data`` pipeline.

``training_arrays`` gives train / validation / test arrays (carving or re-splitting validation by patient at
the fraction asked, with the import's splitter ``cxr.splits.assign_splits``); ``make_dataset`` batches uint8
images into a ``tf.data.Dataset`` that augments on the fly (``build_augmentation``: Keras preprocessing
layers, train split only) and prefetches.

Why augmentation lives in the tf.data map and not in the model: the saved model then holds no random
layers, loads with ``safe_mode`` and predicts the same thing every time. TensorFlow, Keras and
scikit-learn are imported inside the functions that use them.
"""

from __future__ import annotations

import numpy as np

from cxr.config import TrainingConfig
from cxr.errors import DatasetError


# ------------------------------------------------------------------------------------------ split arrays
def _labels(dataset, split: str) -> np.ndarray:
    return np.asarray(dataset.labels(split)).astype(np.int64)


def _resplit(dataset, config: TrainingConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Pool train (and val) and carve validation at ``config.validation_fraction`` with the import's splitter
    (``cxr.splits.assign_splits``: by patient, per class, seeded by ``config.seed``)."""
    import pandas as pd

    from cxr.splits import assign_splits

    pooled = [split for split in ("train", "val") if split in dataset.splits]
    manifest = dataset.manifest
    rows = pd.concat([manifest[manifest["split"] == split] for split in pooled], ignore_index=True)
    images = np.concatenate([dataset.images(split) for split in pooled])
    labels = np.concatenate([_labels(dataset, split) for split in pooled])
    if len(rows) != len(labels) or not np.array_equal(rows["label"].to_numpy(dtype=np.int64), labels):
        raise DatasetError(f"The manifest of data set {dataset.name!r} does not match its arrays ({len(rows)} rows "
                           f"for {len(labels)} images); import the data set again.")
    split = assign_splits(rows, validation_fraction=config.validation_fraction, seed=config.seed).to_numpy()
    return {name: (images[split == name], labels[split == name]) for name in ("train", "val")}


def training_arrays(dataset, config: TrainingConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train", "val", ["test"]: (images (n, s, s) uint8, labels (n,) int64)}`` of a ``cxr.datasets.Dataset``.

    Uses the data set's own "val" split as it is when it has one and the import carved it at
    ``config.validation_fraction`` (or it came with the source, not imported). An imported split carved at
    another fraction is pooled with train and re-split at the fraction asked; without a "val" split,
    validation is carved from train the same way (``_resplit``). The test split is never touched."""
    if int(dataset.image_size) != config.image_size:
        raise DatasetError(f"Data set {dataset.name!r} holds {dataset.image_size} px images but the "
                           f"training settings ask for image_size={config.image_size}. Set image_size to "
                           f"{dataset.image_size}, or re-import the data at {config.image_size} px.")
    splits = tuple(dataset.splits)
    if "val" in splits and dataset.validation_fraction in (None, config.validation_fraction):
        arrays = {split: (dataset.images(split), _labels(dataset, split)) for split in ("train", "val")}
    else:
        arrays = _resplit(dataset, config)
        if "val" in splits:
            print(f"validation: train and val of {dataset.name!r} (carved at {dataset.validation_fraction} on "
                  f"import) re-split by patient at {config.validation_fraction}: {len(arrays['val'][1])} "
                  "validation images", flush=True)
    if "test" in splits:
        arrays["test"] = (dataset.images("test"), _labels(dataset, "test"))
    for split in ("train", "val"):
        if len(np.unique(arrays[split][1])) < 2:
            raise DatasetError(f"The {split} split of {dataset.name!r} holds one class only; both normal "
                               f"and pneumonia images are needed to train and validate.")
    return arrays


def class_weights(labels: np.ndarray, mode: str) -> dict[int, float] | None:
    """``{0: w0, 1: w1}`` for "balanced" (scikit-learn's n / (2 · count)), ``None`` for "none".

    Raises ``DatasetError`` when ``labels`` hold one class only (its weight would be undefined)."""
    if mode == "none":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(labels).reshape(-1)
    if np.unique(labels).size < 2:
        raise DatasetError(f"Balanced class weights need both classes; the labels hold only {np.unique(labels)}. "
                           f"Add images of the missing class or set class_weighting to 'none'.")
    values = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
    return {0: float(values[0]), 1: float(values[1])}


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
                 max_batches: int | None = None, mixup: float = 0.0):
    """A ``tf.data.Dataset`` of batches ``(images (b, s, s, 1), labels (b, 1) float32[, weights (b,)])``.

    Images stay uint8 until a batch is formed; with ``augmentation`` (train only) they become float32
    0–255 in the map. ``training`` shuffles (whole split, reshuffled each epoch, seeded when ``seed``).
    ``mixup`` > 0 (train only) blends each image with another of its batch after augmentation, see
    ``mix_batch``: labels become fractions in [0, 1] and the images float32.
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
    if mixup > 0 and training:
        # One stateless seed pair per batch from a seeded random stream: the same blends on every run
        # with the same seed, whatever the number of parallel calls.
        pairs = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2, drop_remainder=True)
        dataset = tf.data.Dataset.zip((dataset, pairs)).map(
            lambda batch, pair: mix_batch(*batch, alpha=mixup, seed=pair),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    # In-memory tensors have no files to shard: split by element across workers.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def mix_batch(batch_images, targets, *weights, alpha: float, seed):
    """Mixup (Zhang et al., 2018) inside one batch: every image ``i`` becomes ``λᵢ·xᵢ + (1 − λᵢ)·xⱼ`` with
    ``j`` a random partner from the same batch and ``λᵢ ~ Beta(alpha, alpha)``; its target (and its class
    weight, when given) are blended with the same ``λᵢ``. ``seed``: an int64 tensor of shape (2,).

    Why: Kermany's training images carry easy cues (frame, body size) that separate the classes almost
    perfectly; blended images with fractional targets reward a smoother score instead of a confident one.
    Returns float32 images 0–255 of the input's shape and float32 targets (b, 1) in [0, 1].
    """
    from cxr.tensorflow_loader import tensorflow as tf

    seed = tf.cast(seed, tf.int64)
    images = tf.cast(batch_images, tf.float32)
    count = tf.shape(images)[0]
    partner = tf.argsort(tf.random.stateless_uniform([count], seed=seed))
    first = tf.random.stateless_gamma([count], seed=seed + 1, alpha=alpha)
    second = tf.random.stateless_gamma([count], seed=seed + 2, alpha=alpha)
    share = first / tf.maximum(first + second, 1e-12)  # Beta(alpha, alpha) from two gammas

    def blend(values):  # images (b, s, s, 1), targets (b, 1) or weights (b,): the same λᵢ along the first axis
        own = tf.reshape(share, [-1] + [1] * (len(values.shape) - 1))
        return own * values + (1.0 - own) * tf.gather(values, partner)

    return (blend(images), blend(targets), *(blend(w) for w in weights))


__all__ = ["training_arrays", "class_weights", "build_augmentation", "make_dataset", "mix_batch"]
