"""Stop requests for a training process: SIGTERM becomes "finish the batch, save, state stopped".

Kept apart from the Keras callbacks so that ``cxr.training`` can catch ``StopRequested`` without importing
Keras.
"""

from __future__ import annotations

import signal

_stop_signal = {"received": False}


class StopRequested(Exception):
    """Raised from a callback to leave ``fit`` right after the current batch."""


def install_stop_signal_handler() -> None:
    """Make SIGTERM a stop request (finish the batch, save, state ``stopped``) instead of a kill."""
    def handle(signum, frame):  # noqa: ARG001
        _stop_signal["received"] = True

    signal.signal(signal.SIGTERM, handle)


def stop_signal_received() -> bool:
    return _stop_signal["received"]


__all__ = ["StopRequested", "install_stop_signal_handler", "stop_signal_received"]
