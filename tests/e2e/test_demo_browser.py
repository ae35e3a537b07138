"""Demo mode in a real browser: a direct link to the Train page, as the first request of a fresh demo server,
shows the refusal and no training control; the menu leaves Data and Train out; the sidebar says it is a demo."""

from __future__ import annotations

import pytest
from browser_helpers import screenshot, wait_for_app_idle
from conftest import served_app

pytestmark = pytest.mark.e2e


def menu_texts(page) -> list[str]:
    links = page.locator('[data-testid="stSidebar"] [data-testid="stPageLink"]')
    return [text.strip().splitlines()[-1] for text in links.all_inner_texts()]  # after the icon's ligature name


def test_a_direct_link_to_train_on_a_fresh_demo_server_is_refused(browser, tmp_path):
    home = tmp_path / "home"
    with served_app(home, log_name="streamlit-server-demo.log", environment={"CXR_MODE": "demo"}) as server:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)
        page.goto(f"{server['url']}/train")
        page.get_by_text("The Train page is not available on this public demo").wait_for()
        wait_for_app_idle(page)
        screenshot(page, "demo-train-refused")
        assert page.get_by_text("Page not found").count() == 0
        assert page.get_by_role("button", name="Start training").count() == 0
        assert page.locator('[data-testid="stSlider"], [data-testid="stSelectbox"]').count() == 0
        assert menu_texts(page) == ["Home", "Evaluate", "Predict"]
        assert page.locator('[data-testid="stSidebar"]').get_by_text("Public demo").count() == 1

        page.goto(f"{server['url']}/data")
        page.get_by_text("The Data page is not available on this public demo").wait_for()
        wait_for_app_idle(page)
        assert page.get_by_role("button", name="Import").count() == 0
        page.close()
    assert not (home / "runs").exists() and not (home / "datasets").exists()
