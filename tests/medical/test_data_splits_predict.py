"""What ``test`` and ``predict`` read: an empty split is an error, predict covers whole images and volumes."""

from __future__ import annotations

import json
import pickle
import re
import warnings
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import torch
from pytorch_lightning.trainer.states import TrainerFn

from domains.medical import data as D
from domains.medical.__main__ import main
from domains.medical.data import DecathlonSliceDataset, MedicalDataError, MedicalDataModule
from domains.medical.models import UNetSegmenter
from domains.medical.predict import MedicalPredictionWriter, size_multiple
from domains.medical.task import MedicalSegmentationTask
from tests.helpers import quiet_trainer
from tests.medical.test_models import TINY

pytestmark = pytest.mark.usefixtures("one_thread")

#: a scanner's affine: 0.8 mm pixels, 2.5 mm slices, an origin off zero (an identity would hide a writer that
#: ignores the source's)
AFFINE = np.array([[0.8, 0, 0, -10.0], [0, 0.8, 0, 5.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]])


def _decathlon(
    root: Path, n_cases: int, shape=(16, 11, 10), lesion_slices=(3, 4, 5, 6), affine=AFFINE
) -> Path:
    """``n_cases`` volumes (X, Y, Z; 16 px crops only pad them), the lesion (label 1, image 1, background 0)
    on ``lesion_slices``."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for c in range(n_cases):
        label = np.zeros(shape, np.uint8)
        label[2:6, 5:8, list(lesion_slices)] = 1
        name = f"case_{c}.nii.gz"
        nib.save(nib.Nifti1Image(label.astype(np.float32), affine), str(root / "imagesTr" / name))
        nib.save(nib.Nifti1Image(label, affine), str(root / "labelsTr" / name))
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    (root / "dataset.json").write_text(json.dumps({"training": training, "modality": {"0": "CT"}}))
    return root


def _pickle(path: Path, n_series: int, size=(20, 28)) -> Path:
    data = {
        f"s{s}_{k}": {
            "image": np.zeros(size),
            "masks": [np.zeros(size, np.uint8)] * 4,
            "series_uid": f"1.2.{s}",
        }
        for s in range(n_series)
        for k in range(2)
    }
    path.write_bytes(pickle.dumps(data))
    D._PICKLE_CACHE.clear()
    return path


def _echo_task(predict_dir: Path, seen: list) -> MedicalSegmentationTask:
    """A task whose network "segments" the image itself (probability = intensity), recording what it sees."""
    network = UNetSegmenter(channels=(8, 16, 32))  # size multiple 4

    def echo(images: torch.Tensor, num_samples: int) -> torch.Tensor:
        seen.append(tuple(images.shape[-2:]))
        return ((images - 0.5) * 40).expand(-1, num_samples, -1, -1)

    network.sample_logits = echo
    return MedicalSegmentationTask(network=network, num_samples=2, predict_dir=str(predict_dir))


def _predict(task, datamodule) -> None:
    trainer = quiet_trainer()
    trainer.predict(task, datamodule=datamodule)


# ----------------------------------------------------------------------------------------- empty splits


def test_an_empty_test_split_is_an_error_naming_path_counts_and_fractions(tmp_path):
    """3 Decathlon cases at (0.7, 0.15, 0.15) gave `test: 0 volumes`; test / predict ran nothing, exit 0.
    The hint keeps the other dataset_kwargs (jsonargparse replaces the whole dict)."""
    root = _decathlon(tmp_path / "msd", 3)
    kw = {"modality_index": 0}

    def datamodule():
        return MedicalDataModule("decathlon", str(root), crop_size=16, num_workers=0, dataset_kwargs=kw)

    datamodule().setup("fit")  # train and val have cases
    for stage, name in ((TrainerFn.TESTING, "test"), ("predict", "predict")):  # Lightning passes a TrainerFn
        expected = (
            re.escape(f"{root}: `{name}` needs the test split, which is empty: 3 cases split into ")
            + r"train 2, val 1, test 0 \(fractions \[0\.7, 0\.15, 0\.15\].*--data\.seed 0\); add data, or .*"
            + re.escape("--data.dataset_kwargs '{modality_index: 0, fractions: [0.3333, 0.3333, 0.3334]}'")
            # a checkpoint's test needs a fit on the new split: its test split may hold cases it trained on
            + re.escape(" and fit again with it: other fractions split the cases anew")
        )
        with pytest.raises(MedicalDataError, match=expected):
            datamodule().setup(stage)
    # the suggested dataset_kwargs work
    kw = {"modality_index": 0, "fractions": [0.3333, 0.3333, 0.3334]}
    fixed = MedicalDataModule("decathlon", str(root), crop_size=16, num_workers=0, dataset_kwargs=kw)
    fixed.setup("test")
    assert len(fixed.dataset("test")) == 5  # one case: 4 lesion slices + 1 empty


def test_an_empty_validation_split_of_a_pickle_stops_fit(tmp_path):
    path = _pickle(tmp_path / "lidc.pickle", n_series=2)
    kw = {"fractions": [0.5, 0.0, 0.5]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unpickling
        dm = MedicalDataModule("lidc_pickle", str(path), crop_size=16, num_workers=0, dataset_kwargs=kw)
        with pytest.raises(
            MedicalDataError, match=r"`fit` needs the val split.*train 1, val 0, test 1 \(frac"
        ):
            dm.setup("fit")
        one = _pickle(tmp_path / "one.pickle", n_series=1)
        with pytest.raises(MedicalDataError, match="2 non-empty splits need at least 2 series: add data"):
            MedicalDataModule("lidc_pickle", str(one), crop_size=16, num_workers=0).setup("fit")


# ------------------------------------------------------------------------------------ predict coverage


def test_decathlon_predict_covers_every_slice_and_writes_the_whole_volume(tmp_path):
    """Predict wrote the 4 lesion slices and 1 random empty one of a 10-slice volume; test keeps that."""
    root = _decathlon(tmp_path / "msd", 1)
    kw = {"fractions": [0.0, 0.0, 1.0]}
    dm = MedicalDataModule(
        "decathlon",
        str(root),
        crop_size=16,
        batch_size=4,
        num_workers=0,
        dataset_kwargs=kw,
        max_items={"test": 2},
    )
    assert len(dm.dataset("test")) == 2  # test: lesion slices + empty_ratio of empty ones, capped
    out = tmp_path / "pred"
    _predict(_echo_task(out, []), dm)
    assert len(dm.dataset("predict")) == 10
    assert sorted(p.name for p in (out / "case_0").iterdir() if p.is_dir()) == [
        f"z{z:03d}" for z in range(10)
    ]
    label = nib.load(str(root / "labelsTr" / "case_0.nii.gz")).get_fdata() > 0
    mean = nib.load(str(out / "case_0" / "mean_prob.nii.gz"))
    samples = nib.load(str(out / "case_0" / "samples.nii.gz"))
    assert mean.shape == (16, 11, 10) and samples.shape == (16, 11, 10, 2)
    np.testing.assert_array_equal(mean.get_fdata() > 0.5, label)  # every slice, empty ones included
    np.testing.assert_array_equal(np.asarray(samples.dataobj)[..., 1] > 0, label)
    for name in ("mean_prob", "samples", "uncertainty"):  # on the source's grid and place
        np.testing.assert_allclose(nib.load(str(out / "case_0" / f"{name}.nii.gz")).affine, AFFINE)
    # a capped predict leaves the volume unfinished: said, and no whole volume that looks complete
    capped = MedicalDataModule(
        "decathlon", str(root), crop_size=16, num_workers=0, dataset_kwargs=kw, max_items={"predict": 3}
    )
    with pytest.warns(UserWarning, match=r"case_0: 3 of 10 slices predicted \(max_items"):
        _predict(_echo_task(tmp_path / "capped", []), capped)
    assert not (tmp_path / "capped" / "case_0" / "mean_prob.nii.gz").exists()


def test_a_capped_predict_holds_one_volume_buffer_at_a_time(tmp_path, monkeypatch):
    """max_items spreads over every case, so no volume completes: every case's whole-volume buffer was held
    until predict ended. Slices come case by case, so a new case's slice drops the last one's buffer."""
    root = _decathlon(tmp_path / "msd", 3)
    held: list[int] = []
    write = MedicalPredictionWriter.write_on_batch_end

    def spy(self, *args, **kwargs):
        write(self, *args, **kwargs)
        held.append(len(self._volumes))

    monkeypatch.setattr(MedicalPredictionWriter, "write_on_batch_end", spy)
    kw = {"fractions": [0.0, 0.0, 1.0]}
    dm = MedicalDataModule(  # 4 of each case's 10 slices, batches straddling cases
        "decathlon", str(root), crop_size=16, batch_size=3, num_workers=0, dataset_kwargs=kw, max_items=12
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _predict(_echo_task(tmp_path / "pred", []), dm)
    assert held == [1, 1, 1, 1]
    unfinished = [str(w.message) for w in caught if "slices predicted" in str(w.message)]
    assert len(unfinished) == 3
    for c, message in enumerate(unfinished):
        assert f"case_{c}: 4 of 10 slices predicted" in message


# ------------------------------------------------------------------------------------ predict geometry


def _png_set(root: Path, images: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    for name, (image, mask) in images.items():
        for sub, arrays in (("images", {name: image}), ("gt", {f"{name}_l{r}": mask for r in range(4)})):
            folder = root / "test" / sub / "P1"
            folder.mkdir(parents=True, exist_ok=True)
            for stem, array in arrays.items():
                assert cv2.imwrite(str(folder / f"{stem}.png"), array)
    return root


def test_png_predictions_have_the_source_size_and_position(tmp_path):
    """Outputs were the 32x32 centre crop of a 45x70 image; now the whole image, padded for the network."""
    wide = np.zeros((45, 70), np.uint8)
    wide[5:12, 55:66] = 255  # off-centre, outside the 32x32 centre crop
    small = np.zeros((40, 33), np.uint8)
    small[30:38, 2:6] = 255
    root = _png_set(tmp_path / "lidc", {"a_wide": (wide, wide), "b_small": (small, small)})
    dm = MedicalDataModule(data_path=str(root), crop_size=32, batch_size=2, num_workers=0)
    seen: list = []
    out = tmp_path / "pred"
    _predict(_echo_task(out, seen), dm)
    # each image on its own, padded to the network's multiple of 4 (not to the larger image first)
    assert sorted(seen) == [(40, 36), (48, 72)]
    for name, image in (("a_wide", wide), ("b_small", small)):
        mean = cv2.imread(str(out / "P1" / name / "mean_prob.png"), cv2.IMREAD_UNCHANGED)
        sample = cv2.imread(str(out / "P1" / name / "sample_01.png"), cv2.IMREAD_UNCHANGED)
        assert mean.shape == sample.shape == image.shape, name
        np.testing.assert_array_equal(mean > 127, image > 0)
        np.testing.assert_array_equal(sample, image)


def test_an_image_predicts_the_same_alone_and_next_to_a_larger_one(monkeypatch):
    """The batch was padded to its largest image (edge replicated) and the network saw that border: the same
    40x33 image gave logits up to 1.2 apart next to a 45x70 one. The network's size multiple is found once."""
    calls = []
    monkeypatch.setattr("domains.medical.task.size_multiple", lambda n: calls.append(n) or size_multiple(n))
    torch.manual_seed(0)
    network = UNetSegmenter(**TINY["unet"])  # size multiple 2
    task = MedicalSegmentationTask(network=network, num_samples=2, predict_dir=None).eval()
    task.on_predict_start()  # as the predict loop calls it
    small, large = torch.rand(1, 40, 33), torch.rand(1, 45, 70)

    def predict(images: list) -> dict:
        batch = D.pad_collate([{"image": image, "id": str(n)} for n, image in enumerate(images)])
        return task.predict_step(batch, 0)

    alone, batched = predict([small]), predict([small, large])
    for key in ("samples", "mean", "uncertainty"):
        torch.testing.assert_close(batched[key][0, ..., :40, :33], alone[key][0], rtol=0, atol=0)
    assert calls == [network]


@pytest.mark.parametrize("model", ["prob_unet", "hpu_net"])
def test_a_scan_gets_the_same_samples_alone_and_with_batch_mates_and_other_ones_under_another_seed(model):
    """Samples drawn from the global generator in batch order: one scan's 16 Prob. U-Net samples had IoU 0.0-0.82
    between a run alone and one beside two other images (the audit's, shipped weights)."""
    from domains.medical.models import HierarchicalProbUNet, ProbabilisticUNet

    torch.manual_seed(0)
    network = {"prob_unet": ProbabilisticUNet, "hpu_net": HierarchicalProbUNet}[model](**TINY[model])
    task = MedicalSegmentationTask(network=network, num_samples=4, predict_dir=None).eval()
    scan, mates = torch.rand(1, 32, 32), [torch.rand(1, 32, 32) for _ in range(2)]

    def predict(images: list, seed: int = 0) -> dict:
        torch.manual_seed(seed)  # the run's seed (seed_everything), read when predict starts
        task.on_predict_start()
        batch = D.pad_collate([{"image": image, "id": str(n)} for n, image in enumerate(images)])
        return task.predict_step(batch, 0)

    alone, first, last = predict([scan]), predict([scan, *mates]), predict([*mates, scan])
    for key in ("samples", "mean", "uncertainty"):
        torch.testing.assert_close(first[key][0], alone[key][0], rtol=0, atol=0)
        torch.testing.assert_close(last[key][2], alone[key][0], rtol=0, atol=0)
    assert not torch.equal(predict([scan], seed=1)["mean"], alone["mean"])  # the run's seed still counts
    assert not torch.equal(first["mean"][1], first["mean"][2])  # each image its own draws


def test_pickle_predict_items_are_uncropped(tmp_path):
    path = _pickle(tmp_path / "lidc.pickle", n_series=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unpickling
        dm = MedicalDataModule(
            "lidc_pickle", str(path), crop_size=16, num_workers=0, dataset_kwargs={"fractions": [0.5, 0, 0.5]}
        )
        assert dm.dataset("test")[0]["image"].shape == (1, 16, 16)  # evaluation keeps the training crop
        assert dm.dataset("predict")[0]["image"].shape == (1, 20, 28)


# ------------------------------------------------------------------------------------------------ help


def test_seed_help_says_what_the_seed_changes(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    help_text = text[text.rindex("--data.seed SEED") :][:500]  # the entry, not the usage line
    assert "``lidc_png`` is split by its folders" in help_text and "seed_everything" in help_text


def test_a_truncated_decathlon_volume_is_named_with_the_reader_s_own_error(tmp_path):
    """MONAI wraps the reader's error in "applying transform <LoadImaged object at 0x...>": the message said
    neither what was wrong nor, for a label, which file."""
    root = _decathlon(tmp_path / "dec", 3)
    for folder in ("imagesTr", "labelsTr"):
        path = root / folder / "case_1.nii.gz"
        whole = path.read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
        with pytest.raises(MedicalDataError) as caught:
            dataset = DecathlonSliceDataset(root, "train", crop_size=16, fractions=(1.0, 0.0, 0.0))
            for i in range(len(dataset)):
                dataset[i]
        message = str(caught.value)
        assert message.startswith(f"{path}: cannot read NIfTI: truncated, or no NIfTI (ImageFileError"), (
            message
        )
        assert "applying transform" not in message
        path.write_bytes(whole)


def test_decathlon_training_reads_each_volume_once_an_epoch(tmp_path, monkeypatch):
    """Shuffled slices missed the small volume cache on almost every slice, each miss reloading, rescaling and
    resizing a whole volume: training reads the volumes a cache's worth at a time, each slice once."""
    root = _decathlon(tmp_path / "dec", n_cases=8, lesion_slices=(1, 2, 3, 4, 5, 6, 7))
    kw = {"fractions": [0.75, 0.125, 0.125], "cache_volumes": 1}
    dm = MedicalDataModule(
        "decathlon", str(root), crop_size=16, num_workers=0, batch_size=2, augment=False, dataset_kwargs=kw
    )
    dm.setup("fit")
    base = dm.dataset("train").base
    loads = []
    real_load = DecathlonSliceDataset._load
    monkeypatch.setattr(
        DecathlonSliceDataset, "_load", staticmethod(lambda *a: loads.append(a[-1]) or real_load(*a))
    )
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(0)  # as Lightning does at each training epoch
    ids = [i for batch in loader for i in batch["id"]]
    assert sorted(ids) == sorted(base.ids)  # every slice once
    assert len(loads) == 2 * base.stats["volumes"] == 12  # image and label of each of the 6 volumes, once
    loader.sampler.set_epoch(1)
    assert [i for batch in loader for i in batch["id"]] != ids  # another order each epoch


def test_volume_grouped_sampler_shuffles_within_a_group_and_counts_every_slice():
    from domains.medical.data import VolumeGroupedSampler

    sampler = VolumeGroupedSampler([0] * 5 + [1] * 5 + [2] * 5, volumes_at_once=2, seed=0)
    assert len(sampler) == 15
    orders = []
    for seed in range(4):
        torch.manual_seed(seed)
        orders.append(list(sampler))
    assert all(sorted(order) == list(range(15)) for order in orders)
    # the first group's slices come first, not in index order every time
    assert any(order[:10] != sorted(order[:10]) for order in orders)
    assert all(len({i // 5 for i in order[:10]}) == 2 for order in orders)  # two volumes at once


def test_a_decathlon_dataset_json_with_a_byte_order_mark_reads(tmp_path):
    """Refused as invalid JSON at line 1 (a Windows editor's save), as a COCO JSON was."""
    root = _decathlon(tmp_path / "dec", n_cases=3)
    meta = root / "dataset.json"
    meta.write_bytes(b"\xef\xbb\xbf" + meta.read_bytes())
    assert DecathlonSliceDataset(root, "train", crop_size=16, fractions=[1.0, 0.0, 0.0]).stats["volumes"] == 3


def test_a_checkpoints_training_patients_found_in_the_evaluated_split_are_warned_of(tmp_path):
    """The data module's checkpoint state holds digests of the training patients; a validate on data where one
    of them moved into val (folders rearranged, a pickle regrown since the fit) says which."""
    from types import SimpleNamespace

    from pytorch_lightning.trainer.states import TrainerFn

    from domains.medical.data import MedicalDataModule
    from tests.helpers import write_lidc

    def layout(root: Path, patients: dict[str, str]) -> Path:
        for split, patient in patients.items():
            write_lidc(root / "tmp", split=split, size=16)
            for kind in ("images", "gt"):
                (root / split / kind).mkdir(parents=True, exist_ok=True)
                (root / "tmp" / split / kind / "P1").rename(root / split / kind / patient)
        return root

    fitted = MedicalDataModule("lidc_png", str(layout(tmp_path / "a", {"train": "P1", "val": "P2", "test": "P3"})))
    fitted.setup("fit")
    state = fitted.state_dict()
    assert len(state["train_group_digests"]) == 1  # P1

    root = tmp_path / "a"
    for kind in ("images", "gt"):  # P1 and P2 trade places, the folders rearranged since the fit
        (root / "train" / kind / "P1").rename(root / "P1")
        (root / "val" / kind / "P2").rename(root / "train" / kind / "P2")
        (root / "P1").rename(root / "val" / kind / "P1")
    moved = MedicalDataModule("lidc_png", str(root))
    moved.setup("validate")
    moved.trainer = SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.VALIDATING))
    with pytest.warns(UserWarning, match=r"1 of the 1 patients of this val split were in the checkpoint's training split \(P1\)"):
        moved.load_state_dict(state)
    other = MedicalDataModule("lidc_png", str(layout(tmp_path / "b", {"train": "P2", "val": "P1", "test": "P3"})))
    other.setup("validate")
    other.trainer = moved.trainer
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        other.load_state_dict(state)  # another data set: its ids say nothing of this one (the CLI names it)
