"""Accident ``predict`` writes ``objects.csv`` boxes in the clip's own pixels, not the network input's.

An audit found track 43's box [154, 49, 166, 60] of a 320x96 clip written as [107.8, 32.7, 116.2, 40.0]: the
224x64 input's pixels, with nothing saying so. Here a clip of 80x36 pixels is resized to a 48x24 input (x 0.6,
y 2/3, unequal so a swapped axis shows) and predicted through Lightning's predict loop with the task's writer.
"""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
from PIL import Image
from pytorch_lightning import Trainer

from domains.driving.accident.data import AccidentDataModule
from domains.driving.accident.model import AccidentAnticipator
from domains.driving.accident.predict import CURVE_HEIGHT
from domains.driving.accident.task import AccidentTask
from tests.driving.accident.layouts import write_accident_clips

pytestmark = pytest.mark.usefixtures("one_thread")


def test_objects_csv_boxes_are_in_the_source_frame_pixels(tmp_path):
    data = write_accident_clips(tmp_path / "clips", {"crash": 2}, n_frames=6, toa=4, size=(80, 36))
    module = AccidentDataModule(
        data_path=str(data), image_size=(24, 48), val_fraction=0.0, test_fraction=0.5, num_workers=0
    )
    network = AccidentAnticipator(backbone="tiny_cnn", input_kind="boxes", input_size=(24, 48), hidden=8)
    out = tmp_path / "pred"
    task = AccidentTask(network=network, uncertainty_samples=0, predict_dir=str(out))
    trainer = Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (batch,) = trainer.predict(task, datamodule=module)
    (prediction,) = batch
    clip = prediction["clip_id"]
    with open(out / clip / "objects.csv") as f:
        rows = {(r["frame"], r["track_id"]): r for r in csv.DictReader(f)}

    def box(frame: int, track: int) -> list[float]:
        row = rows[(str(frame), str(track))]
        return [float(row[k]) for k in ("x1", "y1", "x2", "y2")]

    # layouts.clip_tracks: track 1 is [2, 8, 6 + t, 12 + t] and track 5 [10, 8, 13, 11] in the 80x36 frames
    assert box(0, 1) == [2.0, 8.0, 6.0, 12.0]  # the bug wrote [1.2, 5.3, 3.6, 8.0] (x 0.6, y 2/3)
    assert box(3, 1) == [2.0, 8.0, 9.0, 15.0]
    assert box(0, 5) == [10.0, 8.0, 13.0, 11.0]

    # the GIF shows the 48x24 network input, and the boxes it draws are in those pixels: they line up
    with Image.open(out / f"{clip}.gif") as gif:
        assert gif.size == (48, 24 + CURVE_HEIGHT)
    slot = list(prediction["track_ids"]).index(1)
    np.testing.assert_allclose(prediction["boxes"][0, slot], [1.2, 16 / 3, 3.6, 8.0], atol=1e-4)
