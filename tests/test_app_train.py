"""The Train page (AppTest): presets, Start (the child process patched out), the live panel reading a real run
directory, Stop, a failed run with Resume, the queue, the run list and the comparison chart."""

import os

import pytest
from helpers_app import button, errors, import_tiny_dataset, open_page, prepare_app, widget

from cxr import jobs, runs
from cxr.config import TrainingConfig


def fake_run(dataset: str = "tiny", *, state: str = "running", epochs: int = 3, **status) -> str:
    """A run directory as a live trainer leaves it (this test process plays the trainer: its pid is alive)."""
    path = runs.new_run(dataset, TrainingConfig(image_size=32, epochs=epochs))
    runs.write_status(path, state=state, pid=os.getpid(), epochs=epochs, **status)
    return path.name


def add_epoch(run_id: str, epoch: int, seconds: float = 2.0) -> None:
    runs.append_history_row(run_id, {"epoch": epoch, "loss": 1.0 / epoch, "accuracy": 0.5 + 0.1 * epoch,
                                     "auc": 0.6 + 0.1 * epoch, "val_loss": 1.1 / epoch,
                                     "val_accuracy": 0.5 + 0.05 * epoch, "val_auc": 0.55 + 0.1 * epoch,
                                     "learning_rate": 1e-3, "seconds": seconds})


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    prepare_app(monkeypatch)
    return tmp_path


def open_train_page():
    return open_page("pages/train.py")


def test_without_a_data_set_the_page_points_to_the_data_page(home):
    at = open_train_page()
    assert any("No data set to train on yet" in info.value for info in at.info)
    assert not [item for item in at.button if item.label == "Start training"]


def test_presets_fill_the_settings(home):
    import_tiny_dataset(home)
    at = open_train_page()
    assert widget(at, "selectbox", "Model").value == "fast"
    assert widget(at, "selectbox", "Optimizer").value == "adam"
    widget(at, "selectbox", "Preset").set_value("tutorial")
    at.run()
    assert widget(at, "selectbox", "Model").value == "seed"
    assert widget(at, "selectbox", "Optimizer").value == "rmsprop"
    assert widget(at, "slider", "Epochs").value == 12
    assert widget(at, "toggle", "Early stopping").value is False
    assert widget(at, "selectbox", "Class weighting").value == "none"

    # A change survives a visit to another page (Streamlit forgets widgets that are not drawn).
    widget(at, "slider", "Epochs").set_value(5)
    at.run()
    at.switch_page("pages/data.py")
    at.run()
    at.switch_page("pages/train.py")
    at.run()
    assert widget(at, "slider", "Epochs").value == 5
    assert widget(at, "selectbox", "Model").value == "seed"
    assert widget(at, "selectbox", "Preset").value == "tutorial"


def test_start_follows_the_run_live_and_stop_stops_it(home, monkeypatch):
    import_tiny_dataset(home)
    started = {}

    def start_training(dataset, config, **_):
        started["dataset"], started["config"] = dataset, config
        run_id = fake_run(dataset, epochs=config.epochs, batch=1, batches=4, epoch=1, eta_seconds=30)
        started["run_id"] = run_id
        return run_id

    monkeypatch.setattr(jobs, "start_training", start_training)
    at = open_train_page()
    widget(at, "slider", "Epochs").set_value(3)
    button(at, "Start training").click()
    at.run()
    assert not errors(at), errors(at)
    config = started["config"]
    assert started["dataset"] == "tiny"
    assert (config.epochs, config.image_size, config.model) == (3, 32, "fast")
    run_id = started["run_id"]
    assert any(run_id in markdown.value and "running" in markdown.value for markdown in at.markdown)
    progress = at.get("progress")[0].proto
    assert "Epoch 1/3" in progress.text and "batch 1/4" in progress.text and "ETA" in progress.text
    assert progress.value == 8  # a quarter of the first of three epochs: 1/12 of the run, in percent
    assert any("appear when the first epoch ends" in caption.value for caption in at.caption)

    # The trainer finishes an epoch: the next refresh draws the charts (loss, AUC, accuracy, learning rate).
    add_epoch(run_id, 1)
    runs.write_status(run_id, epoch=2, batch=0)
    at.run()
    assert not errors(at), errors(at)
    assert len(at.get("vega_lite_chart")) >= 4
    assert any("1 epoch(s) finished" in caption.value for caption in at.caption)

    # Stop: the real cxr.jobs.stop writes the stop request and the state becomes "stopping".
    button(at, "Stop").click()
    at.run()
    assert not errors(at), errors(at)
    assert runs.stop_requested(run_id)
    assert runs.read_status(run_id)["state"] == "stopping"


def test_a_refreshed_page_follows_the_running_run(home):
    import_tiny_dataset(home)
    finished = fake_run(state="finished")
    running = fake_run(state="running", epoch=1, batches=4, batch=2)
    at = open_train_page()  # a new session: nothing in session state
    follow = widget(at, "selectbox", "Run to follow")
    assert follow.value == running != finished


def test_a_failed_run_shows_its_error_and_resume_continues_it(home, monkeypatch):
    import_tiny_dataset(home)
    run_id = fake_run(state="failed", error="out of memory at epoch 2")
    resumed = []
    monkeypatch.setattr(jobs, "resume", lambda run, **_: resumed.append(run) or run)
    at = open_train_page()
    assert any("out of memory at epoch 2" in message for message in errors(at))
    assert not [item for item in at.button if item.label == "Stop"]
    button(at, "Resume").click()
    at.run()
    assert resumed == [run_id]


def test_start_failure_is_shown_not_raised(home, monkeypatch):
    import_tiny_dataset(home)

    def refuse(dataset, config, **_):
        raise runs.RunError("No free slot: the runs folder is read-only. Check CXR_HOME.")

    monkeypatch.setattr(jobs, "start_training", refuse)
    at = open_train_page()
    button(at, "Start training").click()
    at.run()
    assert not at.exception
    assert any("Starting the training failed" in message and "read-only" in message for message in errors(at))


def test_a_queued_run_shows_its_place_in_the_queue(home, monkeypatch):
    import_tiny_dataset(home)
    fake_run(state="running", epoch=1)
    queued = fake_run(state="queued")
    monkeypatch.setattr(jobs, "queue_position", lambda run: 2 if run == queued else None)
    at = open_train_page()
    widget(at, "selectbox", "Run to follow").set_value(queued)
    at.run()
    assert any("position 2" in info.value for info in at.info)
    assert any("Queue:" in caption.value for caption in at.caption)


def test_run_list_estimate_and_comparison(home):
    import_tiny_dataset(home)
    first, second = fake_run(state="finished"), fake_run(state="finished")
    for run_id, seconds in ((first, 4.0), (second, 6.0)):
        add_epoch(run_id, 1, seconds)
        add_epoch(run_id, 2, seconds)
    at = open_train_page()
    table = at.dataframe[0].value
    assert set(table["run_id"]) == {first, second}
    assert table["best_val_auc"].max() == pytest.approx(0.75)
    # Seconds per image measured on earlier runs of the same model and size (7 train images here).
    # Earlier runs took 4 s and 6 s per epoch on the same images: the median per image gives 5 s.
    estimate = widget(at, "metric", "Estimated time per epoch")
    assert estimate.value == "5 s", estimate.value
    assert set(widget(at, "multiselect", "Runs").value) == {first, second}
    assert not errors(at), errors(at)
    assert len(at.get("vega_lite_chart")) >= 5  # the live panel's four charts and the comparison


def test_a_state_change_redraws_the_page_once_without_looping(home):
    """queued -> running seen by the live panel redraws the whole page (the Runs table too), exactly once."""
    import_tiny_dataset(home)
    run_id = fake_run(state="queued")
    at = open_train_page()
    assert list(at.dataframe[0].value["state"]) == ["queued"]
    runs.write_status(run_id, state="running", epoch=1)
    at.run()  # a loop would rerun until AppTest's timeout and fail here
    assert not at.exception
    assert list(at.dataframe[0].value["state"]) == ["running"]
    assert any(f"**{run_id}** — state: **running**" in markdown.value for markdown in at.markdown)
    assert at.session_state[f"_panel_state_{run_id}"] == "running"
