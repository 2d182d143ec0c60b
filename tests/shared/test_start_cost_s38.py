"""Start cost (speed audit s38): the LIDC PNG file checks read only the images ``max_items`` keeps, and the
ImageFolder / LIDC listings neither stat every file nor open a PNG twice, still refusing what they refused."""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from domains.medical.data import LIDCPngDataset, MedicalDataError, MedicalDataModule, _cap_indices
from shared.classification import data as classification_data
from shared.classification.data import read_image_folder
from tests.helpers import STRIPE_CLASSES, stripes_folder, write_lidc


def _lidc_val(root: Path, n: int = 6) -> Path:
    """A hand-made LIDC PNG set whose val split is patient P1's ``s0`` .. ``s<n-1>`` (four empty readers)."""
    return write_lidc(root, n=n, split="val")


def _data(root: Path, **kw) -> MedicalDataModule:
    return MedicalDataModule(data_path=str(root), crop_size=32, num_workers=0, **kw)


def test_lidc_png_file_checks_read_only_the_images_max_items_keeps(tmp_path, monkeypatch):
    """``validate`` said "using 48 of 180 images (max_items)" and had decoded all 720 reader masks first."""
    root = _lidc_val(tmp_path / "lidc")
    decoded = []
    read = LIDCPngDataset._read
    spy = staticmethod(lambda path, *a: decoded.append(path) or read(path, *a))
    monkeypatch.setattr(LIDCPngDataset, "_read", spy)
    view = _data(root, max_items={"val": 2}).dataset("val")
    assert view.indices == _cap_indices(6, 2) == [0, 5]  # the same images as the cap kept before
    assert [view.base.ids[i] for i in view.indices] == ["P1/s0", "P1/s5"]
    assert sorted(Path(p).name for p in decoded) == sorted(f"s{i}_l{r}.png" for i in (0, 5) for r in range(4))
    decoded.clear()
    assert len(_data(root).dataset("val")) == 6 and len(decoded) == 24  # no cap: every image checked


def test_lidc_png_a_bad_file_the_cap_leaves_out_is_not_read_one_it_keeps_is_named(tmp_path):
    root = _lidc_val(tmp_path / "lidc")
    gt = root / "val" / "gt" / "P1"
    (gt / "s2_l1.png").write_bytes(b"not a png")  # s2: not among the 2 of 6 the cap keeps
    assert len(_data(root, max_items={"val": 2}).dataset("val")) == 2
    with pytest.raises(MedicalDataError, match=r"s2_l1\.png: cannot decode"):  # read whole: still refused
        _data(root).dataset("val")
    (gt / "s5_l3.png").write_bytes(b"not a png")  # s5 is kept
    with pytest.raises(MedicalDataError) as err:
        _data(root, max_items={"val": 2}).dataset("val")
    said = "1 of 2 images (or their reader masks) cannot be read (only the 2 of 6 that max_items keeps were "
    assert said + "checked): " in str(err.value)
    assert "s5_l3.png: cannot decode" in str(err.value) and "s2_l1" not in str(err.value)


def test_lidc_png_max_items_is_the_data_modules_cap_not_a_reader_option(tmp_path):
    """The reader's new ``max_items`` argument limits only its checks: given as a dataset_kwargs option it
    would check fewer images than the cap reads, so it is refused as before."""
    root = _lidc_val(tmp_path / "lidc")
    with pytest.raises(ValueError, match=r"dataset_kwargs: max_items not an option of the lidc_png reader"):
        _data(root, dataset_kwargs={"max_items": 1}).dataset("val")


def _stat_calls(monkeypatch) -> list:
    """Every ``os.stat`` / ``os.lstat`` made from here on (pathlib's ``is_dir``, ``is_file``, ``is_symlink``
    go through them)."""
    calls: list = []
    for name in ("stat", "lstat"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda *a, _real=real, **k: calls.append(a[0]) or _real(*a, **k))
    return calls


def test_read_image_folder_stats_no_image_file(tmp_path, monkeypatch):
    """The listing stat'ed and lstat'ed every file: 0.6 s of a 10,000-crop set's start. Entry kinds now come
    from the listing: the stats made do not grow with the images."""
    few = stripes_folder(tmp_path / "few", {"train": 2, "val": 1})
    many = stripes_folder(tmp_path / "many", {"train": 8, "val": 4})
    calls = _stat_calls(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no test/ folder: said
        read_image_folder(few, STRIPE_CLASSES)
        stats_few, calls[:] = len(calls), []
        splits = read_image_folder(many, STRIPE_CLASSES)
    assert len(splits["train"]) == 16 and len(calls) == stats_few, calls
    assert not [p for p in calls if str(p).endswith(".png")]


def test_lidc_png_listing_stats_an_image_once_and_no_reader_mask(tmp_path, monkeypatch):
    """Each image's four reader masks were stat'ed one by one (and each image lstat'ed): six an image."""
    root = _lidc_val(tmp_path / "lidc")
    calls = _stat_calls(monkeypatch)
    found, ignored, missing = LIDCPngDataset._list(root / "val" / "images", root / "val" / "gt", 4)
    assert len(found) == 6 and not ignored and not missing
    pngs = [str(p) for p in calls if str(p).lower().endswith(".png")]
    assert len(pngs) == 6 and not [p for p in pngs if "/gt/" in p], pngs  # one is_file() per image


def _png(tmp_path: Path, name: str = "a.png") -> Path:
    path = tmp_path / name
    assert cv2.imwrite(str(path), np.arange(64 * 48, dtype=np.uint32).reshape(48, 64).astype(np.uint8))
    return path


def _flip_a_pixel_byte(path: Path) -> Path:
    """One byte of the IDAT chunk changed, its checksum left as it was (a bit flip on disk)."""
    data = bytearray(path.read_bytes())
    pos = 8
    while data[pos + 4 : pos + 8] != b"IDAT":
        pos += 12 + struct.unpack(">I", data[pos : pos + 4])[0]
    data[pos + 8 + 5] ^= 0x10
    path.write_bytes(bytes(data))
    return path


def _jpeg(tmp_path: Path, name: str, cut: bool = False) -> Path:
    _ok, encoded = cv2.imencode(".jpg", np.full((48, 64), 90, np.uint8))
    data = encoded.tobytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2] if cut else data)
    return tmp_path / name


@pytest.mark.parametrize(
    "make, readable",
    [
        (lambda tmp: _png(tmp), True),
        (lambda tmp: _jpeg(tmp, "jpeg_named.png"), True),  # a whole JPEG under a .png name decodes
        (lambda tmp: _flip_a_pixel_byte(_png(tmp)), False),
        (lambda tmp: (p := _png(tmp)).write_bytes(p.read_bytes()[:-30]) and p, False),  # cut short
        (lambda tmp: (p := _png(tmp)).write_bytes(p.read_bytes()[:-12]) and p, False),  # no IEND chunk
        (lambda tmp: (tmp / "text.png").write_text("hello") and tmp / "text.png", False),
        (lambda tmp: (tmp / "empty.png").write_bytes(b"") or tmp / "empty.png", False),
        (lambda tmp: (tmp / "sig.png").write_bytes(b"\x89PNG\r\n\x1a\n") and tmp / "sig.png", False),
        (lambda tmp: _jpeg(tmp, "cut.png", cut=True), False),  # a JPEG cut short under a .png name
    ],
    ids=["png", "jpeg-as-png", "bit-flip", "truncated", "no-iend", "text", "empty", "signature", "cut-jpeg"],
)
def test_the_image_check_still_refuses_what_it_refused(tmp_path, make, readable):
    assert classification_data._is_image(make(tmp_path)) is readable


def test_the_image_check_reads_a_png_once_without_opening_it_as_an_image(tmp_path, monkeypatch):
    """``Image.open`` parsed the header chunks and ``verify`` read them again (90 us a 64 px crop, against 40
    for Pillow's chunk reader alone); a PNG's CRCs are now checked in one pass over the file."""
    png = _png(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("Image.open called for a PNG")

    monkeypatch.setattr(classification_data.Image, "open", refuse)
    assert classification_data._is_image(png)
    assert not classification_data._is_image(_flip_a_pixel_byte(png))  # still every CRC
