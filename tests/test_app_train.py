"""The Train page (AppTest): presets, Start (the child process patched out), the live panel reading a real run
directory, Stop, a failed run with Resume, the queue, the run list and the comparison chart."""

import os

import pytest
from helpers_app import button, errors, import_tiny_dataset, open_page, prepare_app, widget

from cxr import jobs, live_progress, run_text, runs, stopped_runs
from cxr.atomic import atomic_write_json
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


def test_transfer_presets_offer_the_offline_pretrained_network(home):
    import_tiny_dataset(home)
    at = open_train_page()
    assert widget(at, "toggle", "Fine-tune the pretrained layers").disabled  # fast: trained from scratch
    widget(at, "selectbox", "Preset").set_value("transfer_finetune")
    at.run()
    assert widget(at, "selectbox", "Model").value == "efficientnet_lite0"
    toggle = widget(at, "toggle", "Fine-tune the pretrained layers")
    assert toggle.value is True and not toggle.disabled
    widget(at, "selectbox", "Preset").set_value("transfer")
    at.run()
    assert widget(at, "toggle", "Fine-tune the pretrained layers").value is False
    config = at.session_state["training_config"]
    assert (config.model, config.weights, config.train_backbone, config.image_size) == (
        "efficientnet_lite0", "imagenet", False, 32)


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
    name = run_text.run_name(runs.summarize_run(run_id))
    assert any(markdown.value == f"**{name}** — Training" for markdown in at.markdown)
    progress = at.get("progress")[0].proto
    assert progress.text == "Epoch 1 of 3 · batch 1 of 4 · about 30 s left"
    assert progress.value == 8  # a quarter of the first of three epochs: 1/12 of the run, in percent
    assert any("appear when the first epoch ends" in caption.value for caption in at.caption)
    # Start is disabled, with the reason, while this data set's run is going.
    assert button(at, "Start training").disabled
    assert any("A run on tiny is going" in caption.value for caption in at.caption)

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
    assert set(table["run id"]) == {first, second}
    assert set(table["best val AUC"]) == {"0.750"}
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
    assert list(at.dataframe[0].value["state"]) == ["waiting in the queue"]
    runs.write_status(run_id, state="running", epoch=1)
    at.run()  # a loop would rerun until AppTest's timeout and fail here
    assert not at.exception
    assert list(at.dataframe[0].value["state"]) == ["training"]
    assert any(markdown.value.endswith("— Training") for markdown in at.markdown)
    assert at.session_state[f"_panel_state_{run_id}"] == "running"


WIDGET_KINDS = ("selectbox", "slider", "select_slider", "toggle", "number_input")


def settings_widgets(at) -> list:
    return [item for kind in WIDGET_KINDS for item in getattr(at, kind)
            if item.label not in ("Run to follow",)]


def test_every_setting_has_help_and_the_few_that_matter_are_in_view(home):
    import_tiny_dataset(home)
    at = open_train_page()
    widgets = settings_widgets(at)
    assert len(widgets) >= 28
    assert not [item.label for item in widgets if not item.help], "controls without help text"
    labels = {item.label for item in widgets}
    assert {"Plateau patience (epochs)", "Early stopping patience (epochs)", "Zoom (± fraction of the size)",
            "Width shift (± fraction of the width)", "Plateau factor (× learning rate)"} <= labels
    # Teachable-Machine-like: four settings besides the data set and preset in view, the rest under Advanced.
    advanced = next(item for item in at.expander if item.label == "Advanced settings")
    inside = {item.label for kind in WIDGET_KINDS for item in getattr(advanced, kind)}
    assert {"Model", "Epochs", "Batch size", "Learning rate", "Preset", "Data set"}.isdisjoint(inside)
    assert {"Optimizer", "Schedule", "Dropout rate (fraction)", "Rotation (± degrees)", "Seed"} <= inside
    assert any(caption.value.startswith("Advanced: adam, cosine schedule") for caption in at.caption)
    # Every setting that changes training shows in that line once it is on, so a run is known without
    # opening Advanced settings.
    for label, value in (("Mixup (α)", 0.2), ("Label smoothing (fraction)", 0.1),
                         ("Acquisition changes (strength 0–1)", 0.5), ("Random crop (fraction of the area)", 0.3)):
        widget(at, "slider", label).set_value(value)
    at.run()
    (summary,) = [caption.value for caption in at.caption if caption.value.startswith("Advanced:")]
    for part in ("mixup α 0.2", "label smoothing 0.1", "acquisition changes up to 0.5", "random crop up to 30% of"):
        assert part in summary, summary


def test_settings_that_do_not_apply_are_disabled(home):
    import_tiny_dataset(home)
    at = open_train_page()  # the fast preset: cosine schedule, early stopping on
    assert widget(at, "selectbox", "Schedule").value == "cosine"
    assert widget(at, "slider", "Plateau patience (epochs)").disabled
    assert widget(at, "slider", "Plateau factor (× learning rate)").disabled
    assert not widget(at, "select_slider", "Minimum learning rate").disabled
    assert not widget(at, "slider", "Early stopping patience (epochs)").disabled
    widget(at, "selectbox", "Schedule").set_value("plateau")
    widget(at, "toggle", "Early stopping").set_value(False)
    at.run()
    assert not widget(at, "slider", "Plateau patience (epochs)").disabled
    assert widget(at, "slider", "Early stopping patience (epochs)").disabled
    widget(at, "selectbox", "Schedule").set_value("constant")
    at.run()
    assert widget(at, "select_slider", "Minimum learning rate").disabled
    # The threshold rule: its target or fixed value is enabled only with its rule, and reaches the settings.
    assert widget(at, "selectbox", "Threshold rule").value == "sensitivity"  # the fast preset's, as shipped
    widget(at, "selectbox", "Threshold rule").set_value("youden")
    at.run()
    assert widget(at, "slider", "Target sensitivity (fraction)").disabled
    assert widget(at, "slider", "Fixed threshold (probability)").disabled
    widget(at, "selectbox", "Threshold rule").set_value("sensitivity")
    at.run()
    assert not widget(at, "slider", "Target sensitivity (fraction)").disabled
    widget(at, "slider", "Target sensitivity (fraction)").set_value(0.9)
    at.run()
    assert any("threshold for 90% sensitivity" in caption.value for caption in at.caption)
    # The session holds the settings as one TrainingConfig (the Data page's preview reads it).
    config = at.session_state["training_config"]
    assert (config.schedule, config.early_stopping, config.image_size) == ("constant", False, 32)
    assert (config.threshold_rule, config.min_sensitivity) == ("sensitivity", 0.9)


def test_runs_are_chosen_by_readable_names_with_their_best_validation_auc(home):
    import_tiny_dataset(home)
    run_id = fake_run(state="finished")
    add_epoch(run_id, 1)
    add_epoch(run_id, 2)
    at = open_train_page()
    follow = widget(at, "selectbox", "Run to follow")
    assert follow.value == run_id
    assert follow.options == [run_text.run_labels(runs.list_runs())[run_id]]
    assert follow.options[0].startswith("fast on tiny, ") and follow.options[0].endswith("· best validation AUC 0.750")
    assert widget(at, "multiselect", "Runs").options == follow.options


def test_a_training_run_shows_batch_curves_a_measuring_eta_and_a_live_table_without_empty_figures(home):
    import_tiny_dataset(home)
    run_id = fake_run(state="running", epoch=1, batch=3, batches=10, eta_seconds=None)
    log = live_progress.BatchLog(runs.run_path(run_id))
    for batch in (1, 2, 3):
        log.add(1, batch, {"loss": 0.9 - 0.1 * batch, "accuracy": 0.5 + 0.05 * batch}, 0.2 * batch)
    log.flush()
    at = open_train_page()
    assert not errors(at), errors(at)
    progress = at.get("progress")[0].proto
    assert progress.text == "Epoch 1 of 3 · batch 3 of 10 · time left: measuring the first batches"
    titles = [chart.proto.spec for chart in at.get("vega_lite_chart")]
    assert sum(": this epoch, batch by batch" in spec for spec in titles) == 2
    row = at.dataframe[0].value.iloc[0]
    assert (row["state"], row["progress"], row["best val AUC"], row["test AUC"]) == \
        ("training", "epoch 1 of 3", "—", "—")
    assert "None" not in at.dataframe[0].value.astype(str).to_numpy().ravel().tolist()


def test_a_stopped_run_reads_plainly_and_is_evaluated_for_use(home, monkeypatch):
    import_tiny_dataset(home)
    run_id = fake_run(state="stopped", epochs=5, epoch=3, batch=2, batches=4, stop_reason="user",
                      message="Stopped by you after epoch 2 of 5; resume it to continue, or evaluate it as it is")
    path = runs.run_path(run_id)
    (path / runs.CHECKPOINT_FILE).write_bytes(b"checkpoint")
    atomic_write_json(path / runs.CHECKPOINT_INFO_FILE, {"epoch": 2, "best_epoch": 2, "best_value": 0.81})
    for epoch in (1, 2):
        add_epoch(run_id, epoch)
    finalized = []

    def finalize(run, **_):  # the real one loads TensorFlow; its own tests cover it
        finalized.append(run)
        (path / runs.MODEL_FILE).write_bytes(b"model")
        atomic_write_json(path / runs.METRICS_FILE, {"threshold": 0.4})
        runs.write_status(path, finalized_after_epoch=2, finalized_epoch=2)
        return {"threshold": 0.4}

    monkeypatch.setattr(stopped_runs, "finalize_stopped_run", finalize)
    at = open_train_page()
    assert not errors(at), errors(at)
    progress = at.get("progress")[0].proto
    assert progress.text == "2 of 5 epochs finished"
    assert any(markdown.value.endswith("— Stopped by you after epoch 2 of 5") for markdown in at.markdown)
    assert progress.value == 40  # the finished epochs, not frozen in the middle of epoch 3
    assert any("epoch 2, validation AUC 0.810" in info.value for info in at.info)
    assert not ui_lists_it(at, run_id)
    button(at, "Evaluate and use this run").click()
    at.run()
    assert not errors(at), errors(at)
    assert finalized == [run_id]
    assert any("Evaluated with the weights of epoch 2" in success.value for success in at.success)
    assert ui_lists_it(at, run_id)  # offered on Predict
    assert [item.label for item in at.button if item.label == "Resume"] == ["Resume"]


def ui_lists_it(at, run_id) -> bool:
    import app_components as ui

    return run_id in ui.finished_runs_with_model()

