"""The entry point and the Home page (AppTest): the pages/ layout and the app's own menu, the state at a glance,
and a backend error that must not take the page down."""

import os
import tomllib

import pytest
from helpers_app import REPO_ROOT, open_page, prepare_app
from helpers_app import metric_values as metrics

from cxr import runs
from cxr.config import TrainingConfig

PAGES = ("streamlit_app.py", *(f"pages/{name}.py" for name in ("data", "train", "evaluate", "predict")))
MENU = ["Home", "Data", "Train", "Evaluate", "Predict"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    prepare_app(monkeypatch, bundled_model=tmp_path / "no-bundled-model")
    return tmp_path


def open_app():
    return open_page()


def test_every_page_opens_on_an_empty_home_without_errors(home):
    at = open_app()
    for page in PAGES:
        at.switch_page(page)
        at.run()
        assert not at.exception, page
        assert not at.error, (page, [error.value for error in at.error])
        assert at.title, page


def test_home_on_a_fresh_machine_says_what_to_do_first(home):
    at = open_app()
    assert at.title[0].value == "Chest X-ray classifier"
    assert metrics(at) == {"Data sets imported": "0", "Models available": "0", "Training": "idle"}
    assert any("not a diagnostic device" in warning.value for warning in at.warning)
    assert any("No data set yet" in info.value for info in at.info)
    assert any("No model is available yet" in warning.value for warning in at.warning)
    assert len(at.main.get("page_link")) == 4


def test_home_counts_data_models_and_the_running_training(home):
    (home / "home" / "datasets" / "tiny").mkdir(parents=True)
    (home / "home" / "datasets" / "tiny" / "dataset.json").write_text('{"name": "tiny", "image_size": 32}')
    finished = runs.new_run("tiny", TrainingConfig(image_size=32))
    runs.write_status(finished, state="finished")
    (finished / "model.keras").write_bytes(b"model")
    running = runs.new_run("tiny", TrainingConfig(image_size=32))
    runs.write_status(running, state="running", pid=os.getpid())
    at = open_app()
    assert metrics(at) == {"Data sets imported": "1", "Models available": "1", "Training": "1 active"}
    assert not at.info


def test_a_backend_failure_is_a_message_not_a_crash(home, monkeypatch):
    def broken():
        raise OSError("disk unavailable")

    monkeypatch.setattr(runs, "list_runs", broken)
    at = open_app()
    assert not at.exception
    messages = [error.value for error in at.error]
    assert len(messages) == 1 and "Reading the training runs failed unexpectedly (OSError)" in messages[0]
    # No traceback or internal message in the browser; the rest of the page is there.
    assert "disk unavailable" not in messages[0]
    assert metrics(at)["Data sets imported"] == "0"


def menu_labels(at) -> list[str]:
    return [link.label for link in at.sidebar.get("page_link")]


def test_every_page_draws_the_same_menu_in_the_sidebar(home):
    at = open_app()
    for page in PAGES:
        at.switch_page(page)
        at.run()
        assert menu_labels(at) == MENU, page
        # The URL path of each link: the file name, lower case (/, /data, …, /predict).
        assert [link.proto.page for link in at.sidebar.get("page_link")] == ["", "data", "train", "evaluate",
                                                                            "predict"]


def test_streamlits_multipage_layout_with_its_own_page_list_hidden():
    """streamlit_app.py is Home and pages/*.py are discovered (deep links work from a fresh server's first
    request); Streamlit's own list of file names is hidden for the app's menu."""
    assert not (REPO_ROOT / "app_pages").exists()
    assert sorted(path.name for path in (REPO_ROOT / "pages").glob("*.py")) == [
        "data.py", "evaluate.py", "predict.py", "train.py"]
    config = tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showSidebarNavigation"] is False


def test_a_page_the_server_does_not_offer_is_left_out_of_the_menu_and_refuses_a_direct_link(home, monkeypatch):
    import app_components as ui
    import app_layout

    def fewer_pages():
        return ("home", "evaluate", "predict")

    monkeypatch.setattr(app_layout, "available_pages", fewer_pages)  # the menu and the refusal
    monkeypatch.setattr(ui, "available_pages", fewer_pages)  # the pages' own use of it
    at = open_app()
    assert menu_labels(at) == ["Home", "Evaluate", "Predict"]
    assert [link.label for link in at.main.get("page_link")] == ["Evaluate", "Predict"]
    at.switch_page("pages/train.py")
    at.run()
    assert not at.exception
    assert [error.value for error in at.error] == ["The Train page is not available on this server."]
    assert not at.button, "a refused page draws none of its controls"
    assert menu_labels(at) == ["Home", "Evaluate", "Predict"]


def test_the_tab_icon_is_a_file_served_by_the_app_not_a_font_server():
    import app_components as ui

    assert ui.FAVICON.is_file() and ui.FAVICON.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not ui.FAVICON.is_relative_to(REPO_ROOT / "pages")
