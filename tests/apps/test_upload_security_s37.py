"""Security audit s37 of the demo's uploads and server: upload memory bounded by the stated limit from each file's
header, before decoding (a 60-byte NIfTI claimed 2 GB; a uint8 volume with scl_slope 2 became a float64 GiB);
malformed DICOM headers and zip member names as messages, not tracebacks; the server bound to this machine; the
sidebar's checkpoint path opening only checkpoints; ``apps.ship_weights`` refusing a checkpoint in one line.
The files are crafted here with nibabel / pydicom: tiny on disk, what matters is the size their headers declare."""

from __future__ import annotations

import gzip
import io
import runpy
import sys
import tomllib
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from apps import uploads as up
from tests.apps import samples as S
from tests.apps.pages import page as _page
from tests.apps.pages import texts as _texts
from tests.apps.pages import upload_on as _upload_on

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
UNSAFE = "absolute paths and names with a '..' part"


def _nifti(shape, dtype, slope: float | None = None, inter: float = 0.0, voxels: np.ndarray | None = None) -> bytes:
    """A gzipped NIfTI-1 whose header declares ``shape`` x ``dtype`` (and scl_slope / scl_inter), holding
    ``voxels`` (stored values as they are, Fortran order) or no data at all."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_data_offset(352)
    if slope is not None:
        header.set_slope_inter(slope, inter)
    data = b"" if voxels is None else np.asarray(voxels, dtype).tobytes(order="F")
    return gzip.compress(header.binaryblock + b"\0" * 4 + data)


def _dicom(pixels: np.ndarray, **elements) -> bytes:
    """:func:`tests.apps.samples.dicom` of ``pixels`` with header ``elements`` set or replaced."""
    ds = pydicom.dcmread(io.BytesIO(S.dicom(pixels)))
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return buf.getvalue()


def _peak_mb(call) -> float:
    """The peak of memory traced (Python and NumPy allocations) while ``call`` runs, in MB."""
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 2**20


# ------------------------------------------------------------------------- 1: memory bounded from the header


@pytest.mark.parametrize(
    ("shape", "dtype", "slope", "declared"),
    [
        ((1024, 1024, 512), np.float32, None, "1024x1024x512 voxels of float32 = 2.0 GB"),
        # 160 MB stored, but held as float32 once scaled: 640 MB
        ((1024, 1024, 160), np.uint8, 2.0, "1024x1024x160 voxels of uint8, held as float32 = 640.0 MB"),
        ((32000, 32000, 32000), np.float32, None, "32000x32000x32000 voxels of float32 = 122,070.3 GB"),
    ],
)
def test_a_nifti_is_refused_from_its_header_size_as_held_before_any_voxel_is_read(shape, dtype, slope, declared):
    """A 60-byte .nii.gz declaring 1024x1024x512 float32 took 2.1 GB before it was refused; 32000^3 said
    "corrupt or truncated (MemoryError: )"."""
    data = _nifti(shape, dtype, slope)
    assert len(data) < 200
    with pytest.raises(up.UploadError) as err:
        up.decode_medical(data, "claims.nii.gz")
    assert str(err.value) == (
        f"claims.nii.gz: its header declares {declared} to hold; the limit is 512.0 MB (crop or downsample it first)"
    )
    assert _peak_mb(lambda: pytest.raises(up.UploadError, up.decode_medical, data, "claims.nii.gz")) < 5


def test_a_nifti_declaring_more_voxels_than_it_holds_is_truncated_without_allocating_them():
    data = _nifti((256, 256, 100), np.int16)  # 12.5 MB declared, none there
    with pytest.raises(up.UploadError, match=r"^short.nii.gz: the NIfTI file is corrupt or truncated \(its header "
                                             r"declares 13,107,200 bytes of voxels from byte 352; the file has 0\)"):
        up.decode_medical(data, "short.nii.gz")
    assert _peak_mb(lambda: pytest.raises(up.UploadError, up.decode_medical, data, "short.nii.gz")) < 5


def test_scaled_and_floating_point_niftis_are_held_as_float32_scaled_in_float32():
    """A 128 MB uint8 volume with scl_slope 2 became a 1 GiB float64 array (2.3 GB at its peak, 42 s)."""
    stored = (np.arange(32 * 24 * 16) % 200).reshape(32, 24, 16).astype(np.uint8)
    volume = up.decode_medical(_nifti(stored.shape, np.uint8, 2.0, -1.0, stored), "scaled.nii.gz")
    assert volume.data.dtype == np.float32 and volume.data.shape == (1, 16, 24, 32)
    np.testing.assert_array_equal(np.sort(volume.data.ravel()), np.sort(2.0 * stored.ravel() - 1.0))
    assert volume.notes[0].startswith("NIfTI intensities ")
    doubles = up.decode_medical(S.nifti(stored.astype(np.float64) / 7), "doubles.nii")
    assert doubles.data.dtype == np.float32
    np.testing.assert_allclose(np.sort(doubles.data.ravel()), np.sort(stored.ravel() / 7), rtol=1e-6)
    ints = up.decode_medical(S.nifti(stored.astype(np.int16)), "ct.nii")  # unscaled integers: kept as stored
    assert ints.data.dtype == np.int16
    # scaled into float32 from the start: no float64 copy of the volume on the way (64 MB here; the peak was 170)
    big = np.zeros((256, 256, 128), np.uint8)  # 8 MB stored, 32 MB as float32
    data = _nifti(big.shape, np.uint8, 2.0, 0.0, big)
    assert _peak_mb(lambda: up.decode_medical(data, "big.nii.gz")) < 3 * 32


def test_a_dicom_is_refused_from_its_header_counting_frames_and_samples_before_decoding():
    """The check counted neither samples per pixel (a colour object decoded whole past it) nor said the size."""
    small = np.zeros((2, 32, 32))
    grey = _dicom(small, Rows=4096, Columns=4096, NumberOfFrames=9)
    with pytest.raises(up.UploadError) as err:
        up.decode_medical(grey, "cine.dcm")
    assert str(err.value) == (
        "cine.dcm: its header declares 9 frames of 4096x4096 pixels, as float32 = 576.0 MB to hold; the limit is "
        "512.0 MB (crop or downsample it first)"
    )
    colour = {"Rows": 4096, "Columns": 4096, "SamplesPerPixel": 3, "PhotometricInterpretation": "RGB"}
    colour["PlanarConfiguration"] = 0
    with pytest.raises(up.UploadError) as err:
        up.decode_medical(_dicom(small, NumberOfFrames=3, **colour), "rgb.dcm")
    assert str(err.value).startswith(
        "rgb.dcm: its header declares 3 frames of 4096x4096 pixels, 3 samples each, as float32 = 576.0 MB to hold"
    )
    one = np.zeros((32, 32))
    series = _zip({f"s{k}.dcm": _dicom(one, ImagePositionPatient=[0, 0, k], **colour) for k in range(3)})
    with pytest.raises(up.UploadError, match=r"^rgb.zip: its header declares 3 frames of 4096x4096 pixels, 3 samples "
                                             r"each, as float32 = 576.0 MB to hold; the limit is 512.0 MB"):
        up.decode_medical(series, "rgb.zip")


def test_a_multiframe_dicom_is_rescaled_a_frame_at_a_time_into_float32(monkeypatch):
    """apply_modality_lut rescales in float64: a whole 8-frame 4096x4096 object peaked at 2.4 GB."""
    import pydicom.pixels

    shapes = []
    real = pydicom.pixels.apply_modality_lut
    monkeypatch.setattr(pydicom.pixels, "apply_modality_lut", lambda arr, ds: shapes.append(arr.shape) or real(arr, ds))
    stored = np.arange(4 * 20 * 24).reshape(4, 20, 24).astype(np.int16)
    volume = up.decode_medical(S.dicom(stored), "cine.dcm")  # intercept -1024
    assert shapes == [(20, 24)] * 4
    assert volume.data.dtype == np.float32
    np.testing.assert_array_equal(volume.data[0], stored - 1024.0)


def test_a_deflated_dicom_is_refused_by_its_inflated_size_before_pydicom_inflates_it(monkeypatch):
    """pydicom inflates a deflated data set whole before any header element can be read: a 50 MB upload could
    unpack to 50 GB. Here the limit is lowered to 1 MB and the data set inflates to 2 MB."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(io.BytesIO(S.dicom(np.zeros((1024, 1024)))))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    assert len(data) < 20_000
    monkeypatch.setattr(up, "MAX_VOLUME_BYTES", 2**20)
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: pytest.fail("pydicom inflated the data set"))
    with pytest.raises(up.UploadError) as err:
        up.decode_medical(data, "deflated.dcm")
    assert str(err.value) == (
        "deflated.dcm: the deflated DICOM data unpacks to more than 1.0 MB, the limit (crop or downsample it first)"
    )
    monkeypatch.undo()
    small = up.decode_medical(data, "deflated.dcm")  # under the limit: read as before
    assert small.data.shape == (1, 1, 1024, 1024) and float(small.data.max()) == -1024.0


# ------------------------------------------------------------------- 2: malformed headers, unsafe zip names


def _replaced(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1 and len(old) == len(new)
    return data.replace(old, new)


def test_a_dicom_window_that_is_not_numbers_is_named_not_a_traceback():
    """WindowWidth ``abcd`` raised a bare ValueError from float(). The window is only named (the models' input
    is scaled by percentiles), so the slice is shown, the note saying what the window was."""
    data = _replaced(S.dicom(np.zeros((20, 24)), window=("40", "9999")), b"9999", b"abcd")
    volume = up.decode_medical(data, "window.dcm")
    assert volume.notes[0].startswith("no DICOM window (its window, centre 40, width abcd, is not numbers): ")
    assert volume.data.shape == (1, 1, 20, 24)


def test_a_dicom_frame_count_that_is_not_a_number_is_named_with_the_file_and_member():
    """NumberOfFrames ``x1 1`` raised a bare ValueError from int()."""
    with warnings.catch_warnings():  # pydicom warns that the value is invalid for its VR
        warnings.simplefilter("ignore", UserWarning)
        data = _replaced(_dicom(np.zeros((2, 20, 24)), NumberOfFrames="7777"), b"7777", b"x1 1")
        expected = "the DICOM's NumberOfFrames is 'x1 1'; expected a whole number of frames, 1 or more"
        with pytest.raises(up.UploadError) as err:
            up.decode_medical(data, "cine.dcm")
        assert str(err.value) == f"cine.dcm: {expected}"
        with pytest.raises(up.UploadError) as err:
            up.decode_medical(_zip({"ct/s1.dcm": data}), "ct.zip")
        assert str(err.value) == f"ct.zip: ct/s1.dcm: {expected}"


def test_unsafe_zip_member_names_are_left_out_and_counted_as_such_not_as_hidden_files():
    """``/scans/s1.dcm`` raised pathlib's ValueError from is_hidden; ``../`` names were "hidden files (names
    starting with a dot)"; a DICOM zip dropped hidden files without a word."""
    one = S.dicom(np.zeros((20, 24)), position=([0, 0, 0], [1, 0, 0, 0, 1, 0]))
    with pytest.raises(up.UploadError) as err:
        up.decode_medical(_zip({"/scans/s1.dcm": one}), "abs.zip")
    assert str(err.value).startswith(
        f"abs.zip: the zip holds no DICOM image; 1 file with an unsafe name left out ({UNSAFE}, which would unpack "
        "outside the zip's folder, e.g. /scans/s1.dcm); a zip is read as one DICOM series"
    )
    members = {"s1.dcm": one, "/scans/s2.dcm": one, "up/../../s3.dcm": one, "__MACOSX/._s1.dcm": b"x", ".DS_Store": b"x"}
    volume = up.decode_medical(_zip(members), "ct.zip")
    assert volume.num_slices == 1
    assert f"2 files with an unsafe name left out ({UNSAFE}, which would unpack outside the zip's folder, e.g. " \
           "/scans/s2.dcm)" in volume.notes
    assert "2 hidden files left out (names starting with a dot, under __MACOSX/ or Windows' Thumbs.db / desktop.ini, " \
           "e.g. __MACOSX/._s1.dcm)" in volume.notes
    # a zip of frames, the same way
    frames = [np.full((20, 20), 10 * i, np.uint8) for i in range(3)]
    clip = up.decode_clip(S.frames_zip(frames, extra={"/tmp/f.png": S.png(frames[0]), "..\\f.png": b"x"}), "f.zip")
    assert len(clip.frames) == 3
    assert f"2 files with an unsafe name left out ({UNSAFE}, which would unpack outside the zip's folder, e.g. " \
           "/tmp/f.png)" in clip.notes
    with pytest.raises(up.UploadError) as err:
        up.decode_clip(S.frames_zip([], extra={"../f0.png": b"x", "C:/f1.png": b"x", ".f2.png": b"x"}), "f.zip")
    assert str(err.value) == (
        f"f.zip: the zip holds only 2 file(s) with unsafe names (../f0.png, C:/f1.png: {UNSAFE} are not read) and "
        "1 hidden file(s) (.f2.png: names starting with a dot, __MACOSX/ and Windows' Thumbs.db / desktop.ini are "
        "not read); expected JPEG / PNG / WebP frames, one file per frame"
    )


def test_the_medical_page_shows_a_decoding_failure_as_a_message_never_a_traceback(demo_env, monkeypatch):
    at = _upload_on("medical", "abs.zip", _zip({"/scans/s1.dcm": S.dicom(np.zeros((20, 24)))}))
    assert not at.exception and len(at.error) == 1
    assert at.error[0].value.startswith("abs.zip: the zip holds no DICOM image; 1 file with an unsafe name left out")
    def broken(data, name, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(up, "decode_medical", broken)  # a failure no check foresaw: said, as on the accident page
    at = _upload_on("medical", "slice.dcm", S.dicom(np.zeros((20, 24))))
    assert not at.exception
    assert [e.value for e in at.error] == ["slice.dcm: could not be decoded (RuntimeError: a bug)"]


# ------------------------------------------------------------------------------------ 3: the server's address


def test_the_demo_server_listens_on_this_machine_only_and_prints_its_url_without_a_network_lookup(
    monkeypatch, capsys
):
    """``streamlit run apps/app.py`` listened on every interface and asked checkip.amazonaws.com for the
    machine's external address, to print it. With the address the config sets, Streamlit's banner makes no
    lookup (checked through its own start-up code, the lookups made to fail)."""
    from streamlit import config, net_util
    from streamlit.testing.v1.util import patch_config_options
    from streamlit.web import bootstrap

    settings = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert settings["server"]["address"] == "localhost"
    options = {f"{section}.{key}": value for section, values in settings.items() for key, value in values.items()}
    monkeypatch.setattr(config, "is_manually_set", lambda name: name in options)
    for lookup in ("get_external_ip", "get_internal_ip"):
        monkeypatch.setattr(net_util, lookup, lambda: pytest.fail("a network lookup at start-up"))
    with patch_config_options({**options, "server.port": 8599, "logger.hideWelcomeMessage": False}):
        bootstrap._print_url(is_running_hello=False)
    out = capsys.readouterr().out
    assert "URL: http://localhost:8599" in out and "External URL" not in out and "Network URL" not in out


# ------------------------------------------------------------------------- 4: the sidebar's checkpoint path


def test_the_checkpoint_path_field_opens_only_ckpt_files(demo_env, tmp_path, monkeypatch):
    """Any server path was opened: ``/etc/shadow`` came back "not a PyTorch Lightning checkpoint (not a zip
    archive ...)", so the field told whoever reached the page what the server's files are.

    The page itself opens the demo's checkpoints too (when no earlier test has loaded them into Streamlit's
    cache), so only the typed paths are looked for among the files opened."""
    from apps import page_common as pc

    opened = []
    real = zipfile.is_zipfile
    monkeypatch.setattr(zipfile, "is_zipfile", lambda path: opened.append(str(path)) or real(path))
    secret = tmp_path / "secret.txt"
    secret.write_bytes(up.zip_bytes({"data.pkl": b"x"}))  # a zip: it was read on, as a checkpoint
    at = _page("medical")
    for path in (secret, "/no/such/secret.txt"):
        at.text_input(key="own_path_medical_unet").set_value(str(path)).run()
        assert not at.exception
        assert _texts(at.sidebar.error) == (
            f"`{path}`: a checkpoint's name ends in `.ckpt` (as Lightning writes it); other files are not opened. "
            f"{pc.WHERE_CHECKPOINTS}"
        )  # whether it exists is not said either
    assert [p for p in opened if "secret" in p] == []
    at.text_input(key="own_path_medical_unet").set_value("/no/such/file.ckpt").run()
    assert "No such checkpoint file" in _texts(at.sidebar.error)
    named = secret.rename(tmp_path / "secret.ckpt")  # the same zip named as a checkpoint: opened, as it should be
    at.text_input(key="own_path_medical_unet").set_value(str(named)).run()
    assert {p for p in opened if "secret" in p} == {str(named)}


# ----------------------------------------------------------------------------- 5: ship_weights' command line


def test_ship_weights_refuses_a_bad_checkpoint_in_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SUITE_TRACEBACK", raising=False)  # a developer's debugging setting would show it whole
    bad = tmp_path / "accident.ckpt"
    bad.write_bytes(b"not a checkpoint")
    argv = ["ship_weights", "--checkpoint", f"driving_accident={bad}", "--out", str(tmp_path / "out")]
    monkeypatch.setattr(sys, "argv", argv)
    with warnings.catch_warnings(), pytest.raises(SystemExit) as stop:
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module was imported before
        runpy.run_module("apps.ship_weights", run_name="__main__")
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: CheckpointMismatchError: {bad}: not a weights-only Lightning checkpoint")
    assert "Traceback" not in err and len(err.splitlines()) == 2
