"""Train: the few settings that matter in view (the rest under Advanced), start a training child process,
follow it live (batch by batch), stop it, evaluate a stopped run, resume it, list and compare runs."""

import pandas as pd
import streamlit as st

import app_components as ui
from cxr import charts, datasets, jobs, live_progress, models, run_text, runs, stopped_runs
from cxr.config import (
    BRIGHTNESS_RANGE,
    CLASS_WEIGHTINGS,
    CONTRAST_RANGE,
    DROPOUT_RANGE,
    FIXED_THRESHOLD_RANGE,
    LABEL_SMOOTHING_RANGE,
    MIN_SENSITIVITY_RANGE,
    MIXUP_RANGE,
    OPTIMIZERS,
    PHOTOMETRIC_RANGE,
    PRESETS,
    RANDOM_CROP_RANGE,
    ROTATION_RANGE,
    SCHEDULES,
    SHIFT_RANGE,
    THRESHOLD_RULES,
    VALIDATION_FRACTION_RANGE,
    ZOOM_RANGE,
    TrainingConfig,
)

REFRESH_SECONDS = 2  # how often the live panel re-reads the run directory: fresh enough, cheap (a few small files)
PRESET_TITLES = {"fast": "Fast: the bundled model's recipe", "tutorial": "Tutorial: the seed recipe, as published",
                 "transfer": "Transfer: a pretrained network (ImageNet), new head only",
                 "transfer_finetune": "Transfer, fine-tuned: the pretrained network trained too (slow)"}
BATCH_SIZES = [8, 16, 32, 64, 128, 256]
LEARNING_RATES = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
MIN_LEARNING_RATES = [0.0, 1e-7, 1e-6, 1e-5, 1e-4]
EPOCHS_SLIDER_MAX = 100  # the slider's top; longer trainings are for the command line
COMPARE_METRICS = {"auc": "ROC AUC", "accuracy": "Accuracy", "loss": "Loss"}
OPTIMIZER_HELP = ("How the weights follow the gradient. adam: adapts a step size per weight (robust default); "
                  "rmsprop: the tutorial's; sgd: plain steps with momentum-free updates (needs a larger rate).")
THRESHOLD_RULE_TITLES = {"youden": "youden: balance sensitivity and specificity",
                         "sensitivity": "sensitivity: reach a target sensitivity",
                         "fixed": "fixed: a threshold you give"}
SCHEDULE_HELP = ("How the learning rate changes during training. plateau: multiply it by the plateau factor when "
                 "validation accuracy stops improving (the tutorial's); cosine: decay it smoothly to the minimum "
                 "by the last epoch; constant: never change it.")


def setting_key(name: str) -> str:
    return ui.SETTING_KEY_PREFIX + name


def widget_value(name: str, value):
    """A setting's value as the widget that shows it holds it (nearest option for the select sliders)."""
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


def restore_settings() -> None:
    """Streamlit forgets the widgets of a page that is not drawn; bring them back from the session's one
    ``TrainingConfig`` (which the Data page's augmentation preview may also have set), else the preset."""
    if ui.KEY_PRESET not in st.session_state:
        st.session_state[ui.KEY_PRESET] = st.session_state.get(ui.KEY_PRESET_CHOICE, "fast")
    config = st.session_state.get(ui.KEY_TRAINING_CONFIG) or PRESETS[st.session_state[ui.KEY_PRESET]]
    for name, value in config.to_dict().items():
        if setting_key(name) not in st.session_state:
            st.session_state[setting_key(name)] = widget_value(name, value)


def essential_settings() -> None:
    """What Teachable Machine shows too: the network, epochs, batch size and learning rate."""
    names = models.model_names()
    columns = st.columns([1.6, 1, 1, 1])  # the model's description needs the room
    columns[0].selectbox("Model", names, key=setting_key("model"),
                         format_func=lambda name: f"{name}: {models.MODEL_DESCRIPTIONS.get(name, '')}",
                         help="The network to train. fast trains an epoch of the Kermany set in about 20 s on "
                              "two CPU cores; seed is the tutorial's network (minutes an epoch); the transfer "
                              "backbones start from ImageNet weights.")
    columns[1].slider("Epochs", 1, EPOCHS_SLIDER_MAX, key=setting_key("epochs"),
                      help="Passes over all training images. With early stopping on, training may end sooner "
                           "and keeps its best epoch.")
    columns[2].select_slider("Batch size", BATCH_SIZES, key=setting_key("batch_size"),
                             help="Images per training step. Larger batches run faster per image but need more "
                                  "memory and usually a larger learning rate.")
    columns[3].select_slider("Learning rate", LEARNING_RATES, key=setting_key("learning_rate"),
                             format_func=lambda value: f"{value:g}",
                             help="Size of the optimizer's steps at the start of training (no unit: a factor on "
                                  "the gradient). 0.001 is Adam's and RMSprop's default; too high and the loss "
                                  "jumps or diverges, too low and it barely moves.")


def advanced_settings() -> None:
    """Every other setting, grouped; those that the current choices ignore are shown disabled."""
    schedule_tab, regularization_tab, augmentation_tab, threshold_tab, data_tab = st.tabs(
        ["Optimizer and schedule", "Regularization and stopping", "Augmentation", "Decision threshold",
         "Data and reproducibility"])
    with schedule_tab:
        columns = st.columns(3)
        columns[0].selectbox("Optimizer", OPTIMIZERS, key=setting_key("optimizer"), help=OPTIMIZER_HELP)
        columns[1].selectbox("Schedule", SCHEDULES, key=setting_key("schedule"), help=SCHEDULE_HELP)
        schedule = st.session_state[setting_key("schedule")]
        columns[2].select_slider("Minimum learning rate", MIN_LEARNING_RATES, key=setting_key("min_learning_rate"),
                                 format_func=lambda value: f"{value:g}", disabled=schedule == "constant",
                                 help="The floor of the rate: the plateau schedule never cuts below it, the cosine "
                                      "schedule ends on it. Not used by the constant schedule.")
        plateau_off = schedule != "plateau"
        columns = st.columns(3)
        columns[0].slider("Plateau patience (epochs)", 1, 10, key=setting_key("plateau_patience"),
                          disabled=plateau_off,
                          help="Epochs without a better validation accuracy before the rate is cut. Only used by "
                               "the plateau schedule.")
        columns[1].slider("Plateau factor (× learning rate)", 0.05, 0.95, step=0.05, key=setting_key("plateau_factor"),
                          disabled=plateau_off,
                          help="The rate is multiplied by this at each cut (0.3: cut to 30 %). Only used by the "
                               "plateau schedule.")
        if plateau_off:
            columns[2].caption(f"The plateau settings are unused with the {schedule} schedule.")
    with regularization_tab:
        columns = st.columns(4)
        columns[0].selectbox("Class weighting", CLASS_WEIGHTINGS, key=setting_key("class_weighting"),
                             help="balanced: weigh each class by the inverse of its share of the training images, "
                                  "so the rarer class (normal, in Kermany) counts as much; none: every image "
                                  "counts the same.")
        columns[1].slider("Dropout rate (fraction)", *DROPOUT_RANGE, step=0.05, key=setting_key("dropout_rate"),
                          help="Fraction of the head's units switched off at random in each training step (0 = "
                               "none): fights over-fitting.")
        columns[2].toggle("Early stopping", key=setting_key("early_stopping"),
                          help="Stop when validation AUC stops improving and keep the best epoch's weights.")
        columns[3].slider("Early stopping patience (epochs)", 1, 20, key=setting_key("early_stopping_patience"),
                          disabled=not st.session_state[setting_key("early_stopping")],
                          help="Epochs without a better validation AUC before training stops. Only used with "
                               "early stopping on.")
        columns = st.columns(4)
        columns[0].slider("Label smoothing (fraction)", *LABEL_SMOOTHING_RANGE, step=0.05,
                          key=setting_key("label_smoothing"),
                          help="Train towards s/2 and 1 − s/2 instead of 0 and 1 (0 = off): a less confident "
                               "model, slower to latch on to easy shortcuts.")
        transfer = st.session_state[setting_key("model")] in models.TRANSFER_MODELS
        columns[1].toggle("Fine-tune the pretrained layers", key=setting_key("train_backbone"), disabled=not transfer,
                          help="Pretrained networks only: also train the ImageNet layers, not just the new head "
                               "(several times slower per epoch; can fit the training hospital's quirks more "
                               "closely). Unused by networks trained from scratch.")
    with augmentation_tab:
        st.caption("Random changes to each training image, new every epoch (never to validation or test "
                   "images). Preview them on the Data page.")
        columns = st.columns(4)
        columns[0].slider("Rotation (± degrees)", *ROTATION_RANGE, step=5.0, key=setting_key("rotation_degrees"),
                          help="Rotate by a random angle up to this many degrees either way (0 = off).")
        columns[1].slider("Zoom (± fraction of the size)", *ZOOM_RANGE, step=0.05, key=setting_key("zoom"),
                          help="Zoom in or out by up to this fraction of the image size (0.2: 80–120 %; 0 = off).")
        columns[2].slider("Width shift (± fraction of the width)", *SHIFT_RANGE, step=0.05,
                          key=setting_key("width_shift"),
                          help="Move left or right by up to this fraction of the image width (0.1: 15 px of "
                               "150; 0 = off).")
        columns[3].slider("Height shift (± fraction of the height)", *SHIFT_RANGE, step=0.05,
                          key=setting_key("height_shift"),
                          help="Move up or down by up to this fraction of the image height (0 = off).")
        columns = st.columns(4)
        columns[0].toggle("Horizontal flip", key=setting_key("horizontal_flip"),
                          help="Mirror half of the images left to right.")
        columns[1].slider("Brightness (± fraction of white)", *BRIGHTNESS_RANGE, step=0.05,
                          key=setting_key("brightness"),
                          help="Add up to ± this fraction of full white to every pixel (0.2: ± 51 of 255; 0 = off).")
        columns[2].slider("Contrast (± fraction)", *CONTRAST_RANGE, step=0.05, key=setting_key("contrast"),
                          help="Scale the contrast by 1 ± this around each image's mean (0.3: 70–130 %; 0 = off).")
        columns[3].slider("Acquisition changes (strength 0–1)", *PHOTOMETRIC_RANGE, step=0.05,
                          key=setting_key("photometric"),
                          help="Gamma, blur or sharpening, noise and background level, each at a random strength "
                               "up to this (1 = the strongest; 0 = off): images from other machines.")
        columns = st.columns(4)
        columns[0].slider("Random crop (fraction of the area)", *RANDOM_CROP_RANGE, step=0.05,
                          key=setting_key("random_crop"),
                          help="Crop away up to this fraction of the image's area at random and resize back "
                               "(0 = off).")
        columns[1].slider("Mixup (α)", *MIXUP_RANGE, step=0.05, key=setting_key("mixup"),
                          help="Blend each training image with another one, and their labels alike, by a random "
                               "share (0 = off; 0.2 is usual): the network learns a smoother score instead of "
                               "certainty from easy clues. Its probabilities come out shifted in a way the "
                               "end-of-run calibration cannot fully correct: read them with the reliability "
                               "curve on Evaluate (on Kermany it did not improve the model: docs/benchmarks.md).")
    with threshold_tab:
        st.caption("At the end of training the threshold on P(pneumonia) is chosen on the validation images "
                   "(never on test) by this rule; Evaluate can change it later.")
        columns = st.columns(3)
        columns[0].selectbox("Threshold rule", THRESHOLD_RULES, key=setting_key("threshold_rule"),
                             format_func=THRESHOLD_RULE_TITLES.get,
                             help="youden: the threshold with the largest sensitivity + specificity − 1 (no "
                                  "preference between missed and false pneumonia); sensitivity: the highest "
                                  "threshold that still finds the target share of pneumonia on validation; "
                                  "fixed: the threshold below, whatever the validation scores.")
        rule = st.session_state[setting_key("threshold_rule")]
        columns[1].slider("Target sensitivity (fraction)", *MIN_SENSITIVITY_RANGE, step=0.01,
                          key=setting_key("min_sensitivity"), disabled=rule != "sensitivity",
                          help="Share of pneumonia images on validation the threshold must still call pneumonia "
                               "(0.95: 95 %). Only used by the sensitivity rule.")
        columns[2].slider("Fixed threshold (probability)", *FIXED_THRESHOLD_RANGE, step=0.01,
                          key=setting_key("fixed_threshold"), disabled=rule != "fixed",
                          help="Call pneumonia when P(pneumonia) is at least this. Only used by the fixed rule.")
    with data_tab:
        columns = st.columns(3)
        columns[0].slider("Validation fraction", *VALIDATION_FRACTION_RANGE, step=0.05,
                          key=setting_key("validation_fraction"),
                          help="Share held out for validation, by patient and per class. An imported data set's "
                               "own split is used when it was made at this fraction; otherwise train and "
                               "validation are re-split at this fraction (test is never touched).")
        columns[1].number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key=setting_key("seed"),
                                help="Fixes the random start, the shuffling and the augmentation: the same seed, "
                                     "settings and data give the same run on a CPU.")
        columns[2].number_input("Batches per epoch (0 = all)", min_value=0, max_value=10**6, step=1,
                                key=setting_key("max_batches_per_epoch"),
                                help="Limit each epoch to this many batches: for smoke tests and timing.")


def settings_summary(config: TrainingConfig) -> str:
    """One line of what the Advanced settings hold now, so they need not be opened to be known."""
    schedule = {"plateau": f"plateau schedule (× {config.plateau_factor:g} after {config.plateau_patience} epochs)",
                "cosine": "cosine schedule", "constant": "constant rate"}[config.schedule]
    stopping = (f"early stopping after {config.early_stopping_patience} epochs without a better validation AUC"
                if config.early_stopping else "no early stopping")
    augmentation = [f"rotation ±{config.rotation_degrees:g}°" if config.rotation_degrees else "",
                    f"zoom ±{config.zoom:g}" if config.zoom else "",
                    "shifts" if config.width_shift or config.height_shift else "",
                    "flip" if config.horizontal_flip else "",
                    f"brightness ±{config.brightness:g}" if config.brightness else "",
                    f"contrast ±{config.contrast:g}" if config.contrast else "",
                    f"acquisition changes up to {config.photometric:g}" if config.photometric else "",
                    f"random crop up to {config.random_crop:.0%} of the area" if config.random_crop else "",
                    f"mixup α {config.mixup:g}" if config.mixup else ""]
    augmentation = ", ".join(part for part in augmentation if part) or "none"
    threshold = {"youden": "Youden threshold",
                 "sensitivity": f"threshold for {config.min_sensitivity:.0%} sensitivity",
                 "fixed": f"fixed threshold {config.fixed_threshold:g}"}.get(config.threshold_rule, "")
    smoothing = f", label smoothing {config.label_smoothing:g}" if config.label_smoothing else ""
    return (f"{config.optimizer}, {schedule}, {config.class_weighting} class weighting, dropout "
            f"{config.dropout_rate:g}{smoothing}, {stopping}; augmentation: {augmentation}; {threshold}.")


def settings_form(image_size: int) -> tuple[dict, object]:
    """Every training setting as a widget; returns the values (TrainingConfig field -> value) and the place
    under the essential settings kept for the summary of the advanced ones."""
    restore_settings()
    st.selectbox("Preset", list(PRESETS), format_func=lambda name: PRESET_TITLES.get(name, name),
                 key=ui.KEY_PRESET, on_change=apply_preset,
                 help="Fills every setting below; change any of them afterwards. Fast: the CPU network, Adam "
                      "with a cosine schedule, early stopping, brightness and contrast augmentation (minutes on "
                      "two cores). Tutorial: the VGG-like network, RMSprop, 12 epochs, the plateau schedule. "
                      "Transfer: EfficientNet-Lite0 with ImageNet weights (shipped offline), a new head trained "
                      "on its features; fine-tuned: its layers trained too.")
    st.session_state[ui.KEY_PRESET_CHOICE] = st.session_state[ui.KEY_PRESET]
    essential_settings()
    summary_slot = st.empty()
    with st.expander("Advanced settings"):
        advanced_settings()
    # Settings not drawn as widgets (image size, strategy, weights, …) travel in session state as well.
    values = {name: st.session_state[setting_key(name)] for name in TrainingConfig.__dataclass_fields__
              if name not in ("image_size", "strategy")}
    values["max_batches_per_epoch"] = int(values["max_batches_per_epoch"]) or None
    values["seed"] = int(values["seed"])
    values["image_size"] = int(image_size)
    return values, summary_slot


def estimate_section(config: TrainingConfig, num_train_images: int) -> None:
    """The estimated time per epoch from the backend's estimate, else from earlier runs of the same model."""
    seconds, basis = None, ""
    with ui.guarded("Estimating the time per epoch"):
        seconds, basis = ui.estimate_epoch_seconds(config, num_train_images)
    if seconds is None:
        st.caption("Estimated time per epoch: unknown until a first run of this model and size has finished an "
                   "epoch (then it is measured).")
    else:
        st.metric("Estimated time per epoch", run_text.format_seconds(seconds), help=basis, border=True)


def start_section(summaries: list) -> None:
    st.subheader("Settings")
    entries = datasets.list_datasets()
    if not entries:
        st.info("No data set to train on yet: import one on the Data page first.")
        ui.link_to("data")
        return
    names = [entry.name for entry in entries]
    wanted = st.session_state.get(ui.KEY_DATASET)
    name = st.selectbox("Data set", names, index=names.index(wanted) if wanted in names else 0,
                        key="train_dataset", help="The imported data set to train on (import more on the Data "
                                                  "page). Its images' size is the model's input size.")
    entry = entries[names.index(name)]
    image_size = entry.image_size or TrainingConfig().image_size
    counts = entry.counts
    num_train = entry.split_size("train")
    st.caption(f"{image_size} px images; " + ", ".join(f"{split}: {sum(c.values()):,}" for split, c in counts.items()))
    values, summary_slot = settings_form(image_size)
    config = None
    with ui.guarded("Checking the settings"):
        config = TrainingConfig(**values)
    if config is None:
        return
    st.session_state[ui.KEY_TRAINING_CONFIG] = config
    summary_slot.caption("Advanced: " + settings_summary(config))
    estimate_section(config, num_train)
    going = [summary for summary in summaries
             if summary.dataset == name and summary.state in ui.ACTIVE_STATES]
    reason = (f"A run on {name} is going ({run_text.run_name(going[0])}): Start is available again when it "
              "ends. Stop it below to start another now." if going else None)
    if st.button("Start training", type="primary", icon=":material/play_arrow:", disabled=bool(going),
                 help=reason):
        run_id = None
        with ui.guarded("Starting the training"):
            run_id = jobs.start_training(name, config)
        if run_id is not None:
            st.session_state[ui.KEY_FOLLOWED_RUN] = str(run_id)
            st.toast(f"Training {run_id} started.", icon=":material/play_arrow:")
            st.rerun()  # the page again, Start disabled and the new run followed
    if reason:
        st.caption(reason)


def history_charts(history: pd.DataFrame, epochs: int | None) -> None:
    if history is None or "epoch" not in history or history["epoch"].dropna().empty:
        st.caption("The per-epoch charts appear when the first epoch ends.")
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


def batch_charts(run_id: str, status: dict) -> None:
    """Loss and accuracy batch by batch in the epoch that is running (from the run's batch log)."""
    epoch = int(status.get("epoch") or 0)
    batches = live_progress.read_batch_log(run_id, epoch=epoch) if epoch else None
    if batches is None or batches.empty:
        # A line in the charts' place, so the page does not jump when they appear.
        st.caption(f"The loss and accuracy of epoch {epoch or 1}, batch by batch, appear after its first batches.")
        return
    left, right = st.columns(2)
    per_epoch = status.get("batches")
    left.altair_chart(charts.batch_chart(batches, "loss", batches_per_epoch=per_epoch), width="stretch")
    if batches["accuracy"].notna().any():
        right.altair_chart(charts.batch_chart(batches, "accuracy", batches_per_epoch=per_epoch), width="stretch")


def ended_section(run_id: str, status: dict, finished: int) -> None:
    """A stopped or interrupted run: evaluate its best epoch and use it, or resume it."""
    if stopped_runs.evaluation_is_current(run_id, status):
        st.success(f"Evaluated with the weights of epoch {status.get('finalized_epoch')} (its best validation "
                   "AUC): open it on the Evaluate and Predict pages, or resume training to continue.",
                   icon=":material/check_circle:")
        columns = st.columns(2)
        with columns[0]:
            ui.link_to("evaluate", "Evaluate this run")
        with columns[1]:
            ui.link_to("predict", "Predict with it")
        st.session_state[ui.KEY_EVALUATION_RUN] = run_id
        return
    allowed, reason = stopped_runs.can_finalize(run_id, status)
    if not allowed:
        st.info(f"{reason[0].upper()}{reason[1:]}. Resume it to train, or start a new run.")
        return
    info = runs.read_checkpoint_info(run_id) or {}
    best = (f" (epoch {info['best_epoch']}, validation AUC {info['best_value']:.3f})"
            if info.get("best_epoch") and isinstance(info.get("best_value"), (int, float)) else "")
    st.info(f"Its best epoch so far{best} can be evaluated and used as it is — the same evaluation as a "
            f"finished run, on validation and test — or resume training to continue from epoch {finished}.",
            icon=":material/info:")
    if st.button("Evaluate and use this run", key=f"finalize_{run_id}", type="primary", icon=":material/fact_check:"):
        done = None
        with st.spinner("Evaluating the best epoch on validation and test…"), ui.guarded("Evaluating the run"):
            done = stopped_runs.finalize_stopped_run(run_id)
        if done is not None:
            st.toast("Evaluated: the run can be used on the Evaluate and Predict pages.", icon=":material/check:")
            st.rerun()


def run_panel(run_id: str, name: str) -> None:
    """Status, progress, charts and the Stop/Resume/Evaluate buttons of one run (the live fragment's body)."""
    status = runs.read_status(run_id)
    state = status.get("state")
    # The fragment redraws only itself; when the state changes (queued -> running -> finished) the rest
    # of the page (Start, the timer) is stale, so redraw the whole page once. The state is stored
    # before the rerun, so the redraw sees no change and cannot loop.
    state_key = f"_panel_state_{run_id}"
    previous_state = st.session_state.get(state_key)
    st.session_state[state_key] = state
    if previous_state is not None and previous_state != state:
        st.rerun()
    finished = stopped_runs.finished_epochs(run_id)
    st.markdown(f"**{name}** — {run_text.state_text(status, finished)}")
    if state == "queued":
        position = jobs.queue_position(run_id)
        st.info(f"Waiting in the queue{f': position {position}' if position else ''}. It starts by itself when "
                "the training before it ends.", icon=":material/hourglass_top:")
    if state == "failed":
        st.error(f"This run failed: {status.get('error') or status.get('message') or 'no reason recorded'}. "
                 "Its finished epochs are kept; fix the cause and resume it, or start a new run.")
    fraction, text = run_text.progress(status, finished)
    st.progress(fraction, text=text)
    if state in ("stopped", "interrupted"):
        ended_section(run_id, status, finished)
    if state in ("queued", "running") and st.button("Stop", key=f"stop_{run_id}", icon=":material/stop:",
                                                     help="Stops after the current batch; the finished epochs "
                                                          "are kept, and the run can be evaluated or resumed."):
        with ui.guarded("Stopping the run"):
            jobs.stop(run_id)
            st.toast("Stop requested: the run stops after the current batch.", icon=":material/stop:")
    if state in ui.RESUMABLE_STATES and st.button("Resume", key=f"resume_{run_id}", icon=":material/play_arrow:",
                                                   help="Continue training from the last finished epoch."):
        new_run = None
        with ui.guarded("Resuming the run"):
            new_run = jobs.resume(run_id)
        if new_run is not None:
            st.session_state[ui.KEY_FOLLOWED_RUN] = str(new_run)
            st.rerun()
    if state in ("running", "stopping"):
        batch_charts(run_id, status)
    history = runs.read_history(run_id)
    # The x axis spans the planned epochs so the curves grow into it, but no more than twice the finished
    # ones (at least 10): 3 points on a 100-epoch axis would be a smudge.
    epochs = status.get("epochs")
    axis_epochs = min(int(epochs), max(10, 2 * len(history))) if epochs else None
    history_charts(history, axis_epochs)


def follow_section(summaries: list, labels: dict) -> None:
    st.subheader("Live run")
    if not summaries:
        st.caption("No run yet: choose the settings above and press Start training.")
        return
    ids = [summary.run_id for summary in summaries]
    states = {summary.run_id: summary.state for summary in summaries}
    followed = st.session_state.get(ui.KEY_FOLLOWED_RUN)
    if followed not in ids:
        # After a refresh or from another browser: the run that is going on, else the newest.
        active = [run_id for run_id in ids if states[run_id] in ui.ACTIVE_STATES]
        followed = active[0] if active else ids[0]
    # No widget key: KEY_FOLLOWED_RUN stays a plain value that Start and Resume may set at any time.
    run_id = st.selectbox("Run to follow", ids, index=ids.index(followed),
                          format_func=lambda choice: labels.get(choice, choice),
                          help="Runs are named by model, data set and start time (UTC), with their best "
                               "validation AUC.")
    st.session_state[ui.KEY_FOLLOWED_RUN] = run_id
    names = {summary.run_id: run_text.run_name(summary) for summary in summaries}
    active = runs.read_status(run_id).get("state") in ui.ACTIVE_STATES

    @st.fragment(run_every=REFRESH_SECONDS if active else None)
    def live_panel() -> None:
        with ui.guarded("Following the run"):
            run_panel(run_id, names[run_id])

    live_panel()


def runs_table(summaries: list) -> pd.DataFrame:
    """One row per run in words: no "epoch 0" or empty figures while a run trains."""
    rows = []
    for summary in summaries:
        run_id = summary.run_id
        status = {"state": summary.state, "epochs": summary.epochs, "epoch": summary.epoch,
                  "message": summary.message}
        try:
            finished = stopped_runs.finished_epochs(run_id)
            training = runs.read_config(run_id).get("training", {})
            status = runs.read_status(run_id)
        except (ValueError, OSError):
            finished, training = 0, {}
        state = summary.state
        if state in ("running", "stopping"):
            progress = f"epoch {status.get('epoch') or 1} of {status.get('epochs')}"
        elif state == "queued":
            progress = "waiting"
        else:
            progress = f"{finished} of {status.get('epochs')} epochs"

        def figure(value) -> str:
            return f"{value:.3f}" if isinstance(value, (int, float)) and value == value else "—"

        rows.append({"run": run_text.run_name(summary),
                     "state": run_text.state_text(status, finished) if state not in ui.ACTIVE_STATES
                     else {"queued": "waiting in the queue", "stopping": "stopping"}.get(state, "training"),
                     "progress": progress, "best val AUC": figure(summary.best_val_auc),
                     "best val accuracy": figure(summary.best_val_accuracy),
                     "test AUC": figure(summary.test_auc), "test accuracy": figure(summary.test_accuracy),
                     "settings": ", ".join(f"{name} {training[name]:g}" if isinstance(training.get(name), float)
                                           else f"{name} {training.get(name)}"
                                           for name in ("optimizer", "learning_rate", "batch_size",
                                                        "class_weighting") if name in training),
                     "run id": run_id})
    return pd.DataFrame(rows)


def runs_section() -> None:
    st.subheader("Runs")
    summaries = ui.list_runs()
    if not summaries:
        st.caption("No run yet.")
        return
    active = any(summary.state in ui.ACTIVE_STATES for summary in summaries)

    # The table and the comparison follow the runs as they train: read again on every refresh.
    @st.fragment(run_every=REFRESH_SECONDS if active else None)
    def live_runs() -> None:
        with ui.guarded("Listing the runs"):
            current = ui.list_runs()
            labels = run_text.run_labels(current)
            st.dataframe(runs_table(current), hide_index=True)
            queue = [summary.run_id for summary in current if summary.state in ui.ACTIVE_STATES]
            if len(queue) > 1:
                st.caption("Queue: " + " → ".join(labels[run_id] for run_id in queue))
            compare_section(current, labels)

    live_runs()


def compare_section(summaries: list, labels: dict) -> None:
    st.markdown("**Compare runs**")
    ids = [summary.run_id for summary in summaries]
    default = [run_id for run_id in ids if run_id in st.session_state.get(ui.KEY_COMPARE_RUNS, [])] or ids[:2]
    # No widget key: a label changes while its run trains (AUC, state), and a keyed multiselect then fails to
    # restore its stored choice; the choice is kept as plain run ids instead.
    chosen = st.multiselect("Runs", ids, default=default, format_func=lambda run_id: labels.get(run_id, run_id),
                            help="Their curves share one chart: one colour per run, solid for validation, "
                                 "dashed for train.")
    st.session_state[ui.KEY_COMPARE_RUNS] = chosen
    metric = st.segmented_control("Metric", list(COMPARE_METRICS), default="auc",
                                  format_func=COMPARE_METRICS.get, key="compare_metric") or "auc"
    if chosen:
        histories = {labels[run_id]: runs.read_history(run_id) for run_id in chosen}
        frame = charts.compare_runs_frame(histories, metric)
        if frame.empty:
            st.caption("None of the chosen runs has finished an epoch yet.")
        else:
            st.altair_chart(charts.compare_runs_chart(histories, metric), width="stretch")


def main() -> None:
    st.title("Train")
    summaries = []
    with ui.guarded("Reading the runs"):
        summaries = ui.list_runs()
    labels = run_text.run_labels(summaries)
    start_section(summaries)
    follow_section(summaries, labels)
    runs_section()


ui.run_page(main, key="train")
