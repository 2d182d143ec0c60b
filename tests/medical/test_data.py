"""Medical data layer: synthetic generator, LIDC PNG / pickle / Decathlon readers, datamodule."""

from __future__ import annotations

import hashlib
import json
import pickle
import warnings
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from domains.medical import data as D
from domains.medical.data import (
    DecathlonSliceDataset,
    LIDCPickleDataset,
    LIDCPngDataset,
    MedicalDataError,
    MedicalDataModule,
    MedicalDataWarning,
    ReaderDataset,
    build_dataset,
)
from domains.medical.predict import MedicalPredictionWriter, slice_to_source_grid
from domains.medical.synthetic import (
    LIDC_TARGETS,
    MARKER,
    ReaderStatistics,
    check_reader_settings,
    ensure_synthetic_lidc,
    generate_lidc_png,
    main,
    measure_reader_statistics,
)
from shared.data import segmentation_augmentations
from shared.files import HiddenFilesWarning
from tests.helpers import write_lidc

SMALL = {"n_patients": 8, "images_per_patient": 5, "size": 64, "seed": 3}


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    return generate_lidc_png(tmp_path_factory.mktemp("lidc") / "synth", **SMALL)


# ------------------------------------------------------------------------------------------ generator


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob("*/*/*/*.png"))}


def test_generator_is_deterministic(synth_root, tmp_path):
    again = _files(generate_lidc_png(tmp_path / "again", **SMALL))
    first = _files(synth_root)
    assert again.keys() == first.keys() and len(first) == 40 * 5
    assert all(again[k] == first[k] for k in first)  # byte-identical images and masks
    other = _files(generate_lidc_png(tmp_path / "other", **{**SMALL, "seed": 4}))
    images = {v for k, v in first.items() if "/images/" in k}
    assert not images & {v for k, v in other.items() if "/images/" in k}  # another seed, other images


def test_generator_layout(synth_root):
    patients = {}
    for split in ("train", "val", "test"):
        images = sorted((synth_root / split / "images").glob("*/*.png"))
        assert images, split
        patients[split] = {p.parent.name for p in images}
        for path in images:
            img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            assert img.dtype == np.uint8 and img.shape == (64, 64)
            for r in range(4):
                mask = cv2.imread(
                    str(synth_root / split / "gt" / path.parent.name / f"{path.stem}_l{r}.png"), -1
                )
                assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
    assert sum(len(v) for v in patients.values()) == 8  # every patient in exactly one split
    assert not (patients["train"] & patients["val"]) and not (patients["train"] & patients["test"])
    assert json.loads((synth_root / MARKER).read_text())["n_patients"] == 8
    assert '"seed": 3' in (synth_root / "README.txt").read_text()


def test_readers_disagree_and_some_images_empty(synth_root):
    all_empty = missed = differ = lesion = 0
    inside, outside = [], []
    for split in ("train", "val", "test"):
        ds = LIDCPngDataset(synth_root, split, crop_size=64)
        for i in range(len(ds)):
            item = ds.load(i)
            m = item["masks"].reshape(4, -1).astype(bool)
            marked = m.any(axis=1)
            if not marked.any():
                all_empty += 1
                continue
            lesion += 1
            missed += int(not marked.all())
            differ += int(
                any((m[a] != m[b]).any() for a in range(4) for b in range(4) if marked[a] and marked[b])
            )
            union = m.any(axis=0)
            inside.append(item["image"].reshape(-1)[union].mean())
            outside.append(item["image"].reshape(-1)[~union].mean())
    assert all_empty == round(0.17 * 40)  # exact share of lesion-free images
    assert missed >= 2  # some readers see nothing where others outline a lesion
    assert differ >= lesion // 2  # outlines of readers who did mark differ on most lesion images
    assert np.mean(np.array(inside) > np.array(outside)) > 0.9  # lesions are brighter: the task is learnable


def test_ensure_skips_redoes_and_refuses(tmp_path, monkeypatch):
    kw = {"n_patients": 2, "images_per_patient": 2, "size": 64}
    root = ensure_synthetic_lidc(tmp_path / "s", **kw)
    assert (root / MARKER).is_file()
    import domains.medical.synthetic as S

    def boom(*a, **k):
        raise AssertionError("regenerated although complete")

    with monkeypatch.context() as m:
        m.setattr(S, "generate_lidc_png", boom)
        ensure_synthetic_lidc(root, **kw)  # same settings: skipped
    (root / MARKER).unlink()  # as after a crash: redone
    (root / "train" / "images").rename(root / "train" / "broken")
    ensure_synthetic_lidc(root, **kw)
    assert (root / MARKER).is_file() and not (root / "train" / "broken").exists()
    ensure_synthetic_lidc(root, **{**kw, "seed": 1})  # other settings: redone
    assert json.loads((root / MARKER).read_text())["seed"] == 1
    foreign = tmp_path / "real"
    (foreign / "train").mkdir(parents=True)
    (foreign / "notes.txt").write_text("my data")
    with pytest.raises(FileExistsError, match="real"):
        ensure_synthetic_lidc(foreign, **kw)


def test_cli(tmp_path, capsys):
    # 3 patients split 0.7 / 0.15 / 0.15 give test none: said at once, not when test finds no folder
    with pytest.warns(UserWarning, match=r"3 patient\(s\) split 0\.7/0\.15/0\.15 leave test without a patient"):
        main(["--root", str(tmp_path / "cli"), "--n-patients", "3", "--images-per-patient", "1", "--size", "64"])
    assert not (tmp_path / "cli" / "test").exists()
    assert len(list((tmp_path / "cli").glob("*/images/*/*.png"))) == 3
    assert "readers=default: 3 images, lesion-free" in capsys.readouterr().out  # the measured statistics
    argv = ["--root", str(tmp_path / "l"), "--n-patients", "4", "--images-per-patient", "3", "--size", "64"]
    main([*argv, "--readers", "lidc"])
    out = capsys.readouterr().out
    assert (
        "readers=lidc: 12 images" in out
        and "mean pairwise IoU" in out
        and "(target 33.5 / 15 / 17 / 34.5 %" in out
    )


def test_default_preset_is_unchanged(tmp_path):
    """The default readers' pixels and marker are pinned: shipped demo weights and generated sets rely on them.

    Pixels, not PNG bytes, so another OpenCV's encoder does not fail it; the hash is the set's before the
    reader presets were added.
    """
    root = generate_lidc_png(tmp_path / "d", n_patients=3, images_per_patient=3, size=48, seed=5)
    h = hashlib.sha256()
    for path in sorted(root.glob("*/*/*/*.png")):
        h.update(str(path.relative_to(root)).encode())
        h.update(cv2.imread(str(path), cv2.IMREAD_UNCHANGED).tobytes())
    h.update((root / MARKER).read_bytes())
    assert h.hexdigest() == "eec1af7de226b6fbbf81c11935d85d20187d36bbf480c13b50da52914fa1fe91"


def test_reader_statistics_hand_computed():
    stats = ReaderStatistics()
    a = np.zeros((4, 2, 4), bool)
    stats.add(a)  # lesion-free
    a[0, 0, :2] = True  # reader 0: 2 px; reader 1: 4 px holding them -> IoU 2/4; reader 3 alone: 1 px
    a[1, 0, :4] = True
    b = np.zeros((4, 2, 4), bool)
    b[2, 1, 0] = True
    stats.add(a)  # two readers, one pair, IoU 0.5
    stats.add(b)  # one reader, no pair
    c = np.zeros((4, 2, 4), bool)
    c[:3, 1, :] = True  # three identical readers: three pairs of IoU 1
    stats.add(c)
    out = stats.summary()
    assert out["images"] == 4 and out["lesion_free_share"] == 0.25
    assert out["reader_shares"] == [round(1 / 3, 4), round(1 / 3, 4), round(1 / 3, 4), 0.0]
    assert out["mean_pairwise_iou"] == pytest.approx((0.5 + 3 * 1.0) / 4)


def test_exact_counts_give_the_leftovers_to_the_largest_remainders():
    """Image-kind counts hit n exactly and stay closest to n * shares."""
    from domains.medical.synthetic import _exact_counts

    # 10 x shares = 3.3, 1.6, 1.7, 3.4: floors 3, 1, 1, 3 leave 2; the largest remainders are 0.7 and 0.6
    assert _exact_counts(10, (0.33, 0.16, 0.17, 0.34)) == [3, 2, 2, 3]
    assert _exact_counts(4, (0.25, 0.25, 0.25, 0.25)) == [1, 1, 1, 1]  # nothing left over


def test_lidc_reader_preset_matches_the_real_statistics(tmp_path):
    """80 images at 128 px (about a second): exact reader-count shares, pairwise IoU near LIDC's 0.72."""
    root = generate_lidc_png(tmp_path / "l", n_patients=16, images_per_patient=5, readers="lidc")
    stats = measure_reader_statistics(root)
    assert stats["images"] == 80 and stats["lesion_free_share"] == pytest.approx(0.17, abs=0.01)
    target = LIDC_TARGETS["reader_shares"]
    assert all(abs(got - want) < 0.03 for got, want in zip(stats["reader_shares"], target)), stats
    assert abs(stats["mean_pairwise_iou"] - LIDC_TARGETS["mean_pairwise_iou"]) < 0.04, stats
    assert json.loads((root / MARKER).read_text())["readers"] == "lidc"
    assert "readers=lidc" in (root / "README.txt").read_text()
    # other shares are honoured exactly (largest-remainder counts of the 66 lesion images; counts, not
    # outlines: 64 px do, at half the time of 128)
    other = generate_lidc_png(
        tmp_path / "o",
        n_patients=16,
        images_per_patient=5,
        size=64,
        readers="lidc",
        reader_shares=(0.0, 0.5, 0.0, 0.5),
    )
    assert measure_reader_statistics(other)["reader_shares"] == [0.0, 0.5, 0.0, 0.5]


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (
            {"readers": "radiologists"},
            r"readers: unknown preset 'radiologists'; valid presets: default, lidc",
        ),
        ({"readers": "lidc", "reader_shares": (0.3, 0.3, 0.3, 0.3)}, r"reader_shares: .*sum to 1"),
        ({"readers": "lidc", "reader_shares": (1.2, -0.2, 0.0, 0.0)}, r"reader_shares: need 4 non-negative"),
        ({"readers": "lidc", "reader_shares": (0.5, 0.5)}, r"reader_shares: need 4 non-negative"),
        ({"reader_shares": (0.25, 0.25, 0.25, 0.25)}, r"reader_shares: only the 'lidc' readers preset"),
    ],
)
def test_bad_reader_options(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        check_reader_settings(**kw)
    with pytest.raises(ValueError, match=match):
        ensure_synthetic_lidc(tmp_path / "x", n_patients=1, images_per_patient=1, size=32, **kw)
    assert not (tmp_path / "x").exists()  # checked before anything is written
    with pytest.raises(ValueError, match="synthetic." + match):
        MedicalDataModule(synthetic=kw)


def test_bad_reader_options_on_the_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--root", str(tmp_path / "c"), "--readers", "lidcc"])
    assert "--readers: unknown preset 'lidcc'; valid presets: default, lidc" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(
            [
                "--root",
                str(tmp_path / "c"),
                "--readers",
                "lidc",
                "--reader-shares",
                "0.33",
                "0.15",
                "0.17",
                "0.34",
            ]
        )
    assert "--reader-shares: the shares must sum to 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"synthetic: unknown setting\(s\) \['reader'\]; valid settings"):
        MedicalDataModule(synthetic={"reader": "lidc"})
    with pytest.raises(ValueError, match="synthetic: generator settings are used only with data_path null"):
        MedicalDataModule(data_path=str(tmp_path), synthetic={"readers": "lidc"})
    with pytest.raises(ValueError, match="crop_size must be at least 16 pixels, got 0"):
        MedicalDataModule(crop_size=0)  # was a convolution's RuntimeError at the first batch


# ------------------------------------------------------------------------------------ LIDC PNG errors


def test_png_missing_or_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train[/\\]images"):
        LIDCPngDataset(tmp_path, "train")
    (tmp_path / "train" / "images").mkdir(parents=True)
    (tmp_path / "train" / "gt").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images"):
        LIDCPngDataset(tmp_path, "train")


def test_png_missing_reader(tmp_path):
    root = write_lidc(tmp_path)
    (root / "train" / "gt" / "P1" / "s1_l2.png").unlink()
    with pytest.raises(FileNotFoundError, match="s1_l2.png"):
        LIDCPngDataset(root, "train", crop_size=32)


def test_png_layout_copied_from_a_mac_reads_without_its_hidden_files(tmp_path):
    """A Mac's ``._s0.png`` beside each image was read as an image whose reader masks were missing: an error."""
    root = write_lidc(tmp_path)
    (root / "train" / "images" / "P1" / "._s0.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (root / "train" / "images" / "._P1").write_bytes(b"\x00\x05\x16\x07")
    with pytest.warns(HiddenFilesWarning, match=r"images: 2 hidden files left out \(\._P1, P1/\._s0\.png\)"):
        ds = LIDCPngDataset(root, "train", crop_size=32)
    assert ds.ids == ["P1/s0", "P1/s1"]


def test_png_layout_counts_reader_masks_it_does_not_read(tmp_path):
    """A fifth reader was dropped silently (GED against 4 of 5 readers), and masks of no image too."""
    root = write_lidc(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the plain layout reads every mask
        LIDCPngDataset(root, "train", crop_size=32)
    gt = root / "train" / "gt"
    for name in ("s0", "s1"):
        assert cv2.imwrite(str(gt / "P1" / f"{name}_l4.png"), np.zeros((32, 32), np.uint8))
    with pytest.warns(MedicalDataWarning, match=r"2 reader mask\(s\) past _l3\.png are not read \(e\.g\. P1/s0_l4"
                      r"\.png\): the metrics compare with 4 readers; .*'\{num_readers: 5\}'"):  # fmt: skip
        LIDCPngDataset(root, "train", crop_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert LIDCPngDataset(root, "train", crop_size=32, num_readers=5)[0]["masks"].shape == (5, 32, 32)
    (gt / "P2").mkdir()
    assert cv2.imwrite(str(gt / "P2" / "z9_l0.png"), np.zeros((32, 32), np.uint8))  # its image is missing
    with pytest.warns(MedicalDataWarning, match=r"1 reader mask\(s\) belong to no image .* \(e\.g\. P2/z9_l0\.png: "
                      r"no P2/z9\.png\)"):  # fmt: skip
        LIDCPngDataset(root, "train", crop_size=32, num_readers=5)


def test_png_size_mismatch(tmp_path):
    """Found at setup from the headers (not when training reaches the item), and at load for a file changed since."""
    root = write_lidc(tmp_path)
    ds = LIDCPngDataset(root, "train", crop_size=32)
    cv2.imwrite(str(root / "train" / "gt" / "P1" / "s0_l3.png"), np.zeros((30, 32), np.uint8))
    with pytest.raises(MedicalDataError, match=r"s0_l3\.png.*32x30"):
        ds[0]
    assert ds[1]["masks"].shape == (4, 32, 32)
    mismatch = r"1 of 2 images .*s0_l3\.png: mask is 32x30 but image .*s0\.png is 32x32"
    with pytest.raises(MedicalDataError, match=mismatch):
        LIDCPngDataset(root, "train", crop_size=32)


def test_png_non_binary_mask(tmp_path):
    bad = np.zeros((32, 32), np.uint8)
    bad[:4], bad[4:8] = 128, 255
    root = write_lidc(tmp_path, masks=[np.zeros((32, 32), np.uint8)] * 3 + [bad])
    with pytest.raises(MedicalDataError, match=r"s0_l3\.png.*not binary"):
        LIDCPngDataset(root, "train", crop_size=32)[0]


def test_png_corrupt(tmp_path):
    """Found at setup (not when training reaches the item), and at load for a file changed since."""
    root = write_lidc(tmp_path)
    ds = LIDCPngDataset(root, "train", crop_size=32)
    (root / "train" / "images" / "P1" / "s1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds[0]
    with pytest.raises(MedicalDataError, match=r"s1\.png.*cannot decode"):
        ds[1]
    with pytest.raises(MedicalDataError, match=r"s1\.png: cannot decode the image"):
        LIDCPngDataset(root, "train", crop_size=32)


def test_png_item_and_centre_crop(tmp_path):
    image = np.zeros((180, 180), np.uint8)
    image[90, 90] = 255
    mask = np.zeros((180, 180), np.uint8)
    mask[26:30, 26:28] = 255  # lands at the crop's top-left corner
    root = write_lidc(tmp_path, size=180, n=1, image=image, masks=[mask, mask * 0, mask, mask])
    item = LIDCPngDataset(root, "train", crop_size=128)[0]
    assert item["image"].shape == (1, 128, 128) and item["image"].dtype == torch.float32
    assert item["image"][0, 64, 64] == 1.0 and item["image"].sum() == 1.0
    assert item["masks"].shape == (4, 128, 128) and set(item["masks"].unique().tolist()) == {0.0, 1.0}
    assert item["masks"][0, :4, :2].all() and item["masks"][0].sum() == 8 and item["masks"][1].sum() == 0
    assert item["id"] == "P1/s0" and item["group"] == "P1"
    with pytest.raises(MedicalDataError, match="smaller than crop_size"):
        LIDCPngDataset(root, "train", crop_size=256)[0]


# ---------------------------------------------------------------------------------------- LIDC pickle


def _write_pickle(path: Path, n_series: int = 10, per_series: int = 3, size: int = 16) -> Path:
    rng = np.random.default_rng(0)
    data = {}
    for s in range(n_series):
        for k in range(per_series):
            masks = [(rng.random((size, size)) > 0.7).astype(np.uint8) for _ in range(4)]
            data[f"slice_{s}_{k}"] = {
                "image": rng.random((size, size)),
                "masks": masks,
                "series_uid": f"1.2.{s}",
            }
    path.write_bytes(pickle.dumps(data))
    return path


def test_pickle_split_by_series(tmp_path):
    path = _write_pickle(tmp_path / "lidc.pickle")
    D._PICKLE_CACHE.clear()
    with pytest.warns(UserWarning, match="unpickling runs arbitrary code"):
        train = LIDCPickleDataset(path, "train", crop_size=None)
    val, test = (LIDCPickleDataset(path, s, crop_size=None) for s in ("val", "test"))
    series = [set(ds.groups) for ds in (train, val, test)]
    assert all(series) and not (series[0] & series[1] or series[0] & series[2] or series[1] & series[2])
    assert len(train) + len(val) + len(test) == 30 and sum(map(len, series)) == 10
    item = train[0]
    assert item["image"].shape == (1, 16, 16) and item["masks"].shape == (4, 16, 16)
    # crop_size=None: pixels come through untouched (random, so not symmetric; readers' masks all differ)
    source = pickle.loads(path.read_bytes())
    for i in range(len(train)):
        item, entry = train[i], source[train.ids[i]]
        assert item["id"] == train.ids[i]
        np.testing.assert_allclose(item["image"][0].numpy(), entry["image"], rtol=0, atol=1e-6)
        for r in range(4):
            np.testing.assert_array_equal(item["masks"][r].numpy(), entry["masks"][r])
    assert LIDCPickleDataset(path, "train", seed=1, crop_size=None).groups != train.groups  # seeded


def test_pickle_errors(tmp_path):
    D._PICKLE_CACHE.clear()
    broken = tmp_path / "broken.pickle"
    broken.write_bytes(b"\x80\x04 not really a pickle")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(MedicalDataError, match="broken.pickle"):
            LIDCPickleDataset(broken, "train")
        no_uid = tmp_path / "no_uid.pickle"
        no_uid.write_bytes(pickle.dumps({"a": {"image": np.zeros((4, 4)), "masks": [np.zeros((4, 4))] * 4}}))
        with pytest.raises(MedicalDataError, match=r"no_uid.pickle \[key 'a'\]"):
            LIDCPickleDataset(no_uid, "all", crop_size=None)
        soft = tmp_path / "soft.pickle"
        masks = [np.zeros((4, 4), np.uint8)] * 3 + [np.arange(16, dtype=np.uint8).reshape(4, 4)]
        soft.write_bytes(pickle.dumps({"b": {"image": np.zeros((4, 4)), "masks": masks, "series_uid": "x"}}))
        with pytest.raises(MedicalDataError, match=r"soft.pickle \[key 'b'\] mask 3.*not binary"):
            LIDCPickleDataset(soft, "all", crop_size=None)[0]
        # a NaN pixel was said as "values must be finite and in [0, 1], got [0, 1]" (the range skips NaN)
        image = np.zeros((4, 4))
        image[1, 2] = np.nan
        nan = tmp_path / "nan.pickle"
        nan.write_bytes(pickle.dumps({"c": {"image": image, "masks": [np.zeros((4, 4))] * 4, "series_uid": "x"}}))
        with pytest.raises(MedicalDataError, match=r"nan.pickle \[key 'c'\]: image holds 1 NaN or infinite values"):
            LIDCPickleDataset(nan, "all", crop_size=None)[0]
    with pytest.raises(MedicalDataError, match=r"is a folder; the lidc_pickle format reads one .pickle file"):
        LIDCPickleDataset(tmp_path, "all")  # it said "no such LIDC pickle file" of a folder that exists
    with pytest.raises(ValueError, match=r"num_readers: a whole number of readers >= 1, got 0"):
        LIDCPngDataset(tmp_path, "train", num_readers=0)  # it ended in numpy's "need at least one array to stack"


# ------------------------------------------------------------------------------------ Decathlon NIfTI


def _write_decathlon(root: Path, channels: int = 2) -> Path:
    """Two 32x24x6 volumes (X, Y, Z); foreground on slices 2 and 3 of case 0, slice 4 of case 1."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = [-10, 5, 30]
    training = []
    for c, fg_slices in enumerate([(2, 3), (4,)]):
        rng = np.random.default_rng(c)
        image = rng.random((32, 24, 6, channels)).astype(np.float32) * 100
        label = np.zeros((32, 24, 6), np.uint8)
        for z in fg_slices:
            label[5:12, 3:9, z] = 2  # label value 2: anything > 0 is foreground
            image[5:12, 3:9, z, 0] += 500
        name = f"case_{c:03d}.nii.gz"
        nib.save(
            nib.Nifti1Image(image if channels > 1 else image[..., 0], affine), str(root / "imagesTr" / name)
        )
        nib.save(nib.Nifti1Image(label, affine), str(root / "labelsTr" / name))
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {"name": "tiny", "modality": {"0": "FLAIR", "1": "T1"}, "training": training}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_decathlon_slices(tmp_path):
    root = _write_decathlon(tmp_path / "Task99")
    ds = DecathlonSliceDataset(root, "all", crop_size=32, empty_ratio=0.5)
    # case 0: 2 foreground + round(0.5*2)=1 empty; case 1: 1 foreground + max(1, round(0.5)) = 1 empty
    assert ds.stats == {"volumes": 2, "foreground_slices": 3, "empty_slices": 9, "empty_slices_kept": 2}
    assert len(ds) == 5 and ds.num_readers == 1 and set(ds.groups) == {"case_000", "case_001"}
    by_id = {ds.ids[i]: ds[i] for i in range(len(ds))}
    item = by_id["case_000/z002"]
    assert item["image"].shape == (1, 32, 32) and item["masks"].shape == (1, 32, 32)
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    fg = item["masks"][0].bool()
    assert item["image"][0][fg].mean() > item["image"][0][~fg].mean() + 0.3  # channel 0 carries the lesion
    src = item["source"]
    assert src["slice_index"] == 2 and src["image_path"].endswith("case_000.nii.gz")
    assert np.allclose(src["affine"][:3, 3], [-10, 5, 30]) and tuple(src["spatial_shape"]) == (32, 24, 6)
    # a predicted slice goes back onto the original grid exactly (32x24 was padded, not resized)
    native = slice_to_source_grid(item["masks"][:1], src["spatial_shape"], src["resized"])[0].numpy()  # as predict
    original = nib.load(src["label_path"]).get_fdata()[:, :, 2] > 0
    assert native.shape == (32, 24) and np.array_equal(native > 0, original)
    # downsized in-plane (32 -> 16, aspect kept) and the other modality
    small = DecathlonSliceDataset(root, "all", crop_size=16, modality_index=1)
    assert small[0]["image"].shape == (1, 16, 16)
    with pytest.raises(MedicalDataError, match=r"case_000.nii.gz.*modality_index=2"):
        DecathlonSliceDataset(root, "all", crop_size=16, modality_index=2)[0]
    splits = [set(DecathlonSliceDataset(root, s, fractions=(0.5, 0.5, 0.0)).groups) for s in ("train", "val")]
    assert splits[0] and splits[1] and not splits[0] & splits[1]


def test_decathlon_corrupt_nifti(tmp_path):
    root = _write_decathlon(tmp_path / "Task99", channels=1)
    (root / "labelsTr" / "case_001.nii.gz").write_bytes(b"\x1f\x8b not gzip at all")
    with pytest.raises(MedicalDataError, match=r"labelsTr[/\\]case_001\.nii\.gz"):
        DecathlonSliceDataset(root, "all")
    root2 = _write_decathlon(tmp_path / "Task98", channels=1)
    (root2 / "imagesTr" / "case_000.nii.gz").write_bytes(b"garbage")
    # the image's header gives the geometry (not its label's), so the listing reads it and names the file
    with pytest.raises(MedicalDataError, match=r"imagesTr[/\\]case_000\.nii\.gz: cannot read NIfTI"):
        DecathlonSliceDataset(root2, "all", crop_size=32)
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        DecathlonSliceDataset(tmp_path, "all")


def test_decathlon_non_finite_voxels_name_the_file(tmp_path):
    root = _write_decathlon(tmp_path / "Task99", channels=2)
    path = root / "imagesTr" / "case_001.nii.gz"
    image = nib.load(str(path))
    data = image.get_fdata().astype(np.float32)
    data[0, 0, 0, 0], data[1, 1, 1, 0] = np.nan, np.inf  # modality 0 only
    nib.save(nib.Nifti1Image(data, image.affine), str(path))
    ds = DecathlonSliceDataset(root, "all", crop_size=32)
    case_1 = next(i for i, g in enumerate(ds.groups) if g == "case_001")
    with pytest.raises(MedicalDataError, match=r"case_001\.nii\.gz: 2 of 4,608 voxels are NaN or infinite"):
        ds[case_1]
    assert DecathlonSliceDataset(root, "all", crop_size=32, modality_index=1)[case_1]["image"].isfinite().all()


def test_build_dataset(synth_root, tmp_path):
    assert len(build_dataset("lidc_png", synth_root, "val", crop_size=64)) > 0
    with pytest.raises(ValueError, match="lidc_png, lidc_pickle, decathlon"):
        build_dataset("nrrd", synth_root, "val")
    dm = MedicalDataModule(
        "decathlon",
        str(_write_decathlon(tmp_path / "T")),
        crop_size=32,
        batch_size=2,
        num_workers=0,
        seed=0,
        dataset_kwargs={"fractions": (0.5, 0.5, 0.0)},
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["masks"].shape == (2, 1, 32, 32) and batch["mask"].shape == (2, 1, 32, 32)
    assert batch["source"]["affine"].shape == (2, 4, 4)


# ----------------------------------------------------------------------------------------- datamodule


def test_datamodule_random_reader(synth_root):
    dm = MedicalDataModule(
        data_path=str(synth_root), crop_size=64, batch_size=4, num_workers=0, max_items={"train": 6, "val": 4}
    )
    dm.setup("fit")
    assert len(dm.dataset("train")) == 6 and dm.num_readers == 4
    torch.manual_seed(0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 1, 64, 64) and batch["masks"].shape == (4, 4, 64, 64)
    assert batch["mask"].shape == (4, 1, 64, 64) and batch["reader"].shape == (4,)
    for b, r in enumerate(batch["reader"].tolist()):
        assert torch.equal(batch["mask"][b, 0], batch["masks"][b, r])
    readers = {dm.dataset("train")[0]["reader"] for _ in range(40)}
    assert readers == {0, 1, 2, 3}  # one random reader per call
    val = next(iter(dm.val_dataloader()))
    assert (val["reader"] == 0).all() and torch.equal(val["mask"], val["masks"][:, :1])
    base = LIDCPngDataset(synth_root, "val", crop_size=64)
    assert torch.equal(val["image"][0], base[0]["image"])  # validation is never augmented


def test_datamodule_all_readers(synth_root):
    dm = MedicalDataModule(
        data_path=str(synth_root),
        crop_size=64,
        batch_size=8,
        num_workers=0,
        reader_sampling="all",
        max_items=3,
    )
    dm.setup("fit")
    train = dm.dataset("train")
    assert len(train) == 12 and [it[1] for it in train.items] == [0, 1, 2, 3] * 3
    batches = list(dm.train_dataloader())
    assert [len(b["id"]) for b in batches] == [8, 4]
    batch = batches[0]
    assert batch["image"].shape == (8, 1, 64, 64) and batch["masks"].shape == (8, 4, 64, 64)
    for b, r in enumerate(batch["reader"].tolist()):
        assert torch.equal(batch["mask"][b, 0], batch["masks"][b, r])
    assert len(dm.dataset("val")) == 3  # evaluation is not expanded
    with_workers = MedicalDataModule(data_path=str(synth_root), crop_size=64, num_workers=2, max_items=3)
    assert with_workers.val_dataloader().persistent_workers and not dm.val_dataloader().persistent_workers
    with pytest.raises(ValueError, match="reader_sampling"):
        MedicalDataModule(data_path=str(synth_root), reader_sampling="majority")
    with pytest.raises(ValueError, match="data_path is required"):
        MedicalDataModule(data_format="decathlon")


def test_training_never_ends_on_a_batch_of_one(synth_root):
    """Batch norm cannot train on one image's 1x1 map: a last batch of one image is dropped, others kept."""
    dm = MedicalDataModule(data_path=str(synth_root), crop_size=64, batch_size=4, num_workers=0, max_items=5)
    dm.setup("fit")
    assert [len(b["id"]) for b in dm.train_dataloader()] == [4]  # 5 = 4 + 1: the one is dropped
    dm = MedicalDataModule(data_path=str(synth_root), crop_size=64, batch_size=4, num_workers=0, max_items=6)
    dm.setup("fit")
    assert [len(b["id"]) for b in dm.train_dataloader()] == [4, 2]
    assert [
        len(b["id"])
        for b in MedicalDataModule(
            data_path=str(synth_root), crop_size=64, batch_size=4, num_workers=0, max_items={"val": 5}
        ).val_dataloader()
    ] == [4, 1]  # evaluation sees every image


def test_augmentation_keeps_image_and_masks_aligned(tmp_path):
    image = np.zeros((48, 48), np.uint8)
    image[6:40, 6:14] = 255  # an asymmetric "L": flips and rotations are visible
    image[32:40, 6:30] = 255
    masks = [(image > 0).astype(np.uint8) * 255] * 3 + [np.zeros_like(image)]
    base = LIDCPngDataset(
        write_lidc(tmp_path, size=48, n=1, image=image, masks=masks), "train", crop_size=48
    )
    original = base[0]["masks"][0]
    torch.manual_seed(0)
    flip_only = ReaderDataset(
        base, "random", augment=segmentation_augmentations(rotate_limit=0, scale_limit=0)
    )
    flipped = 0
    for _ in range(20):
        item = flip_only[0]
        assert torch.equal(item["image"][0] > 0.5, item["masks"][0].bool())
        assert torch.equal(item["masks"][0], item["masks"][1]) and item["masks"][3].sum() == 0
        flipped += int(torch.equal(item["masks"][0], original.flip(-1)))
    assert 0 < flipped < 20
    moving = ReaderDataset(
        base, "all", augment=segmentation_augmentations(rotate_limit=25, scale_limit=0.2, p=1.0)
    )
    changed = 0
    for i in range(8):
        item = moving[i % len(moving)]
        m = item["masks"][0]
        assert set(m.unique().tolist()) <= {0.0, 1.0}  # nearest-neighbour masks stay binary
        agree = ((item["image"][0] > 0.5) == m.bool()).float().mean()
        assert agree > 0.97, agree
        changed += int(not torch.equal(m, original))
    assert changed >= 6


def test_binarise_by_hand():
    from domains.medical.data import _binarise

    assert _binarise(np.array([[0, 255], [255, 0]], np.uint8), "m").tolist() == [[0, 1], [1, 0]]
    assert _binarise(np.zeros((2, 2), np.uint16), "m").tolist() == [[0, 0], [0, 0]]
    assert _binarise(np.array([[0.0, 0.5]], np.float32), "m").tolist() == [[0, 1]]
    for bad, shown in (([[0, 3], [5, 0]], "0, 3, 5"), ([[0, -1]], "-1, 0"), ([[-2, -2]], "-2")):
        with pytest.raises(MedicalDataError, match=rf"m: mask is not binary: values \{{{shown}\}}"):
            _binarise(np.array(bad, np.int16), "m")


# ------------------------------------------------------------------------------- own data (audit fixes)


def test_a_16_bit_png_keeps_its_contrast_and_its_grey_levels(tmp_path, monkeypatch):
    """A 12-bit CT in a 16-bit PNG was divided by 65535: at most 0.06, nearly black, and the classification
    patches made from it had 17 grey levels of 4093."""
    from shared import images

    monkeypatch.setattr(images, "_said", set())  # said once per process: this test must see it
    ramp = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 4  # 0 .. 4092, 1024 levels
    root = write_lidc(tmp_path, n=1, image=ramp)
    with pytest.warns(D.MedicalDataWarning, match="contrast-stretched per image"):
        image = LIDCPngDataset(root, "train", crop_size=32).load(0)["image"]
    assert image.min() == 0.0 and image.max() == 1.0
    assert image[0, 1] == pytest.approx(4 / 4092)  # the image's own 0..4092 to 0..1, not /65535
    assert len(np.unique(image)) == 1024  # every level kept (no trip through uint8)


def test_missing_reader_says_how_to_read_fewer_readers(tmp_path):
    root = write_lidc(tmp_path)
    for r in (3,):
        for i in range(2):
            (root / "train" / "gt" / "P1" / f"s{i}_l{r}.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"expected 4 readers.*dataset_kwargs '\{num_readers: N\}'"):
        LIDCPngDataset(root, "train", crop_size=32)
    assert LIDCPngDataset(root, "train", crop_size=32, num_readers=3).load(0)["masks"].shape == (3, 32, 32)


def test_a_patient_in_two_split_folders_is_said(tmp_path):
    """The folders are the split: a patient copied into test/ too gave test figures on a training patient."""
    root = write_lidc(tmp_path)
    import shutil

    for kind in ("images", "gt"):
        shutil.copytree(root / "train" / kind / "P1", root / "test" / kind / "P1")
    with pytest.warns(D.MedicalDataWarning, match=r"1 patient folder\(s\) are in both train/ and test/ \(e.g. P1\)"):
        LIDCPngDataset(root, "test", crop_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", D.MedicalDataWarning)
        LIDCPngDataset(root, "train", crop_size=32)  # the first split has nothing before it


def test_decathlon_foreground_labels_choose_the_lesion(tmp_path):
    """Task03 Liver labels 1 liver, 2 cancer: every non-zero label was the lesion (74 % liver), unsaid."""
    root = _write_decathlon(tmp_path / "Task03", channels=1)
    for c in range(2):  # a "liver" (label 1) around case c's lesion (label 2)
        path = root / "labelsTr" / f"case_{c:03d}.nii.gz"
        volume = nib.load(path)
        label = np.asarray(volume.dataobj).copy()
        label[0:4, 0:4, :] = 1
        nib.save(nib.Nifti1Image(label, volume.affine), str(path))
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"0": "background", "1": "liver", "2": "cancer"}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.warns(D.MedicalDataWarning, match=r"labels 1 liver, 2 cancer are all taken as the lesion"):
        merged = DecathlonSliceDataset(root, "all", crop_size=32)
    assert merged.stats["foreground_slices"] == 12  # label 1 is on every slice of both cases
    cancer = DecathlonSliceDataset(root, "all", crop_size=32, foreground_labels=[2], empty_ratio=0.0, min_empty=0)
    assert cancer.stats["foreground_slices"] == 3 and cancer.ids == ["case_000/z002", "case_000/z003", "case_001/z004"]
    mask = cancer.load(0)["masks"][0]
    assert mask.sum() == 7 * 6 and mask[:4, :4].sum() == 0  # the 7x6 cancer only (rows = Y), not the liver
    with pytest.raises(ValueError, match=r"foreground_labels \[3\]: not lesion labels of .*valid: 1 \(liver\), 2 \(cancer\)"):
        DecathlonSliceDataset(root, "all", foreground_labels=[3])
    # one value or a name, as a config writes it (a bare 2 was "'int' object is not iterable", a name a traceback)
    for chosen in (2, "cancer", ["cancer"], ["2"]):
        ds = DecathlonSliceDataset(root, "all", crop_size=32, foreground_labels=chosen, empty_ratio=0.0, min_empty=0)
        assert ds.foreground_labels == [2], chosen
    for bad in (["tumor"], True):  # a YAML true is no label 1
        with pytest.raises(ValueError, match=r"is neither a label value nor a name of .*valid: 1 \(liver\), 2"):
            DecathlonSliceDataset(root, "all", foreground_labels=bad)
    # label files holding a value dataset.json does not name: said once, with how many files hold one
    meta["labels"] = {"0": "background", "2": "cancer"}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.warns(D.MedicalDataWarning, match=r"case_000.nii.gz: label values \[1\] are not among .*labels \[0, 2\] \(2 of 2 label files"):
        DecathlonSliceDataset(root, "all", crop_size=32)
    with warnings.catch_warnings():  # the lesion's labels chosen: the other values are background, as asked
        warnings.simplefilter("error", D.MedicalDataWarning)
        DecathlonSliceDataset(root, "all", crop_size=32, foreground_labels=[2])


def test_a_dataset_kwargs_typo_names_the_option_and_the_valid_ones(synth_root):
    with pytest.raises(ValueError, match=r"--data.dataset_kwargs: fraction not an option of the lidc_pickle reader; valid: .*fractions"):
        build_dataset("lidc_pickle", synth_root, "train", fraction=(0.5, 0.25, 0.25))
    with pytest.raises(ValueError, match=r"fractions not an option of the lidc_png reader; valid: crop_size, num_readers"):
        build_dataset("lidc_png", synth_root, "train", fractions=(0.5, 0.25, 0.25))


def test_decathlon_slices_keep_the_physical_aspect_of_anisotropic_voxels(tmp_path):
    """0.5 x 1.0 mm voxels: a 10 mm square lesion came out 13x6 pixels when the voxel grid's aspect was kept."""
    root = tmp_path / "Task99"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    # 40 x 20 voxels of 0.5 x 1.0 mm (20 x 20 mm), voxel axis 0 along world y and axis 1 along world x: the sizes
    # are the affine's column lengths (its row lengths, or diagonal, would give 1.0 x 0.5 or 0 x 0)
    affine = np.array([[0.0, 1.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.0], [0.0, 0.0, 2.5, 0.0], [0.0, 0.0, 0.0, 1.0]])
    label = np.zeros((40, 20, 3), np.uint8)
    label[10:30, 5:15, 1] = 1  # 20 x 10 voxels: 10 x 10 mm
    image = np.where(label, 500.0, 0.0).astype(np.float32)
    nib.save(nib.Nifti1Image(image, affine), str(root / "imagesTr" / "c.nii.gz"))
    nib.save(nib.Nifti1Image(label, affine), str(root / "labelsTr" / "c.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({"training": [{"image": "imagesTr/c.nii.gz", "label": "labelsTr/c.nii.gz"}]}))
    ds = DecathlonSliceDataset(root, "all", crop_size=32, empty_ratio=0.0, min_empty=0)
    item = ds.load(ds.ids.index("c/z001"))
    rows, cols = np.nonzero(item["masks"][0])
    assert np.ptp(rows) + 1 == 16 and np.ptp(cols) + 1 == 16  # 20 x 20 mm -> 32 x 32 px: 10 mm is 16 px
    assert tuple(item["source"]["resized"]) == (32, 32)
    back = slice_to_source_grid(torch.as_tensor(item["masks"]), item["source"]["spatial_shape"], item["source"]["resized"])
    assert np.array_equal(back[0].numpy(), label[:, :, 1])  # predict writes it back onto the source voxels
    # the writer does so through the item's sizes: a perfect prediction lands on the source label
    mask = torch.as_tensor(item["masks"][0])
    prediction = {
        "id": [item["id"]], "samples": mask[None, None].bool(), "mean": mask[None].float(),
        "uncertainty": torch.zeros(1, 32, 32), "source": default_collate([item])["source"],
    }  # fmt: skip
    MedicalPredictionWriter(str(tmp_path / "out")).write_on_batch_end(None, None, prediction, None, None, 0, 0)
    written = nib.load(tmp_path / "out" / "c" / "z001" / "samples.nii.gz")
    assert np.array_equal(np.asarray(written.dataobj)[:, :, 0, 0], label[:, :, 1])


def test_lidc_hidden_patient_entry_is_not_even_logged(tmp_path, caplog):
    import logging

    from domains.medical.data import LIDCPngDataset
    from tests.helpers import write_lidc
    root = write_lidc(tmp_path)
    (root / "train" / "images" / "._P1").write_bytes(b"\x00\x05\x16\x07")
    with caplog.at_level(logging.INFO):
        LIDCPngDataset(root, "train", crop_size=32)
    assert "ignored" not in caplog.text


def test_max_items_refuses_a_split_that_is_none_and_counts_below_one():
    """{trian: 2} capped nothing and 0 or -3 read as 1, all without a word."""
    for bad, said in (({"trian": 2}, r"'trian' is no split; valid: train, val, test, predict"),
                      (0, r"--data.max_items: a cap is a whole number >= 1, or null for all, got 0"),
                      ({"val": -3}, r"\(val\): a cap .* got -3")):  # fmt: skip
        with pytest.raises(ValueError, match=said):
            MedicalDataModule(max_items=bad)
    assert MedicalDataModule(max_items={"val": 4, "predict": None}).max_items == {"val": 4, "predict": None}
