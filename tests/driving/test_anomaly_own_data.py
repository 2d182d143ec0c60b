"""Road anomalies with one's own data (second audit): a Cityscapes download read as it is, road ids that hold no
training pixel, a label mask saved as JPEG in `test`, a SegmentMeIfYouCan root given to predict, the anomaly
set's images/ given as its root, a 16-bit photo's warning said twice."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from domains.driving.anomaly.data import (
    AnomalyDataset,
    CityscapesSegDataset,
    SegmentationDataModule,
    SemanticSegDataset,
    read_cityscapes_semantic,
)
from domains.driving.common import predict_images
from domains.driving.formats import LabelFormatError, LabelWarning
from tests.driving.layouts import write_smiyc
from tests.helpers import anomaly_task, quiet_trainer, write_image

TINY = {"encoder_kwargs": {"channels": [4, 8, 16]}}
CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt",)}
TRAIN_IDS = {7: 0, 23: 10}  # Cityscapes road and sky: labelId -> trainId


def write_cityscapes(root: Path, cities=CITIES, kinds=("labelIds", "labelTrainIds"), frames=2) -> Path:
    """A Cityscapes download in miniature: sky (23) above road (7), 16x32 frames."""
    for split, names in cities.items():
        for city in names:
            for i in range(frames):
                stem = f"{city}_{i:06d}_000019"
                write_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", 32, 16, seed=i)
                label = np.full((16, 32), 23, np.uint8)
                label[8:] = 7
                maps = root / "gtFine" / split / city
                maps.mkdir(parents=True, exist_ok=True)
                if "labelIds" in kinds:
                    cv2.imwrite(str(maps / f"{stem}_gtFine_labelIds.png"), label)
                if "labelTrainIds" in kinds:
                    train_ids = np.vectorize(TRAIN_IDS.get)(label).astype(np.uint8)
                    cv2.imwrite(str(maps / f"{stem}_gtFine_labelTrainIds.png"), train_ids)
    return root


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# ------------------------------------------------------------------------------------------ 1: Cityscapes


# labelIds maps are read as train ids (road 7 -> 0, sky 23 -> 10), as Cityscapes' evaluation scores them
@pytest.mark.parametrize(("kind", "values"), [("labelIds", [0, 10]), ("labelTrainIds", [0, 10])])
def test_a_cityscapes_root_trains_on_its_own_train_val_split_and_the_maps_chosen(tmp_path, kind, values):
    root = write_cityscapes(tmp_path / "cs")
    dm = SegmentationDataModule(data_path=str(root), cityscapes_ids=kind, num_workers=0, image_size=None)
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert isinstance(train, CityscapesSegDataset)
    assert [name for *_, name in train.items] == [
        "aachen_000000_000019", "aachen_000001_000019", "bochum_000000_000019", "bochum_000001_000019",
    ]  # fmt: skip
    assert [name for *_, name in val.items] == ["frankfurt_000000_000019", "frankfurt_000001_000019"]
    assert all(label.name.endswith(f"_gtFine_{kind}.png") for _, label, _ in train.items + val.items)
    assert torch.unique(val[0]["mask"]).tolist() == values


def test_the_maps_gtfine_holds_are_read_and_both_kinds_need_a_choice(tmp_path):
    both = write_cityscapes(tmp_path / "both")
    # both kinds give the 19 train ids: the trainIds files are read where both are there
    assert read_cityscapes_semantic(both)[0] == "labelTrainIds"
    assert read_cityscapes_semantic(both, num_classes=19)[0] == "labelTrainIds"
    for other in (12, 34):  # a 34-class model would train on and score Cityscapes' void classes
        with pytest.raises(ValueError, match=r"give --model.network.init_args.num_classes 19 --model.road_ids \[0\]"):
            read_cityscapes_semantic(both, num_classes=other)
    only = write_cityscapes(tmp_path / "only", kinds=("labelTrainIds",))
    assert read_cityscapes_semantic(only)[0] == "labelTrainIds"
    with pytest.raises(FileNotFoundError, match=r"aachen_000000_000019_gtFine_labelIds\.png: labelIds map missing"):
        read_cityscapes_semantic(only, "labelIds")


def test_one_cityscapes_split_alone_is_split_by_city(tmp_path):
    root = write_cityscapes(tmp_path / "cs", cities={"train": ("aachen", "bochum", "koeln", "ulm")})
    dm = SegmentationDataModule(data_path=str(root), cityscapes_ids="labelIds", num_workers=0,
                                split_fractions=(0.5, 0.5))  # fmt: skip
    dm.setup("fit")
    cities = {name: {frame.split("_")[0] for *_, frame in dm.datasets[name].items} for name in ("train", "val")}
    assert len(cities["train"]) == len(cities["val"]) == 2 and not cities["train"] & cities["val"]
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 8
    capped = SegmentationDataModule(data_path=str(root), cityscapes_ids="labelIds", num_workers=0,
                                    split_fractions=(0.5, 0.5), max_items=1)  # fmt: skip
    capped.setup("fit")  # capped after the split: a cap first kept the first city's frames alone, no val
    assert len(capped.datasets["train"]) == len(capped.datasets["val"]) == 1


def test_validation_images_the_checkpoint_trained_on_are_warned_of(tmp_path):
    from types import SimpleNamespace

    from pytorch_lightning.trainer.states import TrainerFn

    root = write_cityscapes(tmp_path / "cs", cities={"train": ("aachen", "bochum", "koeln", "ulm")})
    settings = {"data_path": str(root), "cityscapes_ids": "labelIds", "num_workers": 0, "split_fractions": (0.5, 0.5)}
    fitted = SegmentationDataModule(**settings)
    fitted.setup("fit")
    state = fitted.state_dict()
    moved = SegmentationDataModule(**settings, seed=2)  # as frames added since the fit would: the cut moves
    moved.setup("validate")
    leaked = sorted(fitted.split_groups("train") & moved.split_groups("val"))
    assert leaked and len(state["train_group_digests"]) == len(fitted.datasets["train"])
    moved.trainer = SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.VALIDATING))
    with pytest.warns(UserWarning, match=rf"{len(leaked)} of the \d+ images of this val split were in the checkpoint"):
        moved.load_state_dict(state)


def test_cityscapes_given_as_its_inner_folder_or_flattened_says_what_to_give(tmp_path):
    root = write_cityscapes(tmp_path / "cs")
    with pytest.raises(FileNotFoundError, match=rf"folder inside the Cityscapes root: give {root}$"):
        SegmentationDataModule(data_path=str(root / "leftImg8bit"), num_workers=0).setup("fit")
    # copied into a KITTI layout with Cityscapes' names: the maps' suffixes never matched the images'
    frame = "aachen_000000_000019"
    write_image(tmp_path / "flat" / "image_2" / f"{frame}_leftImg8bit.png", 32, 16)
    (tmp_path / "flat" / "semantic").mkdir()
    cv2.imwrite(str(tmp_path / "flat" / "semantic" / f"{frame}_gtFine_labelIds.png"), np.zeros((16, 32), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"semantic map missing .*give --data.data_path the folder holding "
                       r"leftImg8bit/ and gtFine/"):  # fmt: skip
        SemanticSegDataset(tmp_path / "flat", [f"{frame}_leftImg8bit"])


# -------------------------------------------------------------------------------------- 2: road ids


def _fit_warnings(**task_args) -> list[str]:
    """The warnings of a one-step fit on a batch of Cityscapes labelIds: road (7) below, sky (23) above."""
    masks = torch.full((2, 32, 64), 23, dtype=torch.long)
    masks[:, 16:] = 7
    batch = {"image": torch.rand(2, 3, 32, 64), "mask": masks, "name": ["a", "b"]}
    task = anomaly_task(**TINY, oe_weight=0.0, class_weighting="enet", class_weight_batches=1,
                        calibration_batches=1, **task_args)  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_trainer(max_steps=1).fit(task, DataLoader([batch], batch_size=None))
    return [str(w.message) for w in caught if "road_ids" in str(w.message)]


def test_road_ids_without_training_pixels_are_warned_with_the_class_shares_and_cityscapes_values():
    (said,) = _fit_warnings(num_classes=34)  # the synthetic default [0, 1] on labelIds
    assert said.startswith("--model.road_ids [0, 1] hold no labelled pixel of the 1 training batch(es) counted "
                           "(class pixel shares: 0 0.0%, 1 0.0%; the most common classes: 7 50.0%, 23 50.0%")  # fmt: skip
    assert "Cityscapes labelIds: road = 7 (--model.road_ids [7], 34 classes); trainIds: road = 0" in said
    (said,) = _fit_warnings(num_classes=34, road_ids=[7, 1])
    assert said.startswith("--model.road_ids [7, 1]: [1] hold no labelled pixel")
    assert _fit_warnings(num_classes=34, road_ids=[7]) == []


def test_the_synthetic_road_ids_under_another_class_count_are_warned_even_with_pixels():
    task = anomaly_task(**TINY, oe_weight=0.0, num_classes=19)
    with pytest.warns(UserWarning, match=r"--model.road_ids \[0, 1\] are the synthetic set's road and lane marking "
                      r"\(12 classes\), but the model has 19 \(class pixel shares: 0 50.0%, 1 50.0%"):  # fmt: skip
        task._check_road_ids(torch.tensor([0.5, 0.5] + [0.0] * 17), 1)


# ---------------------------------------------------------------------------- 3: a mask in another format


def test_a_jpeg_mask_is_an_error_in_test_not_an_unlabelled_image(tmp_path):
    root = write_smiyc(tmp_path / "a", n=2)
    mask = root / "labels_masks" / "frame1.png"
    cv2.imwrite(str(root / "labels_masks" / "frame1_labels_semantic.jpg"), cv2.imread(str(mask)))
    mask.unlink()
    with pytest.raises(LabelFormatError, match=r"frame1\.jpg.*frame1_labels_semantic\.jpg is there, but masks must "
                       r"be PNG \(JPEG alters label values\); a mask that is there but cannot be read is an error"):  # fmt: skip
        AnomalyDataset(root, require_labels=False)
    with pytest.raises(LabelFormatError, match=r"frame1_labels_semantic\.jpg is there"):
        SegmentationDataModule(anomaly_path=str(root), num_workers=0).setup("test")  # test's require_labels=False


# ------------------------------------------------------------------------- 4: predict on a data set's root


def test_predict_refuses_a_data_sets_root_naming_its_image_folder(tmp_path):
    root = write_smiyc(tmp_path / "smiyc", n=2)
    with pytest.raises(ValueError, match=rf"--data.predict_path {root}: 2 of its images are SegmentMeIfYouCan label "
                       rf"maps \(labels_masks/ beside images/, .*give --data.predict_path {root / 'images'}$"):  # fmt: skip
        SegmentationDataModule(predict_path=str(root), num_workers=0).setup("predict")
    assert [name for *_, name in predict_images(root / "images")] == ["frame0", "frame1"]
    cs = write_cityscapes(tmp_path / "cs", cities={"val": ("ulm",)}, kinds=("labelIds",))
    with pytest.raises(ValueError, match=rf"Cityscapes label maps .*give --data.predict_path {cs / 'leftImg8bit'}$"):
        predict_images(cs)
    # one's own photos in a folder that happens to be named like a map folder, with no image folder beside it
    write_image(tmp_path / "own" / "semantic" / "street.jpg")
    assert [name for *_, name in predict_images(tmp_path / "own")] == ["street"]


# ------------------------------------------------------------------------------------------------ 5: minor


def test_the_anomaly_sets_images_folder_given_as_its_root_names_the_option_and_the_parent(tmp_path):
    root = write_smiyc(tmp_path / "a", n=1)
    with pytest.raises(FileNotFoundError, match=rf"--data.anomaly_path takes the SegmentMeIfYouCan root .*folder "
                       rf"inside the set: give --data.anomaly_path {root}$"):  # fmt: skip
        AnomalyDataset(root / "images")


def test_a_16_bit_photos_stretch_is_said_once_not_again_when_its_overlay_is_drawn(tmp_path, monkeypatch):
    """The loader (a worker process) says it; write_predictions read the file again in the main process."""
    import shared.images
    from domains.driving.anomaly.predict import write_predictions

    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), (np.arange(16 * 24).reshape(16, 24) * 100).astype(np.uint16))
    monkeypatch.setattr(shared.images, "_said", set())  # this process has said nothing yet, as the main one
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_predictions(tmp_path / "out", ["deep"], torch.zeros(1, 3, 16, 24), torch.zeros(1, 16, 24), alpha=0.0,
                          sizes=[(16, 24)], image_paths=[str(path)])  # fmt: skip
    assert [str(w.message) for w in caught if w.category is LabelWarning] == []
    assert cv2.imread(str(tmp_path / "out" / "deep_overlay.png")).shape == (16, 24, 3)


def test_the_tasks_score_smoothing_default_is_the_shipped_configs():
    """It is chosen at test time and not stored in checkpoints, so load_from_checkpoint took the class default, 0:
    a Python user's maps were rawer than ``test -c <config>``'s (1.0 in every config and the export)."""
    import inspect

    import yaml

    from domains.driving.anomaly.task import AnomalySegmentationTask

    default = inspect.signature(AnomalySegmentationTask.__init__).parameters["score_smoothing"].default
    configs = sorted(Path(__file__).resolve().parents[2].glob("domains/driving/anomaly/configs/*.yaml"))
    assert configs and {yaml.safe_load(c.read_text())["model"]["score_smoothing"] for c in configs} == {default}
