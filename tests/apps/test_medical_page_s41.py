"""The medical page's per-rerun work, s41: an upload's maps are turned back to the page's orientation once, in the
cached predict, not on every rerun; the weights' data settings (a NIfTI's intensity percentiles, an accident
model's frame rate) come from one cached header read per checkpoint version."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from apps import demo_models as dm
from apps import uploads as up
from domains.medical.volumes import trained_percentiles
from tests.apps import samples as S
from tests.apps.pages import image_captions, page_ok, upload_on

pytestmark = pytest.mark.usefixtures("one_thread")

RAS = np.eye(4)  # the page shows it turned half a turn from the slice training cuts (model_view)


def test_a_rerun_turns_no_map_and_shows_the_same(demo_env, monkeypatch):
    """Moving a slider that changes no input of the model (the range of slices) reran ``from_model`` on every
    map (N samples, mean, entropy) and ``to_model`` plus a digest on the input; now a rerun only looks them up."""
    calls = {"to_model": 0, "from_model": 0}
    for name in calls:
        real = getattr(up.MedicalVolume, name)
        monkeypatch.setattr(
            up.MedicalVolume,
            name,
            lambda self, image, _name=name, _real=real: calls.__setitem__(_name, calls[_name] + 1)
            or _real(self, image),
        )
    data = S.nifti(np.random.default_rng(0).random((40, 36, 5)).astype(np.float32) * 1000, affine=RAS)
    assert up.decode_medical(data, "ct.nii").model_view is not None  # its maps are turned back
    at = upload_on("medical", "ct.nii", data)
    page_ok(at)
    assert calls["to_model"] == 1 and calls["from_model"] == 3  # once each: the input in, its three maps out
    shown = image_captions(at)
    before = [img.url for element in at.get("image") for img in element.proto.imgs]
    at.slider(key="medical_slab").set_value((1, 3)).run()
    page_ok(at)
    assert calls == {"to_model": 1, "from_model": 3}, calls  # the rerun turned nothing
    assert image_captions(at) == shown
    assert [img.url for element in at.get("image") for img in element.proto.imgs] == before  # the same pictures


def test_the_checkpoint_header_is_read_once_per_path_and_version(tmp_path, monkeypatch):
    """The medical page read a checkpoint's data settings through a cache of its own and the accident page
    through none (each rerun of a new token read the file again): both read the one cached header."""
    checkpoint = tmp_path / "own.ckpt"
    data = {"data_format": "ccd", "dataset_kwargs": {"percentiles": (5.0, 95.0)}}
    torch.save({"hyper_parameters": {}, "datamodule_hyper_parameters": data}, checkpoint)
    reads = []
    real = dm.read_checkpoint
    monkeypatch.setattr(dm, "read_checkpoint", lambda path: reads.append(str(path)) or real(path))
    for _ in range(2):  # the accident page's frame rate and the checkpoint picker's task check
        assert dm.accident_model_fps(checkpoint) == (10.0, f"CCD clips (checkpoint {checkpoint.name})")
        assert dm.checkpoint_task(checkpoint) is None
    assert reads == [str(checkpoint)]
    for _ in range(2):  # the medical page's intensity percentiles
        assert trained_percentiles(dm.trained_data_settings(checkpoint)) == (5.0, 95.0)
    assert reads == [str(checkpoint)]
    settings = dm.trained_data_settings(checkpoint)
    settings["dataset_kwargs"]["percentiles"] = [1, 2]  # a copy: the cached header stays as read
    assert trained_percentiles(dm.trained_data_settings(checkpoint)) == (5.0, 95.0)
    mtime = checkpoint.stat().st_mtime_ns
    os.utime(checkpoint, ns=(mtime, mtime + 10**9))  # a new version of the file: read again, once
    dm.trained_data_settings(checkpoint), dm.accident_model_fps(checkpoint)
    assert reads == [str(checkpoint)] * 2
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="zip|checkpoint"):  # its reader's own error, as before
        dm.trained_data_settings(tmp_path / "broken.ckpt")
