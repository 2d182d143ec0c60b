"""Streamlit pieces the pages share: cached model loading and the checkpoint status lines."""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import re
import zipfile
from pathlib import Path

import streamlit as st

from apps import demo_models as dm
from apps import uploads as up
from shared.backbones.weights import describe_file

OVERRIDES = "own_checkpoints"  # session state: demo key -> a checkpoint path the user chose
FAILED = "own_checkpoints_failed"  # session state: (path, mtime) of a user checkpoint that did not load -> why
#: ``persist_state`` of the settings a person chooses once (model, source, thresholds, opacity): Streamlit drops a
#: widget's value when it is not drawn, so a page switch reset them. Widgets whose options depend on the image
#: (slices, frames, scenes) are not kept. Uploads are kept by :func:`upload_or_stop`.
KEEP = "session"


@st.cache_resource(show_spinner="Loading the model ...", max_entries=8)
def _load(key: str, path: str, mtime: float):
    """One load per weight file version (``mtime`` is part of the key: a retrained file reloads)."""
    return dm.load_task(key, path)


NOT_A_CHECKPOINT = "not a PyTorch Lightning checkpoint"
#: the only files the sidebar's checkpoint path opens: the path field would otherwise let whoever reaches the page
#: probe any file of the server (``/etc/shadow`` came back "not a PyTorch Lightning checkpoint (not a zip ...)")
CHECKPOINT_SUFFIX = ".ckpt"
WHERE_CHECKPOINTS = "Checkpoints are e.g. `lightning_logs/<domain>/<config>/checkpoints/last.ckpt`."


def checkpoint_error(exc: Exception) -> str:
    """A short reason why a checkpoint cannot be used (:func:`shared.task.check_checkpoint_file` words a file
    of pickled objects without torch's advice to turn the weights-only safety off)."""
    return f"{type(exc).__name__}: {exc}"


def _what_file(path: str) -> str:
    """What a file that is no zip archive is, in the words of the CLI's ``--ckpt_path`` check
    (:func:`describe_file`); one the server may not read (``zipfile.is_zipfile`` says False) is said so."""
    try:
        return describe_file(Path(path))
    except OSError as err:
        return f"it cannot be read ({err.strerror or err})"


def model_path(key: str) -> Path | None:
    """The user's own checkpoint for ``key`` when one was chosen in the sidebar, else the demo's."""
    own = st.session_state.get(OVERRIDES, {}).get(key)
    return Path(own) if own else dm.find_checkpoint(key)


def load_model(key: str):
    """The task for ``key`` (loaded once per file version), or ``None`` when there are no weights.

    A user checkpoint that cannot be loaded (missing, another task, another version) is reported naming the
    file and what it holds, and the page goes on with the demo's own weights."""
    path = model_path(key)
    if path is None:
        return None
    own = st.session_state.get(OVERRIDES, {}).get(key)
    try:
        return _load(key, str(path), path.stat().st_mtime)
    except Exception as exc:
        if not own:
            raise
        message = f"Your checkpoint `{own}` was not loaded: {checkpoint_error(exc)}. Showing the demo model."
        st.error(message)
        # remembered per file version: the sidebar's path would otherwise bring it back, read again, every rerun
        # (a file gone meanwhile: the picker says so itself)
        with contextlib.suppress(OSError):
            st.session_state.setdefault(FAILED, {})[(str(own), Path(own).stat().st_mtime)] = message
        st.session_state[OVERRIDES].pop(key, None)
        default = dm.find_checkpoint(key)
        return None if default is None else _load(key, str(default), default.stat().st_mtime)


def model_token(key: str) -> str:
    """Identifies the weight file version, for ``st.cache_data`` keys."""
    path = model_path(key)
    return f"{key}:{path}:{path.stat().st_mtime if path and path.exists() else 0}"


def logs_dir() -> Path:
    """Where the CLI writes its checkpoints (``lightning_logs/<domain>/<config>/checkpoints``): under
    :func:`apps.demo_models.work_root`, the working directory once the suite is installed."""
    return dm.work_root() / "lightning_logs"


@st.cache_data(ttl=30, show_spinner=False)
def _checkpoints_under_logs(logs: str, keys: tuple[str, ...]) -> tuple[list[str], int]:
    """The checkpoints under ``logs`` (newest 100) that hold the task of one of ``keys``, and how many others
    there are (other tasks, unreadable files): looked up at most every 30 s, not on every rerun, each file read
    once per version (:func:`dm.checkpoint_task`, its tensors left on disk)."""
    found = sorted(Path(logs).glob("**/*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)[:100]
    mine = [p for p in found if any(dm.holds_task(p, key) for key in keys)]
    shown = [str(p.relative_to(dm.ROOT)) if p.is_relative_to(dm.ROOT) else str(p) for p in mine]
    return shown, len(found) - len(mine)


def own_checkpoint_picker(keys: list[str], label: str, route=None, select_key: str | None = None) -> None:
    """Sidebar: use your own checkpoint (a path, or one of ``keys``' tasks found under ``lightning_logs/``)
    instead of the demo model. ``route(path) -> key`` picks which of ``keys`` it replaces (default: the first);
    with several keys the sidebar says which, and a newly given checkpoint selects its model in the page's
    ``select_key`` box (which must come after this call and take its value from the session state alone)."""
    found, others = _checkpoints_under_logs(str(logs_dir()), tuple(keys))
    with st.sidebar.expander(label):
        picked = st.selectbox(
            "A checkpoint under lightning_logs/", ["(none)", *found], key=f"own_pick_{keys[0]}", persist_state=KEEP
        )
        if others:
            st.caption(
                f"{others} other checkpoint{'s' * (others != 1)} under lightning_logs/ (other tasks, or not "
                "readable) left out; a path below is tried whatever it holds."
            )
        typed = st.text_input(
            "or its path", key=f"own_path_{keys[0]}", placeholder="/path/to/last.ckpt", persist_state=KEEP
        )
    overrides = st.session_state.setdefault(OVERRIDES, {})
    for key in keys:
        overrides.pop(key, None)
    path = typed.strip() or (picked if picked != "(none)" else "")
    routed = f"own_routed_{keys[0]}"
    if not path:
        st.session_state.pop(routed, None)  # given again later, it selects its model again
        return
    if not path.lower().endswith(CHECKPOINT_SUFFIX):  # before the file is looked at: the field reads no other file
        st.sidebar.error(
            f"`{path}`: a checkpoint's name ends in `{CHECKPOINT_SUFFIX}` (as Lightning writes it); other files are "
            f"not opened. {WHERE_CHECKPOINTS}"
        )
        return
    if not Path(path).is_file():
        st.sidebar.error(f"No such checkpoint file: `{path}`")
        return
    # checked and routed once per file version, not on every rerun (routing reads the whole checkpoint)
    checked, stamp = f"own_checked_{keys[0]}", (path, Path(path).stat().st_mtime)
    if failed := st.session_state.get(FAILED, {}).get(stamp):  # this version did not load: not tried again
        st.sidebar.error(failed)
        return
    known = st.session_state.get(checked)
    if known is not None and known[0] == stamp:
        key = known[1]
    else:
        # the first check of shared.task.check_checkpoint_file, before torch reads the file
        if not zipfile.is_zipfile(path):
            st.sidebar.error(f"`{path}`: {NOT_A_CHECKPOINT}: {_what_file(path)}. {WHERE_CHECKPOINTS}")
            return
        try:
            key = route(path) if route else keys[0]
        except Exception as exc:  # noqa: BLE001 - an unreadable file: say what it is
            st.sidebar.error(f"`{path}` is not a checkpoint this page can use: {checkpoint_error(exc)}")
            return
        st.session_state[checked] = (stamp, key)
    overrides[key] = path
    if len(keys) > 1:
        st.sidebar.caption(f"Used as the {dm.DEMO_MODELS[key].title}.")
        if select_key and st.session_state.get(routed) != (path, key):  # new: show it; later the user picks
            st.session_state[select_key] = key
        st.session_state[routed] = (path, key)


def show_missing(keys: list[str]) -> None:
    """Say which checkpoints are missing and how to make them."""
    missing = [k for k in keys if model_path(k) is None]
    if not missing:
        return
    names = ", ".join(dm.DEMO_MODELS[k].title for k in missing)
    lines = "\n".join(dm.train_command(k) for k in missing)
    st.warning(
        f"No weights for: {names} (looked in `{dm.shipped_dir()}` and `{dm.checkpoint_dir()}`). Restore the "
        f"shipped weights from git, or train quick versions with `{dm.demo_command('demo-train', '--train')}`, "
        "or one by one:"
    )
    st.code(lines, language="bash")


def show_load_error(key: str, what: str, exc: Exception) -> None:
    """A checkpoint that fails to load (e.g. from another version): why, and how to retrain; no traceback."""
    st.error(
        f"Could not load {what}: {type(exc).__name__}: {exc}. "
        f"Retrain it with `{dm.train_command(key)} --force`."
    )


def upload_or_stop(label: str, key: str, help_text: str, prompt: str) -> tuple[bytes, str, str]:
    """The uploaded file's bytes, name and :func:`digest` (the pages' cache key, hashed once per upload, not on
    every rerun); until there is one, ``prompt`` and stop the page here.

    The last upload is kept in the session state: Streamlit empties a file uploader that was not drawn on a run
    (another page, the other source), and coming back should not ask for the file again. Removing the file in
    the uploader, or the "Forget it" button, drops it."""
    kept = f"{key}_kept"  # (file_id, name, bytes, digest) of the last upload

    def drop() -> None:  # the upload and what was decoded from it
        st.session_state.pop(kept, None)
        st.session_state.pop(_memo_key(key), None)

    def removed_in_uploader() -> None:
        if st.session_state.get(key) is None:
            drop()

    uploaded = st.file_uploader(label, key=key, help=help_text, on_change=removed_in_uploader)
    if uploaded is not None:
        if st.session_state.get(kept, (None,))[0] != uploaded.file_id:
            drop()
            data = uploaded.getvalue()
            st.session_state[kept] = (uploaded.file_id, uploaded.name, data, digest(data))
    elif kept in st.session_state:
        name = st.session_state[kept][1]
        shown, forget = st.columns([4, 1], vertical_alignment="center")
        shown.caption(f"Showing your earlier upload `{name}`; upload another file to replace it.")
        if forget.button("Forget it", key=f"{key}_forget"):
            drop()
            st.rerun()
    if kept not in st.session_state:
        st.info(prompt)
        st.stop()
    _, name, data, data_digest = st.session_state[kept]
    return data, name, data_digest


def _memo_key(upload_key: str) -> str:
    return f"{upload_key}_decoded"


def upload_memo(upload_key: str, what: str, args: tuple, make, max_entries: int = 2, spinner: str | None = None):
    """``make()`` once per ``(what, *args)`` for the upload of :func:`upload_or_stop`'s ``upload_key``, kept in
    this session's state (the ``max_entries`` latest per ``what``), so that a rerun (a seed, a slider) reuses
    the decoded pixels. Not ``st.cache_resource``: that is shared by every session of the server process and
    kept a person's upload for the next visitor; these go with the upload (replaced, removed, forgotten) and
    with the session. Nothing is kept when ``make`` raises."""
    memo = st.session_state.setdefault(_memo_key(upload_key), {})  # {what: {args: value}}, oldest first
    made = memo.setdefault(what, {})
    if args in made:
        made[args] = made.pop(args)  # the newest now
        return made[args]
    with st.spinner(spinner) if spinner else contextlib.nullcontext():
        value = make()
    made[args] = value
    while len(made) > max_entries:
        made.pop(next(iter(made)))
    return value


def per_upload(upload_key: str, is_upload, cache, max_entries: int, spinner: str | None = None, kept: int = 2):
    """Decorator for a page's function of the image or clip shown, ``f(*key, _array)`` (its last argument the
    pixels, the others its key, a digest among them): ``cache`` (``st.cache_data`` / ``st.cache_resource``, its
    ``max_entries``) for an example (no one's data: shared by every session, the demo stays fast), and
    :func:`upload_memo` (its ``kept`` latest) when ``is_upload()``: ``st.cache_*`` is shared by every session of
    the server process, and kept what an upload's pixels gave after its session ended."""

    def wrap(plain):
        shared = cache(max_entries=max_entries, show_spinner=spinner or False)(plain)

        @functools.wraps(plain)
        def pick(*args):
            if not is_upload():
                return shared(*args)
            return upload_memo(upload_key, plain.__name__, args[:-1], lambda: plain(*args), kept, spinner)

        return pick

    return wrap


def readable_network(name: str) -> str:
    """A model card's network name with the keyword dict in it (a card written as ``prob_unet {'channels': [32,
    64, 128, 192], 'latent_dim': 6}``: a Python repr) spelled out: ``prob_unet (channels 32/64/128/192, latent dim
    6)``; an empty one dropped. Text that is no such dict is kept as it is."""

    def spell(match: re.Match) -> str:
        try:
            args = ast.literal_eval(match.group(1))
        except (ValueError, SyntaxError):
            return match.group(0)
        if not isinstance(args, dict):
            return match.group(0)
        parts = [
            f"{str(k).replace('_', ' ')} {'/'.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
            for k, v in args.items()
        ]
        return f" ({', '.join(parts)})" if parts else ""

    return re.sub(r" ?(\{[^{}]*\})", spell, name)


def training_data_sentence(key: str, path: Path | str | None) -> str:
    """What the weights at ``path`` learnt from, as the page says it: the model card's ``data`` (shipped
    weights) or the checkpoint's own data settings (:func:`dm.training_data`), so one's own weights say theirs."""
    data = dm.training_data(key, path) if path is not None else None
    return f"Training data: {data}." if data else "Training data: not recorded with these weights."


def checkpoint_caption(key: str, limit: int = 8) -> None:
    """Which weights these are, what they learnt from and their test figures (model card, or the JSON beside
    a local checkpoint)."""
    own = st.session_state.get(OVERRIDES, {}).get(key)
    if own:
        # the anomaly task's smoothing is set at load (load_model: cached, loaded before this caption is drawn)
        smoothing = dm.score_smoothing_sentence(load_model(key)) if key == "driving_anomaly" else ""
        st.caption(
            f"Your checkpoint `{own}`. {training_data_sentence(key, own)} Its test figures: run the CLI's "
            f"`test --ckpt_path {own}`." + (f" {smoothing}" if smoothing else "")
        )
        return
    path = dm.find_checkpoint(key)
    info = dm.read_metrics(key)
    where = f"`{path.name}` in `{path.parent}`" if path else "none"
    trained_on = training_data_sentence(key, path)
    if info is None:
        st.caption(f"Weights {where}; no test figures recorded (run `{dm.train_command(key)}`). {trained_on}")
        return
    if path is not None and path.suffix == ".safetensors":
        st.caption(
            f"Shipped weights {where} ({readable_network(str(info.get('network', '')))}; trained "
            f"{info.get('date', '?')} on {info.get('device', '?')}, model card `{path.with_suffix('.json').name}`). "
            f"{trained_on} Test figures: {dm.format_metrics(info, dm.DEMO_MODELS[key].headline, limit)}."
        )
        return
    extra = " (smoke run: a plumbing check, not a trained model)" if info.get("smoke") else ""
    st.caption(
        f"Checkpoint {where}, config `{info.get('config', '?')}`{extra}. {trained_on} Test figures: "
        f"{dm.format_metrics(info, dm.DEMO_MODELS[key].headline, limit)}."
    )


def below_threshold(best: float, threshold: float, places: int = 2) -> tuple[str, str]:
    """``best`` (a score under ``threshold``) and ``threshold`` written so that they differ: at ``places``
    decimals, or as many more as it takes (a best score of 0.4996 read "no box reaches the threshold 0.50; the
    best score here is 0.50")."""
    for decimals in range(places, 7):
        shown, limit = f"{best:.{decimals}f}", f"{threshold:.{decimals}f}"
        if shown != limit:
            return shown, limit
    return str(best), str(threshold)


def digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def show_notes(notes: list[str]) -> None:
    if notes:
        st.info("Converted on upload: " + "; ".join(notes) + ".")


def decoded_or_stop(name: str, decode):
    """``decode()`` of the upload ``name``, its conversion notes shown; where it fails, the page stops on a
    message: the reader's own words for a file it refuses (:class:`up.UploadError`), the error named for a
    failure no check foresaw (never a traceback)."""
    try:
        decoded = decode()
    except up.UploadError as exc:
        st.error(str(exc))
        st.stop()
    except Exception as exc:  # noqa: BLE001 - a failure no check foresaw: a message, never a traceback
        st.error(f"{name}: could not be decoded ({type(exc).__name__}: {exc})")
        st.stop()
    show_notes(decoded.notes)
    return decoded
