"""Edge cases of the rules changed in session 24, each found by planting a bug the other tests let through:
hidden-file counting, Unicode class names, the training-end message's mode check, zip and NIfTI uploads,
anisotropic resizing, DontCare crowd regions, reader-mask warnings and the generators' start lines."""

import io
import logging
import types
import unicodedata
import warnings
import zipfile

import cv2
import numpy as np
import pytest
import torch


def test_a_counting_block_left_by_an_error_says_nothing(tmp_path):
    from shared.files import counting_hidden_files, visible_files
    (tmp_path / "._a.png").write_bytes(b"x")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError), counting_hidden_files(tmp_path):
            visible_files(tmp_path, (".png",))
            raise RuntimeError("reader failed")
    assert caught == []


def test_class_names_typed_decomposed_match_a_composed_folder(tmp_path):
    from shared.classification.data import read_image_folder
    from tests.helpers import write_image
    nfc, nfd = "grün", unicodedata.normalize("NFD", "grün")
    for split in ("train", "val"):
        for name in ("red", nfc):
            write_image(tmp_path / split / name / "0.png", 8, 8)
    splits = read_image_folder(tmp_path, ["red", nfd])
    assert sorted(s.label for s in splits["train"]) == [0, 1]


def test_quiet_library_notes_adds_its_filter_once():
    from shared.cli_help import _DropLightningAdvert, quiet_library_notes
    quiet_library_notes(); quiet_library_notes()
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    assert sum(isinstance(f, _DropLightningAdvert) for f in logger.filters) == 1


def _trainer(monitor="val/f1"):
    ckpt = types.SimpleNamespace(monitor=monitor, mode="max", best_model_score=None, best_model_path="",
                                 last_model_path="")
    return types.SimpleNamespace(checkpoint_callback=ckpt, logger=None, is_global_zero=True)


def test_the_mode_check_is_for_fit_only():
    """validate / test / predict send nothing, so a monitor without a mode is no error there (nor muted); fit
    still refuses it."""
    from shared.notify import NotifyConfigError, NotifyWhenDone
    callback = NotifyWhenDone(webhook_url="http://127.0.0.1:9/x", monitor="val/acc")
    for stage in ("validate", "test", "predict"):
        callback.setup(_trainer(), None, stage)
        assert not callback._sent, stage
    refused = r"monitor 'val/acc' is not the checkpoint callback's \('val/f1'\)"
    with pytest.raises(NotifyConfigError, match=refused):
        callback.setup(_trainer(), None, "fit")


def test_no_checkpoint_callback_still_needs_a_mode():
    from shared.notify import NotifyConfigError, NotifyWhenDone
    trainer = types.SimpleNamespace(checkpoint_callback=None, logger=None, is_global_zero=True)
    with pytest.raises(NotifyConfigError):
        NotifyWhenDone(webhook_url="http://127.0.0.1:9/x", monitor="val/acc").setup(trainer, None, "fit")


def test_val_loss_epoch_is_a_loss():
    """A loss beside the checkpoint's 'max' monitor needs no mode: its best is its minimum."""
    from shared.notify import NotifyWhenDone
    callback = NotifyWhenDone(webhook_url="http://127.0.0.1:9/x", monitor="val/loss_epoch")
    trainer = _trainer()
    callback.setup(trainer, None, "fit")
    assert callback._monitor_and_mode(trainer) == ("val/loss_epoch", "min")


def _png(value):
    ok, buf = cv2.imencode(".png", np.full((16, 16, 3), value, np.uint8))
    assert ok
    return buf.tobytes()


def test_files_under_macosx_are_no_frames_even_without_a_dot():
    import apps.uploads as up
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as z:
        for i in range(3):
            z.writestr(f"f{i}.png", _png(10 * i))
        z.writestr("__MACOSX/f9.png", _png(200))
    clip = up._zip_clip(data.getvalue(), "c.zip", 100, 1000)
    assert len(clip.frames) == 3
    assert any(n.startswith("1 hidden file left out") for n in clip.notes)


@pytest.mark.parametrize("affine", [np.eye(4), np.diag([-0.5, -0.5, 2.5, 1.0])], ids=["RAS", "LPS"])
def test_a_2d_nifti_is_shown_as_the_same_slice_stored_3d(affine):
    """A 2D NIfTI's affine was not applied: a DICOM-derived (LPS) slice showed posterior up, a RAS one with the
    patient's right on the right, where the same slice stored (X, Y, 1) showed as the DICOM does."""
    import nibabel as nib

    import apps.uploads as up
    img = np.zeros((20, 24), np.float32)  # X, Y
    img[0, 23] = 10
    flat = up.decode_medical(nib.Nifti1Image(img, affine).to_bytes(), "a.nii")
    thick = up.decode_medical(nib.Nifti1Image(img[:, :, None], affine).to_bytes(), "b.nii")
    assert np.array_equal(flat.data, thick.data) and flat.data.shape == (1, 1, 24, 20)
    assert flat.data.max() == 10 and flat.data[0, 0, 0, 0] != 10  # x = 0 is not kept on the left


def test_anisotropic_resize_averages_each_shrinking_axis():
    import apps.uploads as up
    rows = np.zeros((512, 512), np.float32); rows[::2] = 1.0  # row stripes: a shrinking axis averages to 0.5
    out, _ = up.fit_to_model(rows, 128, "resize", spacing=(0.5, 1.5))
    assert np.allclose(out, 0.5, atol=0.05), (out.min(), out.max())
    cols = np.zeros((512, 512), np.float32); cols[:, ::2] = 1.0
    out, _ = up.fit_to_model(cols, 128, "resize", spacing=(0.5, 1.5))
    assert np.allclose(out, 0.5, atol=0.05), (out.min(), out.max())


def test_dota_counts_hidden_frames_once(tmp_path):
    from domains.driving.accident.readers import read_dota
    from shared.files import HiddenFilesWarning
    from tests.driving.accident.layouts import write_dota_clip
    for vid in ("a", "b"):
        write_dota_clip(tmp_path, vid, n_frames=10)
        (tmp_path / "frames" / vid / "images" / "._000000.jpg").write_bytes(b"\x00\x05\x16\x07")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_dota(tmp_path, min_frames=1)
    hidden = [str(w.message) for w in caught if w.category is HiddenFilesWarning]
    assert len(hidden) == 1 and ": 2 hidden files left out" in hidden[0], hidden


def test_segmentation_image_2_hidden_files_counted_once(tmp_path):
    from domains.driving.anomaly.data import SegmentationDataModule
    from shared.files import HiddenFilesWarning
    from tests.driving.layouts import write_kitti
    root = write_kitti(tmp_path / "kitti", n=12)
    (root / "training" / "image_2" / "._000000.png").write_bytes(b"\x00\x05\x16\x07")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SegmentationDataModule(data_path=str(root), num_workers=0).setup("fit")
    hidden = [str(w.message) for w in caught if w.category is HiddenFilesWarning]
    assert len(hidden) == 1 and "1 hidden file left out" in hidden[0], hidden


def test_a_label_broken_after_the_listing_names_the_label(tmp_path):
    from domains.medical.data import DecathlonSliceDataset, MedicalDataError
    from tests.medical.test_data_splits_predict import _decathlon
    root = _decathlon(tmp_path / "dec", 3)
    dataset = DecathlonSliceDataset(root, "train", crop_size=16, fractions=(1.0, 0.0, 0.0))
    for path in (root / "labelsTr").glob("*.nii.gz"):
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(MedicalDataError, match=r"labelsTr/case_\d\.nii\.gz: cannot read NIfTI"):
        for i in range(len(dataset)):
            dataset[i]


def test_a_macs_fork_of_a_reader_mask_is_no_orphan(tmp_path):
    from domains.medical.data import LIDCPngDataset, MedicalDataWarning
    from tests.helpers import write_lidc
    root = write_lidc(tmp_path)
    (root / "train" / "gt" / "P1" / "._s0_l0.png").write_bytes(b"\x00\x05\x16\x07")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LIDCPngDataset(root, "train", crop_size=32)
    assert not [w for w in caught if w.category is MedicalDataWarning and "belong to no image" in str(w.message)]


def test_a_mask_of_another_patients_image_name_is_an_orphan(tmp_path):
    from domains.medical.data import LIDCPngDataset, MedicalDataWarning
    from tests.helpers import write_lidc
    root = write_lidc(tmp_path)
    (root / "train" / "gt" / "P2").mkdir()
    assert cv2.imwrite(str(root / "train" / "gt" / "P2" / "s0_l0.png"), np.zeros((32, 32), np.uint8))
    with pytest.warns(MedicalDataWarning, match="belong to no image"):
        LIDCPngDataset(root, "train", crop_size=32)


def test_a_split_of_fraction_zero_is_not_warned(tmp_path):
    """A test share of 0 asks for no test folder: nothing to warn of; the other splits get every patient."""
    from domains.medical.synthetic import generate_lidc_png
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        root = generate_lidc_png(
            tmp_path / "l", n_patients=3, images_per_patient=1, size=64, splits=(0.7, 0.3, 0.0)
        )
    patients = {split: len(list((root / split / "images").iterdir())) for split in ("train", "val")}
    assert patients == {"train": 2, "val": 1} and not (root / "test").exists()


def test_the_clip_estimate_divides_by_workers_and_says_minutes(tmp_path, monkeypatch, caplog):
    import domains.driving.synthetic.clips as C
    class Stop(Exception): pass
    def stop(job): raise Stop
    monkeypatch.setattr(C, "_write_clip", stop)
    with caplog.at_level(logging.INFO), pytest.raises(Stop):
        C.generate_clips(tmp_path / "c", n_clips=40, seconds=10.0, fps=10, size=(64, 128), workers=1)
    assert "about 3 min on 1 core(s)" in caplog.text  # 40 x 100 frames x 0.05 s = 200 s
    caplog.clear()
    monkeypatch.setattr(C, "ProcessPoolExecutor", lambda *a, **k: (_ for _ in ()).throw(Stop()))
    with caplog.at_level(logging.INFO), pytest.raises(Stop):
        C.generate_clips(tmp_path / "d", n_clips=2, seconds=1.0, fps=10, size=(64, 128), workers=2)
    assert "about 0 s on 2 core(s)" in caplog.text or "about 1 s on 2 core(s)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO), pytest.raises(Stop):
        C.generate_clips(tmp_path / "e", n_clips=40, seconds=10.0, fps=10, size=(64, 128), workers=2)
    assert "about 2 min on 2 core(s)" in caplog.text


def test_kitti_and_anomaly_generators_say_their_start(tmp_path, caplog):
    from domains.driving.synthetic.writers import generate_anomaly, generate_kitti
    with caplog.at_level(logging.INFO):
        generate_kitti(tmp_path / "k", n_images=2, size=(320, 96))
        generate_anomaly(tmp_path / "a", n_images=2, size=(320, 96))
    assert f"synthetic KITTI: rendering 2 images at {tmp_path / 'k'}, once" in caplog.text
    assert f"synthetic road anomalies: rendering 2 images at {tmp_path / 'a'}, once" in caplog.text


def test_every_region_is_a_crowd_of_every_class_and_crowds_stay():
    from domains.driving.detection.metrics import with_crowd_regions
    target = {"boxes": torch.tensor([[0.0, 0, 5, 5]]), "labels": torch.tensor([1]), "iscrowd": torch.tensor([1])}
    regions = torch.tensor([[10.0, 10, 20, 20], [30.0, 30, 40, 40]])
    out = with_crowd_regions(target, regions, 2)
    pairs = {(int(l), tuple(b.tolist())) for l, b, c in zip(out["labels"][1:], out["boxes"][1:], out["iscrowd"][1:])}
    assert pairs == {(c, tuple(r.tolist())) for c in range(2) for r in regions}
    assert out["iscrowd"].tolist() == [1] + [1] * 4


def test_small_objects_stay_crowd_beside_dontcare():
    from domains.driving.instances.data import mask_boxes
    from domains.driving.instances.metrics import InstanceMetrics
    def m(r0, r1, c0, c1):
        x = torch.zeros(60, 60, dtype=torch.bool); x[r0:r1, c0:c1] = True; return x
    big, small = m(0, 30, 0, 20), m(40, 45, 40, 45)  # 30 px tall, 5 px tall
    masks = torch.stack([big, small])
    target = {"boxes": mask_boxes(masks.byte()), "labels": torch.tensor([0, 0]), "masks": masks.byte(),
              "ignore_mask": m(0, 5, 50, 60)}
    pred = {"boxes": mask_boxes(big[None].byte()).float(), "scores": torch.tensor([0.9]),
            "labels": torch.tensor([0]), "masks": big[None]}
    metric = InstanceMetrics(["Car"], min_height=10)
    metric.update([pred], [target])
    values = metric.compute("val")
    assert values["val/mask_h10_map50"] == pytest.approx(1.0), values


def test_diagonal_dontcare_pixels_are_one_region():
    from domains.driving.instances.metrics import dontcare_regions
    ignore = torch.zeros(20, 20, dtype=torch.bool)
    ignore[0:10, 0:10] = True; ignore[10:20, 10:20] = True  # touching at a corner: 8-connected
    assert len(dontcare_regions(ignore)) == 1


def test_a_pedestrian_false_alarm_in_dontcare_is_ignored_through_the_task(monkeypatch):
    from tests.driving.test_detection import _kitti_through_the_task
    def ped(boxes, scores=None, **extra):
        boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        out = {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64), **extra}
        if scores is not None:
            out["scores"] = torch.tensor(scores, dtype=torch.float32)
        return out
    region = torch.tensor([[70.0, 0, 128, 64]])
    person = [[10, 10, 30, 50]]
    images = [(ped(person, ignore_boxes=region), ped([*person, [80, 10, 100, 50]], scores=[0.5 + i / 200, 0.99]))
              for i in range(20)]
    values = _kitti_through_the_task(monkeypatch, images)
    assert values["val/map50"] == pytest.approx(1.0), values


def test_write_image_raises_naming_the_file_and_writes_rgb_as_rgb(tmp_path):
    """cv2.imwrite returns False and writes nothing (an unwritable folder, a full disk): nine copies of this
    check lived in the domains, now one."""
    import cv2

    from shared.images import write_image

    with pytest.raises(OSError, match=r"missing/x\.png: cannot write the overlay"):
        write_image(tmp_path / "missing" / "x.png", np.zeros((4, 4), np.uint8), what="overlay")
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 200  # red
    write_image(tmp_path / "red.png", rgb, rgb=True)
    assert cv2.imread(str(tmp_path / "red.png"))[0, 0].tolist() == [0, 0, 200]  # BGR on disk: red


def test_written_whole_renames_only_a_finished_file(tmp_path):
    """predict wrote its maps, overlays and label files under their final names: a run stopped mid-write left
    a truncated file there."""
    from shared.files import written_whole

    target = tmp_path / "x.txt"
    with pytest.raises(RuntimeError), written_whole(target) as tmp:
        tmp.write_text("half")
        assert not target.exists() and tmp.suffix == ".txt"
        raise RuntimeError("stopped")
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary file
    with written_whole(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and list(tmp_path.iterdir()) == [target]
    # nibabel chooses the format by the whole suffix: the temporary file of a .nii.gz ends in .nii.gz
    import nibabel as nib
    import numpy as np

    with written_whole(tmp_path / "mean_prob.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz")
        nib.save(nib.Nifti1Image(np.zeros((2, 2, 1), np.float32), np.eye(4)), tmp)
    assert nib.load(tmp_path / "mean_prob.nii.gz").shape == (2, 2, 1)
