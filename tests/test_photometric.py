"""Acquisition augmentation (cxr/photometric.py), its settings, the command line flags and label smoothing."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from cxr.config import TrainingConfig, preset


def _images(count: int = 8, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(3)
    gradient = np.linspace(10, 240, size, dtype=np.float32)[None, :, None, None]
    return np.clip(gradient + rng.normal(0, 5, (count, size, size, 1)), 0, 255).astype(np.float32)


def _stretch(images: np.ndarray) -> np.ndarray:
    """Each image's min-max range to 0-1: what is left after any exposure/contrast (affine) change."""
    flat = images.reshape(len(images), -1)
    low, high = flat.min(axis=1, keepdims=True), flat.max(axis=1, keepdims=True)
    return ((flat - low) / (high - low)).reshape(images.shape)


def test_photometric_changes_are_not_affine_stay_in_range_and_vanish_at_inference():
    from cxr.photometric import RandomPhotometric

    images = _images()
    layer = RandomPhotometric(1.0, seed=1)
    changed = np.asarray(layer(images, training=True))
    assert changed.shape == images.shape and changed.min() >= 0 and changed.max() <= 255
    # Gamma, sharpening and noise survive a per-image affine normalisation (brightness/contrast would not).
    assert np.abs(_stretch(changed) - _stretch(images)).mean() > 0.01
    np.testing.assert_array_equal(np.asarray(layer(images, training=False)), images)
    with pytest.raises(ValueError, match="photometric strength"):
        RandomPhotometric(0.0)


def test_random_resized_crop_zooms_into_part_of_the_image():
    from cxr.photometric import RandomResizedCrop

    row = np.linspace(10, 240, 32, dtype=np.float32)  # a left-to-right gradient, the same on every row
    images = np.broadcast_to(row[None, None, :, None], (8, 32, 32, 1)).copy()
    cropped = np.asarray(RandomResizedCrop(0.5, seed=2)(images, training=True))
    assert cropped.shape == images.shape
    # A crop of a left-to-right gradient spans a narrower range of grey levels than the whole image.
    span = cropped[:, 16, :, 0].max(axis=1) - cropped[:, 16, :, 0].min(axis=1)
    full = images[:, 16, :, 0].max(axis=1) - images[:, 16, :, 0].min(axis=1)
    assert np.all(span <= full + 1e-3) and np.any(span < full - 20)
    with pytest.raises(ValueError, match="random crop"):
        RandomResizedCrop(1.0)


def test_settings_reach_the_pipeline_the_loss_and_the_command_line():
    from cxr.commands.train import config_from_args, register
    from cxr.pipeline import build_augmentation
    from cxr.training import _build_compiled_model

    config = TrainingConfig(image_size=32, photometric=0.5, random_crop=0.3, label_smoothing=0.1,
                            rotation_degrees=0, zoom=0, width_shift=0, height_shift=0, horizontal_flip=False)
    names = [type(layer).__name__ for layer in build_augmentation(config).layers]
    assert names == ["RandomResizedCrop", "RandomPhotometric"]
    assert build_augmentation(config.replace(photometric=0.0, random_crop=0.0)) is None
    assert _build_compiled_model(config, steps_per_epoch=1).loss.label_smoothing == pytest.approx(0.1)
    for name, bad in (("photometric", 1.5), ("random_crop", 0.9), ("label_smoothing", -0.1)):
        with pytest.raises(ValueError, match=name):
            TrainingConfig(**{name: bad})
    old = preset("fast").to_dict()
    del old["photometric"], old["random_crop"], old["label_smoothing"]  # a config.json from before
    assert TrainingConfig.from_dict(old).photometric == 0.0
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["train", "data", "--photometric", "0.7", "--random-crop", "0.2",
                              "--label-smoothing", "0.05"])
    parsed = config_from_args(args, 150)
    assert (parsed.photometric, parsed.random_crop, parsed.label_smoothing) == (0.7, 0.2, 0.05)
    no_augmentation = config_from_args(
        parser.parse_args(["train", "data", "--photometric", "0.7", "--no-augmentation"]), 150)
    assert no_augmentation.photometric == 0.0 and no_augmentation.random_crop == 0.0


def test_augmented_batches_keep_their_static_shape_and_train_a_normalised_model():
    """The model after the pipeline (fast_norm's normalisation, the stem) needs the static image size: a crop
    that returned (None, None, None, 1) broke a real training run."""
    from cxr import models
    from cxr.pipeline import build_augmentation, make_dataset

    config = TrainingConfig(image_size=32, photometric=1.0, random_crop=0.3)
    images = _images(8).astype(np.uint8)[..., 0]
    data = make_dataset(images, np.arange(8) % 2, batch_size=4, training=True,
                        augmentation=build_augmentation(config), seed=1)
    assert tuple(data.element_spec[0].shape) == (None, 32, 32, 1)
    model = models.build_model("fast_norm", (32, 32, 1))
    models.compile_model(model, optimizer="adam")
    assert np.isfinite(model.fit(data, epochs=1, verbose=0).history["loss"][0])
