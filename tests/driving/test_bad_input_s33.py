"""Bad input found by the s33 audit, driving side: one undecodable frame of one own clip no longer ends accident
predict for every clip; a misspelled ``--data.class_map`` key is warned of; ``--model.predict_dir`` naming a
file is refused before anything is written; YOLO boxes given in pixels say so; a broken link among KITTI's
images is named before the label file that lost its image is refused."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from domains.driving.formats import DropLog, LabelFormatError, LabelWarning, read_kitti_dir, read_yolo
from shared.files import BrokenLinkWarning
from tests.driving.layouts import write_kitti
from tests.helpers import write_image


def _own_clips_one_cut_short(root: Path) -> Path:
    """``root/good`` and ``root/zbad``, 6 frames each; zbad's third frame cut short (its header still reads)."""
    from tests.driving.accident.layouts import write_clip_frames

    write_clip_frames(root / "good", 6)
    frames = write_clip_frames(root / "zbad", 6, seed=1)
    data = frames[2].read_bytes()
    frames[2].write_bytes(data[: len(data) // 2])
    return frames[2]


def test_an_undecodable_frame_drops_its_clip_and_the_others_are_predicted(tmp_path):
    """The frames of own clips are decoded lazily (the dataset's ``__getitem__``): a cut-short one ended predict
    for every clip, after the clips before it had been written. Now the clip is dropped when read, counted with
    the unreadable videos, and every item of the dataset reads."""
    from domains.driving.accident.data import AccidentDataModule

    bad = _own_clips_one_cut_short(tmp_path / "own")
    dm = AccidentDataModule(predict_path=str(tmp_path / "own"), predict_fps=10.0, num_workers=0)
    with pytest.warns(LabelWarning) as record:
        dm.setup("predict")
    (said,) = [str(r.message) for r in record if str(r.message).startswith("--data.predict_path")]
    assert "dropped unreadable_frame: 1 (" in said and f"{bad}: cannot decode image" in said
    assert "clip zbad is not predicted" in said
    dataset = dm.datasets["predict"]
    assert [clip.clip_id for clip in dataset.clips] == ["good"]
    assert dataset[0]["frames"].shape[:2] == (6, 3)  # the kept clip reads whole


def test_the_detector_pass_drops_a_clip_whose_frames_do_not_read(tmp_path, monkeypatch):
    """``--data.predict_detector`` decodes every frame before predict: a clip whose frames fail there (checked
    whole or not) is counted, and the other clips get their tracks."""
    from domains.driving.accident.data import AccidentDataModule
    from domains.driving.accident.readers import read_own_clips
    from domains.driving.detection.task import DetectionTask

    bad = _own_clips_one_cut_short(tmp_path / "own")
    clips = read_own_clips(tmp_path / "own", 10.0, frames_fps=10.0)  # headers only: both clips
    assert [clip.clip_id for clip in clips] == ["good", "zbad"]
    (tmp_path / "det.ckpt").write_bytes(b"x")
    detector = SimpleNamespace(model=None, predict_score_thresh=0.5, hparams=SimpleNamespace(class_names=["Car"]))
    monkeypatch.setattr(DetectionTask, "load_checked", classmethod(lambda cls, path: detector))
    one_box = {"boxes": np.array([[4.0, 4.0, 20.0, 16.0]]), "scores": np.array([0.9]), "labels": np.array([0])}
    monkeypatch.setattr("domains.driving.detection.predict.detect_objects", lambda model, frame: one_box)
    dm = AccidentDataModule(
        predict_path=str(tmp_path / "own"), predict_fps=10.0, predict_detector=str(tmp_path / "det.ckpt")
    )
    log = DropLog()
    kept = dm._detect_tracks(clips, log)
    assert [clip.clip_id for clip in kept] == ["good"] and kept[0].tracks
    assert log.counts == {"unreadable_frame": 1} and log.examples["unreadable_frame"][0].startswith(f"{bad}: ")


def test_a_class_map_key_of_no_type_in_the_data_is_warned_with_the_near_type(tmp_path):
    """``--data.class_map '{Vna: Car}'`` renamed nothing and the vans were dropped, without a word of the map."""
    from domains.driving.detection.data import DetectionDataModule

    root = write_kitti(tmp_path / "kitti", n=4, semantic=False)  # cars and vans
    dm = DetectionDataModule(data_path=str(root), class_names=["Car"], class_map={"Vna": "Car"}, num_workers=0)
    with pytest.warns(UserWarning) as record:
        dm.setup("fit")
    (said,) = [str(r.message) for r in record if "--data.class_map key" in str(r.message)]
    assert said == (
        "DetectionDataModule: --data.class_map key 'Vna' is the type of no object in the data, so it renames "
        "nothing; the data's types are Car (4), Van (4), DontCare (4); did you mean 'Van'?"
    )
    fine = DetectionDataModule(data_path=str(root), class_names=["Car"], class_map={"Van": "Car"}, num_workers=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*--data.class_map key")
        fine.setup("fit")


@pytest.mark.parametrize("below", [False, True])
def test_a_predict_dir_that_is_a_file_is_refused_before_predicting(tmp_path, below):
    """``--model.predict_dir`` naming a file failed after the first batch with NotADirectoryError on
    ``<file>/data``, naming no option."""
    from tests.helpers import detection_task

    task = detection_task(
        backbone="tiny_cnn", backbone_kwargs={"width": 8}, class_names=["Car"], input_size=(32, 64),
        fpn_channels=32, head_convs=1,
    )  # fmt: skip
    file = tmp_path / "000000.txt"
    file.write_text("Car 0 0 0 1 1 2 2 0 0 0 0 0 0 0\n")
    task.predict_dir = str(file / "out" if below else file)
    where = f" lies below {file}, which" if below else ""
    with pytest.raises(NotADirectoryError, match=rf"^--model.predict_dir {task.predict_dir}:{where} is a file, not"):
        task.setup("predict")
    assert file.read_text().startswith("Car ")
    task.predict_dir = str(tmp_path / "new" / "pred")  # a folder to make: fine
    task.setup("predict")


def _yolo(root: Path, lines: str) -> Path:
    write_image(root / "images" / "train" / "a.png", width=64, height=32)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text(lines)
    (root / "data.yaml").write_text("train: images/train\nnames: [Car]\n")
    return root / "data.yaml"


def test_yolo_boxes_in_pixels_are_said_to_look_like_pixels(tmp_path):
    """YOLO boxes are fractions of the image: pixels were all dropped as "outside the image", with no hint."""
    data = _yolo(tmp_path / "px", "0 20 10 8 6\n0 40 16 10 8\n")
    with pytest.warns(LabelWarning) as record:
        assert read_yolo(data)[0].objects == []
    (said,) = [str(r.message) for r in record]
    assert "dropped outside_image: 2 (" in said
    assert said.count("YOLO coordinates are fractions of the image size (0-1), this file's look like pixels") == 2
    # one fraction box spilling past the edge among good ones: no hint
    spill = _yolo(tmp_path / "spill", "0 0.5 0.5 0.2 0.2\n0 0.98 0.5 0.2 0.2\n")
    with pytest.warns(LabelWarning) as record:
        assert len(read_yolo(spill)[0].objects) == 1
    (said,) = [str(r.message) for r in record]
    assert "dropped outside_image: 1 (" in said and "look like pixels" not in said


def test_a_broken_link_among_kitti_images_is_named_before_its_label_is_refused(tmp_path):
    """``000099.png`` a dangling link: fit said only "label file has no image 000099.*"."""
    root = write_kitti(tmp_path / "kitti", n=2, semantic=False)
    split = root / "training"
    os.symlink("/nonexistent/x.png", split / "image_2" / "000099.png")
    (split / "label_2" / "000099.txt").write_text((split / "label_2" / "000000.txt").read_text())
    named = r"1 broken link \(000099\.png: a link to /nonexistent/x\.png, which does not exist\)"
    with pytest.warns(BrokenLinkWarning, match=named), pytest.raises(LabelFormatError, match="has no image 000099"):
        read_kitti_dir(root)
