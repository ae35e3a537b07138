"""Entry point: ``streamlit run streamlit_app.py``. Declares the pages and runs the one asked for.

Kept tiny on purpose: nothing heavy is imported here, so the first page is served in seconds.
The page files live in ``app_pages/``, not ``pages/``: Streamlit still auto-discovers a ``pages/``
folder for the very first request of a fresh server, so a deep link such as ``/predict`` would show
file names instead of this navigation.
"""

import streamlit as st

st.set_page_config(page_title="cxr: chest X-ray classifier", page_icon=":material/radiology:", layout="wide")

PAGES = [
    st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("app_pages/data.py", title="Data", icon=":material/dataset:"),
    st.Page("app_pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("app_pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
    st.Page("app_pages/predict.py", title="Predict", icon=":material/radiology:"),
]

navigation = st.navigation(PAGES)
navigation.run()
