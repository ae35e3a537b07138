"""The app's layout: its pages, the menu every page draws, and the refusal of a page this server does not offer.

Streamlit's multipage convention (streamlit_app.py is Home, pages/*.py are discovered, so a deep link works from
the first request of a fresh server) with Streamlit's own page list switched off (client.showSidebarNavigation =
false) and this menu drawn instead, so labels, icons and which pages appear are the app's to decide. UI code
only; ``app_components`` re-exports these names for the pages.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import streamlit as st

from app_deployment import DEMO_REFUSED_PAGES, demo_mode, demo_refusal, demo_sidebar


@dataclasses.dataclass(frozen=True)
class PageEntry:
    key: str  # the page's name in code: "home", "data", "train", "evaluate", "predict"
    path: str  # relative to streamlit_app.py, as st.page_link / st.switch_page take it
    label: str  # shown in the menu
    icon: str
    summary: str  # one line on Home


PAGES = (
    PageEntry("home", "streamlit_app.py", "Home", ":material/home:", "What this app does and does not."),
    PageEntry("data", "pages/data.py", "Data", ":material/dataset:",
              "Import a data set, look at it, preview augmentation."),
    PageEntry("train", "pages/train.py", "Train", ":material/model_training:",
              "Choose settings, start, follow live, stop, compare runs."),
    PageEntry("evaluate", "pages/evaluate.py", "Evaluate", ":material/analytics:",
              "Report, confusion matrix, ROC/PR, threshold, calibration."),
    PageEntry("predict", "pages/predict.py", "Predict", ":material/radiology:",
              "Drop chest X-rays (JPEG, PNG, DICOM): a plain-language answer and a heat map."),
)
FAVICON = Path(__file__).resolve().parent / "assets" / "favicon.png"  # a file, not a font server: works offline


def page_entry(key: str) -> PageEntry:
    for entry in PAGES:
        if entry.key == key:
            return entry
    raise KeyError(f"unknown page {key!r}; pages are {[entry.key for entry in PAGES]}")


def available_pages() -> tuple[str, ...]:
    """Keys of the pages this server offers, in menu order: every page, less Data and Train on a public demo
    (``CXR_MODE=demo``); the menu and :func:`page_refusal` follow it."""
    refused = DEMO_REFUSED_PAGES if demo_mode() else ()
    return tuple(entry.key for entry in PAGES if entry.key not in refused)


def page_refusal(key: str) -> str | None:
    """Why page ``key`` is refused on this server (shown instead of it, also to a direct link), or ``None``."""
    if key in available_pages():
        return None
    if key in DEMO_REFUSED_PAGES and demo_mode():
        return demo_refusal(page_entry(key).label)
    return f"The {page_entry(key).label} page is not available on this server."


def menu(current: str) -> None:
    """The sidebar menu: one link per available page."""
    with st.sidebar:
        for key in available_pages():
            entry = page_entry(key)
            st.page_link(entry.path, label=entry.label, icon=entry.icon)
    demo_sidebar()


def link_to(key: str, label: str | None = None) -> None:
    """A link to page ``key`` in the page body, drawn only when this server offers that page."""
    if key in available_pages():
        entry = page_entry(key)
        st.page_link(entry.path, label=label or f"Go to the {entry.label} page", icon=entry.icon)


def start_page(key: str) -> None:
    """Page settings (title, offline favicon, wide layout), the menu, and, for a page this server does not
    offer, its refusal instead of the page (``st.stop``)."""
    entry = page_entry(key)
    st.set_page_config(page_title=f"{entry.label} · cxr chest X-ray classifier", page_icon=FAVICON, layout="wide")
    menu(key)
    refusal = page_refusal(key)
    if refusal is not None:
        st.error(refusal, icon=":material/block:")
        st.page_link(PAGES[0].path, label="Go to the Home page", icon=PAGES[0].icon)
        st.stop()
