"""Medical uploads at the models' pixel size: the file's spacing is read (NIfTI zooms, DICOM PixelSpacing) and a
window of 0.5 mm pixels (the LIDC crops' size) goes to the model, not the whole slice squeezed to 128 pixels."""

from __future__ import annotations

import gzip
import io
import zipfile

import cv2
import nibabel as nib
import numpy as np
import pytest

from apps import uploads as up
from tests.apps import samples as S
from tests.apps.pages import image_captions as _image_captions
from tests.apps.pages import page_ok as _ok
from tests.apps.pages import record_downloads as _record_downloads
from tests.apps.pages import slab_mask
from tests.apps.pages import texts as _texts
from tests.apps.pages import upload_on as _upload_on


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius_mm: float, spacing) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    mm = ((rows - centre[0]) * spacing[0]) ** 2 + ((cols - centre[1]) * spacing[1]) ** 2
    return (mm <= radius_mm**2).astype(np.float32)


@pytest.mark.parametrize("spacing", [(0.7, 0.7), (0.5, 1.5)])
def test_a_window_at_the_models_pixel_size_keeps_a_nodule_its_size_and_shape(spacing):
    """An 11 mm nodule in a 512-pixel CT slice of 0.7 mm pixels is 16 px; resized whole to 128 it was 4 px and the
    U-Net gave at most 0.02. At 0.5 mm it is 22 px across, and round even from anisotropic pixels."""
    shape, centre = (512, 400), (300.0, 120.0)
    image = _disc(shape, centre, 5.5, spacing)
    out, how = up.fit_to_model(image, 128, "mm", spacing, centre)
    rows, cols = np.nonzero(out > 0.5)
    assert out.shape == (128, 128)
    # 1.5 mm columns sample the nodule 7 times across: round within 3 px (resizing kept it a 1:3 ellipse)
    tolerance = 1.5 if spacing[0] == spacing[1] else 3
    assert np.ptp(rows) + 1 == pytest.approx(22, abs=tolerance) and np.ptp(cols) + 1 == pytest.approx(22, abs=tolerance)
    assert abs(rows.mean() - 63.5) <= 1 and abs(cols.mean() - 63.5) <= 1  # the window sits on the centre given
    # 64 mm: 91x91 pixels of 0.7 mm; 128 rows of 0.5 mm by 43 columns of 1.5 mm
    window = {(0.7, 0.7): "91x91", (0.5, 1.5): "43x128"}[spacing]
    assert how.startswith(f"a 64 mm window ({window} of its {spacing[1]:g} x {spacing[0]:g} mm pixels)")
    with pytest.raises(ValueError, match="needs the slice's pixel spacing"):
        up.fit_to_model(image, 128, "mm")


def test_a_window_that_fits_stays_inside_the_slice_and_moves_one_pixel_a_step():
    """Centre sliders near the edge padded smeared edge pixels into a slice large enough; round() took halves
    to even, so the window moved in 2-pixel steps."""
    image = np.arange(100, dtype=np.float32).reshape(10, 10)
    out, how = up.fit_to_model(image, 4, "crop", centre=(0, 9))  # held inside: rows 0-3, columns 6-9
    assert out.tolist() == image[0:4, 6:10].tolist() and "edge-padded" not in how
    tops = [int(up.fit_to_model(image, 4, "crop", centre=(row, 5))[0][0, 0]) // 10 for row in range(2, 8)]
    assert tops == [1, 2, 3, 4, 5, 6]  # floor(row - 1.5 + 0.5): one row per step
    small = np.arange(9, dtype=np.float32).reshape(3, 3)
    out, how = up.fit_to_model(small, 5, "crop")  # larger than the slice: edge-padded around it
    assert "edge-padded" in how and out[1:4, 1:4].tolist() == small.tolist() and out[0, 0] == 0


def test_the_window_drawn_on_the_slice_is_the_one_the_model_gets():
    """The page drew only the model's input: where the window sat in the slice was not shown."""
    image = np.arange(512 * 512, dtype=np.float32).reshape(512, 512)
    # 0.25 mm pixels: 64 mm is 256 of them, centred: rows and columns floor(255.5 - 127.5 + 0.5) = 128 on
    assert up.window_rect((512, 512), 128, "mm", (0.25, 0.25)) == (128, 128, 256, 256)
    # a crop near the corner is held inside the slice: top max(0, -53), left min(327, 400 - 128)
    top, left, rows, cols = up.window_rect((300, 400), 128, "crop", centre=(10, 390))
    assert (top, left, rows, cols) == (0, 272, 128, 128)
    out, _ = up.fit_to_model(image[:300, :400], 128, "crop", centre=(10, 390))
    assert out.tolist() == image[top : top + rows, left : left + cols].tolist()
    assert up.window_rect((512, 512), 128, "resize") is None  # the whole slice


def test_the_slice_preview_is_at_physical_aspect_and_frames_a_window_larger_than_the_slice():
    """0.5 x 1.5 mm pixels showed a round nodule as a 1:3 ellipse and the square 64 mm window as a strip; a
    window larger than a 20x20 slice was drawn wholly outside it: nothing yellow, under a caption about it."""
    image = np.zeros((400, 300), np.float32)  # 200 mm tall, 450 mm wide
    rows, cols = np.mgrid[:400, :300]
    image[((rows - 200) * 0.5) ** 2 + ((cols - 150) * 1.5) ** 2 <= 36] = 1.0  # a round 12 mm nodule
    rect = up.window_rect(image.shape, 128, "mm", (0.5, 1.5), (200, 150))
    shown = up.window_preview(image, rect, (0.5, 1.5))
    assert shown.shape == (114, 256, 3)  # 450 mm -> 256 px, 200 mm -> 114 px
    nodule_rows, nodule_cols = np.nonzero(shown[..., 2] == 255)  # white (yellow has no blue)
    assert abs(np.ptp(nodule_rows) - np.ptp(nodule_cols)) <= 1  # round again
    yellow_rows, yellow_cols = np.nonzero((shown[..., 0] == 255) & (shown[..., 2] == 0))
    assert abs(np.ptp(yellow_rows) - np.ptp(yellow_cols)) <= 1  # the 64 mm window is square
    tiny = up.window_preview(np.zeros((20, 20), np.float32), up.window_rect((20, 20), 128, "mm", (0.7, 0.7)), (0.7, 0.7))
    yellow = (tiny[..., 0] == 255) & (tiny[..., 2] == 0)
    assert yellow[0].all() and yellow[-1].all() and yellow[:, 0].all() and yellow[:, -1].all()  # frames it


def test_nifti_and_dicom_headers_give_the_pixel_spacing():
    volume = np.zeros((30, 20, 4), np.int16)
    vol = up.decode_medical(S.nifti(volume, affine=np.diag([1.5, 0.5, 2.5, 1.0])), "aniso.nii")
    assert vol.spacing == (0.5, 1.5)  # display rows run along y (0.5 mm), columns along x (1.5 mm)
    assert "pixels 1.5 x 0.5 mm (from the header)" in vol.notes
    dcm = up.decode_medical(S.dicom(np.zeros((16, 24)), pixel_spacing=(0.6, 0.8)), "slice.dcm")
    assert dcm.spacing == (0.6, 0.8)
    assert up.decode_medical(S.dicom(np.zeros((16, 24))), "bare.dcm").spacing is None
    assert up.decode_medical(S.png(np.zeros((16, 24), np.uint8)), "slice.png").spacing is None
    # nibabel's default (identity affine, no unit) states no size: not taken for 1 mm
    assert up.decode_medical(S.nifti(volume), "plain.nii").spacing is None
    assert up.decode_medical(S.nifti(volume, affine=np.diag([0.0007, 0.0009, 0.002, 1]), unit="meter"), "m.nii").spacing == (
        pytest.approx(0.9), pytest.approx(0.7))  # metres: x 1000
    odd = up.decode_medical(S.nifti(volume, affine=np.diag([0.01, 0.01, 1, 1])), "odd.nii")  # 0.01 mm: a unit slip
    assert odd.spacing is None and any("is not a CT's (0.05-10 mm): ignored" in n for n in odd.notes)


def test_page_feeds_a_ct_volume_at_the_models_pixel_size_by_default(demo_env, monkeypatch):
    calls = []
    fit = up.fit_to_model
    monkeypatch.setattr(up, "fit_to_model", lambda *args: calls.append(args) or fit(*args))
    # x: 400 voxels of 0.8 mm, y: 512 of 0.6 mm; shown with rows along y: 512 rows x 400 columns, so a swap of
    # rows and columns (or of the two pixel sizes) shows in every figure below
    volume = np.zeros((400, 512, 3), np.int16)
    ct = S.nifti(volume, compressed=True, affine=np.diag([0.8, 0.6, 2.5, 1]))
    at = _upload_on("medical", "ct.nii.gz", ct)
    _ok(at)
    assert at.radio(key="medical_fit_3").value == "mm"
    assert [at.slider(key=f"medical_centre_{axis}").max for axis in ("row", "col")] == [511, 399]
    # 64 mm: round(64 / 0.8) = 80 columns, round(64 / 0.6) = 107 rows
    assert "a 64 mm window (80x107 of its 0.8 x 0.6 mm pixels) resampled to the models' 0.5 mm pixels" in _texts(
        at.caption
    )
    at.slider(key="medical_centre_col").set_value(100).run()
    _ok(at)
    _, _, mode, spacing, centre = calls[-1]  # the window sits where the sliders put it, in mm mode too
    assert mode == "mm" and centre == (256, 100) and spacing == pytest.approx((0.6, 0.8))
    whole = "The whole slice; the model sees the yellow window"
    assert whole in _image_captions(at)
    at.radio(key="medical_fit_3").set_value("resize").run()
    _ok(at)
    assert "resized from 400x512 to 128x128" in _texts(at.caption)
    assert whole not in _image_captions(at)  # the model gets the whole slice
    # an earlier upload without a pixel size set the choice to resize: the next one with a size still starts at mm
    at = _upload_on("medical", "bare.nii.gz", S.nifti(volume, compressed=True))
    at.radio(key="medical_fit_2").set_value("resize").run()
    at.file_uploader(key="medical_upload").set_value(("ct.nii.gz", ct, "application/gzip")).run()
    _ok(at)
    assert at.radio(key="medical_fit_3").value == "mm"


def test_a_rerun_for_other_samples_does_not_convert_or_fit_the_slice_again(demo_env, monkeypatch):
    """Every rerun (a seed, a sample count) converted the whole slice to float32 and fitted and previewed it
    again: 0.5-1 s and about 2 GB at a time for a 39-megapixel upload (the audit's measurement)."""
    sliced, fitted = [], []
    slice_, fit = up.MedicalVolume.slice, up.fit_to_model
    monkeypatch.setattr(up.MedicalVolume, "slice", lambda self, *a: sliced.append(a) or slice_(self, *a))
    monkeypatch.setattr(up, "fit_to_model", lambda *args: fitted.append(args) or fit(*args))
    volume = (np.arange(300 * 260 * 2).reshape(300, 260, 2) % 1000).astype(np.int16)
    at = _upload_on("medical", "rerun.nii.gz", S.nifti(volume, compressed=True, affine=np.diag([0.7, 0.7, 2, 1])))
    _ok(at)
    assert sliced and fitted
    before = (len(sliced), len(fitted))
    at.number_input(key="medical_seed").set_value(7).run()
    _ok(at)
    assert (len(sliced), len(fitted)) == before
    at.slider(key="medical_centre_col").set_value(100).run()  # another window: fitted anew, the slice kept
    _ok(at)
    assert len(sliced) == before[0] and len(fitted) == before[1] + 1


def test_one_coronal_or_sagittal_slice_is_shown_in_its_own_plane():
    """A NIfTI holding one coronal slice (64 x 1 x 80 voxels) was refused: "the image is 64x1 pixels". Shown as
    radiology shows them: superior up; coronal with the patient's right on the viewer's left, sagittal with
    anterior on the left; the pixel sizes are those of the plane's two axes."""
    coronal = np.zeros((64, 1, 80), np.int16)
    coronal[5, 0, 79] = 1000  # low x: the patient's left (RAS+), on the viewer's right (radiological); most superior
    vol = up.decode_medical(S.nifti(coronal, affine=np.diag([0.7, 1.0, 0.9, 1])), "coronal.nii")
    assert vol.num_slices == 1 and vol.data.shape[2:] == (80, 64)
    assert np.unravel_index(np.argmax(vol.slice(0)), (80, 64)) == (0, 58)  # top row; column 63 - 5
    assert vol.spacing == pytest.approx((0.9, 0.7)) and any("one coronal slice (64x1x80" in n for n in vol.notes)
    sagittal = np.zeros((1, 64, 80), np.int16)
    sagittal[0, 60, 79] = 1000  # anterior (high y), most superior
    vol = up.decode_medical(S.nifti(sagittal, affine=np.diag([1.0, 0.6, 0.9, 1])), "sagittal.nii")
    assert vol.data.shape[2:] == (80, 64) and vol.spacing == pytest.approx((0.9, 0.6))
    assert np.unravel_index(np.argmax(vol.slice(0)), (80, 64)) == (0, 3)  # anterior on the left: 63 - 60
    # the plane's own pixel sizes decide whether a size is stated: 1 x 2.5 mm is (an axial 1 x 1 would not be)
    wide = up.decode_medical(S.nifti(np.zeros((64, 1, 80), np.int16), affine=np.diag([1.0, 1.0, 2.5, 1])), "c.nii")
    assert wide.spacing == pytest.approx((2.5, 1.0))


def test_the_downloaded_masks_say_where_the_models_window_sat_on_the_file(demo_env):
    """An uploaded 256x256 slice's masks came back as 128x128 images named after the slice, with nothing
    saying they are the model's window and where it sat."""
    from apps.views.medical import _downloads

    probs = np.zeros((2, 128, 128), np.float32)
    result = {"probs": probs, "mean": probs.mean(0), "uncertainty": probs[0]}
    grid = "ct.nii.gz slice 5, a window of rows 64-191, columns 64-191"
    readme = _downloads("ct.nii.gz slice 5", np.zeros((128, 128)), result, 0.5, grid)["README.txt"].decode()
    assert f"Every image is the model's 128x128 input: {grid}." in readme


# ------------------------------------------------------------------------- masks back on the file's pixels


def test_a_map_on_the_models_input_goes_back_on_the_slices_own_pixels():
    """The downloads were the model's 128x128 input: a mask that overlays nothing in the user's viewer. Each
    mode's inverse, by hand: the window's pixels land where fit_to_model took them, 0 outside it."""
    model_map = np.arange(128 * 128, dtype=np.float32).reshape(128, 128)
    # crop: a 128x128 window held inside a 300x400 slice, rows 0-127, columns 272-399 (the test above)
    back = up.to_slice(model_map, (300, 400), "crop", centre=(10, 390))
    assert back.shape == (300, 400)
    np.testing.assert_array_equal(back[:128, 272:], model_map)
    assert not back[128:].any() and not back[:, :272].any()
    # mm at 0.25 mm pixels: the window is 256x256 slice pixels (rows and columns 128-383), each model pixel two
    ones = up.to_slice(np.ones((128, 128), np.float32), (512, 512), "mm", (0.25, 0.25))
    np.testing.assert_array_equal(ones[128:384, 128:384], 1.0)
    assert ones.sum() == 256 * 256
    # a window larger than the slice (edge-padded going in, rows and columns -28..99): the part on the slice comes
    # back, the padding is dropped
    assert up.window_rect((100, 100), 128, "crop", centre=(0, 0))[:2] == (-28, -28)
    np.testing.assert_array_equal(up.to_slice(model_map, (100, 100), "crop", centre=(0, 0)), model_map[28:, 28:])
    # resize: a 200x100 slice is 128x64 in the input, 32 columns of edge padding each side; the padding is dropped
    padded = np.zeros((128, 128), np.float32)
    padded[:, :32] = padded[:, 96:] = 1.0
    assert not up.to_slice(padded, (200, 100), "resize").any()
    smooth = np.add.outer(np.linspace(0, 1, 200), np.linspace(0, 0.5, 100)).astype(np.float32)
    there, _ = up.fit_to_model(smooth, 128, "resize")
    np.testing.assert_allclose(up.to_slice(there, (200, 100), "resize"), smooth, atol=0.02)
    # anisotropic pixels (100 rows of 1.5 mm, 100 columns of 0.5 mm: 128 rows x 43 columns in the input)
    there, _ = up.fit_to_model(smooth[:100], 128, "resize", (1.5, 0.5))
    np.testing.assert_allclose(up.to_slice(there, (100, 100), "resize", (1.5, 0.5)), smooth[:100], atol=0.03)


TURNED = np.array([[0, 0, -2.0, 10], [-0.7, 0, 0, 5], [0, 0.8, 0, 1], [0, 0, 0, 1]])  # axes swapped and flipped


@pytest.mark.parametrize(
    "shape, affine",
    [
        ((17, 18, 19), np.diag([0.7, 0.8, 2.0, 1])),  # RAS+ already
        ((17, 18, 19), TURNED),
        ((17, 18, 19, 2), TURNED),  # 4D: the mask is 3D
        ((17, 1, 19), np.diag([0.7, 0.8, 2.0, 1])),  # one coronal slice
        ((1, 17, 19), np.diag([0.7, 0.8, 2.0, 1])),  # one sagittal slice
        ((17, 18), np.diag([-0.7, 0.8, 2.0, 1])),  # a 2D file, x flipped
    ],
)
def test_a_mask_on_a_shown_nifti_slice_lands_on_the_voxel_it_shows(shape, affine):
    """The NIfTI mask is written on the file's own grid and affine: a pixel marked on a shown slice (reoriented to
    RAS+, transposed and flipped for the radiological view) is the voxel whose value that pixel shows."""
    data = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)
    volume = up.decode_medical(S.nifti(data, compressed=True, affine=affine), "scan.nii.gz")
    index, row, col = volume.num_slices // 2, 1, 2
    shown = np.zeros((volume.num_slices, *volume.shape2d), np.uint8)
    shown[index, row, col] = 1
    written = nib.Nifti1Image.from_bytes(gzip.decompress(volume.nifti_grid.mask_file(shown)))
    np.testing.assert_allclose(written.affine, affine)
    mask = np.asanyarray(written.dataobj)
    spatial = data[..., 0] if data.ndim == 4 else data.reshape(mask.shape)  # a 2D file comes back (X, Y, 1)
    assert mask.dtype == np.uint8 and mask.shape == spatial.shape
    assert (written.header["cal_min"], written.header["cal_max"]) == (0, 1)  # not the scan's display range
    voxel = np.argwhere(spatial == volume.data[0, index, row, col])
    np.testing.assert_array_equal(np.argwhere(mask), voxel)
    axis, file_index = volume.nifti_grid.file_slice(index, volume.num_slices)  # the name the downloads carry
    assert voxel[0][axis] == file_index


def test_the_zip_puts_the_masks_on_the_uploaded_slice_and_its_volume(demo_env):
    from apps.views.medical import SliceGrid, _downloads

    volume = up.decode_medical(
        S.nifti(np.zeros((300, 260, 3), np.int16), compressed=True, affine=np.diag([0.25, 0.25, 2, 1])), "ct.nii.gz"
    )
    raw = volume.slice(1)  # 260 rows x 300 columns
    mean = np.zeros((128, 128), np.float32)
    mean[60:70, 60:70] = 0.9
    result = {"probs": np.stack([mean, mean * 0]), "mean": mean, "uncertainty": mean}
    back = SliceGrid(raw, "mm", volume.spacing, (100.0, 150.0), volume, index=1)
    files = _downloads("ct.nii.gz slice 1", mean, result, 0.5, "a window", back)

    def png(name: str) -> np.ndarray:
        return cv2.imdecode(np.frombuffer(files[name], np.uint8), cv2.IMREAD_UNCHANGED)

    assert png("slice.png").shape == png("mean_mask.png").shape == png("sample_01.png").shape == (260, 300)
    assert png("model_input/mean_mask.png").shape == (128, 128) and "model_input/sample_01.png" in files
    # the window: 256x256 slice pixels from row 0 (held inside), column 23; model pixels 60-69 (0.9) are slice
    # pixels 120-139 (two each), 143-162; bilinear puts 0.675 on the block's edge pixels, 0.225 beside them
    assert up.window_rect(raw.shape, 128, "mm", volume.spacing, (100.0, 150.0)) == (0, 23, 256, 256)
    rows, cols = np.nonzero(png("mean_mask.png"))
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (120, 139, 143, 162)
    mask = np.asanyarray(nib.Nifti1Image.from_bytes(gzip.decompress(files["mean_mask.nii.gz"])).dataobj)
    assert mask.shape == (300, 260, 3) and not mask[..., [0, 2]].any() and mask.sum() == 20 * 20
    readme = files["README.txt"].decode()
    assert "on the slice's own 300x260 pixels as the page shows it (anterior up" in readme
    assert "model_input/ holds the same" in readme
    assert sorted(zipfile.ZipFile(io.BytesIO(up.zip_bytes(files))).namelist()) == sorted(files)


def test_an_upload_offers_its_masks_on_its_own_pixels_and_a_nifti_on_its_volume(demo_env, monkeypatch):
    made = _record_downloads(monkeypatch)
    volume = np.zeros((400, 512, 3), np.int16)
    at = _upload_on("medical", "ct.nii.gz", S.nifti(volume, compressed=True, affine=np.diag([0.8, 0.6, 2.5, 1])))
    _ok(at)
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == [
        "Mean mask (PNG, the slice's 400x512 pixels)",
        "All 16 sample masks + maps (zip)",
        "Mean mask (NIfTI, the volume's grid)",
        "Mean masks of slices 0-2 (NIfTI, the volume's grid)",  # the range: the shown slice +-5, in 3 slices
    ]
    png = cv2.imdecode(np.frombuffer(made["ct_slice_1_mean_mask.png"](), np.uint8), cv2.IMREAD_UNCHANGED)
    assert png.shape == (512, 400)
    nifti = nib.Nifti1Image.from_bytes(gzip.decompress(made["ct_slice_1_mean_mask.nii.gz"]()))
    assert nifti.shape == (400, 512, 3) and np.allclose(nifti.affine, np.diag([0.8, 0.6, 2.5, 1]))
    names = zipfile.ZipFile(io.BytesIO(made["ct_slice_1_segmentations.zip"]())).namelist()
    assert {"slice.png", "mean_mask.png", "mean_mask.nii.gz", "model_input/input.png", "README.txt"} <= set(names)
    at = _upload_on("medical", "photo.png", S.png(np.zeros((90, 200), np.uint8)))
    _ok(at)
    assert at.get("download_button")[0].proto.label == "Mean mask (PNG, the slice's 200x90 pixels)"
    assert len(at.get("download_button")) == 2  # no place in a patient: no NIfTI
    placed = ([-100, -120, 30], [1, 0, 0, 0, 1, 0])
    at = _upload_on("medical", "ct.dcm", S.dicom(np.zeros((200, 180)), pixel_spacing=(0.7, 0.7), position=placed))
    _ok(at)
    assert at.get("download_button")[2].proto.label == "Mean mask (NIfTI, placed by the DICOM header)"
    nifti = nib.Nifti1Image.from_bytes(gzip.decompress(made["ct_mean_mask.nii.gz"]()))
    assert nifti.shape == (200, 180, 1)


def test_a_volume_stored_superior_to_inferior_names_the_files_own_slice(demo_env, monkeypatch):
    """The page counts slices inferior to superior (RAS+); a file stored the other way (a negative z step, as
    scanners often write) got downloads named after the page's slice 3 while the mask sat on the file's 1."""
    names = _record_downloads(monkeypatch)
    volume = np.zeros((64, 64, 5), np.int16)
    at = _upload_on("medical", "ct.nii.gz", S.nifti(volume, compressed=True, affine=np.diag([0.7, 0.7, -2.5, 1])))
    at.slider(key="medical_slice").set_value(3).run()
    _ok(at)
    assert "The page's slice 3 is the file's slice 1 (its own array order)." in _texts(at.caption)
    assert at.subheader[0].value == "ct.nii.gz slice 1"
    assert "ct_slice_1_mean_mask.nii.gz" in names and not any("slice_3" in n for n in names)
    assert at.slider(key="medical_slice").label == "Slice (inferior to superior)"


@pytest.mark.parametrize(
    "orientation, world",
    [
        # axial: columns run to the patient's left (+x LPS), rows to posterior (+y); pixel (row 3, column 5)
        ([1, 0, 0, 0, 1, 0], lambda x, y, z: (-(x + 5 * 0.8), -(y + 3 * 0.7), z)),
        # coronal: rows run inferior (-z)
        ([1, 0, 0, 0, 0, -1], lambda x, y, z: (-(x + 5 * 0.8), -y, z - 3 * 0.7)),
    ],
)
def test_a_dicom_slices_mask_goes_out_as_a_nifti_where_its_header_places_the_slice(orientation, world):
    """A DICOM upload's masks came only as PNGs, which no viewer can place on the series. Its NIfTI mask sits
    where ImagePositionPatient / ImageOrientationPatient / PixelSpacing put each pixel (in RAS, by hand)."""
    position = [-100.0, -120.0, 30.0]
    data = S.dicom(np.zeros((20, 24)), pixel_spacing=(0.7, 0.8), position=(position, orientation))
    volume = up.decode_medical(data, "slice.dcm")
    assert volume.nifti_grid is not None and volume.nifti_grid.from_dicom
    shown = np.zeros((1, 20, 24), np.uint8)
    shown[0, 3, 5] = 1  # the page shows a DICOM slice as stored: row 3, column 5
    written = nib.Nifti1Image.from_bytes(gzip.decompress(volume.nifti_grid.mask_file(shown)))
    assert written.shape == (20, 24, 1) and written.header.get_xyzt_units()[0] == "mm"
    (voxel,) = np.argwhere(np.asanyarray(written.dataobj))
    np.testing.assert_allclose(nib.affines.apply_affine(written.affine, voxel), world(*position), atol=1e-4)
    assert int(written.header["sform_code"]) == int(written.header["qform_code"]) == 1  # scanner coordinates
    # a DICOM that does not say where it lies gets no NIfTI, and the page offers none
    assert up.decode_medical(S.dicom(np.zeros((20, 24)), pixel_spacing=(0.7, 0.8)), "bare.dcm").nifti_grid is None


def test_a_range_of_slices_is_segmented_into_one_nifti_of_the_volume(demo_env, monkeypatch):
    """A lesion spans several slices; the page segmented one. The range's mean masks, each slice fitted as the
    shown one, land on their own slices of the file's grid (a stand-in model whose mean is its input, so the
    mask is known: the bright square, in the chosen slices alone)."""
    from apps import demo_models as dm

    def mean_is_input(task, image, num_samples, seed):
        return {"probs": np.stack([image] * num_samples), "mean": image, "uncertainty": np.zeros_like(image)}

    monkeypatch.setattr(dm, "medical_predict", mean_is_input)
    made = _record_downloads(monkeypatch)
    volume = np.zeros((128, 128, 6), np.int16)
    volume[40:60, 70:90, :] = 1000  # on every slice
    at = _upload_on("medical", "ct.nii.gz", S.nifti(volume, compressed=True))  # 128x128: fed as it is
    _ok(at)
    at.slider(key="medical_slab").set_value((1, 3)).run()
    _ok(at)
    assert "the file's slices 1-3 filled, the others 0" in _texts(at.caption)
    mask = nib.Nifti1Image.from_bytes(gzip.decompress(made["ct_slices_1-3_mean_mask.nii.gz"]())).get_fdata()
    expected = np.zeros(volume.shape, bool)
    expected[40:60, 70:90, 1:4] = True
    np.testing.assert_array_equal(mask.astype(bool), expected)


@pytest.mark.parametrize("z_step", [2.5, -2.5])  # frames stored inferior to superior, and the other way
def test_a_multiframe_dicoms_mask_goes_out_as_a_nifti_of_its_frames_where_its_header_places_them(z_step):
    """An enhanced (multi-frame) DICOM's masks came only as PNGs. Each frame sits at its own per-frame
    ImagePositionPatient: a mark on the page's frame 1, row 3, column 5 lands there (in RAS, by hand)."""
    start = [-100.0, -120.0, 30.0]
    places = [[start[0], start[1], start[2] + k * z_step] for k in range(3)]
    data = S.dicom(
        np.zeros((3, 20, 24)),
        pixel_spacing=(0.7, 0.8),
        enhanced=True,
        position=(start, [1, 0, 0, 0, 1, 0]),
        frame_positions=places,
    )
    volume = up.decode_medical(data, "series.dcm")
    assert volume.num_slices == 3 and volume.nifti_grid is not None and volume.nifti_grid.from_dicom
    assert volume.nifti_grid.file_slice(1, 3) == (2, 1)  # the page shows the frames as stored
    shown = np.zeros((3, 20, 24), np.uint8)
    shown[1, 3, 5] = 1
    written = nib.Nifti1Image.from_bytes(gzip.decompress(volume.nifti_grid.mask_file(shown)))
    assert written.shape == (20, 24, 3)
    (voxel,) = np.argwhere(np.asanyarray(written.dataobj))
    world = (-(start[0] + 5 * 0.8), -(start[1] + 3 * 0.7), start[2] + z_step)
    np.testing.assert_allclose(nib.affines.apply_affine(written.affine, voxel), world, atol=1e-4)


def test_a_multiframe_dicom_whose_frames_no_one_affine_places_gets_no_nifti_and_says_why():
    def decoded(places):
        data = S.dicom(
            np.zeros((3, 20, 24)),
            pixel_spacing=(0.7, 0.8),
            enhanced=True,
            position=(places[0], [1, 0, 0, 0, 1, 0]),
            frame_positions=places,
        )
        return up.decode_medical(data, "series.dcm")

    for places in ([[0, 0, 0], [0, 0, 2], [0, 0, 5]], [[0, 0, 0]] * 3):  # uneven; three frames in one place
        volume = decoded(places)
        assert volume.nifti_grid is None
        assert any("frames are not evenly spaced" in note for note in volume.notes)
    assert decoded([[0, 0, 0], [0, 0, 2], [0, 0, 4]]).nifti_grid is not None
    # no per-frame places at all: none, as for a single-frame file that does not say where it lies
    bare = up.decode_medical(S.dicom(np.zeros((3, 20, 24)), pixel_spacing=(0.7, 0.8), enhanced=True), "b.dcm")
    assert bare.nifti_grid is None and not any("evenly" in note for note in bare.notes)


def test_the_page_segments_a_range_of_a_multiframe_dicoms_frames_into_one_placed_nifti(demo_env, monkeypatch):
    from apps import demo_models as dm

    def mean_is_input(task, image, num_samples, seed):
        return {"probs": np.stack([image] * num_samples), "mean": image, "uncertainty": np.zeros_like(image)}

    monkeypatch.setattr(dm, "medical_predict", mean_is_input)
    made = _record_downloads(monkeypatch)
    frames = np.full((6, 128, 128), -1000, np.int16)
    frames[:, 40:60, 70:90] = 1000
    places = [[0.0, 0.0, 10.0 - 2 * k] for k in range(6)]  # stored superior to inferior
    data = S.dicom(
        frames, (0, 400), 0.0, pixel_spacing=(1.0, 1.0), enhanced=True,
        position=(places[0], [1, 0, 0, 0, 1, 0]), frame_positions=places,
    )
    at = _upload_on("medical", "series.dcm", data)
    _ok(at)
    assert at.slider(key="medical_slice").label == "Slice"  # as stored, not said to run inferior to superior
    written = slab_mask(at, made, 1, 3, "Slices (as stored)")
    mask = written.get_fdata().astype(bool)
    assert mask.shape == (128, 128, 6) and mask[40:60, 70:90, 1:4].all() and mask.sum() == 20 * 20 * 3
    # frame 3 lies at z = 4 mm, as its header says
    centre = nib.affines.apply_affine(written.affine, (50, 80, 3))
    np.testing.assert_allclose(centre[2], 4.0, atol=1e-4)
    help_text = next(b for b in at.get("download_button") if "DICOM header" in b.proto.label).proto.help
    assert "its 6 frames (this one filled, the others 0)" in help_text
