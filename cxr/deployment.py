"""How this server is deployed, read from the environment: full app or public demo, the demo's per-session
limits, the models a demo may show, and the opt-in audit log.

Environment variables, not Streamlit's ``config.toml``: Streamlit drops sections it does not know, and an
operator sets variables the same way for ``streamlit run``, a container or a service manager.

| variable | default | meaning |
| --- | --- | --- |
| ``CXR_MODE`` | ``full`` | ``demo``: no Data or Train page, nothing written to disk, per-session limits |
| ``CXR_DEMO_MODELS`` | (none) | run ids, comma-separated, offered in demo mode besides the bundled model |
| ``CXR_DEMO_MAX_FILES`` | 10 | images per upload (demo mode) |
| ``CXR_DEMO_MAX_MB`` | 100 | megabytes of images predicted per browser session (demo mode) |
| ``CXR_DEMO_PREDICTIONS_PER_MINUTE`` | 30 | images predicted per session in any 60 s (demo mode) |
| ``CXR_DEMO_ALLOW_SHAP`` | ``false`` | SHAP heat maps (seconds of CPU per image) in demo mode |
| ``CXR_AUDIT_LOG`` | (off) | path of a JSON-lines file with one line per prediction (any mode) |
| ``CXR_AUDIT_LOG_MAX_MB`` | 100 | size at which the audit log is rotated |
| ``CXR_AUDIT_LOG_BACKUPS`` | 5 | rotated files kept (``audit.jsonl.1`` … ``.5``) |

A bad value raises ``DeploymentError`` naming the variable, the value received and what is expected. Pure
Python: no Streamlit, no TensorFlow.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cxr.errors import DeploymentError

MODES = ("full", "demo")
MODE_VARIABLE = "CXR_MODE"
DEMO_MODELS_VARIABLE = "CXR_DEMO_MODELS"
MAX_FILES_VARIABLE = "CXR_DEMO_MAX_FILES"
MAX_MEGABYTES_VARIABLE = "CXR_DEMO_MAX_MB"
PREDICTIONS_PER_MINUTE_VARIABLE = "CXR_DEMO_PREDICTIONS_PER_MINUTE"
ALLOW_SHAP_VARIABLE = "CXR_DEMO_ALLOW_SHAP"
AUDIT_LOG_VARIABLE = "CXR_AUDIT_LOG"
AUDIT_MAX_MEGABYTES_VARIABLE = "CXR_AUDIT_LOG_MAX_MB"
AUDIT_BACKUPS_VARIABLE = "CXR_AUDIT_LOG_BACKUPS"

# Ranges: wide enough for any real server, narrow enough to catch a typo (a 0, a missing unit).
MAX_FILES_RANGE = (1, 1000)
MAX_MEGABYTES_RANGE = (1.0, 100_000.0)
PREDICTIONS_PER_MINUTE_RANGE = (1, 10_000)
AUDIT_MAX_MEGABYTES_RANGE = (0.001, 100_000.0)
AUDIT_BACKUPS_RANGE = (0, 100)

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
# A run id is a folder name under CXR_HOME/runs: no separator, no "..", so a listed id cannot point elsewhere.
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class DemoLimits:
    """What one browser session may do on a demo server. Every limit counts images actually sent to the model."""

    # 10 images take about a second with the bundled model on 2 cores (62 ms each, Grad-CAM included less than
    # twice that): long enough to be useful, short enough that one visitor does not hold both cores.
    files_per_upload: int = 10
    # Uploads are held in the server's memory while a session lives; 100 MB is ~50 large DICOMs or ~500 JPEGs.
    megabytes_per_session: float = 100.0
    # One image every 2 s on average per session leaves room for ~30 busy sessions on 2 cores.
    predictions_per_minute: int = 30
    # SHAP takes seconds of CPU per image (Grad-CAM tens of milliseconds): off unless the operator wants it.
    shap_allowed: bool = False

    @property
    def bytes_per_session(self) -> int:
        return int(self.megabytes_per_session * 1_000_000)


@dataclass(frozen=True)
class AuditSettings:
    """Where the audit log goes and when it is rotated (``path`` is ``None`` when the log is off)."""

    path: Path | None = None
    max_megabytes: float = 100.0
    backups: int = 5

    @property
    def enabled(self) -> bool:
        return self.path is not None

    @property
    def max_bytes(self) -> int:
        return max(1, int(self.max_megabytes * 1_000_000))


@dataclass(frozen=True)
class Deployment:
    """The deployment as the environment describes it. ``limits`` apply in demo mode only."""

    mode: str = "full"
    demo_models: tuple[str, ...] = ()
    limits: DemoLimits = field(default_factory=DemoLimits)
    audit: AuditSettings = field(default_factory=AuditSettings)

    @property
    def demo(self) -> bool:
        return self.mode == "demo"

    @property
    def session_limits(self) -> DemoLimits | None:
        """The limits a session obeys: ``limits`` in demo mode, ``None`` (no limit) in full mode."""
        return self.limits if self.demo else None


def from_environment(environ: Mapping[str, str] | None = None) -> Deployment:
    """The deployment described by ``environ`` (default ``os.environ``, read on every call so tests can change
    it). Unset or empty variables take their defaults; a bad value raises ``DeploymentError``."""
    environ = os.environ if environ is None else environ
    mode = _text(environ, MODE_VARIABLE).lower() or "full"
    if mode not in MODES:
        raise DeploymentError(f"{MODE_VARIABLE} must be 'demo' or 'full'; received {environ[MODE_VARIABLE]!r}. "
                              f"Set {MODE_VARIABLE}=demo for a public demo, or unset it for the full app.")
    defaults = DemoLimits()
    limits = DemoLimits(
        files_per_upload=int(_number(environ, MAX_FILES_VARIABLE, defaults.files_per_upload, MAX_FILES_RANGE,
                                     integer=True)),
        megabytes_per_session=_number(environ, MAX_MEGABYTES_VARIABLE, defaults.megabytes_per_session,
                                      MAX_MEGABYTES_RANGE),
        predictions_per_minute=int(_number(environ, PREDICTIONS_PER_MINUTE_VARIABLE, defaults.predictions_per_minute,
                                           PREDICTIONS_PER_MINUTE_RANGE, integer=True)),
        shap_allowed=_flag(environ, ALLOW_SHAP_VARIABLE, defaults.shap_allowed),
    )
    audit_defaults = AuditSettings()
    audit = AuditSettings(
        path=_audit_path(environ),
        max_megabytes=_number(environ, AUDIT_MAX_MEGABYTES_VARIABLE, audit_defaults.max_megabytes,
                              AUDIT_MAX_MEGABYTES_RANGE),
        backups=int(_number(environ, AUDIT_BACKUPS_VARIABLE, audit_defaults.backups, AUDIT_BACKUPS_RANGE,
                            integer=True)),
    )
    return Deployment(mode=mode, demo_models=_run_ids(environ), limits=limits, audit=audit)


# ---------------------------------------------------------------------------------------------- parsing


def _text(environ: Mapping[str, str], name: str) -> str:
    return str(environ.get(name, "") or "").strip()


def _number(environ: Mapping[str, str], name: str, default: float, bounds: tuple[float, float], *,
            integer: bool = False) -> float:
    """The number in ``environ[name]`` (``default`` when unset or empty), within ``bounds``."""
    text = _text(environ, name)
    if not text:
        return default
    low, high = bounds
    kind = "a whole number" if integer else "a number"
    expected = (f"{name} must be {kind} from {low:g} to {high:g}; received {environ[name]!r}. "
                f"Set it to e.g. {default:g}, or unset it for the default ({default:g}).")
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise DeploymentError(expected) from None
    if value != value or not low <= value <= high:  # value != value: NaN
        raise DeploymentError(expected)
    return value


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    text = _text(environ, name).lower()
    if not text:
        return default
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise DeploymentError(f"{name} must be true or false (1/0, yes/no and on/off also work); received "
                          f"{environ[name]!r}. Unset it for the default ({str(default).lower()}).")


def _run_ids(environ: Mapping[str, str]) -> tuple[str, ...]:
    """Run ids from ``CXR_DEMO_MODELS`` (comma-separated, blanks ignored, order kept, duplicates dropped)."""
    found: list[str] = []
    for item in _text(environ, DEMO_MODELS_VARIABLE).split(","):
        item = item.strip()
        if not item:
            continue
        if item in (".", "..") or not RUN_ID_PATTERN.match(item):
            raise DeploymentError(
                f"{DEMO_MODELS_VARIABLE} must list run ids separated by commas (folder names under CXR_HOME/runs, "
                f"letters, digits, '.', '_' and '-'); received {item!r} in {environ[DEMO_MODELS_VARIABLE]!r}. "
                "Use the run id shown on the Train page, not a path.")
        if item not in found:
            found.append(item)
    return tuple(found)


def _audit_path(environ: Mapping[str, str]) -> Path | None:
    text = _text(environ, AUDIT_LOG_VARIABLE)
    if not text:
        return None
    path = Path(text).expanduser()
    if path.is_dir():
        raise DeploymentError(f"{AUDIT_LOG_VARIABLE} must be the path of a file (it is created when missing); "
                              f"received {text!r}, which is a folder. Use e.g. {str(path / 'audit.jsonl')!r}.")
    return path.resolve()
