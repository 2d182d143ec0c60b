"""The CLI's ``predict`` keeps nothing of what each ``predict_step`` returns (an instances model's full-size
masks over 160 photos grew to 9.7 GB): ``--return_predictions`` defaults to false there, every task writes as
it goes, and the anomaly task's ``image_scores.csv`` is built from rows it keeps itself."""

from __future__ import annotations

import csv

import pytest
from torch.utils.data import DataLoader

from domains.driving.anomaly.data import PredictImages, pad_collate, segmentation_transforms
from domains.driving.common import predict_images
from tests.helpers import anomaly_task, quiet_trainer, write_image

NAMES = ("a", "b", "c")  # three photos in batches of 2: the CSV needs every batch's rows, not only the last


def _photos(root):
    for i, name in enumerate(NAMES):
        write_image(root / f"{name}.png", width=48, height=32, seed=i)
    return root


def _cli_args(photos, out):
    return [
        "--ckpt_path", "none",  # untrained on purpose: what predict keeps does not depend on the weights
        "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
        "--model.network.init_args.encoder_kwargs", '{"channels": [4, 8, 16]}',
        "--model.oe_weight", "0.0", "--model.score", "msp",
        "--data.predict_path", str(photos), "--data.batch_size", "2", "--data.num_workers", "0",
        "--data.image_size", "[32, 48]", "--model.predict_dir", str(out),
    ]  # fmt: skip


def _scored_names(out) -> list[str]:
    with (out / "image_scores.csv").open() as fh:
        return [row["name"] for row in csv.DictReader(fh)]


def test_cli_predict_keeps_no_predictions_unless_asked(tmp_path, monkeypatch):
    from domains.driving.anomaly.__main__ import main

    photos = _photos(tmp_path / "photos")
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="--ckpt_path none"):
        cli = main(["predict", *_cli_args(photos, tmp_path / "out")])
    assert cli.trainer.predict_loop.return_predictions is False
    assert cli.trainer.predict_loop.predictions == []  # nothing of predict_step's returns kept to the end
    assert _scored_names(tmp_path / "out") == list(NAMES)  # the CSV still lists every photo

    with pytest.warns(UserWarning, match="--ckpt_path none"):
        cli = main(["predict", *_cli_args(photos, tmp_path / "kept"), "--return_predictions", "true"])
    kept = [item["name"] for batch in cli.trainer.predict_loop.predictions for item in batch]
    assert kept == list(NAMES)  # a user who wants them still gets them


def test_anomaly_predict_without_kept_predictions_writes_every_images_score(tmp_path):
    photos = _photos(tmp_path / "photos")
    out = tmp_path / "out"
    task = anomaly_task(encoder_kwargs={"channels": [4, 8, 16]}, oe_weight=0.0, score="msp")
    task.predict_dir = str(out)
    dataset = PredictImages(predict_images(photos), segmentation_transforms(False, None))
    loader = DataLoader(dataset, batch_size=2, collate_fn=pad_collate)
    trainer = quiet_trainer()
    assert trainer.predict(task, loader, return_predictions=False) is None
    assert _scored_names(out) == list(NAMES)
    # a second run (the same task) lists its own images, not the first run's again
    (out / "image_scores.csv").unlink()
    trainer.predict(task, loader, return_predictions=False)
    assert _scored_names(out) == list(NAMES)
