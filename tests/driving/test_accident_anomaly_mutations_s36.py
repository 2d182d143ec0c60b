"""Boundaries and choices of the accident and anomaly readers and writers that no test pinned (a mutation audit
changed each line and every test still passed): EXIF orientation of own photos, contact frame and frame-rate
limits, the risk CSV's alarm and top object, the training crop's aspect ratio, the training window length,
slot ties, the overlay's padding and the instance id map's threshold."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from domains.driving.accident.data import AccidentDataModule, select_slots
from domains.driving.accident.readers import (
    AccidentClip,
    _check_fps,
    nearness_by_height,
    read_ccd_layout,
    read_npz_clips,
)
from domains.driving.formats import DropLog, LabelFormatError, LabelWarning
from tests.driving.accident.layouts import ccd_line, write_clip_frames, write_npz_clip

# ------------------------------------------------------------------------------------------- anomaly


def test_an_own_photo_is_predicted_upright_as_its_exif_orientation_says(tmp_path):
    """Own photos (no mask to match) turn with their EXIF orientation: a phone photo stored 60x20 (WxH) with
    orientation 6 ("rotate 90 clockwise to view") is a 20 wide, 60 high upright item, its stored left end on top."""
    from domains.driving.anomaly.data import PredictImages

    stored = np.zeros((20, 60, 3), np.uint8)
    stored[:, :10] = 255  # the stored left end: the top rows once turned clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "p.jpg", exif=exif, quality=95)
    item = PredictImages([(tmp_path / "p.jpg", 60, 20, "p")])[0]
    assert tuple(item["image"].shape) == (3, 60, 20)
    assert item["orig_size"] == (60, 20) and item["unpadded_size"] == (60, 20)
    assert float(item["image"][:, :8].mean()) > 0.9 and float(item["image"][:, 12:].mean()) < 0.1


def test_training_crops_keep_the_trained_aspect_ratio():
    """``image_size`` (64, 256) is 4:1, so training crops are 3.2:1 to 5:1 (ratio is width / height) before the
    resize: a crop of 1:4 (height / width) squashed a sliver of a wide frame into the window. A 1024x256 image
    holding its column (channel 0) and row (channel 1) tells each crop's extent in the source."""
    from domains.driving.anomaly.data import segmentation_transforms

    cols = np.linspace(0, 255, 1024)[None, :].repeat(256, 0)  # value = x * 255 / 1023
    rows = np.linspace(0, 255, 256)[:, None].repeat(1024, 1)  # value = y
    source = np.stack([cols, rows, np.zeros_like(rows)], -1).round().astype(np.uint8)
    transform = segmentation_transforms(True, (64, 256), True, seed=0)
    for seed in range(5):
        transform.set_random_seed(seed)
        crop = transform(image=source, mask=np.zeros((256, 1024), np.uint8))["image"].astype(np.int64)
        assert crop.shape == (64, 256, 3)
        width = (crop[..., 0].max() - crop[..., 0].min()) * 1023 / 255 + 1
        height = crop[..., 1].max() - crop[..., 1].min() + 1
        # area at least half the image's (131072 px) at ratio >= 3.2: at least 647 px wide
        assert width >= 640 and 3.2 * 0.9 <= width / height <= 5.0 * 1.1, (seed, width, height)


def test_the_overlay_fallback_cuts_the_batch_padding_off():
    """Without the source file the overlay is drawn on the batch tensor: its right half here is padding of a
    wider image in the batch (white to see it), which the unpadded size (10, 10) cuts off before the resize."""
    from domains.driving.anomaly.predict import _original_rgb

    image = torch.zeros(3, 10, 20)
    image[:, :, 10:] = 1.0
    rgb = _original_rgb(image, (10, 10), (10, 10), None)
    assert rgb.shape == (10, 10, 3) and int(rgb.max()) == 0


# ------------------------------------------------------------------------------------------ accident


def test_a_contact_frame_at_the_clips_length_is_past_its_end(tmp_path):
    """Frames of a 4-frame clip are 0..3: ``toa`` 4 is refused, 3 (the last frame) is kept."""
    write_npz_clip(tmp_path / "last" / "c1.npz", n_frames=4, toa=np.array([3]))
    assert [(c.clip_id, c.n_frames, c.toa) for c in read_npz_clips(tmp_path / "last", strict=True)] == [
        ("c1", 4, 3)
    ]
    write_npz_clip(tmp_path / "past" / "c1.npz", n_frames=4, toa=np.array([4]))
    with pytest.raises(LabelFormatError, match=r"contact frame 4 is past the clip's end \(frames 0\.\.3\)"):
        read_npz_clips(tmp_path / "past", strict=True)


def test_a_two_frame_ccd_clip_is_long_enough(tmp_path):
    """``MIN_FRAMES`` is 2 (one frame holds no motion): a 2-frame crash clip is read, not dropped as too short."""
    for vid, n in (("000001", 2), ("000002", 3)):
        write_clip_frames(tmp_path / "videos/Crash-1500" / vid, n)
    (tmp_path / "Crash-1500.txt").write_text(ccd_line("000001", 2, 1) + "\n" + ccd_line("000002", 3, 2) + "\n")
    clips = read_ccd_layout(tmp_path, strict=True)
    assert [(c.clip_id, c.n_frames, c.toa) for c in clips] == [("000001", 2, 1), ("000002", 3, 2)]


@pytest.mark.parametrize("fps, kept", [(27.0, None), (29.8, 29.8), (30.0, 30.0)])
def test_a_frame_rate_ten_percent_off_the_annotation_is_refused(fps, kept):
    """The tolerance is 1 % (29.97 for 30 is one rate): a 27 fps video annotated 30 fps is another rate."""
    log = DropLog()
    assert _check_fps(fps, Path("v.mp4"), None, log, 30.0) == kept
    assert dict(log.counts) == ({"frame_rate": 1} if kept is None else {})


def test_slot_ties_are_broken_by_box_height_not_width():
    """Two tracks seen equally often: the nearer is the taller box (a pedestrian 10x100 near, a truck side-on
    60x20 far), as ``nearness_by_height`` says; by width the far truck took the one slot."""
    tall = np.tile(np.array([[0, 0, 10, 100]], np.float32), (3, 1))
    wide = np.tile(np.array([[0, 0, 60, 20]], np.float32), (3, 1))
    assert (nearness_by_height(tall), nearness_by_height(wide)) == (-100.0, -20.0)
    clip = AccidentClip(
        "c", "crash", 10, 3, 2, Path("c"), tracks={1: tall, 2: wide},
        depth={1: nearness_by_height(tall), 2: nearness_by_height(wide)},
    )  # fmt: skip
    assert select_slots(clip, 1) == [1]


def test_a_clip_exactly_the_training_window_long_is_trained_on():
    """``clip_length`` 8: clips of 8 and 9 frames hold a window, the 7-frame one is left out (and said)."""
    dm = AccidentDataModule(clip_length=8, num_workers=0)
    dm.dropped = None
    clips = [AccidentClip(f"c{n}", "crash", 10, n, 2, Path(f"c{n}")) for n in (7, 8, 9)]
    with pytest.warns(LabelWarning, match=r"dropped too_short: 1 \(c7: clip has 7 frames"):
        kept = dm.training_clips(clips)
    assert [c.clip_id for c in kept] == ["c8", "c9"]


def test_risk_csv_alarms_from_the_frame_reaching_the_threshold_and_names_the_riskiest_track(tmp_path):
    """Risk 0.5 at frame 1 reaches the 0.5 threshold: the alarm is 1 from there on. The top object is the slot of
    the highest risk (0.9, slot 1) named by its track id (3), not the lowest or the slot number."""
    from domains.driving.accident.predict import write_clip

    prediction = {
        "clip_id": "c", "probabilities": np.zeros((3, 1)), "horizons": [1.0], "risk": np.array([0.1, 0.5, 0.7]),
        "ttc": np.full(3, np.nan), "object_risk": np.array([[0.2, 0.9]] * 3), "box_valid": np.ones((3, 2), bool),
        "track_ids": np.array([7, 3]), "threshold": 0.5, "fps": 10.0, "boxes": np.zeros((3, 2, 4)), "frames": None,
        "toa": -1,
    }  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_clip(prediction, tmp_path, gif=False)
    with open(tmp_path / "c" / "risk.csv") as f:
        rows = [(r["frame"], r["alarm"], r["top_track_id"], r["top_object_risk"]) for r in csv.DictReader(f)]
    assert rows == [("0", "0", "3", "0.9"), ("1", "1", "3", "0.9"), ("2", "1", "3", "0.9")]


# ----------------------------------------------------------------------------------------- instances


def test_an_instance_scoring_exactly_the_threshold_is_in_the_id_map_as_its_box_is_drawn():
    """``score_thresh`` 0.5 keeps scores >= 0.5 in the id map, as ``draw_detections`` keeps its box: the 0.5
    instance is id 2 (after the 0.9 one), not missing from the map while boxed on the overlay."""
    from domains.driving.instances.predict import draw_instances, instance_id_map

    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, :2] = True
    masks[1, 2:] = True
    pred = {
        "scores": torch.tensor([0.5, 0.9]), "masks": masks, "labels": torch.tensor([0, 0]),
        "boxes": torch.tensor([[0.0, 0.0, 3.0, 1.0], [0.0, 2.0, 3.0, 3.0]]),
    }  # fmt: skip
    ids, order = instance_id_map(pred, (4, 4), 0.5)
    assert order == [1, 0]
    assert ids.tolist() == [[2] * 4, [2] * 4, [1] * 4, [1] * 4]
    overlay = draw_instances(np.zeros((4, 4, 3), np.uint8), pred, ["Car"], 0.5, alpha=1.0)
    assert cv2.countNonZero(overlay[:2].max(-1)) == 8  # the 0.5 instance's rows are tinted
