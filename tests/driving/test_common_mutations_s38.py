"""Shared driving readers whose lines no test pinned (a mutation audit changed each and every test still
passed): a colour label PNG refused, not read as grey; predict's unreadable-only folder and repeating names; the
class sorting of ``sort_objects``; ``to_image_tensor`` on tensors and float arrays; sequence-map comments, the
devkit pair taken whole and header ids in any case; ``max_items`` cut in id order; the one-JSON rule of
``data_source``; the Cityscapes root checks."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from domains.driving.common import (
    cityscapes_splits,
    data_source,
    find_sequence_groups,
    is_cityscapes_root,
    predict_images,
    read_label_map,
    sequence_map_text,
    sort_objects,
    split_by_sequence,
    to_image_tensor,
)
from domains.driving.formats import LabelFormatError
from tests.helpers import write_image


# ------------------------------------------------------------------------------------------- label maps
def test_a_three_channel_mask_whose_green_differs_is_refused_not_read_as_grey(tmp_path):
    """Blue and red agree, green differs: not a grey mask, so an error (the channels must all agree)."""
    mask = np.zeros((4, 5, 3), np.uint8)
    mask[..., 1] = 7  # B = R = 0, G = 7
    path = tmp_path / "mask.png"
    cv2.imwrite(str(path), mask)
    with pytest.raises(LabelFormatError, match="single-channel"):
        read_label_map(path)


def test_a_colour_mask_is_refused_unless_colour_is_asked_for(tmp_path):
    """A plain (non-palette) RGB PNG is refused as a label map; with ``colour`` it comes back as RGB."""
    mask = np.zeros((4, 5, 3), np.uint8)
    mask[..., 2] = 200  # BGR on disk: red
    path = tmp_path / "mask.png"
    cv2.imwrite(str(path), mask)
    with pytest.raises(LabelFormatError, match="must be single-channel, got shape"):
        read_label_map(path)
    rgb = read_label_map(path, colour=True)
    assert rgb.shape == (4, 5, 3) and (rgb[..., 0] == 200).all() and (rgb[..., 1:] == 0).all()


# ------------------------------------------------------------------------------------------- predict_images
def test_a_predict_folder_whose_every_image_is_cut_short_is_an_error(tmp_path):
    """Every image unreadable: an error naming the folder, not an empty prediction run."""
    folder = tmp_path / "photos"
    folder.mkdir()
    whole = write_image(tmp_path / "whole.png", 32, 24)
    data = whole.read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.warns(Warning, match="not predicted"), pytest.raises(LabelFormatError, match="none of its 1"):
        predict_images(folder)


def test_two_images_of_one_name_in_one_folder_are_refused(tmp_path):
    """``a.png`` beside ``a.jpg`` would write one ``a.*`` for both: refused, naming both files."""
    folder = tmp_path / "photos"
    folder.mkdir()
    write_image(folder / "a.png")
    write_image(folder / "a.jpg")
    write_image(folder / "b.png")
    with pytest.raises(ValueError, match="1 image names repeat"):
        predict_images(folder)


# --------------------------------------------------------------------------------------------- sort_objects
def _ann(*types):
    return SimpleNamespace(objects=[SimpleNamespace(type=t) for t in types])


def test_sort_objects_renames_by_class_map_and_keeps_ignore_types_apart():
    """``class_map`` renames first (a Van trained as Car), a map to an ignore type is allowed and ignores the
    object; other types are dropped and counted."""
    per_image, dropped = sort_objects(
        [_ann("Car", "Van", "Tram", "DontCare", "Truck")],
        ["Car", "Pedestrian"],
        {"Van": "Car", "Tram": "DontCare"},
        ("DontCare",),
        "test",
    )
    ((kept, labels, ignored),) = per_image
    assert [o.type for o in kept] == ["Car", "Van"] and labels == [0, 0]
    assert [o.type for o in ignored] == ["Tram", "DontCare"]
    assert dict(dropped) == {"Truck": 1}


def test_sort_objects_refuses_duplicate_class_names():
    with pytest.raises(ValueError, match="duplicate class names"):
        sort_objects([], ["Car", "Car"], {}, (), "test")


# ------------------------------------------------------------------------------------------ to_image_tensor
def test_to_image_tensor_scales_uint8_only():
    """uint8 (numpy or a ToTensorV2 tensor) is divided by 255; float input already in [0, 1] is kept."""
    array = np.full((2, 3, 3), 255, np.uint8)
    assert torch.equal(to_image_tensor(array), torch.ones(3, 2, 3))
    assert torch.equal(to_image_tensor(torch.full((3, 2, 3), 255, dtype=torch.uint8)), torch.ones(3, 2, 3))
    floats = np.full((2, 3, 3), 0.5, np.float32)
    assert torch.equal(to_image_tensor(floats), torch.full((3, 2, 3), 0.5))
    assert torch.equal(to_image_tensor(torch.full((3, 2, 3), 0.5)), torch.full((3, 2, 3), 0.5))


# ----------------------------------------------------------------------------------------- sequence maps
def test_a_half_devkit_pair_is_passed_over_for_a_two_column_map(tmp_path):
    """``mapping/train_mapping.txt`` without ``train_rand.txt`` is no devkit mapping: the two-column
    ``sequences.txt`` beside it is read."""
    (tmp_path / "mapping").mkdir()
    (tmp_path / "mapping" / "train_mapping.txt").write_text("2011_09_26 drive_0005 0000000109\n")
    (tmp_path / "sequences.txt").write_text("000000 drive_a\n000001 drive_b\n")
    assert find_sequence_groups(tmp_path, ["000000", "000001"]) == ["drive_a", "drive_b"]


def test_a_sequence_map_s_comments_are_skipped(tmp_path):
    """``#`` starts a comment, on its own line (a lone ``#`` or ``#word`` too) or after the two columns."""
    (tmp_path / "sequences.txt").write_text("#drives\n#\n000000 drive_a  # the first drive\n000001 drive_b\n")
    assert find_sequence_groups(tmp_path, ["000000", "000001"]) == ["drive_a", "drive_b"]


def test_sequence_map_text_refuses_a_header_id_in_any_case():
    """The reader skips a first column ``id`` / ``Image_ID`` as a header whatever its case: such an id is
    refused, not written to vanish on reading."""
    with pytest.raises(ValueError, match="an id cannot be"):
        sequence_map_text(["ID"], ["drive_a"])


# -------------------------------------------------------------------------------------------- data_source
def test_a_data_folder_holding_two_jsons_is_refused(tmp_path):
    """Two label files where one is wanted: an error naming both, not the first taken."""
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "b.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"exactly one \*\.json file, found \['a.json', 'b.json'\]"):
        data_source(tmp_path, ("*.json",))
    (tmp_path / "b.json").unlink()
    assert data_source(tmp_path, ("*.json",)) == tmp_path / "a.json"


# --------------------------------------------------------------------------------------------- Cityscapes
def test_cityscapes_gtfine_given_as_the_root_names_the_root(tmp_path):
    (tmp_path / "leftImg8bit").mkdir()
    (tmp_path / "gtFine").mkdir()
    with pytest.raises(FileNotFoundError, match=f"give {tmp_path}$"):
        is_cityscapes_root(tmp_path / "gtFine")
    assert is_cityscapes_root(tmp_path)


def test_cityscapes_splits_are_those_both_folders_hold(tmp_path: Path):
    """A split whose maps are missing (leftImg8bit/val without gtFine/val) is not read."""
    for folder in ("leftImg8bit/train", "leftImg8bit/val", "gtFine/train"):
        (tmp_path / folder).mkdir(parents=True)
    assert cityscapes_splits(tmp_path)[2] == ["train"]


def test_split_by_sequence_cuts_max_items_from_the_ids_in_order():
    """Items are sorted by id before ``max_items`` cuts them: the same images whatever order they came in."""
    items = [SimpleNamespace(image_id=i) for i in ("c", "a", "d", "b")]
    with pytest.warns(UserWarning, match="no sequence map"):
        splits = split_by_sequence(items, Path("/nonexistent/split"), (1.0, 0.0, 0.0), seed=0, max_items=2)
    assert sorted(a.image_id for a in splits["train"]) == ["a", "b"]
