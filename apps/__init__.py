"""Streamlit demos of the suite (``streamlit run apps/app.py``; ``make demo`` serves them with the shipped weights)."""

import shared.offline  # noqa: F401 - before anything imports albumentations
