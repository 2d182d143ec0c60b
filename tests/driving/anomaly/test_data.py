"""Road-anomaly datasets and data module on tiny KITTI / SegmentMeIfYouCan fixtures written in tmp_path."""

from __future__ import annotations

import warnings

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from domains.driving.anomaly.data import (
    AnomalyDataset,
    SegmentationDataModule,
    SemanticSegDataset,
    pad_collate,
)
from domains.driving.formats import LabelFormatError, LabelWarning
from tests.driving.layouts import H, W, fake_synthetic, write_kitti, write_smiyc
from tests.helpers import write_image


def test_anomaly_dataset_loads_smiyc_layout(tmp_path):
    root = write_smiyc(tmp_path / "a", n=2)
    # SMIYC's own naming: <name>_labels_semantic.png
    (root / "labels_masks" / "frame1.png").rename(root / "labels_masks" / "frame1_labels_semantic.png")
    ds = AnomalyDataset(root)
    assert len(ds) == 2
    item = ds[1]
    assert (
        item["name"] == "frame1" and item["image"].shape == (3, H, W) and item["image"].dtype == torch.float32
    )
    assert item["label"].dtype == torch.int64 and item["label"].shape == (H, W)
    assert set(item["label"].unique().tolist()) == {0, 1, 255} and int((item["label"] == 1).sum()) == 200
    flipped = AnomalyDataset(root, transform=A.Compose([A.HorizontalFlip(p=1.0)]))[1]
    assert torch.equal(flipped["label"], item["label"].flip(-1))


def test_anomaly_dataset_errors_name_the_file(tmp_path):
    root = write_smiyc(tmp_path / "a", n=2)
    bad = np.zeros((H, W), np.uint8)
    bad[0, 0] = 7
    cv2.imwrite(str(root / "labels_masks" / "frame0.png"), bad)
    with pytest.raises(LabelFormatError, match=r"label values \[7\]") as err:
        AnomalyDataset(root)[0]
    assert str(err.value).startswith(f"{root / 'labels_masks' / 'frame0.png'}:")

    cv2.imwrite(str(root / "labels_masks" / "frame0.png"), np.zeros((H, W + 2), np.uint8))
    with pytest.raises(LabelFormatError, match="66x48 but image frame0.jpg is 64x48"):
        AnomalyDataset(root)[0]

    write_image(root / "images" / "orphan.webp")
    with pytest.raises(LabelFormatError, match="no label mask") as err:
        AnomalyDataset(root)
    assert str(err.value).startswith(f"{root / 'images' / 'orphan.webp'}:")
    with pytest.warns(LabelWarning, match="dropped 1 image"):
        assert len(AnomalyDataset(root, require_labels=False)) == 2

    with pytest.raises(FileNotFoundError, match="labels_masks"):
        AnomalyDataset(tmp_path / "nothing")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "labels_masks").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        AnomalyDataset(tmp_path / "empty")


def test_semantic_dataset_and_missing_map(tmp_path):
    root = write_kitti(tmp_path / "kitti", n=3)
    ds = SemanticSegDataset(root, ["000001", "000002"])
    item = ds[0]
    assert item["image"].shape == (3, H, W) and item["mask"].dtype == torch.int64
    assert item["mask"][10, 10] == 1 and item["mask"][0, 0] == 255 and item["name"] == "000001"
    (root / "training" / "semantic" / "000002.png").unlink()
    with pytest.raises(FileNotFoundError, match="semantic map missing") as err:
        SemanticSegDataset(root, ["000001", "000002"])
    assert str(root / "training" / "semantic" / "000002.png") in str(err.value)


def test_segmentation_datamodule_train_val_by_sequence_and_anomaly_test(tmp_path):
    root = write_kitti(tmp_path / "kitti", n=12)
    anomaly = write_smiyc(tmp_path / "anomaly", n=3, size=(40, 56))
    dm = SegmentationDataModule(
        data_path=str(root), anomaly_path=str(anomaly), image_size=(32, 40), batch_size=2, num_workers=0
    )
    dm.setup()
    train_ids = {item[2] for item in dm.datasets["train"].items}
    val_ids = {item[2] for item in dm.datasets["val"].items}
    assert len(train_ids) + len(val_ids) == 12 and not (
        {int(i) // 2 for i in train_ids} & {int(i) // 2 for i in val_ids}
    )
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 40) and batch["mask"].shape == (2, 32, 40)
    assert set(batch["mask"].unique().tolist()) <= {0, 1, 2, 255}
    test = next(iter(dm.test_dataloader()))
    # 40x56 (H x W) test images fitted into 32x40 keeping their aspect ratio: x min(32/40, 40/56) = 29x40
    assert (
        test["image"].shape == (2, 3, 29, 40)
        and test["label"].shape == (2, 29, 40)
        and len(test["name"]) == 2
    )
    assert set(test["label"].unique().tolist()) <= {0, 1, 255}


def test_segmentation_datamodule_falls_back_to_the_synthetic_generator(tmp_path, monkeypatch):
    kitti, anomaly = write_kitti(tmp_path / "kitti", n=12), write_smiyc(tmp_path / "anomaly", n=2)
    fake_synthetic(monkeypatch, kitti=kitti, anomaly=anomaly)
    seg = SegmentationDataModule(num_workers=0)
    seg.prepare_data()
    seg.setup()
    assert len(seg.datasets["test"]) == 2


def test_segmentation_repeat_factor_sampling_reads_classes_from_semantic_maps(tmp_path):
    root = write_kitti(tmp_path / "kitti", n=12)  # the maps hold class i % 3
    seg = SegmentationDataModule(data_path=str(root), num_workers=0, repeat_threshold=0.9)
    seg.setup("fit")
    train = seg.datasets["train"]
    classes = train.image_classes()
    assert classes == [{int(name) % 3} for _, _, name in train.items]  # the void rows are left out
    weights = seg.train_dataloader().sampler.sampler.weights  # inside SeededItems
    n = len(classes)
    for c, w in zip(classes, weights.tolist()):
        share = sum(k == c for k in classes) / n
        assert w == pytest.approx(max(1.0, (0.9 / share) ** 0.5))


def test_pad_collate_pads_masks_with_void():
    batch = [
        {"image": torch.ones(3, 4, 5), "label": torch.zeros(4, 5, dtype=torch.int64), "name": "a"},
        {"image": torch.ones(3, 6, 3), "label": torch.ones(6, 3, dtype=torch.int64), "name": "b"},
    ]
    out = pad_collate(batch)
    assert (
        out["image"].shape == (2, 3, 6, 5) and out["label"].shape == (2, 6, 5) and out["name"] == ["a", "b"]
    )
    assert (
        out["image"][0, :, 4:].sum() == 0
        and (out["label"][0, 4:] == 255).all()
        and (out["label"][1, :, 3:] == 255).all()
    )
    assert (out["label"][0, :4] == 0).all()


def test_semantic_ids_past_the_models_classes_are_refused_naming_the_map(tmp_path):
    """An id past the classes ended training in cross-entropy's bare 'Target 20 is out of bounds'; 254 was
    silently trained as a pasted outlier."""
    write_kitti(tmp_path, n=2)
    semantic = tmp_path / "training" / "semantic" / "000001.png"
    mask = cv2.imread(str(semantic), cv2.IMREAD_UNCHANGED)
    ds = SemanticSegDataset(tmp_path, ["000000", "000001"], num_classes=12)
    assert ds[1]["mask"].max() == 255  # ids 0..11 and void pass
    for bad, extra in ((12, ""), (20, ""), (254, "; 254 is reserved for pasted outliers")):
        mask[5:8] = bad
        cv2.imwrite(str(semantic), mask)
        with pytest.raises(LabelFormatError, match=rf"000001\.png: class ids \[{bad}\] are not classes of the model "
                           rf"\(0\.\.11, 255 = void{extra}\)"):  # fmt: skip
            ds[1]
    assert ds[0]["mask"].shape == (H, W)
    assert SemanticSegDataset(tmp_path, ["000001"])[0]["mask"].max() == 255  # no class count given: not checked


def test_anomaly_set_names_repeats_lossy_masks_and_orphan_masks(tmp_path):
    """img0.png beside img0.jpg shared one mask (predict wrote one over the other); a JPEG mask was reported
    missing; a mask without its image was ignored without a word."""
    root = write_smiyc(tmp_path / "a", n=2)
    cv2.imwrite(str(root / "labels_masks" / "stray.png"), np.zeros((H, W), np.uint8))
    cv2.imwrite(str(root / "labels_masks" / "frame0_labels_semantic_color.png"), np.zeros((H, W, 3), np.uint8))
    with pytest.warns(LabelWarning, match=r"1 mask\(s\) in labels_masks/ belong to no image and are not used, "
                      r"e.g. \['stray.png'\]"):  # fmt: skip
        assert len(AnomalyDataset(root)) == 2
    write_image(root / "images" / "frame0.png", width=W, height=H)
    with pytest.raises(LabelFormatError, match=r"frame0\.png: two images share the id 'frame0': frame0\.jpg, frame0\.png"):
        AnomalyDataset(root)
    (root / "images" / "frame0.png").unlink()
    (root / "labels_masks" / "frame1.png").rename(root / "labels_masks" / "frame1.jpg")
    with pytest.raises(LabelFormatError, match=r"frame1\.jpg is there, but masks must be PNG"):
        AnomalyDataset(root)


def test_test_and_validate_generate_and_read_only_what_they_use(tmp_path, monkeypatch):
    """`test --data.anomaly_path OWN` generated the 1,500 synthetic KITTI scenes (300 MB, a minute) and printed
    their train / val split, none of which the test reads."""
    from types import SimpleNamespace

    from domains.driving.anomaly import data as anomaly_data

    made = []
    kitti, anomaly = write_kitti(tmp_path / "k"), write_smiyc(tmp_path / "a")
    monkeypatch.setattr(anomaly_data, "default_kitti_root", lambda: made.append("kitti") or kitti)
    monkeypatch.setattr(anomaly_data, "default_anomaly_root", lambda: made.append("anomaly") or anomaly)
    for stage, generated, splits in (("test", ["anomaly"], ["test"]), ("validate", ["kitti"], ["train", "val"])):
        made.clear()
        dm = SegmentationDataModule(num_workers=0)
        dm.trainer = SimpleNamespace(state=SimpleNamespace(fn=stage))
        dm.prepare_data()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dm.setup(stage)
        assert made == generated * 2 and sorted(dm.datasets) == splits, stage  # prepare_data, then setup


def test_the_data_module_checks_ids_against_the_models_class_count(tmp_path):
    """The datasets take the class count from the model the trainer runs (the CLI links nothing else)."""
    from types import SimpleNamespace

    dm = SegmentationDataModule(data_path=str(write_kitti(tmp_path / "k")), num_workers=0)
    dm.trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"), lightning_module=SimpleNamespace(num_classes=5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm.setup("fit")
    assert dm.datasets["train"].num_classes == dm.datasets["val"].num_classes == 5


def test_a_resized_anomaly_item_carries_its_mask_as_read(tmp_path):
    """test scores every pixel of the mask at its own size: the item brings the mask the loader decoded (the
    first version read each file a second time on the main process)."""
    root = write_smiyc(tmp_path / "a", n=1)
    on_disk = cv2.imread(str(root / "labels_masks" / "frame0.png"), cv2.IMREAD_UNCHANGED)
    resized = AnomalyDataset(root, A.Compose([A.Resize(height=H // 2, width=W // 2)]))[0]
    assert resized["label"].shape == (H // 2, W // 2) and np.array_equal(resized["native_label"], on_disk)
    assert AnomalyDataset(root)[0]["native_label"] is None  # at its own size: the label is the mask


def test_predicting_phone_photos_at_their_own_size_is_said(tmp_path):
    """image_size null (full.yaml, the shipped model): a 12 MP photo took 45 s and 11.8 GB, unsaid."""
    cv2.imwrite(str(tmp_path / "phone.jpg"), np.zeros((2000, 2100, 3), np.uint8))  # 4.2 MP
    cv2.imwrite(str(tmp_path / "wide.png"), np.zeros((2000, 2300, 3), np.uint8))  # 4.6 MP, listed last: named
    cv2.imwrite(str(tmp_path / "frame.png"), np.zeros((192, 640, 3), np.uint8))
    native = SegmentationDataModule(predict_path=str(tmp_path), image_size=None, num_workers=0)
    with pytest.warns(UserWarning, match=r"2 photo\(s\) above 4 MP \(the largest wide\.png, 2300x2000\)"):
        native.setup("predict")
    fitted = SegmentationDataModule(predict_path=str(tmp_path), image_size=(192, 640), num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fitted.setup("predict")
