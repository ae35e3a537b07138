"""Model registry (cxr/models.py): shapes, parameter counts, uint8 input, and one epoch of training."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_training import synthetic_split

from cxr import models
from cxr.errors import CxrError, ModelFileError


def test_seed_has_the_tutorials_parameter_count():
    model = models.build_model("seed", (150, 150, 1))
    assert model.count_params() == 4_310_081
    # Layer for layer: 6 convolutions, 4 batch norms, 3 dense layers (plus the logit), no extra weights.
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Conv2D") == 6 and kinds.count("BatchNormalization") == 4
    assert kinds.count("MaxPooling2D") == 5 and kinds.count("Dense") == 3


def test_fast_network_is_far_cheaper_than_seed():
    seed = models.build_model("seed", (150, 150, 1))
    fast = models.build_model("fast", (150, 150, 1))
    assert fast.count_params() < seed.count_params() / 20
    assert models.count_multiply_adds(fast) < models.count_multiply_adds(seed) / 20


@pytest.mark.parametrize("name", models.model_names())
def test_every_model_takes_raw_uint8_and_outputs_probabilities(name):
    settings = {"weights": None} if name in models.TRANSFER_MODELS else {}
    model = models.build_model(name, (32, 32, 1), **settings)
    images = np.zeros((2, 32, 32, 1), np.uint8)
    images[1] = 255
    scores = model.predict(images, verbose=0)
    assert scores.shape == (2, 1) and np.all((scores >= 0) & (scores <= 1))
    # The scaling is inside the model: raw 0-255 floats give the same answer as uint8. Called directly (as the
    # Predictor does), not through predict(), which would trace a new graph for each dtype and model (seconds
    # for a backbone).
    np.testing.assert_allclose(model(images.astype("float32"), training=False), scores, rtol=1e-5)
    logits = np.asarray(models.logit_model(model)([images], training=False))  # its inputs are a list of one
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), scores, rtol=1e-4, atol=1e-6)
    assert model.get_layer(models.PROBABILITY_LAYER) is model.layers[-1]


TRAINING_CASES = [pytest.param(name, marks=pytest.mark.slow) if name in models.TRANSFER_MODELS else name
                  for name in models.model_names()]  # the ImageNet backbones take 20-30 s on two cores


@pytest.mark.parametrize("name", TRAINING_CASES)
def test_every_model_trains_one_epoch_and_round_trips_through_keras_file(name, tmp_path):
    import keras

    settings = {"weights": None} if name in models.TRANSFER_MODELS else {}
    model = models.build_model(name, (32, 32, 1), **settings)
    models.compile_model(model, optimizer="adam", learning_rate=1e-3)
    images, labels = synthetic_split(16)
    history = model.fit(images[..., None], labels.astype("float32"), epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert set(history.history) >= {"loss", "accuracy", "auc"}
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    # Called directly, as the Predictor does: two predict() graphs would cost seconds per backbone.
    np.testing.assert_allclose(loaded(images[:4, ..., None], training=False),
                               model(images[:4, ..., None], training=False), rtol=1e-5, atol=1e-6)


def test_unknown_model_and_bad_shape_are_clear_errors():
    with pytest.raises(CxrError, match="resnet9000"):
        models.build_model("resnet9000")
    with pytest.raises(CxrError, match=r"\(150, 150, 3\)"):
        models.build_model("fast", (150, 150, 3))
    with pytest.raises(CxrError, match="at least 32"):
        models.build_model("seed", (16, 16, 1))


def test_missing_imagenet_weights_raise_a_clear_message(monkeypatch):
    import keras

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example.invalid: None -- [Errno -2] Name not known")

    monkeypatch.setattr(keras.applications, "MobileNetV3Small", offline)
    with pytest.raises(ModelFileError, match="weights=None") as caught:
        models.build_model("mobilenet_v3_small", (64, 64, 1), weights="imagenet")
    assert "URL fetch failure" in str(caught.value)


def test_pretrained_backbone_is_frozen_and_random_one_trainable():
    model = models.build_model("mobilenet_v3_small", (32, 32, 1), weights=None)
    backbone = [layer for layer in model.layers if isinstance(layer, type(model))][0]
    assert backbone.trainable
    frozen = models.build_model("mobilenet_v3_small", (32, 32, 1), weights=None, trainable_backbone=False)
    trainable_count = sum(int(np.prod(w.shape)) for w in frozen.trainable_weights)
    assert trainable_count == frozen.get_layer(models.LOGIT_LAYER).count_params()
