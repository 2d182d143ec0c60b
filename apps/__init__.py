"""Streamlit demos of the suite (``streamlit run apps/app.py``; ``make demo`` prepares checkpoints first)."""
