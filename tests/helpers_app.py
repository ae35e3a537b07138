"""Shared helpers for the app tests (Streamlit's AppTest): open a page, find widgets, a tiny data set.

Imports of Streamlit happen inside the functions, so test modules that do not touch the app can import
this file for nothing.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]


def prepare_app(monkeypatch, *, bundled_model: Path | None = None) -> None:
    """What every app test needs before its first run: the project importable (``app_components``),
    Streamlit's caches empty (they outlive a test within one process), and, with ``bundled_model``,
    the bundled model replaced by that folder (the tests decide whether one exists). The server's background
    model warm-up is off (``CXR_WARM_UP=0``): a test that wants it turns it on."""
    import streamlit as st

    from cxr import paths

    monkeypatch.syspath_prepend(str(REPO_ROOT))
    monkeypatch.setenv("CXR_WARM_UP", "0")
    if bundled_model is not None:
        monkeypatch.setattr(paths, "BUNDLED_MODEL_DIR", bundled_model)
    st.cache_resource.clear()
    st.cache_data.clear()


def open_page(page: str | None = None, *, timeout: float = 60):
    """A fresh session of the app (``streamlit_app.py``), switched to ``page`` (e.g. "pages/train.py"),
    run, and checked to have raised nothing."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO_ROOT / "streamlit_app.py"), default_timeout=timeout)
    at.run()
    if page is not None:
        at.switch_page(page)
        at.run()
    assert not at.exception, at.exception
    return at


def widget(at, kind: str, label: str):
    """The first element of ``kind`` ("button", "selectbox", "metric", ...) with ``label``."""
    return next(item for item in getattr(at, kind) if item.label == label)


def button(at, label: str):
    return widget(at, "button", label)


def errors(at) -> list[str]:
    return [error.value for error in at.error]


def metric_values(at) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


def tiny_npz_bytes(*, train: int = 8, test: int = 8, test_labels=None, size: int = 32, seed: int = 0) -> bytes:
    """A MedMNIST-style .npz of random gray images: train and test, labels alternating 0/1 unless given."""
    generator = np.random.default_rng(seed)
    buffer = io.BytesIO()
    np.savez(buffer, train_images=generator.integers(0, 255, (train, size, size), dtype=np.uint8),
             train_labels=np.arange(train) % 2,
             test_images=generator.integers(0, 255, (test, size, size), dtype=np.uint8),
             test_labels=np.arange(test) % 2 if test_labels is None else np.asarray(test_labels))
    return buffer.getvalue()


def import_tiny_dataset(folder: Path, name: str = "tiny", **npz_settings) -> None:
    """``tiny_npz_bytes(**npz_settings)`` written under ``folder`` and imported as data set ``name`` (32 px)."""
    from cxr import datasets
    from cxr.config import DataConfig

    path = Path(folder) / f"{name}.npz"
    path.write_bytes(tiny_npz_bytes(**npz_settings))
    datasets.import_dataset(path, name=name, config=DataConfig(image_size=npz_settings.get("size", 32)))
