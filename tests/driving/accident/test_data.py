"""Accident data: readers (synthetic / CCD layout, mp4, UString npz, DoTA), the batch contract, the clip split
and every bad input of issue #18, on tiny clips written by hand in tmp_path."""

from __future__ import annotations

import copy
import json
import logging
import math
import sys
import types
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pytorch_lightning import Trainer

import domains.driving.accident.data as accident_data
from domains.driving.accident.data import (
    AccidentDataModule,
    AccidentDataset,
    collate_clips,
    select_slots,
    split_clips,
)
from domains.driving.accident.model import AccidentAnticipator
from domains.driving.accident.readers import (
    parse_ccd_line,
    read_ccd_layout,
    read_dota,
    read_npz_clips,
)
from domains.driving.accident.task import AccidentTask
from domains.driving.common import read_rgb
from domains.driving.formats import LabelFormatError, LabelWarning
from tests.driving.accident.layouts import (
    H,
    W,
    ccd_line,
    write_accident_clips,
    write_dota_clip,
    write_mp4,
    write_npz_clip,
)

KINDS = {"crash": 4, "near_miss": 3, "normal": 3}


def module(root: Path, **kwargs) -> AccidentDataModule:
    settings = {
        "data_path": str(root),
        "image_size": (12, 96),
        "batch_size": 3,
        "num_workers": 0,
        "max_objects": 4,
    }
    return AccidentDataModule(**{**settings, **kwargs})


@pytest.fixture
def clips_root(tmp_path) -> Path:
    return write_accident_clips(tmp_path / "clips", KINDS, n_frames=12, toa=7)


# ------------------------------------------------------------------------------------------ batch contract


def test_batch_has_the_spec_keys_shapes_and_dtypes(clips_root):
    dm = module(clips_root)
    dm.setup()
    batch = collate_clips([dm.datasets["train"][i] for i in range(len(dm.datasets["train"]))])
    b, t, n = len(dm.datasets["train"]), 12, 4
    expected = {
        "frames": ((b, t, 3, 12, 96), torch.float32),
        "boxes": ((b, t, n, 4), torch.float32),
        "box_scale": ((b, 4), torch.float32),
        "box_valid": ((b, t, n), torch.bool),
        "track_ids": ((b, n), torch.long),
        "frame_valid": ((b, t), torch.bool),
        "toa": ((b,), torch.long),
        "fps": ((b,), torch.float32),
        "involved": ((b, n), torch.bool),
        "ttc": ((b, t), torch.float32),
    }
    assert set(batch) == {*expected, "kind", "clip_id"}
    for key, (shape, dtype) in expected.items():
        assert tuple(batch[key].shape) == shape and batch[key].dtype == dtype, key
    assert 0.0 <= batch["frames"].min() and batch["frames"].max() <= 1.0
    assert batch["frame_valid"].all() and torch.allclose(batch["fps"], torch.full((b,), 10.0))
    for i, kind in enumerate(batch["kind"]):
        crash = kind == "crash"
        assert batch["toa"][i] == (7 if crash else -1)
        # involved: track 1 (slot 0) on crash clips only; TTC defined before contact on crash clips only
        assert batch["involved"][i].tolist() == [crash, False, False, False]
        assert torch.isfinite(batch["ttc"][i]).sum() == (7 if crash else 0)
        if crash:
            assert batch["ttc"][i, 0] == pytest.approx(0.7)
    assert sorted(set(batch["kind"])) == ["crash", "near_miss", "normal"]
    assert all(isinstance(c, str) for c in batch["clip_id"])


def test_slots_are_fixed_per_clip_most_visible_then_nearest(clips_root):
    clip = read_ccd_layout(clips_root, require_json=True)[0]
    # tracks 1 (z 8 m) and 5 (z 30 m) are visible in all 12 frames, 2 only in 6: the tie goes to the nearer one
    assert select_slots(clip, 19) == [1, 5, 2]
    assert select_slots(clip, 2) == [1, 5]
    item = AccidentDataset([clip], max_objects=4)[0]
    assert item["track_ids"].tolist() == [1, 5, 2, -1]
    # a slot never changes object: slot k's boxes are track k's boxes in every frame; the empty slot stays empty
    for k, tid in enumerate([1, 5, 2]):
        track = clip.tracks[tid]
        seen = np.isfinite(track[:, 0])
        assert item["box_valid"][:, k].numpy().tolist() == seen.tolist()
        assert np.allclose(item["boxes"][seen, k].numpy(), track[seen])
    assert not item["box_valid"][:, 3].any() and item["box_valid"][:6, 2].sum() == 0


def test_boxes_are_scaled_with_the_resize(clips_root):
    clip = read_ccd_layout(clips_root, require_json=True)[0]
    native = AccidentDataset([clip], image_size=None, max_objects=3)[0]
    resized = AccidentDataset([clip], image_size=(12, 96), max_objects=3)[0]  # x * 2, y * 0.5
    assert native["frames"].shape[-2:] == (H, W) and resized["frames"].shape[-2:] == (12, 96)
    assert native["boxes"][0, 0].tolist() == [2.0, 8.0, 6.0, 12.0]
    assert resized["boxes"][0, 0].tolist() == [4.0, 4.0, 12.0, 6.0]


def test_boxes_only_training_clips_skip_the_frames_but_scale_the_boxes_alike(clips_root, monkeypatch):
    clip = read_ccd_layout(clips_root, require_json=True)[0]
    with_frames = AccidentDataset([clip], image_size=(12, 96), max_objects=3)[0]
    monkeypatch.setattr(AccidentDataset, "_frames", lambda *a: pytest.fail("a frame was decoded"))
    without = AccidentDataset([clip], image_size=(12, 96), max_objects=3, decode_frames=False)[0]
    assert "frames" not in without and torch.equal(without["boxes"], with_frames["boxes"])
    clip.size = None  # no annotated size: read from the first image's header
    assert torch.equal(
        AccidentDataset([clip], (12, 96), 3, decode_frames=False)[0]["boxes"], with_frames["boxes"]
    )
    # the data module: train, validation and test go without frames; predict decodes them (for its GIFs)
    monkeypatch.undo()
    dm = module(clips_root, train_frames=False)
    dm.setup()
    assert not any(dm.datasets[name].decode_frames for name in ("train", "val", "test"))
    assert dm.predict_dataloader().dataset.decode_frames
    assert dm.predict_dataloader().dataset.clips == dm.datasets["test"].clips


def test_boxes_only_validation_decodes_no_image_and_scores_alike(clips_root, monkeypatch):
    """A boxes-only network's validation read every JPEG it never looks at (~80 % of a validation epoch);
    without them its metrics are the same."""
    reads = []
    monkeypatch.setattr(accident_data, "read_rgb", lambda path: reads.append(path) or read_rgb(path))
    torch.manual_seed(0)
    network = AccidentAnticipator(input_kind="boxes", input_size=(24, 48), hidden=8)
    metrics = {}
    for train_frames in (False, True):
        dm = module(clips_root, image_size=(24, 48), train_frames=train_frames, val_fraction=0.4)
        trainer = Trainer(
            accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False,
        )  # fmt: skip
        task = AccidentTask(network=copy.deepcopy(network))  # validation calibrates the network's buffers
        reads.clear()
        trainer.validate(task, datamodule=dm, verbose=False)
        metrics[train_frames] = task.last_metrics["val"]
        assert bool(reads) == train_frames, len(reads)
    assert metrics[False] and metrics[False].keys() == metrics[True].keys()
    for key, value in metrics[True].items():
        assert metrics[False][key] == pytest.approx(value, abs=1e-6), key


def test_collate_pads_to_the_longest_clip(clips_root):
    clip = read_ccd_layout(clips_root, require_json=True)[0]
    long = AccidentDataset([clip], max_objects=3)[0]
    short = {k: (v[:5] if k in ("frames", "boxes", "box_valid", "ttc") else v) for k, v in long.items()}
    batch = collate_clips([short, long])
    assert batch["frames"].shape[:2] == (2, 12)
    assert batch["frame_valid"].sum(1).tolist() == [5, 12]
    assert not batch["box_valid"][0, 5:].any() and torch.isnan(batch["ttc"][0, 5:]).all()
    assert (batch["frames"][0, 5:] == 0).all()


def test_training_windows_start_at_or_before_the_contact(clips_root):
    clips = read_ccd_layout(clips_root, require_json=True)
    crash = next(c for c in clips if c.kind == "crash")
    ds = AccidentDataset([crash], max_objects=3, clip_length=4, train=True)
    torch.manual_seed(0)
    toas = {ds[0]["toa"] for _ in range(80)}
    # contact at frame 7 of 12: windows start at 0..7, so the relative contact is 0..7 (past the end from 4 on)
    assert toas <= set(range(8)) and {0, 7} <= toas
    assert ds[0]["frames"].shape[0] == 4
    evaluation = AccidentDataset([crash], max_objects=3, clip_length=4, train=False)[0]
    assert evaluation["frames"].shape[0] == 12 and evaluation["toa"] == 7  # evaluation: whole clips


def test_hflip_mirrors_training_frames_and_boxes_only(clips_root):
    clip = read_ccd_layout(clips_root, require_json=True)[0]
    plain = AccidentDataset([clip], image_size=(12, 96), max_objects=3)[0]
    flipped = AccidentDataset([clip], image_size=(12, 96), max_objects=3, train=True, hflip=1.0)[0]
    valid = plain["box_valid"]
    assert valid.any() and torch.equal(flipped["box_valid"], valid)
    # first box (4, 4, 12, 6) in a 96-wide frame: x1' = 96 - 12, x2' = 96 - 4, y unchanged
    assert flipped["boxes"][0, 0].tolist() == [84.0, 4.0, 92.0, 6.0]
    assert torch.equal(flipped["boxes"][valid][:, [0, 2]], 96 - plain["boxes"][valid][:, [2, 0]])
    assert (flipped["boxes"][~valid] == 0).all()  # empty slots stay empty
    assert torch.equal(flipped["frames"], plain["frames"].flip(-1))
    # boxes-only training samples (no frames decoded) mirror the same way
    boxes_only = AccidentDataset([clip], (12, 96), 3, train=True, hflip=1.0, decode_frames=False)[0]
    assert torch.equal(boxes_only["boxes"], flipped["boxes"])
    # evaluation is never flipped, and hflip 0 never flips
    assert torch.equal(AccidentDataset([clip], (12, 96), 3, hflip=1.0)[0]["boxes"], plain["boxes"])
    assert torch.equal(AccidentDataset([clip], (12, 96), 3, train=True)[0]["boxes"], plain["boxes"])
    with pytest.raises(ValueError, match="hflip must be a probability"):
        AccidentDataset([clip], hflip=1.5)


# ----------------------------------------------------------------------------------------------- split


def test_split_is_by_clip_stratified_and_printed(clips_root, caplog):
    dm = module(clips_root, val_fraction=0.25, test_fraction=0.25)
    with caplog.at_level(logging.INFO):
        dm.setup()
    ids = {name: [c.clip_id for c in clips] for name, clips in dm.splits.items()}
    everything = [i for v in ids.values() for i in v]
    assert len(everything) == len(set(everything)) == sum(KINDS.values())  # no clip in two splits
    for name, clips in dm.splits.items():
        assert {c.kind for c in clips} == {"crash", "near_miss", "normal"}, name
    assert "| split | clips | positives | near misses | ordinary |" in caplog.text
    assert caplog.text.count("| split |") == 1
    dm.setup()  # once only
    assert caplog.text.count("| split |") == 1
    again = module(clips_root, val_fraction=0.25, test_fraction=0.25)
    again.setup()
    assert {k: [c.clip_id for c in v] for k, v in again.splits.items()} == ids  # seeded, stable


def test_split_keeps_a_fixed_test_subset(tmp_path):
    for i in range(6):
        write_npz_clip(tmp_path / "training" / f"tr{i}.npz", positive=i % 2 == 0, toa=np.array([3]))
    for i in range(2):
        write_npz_clip(tmp_path / "testing" / f"te{i}.npz", positive=i == 0, toa=np.array([3]))
    splits = split_clips(read_npz_clips(tmp_path), 0.34, 0.2)
    assert sorted(c.clip_id for c in splits["test"]) == ["te0", "te1"]
    assert all(c.clip_id.startswith("tr") for c in splits["train"] + splits["val"]) and splits["val"]


# ------------------------------------------------------------------------------------------------- CCD


def test_ccd_line_with_commas_in_the_bracket():
    line = parse_ccd_line("000007,[0, 0, 0,0, 1, 1],12,wtcn3bmDMqE,Night,Rainy,No", "Crash-1500.txt", 3)
    assert line.vid == "000007" and line.labels == [0, 0, 0, 0, 1, 1] and line.toa == 4
    assert (line.start_frame, line.source, line.timing, line.weather, line.ego_involved) == (
        "12", "wtcn3bmDMqE", "Night", "Rainy", "No",
    )  # fmt: skip
    with pytest.raises(LabelFormatError, match=r"Crash-1500.txt:3: expected 5 fields after the label list"):
        parse_ccd_line("000007,[0, 1],12,src,Day", "Crash-1500.txt", 3)
    with pytest.raises(LabelFormatError, match=r":4: crash clip '000008' has no frame labelled 1"):
        parse_ccd_line("000008,[0, 0],0,src,Day,Normal,Yes", "Crash-1500.txt", 4)
    with pytest.raises(LabelFormatError, match=r":5: expected 'vid,\[l0, l1"):
        parse_ccd_line("000009 0 0 1", "Crash-1500.txt", 5)


@pytest.fixture
def ccd_root(tmp_path) -> Path:
    root = tmp_path / "ccd"
    ok = write_mp4(root / "videos/Crash-1500/000001.mp4", 10, 10.0)
    ok = ok and write_mp4(root / "videos/Normal/000002.mp4", 10, 10.0)
    if not ok:
        pytest.skip("OpenCV has no mp4v encoder here: cannot write a test video")
    (root / "Crash-1500.txt").write_text(ccd_line("000001", 10, 6, ego="No") + "\n")
    return root


def test_ccd_mp4_clips_are_read_back(ccd_root):
    clips = {c.clip_id: c for c in read_ccd_layout(ccd_root, strict=True)}
    assert clips["000001"].kind == "crash" and clips["000001"].toa == 6 and clips["000001"].fps == 10.0
    assert clips["000002"].kind == "normal" and clips["000002"].toa == -1
    batch = collate_clips([AccidentDataset(list(clips.values()), image_size=(16, 32))[i] for i in range(2)])
    assert batch["frames"].shape == (2, 10, 3, 16, 32)
    # CCD has no boxes: every slot empty
    assert not batch["box_valid"].any() and (batch["track_ids"] == -1).all()
    assert torch.isnan(batch["ttc"]).all()


def test_ccd_normal_clips_numbered_like_crash_clips_are_kept_and_an_unlabelled_crash_is_counted(ccd_root):
    """Real CCD numbers Crash-1500/ and Normal/ both from 000001: a Normal clip sharing a crash clip's id was
    dropped without a count (half of CCD's negatives), and so was a crash video with no annotation line."""
    import shutil

    shutil.copy(ccd_root / "videos/Normal/000002.mp4", ccd_root / "videos/Normal/000001.mp4")
    shutil.copy(ccd_root / "videos/Crash-1500/000001.mp4", ccd_root / "videos/Crash-1500/000009.mp4")
    with pytest.warns(LabelWarning, match=r"missing_label: 1 .*000009: crash clip '000009' has no readable line in Crash"):
        clips = {c.clip_id: c for c in read_ccd_layout(ccd_root)}
    assert {k: c.kind for k, c in clips.items()} == {"000001": "crash", "normal_000001": "normal", "000002": "normal"}
    assert clips["normal_000001"].video == ccd_root / "videos/Normal/000001.mp4"


def test_ccd_data_module_reads_frame_folders(clips_root):
    # the synthetic set is CCD-compatible: the ccd reader takes it (the JSON extras too when present)
    dm = module(clips_root, data_format="ccd", val_fraction=0.25, test_fraction=0.25)
    dm.setup()
    assert sum(len(v) for v in dm.splits.values()) == 10


# ------------------------------------------------------------------------------------------------- npz


def test_npz_features_batch(tmp_path):
    write_npz_clip(tmp_path / "training" / "b001_000001.npz", n_frames=10, positive=True)
    write_npz_clip(tmp_path / "training" / "b001_000002.npz", n_frames=10, positive=False)
    write_npz_clip(tmp_path / "testing" / "b002_000003.npz", n_frames=10, positive=True, toa=np.array([4]))
    clips = {c.clip_id: c for c in read_npz_clips(tmp_path, fps=20.0, toa=8, strict=True)}
    assert clips["b001_000001"].toa == 8 and clips["b002_000003"].toa == 4 and clips["b001_000002"].toa == -1
    assert clips["b002_000003"].subset == "test" and clips["b001_000001"].subset == "train"
    ds = AccidentDataset(
        list(clips.values()), image_size=(360, 640), max_objects=19, feature_image_size=(720, 1280)
    )
    batch = collate_clips([ds[i] for i in range(3)])
    assert "frames" not in batch
    assert batch["features"].shape == (3, 10, 8) and batch["object_features"].shape == (3, 10, 19, 8)
    assert batch["fps"].tolist() == [20.0] * 3
    # slots: det object 0 (every frame) then object 3 (first half); boxes halved with the 1280x720 -> 640x360 resize
    assert batch["track_ids"][0, :3].tolist() == [0, 3, -1]
    assert batch["boxes"][0, 0, 0].tolist() == [50.0, 100.0, 150.0, 200.0]
    assert batch["box_valid"][0, :, 1].tolist() == [True] * 5 + [False] * 5
    with np.load(tmp_path / "training" / "b001_000001.npz") as raw:
        assert torch.allclose(batch["features"][0], torch.from_numpy(raw["data"][:, 0]))
        assert torch.allclose(batch["object_features"][0, :, 1], torch.from_numpy(raw["data"][:, 4]))


def test_npz_data_module_dad_defaults(tmp_path):
    for i in range(6):
        write_npz_clip(tmp_path / f"clip{i}.npz", n_frames=100, dim=4, positive=i < 3)
    dm = AccidentDataModule(data_format="npz", data_path=str(tmp_path), num_workers=0, val_fraction=0.34,
                            test_fraction=0.34)  # fmt: skip
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        dm.setup()
    assert not [w for w in seen if "CCD clips are" in str(w.message)]  # no Crash-1500.txt: DAD, said nothing of
    clips = [c for v in dm.splits.values() for c in v]
    assert {c.toa for c in clips if c.kind == "crash"} == {90} and {c.fps for c in clips} == {20.0}
    batch = next(iter(dm.train_dataloader()))
    assert batch["features"].shape[-1] == 4 and batch["toa"].dtype == torch.long


# ------------------------------------------------------------------------------------------------ DoTA


def test_dota_json_reading(tmp_path):
    write_dota_clip(tmp_path, "0qfbmt4G8Rw_001060", n_frames=8, anomaly_start=5)
    (clip,) = read_dota(tmp_path, strict=True)
    assert (clip.clip_id, clip.kind, clip.toa, clip.fps, clip.n_frames) == (
        "0qfbmt4G8Rw_001060",
        "crash",
        5,
        10.0,
        8,
    )
    assert clip.scenario == "ego: leave_to_right" and clip.subset == "train"
    item = AccidentDataset([clip], image_size=None, max_objects=3)[0]
    assert item["frames"].shape == (8, 3, 36, 64)
    assert item["track_ids"].tolist() == [239, 7, -1]
    assert item["box_valid"][:, 1].tolist() == [False] * 6 + [True] * 2
    assert item["boxes"][7, 1].tolist() == [40.0, 5.0, 60.0, 30.0]


# ------------------------------------------------------------------------------------------ bad input


def test_clip_shorter_than_clip_length(clips_root):
    """clip_length is the training window: a shorter training clip is bad input; validation and test keep theirs
    (whole clips), so their metrics do not change with it."""
    with pytest.raises(LabelFormatError, match=r"image_2: clip has 12 frames, fewer than the training window --data.clip_length 20"):
        module(clips_root, clip_length=20, strict=True).setup()
    dm = module(clips_root, clip_length=20)
    with pytest.warns(LabelWarning, match=r"training split: dropped too_short: 4 "):
        dm.setup()
    assert (len(dm.splits["train"]), len(dm.splits["val"]), len(dm.splits["test"])) == (0, 3, 3)


def test_frames_of_mixed_sizes(clips_root):
    """Reading leaves such a clip out (test_accident_audit_s32); one changed after reading is refused when decoded."""
    frame = clips_root / "videos/Crash-1500/000000/image_2/000003.jpg"
    clip = read_ccd_layout(clips_root, require_json=True)[0]
    cv2.imwrite(str(frame), np.zeros((H + 2, W, 3), np.uint8))
    with pytest.raises(LabelFormatError, match=rf"{frame}: frame is {W}x{H + 2} but frame 000000.jpg of the same clip"):
        AccidentDataset([clip])[0]


def test_missing_and_inconsistent_frame_rate(clips_root, ccd_root):
    path = clips_root / "annotations/000004.json"
    meta = json.loads(path.read_text())
    del meta["fps"]
    path.write_text(json.dumps(meta))
    with pytest.raises(LabelFormatError, match=r"000004.json: missing or invalid frame rate None"):
        read_ccd_layout(clips_root, strict=True, require_json=True)
    write_mp4(ccd_root / "videos/Normal/000002.mp4", 10, 25.0)
    with pytest.raises(
        LabelFormatError, match=r"000002.mp4: frame rate 25 is inconsistent with CCD's 10 fps"
    ):
        read_ccd_layout(ccd_root, strict=True)


def test_annotation_line_with_the_wrong_number_of_labels(clips_root):
    text = (clips_root / "Crash-1500.txt").read_text().splitlines()
    text[1] = ccd_line("000001", 11, 7)
    (clips_root / "Crash-1500.txt").write_text("\n".join(text) + "\n")
    with pytest.raises(
        LabelFormatError, match=r"Crash-1500.txt:2: clip '000001' has 11 frame labels but 12 frames"
    ):
        read_ccd_layout(clips_root, strict=True)
    # not strict: left out and counted, the other clips still read
    with pytest.warns(LabelWarning, match=r"label_count: 1 \(.*Crash-1500.txt:2"):
        clips = read_ccd_layout(clips_root)
    assert len(clips) == 9 and "000001" not in {c.clip_id for c in clips}


def test_contact_frame_past_the_clip_end(tmp_path, clips_root):
    write_npz_clip(tmp_path / "npz" / "a.npz", n_frames=10, toa=np.array([15]))
    with pytest.raises(
        LabelFormatError, match=r"a.npz: contact frame 15 is past the clip's end \(frames 0..9\)"
    ):
        read_npz_clips(tmp_path / "npz", strict=True)
    write_dota_clip(tmp_path / "dota", "v1", n_frames=8, anomaly_start=8)
    with pytest.raises(LabelFormatError, match=r"v1.json: anomaly_start 8 is past the clip's end"):
        read_dota(tmp_path / "dota", strict=True)
    path = clips_root / "annotations/000000.json"
    meta = json.loads(path.read_text())
    meta["contact_frame"] = 30
    path.write_text(json.dumps(meta))
    with pytest.raises(
        LabelFormatError, match=r"000000.json: contact_frame 30 disagrees with Crash-1500.txt line 1"
    ):
        read_ccd_layout(clips_root, strict=True)


def test_unreadable_video(ccd_root):
    (ccd_root / "videos/Crash-1500/000001.mp4").write_bytes(b"not a video at all")
    with pytest.raises(LabelFormatError, match=r"000001.mp4: unreadable video"):
        read_ccd_layout(ccd_root, strict=True)
    with pytest.warns(LabelWarning, match=r"unreadable_video: 1"):
        clips = read_ccd_layout(ccd_root)
    assert [c.clip_id for c in clips] == ["000002"]


def test_npz_without_the_expected_keys(tmp_path):
    write_npz_clip(tmp_path / "a.npz", det=None)
    with pytest.raises(
        LabelFormatError, match=r"a.npz: missing key\(s\) \['det'\]; expected \['data', 'det', 'labels'\]"
    ):
        read_npz_clips(tmp_path, strict=True)
    write_npz_clip(tmp_path / "b.npz", data=np.zeros((10, 5, 8), np.float32))  # 4 objects, det has 19
    (tmp_path / "a.npz").unlink()
    with pytest.raises(
        LabelFormatError, match=r"b.npz: data has shape \(10, 5, 8\), expected \(T=10, 1 \+ 19"
    ):
        read_npz_clips(tmp_path, toa=5, strict=True)


def test_bad_module_arguments(tmp_path):
    with pytest.raises(ValueError, match="data_format 'ccd' needs data_path"):
        AccidentDataModule(data_format="ccd")
    with pytest.raises(ValueError, match="must be in"):
        AccidentDataModule(data_path=str(tmp_path), val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(FileNotFoundError, match="data_path does not exist"):
        AccidentDataModule(data_path=str(tmp_path / "nope")).setup()
    assert math.isclose(AccidentDataModule(data_path=str(tmp_path)).feature_fps, 20.0)
    with pytest.raises(ValueError, match="hflip must be a probability"):
        AccidentDataModule(data_path=str(tmp_path), hflip=-0.1)
    with pytest.raises(ValueError, match="npz features cannot be mirrored"):
        AccidentDataModule(data_format="npz", data_path=str(tmp_path), hflip=0.5)


def test_synthetic_default_calls_the_generator_lazily(clips_root, monkeypatch):
    # the generator (domains.driving.synthetic.clips) is imported only when no data_path is given
    calls = []

    def ensure_synthetic_clips(root, **settings):
        calls.append((root, settings))
        return clips_root

    from domains.driving.synthetic.clips import clips_root as own_root  # the real one: settings -> folder

    fake = types.ModuleType("domains.driving.synthetic.clips")
    fake.ensure_synthetic_clips = ensure_synthetic_clips
    fake.clips_root = own_root
    monkeypatch.setitem(sys.modules, "domains.driving.synthetic.clips", fake)
    dm = AccidentDataModule(synthetic={"n_clips": 10, "seed": 3}, num_workers=0, image_size=(12, 24))
    dm.prepare_data()
    dm.setup()
    # other settings than the defaults: their own folder, not the default set's (it was replaced)
    assert calls and calls[0] == (Path("data/driving_accident_n_clips-10_seed-3"), {"n_clips": 10, "seed": 3})
    assert sum(len(v) for v in dm.splits.values()) == 10


def test_npz_files_of_one_set_must_share_their_feature_width(tmp_path):
    """A 512-wide file among 4096-wide ones ended in a bare torch error inside the batch padding, naming no file."""
    write_npz_clip(tmp_path / "training" / "a.npz", n_frames=10, dim=8, positive=False)
    write_npz_clip(tmp_path / "training" / "b.npz", n_frames=10, dim=4, positive=False)
    with pytest.raises(LabelFormatError, match=r"b\.npz: data has 19 objects x 4 features per frame, but .*a\.npz "
                       r"has 19 x 8"):  # fmt: skip
        read_npz_clips(tmp_path)
    (tmp_path / "training" / "b.npz").unlink()
    write_npz_clip(tmp_path / "training" / "c.npz", n_frames=10, n_objects=9, dim=8, positive=False)
    with pytest.raises(LabelFormatError, match=r"c\.npz: data has 9 objects x 8 features per frame, but .*a\.npz "
                       r"has 19 x 8"):  # fmt: skip
        read_npz_clips(tmp_path)


def test_dota_bad_numbers_are_counted_and_a_repeated_video_name_names_both_files(tmp_path):
    """`"anomaly_start": null` or `"num_frames": "sixteen"` ended in a bare TypeError / ValueError naming no file;
    a repeated video_name in a message naming neither JSON."""
    import json

    bad = (("d01", "anomaly_start", None), ("d02", "num_frames", "sixteen"), ("d03", "anomaly_start", 4.5),
           ("d04", "anomaly_start", float("nan")), ("d05", "num_frames", float("inf")))  # json writes NaN, Infinity
    for vid, key, value in bad:
        path = write_dota_clip(tmp_path, vid)
        meta = json.loads(path.read_text())
        meta[key] = value
        path.write_text(json.dumps(meta))
    write_dota_clip(tmp_path, "d00")
    with pytest.warns(LabelWarning, match=r"bad_json: 5 .*d01\.json: anomaly_start must be a whole number of frames, "
                      r"got None"):  # fmt: skip
        (clip,) = read_dota(tmp_path)
    assert clip.clip_id == "d00"
    (tmp_path / "annotations" / "copy.json").write_text((tmp_path / "annotations" / "d00.json").read_text())
    with pytest.raises(LabelFormatError, match=r"d00\.json: video_name 'd00' also used by .*copy\.json"):
        read_dota(tmp_path)


def test_an_empty_training_split_is_named_not_a_sampler_error(tmp_path):
    """npz clips all under testing/: the breakdown said train 0, then torch's 'num_samples=0' ended the run."""
    for i in range(3):
        write_npz_clip(tmp_path / "testing" / f"t{i}.npz", n_frames=10, positive=False)
    dm = module(tmp_path, data_format="npz")
    with pytest.raises(ValueError, match=r"`fit` needs the train split, which is empty \(train 0, val 0, test 3"):
        dm.setup("fit")
    dm.setup("test")  # the test split is there


def test_a_checkpoints_training_clips_in_the_evaluated_split_are_warned_of(clips_root):
    from types import SimpleNamespace

    from pytorch_lightning.trainer.states import TrainerFn

    fitted = module(clips_root)
    fitted.setup("fit")
    state = fitted.state_dict()
    trained = {clip.clip_id for clip in fitted.splits["train"]}
    assert len(state["train_group_digests"]) == len(trained)
    other = module(clips_root, split_seed=5)  # as clips added since the fit would: the cut moves
    other.setup("test")
    leaked = sorted(trained & {clip.clip_id for clip in other.splits["test"]})
    assert leaked
    other.trainer = SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.TESTING))
    with pytest.warns(UserWarning, match=rf"{len(leaked)} of the \d+ clips of this test split were in the checkpoint"):
        other.load_state_dict(state)
