"""What ``predict`` leaves in its folder (one folder per image, only this run's files) and what the synthetic
generator's command does with a folder it did not write."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from domains.medical.data import MedicalDataModule
from domains.medical.models import UNetSegmenter
from domains.medical.predict import MedicalPredictionWriter
from domains.medical.synthetic import main as synthetic_main
from domains.medical.task import MedicalSegmentationTask
from shared.prediction_set import PredictionSet
from tests.helpers import quiet_trainer, write_lidc

pytestmark = pytest.mark.usefixtures("one_thread")


#: every image of the hand-made sets here (patient P1's test images, four empty reader masks each)
GREY = np.full((16, 16), 80, np.uint8)


def _predict(root: Path, out: Path, num_samples: int) -> None:
    """A predict run as the CLI makes it (whose PredictionSet removes a failed run's files)."""
    torch.manual_seed(0)
    network = UNetSegmenter(channels=(8, 16))
    task = MedicalSegmentationTask(network=network, num_samples=num_samples, predict_dir=str(out))
    datamodule = MedicalDataModule(data_path=str(root), crop_size=16, batch_size=2, num_workers=0)
    trainer = quiet_trainer(callbacks=[PredictionSet()])
    trainer.predict(task, datamodule=datamodule)


def _prediction(ids: list[str], num_samples: int = 2, size: int = 4, **extra) -> dict:
    """A ``predict_step`` output for ``ids`` (all-foreground masks, probability 1)."""
    b = len(ids)
    return {
        "id": ids,
        "samples": torch.ones(b, num_samples, size, size, dtype=torch.bool),
        "mean": torch.ones(b, size, size),
        "uncertainty": torch.zeros(b, size, size),
        **extra,
    }


def _nifti_source(path: str, z: int, size: int = 4) -> dict:
    """A batch's ``source`` for one slice of a (size, size, 3) NIfTI volume at ``path``."""
    return {
        "image_path": [path], "spatial_shape": torch.tensor([[size, size, 3]]), "affine": torch.eye(4)[None],
        "slice_index": torch.tensor([z]), "resized": torch.tensor([[size, size]]),
    }  # fmt: skip


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------ one folder per image


def test_two_images_that_make_one_output_folder_are_an_error_and_leave_nothing(tmp_path):
    """``slice 000.v2.png`` and ``slice_000.v2.png`` both became ``P1/slice_000.v2``: the log said 3 image
    folders, 2 existed, the first image's outputs overwritten."""
    names = ["slice 000.v2", "slice_000.v2", "other"]
    root = write_lidc(tmp_path / "lidc", size=16, image=GREY, split="test", names=names)
    out = tmp_path / "pred"
    with pytest.raises(ValueError) as err:
        _predict(root, out, num_samples=2)
    message = str(err.value)
    assert str(out / "P1" / "slice_000.v2") in message
    assert "two images would write to this folder: 'P1/slice 000.v2' and 'P1/slice_000.v2'" in message
    assert not out.exists()  # the run's files removed, as for any failed predict


def test_the_writer_refuses_a_folder_an_earlier_image_of_the_run_wrote(tmp_path):
    """The second image never overwrites the first's files."""
    writer = MedicalPredictionWriter(str(tmp_path))
    writer.write_on_batch_end(None, None, _prediction(["P1/a b"]), None, None, 0, 0)
    before = (tmp_path / "P1" / "a_b" / "mean_prob.png").read_bytes()
    with pytest.raises(
        ValueError, match=r"P1/a_b: two images would write to this folder: 'P1/a b' and 'P1/a_b'"
    ):
        writer.write_on_batch_end(None, None, _prediction(["P1/a_b"], num_samples=3), None, None, 1, 0)
    assert (tmp_path / "P1" / "a_b" / "mean_prob.png").read_bytes() == before
    assert not (tmp_path / "P1" / "a_b" / "sample_02.png").exists()


# ------------------------------------------------------------------------------------ only this run's files


def test_predicting_again_into_a_folder_leaves_only_this_runs_files(tmp_path):
    """4 samples, then 2 into the same folder: sample_02.png and sample_03.png of the first run stayed beside
    the new ones. Files the writer does not make are left alone."""
    root = write_lidc(tmp_path / "lidc", size=16, image=GREY, split="test", names=["a", "b"])
    out = tmp_path / "pred"
    _predict(root, out, num_samples=4)
    assert _files(out / "P1" / "a") == [
        "mean_prob.png",
        *(f"sample_{s:02d}.png" for s in range(4)),
        "uncertainty.png",
    ]
    (out / "P1" / "a" / "notes.txt").write_text("mine")
    (out / "P1" / "a" / "sample_notes.png").write_bytes(b"mine")
    _predict(root, out, num_samples=2)
    assert _files(out / "P1" / "a") == [
        "mean_prob.png",
        "notes.txt",
        "sample_00.png",
        "sample_01.png",
        "sample_notes.png",
        "uncertainty.png",
    ]
    assert _files(out / "P1" / "b") == ["mean_prob.png", "sample_00.png", "sample_01.png", "uncertainty.png"]


def test_a_failed_run_leaves_the_previous_set_whole_and_a_finished_one_replaces_it(tmp_path):
    """A 2-sample run that stopped at a corrupt image had already replaced the first images' 4 samples and
    removed the rest of their files: the folder mixed two runs and looked complete. Now the previous set is
    put back whole; a finished run replaces it, and files no run wrote stay."""
    root = write_lidc(tmp_path / "lidc", size=16, image=GREY, split="test", names=["a", "b", "c"])
    out = tmp_path / "pred"
    _predict(root, out, num_samples=4)
    (out / "mine.txt").write_text("mine")

    def contents() -> dict:
        return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    previous = contents()
    assert ".predictions.json" in previous and "P1/c/sample_03.png" in previous
    good_c = (root / "test/images/P1/c.png").read_bytes()
    (root / "test/images/P1/c.png").write_bytes(b"not a png")
    with pytest.raises(Exception, match="c.png"):
        _predict(root, out, num_samples=2)
    assert contents() == previous  # hidden files counted too: no aside folder or journal left

    (root / "test/images/P1/c.png").write_bytes(good_c)
    _predict(root, out, num_samples=2)
    assert not (out / ".predictions-previous").exists()
    assert _files(out / "P1" / "c") == ["mean_prob.png", "sample_00.png", "sample_01.png", "uncertainty.png"]
    assert (out / "mine.txt").read_text() == "mine"


def test_an_unfinished_volume_removes_the_earlier_runs_whole_volume(tmp_path, monkeypatch):
    """A capped predict writes a case's slices but not its whole volume: the earlier run's whole-volume NIfTI
    files in the case folder would be read as this run's. Each NIfTI is saved under a temporary name first."""
    saved, real_save = [], nib.save
    monkeypatch.setattr(nib, "save", lambda image, path: (saved.append(Path(path).name), real_save(image, path)))
    case = tmp_path / "case_0"
    case.mkdir()
    for name in ("samples.nii.gz", "mean_prob.nii.gz", "uncertainty.nii.gz", "report.txt"):
        (case / name).write_bytes(b"earlier run")
    source = _nifti_source(str(tmp_path / "imagesTr" / "case_0.nii.gz"), 1)
    writer = MedicalPredictionWriter(str(tmp_path))
    writer.write_on_batch_end(None, None, _prediction(["case_0/z001"], source=source), None, None, 0, 0)
    assert _files(case) == ["report.txt", "z001"]
    assert nib.load(case / "z001" / "samples.nii.gz").shape == (4, 4, 1, 2)
    assert len(saved) == 3 and all(n.startswith(".") and n.endswith(".nii.gz") for n in saved), saved


# ---------------------------------------------------------------------------------- generator command line


def test_synthetic_command_refuses_a_folder_of_other_data_in_one_line(tmp_path, capsys):
    """``--root`` at a folder of other data ended in a FileExistsError traceback; now one ``error:`` line
    naming the folder and what to do, exit status 2 (as the converters), and the folder untouched."""
    foreign = tmp_path / "real"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my data")
    plain_file = tmp_path / "file.txt"
    plain_file.write_text("x")
    for root in (foreign, plain_file):
        with pytest.raises(SystemExit) as exit_:
            synthetic_main(["--root", str(root), "--n-patients", "2", "--size", "32"])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {root}: ") and err.count("\n") == 1, err
        assert "use a new or empty folder" in err
    assert _files(foreign) == ["notes.txt"]


def test_synthetic_command_says_settings_it_cannot_use_in_one_line(tmp_path, capsys):
    """--n-patients 0, --size 8 and splits summing to 1.5 ended in a ValueError traceback."""
    for bad, said in ((["--n-patients", "0"], "need n_patients>=1"), (["--size", "8"], "size>=32, got 120, 10, 8"),
                      (["--splits", "0.5", "0.5", "0.5"], "fractions must be non-negative and sum to 1")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            synthetic_main(["--root", str(tmp_path / "syn"), *bad])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and said in err and "Traceback" not in err, err
    assert not (tmp_path / "syn").exists()


def test_two_volumes_whose_names_make_one_case_folder_are_an_error(tmp_path):
    """``case 0.nii.gz`` and ``case_0.nii.gz`` both write their whole volume to ``case_0/``: with slices of
    different numbers no image folder is shared, only the case's."""
    writer = MedicalPredictionWriter(str(tmp_path))
    writer.write_on_batch_end(None, None, _prediction(["case 0/z001"], source=_nifti_source("/d/case 0.nii.gz", 1)), None, None, 0, 0)
    with pytest.raises(ValueError, match=r"case_0: two images would write to this folder: '/d/case 0.nii.gz' and"):
        writer.write_on_batch_end(
            None, None, _prediction(["case_0/z002"], source=_nifti_source("/d/case_0.nii.gz", 2)), None, None, 1, 0
        )


def test_a_writer_used_for_a_second_predict_run_starts_with_no_folder_taken(tmp_path):
    """The folders taken are this run's: the same images predicted again are not two images of one run."""
    from types import SimpleNamespace

    writer = MedicalPredictionWriter(str(tmp_path))
    trainer = SimpleNamespace(predict_loop=SimpleNamespace(return_predictions=True))
    for order in (["P1/a", "P1/b"], ["P1/b", "P1/a"]):  # the second run in another order
        writer.on_predict_start(trainer, None)
        for n, item_id in enumerate(order):
            writer.write_on_batch_end(None, None, _prediction([item_id]), None, None, n, 0)
    assert writer.written == [tmp_path / "P1" / "b", tmp_path / "P1" / "a"]


def test_a_run_of_2d_images_is_not_said_to_write_a_volumes_slices(tmp_path, caplog):
    """It logged "wrote 2 image folders (a volume's slices one each)" for two PNGs; a run of the data set's test
    split says so (it named no split)."""
    import logging

    root = write_lidc(tmp_path / "lidc", size=16, image=GREY, split="test", names=["a", "b"])
    with caplog.at_level(logging.INFO):
        _predict(root, tmp_path / "pred", num_samples=2)
    said = "wrote 2 image folders (the test split's; --data.predict_path for your own images or volumes) under"
    assert f"[MedicalPredictionWriter] {said} {tmp_path / 'pred'}" in caplog.text
