"""Predict, for a clinician: drop chest X-rays (JPEG, PNG, DICOM) or try an example, and read for each image a
plain verdict ("Pneumonia likely" / "unlikely" / "Uncertain — near the threshold") at the model's operating
point, whether the image is inside the model's training population, and the X-ray beside its heat map."""

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

import app_components as ui
from cxr import explain, interpretation

IMAGE_TYPES = ["jpg", "jpeg", "png", "dcm", "dicom", "bmp", "tif", "tiff"]
EXPLAIN_CHOICES = {"gradcam": "Grad-CAM (fast)", "shap": "SHAP (slower)", "none": "No heat map"}
DEFAULT_OPACITY = 0.4  # the anatomy stays readable under the colours
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "examples"
EXAMPLES = {  # file -> button label
    "normal-1.png": "Normal 1",
    "normal-2.png": "Normal 2",
    "pneumonia-bacterial.png": "Pneumonia (bacterial)",
    "pneumonia-viral.png": "Pneumonia (viral)",
}
EXAMPLES_CREDIT = ("Example images: Kermany et al., *Cell* 2018, Mendeley Data doi:10.17632/rscbjbr9sj.2, "
                   "CC BY 4.0 (test split; converted to grayscale PNG). See assets/examples/README.md.")
OUTSIDE_TEXT = "Outside this model's training population"
GREY = "color: #8a8f98"
NOT_SHOWN = "—"  # a table cell with nothing to show
TABLE_COLUMNS = ("file", "result", "probability", "population", "notes")
# Jet, as cxr.explain.overlay colours the heat map (OpenCV's COLORMAP_JET): dark blue, blue, cyan, yellow, red.
LEGEND_HTML = (
    '<div style="display:flex;align-items:center;gap:0.5em;font-size:0.8em">'
    "<span>weak</span>"
    '<div style="flex:1;height:0.8em;border-radius:3px;background:linear-gradient(to right,'
    '#00007f,#0000ff 12%,#00ffff 37%,#ffff00 63%,#ff0000 88%,#7f0000)"></div>'
    "<span>strong</span></div>"
    '<div style="font-size:0.8em;color:#6b7280;text-align:center">where the model looked — not a lesion</div>'
)
HEAT_MAP_CAPTION = ("The heat map shows where the model looked for its answer, **not a lesion**. Colours are "
                    "scaled within each image: red marks the most influential region even when pneumonia is "
                    "unlikely.")


@dataclass(frozen=True)
class Source:
    """One image to predict: an upload or a shipped example."""

    name: str
    data: bytes
    key: str  # identifies the file across reruns (the uploader's file id, or "example:<file>")


def choose_model() -> str | None:
    """The model picker: run names people read, with their best validation AUC. ``None`` when no model."""
    choices: dict[str, str] = {}
    if not ui.bundled_model_available():
        st.info("No bundled default model is installed in this copy of the app (models/default/model.keras is "
                "missing). Use a finished training run instead, or train one on the Train page.",
                icon=":material/info:")
    with ui.guarded("Listing the models"):
        choices = ui.model_choices()
    if not choices:
        st.warning("No model to predict with: there is no bundled default model and no training run has finished "
                   "yet. Train a model on the Train page first.")
        ui.link_to("train")
        return None
    if st.session_state.get(ui.KEY_PREDICT_MODEL) not in choices:
        st.session_state[ui.KEY_PREDICT_MODEL] = next(iter(choices))
    return st.selectbox("Model", list(choices), key=ui.KEY_PREDICT_MODEL, format_func=choices.get)


def load_predictor_or_error(choice: str):
    predictor = None
    with ui.guarded("Loading the model"):
        predictor = ui.load_predictor(choice, ui.model_version(choice))
    return predictor


def explain_operating_point(choice: str) -> None:
    """The model's operating point, once: its threshold and what it did on validation and test images (from
    its metrics.json, without waiting for the model to load)."""
    metrics = ui.model_metrics(choice)
    point = interpretation.operating_point(metrics)
    with st.expander(f"How to read the answers: {point.summary()}", icon=":material/info:"):
        st.markdown(point.explanation())
        if metrics is None:
            st.caption("No metrics.json beside the model: threshold 0.5, probabilities not calibrated.")


def chosen_sources(files: list) -> list[Source]:
    """The uploads, then the chosen examples. A file's key is its name and content hash: the same file
    uploaded again is not predicted again."""
    sources = []
    for file in files or []:
        data = file.getvalue()
        sources.append(Source(file.name, data, f"upload:{file.name}:{hashlib.sha1(data).hexdigest()}"))
    for example in st.session_state.get(ui.KEY_EXAMPLES) or []:
        path = EXAMPLES_DIR / example
        if path.is_file():
            sources.append(Source(f"example {example}", path.read_bytes(), f"example:{example}"))
    return sources


def predict_sources(choice: str, sources: list[Source], explain_method: str) -> dict | None:
    """``{"results": [PredictionResult] in the order of sources, "seconds": of the last model call, "new":
    images predicted by this call}``. Each image is predicted once per (model, method) and kept in the
    session: adding a file predicts only that file, and controls and reruns predict nothing. ``None`` when
    the model cannot be loaded or a demo limit refuses (message shown)."""
    context = (choice, ui.model_version(choice), explain_method)
    stored = st.session_state.get(ui.KEY_PREDICTIONS) or {}
    same_context = stored.get("context") == context
    known = dict(stored.get("results", {})) if same_context else {}
    seconds = stored.get("seconds", 0.0) if same_context else 0.0
    missing = [source for source in sources if source.key not in known]
    if missing:
        ui.wait_for_warm_up()
        predictor = load_predictor_or_error(choice)
        if predictor is None:
            return None
        contents = [source.data for source in missing]
        if not ui.admit_prediction(contents, explain_method):  # demo limits: refused before the model runs
            return None
        started = time.perf_counter()
        with st.spinner(f"Predicting {len(missing)} image(s)…"):
            results = predictor.predict(contents, names=[source.name for source in missing],
                                        explain=None if explain_method == "none" else explain_method)
        ui.audit_predictions(choice, contents, results)
        seconds = time.perf_counter() - started
        known.update({source.key: result for source, result in zip(missing, results, strict=True)})
    # Forget files no longer chosen: the session holds only what is on the page.
    known = {source.key: known[source.key] for source in sources}
    st.session_state[ui.KEY_PREDICTIONS] = {"context": context, "results": known, "seconds": seconds}
    return {"results": [known[source.key] for source in sources], "seconds": seconds, "new": len(missing)}


def population_of(result):
    """The result's population verdict (``cxr.population.PopulationVerdict``), ``None`` when not judged."""
    return result.population


def is_outside(result) -> bool:
    population = population_of(result)
    return population is not None and population.outside


def headline_of(result) -> str:
    if result.error:
        return "Could not be read"
    if is_outside(result):
        return OUTSIDE_TEXT
    return interpretation.verdict(result.probability, result.threshold).headline


def result_card(result, index: int, opacity: float) -> None:
    """One image: the verdict first (what a reader looks for; on a phone the columns stack, so it also comes
    first there), then the X-ray beside its heat map."""
    with st.container(border=True):
        if result.error:
            st.error(f"**{result.name}**: {result.error}", icon=":material/error:")
            return
        text, original, heat = st.columns([1.3, 1, 1])
        with text:
            show_heat_map = verdict_text(result, index)
        original.image(result.image, caption="Original (as the model saw it)", width="stretch")
        heatmap = getattr(result, "heatmap", None)
        if not show_heat_map:
            return
        if heatmap is None:
            heat.caption("No heat map for this image.")
            return
        heat.image(explain.overlay(result.image, heatmap, alpha=opacity),
                   caption=f"{result.name} — heat map", width="stretch")
        heat.html(LEGEND_HTML)


def verdict_text(result, index: int) -> bool:
    """The words of a card; returns whether its heat map may be shown (not for an outside image, unless
    its output was asked for)."""
    st.caption(result.name)
    population = population_of(result)
    show_heat_map = True
    if is_outside(result):
        st.warning(f"{OUTSIDE_TEXT}: {population.reason or 'unlike the images it was trained on'}.",
                   icon=":material/block:")
        st.markdown("The model's answer is withheld: it learned from one population of images, and its "
                    "probability means nothing outside it.")
        show_heat_map = st.toggle("Show the model's output anyway", key=f"{ui.KEY_SHOW_ANYWAY}{index}",
                                  help="For research: the number the model gives, which is not reliable "
                                       "for this image.")
        if show_heat_map:
            would_be = interpretation.verdict(result.probability, result.threshold).headline
            st.markdown(f"Model output, not reliable for this image: P(pneumonia) "
                        f"{100 * float(result.probability):.1f} % (it would read \"{would_be}\").")
    else:
        verdict = interpretation.verdict(result.probability, result.threshold)
        st.subheader(verdict.headline, anchor=False)
        st.markdown(f"Probability of pneumonia **{100 * float(result.probability):.1f} %** "
                    f"(this model's threshold: {100 * float(result.threshold):.0f} %).")
        if population is None or population.status == "unknown":
            st.caption("This model has no population check: it cannot tell whether this image resembles "
                       "the images it was trained on.")
    for warning in result.warnings or []:
        st.warning(warning, icon=":material/warning:")
    return show_heat_map


def results_table(results: list) -> pd.DataFrame:
    """One row per image, for reading (not the CSV): no repeated threshold, the probability only where it is
    shown on the card (not for an outside image), a population column. Every shown cell is text (the
    browser's table draws an empty number as "None"); ``p_pneumonia``, the number itself, is not shown."""
    rows = []
    for result in results:
        population = population_of(result)
        notes = list(result.warnings or [])
        if result.error:
            notes.insert(0, result.error)
        elif population is not None and population.reason:
            notes.insert(0, population.reason)
        hidden = bool(result.error) or is_outside(result)
        rows.append({
            "file": result.name,
            "result": headline_of(result),
            "probability": NOT_SHOWN if hidden else f"{100 * float(result.probability):.1f} %",
            "population": population.status if population is not None else NOT_SHOWN,
            "notes": " | ".join(notes),
            "p_pneumonia": float("nan") if hidden else float(result.probability),
        })
    return pd.DataFrame(rows, columns=[*TABLE_COLUMNS, "p_pneumonia"])


def styled(table: pd.DataFrame):
    """Outside rows greyed."""
    def grey_outside(row):
        return [GREY if row["population"] == "outside" else ""] * len(row)

    return table.style.apply(grey_outside, axis=1)


def csv_bytes(results: list) -> bytes:
    """Every field of every result (``PredictionResult.to_row``), the probability of outside images included."""
    return pd.DataFrame([result.to_row() for result in results]).to_csv(index=False).encode()


def examples_picker() -> None:
    st.pills("Or try an example", list(EXAMPLES), format_func=EXAMPLES.get, selection_mode="multi",
             key=ui.KEY_EXAMPLES, help="Chest X-rays of children from the test split of the data set the bundled "
                                       "model was trained on (not images it learned from).")


def heat_map_settings() -> tuple[str, float]:
    """The heat map's method and opacity, folded away: on a phone the results come first."""
    with st.expander("Heat map settings", icon=":material/tune:"):
        method = st.segmented_control(
            "Heat map", ui.allowed_explain_methods(list(EXPLAIN_CHOICES)), format_func=EXPLAIN_CHOICES.get,
            default="gradcam", key=ui.KEY_EXPLAIN,
            help="Grad-CAM: where the last convolution looked. SHAP: pixel attributions (seconds per image).",
        ) or "gradcam"
        opacity = st.slider("Heat map opacity", 0.0, 1.0, DEFAULT_OPACITY, 0.05, key=ui.KEY_OPACITY,
                            disabled=method == "none", help="0: the X-ray only; 1: the colours only.")
        st.caption(HEAT_MAP_CAPTION)
    return method, opacity


def show_results(entry: dict) -> None:
    results = entry["results"]
    answered = sum(1 for result in results if not result.error)
    timing = "" if entry["new"] in (0, len(results)) else f" (the {entry['new']} new one(s))"
    st.caption(f"{answered} of {len(results)} image(s) predicted in {entry['seconds']:.2f} s{timing}"
               + (f"; {len(results) - answered} could not be read." if answered < len(results) else "."))
    opacity = st.session_state.get(ui.KEY_OPACITY, DEFAULT_OPACITY)
    for index, result in enumerate(results):
        result_card(result, index, opacity)


def show_table(results: list) -> None:
    st.dataframe(styled(results_table(results)), hide_index=True, column_order=TABLE_COLUMNS, column_config={
        "file": st.column_config.TextColumn("File"),
        "result": st.column_config.TextColumn("Result"),
        "probability": st.column_config.TextColumn("P(pneumonia)"),
        "population": st.column_config.TextColumn("Population", help="in / outside / unknown (no check)"),
        "notes": st.column_config.TextColumn("Notes"),
    })
    st.download_button("Download results (CSV)", csv_bytes(results), file_name="predictions.csv", mime="text/csv",
                       icon=":material/download:", on_click="ignore")


def main() -> None:
    st.title("Predict")
    ui.disclaimer()
    choice = choose_model()
    if choice is None:
        return
    files = st.file_uploader("Chest X-rays (JPEG, PNG, DICOM; one or many)", type=IMAGE_TYPES,
                             accept_multiple_files=True, key=ui.KEY_UPLOADS,
                             help="Frontal chest X-rays. Files are processed in memory and not kept.")
    explain_method, _ = heat_map_settings()
    # The examples' picker is drawn below the results, but its choice (kept by Streamlit from the last run)
    # is read here.
    sources = chosen_sources(files)
    entry = None
    if sources:
        with ui.guarded("Predicting"):
            entry = predict_sources(choice, sources, explain_method)
        if entry is not None:
            show_results(entry)
    explain_operating_point(choice)
    if entry is not None:
        show_table(entry["results"])
    examples_picker()
    if not sources:
        st.caption("Drop one or more images above, or pick an example, to see predictions.")
    st.caption(EXAMPLES_CREDIT)


ui.run_page(main, key="predict")
