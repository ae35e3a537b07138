"""Stop requests for a training process: SIGTERM becomes "finish the batch, save, state stopped".

Kept apart from the Keras callbacks so that ``cxr.training`` can catch ``StopRequested`` without importing
Keras.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

_stop_signal = {"received": False}


class StopRequested(Exception):
    """Raised from a callback to leave ``fit`` right after the current batch."""


def install_stop_signal_handler() -> None:
    """Make SIGTERM a stop request (finish the batch, save, state ``stopped``) instead of a kill."""
    def handle(signum, frame):  # noqa: ARG001
        _stop_signal["received"] = True

    signal.signal(signal.SIGTERM, handle)


@contextlib.contextmanager
def stop_signal_handler() -> Iterator[None]:
    """SIGTERM as a stop request while the block runs, and the handler that was there before restored after it.

    Why restore: ``cxr train`` also runs inside other processes (the test suite, a notebook calling
    ``cli.main``); a handler left behind would turn that process's own SIGTERM (a CI time limit, a
    scheduler) into a stop request for a training that has long finished, so the process would not end.
    A request left from an earlier run is cleared, so it cannot stop the next one at its first batch.
    """
    previous = signal.getsignal(signal.SIGTERM)
    _stop_signal["received"] = False
    install_stop_signal_handler()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def stop_signal_received() -> bool:
    return _stop_signal["received"]


__all__ = ["StopRequested", "install_stop_signal_handler", "stop_signal_handler", "stop_signal_received"]
