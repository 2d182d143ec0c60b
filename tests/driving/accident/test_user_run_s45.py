"""What a user's first accident run prints (session 45): a dropped clip's warning is the suite's own
``LabelWarning: ...`` line when Lightning calls ``setup``, and the counts read as counted (1 clip, 1 frame)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning_fabric.utilities.warnings import _is_path_in_lightning
from pytorch_lightning.profilers import PassThroughProfiler
from pytorch_lightning.trainer.call import _call_lightning_datamodule_hook
from safetensors import safe_open

import domains.driving.accident.data as accident_data
from domains.driving.accident.data import AccidentDataModule
from domains.driving.accident.model import AccidentAnticipator
from domains.driving.accident.readers import AccidentClip, _too_short
from domains.driving.accident.task import AccidentTask
from domains.driving.formats import LabelWarning
from tests.driving.accident.layouts import ccd_line, write_accident_clips, write_clip_frames


def module(root: Path, **kwargs) -> AccidentDataModule:
    settings = {"data_path": str(root), "image_size": (12, 96), "batch_size": 3, "num_workers": 0}
    return AccidentDataModule(**{**settings, **kwargs})


def test_a_dropped_clip_of_the_ccd_layout_warns_from_the_data_module_not_from_lightning(tmp_path):
    """Lightning's warning format, installed when the CLI imports it, prints a warning attributed to one of its
    own files as ``.../pytorch_lightning/trainer/call.py:199: <message>``: the default synthetic layout's
    dropped clips read as Lightning's complaint (the npz reader's said ``LabelWarning: ...``)."""
    root = write_accident_clips(
        tmp_path / "clips", {"crash": 4, "near_miss": 3, "normal": 3}, n_frames=12, toa=7
    )
    lines = (root / "Crash-1500.txt").read_text().splitlines()
    lines[1] = ccd_line("000001", 11, 7)  # 11 labels for 12 frames
    (root / "Crash-1500.txt").write_text("\n".join(lines) + "\n")
    trainer = SimpleNamespace(datamodule=module(root), profiler=PassThroughProfiler())
    with pytest.warns(LabelWarning, match=r"label_count: 1 \(.*Crash-1500.txt:2") as record:
        _call_lightning_datamodule_hook(trainer, "setup", stage=None)  # as Lightning calls it; every split
    (dropped,) = [w for w in record if "label_count" in str(w.message)]
    assert not _is_path_in_lightning(Path(dropped.filename))
    assert Path(dropped.filename) == Path(accident_data.__file__)


def test_one_own_clip_is_said_as_one_clip(tmp_path, caplog):
    root = write_accident_clips(
        tmp_path / "clips", {"crash": 2, "near_miss": 1, "normal": 1}, n_frames=12, toa=7
    )
    write_clip_frames(tmp_path / "mine", 12)  # mine/image_2/*.jpg: one clip
    dm = module(root, predict_path=str(tmp_path / "mine"), predict_fps=10)
    with caplog.at_level(logging.INFO):
        dm.setup("predict")
    assert "--data.predict_path: 1 clip, read at 10 fps" in caplog.text


def test_a_one_frame_clip_is_said_as_one_frame():
    assert _too_short(1, 2) == "clip has 1 frame, the minimum is 2"
    assert _too_short(0, 2) == "clip has 0 frames, the minimum is 2"


@pytest.mark.parametrize(
    ("backbone", "kwargs", "weights", "prefix"),
    [
        ("mobilenet_v3_large", {}, "driving_detection", "detector.backbone.body."),  # README's transfer line
        (
            "unet_encoder",
            {"channels": [24, 48, 96, 192, 384]},
            "driving_anomaly",
            "segmenter.backbone.encoder.",
        ),
    ],
)
def test_the_shipped_detector_and_segmenter_backbones_transfer_whole(backbone, kwargs, weights, prefix):
    """Issue #18: transfer from the suite's own detector or segmenter is one option; the prefixes the README
    and ``--model.pretrained_prefix``'s help name load every tensor of the frame backbone."""
    path = Path(__file__).resolve().parents[3] / "apps" / "weights" / f"{weights}.safetensors"
    network = AccidentAnticipator(backbone=backbone, backbone_kwargs=kwargs, input_size=(64, 96))
    AccidentTask(network=network, pretrained_backbone=str(path), pretrained_prefix=prefix)
    own = network.backbone.state_dict()
    with safe_open(str(path), "pt") as f:
        names = [name for name in f.keys() if name.startswith(prefix)]  # noqa: SIM118 (no __iter__)
        shipped = {name[len(prefix) :]: f.get_tensor(name) for name in names}
    assert set(own) == set(shipped)
    assert all(torch.equal(own[k], shipped[k].to(own[k].dtype)) for k in own)


def test_own_clips_without_tracks_name_the_shipped_detector():
    """A boxes-only network (quick.yaml) on own videos needs a detector: the message named only a detection
    .ckpt, so a user without one was sent to train a detector although the suite ships one."""
    clip = AccidentClip("drive", "unknown", 10.0, 20, -1, Path("drive.mp4"))
    task = AccidentTask(network=AccidentAnticipator(input_kind="boxes", input_size=(24, 48), hidden=8))
    datamodule = SimpleNamespace(splits={"predict": [clip]}, predicting_own_images=lambda: True)
    task._trainer = SimpleNamespace(datamodule=datamodule)
    with pytest.raises(
        ValueError, match=r"predict_detector \(a road detector's \.ckpt, or the shipped apps/weights/"
    ):
        task.setup("predict")
