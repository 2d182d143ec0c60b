"""Accident start-up (s38 speed audit): a stage reads only the clips of its splits, chosen from the set's
listing (the split pinned to the one every clip read gave), boxes-only stages read one frame header per clip,
a track's boxes are checked in one numpy pass with the same errors, and the demo reads only the clip it shows."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from apps import demo_models as dm
from domains.driving.accident import readers
from domains.driving.accident.data import AccidentDataModule
from domains.driving.accident.readers import read_ccd_clip, read_ccd_layout
from domains.driving.formats import LabelFormatError, LabelWarning
from tests.driving.accident.layouts import H, W, ccd_line, write_accident_clips, write_clip_frames

KINDS = {"crash": 8, "near_miss": 6, "normal": 7}  # clip ids 000000-000007 crash, -000013 near miss, -000020


def synthetic_set(tmp_path: Path) -> Path:
    return write_accident_clips(tmp_path / "synthetic", KINDS, n_frames=4, toa=2)


def ccd_set(tmp_path: Path) -> Path:
    """Real CCD's numbering: Normal/ counts from 000001 as Crash-1500/ does (normal_000001 ...); no JSON."""
    root = tmp_path / "ccd"
    for i in range(1, 6):
        write_clip_frames(root / "videos/Crash-1500" / f"{i:06d}", 3, seed=i)
    for i in range(1, 8):
        write_clip_frames(root / "videos/Normal" / f"{i:06d}", 3, seed=10 + i)
    lines = [ccd_line(f"{i:06d}", 3, 1) for i in range(1, 6)]
    (root / "videos/Crash-1500.txt").write_text("\n".join(lines) + "\n")
    return root


def module(root: Path, **settings) -> AccidentDataModule:
    return AccidentDataModule(data_path=str(root), image_size=(12, 96), num_workers=0, **settings)


def ids(clips) -> list[str]:
    return [clip.clip_id for clip in clips]


# the splits these sets had when every clip was read before the split (the code before s38), in split order
SPLITS_BEFORE = {
    "synthetic val 0.2 test 0.25 seed 3": (
        synthetic_set, {"val_fraction": 0.2, "test_fraction": 0.25, "split_seed": 3}, {
            "train": ["000006", "000003", "000005", "000000", "000013", "000009", "000011", "000020", "000014",
                      "000017", "000016"],
            "val": ["000001", "000007", "000008", "000018"],
            "test": ["000004", "000002", "000010", "000012", "000019", "000015"],
        },
    ),
    "synthetic max_clips 9 seed 1": (
        synthetic_set, {"max_clips": 9, "split_seed": 1}, {
            "train": ["000002", "000008", "000016"], "val": ["000001", "000009", "000014"],
            "test": ["000000", "000010", "000015"],
        },
    ),
    "ccd val 0.2 test 0.3 seed 2": (
        ccd_set, {"data_format": "ccd", "val_fraction": 0.2, "test_fraction": 0.3, "split_seed": 2}, {
            "train": ["000002", "000004", "000006", "normal_000001", "normal_000002", "normal_000005"],
            "val": ["000001", "normal_000003"],
            "test": ["000003", "000005", "normal_000004", "000007"],
        },
    ),
}  # fmt: skip


@pytest.fixture
def clips_read(monkeypatch) -> list[str]:
    """The ids of the clips read (``_read_ccd_clip`` called), in order."""
    read = []
    original = readers._read_ccd_clip

    def counted(layout, entry, *args, **kwargs):
        read.append(entry.clip_id)
        return original(layout, entry, *args, **kwargs)

    monkeypatch.setattr(readers, "_read_ccd_clip", counted)
    return read


@pytest.mark.parametrize("case", sorted(SPLITS_BEFORE))
def test_each_stage_reads_only_its_splits_and_the_split_is_the_one_of_every_clip_read(tmp_path, clips_read, case):
    """validate read all 200 clips of the generated set for its 30; predict of 2 clips spent 6.5 s reading them.
    The split is chosen from the listing (ids, kinds) and is exactly the one of the clips read whole."""
    make, settings, expected = SPLITS_BEFORE[case]
    root = make(tmp_path)
    for stage, names in (("validate", ["val"]), ("test", ["test"]), ("predict", ["test"]), ("fit", ["train", "val"])):
        data = module(root, **settings)
        clips_read.clear()
        data.setup(stage)
        assert sorted(clips_read) == sorted(i for name in names for i in expected[name]), stage
        assert {name: ids(clips) for name, clips in data.splits.items()} == {n: expected[n] for n in names}, stage
    data.setup("test")  # the fitted module reads its test clips when asked for them, once
    assert {name: ids(clips) for name, clips in data.splits.items()} == expected
    clips_read.clear()
    data.setup("validate")
    assert clips_read == []
    every = module(root, **settings)
    every.setup()  # no stage: every split
    assert {name: ids(clips) for name, clips in every.splits.items()} == expected


def test_a_clip_that_fails_to_read_leaves_the_others_in_their_splits(tmp_path):
    """A listed clip that fails to read is left out of its split (counted); the other clips keep theirs. A split
    none of whose clips reads is an error naming them, not an empty validation."""
    make, settings, expected = SPLITS_BEFORE["synthetic val 0.2 test 0.25 seed 3"]
    root = make(tmp_path)
    meta = json.loads((root / "annotations/000007.json").read_text())  # a val clip
    (root / "annotations/000007.json").write_text(json.dumps({**meta, "fps": -1}))
    data = module(root, **settings)
    with pytest.warns(LabelWarning, match=r"frame_rate: 1 \(.*000007\.json: missing or invalid frame rate -1"):
        data.setup("validate")
    assert ids(data.splits["val"]) == [i for i in expected["val"] if i != "000007"]
    for vid in expected["val"]:
        path = root / "annotations" / f"{vid}.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "fps": -1}))
    with pytest.warns(LabelWarning), pytest.raises(ValueError, match=r"none of the 4 clips of the val split can be"):
        module(root, **settings).setup("validate")
    with pytest.raises(LabelFormatError, match=r"000001\.json: missing or invalid frame rate -1"):
        module(root, strict=True, **settings).setup("validate")
    module(root, strict=True, **settings).setup("test")  # the broken val clips are not read for test


def test_boxes_only_stages_read_one_frame_header_per_clip_and_predict_checks_them_all(tmp_path, monkeypatch):
    """The frame-size check opened every frame's header (10,000 for the generated set) for a network that reads no
    frame; with train_frames false a clip's first header is read (its size), and predict, which decodes the test
    clips for its GIFs, checks them all."""
    root = synthetic_set(tmp_path)
    headers = []
    original = readers.image_size
    monkeypatch.setattr(readers, "image_size", lambda path: headers.append(path) or original(path))
    boxes_only = module(root, train_frames=False)
    boxes_only.setup("validate")
    val = boxes_only.splits["val"]
    assert sorted(headers) == sorted(clip.frames[0] for clip in val)
    headers.clear()
    module(root).setup("validate")  # frames decoded: every frame's header
    assert len(headers) == 4 * len(val)
    # a test clip with a frame of another size: kept where no frame is decoded, left out of predict's GIFs
    data = module(root, train_frames=False)
    data.setup("test")
    test = data.splits["test"]
    mixed = test[0].frames[2]
    cv2.imwrite(str(mixed), np.zeros((H + 2, W, 3), np.uint8))
    data.setup("test")
    assert ids(data.datasets["test"].clips) == ids(test)
    with pytest.warns(LabelWarning, match=rf"frame_size: 1 \({re.escape(str(mixed))}: frame is {W}x{H + 2} but"):
        data.setup("predict")
    assert ids(data.predict_dataloader().dataset.clips) == ids(test[1:])
    predicting = module(root, train_frames=False)
    with pytest.warns(LabelWarning, match=r"frame_size: 1"):
        predicting.setup("predict")  # read for predict: checked as it is read
    assert ids(predicting.predict_dataloader().dataset.clips) == ids(test[1:])


# --------------------------------------------------------------------------------------------- track boxes


def track(boxes: list) -> dict:
    return {"tracks": {"3": {"box": boxes}}}


def test_track_boxes_are_checked_at_once_with_the_same_errors(monkeypatch):
    """A Python check per box (776k calls for the generated set) ran in every read; one numpy pass vouches for a
    track, and only a track it does not vouch for is read box by box, naming the first bad one as before."""
    calls = []
    original = readers._plausible_box
    monkeypatch.setattr(readers, "_plausible_box", lambda box: calls.append(box) or original(box))
    good = [None, [1.5, 2, 10, 20.25], [0, 0, 0, 0], [-5, 3, 16384, 7], None]
    tracks, _ = readers._tracks_from_json(track(good), 5, Path("a.json"))
    expected = np.array([[np.nan] * 4, [1.5, 2, 10, 20.25], [0] * 4, [-5, 3, 16384, 7], [np.nan] * 4], np.float32)
    np.testing.assert_array_equal(tracks[3], expected)
    assert tracks[3].dtype == np.float32 and calls == []
    # numbers written as text are read as the box-by-box check read them
    tracks, _ = readers._tracks_from_json(track([["1", "2", "3", "4"], None]), 2, Path("a.json"))
    np.testing.assert_array_equal(tracks[3], np.array([[1, 2, 3, 4], [np.nan] * 4], np.float32))
    bad = {
        "[1, 2, 0, 4]": [1, 2, 0, 4],  # x1 > x2
        "[1, 2, 3]": [1, 2, 3],
        "[1, 2, 3, 'x']": [1, 2, 3, "x"],
        "[1, 2, 3, None]": [1, 2, 3, None],
        "[1, 2, 3, nan]": [1, 2, 3, float("nan")],
        "[1, 2, 3, 16385]": [1, 2, 3, 16385],
        "{'x1': 1}": {"x1": 1},
        "'1234'": "1234",
        "[[1], [2], [3], [4]]": [[1], [2], [3], [4]],
        f"[0, 0, {10**400}, 1]": [0, 0, 10**400, 1],  # a bare OverflowError before
    }
    for shown, box in bad.items():
        message = rf"b\.json: track 3, frame 1: box {re.escape(shown)} is not \[x1, y1, x2, y2\] pixels"
        with pytest.raises(LabelFormatError, match=message):
            readers._tracks_from_json(track([[0, 0, 1, 1], box, [0, 0, 1, 1]]), 3, Path("b.json"))


# ------------------------------------------------------------------------------------------------ listing


@pytest.mark.parametrize(
    "text",
    [
        '{"vid": "1", "size": [3, 4], "kind": "near_miss", "tracks": {"1": {"box": [[0, 0, 1, 1]]}}}',
        '{"tracks": {"1": {"box": [[0, 0, 1, 1]]}}, "kind": "normal"}',
        '{"tracks": {"1": {"kind": "crash"}}}',  # a nested kind is not the clip's
        '{"kind": "near_miss", "kind": "normal"}',  # json.loads keeps the last
        '{"kind": "near_miss", "\\u006bind": "normal"}',
        '  {\n "kind" :\t"near_miss" } ',
        "{}",
        '{"kind": ["crash"]}',
    ],
)
def test_a_clips_kind_is_read_from_the_keys_before_it_as_json_reads_it(tmp_path, text):
    """The split needs every clip's kind; parsing whole annotations was the larger part of a set's listing."""
    path = tmp_path / "a.json"
    path.write_text(text)
    assert readers._json_head(path, {"kind": "default"})["kind"] == json.loads(text).get("kind", "default")


def test_a_clips_kind_stops_at_the_kind_and_bad_json_is_said_as_before(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('{"kind": "normal", "tracks": {"1": {"box": [[0, 0, 1, 1]]}}}')
    readers._json_head(path, {"kind": "crash"})["kind"]
    assert readers._json_head(path, {"kind": "crash"})["kind"] == "normal"
    path.write_text('{"kind": "normal", "tracks": ')  # cut short after the kind: the full read says so
    assert readers._json_head(path, {"kind": "crash"})["kind"] == "normal"
    with pytest.raises(LabelFormatError, match=r"a\.json: not valid JSON \(Expecting value: line 1 column 30"):
        readers._json_object(path)
    path.write_text('{"vid": "1", "kind" "normal"}')
    with pytest.raises(LabelFormatError, match=r"a\.json: not valid JSON \(Expecting ':' delimiter"):
        readers._json_head(path, {"kind": "crash"})["kind"]
    path.write_bytes(b'{"kind": "\xff"}')
    with pytest.raises(LabelFormatError, match=r"a\.json: not valid JSON \('utf-8' codec can't decode"):
        readers._json_head(path, {"kind": "crash"})["kind"]


def test_an_annotation_that_is_no_json_object_is_bad_json_not_an_attribute_error(tmp_path):
    root = write_accident_clips(tmp_path / "clips", {"crash": 1, "near_miss": 1, "normal": 1}, n_frames=4, toa=2)
    (root / "annotations/000001.json").write_text("[1, 2]")
    with pytest.raises(LabelFormatError, match=r"000001\.json: expected a JSON object of the clip's keys, got a list"):
        read_ccd_layout(root, strict=True, require_json=True)
    with pytest.warns(LabelWarning, match=r"bad_json: 1"):
        assert ids(read_ccd_layout(root, require_json=True)) == ["000000", "000002"]


# ------------------------------------------------------------------------------------------------- demo


def test_the_demo_reads_only_the_clip_it_shows(tmp_path, clips_read):
    """Picking a clip on the demo page read every clip of the set (7.1 s for 200) to keep one."""
    root = write_accident_clips(tmp_path / "clips", {"crash": 2, "near_miss": 2, "normal": 2}, n_frames=4, toa=2)
    shown = dm.load_accident_clip(root, "000003")
    assert clips_read == ["000003"]
    assert (shown["clip_id"], shown["kind"], shown["frames"].shape) == ("000003", "near_miss", (4, H, W, 3))
    # another clip's problem no longer stops this one; its own is said as the whole read said it
    (root / "annotations/000004.json").write_text("[")
    assert dm.load_accident_clip(root, "000003")["clip_id"] == "000003"
    with pytest.raises(LabelFormatError, match=r"000004\.json: not valid JSON \(Expecting value.*\[bad_json; strict"):
        dm.load_accident_clip(root, "000004")
    for name in ("000009", "normal_000003", "../clips", "", "videos"):
        with pytest.raises(FileNotFoundError, match=rf"no clip '{re.escape(name)}'"):
            dm.load_accident_clip(root, name)
    shutil.copytree(root / "videos/Crash-1500/000000", root / "videos/Crash-1500/000077")
    with pytest.raises(LabelFormatError, match=r"000077: crash clip '000077' has no readable line in Crash-1500"):
        dm.load_accident_clip(root, "000077")


def test_one_clip_read_by_its_id_is_the_clip_the_whole_read_gives(tmp_path):
    root = ccd_set(tmp_path)
    every = {clip.clip_id: clip for clip in read_ccd_layout(root, strict=True)}
    for clip_id in ("000001", "normal_000001", "000007"):
        one = read_ccd_clip(root, clip_id, strict=True)
        assert (one.clip_id, one.kind, one.toa, one.frames) == (clip_id, *(getattr(every[clip_id], k) for k in (
            "kind", "toa", "frames")))  # fmt: skip
    assert read_ccd_clip(root, "normal_000007") is None  # 000007 has no crash clip: its id is its number
    shutil.rmtree(root / "videos/Normal/000002")
    (root / "videos/Normal/000002").mkdir()
    with pytest.raises(LabelFormatError, match=r"Normal/000002: no video or frames for clip '000002'"):
        read_ccd_clip(root, "normal_000002", strict=True)
