"""Runs in words (cxr/run_text.py): readable names with the best validation AUC, plain states, progress lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxr.run_text import format_seconds, progress, run_label, run_labels, state_text
from cxr.runs import RunSummary


def summary(run_id="20261126-105222-fast-3fa2c1", **fields) -> RunSummary:
    values = {"run_id": run_id, "path": Path(run_id), "model": "fast", "dataset": "kermany", "state": "finished",
              "epoch": None, "epochs": None, "created": "2026-11-26T10:52:22.123456+00:00", "best_val_auc": 0.87351}
    values.update(fields)
    return RunSummary(**values)


def test_a_run_reads_as_model_data_set_time_and_auc():
    assert run_label(summary()) == "fast on kermany, 26 Nov 2026, 10:52 UTC · best validation AUC 0.874"
    assert run_label(summary(state="running", best_val_auc=0.6)) == "fast on kermany, 26 Nov 2026, 10:52 UTC · training"
    assert run_label(summary(state="failed", best_val_auc=None)) == \
        "fast on kermany, 26 Nov 2026, 10:52 UTC · no validation AUC recorded · failed"
    assert run_label(summary(state="stopped")).endswith("· best validation AUC 0.874 · stopped")
    # A damaged run folder (model and data set unknown) still gets a name: its id.
    assert run_label(summary(model="?", dataset="?", created=None)).startswith("20261126-105222-fast-3fa2c1")


def test_runs_that_would_read_the_same_are_told_apart_by_their_id():
    labels = run_labels([summary("20261126-105222-fast-aaaaaa"), summary("20261126-105230-fast-bbbbbb"),
                         summary("20261126-110000-seed-cccccc", model="seed")])
    assert labels["20261126-105222-fast-aaaaaa"].endswith("#aaaaaa")
    assert labels["20261126-105230-fast-bbbbbb"].endswith("#bbbbbb")
    assert "#" not in labels["20261126-110000-seed-cccccc"]
    assert len(set(labels.values())) == 3


def test_progress_while_training_gives_time_left_only_once_measured():
    status = {"state": "running", "epoch": 2, "epochs": 4, "batch": 5, "batches": 10, "eta_seconds": None,
              "message": "training"}
    fraction, text = progress(status, 1)
    assert fraction == pytest.approx(1.5 / 4)
    assert text == "Epoch 2 of 4 · batch 5 of 10 · time left: measuring the first batches"
    fraction, text = progress(dict(status, eta_seconds=75), 1)
    assert text.endswith("about 1 min 15 s left")


@pytest.mark.parametrize(("status", "finished", "expected_fraction", "expected_text"), [
    # Stopped mid-epoch 8 of 20 (status as older trainers left it): the bar stands at 7 finished epochs.
    ({"state": "stopped", "epoch": 8, "epochs": 20, "batch": 40, "batches": 163,
      "message": "stopped (stop file) after epoch 7; resume to continue"}, 7, 7 / 20,
     "Stopped by you after epoch 7 of 20"),
    ({"state": "stopped", "epoch": 3, "epochs": 20, "stop_reason": "signal"}, 3, 3 / 20,
     "Stopped by a shutdown signal after epoch 3 of 20"),
    ({"state": "stopped", "epochs": 20, "message": "cancelled while queued"}, 0, 0.0,
     "Cancelled while waiting in the queue"),
    ({"state": "interrupted", "epoch": 5, "epochs": 10, "batch": 3, "batches": 9}, 4, 0.4,
     "Interrupted after epoch 4 of 10 (the training process ended without finishing)"),
    ({"state": "finished", "epoch": 6, "epochs": 12}, 6, 1.0, "Finished after 6 epochs"),
])
def test_ended_runs_read_in_plain_words_at_their_finished_epochs(status, finished, expected_fraction,
                                                                  expected_text):
    fraction, text = progress(status, finished)
    assert fraction == pytest.approx(expected_fraction)
    assert text == f"{finished} of {status['epochs']} epochs finished"
    assert state_text(status, finished) == expected_text


def test_format_seconds():
    assert [format_seconds(value) for value in (None, 4.4, 75, 3 * 3600 + 120)] == \
        ["unknown", "4 s", "1 min 15 s", "3 h 02 min"]
