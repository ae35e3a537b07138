"""The layout in a real browser: Streamlit's multipage convention (``streamlit_app.py`` + ``pages/``) with the
app's own menu. A deep link must work as the very first request of a fresh server, with the app's menu and not
Streamlit's list of file names, and the tab icon must come from the app itself (works offline)."""

from __future__ import annotations

import pytest
from browser_helpers import screenshot, wait_for_app_idle
from conftest import served_app

pytestmark = pytest.mark.e2e

MENU = ["Home", "Data", "Train", "Evaluate", "Predict"]


def menu_texts(page) -> list[str]:
    links = page.locator('[data-testid="stSidebar"] [data-testid="stPageLink"]')
    links.first.wait_for()  # on a busy machine the sidebar may be drawn a moment after the page's heading
    return [text.strip().splitlines()[-1] for text in links.all_inner_texts()]  # after the icon's ligature name


@pytest.mark.parametrize(("path", "heading"), [("data", "Data"), ("train", "Train"), ("evaluate", "Evaluate"),
                                               ("predict", "Predict")])
def test_a_deep_link_works_as_the_first_request_of_a_fresh_server(browser, tmp_path, path, heading):
    with served_app(tmp_path / "home", log_name=f"streamlit-server-deep-link-{path}.log") as server:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)
        page.goto(f"{server['url']}/{path}")
        page.get_by_role("heading", name=heading).first.wait_for()
        wait_for_app_idle(page)
        assert page.get_by_text("Page not found").count() == 0
        assert page.locator('[data-testid="stSidebarNav"]').count() == 0, "Streamlit's own page list is shown"
        assert menu_texts(page) == MENU
        assert page.title().startswith(f"{heading} · cxr")
        icon = page.locator('link[rel~="icon"]').first.get_attribute("href")
        assert icon and (icon.startswith("/") or icon.startswith(server["url"])), f"tab icon from elsewhere: {icon}"
        if path == "predict":
            screenshot(page, "00-deep-link-predict")
        page.close()


def test_the_menu_moves_between_pages_and_keeps_urls_sensible(page, app_server):
    page.goto(app_server["url"])
    page.get_by_role("heading", name="Chest X-ray classifier").wait_for()
    wait_for_app_idle(page)
    assert menu_texts(page) == MENU
    for label in MENU[1:]:
        page.locator('[data-testid="stSidebar"]').get_by_role("link", name=label).click()
        page.get_by_role("heading", name=label).first.wait_for()
        wait_for_app_idle(page)
        assert menu_texts(page) == MENU
        assert page.url == f"{app_server['url']}/{label.lower()}"
