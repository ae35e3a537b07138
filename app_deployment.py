"""Streamlit side of the deployment settings (``cxr.deployment``): public demo mode, the per-session limits
(``cxr.session_limits``) and the audit log (``cxr.audit``).

UI code only; it imports Streamlit and ``cxr``, never ``app_components`` (which imports this module), so the
two never form a cycle. Pages reach these helpers through ``app_components``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import streamlit as st

LOGGER = logging.getLogger("cxr.app")

KEY_LIMITER = "session_limiter"  # this session's cxr.session_limits.SessionLimiter (demo limits)
DEMO_REFUSED_PAGES = ("data", "train")  # absent from the demo's menu; their pages refuse direct links


def deployment():
    """The deployment the environment describes (``cxr.deployment.Deployment``), read on every call. A bad
    setting stops the page with its message: a typo in ``CXR_MODE=demo`` must not open the full app to
    strangers."""
    from cxr import deployment as deployment_settings
    from cxr.errors import DeploymentError

    try:
        return deployment_settings.from_environment()
    except DeploymentError as error:
        LOGGER.error("Invalid deployment setting: %s", error)
        st.error(f"This server is misconfigured and serves no page until its operator fixes it: {error}",
                 icon=":material/error:")
        st.stop()


def demo_mode() -> bool:
    """Whether this server is a public demo (``CXR_MODE=demo``)."""
    return deployment().demo


def demo_refusal(label: str) -> str:
    """What a demo shows instead of the page ``label`` ("Data", "Train")."""
    return (f"**The {label} page is not available on this public demo.** This server only predicts with its "
            "ready models: it does not import data sets or train models, and it keeps nothing you upload. To "
            "train your own model, run the app on your own computer (see the project's README).")


def demo_sidebar() -> None:
    """On a demo server, say so in the sidebar: what it does and what it does not do."""
    if not demo_mode():
        return
    st.sidebar.info("**Public demo.** Try the ready models on your own chest X-rays. This demo does not train "
                    "models or import data sets, and it writes nothing you upload to disk: results live in this "
                    "browser tab until you close it (download them as CSV).", icon=":material/public:")


def demo_session_summary() -> None:
    """On a demo server, what this session has used of its limits, under the sidebar's note. Drawn after the
    page's body, so it counts the images that body has just predicted."""
    if not demo_mode():
        return
    summary = session_limiter().summary()
    if summary:
        st.sidebar.caption(summary)


def session_limiter():
    """This session's ``SessionLimiter`` (no limits in full mode). Made again when the limits change."""
    from cxr.session_limits import SessionLimiter

    limits = deployment().session_limits
    limiter = st.session_state.get(KEY_LIMITER)
    if limiter is None or limiter.limits != limits:
        limiter = SessionLimiter(limits)
        st.session_state[KEY_LIMITER] = limiter
    return limiter


def admit_prediction(contents: list[bytes], explain_method: str | None) -> bool:
    """Whether this session may predict the images ``contents`` (their bytes) with ``explain_method`` now;
    counts them when it may, shows the limit's message when it may not. Call it right before the model runs."""
    decision = session_limiter().admit([len(data) for data in contents], explain=explain_method)
    if not decision.allowed:
        st.warning(decision.message, icon=":material/hourglass_top:")
    return decision.allowed


def allowed_explain_methods(methods: list[str]) -> list[str]:
    """``methods`` (heat map choices such as "gradcam", "shap", "none") less SHAP on a demo that does not allow
    it, so a visitor is not offered what would be refused."""
    settings = deployment()
    if settings.demo and not settings.limits.shap_allowed:
        return [method for method in methods if method != "shap"]
    return list(methods)


@st.cache_data(max_entries=16, show_spinner=False)
def _file_sha256(path: str, modified_ns: int) -> str:
    from cxr import audit

    del modified_ns
    return audit.file_sha256(path)


def model_file_version(model_path: Path) -> str:
    """The first 16 hex digits of the SHA-256 of ``model_path`` (the audit log's model version), computed once
    per file and modification time."""
    return _file_sha256(str(model_path), model_path.stat().st_mtime_ns)[:16]


def audit_predictions(choice: str, contents: list[bytes], results: list) -> None:
    """One audit line per result of the model ``choice`` ("default" or a run id) when ``CXR_AUDIT_LOG`` is set
    (any mode). ``contents[i]`` are the bytes behind ``results[i]``. A log that cannot be written is reported
    (server log and page) but hides no result."""
    from cxr import audit, model_folders

    log = audit.AuditLog.from_settings(deployment().audit)
    if log is None:
        return
    try:
        version = model_file_version(model_folders.folder_of(choice) / "model.keras")
        log.write([audit.record_of(result, data, model_id=choice, model_version=version)
                   for data, result in zip(contents, results, strict=True)])
    except (OSError, ValueError) as error:
        LOGGER.error("Writing the audit log %s failed", log.path, exc_info=error)
        st.warning("These predictions could not be recorded in the server's audit log; the operator can see why "
                   "in the server log.", icon=":material/warning:")
