"""Entry point: ``streamlit run streamlit_app.py``. Declares the pages and runs the one asked for.

Kept tiny on purpose: nothing heavy is imported here, so the first page is served in seconds.
"""

import streamlit as st

st.set_page_config(page_title="cxr: chest X-ray classifier", page_icon=":material/radiology:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/dataset:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
    st.Page("pages/predict.py", title="Predict", icon=":material/radiology:"),
]

navigation = st.navigation(PAGES)
navigation.run()
