"""The entry point and the Home page (AppTest): navigation, the state at a glance, and a backend error that
must not take the page down."""

import os

import pytest
from helpers_app import REPO_ROOT, open_page, prepare_app
from helpers_app import metric_values as metrics

from cxr import runs
from cxr.config import TrainingConfig

PAGES = tuple(f"app_pages/{name}.py" for name in ("home", "data", "train", "evaluate", "predict"))


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
    assert len(at.get("page_link")) == 4


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


def test_no_pages_folder_beside_the_entry_point():
    """Streamlit auto-discovers a ``pages/`` folder for the first request of a fresh server, so a deep link
    (``/predict``) showed raw file names instead of the st.navigation menu; page files live in app_pages/."""
    assert not (REPO_ROOT / "pages").exists()
    assert sorted(path.name for path in (REPO_ROOT / "app_pages").glob("*.py")) == [
        "data.py", "evaluate.py", "home.py", "predict.py", "train.py"]
