"""Deployment settings from the environment (cxr.deployment) and the per-session limiter (cxr.session_limits)."""

from __future__ import annotations

import pytest

from cxr import deployment
from cxr.deployment import DemoLimits, from_environment
from cxr.errors import CxrError, DeploymentError
from cxr.session_limits import SessionLimiter

MB = 1_000_000


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# ------------------------------------------------------------------------------------------- settings


def test_nothing_set_is_the_full_app_with_default_limits_and_no_audit_log():
    settings = from_environment({})
    assert settings.mode == "full" and not settings.demo
    assert settings.session_limits is None  # full mode: no per-session limit
    assert settings.limits == DemoLimits()
    assert settings.demo_models == ()
    assert not settings.audit.enabled and settings.audit.path is None


def test_demo_mode_and_every_limit_are_read_from_their_variables(tmp_path):
    settings = from_environment({
        "CXR_MODE": " Demo ", "CXR_DEMO_MODELS": "run-a, run_b.2,,run-a", "CXR_DEMO_MAX_FILES": "3",
        "CXR_DEMO_MAX_MB": "2.5", "CXR_DEMO_PREDICTIONS_PER_MINUTE": "7", "CXR_DEMO_ALLOW_SHAP": "yes",
        "CXR_AUDIT_LOG": str(tmp_path / "logs" / "audit.jsonl"), "CXR_AUDIT_LOG_MAX_MB": "0.5",
        "CXR_AUDIT_LOG_BACKUPS": "2",
    })
    assert settings.demo
    assert settings.demo_models == ("run-a", "run_b.2")
    assert settings.session_limits == DemoLimits(files_per_upload=3, megabytes_per_session=2.5,
                                                 predictions_per_minute=7, shap_allowed=True)
    assert settings.audit.path == (tmp_path / "logs" / "audit.jsonl").resolve()
    assert settings.audit.max_bytes == 500_000 and settings.audit.backups == 2


def test_os_environ_is_read_on_every_call(monkeypatch):
    monkeypatch.setenv("CXR_MODE", "demo")
    assert from_environment().demo
    monkeypatch.setenv("CXR_MODE", "full")
    assert not from_environment().demo


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("CXR_MODE", "public", "'demo' or 'full'"),
    ("CXR_DEMO_MAX_FILES", "ten", "whole number from 1 to 1000"),
    ("CXR_DEMO_MAX_FILES", "0", "whole number from 1 to 1000"),
    ("CXR_DEMO_MAX_FILES", "2.5", "whole number from 1 to 1000"),
    ("CXR_DEMO_MAX_MB", "-1", "number from 1 to 100000"),
    ("CXR_DEMO_MAX_MB", "nan", "number from 1 to 100000"),
    ("CXR_DEMO_MAX_MB", "100MB", "number from 1 to 100000"),
    ("CXR_DEMO_PREDICTIONS_PER_MINUTE", "100000", "whole number from 1 to 10000"),
    ("CXR_DEMO_ALLOW_SHAP", "maybe", "true or false"),
    ("CXR_DEMO_MODELS", "../../etc", "run ids separated by commas"),
    ("CXR_DEMO_MODELS", "good,/abs/path", "run ids separated by commas"),
    ("CXR_AUDIT_LOG_BACKUPS", "-1", "whole number from 0 to 100"),
    ("CXR_AUDIT_LOG_MAX_MB", "0", "number from 0.001 to 100000"),
])
def test_a_bad_value_names_the_variable_the_value_and_what_is_expected(variable, value, expected):
    with pytest.raises(DeploymentError) as raised:
        from_environment({variable: value})
    message = str(raised.value)
    assert variable in message
    assert repr(value) in message or value in message
    assert expected in message
    assert isinstance(raised.value, CxrError)


def test_an_audit_log_path_that_is_a_folder_is_refused(tmp_path):
    with pytest.raises(DeploymentError, match="CXR_AUDIT_LOG must be the path of a file.*which is a folder"):
        from_environment({"CXR_AUDIT_LOG": str(tmp_path)})


def test_empty_values_take_the_defaults():
    settings = from_environment({name: "" for name in (
        deployment.MODE_VARIABLE, deployment.MAX_FILES_VARIABLE, deployment.MAX_MEGABYTES_VARIABLE,
        deployment.PREDICTIONS_PER_MINUTE_VARIABLE, deployment.ALLOW_SHAP_VARIABLE, deployment.AUDIT_LOG_VARIABLE)})
    assert settings == from_environment({})


# -------------------------------------------------------------------------------------------- limiter


def limiter(clock=None, **limits) -> SessionLimiter:
    values = {"files_per_upload": 5, "megabytes_per_session": 10.0, "predictions_per_minute": 8,
              "shap_allowed": False} | limits
    return SessionLimiter(DemoLimits(**values), clock=clock or FakeClock())


def test_without_limits_everything_is_allowed():
    unlimited = SessionLimiter(None, clock=FakeClock())
    for _ in range(100):
        assert unlimited.admit([50 * MB] * 50, explain="shap").allowed
    assert unlimited.summary() == ""


def test_files_per_upload():
    session = limiter(files_per_upload=3)
    refused = session.admit([100] * 4)
    assert not refused.allowed and refused.limit == "files_per_upload"
    assert "You dropped 4 images" in refused.message and "at most 3 per upload" in refused.message
    assert "Remove 1" in refused.message
    assert session.predictions_in_window() == 0 and session.bytes_used == 0  # a refusal counts nothing
    assert session.admit([100] * 3).allowed


def test_shap_is_refused_unless_allowed_and_grad_cam_is_not():
    session = limiter()
    refused = session.admit([100], explain="shap")
    assert not refused.allowed and refused.limit == "shap" and "Grad-CAM" in refused.message
    assert session.admit([100], explain="gradcam").allowed
    assert session.admit([100], explain=None).allowed
    assert limiter(shap_allowed=True).admit([100], explain="shap").allowed


def test_megabytes_per_session_add_up_across_requests_and_never_come_back():
    clock = FakeClock()
    session = limiter(clock, megabytes_per_session=10.0, predictions_per_minute=1000)
    assert session.admit([4 * MB]).allowed
    assert session.admit([4 * MB]).allowed
    refused = session.admit([3 * MB])
    assert not refused.allowed and refused.limit == "megabytes_per_session"
    assert "at most 10 MB of images per session" in refused.message
    assert "has used 8.0 MB" in refused.message and "these images are 3.0 MB (2.0 MB left)" in refused.message
    clock.advance(3600)  # unlike the rate, the session's budget does not refill with time
    assert not session.admit([3 * MB]).allowed
    assert session.admit([2 * MB]).allowed  # exactly up to the limit is allowed
    assert session.bytes_used == 10 * MB


def test_the_sidebar_line_counts_small_uploads_visibly():
    """A 30 kB JPEG used to read "0.0 of 100 MB", as if it had not been counted."""
    session = SessionLimiter(DemoLimits(files_per_upload=10, megabytes_per_session=100, predictions_per_minute=30,
                                        shap_allowed=False), clock=lambda: 0.0)
    assert "0.0 of 100 MB" in session.summary()
    session.admit([30_000])
    assert "1 of 30 images in the last minute, under 0.1 of 100 MB" in session.summary()
    session.admit([2 * MB])
    assert "2.0 of 100 MB" in session.summary()


def test_predictions_per_minute_is_a_sliding_window_with_the_wait_in_the_message():
    clock = FakeClock()
    session = limiter(clock, predictions_per_minute=8)
    assert session.admit([1] * 5).allowed  # t = 0: 5 images
    clock.advance(20)
    assert session.admit([1] * 3).allowed  # t = 20: 8 in the window, the limit
    clock.advance(10)
    refused = session.admit([1] * 2)  # t = 30: 2 more need the 5 of t = 0 to leave, at t = 60
    assert not refused.allowed and refused.limit == "predictions_per_minute"
    assert refused.retry_after == pytest.approx(30)
    assert "at most 8 images per minute" in refused.message and "Try again in 30 s" in refused.message
    clock.advance(29.5)
    assert not session.admit([1]).allowed  # t = 59.5: still full
    clock.advance(0.5)
    assert session.predictions_in_window() == 3  # t = 60: the first 5 have left the window
    assert session.admit([1] * 5).allowed
    assert not session.admit([1]).allowed


def test_a_request_larger_than_the_rate_is_refused_without_a_useless_wait():
    session = limiter(files_per_upload=20, predictions_per_minute=8)
    refused = session.admit([1] * 9)
    assert not refused.allowed and refused.limit == "predictions_per_minute"
    assert refused.retry_after is None and "Remove 1" in refused.message


def test_sessions_are_counted_apart():
    clock = FakeClock()
    first, second = limiter(clock, predictions_per_minute=2), limiter(clock, predictions_per_minute=2)
    assert first.admit([1, 1]).allowed
    assert not first.admit([1]).allowed
    assert second.admit([1, 1]).allowed


def test_summary_says_what_the_session_used():
    clock = FakeClock()
    session = limiter(clock)
    session.admit([1_500_000, 500_000])
    assert session.summary() == ("This session: 2 of 8 images in the last minute, 2.0 of 10 MB; at most 5 images "
                                 "per upload.")
