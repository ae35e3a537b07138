"""Reading a run directory field by field (cxr/runs.py): the summary the run list shows, status of a
missing or dead run, history columns, and the run's folder from its id or its path."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cxr import runs
from cxr.atomic import atomic_write_json
from cxr.config import TrainingConfig
from cxr.errors import RunError


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_summary_of_a_finished_run_field_by_field():
    run_dir = runs.new_run("tiny", TrainingConfig(model="fast", epochs=3))
    runs.write_status(run_dir, state="finished", epoch=3, epochs=3, message="finished after 3 epochs")
    for epoch, val_auc, val_accuracy in ((1, 0.7, 0.6), (2, 0.9, 0.85), (3, 0.8, 0.9)):
        runs.append_history_row(run_dir, {"epoch": epoch, "val_auc": val_auc, "val_accuracy": val_accuracy})
    atomic_write_json(run_dir / "metrics.json", {"test": {"auc": {"value": 0.81, "low": 0.7, "high": 0.9},
                                                          "accuracy": {"value": 0.75}}})
    summary = runs.summarize_run(run_dir.name)
    created = runs.read_config(run_dir)["created"]
    assert summary.to_dict() == {
        "run_id": run_dir.name, "path": str(run_dir.resolve()), "dataset": "tiny", "model": "fast",
        "state": "finished", "epoch": 3, "epochs": 3, "created": created, "best_val_auc": 0.9,
        "best_val_accuracy": 0.9, "test_auc": 0.81, "test_accuracy": 0.75, "message": "finished after 3 epochs"}
    # An older metrics layout (test.roc_auc) is still read; a bool or a missing figure reads as None.
    atomic_write_json(run_dir / "metrics.json", {"test": {"roc_auc": 0.66, "accuracy": True}})
    summary = runs.summarize_run(run_dir)
    assert (summary.test_auc, summary.test_accuracy) == (0.66, None)
    atomic_write_json(run_dir / "metrics.json", {"test": None})
    assert (runs.summarize_run(run_dir).test_auc, runs.summarize_run(run_dir).test_accuracy) == (None, None)


def test_summary_of_a_run_without_history_or_metrics():
    run_dir = runs.new_run("tiny", TrainingConfig(model="fast"))
    summary = runs.summarize_run(run_dir)
    assert (summary.state, summary.best_val_auc, summary.best_val_accuracy, summary.test_auc) == (
        "queued", None, None, None)
    assert runs.read_history(run_dir).empty and list(runs.read_history(run_dir).columns) == list(
        runs.HISTORY_COLUMNS)
    runs.append_history_row(run_dir, {"epoch": 1, "loss": 0.5})  # a row without validation figures
    history = runs.read_history(run_dir)
    assert set(runs.HISTORY_COLUMNS) <= set(history.columns) and history["val_auc"].isna().all()
    assert runs.summarize_run(run_dir).best_val_auc is None


def test_status_of_a_missing_file_and_of_a_dead_trainer():
    run_dir = runs.new_run("tiny", TrainingConfig())
    (run_dir / "status.json").unlink()
    status = runs.read_status(run_dir)
    assert status["state"] == "interrupted" and status["message"] == "status.json is missing"
    assert all(status[key] is None for key in ("epoch", "epochs", "batch", "batches", "started", "updated",
                                               "pid", "eta_seconds", "error"))
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    runs.write_status(run_dir, state="stopping", pid=process.pid, eta_seconds=12.0)
    status = runs.read_status(run_dir)
    assert status["state"] == "interrupted" and status["eta_seconds"] is None
    assert status["message"] == (f"the training process (pid {process.pid}) ended without saying so while "
                                 "stopping; resume it to continue from the last epoch")
    # A finished run keeps its state whatever its pid: only active states can be interrupted.
    runs.write_status(run_dir, state="finished", pid=process.pid, eta_seconds=None)
    assert runs.read_status(run_dir)["state"] == "finished"


@pytest.mark.parametrize("pid", [0, -5, "123", None, 2.5])
def test_process_alive_refuses_what_is_not_a_positive_pid(pid):
    assert runs.process_alive(pid) is False


def test_process_alive_checks_the_start_time_within_a_second():
    import psutil

    created = psutil.Process().create_time()
    assert runs.process_alive(os.getpid()) is True
    assert runs.process_alive(os.getpid(), created + 0.9) is True
    assert runs.process_alive(os.getpid(), created + 1.5) is False


def test_run_path_from_an_id_or_a_folder_and_the_error_names_recent_runs(tmp_path):
    first = runs.new_run("tiny", TrainingConfig())
    assert runs.run_path(first.name) == first and runs.run_path(first) == first.resolve()
    with pytest.raises(RunError, match=rf"No training run 'nope' .* \(recent runs: {first.name}\)"):
        runs.run_path("nope")
    (tmp_path / "not-a-run").mkdir()
    with pytest.raises(RunError, match="No training run"):
        runs.run_path(tmp_path / "not-a-run")  # a folder without config.json is not a run


def test_hand_written_files_missing_fields_or_with_text_values(home):
    run_dir = runs.new_run("tiny", TrainingConfig())
    atomic_write_json(run_dir / "status.json", {"epoch": 2})  # no state, no message
    status = runs.read_status(run_dir)
    assert status["state"] is None and status["message"] is None and status["epoch"] == 2
    # A history written by hand: columns missing, a value that is not a number.
    (run_dir / "history.csv").write_text("epoch,val_auc\n1,0.61\n2,n/a\n3,0.64\n")
    history = runs.read_history(run_dir)
    assert history["val_accuracy"].isna().all() and history["val_auc"].tolist()[0] == 0.61
    assert runs.summarize_run(run_dir).best_val_auc == 0.64  # "n/a" is skipped, not an error
    atomic_write_json(run_dir / "config.json", {"dataset": "tiny"})  # a dict without "training"
    with pytest.raises(RunError):
        runs.read_config(run_dir)


def test_pid_1_is_a_live_process_and_the_error_lists_several_runs():
    assert runs.process_alive(1) is True  # init (or the container's first process) is always there
    names = sorted(runs.new_run(name, TrainingConfig()).name for name in ("a", "b"))  # listed in name order
    with pytest.raises(RunError, match=rf"\(recent runs: {names[0]}, {names[1]}\)"):
        runs.run_path("nope")
