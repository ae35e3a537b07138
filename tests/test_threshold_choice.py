"""cxr.threshold_choice: a threshold saved by hand is recorded as a manual choice with its validation figures,
the replaced choice is kept, test and validation are recomputed from the run's own scores, and the Predictor
uses it."""

import json

import numpy as np
import pytest

from cxr import evaluation, runs
from cxr.config import TrainingConfig
from cxr.errors import RunError
from cxr.run_results import write_run_results
from cxr.threshold_choice import save_manual_threshold


@pytest.fixture
def evaluated_run(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    run_dir = runs.new_run("tiny", TrainingConfig(image_size=32, epochs=1))
    generator = np.random.default_rng(0)
    val_true, test_true = np.arange(40) % 2, np.arange(30) % 2
    write_run_results(run_dir, val_true=val_true,
                      val_score=np.clip(0.3 * val_true + 0.7 * generator.random(40), 0, 1),
                      test_true=test_true,
                      test_score=np.clip(0.3 * test_true + 0.7 * generator.random(30), 0, 1))
    return run_dir


def test_a_manual_threshold_is_recorded_with_its_validation_figures(evaluated_run):
    before = json.loads((evaluated_run / "metrics.json").read_text())
    saved = save_manual_threshold(evaluated_run, 0.35)
    written = json.loads((evaluated_run / "metrics.json").read_text())
    assert written == saved
    assert written["threshold"] == 0.35 and written["threshold_rule"] == "manual"
    assert "by hand" in written["threshold_chosen_on"]
    assert written["threshold_history"][0]["threshold"] == before["threshold"]
    assert written["threshold_history"][0]["rule"] == before["threshold_rule"]

    predictions = __import__("pandas").read_csv(evaluated_run / "predictions.csv")
    val = predictions[predictions["split"] == "val"]
    expected = evaluation.confusion_counts(val["y_true"], val["y_score"], 0.35)
    assert written["validation"]["counts"] == expected
    assert written["validation"]["threshold"] == 0.35 and written["test"]["threshold"] == 0.35
    sensitivity = expected["tp"] / (expected["tp"] + expected["fn"])
    assert written["manual_threshold"]["validation_sensitivity"] == pytest.approx(sensitivity)
    assert written["manual_threshold"]["validation_counts"] == expected
    # The calibration is not touched; the card says how the threshold was chosen.
    assert written["temperature"] == before["temperature"]
    assert "set by hand on the Evaluate page" in (evaluated_run / "model_card.md").read_text()

    again = save_manual_threshold(evaluated_run, 0.6)
    assert [entry["threshold"] for entry in again["threshold_history"]] == [before["threshold"], 0.35]


def test_the_predictor_uses_the_saved_threshold(evaluated_run):
    from cxr import models
    from cxr.predict import Predictor

    models.build_model("fast", (32, 32, 1)).save(evaluated_run / "model.keras")
    runs.write_status(evaluated_run, state="finished")
    save_manual_threshold(evaluated_run, 0.42)
    assert Predictor.load(evaluated_run.name).threshold == pytest.approx(0.42)


@pytest.mark.parametrize("bad", [-0.01, 1.01, "0.4", None, True])
def test_bad_thresholds_are_refused_and_nothing_is_written(evaluated_run, bad):
    before = (evaluated_run / "metrics.json").read_bytes()
    with pytest.raises(RunError, match="a threshold must be a number from 0 to 1; received"):
        save_manual_threshold(evaluated_run, bad)
    assert (evaluated_run / "metrics.json").read_bytes() == before


def test_a_run_without_evaluation_is_refused_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    run_dir = runs.new_run("tiny", TrainingConfig(image_size=32, epochs=1))
    with pytest.raises(RunError, match="has no evaluation"):
        save_manual_threshold(run_dir, 0.3)
