"""Where the project stores what it makes: imported data sets and training runs.

Everything lives under one folder, ``CXR_HOME`` (environment variable), by default ``cxr-home/`` in
the project directory (ignored by git).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOME = PROJECT_ROOT / "cxr-home"
BUNDLED_MODEL_DIR = PROJECT_ROOT / "models" / "default"


def home() -> Path:
    """The storage root: ``$CXR_HOME`` if set, else ``<project>/cxr-home``. Read on every call so tests
    can point it elsewhere with ``monkeypatch.setenv``."""
    value = os.environ.get("CXR_HOME")
    return Path(value).expanduser().resolve() if value else DEFAULT_HOME


def datasets_dir() -> Path:
    """Folder holding one sub-folder per imported data set."""
    return home() / "datasets"


def runs_dir() -> Path:
    """Folder holding one sub-folder per training run (the run-directory contract, cxr/runs.py)."""
    return home() / "runs"
