"""Predict and Evaluate as their users see them, in a real browser:

- on a phone (390 px) the result card comes first: the verdict is drawn above the table, the examples and the
  model's operating point, within the first screen, and nothing is wider than the screen;
- an adult chest X-ray (../shared/data/adult/frontal) gets "Outside this model's training population", no
  verdict, and its output only behind "Show the model's output anyway" (skipped without the data or without a
  model that has a population detector);
- a click on a cell of Evaluate's confusion matrix shows that cell's images.
Screenshots go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import re

import pytest
from browser_helpers import SHARED_DATA, choose_option, screenshot, wait_for_app_idle
from conftest import FINISHED_RUN_DATASET

pytestmark = pytest.mark.e2e

VERDICT = re.compile("^(Pneumonia likely|Pneumonia unlikely|Uncertain — near the threshold)$")
OUTSIDE = "Outside this model's training population:"


def open_predict(page, url: str, model_text: str | None = None) -> None:
    page.goto(f"{url}/predict")
    page.get_by_role("heading", name="Predict").wait_for()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').wait_for(state="attached")
    wait_for_app_idle(page)
    if model_text:
        choose_option(page, page.locator('[data-testid="stSelectbox"]').first, model_text)
        wait_for_app_idle(page)


def test_on_a_phone_the_result_card_comes_first(browser, app_server, finished_run):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(120_000)
    open_predict(page, app_server["url"], FINISHED_RUN_DATASET)
    page.get_by_role("button", name="Normal 1").click()  # an example image shipped with the app
    verdict = page.get_by_role("heading", name=VERDICT).first
    verdict.wait_for()
    wait_for_app_idle(page)
    top = verdict.bounding_box()["y"]
    for later in (page.locator('[data-testid="stDataFrame"]'), page.get_by_text("How to read the answers"),
                  page.get_by_role("button", name="Normal 2")):
        assert later.first.bounding_box()["y"] > top
    main_scroll_top = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollTop")
    assert top - 0 < 844 + main_scroll_top, f"the verdict starts {top:.0f} px down, below the first screen"
    overflow = page.evaluate("() => document.documentElement.scrollWidth")
    assert overflow <= 390, f"the page is {overflow} px wide on a 390 px screen"
    screenshot(page, "06-predict-phone")
    context.close()


def test_an_adult_xray_is_outside_the_training_population(page, app_server):
    adults = sorted((SHARED_DATA / "adult" / "frontal").glob("*.jp*g"))
    if not adults:
        pytest.skip("../shared/data/adult/frontal is absent")
    from cxr import paths
    from cxr.predict import PredictionResult

    if "population" not in PredictionResult.__dataclass_fields__:
        pytest.skip("cxr.predict gives no population verdict in this checkout")
    if not (paths.BUNDLED_MODEL_DIR / "population.json").is_file():
        pytest.skip("the bundled model has no population detector (models/default/population.json)")
    open_predict(page, app_server["url"], "Bundled model")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        [{"name": adults[0].name, "mimeType": "image/jpeg", "buffer": adults[0].read_bytes()}])
    page.get_by_text(OUTSIDE).first.wait_for(timeout=180_000)
    wait_for_app_idle(page)
    assert page.get_by_role("heading", name=VERDICT).count() == 0, "an outside image has no verdict"
    assert page.get_by_text(re.compile(r"P\(pneumonia\) \d")).count() == 0
    screenshot(page, "07-predict-outside")
    page.get_by_text("Show the model's output anyway").click()
    page.get_by_text(re.compile(r"Model output, not reliable for this image: P\(pneumonia\) \d")).wait_for()
    assert page.get_by_role("heading", name=VERDICT).count() == 0


def test_a_click_on_a_confusion_matrix_cell_shows_its_images(page, app_server, finished_run):
    page.goto(f"{app_server['url']}/evaluate")
    page.get_by_role("heading", name="Evaluate").wait_for()
    choose_option(page, page.locator('[data-testid="stSelectbox"]').first, FINISHED_RUN_DATASET)
    wait_for_app_idle(page)
    matrix = page.locator('[data-testid="stVegaLiteChart"]').first
    matrix.wait_for()
    page.wait_for_timeout(500)
    # Find the cells by their colour (the "blues" scheme: blue well above red) in a picture of the chart, then
    # click the lower-left one (true pneumonia, predicted normal) away from its centre, where the count is.
    import cv2
    import numpy as np

    box = matrix.bounding_box()
    picture = cv2.imdecode(np.frombuffer(matrix.screenshot(), np.uint8), cv2.IMREAD_COLOR).astype(int)
    blue = (picture[..., 0] - picture[..., 2]) > 28  # BGR; grey-blue axis text stays below
    # Rows and columns that cross a cell hold dozens of such pixels; text strokes only a few.
    rows, columns = np.flatnonzero(blue.sum(axis=1) > 40), np.flatnonzero(blue.sum(axis=0) > 40)
    assert rows.size and columns.size, "no confusion-matrix cell found in the chart"
    scale = box["width"] / picture.shape[1]
    left, right = columns[0] * scale, columns[-1] * scale
    top, bottom = rows[0] * scale, rows[-1] * scale
    page.mouse.click(box["x"] + left + 0.12 * (right - left), box["y"] + top + 0.9 * (bottom - top))
    page.get_by_text(re.compile(r'in "Missed pneumonia \(false negatives\)" at')).wait_for(timeout=60_000)
    wait_for_app_idle(page)
    screenshot(page, "08-evaluate-cell")
