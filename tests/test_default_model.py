"""The bundled default model (models/default/) and the fast recipe's intensity augmentation.

- the bundled model loads through ``Predictor.load("default")`` (Keras safe mode), carries its threshold,
  temperature, model card and SHAP background, and stays a few MB;
- it predicts a real X-ray from ../shared/data (skipped when the data are absent);
- its saved test metrics match a re-evaluation on the test split imported afresh from ../shared/data
  (about 7 s: an import into a temporary CXR_HOME and 624 predictions);
- brightness/contrast augmentation (``TrainingConfig.brightness``/``contrast``) follows its settings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cxr import paths
from cxr.config import PRESETS, TrainingConfig
from cxr.predict import Predictor

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT_FOLDER = paths.BUNDLED_MODEL_DIR
REAL_NORMAL = SHARED_DATA / "chest_xray" / "test" / "NORMAL" / "IM-0001-0001.jpeg"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load("default")


def read_metrics() -> dict:
    return json.loads((DEFAULT_FOLDER / "metrics.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------- bundled model
def test_bundled_folder_holds_every_file_and_stays_small():
    for name in ("model.keras", "metrics.json", "model_card.md", "model_card.json", "background.npy", "README.md"):
        assert (DEFAULT_FOLDER / name).is_file(), f"models/default/{name} is missing"
    size_mb = (DEFAULT_FOLDER / "model.keras").stat().st_size / 1024**2
    assert 0.05 < size_mb < 10, f"model.keras is {size_mb:.2f} MB; the bundled model must be a few MB"
    readme = (DEFAULT_FOLDER / "README.md").read_text(encoding="utf-8")
    assert "python -m cxr train" in readme or "train_default_model.sh" in readme


def test_default_predictor_loads_in_safe_mode_with_threshold_and_temperature(predictor):
    # Predictor.load("default") loads with keras safe_mode=True (cxr.model_files.load_model_file): no code in the file.
    metrics = read_metrics()
    assert predictor.image_size == int(predictor.model.inputs[0].shape[1])
    assert 0.0 < predictor.threshold < 1.0
    assert predictor.threshold == pytest.approx(metrics["threshold"])
    assert predictor.temperature > 0 and predictor.temperature == pytest.approx(metrics["temperature"])
    assert metrics["threshold_chosen_on"].startswith("validation")
    # Temperature scaling needs the logit: a one-unit layer whose sigmoid is the model's output.
    from cxr.models import logit_model

    assert predictor.model.get_layer("logit").output.shape[-1] == 1
    images = np.load(DEFAULT_FOLDER / "background.npy", allow_pickle=False)[:4, ..., np.newaxis]
    logits = np.asarray(logit_model(predictor.model).predict(images, verbose=0), np.float64).reshape(-1)
    outputs = np.asarray(predictor.model.predict(images, verbose=0), np.float64).reshape(-1)
    np.testing.assert_allclose(outputs, 1.0 / (1.0 + np.exp(-logits)), atol=1e-5)
    assert np.ptp(logits) > 0  # four training images, four different logits: a real comparison


def test_background_is_a_training_sample_at_the_model_size(predictor):
    background = np.load(DEFAULT_FOLDER / "background.npy", allow_pickle=False)
    assert background.dtype == np.uint8
    assert background.shape == (32, predictor.image_size, predictor.image_size)
    assert background.std() > 10  # real images, not a blank placeholder
    assert predictor.shap_background().shape == background.shape


def test_model_card_describes_data_threshold_and_limits():
    card_text = (DEFAULT_FOLDER / "model_card.md").read_text(encoding="utf-8")
    metrics = read_metrics()
    # The card names the rule that chose the shipped threshold (metrics.json's), with its value.
    sensitivity = f"validation sensitivity >= {metrics['min_sensitivity'] or 0:.0%}".replace("%", " %")
    rule_phrase = {"youden": "Youden", "sensitivity": sensitivity, "fixed": "fixed"}[metrics["threshold_rule"]]
    for phrase in ("Kermany", "pediatric", "patient", "453", rule_phrase, f"**{metrics['threshold']:.4f}**",
                   "Temperature", "Not a diagnostic device", "Limitations", "Intended use"):
        assert phrase.lower() in card_text.lower(), f"model card does not mention {phrase!r}"
    card = json.loads((DEFAULT_FOLDER / "model_card.json").read_text(encoding="utf-8"))
    assert card["metrics"]["test"]["accuracy"]["value"] == pytest.approx(read_metrics()["test"]["accuracy"]["value"])


def test_scores_follow_the_input_and_stay_probabilities(predictor):
    size = predictor.image_size
    rows = np.linspace(0, 255, size, dtype=np.float32)
    images = np.stack([np.zeros((size, size)), np.full((size, size), 255.0), np.tile(rows, (size, 1))]).astype(np.uint8)
    probabilities = predictor.probabilities(images)
    assert probabilities.shape == (3,) and np.all((probabilities >= 0) & (probabilities <= 1))
    raw = predictor.probabilities(images, calibrated=False)
    if predictor.temperature != 1.0:
        assert not np.allclose(raw, probabilities)  # the temperature is applied


# ------------------------------------------------------------------------------------------ real data
def test_default_model_predicts_a_real_xray(predictor):
    if not REAL_NORMAL.is_file():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    (result,) = predictor.predict([REAL_NORMAL], explain="gradcam")
    assert result.ok, result.error
    # The calibrated probability is sigmoid(logit / temperature) of the image the model saw.
    (logit,) = predictor.raw_logits(result.image[np.newaxis])
    assert result.probability == pytest.approx(1.0 / (1.0 + np.exp(-logit / predictor.temperature)), abs=1e-6)
    assert result.label == ("pneumonia" if result.probability >= result.threshold else "normal")
    assert result.heatmap.shape == (predictor.image_size, predictor.image_size)


def test_saved_test_metrics_match_a_re_evaluation_on_the_test_split(predictor):
    source = SHARED_DATA / "chest_xray"
    if not (source / "test").is_dir():
        pytest.skip(f"real data not found at {source}")
    from cxr.config import DataConfig
    from cxr.datasets import import_dataset, load_dataset
    from cxr.evaluation import roc_auc

    # The autouse fixture points CXR_HOME at a temporary folder: import the data set there afresh.
    report = import_dataset(source, config=DataConfig(image_size=predictor.image_size))
    dataset = load_dataset(report.name)
    images, labels = dataset.images("test"), dataset.labels("test")
    metrics = read_metrics()["test"]
    assert len(labels) == metrics["n"]
    probabilities = predictor.probabilities(images)
    accuracy = float(np.mean((probabilities >= predictor.threshold) == labels))
    # One image at most may flip across the threshold through floating-point round-off.
    assert accuracy == pytest.approx(metrics["accuracy"]["value"], abs=1.01 / len(labels))
    assert roc_auc(labels, probabilities) == pytest.approx(metrics["auc"]["value"], abs=1e-3)


# ----------------------------------------------------------------------------- intensity augmentation
def _tiny(**overrides) -> TrainingConfig:
    values = dict(image_size=32, rotation_degrees=0, zoom=0, width_shift=0, height_shift=0, horizontal_flip=False,
                  seed=3)
    values.update(overrides)
    return TrainingConfig(**values)


def test_brightness_and_contrast_augmentation_follow_the_settings():
    from cxr.pipeline import build_augmentation

    assert build_augmentation(_tiny()) is None  # both default to 0: the tutorial preset is unchanged
    assert PRESETS["tutorial"].brightness == 0 and PRESETS["tutorial"].contrast == 0
    augmentation = build_augmentation(_tiny(brightness=0.3, contrast=0.5))
    assert [type(layer).__name__ for layer in augmentation.layers] == ["RandomBrightness", "RandomContrast"]
    generator = np.random.default_rng(0)
    images = generator.integers(60, 200, size=(64, 32, 32, 1)).astype(np.float32)
    changed = np.asarray(augmentation(images, training=True))
    assert changed.shape == images.shape
    assert changed.min() >= 0 and changed.max() <= 255  # clipped to the pixel range
    mean_shift = changed.mean(axis=(1, 2, 3)) - images.mean(axis=(1, 2, 3))
    assert np.abs(mean_shift).max() > 10  # brightness moved some images by more than 10 grey levels
    spread = changed.std(axis=(1, 2, 3)) / images.std(axis=(1, 2, 3))
    assert spread.min() < 0.9 or spread.max() > 1.1  # contrast changed some images
    np.testing.assert_array_equal(np.asarray(augmentation(images, training=False)), images)  # off at inference


def test_brightness_and_contrast_settings_are_validated_and_old_configs_load():
    with pytest.raises(ValueError, match="brightness"):
        TrainingConfig(brightness=1.5)
    with pytest.raises(ValueError, match="contrast"):
        TrainingConfig(contrast=-0.1)
    saved_before = TrainingConfig().to_dict()
    del saved_before["brightness"], saved_before["contrast"]  # a config.json written before these settings
    assert TrainingConfig.from_dict(saved_before).brightness == 0.0


# --------------------------------------------------------------------------------------------- ensemble
def test_averaged_fast_models_give_the_mean_logit_load_safely_and_explain(tmp_path):
    import keras

    from cxr import models
    from cxr.explain import GradCam
    from cxr.model_files import load_model_file

    members = []
    for seed, name in ((1, "fast"), (2, "fast"), (3, "fast_wide")):
        keras.utils.set_random_seed(seed)
        member = models.build_model(name, (32, 32, 1))
        # Non-trivial batch-norm statistics, so a wrongly copied layer changes the output.
        for layer in member.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                mean, variance = layer.moving_mean, layer.moving_variance
                mean.assign(np.random.default_rng(seed).normal(0, 0.1, mean.shape).astype("float32"))
                variance.assign(np.random.default_rng(seed).uniform(0.5, 2, variance.shape).astype("float32"))
        members.append(member)
    ensemble = models.average_fast_models(members)
    images = np.random.default_rng(0).integers(0, 256, size=(6, 32, 32, 1)).astype(np.uint8)
    member_logits = np.stack([models.logit_model(member).predict(images, verbose=0) for member in members])
    ensemble_logits = models.logit_model(ensemble).predict(images, verbose=0)
    np.testing.assert_allclose(ensemble_logits, member_logits.mean(axis=0), rtol=1e-4, atol=1e-5)
    assert not np.allclose(member_logits[0], member_logits[1])  # the members really differ

    path = tmp_path / "model.keras"
    ensemble.save(path)
    loaded = load_model_file(path)  # safe mode
    np.testing.assert_allclose(loaded.predict(images, verbose=0), ensemble.predict(images, verbose=0), rtol=1e-5)
    gradcam = GradCam(loaded)
    assert gradcam.layer_path == "ensemble_features"  # every member's feature maps, not one member's
    heatmap = gradcam(images[0, ..., 0])
    assert heatmap.shape == (32, 32) and 0 <= heatmap.min() and heatmap.max() <= 1


def test_a_mirrored_ensemble_averages_image_and_mirror_and_its_gradcam_follows_the_mirror(tmp_path):
    import keras

    from cxr import models
    from cxr.explain import GradCam
    from cxr.model_files import load_model_file

    # Left-right asymmetric images (a ramp and a bright block on the left), 96 px so the last feature map
    # is 3 x 3 and mirroring changes what a single member sees.
    generator = np.random.default_rng(0)
    images = np.empty((6, 96, 96, 1), dtype=np.uint8)
    for index in range(6):
        image = np.tile(np.linspace(0, 120 + 20 * index, 96), (96, 1)) + generator.normal(0, 10, (96, 96))
        top = int(generator.integers(5, 60))
        image[top:top + 30, 5:25 + 3 * index] = 250
        images[index, ..., 0] = np.clip(image, 0, 255).astype(np.uint8)
    mirrored = images[:, :, ::-1]

    members = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        member = models.build_model("fast", (96, 96, 1))
        for _ in range(40):  # settle the batch-norm statistics on these images, as training would
            member(images.astype("float32"), training=True)
        logit = member.get_layer(models.LOGIT_LAYER)  # a strong, image-dependent logit
        kernel, bias = logit.get_weights()
        logit.set_weights([np.random.default_rng(seed).normal(0, 1, kernel.shape).astype("float32"), bias])
        members.append(member)
    ensemble = models.average_fast_models(members, mirror=True)
    member_logits = np.stack([models.logit_model(member).predict(batch, verbose=0)
                              for member in members for batch in (images, mirrored)])
    # A member alone is not mirror-invariant (by 100x the tolerance below).
    assert np.abs(member_logits[0] - member_logits[1]).max() > 0.02
    scorer = models.logit_model(ensemble)
    np.testing.assert_allclose(scorer.predict(images, verbose=0), member_logits.mean(axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(scorer.predict(mirrored, verbose=0), scorer.predict(images, verbose=0),
                               rtol=1e-4, atol=1e-4)

    ensemble.save(tmp_path / "model.keras")
    loaded = load_model_file(tmp_path / "model.keras")  # safe mode: built-in layers only
    gradcam = GradCam(loaded)
    assert gradcam.layer_path == "ensemble_features"
    heatmap, heatmap_of_mirror = gradcam(images[0, ..., 0]), gradcam(mirrored[0, ..., 0])
    assert heatmap.std() > 0.01
    # Explained in image coordinates: the map of the mirrored image is the mirrored map.
    np.testing.assert_allclose(heatmap_of_mirror, heatmap[:, ::-1], atol=2e-3)

    one = models.average_fast_models(members[:1], mirror=True)  # one network with mirror averaging is allowed
    assert one.count_params() > members[0].count_params()


def test_averaging_refuses_a_single_member_or_a_foreign_network():
    from cxr import models
    from cxr.errors import CxrError

    fast = models.build_model("fast", (32, 32, 1))
    with pytest.raises(CxrError, match="at least 2"):
        models.average_fast_models([fast])
    with pytest.raises(CxrError, match="not a fast network"):
        models.average_fast_models([fast, models.build_model("seed", (32, 32, 1))])
