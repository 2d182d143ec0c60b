"""Road photos as WebP (s43): the driving page refused them ("unsupported file type") while ``predict`` and
the page's own scene list read them (RoadObstacle21's images are WebP); and a file named as a type the page
takes whose content is something else (``notes.png`` holding text) was told "unsupported file type", as if its
name were wrong."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from apps import uploads as up
from tests.apps import samples as S


def _webp(array: np.ndarray, orientation: int | None = None, **kwargs) -> bytes:
    """Lossless WebP bytes of a uint8 array (RGB, RGBA or grey); an EXIF orientation tag if given."""
    buf = io.BytesIO()
    extra = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        extra["exif"] = exif.tobytes()
    Image.fromarray(array).save(buf, format="WEBP", lossless=True, **extra, **kwargs)
    return buf.getvalue()


def test_a_webp_photo_decodes_to_the_pixels_a_png_of_it_gives():
    rgb = S.gradient_rgb()
    out = up.decode_rgb_image(_webp(rgb), "road.webp")
    np.testing.assert_array_equal(out.image, up.decode_rgb_image(S.png(rgb), "road.png").image)
    assert out.notes == [] and not out.colourless
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    out = up.decode_rgb_image(_webp(rgba), "road.webp")
    np.testing.assert_array_equal(out.image, rgb)
    assert out.notes == ["the alpha (transparency) channel was dropped"]
    assert up.download_stem("road.webp") == "road"  # its downloads are road_detections.png, not road.webp_...


def test_a_webp_photo_is_turned_upright_as_predict_reads_it(tmp_path):
    """``predict`` (``read_rgb``: ``cv2.imread``) applies a WebP's EXIF orientation, as a JPEG's."""
    from domains.driving.common import read_rgb

    data = _webp(S.gradient_rgb(), orientation=6)
    (tmp_path / "road.webp").write_bytes(data)
    out = up.decode_rgb_image(data, "road.webp")
    np.testing.assert_array_equal(out.image, read_rgb(tmp_path / "road.webp"))
    assert out.image.shape == (64, 40, 3) and out.notes == ["rotated upright from its EXIF orientation (6)"]


def test_a_png_with_an_exif_orientation_is_turned_upright_as_predict_reads_it(tmp_path):
    """OpenCV's ``imread`` turns a PNG by its eXIf chunk too, so ``predict`` saw it upright and the page not."""
    from domains.driving.common import read_rgb

    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(S.gradient_rgb()).save(buf, "PNG", exif=exif.tobytes())
    (tmp_path / "road.png").write_bytes(buf.getvalue())
    out = up.decode_rgb_image(buf.getvalue(), "road.png")
    np.testing.assert_array_equal(out.image, read_rgb(tmp_path / "road.png"))
    assert out.image.shape == (64, 40, 3)


def test_an_animated_webp_says_its_first_frame_is_used():
    first, second = S.gradient_rgb(), 255 - S.gradient_rgb()
    buf = io.BytesIO()
    second_frame = [Image.fromarray(second)]
    Image.fromarray(first).save(buf, "WEBP", lossless=True, save_all=True, append_images=second_frame)
    out = up.decode_rgb_image(buf.getvalue(), "clip.webp")
    np.testing.assert_array_equal(out.image, first)
    assert out.notes == ["animated WebP (2 frames): its first frame is used"]


@pytest.mark.parametrize(
    ("make", "limit", "message"),
    [
        (lambda: _webp(S.gradient_rgb(8, 64)), up.MAX_PIXELS, "the image is 64x8 pixels; at least 16x16"),
        (lambda: _webp(S.gradient_rgb()), 1000, "the image is 64x40 = 0.0 megapixels; the limit is 0.0"),
        (lambda: _webp(S.gradient_rgb())[:-10], up.MAX_PIXELS, "corrupt or truncated"),  # its end cut off
    ],
    ids=["small", "too_many_pixels", "truncated"],
)
def test_a_webp_photo_gets_the_checks_a_png_gets(make, limit, message):
    with pytest.raises(up.UploadError, match=message) as info:
        up.decode_rgb_image(make(), "road.webp", max_pixels=limit)
    assert str(info.value).startswith("road.webp: ")


@pytest.mark.parametrize(
    ("name", "named"),
    [
        ("notes.png", "PNG image"),
        ("notes.JPG", "JPEG image"),
        ("notes.jpeg", "JPEG image"),
        ("notes.webp", "WebP image"),
    ],
)
def test_a_photo_name_on_other_content_says_the_content_is_wrong(name, named):
    with pytest.raises(up.UploadError) as info:
        up.decode_rgb_image(b"just some text, no image", name)
    assert str(info.value) == (
        f"{name}: its content is not a {named} (whatever its name says; the file holds something else, or is "
        "damaged at its start); upload a PNG, JPEG or WebP photo"
    )


def test_other_names_are_still_an_unsupported_type():
    for name, data in (("notes.txt", b"some text"), ("anim.gif", b"GIF89a" + b"\x00" * 100)):
        with pytest.raises(up.UploadError) as info:
            up.decode_rgb_image(data, name)
        assert str(info.value) == f"{name}: unsupported file type; upload a PNG, JPEG or WebP photo"


@pytest.mark.parametrize(
    ("name", "named"),
    [("slice.png", "PNG image"), ("ct.nii", "NIfTI volume"), ("ct.nii.gz", "gzipped NIfTI volume")],
)
def test_a_medical_name_on_other_content_says_the_content_is_wrong(name, named):
    with pytest.raises(up.UploadError) as info:
        up.decode_medical(b"just some text, no image" * 20, name)
    assert str(info.value).startswith(f"{name}: its content is not a {named} (whatever its name says")
    assert str(info.value).endswith(
        "upload a PNG / JPEG image, a DICOM file (.dcm), a zip of one DICOM series or a NIfTI volume "
        "(.nii / .nii.gz)"
    )


def test_the_medical_page_refuses_webp_by_name():
    """No medical data set or reader of the suite takes WebP: refused, saying what to upload instead (a WebP
    named .png is refused the same way: the content decides)."""
    for name in ("slice.webp", "slice.png"):
        with pytest.raises(up.UploadError, match=r"a WebP image; the medical page reads PNG / JPEG") as info:
            up.decode_medical(_webp(S.gradient_rgb()), name)
        assert str(info.value).startswith(f"{name}: ")


def test_a_zip_of_webp_frames_is_a_clip_as_the_accident_cli_reads_them():
    """The accident readers take WebP frames; the page left ``f0.webp`` out as "not an image"."""
    frames = S.moving_box_frames(3)
    extra = {f"f{i}.webp": _webp(frame) for i, frame in enumerate(frames)}
    clip = up.decode_clip(S.frames_zip([], extra=extra), "dash.zip")
    np.testing.assert_array_equal(clip.frames, np.stack(frames))
    assert "3 frames in name order (f0.webp ... f2.webp)" in clip.notes
