"""Where a model's files are, for the bundled model and for a training run alike.

Both folders hold ``model.keras``, ``metrics.json``, ``predictions.csv`` and ``model_card.md``; a run also has
``status.json`` and ``config.json``, the bundled model ``training_config.json``. A *choice* is ``"default"``
(the bundled model, ``models/default/``) or a run id. Pure Python; nothing is written.
"""

from __future__ import annotations

import json
from pathlib import Path

from cxr import paths

BUNDLED = "default"  # the bundled model's choice name (as ``Predictor.load`` and the pages spell it)


def folder_of(choice: str) -> Path:
    """The folder of the model behind ``choice``."""
    if choice == BUNDLED:
        return paths.BUNDLED_MODEL_DIR
    from cxr import runs

    return Path(runs.run_path(choice))


def status_of(choice: str) -> dict:
    """A run's status (``cxr.runs.read_status``); the bundled model reads as finished."""
    if choice == BUNDLED:
        return {"state": "finished", "error": None, "message": None}
    from cxr import runs

    return runs.read_status(choice)


def metrics_of(choice: str) -> dict | None:
    """The model's ``metrics.json`` as a dict; ``None`` when absent, unreadable or not an object."""
    try:
        metrics = json.loads((folder_of(choice) / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def dataset_of(choice: str) -> str | None:
    """Name of the data set the model was trained and evaluated on; ``None`` when not recorded."""
    name = "training_config.json" if choice == BUNDLED else "config.json"
    try:
        recorded = json.loads((folder_of(choice) / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return (recorded.get("dataset") or None) if isinstance(recorded, dict) else None


def dataset_imported(name: str | None) -> bool:
    """Whether the data set ``name`` is imported under ``CXR_HOME`` (so its images can be shown)."""
    return bool(name) and (paths.datasets_dir() / str(name) / "dataset.json").is_file()
