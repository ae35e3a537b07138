"""The Train page's settings form: the few settings that matter in view, every other one under Advanced
settings in tabs, presets that fill them, and the one-line summary of what Advanced holds. UI code only; the
values and their ranges come from ``cxr.config`` (the page turns them into a ``TrainingConfig``)."""

from __future__ import annotations

import streamlit as st

import app_components as ui
from cxr import models
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

PRESET_TITLES = {"fast": "Fast: the bundled model's recipe", "tutorial": "Tutorial: the seed recipe, as published",
                 "transfer": "Transfer: a pretrained network (ImageNet), new head only",
                 "transfer_finetune": "Transfer, fine-tuned: the pretrained network trained too (slow)"}
BATCH_SIZES = [8, 16, 32, 64, 128, 256]
LEARNING_RATES = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
MIN_LEARNING_RATES = [0.0, 1e-7, 1e-6, 1e-5, 1e-4]
EPOCHS_SLIDER_MAX = 100  # the slider's top; longer trainings are for the command line
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
