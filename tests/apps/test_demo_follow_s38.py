"""The sidebar's checkpoint path says what a file that is no zip archive is, in the words of the CLI's
``--ckpt_path`` check (:func:`shared.backbones.weights.describe_file`); a user's anomaly checkpoint is scored with
the smoothing sigma its fit's config recorded, as ``test`` on it does, and the page says so where it cannot."""

from __future__ import annotations

import shutil

import pytest
import torch

from apps import demo_models as dm
from tests.apps.pages import page as _page
from tests.apps.pages import page_ok as _ok
from tests.apps.pages import texts as _texts

OWN_PATH = "own_path_medical_unet"
WHERE = "Checkpoints are e.g. `lightning_logs/<domain>/<config>/checkpoints/last.ckpt`."


# --------------------------------------------------------------- 1: a .ckpt that is no zip archive


def _not_zip_files(folder, real_checkpoint) -> dict:
    """{path: what the page must call it} for files named .ckpt that torch.save did not write as a zip."""
    empty = folder / "empty.ckpt"
    empty.write_bytes(b"")
    text = folder / "notes.ckpt"
    text.write_text("hello, this is no checkpoint\n")
    legacy = folder / "legacy.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, legacy, _use_new_zipfile_serialization=False)
    truncated = folder / "truncated.ckpt"  # e.g. a download that stopped half-way
    data = real_checkpoint.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return {
        empty: "an empty file",
        text: "a text file (it starts 'hello, this is no checkpoint')",
        legacy: "a Python pickle (torch.save's legacy format before its zip archives, or truncated)",
        truncated: "a zip archive, truncated or not written by torch.save",
    }


def test_a_ckpt_that_is_no_zip_archive_is_said_what_it_is_in_the_sidebar(demo_env, tmp_path):
    """The page said "not a zip archive as torch.save writes" for all of these, where the CLI's --ckpt_path
    check says what the file is."""
    at = _ok(_page("medical"))
    for path, what in _not_zip_files(tmp_path, demo_env["checkpoints"] / "medical_unet.ckpt").items():
        at.text_input(key=OWN_PATH).set_value(str(path)).run()
        assert not at.exception, path
        assert [e.value for e in at.sidebar.error] == [
            f"`{path}`: not a PyTorch Lightning checkpoint: {what}. {WHERE}"
        ]
        assert at.title  # the page goes on with its own model


def test_a_ckpt_the_server_cannot_read_is_a_sidebar_message_not_a_traceback(demo_env, tmp_path, monkeypatch):
    """``zipfile.is_zipfile`` says False for a file it may not open; the description then opens it again."""
    from apps import page_common as pc

    locked = tmp_path / "locked.ckpt"
    locked.write_bytes(b"x")

    def refused(path, cause=None):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(pc, "describe_file", refused)
    at = _ok(_page("medical"))
    at.text_input(key=OWN_PATH).set_value(str(locked)).run()
    assert not at.exception
    assert _texts(at.sidebar.error) == (
        f"`{locked}`: not a PyTorch Lightning checkpoint: it cannot be read (Permission denied). {WHERE}"
    )


# ------------------------------------------------------- 2: the anomaly checkpoint's own smoothing sigma


@pytest.fixture(scope="module")
def anomaly_checkpoints(demo_env, tmp_path_factory):
    """The tiny anomaly checkpoint (written outside the CLI: no recorded config) and copies whose recorded fit
    config (``suite_config``, as the CLI writes it) set sigma 0 and 2.5: the demo config's is 1."""
    folder = tmp_path_factory.mktemp("anomaly_sigma")
    plain = folder / "plain.ckpt"
    shutil.copy(demo_env["checkpoints"] / "driving_anomaly.ckpt", plain)
    checkpoint = torch.load(plain, map_location="cpu", weights_only=True)
    assert "suite_config" not in checkpoint
    recorded = {}
    for sigma in (0.0, 2.5):
        path = folder / f"sigma_{sigma:g}.ckpt"
        torch.save({**checkpoint, "suite_config": f"model:\n  score_smoothing: {sigma}\n"}, path)
        recorded[sigma] = path
    return plain, recorded


def test_an_anomaly_checkpoint_is_scored_with_the_sigma_its_fit_recorded(anomaly_checkpoints):
    """The demo set the shipped config's sigma (1) on every anomaly checkpoint: one fitted with another was
    scored differently in the page than by ``test``."""
    plain, recorded = anomaly_checkpoints
    for sigma, path in recorded.items():
        task = dm.load_task("driving_anomaly", path)
        assert (task.score_smoothing, task.fit_score_smoothing) == (sigma, sigma)
        assert dm.score_smoothing_sentence(task) == ""
    task = dm.load_task("driving_anomaly", plain)  # not recorded: the demo config's, as before
    assert (task.score_smoothing, task.fit_score_smoothing) == (1.0, None)
    assert dm.score_smoothing_sentence(task) == (
        "Anomaly scores smoothed with sigma 1 px, the demo config's: the checkpoint does not record the sigma "
        "its fit used."
    )
    task.score_smoothing = 0.5  # set otherwise than the fit's
    task.fit_score_smoothing = 2.0
    assert dm.score_smoothing_sentence(task) == "Anomaly scores smoothed with sigma 0.5 px, not its fit's 2."


def test_the_page_says_which_sigma_it_uses_only_where_the_checkpoint_does_not_record_it(
    demo_env, anomaly_checkpoints
):
    plain, recorded = anomaly_checkpoints
    at = _ok(_page("driving"))
    assert "smoothed with sigma" not in _texts(at.caption)  # the demo's own weights: no note
    at.text_input(key="own_path_driving_anomaly").set_value(str(plain)).run()
    _ok(at)
    captions = [c.value for c in at.caption if f"Your checkpoint `{plain}`" in c.value]
    assert len(captions) == 1
    assert captions[0].endswith(
        "Anomaly scores smoothed with sigma 1 px, the demo config's: the checkpoint does not record the sigma "
        "its fit used."
    )
    at.text_input(key="own_path_driving_anomaly").set_value(str(recorded[0.0])).run()
    _ok(at)
    assert f"Your checkpoint `{recorded[0.0]}`" in _texts(at.caption)
    assert "smoothed with sigma" not in _texts(at.caption)
