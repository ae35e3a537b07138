"""Entry point and Home page: ``streamlit run streamlit_app.py``.

Streamlit's multipage convention: this file is the Home page (``/``) and the files in ``pages/`` are the
other pages, discovered by Streamlit at start, so a deep link such as ``/predict`` works from the first
request of a fresh server; their URLs are their file names (``pages/predict.py`` -> ``/predict``). Streamlit's
own page list is hidden (``client.showSidebarNavigation = false``); every page draws the app's menu through
``app_components.run_page``. Nothing heavy is imported here, so the first page is served in seconds.
"""

import logging

import streamlit as st

import app_components as ui

LOGGER = logging.getLogger("cxr.app")


def state_at_a_glance() -> None:
    datasets, runs, active, finished = [], [], [], []
    with ui.guarded("Reading the imported data sets"):
        datasets = ui.list_dataset_names()
    with ui.guarded("Reading the training runs"):
        runs = ui.list_runs()
        active = [summary for summary in runs if summary.state in ui.ACTIVE_STATES]
        finished = ui.finished_runs_with_model()
    default_model = ui.bundled_model_available()

    data_column, model_column, training_column = st.columns(3)
    data_column.metric("Data sets imported", len(datasets), border=True,
                       help=", ".join(datasets) if datasets else "None yet: import one on the Data page.")
    model_column.metric("Models available", len(finished) + int(default_model), border=True,
                        help=("the bundled default model and " if default_model else "no bundled model; ")
                        + f"{len(finished)} finished training run(s)")
    if active:
        running = [summary.run_id for summary in active]
        training_column.metric("Training", f"{len(active)} active", border=True, help=", ".join(running))
    else:
        training_column.metric("Training", "idle", border=True, help="No run is queued or running.")

    if not datasets and "data" in ui.available_pages():
        st.info("No data set yet. Start on the **Data** page: import a folder on the server, a `.zip` or a "
                "MedMNIST-style `.npz`.")
    if not default_model and not finished and "train" in ui.available_pages():
        st.warning("No model is available yet: the bundled default model is missing and no training run has "
                   "finished. Train one on the **Train** page to use Evaluate and Predict.")


def demo_limits_text() -> str:
    """The demo's per-session limits in one sentence, from the operator's settings (``cxr.deployment``)."""
    limits = ui.deployment().limits
    text = (f"Up to **{limits.files_per_upload} files per upload**, **{limits.predictions_per_minute} images per "
            f"minute** and **{limits.megabytes_per_session:g} MB of images per visit**")
    if not limits.shap_allowed:
        text += "; heat maps by Grad-CAM only (SHAP is switched off)"
    return text + ". Nothing you upload is written to disk: results stay in this browser tab until you close it."


def demo_home() -> None:
    """Home on a public demo (``CXR_MODE=demo``): addressed to a clinician trying the bundled model, with its
    limits and one way in (Predict); no data-set or training status, which a visitor cannot use."""
    st.title("Chest X-ray classifier: public demo")
    st.markdown(
        "Try a neural network that tells a **normal** chest X-ray from one with **pneumonia** on your own image. "
        "Upload a frontal chest X-ray (JPEG, PNG or DICOM) on the Predict page: the bundled model answers in "
        "plain words (pneumonia likely, unlikely, or uncertain near its threshold), with a calibrated probability "
        "and a heat map of the regions that drove its answer."
    )
    st.warning(ui.DISCLAIMER, icon=":material/warning:")
    st.markdown(
        "**Images unlike its training children get no answer.** The model learned from frontal chest X-rays of "
        "children aged 1 to 5. Before answering, a population check compares your image with those; when it "
        "is unlike them (an adult, a lateral view, a photograph, another body part), the demo withholds the "
        "answer and says why, instead of giving a confident number that would mean nothing."
    )
    if not ui.bundled_model_available() and not ui.finished_runs_with_model():
        st.warning("This demo has no model to predict with at the moment; its operator can see why in the "
                   "server log. Please try again later.", icon=":material/error:")
        LOGGER.error("Demo mode without any model: the bundled model is missing and CXR_DEMO_MODELS lists no "
                     "finished run with a model.")
    with st.container(border=True):
        ui.link_to("predict", "Predict on your chest X-ray")
        st.markdown(f"**Limits of this demo.** {demo_limits_text()}")
    if "evaluate" in ui.available_pages():
        ui.link_to("evaluate", "How well the model does on its test images")
        st.caption(ui.page_entry("evaluate").summary)


def main() -> None:
    if ui.demo_mode():
        demo_home()
        return
    st.title("Chest X-ray classifier")
    st.markdown(
        "Train and use convolutional networks that tell a **normal** chest X-ray from one with **pneumonia**, "
        "from the browser. It reproduces the TensorFlow 2 tutorial by Chapman (2021) on the Kermany pediatric "
        "data set, and goes further: patient-grouped validation, a fast CPU network, live training charts, "
        "calibrated probabilities with a chosen threshold, and heat maps of what drove each answer."
    )
    st.warning(ui.DISCLAIMER, icon=":material/warning:")
    st.markdown(
        "**What it does not do:** diagnose, triage, or replace a radiologist; judge adults' X-rays, other "
        "views or other diseases reliably (it was trained on pediatric frontal chest X-rays only); keep your "
        "uploads (images are processed in memory and forgotten)."
    )

    st.subheader("At a glance")
    state_at_a_glance()

    st.subheader("Pages")
    for key in (key for key in ui.available_pages() if key != "home"):
        ui.link_to(key, ui.page_entry(key).label)
        st.caption(ui.page_entry(key).summary)


ui.run_page(main, key="home")
