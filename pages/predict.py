"""Predict: drop chest X-rays (JPEG, PNG, DICOM), pick a model, and see for each image P(pneumonia), the label
at the model's threshold, a heat map of what drove it, and warnings for unusual inputs."""

import time

import pandas as pd
import streamlit as st

import app_components as ui
from cxr import explain

IMAGE_TYPES = ["jpg", "jpeg", "png", "dcm", "dicom", "bmp", "tif", "tiff"]
EXPLAIN_CHOICES = {"gradcam": "Grad-CAM (fast)", "shap": "SHAP (slower)", "none": "No heat map"}
OVERLAY_ALPHA = 0.4  # heat map opacity: the anatomy stays readable under it


def choose_model() -> str | None:
    """The model select: the bundled default (when shipped) and every finished run. ``None`` when none."""
    choices = []
    if ui.bundled_model_available():
        choices.append(ui.DEFAULT_MODEL)
    else:
        st.info("No bundled default model is installed in this copy of the app (models/default/model.keras is "
                "missing). Use a finished training run instead, or train one on the Train page.",
                icon=":material/info:")
    with ui.guarded("Listing the finished runs"):
        choices += ui.finished_runs_with_model()
    if not choices:
        st.warning("No model to predict with: there is no bundled default model and no training run has finished "
                   "yet. Train a model on the Train page first.")
        ui.link_to("train")
        return None
    if st.session_state.get(ui.KEY_PREDICT_MODEL) not in choices:
        st.session_state[ui.KEY_PREDICT_MODEL] = choices[0]
    return st.selectbox("Model", choices, key=ui.KEY_PREDICT_MODEL,
                        format_func=lambda choice: "Bundled default model" if choice == ui.DEFAULT_MODEL
                        else f"Run {choice}")


def predict_uploads(choice: str, files: list, explain_method: str) -> dict | None:
    """Results for ``files`` with the model ``choice``, computed once per (model, files, method) and kept
    in the session so that toggles and reruns do not predict again."""
    version = ui.model_version(choice)
    signature = (choice, version, explain_method,
                 tuple((getattr(file, "file_id", None) or file.name, file.name, file.size) for file in files))
    cached = st.session_state.get(ui.KEY_PREDICTIONS)
    if cached and cached.get("signature") == signature:
        return cached
    predictor = load_predictor_or_error(choice, version)
    if predictor is None:
        return None
    started = time.perf_counter()
    with st.spinner(f"Predicting {len(files)} image(s)…"):
        results = predictor.predict([file.getvalue() for file in files], names=[file.name for file in files],
                                    explain=None if explain_method == "none" else explain_method)
    entry = {"signature": signature, "results": list(results), "seconds": time.perf_counter() - started}
    st.session_state[ui.KEY_PREDICTIONS] = entry
    return entry


def load_predictor_or_error(choice: str, version: float):
    predictor = None
    with ui.guarded("Loading the model"):
        predictor = ui.load_predictor(choice, version)
    return predictor


def results_table(results: list) -> pd.DataFrame:
    rows = []
    for result in results:
        info = getattr(result, "info", None)
        rows.append({
            "file": result.name,
            "p_pneumonia": None if result.error else round(float(result.probability), 4),
            "label": None if result.error else result.label,
            "threshold": None if result.error else round(float(result.threshold), 4),
            "warnings": " | ".join(result.warnings or []),
            "error": result.error or "",
            "format": getattr(info, "format", None),
            "original_size": f"{info.width}x{info.height}" if info is not None else None,
        })
    return pd.DataFrame(rows)


def result_card(result, show_overlay: bool) -> None:
    """One image: the X-ray (with the heat map overlaid when asked), P(pneumonia), the label, warnings."""
    with st.container(border=True):
        if result.error:
            st.error(f"**{result.name}**: {result.error}", icon=":material/error:")
            return
        picture, details = st.columns([1, 2])
        heatmap = getattr(result, "heatmap", None)
        if show_overlay and heatmap is not None:
            picture.image(explain.overlay(result.image, heatmap, alpha=OVERLAY_ALPHA),
                          caption=f"{result.name} — heat map", width="stretch")
        else:
            picture.image(result.image, caption=result.name, width="stretch")
        probability = float(result.probability)
        details.metric("P(pneumonia)", f"{100 * probability:.1f} %", border=True)
        label_text = "**Pneumonia**" if result.label == "pneumonia" else "**Normal**"
        details.markdown(f"{label_text} at the model's threshold of {float(result.threshold):.2f} "
                         f"(pneumonia when P ≥ threshold).")
        for warning in result.warnings or []:
            details.warning(warning, icon=":material/warning:")
        info = getattr(result, "info", None)
        if info is not None:
            details.caption(f"{str(info.format).upper()}, {info.width}x{info.height} px, {info.mode}")
        if show_overlay and heatmap is None:
            details.caption("No heat map for this image.")


def main() -> None:
    st.title("Predict")
    ui.disclaimer()
    choice = choose_model()
    files = st.file_uploader("Chest X-rays (JPEG, PNG, DICOM; one or many)", type=IMAGE_TYPES,
                             accept_multiple_files=True, key=ui.KEY_UPLOADS,
                             help="Frontal chest X-rays. Files are processed in memory and not kept.")
    method_column, overlay_column = st.columns(2)
    explain_method = method_column.segmented_control(
        "Heat map", list(EXPLAIN_CHOICES), format_func=EXPLAIN_CHOICES.get, default="gradcam", key=ui.KEY_EXPLAIN,
        help="Grad-CAM: where the last convolution looked. SHAP: pixel attributions (seconds per image).",
    ) or "gradcam"
    show_overlay = overlay_column.toggle("Show heat map overlay", value=True, key=ui.KEY_SHOW_OVERLAY,
                                         disabled=explain_method == "none")
    if choice is None or not files:
        if choice is not None:
            st.caption("Drop one or more images above to see predictions.")
        return
    entry = None
    with ui.guarded("Predicting"):
        entry = predict_uploads(choice, files, explain_method)
    if entry is None:
        return
    results = entry["results"]
    failed = sum(1 for result in results if result.error)
    st.success(f"{len(results) - failed} of {len(results)} image(s) predicted in {entry['seconds']:.2f} s"
               + (f"; {failed} could not be read (see below)." if failed else "."), icon=":material/check:")
    table = results_table(results)
    st.dataframe(table, hide_index=True, column_config={
        "p_pneumonia": st.column_config.ProgressColumn("P(pneumonia)", min_value=0.0, max_value=1.0, format="%.3f"),
    })
    st.download_button("Download results (CSV)", table.to_csv(index=False).encode(), file_name="predictions.csv",
                       mime="text/csv", icon=":material/download:", on_click="ignore")
    for result in results:
        result_card(result, show_overlay and explain_method != "none")


ui.run_page(main, key="predict")
