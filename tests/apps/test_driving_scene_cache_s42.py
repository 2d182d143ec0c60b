"""The driving page's scene cache was keyed by path alone: an image or mask overwritten in place (a re-exported
frame, a corrected mask) kept showing the old pixels until the server restarted. The key now carries each
file's (mtime, size)."""

from __future__ import annotations

import os

import cv2
import numpy as np

from apps.views.driving import _file_stamps, _read_scene


def _write(path, value: int, size: tuple[int, int], when_ns: int) -> None:
    cv2.imwrite(str(path), np.full((size[1], size[0], 3), value, np.uint8))
    os.utime(path, ns=(when_ns, when_ns))  # two writes within one clock tick would share an mtime


def test_an_image_overwritten_in_place_is_read_again(tmp_path):
    image = tmp_path / "scene.png"
    _write(image, 40, (16, 8), 1_000_000_000)
    first = _read_scene(str(image), None, _file_stamps(str(image), None))
    assert first[1].shape == (8, 16, 3) and int(first[1][0, 0, 0]) == 40

    _write(image, 200, (16, 8), 2_000_000_000)  # same name and size in pixels, new content
    second = _read_scene(str(image), None, _file_stamps(str(image), None))
    assert int(second[1][0, 0, 0]) == 200


def test_a_mask_overwritten_in_place_is_read_again(tmp_path):
    image, mask = tmp_path / "scene.png", tmp_path / "scene_mask.png"
    _write(image, 90, (16, 8), 1_000_000_000)
    cv2.imwrite(str(mask), np.zeros((8, 16), np.uint8))
    os.utime(mask, ns=(1_000_000_000, 1_000_000_000))
    assert int(_read_scene(str(image), str(mask), _file_stamps(str(image), str(mask)))[2].max()) == 0

    cv2.imwrite(str(mask), np.ones((8, 16), np.uint8))
    os.utime(mask, ns=(2_000_000_000, 2_000_000_000))
    assert int(_read_scene(str(image), str(mask), _file_stamps(str(image), str(mask)))[2].max()) == 1


def test_stamps_are_none_for_no_path_or_no_file(tmp_path):
    image = tmp_path / "scene.png"
    _write(image, 1, (4, 4), 3_000_000_000)
    stamps = _file_stamps(None, str(tmp_path / "gone.png"), str(image))
    assert stamps == (None, None, (3_000_000_000, image.stat().st_size))
