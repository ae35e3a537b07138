"""Home: what the app does and does not, the state at a glance, and a link to each page."""

import streamlit as st

import app_components as ui


def state_at_a_glance() -> None:
    datasets, runs, active, finished = [], [], [], []
    with ui.guarded("Reading the imported data sets"):
        datasets = ui.list_dataset_names()
    with ui.guarded("Reading the training runs"):
        runs = ui.list_runs()
        active = [summary for summary in runs if ui.run_state_of(summary) in ui.ACTIVE_STATES]
        finished = ui.finished_runs_with_model()
    default_model = ui.bundled_model_available()

    data_column, model_column, training_column = st.columns(3)
    data_column.metric("Data sets imported", len(datasets), border=True,
                       help=", ".join(datasets) if datasets else "None yet: import one on the Data page.")
    model_column.metric("Models available", len(finished) + int(default_model), border=True,
                        help=("the bundled default model and " if default_model else "no bundled model; ")
                        + f"{len(finished)} finished training run(s)")
    if active:
        running = [ui.run_id_of(summary) for summary in active]
        training_column.metric("Training", f"{len(active)} active", border=True, help=", ".join(running))
    else:
        training_column.metric("Training", "idle", border=True, help="No run is queued or running.")

    if not datasets:
        st.info("No data set yet. Start on the **Data** page: import a folder on the server, a `.zip` or a "
                "MedMNIST-style `.npz`.")
    if not default_model and not finished:
        st.warning("No model is available yet: the bundled default model is missing and no training run has "
                   "finished. Train one on the **Train** page to use Evaluate and Predict.")


def main() -> None:
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
    st.page_link("app_pages/data.py", label="Data: import a data set, look at it, preview augmentation",
                 icon=":material/dataset:")
    st.page_link("app_pages/train.py", label="Train: choose settings, start, follow live, stop, compare runs",
                 icon=":material/model_training:")
    st.page_link("app_pages/evaluate.py", label="Evaluate: report, confusion matrix, ROC/PR, threshold, calibration",
                 icon=":material/analytics:")
    st.page_link("app_pages/predict.py",
                 label="Predict: drop X-rays (JPEG, PNG, DICOM), see P(pneumonia) and heat maps",
                 icon=":material/radiology:")


ui.run_page(main, title="Home")
