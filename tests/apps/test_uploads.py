"""The upload layer alone: every supported format decodes to the right pixels, bad files give clear errors."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from apps import uploads as up
from tests.apps import samples as S

# ------------------------------------------------------------------------------------------- road photos


def test_rgb_png_round_trips_exactly():
    rgb = S.gradient_rgb()
    out = up.decode_rgb_image(S.png(rgb), "scene.png")
    assert out.image.dtype == np.uint8 and out.image.shape == (40, 64, 3)
    np.testing.assert_array_equal(out.image, rgb)  # RGB order, not OpenCV's BGR
    assert out.notes == [] and out.format == "PNG"


def test_rgba_png_drops_alpha_and_says_so():
    rgb = S.gradient_rgb()
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 100, np.uint8)])
    out = up.decode_rgb_image(S.png(rgba), "scene.png")
    np.testing.assert_array_equal(out.image, rgb)
    assert any("alpha" in n for n in out.notes)


def test_grey_png_becomes_rgb_with_a_note():
    grey = np.tile(np.arange(64, dtype=np.uint8) * 4, (40, 1))
    out = up.decode_rgb_image(S.png(grey), "grey.png")
    assert out.image.shape == (40, 64, 3)
    for c in range(3):
        np.testing.assert_array_equal(out.image[..., c], grey)
    assert any("grayscale" in n for n in out.notes)


def test_16_bit_png_is_rescaled_to_8_bit():
    values = np.array([[1000, 2000], [3000, 5000]], dtype=np.uint16)
    image = np.kron(values, np.ones((10, 10), dtype=np.uint16))  # 20x20, four flat blocks
    out = up.decode_rgb_image(S.png(image), "raw16.png")
    # min..max -> 0..255: 1000 -> 0, 2000 -> 63.75 -> 64, 3000 -> 127.5 -> 128, 5000 -> 255
    assert out.image[0, 0, 0] == 0 and out.image[0, 15, 0] == 64
    assert out.image[15, 0, 0] == 128 and out.image[15, 15, 0] == 255
    assert any("16-bit" in n and "1000..5000" in n for n in out.notes)


def test_16_bit_rgb_png_keeps_colour_order():
    rgb16 = np.zeros((20, 20, 3), np.uint16)
    rgb16[..., 0] = 60000  # red high
    rgb16[0, 0, 2] = 1  # so that min is 0 elsewhere
    out = up.decode_rgb_image(S.png(rgb16), "rgb16.png")
    assert out.image[5, 5, 0] == 255 and out.image[5, 5, 1] == 0 and out.image[5, 5, 2] == 0


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation_matches_pillow(orientation):
    from PIL import Image, ImageOps

    data = S.jpeg(S.gradient_rgb(), orientation=orientation)
    reference = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    out = up.decode_rgb_image(data, "photo.jpg")
    assert out.image.shape == reference.shape
    # same decoder family, so only rounding differences are allowed
    assert np.abs(out.image.astype(int) - reference.astype(int)).max() <= 2
    assert (orientation != 1) == any("EXIF" in n for n in out.notes)


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"", "empty.png", "empty"),
        (b"just some text, no image", "notes.txt", "unsupported file type"),
        (S.png(S.gradient_rgb())[:60], "cut.png", "corrupt or truncated"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, "fake.png", "corrupt"),
        (S.jpeg(S.gradient_rgb())[:300], "cut.jpg", "corrupt or truncated"),
        (b"GIF89a" + b"\x00" * 100, "anim.gif", "unsupported file type"),
    ],
)
def test_bad_road_photos_raise_clear_errors(data, name, message):
    with pytest.raises(up.UploadError, match=message) as info:
        up.decode_rgb_image(data, name)
    assert name in str(info.value)


def test_medical_volume_on_the_road_page_is_refused_as_such():
    data = S.nifti(np.zeros((20, 20, 5), np.int16))
    with pytest.raises(up.UploadError, match="NIfTI medical file.*2D road photo"):
        up.decode_rgb_image(data, "ct.nii")
    with pytest.raises(up.UploadError, match="DICOM"):
        up.decode_rgb_image(S.dicom(np.zeros((20, 20))), "ct.dcm")


def test_size_limits():
    with pytest.raises(up.UploadError, match=r"1\.0 MB; the limit is 0\.5 MB"):
        up.check_size(b"\0" * (1024 * 1024), "big.png", limit=512 * 1024)
    up.check_size(b"\0" * 10, "small.png")  # fine
    with pytest.raises(up.UploadError, match="limit is 50.0 MB"):
        up.decode_medical(b"\0" * (up.MAX_UPLOAD_BYTES + 1), "huge.nii")
    with pytest.raises(up.UploadError, match="megapixels"):
        up.decode_rgb_image(S.png(np.zeros((100, 100), np.uint8)), "wide.png", max_pixels=5000)
    with pytest.raises(up.UploadError, match="at least 16x16"):
        up.decode_rgb_image(S.png(np.zeros((8, 30), np.uint8)), "tiny.png")


# ------------------------------------------------------------------------------------------ medical files


def test_medical_png_8_bit_is_value_over_255():
    grey = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))  # 32x32
    vol = up.decode_medical(S.png(grey), "slice.png")
    assert (vol.num_channels, vol.num_slices) == (1, 1) and not vol.is_volume
    np.testing.assert_allclose(vol.slice(), grey / 255.0, atol=1e-6)
    assert vol.notes == []


def test_medical_colour_and_rgba_become_grey_with_notes():
    rgb = S.gradient_rgb(32, 32)
    vol = up.decode_medical(S.png(rgb), "colour.png")
    assert vol.slice().shape == (32, 32)
    assert any("grayscale" in n for n in vol.notes)
    grey3 = np.repeat(np.full((32, 32, 1), 200, np.uint8), 3, axis=2)
    rgba = np.dstack([grey3, np.full((32, 32), 255, np.uint8)])
    vol = up.decode_medical(S.png(rgba), "grey_rgba.png")
    np.testing.assert_allclose(vol.slice(), 200 / 255.0, atol=1e-6)
    assert any("alpha" in n for n in vol.notes) and not any("grayscale" in n for n in vol.notes)


def test_medical_16_bit_png_uses_its_range():
    image = np.kron(np.array([[100, 300], [500, 900]], np.uint16), np.ones((16, 16), np.uint16))
    vol = up.decode_medical(S.png(image), "ct16.png")
    s = vol.slice()
    assert s[0, 0] == pytest.approx(0.0) and s[-1, -1] == pytest.approx(1.0)
    assert s[0, -1] == pytest.approx((300 - 100) / 800)


def test_dicom_applies_rescale_and_window():
    stored = np.full((32, 32), 1024, np.int16)  # 0 HU with intercept -1024
    stored[:16] = 24  # -1000 HU
    vol = up.decode_medical(S.dicom(stored, window=(-500, 1000)), "slice.dcm")
    assert vol.format == "DICOM" and (vol.lo, vol.hi) == (-1000.0, 0.0)
    s = vol.slice()
    assert s[0, 0] == pytest.approx(0.0) and s[-1, -1] == pytest.approx(1.0)
    assert any("window" in n for n in vol.notes)


def test_dicom_monochrome1_is_inverted():
    stored = np.zeros((32, 32), np.int16)
    stored[:16] = 100
    vol = up.decode_medical(
        S.dicom(stored, window=(50, 100), intercept=0.0, photometric="MONOCHROME1"), "m1.dcm"
    )
    s = vol.slice()
    assert s[0, 0] < s[-1, -1]  # high stored values are dark in MONOCHROME1
    assert any("MONOCHROME1" in n for n in vol.notes)


def test_dicom_monochrome1_is_one_minus_the_windowed_monochrome2():
    """The scaling is on the stored scale: inverting before scaling turned most of a slice white."""
    stored = np.linspace(-1000, 2000, 32 * 32).reshape(32, 32).astype(np.int16)
    window = (-600, 1500)  # a display window in the file: not used for the models' input
    mono2 = up.decode_medical(S.dicom(stored, window=window, intercept=0.0), "m2.dcm").slice()
    mono1 = up.decode_medical(
        S.dicom(stored, window=window, intercept=0.0, photometric="MONOCHROME1"), "m1.dcm"
    ).slice()
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)
    # by hand: 0 lies (0 - lo) / (hi - lo) into the 0.5-99.5 percentiles, shown 1 minus that in MONOCHROME1
    lo, hi = np.percentile(stored.astype(np.float64), [0.5, 99.5])
    row, col = np.argwhere(stored == stored[stored >= 0].min())[0]
    assert mono1[row, col] == pytest.approx(1 - (stored[row, col] - lo) / (hi - lo), abs=1e-5)
    assert 0.65 < mono1[row, col] < 0.7  # a third of the way up in MONOCHROME2: two thirds in MONOCHROME1


def test_the_same_dicom_slice_with_any_stored_window_gives_the_same_model_input():
    """A DICOM's display window (WindowCenter / WindowWidth) was the models' input scaling: the same slice gave a
    440-pixel mask with no window, 483 at 40/400 and 855 at -600/1500. Now always the 0.5-99.5 percentiles, as a
    NIfTI upload's (and the training pipeline's); the file's window is named in a note, not used."""
    stored = np.full((40, 48), 24, np.int16)  # -1000 HU: lung
    stored[8:30, 6:40] = 1064  # 40 HU: soft tissue
    stored[15:20, 20:26] = 1324  # 300 HU: a bright nodule
    inputs, notes = [], []
    for window in (None, (40, 400), (-600, 1500)):
        volume = up.decode_medical(S.dicom(stored, window=window, pixel_spacing=(0.7, 0.7)), "ct.dcm")
        inputs.append(up.fit_to_model(volume.slice(0), 32, "resize")[0])
        notes.append(next(n for n in volume.notes if "percentiles" in n))
        assert (volume.lo, volume.hi) == (-1000.0, 300.0)  # the slice's own 0.5 / 99.5 percentiles
    np.testing.assert_array_equal(inputs[0], inputs[1])
    np.testing.assert_array_equal(inputs[0], inputs[2])
    assert notes[0] == "no DICOM window: intensities -1000..300 (0.5-99.5 percentiles, as a NIfTI's) mapped to 0..1"
    assert notes[1] == (
        "intensities -1000..300 (0.5-99.5 percentiles, as a NIfTI's) mapped to 0..1; the file's DICOM window "
        "(centre 40, width 400) is a display choice and was not used"
    )
    assert "(centre -600, width 1500)" in notes[2]
    # the same slice as a NIfTI gets the same scaling
    hounsfield = stored.T[:, :, None].astype(np.float32) - 1024  # stored as a DICOM -> NIfTI converter does
    nifti = up.decode_medical(S.nifti(hounsfield, affine=np.diag([-0.7, -0.7, 1, 1])), "ct.nii")
    np.testing.assert_allclose(nifti.slice(0), up.decode_medical(S.dicom(stored), "ct.dcm").slice(0), atol=1e-6)


def test_nifti_non_finite_voxels_are_counted_and_shown_as_the_window_ends():
    volume = np.linspace(0, 1, 20 * 20 * 3, dtype=np.float32).reshape(20, 20, 3)
    volume[0, 0, 1], volume[1, 0, 1], volume[2, 0, 1] = np.nan, np.inf, -np.inf
    vol = up.decode_medical(S.nifti(volume), "nan.nii")
    assert any(n.startswith("3 of 1,200 voxels are NaN or infinite") for n in vol.notes)
    s = vol.slice(1)
    assert np.isfinite(s).all()
    # display (C, Z, Y, X) with Y and X flipped: voxel (x, y=0, z=1) is row 19, column 19 - x
    assert s[19, 19] == 0.0 and s[19, 18] == 1.0 and s[19, 17] == 0.0
    assert not any("NaN" in n for n in up.decode_medical(S.nifti(volume[:, :, :1] * 0 + 1), "ok.nii").notes)


def test_multiframe_dicom_is_a_volume():
    frames = np.stack([np.full((32, 32), v, np.int16) for v in (0, 500, 1000)])
    vol = up.decode_medical(S.dicom(frames), "cine.dcm")
    assert vol.num_slices == 3 and vol.is_volume
    assert vol.slice(0).mean() < vol.slice(2).mean()
    with pytest.raises(up.UploadError, match="slice 3 outside"):
        vol.slice(3)


@pytest.mark.parametrize("compressed", [False, True])
def test_nifti_volume_slices_follow_the_axial_axis(compressed):
    volume = np.zeros((20, 24, 5), np.float32)  # X, Y, Z
    for k in range(5):
        volume[:, :, k] = k
    volume[0, 23, :] = 10  # the patient's left-most (x=0 of a RAS volume), anterior (y max) corner
    vol = up.decode_medical(S.nifti(volume, compressed=compressed), "ct.nii.gz" if compressed else "ct.nii")
    assert (vol.num_channels, vol.num_slices) == (1, 5) and vol.shape2d == (24, 20)
    raw = vol.data[0]
    assert raw[3, 5, 5] == 3  # slice index = z
    assert raw[0, 0, -1] == 10  # anterior up, the patient's left on the viewer's right (radiological view)
    assert any("5 axial slices" in n for n in vol.notes)


def test_a_nifti_converted_from_a_dicom_slice_is_shown_as_the_dicom_is():
    """A DICOM -> NIfTI converter stores voxel i = DICOM column (toward the patient's left) with an LPS -> RAS
    affine diag(-sx, -sy, sz): the NIfTI was shown mirrored (patient's right on the right), the DICOM not."""
    ct = np.full((40, 48), -1000, np.int16)
    ct[10:14, 30:36] = 100  # the nodule: rows 10-13, columns 30-35 (toward the patient's left)
    dicom = up.decode_medical(S.dicom(ct, pixel_spacing=(0.7, 0.7)), "ct.dcm")
    nifti = up.decode_medical(S.nifti(ct.T[:, :, None], affine=np.diag([-0.7, -0.7, 2.5, 1.0]), unit="mm"), "ct.nii")
    for vol in (dicom, nifti):
        rows, cols = np.nonzero(vol.data[0, 0] > vol.data[0, 0].min())
        assert (rows.min(), rows.max(), cols.min(), cols.max()) == (10, 13, 30, 35), vol.format


def test_nifti_4d_has_channels():
    vol = up.decode_medical(
        S.nifti(np.random.default_rng(0).random((16, 16, 3, 2)).astype(np.float32)), "t.nii"
    )
    assert (vol.num_channels, vol.num_slices) == (2, 3)
    assert vol.slice(1, channel=1).shape == (16, 16)
    with pytest.raises(up.UploadError, match="channel 2"):
        vol.slice(0, channel=2)


def test_each_channel_of_a_4d_nifti_is_scaled_on_its_own_as_training_scales_it():
    """One window over all channels put a CT-range channel 0 (values near 100) at 0..0.03 beside an MRI-range
    channel 1 (near 3000): the model saw it nearly black, where training scales the channel it reads alone."""
    rng = np.random.default_rng(0)
    volume = np.stack([100 + rng.random((16, 16, 3)) * 10, 3000 + rng.random((16, 16, 3)) * 300], axis=-1)
    vol = up.decode_medical(S.nifti(volume.astype(np.float32)), "two.nii")
    for channel in (0, 1):
        values = np.stack([vol.slice(k, channel=channel) for k in range(3)])
        assert values.min() == 0.0 and values.max() == 1.0 and 0.3 < values.mean() < 0.7, channel
    assert any("2 channels" in n and "own 0.5-99.5 percentiles" in n for n in vol.notes)


def test_nifti_2d_is_one_slice():
    vol = up.decode_medical(S.nifti(np.ones((30, 20), np.int16)), "one.nii")
    assert (vol.num_channels, vol.num_slices) == (1, 1) and vol.shape2d == (20, 30)


@pytest.mark.parametrize(
    ("make", "name", "message"),
    [
        (
            lambda: S.nifti(np.random.default_rng(0).random((20, 20, 4)))[:500],
            "cut.nii",
            "corrupt or truncated",
        ),
        (
            lambda: S.nifti(np.random.default_rng(0).random((20, 20, 4)), compressed=True)[:300],
            "cut.nii.gz",
            "truncated",
        ),
        (lambda: b"\x1f\x8b" + b"\x00" * 50, "bad.nii.gz", "gzip data is corrupt"),
        (lambda: b"\x1f\x8b\x08\x00" + b"\x00" * 50, "archive.tar.gz", "not a NIfTI|gzip"),
        (lambda: S.dicom(np.zeros((32, 32)))[:300], "cut.dcm", "no PixelData|corrupt"),
        (lambda: S.dicom(np.zeros((32, 32)))[:-100], "short.dcm", "cannot decode the DICOM pixel data"),
        (lambda: S.png(np.zeros((20, 20), np.uint8))[:-20], "cut_end.png", "corrupt or truncated"),
        (lambda: b"\x00" * 128 + b"DICM" + b"\xff" * 40, "garbage.dcm", "DICOM"),
        (lambda: b"%PDF-1.7 ...", "report.pdf", "unsupported file type"),
    ],
)
def test_bad_medical_files_raise_clear_errors(make, name, message):
    with pytest.raises(up.UploadError, match=message) as info:
        up.decode_medical(make(), name)
    assert name in str(info.value)


def test_gzip_bomb_is_capped():
    import gzip

    bomb = gzip.compress(b"\0" * (3 * 1024 * 1024))
    with pytest.raises(up.UploadError, match="decompresses to more than"):
        up._gunzipped_size(bomb, "bomb.nii.gz", limit=1024 * 1024)


def test_detect_format():
    assert up.detect_format(S.png(np.zeros((20, 20), np.uint8))) == "png"
    assert up.detect_format(S.jpeg(S.gradient_rgb())) == "jpeg"
    assert up.detect_format(S.dicom(np.zeros((20, 20)))) == "dicom"
    assert up.detect_format(S.nifti(np.zeros((20, 20, 2)))) == "nifti"
    assert up.detect_format(S.nifti(np.zeros((20, 20, 2)), compressed=True), "a.nii.gz") == "nifti_gz"
    assert up.detect_format(b"hello", "a.txt") == "unknown"


# ----------------------------------------------------------------------------------------- model in / out


def test_fit_to_model_resize_and_crop():
    image = np.arange(200 * 100, dtype=np.float32).reshape(200, 100) / 20000
    out, how = up.fit_to_model(image, 128, "resize")
    assert out.shape == (128, 128) and "resized from 100x200" in how
    out, how = up.fit_to_model(image, 64, "crop")
    np.testing.assert_array_equal(out, image[68:132, 18:82])
    small = np.ones((10, 20), np.float32)
    out, how = up.fit_to_model(small, 32, "crop")
    assert out.shape == (32, 32) and "edge-padded" in how and (out == 1).all()
    _, how = up.fit_to_model(np.zeros((32, 32), np.float32), 32)
    assert "as is" in how
    # a non-square slice is padded to a square before resizing: a round lesion stays round, not squashed
    tall = np.zeros((200, 100), np.float32)
    tall[80:120, 30:70] = 1.0
    out, how = up.fit_to_model(tall, 128, "resize")
    ys, xs = np.nonzero(out > 0.5)
    assert "aspect ratio kept" in how and abs(np.ptp(ys) - np.ptp(xs)) <= 1
    assert np.ptp(ys) + 1 == pytest.approx(40 * 128 / 200, abs=1.5)
    # a very long slice is scaled before it is padded: no 40000x40000 square in memory
    import tracemalloc

    long = np.zeros((1000, 40000), np.float32)
    long[:, 18000:22000] = 1.0  # a band 4000 px wide: 12.8 px at 128 / 40000
    tracemalloc.start()
    out, how = up.fit_to_model(long, 128, "resize")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out.shape == (128, 128) and peak < 200e6  # the long slice itself is 160 MB; the square was 6.4 GB
    xs = np.nonzero(out[64] > 0.5)[0]
    assert 12 <= len(xs) <= 14 and abs(xs.mean() - 63.5) <= 1  # the band keeps its place and width
    with pytest.raises(up.UploadError):
        up.fit_to_model(np.zeros((2, 32, 32)), 32)


def test_resize_keeps_the_shape_in_mm_of_a_slice_with_anisotropic_pixels():
    """0.5 mm rows x 1.5 mm columns: a round 30 mm lesion is 60 rows x 20 columns of pixels; resized as the
    pixels lie (the page's "never squashed" choice) it came out a 1:3 ellipse."""
    ct = np.zeros((512, 512), np.float32)  # 256 x 768 mm
    ct[226:286, 246:266] = 1.0  # 60 x 20 pixels = 30 x 30 mm
    out, how = up.fit_to_model(ct, 128, "resize", spacing=(0.5, 1.5))
    ys, xs = np.nonzero(out > 0.5)
    assert abs(np.ptp(ys) - np.ptp(xs)) <= 1 and np.ptp(xs) + 1 == pytest.approx(30 * 128 / 768, abs=1.5)
    assert "to 128x128, edge-padded to a square (128x43: its 1.5 x 0.5 mm pixels made square)" in how
    # a 128x128 slice of such pixels is not "used as is"
    _, how = up.fit_to_model(np.zeros((128, 128), np.float32), 128, "resize", spacing=(0.5, 1.5))
    assert "made square" in how
    _, how = up.fit_to_model(np.zeros((128, 128), np.float32), 128, "resize", spacing=(0.7, 0.7))
    assert "as is" in how


def test_download_stems_keep_names_apart():
    # by hand: only a known extension goes, whole (.nii.gz); other dots and the reader index stay
    assert up.download_stem("LIDC-SYN-0048/z-136.0_c0") == "LIDC-SYN-0048_z-136.0_c0"
    assert up.download_stem("LIDC-SYN-0048/z-136.0_c1") == "LIDC-SYN-0048_z-136.0_c1"
    assert up.download_stem("ct.nii.gz") == "ct" and up.download_stem("scan.v2.DCM") == "scan.v2"
    assert up.download_stem("road scene (1).jpg") == "road_scene_1"
    assert up.download_stem("...") == "image" and up.download_stem(".png") == "image"


def test_png_and_zip_bytes_round_trip():
    import cv2

    rgb = S.gradient_rgb()
    back = cv2.cvtColor(
        cv2.imdecode(np.frombuffer(up.png_bytes(rgb), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
    )
    np.testing.assert_array_equal(back, rgb)
    archive = zipfile.ZipFile(io.BytesIO(up.zip_bytes({"a.png": b"1", "b.txt": b"22"})))
    assert archive.namelist() == ["a.png", "b.txt"] and archive.read("b.txt") == b"22"


# ------------------------------------------------------------------------------------------ dashcam clips


def test_mp4_clip_decodes_with_its_frame_rate():
    frames = S.moving_box_frames(6)
    clip = up.decode_clip(S.mp4(frames, fps=12.0), "dash.mp4")
    assert clip.format == "video" and clip.fps == pytest.approx(12.0)
    assert clip.frames.shape == (6, 48, 96, 3) and clip.frames.dtype == np.uint8
    # lossy codec: close to the source, in RGB order (the box is red, not blue)
    assert np.abs(clip.frames.astype(int) - np.stack(frames).astype(int)).mean() < 8
    assert clip.frames[-1, 40, 48, 0] > 150 and clip.frames[-1, 40, 48, 2] < 100


def test_zip_of_frames_is_read_in_natural_name_order_without_a_frame_rate():
    frames = [np.full((24, 32, 3), 10 * i, np.uint8) for i in range(11)]
    names = [f"clip/frame{i}.png" for i in range(11)]  # frame2 before frame10
    order = [3, 0, 10, 7, 1, 9, 2, 8, 4, 6, 5]
    data = S.frames_zip([frames[i] for i in order], [names[i] for i in order], {"__MACOSX/._x": b"junk"})
    clip = up.decode_clip(data, "frames.zip")
    assert clip.fps is None and clip.format == "zip"
    np.testing.assert_array_equal(clip.frames[:, 0, 0, 0], [10 * i for i in range(11)])
    assert any("11 frames in name order" in n for n in clip.notes)
    assert "1 hidden file left out (names starting with a dot, under __MACOSX/ or Windows' Thumbs.db / desktop.ini, e.g. __MACOSX/._x)" in clip.notes


def test_large_frames_are_scaled_down_with_a_note():
    frames = [np.zeros((400, 1280, 3), np.uint8)] * 2
    clip = up.decode_clip(S.frames_zip(frames), "big.zip")
    assert clip.frames.shape == (2, 200, 640, 3)
    assert any("1280x400 to 640x200" in n for n in clip.notes)


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("broken.mp4", lambda: b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 500, "unreadable video"),
        ("cut.mp4", lambda: S.mp4(S.moving_box_frames(6))[:400], "unreadable video"),
        ("empty.zip", lambda: S.frames_zip([]), "the zip is empty"),
        ("notes.zip", lambda: S.frames_zip([], extra={"notes.txt": b"hello"}), "notes.txt is not an image"),
        (
            "sizes.zip",
            lambda: S.frames_zip([S.gradient_rgb(40, 64), S.gradient_rgb(40, 64), S.gradient_rgb(48, 64)]),
            "frame_2.png is 64x48 but the first frame frame_0.png is 64x40",
        ),
        (
            "long.zip",
            lambda: S.frames_zip([np.zeros((16, 16, 3), np.uint8)] * (up.MAX_CLIP_FRAMES + 1)),
            f"{up.MAX_CLIP_FRAMES + 1} frames; the demo takes at most {up.MAX_CLIP_FRAMES}",
        ),
        ("one.zip", lambda: S.frames_zip([S.gradient_rgb()]), "at least 2 frames"),
        (
            "badframe.zip",
            lambda: S.frames_zip([S.gradient_rgb()], extra={"frame_1.png": S.png(S.gradient_rgb())[:60]}),
            "badframe.zip: frame_1.png: .*corrupt or truncated",
        ),
        ("clip.gif", lambda: b"GIF89a" + b"\x00" * 100, "unsupported file type"),
    ],
)
def test_bad_clips_raise_named_errors(name, make, message):
    with pytest.raises(up.UploadError, match=message) as info:
        up.decode_clip(make(), name)
    assert str(info.value).startswith(name)


def test_a_long_video_is_refused_before_decoding_all_of_it():
    with pytest.raises(up.UploadError, match="6 frames; the demo takes at most 4"):
        up.decode_clip(S.mp4(S.moving_box_frames(6)), "long.mp4", max_frames=4)


def test_encrypted_zip_member_is_named_not_a_traceback():
    data = bytearray(S.frames_zip(S.moving_box_frames(3)))
    # set the "encrypted" flag (bit 0) in the first member's local and central headers: zipfile then refuses
    # to read it with a RuntimeError, as for a real password-protected archive
    local = data.index(b"PK\x03\x04")
    central = data.index(b"PK\x01\x02")
    data[local + 6] |= 1
    data[central + 8] |= 1
    with pytest.raises(up.UploadError, match=r"enc\.zip: .*: cannot be read from the zip .*encrypted"):
        up.decode_clip(bytes(data), "enc.zip")


def test_clip_frames_are_shrunk_as_decoded_and_noted():
    frames = [np.full((700, 1400, 3), i * 40, np.uint8) for i in range(3)]
    clip = up.decode_clip(S.frames_zip(frames), "wide.zip", max_side=640)
    assert clip.frames.shape == (3, 320, 640, 3)
    assert any("scaled from 1400x700 to 640x320" in n for n in clip.notes)


def test_a_truncated_video_says_how_many_of_its_frames_decode(tmp_path):
    """A video cut short (its header: 30 frames) gave 16 frames and no word of the 14 lost."""
    import cv2

    path = tmp_path / "c.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 96))
    for i in range(30):
        frame = np.full((96, 320, 3), 60, np.uint8)
        cv2.rectangle(frame, (10 + 8 * i, 30), (40 + 8 * i, 70), (0, 0, 255), -1)
        writer.write(frame)
    writer.release()
    data = path.read_bytes()
    whole = up.decode_clip(data, "dashcam.avi")
    assert len(whole.frames) == 30 and not any("header says" in n for n in whole.notes)
    cut = up.decode_clip(data[: len(data) // 2], "dashcam.avi")
    assert 0 < len(cut.frames) < 30
    assert any(f"header says 30 frames but only the first {len(cut.frames)} decode" in n for n in cut.notes)


def test_a_zip_of_hidden_files_only_says_so_not_empty():
    data = S.frames_zip([], extra={"__MACOSX/._f0.png": b"x", ".DS_Store": b"x", "frames/.f1.png": S.png(np.zeros((20, 20), np.uint8))})
    with pytest.raises(up.UploadError, match=r"the zip holds only 3 hidden file\(s\) \(__MACOSX/._f0.png, .DS_Store"):
        up.decode_clip(data, "frames.zip")


def test_a_photo_just_over_the_pixel_limit_does_not_read_as_equal_to_it():
    with pytest.raises(up.UploadError, match="7300x5500 = 40.1 megapixels; the limit is 40.0 megapixels"):
        up._check_pixels(5500, 7300, "big.png", up.MAX_PIXELS)


def test_windows_thumbnail_files_in_a_zip_are_left_out_and_counted_not_a_refusal():
    """A Thumbs.db or desktop.ini refused the whole zip as 'not an image', while .DS_Store was skipped."""
    frames = [np.full((20, 20), 10 * i, np.uint8) for i in range(3)]
    data = S.frames_zip(frames, extra={"Thumbs.db": b"x", "frames/desktop.ini": b"[x]"})
    clip = up.decode_clip(data, "frames.zip")
    assert len(clip.frames) == 3 and any(n.startswith("2 hidden files left out") for n in clip.notes)


def test_sidecar_files_in_a_zip_of_frames_are_left_out_and_counted_not_a_refusal():
    """A dashcam folder's GPS or JSON file beside the frames refused the whole clip as 'not an image'."""
    frames = [np.full((20, 20), 10 * i, np.uint8) for i in range(3)]
    data = S.frames_zip(frames, extra={"clip/track.gpx": b"<gpx/>", "clip/meta.json": b"{}"})
    clip = up.decode_clip(data, "drive.zip")
    assert len(clip.frames) == 3
    assert "2 files not a JPEG / PNG / WebP frame left out (e.g. clip/track.gpx)" in clip.notes


def test_an_enhanced_ct_dicom_gives_its_pixel_size_rescale_and_window_from_its_functional_groups():
    """An Enhanced CT keeps them in SharedFunctionalGroupsSequence: the page showed stored units, ignored the
    window and offered no mm fit, without a word."""
    stored = np.full((2, 40, 48), 1000, np.int16)
    vol = up.decode_medical(S.dicom(stored, window=(-600, 1500), pixel_spacing=(0.7, 0.7), enhanced=True), "e.dcm")
    assert vol.spacing == (0.7, 0.7)
    assert any("the file's DICOM window (centre -600, width 1500)" in n for n in vol.notes)  # named, not used
    assert float(vol.data.max()) == 1000 - 1024  # Hounsfield units, not stored values
    plain = up.decode_medical(S.dicom(stored[0], window=(40, 0)), "zero.dcm")  # a width of 0 is no window
    assert any(n.startswith("no DICOM window (its window width 0 is no window)") for n in plain.notes)
    assert any("states no pixel size" in n for n in plain.notes)
    no_window = up.decode_medical(S.dicom(stored[0]), "none.dcm")
    assert any(n.startswith("no DICOM window: intensities") for n in no_window.notes)


def test_a_4d_nifti_of_many_time_points_lists_six_windows_not_all():
    volume = np.random.default_rng(0).random((16, 16, 2, 40)).astype(np.float32)
    vol = up.decode_medical(S.nifti(volume), "fmri.nii")
    (note,) = [n for n in vol.notes if n.startswith("4D volume")]
    windows = note.split("percentiles: ")[1].removesuffix(" and 34 more").split(", ")
    assert note.endswith(" and 34 more") and len(windows) == 6


def test_nifti_intensity_notes_have_one_format_whatever_the_data_type():
    """A 2-D float NIfTI's note read "-1044.79..84.3924" beside a 3-D integer one's "-1044..84" (``:g``)."""
    ramp = np.linspace(-1044.79, 84.3924, 20 * 30).reshape(20, 30)
    flat = up.decode_medical(S.nifti(ramp.astype(np.float32)), "slice2d.nii")  # 2-D, float
    whole = up.decode_medical(S.nifti(np.stack([ramp.round()] * 3, -1).astype(np.int16)), "vol3d.nii")  # 3-D, int
    lo, hi = np.percentile(ramp.astype(np.float32).astype(np.float64), [0.5, 99.5])
    assert (round(lo), round(hi)) == (-1039, 79)
    assert flat.notes[0] == "NIfTI intensities -1039..79 (0.5-99.5 percentiles of the volume) mapped to 0..1"
    assert whole.notes[0] == "NIfTI intensities -1039..79 (0.5-99.5 percentiles of the volume) mapped to 0..1"
    # a span of about 1: three decimals, not 0..1
    unit = up.decode_medical(S.nifti(np.linspace(0, 1, 400).reshape(20, 20).astype(np.float32)), "mri.nii")
    assert unit.notes[0].startswith("NIfTI intensities 0.005..0.995 (")


def _series(slices: dict[str, tuple[np.ndarray, float]], orientation=(1, 0, 0, 0, 1, 0), extra=None) -> bytes:
    """A zip of single-frame DICOM slices {member: (stored pixels, offset along the slice normal mm)}, each at
    (-100, -120, 30) + offset x normal with ``orientation`` and 0.7 x 0.8 mm pixels; ``extra``: other members."""
    normal = np.cross(orientation[:3], orientation[3:])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for member, (pixels, offset) in slices.items():
            place = list(np.array([-100.0, -120.0, 30.0]) + offset * normal)
            archive.writestr(member, S.dicom(pixels, pixel_spacing=(0.7, 0.8), position=(place, orientation)))
        for member, data in (extra or {}).items():
            archive.writestr(member, data)
    return buf.getvalue()


@pytest.mark.parametrize("orientation", [(1, 0, 0, 0, 1, 0), (1, 0, 0, 0, 0, -1)])  # axial; coronal
def test_a_zip_of_a_dicom_series_is_a_volume_in_order_along_the_slice_normal_placed_as_its_headers_say(orientation):
    """A CT series, one file a slice (the usual way CT arrives), was refused as "unsupported file type". Its
    slices are stacked by position along the normal (not by name: the names here run 2, 0, 1 in position), and
    the NIfTI mask lands where the headers place each pixel (checked in RAS by hand)."""
    import gzip

    import nibabel as nib

    level = {"IM0.dcm": (10, 5.0), "IM1.dcm": (20, 7.5), "IM2.dcm": (30, 2.5)}  # member: (value, offset mm)
    slices = {m: (np.full((20, 24), 1024 + v, np.int16), offset) for m, (v, offset) in level.items()}
    volume = up.decode_medical(_series(slices, orientation, {"DICOMDIR.txt": b"index", "README": b"CT"}), "ct.zip")
    assert volume.format == "DICOM series" and volume.data.shape == (1, 3, 20, 24)
    assert volume.data[0, :, 0, 0].tolist() == [30.0, 10.0, 20.0]  # at 2.5, 5 and 7.5 mm along the normal
    assert volume.notes[0] == (
        "DICOM series: 3 slices in order along the slice normal (IM2.dcm ... IM1.dcm; the slice slider)"
    )
    assert "2 files without a DICOM image left out (e.g. DICOMDIR.txt)" in volume.notes
    assert volume.spacing == (0.7, 0.8)
    shown = np.zeros((3, 20, 24), np.uint8)
    shown[1, 3, 5] = 1  # the page's slice 1 (IM0, 5 mm along the normal), row 3, column 5
    written = nib.Nifti1Image.from_bytes(gzip.decompress(volume.nifti_grid.mask_file(shown)))
    (voxel,) = np.argwhere(np.asanyarray(written.dataobj))
    rows, cols = np.asarray(orientation[3:], float), np.asarray(orientation[:3], float)
    lps = np.array([-100.0, -120.0, 30.0]) + 5.0 * np.cross(cols, rows) + 3 * 0.7 * rows + 5 * 0.8 * cols
    np.testing.assert_allclose(nib.affines.apply_affine(written.affine, voxel), lps * [-1, -1, 1], atol=1e-4)


def test_a_zip_of_dicoms_not_of_one_series_is_refused_saying_why_and_what_to_do():
    import pydicom

    one = np.zeros((20, 24), np.int16)
    advice = "upload one slice (.dcm), or convert the series to NIfTI (e.g. `dcm2niix`)"
    with pytest.raises(up.UploadError, match=r"^two.zip: a.dcm and b.dcm lie at the same place: not the slices"):
        up.decode_medical(_series({"a.dcm": (one, 0.0), "b.dcm": (one, 0.0)}), "two.zip")
    with pytest.raises(up.UploadError, match=r"^mixed.zip: b.dcm and a.dcm differ in Rows \(30 vs 20\)"):
        up.decode_medical(_series({"a.dcm": (one, 0.0), "b.dcm": (np.zeros((30, 24)), 2.0)}), "mixed.zip")
    with zipfile.ZipFile(io.BytesIO(_series({"a.dcm": (one, 0.0), "b.dcm": (one, 2.0)}))) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    for k, name in enumerate(files):  # the same geometry, two series
        ds = pydicom.dcmread(io.BytesIO(files[name]))
        ds.SeriesInstanceUID = f"1.2.3.{k}"
        buf = io.BytesIO()
        ds.save_as(buf)
        files[name] = buf.getvalue()
    with pytest.raises(up.UploadError, match=r"differ in SeriesInstanceUID \(1\.2\.3\.1 vs 1\.2\.3\.0\)") as err:
        up.decode_medical(S.frames_zip([], extra=files), "study.zip")
    assert str(err.value).endswith(advice)
    with pytest.raises(up.UploadError, match=r"^frames.zip: the zip holds no DICOM image; a zip is read as one"):
        up.decode_medical(S.frames_zip([np.zeros((20, 20), np.uint8)]), "frames.zip")
    # unevenly spaced slices are shown, as a multi-frame object's frames are, with no NIfTI (said why)
    uneven = up.decode_medical(_series({"a": (one, 0.0), "b": (one, 2.0), "c": (one, 5.0)}), "gap.zip")
    assert uneven.num_slices == 3 and uneven.nifti_grid is None
    assert any(n.startswith("the DICOM's slices are not evenly spaced") for n in uneven.notes)


def test_a_dicom_upload_does_not_print_nibabels_experimental_reader_warning(monkeypatch):
    """nibabel.nicom warns on import that its DICOM readers are experimental: the server's console showed it on
    the first placed DICOM upload of every process."""
    import sys
    import warnings

    for module in [m for m in sys.modules if m.startswith("nibabel.nicom")]:
        monkeypatch.delitem(sys.modules, module)  # imported afresh, as in a new server process; put back after
    data = S.dicom(np.zeros((20, 24)), pixel_spacing=(0.7, 0.8), position=([0, 0, 0], [1, 0, 0, 0, 1, 0]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert up.decode_medical(data, "slice.dcm").nifti_grid is not None  # the wrapper ran
    assert "nibabel.nicom" in sys.modules
    assert not [w for w in caught if "highly experimental" in str(w.message)]
