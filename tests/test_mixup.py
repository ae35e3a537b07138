"""Mixup (``TrainingConfig.mixup``): blended images carry blended targets, the blend share follows
Beta(α, α), validation is never mixed, and the setting reaches the pipeline from the config and the command line."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from cxr.config import TrainingConfig, preset
from cxr.pipeline import make_dataset, mix_batch


def _two_class_images(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat black images labelled 0 and flat white ones labelled 1, alternating: a pixel's grey / 255 is
    then exactly the blend share of the white partner, so it must equal the blended target."""
    labels = np.arange(count) % 2
    images = np.repeat((labels * 255).astype(np.uint8)[:, None, None], 8, axis=1).repeat(8, axis=2)
    return images, labels


def _shares(alpha: float, count: int = 3000) -> np.ndarray:
    """The blend shares λ of one batch: image ``i`` is the one-hot row ``eᵢ``, so the mixed image is
    ``λᵢ·eᵢ + (1 − λᵢ)·eⱼ`` and its ``i``-th entry is λᵢ (images paired with themselves are left out)."""
    from cxr.tensorflow_loader import tensorflow as tf

    images = tf.reshape(tf.eye(count), (count, 1, count, 1))
    mixed, _ = mix_batch(images, tf.zeros((count, 1)), alpha=alpha, seed=tf.constant([5, 6], tf.int64))
    mixed = mixed.numpy().reshape(count, count)
    paired = np.count_nonzero(mixed > 1e-7, axis=1) >= 1
    own = mixed[np.arange(count), np.arange(count)]
    with_another = paired & (own < 1 - 1e-6)
    return own[with_another]


def test_blended_images_carry_the_same_blend_of_targets_and_weights():
    images, labels = _two_class_images(64)
    data = make_dataset(images, labels, batch_size=32, training=True, seed=3, mixup=0.4, weights={0: 3.0, 1: 1.0})
    batches = list(data)
    assert len(batches) == 2
    mixed_count = 0
    for batch_images, targets, weights in batches:
        grey = batch_images.numpy()[:, 0, 0, 0] / 255.0
        targets = targets.numpy()[:, 0]
        assert batch_images.dtype.name == "float32" and batch_images.shape[1:] == (8, 8, 1)
        assert np.all((targets >= 0) & (targets <= 1))
        np.testing.assert_allclose(grey, targets, atol=1e-5)  # the image's blend is the target's blend
        np.testing.assert_allclose(weights.numpy(), 3.0 * (1 - targets) + 1.0 * targets, atol=1e-4)
        # Every pixel of an image is blended by the same share.
        assert np.ptp(batch_images.numpy().reshape(32, -1), axis=1).max() < 1e-3
        mixed_count += int(np.sum((targets > 0.01) & (targets < 0.99)))
    assert mixed_count > 5  # blends happened (a no-op mixup would keep every target at 0 or 1)


def test_blend_share_follows_beta_alpha_alpha():
    """α = 0.2 keeps most images close to one of the pair (U-shaped Beta); α = 1 spreads the share evenly."""
    low = _shares(0.2)
    even = _shares(1.0)
    assert len(low) > 1000 and len(even) > 1000
    near_an_end = lambda share: np.mean((share < 0.1) | (share > 0.9))  # noqa: E731
    assert near_an_end(low) > 0.55  # Beta(0.2, 0.2) puts ~62 % of its mass there
    assert 0.12 < near_an_end(even) < 0.28  # uniform: 20 %
    assert abs(np.mean(even) - 0.5) < 0.03 and abs(np.mean(low) - 0.5) < 0.05  # symmetric


def test_same_seed_same_blends_and_validation_is_never_mixed():
    images, labels = _two_class_images(32)
    first = [t.numpy() for _, t in make_dataset(images, labels, batch_size=16, training=True, seed=7, mixup=0.3)]
    again = [t.numpy() for _, t in make_dataset(images, labels, batch_size=16, training=True, seed=7, mixup=0.3)]
    assert len(first) == len(again) == 2
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    validation = make_dataset(images, labels, batch_size=16, training=False, mixup=0.3)
    for batch_images, targets in validation:
        assert batch_images.dtype.name == "uint8"
        assert set(np.unique(targets.numpy())) <= {0.0, 1.0}
    plain = make_dataset(images, labels, batch_size=16, training=True, seed=7, mixup=0.0)
    for _, targets in plain:
        assert set(np.unique(targets.numpy())) <= {0.0, 1.0}


def test_setting_is_validated_saved_and_reaches_training_from_the_command_line(monkeypatch):
    from cxr import pipeline, training
    from cxr.commands.train import config_from_args, register

    with pytest.raises(ValueError, match="mixup must be a number from 0.0 to 1.0"):
        TrainingConfig(mixup=1.5)
    old = preset("fast").to_dict()
    del old["mixup"]  # a config.json from before the setting existed
    assert TrainingConfig.from_dict(old).mixup == 0.0
    assert TrainingConfig.from_dict(preset("fast", mixup=0.2).to_dict()).mixup == 0.2
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    assert config_from_args(parser.parse_args(["train", "data", "--mixup", "0.2"]), 150).mixup == 0.2
    assert config_from_args(parser.parse_args(["train", "data", "--mixup", "0.2", "--no-augmentation"]),
                            150).mixup == 0.0
    seen = {}
    real = pipeline.make_dataset

    def spy(*args, **kwargs):
        seen.setdefault("mixup", []).append(kwargs.get("mixup", 0.0))
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "make_dataset", spy)
    images, labels = _two_class_images(8)
    arrays = {"train": (images, labels), "val": (images, labels)}
    config = TrainingConfig(image_size=32, batch_size=4, mixup=0.25)
    training._input_data(arrays, config)
    assert seen["mixup"][0] == 0.25
