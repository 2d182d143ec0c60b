"""Choices of the upload layer that no test pinned (a mutation audit changed each line and every test still
passed): the medical model input's padding and its inverse, area versus linear resampling, the colourless
check of road photos, the clip frames' rounding and the square photo's warning. Every expected value is derived
by hand in the test."""

from __future__ import annotations

import numpy as np

from apps import uploads as up
from tests.apps import samples as S

# ----------------------------------------------------------------------------- medical model input, output


def test_resize_round_trip_with_odd_padding_puts_the_lesion_back_on_its_rows():
    """A 37x64 slice gets 27 rows of padding: 13 above and 14 below, and :func:`to_slice` must take the slice
    back from row 13, or a lesion on rows 10..13 comes back a row off."""
    img = np.zeros((37, 64), np.float32)
    img[10:14, 20:30] = 1.0
    model_in, note = up.fit_to_model(img, 64, mode="resize")
    assert note.startswith("resized from 64x37 to 64x64, edge-padded")
    assert np.nonzero(model_in[:, 25])[0].tolist() == [23, 24, 25, 26]  # 13 + 10 .. 13 + 13
    back = up.to_slice(model_in, img.shape, mode="resize")
    np.testing.assert_array_equal(back, img)


def test_resize_padding_repeats_the_edge_rows():
    """The square is padded with the slice's edge values (its first row above, its last below), not zeros: a
    black band would be a hard edge the models never saw."""
    img = np.linspace(0.2, 0.8, 32, dtype=np.float32)[:, None].repeat(64, 1)
    out, _ = up.fit_to_model(img, 64, mode="resize")
    np.testing.assert_array_equal(out[:16], np.broadcast_to(img[0], (16, 64)))
    np.testing.assert_array_equal(out[16:48], img)
    np.testing.assert_array_equal(out[48:], np.broadcast_to(img[-1], (16, 64)))


def test_anisotropic_pixels_are_resized_one_axis_at_a_time():
    """48 rows of 2 mm and 192 columns of 0.5 mm (96 x 96 mm) become 64x64: the rows grow (linear), the columns
    shrink 3x, which must average each 3 columns (area). A stripe on the middle one of every 3 columns averages to
    exactly 1/3; one resize of both axes at once cannot average (OpenCV averages only when both axes shrink) and
    weighs the middle column 2/3."""
    img = np.zeros((48, 192), np.float32)
    img[:, 1::3] = 1.0
    out, note = up.fit_to_model(img, 64, mode="resize", spacing=(2.0, 0.5))
    assert out.shape == (64, 64) and note == "resized from 192x48 to 64x64"  # 96 x 96 mm: no padding
    np.testing.assert_allclose(out, 1 / 3, atol=1e-6)


def test_mm_mode_averages_when_the_window_shrinks():
    """0.125 mm pixels: the 32 mm window is 256 px, shrunk 4x to the 64 px of 0.5 mm, which must average each
    4x4 block (area): a stripe on every fourth column gives exactly 0.25. Linear sampling reads between columns
    4i + 1 and 4i + 2 and sees only the zeros."""
    img = np.zeros((600, 600), np.float32)
    img[:, ::4] = 1.0
    out, note = up.fit_to_model(img, 64, mode="mm", spacing=(0.125, 0.125))
    assert "256x256" in note
    np.testing.assert_allclose(out, 0.25, atol=1e-6)


def test_to_slice_is_bilinear():
    """A ramp over the model's 64 columns, taken back to a 100-column slice: bilinear sampling of a linear ramp is
    the ramp itself at the source position ``(j + 0.5) * 64 / 100 - 0.5`` (clamped to the first and last
    column), not nearest-neighbour steps."""
    ramp = np.linspace(0, 1, 64, dtype=np.float32)[None].repeat(64, 0)
    back = up.to_slice(ramp, (100, 100), mode="resize")
    source = np.clip((np.arange(100) + 0.5) * 0.64 - 0.5, 0, 63)
    np.testing.assert_allclose(back, np.broadcast_to(source / 63, (100, 100)), atol=1e-5)


# --------------------------------------------------------------------------------- road photos and clips


def test_a_blue_photo_whose_green_equals_its_red_is_not_colourless():
    """Colourless means R == G == B everywhere: RGB (100, 100, 200) has R == G but is blue."""
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[...] = (100, 100, 200)
    assert not up.decode_rgb_image(S.png(rgb), "p.png").colourless
    rgb[...] = (100, 100, 100)
    assert up.decode_rgb_image(S.png(rgb), "p.png").colourless


def test_clip_frames_shrink_to_the_rounded_size():
    """A 719x1279 (WxH) frame fitted to 640 px: 719 * 640 / 1279 = 359.8 columns, rounded to 360, not cut to
    359."""
    assert up._shrink(np.zeros((1279, 719, 3), np.uint8), 640).shape == (640, 360, 3)


def test_a_square_photo_is_warned_as_square():
    """Square is as unlike the wide dashcam frames as portrait: the warning says so, not only the scale."""
    warning = up.unlike_dashcam(500, 500, "photo", "The models learnt from wide dashcam frames")
    assert warning.startswith("This photo is square (500x500). The models learnt from wide dashcam frames:")
