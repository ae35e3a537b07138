"""Shared helpers for the training-engine tests: tiny synthetic data sets and small run settings.

The synthetic images are learnable on purpose: a "pneumonia" image (label 1) has a bright blob in a
random place on a noisy background, a "normal" image has none. Everything is 32x32 so a model trains
an epoch in a second or two.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cxr.config import TrainingConfig
from cxr.datasets import Dataset

PROJECT_ROOT = Path(__file__).resolve().parents[1]
IMAGE_SIZE = 32


def synthetic_split(count: int, *, size: int = IMAGE_SIZE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images (count, size, size) uint8, labels (count,) int64), half of each class."""
    generator = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    images = generator.normal(90, 20, size=(count, size, size))
    rows, cols = np.mgrid[:size, :size]
    for index in np.flatnonzero(labels == 1):
        center_row, center_col = generator.integers(size // 4, 3 * size // 4, size=2)
        blob = np.exp(-((rows - center_row) ** 2 + (cols - center_col) ** 2) / (2 * (size / 8) ** 2))
        images[index] += 120 * blob
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def synthetic_dataset(train: int = 48, test: int = 16, *, size: int = IMAGE_SIZE, name: str = "synthetic",
                      val: int = 0) -> Dataset:
    """An in-memory ``Dataset`` with train/test (and val when ``val`` > 0) splits."""
    arrays = {"train": synthetic_split(train, size=size, seed=1), "test": synthetic_split(test, size=size, seed=2)}
    if val:
        arrays["val"] = synthetic_split(val, size=size, seed=3)
    return Dataset.from_arrays(name, arrays)


def write_npz(path: Path, train: int = 48, test: int = 16, *, size: int = IMAGE_SIZE) -> Path:
    """A MedMNIST-style ``.npz`` that ``python -m cxr train PATH`` can read."""
    train_images, train_labels = synthetic_split(train, size=size, seed=1)
    test_images, test_labels = synthetic_split(test, size=size, seed=2)
    np.savez(path, train_images=train_images, train_labels=train_labels,
             test_images=test_images, test_labels=test_labels)
    return path


def tiny_config(**overrides) -> TrainingConfig:
    """Fast settings for tests: 32 px fast network, 2 epochs, batch 8, fixed seed."""
    values = dict(model="fast", image_size=IMAGE_SIZE, epochs=2, batch_size=8, optimizer="adam",
                  learning_rate=3e-3, schedule="constant", class_weighting="balanced",
                  early_stopping=False, validation_fraction=0.25, seed=7)
    values.update(overrides)
    return TrainingConfig(**values)


def child_environment(home: Path) -> dict[str, str]:
    """Environment for a child ``python -m cxr`` process: the test's CXR_HOME, quiet TensorFlow, the
    project importable, and one thread each so parallel children do not fight over two cores."""
    environment = dict(os.environ)
    environment.update(CXR_HOME=str(home), TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(PROJECT_ROOT),
                       TF_NUM_INTEROP_THREADS="1", TF_NUM_INTRAOP_THREADS="1", PYTHONUNBUFFERED="1")
    return environment


def run_cli(args: list[str], home: Path, *, timeout: float = 120, **popen) -> subprocess.CompletedProcess:
    """Run ``python -m cxr ARGS`` to completion with ``child_environment(home)``."""
    return subprocess.run([sys.executable, "-m", "cxr", *args], cwd=PROJECT_ROOT, env=child_environment(home),
                          capture_output=True, text=True, timeout=timeout, **popen)


def wait_until(predicate, *, timeout: float = 90, interval: float = 0.1, what: str = "condition"):
    """Poll ``predicate()`` until it returns something truthy; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
