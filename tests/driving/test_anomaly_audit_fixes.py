"""Road anomalies with one's own data (audit): road class ids other than the synthetic set's, 1-bit and upper-case
masks, truncated / unread / unlabelled / EXIF-rotated images, the trained input size, tiny images, the
benchmark's component size filters, two masks for one image, weights without an outlier-exposure step."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from domains.driving.anomaly.data import AnomalyDataset, SegmentationDataModule, SemanticSegDataset
from domains.driving.anomaly.outliers import paste_outliers
from domains.driving.anomaly.scores import AnomalyScoreError, smooth_score_map
from domains.driving.common import read_label_map
from domains.driving.formats import LabelFormatError, LabelWarning
from tests.driving.anomaly.test_task_test_epoch import _batches, _stub_features
from tests.driving.layouts import H, W, write_kitti, write_smiyc
from tests.helpers import anomaly_task, quiet_trainer, write_image

TINY = {"encoder_kwargs": {"channels": [4, 8, 16]}}


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# ------------------------------------------------------------------------------------ 1: road class ids


def test_outliers_stand_on_the_road_ids_given_not_on_the_bonnet():
    """Cityscapes labelIds: road = 7, 1 = ego vehicle (the bonnet), where the synthetic ids pasted them."""
    mask = np.full((64, 192), 23, np.int64)  # sky
    mask[32:56] = 7  # road
    mask[56:] = 1  # ego vehicle
    image = np.full((64, 192, 3), 0.5, np.float32)
    rng = np.random.default_rng(0)
    for _ in range(20):
        *_, objects = paste_outliers(image, mask, rng, road_prob=1.0, shadow_prob=0.0, road_ids=(7,))
        assert objects
        for obj in objects:
            _, x0, y1, x1 = obj["box"]
            assert (mask[y1 - 1, x0:x1] == 7).any(), obj  # its bottom row stands on the road


def test_the_image_score_reads_the_road_of_the_task_road_ids_which_checkpoints_keep(monkeypatch):
    task = anomaly_task(**TINY, num_classes=34, road_ids=[7], oe_weight=0.0)
    pred = np.full((8, 8), 23)
    pred[4:] = 7
    score = np.zeros((8, 8))
    score[:4] = 1.0  # high everywhere off the road
    assert task._image_score(score, task._road(pred, (8, 8))) == 0.0  # only the road (7) is read
    assert task.hparams["road_ids"] == [7] and anomaly_task(**TINY, oe_weight=0.0).road_ids == (0, 1)
    with pytest.raises(ValueError, match=r"--model.road_ids"):
        anomaly_task(**TINY, road_ids=[40], oe_weight=0.0)
    # outlier exposure pastes onto that road
    from domains.driving.anomaly import task as task_module

    pasted_on = []
    monkeypatch.setattr(task_module, "paste_outliers_batch",
                        lambda images, masks, rng, **kw: pasted_on.append(kw["road_ids"]) or (images, masks, 0))  # fmt: skip
    oe = anomaly_task(**TINY, num_classes=34, road_ids=[7])
    _quiet(oe.training_step, {"image": torch.rand(1, 3, 32, 32), "mask": torch.full((1, 32, 32), 7)}, 0)
    assert pasted_on == [(7,)]
    # the demo's frame score reads the same road
    from apps import demo_models as dm
    from domains.driving.anomaly import predict

    seen = []
    real = predict.road_region
    monkeypatch.setattr(predict, "road_region", lambda p, ids=(0, 1): seen.append(tuple(ids)) or real(p, ids))
    task.score_smoothing = 0.0
    dm.anomaly_analysis(task, np.zeros((32, 64, 3), np.uint8), "msp")
    assert seen == [(7,)]


def test_the_onnx_sidecar_names_the_road_ids_its_image_score_reads(tmp_path):
    from domains.driving.anomaly.export import export_anomaly

    task = anomaly_task(**TINY, num_classes=34, road_ids=[7], oe_weight=0.0)
    assert export_anomaly(task, tmp_path, size=(32, 64), score="msp")["image_score"]["road_ids"] == [7]


def test_ids_past_the_classes_say_labelids_or_trainids_and_road_ids(tmp_path):
    root = write_kitti(tmp_path / "k", n=2)
    cv2.imwrite(str(root / "training" / "semantic" / "000000.png"), np.full((H, W), 23, np.uint8))
    with pytest.raises(LabelFormatError, match=r"Cityscapes labelIds \(--data.cityscapes_ids labelIds .*--model.road_ids"):
        SemanticSegDataset(root, ["000000"], num_classes=12)[0]


# -------------------------------------------------------------------- 2, 8, 12: reading the masks


def test_a_one_bit_png_mask_reads_as_its_0_1_values(tmp_path):
    root = write_smiyc(tmp_path / "a", n=1)
    path = root / "labels_masks" / "frame0.png"
    truth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) == 1
    Image.fromarray(truth).save(path)  # mode "1"
    assert np.array_equal(read_label_map(path), truth.astype(np.uint8))
    assert int((AnomalyDataset(root)[0]["label"] == 1).sum()) == int(truth.sum()) == 200


def test_upper_case_png_masks_and_semantic_maps_are_found(tmp_path):
    root = write_smiyc(tmp_path / "a", n=2)
    (root / "labels_masks" / "frame1.png").rename(root / "labels_masks" / "frame1_labels_semantic.PNG")
    assert [name for *_, name in AnomalyDataset(root).items] == ["frame0", "frame1"]
    kitti = write_kitti(tmp_path / "k", n=2)
    (kitti / "training/semantic/000001.png").rename(kitti / "training/semantic/000001.PNG")
    assert SemanticSegDataset(kitti, ["000001"])[0]["mask"][10, 10] == 1


def test_two_masks_for_one_image_are_an_error_naming_both(tmp_path):
    root = write_smiyc(tmp_path / "a", n=1)
    cv2.imwrite(str(root / "labels_masks" / "frame0_labels_semantic.png"), np.zeros((H, W), np.uint8))
    with pytest.raises(LabelFormatError, match=r"two label masks, frame0\.png and frame0_labels_semantic\.png"):
        AnomalyDataset(root)


# ------------------------------------------------------------- 3, 4, 9: images left out, counted


def test_a_truncated_image_is_left_out_and_named_or_an_error_in_strict(tmp_path):
    root = write_smiyc(tmp_path / "a", n=3)
    path = root / "images" / "frame1.jpg"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.warns(LabelWarning, match=r"dropped undecodable: 1 .*frame1\.jpg: cannot decode image"):
        assert [name for *_, name in AnomalyDataset(root).items] == ["frame0", "frame2"]
    with pytest.raises(LabelFormatError, match=r"frame1\.jpg"):
        AnomalyDataset(root, strict=True)


def test_test_scores_the_labelled_images_and_counts_the_unlabelled_ones(tmp_path):
    """SMIYC's download: labelled validation_* images beside unlabelled benchmark images."""
    root = write_smiyc(tmp_path / "a", n=2)
    write_image(root / "images" / "benchmark_0.jpg", width=W, height=H)
    with pytest.raises(LabelFormatError, match="require_labels=False"):
        AnomalyDataset(root)
    dm = SegmentationDataModule(anomaly_path=str(root), num_workers=0)
    with pytest.warns(LabelWarning, match=r"dropped 1 image\(s\) without a label mask.*benchmark_0\.jpg"):
        dm.setup("test")
    assert len(dm.datasets["test"]) == 2
    with pytest.raises(LabelFormatError, match="benchmark_0.jpg"):
        SegmentationDataModule(anomaly_path=str(root), num_workers=0, strict=True).setup("test")


def test_files_not_read_are_named_in_the_anomaly_set_and_the_training_set(tmp_path):
    root = write_smiyc(tmp_path / "a", n=3)
    image = cv2.imread(str(root / "images" / "frame0.jpg"))
    (root / "images" / "frame0.jpg").unlink()
    cv2.imwrite(str(root / "images" / "frame0.tif"), image)
    (root / "images" / "city1").mkdir()
    (root / "images" / "frame2.jpg").rename(root / "images" / "city1" / "frame2.jpg")
    with pytest.warns(LabelWarning, match=r"dropped not_read: 2 .*city1/frame2\.jpg: not read.*frame0\.tif: not read"):
        assert [name for *_, name in AnomalyDataset(root).items] == ["frame1"]
    with pytest.raises(LabelFormatError, match=r"city1/frame2\.jpg: not read .*strict mode"):  # the first
        AnomalyDataset(root, strict=True)

    kitti = write_kitti(tmp_path / "k", n=8)
    p = kitti / "training" / "image_2" / "000003.png"
    cv2.imwrite(str(p.with_suffix(".tif")), cv2.imread(str(p)))
    p.unlink()
    dm = SegmentationDataModule(data_path=str(kitti), num_workers=0)
    with pytest.warns(LabelWarning, match=r"dropped not_read: 1 .*000003\.tif: not an image this reader takes"):
        dm.setup("fit")


# ---------------------------------------------------------------------------------- 10: EXIF orientation


@pytest.mark.parametrize("size", [(48, 64), (64, 64)], ids=["wide", "square"])
def test_an_exif_rotated_jpeg_is_read_as_stored_like_its_mask(tmp_path, size):
    h, w = size
    root = tmp_path / "a"
    (root / "images").mkdir(parents=True)
    (root / "labels_masks").mkdir()
    stored = np.full((h, w, 3), 100, np.uint8)
    stored[5:20, 30:60] = (255, 200, 0)  # a yellow object, top right as stored
    label = np.zeros((h, w), np.uint8)
    label[5:20, 30:60] = 1
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    Image.fromarray(stored).save(root / "images" / "sq.jpg", exif=exif, quality=95)
    cv2.imwrite(str(root / "labels_masks" / "sq.png"), label)
    item = AnomalyDataset(root)[0]
    yellow = (item["image"][0] > 0.8) & (item["image"][2] < 0.3)
    assert int(yellow.sum()) > 0.7 * 15 * 30 and float((item["label"][yellow] == 1).float().mean()) > 0.95
    # predict draws its overlay on the image read the same way
    from domains.driving.anomaly.predict import _original_rgb

    rgb = _original_rgb(item["image"], (h, w), (h, w), item["image_path"], item["as_stored"])
    assert rgb[10, 45, 0] > 200 and rgb[10, 45, 2] < 80


# ------------------------------------------------------------------------------ 5: the trained input size


def test_testing_at_another_size_than_the_checkpoints_says_both():
    """The CLI warns of it before validate / test / predict (``SplitLoaders.INPUT_SETTINGS``)."""
    from domains.driving.anomaly.data import SegmentationDataModule

    module = SegmentationDataModule(image_size=(32, 96))
    assert module.other_input_than({"image_size": [64, 192]}) == "data.image_size [64, 192] (this command: (32, 96))"
    assert module.other_input_than({"image_size": [32, 96]}) is None
    assert SegmentationDataModule().other_input_than({"image_size": [64, 192]}) == (
        "data.image_size [64, 192] (this command: None)"  # its own size: another scale
    )


# ------------------------------------------------------------------------------------ 6: tiny images


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (2, 400)])
def test_score_smoothing_takes_maps_smaller_than_its_kernel(shape):
    flat = smooth_score_map(torch.full((1, *shape), 0.25), 1.0)
    assert flat.shape == (1, *shape) and torch.allclose(flat, torch.full_like(flat, 0.25))
    task = anomaly_task(**TINY, oe_weight=0.0, score_smoothing=1.0)
    assert task.analyze(torch.rand(1, 3, *shape))["score"].shape == (1, *shape)


# ------------------------------------------------------------------------ 11: component size filters


def test_component_size_filters_reach_the_component_metrics(monkeypatch):
    """The two anomalies of the stub test set hold 16 px each: a filter of 17 leaves no component."""
    found = []
    for sizes in ({}, {"component_min_gt_size": 17}, {"component_min_pred_size": 17}):
        task = anomaly_task(**TINY, oe_weight=0.0, score="max_logit", test_scores=["max_logit"], **sizes)
        monkeypatch.setattr(task.model, "features", _stub_features)
        _quiet(quiet_trainer().test, task, DataLoader(_batches(), batch_size=None), verbose=False)
        comp = task.test_results["component"]
        found.append((comp["num_gt_components"], comp["num_pred_components"]))
    assert found[0] == (2, 2) and found[1][0] == 0 and found[2][1] == 0


# ------------------------------------------------------------------ 12: weights without an OE step


def test_weights_without_an_outlier_exposure_step_suggest_a_plain_score():
    task = anomaly_task(**TINY, oe_weight=0.5, oe_start_epoch=5)  # outlier_prob, never trained
    assert not bool(task.model.oe_trained)
    with pytest.raises(AnomalyScoreError, match=r"oe_start_epoch 5.*--model.score msp"):
        task.on_test_epoch_start()
    task.score = "msp"  # the selected score works; outlier_prob is left out of the tested ones, said
    with pytest.warns(UserWarning, match="not testing 'outlier_prob'"):
        task.on_test_epoch_start()
    assert "outlier_prob" not in task._test_names


def test_segmentation_datamodule_strict_refuses_a_truncated_test_image(tmp_path):
    from domains.driving.anomaly.data import SegmentationDataModule
    from domains.driving.formats import LabelFormatError
    from tests.driving.layouts import write_smiyc
    root = write_smiyc(tmp_path / "a", n=2)
    path = root / "images" / "frame1.jpg"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(LabelFormatError, match=r"frame1\.jpg"):
        SegmentationDataModule(anomaly_path=str(root), num_workers=0, strict=True).setup("test")


def test_write_predictions_draws_on_the_stored_pixels(tmp_path):
    from PIL import Image

    from domains.driving.anomaly.predict import write_predictions
    stored = np.full((48, 64, 3), 100, np.uint8)
    stored[5:20, 30:60] = (255, 200, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "sq.jpg", exif=exif, quality=95)
    write_predictions(tmp_path / "out", ["sq"], torch.zeros(1, 3, 48, 64), torch.zeros(1, 48, 64),
                                alpha=0.0, sizes=[(48, 64)], image_paths=[str(tmp_path / "sq.jpg")], as_stored=[True])
    overlay = cv2.imread(str(tmp_path / "out" / "sq_overlay.png"))[..., ::-1]
    assert overlay.shape[:2] == (48, 64) and overlay[10, 45, 0] > 200 and overlay[10, 45, 2] < 80


def test_predict_with_an_untrained_outlier_head_names_a_plain_score():
    from domains.driving.anomaly.scores import AnomalyScoreError
    from tests.helpers import anomaly_task
    task = anomaly_task(encoder_kwargs={"channels": [4, 8, 16]}, oe_weight=0.5, oe_start_epoch=5)
    with pytest.raises(AnomalyScoreError, match=r"--model.score msp"):
        task.on_predict_start()


def test_road_id_equal_to_num_classes_is_refused():
    from tests.helpers import anomaly_task
    with pytest.raises(ValueError, match=r"--model.road_ids"):
        anomaly_task(encoder_kwargs={"channels": [4, 8, 16]}, num_classes=34, road_ids=[34], oe_weight=0.0)
    assert anomaly_task(encoder_kwargs={"channels": [4, 8, 16]}, num_classes=34, road_ids=[33], oe_weight=0.0).road_ids == (33,)


def test_a_macs_forks_in_images_and_masks_are_counted_once_in_one_warning(tmp_path):
    """images/ and labels_masks/ are each listed twice (the images, then the files not read): their hidden
    files were counted twice, in four warnings."""
    from shared.files import HiddenFilesWarning

    root = write_smiyc(tmp_path / "smiyc")
    for folder in ("images", "labels_masks"):
        (root / folder / "._img0.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        AnomalyDataset(root)
    hidden = [str(w.message) for w in caught if w.category is HiddenFilesWarning]
    assert len(hidden) == 1 and hidden[0].startswith(
        f"{root}: 2 hidden files left out (images/._img0.png, labels_masks/._img0.png)"
    ), hidden
