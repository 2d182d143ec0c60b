"""The suite's Streamlit demo: ``streamlit run apps/app.py`` (``make demo`` serves it with the shipped weights,
``make demo-train`` with locally trained ones)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

# The page scripts live in views/, not pages/: a pages/ folder beside the entry script switches Streamlit to
# its older multipage mode (MPA v1) until st.navigation has run once, so a deep link such as /medical on a
# fresh server would run the page alone, with a sidebar listing raw file names.
PAGES = Path(__file__).resolve().parent / "views"

st.set_page_config(page_title="Applied DL suite", page_icon=":material/biotech:", layout="wide")
page = st.navigation(
    [
        st.Page(PAGES / "home.py", title="Home", icon=":material/home:", default=True),
        st.Page(
            PAGES / "medical.py", title="Medical: lesions", icon=":material/radiology:", url_path="medical"
        ),
        st.Page(
            PAGES / "driving.py", title="Driving: roads", icon=":material/directions_car:", url_path="driving"
        ),
        st.Page(
            PAGES / "accident.py",
            title="Driving: accident risk",
            icon=":material/car_crash:",
            url_path="accident",
        ),
    ]
)
page.run()
