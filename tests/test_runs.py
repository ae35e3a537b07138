"""The run-directory contract (cxr/runs.py): atomic writes, status states, history, listing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from cxr import runs
from cxr.atomic import atomic_write_json, atomic_write_text
from cxr.config import TrainingConfig
from cxr.errors import RunError


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_atomic_write_json_round_trip_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic_write_json(path, {"b": 1.5, "nan": float("nan"), "list": (1, 2)})
    assert json.loads(path.read_text()) == {"b": 1.5, "nan": None, "list": [1, 2]}
    atomic_write_text(path, "replaced")
    assert path.read_text() == "replaced"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


def test_new_run_writes_config_and_queued_status():
    config = TrainingConfig(epochs=3)
    run_dir = runs.new_run("kermany", config)
    stored = runs.read_config(run_dir.name)
    assert stored["version"] == runs.CONTRACT_VERSION and stored["dataset"] == "kermany"
    assert TrainingConfig.from_dict(stored["training"]) == config
    status = runs.read_status(run_dir)
    assert status["state"] == "queued" and status["epochs"] == 3 and status["pid"] is None
    assert runs.run_path(run_dir.name) == run_dir


def test_unknown_run_raises_run_error_naming_it():
    with pytest.raises(RunError, match="no-such-run"):
        runs.run_path("no-such-run")


def test_dead_pid_reads_as_interrupted_but_live_pid_does_not():
    run_dir = runs.new_run("d", TrainingConfig())
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    runs.write_status(run_dir, state="running", pid=process.pid)
    assert runs.read_status(run_dir)["state"] == "interrupted"
    assert json.loads((run_dir / "status.json").read_text())["state"] == "running"  # file untouched
    runs.write_status(run_dir, state="running", pid=os.getpid())
    assert runs.read_status(run_dir)["state"] == "running"
    # Same pid, different start time: a reused pid is not our trainer.
    runs.write_status(run_dir, state="running", pid=os.getpid(), pid_created=1.0)
    assert runs.read_status(run_dir)["state"] == "interrupted"


def test_write_status_refuses_unknown_state():
    run_dir = runs.new_run("d", TrainingConfig())
    with pytest.raises(RunError, match="exploded"):
        runs.write_status(run_dir, state="exploded")


def test_history_append_truncate_and_read():
    run_dir = runs.new_run("d", TrainingConfig())
    assert list(runs.read_history(run_dir).columns) == list(runs.HISTORY_COLUMNS)
    for epoch in (1, 2, 3):
        runs.append_history_row(run_dir, {"epoch": epoch, "loss": 1.0 / epoch, "val_auc": 0.5 + epoch / 10})
    history = runs.read_history(run_dir)
    assert history["epoch"].tolist() == [1, 2, 3]
    assert history["loss"].tolist() == pytest.approx([1.0, 0.5, 1 / 3])
    runs.truncate_history(run_dir, 2)
    assert runs.read_history(run_dir)["epoch"].tolist() == [1, 2]


def test_list_runs_reports_best_metrics_and_survives_a_damaged_run(home):
    good = runs.new_run("d", TrainingConfig(model="seed"))
    runs.append_history_row(good, {"epoch": 1, "val_auc": 0.7, "val_accuracy": 0.6})
    runs.append_history_row(good, {"epoch": 2, "val_auc": 0.9, "val_accuracy": 0.8})
    atomic_write_json(good / runs.METRICS_FILE, {"test": {"accuracy": {"value": 0.75}, "auc": 0.8}})
    bad = home / "runs" / "zzz-bad"
    bad.mkdir(parents=True)
    (bad / "config.json").write_text("{not json")
    summaries = {summary.run_id: summary for summary in runs.list_runs()}
    assert summaries[good.name].best_val_auc == pytest.approx(0.9)
    assert summaries[good.name].best_val_accuracy == pytest.approx(0.8)
    assert summaries[good.name].test_accuracy == pytest.approx(0.75)
    assert summaries[good.name].model == "seed"
    assert summaries["zzz-bad"].state == "failed" and "config.json" in summaries["zzz-bad"].message
    assert isinstance(runs.runs_frame(), pd.DataFrame)


def test_stop_request_file():
    run_dir = runs.new_run("d", TrainingConfig())
    assert not runs.stop_requested(run_dir)
    runs.request_stop(run_dir.name)
    assert runs.stop_requested(run_dir)
