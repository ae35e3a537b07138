"""End to end in a real browser: the app served by ``streamlit run``, driven by Playwright in headless Chromium.

- Home renders (and the time from ``streamlit run`` to the first page is recorded);
- Predict: upload a real X-ray, see P(pneumonia) and a heat map; times for 1 image (cold and warm) and
  20 images; a bad file gets its message in place;
- Evaluate: the report, the confusion matrix and the curves of a finished run;
- Data + Train: import a small folder through the page, start a tiny training, watch the epoch charts grow,
  press Stop and see the run stopped.
Screenshots of each page go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from browser_helpers import (
    choose_option,
    record_timing,
    screenshot,
    selectbox_text,
    wait_for_app_idle,
    xray_files,
)

pytestmark = pytest.mark.e2e

MODEL_SIZE = 64  # the prepared model's input size: big enough for a real X-ray to mean something, fast
PREDICTED = re.compile(r"(\d+) of (\d+) image\(s\) predicted in ([\d.]+) s")
HEAT_MAP_CAPTION = re.compile("— heat map$")
VERDICT = re.compile("^(Pneumonia likely|Pneumonia unlikely|Uncertain — near the threshold)$")
EPOCHS_DONE = re.compile(r"(\d+) epoch\(s\) finished")


@pytest.fixture(scope="session")
def finished_run(cxr_home, monkeypatch_session) -> str:
    """A finished run, as training leaves it: a (random-weight) fast model, metrics, predictions, model card,
    on an imported data set whose test split matches the predictions."""
    monkeypatch_session.setenv("CXR_HOME", str(cxr_home))
    from cxr import datasets, evaluation, models, runs
    from cxr.config import DataConfig, TrainingConfig

    generator = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", 40), ("val", 20), ("test", 24)):
        arrays[f"{split}_images"] = generator.integers(0, 255, (count, MODEL_SIZE, MODEL_SIZE), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.arange(count) % 2
    source = cxr_home / "eval-source.npz"
    np.savez(source, **arrays)
    datasets.import_dataset(source, name="zz-evaluation", config=DataConfig(image_size=MODEL_SIZE))
    dataset = datasets.load_dataset("zz-evaluation")
    run_dir = runs.new_run("zz-evaluation", TrainingConfig(image_size=MODEL_SIZE, epochs=1))
    models.build_model("fast", (MODEL_SIZE, MODEL_SIZE, 1)).save(run_dir / "model.keras")
    val_true, test_true = dataset.labels("val"), dataset.labels("test")
    evaluation.finalize_run(run_dir, val_true=val_true,
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


def upload_and_wait(page, files: list[dict], expected_heat_maps: int) -> tuple[float, re.Match]:
    """Upload ``files`` on the Predict page; seconds until the results line and the last image's heat map are
    shown, and the results line's match."""
    uploader = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
    started = time.perf_counter()
    uploader.set_input_files(files)
    result_line = page.get_by_text(PREDICTED)
    result_line.wait_for(timeout=180_000)
    if expected_heat_maps:
        page.get_by_text(HEAT_MAP_CAPTION).nth(expected_heat_maps - 1).wait_for(timeout=180_000)
    seconds = time.perf_counter() - started
    return seconds, PREDICTED.search(result_line.inner_text())


def test_home_page_is_served_quickly(page, app_server, first_page_seconds):
    page.goto(app_server["url"])
    page.get_by_role("heading", name="Chest X-ray classifier").wait_for()
    page.get_by_text("not a diagnostic device").first.wait_for()
    wait_for_app_idle(page)
    screenshot(page, "01-home")
    # A fresh server must be usable in seconds (generous bound for a shared two-core machine).
    assert first_page_seconds < 45


def test_predict_shows_probability_and_heat_map_for_one_and_twenty_images(page, app_server, finished_run):
    page.goto(f"{app_server['url']}/predict")
    page.get_by_role("heading", name="Predict").wait_for()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').wait_for(state="attached")
    # The bundled model, when this checkout has one, comes first: pick the prepared run for stable figures.
    choose_option(page, page.locator('[data-testid="stSelectbox"]').first, finished_run)
    wait_for_app_idle(page)

    one = xray_files(1)
    cold_seconds, match = upload_and_wait(page, one, 1)
    assert match.group(1, 2) == ("1", "1")
    page.get_by_role("heading", name=VERDICT).first.wait_for()
    assert page.get_by_text(re.compile(r"Probability of pneumonia \d+\.\d %")).count() == 1
    page.get_by_text(f"{one[0]['name']} — heat map").wait_for()
    assert page.locator('[data-testid="stImage"]').count() >= 1
    wait_for_app_idle(page)
    screenshot(page, "05-predict-one")
    record_timing("upload_to_prediction_1_image_cold_seconds", cold_seconds)
    record_timing("predict_call_1_image_cold_seconds", float(match.group(3)))

    page.reload()  # a new session; the model stays loaded in the server (st.cache_resource)
    warm_seconds, match = upload_and_wait(page, one, 1)
    record_timing("upload_to_prediction_1_image_warm_seconds", warm_seconds)
    record_timing("predict_call_1_image_warm_seconds", float(match.group(3)))

    page.reload()
    twenty = xray_files(20)
    twenty_seconds, match = upload_and_wait(page, twenty, 20)
    assert match.group(1, 2) == ("20", "20")
    assert page.get_by_text(HEAT_MAP_CAPTION).count() == 20
    record_timing("upload_to_prediction_20_images_warm_seconds", twenty_seconds)
    record_timing("predict_call_20_images_warm_seconds", float(match.group(3)))
    wait_for_app_idle(page)
    screenshot(page, "05-predict-twenty")

    page.reload()
    _, match = upload_and_wait(page, [{"name": "broken.png", "mimeType": "image/png", "buffer": b"not a png"}, *one], 1)
    assert match.group(1, 2) == ("1", "2")
    page.get_by_text("broken.png").first.wait_for()
    assert page.locator('[data-testid="stAlertContentError"]').filter(has_text="broken.png").count() == 1
    screenshot(page, "05-predict-bad-file")


def test_evaluate_shows_report_matrix_and_curves(page, app_server, finished_run):
    page.goto(f"{app_server['url']}/evaluate")
    page.get_by_role("heading", name="Evaluate").wait_for()
    choose_option(page, page.locator('[data-testid="stSelectbox"]').first, finished_run)
    page.get_by_text("Classification report").wait_for()
    wait_for_app_idle(page)
    page.locator('[data-testid="stVegaLiteChart"]').nth(3).wait_for()
    assert page.locator('[data-testid="stVegaLiteChart"]').count() == 4
    screenshot(page, "04-evaluate")


def make_png_folder(root: Path, per_class: int) -> Path:
    import cv2

    generator = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", 10)):
        for label, folder in enumerate(("NORMAL", "PNEUMONIA")):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            for index in range(count):
                pixels = (generator.random((MODEL_SIZE, MODEL_SIZE)) * 160 + 60 * label).astype(np.uint8)
                cv2.imwrite(str(root / split / folder / f"{folder.lower()}-{split}-{index}.png"), pixels)
    return root


def test_import_then_train_live_and_stop(page, app_server, cxr_home, tmp_path):
    folder = make_png_folder(tmp_path / "xrays", per_class=300)
    page.goto(f"{app_server['url']}/data")
    page.get_by_role("heading", name="Data").first.wait_for()
    page.get_by_role("textbox", name="Folder path on the server").fill(str(folder))
    page.get_by_role("textbox", name="Name (optional)").fill("a-live-training")
    size = page.get_by_role("spinbutton", name="Image size (pixels, square)")
    size.fill(str(MODEL_SIZE))
    size.press("Enter")
    wait_for_app_idle(page)
    page.get_by_role("button", name="Import", exact=True).click()
    page.get_by_text("Imported data set").wait_for(timeout=120_000)
    wait_for_app_idle(page)
    screenshot(page, "02-data")

    # Sidebar navigation keeps the session, so the Train page preselects the new data set.
    page.get_by_role("link", name="Train").click()
    page.get_by_role("heading", name="Train").first.wait_for()
    wait_for_app_idle(page)
    assert "a-live-training" in selectbox_text(page.locator('[data-testid="stSelectbox"]').first)
    epochs = page.locator('input[type="range"][aria-label="Epochs"]')
    epochs.focus()
    epochs.press("End")  # 100 epochs: the run is still going when Stop is pressed
    wait_for_app_idle(page)
    page.locator('[data-testid="stCheckbox"]').filter(has_text=re.compile("^Early stopping$")).click()
    wait_for_app_idle(page)
    page.get_by_role("button", name="Start training", exact=True).click()

    done = page.get_by_text(EPOCHS_DONE)
    done.wait_for(timeout=180_000)
    first_count = int(EPOCHS_DONE.search(done.inner_text()).group(1))
    assert page.locator('[data-testid="stVegaLiteChart"]').count() >= 4
    deadline = time.monotonic() + 120
    count = first_count
    while count <= first_count and time.monotonic() < deadline:
        page.wait_for_timeout(1000)
        count = int(EPOCHS_DONE.search(done.inner_text()).group(1))
    assert count > first_count, "the epoch charts did not grow"
    screenshot(page, "03-train-live")

    page.get_by_role("button", name="Stop", exact=True).click()
    ended = page.get_by_text(re.compile(r"state: (stopped|finished|failed|interrupted)")).first
    ended.wait_for(timeout=120_000)
    statuses = [json.loads(path.read_text()) for path in (cxr_home / "runs").glob("*/status.json")]
    assert "state: stopped" in ended.inner_text(), f"the run did not end as stopped: {statuses}"
    # The live panel then redraws the whole page once, without its timer: Stop gives way to Resume.
    page.get_by_role("button", name="Resume", exact=True).wait_for()
    wait_for_app_idle(page)
    page.wait_for_timeout(2500)  # longer than the refresh period: nothing may start refreshing again
    wait_for_app_idle(page)
    assert page.get_by_role("button", name="Stop", exact=True).count() == 0
    screenshot(page, "03-train-stopped")
    statuses = [json.loads(path.read_text()) for path in (cxr_home / "runs").glob("*/status.json")]
    stopped = [status for status in statuses if status["state"] == "stopped"]
    assert len(stopped) == 1 and stopped[0]["epoch"] < 100
