"""SIGTERM is a stop request only while a training command runs; the process's own handler comes back after it."""

from __future__ import annotations

import os
import signal

from cxr import stop_requests


def test_sigterm_is_a_stop_request_inside_the_block_and_the_old_handler_returns_after_it():
    calls = []

    def own_handler(signum, frame):  # noqa: ARG001
        calls.append(signum)

    previous = signal.signal(signal.SIGTERM, own_handler)
    try:
        stop_requests._stop_signal["received"] = True  # left over from an earlier run in this process
        with stop_requests.stop_signal_handler():
            assert not stop_requests.stop_signal_received()  # a stale request does not stop the new run
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop_requests.stop_signal_received()
            assert calls == []  # taken as a stop request, not passed to the process's handler
        assert signal.getsignal(signal.SIGTERM) is own_handler
        os.kill(os.getpid(), signal.SIGTERM)
        assert calls == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_requests._stop_signal["received"] = False


def test_the_handler_is_restored_when_the_block_fails():
    before = signal.getsignal(signal.SIGTERM)
    try:
        with stop_requests.stop_signal_handler():
            raise RuntimeError("training failed")
    except RuntimeError:
        pass
    assert signal.getsignal(signal.SIGTERM) is before
