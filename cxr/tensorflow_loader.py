"""The one place TensorFlow and Keras are imported: quietly, unless asked to be verbose.

On TensorFlow 2.21 ``TF_CPP_MIN_LOG_LEVEL`` does not silence start-up: absl writes "All log messages
before absl::InitializeLog()…", the oneDNN notice, "Could not find cuda drivers" and, on a machine
without a GPU, an alarming ``E0000 … failed call to cuInit`` straight to file descriptor 2 while
``import tensorflow`` runs and when the devices are first listed. Python's ``sys.stderr`` never sees
them, so they are caught by pointing descriptor 2 at a temporary file for that moment. What was
caught is kept (``captured_log()``) and shown when the import fails or with ``set_verbose(True)``
(the command line's ``--verbose``).

Every import of TensorFlow or Keras in cxr goes through here, as one line in place of the usual one:

    from cxr.tensorflow_loader import tensorflow as tf     # instead of: import tensorflow as tf
    from cxr.tensorflow_loader import keras                # instead of: import keras
    from cxr.tensorflow_loader import keras_layers as layers   # instead of: from keras import layers

(module attributes computed on first access, PEP 562), or through ``import_tensorflow()`` /
``import_keras()``. This module imports nothing of cxr.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Any

_state = {"verbose": os.environ.get("CXR_VERBOSE", "") not in ("", "0"), "captured": ""}


def set_verbose(verbose: bool) -> None:
    """``True``: TensorFlow's start-up lines reach the terminal (must be called before the first import)."""
    _state["verbose"] = bool(verbose)
    if verbose:
        os.environ["CXR_VERBOSE"] = "1"  # child processes (training jobs) inherit the choice


def captured_log() -> str:
    """What TensorFlow wrote to descriptor 2 while it was being imported ("" when verbose or not yet loaded)."""
    return _state["captured"]


@contextlib.contextmanager
def _descriptor_2_captured():
    """Point file descriptor 2 at a temporary file; on exit restore it and keep the text caught."""
    try:
        sys.stderr.flush()
        target = sys.__stderr__.fileno() if sys.__stderr__ is not None else 2
    except (AttributeError, OSError, ValueError):  # no real descriptor (an embedded interpreter)
        yield
        return
    saved = os.dup(target)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), target)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, target)
            os.close(saved)
            sink.seek(0)
            _state["captured"] += sink.read().decode("utf-8", "replace")


def import_tensorflow() -> Any:
    """``tensorflow``, imported (and its devices listed) with start-up logging held back unless verbose.

    Raises the import's own error after printing what TensorFlow wrote, so a broken install still
    explains itself.
    """
    if "tensorflow" in sys.modules and _state.get("loaded"):
        return sys.modules["tensorflow"]
    if _state["verbose"]:
        import tensorflow

        _state["loaded"] = True
        return tensorflow
    # C++ logging after the import (XLA, device placement) obeys this; the user's own value wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with _descriptor_2_captured():
            import tensorflow

            # The CUDA platform is initialised here, not at import: its cuInit error is caught too.
            tensorflow.config.list_physical_devices()
    except BaseException:
        if _state["captured"]:
            print(_state["captured"], end="", file=sys.stderr)
        raise
    _state["loaded"] = True
    return tensorflow


def import_keras() -> Any:
    """``keras`` (Keras 3 on the TensorFlow backend), imported after ``import_tensorflow()``."""
    import_tensorflow()
    import keras

    return keras


def __getattr__(name: str) -> Any:
    """``tensorflow``, ``keras`` and ``keras_layers`` as attributes, imported quietly on first access."""
    if name == "tensorflow":
        return import_tensorflow()
    if name == "keras":
        return import_keras()
    if name == "keras_layers":
        return import_keras().layers
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["import_tensorflow", "import_keras", "set_verbose", "captured_log"]
