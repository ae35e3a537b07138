"""Data and Train in a real browser: import a tiny folder through the Data page, start a tiny training on the
Train page, watch it live, press Stop, evaluate the stopped run from its best epoch and open it on Evaluate.

Screenshots of Data and Train (idle, training, stopped, evaluated) at 1280 px and at a phone's 390 px go to
test-artifacts/screenshots/. Tiny on purpose (32 px images, the fast network, two batches an epoch), so the
whole flow takes seconds of training.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from browser_helpers import screenshot, selectbox_text, wait_for_app_idle

pytestmark = pytest.mark.e2e

IMAGE_SIZE = 32
EPOCHS_DONE = re.compile(r"(\d+) epoch\(s\) finished")
WIDTHS = {"1280": 1280, "390": 390}


def make_png_folder(root: Path, per_class: int) -> Path:
    """train/ and test/ × NORMAL/ and PNEUMONIA/ PNGs with long Kermany-like names (captions must wrap at
    word boundaries); pneumonia images are brighter, so a model can learn something."""
    import cv2

    generator = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", 8)):
        for label, folder in enumerate(("NORMAL", "PNEUMONIA")):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            kind = "virus" if label else "normal"
            for index in range(count):
                pixels = (generator.random((48, 40)) * 150 + 70 * label).astype(np.uint8)
                patient = 1000 * label + (500 if split == "test" else 0) + index  # one patient per image
                name = f"person{patient}_{kind}_{index + 17}-{split}.png"
                cv2.imwrite(str(root / split / folder / name), pixels)
    return root


def screenshots(page, name: str) -> None:
    """``name-1280.png`` and ``name-390.png`` (phone width) of the page as it is now."""
    viewport = page.viewport_size
    page.mouse.move(1, 1)  # no tooltip of a hovered control over the picture
    for suffix, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": viewport["height"]})
        page.wait_for_timeout(500)  # let the layout and the charts settle at the new width
        screenshot(page, f"{name}-{suffix}")
    page.set_viewport_size(viewport)


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    wait_for_app_idle(page)


def test_stop_a_tiny_training_then_evaluate_and_use_the_stopped_run(page, app_server, cxr_home, tmp_path):
    folder = make_png_folder(tmp_path / "xrays", per_class=24)
    page.goto(f"{app_server['url']}/data")
    page.get_by_role("heading", name="Data").first.wait_for()
    page.get_by_role("textbox", name="Folder path on the server").fill(str(folder))
    page.get_by_role("textbox", name="Name (optional)").fill("tiny-stop")
    size = page.get_by_role("spinbutton", name="Image size (pixels, square)")
    size.fill(str(IMAGE_SIZE))
    size.press("Enter")
    wait_for_app_idle(page)
    page.get_by_role("button", name="Import", exact=True).click()
    page.get_by_text("Imported data set").wait_for(timeout=120_000)
    wait_for_app_idle(page)
    open_tab(page, "Sample images")
    page.locator('[data-testid="stImage"] img').nth(11).wait_for()
    page.wait_for_timeout(1000)  # let the images decode
    screenshots(page, "02-data-samples")
    open_tab(page, "Sizes and intensities")
    page.locator('[data-testid="stVegaLiteChart"]').nth(1).wait_for()
    screenshots(page, "02-data-sizes")
    open_tab(page, "Augmentation preview")
    page.get_by_text("random 6").wait_for(timeout=120_000)
    wait_for_app_idle(page)
    screenshots(page, "02-data-augmentation")

    # The menu keeps the session, so the Train page preselects the new data set.
    page.locator('[data-testid="stSidebar"]').get_by_role("link", name="Train").click()
    page.get_by_role("heading", name="Train").first.wait_for()
    wait_for_app_idle(page)
    assert "tiny-stop" in selectbox_text(page.locator('[data-testid="stSelectbox"]').first)
    epochs = page.locator('input[type="range"][aria-label="Epochs"]')
    epochs.focus()
    epochs.press("End")  # 100 epochs: the run is still going when Stop is pressed
    wait_for_app_idle(page)
    page.get_by_text("Advanced settings").click()
    open_tab(page, "Regularization and stopping")
    page.locator('[data-testid="stCheckbox"]').filter(has_text=re.compile("^Early stopping$")).click()
    wait_for_app_idle(page)
    screenshots(page, "03-train-idle")
    page.get_by_role("button", name="Start training", exact=True).click()

    done = page.get_by_text(EPOCHS_DONE)
    done.wait_for(timeout=180_000)
    # Start is disabled while the data set's run is going, and says why.
    page.get_by_text("A run on tiny-stop is going").first.wait_for()
    assert page.get_by_role("button", name="Start training", exact=True).is_disabled()
    deadline_ms = 120_000
    while int(EPOCHS_DONE.search(done.inner_text()).group(1)) < 2 and deadline_ms > 0:
        page.wait_for_timeout(500)
        deadline_ms -= 500
    screenshots(page, "03-train-training")

    page.get_by_role("button", name="Stop", exact=True).click()
    page.get_by_text(re.compile(r"Stopped by you after epoch \d+ of 100")).first.wait_for(timeout=120_000)
    wait_for_app_idle(page)
    evaluate = page.get_by_role("button", name="Evaluate and use this run", exact=True)
    evaluate.wait_for()
    screenshots(page, "03-train-stopped")

    evaluate.click()
    page.get_by_text(re.compile("Evaluated with the weights of epoch \\d+")).wait_for(timeout=180_000)
    wait_for_app_idle(page)
    screenshots(page, "03-train-stopped-evaluated")
    statuses = [json.loads(path.read_text()) for path in (cxr_home / "runs").glob("*/status.json")]
    stopped = [status for status in statuses if status.get("finalized_epoch")]
    assert len(stopped) == 1 and stopped[0]["state"] == "stopped" and stopped[0]["stop_reason"] == "user"
    run_dirs = [path.parent for path in (cxr_home / "runs").glob("*/status.json")
                if json.loads(path.read_text()).get("finalized_epoch")]
    assert (run_dirs[0] / "model.keras").is_file() and (run_dirs[0] / "metrics.json").is_file()

    # The stopped run opens on Evaluate like a finished one.
    page.get_by_role("link", name="Evaluate this run").click()
    page.get_by_role("heading", name="Evaluate").first.wait_for()
    page.get_by_text("Classification report").first.wait_for(timeout=120_000)
    wait_for_app_idle(page)
    screenshot(page, "04-evaluate-stopped-run")
