"""Browser tests: start the real app (``streamlit run``) on a free port with its own CXR_HOME, and drive it
with Playwright in Debian's headless Chromium (``/usr/bin/chromium``; Playwright never downloads one).

Without Chromium the tests skip, unless the ``CI`` variable is set: CI must run them, so there they fail.
Screenshots go to ``test-artifacts/screenshots/`` and measured times to ``test-artifacts/timings.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from browser_helpers import ARTIFACTS, TIMINGS, record_timing, screenshot

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("CXR_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
SERVER_START_TIMEOUT = 60  # seconds for /_stcore/health to answer on a busy two-core machine


def pytest_sessionfinish(session, exitstatus):
    if TIMINGS:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / "timings.json"
        existing = json.loads(path.read_text()) if path.exists() else {}
        existing.update(TIMINGS)
        path.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium chromium-driver)."
        if os.environ.get("CI"):
            pytest.fail(message + " CI must run the browser tests.")
        pytest.skip(message)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("playwright is not installed; CI must run the browser tests (pip install playwright).")
        pytest.skip("playwright is not installed")
    return str(CHROMIUM)


@pytest.fixture(scope="session")
def cxr_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cxr-home")


def stop_active_runs(home: Path) -> None:
    """End training processes the tests started (by their pid in status.json) so none outlives the tests."""
    for status_file in (home / "runs").glob("*/status.json"):
        try:
            status = json.loads(status_file.read_text())
        except (OSError, ValueError):
            continue
        pid = status.get("pid")
        if status.get("state") in ("queued", "running", "stopping") and isinstance(pid, int) and pid > 0:
            (status_file.parent / "stop").write_text("end of tests\n")
            try:
                os.kill(pid, 15)
            except (ProcessLookupError, PermissionError):
                pass


@contextlib.contextmanager
def served_app(home: Path, log_name: str = "streamlit-server.log", environment: dict | None = None):
    """A fresh ``streamlit run streamlit_app.py`` on a free port with ``CXR_HOME=home``; yields
    ``{"url", "started", "process"}`` once /_stcore/health answers, and ends the server afterwards."""
    port = free_port()
    environment = dict(os.environ, CXR_HOME=str(home), PYTHONUNBUFFERED="1", **(environment or {}))
    log_path = ARTIFACTS / log_name
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w")  # noqa: SIM115 - closed in the finally below
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=REPO_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"streamlit exited with {process.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not answer /_stcore/health in {SERVER_START_TIMEOUT} s")
            time.sleep(0.1)
        yield {"url": url, "started": started, "process": process, "health_seconds": time.perf_counter() - started}
    finally:
        stop_active_runs(home)
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="session")
def app_server(chromium_path, cxr_home):
    """The app served by ``streamlit run streamlit_app.py`` for the whole session; yields its base URL."""
    with served_app(cxr_home) as server:
        record_timing("server_health_ok_seconds", server["health_seconds"])
        yield server


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def first_page_seconds(app_server, browser) -> float:
    """Time from ``streamlit run`` to the Home page rendered in the browser (measured once per session)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_server["url"])
    page.get_by_role("heading", name="Chest X-ray classifier").wait_for(timeout=60_000)
    seconds = time.perf_counter() - app_server["started"]
    record_timing("streamlit_run_to_first_page_seconds", seconds)
    page.close()
    return seconds


@pytest.fixture
def page(request, browser, app_server, first_page_seconds):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        screenshot(page, f"failed-{request.node.name}")  # what the browser showed when the test failed
    context.close()


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``-n 2 --dist loadgroup``), every browser test goes to one worker: one server, one
    Chromium, one timings.json writer, as in a serial run. (This hook sees the whole session's items.)"""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.xdist_group("browser"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


MODEL_SIZE = 64  # the prepared model's input size: big enough for a real X-ray to mean something, fast
FINISHED_RUN_DATASET = "zz-evaluation"  # its data set's name: the run's label in a picker contains it


@pytest.fixture(scope="session")
def finished_run(cxr_home, monkeypatch_session) -> str:
    """A finished run, as training leaves it: a (random-weight) fast model, metrics, predictions, model card,
    on an imported data set whose test split matches the predictions."""
    monkeypatch_session.setenv("CXR_HOME", str(cxr_home))
    from cxr import datasets, models, runs
    from cxr.config import DataConfig, TrainingConfig
    from cxr.run_results import write_run_results

    generator = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", 40), ("val", 20), ("test", 24)):
        arrays[f"{split}_images"] = generator.integers(0, 255, (count, MODEL_SIZE, MODEL_SIZE), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.arange(count) % 2
    source = cxr_home / "eval-source.npz"
    np.savez(source, **arrays)
    datasets.import_dataset(source, name=FINISHED_RUN_DATASET, config=DataConfig(image_size=MODEL_SIZE))
    dataset = datasets.load_dataset(FINISHED_RUN_DATASET)
    run_dir = runs.new_run(FINISHED_RUN_DATASET, TrainingConfig(image_size=MODEL_SIZE, epochs=1))
    models.build_model("fast", (MODEL_SIZE, MODEL_SIZE, 1)).save(run_dir / "model.keras")
    val_true, test_true = dataset.labels("val"), dataset.labels("test")
    write_run_results(run_dir, val_true=val_true,
                      val_score=np.clip(0.3 + 0.4 * val_true + 0.3 * generator.random(len(val_true)), 0, 1),
                      test_true=test_true,
                      test_score=np.clip(0.2 + 0.4 * test_true + 0.4 * generator.random(len(test_true)), 0, 1))
    runs.write_status(run_dir, state="finished", epoch=1)
    return run_dir.name


@pytest.fixture(scope="session")
def monkeypatch_session():
    patcher = pytest.MonkeyPatch()
    yield patcher
    patcher.undo()
