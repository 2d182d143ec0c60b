"""An upload is parsed by Pillow once (s44): its size, frame count and EXIF orientation were read by three
``Image.open`` calls of the same bytes (a WebP's each built a decoder for the whole canvas)."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from apps import uploads as up
from tests.apps import samples as S


def _encoded(fmt: str, orientation: int = 6, **kwargs) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(S.gradient_rgb()).save(buf, fmt, exif=exif.tobytes(), **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["WEBP", "PNG", "JPEG"])
def test_an_upload_is_opened_by_pillow_once_and_keeps_its_notes(fmt, monkeypatch):
    frames = {"save_all": True, "append_images": [Image.new("RGB", (64, 40))]} if fmt == "WEBP" else {}
    data = _encoded(fmt, **frames)
    opened = []
    real = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(1) or real(*a, **k))
    out = up.decode_rgb_image(data, f"road.{fmt.lower()}")
    assert len(opened) == 1
    animated = ["animated WebP (2 frames): its first frame is used"] if fmt == "WEBP" else []
    assert out.notes == [*animated, "rotated upright from its EXIF orientation (6)"]
    assert out.image.shape == (64, 40, 3)


def _with_chunk_before_iend(png: bytes, kind: bytes, body: bytes) -> bytes:
    """``png`` with a chunk added after its pixel data (IDAT), where a PNG may keep its EXIF."""
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return png[:-12] + chunk + png[-12:]  # IEND: the last 12 bytes


def test_a_png_s_pixels_are_decoded_once_and_its_orientation_read_wherever_pillow_finds_it(monkeypatch):
    """Pillow decoded every PNG without EXIF ahead of its pixels (to look for it after them), as long as
    OpenCV's own decode; a PNG whose bytes name no EXIF or XMP store is no longer. One that does keeps its
    orientation: an eXIf chunk after the pixels, XMP."""
    from PIL import PngImagePlugin

    loads = []
    real = PngImagePlugin.PngImageFile.load
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: loads.append(1) or real(self))
    out = up.decode_rgb_image(S.png(S.gradient_rgb()), "road.png")
    assert out.notes == [] and out.image.shape == (40, 64, 3) and loads == []
    exif = Image.Exif()
    exif[0x0112] = 6
    tail = _with_chunk_before_iend(S.png(S.gradient_rgb()), b"eXIf", exif.tobytes().removeprefix(b"Exif\0\0"))
    xmp = PngImagePlugin.PngInfo()
    xmp.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta><rdf:Description tiff:Orientation="8"/></x:xmpmeta>')
    buf = io.BytesIO()
    Image.fromarray(S.gradient_rgb()).save(buf, "PNG", pnginfo=xmp)
    for data, orientation in ((tail, 6), (buf.getvalue(), 8)):
        out = up.decode_rgb_image(data, "road.png")
        assert out.notes == [f"rotated upright from its EXIF orientation ({orientation})"]
        assert out.image.shape == (64, 40, 3)
