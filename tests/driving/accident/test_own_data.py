"""Accident data as users have it on disk: frame names without zero padding, a Mac's hidden files, upper-case
video extensions, UString's CCD feature release (contact frames in Crash-1500.txt, train.txt / test.txt lists),
damaged npz files, a byte-order mark, one bad annotation line, DoTA frame paths and broken boxes."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from domains.driving.accident.data import AccidentDataModule, AccidentDataset
from domains.driving.accident.model import AccidentAnticipator
from domains.driving.accident.readers import read_ccd_layout, read_dota, read_npz_clips
from domains.driving.formats import LabelFormatError, LabelWarning
from shared.files import HiddenFilesWarning
from shared.task import CheckpointMismatchError
from tests.driving.accident.layouts import (
    ccd_line,
    write_accident_clips,
    write_dota_clip,
    write_mp4,
    write_npz_clip,
)


def _numbered_frames(folder: Path, n: int) -> None:
    """Frames ``frame_1.jpg .. frame_<n>.jpg`` (no zero padding) whose grey level is 20 x their number, and a
    Mac's ``._frame_3.jpg`` resource fork beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(1, n + 1):
        assert cv2.imwrite(str(folder / f"frame_{t}.png"), np.full((24, 48, 3), 20 * t, np.uint8))
    (folder / "._frame_3.png").write_bytes(b"\x00\x05\x16\x07 resource fork")


def test_unpadded_frame_names_play_in_number_order_and_hidden_files_are_not_frames(tmp_path):
    _numbered_frames(tmp_path / "videos/Crash-1500/000001", 12)
    (tmp_path / "videos/Crash-1500/.DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    _numbered_frames(tmp_path / "videos/Normal/000002", 12)
    (tmp_path / "videos/Normal/.thumbnails").mkdir()
    (tmp_path / "Crash-1500.txt").write_text(ccd_line("000001", 12, 8) + "\n")
    with pytest.warns(HiddenFilesWarning) as hidden:  # counted once over all clip folders, not per clip
        clips = read_ccd_layout(tmp_path, strict=True)
    assert [str(w.message).split(" (")[0] for w in hidden] == [f"{tmp_path / 'videos'}: 3 hidden files left out"]
    clip = next(c for c in clips if c.clip_id == "000001")
    assert [p.name for p in clip.frames] == [f"frame_{t}.png" for t in range(1, 13)]  # not 1, 10, 11, 12, 2, ...
    frames = AccidentDataset([clip], image_size=None, max_objects=1)[0]["frames"]
    assert (frames[:, 0, 0, 0] * 255).round().tolist() == [20.0 * t for t in range(1, 13)]


def test_ccd_as_released_is_read_from_its_root_or_its_videos_folder(tmp_path):
    """The release keeps Crash-1500.txt beside Crash-1500/ and Normal/ in CarCrash/videos/: both roots read it,
    and a normal clip numbered like a crash clip keeps an id of its own."""
    videos = tmp_path / "CarCrash" / "videos"
    _numbered_frames(videos / "Crash-1500" / "000001", 12)
    _numbered_frames(videos / "Normal" / "000001", 12)
    (videos / "Crash-1500.txt").write_text(ccd_line("000001", 12, 8) + "\n")
    for root in (tmp_path / "CarCrash", videos):
        with pytest.warns(HiddenFilesWarning):
            clips = {c.clip_id: c for c in read_ccd_layout(root, strict=True)}
        assert {k: (c.kind, c.toa) for k, c in clips.items()} == {"000001": ("crash", 8), "normal_000001": ("normal", -1)}
        assert clips["normal_000001"].frames[0].parent == videos / "Normal" / "000001"
    with pytest.raises(FileNotFoundError, match="expected <root>/Crash-1500.txt or <root>/videos/Crash-1500.txt"):
        read_ccd_layout(tmp_path)
    with pytest.raises(FileNotFoundError):  # the folder above is not looked in (the feature layout's search)
        read_ccd_layout(videos / "Normal")


def test_a_video_with_an_upper_case_extension_is_found(tmp_path):
    if not write_mp4(tmp_path / "videos/Crash-1500/000001.MP4", 10, 10.0):
        pytest.skip("OpenCV has no mp4v encoder here: cannot write a test video")
    write_mp4(tmp_path / "videos/Normal/000002.Mp4", 10, 10.0)
    (tmp_path / "Crash-1500.txt").write_text(ccd_line("000001", 10, 6) + "\n")
    clips = {c.clip_id: c for c in read_ccd_layout(tmp_path, strict=True)}
    assert clips["000001"].video.name == "000001.MP4" and clips["000002"].video.name == "000002.Mp4"


def _ustring_ccd(root: Path) -> Path:
    """UString's CCD feature layout: ``vgg16_features/{positive,negative}/*.npz`` without ``toa``, the split
    lists ``train.txt`` / ``test.txt``, and ``videos/Crash-1500.txt`` with each crash clip's frame labels."""
    features = root / "vgg16_features"
    lines, train, test = [], [], []
    for i, toa in enumerate((3, 5, 7, 4), start=1):
        vid = f"{i:06d}"
        write_npz_clip(features / "positive" / f"{vid}.npz", n_frames=10, dim=4, ID=np.array(vid))
        lines.append(ccd_line(vid, 10, toa))
        (train if i <= 2 else test).append(f"positive/{vid}.npz 1")
    for i in range(1, 5):  # numbered from 000001 too, ID and all, as released
        vid = f"{i:06d}"
        write_npz_clip(features / "negative" / f"{vid}.npz", n_frames=10, dim=4, positive=False, ID=np.array(vid))
        (train if i <= 2 else test).append(f"negative/{vid}.npz 0")
    (features / "train.txt").write_text("\n".join(train) + "\n")
    (features / "test.txt").write_text("\n".join(test) + "\n")
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "Crash-1500.txt").write_text("\n".join(lines) + "\n")
    return features


def test_ustring_ccd_features_take_their_contact_frames_and_split_from_its_files(tmp_path):
    """UString's CCD files have no toa: every crash clip got DAD's frame 90, past its 10 frames, and was dropped,
    so the run trained on negatives only, exit 0."""
    features = _ustring_ccd(tmp_path)
    clips = {
        c.clip_id: c
        for c in read_npz_clips(features, fps=10.0, strict=True, annotation=tmp_path / "videos/Crash-1500.txt")
    }
    assert {k: c.toa for k, c in clips.items() if c.is_positive} == {
        "000001": 3, "000002": 5, "000003": 7, "000004": 4,
    }  # fmt: skip
    # a negative whose number is a crash clip's gets an id of its own, as in the video layout (it had stopped
    # every read of the release: "clip id '000001' also used by")
    assert {k for k, c in clips.items() if c.subset == "test"} == {"000003", "000004", "normal_000003", "normal_000004"}
    assert {k for k, c in clips.items() if c.subset == "train"} == {"000001", "000002", "normal_000001", "normal_000002"}
    assert {k for k, c in clips.items() if not c.is_positive} == {f"normal_00000{i}" for i in range(1, 5)}
    # two files of one kind under one ID are still an error
    import shutil

    shutil.copy(tmp_path / "vgg16_features/positive/000001.npz", tmp_path / "vgg16_features/positive/dup.npz")
    with pytest.raises(LabelFormatError, match=r"clip id '000001' also used by"):
        read_npz_clips(tmp_path / "vgg16_features", fps=10.0, annotation=tmp_path / "videos/Crash-1500.txt")
    (tmp_path / "vgg16_features/positive/dup.npz").unlink()

    dm = AccidentDataModule(data_format="npz", data_path=str(features), feature_fps=10, num_workers=0)
    dm.setup("fit")  # Crash-1500.txt found in ../videos, as UString keeps it
    assert sorted((c.clip_id, c.toa) for c in dm.splits["test"] if c.is_positive) == [("000003", 7), ("000004", 4)]
    with pytest.raises(FileNotFoundError, match="--data.feature_annotation nowhere.txt: no such file"):
        AccidentDataModule(
            data_format="npz", data_path=str(features), feature_annotation="nowhere.txt", num_workers=0
        ).setup("fit")


def test_ccd_features_at_dad_rate_are_warned_and_max_clips_takes_every_kind(tmp_path):
    """Without --data.feature_fps 10, CCD's features were read at DAD's 20 fps (every lead time halved) without a
    word; max_clips took the crash clips only (normal_* ids sort last), leaving no negative to calibrate on."""
    features = _ustring_ccd(tmp_path)
    dm = AccidentDataModule(data_format="npz", data_path=str(features), num_workers=0, max_clips=4)
    with pytest.warns(LabelWarning, match=r"CCD clips are 10 fps, but --data.feature_fps is 20"):
        clips = dm.read_clips()
    assert [c.clip_id for c in clips] == ["000001", "000002", "normal_000001", "normal_000002"]


def test_a_training_split_without_a_crash_clip_is_an_error(tmp_path):
    for i in range(6):
        write_npz_clip(tmp_path / f"clip{i}.npz", n_frames=100, dim=4, positive=False)
    dm = AccidentDataModule(data_format="npz", data_path=str(tmp_path), num_workers=0)
    with pytest.raises(ValueError, match=r"the training split holds no crash clip \(\d+ clips, all negatives\)"):
        dm.setup("fit")


def _flip_a_byte_inside(path: Path, member: str) -> None:
    """Corrupt one byte of ``member``'s stored data (its CRC no longer matches); its header stays readable."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + info.compress_size - 3] ^= 0xFF  # inside the array's values, past the .npy header
    path.write_bytes(bytes(raw))


def test_damaged_npz_files_are_named_and_counted_not_a_bare_traceback(tmp_path):
    good = write_npz_clip(tmp_path / "good.npz", n_frames=10, dim=4)
    truncated = write_npz_clip(tmp_path / "cut.npz", n_frames=10, dim=4)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    (tmp_path / "notes.npz").write_bytes(b"this is not a feature file at all" * 4)
    with pytest.warns(LabelWarning, match=r"npz_keys: 2 .*not an npz archive") as record:
        clips = read_npz_clips(tmp_path, toa=5)
    assert [c.clip_id for c in clips] == ["good"]
    assert "pickle" not in str(record[0].message)  # numpy's advice to allow pickles is not passed on
    with pytest.raises(LabelFormatError, match=r"cut.npz: not an npz archive"):
        read_npz_clips(tmp_path, toa=5, strict=True)

    _flip_a_byte_inside(good, "data.npy")  # a bad CRC shows only when the values are read, in training
    (tmp_path / "cut.npz").unlink()
    (tmp_path / "notes.npz").unlink()
    (clip,) = read_npz_clips(tmp_path, toa=5, strict=True)
    with pytest.raises(LabelFormatError, match=r"good.npz: cannot read its data array \(Bad CRC-32"):
        AccidentDataset([clip], image_size=(36, 64), max_objects=2, feature_image_size=(720, 1280))[0]


def test_strict_npz_errors_are_said_once(tmp_path):
    write_npz_clip(tmp_path / "a.npz", det=None)
    with pytest.raises(LabelFormatError) as caught:
        read_npz_clips(tmp_path, strict=True)
    assert str(caught.value).count("missing key") == 1 and "not a readable" not in str(caught.value)


def _frame_folder_set(root: Path, lines: list[str], vids: list[str]) -> None:
    for i, vid in enumerate(vids):
        folder = root / "videos/Crash-1500" / vid
        folder.mkdir(parents=True)
        for t in range(6):
            cv2.imwrite(str(folder / f"{t:06d}.jpg"), np.full((24, 48, 3), 10 * i, np.uint8))
    (root / "Crash-1500.txt").write_bytes("\n".join(lines).encode("utf-8-sig"))  # as Windows Notepad saves it


def test_a_byte_order_mark_and_one_bad_line_lose_only_that_line(tmp_path):
    lines = [ccd_line("000001", 6, 3), "000002,[0, 0, 0, 0, 0, 0],0,src,Day,Normal,Yes", ccd_line("000003", 6, 4)]
    _frame_folder_set(tmp_path, lines, ["000001", "000002", "000003"])
    with pytest.warns(LabelWarning, match=r"bad_line: 1 .*Crash-1500.txt:2: crash clip '000002' has no frame") as said:
        clips = read_ccd_layout(tmp_path)
    assert "missing_label" not in str(said[0].message)  # its clip counted once (it was also "without a line")
    assert {c.clip_id: c.toa for c in clips} == {"000001": 3, "000003": 4}  # the first line's vid has no BOM
    with pytest.raises(LabelFormatError, match=r"Crash-1500.txt:2: crash clip '000002' has no frame labelled 1"):
        read_ccd_layout(tmp_path, strict=True)


def test_an_annotation_that_is_not_utf8_is_named(tmp_path):
    """A Crash-1500.txt saved in cp1252 (a Windows editor's "é") stopped with a bare UnicodeDecodeError that
    named no file; so did UString's split lists."""
    _frame_folder_set(tmp_path, [ccd_line("000001", 6, 3)], ["000001"])
    (tmp_path / "Crash-1500.txt").write_bytes(ccd_line("000001", 6, 3).replace("Normal", "Pluvieux é").encode("cp1252"))
    with pytest.raises(LabelFormatError, match=r"Crash-1500.txt: not a UTF-8 text file"):
        read_ccd_layout(tmp_path)
    features = _ustring_ccd(tmp_path / "ustring")
    (features / "train.txt").write_bytes("positive/000001.npz 1 # é\n".encode("cp1252"))
    with pytest.raises(LabelFormatError, match=r"train.txt: not a UTF-8 text file"):
        read_npz_clips(features, fps=10.0)


def test_a_missing_dota_frame_is_named_as_its_annotation_writes_it(tmp_path):
    """The message named <root>/frames/frames/clip_a/..., a path nothing looked for."""
    write_dota_clip(tmp_path, "clip_a", n_frames=6, anomaly_start=3)
    (tmp_path / "frames/clip_a/images/000003.jpg").unlink()
    with pytest.raises(LabelFormatError, match=r"1 of 6 frames not found, e.g. image_path 'frames/clip_a/images/000003.jpg' \(under "):
        read_dota(tmp_path, strict=True)


def test_dota_frames_named_relative_to_frames_or_in_another_case_are_found(tmp_path):
    path = write_dota_clip(tmp_path, "clip_a", n_frames=6, anomaly_start=3)
    images = tmp_path / "frames/clip_a/images"
    for frame in sorted(images.iterdir()):
        frame.rename(frame.with_suffix(".JPG"))
    text = path.read_text().replace('"frames/clip_a/images/', '"clip_a/images/').replace('.jpg"', '.JPG"')
    path.write_text(text)  # DoTA's own image_path: relative to frames/
    (clip,) = read_dota(tmp_path, strict=True)
    assert [p.name for p in clip.frames] == [f"{t:06d}.JPG" for t in range(6)]
    path.write_text(text.replace('"clip_a/images/', '"elsewhere/'))  # a stale path: the frame number finds it
    (clip,) = read_dota(tmp_path, strict=True)
    assert clip.frames[0] == images / "000000.JPG"


def test_a_dota_box_out_of_any_frame_is_counted_not_a_drawing_crash(tmp_path):
    write_dota_clip(tmp_path, "clip_a", n_frames=6, anomaly_start=3)
    path = write_dota_clip(tmp_path, "clip_b", n_frames=6, anomaly_start=3)
    path.write_text(path.read_text().replace("[10.0, 10.0, 30.0, 20.0]", "[10.0, 10.0, 5000000000.0, 40.0]", 1))
    with pytest.warns(LabelWarning, match=r"bad_json: 1 .*clip_b.json:labels\[0\]: bbox \[10.0, 10.0, 5000000000.0"):
        clips = read_dota(tmp_path)
    assert [c.clip_id for c in clips] == ["clip_a"]


def test_a_box_far_outside_the_frame_is_drawn_off_it_not_an_opencv_error():
    from domains.driving.accident.predict import draw_clip

    boxes = np.array([[[4.0, 4.0, 5e9, 20.0], [2.0, 2.0, 10.0, 10.0]]] * 3, np.float32)  # (T, N, 4)
    prediction = {
        "clip_id": "c", "frames": np.zeros((3, 3, 24, 48), np.uint8), "risk": np.array([0.1, 0.5, 0.9]),
        "boxes": boxes, "box_valid": np.ones((3, 2), bool), "object_risk": np.full((3, 2), 0.9),
        "threshold": 0.5, "toa": 2, "fps": 10.0,
    }  # fmt: skip
    frames = draw_clip(prediction)
    assert len(frames) == 3 and frames[0].shape[1] == 48
    assert frames[0][4, 20:48].any() and frames[0][2, 2:11].any()  # both boxes' top edges are drawn


def test_dota_frames_found_through_image_path_relative_to_frames(tmp_path):
    from domains.driving.accident.readers import read_dota
    from tests.driving.accident.layouts import write_dota_clip
    path = write_dota_clip(tmp_path, "clip_a", n_frames=6, anomaly_start=3)
    images = tmp_path / "frames/clip_a/images"
    for t in range(6):
        (images / f"{t:06d}.jpg").rename(images / f"img_{t}.jpg")
    text = path.read_text()
    for t in range(6):
        text = text.replace(f'"frames/clip_a/images/{t:06d}.jpg"', f'"clip_a/images/img_{t}.jpg"')
    path.write_text(text)
    (clip,) = read_dota(tmp_path, strict=True)
    assert [p.name for p in clip.frames] == [f"img_{t}.jpg" for t in range(6)]


def test_an_inverted_dota_box_is_counted(tmp_path):
    from domains.driving.accident.readers import read_dota
    from domains.driving.formats import LabelFormatError
    from tests.driving.accident.layouts import write_dota_clip
    path = write_dota_clip(tmp_path, "clip_b", n_frames=6, anomaly_start=3)
    path.write_text(path.read_text().replace("[10.0, 10.0, 30.0, 20.0]", "[30.0, 10.0, 10.0, 20.0]", 1))
    with pytest.raises(LabelFormatError, match=r"labels\[0\]: bbox \[30.0, 10.0, 10.0, 20.0\]"):
        read_dota(tmp_path, strict=True)


def test_a_split_list_with_a_bom_keeps_its_first_clip(tmp_path):
    from domains.driving.accident.readers import read_npz_clips
    features = _ustring_ccd(tmp_path)
    (features / "train.txt").write_text((features / "train.txt").read_text(), encoding="utf-8-sig")
    clips = {c.clip_id: c for c in read_npz_clips(features, fps=10.0, strict=True,
                                                  annotation=tmp_path / "videos/Crash-1500.txt")}
    assert clips["000001"].subset == "train"


def test_crash_clips_only_in_test_are_no_training_split(tmp_path):
    from domains.driving.accident.data import AccidentDataModule
    from tests.driving.accident.layouts import write_npz_clip
    for i in range(4):
        write_npz_clip(tmp_path / "training" / f"neg{i}.npz", n_frames=100, dim=4, positive=False)
    for i in range(2):
        write_npz_clip(tmp_path / "testing" / f"pos{i}.npz", n_frames=100, dim=4)
    dm = AccidentDataModule(data_format="npz", data_path=str(tmp_path), num_workers=0)
    with pytest.raises(ValueError, match="the training split holds no crash clip"):
        dm.setup("fit")


def test_a_wide_box_is_drawn_to_its_own_right_edge():
    from domains.driving.accident.predict import draw_clip
    boxes = np.array([[[4.0, 4.0, 40.0, 20.0]]] * 2, np.float32)
    prediction = {"clip_id": "c", "frames": np.zeros((2, 3, 24, 48), np.uint8), "risk": np.array([0.1, 0.2]),
                  "boxes": boxes, "box_valid": np.ones((2, 1), bool), "object_risk": np.full((2, 1), 0.9),
                  "threshold": 0.5, "toa": 1, "fps": 10.0}
    frame = draw_clip(prediction)[0]
    assert frame[12, 40].any() and not frame[12, 41:].any()


def test_a_training_window_reads_its_own_frames_of_a_video_and_a_short_video_is_named(tmp_path):
    """Every frame of the clip was decoded and converted, then the window cut out (116 -> 48 ms for 30 of 50
    frames in the audit's measurement)."""
    from domains.driving.accident.readers import read_video_frames

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 16))
    for i in range(10):
        writer.write(np.full((16, 32, 3), 20 * i, np.uint8))  # frame i's grey level: 20 i
    writer.release()
    levels = [round(float(f.mean()) / 20) for f in read_video_frames(path, expected=10, start=3, stop=6)]
    assert levels == [3, 4, 5]
    assert len(read_video_frames(path, expected=10)) == 10
    with pytest.raises(LabelFormatError, match=r"clip\.avi: video decodes 10 frames, expected 12"):
        read_video_frames(path, expected=12, start=8, stop=12)
    with pytest.raises(LabelFormatError, match=r"video decodes 10 frames, expected 11"):
        read_video_frames(path, expected=11)


def test_each_frame_is_drawn_with_its_own_boxes_risks_and_alarm():
    """draw_frame (what the demo draws, one frame at a time): frame t's valid boxes, coloured by their risk at
    t, and "ALARM" from the alarm frame on (the first at or above the threshold)."""
    from domains.driving.accident.predict import _risk_color, draw_frame

    valid = np.zeros((12, 1), bool)
    valid[3:] = True  # the object appears at frame 3
    risk = np.linspace(0.0, 1.0, 12)
    prediction = {
        "clip_id": "c", "frames": np.zeros((12, 3, 40, 256), np.uint8), "risk": risk,
        "boxes": np.tile(np.array([[[20.0, 16.0, 40.0, 30.0]]], np.float32), (12, 1, 1)), "box_valid": valid,
        "object_risk": np.where(np.arange(12) < 10, 0.0, 1.0)[:, None], "threshold": 0.5, "toa": 11, "fps": 10.0,
    }  # fmt: skip
    below_text = slice(14, 40)  # under the text band (rows 0-13), above the curve panel
    assert not draw_frame(prediction, 1)[below_text].any()  # no box before the object is there
    assert tuple(draw_frame(prediction, 3)[16, 25]) == _risk_color(0.0)  # its top edge, low risk: green
    assert tuple(draw_frame(prediction, 10)[16, 25]) == _risk_color(1.0)  # high risk at frame 10: red
    alarm = int(np.flatnonzero(risk >= 0.5)[0])
    text = slice(0, 14)
    after_digits = slice(75, 256)  # "t=0.5s risk 0.55" ends at x 70; "  ALARM" follows it, to x 104
    assert not draw_frame(prediction, alarm - 1)[text, after_digits].any()
    assert draw_frame(prediction, alarm)[text, after_digits].any()  # "ALARM" from the alarm frame on


def test_predict_runs_on_ones_own_videos_and_frame_folders_at_the_training_rate(tmp_path, monkeypatch, caplog):
    """``--data.predict_path``: unlabelled clips of one's own (before, predict wrote only the test split's clips
    and said nothing of the rest). A 30 fps video reaches a network trained on 10 fps clips at every third
    frame; a frame folder runs at ``--data.predict_fps``; an unreadable video is counted; a boxes-only network
    is refused (own clips have no tracks)."""
    import csv
    import logging
    import warnings

    from domains.driving.accident.__main__ import main
    from tests.driving.accident.layouts import write_accident_clips, write_clip_frames, write_mp4
    from tests.driving.accident.test_task import _cli_args

    data = write_accident_clips(tmp_path / "clips", {"crash": 1, "near_miss": 1, "normal": 1}, fps=10.0)
    own = tmp_path / "own"
    if not write_mp4(own / "drive.mp4", 24, 30.0):
        pytest.skip("this OpenCV cannot write mp4")
    write_clip_frames(own / "parked", 9)  # own/parked/image_2/*.jpg
    (own / "broken.mp4").write_text("not a video")
    monkeypatch.chdir(tmp_path)
    frames = ["--model.network.init_args.input_kind", "frames", "--model.network.init_args.backbone", "tiny_cnn"]
    frames += ["--data.predict_path", str(own), "--model.predict_dir", str(tmp_path / "pred")]
    frames += ["--ckpt_path", "none"]
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        main(["predict", *_cli_args(data, *frames, "--data.predict_fps", "10")])
    assert any("broken.mp4" in str(w.message) for w in caught), [str(w.message) for w in caught]
    for clip, steps in (("drive", 8), ("parked", 9)):  # 24 frames at 30 fps: 0.0-0.7 s at 10 fps
        with open(tmp_path / "pred" / clip / "risk.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == steps and rows[-1]["time_s"] == f"{(steps - 1) / 10:.3f}"
        assert [int(r["source_frame"]) for r in rows] == list(range(0, 3 * steps, 3) if clip == "drive" else range(9))
        assert (tmp_path / "pred" / f"{clip}.gif").is_file()
    assert not (tmp_path / "pred" / "broken").exists()
    assert "accident predictions: 2 clips written" in caplog.text and "test split" not in caplog.text

    (own / "broken.mp4").unlink()
    features = ["--model.network.init_args.input_kind", "features", "--data.predict_path", str(own)]
    with pytest.raises(ValueError, match="reads precomputed npz features .*--data.predict_path gives videos"):
        main(["predict", *_cli_args(data, *features, "--data.predict_fps", "10", "--ckpt_path", "none")])
    with pytest.raises(ValueError, match="a frame folder has no frame rate: set --data.predict_fps"):
        main(["predict", *_cli_args(data, *frames, "--data.strict", "true")])
    with pytest.raises(ValueError, match="none of the 2 --data.predict_path clips has a track"):
        own_clips = ["--data.predict_path", str(own), "--data.predict_fps", "10", "--ckpt_path", "none"]
        main(["predict", *_cli_args(data, *own_clips)])


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda m: m["tracks"]["1"]["box"].__setitem__(0, [1, 2, 3]), r"track 1, frame 0: box \[1, 2, 3\] is not"),
        (lambda m: m["tracks"]["1"]["box"].__setitem__(0, "1 2 3 4"), r"track 1, frame 0: box '1 2 3 4' is not"),
        (lambda m: m["tracks"].__setitem__("car", m["tracks"].pop("1")), r"track id 'car' is not an integer"),
        (lambda m: m.update(involved=["car_72"]), r"involved track id 'car_72' is not an integer"),
        (lambda m: m.update(size=[48, 24, 3]), r"size \[48, 24, 3\] is not \[width, height\]"),
        (lambda m: m.update(ttc=["n/a"] * 12), r"ttc value 'n/a' is not seconds"),
    ],
)
def test_a_malformed_clip_json_drops_that_clip_naming_the_file(tmp_path, change, reason):
    """The JSON that gives CCD-layout clips their boxes: a malformed box, id, size or TTC was a bare ValueError
    naming no file ("could not broadcast ...", "invalid literal for int()"), and stopped the whole read."""
    import json

    from domains.driving.accident.readers import read_ccd_layout

    root = write_accident_clips(tmp_path, {"crash": 2}, n_frames=12)
    path = root / "annotations" / "000000.json"
    meta = json.loads(path.read_text())
    meta.setdefault("ttc", [None] * 12)
    change(meta)
    path.write_text(json.dumps(meta))
    with pytest.warns(LabelWarning, match=r"bad_json: 1 \(.*000000.json: " + reason):
        clips = read_ccd_layout(root, require_json=True)
    assert [c.clip_id for c in clips] == ["000001"]


def test_dota_entries_that_are_not_frames_and_an_end_before_the_start_are_counted(tmp_path):
    """A labels entry that is not an object was "AttributeError: 'int' object has no attribute 'get'", naming no
    file; an anomaly_end before its anomaly_start was taken silently."""
    import json

    write_dota_clip(tmp_path, "clip_a", n_frames=6, anomaly_start=3)
    for vid, change in (
        ("clip_b", lambda m: m["labels"].__setitem__(2, 7)),
        ("clip_c", lambda m: m.update(anomaly_end=1)),
        ("clip_d", lambda m: m["labels"][1].update(frame_id="one")),
    ):
        path = write_dota_clip(tmp_path, vid, n_frames=6, anomaly_start=3)
        meta = json.loads(path.read_text())
        change(meta)
        path.write_text(json.dumps(meta))
    with pytest.warns(LabelWarning, match=r"bad_json: 3 ") as caught:
        clips = read_dota(tmp_path)
    assert [c.clip_id for c in clips] == ["clip_a"]
    text = "\n".join(str(w.message) for w in caught)
    for expected in (r"clip_b.json:labels\[2\]: expected an object", "clip_c.json: anomaly_end 1 is before anomaly_start 3",
                     r"clip_d.json:labels\[1\]: frame_id 'one' is not an integer"):  # fmt: skip
        assert re.search(expected, text), text


def test_an_npz_id_stored_as_bytes_is_its_text(tmp_path):
    """A Python 2 era feature file keeps ``ID`` as bytes: the clip was named "b'000001'", matched no annotation
    line and was dropped, blaming the annotation."""
    write_npz_clip(tmp_path / "training" / "positive" / "000001.npz", n_frames=10, dim=4, ID=np.array(b"000001"))
    write_npz_clip(tmp_path / "training" / "negative" / "000002.npz", n_frames=10, dim=4, positive=False,
                   ID=np.array([b"000002"]))  # fmt: skip
    clips = read_npz_clips(tmp_path, fps=10.0, toa=5, strict=True)
    assert sorted(c.clip_id for c in clips) == ["000001", "000002"]


def test_risk_csv_tells_no_contact_from_unknown_and_a_failed_clip_leaves_no_folder(tmp_path):
    """``ttc_s`` was blank both where no contact is expected within the longest horizon (inf) and where it is
    unknown (NaN); a clip whose files failed to write left an empty ``<clip>/`` folder."""
    import csv

    from domains.driving.accident.predict import write_clip

    prediction = {
        "clip_id": "c", "frames": None, "risk": np.array([0.1, 0.2, 0.9], np.float32),
        "probabilities": np.array([[0.0, 0.1], [0.1, 0.2], [0.8, 0.9]], np.float32), "horizons": [1.0, 2.0],
        "ttc": np.array([np.inf, np.nan, 0.5], np.float32), "uncertainty": None,
        "object_risk": np.zeros((3, 1), np.float32), "box_valid": np.zeros((3, 1), bool),
        "boxes": np.zeros((3, 1, 4), np.float32), "track_ids": np.array([-1]), "threshold": 0.5, "fps": 10.0,
    }  # fmt: skip
    write_clip(prediction, tmp_path / "out")
    with open(tmp_path / "out" / "c" / "risk.csv") as f:
        assert [row["ttc_s"] for row in csv.DictReader(f)] == ["inf", "", "0.500"]
    broken = {**prediction, "clip_id": "d", "probabilities": prediction["probabilities"][:2]}  # one frame short
    with pytest.raises(IndexError):
        write_clip(broken, tmp_path / "out")
    assert not (tmp_path / "out" / "d").exists() and (tmp_path / "out" / "c").is_dir()


def _checkpoint(task, path: Path) -> Path:
    """``task`` saved untrained as a Lightning checkpoint at ``path``."""
    from pytorch_lightning import Trainer

    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_steps=0)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(path)
    return path


def _tiny_detector(path: Path) -> Path:
    """An untrained tiny road detector's checkpoint (for ``--data.predict_detector``)."""
    from tests.helpers import detection_task

    torch.manual_seed(0)
    task = detection_task(
        backbone="tiny_cnn", backbone_kwargs={"width": 8}, fpn_channels=32, head_convs=1, input_size=(32, 64)
    )
    return _checkpoint(task, path)


def test_own_clips_get_their_objects_from_a_road_detector_for_a_network_that_reads_boxes(tmp_path, monkeypatch):
    """``--data.predict_detector``: the suite's detector finds each frame's objects, linked into tracks, so a
    boxes-only network (quick.yaml, the shipped demo model) runs on raw video from the command line too."""
    import csv
    import warnings

    from domains.driving.accident.__main__ import main
    from domains.driving.accident.task import AccidentTask
    from tests.driving.accident.layouts import write_clip_frames
    from tests.driving.accident.test_task import _cli_args

    detector = _tiny_detector(tmp_path / "detector.ckpt")
    data = write_accident_clips(tmp_path / "clips", {"crash": 1, "near_miss": 1, "normal": 1}, fps=10.0)
    write_clip_frames(tmp_path / "own" / "drive", 6)
    monkeypatch.chdir(tmp_path)
    own = ["--data.predict_path", str(tmp_path / "own"), "--data.predict_fps", "10", "--ckpt_path", "none"]
    own += ["--model.predict_dir", str(tmp_path / "pred"), "--data.predict_detector", str(detector)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # untrained, the detector scores every box about alike: a threshold of 0 takes them all
        cli = main(["predict", *_cli_args(data, *own, "--data.predict_detector_threshold", "0")])
    (clip,) = cli.datamodule.splits["predict"]
    assert clip.tracks and all(track.shape == (6, 4) for track in clip.tracks.values())
    with open(tmp_path / "pred" / "drive" / "objects.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and {int(r["track_id"]) for r in rows} <= set(clip.tracks)
    with open(tmp_path / "pred" / "drive" / "risk.csv") as f:
        assert any(float(r["risk"]) > 0 for r in csv.DictReader(f))  # objects in view: the network reads them
    with pytest.raises(FileNotFoundError, match="--data.predict_detector .*missing.ckpt: no such file"):
        main(["predict", *_cli_args(data, *own, "--data.predict_detector", str(tmp_path / "missing.ckpt"))])
    # shipped detector weights are taken: tests/driving/test_accident_shipped_detector_s42.py
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # no box scores 1: the refusal says the detector found none, not to give one
        with pytest.raises(ValueError, match=r"the detector found none scoring >= 1: lower --data.predict_detector_t"):
            main(["predict", *_cli_args(data, *own, "--data.predict_detector_threshold", "1")])
    with pytest.raises(ValueError, match=r"predict_detector_threshold is a detector score in \[0, 1\], got 1.5"):
        AccidentDataModule(predict_path=str(tmp_path / "own"), predict_detector_threshold=1.5)
    # another task's checkpoint named as the detector
    accident = AccidentTask(network=AccidentAnticipator(input_kind="boxes", hidden=8))
    other = _checkpoint(accident, tmp_path / "accident.ckpt")
    with pytest.raises(CheckpointMismatchError, match=r"^--data.predict_detector: .*accident.ckpt"):
        main(["predict", *_cli_args(data, *own, "--data.predict_detector", str(other))])

    # a track the detector loses holds no box there (NaN), not a zero box the network would read as an object
    seen = iter(range(1000))

    def first_three(model, frame):
        found = next(seen) < 3
        return {
            "boxes": np.array([[4.0, 4.0, 20.0, 16.0]] if found else np.zeros((0, 4))),
            "scores": np.array([0.9] if found else []),
            "labels": np.array([0] if found else [], np.int64),
        }

    monkeypatch.setattr("domains.driving.detection.predict.detect_objects", first_three)
    clip.tracks.clear()
    clip.depth.clear()
    cli.datamodule._detect_tracks([clip])
    (track,) = clip.tracks.values()
    assert np.isfinite(track[:3]).all() and np.isnan(track[3:]).all()


def test_own_clip_names_cut_short_videos_and_the_rate_the_checkpoint_learnt_at(tmp_path, monkeypatch):
    """Own clips: a folder given as "." or holding image_2/ is one clip named after it; two videos of one stem
    are refused (one was dropped silently); a copy cut short is read to its last decoding frame (predict
    stopped at it, losing every later clip); a resampled video keeps only the frames the model reads; a
    checkpoint that learnt at another rate than the command's data settings is refused."""
    from types import SimpleNamespace

    from domains.driving.accident import readers
    from domains.driving.accident.readers import read_own_clips
    from domains.driving.accident.task import AccidentTask
    from tests.driving.accident.layouts import write_accident_clips, write_clip_frames

    write_clip_frames(tmp_path / "parked", 4)  # parked/image_2/*.jpg
    (clip,) = read_own_clips(tmp_path / "parked", 10.0, frames_fps=10.0)
    assert clip.clip_id == "parked" and len(clip.frames) == 4
    write_clip_frames(tmp_path / "mixed" / "a", 4)
    cv2.imwrite(str(tmp_path / "mixed" / "a" / "image_2" / "000002.jpg"), np.zeros((30, 40, 3), np.uint8))
    write_clip_frames(tmp_path / "mixed" / "b", 4)
    with pytest.warns(LabelWarning, match=r"frame_size: 1 .*000002.jpg: frame is 40x30 but 000000.jpg of the same"):
        assert [c.clip_id for c in read_own_clips(tmp_path / "mixed", 10.0, frames_fps=10.0)] == ["b"]
    monkeypatch.chdir(tmp_path / "parked" / "image_2")
    assert [c.clip_id for c in read_own_clips(".", 10.0, frames_fps=10.0)] == ["image_2"]

    if not write_mp4(tmp_path / "own" / "drive.mp4", 30, 30.0):
        pytest.skip("this OpenCV cannot write mp4")
    write_mp4(tmp_path / "own" / "drive.avi", 30, 30.0)
    with pytest.raises(ValueError, match=r"drive.avi and .*drive.mp4 make one clip name 'drive'"):
        read_own_clips(tmp_path / "own", 10.0)
    (tmp_path / "own" / "drive.avi").unlink()

    cut = tmp_path / "own" / "cut.avi"  # a dashcam copy cut short: its header still says 60 frames
    writer = cv2.VideoWriter(str(cut), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (48, 24))
    for _ in range(60):
        writer.write(np.random.default_rng(0).integers(0, 255, (24, 48, 3), dtype=np.uint8))
    writer.release()
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    with pytest.warns(LabelWarning, match=r"cut.avi: its header says 60 frames but \d+ decode") as said:
        shortened, video = read_own_clips(tmp_path / "own", 10.0)
    assert len(said) == 1  # the whole mp4 is not counted (its last frame decodes)
    decoded = int(re.search(r"but (\d+) decode", str(said[0].message)).group(1))
    assert 0 < decoded < 60 and shortened.source_steps[-1] < decoded
    assert len(AccidentDataset.source_images(shortened, 0, shortened.n_frames)) == shortened.n_frames
    kept = []
    real = readers.read_video_frames
    monkeypatch.setattr(
        "domains.driving.accident.data.read_video_frames", lambda *a, **k: kept.append(k["keep"]) or real(*a, **k)
    )
    assert len(AccidentDataset.source_images(video, 0, video.n_frames)) == 10 and kept == [set(range(0, 30, 3))]

    data = write_accident_clips(tmp_path / "clips", {"crash": 1, "near_miss": 1, "normal": 1}, fps=10.0)
    dm = AccidentDataModule(data_path=str(data), predict_path=str(tmp_path / "own"), max_objects=4)
    dm.setup("predict")
    assert dm.own_clips_fps == 10.0
    task = AccidentTask(network=AccidentAnticipator(input_kind="frames", backbone="tiny_cnn", hidden=8))
    task._trainer = SimpleNamespace(datamodule=dm)
    checkpoint = {"state_dict": task.state_dict(), "datamodule_hyper_parameters": {"synthetic": {"fps": 15}}}
    with pytest.raises(ValueError, match=r"learnt at 15 fps .*synthetic.fps.*read own clips at 10 fps"):
        task.on_load_checkpoint(checkpoint)
    task.on_load_checkpoint({**checkpoint, "datamodule_hyper_parameters": {"data_path": str(data)}})  # 10 fps
    with pytest.raises(ValueError, match="predict_detector and predict_fps are for --data.predict_path"):
        AccidentDataModule(predict_detector="det.ckpt")


def test_own_clips_read_the_frames_their_model_steps_name(tmp_path):
    """Resampling reads the frames the steps name (0, 3, 6 ... of a 30 fps clip at 10 fps), in a video and in a
    frame folder; the rate a checkpoint learnt at comes from each kind of data settings; a video and a frame
    folder of one name are refused; predict_fps must be a rate."""
    import json

    from domains.driving.accident.data import training_fps
    from domains.driving.accident.readers import read_own_clips, read_video_frames

    video = tmp_path / "own" / "grey.avi"
    video.parent.mkdir(parents=True)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (32, 16))
    if not writer.isOpened():
        pytest.skip("this OpenCV cannot write MJPG")
    for k in range(12):
        writer.write(np.full((16, 32, 3), 8 * k, np.uint8))  # frame k is grey 8k
    writer.release()
    (clip,) = read_own_clips(video, 10.0)
    means = [float(im.mean()) for im in AccidentDataset.source_images(clip, 0, clip.n_frames)]
    np.testing.assert_allclose(means, [0, 24, 48, 72], atol=3)  # frames 0, 3, 6, 9
    assert len(read_video_frames(video, start=0, stop=7, keep={0, 3, 6})) == 3

    frames = tmp_path / "folder"
    paths = [frames / f"{t:04d}.png" for t in range(12)]
    frames.mkdir()
    for t, path in enumerate(paths):
        cv2.imwrite(str(path), np.full((8, 8, 3), 8 * t, np.uint8))
    (clip,) = read_own_clips(frames, 10.0, frames_fps=30.0)
    assert clip.frames == paths[::3] and clip.source_steps.tolist() == [0, 3, 6, 9]

    (tmp_path / "clips" / "annotations").mkdir(parents=True)
    (tmp_path / "clips" / "annotations" / "a.json").write_text(json.dumps({"fps": 20}))
    assert training_fps({"data_path": str(tmp_path / "clips")})[0] == 20
    assert training_fps({"data_format": "npz", "feature_fps": 30})[0] == 30
    assert training_fps({"data_format": "ccd"})[0] == 10

    (tmp_path / "own" / "grey").mkdir()
    cv2.imwrite(str(tmp_path / "own" / "grey" / "0001.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="'grey' is both a video and a frame folder"):
        read_own_clips(tmp_path / "own", 10.0, frames_fps=10.0)
    with pytest.raises(ValueError, match="predict_fps must be a frame rate > 0, got 0"):
        AccidentDataModule(predict_path=str(tmp_path / "own"), predict_fps=0)
    with pytest.raises(ValueError, match="predict_detector and predict_fps are for --data.predict_path"):
        AccidentDataModule(predict_fps=30)


def test_predict_on_own_clips_warns_of_a_frame_shape_unlike_the_boxes_networks(tmp_path, monkeypatch):
    """A 16:9 dashcam clip's boxes reach a boxes-only network squeezed 2x in height into its wider input frame
    (3 of 10 test crash clips lost their alarm): the demo page warned of it, ``predict`` on own clips said
    nothing. A clip at the network's shape is not named."""
    import warnings

    from domains.driving.accident.__main__ import main
    from tests.driving.accident.layouts import write_clip_frames
    from tests.driving.accident.test_task import _cli_args

    data = write_accident_clips(tmp_path / "clips", {"crash": 1, "near_miss": 1, "normal": 1}, fps=10.0)
    write_clip_frames(tmp_path / "own" / "dash", 4, size=(64, 36))  # 16:9
    write_clip_frames(tmp_path / "own" / "road", 4, size=(64, 18))  # the network's 3.56:1
    # the detector finds one box a frame (the boxes network needs objects to run at all)
    box = {"boxes": np.array([[4.0, 4.0, 20.0, 16.0]]), "scores": np.array([0.9]), "labels": np.array([0])}
    monkeypatch.setattr("domains.driving.detection.predict.detect_objects", lambda model, frame: box)
    monkeypatch.chdir(tmp_path)
    own = ["--data.predict_path", str(tmp_path / "own"), "--data.predict_fps", "10", "--ckpt_path", "none"]
    own += ["--data.predict_detector", str(_tiny_detector(tmp_path / "detector.ckpt"))]
    own += ["--data.image_size", "[18, 64]", "--model.predict_dir", str(tmp_path / "pred")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["predict", *_cli_args(data, *own)])  # quick.yaml: the boxes-only network
    said = [str(w.message) for w in caught if str(w.message).startswith("--data.predict_path")]
    expected = (
        "--data.predict_path clip dash: 64x36 frames (1.78:1), but the network reads only the objects' boxes, "
        "scaled to its 64x18 input frame (3.56:1), so the objects' boxes are squeezed 2.0x in height against "
        "what it learnt: expect missed and late alarms. A clip cropped to the road band at about 3.6:1 is "
        "closer to what it learnt."
    )
    assert said == [expected]
    assert (tmp_path / "pred" / "dash" / "risk.csv").is_file()  # a warning, not a refusal


def test_own_clips_of_one_frame_shape_are_named_in_one_warning():
    """A folder of 7 dashcam videos of one size: one warning naming the first 5, not 7 alike; a network reading
    frames gets none (the boxes-only rule); a taller clip's boxes are stretched."""
    from domains.driving.accident.data import own_clip_shape_warnings
    from domains.driving.accident.readers import AccidentClip

    def clip(name: str, size: tuple[int, int]) -> AccidentClip:
        video = Path(f"{name}.mp4")
        return AccidentClip(name, "unknown", 10.0, 4, -1, video, video=video, size=size)

    clips = [clip(f"drive{k}", (1280, 720)) for k in range(7)] + [clip("at_shape", (1280, 384))]
    (said,) = own_clip_shape_warnings(clips, (96, 320), "boxes")
    named = "--data.predict_path 7 clips (drive0, drive1, drive2, drive3, drive4 and 2 more): 1280x720 frames"
    assert said.startswith(f"{named} (1.78:1)")
    assert "squeezed 1.9x in height" in said and "at_shape" not in said  # 1280x384: 3.33:1, the network's
    assert own_clip_shape_warnings(clips, (96, 320), "frames") == []
    (said,) = own_clip_shape_warnings([clip("wide", (1280, 200))], (96, 320), "boxes")  # 6.4:1
    assert "clip wide: 1280x200 frames (6.40:1)" in said and "stretched 1.9x in height" in said
