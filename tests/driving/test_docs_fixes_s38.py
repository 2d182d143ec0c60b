"""Fixes from the docs audit: ``predict``'s COCO results file on COCO's layout as downloaded (the JSON in
``annotations/``, its images in ``val2017/``) and with ``--data.images_root``; DataLoader workers that ignore
a SIGTERM sent to the whole process group, so only the main process (which saves last.ckpt) handles it."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from domains.driving.detection.predict import COCO_RESULTS, KittiPredictionWriter
from domains.driving.formats import read_coco
from shared.data import SplitLoaders
from shared.images import write_image

pytestmark = pytest.mark.usefixtures("one_thread")

#: image ids and a category id unlike 1..N, as in a real JSON
IMAGE_IDS = {"a.png": 42, "b.png": 7}
CAR_ID = 3


def write_coco_set(json_path: Path, images_dir: Path) -> Path:
    """Two 40 x 30 images in ``images_dir`` and a COCO JSON at ``json_path`` naming them by bare file name."""
    images_dir.mkdir(parents=True, exist_ok=True)
    for name in IMAGE_IDS:
        write_image(images_dir / name, np.full((30, 40, 3), 90, np.uint8), rgb=True)
    data = {
        "images": [{"id": i, "file_name": name, "width": 40, "height": 30} for name, i in IMAGE_IDS.items()],
        "annotations": [
            {"id": 1, "image_id": 42, "bbox": [2, 2, 10, 10], "category_id": CAR_ID, "area": 100}
        ],
        "categories": [{"id": CAR_ID, "name": "Car"}],
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(data))
    return json_path


def predict_coco(source: Path, out: Path, images_root: str | None = None) -> list[dict]:
    """The writer's COCO results for every image of ``source``, the records read as the data module reads them
    (:func:`read_coco` with its ``images_root``)."""
    writer = KittiPredictionWriter(str(out), ["Car"])
    datamodule = SimpleNamespace(
        data_format="coco", data_path=str(source), predict_path=None, images_root=images_root
    )
    trainer = SimpleNamespace(datamodule=datamodule, is_global_zero=True)
    module = SimpleNamespace(predict_score_thresh=0.5, print=lambda *args, **kwargs: None)
    writer.on_predict_start(trainer, module)
    for record in read_coco(source, images_root):
        pred = {
            "image_id": Path(record.image_path).stem,
            "image_path": record.image_path,
            "orig_size": (record.height, record.width),
            "boxes": torch.tensor([[1.0, 2.0, 11.0, 12.0]]),
            "scores": torch.tensor([0.9]),
            "labels": torch.tensor([0]),
        }
        writer.write_image(torch.zeros(3, record.height, record.width), pred)
    writer.on_predict_epoch_end(trainer, module)
    return json.loads((out / COCO_RESULTS).read_text())


def test_coco_results_on_cocos_layout_as_downloaded(tmp_path):
    """annotations/instances_val2017.json beside val2017/: the data module reads the images from val2017/, and
    the results file keys them there too (it looked beside the JSON: KeyError '.../val2017/a.png')."""
    source = write_coco_set(tmp_path / "coco/annotations/instances_val2017.json", tmp_path / "coco/val2017")
    results = predict_coco(source, tmp_path / "pred")
    assert sorted(r["image_id"] for r in results) == sorted(IMAGE_IDS.values())
    assert {r["category_id"] for r in results} == {CAR_ID}
    assert results[0]["bbox"] == pytest.approx([1.0, 2.0, 10.0, 10.0])


def test_coco_results_with_an_images_root(tmp_path):
    """--data.images_root names the folder the file names are relative to: the results file keys them
    there."""
    source = write_coco_set(tmp_path / "labels/ann.json", tmp_path / "photos")
    results = predict_coco(source, tmp_path / "pred", images_root=str(tmp_path / "photos"))
    assert sorted(r["image_id"] for r in results) == sorted(IMAGE_IDS.values())


def test_a_predicted_image_missing_from_the_json_is_a_clear_error(tmp_path):
    source = write_coco_set(tmp_path / "ann.json", tmp_path)
    writer = KittiPredictionWriter(str(tmp_path / "pred"), ["Car"])
    datamodule = SimpleNamespace(
        data_format="coco", data_path=str(source), predict_path=None, images_root=None
    )
    writer.on_predict_start(SimpleNamespace(datamodule=datamodule), SimpleNamespace(predict_score_thresh=0.5))
    stray = tmp_path / "other/c.png"
    stray.parent.mkdir()
    write_image(stray, np.zeros((30, 40, 3), np.uint8), rgb=True)
    pred = {"image_id": "c", "image_path": str(stray), "boxes": torch.zeros(0, 4), "scores": torch.zeros(0)}
    pred["labels"] = torch.zeros(0, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"other/c\.png is none of the images of the COCO JSON .*ann\.json"):
        writer.write_image(torch.zeros(3, 30, 40), pred)


class WorkerPids(Dataset):
    """Item i: the pid of the process that loaded it (a worker's, with workers)."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> int:
        time.sleep(0.01)
        return os.getpid()


def test_loader_workers_ignore_a_sigterm_to_the_process_group():
    """A SIGTERM that reaches a worker (sent to the whole group) must not kill it: torch's SIGCHLD handler
    then raised "DataLoader worker (pid N) is killed by signal: Terminated" before the SIGTERM handler of the
    main process saved last.ckpt. The suite's worker init makes the workers ignore it; the loader goes on."""
    loader = DataLoader(WorkerPids(), batch_size=1, num_workers=1, worker_init_fn=SplitLoaders.worker_init_fn)
    pids = []
    for i, batch in enumerate(loader):
        pids.append(int(batch[0]))
        if i == 0:
            assert pids[0] != os.getpid()  # loaded in a worker
            os.kill(pids[0], signal.SIGTERM)
            time.sleep(0.3)  # time for a killed worker to be noticed (SIGCHLD) before the next batch
    assert pids == [pids[0]] * len(WorkerPids())  # every item loaded, by the same (living) worker
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN  # the main process still answers SIGTERM
