"""cxr.model_folders: the bundled model and a run read alike (folder, status, metrics, data set)."""

from __future__ import annotations

import json

import pytest

from cxr import model_folders, paths, runs
from cxr.config import TrainingConfig
from cxr.errors import RunError


@pytest.fixture
def bundled(tmp_path, monkeypatch):
    folder = tmp_path / "bundled"
    folder.mkdir()
    monkeypatch.setattr(paths, "BUNDLED_MODEL_DIR", folder)
    return folder


def test_the_bundled_model_reads_as_a_finished_model_with_its_own_files(bundled):
    (bundled / "metrics.json").write_text(json.dumps({"threshold": 0.3}))
    (bundled / "training_config.json").write_text(json.dumps({"dataset": "chest_xray-150"}))
    assert model_folders.folder_of("default") == bundled
    assert model_folders.status_of("default")["state"] == "finished"
    assert model_folders.metrics_of("default") == {"threshold": 0.3}
    assert model_folders.dataset_of("default") == "chest_xray-150"


def test_a_run_reads_from_its_run_folder():
    path = runs.new_run("tiny", TrainingConfig(image_size=32, epochs=1))
    runs.write_status(path, state="running")
    assert model_folders.folder_of(path.name) == path
    assert model_folders.status_of(path.name)["state"] in ("running", "interrupted")  # no live process here
    assert model_folders.metrics_of(path.name) is None  # not evaluated yet
    assert model_folders.dataset_of(path.name) == "tiny"
    (path / "metrics.json").write_text("[1, 2]")  # not an object
    assert model_folders.metrics_of(path.name) is None
    with pytest.raises(RunError):
        model_folders.folder_of("no-such-run")


def test_missing_or_broken_files_read_as_unknown(bundled):
    assert model_folders.metrics_of("default") is None and model_folders.dataset_of("default") is None
    (bundled / "training_config.json").write_text("{broken")
    assert model_folders.dataset_of("default") is None


def test_dataset_imported(cxr_home):
    assert not model_folders.dataset_imported(None) and not model_folders.dataset_imported("tiny")
    (paths.datasets_dir() / "tiny").mkdir(parents=True)
    (paths.datasets_dir() / "tiny" / "dataset.json").write_text("{}")
    assert model_folders.dataset_imported("tiny")
