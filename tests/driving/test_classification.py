"""Road-object classification: KITTI object crops (split by sequence, metadata kept) and the CLI end to end."""

from __future__ import annotations

import csv
import json
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from domains.driving.classification.__main__ import main
from domains.driving.classification.data import square_crop, write_kitti_crops
from domains.driving.common import read_rgb
from tests.helpers import tiny_classification_args

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIG = Path(__file__).resolve().parents[2] / "domains/driving/classification/configs/quick.yaml"
CLASSES = "[Car, Van, Pedestrian, Cyclist]"  # the four the kitti fixture's 12 frames hold in training


def test_square_crop_centres_the_box_and_pads_past_the_border():
    image = np.zeros((40, 60, 3), np.uint8)
    image[10:20, 50:60] = 255  # a 10 x 10 white box touching the right border
    crop = square_crop(image, (50, 10, 60, 20), context=0.5, size=20)  # 20 px side around it, half outside
    assert crop.shape == (20, 20, 3)
    assert crop[5:15, 5:15].min() == 255  # the box sits in the middle
    assert crop[5:15, 15:].min() == 255  # replicated border continues it
    assert crop[:5].max() == 0


def test_crops_keep_sequences_apart_and_record_truncation_and_occlusion(kitti, tmp_path):
    out = write_kitti_crops(kitti, tmp_path / "crops", min_height=16)
    with (out / "metadata.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows and {"truncated", "occluded", "box_height", "group", "image", "line"} <= set(rows[0])
    split_of = {}
    for row in rows:
        assert split_of.setdefault(row["group"], row["split"]) == row["split"], row["group"]
        assert float(row["box_height"]) >= 16 and row["label"] in {
            "Car",
            "Van",
            "Truck",
            "Pedestrian",
            "Cyclist",
        }
        crop = cv2.imread(str(out / row["path"]))
        assert crop.shape == (64, 64, 3)
        # the label line the crop came from is that object's line in the KITTI file
        line = (kitti / "training/label_2" / (Path(row["image"]).stem + ".txt")).read_text().splitlines()
        fields = line[int(row["line"]) - 1].split()
        assert fields[0] == row["label"] and float(fields[1]) == pytest.approx(float(row["truncated"]))
        assert int(fields[2]) == int(row["occluded"])
        # the crop is the object's RGB square (context 0.15, 64 px: the defaults) written as BGR, so read
        # back and turned to RGB it equals the square cut from the source image again
        box = tuple(float(v) for v in fields[4:8])
        expected = square_crop(read_rgb(row["image"]), box, 0.15, 64)
        assert np.array_equal(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), expected), row["path"]
    mtime = (out / ".complete").stat().st_mtime_ns
    assert (
        write_kitti_crops(kitti, out, min_height=16) == out
        and (out / ".complete").stat().st_mtime_ns == mtime
    )


def _args(kitti: Path, crops: Path, *extra: str) -> list[str]:
    settings = ("--data.class_names", CLASSES, "--data.crop_min_height", "16")
    return tiny_classification_args(CONFIG, kitti, crops, *settings, *extra)


def test_cli_fit_fast_dev_run_then_predict_writes_probabilities_and_cams(kitti, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    crops = tmp_path / "crops"
    cli = main(["fit", *_args(kitti, crops, "--trainer.fast_dev_run", "1")])
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert set(cli.model.last_metrics["val"]) >= {"acc", "f1_macro", "ece", "recall_Car", "confusion"}
    settings = json.loads(next(crops.rglob(".complete")).read_text())
    assert settings["min_height"] == 16  # the data module's crop options reach the cut
    pred = tmp_path / "pred"
    main(["predict", "--ckpt_path", "none", *_args(kitti, crops, "--trainer.fast_dev_run", "1", "--model.predict_dir", str(pred))])
    with (pred / "probabilities.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    for row in rows:
        probs = [float(row[f"p_{c}"]) for c in ("Car", "Van", "Pedestrian", "Cyclist")]
        assert sum(probs) == pytest.approx(1, abs=1e-4) and row["predicted"] in {
            "Car",
            "Van",
            "Pedestrian",
            "Cyclist",
        }
        cam = cv2.imread(str(pred / row["cam"]))
        assert cam.shape == cv2.imread(row["path"]).shape  # the overlay at the crop's own size


def test_cli_predict_on_a_folder_of_loose_images_with_a_cam_cap(kitti, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loose = tmp_path / "loose"
    loose.mkdir()
    for i in range(3):
        cv2.imwrite(str(loose / f"x{i}.jpg"), np.full((40, 30, 3), 60 * i, np.uint8))
    pred = tmp_path / "pred"
    args = _args(
        kitti, tmp_path / "crops", "--data.predict_path", str(loose), "--model.predict_dir", str(pred)
    )
    main(["predict", "--ckpt_path", "none", *args, "--model.cam_max", "2"])
    with (pred / "probabilities.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["path"]).name for r in rows] == ["x0.jpg", "x1.jpg", "x2.jpg"]
    assert [bool(r["cam"]) for r in rows] == [True, True, False] and all(r["label"] == "" for r in rows)


def _folder(root: Path) -> Path:
    for split in ("train", "val"):
        for c, name in enumerate(("Car", "Pedestrian")):
            for i in range(2):
                path = root / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), np.full((24, 24, 3), 80 * c + 40 * i, np.uint8))
    return root


def _folder_args(root: Path, *extra: str) -> list[str]:
    return [
        "--data.data_format", "imagefolder", "--data.data_path", str(root), "--data.class_names", "[Car, Pedestrian]",
        "--data.num_workers", "0", "--data.batch_size", "2", "--data.image_size", "[16, 16]",
        "--model.network.init_args.backbone", "tiny_cnn", "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1",
        "--trainer.enable_progress_bar", "false", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def folder_fit(tmp_path_factory):
    """One fit of 4 steps on the ImageFolder set (read-only for the tests that take it): its folder, data,
    last checkpoint, the INFO lines it logged and its checkpoint callback."""
    import logging

    root = tmp_path_factory.mktemp("folder_fit")
    data = _folder(root / "data")
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(root)
            cli = main(["fit", *_folder_args(data, "--trainer.max_steps", "4")])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    last = root / "lightning_logs/driving_classification/checkpoints/last.ckpt"
    callback = cli.trainer.checkpoint_callback
    return {"root": root, "data": data, "last": last, "said": "\n".join(lines), "callback": callback}


def test_cli_bad_input_names_the_option_folder_or_row_and_writes_no_checkpoint(tmp_path, monkeypatch):
    from shared.classification.data import ClassificationDataError

    monkeypatch.chdir(tmp_path)
    root = _folder(tmp_path / "data")
    with pytest.raises(ClassificationDataError, match=r"label_fraction: must be in \(0, 1\]"):
        main(["fit", *_folder_args(root, "--data.label_fraction", "1.5")])
    (root / "train" / "Cyclist").mkdir()
    with pytest.raises(
        ClassificationDataError, match=r"class folder\(s\) \['Cyclist'\] are not in class_names"
    ):
        main(["fit", *_folder_args(root)])
    (root / "train" / "Cyclist").rmdir()
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\ndata/train/Car/0.png,Car\ndata/train/Car/1.png,Tram\n")
    csv_args = ["--data.data_format", "csv", "--data.data_path", str(labels), "--data.strict", "true"]
    with pytest.raises(ClassificationDataError, match=r"labels\.csv:3: label 'Tram' is not in class_names"):
        main(["fit", *_folder_args(root), *csv_args])
    assert not list(tmp_path.rglob("*.ckpt"))


def test_cli_predict_lists_and_counts_an_unreadable_image_and_predicts_the_others(tmp_path, monkeypatch):
    """One broken file in a user's folder used to stop predict and lose every other row."""
    monkeypatch.chdir(tmp_path)
    root = _folder(tmp_path / "data")
    loose = tmp_path / "loose"
    loose.mkdir()
    for i in range(3):
        cv2.imwrite(str(loose / f"a{i}.png"), np.zeros((20, 20, 3), np.uint8))
    (loose / "b_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    pred = tmp_path / "pred"
    args = _folder_args(root, "--data.predict_path", str(loose), "--model.predict_dir", str(pred))
    # batches of 3: the corrupt file is alone in the second batch
    with pytest.warns(
        UserWarning, match=r"1 of 4 images could not be read and have no prediction, listed in"
    ) as caught:
        main(["predict", "--ckpt_path", "none", *args, "--data.batch_size", "3"])
    # the batch of the corrupt file alone returns an empty result, not None (Lightning warned "predict returned
    # None if it was on purpose, ignore this warning...")
    assert not [w for w in caught if "returned None" in str(w.message)]
    with (pred / "probabilities.csv").open() as f:
        assert [Path(r["path"]).name for r in csv.DictReader(f)] == ["a0.png", "a1.png", "a2.png"]
    with (pred / "unreadable.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert Path(row["path"]).name == "b_corrupt.png" and "b_corrupt.png: cannot decode image" in row["error"]
    # mixed in one batch, too
    pred2 = tmp_path / "pred2"
    args = _folder_args(root, "--data.predict_path", str(loose), "--model.predict_dir", str(pred2))
    with pytest.warns(UserWarning, match=r"1 of 4 images could not be read"):
        main(["predict", "--ckpt_path", "none", *args, "--data.batch_size", "4"])
    with (pred2 / "probabilities.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 3
    # no predict_dir: nothing written, the count still right
    args = _folder_args(root, "--data.predict_path", str(loose), "--model.predict_dir", "null")
    with pytest.warns(UserWarning, match=r"1 of 4 images could not be read and have no prediction \(e\.g\."):
        main(["predict", "--ckpt_path", "none", *args, "--data.batch_size", "4"])
    # again into the first folder, the broken file gone and one named at the file system's limit: the earlier
    # run's unreadable.csv no longer stays beside the new set, and the long name's Grad-CAM is written (its
    # file name, with the writer's temporary prefix, had stopped the whole run)
    (loose / "b_corrupt.png").unlink()
    cv2.imwrite(str(loose / f"{'x' * 240}.png"), np.zeros((20, 20, 3), np.uint8))
    cv2.imwrite(str(loose / f"{'画' * 80}.png"), np.zeros((20, 20, 3), np.uint8))  # 240 bytes of UTF-8
    main(["predict", "--ckpt_path", "none", *_folder_args(root, "--data.predict_path", str(loose),
                                                           "--model.predict_dir", str(pred))])  # fmt: skip
    assert not (pred / "unreadable.csv").exists()
    with (pred / "probabilities.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and all((pred / r["cam"]).is_file() for r in rows)
    # one process: no rank in the names; each stem within 100 bytes
    assert all(re.fullmatch(r"cam/\d{5}_\d{3}_(.+)\.png", r["cam"]) for r in rows)
    assert max(len(Path(r["cam"]).stem.split("_", 2)[2].encode()) for r in rows) <= 100
    # a folder where no image decodes: an error (exit 1), and the earlier run's set is kept
    from shared.classification.data import ClassificationDataError

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    args = _folder_args(root, "--data.predict_path", str(broken), "--model.predict_dir", str(pred))
    with pytest.raises(ClassificationDataError, match=r"--data.predict_path .*broken: none of its 1 images can be read"):
        main(["predict", "--ckpt_path", "none", *args])
    kept = list(csv.DictReader((pred / "probabilities.csv").open()))
    assert len(kept) == 5 and all((pred / r["cam"]).is_file() for r in kept)
    assert not (pred / "unreadable.csv").exists()


def test_cli_predict_on_own_images_reads_no_labelled_data(folder_fit, tmp_path, monkeypatch):
    """predict --data.predict_path read the whole labelled set first: a missing data_path failed ("ImageFolder
    root not found"), and data_path null generated the synthetic KITTI set and cut its crops."""
    import domains.driving.classification.data as driving_data
    from shared.task import CheckpointMismatchError

    monkeypatch.chdir(tmp_path)
    last = folder_fit["last"]  # a fit of the ImageFolder set, in another folder
    own = tmp_path / "own"
    own.mkdir()
    for i in range(2):
        cv2.imwrite(str(own / f"o{i}.png"), np.full((20, 20, 3), 100 * i, np.uint8))
    pred = tmp_path / "pred"
    args = _folder_args(
        tmp_path / "nonexistent", "--data.predict_path", str(own), "--model.predict_dir", str(pred),
        "--ckpt_path", str(last),
    )  # fmt: skip
    main(["predict", *args])
    with (pred / "probabilities.csv").open() as f:
        assert [Path(r["path"]).name for r in csv.DictReader(f)] == ["o0.png", "o1.png"]

    def no_generating(*_):
        raise AssertionError("predict on own images generated the synthetic KITTI set")

    monkeypatch.setattr(driving_data, "default_kitti_root", no_generating)
    (pred / "probabilities.csv").unlink()
    main(["predict", *args, "--data.data_format", "kitti", "--data.data_path", "null"])
    assert (pred / "probabilities.csv").is_file() and not (tmp_path / "data/driving").exists()
    # the classes are still checked against the checkpoint's, naming both
    trained = r"trained with model.class_names = \['Car', 'Pedestrian'\]"
    with pytest.raises(CheckpointMismatchError, match=trained):
        main(["predict", *args, "--data.class_names", "[Car, Van]"])


@pytest.fixture(scope="module")
def kitti_fit(kitti, tmp_path_factory):
    """One fit of a step on the kitti crops, its backbone started from a weight file deleted after the fit (as
    on another machine): its folder, crops, weight options, checkpoint. The tests read them; one runs ``test``
    in the folder, which adds a log version there that nothing reads."""
    import torch

    from shared.classification.model import ImageClassifier

    root = tmp_path_factory.mktemp("kitti_fit")
    start = root / "start.pt"
    torch.save(ImageClassifier(4, "tiny_cnn").backbone.state_dict(), start)
    crops = root / "crops"
    weights = ("--model.pretrained_backbone", str(start))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        main(["fit", *_args(kitti, crops, *weights, "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1")])
    start.unlink()  # gone, as on another machine
    return {"root": root, "crops": crops, "weights": weights, "last": next(root.rglob("last.ckpt"))}


def test_evaluating_a_checkpoint_does_not_read_the_weight_file_training_started_from(kitti, kitti_fit, monkeypatch):
    """`predict -c transfer.yaml --ckpt_path last` read model.pretrained_backbone again, though the checkpoint
    holds every weight: moved, or run from another folder (a relative path), it failed."""
    monkeypatch.chdir(kitti_fit["root"])  # where the fit ran: --ckpt_path last finds its checkpoint
    assert not any(kitti_fit["root"].glob("start.pt"))
    crops, weights = kitti_fit["crops"], kitti_fit["weights"]
    cli = main(["test", "--ckpt_path", "last", *_args(kitti, crops, *weights, "--trainer.limit_test_batches", "1")])
    assert cli.trainer.state.finished


def test_a_checkpoint_naming_a_module_outside_the_suite_is_refused_before_importing_it(
    kitti_fit, tmp_path, monkeypatch
):
    """Lightning rebuilds a CLI-trained task through jsonargparse, which imported the checkpoint's network
    class_path (`helpers.ImageClassifier`: the helpers.py beside a downloaded checkpoint ran) before the
    suite's trust check refused it."""
    import torch

    from shared.classification.task import ClassificationTask
    from shared.task import CheckpointMismatchError

    monkeypatch.chdir(tmp_path)
    checkpoint = torch.load(kitti_fit["last"], weights_only=True)  # a CLI fit's, in another folder
    assert checkpoint["hyper_parameters"].get("_instantiator")  # rebuilt through jsonargparse
    checkpoint["hyper_parameters"]["network"]["class_path"] = "planted_module.ImageClassifier"
    torch.save(checkpoint, tmp_path / "downloaded.ckpt")
    (tmp_path / "planted_module.py").write_text("open('planted_module_ran', 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(CheckpointMismatchError, match=r"class_path 'planted_module.ImageClassifier', outside the"):
        ClassificationTask.load_checked(tmp_path / "downloaded.ckpt")
    assert not (tmp_path / "planted_module_ran").exists()
    checkpoint["hyper_parameters"]["network"] = "planted_module.ImageClassifier"  # jsonargparse's short form
    torch.save(checkpoint, tmp_path / "short.ckpt")
    with pytest.raises(CheckpointMismatchError, match=r"class_path 'planted_module.ImageClassifier', outside the"):
        ClassificationTask.load_checked(tmp_path / "short.ckpt")
    assert not (tmp_path / "planted_module_ran").exists()


def test_a_predict_dir_inside_predict_path_is_not_read_back_as_images(tmp_path, monkeypatch):
    """predict_dir inside predict_path: the second run predicted the first run's Grad-CAM overlays as photos."""
    monkeypatch.chdir(tmp_path)
    root = _folder(tmp_path / "data")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        cv2.imwrite(str(photos / f"a{i}.png"), np.zeros((20, 20, 3), np.uint8))
    args = _folder_args(root, "--data.predict_path", str(photos), "--model.predict_dir", str(photos / "out"))
    main(["predict", "--ckpt_path", "none", *args])
    assert len(list((photos / "out" / "cam").glob("*.png"))) == 3
    earlier = r"4 file\(s\) an earlier predict run wrote there .* are not read"  # 3 overlays and the CSV
    with pytest.warns(UserWarning, match=earlier) as caught:
        main(["predict", "--ckpt_path", "none", *args])
    assert not [w for w in caught if "hidden" in str(w.message)]  # its manifest is not a stray hidden file
    with (photos / "out" / "probabilities.csv").open() as f:
        assert sorted(Path(r["path"]).name for r in csv.DictReader(f)) == ["a0.png", "a1.png", "a2.png"]


def test_test_and_predict_at_another_image_size_than_the_fit_warn_naming_the_trained_size(
    folder_fit, tmp_path, monkeypatch
):
    """Fitted at 32x32, a test at the config's 64x64 scored 0.56 instead of 0.72 and said nothing: the data
    module resizes to the command's ``image_size``, not the checkpoint's."""
    monkeypatch.chdir(tmp_path)
    root, last = folder_fit["data"], str(folder_fit["last"])  # fitted at [16, 16]
    said = r"was fitted with data\.image_size \[16, 16\] \(this command: \[24, 24\]\).*--data\.image_size \[16,16\] gives"
    with pytest.warns(UserWarning, match=said):
        main(["test", *_folder_args(root, "--ckpt_path", last, "--data.image_size", "[24, 24]")])
    with pytest.warns(UserWarning, match=said):
        main(["predict", *_folder_args(root, "--ckpt_path", last, "--data.image_size", "[24, 24]")])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["validate", *_folder_args(root, "--ckpt_path", last)])
    assert not [w for w in caught if "was fitted with data.image_size" in str(w.message)]


def test_a_csv_grown_since_the_fit_warns_of_the_training_groups_its_val_split_now_holds(tmp_path, monkeypatch):
    """Rows added to a CSV move the group split's cut points: training groups of the checkpoint landed in val
    and test with the seed and fractions unchanged, and its figures were partly on training images, unsaid."""
    from shared.data import group_split

    monkeypatch.chdir(tmp_path)
    image = np.full((24, 24, 3), 80, np.uint8)
    rows = []
    for g in range(30):
        for c, name in enumerate(("Car", "Pedestrian")):
            path = tmp_path / "img" / f"g{g}_{c}.png"
            path.parent.mkdir(exist_ok=True)
            cv2.imwrite(str(path), image + 40 * c)
            rows.append(f"img/{path.name},{name},g{g}")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,group\n" + "\n".join(rows[:20]) + "\n")  # groups g0..g9
    csv_args = ["--data.data_format", "csv", "--data.data_path", str(labels), "--data.split_fractions", "[0.7,0.15,0.15]"]
    main(["fit", *_folder_args(tmp_path, *csv_args)])
    last = str(tmp_path / "lightning_logs/driving_classification/checkpoints/last.ckpt")
    with warnings.catch_warnings(record=True) as caught:  # the same CSV: nothing to say
        warnings.simplefilter("always")
        main(["test", *_folder_args(tmp_path, *csv_args, "--ckpt_path", last)])
    assert not [w for w in caught if "training split" in str(w.message)]

    labels.write_text("path,label,group\n" + "\n".join(rows) + "\n")  # g10..g29 added
    before = group_split([f"g{g}" for g in range(10)], (0.7, 0.15, 0.15), verbose=False)["train"]
    after = group_split([f"g{g}" for g in range(30)], (0.7, 0.15, 0.15), verbose=False)["val"]
    moved = sorted({f"g{i}" for i in before} & {f"g{g}" for g in after if g < 10})
    assert moved  # the case the check is for: training groups of the fit are now validation groups
    said = rf"{len(moved)} of the \d+ groups of this val split were in the checkpoint's training split \({moved[0]}"
    with pytest.warns(UserWarning, match=said):
        main(["validate", *_folder_args(tmp_path, *csv_args, "--ckpt_path", last)])


def test_a_fit_ends_naming_its_best_and_last_checkpoint(folder_fit):
    """It ended with Lightning's "`Trainer.fit` stopped" alone: the files the next command needs go unsaid."""
    callback, said, root = folder_fit["callback"], folder_fit["said"], folder_fit["root"]  # fit of 4 steps
    best = f"best checkpoint (val/f1_macro {float(callback.best_model_score):.4g}): {callback.best_model_path}"
    assert best in said and callback.best_model_path.endswith(".ckpt")
    assert f"last checkpoint (step 4): {root}/lightning_logs/driving_classification/checkpoints/last.ckpt" in said


def test_a_val_or_test_split_without_a_class_warns_naming_it():
    """A 1:9 CSV split by patient put no malignant case in val or test: macro F1 1.0, and nothing said."""
    from shared.classification.data import ClassificationDataWarning, Sample, check_split_classes

    def items(*labels):
        return [Sample(f"{i}.png", label, f"p{i}") for i, label in enumerate(labels)]

    splits = {"train": items(0, 0, 1), "val": items(0, 0), "test": items(0, 1)}
    with pytest.warns(ClassificationDataWarning) as caught:
        check_split_classes(splits, ["benign", "malignant"], "labels.csv")
    (said,) = [str(w.message) for w in caught]
    assert said.startswith("labels.csv: the val split holds no item of class(es) ['malignant']: its figures say")
    assert "the best checkpoint is chosen without them" in said
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_split_classes({**splits, "val": items(0, 1)}, ["benign", "malignant"], "labels.csv")
    # no test split, or an ImageFolder's test aliased to its val: said once, for val
    for others in ({}, {"test": splits["val"]}):
        with pytest.warns(ClassificationDataWarning) as caught:
            check_split_classes({"train": splits["train"], "val": splits["val"], **others}, ["b", "m"], "x")
        assert [str(w.message).split(":")[1] for w in caught] == [" the val split holds no item of class(es) ['m']"]
