"""Tests of cxr.model_card: the card says what data, which threshold and why, how good, and its limits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cxr import model_card
from cxr.run_results import write_run_results


@pytest.fixture
def metrics(tmp_path):
    generator = np.random.default_rng(0)
    val_true, test_true = generator.integers(0, 2, 80), generator.integers(0, 2, 60)
    return write_run_results(
        tmp_path,
        val_true=val_true,
        val_score=np.clip(0.3 + 0.4 * val_true + generator.normal(0, 0.2, 80), 0, 1),
        test_true=test_true,
        test_score=np.clip(0.3 + 0.4 * test_true + generator.normal(0, 0.2, 60), 0, 1),
        threshold_rule="sensitivity",
        min_sensitivity=0.9,
    )


CONFIG = {
    "version": 1,
    "dataset": "chest_xray-150",
    "training": {"model": "fast", "image_size": 150, "epochs": 12, "batch_size": 32, "optimizer": "adam"},
}
DATASET = {
    "name": "chest_xray-150",
    "source": "/data/chest_xray",
    "splits": {
        "train": {"normal": 1200, "pneumonia": 3500},
        "val": {"normal": 141, "pneumonia": 375},
        "test": {"normal": 234, "pneumonia": 390},
    },
}


def test_card_content(metrics):
    card = model_card.build_model_card(metrics, config=CONFIG, run_id="run-1", dataset=DATASET)
    json.dumps(card, allow_nan=False)
    assert card["threshold"]["value"] == metrics["threshold"] and card["threshold"]["rule"] == "sensitivity"
    assert card["calibration"]["temperature"] == metrics["temperature"]
    assert card["metrics"]["test"]["n"] == 60 and card["metrics"]["validation"]["auc"]["low"] is not None
    assert card["data"]["citation"] and "Kermany" in card["data"]["citation"]
    assert any("pediatric" in item for item in card["limitations"])
    assert any("Not a diagnostic device" in item for item in card["limitations"])

    text = model_card.render_markdown(card)
    for heading in (
        "## Data",
        "## Settings",
        "## Decision threshold and calibration",
        "## Performance",
        "## Intended use",
        "## Limitations",
    ):
        assert heading in text
    assert "| test | 234 | 390 | 624 |" in text  # split counts
    assert f"**{metrics['threshold']:.4f}**" in text and "sensitivity >= 90 %" in text
    test = metrics["test"]
    assert f"{100 * test['sensitivity']['value']:.1f} % ({100 * test['sensitivity']['low']:.1f}-" in text
    assert "optimizer adam" in text


def test_card_for_other_data_does_not_claim_kermany(metrics):
    card = model_card.build_model_card(
        metrics,
        config={"dataset": "hospital-b", "training": {}},
        dataset={"name": "hospital-b", "source": "/data/hospital_b"},
    )
    assert card["data"]["citation"] is None
    assert not any("pediatric" in item for item in card["limitations"])
    assert any("hospital-b" in item for item in card["limitations"])


def test_write_model_card_reads_run_config(tmp_path, metrics):
    (tmp_path / "config.json").write_text(json.dumps({**CONFIG, "dataset": "not-imported"}))
    markdown_path, json_path = model_card.write_model_card(tmp_path, metrics)
    card = json.loads(json_path.read_text())
    assert card["model"]["architecture"] == "fast" and card["data"]["dataset"] == "not-imported"
    assert markdown_path.read_text().startswith(f"# Model card — run {tmp_path.name}")


def test_write_run_results_card_without_config(tmp_path):
    write_run_results(
        tmp_path, val_true=[0, 1, 0, 1], val_score=[0.2, 0.8, 0.4, 0.6], test_true=[0, 1], test_score=[0.3, 0.7]
    )
    text = (tmp_path / "model_card.md").read_text()
    assert "## Limitations" in text and "| test | 2 |" in text


def test_a_fixed_threshold_is_not_described_as_0_5_when_it_is_another_value(tmp_path):
    fixed = write_run_results(tmp_path, val_true=np.array([0, 1, 0, 1]), val_score=np.array([.1, .9, .2, .8]),
                              test_true=np.array([0, 1]), test_score=np.array([.3, .7]), threshold_rule="fixed",
                              fixed_threshold=0.3)
    text = model_card.render_markdown(model_card.build_model_card(fixed, config=CONFIG))
    line = next(line for line in text.splitlines() if line.startswith("- Threshold on calibrated"))
    assert "fixed value from the training settings" in line and "0.5" not in line, line
    youden = model_card.build_model_card({**fixed, "threshold_rule": "youden"}, config=CONFIG)
    assert "Youden's J" in model_card.render_markdown(youden)
