"""Medical data audit: bad data said at construction for every key / case at once, missing pickle keys named,
the format a folder given as a pickle is, HPU-Net's too-small-image fix, and MONAI's nvImageCodec noise."""

from __future__ import annotations

import json
import logging
import pickle
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from domains.medical import data as D
from domains.medical.data import (
    DecathlonSliceDataset,
    LIDCPickleDataset,
    MedicalDataError,
    MedicalDataWarning,
)
from domains.medical.models.hpu_net import HierarchicalProbUNet
from tests.medical.test_data import _write_decathlon


def _entry(image: np.ndarray, series: str, **extra) -> dict:
    masks = [np.zeros(image.shape, np.uint8) for _ in range(4)]
    return {"image": image, "masks": masks, "series_uid": series, **extra}


def _pickle(path: Path, data: dict) -> Path:
    D._PICKLE_CACHE.clear()
    path.write_bytes(pickle.dumps(data))
    return path


def _quiet_unpickle(path: Path, split: str = "all", **kw) -> LIDCPickleDataset:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "unpickling runs arbitrary code", UserWarning)
        return LIDCPickleDataset(path, split, **kw)


# ------------------------------------------------------------------ 1. bad values said at construction


def test_pickle_bad_image_values_are_all_said_at_construction(tmp_path):
    """A NaN / inf / out-of-range image stopped training when its slice loaded, one key per run; now the
    dataset refuses at construction and names every bad key with its values, counted."""
    good = np.full((4, 4), 0.5)
    data = {f"k{i:02d}": _entry(good.copy(), f"s{i}") for i in range(20)}
    nan = good.copy()
    nan[0, 0], nan[1, 1] = np.nan, np.inf
    data["k03"]["image"] = nan  # 2 non-finite
    data["k05"]["image"] = np.full((4, 4), 255.0)  # 8-bit values
    data["k07"]["image"] = np.linspace(-0.5, 1, 16).reshape(4, 4)
    for k in ("k11", "k13", "k17", "k19"):
        data[k]["image"] = good + 1.0
    path = _pickle(tmp_path / "lidc.pickle", data)
    with pytest.raises(MedicalDataError) as err:
        _quiet_unpickle(path, "train")  # whole pickle: a bad slice of any split, before training
    message = str(err.value)
    first = f"{path} [key 'k03']: image holds 2 NaN or infinite values; so do 6 more of the 20 slices: "
    assert message.startswith(first)
    assert "[key 'k05']: image values in [255, 255]" in message
    assert "[key 'k07']: image values in [-0.5, 1]" in message
    assert "[key 'k11']: image values in [1.5, 1.5]" in message and "[key 'k13']" in message
    assert "; ... 2 more (7 slice(s) in all; image values must be finite and in [0, 1]" in message
    assert "k17" not in message and "k19" not in message
    # within the tolerance: read, clipped onto [0, 1]; values in range untouched
    ok = {"a": _entry(np.array([[1.0005, 0.25], [-0.0005, 0.75]]), "s")}
    item = _quiet_unpickle(_pickle(tmp_path / "ok.pickle", ok), crop_size=None)[0]
    np.testing.assert_allclose(item["image"][0].numpy(), [[1.0, 0.25], [0.0, 0.75]])


def test_decathlon_label_on_another_grid_is_said_at_construction(tmp_path):
    """An image / label grid mismatch failed in ``_volume`` once training read the case; now every such case
    is named when the dataset is built."""
    root = _write_decathlon(tmp_path / "Task99", channels=2)
    for name in ("case_000.nii.gz", "case_001.nii.gz"):
        label = np.zeros((32, 20, 5), np.uint8)
        label[5:12, 3:9, 2] = 1
        nib.save(nib.Nifti1Image(label, np.eye(4)), str(root / "labelsTr" / name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedicalDataWarning)  # the affines differ too
        with pytest.raises(MedicalDataError) as err:
            DecathlonSliceDataset(root, "all", crop_size=32)
    message = str(err.value)
    assert message.startswith(f"{root / 'dataset.json'}: 2 of 2 labels are not on their image's voxel grid ")
    for name in ("case_000.nii.gz", "case_001.nii.gz"):
        assert (
            f"{root / 'imagesTr' / name}: image grid (32, 24, 6) differs from label "
            f"{root / 'labelsTr' / name} grid (32, 20, 5)"
        ) in message


# ----------------------------------------------------------------------- 2. missing pickle keys named


def test_pickle_entry_missing_a_key_names_it_and_the_keys_it_has(tmp_path):
    image = np.zeros((4, 4))
    data = {
        "LIDC-IDRI-0000_slice005.npy": {"image": image, "masks": [image] * 4, "seriesuid": "1.2"},
        "LIDC-IDRI-0000_slice006.npy": {"image": image, "masks": [image] * 4, "seriesuid": "1.2"},
        "LIDC-IDRI-0001_slice001.npy": _entry(image, "1.3"),
    }
    path = _pickle(tmp_path / "lidc.pickle", data)
    with pytest.raises(MedicalDataError) as err:
        _quiet_unpickle(path)
    assert str(err.value) == (
        f"{path} [key 'LIDC-IDRI-0000_slice005.npy']: missing 'series_uid'; the entry has 'image', 'masks', "
        "'seriesuid' (expected 'image', 'masks', 'series_uid') (2 of the 3 entries are so)"
    )
    path = _pickle(tmp_path / "list.pickle", {"a": [image, [image] * 4]})
    expected = r"\[key 'a'\]: expected a dict with 'image', 'masks', 'series_uid', got list$"
    with pytest.raises(MedicalDataError, match=expected):
        _quiet_unpickle(path)


# ------------------------------------------------------------------------- 3. the folder's format said


def test_a_folder_given_as_the_pickle_says_the_format_it_looks_like(tmp_path):
    decathlon = _write_decathlon(tmp_path / "Task99", channels=1)
    with pytest.raises(MedicalDataError) as err:
        LIDCPickleDataset(decathlon, "train")
    assert str(err.value) == (
        f"{decathlon}: is a folder; the lidc_pickle format reads one .pickle file: {decathlon} holds a "
        "dataset.json, a Decathlon folder: give --data.data_format decathlon"
    )
    assert "lidc_png" not in str(err.value)
    png = tmp_path / "png"
    (png / "train" / "images").mkdir(parents=True)
    with pytest.raises(MedicalDataError, match=r"<split>/images/ PNGs is --data.data_format lidc_png$"):
        LIDCPickleDataset(png, "train")
    pickles = tmp_path / "pickles"
    pickles.mkdir()
    (pickles / "data_lidc.pickle").write_bytes(b"")
    with pytest.raises(MedicalDataError, match=r"give the file, e.g. .*data_lidc.pickle \(1 pickle file"):
        LIDCPickleDataset(pickles, "train")


# --------------------------------------------------------------------------- 4. HPU-Net too small


def test_hpu_net_too_small_an_image_names_both_fixes_and_they_work():
    net = HierarchicalProbUNet(channels=[4, 4, 8, 8, 8, 8, 8, 8], latent_channels=[1, 1], blocks_per_level=1)
    with pytest.raises(ValueError) as err:
        net.sample_logits(torch.zeros(1, 1, 64, 64), 2)
    assert str(err.value) == (
        "an image of (64, 64) is too small for 8 levels (needs at least 128 pixels per side): give images of at "
        "least 128x128 pixels (on the command line --data.crop_size 128 or larger), or fewer levels (at most 7 for "
        "64 pixels), e.g. channels=[4, 4, 8, 8, 8, 8, 8]; on the command line "
        "--model.network.init_args.channels '[4, 4, 8, 8, 8, 8, 8]'"
    )
    fewer = HierarchicalProbUNet(channels=[4, 4, 8, 8, 8, 8, 8], latent_channels=[1, 1], blocks_per_level=1)
    assert fewer.sample_logits(torch.zeros(1, 1, 64, 64), 2).shape == (1, 2, 64, 64)
    # as many latent scales as the levels that fit: latent_channels must shrink too
    deep = HierarchicalProbUNet(channels=[4] * 5, latent_channels=[1, 1, 1, 1], blocks_per_level=1)
    with pytest.raises(ValueError) as err:
        deep.sample_logits(torch.zeros(1, 1, 8, 8), 2)
    assert str(err.value).endswith(
        "--model.network.init_args.channels '[4, 4, 4, 4]' "
        "--model.network.init_args.latent_channels '[1, 1, 1]'"
    )


# ------------------------------------------------------------------------ 5. MONAI's nvImageCodec noise


def test_decathlon_read_prints_no_nvimagecodec_messages_but_the_suites_warnings(tmp_path, caplog, capfd):
    """Every ``LoadImage`` built MONAI's DICOM reader, which logged "nvImageCodec is not available" and
    warned from monai/data/image_reader.py: ~10 lines a run about a decoder the suite never uses."""
    root = _write_decathlon(tmp_path / "Task99", channels=1)
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"0": "background", "1": "edema", "2": "tumour"}
    (root / "dataset.json").write_text(json.dumps(meta))
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = DecathlonSliceDataset(root, "all", crop_size=32)
        item = ds[0]  # a volume read: another LoadImage
    assert item["image"].shape == (1, 32, 32)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "nvImageCodec" in m], messages
    assert not [r for r in caplog.records if "nvImageCodec" in r.getMessage()]
    assert "nvImageCodec" not in capfd.readouterr().err
    suite = [w for w in caught if issubclass(w.category, MedicalDataWarning)]
    assert len(suite) == 1 and "labels 1 edema, 2 tumour are all taken as the lesion" in str(suite[0].message)
    # the filter and the log filter end with the read: MONAI's own message still reaches its logger after
    logger = logging.getLogger(D._NVIMGCODEC_LOGGER)
    assert not logger.filters
    logger.warning(D._NVIMGCODEC_LOG)
    assert [r for r in caplog.records if r.getMessage() == D._NVIMGCODEC_LOG]
