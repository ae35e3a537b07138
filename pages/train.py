"""Train: settings with presets, start a training child process, follow it live, stop or resume it, list
and compare runs."""

import pandas as pd
import streamlit as st

import app_components as ui
from cxr import charts, datasets, jobs, models, runs
from cxr.config import (
    BRIGHTNESS_RANGE,
    CLASS_WEIGHTINGS,
    CONTRAST_RANGE,
    DROPOUT_RANGE,
    OPTIMIZERS,
    PRESETS,
    ROTATION_RANGE,
    SCHEDULES,
    SHIFT_RANGE,
    VALIDATION_FRACTION_RANGE,
    ZOOM_RANGE,
    TrainingConfig,
)

REFRESH_SECONDS = 2  # how often the live panel re-reads the run directory: fresh enough, cheap (a few small files)
PRESET_TITLES = {"fast": "Fast default (CPU network, Adam, cosine, early stopping; the bundled model's recipe)",
                 "tutorial": "Tutorial (the seed recipe: VGG-like network, RMSprop, 12 epochs)"}
BATCH_SIZES = [8, 16, 32, 64, 128, 256]
LEARNING_RATES = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
MIN_LEARNING_RATES = [0.0, 1e-7, 1e-6, 1e-5, 1e-4]
EPOCHS_SLIDER_MAX = 100  # the slider's top; longer trainings are for the command line
COMPARE_METRICS = {"auc": "ROC AUC", "accuracy": "Accuracy", "loss": "Loss"}


def setting_key(name: str) -> str:
    return ui.SETTING_KEY_PREFIX + name


def widget_value(name: str, value):
    """A preset value as the widget that shows it holds it (nearest option for the select sliders)."""
    if name == "learning_rate":
        return min(LEARNING_RATES, key=lambda option: abs(option - value))
    if name == "min_learning_rate":
        return min(MIN_LEARNING_RATES, key=lambda option: abs(option - value))
    if name == "batch_size":
        return min(BATCH_SIZES, key=lambda option: abs(option - value))
    if name == "max_batches_per_epoch":
        return int(value or 0)
    if name == "seed":
        return int(value if value is not None else 0)
    if name == "epochs":
        return min(int(value), EPOCHS_SLIDER_MAX)
    return value


def apply_preset() -> None:
    """on_change of the preset select: every setting widget takes the preset's value."""
    config = PRESETS[st.session_state[ui.KEY_PRESET]]
    for name, value in config.to_dict().items():
        st.session_state[setting_key(name)] = widget_value(name, value)


def settings_form(image_size: int) -> dict:
    """Every training setting as a widget; returns the values (TrainingConfig field -> value)."""
    # Streamlit forgets the state of widgets not drawn in a run, so visiting another page would reset the
    # settings; a plain copy (KEY_TRAIN_SETTINGS) brings them back.
    saved = st.session_state.get(ui.KEY_TRAIN_SETTINGS) or {}
    if ui.KEY_PRESET not in st.session_state:
        st.session_state[ui.KEY_PRESET] = saved.get(ui.KEY_PRESET, "fast")
    if any(setting_key(name) not in st.session_state for name in TrainingConfig.__dataclass_fields__):
        if saved:
            for key, value in saved.items():
                st.session_state[key] = value
        else:
            apply_preset()  # first visit
    st.selectbox("Preset", list(PRESETS), format_func=lambda name: PRESET_TITLES.get(name, name),
                 key=ui.KEY_PRESET, on_change=apply_preset,
                 help="Fills every setting below; change any of them afterwards.")
    names = models.model_names()
    model_column, epochs_column, batch_column = st.columns(3)
    model_column.selectbox("Model", names, key=setting_key("model"),
                           format_func=lambda name: f"{name}: {models.MODEL_DESCRIPTIONS.get(name, '')}")
    epochs_column.slider("Epochs", 1, EPOCHS_SLIDER_MAX, key=setting_key("epochs"))
    batch_column.select_slider("Batch size", BATCH_SIZES, key=setting_key("batch_size"))

    with st.expander("Optimizer and learning rate", expanded=True):
        columns = st.columns(3)
        columns[0].selectbox("Optimizer", OPTIMIZERS, key=setting_key("optimizer"))
        columns[1].select_slider("Learning rate", LEARNING_RATES, key=setting_key("learning_rate"),
                                 format_func=lambda value: f"{value:g}")
        columns[2].selectbox("Schedule", SCHEDULES, key=setting_key("schedule"),
                             help="plateau: divide the rate when validation accuracy stalls (the tutorial's); "
                                  "cosine: decay smoothly to the minimum; constant: never change it.")
        columns = st.columns(3)
        columns[0].slider("Plateau patience (epochs)", 1, 10, key=setting_key("plateau_patience"))
        columns[1].slider("Plateau factor", 0.05, 0.95, step=0.05, key=setting_key("plateau_factor"))
        columns[2].select_slider("Minimum learning rate", MIN_LEARNING_RATES, key=setting_key("min_learning_rate"),
                                 format_func=lambda value: f"{value:g}")
    with st.expander("Regularization and stopping", expanded=True):
        columns = st.columns(4)
        columns[0].selectbox("Class weighting", CLASS_WEIGHTINGS, key=setting_key("class_weighting"),
                             help="balanced: weigh each class by the inverse of its frequency in train.")
        columns[1].slider("Dropout rate", *DROPOUT_RANGE, step=0.05, key=setting_key("dropout_rate"))
        columns[2].toggle("Early stopping", key=setting_key("early_stopping"),
                          help="Stop when validation AUC stops improving and keep the best weights.")
        columns[3].slider("Early stopping patience", 1, 20, key=setting_key("early_stopping_patience"))
    with st.expander("Augmentation (preview it on the Data page)"):
        columns = st.columns(5)
        columns[0].slider("Rotation (± degrees)", *ROTATION_RANGE, step=5.0, key=setting_key("rotation_degrees"))
        columns[1].slider("Zoom (±)", *ZOOM_RANGE, step=0.05, key=setting_key("zoom"))
        columns[2].slider("Width shift (±)", *SHIFT_RANGE, step=0.05, key=setting_key("width_shift"))
        columns[3].slider("Height shift (±)", *SHIFT_RANGE, step=0.05, key=setting_key("height_shift"))
        columns[4].toggle("Horizontal flip", key=setting_key("horizontal_flip"))
        columns = st.columns(5)
        columns[0].slider("Brightness (± fraction)", *BRIGHTNESS_RANGE, step=0.05, key=setting_key("brightness"),
                          help="Adds up to ± this fraction of full white to every pixel (0 = off).")
        columns[1].slider("Contrast (±)", *CONTRAST_RANGE, step=0.05, key=setting_key("contrast"),
                          help="Scales contrast by 1 ± this around each image's mean (0 = off).")
    with st.expander("Advanced"):
        columns = st.columns(3)
        columns[0].slider("Validation fraction", *VALIDATION_FRACTION_RANGE, step=0.05,
                          key=setting_key("validation_fraction"),
                          help="Share of train held out (by patient) when the data set has no validation split.")
        columns[1].number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key=setting_key("seed"))
        columns[2].number_input("Batches per epoch (0 = all)", min_value=0, max_value=10**6, step=1,
                                key=setting_key("max_batches_per_epoch"),
                                help="Limit each epoch to this many batches: for smoke tests and timing.")
    st.session_state[ui.KEY_TRAIN_SETTINGS] = {
        key: st.session_state[key] for key in
        [ui.KEY_PRESET, *(setting_key(name) for name in TrainingConfig.__dataclass_fields__)]}
    values = {name: st.session_state[setting_key(name)] for name in TrainingConfig.__dataclass_fields__
              if name not in ("image_size", "strategy")}
    values["max_batches_per_epoch"] = int(values["max_batches_per_epoch"]) or None
    values["seed"] = int(values["seed"])
    values["image_size"] = int(image_size)
    return values


def estimate_section(config: TrainingConfig, num_train_images: int) -> None:
    """The estimated time per epoch from the backend's estimate, else from earlier runs of the same model."""
    seconds, basis = None, ""
    with ui.guarded("Estimating the time per epoch"):
        seconds, basis = ui.estimate_epoch_seconds(config, num_train_images)
    if seconds is None:
        st.caption("Estimated time per epoch: unknown until a first run of this model and size has finished an "
                   "epoch (then it is measured).")
    else:
        st.metric("Estimated time per epoch", ui.format_seconds(seconds), help=basis, border=True)


def start_section() -> None:
    st.subheader("Settings")
    entries = datasets.list_datasets()
    if not entries:
        st.info("No data set to train on yet: import one on the Data page first.")
        ui.link_to("data")
        return
    names = [entry["name"] for entry in entries]
    wanted = st.session_state.get(ui.KEY_DATASET)
    name = st.selectbox("Data set", names, index=names.index(wanted) if wanted in names else 0,
                        key="train_dataset")
    entry = entries[names.index(name)]
    image_size = int(entry.get("image_size") or TrainingConfig().image_size)
    counts = entry.get("counts") or {}
    num_train = sum((counts.get("train") or {}).values())
    st.caption(f"{image_size} px images; " + ", ".join(f"{split}: {sum(c.values()):,}" for split, c in counts.items()))
    values = settings_form(image_size)
    config = None
    with ui.guarded("Checking the settings"):
        config = TrainingConfig(**values)
    if config is None:
        return
    estimate_section(config, num_train)
    if st.button("Start training", type="primary", icon=":material/play_arrow:"):
        run_id = None
        with ui.guarded("Starting the training"):
            run_id = jobs.start_training(name, config)
        if run_id is not None:
            st.session_state[ui.KEY_FOLLOWED_RUN] = str(run_id)
            st.toast(f"Training {run_id} started.", icon=":material/play_arrow:")


def progress_text(status: dict) -> tuple[float, str]:
    """Overall progress in [0, 1] and a line "Epoch 3/12 · batch 40/163 · ETA 2 min 10 s"."""
    epoch = int(status.get("epoch") or 0)
    epochs = int(status.get("epochs") or 0)
    batch = int(status.get("batch") or 0)
    batches = int(status.get("batches") or 0)
    # "epoch" is the epoch in progress (1-based) while batches run, and the last finished one at its end.
    done = max(0, epoch - 1) + (batch / batches if batches else 0.0)
    fraction = 1.0 if status.get("state") == "finished" else (min(1.0, done / epochs) if epochs else 0.0)
    parts = [f"Epoch {epoch}/{epochs}" if epochs else f"Epoch {epoch}"]
    if batches:
        parts.append(f"batch {batch}/{batches}")
    if status.get("eta_seconds") is not None and status.get("state") in ui.ACTIVE_STATES:
        parts.append(f"ETA {ui.format_seconds(status['eta_seconds'])}")
    return fraction, " · ".join(parts)


def history_charts(history: pd.DataFrame, epochs: int | None) -> None:
    if history is None or "epoch" not in history or history["epoch"].dropna().empty:
        st.caption("The charts appear when the first epoch ends.")
        return
    left, right = st.columns(2)
    with left:
        st.altair_chart(charts.history_chart(history, "loss", epochs=epochs), width="stretch")
        st.altair_chart(charts.history_chart(history, "auc", epochs=epochs), width="stretch")
    with right:
        st.altair_chart(charts.history_chart(history, "accuracy", epochs=epochs), width="stretch")
        if "learning_rate" in history and history["learning_rate"].notna().any():
            st.altair_chart(charts.learning_rate_chart(history, epochs=epochs), width="stretch")
    st.caption(f"{len(history)} epoch(s) finished.")


def run_panel(run_id: str) -> None:
    """Status, progress, charts and the Stop/Resume buttons of one run (the body of the live fragment)."""
    status = runs.read_status(run_id)
    state = status.get("state")
    # The fragment redraws only itself; when the state changes (queued -> running -> finished) the rest
    # of the page (the Runs table, the timer) is stale, so redraw the whole page once. The state is stored
    # before the rerun, so the redraw sees no change and cannot loop.
    state_key = f"_panel_state_{run_id}"
    previous_state = st.session_state.get(state_key)
    st.session_state[state_key] = state
    if previous_state is not None and previous_state != state:
        st.rerun()
    state_line = f"**{run_id}** — state: **{state}**"
    if status.get("message"):
        state_line += f" ({status['message']})"
    st.markdown(state_line)
    if state == "queued":
        position = jobs.queue_position(run_id)
        st.info(f"Waiting in the queue{f': position {position}' if position else ''}. It starts by itself when "
                "the training before it ends.", icon=":material/hourglass_top:")
    if state == "failed":
        st.error(f"This run failed: {status.get('error') or status.get('message') or 'no reason recorded'}. "
                 "Its finished epochs are kept; fix the cause and resume it, or start a new run.")
    if state == "interrupted":
        st.warning("This run was interrupted (its process ended without finishing). Resume it to continue from "
                   "its last finished epoch.")
    fraction, text = progress_text(status)
    st.progress(fraction, text=text)

    if state in ("queued", "running") and st.button("Stop", key=f"stop_{run_id}", icon=":material/stop:"):
        with ui.guarded("Stopping the run"):
            jobs.stop(run_id)
            st.toast("Stop requested: the run stops after the current batch.", icon=":material/stop:")
    if state in ui.RESUMABLE_STATES and st.button("Resume", key=f"resume_{run_id}", icon=":material/play_arrow:"):
        new_run = None
        with ui.guarded("Resuming the run"):
            new_run = jobs.resume(run_id)
        if new_run is not None:
            st.session_state[ui.KEY_FOLLOWED_RUN] = str(new_run)
            st.rerun()
    history = runs.read_history(run_id)
    # The x axis spans the planned epochs so the curves grow into it, but no more than twice the finished
    # ones (at least 10): 3 points on a 100-epoch axis would be a smudge.
    epochs = status.get("epochs")
    axis_epochs = min(int(epochs), max(10, 2 * len(history))) if epochs else None
    history_charts(history, axis_epochs)


def follow_section(summaries: list) -> None:
    st.subheader("Live run")
    if not summaries:
        st.caption("No run yet: choose the settings above and press Start training.")
        return
    ids = [ui.run_id_of(summary) for summary in summaries]
    states = {ui.run_id_of(summary): ui.run_state_of(summary) for summary in summaries}
    followed = st.session_state.get(ui.KEY_FOLLOWED_RUN)
    if followed not in ids:
        # After a refresh or from another browser: the run that is going on, else the newest.
        active = [run_id for run_id in ids if states[run_id] in ui.ACTIVE_STATES]
        followed = active[0] if active else ids[0]
    # No widget key: KEY_FOLLOWED_RUN stays a plain value that Start and Resume may set at any time.
    run_id = st.selectbox("Run to follow", ids, index=ids.index(followed))
    st.session_state[ui.KEY_FOLLOWED_RUN] = run_id
    active = runs.read_status(run_id).get("state") in ui.ACTIVE_STATES

    @st.fragment(run_every=REFRESH_SECONDS if active else None)
    def live_panel() -> None:
        with ui.guarded("Following the run"):
            run_panel(run_id)

    live_panel()


def runs_section(summaries: list) -> None:
    st.subheader("Runs")
    if not summaries:
        st.caption("No run yet.")
        return
    rows = []
    for summary in summaries:
        row = ui.as_dict(summary)
        row.pop("extra", None)
        row.pop("path", None)
        try:
            training = runs.read_config(row["run_id"]).get("training", {})
        except ValueError:
            training = {}
        for name in ("image_size", "epochs", "batch_size", "optimizer", "learning_rate", "class_weighting"):
            row[f"setting {name}"] = training.get(name)
        rows.append(row)
    frame = pd.DataFrame(rows)
    st.dataframe(frame, hide_index=True, column_config={
        "best_val_auc": st.column_config.NumberColumn("best val AUC", format="%.3f"),
        "best_val_accuracy": st.column_config.NumberColumn("best val accuracy", format="%.3f"),
        "test_auc": st.column_config.NumberColumn("test AUC", format="%.3f"),
        "test_accuracy": st.column_config.NumberColumn("test accuracy", format="%.3f"),
    })
    active = [row["run_id"] for row in rows if row.get("state") in ui.ACTIVE_STATES]
    if len(active) > 1:
        st.caption("Queue: " + " → ".join(f"{run_id} ({states})" for run_id, states in
                                         ((row["run_id"], row["state"]) for row in rows if row["run_id"] in active)))

    st.markdown("**Compare runs**")
    ids = [row["run_id"] for row in rows]
    default = [run_id for run_id in ids if run_id in st.session_state.get(ui.KEY_COMPARE_RUNS, [])] or ids[:2]
    chosen = st.multiselect("Runs", ids, default=default, key=ui.KEY_COMPARE_RUNS)
    metric = st.segmented_control("Metric", list(COMPARE_METRICS), default="auc",
                                  format_func=COMPARE_METRICS.get, key="compare_metric") or "auc"
    if chosen:
        histories = {run_id: runs.read_history(run_id) for run_id in chosen}
        frame = charts.compare_runs_frame(histories, metric)
        if frame.empty:
            st.caption("None of the chosen runs has finished an epoch yet.")
        else:
            st.altair_chart(charts.compare_runs_chart(histories, metric), width="stretch")


def main() -> None:
    st.title("Train")
    start_section()
    summaries = []
    with ui.guarded("Reading the runs"):
        summaries = ui.list_runs()
    follow_section(summaries)
    runs_section(summaries)


ui.run_page(main, key="train")
