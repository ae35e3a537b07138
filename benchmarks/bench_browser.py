"""The app as a user's browser sees it: times, and screenshots to look at.

    python benchmarks/bench_browser.py                 # times (and screenshots) with the bundled model
    python benchmarks/bench_browser.py --no-screenshots

Starts ``streamlit run streamlit_app.py`` with a fresh ``CXR_HOME`` (holding one finished run made from the
bundled model's own evaluation files, so Evaluate has something to show), drives Debian's headless Chromium
(``/usr/bin/chromium``) with Playwright, and prints, against the targets of the app issue:

- first page: from ``streamlit run`` to the Home page drawn (the browser already open);
- first prediction after opening Predict: from the click on "Predict" in the menu to the first image's
  verdict and heat map drawn (the model loads in the background once Home is drawn), for a visitor who opens
  Predict at once and, on a second fresh server, for one who reads Home for ``--pause`` seconds first;
- a further single-image upload: from adding one more file to its verdict and heat map drawn.

Screenshots (``test-artifacts/screenshots/bench-*.png``, git-ignored) at 1280 and 390 px: Home, Predict with
an in-population result, an outside result (an adult X-ray from ../shared/data/adult/frontal), a batch,
and Evaluate. Real X-rays come from ../shared/data (the Kermany test split); without it the script stops
with a message.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script from anywhere: cxr is the repository's package
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
CHROMIUM = Path(os.environ.get("CXR_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
VERDICT = re.compile("^(Pneumonia likely|Pneumonia unlikely|Uncertain — near the threshold)$")
TARGETS = {"first_page": 3.0, "first_prediction": 5.0, "first_upload": 5.0, "further_upload": 1.5}
WIDTHS = (1280, 390)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_home(home: Path) -> str:
    """A CXR_HOME with one finished run: the bundled model with its own metrics, predictions and card."""
    os.environ["CXR_HOME"] = str(home)
    from cxr import paths, runs
    from cxr.config import TrainingConfig

    bundled = paths.BUNDLED_MODEL_DIR
    run_dir = runs.new_run("chest_xray-150", TrainingConfig(image_size=150, epochs=14))
    for name in ("model.keras", "metrics.json", "predictions.csv", "model_card.md", "model_card.json",
                 "background.npy", "population.npz", "population.json"):
        if (bundled / name).is_file():
            shutil.copy2(bundled / name, run_dir / name)
    runs.write_status(run_dir, state="finished", epoch=14, epochs=14)
    return run_dir.name


def payload(path: Path) -> dict:
    mime = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
    return {"name": path.name, "mimeType": mime, "buffer": path.read_bytes()}


def wait_idle(page, timeout: float = 120_000) -> None:
    page.wait_for_timeout(200)
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=timeout)


def shoot(page, name: str) -> None:
    """The whole page at the current width (Streamlit scrolls inside its main block, so the viewport is
    stretched to the content's height first)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    viewport = page.viewport_size
    height = page.evaluate("""() => {
        const main = document.querySelector('[data-testid="stMain"]') || document.body;
        return Math.max(main.scrollHeight, document.body.scrollHeight);
    }""")
    page.set_viewport_size({"width": viewport["width"], "height": int(min(max(height, 800), 8000))})
    page.wait_for_timeout(400)
    page.wait_for_function("() => Array.from(document.images).every(image => image.complete)")
    page.screenshot(path=str(SCREENSHOTS / f"{name}-{viewport['width']}.png"), full_page=True)
    page.set_viewport_size(viewport)


def upload(page, files: list[dict], verdicts: int) -> float:
    """Add ``files`` to the Predict page's uploader; seconds until ``verdicts`` cards (verdict or outside
    message) are drawn and the script is idle."""
    started = time.perf_counter()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(files)
    cards = page.get_by_role("heading", name=VERDICT).or_(page.get_by_text("Outside this model's training population:"))
    deadline = time.monotonic() + 180
    while cards.count() < verdicts and time.monotonic() < deadline:
        page.wait_for_timeout(25)
    wait_idle(page)
    return time.perf_counter() - started


def start_server(page, home: Path, log):
    """``streamlit run`` on a free port; returns (process, url, seconds until Home was drawn in ``page``)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1"],
        cwd=REPO_ROOT, env=dict(os.environ, CXR_HOME=str(home)), stdout=log, stderr=subprocess.STDOUT)
    while True:
        try:
            page.goto(url, timeout=2000)
            break
        except Exception:  # noqa: BLE001 - not listening yet
            if server.poll() is not None or time.perf_counter() - started > 120:
                stop_server(server)
                raise RuntimeError(f"the server did not start; see {home / 'server.log'}") from None
            time.sleep(0.05)
    page.get_by_role("heading", name="Chest X-ray classifier").wait_for()
    seconds = time.perf_counter() - started
    wait_idle(page)
    return server, url, seconds


def stop_server(server) -> None:
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()


def first_prediction(page, image: Path) -> tuple[float, float]:
    """Click "Predict" in the menu and upload ``image``: (seconds from the click, seconds from the upload)
    until its verdict is drawn."""
    opened = time.perf_counter()
    page.locator('[data-testid="stSidebar"]').get_by_role("link", name="Predict").click()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').wait_for(state="attached")
    upload_seconds = upload(page, [payload(image)], 1)
    return time.perf_counter() - opened, upload_seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-screenshots", action="store_true", help="only the times")
    parser.add_argument("--pause", type=float, default=45.0,
                        help="seconds a visitor spends on Home before opening Predict, in the second start "
                             "(the background warm-up has that long)")
    arguments = parser.parse_args()
    kermany = SHARED_DATA / "chest_xray" / "test"
    adults = SHARED_DATA / "adult" / "frontal"
    if not kermany.is_dir() or not CHROMIUM.exists():
        print(f"needs {kermany} and {CHROMIUM}; one is missing", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    home = Path(tempfile.mkdtemp(prefix="cxr-bench-browser-"))
    run_id = prepare_home(home)
    pneumonia = sorted((kermany / "PNEUMONIA").glob("*.jpeg"))
    normal = sorted((kermany / "NORMAL").glob("*.jpeg"))
    adult = sorted(adults.glob("*.jp*g")) + sorted(adults.glob("*.png")) if adults.is_dir() else []
    log = open(home / "server.log", "w")  # noqa: SIM115 - closed below
    times: dict[str, float] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            # 1. A visitor who opens Predict at once: the warm-up has barely started.
            page = browser.new_page(viewport={"width": WIDTHS[0], "height": 900})
            page.set_default_timeout(180_000)
            server, url, times["first_page"] = start_server(page, home, log)
            try:
                times["first_prediction"], times["first_upload"] = first_prediction(page, pneumonia[0])
                times["further_upload"] = upload(page, [payload(normal[0])], 2)
                times["further_upload_2"] = upload(page, [payload(pneumonia[1])], 3)
                if not arguments.no_screenshots:
                    screenshots(browser, url, pneumonia, normal, adult, run_id)
            finally:
                stop_server(server)
            page.close()
            # 2. A fresh server and a visitor who reads Home for --pause seconds first.
            page = browser.new_page(viewport={"width": WIDTHS[0], "height": 900})
            page.set_default_timeout(180_000)
            server, url, _ = start_server(page, home, log)
            try:
                page.wait_for_timeout(arguments.pause * 1000)
                times["paused_prediction"], times["paused_upload"] = first_prediction(page, pneumonia[2])
            finally:
                stop_server(server)
        finally:
            log.close()
            browser.close()
    print(f"cxr app in headless Chromium, {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}; "
          f"bundled model; run {run_id}")
    print(f"{'measure':<64}{'seconds':>9}{'target':>9}")
    rows = [("first page after `streamlit run`", "first_page"),
            ("first prediction, Predict opened at once (click → verdict)", "first_prediction"),
            ("  of which the upload → verdict", "first_upload"),
            (f"first prediction, Predict opened {arguments.pause:.0f} s after Home (click → verdict)",
             "paused_prediction"),
            ("  of which the upload → verdict", "paused_upload"),
            ("a further single-image upload → result", "further_upload"),
            ("another further single-image upload → result", "further_upload_2")]
    for label, key in rows:
        target = TARGETS.get(key, TARGETS["further_upload"] if key.startswith("further") else TARGETS["first_upload"])
        print(f"{label:<64}{times[key]:>9.2f}{target:>9.1f}")
    if not arguments.no_screenshots:
        print(f"screenshots: {SCREENSHOTS}/bench-*.png")
    shutil.rmtree(home, ignore_errors=True)
    return 0


def screenshots(browser, url: str, pneumonia: list[Path], normal: list[Path], adult: list[Path], run_id: str) -> None:
    for width in WIDTHS:
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.set_default_timeout(180_000)
        page.goto(url)
        page.get_by_role("heading", name="Chest X-ray classifier").wait_for()
        wait_idle(page)
        shoot(page, "bench-home")

        page.goto(f"{url}/predict")
        page.get_by_role("heading", name="Predict").wait_for()
        wait_idle(page)
        upload(page, [payload(pneumonia[2])], 1)
        shoot(page, "bench-predict-in-population")
        if adult:
            page.goto(f"{url}/predict")
            page.get_by_role("heading", name="Predict").wait_for()
            wait_idle(page)
            upload(page, [payload(adult[0])], 1)
            shoot(page, "bench-predict-outside")
        page.goto(f"{url}/predict")
        page.get_by_role("heading", name="Predict").wait_for()
        wait_idle(page)
        batch = [payload(path) for path in (pneumonia[3], normal[1], normal[2], *adult[1:2])]
        upload(page, batch, len(batch))
        shoot(page, "bench-predict-batch")

        page.goto(f"{url}/evaluate")
        page.get_by_role("heading", name="Evaluate").wait_for()
        wait_idle(page)
        page.locator('[data-testid="stVegaLiteChart"]').first.wait_for()
        shoot(page, "bench-evaluate")
        page.close()
    del run_id


if __name__ == "__main__":
    sys.exit(main())
