"""Streamlit pieces the pages share: cached model loading and the checkpoint status lines."""

from __future__ import annotations

import hashlib
from pathlib import Path

import streamlit as st

from apps import demo_models as dm


@st.cache_resource(show_spinner="Loading the model ...", max_entries=8)
def _load(key: str, path: str, mtime: float):
    """One load per checkpoint file version (``mtime`` is part of the key: a retrained file reloads)."""
    return dm.load_task(key, path)


def load_model(key: str):
    """The task for ``key`` (loaded once per process), or ``None`` when there is no checkpoint."""
    path = dm.find_checkpoint(key)
    if path is None:
        return None
    return _load(key, str(path), path.stat().st_mtime)


def model_token(key: str) -> str:
    """Identifies the checkpoint file version, for ``st.cache_data`` keys."""
    path = dm.find_checkpoint(key)
    return f"{key}:{path}:{path.stat().st_mtime if path else 0}"


def show_missing(keys: list[str]) -> None:
    """Say which checkpoints are missing and how to make them."""
    missing = [k for k in keys if dm.find_checkpoint(k) is None]
    if not missing:
        return
    names = ", ".join(dm.DEMO_MODELS[k].title for k in missing)
    lines = "\n".join(dm.train_command(k) for k in missing)
    st.warning(
        f"No checkpoint for: {names} (looked in `{dm.checkpoint_dir()}`). Train the quick versions with "
        "`make demo`, or one by one:"
    )
    st.code(lines, language="bash")


def show_load_error(key: str, what: str, exc: Exception) -> None:
    """A checkpoint that fails to load (e.g. from another version): why, and how to retrain; no traceback."""
    st.error(
        f"Could not load {what}: {type(exc).__name__}: {exc}. "
        f"Retrain it with `{dm.train_command(key)} --force`."
    )


def upload_or_stop(label: str, key: str, help_text: str, prompt: str):
    """The uploaded file; until there is one, ``prompt`` and stop the page here."""
    uploaded = st.file_uploader(label, key=key, help=help_text)
    if uploaded is None:
        st.info(prompt)
        st.stop()
    return uploaded


def checkpoint_caption(key: str, limit: int = 8) -> None:
    """Which checkpoint this is and its test figures from the JSON beside it."""
    path = dm.find_checkpoint(key)
    info = dm.read_metrics(key)
    where = f"`{path.name}` in `{path.parent}`" if path else "none"
    if info is None:
        st.caption(f"Checkpoint {where}; no test figures recorded (run `{dm.train_command(key)}`).")
        return
    extra = " (smoke run: a plumbing check, not a trained model)" if info.get("smoke") else ""
    st.caption(
        f"Checkpoint {where}, config `{info.get('config', '?')}`{extra}. Test figures: "
        f"{dm.format_metrics(info, dm.DEMO_MODELS[key].headline, limit)}."
    )


def digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def show_notes(notes: list[str]) -> None:
    if notes:
        st.info("Converted on upload: " + "; ".join(notes) + ".")


def file_label(path: Path) -> str:
    return path.name
