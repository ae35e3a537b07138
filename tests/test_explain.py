"""Tests of cxr.explain: Grad-CAM finds a bright square a small CNN learnt; SHAP attributions add up."""

from __future__ import annotations

import numpy as np
import pytest

from cxr import explain
from cxr.errors import CxrError

SIZE = 32
SQUARE = 6


def square_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count, 32, 32) uint8 noise images; label 1 has a bright 6x6 square at a random place.

    Returns images, labels and the square's top-left corner (-1 for label 0)."""
    generator = np.random.default_rng(seed)
    images = np.clip(generator.normal(90, 25, (count, SIZE, SIZE)), 0, 255).astype(np.uint8)
    labels = np.arange(count) % 2
    corners = np.full((count, 2), -1)
    for index in np.flatnonzero(labels == 1):
        row, column = generator.integers(1, SIZE - SQUARE - 1, 2)
        images[index, row : row + SQUARE, column : column + SQUARE] = 250
        corners[index] = (row, column)
    return images, labels, corners


def small_cnn():
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 1))
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="last_conv")(x)
    x = layers.GlobalMaxPooling2D()(x)
    x = layers.Dense(1, name="logit")(x)
    outputs = layers.Activation("sigmoid", name="probability")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def square_model():
    images, labels, _ = square_images(400, seed=0)
    model = small_cnn()
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(images[..., None].astype("float32"), labels, epochs=6, batch_size=32, verbose=0)
    return model


def test_gradcam_peaks_on_the_square(square_model):
    images, labels, corners = square_images(40, seed=1)
    predictions = square_model.predict(images[..., None].astype("float32"), verbose=0).ravel()
    assert ((predictions >= 0.5) == labels).mean() >= 0.95  # the model did learn the task
    cam = explain.GradCam(square_model)
    assert cam.layer_path == "last_conv"
    hits = 0
    positives = np.flatnonzero(labels == 1)
    for index in positives:
        heatmap = cam(images[index])
        assert heatmap.shape == (SIZE, SIZE) and heatmap.dtype == np.float32
        assert 0.0 <= heatmap.min() and heatmap.max() == pytest.approx(1.0)
        row, column = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        top, left = corners[index]
        # "On or next to" the square: within 2 pixels of it.
        hits += (top - 2 <= row < top + SQUARE + 2) and (left - 2 <= column < left + SQUARE + 2)
    assert hits >= 0.8 * len(positives), f"heat map peaked on the square for {hits} of {len(positives)} images"


def test_find_last_conv_layer_sequential_and_nested():
    import keras
    from keras import layers

    sequential = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 1)),
            layers.Rescaling(1 / 255),
            layers.Conv2D(4, 3, name="first"),
            layers.SeparableConv2D(4, 3, name="second"),
            layers.MaxPooling2D(),
            layers.GlobalAveragePooling2D(),
            layers.Dense(1),
        ]
    )
    assert [layer.name for layer in explain.find_last_conv_layer(sequential)] == ["second"]
    heatmap = explain.gradcam(sequential, np.full((SIZE, SIZE), 120, np.uint8))
    assert heatmap.shape == (SIZE, SIZE)

    backbone_input = keras.Input((SIZE, SIZE, 3))
    features = layers.Conv2D(4, 3, name="inner_conv")(backbone_input)
    backbone = keras.Model(backbone_input, layers.ReLU(name="inner_relu")(features), name="backbone")
    inputs = keras.Input((SIZE, SIZE, 1))
    rgb = layers.Concatenate()([inputs, inputs, inputs])
    x = layers.GlobalAveragePooling2D()(backbone(rgb))
    nested = keras.Model(inputs, layers.Activation("sigmoid")(layers.Dense(1, name="logit")(x)))
    cam = explain.GradCam(nested)
    assert cam.layer_path == "backbone/inner_relu"
    images, _, _ = square_images(2, seed=3)
    heatmap = cam(images[1], target="pneumonia")
    assert heatmap.shape == (SIZE, SIZE) and np.isfinite(heatmap).all()


def test_dense_only_model_has_no_gradcam():
    import keras
    from keras import layers

    inputs = keras.Input((SIZE, SIZE, 1))
    model = keras.Model(inputs, layers.Dense(1, activation="sigmoid")(layers.Flatten()(inputs)))
    with pytest.raises(CxrError, match="no convolutional layer"):
        explain.GradCam(model)


def test_gradcam_refuses_wrong_image_size(square_model):
    with pytest.raises(CxrError, match="32x32"):
        explain.gradcam(square_model, np.zeros((40, 40), np.uint8))


def test_gradcam_fast_model_at_150_px_gives_a_full_size_map():
    # Its time per image is printed by benchmarks/bench_guards.py (target under 1 s), not limited here.
    from cxr.models import build_model

    model = build_model("fast", (150, 150, 1))
    image = np.random.default_rng(0).integers(0, 256, (150, 150), dtype=np.uint8)
    heatmap = explain.GradCam(model)(image)
    assert heatmap.shape == (150, 150) and heatmap.dtype == np.float32
    assert heatmap.max() == pytest.approx(1.0) and heatmap.min() >= 0.0  # normalised to [0, 1]


def test_shap_attributions_shape_and_sum_tracks_output(square_model):
    train_images, _, _ = square_images(60, seed=4)
    background = explain.background_sample(train_images, num_images=20)
    assert background.shape == (20, SIZE, SIZE)
    explainer = explain.ShapExplainer(square_model, background, num_samples=200)
    images, _, _ = square_images(6, seed=5)
    sums, deltas = [], []
    baseline = square_model.predict(background[..., None].astype("float32"), verbose=0).mean()
    for image in images:
        attributions, seconds = explainer(image)
        assert attributions.shape == (SIZE, SIZE) and attributions.dtype == np.float32
        assert seconds > 0
        sums.append(float(attributions.sum()))
        deltas.append(float(square_model.predict(image[None, ..., None].astype("float32"), verbose=0)[0, 0]) - baseline)
    # Expected gradients' completeness holds in expectation: the sums follow f(x) - E f(background).
    assert np.corrcoef(sums, deltas)[0, 1] > 0.9
    np.testing.assert_allclose(sums, deltas, atol=0.2)
    heatmap = explain.attribution_heatmap(attributions)
    assert heatmap.shape == (SIZE, SIZE) and 0.0 <= heatmap.min() and heatmap.max() <= 1.0


def test_overlay():
    image = np.full((SIZE, SIZE), 100, np.uint8)
    heatmap = np.zeros((8, 8), np.float32)
    heatmap[0, 0] = 1.0
    blended = explain.overlay(image, heatmap, alpha=0.5)
    assert blended.shape == (SIZE, SIZE, 3) and blended.dtype == np.uint8
    np.testing.assert_array_equal(explain.overlay(image, heatmap, alpha=0.0), np.repeat(image[..., None], 3, -1))
    # Hot corner is red-dominant, cold corner blue-dominant (jet colour map, RGB order).
    assert blended[0, 0, 0] > blended[0, 0, 2] and blended[-1, -1, 2] > blended[-1, -1, 0]
    with pytest.raises(CxrError, match="alpha"):
        explain.overlay(image, heatmap, alpha=2)
