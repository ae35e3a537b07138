"""cxr.interpretation: the three plain verdicts around a threshold, and the operating point read from metrics.json."""

import pytest

from cxr import interpretation
from cxr.interpretation import operating_point, uncertain_band, verdict


@pytest.mark.parametrize(("probability", "threshold", "kind"), [
    (0.20, 0.17, "uncertain"),  # the case that read as a contradiction: "Pneumonia" next to 20 %
    (0.50, 0.17, "likely"),
    (0.05, 0.17, "unlikely"),
    (0.55, 0.50, "uncertain"),
    (0.70, 0.50, "likely"),
    (0.30, 0.50, "unlikely"),
    (1.00, 0.50, "likely"),
    (0.00, 0.50, "unlikely"),
])
def test_verdicts_around_the_threshold(probability, threshold, kind):
    assert verdict(probability, threshold).kind == kind


def test_the_uncertain_band_is_symmetric_in_log_odds_and_contains_the_threshold():
    low, high = uncertain_band(0.5)
    assert low == pytest.approx(1 - high) and low < 0.5 < high
    low, high = uncertain_band(0.17)
    assert low < 0.17 < high and round(low, 2) == 0.11 and round(high, 2) == 0.25


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.3", None, True, float("nan")])
def test_bad_probabilities_are_refused_with_what_was_received(bad):
    with pytest.raises(ValueError, match="probability must be a number from 0 to 1; received"):
        verdict(bad, 0.5)


def test_the_operating_point_of_a_finished_run():
    metrics = {"threshold": 0.17, "threshold_rule": "youden",
               "validation": {"sensitivity": {"value": 0.9647}, "specificity": {"value": 0.9407},
                              "num_pneumonia": 340, "num_normal": 135},
               "test": {"sensitivity": {"value": 0.9923}, "specificity": {"value": 0.6624}}}
    point = operating_point(metrics)
    assert point.threshold == 0.17 and point.rule == "youden"
    assert [figures.split for figures in point.figures] == ["validation", "test"]
    # The line quotes test, not validation: the threshold was chosen on validation, whose figures flatter it.
    assert point.summary() == ("Pneumonia when P ≥ 17 %; on test images, never used to train or tune it, it found "
                               "99 % of pneumonias and cleared 66 % of normals.")
    validation_only = operating_point({key: value for key, value in metrics.items() if key != "test"})
    assert validation_only.summary() == ("Pneumonia when P ≥ 17 %; on validation images it found 96 % of "
                                         "pneumonias and cleared 94 % of normals.")
    assert "chose the threshold" not in validation_only.explanation()
    text = point.explanation()
    assert "The validation images chose the threshold, so their figures are the more flattering ones" in text
    assert "maximise sensitivity + specificity" in text
    assert "On its **test** images: sensitivity **99 %** (pneumonias found), specificity **66 %**" in text


def test_a_model_without_metrics_says_so():
    point = operating_point(None)
    assert point.threshold == 0.5 and point.figures == ()
    assert "no measured sensitivity or specificity" in point.summary()
    assert interpretation.RULE_WORDS["fixed"] in point.explanation()
