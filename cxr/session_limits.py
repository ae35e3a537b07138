"""Per-session limits of a demo server: images per upload, megabytes per session, images per minute, SHAP.

One ``SessionLimiter`` lives in each browser session (the page keeps it in the session state). Before the model
sees anything, the page asks ``limiter.admit(sizes, explain=…)``: the answer is allowed (and the use is counted)
or refused with a message for the visitor; a refused request costs the server nothing. Pure Python; the clock is
injectable so tests control time.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cxr.deployment import DemoLimits

WINDOW_SECONDS = 60.0  # "predictions per minute" is a sliding window, not a calendar minute


@dataclass(frozen=True)
class Decision:
    """The limiter's answer. ``limit`` names the limit that refused (``None`` when allowed):
    ``"files_per_upload"``, ``"megabytes_per_session"``, ``"predictions_per_minute"`` or ``"shap"``;
    ``retry_after`` is the seconds to wait when waiting helps (the per-minute limit), else ``None``."""

    allowed: bool
    message: str = ""
    limit: str | None = None
    retry_after: float | None = None


ALLOWED = Decision(True)


class SessionLimiter:
    """Counts one session's use against ``limits`` (``None``: no limit, every request is allowed).

    ``clock`` returns seconds (monotonic); the default is ``time.monotonic``.
    """

    def __init__(self, limits: DemoLimits | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self.bytes_used = 0
        self._recent: collections.deque[float] = collections.deque()  # one timestamp per image predicted

    def predictions_in_window(self) -> int:
        """Images predicted in the last ``WINDOW_SECONDS``."""
        self._forget_old(self._clock())
        return len(self._recent)

    def check(self, sizes: Sequence[int], *, explain: str | None = None) -> Decision:
        """Whether predicting images of ``sizes`` bytes (one per image) with heat map ``explain`` ("gradcam",
        "shap", ``None`` or "none") is within the limits now. Counts nothing."""
        limits = self.limits
        if limits is None:
            return ALLOWED
        count = len(sizes)
        if count > limits.files_per_upload:
            return Decision(False, (
                f"You dropped {count} images; this demo predicts at most {limits.files_per_upload} per upload. "
                f"Remove {count - limits.files_per_upload} of them and the rest will be predicted."),
                "files_per_upload")
        if explain == "shap" and not limits.shap_allowed:
            return Decision(False, (
                "SHAP heat maps are turned off on this demo: they take seconds of processor time per image on a "
                "shared server. Choose Grad-CAM (fast) or no heat map."), "shap")
        requested = sum(int(size) for size in sizes)
        if self.bytes_used + requested > limits.bytes_per_session:
            left = max(0, limits.bytes_per_session - self.bytes_used)
            return Decision(False, (
                f"This demo predicts at most {limits.megabytes_per_session:g} MB of images per session; this "
                f"session has used {_megabytes(self.bytes_used)} MB and these images are {_megabytes(requested)} MB "
                f"({_megabytes(left)} MB left). Use smaller or fewer images, or run the app on your own computer "
                "for more."), "megabytes_per_session")
        if count > limits.predictions_per_minute:
            return Decision(False, (
                f"You dropped {count} images; this demo predicts at most {limits.predictions_per_minute} images per "
                f"minute per session. Remove {count - limits.predictions_per_minute} of them."),
                "predictions_per_minute")
        now = self._clock()
        self._forget_old(now)
        if len(self._recent) + count > limits.predictions_per_minute:
            wait = self._seconds_until_room(now, count)
            return Decision(False, (
                f"This demo predicts at most {limits.predictions_per_minute} images per minute per session; "
                f"{len(self._recent)} were predicted in the last minute and you asked for {count} more. "
                f"Try again in {math.ceil(wait)} s."), "predictions_per_minute", wait)
        return ALLOWED

    def admit(self, sizes: Sequence[int], *, explain: str | None = None) -> Decision:
        """``check``, and when allowed, count the images and their bytes as used now."""
        decision = self.check(sizes, explain=explain)
        if decision.allowed and self.limits is not None:
            now = self._clock()
            self._recent.extend([now] * len(sizes))
            self.bytes_used += sum(int(size) for size in sizes)
        return decision

    def summary(self) -> str:
        """One line for the sidebar: what this session has used of its limits ("" without limits)."""
        limits = self.limits
        if limits is None:
            return ""
        return (f"This session: {self.predictions_in_window()} of {limits.predictions_per_minute} images in the last "
                f"minute, {_megabytes(self.bytes_used)} of {limits.megabytes_per_session:g} MB; at most "
                f"{limits.files_per_upload} images per upload.")

    # ----------------------------------------------------------------------------------------- internals
    def _forget_old(self, now: float) -> None:
        while self._recent and now - self._recent[0] >= WINDOW_SECONDS:
            self._recent.popleft()

    def _seconds_until_room(self, now: float, count: int) -> float:
        """Seconds until ``count`` more images fit in the window (the oldest ones leaving it first)."""
        must_leave = len(self._recent) + count - self.limits.predictions_per_minute
        oldest_needed = self._recent[must_leave - 1]
        return max(0.0, oldest_needed + WINDOW_SECONDS - now)


def _megabytes(size: int) -> str:
    """Megabytes with one decimal; a few kilobytes read "under 0.1", not "0.0", which looks like nothing counted."""
    if 0 < size < 50_000:
        return "under 0.1"
    return f"{size / 1_000_000:.1f}"
