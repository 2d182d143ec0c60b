"""Lesion-present classification: patches labelled by the readers' majority, and the CLI end to end."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from domains.medical.classification.__main__ import main
from domains.medical.classification.data import write_lesion_crops
from shared.task import CheckpointMismatchError
from tests.helpers import tiny_classification_args

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIG = Path(__file__).resolve().parents[2] / "domains/medical/classification/configs/quick.yaml"


def test_patches_are_labelled_by_the_majority_of_readers_and_keep_the_patient_split(lidc, tmp_path):
    out = write_lesion_crops(lidc, tmp_path / "crops")
    with (out / "metadata.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16
    for row in rows:
        patient, name = Path(row["path"]).stem.split("__")
        masks = [
            cv2.imread(str(lidc / row["split"] / "gt" / patient / f"{name}_l{r}.png"), 0) for r in range(4)
        ]
        marking = sum(
            int(m.any()) for m in masks
        )  # readers who outlined anything, counted here from the files
        assert int(row["readers_marking"]) == marking
        assert row["label"] == ("present" if marking >= 3 else "absent")
        assert (
            lidc / row["split"] / "images" / patient / f"{name}.png"
        ).is_file()  # same split as the source
        written = cv2.imread(str(out / row["path"]), cv2.IMREAD_UNCHANGED)
        assert written.ndim == 2  # grey kept grey
        # no crop_size: the patch is the whole 8-bit source PNG, read as x / 255 and written back x 255
        source = cv2.imread(str(lidc / row["split"] / "images" / patient / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(written, source), row["path"]
    lenient = write_lesion_crops(lidc, tmp_path / "lenient", min_readers=1)
    with (lenient / "metadata.csv").open() as f:
        labels = [r["label"] for r in csv.DictReader(f)]
    assert labels.count("present") >= sum(r["label"] == "present" for r in rows)
    with pytest.raises(ValueError, match="min_readers must be in 1..4"):
        write_lesion_crops(lidc, tmp_path / "x", min_readers=5)


@pytest.fixture
def three_readers(lidc, tmp_path) -> Path:
    """A copy of ``lidc`` without its fourth reader's masks: three-reader data."""
    three = shutil.copytree(lidc, tmp_path / "three")
    for extra in three.glob("*/gt/*/*_l3.png"):
        extra.unlink()
    return three


def test_patches_of_three_readers_take_a_majority_of_three(three_readers, tmp_path):
    """Three-reader data had no way in: the reader count was fixed at LIDC's four."""
    out = write_lesion_crops(three_readers, tmp_path / "crops3", num_readers=3)
    with (out / "metadata.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows and all(row["label"] == ("present" if int(row["readers_marking"]) >= 2 else "absent") for row in rows)
    assert max(int(row["readers_marking"]) for row in rows) <= 3
    with pytest.raises(ValueError, match=r"min_readers must be in 1..3 \(num_readers\)"):
        write_lesion_crops(three_readers, tmp_path / "x", min_readers=4, num_readers=3)


def _marking(out: Path) -> dict[str, int]:
    with (out / "metadata.csv").open() as f:
        return {row["path"]: int(row["readers_marking"]) for row in csv.DictReader(f)}


def test_the_data_module_passes_num_readers_to_the_cutter(three_readers, tmp_path):
    """``--data.num_readers 3`` was dropped on the way to the cutter: 3-reader data asked for a 4th mask."""
    from domains.medical.classification.data import MedicalClassificationData

    dm = MedicalClassificationData(
        data_path=str(three_readers), crops_dir=str(tmp_path / "dm"), num_readers=3, num_workers=0
    )
    dm.prepare_data()
    marking = _marking(tmp_path / "dm")
    assert marking == _marking(write_lesion_crops(three_readers, tmp_path / "direct", num_readers=3))
    assert len(marking) == 16 and max(marking.values()) == 3


def test_patches_cut_with_four_readers_are_cut_again_with_three(lidc, tmp_path):
    """The reader count was not in the crops' settings: a 3-reader cut reused the 4-reader patches."""
    out = write_lesion_crops(lidc, tmp_path / "crops", min_readers=2)
    assert max(_marking(out).values()) == 4  # the fixture has patches every reader marked
    write_lesion_crops(lidc, out, min_readers=2, num_readers=3)  # same min_readers: only num_readers differs
    marking = _marking(out)
    assert len(marking) == 16 and max(marking.values()) == 3  # the 4th reader's masks no longer read


def _args(lidc: Path, crops: Path, *extra: str) -> list[str]:
    return tiny_classification_args(CONFIG, lidc, crops, "--data.min_readers", "1", *extra)


def test_cli_fit_fast_dev_run_then_predict_writes_probabilities_and_cams(lidc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    crops = tmp_path / "crops"
    cli = main(["fit", *_args(lidc, crops, "--trainer.fast_dev_run", "1")])
    assert cli.trainer.state.finished and cli.model.model.in_channels == 1
    pred = tmp_path / "pred"
    main(["predict", "--ckpt_path", "none", *_args(lidc, crops, "--trainer.fast_dev_run", "1", "--model.predict_dir", str(pred))])
    with (pred / "probabilities.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows and all(abs(float(r["p_absent"]) + float(r["p_present"]) - 1) < 1e-4 for r in rows)
    cam = cv2.imread(str(pred / rows[0]["cam"]))
    assert cam.shape[2] == 3 and np.ptp(cam) > 0  # a coloured overlay, not a blank image


def test_cli_checkpoint_round_trip_fit_test_predict(lidc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    crops = tmp_path / "crops"
    main(["fit", *_args(lidc, crops, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1")])
    last = tmp_path / "lightning_logs/medical_classification/quick/checkpoints/last.ckpt"  # quick.yaml's own
    assert last.is_file()
    cli = main(["test", *_args(lidc, crops, "--ckpt_path", str(last))])
    assert set(cli.model.last_metrics["test"]) >= {"acc", "f1_macro", "recall_present", "confusion"}
    pred = tmp_path / "pred"
    main(
        [
            "predict",
            *_args(
                lidc,
                crops,
                "--ckpt_path",
                str(last),
                "--model.predict_dir",
                str(pred),
                "--model.cam",
                "false",
            ),
        ]
    )
    with (pred / "probabilities.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(r["cam"] == "" for r in rows) and not (pred / "cam").exists()
    # data whose classes are not the checkpoint's (another domain's classifier): refused before anything runs
    with pytest.raises(
        CheckpointMismatchError, match=r"trained with model.class_names = \['absent', 'present'\]"
    ):
        main(
            ["test", *_args(lidc, crops, "--ckpt_path", str(last), "--data.class_names", "[car, van, truck]")]
        )


@pytest.mark.slow
def test_transfer_benchmark_runs_scratch_and_suite_source_and_writes_table_json_png(
    lidc, tmp_path, monkeypatch
):
    from benchmarks.transfer import main as transfer

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results" / "transfer.md"
    rows = transfer([
        "--domain", "medical", "--data-path", str(lidc), "--backbones", "tiny_cnn", "--fractions", "0.5", "1",
        "--minutes", "0.3", "--image-size", "32", "--source-size", "32", "--batch-size", "4",
        "--eval-items", "16", "--threads", "1", "--out", str(out), "--backbone-kwargs", 'tiny_cnn={"width": 4}',
    ])  # fmt: skip
    assert [(r["source"], r["fraction"]) for r in rows] == [
        ("scratch", 0.5),
        ("scratch", 1.0),
        ("suite", 0.5),
        ("suite", 1.0),
    ]
    assert all(r["steps"] > 0 and 0 <= r["test"]["acc"] <= 1 for r in rows)
    assert rows[0]["n_train"] < rows[1]["n_train"]
    # hundreds of steps on 12 images (9 with a lesion): the scratch run fits them better than calling all
    # "present" (0.75; 50 steps reach 0.83)
    assert rows[1]["train"]["acc"] > 0.75, rows[1]
    assert "| tiny_cnn | suite | 50% |" in out.read_text()
    assert out.with_suffix(".png").stat().st_size > 1000
    assert json.loads(out.with_suffix(".json").read_text())["rows"] == rows  # the figures the run measured
    for r in rows:
        assert f"| {r['test']['acc']:.3f} | {r['test']['f1_macro']:.3f} |" in out.read_text()
    import torch

    made = torch.load(tmp_path / "data/transfer_sources/medical_tiny_cnn_segmenter.pt", weights_only=True)  # git-ignored
    first_conv = next(v for k, v in made["state_dict"].items() if k.startswith("backbone.encoder.") and v.ndim == 4)
    assert first_conv.shape[0] == 4  # --backbone-kwargs reached the source segmenter (tiny_cnn's default width: 8)


def test_transfer_benchmark_refuses_backbone_kwargs_that_are_not_a_json_object(capsys):
    from benchmarks.transfer import main as transfer

    with pytest.raises(SystemExit):
        transfer(["--backbones", "tiny_cnn", "--backbone-kwargs", "tiny_cnn=[4]"])
    assert "--backbone-kwargs: a JSON object ({...}) is expected, got '[4]'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="expected BACKBONE=JSON with a registered backbone"):
        transfer(["--backbones", "tiny_cnn", "--backbone-kwargs", "nope={}"])
