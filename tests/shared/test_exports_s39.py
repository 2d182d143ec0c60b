"""Exports of a checkpoint whose network is the user's own class load it once ``--import`` names its module
(and say how when it is missing); the accident graph's ``alarm`` is latched in its state as ``predict``'s
alarm column, frame by frame through onnxruntime."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
import torch

from domains.driving.accident.export import main
from domains.driving.accident.predict import write_clip
from domains.driving.accident.task import AccidentTask
from shared.export import onnx_session, run_onnx

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = (32, 64)
OWN = "own_anticipator_s39"  # the user's module, written into a test folder
OWN_CODE = '''from domains.driving.accident.model import AccidentAnticipator


class OwnAnticipator(AccidentAnticipator):
    """A network of one's own: a temperature of its own choosing."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.temperature.fill_(2.5)
'''


def tiny_task(class_path: str = "domains.driving.accident.model.AccidentAnticipator") -> AccidentTask:
    torch.manual_seed(0)
    args = {"input_kind": "boxes", "input_size": list(SIZE), "hidden": 16, "dropout": 0.0}
    task = AccidentTask(network={"class_path": class_path, "init_args": args}, uncertainty_samples=0)
    return task.eval()


def save(task: AccidentTask, path) -> str:
    """``task`` as a Lightning checkpoint, as fit writes it."""
    from pytorch_lightning import Trainer

    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_steps=0)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(path)
    return str(path)


@pytest.fixture
def own_checkpoint(tmp_path, monkeypatch):
    """A checkpoint of ``OWN.OwnAnticipator`` written in ``tmp_path/fit`` (the module beside it, imported there
    as ``python -m`` does), then forgotten as by a new process; returns (fit folder, checkpoint)."""
    fit = tmp_path / "fit"
    fit.mkdir()
    (fit / f"{OWN}.py").write_text(OWN_CODE)
    monkeypatch.delitem(sys.modules, OWN, raising=False)
    with monkeypatch.context() as fitting:
        fitting.syspath_prepend(str(fit))
        __import__(OWN)
        ckpt = save(tiny_task(f"{OWN}.OwnAnticipator"), fit / "own.ckpt")
    monkeypatch.delitem(sys.modules, OWN)
    return fit, ckpt


def test_an_export_of_ones_own_network_loads_it_with_import(own_checkpoint, tmp_path, monkeypatch):
    fit, ckpt = own_checkpoint
    monkeypatch.chdir(fit)
    monkeypatch.syspath_prepend(str(fit))  # what python -m does with the working folder
    meta = main(["--ckpt", ckpt, "--out", str(tmp_path / "onnx"), "--import", OWN])
    assert OWN in sys.modules  # imported by --import, as fit's --model.network imported it
    assert meta["checkpoint"] == ckpt and meta["temperature"]["value"] == pytest.approx(2.5)
    assert max(meta["tolerance"]["max_abs_diff"].values()) < 1e-4


def test_an_export_without_import_names_the_module_and_the_option(own_checkpoint, tmp_path, capsys):
    _, ckpt = own_checkpoint
    with pytest.raises(SystemExit):
        main(["--ckpt", ckpt, "--out", str(tmp_path / "onnx")])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        f"names classes of your own module(s) {OWN}," in error
        and f"add --import {OWN} (run from the folder fit ran in" in error
    )
    assert "--model.network" not in error and not (tmp_path / "onnx").exists()


def test_an_import_from_another_folder_says_how_to_make_it_importable(
    own_checkpoint, tmp_path, capsys, monkeypatch
):
    _, ckpt = own_checkpoint
    monkeypatch.chdir(tmp_path)  # not the folder that holds the module, which is not on the path
    with pytest.raises(SystemExit):
        main(["--ckpt", ckpt, "--out", str(tmp_path / "onnx"), "--import", OWN])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith(
        f"error: --import {OWN}: no module '{OWN}' on the import path; run from the folder that holds "
        f"{OWN}.py (where fit ran), or put that folder on PYTHONPATH"
    )


def clip_batch(frames: int = 10, slots: int = 3) -> dict:
    """One clip as predict's batch: slot 0 looms, slot 1 drifts, slot 2 appears at frame 2; frame 6 sees no
    object (a boxes-only network's risk is 0 there: the per-frame alarm drops, the latched one stays)."""
    t = torch.arange(frames, dtype=torch.float32)[:, None]
    half = torch.cat([3 * 1.25**t, 2 * 1.25**t], -1)
    centre = torch.tensor([32.0, 16.0])
    boxes = torch.tensor([[20.0, 10.0, 28.0, 16.0]]).repeat(frames, slots, 1)
    boxes[:, 0] = torch.cat([centre - half, centre + half], -1)
    boxes[:, 1] += torch.cat([t, t / 2, t, t / 2], -1)
    valid = torch.ones(frames, slots, dtype=torch.bool)
    valid[:2, 2] = False
    valid[6] = False
    return {
        "boxes": boxes[None],
        "box_valid": valid[None],
        "frame_valid": torch.ones(1, frames, dtype=torch.bool),
        "track_ids": torch.arange(slots)[None],
        "clip_id": ["c"],
        "fps": torch.tensor([10.0]),
        "toa": torch.tensor([-1]),
    }


def predict_alarm(task: AccidentTask, batch: dict, out) -> list[int]:
    """predict's alarm column of ``risk.csv`` (Lightning predicts without gradients)."""
    with torch.no_grad():
        (prediction,) = task.predict_step(batch, 0)
    write_clip(prediction, out, gif=False)
    with open(out / "c" / "risk.csv") as f:
        return [int(row["alarm"]) for row in csv.DictReader(f)]


def test_the_graphs_alarm_is_latched_as_predicts_alarm_column(tmp_path):
    task, batch = tiny_task(), clip_batch()
    with torch.no_grad():
        (prediction,) = task.predict_step(batch, 0)
    risk = prediction["risk"].numpy()
    # the threshold in the widest gap between the risks before the blind frame 6 (risk 0): the alarm is raised
    # before it, and lowered there frame by frame
    seen = np.sort(risk[:6])
    gap = int(np.argmax(np.diff(seen)))
    task.model.alarm_threshold.fill_(float(seen[gap : gap + 2].mean()))
    per_frame = (risk >= float(task.model.alarm_threshold)).astype(int).tolist()
    assert risk[6] == 0 and 1 in per_frame[:6]
    ckpt = save(task, tmp_path / "accident.ckpt")
    meta = main(["--ckpt", ckpt, "--out", str(tmp_path / "onnx")])
    expected = predict_alarm(AccidentTask.load_checked(ckpt), batch, tmp_path / "predict")
    session = onnx_session(tmp_path / "onnx" / "anticipator.onnx")
    sizes = {"batch": 1, "slots": 3}
    state = {  # zeros at the clip's first frame, as the sidecar says
        name: np.zeros([sizes.get(n, n) for n in spec["shape"]], spec["dtype"])
        for name, spec in meta["inputs"].items()
        if name.startswith("state_")
    }
    alarms = []
    for t in range(batch["boxes"].shape[1]):
        feed = {"boxes": batch["boxes"][:, t].numpy(), "box_valid": batch["box_valid"][:, t].numpy()}
        named = dict(zip(meta["outputs"], run_onnx(session, feed | state), strict=True))
        state = {f"state_{name}": named[f"new_state_{name}"] for name in meta["state"]["names"]}
        alarms.append(int(named["alarm"][0]))
    assert alarms == expected and expected[6] == 1 and per_frame != expected  # kept at the blind frame 6
    # the sidecar describes the latch
    assert meta["state"]["names"][-1] == "alarm" and meta["inputs"]["state_alarm"] == {
        "shape": ["batch"], "dtype": "bool"
    }  # fmt: skip
    assert meta["outputs"]["new_state_alarm"] == {"shape": ["batch"], "dtype": "bool"}
    assert "state_alarm or" in meta["alarm"]["rule"] and "latch it outside" not in meta["alarm"]["rule"]
    assert json.loads((tmp_path / "onnx" / "anticipator.json").read_text()) == meta
