"""Shared test set-up: every test stores into its own temporary CXR_HOME, never into the project."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers_data import write_folder_dataset

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of test logs

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def cxr_home(tmp_path_factory, monkeypatch) -> Path:
    """A fresh storage root for each test (data sets, runs)."""
    home = tmp_path_factory.mktemp("cxr-home")
    monkeypatch.setenv("CXR_HOME", str(home))
    return home


@pytest.fixture
def shared_data() -> Path:
    """The real X-rays in ../shared/data; the test is skipped when they are absent."""
    if not (SHARED_DATA / "chest_xray").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def folder_dataset(tmp_path) -> Path:
    """A tiny tutorial-layout data set: train and test, 12 images per class each, 48 px PNG."""
    return write_folder_dataset(tmp_path / "tiny")
