"""Calibration helpers at their edges, with values worked out by hand or by SciPy (cases that mutation
testing showed no other test pinned down)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit

from cxr import calibration


def test_apply_temperature_uses_the_logits_when_given():
    # The probability 0.5 would give logit 0; the logit given (4) is what counts.
    assert calibration.apply_temperature([0.5], 2.0, logits=[4.0]) == pytest.approx([expit(2.0)])
    assert calibration.apply_temperature([0.5], 1.0, logits=[4.0]) == pytest.approx([expit(4.0)])
    # Without logits, temperature 1 returns the probabilities themselves, 0 and 1 included (no clipping).
    np.testing.assert_array_equal(calibration.apply_temperature([0.0, 1.0, 0.3], 1.0), [0.0, 1.0, 0.3])
    assert calibration.apply_temperature([0, 1], 1.0).dtype == np.float64  # float64 even from integers
    assert calibration.apply_temperature([0.8], 2.0) == pytest.approx([expit(math.log(4.0) / 2.0)])


def test_to_logits_and_sigmoid_hand_values():
    assert calibration.to_logits([0.5, 0.8, 0.2]) == pytest.approx([0.0, math.log(4.0), -math.log(4.0)])
    bound = math.log((1 - 1e-7) / 1e-7)  # 0 and 1 are clipped to 1e-7 from the ends: finite logits
    assert calibration.to_logits([0.0, 1.0]) == pytest.approx([-bound, bound], rel=1e-9)
    with np.errstate(over="raise", invalid="raise"):  # stable at the extremes: no overflow, no NaN
        values = calibration.sigmoid([-1000.0, -math.log(3.0), 0.0, math.log(3.0), 1000.0])
    assert values == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert calibration.sigmoid(np.array([0], dtype=np.int8)).dtype == np.float64


@pytest.mark.parametrize("temperature", [True, "2", math.inf, math.nan, 0, 0.0, -1.0, None])
def test_check_temperature_refuses_what_is_not_a_finite_positive_number(temperature):
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        calibration.check_temperature(temperature)


@pytest.mark.parametrize("temperature", [2, 0.5, np.float32(1.5), np.int64(3), 1e-3])
def test_check_temperature_accepts_numbers_of_every_kind(temperature):
    calibration.check_temperature(temperature)  # no exception
    assert calibration.apply_temperature([0.8], temperature) == pytest.approx(
        [expit(math.log(4.0) / float(temperature))])


def scipy_temperature(labels, logits) -> float:
    labels, logits = np.asarray(labels), np.asarray(logits, dtype=np.float64)

    def loss(log_t):
        z = logits / math.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, np.where(labels == 1, -z, z))))

    found = minimize_scalar(loss, bounds=(math.log(0.05), math.log(20.0)), method="bounded",
                            options={"xatol": 1e-10})
    return math.exp(found.x)


def test_fit_temperature_matches_scipy_from_logits_and_from_probabilities():
    generator = np.random.default_rng(8)
    z = generator.normal(0, 2, 400)
    labels = (generator.random(400) < expit(z)).astype(int)
    expected = scipy_temperature(labels, 2.5 * z)
    assert calibration.fit_temperature(labels, logits=2.5 * z) == pytest.approx(expected, rel=1e-6)
    # A column of logits (n, 1), as a Keras model returns them, is the same fit.
    assert calibration.fit_temperature(labels, logits=(2.5 * z).reshape(-1, 1)) == pytest.approx(expected, rel=1e-6)
    assert calibration.fit_temperature(labels, expit(2.5 * z)) == pytest.approx(
        scipy_temperature(labels, logit(np.clip(expit(2.5 * z), 1e-7, 1 - 1e-7))), rel=1e-6)


def test_fit_temperature_stays_inside_its_bounds():
    # Perfectly separated: the smaller T, the lower the loss, down to the lower bound 0.05.
    assert calibration.fit_temperature([0, 1], logits=[-1.0, 1.0]) == pytest.approx(0.05, rel=1e-6)
    # Labels opposite to the scores: the flatter, the better, up to the upper bound 20.
    assert calibration.fit_temperature([1, 0], logits=[-1.0, 1.0]) == pytest.approx(20.0, rel=1e-6)
    assert calibration.fit_temperature([0, 1], logits=[-1.0, 1.0], bounds=(0.5, 2.0)) == pytest.approx(0.5)


def test_fit_temperature_refuses_bad_input():
    with pytest.raises(ValueError, match="needs y_score .* or logits"):
        calibration.fit_temperature([0, 1])
    with pytest.raises(ValueError, match="logits must be finite"):
        calibration.fit_temperature([0, 1], logits=[0.0, math.nan])
    with pytest.raises(ValueError, match="same length; received 2 labels and 3 scores"):
        calibration.fit_temperature([0, 1], logits=[0.0, 1.0, 2.0])


def test_labels_and_scores_are_checked_with_what_was_received():
    with pytest.raises(ValueError, match=r"^y_true must hold only 0 \(normal\) and 1 \(pneumonia\); "
                                         r"received values \[0, 2\]"):
        calibration.brier_score([0, 2], [0.1, 0.9])
    with pytest.raises(ValueError, match=r"^y_score must be probabilities P\(pneumonia\) in \[0, 1\]; "
                                         r"received values from -0.1 to 0.9"):
        calibration.brier_score([0, 1], [-0.1, 0.9])
    with pytest.raises(ValueError, match="from 0.1 to 1.5"):
        calibration.brier_score([0, 1], [0.1, 1.5])
    with pytest.raises(ValueError, match="including NaN/inf"):
        calibration.brier_score([0, 1], [0.1, math.nan])
    with pytest.raises(ValueError, match="are empty"):
        calibration.brier_score([], [])
    # Column vectors are flattened; boolean labels are 0/1.
    assert calibration.brier_score(np.array([[0], [1]]), np.array([[0.2], [0.6]])) == pytest.approx(0.1)
    assert calibration.brier_score([False, True], [0.2, 0.6]) == pytest.approx((0.04 + 0.16) / 2)
    # NLL by hand: -(log 0.8 + log 0.6) / 2.
    assert calibration.negative_log_likelihood([0, 1], [0.2, 0.6]) == pytest.approx(
        -(math.log(0.8) + math.log(0.6)) / 2)


def test_reliability_bins_and_ece_with_other_bin_counts():
    labels, scores = [0, 1, 1, 0, 1], [0.05, 0.45, 0.55, 0.5, 1.0]
    table = calibration.reliability_curve(labels, scores, num_bins=2)  # [0, 0.5) and [0.5, 1]
    assert table["count"].tolist() == [2, 3]
    assert table["bin_low"].tolist() == [0.0, 0.5] and table["bin_high"].tolist() == [0.5, 1.0]
    assert table["mean_score"].tolist() == pytest.approx([0.25, (0.55 + 0.5 + 1.0) / 3])
    assert table["fraction_positive"].tolist() == pytest.approx([0.5, 2 / 3])
    expected = (2 * abs(0.5 - 0.25) + 3 * abs(2 / 3 - 2.05 / 3)) / 5
    assert calibration.expected_calibration_error(labels, scores, num_bins=2) == pytest.approx(expected)
    one = calibration.reliability_curve(labels, scores, num_bins=1)
    assert one["count"].tolist() == [5] and one["bin_high"].tolist() == [1.0]
    for bad in (0, True, 2.0, -3):
        with pytest.raises(ValueError, match="num_bins must be a positive integer"):
            calibration.reliability_curve(labels, scores, num_bins=bad)
