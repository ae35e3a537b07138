"""The combined population check (either of two detectors flags): its score, its files, its card lines."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_population_detector import cloud

from cxr.errors import ModelFileError
from cxr.model_card import build_model_card, render_markdown
from cxr.population_check import SECOND_STEM, combine_parts, load_check
from cxr.population_detector import JSON_FILE, fit_detector


@pytest.fixture
def parts():
    pretrained = fit_detector(cloud(800, 1), cloud(400, 2), extractor="efficientnet_lite0", image_size=64,
                              percentile=99.5, info={"fitted_on": "synthetic cloud"})
    classifier = fit_detector(cloud(800, 5) * 2.0, cloud(400, 6) * 2.0, extractor="classifier", image_size=32,
                              percentile=99.5)
    heldout_pretrained = pretrained.score(cloud(400, 2))
    heldout_classifier = classifier.score(cloud(400, 6) * 2.0)
    return pretrained, classifier, heldout_pretrained, heldout_classifier


def scores_of(part, values):
    """Make ``part.image_scores`` return ``values`` whatever the images (the extractors need real networks)."""
    part.image_scores = lambda images, model=None, model_images=None: np.asarray(values, np.float64)


def test_the_score_is_the_larger_ratio_and_either_part_flags(parts):
    pretrained, classifier, heldout_pretrained, heldout_classifier = parts
    check = combine_parts(pretrained, classifier, heldout_pretrained, heldout_classifier)
    t1, t2 = pretrained.threshold, classifier.threshold
    # image 0: neither part over its threshold; 1: only the pretrained part; 2: only the classifier's; 3: both
    scores_of(pretrained, [0.5 * t1, 1.5 * t1, 0.9 * t1, 2.0 * t1])
    scores_of(classifier, [0.8 * t2, 0.2 * t2, 1.2 * t2, 3.0 * t2])
    images = np.zeros((4, 8, 8), np.uint8)
    np.testing.assert_allclose(check.image_scores(images), [0.8, 1.5, 1.2, 3.0])
    assert list(check.image_scores(images) > check.threshold) == [False, True, True, True]
    assert check.threshold == 1.0


def test_held_out_scores_are_the_combined_scores_of_the_same_images(parts):
    pretrained, classifier, heldout_pretrained, heldout_classifier = parts
    check = combine_parts(pretrained, classifier, heldout_pretrained, heldout_classifier)
    expected = np.sort(np.maximum(heldout_pretrained / pretrained.threshold, heldout_classifier / classifier.threshold))
    np.testing.assert_allclose(check.heldout_scores, expected, rtol=1e-6)
    # Each part flags 0.5 % of its held-out images; together at most 1 %, at least 0.5 %.
    assert 0.005 <= np.mean(check.heldout_scores > 1.0) <= 0.01
    assert check.percentile(check.heldout_scores[199:200])[0] == pytest.approx(50.0)  # 200 of 400 at or below
    with pytest.raises(ValueError, match="same images"):
        combine_parts(pretrained, classifier, heldout_pretrained, heldout_classifier[:-1])


def test_files_round_trip_and_a_missing_part_is_a_clear_error(parts, tmp_path):
    pretrained, classifier, heldout_pretrained, heldout_classifier = parts
    check = combine_parts(pretrained, classifier, heldout_pretrained, heldout_classifier, {"rule": "either"})
    check.save(tmp_path)
    loaded = load_check(tmp_path)
    assert loaded.extractor == "efficientnet_lite0+classifier"
    np.testing.assert_allclose(loaded.classifier.precision, classifier.precision, rtol=1e-5)
    np.testing.assert_allclose(loaded.heldout_scores, check.heldout_scores, rtol=1e-6)
    assert loaded.classifier.threshold == pytest.approx(classifier.threshold)
    assert loaded.pretrained.threshold == pytest.approx(pretrained.threshold)
    (tmp_path / f"{SECOND_STEM}.npz").unlink()  # a damaged copy: one file of the second part gone
    with pytest.raises(ModelFileError, match=f"{SECOND_STEM}.npz"):
        load_check(tmp_path)
    (tmp_path / f"{SECOND_STEM}.json").unlink()  # the second part gone entirely
    with pytest.raises(ModelFileError, match="names a second detector"):
        load_check(tmp_path)


def test_the_model_card_names_both_detectors_without_the_held_out_scores(parts, tmp_path):
    pretrained, classifier, heldout_pretrained, heldout_classifier = parts
    combine_parts(pretrained, classifier, heldout_pretrained, heldout_classifier).save(tmp_path)
    card = build_model_card({"threshold": 0.5}, population=json.loads((tmp_path / JSON_FILE).read_text()))
    assert "heldout_scores" not in json.dumps(card)
    section = render_markdown(card).split("## Population check")[1]
    assert "Second detector: the classifier's own features" in section
    assert f"threshold {classifier.threshold:.3f}" in section and "**either** detector flags it" in section
    assert "the 99.5th percentile" in section


def test_the_predictor_loads_a_combined_check_and_either_part_withholds_the_label(tmp_path):
    """Brightness model and detectors of tests/test_population_predict.py: feature = mean grey / 255, mean
    100/255, sd 10/255. Part one's threshold 3.0 (inside |v - 100| <= 30), part two's 1.5 (|v - 100| <= 15)."""
    from test_population_predict import TEMPERATURE, THRESHOLD, grey, grey_detector
    from test_predict import save_model_folder

    from cxr.predict import Predictor

    folder = save_model_folder(tmp_path / "model", threshold=THRESHOLD, temperature=TEMPERATURE)
    strict = grey_detector()
    strict.threshold = 1.5
    combine_parts(grey_detector(), strict, np.linspace(0, 2.9, 50), np.linspace(0, 1.4, 50)).save(folder)
    predictor = Predictor.load(str(folder))
    assert predictor.population.extractor == "classifier+classifier"
    inside, strict_only, both = predictor.predict([grey(105), grey(120), grey(150)], names=["a", "b", "c"])
    assert inside.population.status == "in" and inside.population.score == pytest.approx(0.5 / 1.5, abs=1e-3)
    assert inside.label is not None
    # 120: distance 2.0, inside part one (2.0 / 3.0) but outside part two (2.0 / 1.5): outside, label withheld.
    assert strict_only.population.outside and strict_only.label is None
    assert strict_only.population.score == pytest.approx(2.0 / 1.5, abs=1e-3)
    assert both.population.outside and both.population.score == pytest.approx(5.0 / 1.5, abs=1e-3)
    assert both.population.threshold == 1.0
