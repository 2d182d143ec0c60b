"""The medical page says what is true (second audit): a DICOM series in a zip is read as a volume (or refused
saying why and what to do), a DICOM's display window is named and not used as the models' input scaling, a
multi-frame DICOM's sliders say one word, the shipped model's network reads as words, not a Python dict. Driven
through ``streamlit.testing.v1.AppTest`` on the tiny ``demo_env`` models (the shipped ones for the caption)."""

from __future__ import annotations

import io
import zipfile

import nibabel as nib
import numpy as np
import pytest

from tests.apps import samples as S
from tests.apps.pages import page as _page
from tests.apps.pages import page_ok as _ok
from tests.apps.pages import record_downloads as _record_downloads
from tests.apps.pages import slab_mask
from tests.apps.pages import texts as _texts
from tests.apps.pages import upload_on as _upload_on

pytestmark = pytest.mark.usefixtures("one_thread")

AXIAL = [1, 0, 0, 0, 1, 0]


def _series_zip(z_places: list[float], names: list[str]) -> bytes:
    """A zip of single-frame CT slices (128x128, 1 mm pixels), ``names[k]`` at z = ``z_places[k]`` mm, its value
    1000 + 100 k HU in a bright square (rows 40-59, columns 70-89) on -1000 HU."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for k, (z, name) in enumerate(zip(z_places, names)):
            stored = np.full((128, 128), 24, np.int16)
            stored[40:60, 70:90] = 2024 + 100 * k
            place = ([0.0, 0.0, z], AXIAL)
            archive.writestr(name, S.dicom(stored, pixel_spacing=(1.0, 1.0), position=place))
    return buf.getvalue()


def test_a_dicom_series_zip_is_segmented_as_a_volume_with_its_nifti_placed_by_the_headers(demo_env, monkeypatch):
    """A zip of a CT series, the way CT usually arrives, was refused as "unsupported file type"."""
    from apps import demo_models as dm

    def mean_is_input(task, image, num_samples, seed):
        return {"probs": np.stack([image] * num_samples), "mean": image, "uncertainty": np.zeros_like(image)}

    monkeypatch.setattr(dm, "medical_predict", mean_is_input)
    made = _record_downloads(monkeypatch)
    # five slices 2 mm apart, named against their order along the normal (z): IM4 lies lowest
    names = [f"series/IM{k}.dcm" for k in (3, 1, 0, 2, 4)]
    at = _ok(_upload_on("medical", "ct_series.zip", _series_zip([6.0, 2.0, 0.0, 4.0, -2.0], names)))
    infos = _texts(at.info)
    assert "DICOM series: 5 slices in order along the slice normal (series/IM4.dcm ... series/IM3.dcm" in infos
    assert "DICOM series upload" in _texts(at.caption)
    assert at.slider(key="medical_slice").label == "Slice"
    written = slab_mask(at, made, 1, 2, "Slices (in order along the slice normal)")
    mask = written.get_fdata().astype(bool)
    assert mask.shape == (128, 128, 5) and mask[40:60, 70:90, 1:3].all() and mask.sum() == 20 * 20 * 2
    help_text = next(b for b in at.get("download_button") if "DICOM header" in b.proto.label).proto.help
    assert "its 5 slices (this one filled, the others 0) placed where their DICOM headers put them" in help_text
    # the page's slices 1 and 2 are the files at z = 0 and 2 mm
    np.testing.assert_allclose(nib.affines.apply_affine(written.affine, (50, 80, 1))[2], 0.0, atol=1e-4)
    np.testing.assert_allclose(nib.affines.apply_affine(written.affine, (50, 80, 2))[2], 2.0, atol=1e-4)


def test_a_zip_without_a_dicom_series_says_what_to_upload_instead(demo_env):
    at = _upload_on("medical", "frames.zip", S.frames_zip([np.zeros((32, 32), np.uint8)]))
    assert not at.exception and len(at.error) == 1
    message = at.error[0].value
    assert message.startswith("frames.zip: the zip holds no DICOM image; a zip is read as one DICOM series")
    assert "upload one slice (.dcm), or convert the series to NIfTI (e.g. `dcm2niix`)" in message
    assert "unsupported file type" not in message


def test_a_dicoms_stored_window_is_named_and_not_used_on_the_page(demo_env):
    stored = np.random.default_rng(0).integers(0, 2000, (64, 64))
    at = _ok(_upload_on("medical", "slice.dcm", S.dicom(stored, window=(40, 400))))
    infos = _texts(at.info)
    assert "(0.5-99.5 percentiles, as a NIfTI's) mapped to 0..1; the file's DICOM window (centre 40, width 400) " \
        "is a display choice and was not used" in infos
    assert "DICOM window applied" not in infos


def test_a_multiframe_dicoms_slice_sliders_say_one_word(demo_env):
    """The slider said "Slice", the range slider "Frames (as stored)", for the same things."""
    frames = np.full((4, 128, 128), 24, np.int16)
    places = [[0.0, 0.0, 2.0 * k] for k in range(4)]
    data = S.dicom(
        frames, pixel_spacing=(1.0, 1.0), enhanced=True, position=(places[0], AXIAL), frame_positions=places
    )
    at = _ok(_upload_on("medical", "cine.dcm", data))
    assert at.slider(key="medical_slice").label == "Slice"
    assert at.slider(key="medical_slab").label == "Slices (as stored)"


def test_the_shipped_medical_models_network_reads_as_words_not_a_python_dict(demo_env, tmp_path, monkeypatch):
    """The caption printed "prob_unet {'channels': [32, 64, 128, 192], 'latent_dim': 6, 'fcomb_layers': 3}"."""
    from apps import demo_models as dm
    from apps import page_common as pc

    monkeypatch.setenv(dm.ENV_WEIGHTS, str(dm.SHIPPED_DIR))
    monkeypatch.setenv(dm.ENV_CHECKPOINTS, str(tmp_path / "no_local_checkpoints"))
    at = _ok(_page("medical"))
    caption = next(c.value for c in at.caption if c.value.startswith("Shipped weights `medical_prob_unet"))
    assert "(prob_unet (channels 32/64/128/192, latent dim 6, fcomb layers 3); trained " in caption
    assert "{" not in caption and "'" not in caption
    assert pc.readable_network("unet_encoder {'channels': [24, 48]} + head") == "unet_encoder (channels 24/48) + head"
    assert pc.readable_network("x {} + y") == "x + y"  # nothing to spell out
    assert pc.readable_network("FCOS on mobilenet, input [384, 1280]") == "FCOS on mobilenet, input [384, 1280]"
