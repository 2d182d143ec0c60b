"""Output names differing only by case are one file on macOS and Windows disks: predict refuses or separates them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from domains.driving.common import predict_images
from domains.medical.data import MedicalDataError, build_predict_dataset
from shared.files import distinct_names
from tests.helpers import write_image

pytestmark = pytest.mark.usefixtures("one_thread")


def test_stems_differing_by_case_are_repeats_and_get_their_folder():
    """``a/Road.png`` and ``b/road.png`` would write ``Road.*`` and ``road.*``, one file on a Mac."""
    paths = [Path("/d/a/Road.png"), Path("/d/b/road.png"), Path("/d/b/other.png")]
    assert distinct_names(paths) == ["a__Road", "b__road", "other"]


def test_names_already_distinct_stay_unchanged():
    paths = [Path("/d/a/x.png"), Path("/d/b/x.png"), Path("/d/a/Road.png"), Path("/d/b/lane.png")]
    assert distinct_names(paths) == ["a__x", "b__x", "Road", "lane"]


def test_driving_predict_refuses_two_images_whose_names_differ_only_by_case(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    write_image(folder / "Road.png")
    write_image(folder / "road.jpg")
    write_image(folder / "lane.png")
    both = r"1 image names repeat \(e\.g\. .*(Road\.png|road\.jpg) and .*(road\.jpg|Road\.png)\)"
    with pytest.raises(ValueError, match=both):
        predict_images(folder)


def test_driving_predict_separates_same_name_by_case_in_two_folders(tmp_path):
    write_image(tmp_path / "a" / "Road.png")
    write_image(tmp_path / "b" / "road.png")
    names = sorted(n for *_, n in predict_images(tmp_path))
    assert names == ["a__Road", "b__road"]


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((8, 8), 100, np.uint8))


def test_medical_predict_refuses_two_images_whose_names_differ_only_by_case(tmp_path):
    _png(tmp_path / "Scan.png")
    _png(tmp_path / "scan.jpg")
    with pytest.raises(
        MedicalDataError, match=r"(Scan\.png and .*scan\.jpg|scan\.jpg and .*Scan\.png) make one"
    ):
        build_predict_dataset(tmp_path, 16)


def test_medical_predict_separates_same_name_by_case_in_two_folders(tmp_path):
    _png(tmp_path / "a" / "Scan.png")
    _png(tmp_path / "b" / "scan.png")
    assert sorted(build_predict_dataset(tmp_path, 16).ids) == ["a__Scan", "b__scan"]


def test_labelled_images_whose_ids_differ_only_by_case_are_refused_naming_both():
    """``A.png`` beside ``a.jpg``: written as ``label_2/A.txt`` and ``label_2/a.txt``, one file on macOS / Windows."""
    from domains.driving.formats import ImageAnnotation, LabelFormatError, name_repeated_stems

    anns = [ImageAnnotation("imgs/A.png", 10, 10), ImageAnnotation("imgs/a.jpg", 10, 10)]
    with pytest.raises(LabelFormatError, match=r"two images share the id 'a': imgs/A\.png, imgs/a\.jpg"):
        name_repeated_stems(anns, "imgs")
    apart = [ImageAnnotation("x/A.png", 10, 10), ImageAnnotation("y/a.png", 10, 10)]
    name_repeated_stems(apart, "imgs")  # in two folders: ids of their own
    assert [ann.name for ann in apart] == ["x__A", "y__a"]
