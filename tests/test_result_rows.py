"""The CSV/table row of one prediction (``PredictionResult.to_row``), every column checked: no model needed."""

from __future__ import annotations

import numpy as np

from cxr.population import PopulationVerdict
from cxr.predict import PredictionResult


def test_row_of_an_answered_image_holds_every_column_exactly():
    verdict = PopulationVerdict(status="outside", score=7.5, percentile=99.5, threshold=5.0,
                                reasons=("looks unlike the training X-rays", "DICOM says this is a lateral view"))
    result = PredictionResult(name="chest.png", probability=0.62, label="pneumonia", threshold=0.4,
                              image=np.zeros((4, 4), np.uint8), heatmap=np.ones((4, 4), np.float32),
                              warnings=["Very small image", "Unusual shape"], raw_probability=0.71,
                              explanation="gradcam", explain_seconds=0.25, population=verdict)
    assert result.to_row() == {
        "file": "chest.png", "probability": 0.62, "label": "pneumonia", "threshold": 0.4,
        "raw_probability": 0.71, "warnings": "Very small image | Unusual shape", "error": "",
        "explain_seconds": 0.25, "population": "outside", "population_score": 7.5,
        "population_reason": "looks unlike the training X-rays; DICOM says this is a lateral view",
    }
    assert list(result.to_row())[:3] == ["file", "probability", "label"]  # the contract's first columns


def test_row_of_a_failed_image_has_the_error_and_empty_answer():
    row = PredictionResult(name="broken.jpg", error="broken.jpg is truncated").to_row()
    assert row == {"file": "broken.jpg", "probability": None, "label": None, "threshold": None,
                   "raw_probability": None, "warnings": "", "error": "broken.jpg is truncated",
                   "explain_seconds": None, "population": "", "population_score": None, "population_reason": ""}
