"""Streamlit helpers shared by the pages: session-state keys, cached models, error display, run look-ups.

UI code only (it imports Streamlit); everything it shows comes from ``cxr``. Helpers that draw return
plain values, never widgets, so pages stay readable top to bottom.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from app_deployment import (  # noqa: F401 - re-exported: pages call them as ui.<name>
    DEMO_REFUSED_PAGES,
    admit_prediction,
    allowed_explain_methods,
    audit_predictions,
    demo_mode,
    demo_refusal,
    demo_session_summary,
    demo_sidebar,
    deployment,
)
from app_layout import (  # noqa: F401 - re-exported: pages call them as ui.<name>
    FAVICON,
    PAGES,
    PageEntry,
    available_pages,
    link_to,
    menu,
    page_entry,
    page_refusal,
    start_page,
)
from cxr import model_folders, paths

if TYPE_CHECKING:
    from cxr.runs import RunSummary

LOGGER = logging.getLogger("cxr.app")

# ----------------------------------------------------------------------------------------------------
# Session-state keys: every key any page reads or writes, in one place so two pages never collide.
KEY_DATASET = "dataset"  # name of the data set chosen on the Data page, preselected on Train
KEY_DATA_TAB = "data_tab"  # the open tab of the Data page's explorer
KEY_IMPORT_REPORT = "import_report"  # the last import's report (shown until the next import)
KEY_FOLLOWED_RUN = "followed_run"  # run id the Train page follows
KEY_PRESET = "preset"  # preset name whose values fill the Train page's widgets
KEY_EVALUATION_RUN = "evaluation_run"  # run id shown on the Evaluate page
KEY_THRESHOLD = "evaluation_threshold"  # the Evaluate page's threshold slider (+ "_<run id>")
KEY_THRESHOLD_MESSAGE = "evaluation_threshold_message"  # outcome of saving a threshold, shown once
KEY_EXPORT = "evaluation_export"  # the prepared model export: {"key", "name", "data"} or {"error"}
KEY_EXPORT_FORMAT = "evaluation_export_format"  # SavedModel or TFLite on the Evaluate page
KEY_EVALUATION_GROUP = "evaluation_group"  # the group of images shown on Evaluate (a confusion-matrix cell)
KEY_PREDICT_MODEL = "predict_model"  # model chosen on the Predict page (DEFAULT_MODEL or a run id)
KEY_UPLOADS = "predict_uploads"  # the Predict page's file uploader
KEY_PREDICTIONS = "predictions"  # {"context": (model, version, method), "results": {file key: result}, …}
KEY_EXPLAIN = "predict_explain"  # heat map method on the Predict page
KEY_OPACITY = "predict_opacity"  # heat map opacity on the Predict page
KEY_EXAMPLES = "predict_examples"  # example images chosen on the Predict page
KEY_SHOW_ANYWAY = "predict_show_anyway_"  # + result index: show an outside image's output anyway
KEY_COMPARE_RUNS = "compare_runs"  # runs chosen for the comparison chart
KEY_TRAINING_CONFIG = "training_config"  # the Train page's settings as one TrainingConfig (Data's preview reads it)
KEY_PRESET_CHOICE = "preset_choice"  # the preset chosen on Train, kept while its widget is not drawn
SETTING_KEY_PREFIX = "setting_"  # Train page widgets: "setting_<TrainingConfig field>"

DEFAULT_MODEL = "default"  # the Predict page's name for the bundled model
ACTIVE_STATES = ("queued", "running", "stopping")
RESUMABLE_STATES = ("stopped", "interrupted", "failed")
DISCLAIMER = ("**Research and teaching tool, not a diagnostic device.** It was trained on one public set of "
              "pediatric chest X-rays; its answers are not validated for clinical use and must never replace "
              "a radiologist's reading.")


# ----------------------------------------------------------------------------------------------------
# Errors: a message meant for a person, never a traceback in the browser.


def show_error(error: BaseException, action: str) -> None:
    """Show ``error`` under ``action`` ("Importing the data set"): its message when it is a ``ValueError``
    (``CxrError`` and settings errors are written for people), else a short note, the traceback going to
    the server log only."""
    if isinstance(error, ValueError):
        st.error(f"{action} failed: {error}")
    else:
        LOGGER.error("%s failed", action, exc_info=error)
        st.error(f"{action} failed unexpectedly ({type(error).__name__}). The details are in the server log; "
                 f"try again, and report it if it happens again.")


@contextlib.contextmanager
def guarded(action: str) -> Iterator[None]:
    """``with guarded("Loading the runs"):`` shows any exception raised inside as :func:`show_error` and
    lets the page go on. Streamlit's own control flow (``st.rerun``, ``st.stop``) derives from
    ``BaseException`` and passes through."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - the page must go on; the message says what failed
        show_error(error, action)


def run_page(page: Callable[[], None], *, key: str) -> None:
    """Every page's last line: :func:`start_page` (page settings, the menu, a refusal of a page this server
    does not offer), then the page's body; an unexpected exception becomes one short message instead of a
    stack trace."""
    start_page(key)
    try:
        page()
    except Exception as error:  # noqa: BLE001
        show_error(error, f"The {page_entry(key).label} page")
    demo_session_summary()
    warm_up_in_background()


def disclaimer() -> None:
    """The banner every clinical page shows first: in words, not a diagnostic device."""
    st.warning(DISCLAIMER, icon=":material/warning:")


# ----------------------------------------------------------------------------------------------------
# Runs, data sets and models as the pages list them.


def list_runs() -> list[RunSummary]:
    """All runs (``cxr.runs.RunSummary``), newest first; on a demo server only those of ``CXR_DEMO_MODELS``."""
    from cxr import runs

    found = runs.list_runs()
    settings = deployment()
    if settings.demo:
        found = [summary for summary in found if summary.run_id in settings.demo_models]
    return found


def list_dataset_names() -> list[str]:
    from cxr import datasets

    return [entry.name for entry in datasets.list_datasets()]


def run_has_model(run_id: str) -> bool:
    from cxr import runs

    return (Path(runs.run_path(run_id)) / "model.keras").is_file()


def bundled_model_available() -> bool:
    """Whether the repository ships a default model (``models/default/model.keras``)."""
    return (paths.BUNDLED_MODEL_DIR / "model.keras").is_file()


def finished_runs_with_model() -> list[str]:
    """Ids of finished runs that left a ``model.keras``, newest first."""
    return [summary.run_id for summary in finished_run_summaries()]


def finished_run_summaries() -> list[RunSummary]:
    """``RunSummary`` of each run that left a ``model.keras``, newest first: finished runs, and stopped or
    interrupted ones evaluated from their best epoch (``cxr.stopped_runs``)."""
    from cxr import stopped_runs

    return [summary for summary in list_runs()
            if (summary.state == "finished" and run_has_model(summary.run_id))
            or (summary.state in stopped_runs.FINALIZABLE_STATES
                and stopped_runs.has_usable_model(summary.run_id))]


def run_label(summary: RunSummary) -> str:
    """A run as people read it on every page (``cxr.run_text.run_label``): ``"fast on chest_xray-150, 25 Nov
    2026, 19:50 UTC · best validation AUC 0.990"`` (the run id stays in the URL and the Runs table)."""
    from cxr import run_text

    return run_text.run_label(summary)


def bundled_model_label() -> str:
    """The bundled model's name in a model picker, with its AUC from its metrics.json: on the test split when
    recorded (images that chose nothing, the figure to expect), else on validation, named as such."""
    import json

    try:
        metrics = json.loads((paths.BUNDLED_MODEL_DIR / "metrics.json").read_text())
    except (OSError, ValueError):
        return "Bundled model"
    for split in ("test", "validation"):
        try:
            auc = metrics[split]["auc"]
            auc = float(auc["value"] if isinstance(auc, dict) else auc)
        except (KeyError, TypeError, ValueError):
            continue
        return f"Bundled model · {split} AUC {auc:.3f}"
    return "Bundled model"


def model_metrics(choice: str) -> dict | None:
    """The ``metrics.json`` beside the model behind ``choice`` (``None`` when absent or unreadable), read
    without loading the model."""
    return model_folders.metrics_of(choice)


def model_choices() -> dict[str, str]:
    """Every model Predict can use, ``{choice: label}`` in picker order: the bundled model first (when
    shipped), then finished runs, newest first."""
    choices = {}
    if bundled_model_available():
        choices[DEFAULT_MODEL] = bundled_model_label()
    for summary in finished_run_summaries():
        choices[summary.run_id] = run_label(summary)
    return choices


def model_version(choice: str) -> float:
    """Latest modification time of the model file and metrics.json behind ``choice`` (0 when absent): part of
    the cache key, so a model or threshold replaced on disk is loaded again instead of served stale."""
    if choice == DEFAULT_MODEL:
        folder = paths.BUNDLED_MODEL_DIR
    else:
        from cxr import runs

        folder = Path(runs.run_path(choice))
    # metrics.json too: a threshold saved on the Evaluate page must reach the cached Predictor.
    times = []
    for name in ("model.keras", "metrics.json"):
        try:
            times.append((folder / name).stat().st_mtime)
        except OSError:
            times.append(0.0)
    return max(times)


# ----------------------------------------------------------------------------------------------------
# Models: loaded once per server process, shared by every session.


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def load_predictor(choice: str, version: float):
    """The ``cxr.predict.Predictor`` for ``choice`` (``DEFAULT_MODEL`` or a run id). ``version`` only
    keys the cache (see :func:`model_version`); four models at most stay in memory."""
    from cxr.predict import Predictor

    del version
    return Predictor.load("default" if choice == DEFAULT_MODEL else choice)


_WARM_UP_LOCK = threading.Lock()
_WARM_UP: dict[str, threading.Thread] = {}


def warm_up_in_background() -> threading.Thread | None:
    """Once per server process, load the model Predict opens with and run it once (with Grad-CAM) in a
    background thread, so the first prediction does not pay for importing TensorFlow, loading the model and
    tracing its graph. Started by the first page anyone opens, after that page is drawn. ``CXR_WARM_UP=0``
    turns it off (the app tests decide for themselves). Returns the thread (``None`` when off)."""
    if os.environ.get("CXR_WARM_UP", "1") == "0":
        return None
    with _WARM_UP_LOCK:
        if "thread" not in _WARM_UP:
            _WARM_UP["thread"] = threading.Thread(target=_warm_up, name="cxr-model-warm-up", daemon=True)
            _WARM_UP["thread"].start()
        return _WARM_UP["thread"]


def wait_for_warm_up(timeout: float = 300.0) -> None:
    """Wait (with a spinner) for the background warm-up when it is still running, so that a first
    prediction does not load and trace the same model a second time beside it."""
    thread = _WARM_UP.get("thread")
    if thread is not None and thread.is_alive() and thread is not threading.current_thread():
        with st.spinner("Loading the model…"):
            thread.join(timeout)


def _warm_up() -> None:
    import numpy as np

    try:
        choices = model_choices()
        if not choices:
            return
        choice = next(iter(choices))
        predictor = load_predictor(choice, model_version(choice))
        predictor.predict([np.full((64, 64), 128, np.uint8)], names=["warm-up"], explain="gradcam")
        LOGGER.info("model %s loaded and run once in the background", choice)
    except Exception:  # noqa: BLE001 - a failed warm-up only means the first prediction is slower
        LOGGER.warning("warming up the model in the background failed", exc_info=True)


def dataset_version(name: str) -> int:
    """Modification time (ns) of a data set's ``dataset.json``: keys the cache, so a re-import under the same
    name is read again."""
    try:
        return (paths.datasets_dir() / name / "dataset.json").stat().st_mtime_ns
    except OSError:
        return 0


@st.cache_resource(max_entries=2, show_spinner="Loading the data set…")
def load_dataset(name: str, version: int):
    """The imported data set ``name`` (``cxr.datasets.Dataset``), shared by every session; two at most stay
    in memory (Kermany at 150 px is about 120 MB)."""
    from cxr import datasets

    del version
    # A demo writes nothing: a damaged cache is reported, not re-imported.
    return datasets.load_dataset(name, repair=not demo_mode())


# ----------------------------------------------------------------------------------------------------
# Time per epoch, before starting.


def estimate_epoch_seconds(config: Any, num_train_images: int) -> tuple[float | None, str]:
    """Seconds one epoch of ``config`` should take on ``num_train_images`` images, and how it was found.

    Scales the measured seconds per image of earlier runs of the same model and image size on this server
    (their median), since that is what this machine really does. ``(None, reason)`` when nothing is known.
    """
    images = int(num_train_images)
    if getattr(config, "max_batches_per_epoch", None):
        images = min(images, int(config.max_batches_per_epoch) * int(config.batch_size))
    if images <= 0:
        return None, "the data set has no training images"

    from cxr import datasets, runs

    train_counts = {entry.name: entry.split_size("train") for entry in datasets.list_datasets()}
    per_image = []
    for summary in list_runs():
        run_id = summary.run_id
        try:
            recorded = runs.read_config(run_id)
            history = runs.read_history(run_id)
        except (ValueError, OSError):
            continue
        training_settings = recorded.get("training", {})
        if (training_settings.get("model") != config.model
                or training_settings.get("image_size") != config.image_size or history.empty):
            continue
        run_images = train_counts.get(recorded.get("dataset"), 0)
        if training_settings.get("max_batches_per_epoch"):
            run_images = min(run_images, training_settings["max_batches_per_epoch"] * training_settings["batch_size"])
        seconds = history["seconds"].dropna() if "seconds" in history else []
        if run_images and len(seconds):
            per_image.append(float(seconds.median()) / run_images)
    if not per_image:
        return None, "no earlier run of this model and image size on this server"
    median = statistics.median(per_image)
    return median * images, (f"from {len(per_image)} earlier run(s) of {config.model} at {config.image_size} px "
                             f"on this server ({median * 1000:.1f} ms per image)")


# ----------------------------------------------------------------------------------------------------
# Augmentation preview.


def augment_examples(image: Any, config: Any, *, count: int, seed: int) -> list:
    """``count`` random augmentations of one (s, s) uint8 image with ``config``'s augmentation settings,
    as (s, s) uint8 arrays. Uses the training pipeline's own layers (``cxr.training``) so the preview is
    what training sees."""
    import numpy as np

    from cxr import pipeline

    augmentation = pipeline.build_augmentation(config.replace(seed=int(seed)))
    pixels = np.asarray(image, dtype=np.uint8)
    if augmentation is None:  # every strength at 0: the image as it is
        return [pixels.copy() for _ in range(count)]
    batch = np.repeat(pixels[None, :, :, None], count, axis=0).astype("float32")
    augmented = np.asarray(augmentation(batch, training=True))
    return [np.clip(np.rint(one[..., 0]), 0, 255).astype(np.uint8) for one in augmented]


# ----------------------------------------------------------------------------------------------------
# Evaluate for the bundled model as for a run (cxr.model_folders says where the files are).


def evaluation_choices() -> dict[str, str]:
    """Every model Evaluate can show, ``{choice: label}``: the bundled model first (when shipped with its
    evaluation), then the runs (on a demo only those of ``CXR_DEMO_MODELS``), newest first."""
    choices = {DEFAULT_MODEL: bundled_model_label()} if model_folders.metrics_of(DEFAULT_MODEL) else {}
    for summary in list_runs():
        choices[summary.run_id] = run_label(summary)  # it says the state of a run that is not finished
    return choices
