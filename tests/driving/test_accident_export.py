"""ONNX export of the accident anticipator's streaming step: onnxruntime, carrying its own state frame to
frame, gives the calibrated probabilities of ``AccidentAnticipator.step`` (blind frames 0, as predict) for
boxes-only, frames and features networks, GRU and transformer, with a lag history, at another batch and slot
count than traced; the sidecar's fields by value; a failed check or a bad --ckpt leaves nothing behind."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import domains.driving.accident.export as accident_export
from domains.driving.accident.export import StreamingStep, export_accident, main
from domains.driving.accident.task import AccidentTask
from shared.export import onnx_session, run_onnx
from shared.task import CheckpointMismatchError

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL, RTOL = 1e-4, 1e-5
SIZE = (32, 64)  # H != W: a sidecar or box scale that swapped them would show
TEMPERATURE, THRESHOLD = 1.7, 0.45


def tiny(**init_args) -> AccidentTask:
    """An untrained tiny anticipator with a fitted-looking temperature and alarm threshold, in eval mode."""
    torch.manual_seed(0)
    args = {"backbone": "tiny_cnn", "input_size": list(SIZE), "hidden": 16, "dropout": 0.0, **init_args}
    task = AccidentTask(
        network={"class_path": "domains.driving.accident.model.AccidentAnticipator", "init_args": args}
    )
    task.model.temperature.fill_(TEMPERATURE)
    task.model.alarm_threshold.fill_(THRESHOLD)
    return task.eval()


def clip(model, batch: int = 2, slots: int = 4, frames: int = 8) -> list[dict[str, torch.Tensor]]:
    """Per frame the step's inputs: slot 0 looms, slot 1 stands still, slot 2 appears at frame 3, the last
    slot stays empty in the second sample; the first sample's frame 2 has no valid box."""
    g = torch.Generator().manual_seed(1)
    out = []
    for t in range(frames):
        boxes = torch.tensor([[20.0, 10.0, 28.0, 16.0]]).repeat(batch, slots, 1)
        boxes[:, 0] = torch.tensor([32 - 3 * 1.2**t, 16 - 2 * 1.2**t, 32 + 3 * 1.2**t, 16 + 2 * 1.2**t])
        boxes[:, 2] += t
        valid = torch.ones(batch, slots, dtype=torch.bool)
        valid[:, 2] = t >= 3
        valid[1, -1] = False
        valid[0] = t != 2
        inputs = {"boxes": boxes, "box_valid": valid}
        if model.input_kind == "frames":
            inputs = {"frame": torch.rand(batch, 3, *SIZE, generator=g), **inputs}
        if model.input_kind == "features":
            dim = model.frame_embed[0].in_features
            inputs = {
                "features": torch.rand(batch, dim, generator=g),
                "object_features": torch.rand(batch, slots, dim, generator=g),
                **inputs,
            }
        out.append(inputs)
    return out


def stream(onnx, meta: dict, frames: list[dict]) -> list[list[np.ndarray]]:
    """The graph over ``frames``, the state as the sidecar says: zeros first, then each frame's new state."""
    batch, slots = frames[0]["box_valid"].shape
    sizes = {"batch": batch, "slots": slots}
    state = {
        name: np.zeros([sizes.get(n, n) for n in spec["shape"]], spec["dtype"])
        for name, spec in meta["inputs"].items()
        if name.startswith("state_")
    }
    outputs, session = [], onnx_session(onnx)  # one session for the clip, as a streaming reader keeps
    for inputs in frames:
        got = run_onnx(session, {k: v.numpy() for k, v in inputs.items()} | state)
        named = dict(zip(meta["outputs"], got, strict=True))
        state = {f"state_{n}": named[f"new_state_{n}"] for n in meta["state"]["names"]}
        outputs.append(got)
    return outputs


@pytest.mark.parametrize(
    "init_args",
    [
        {"input_kind": "boxes"},
        {"input_kind": "boxes", "temporal": "transformer", "window": 4},
        {"input_kind": "boxes", "motion_lags": [1, 3]},
        {"input_kind": "frames"},
        {"input_kind": "features", "feature_dim": 8},
    ],
    ids=["boxes-gru", "boxes-transformer", "motion-lags", "frames", "features"],
)
def test_onnx_stream_gives_the_steps_calibrated_probabilities(init_args, tmp_path):
    task = tiny(**init_args)
    model = task.model
    frames = clip(model)  # batch 2, 4 slots: the graph is traced at 3
    state, expected = None, []
    for inputs in frames:
        out, state = model.step(
            inputs.get("frame"), inputs["boxes"], inputs["box_valid"], state,
            features=inputs.get("features"), object_features=inputs.get("object_features"),
        )  # fmt: skip
        horizon = out["horizon_logits"].sigmoid()
        horizon[model.blind(inputs["box_valid"])] = 0.0  # predict's rule
        expected.append((horizon.numpy(), out["object_logits"].sigmoid().numpy()))
    risks = np.sort(np.concatenate([horizon[:, -1] for horizon, _ in expected]))
    model.alarm_threshold.fill_(float(risks[len(risks) // 2 - 1 : len(risks) // 2 + 1].mean()))  # half alarm
    meta = export_accident(task, tmp_path)
    got = stream(tmp_path / "anticipator.onnx", meta, frames)
    over, latched = [], np.zeros(2, bool)
    for (horizon, objects), (ort_horizon, ort_objects, alarm, *_) in zip(expected, got, strict=True):
        np.testing.assert_allclose(ort_horizon, horizon, atol=ATOL, rtol=RTOL)
        np.testing.assert_allclose(ort_objects, objects, atol=ATOL, rtol=RTOL)
        over += list(horizon[:, -1] >= model.alarm_threshold.numpy())
        latched |= over[-2:]  # predict's alarm column: raised from the first frame over the threshold on
        np.testing.assert_array_equal(alarm, latched)
    assert any(over) and not all(over)
    for name, value in state.items():  # the state the graph hands back is the step's, the lag history too
        ort = got[-1][list(meta["outputs"]).index(f"new_state_{name}")]
        np.testing.assert_allclose(ort.astype(float), value.numpy().astype(float), atol=ATOL, rtol=RTOL)
    assert ort_horizon.shape == (2, 4) and ort_objects.shape == (2, 4) and alarm.dtype == np.bool_
    assert 0 < ort_horizon.min() and (np.diff(ort_horizon, axis=1) >= 0).all()
    assert max(meta["tolerance"]["max_abs_diff"].values()) <= ATOL


@pytest.mark.parametrize("kind", ["boxes", "frames"])
def test_a_frame_without_objects_gets_probability_zero_from_a_boxes_only_network(kind, tmp_path):
    """predict's rule, inside the graph: exactly 0 (a Where, not a sigmoid's underflow, which onnxruntime's
    CPU kernel gives at -20 and other runtimes need not), the alarm off; a network reading pixels reads on."""
    task = tiny(input_kind=kind)
    meta = export_accident(task, tmp_path)
    inputs = clip(task.model)[2]  # the first sample sees no object
    module = StreamingStep(task.model)
    state = module.initial_state(2, 4).values()
    with torch.no_grad():
        horizon, _, alarm, *_ = module(*inputs.values(), *state)
    (ort_horizon, _, ort_alarm, *_), *_ = stream(tmp_path / "anticipator.onnx", meta, [inputs])
    for probabilities, alarmed in ((horizon.numpy(), alarm.numpy()), (ort_horizon, ort_alarm)):
        assert (probabilities[0] == 0).all() == (kind == "boxes") and (probabilities[1] > 0).all()
        assert not alarmed[0] or kind == "frames"
    assert meta["blind"]["applies"] == (kind == "boxes")


def test_the_temperature_is_applied_inside_the_graph(tmp_path):
    task = tiny(input_kind="boxes")
    meta = export_accident(task, tmp_path)
    frames = clip(task.model)
    got = stream(tmp_path / "anticipator.onnx", meta, frames)[-1][0]
    task.model.temperature.fill_(1.0)  # the raw log-odds
    state = None
    for inputs in frames:
        out, state = task.model.step(None, inputs["boxes"], inputs["box_valid"], state)
    np.testing.assert_allclose(
        got, (out["horizon_logits"] / TEMPERATURE).sigmoid().numpy(), atol=ATOL, rtol=RTOL
    )
    assert np.abs(got - out["horizon_logits"].sigmoid().numpy()).max() > 1e-2


def _checkpoint(task: AccidentTask, path, data: dict) -> str:
    """``task`` saved as a Lightning checkpoint with the data module settings ``data``."""
    from pytorch_lightning import Trainer

    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_steps=0)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    torch.save(checkpoint | {"datamodule_hyper_parameters": data}, path)
    return str(path)


def test_cli_writes_graph_and_sidecar(tmp_path):
    task = tiny(input_kind="boxes", temporal="transformer", window=4)
    ckpt = _checkpoint(
        task, tmp_path / "accident.ckpt", {"data_format": "synthetic", "synthetic": {"fps": 20.0}}
    )
    out = tmp_path / "onnx"
    main(["--ckpt", ckpt, "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["anticipator.json", "anticipator.onnx"]
    meta = json.loads((out / "anticipator.json").read_text())
    assert (meta["domain"], meta["model"], meta["checkpoint"]) == (
        "driving_accident",
        "accident_anticipator/boxes",
        ckpt,
    )
    assert (meta["input_kind"], meta["temporal"], meta["input_size"]) == ("boxes", "transformer", list(SIZE))
    names = ["objects", "prev_boxes", "prev_valid", "window", "window_valid", "alarm"]
    assert meta["state"]["names"] == names
    assert list(meta["inputs"]) == ["boxes", "box_valid", *(f"state_{n}" for n in names)]
    assert list(meta["outputs"]) == ["horizon_probabilities", "object_probabilities", "alarm"] + [
        f"new_state_{n}" for n in names
    ]
    assert meta["inputs"]["box_valid"] == {"shape": ["batch", "slots"], "dtype": "bool"}
    assert meta["inputs"]["state_window"] == {"shape": ["batch", 4, 16], "dtype": "float32"}
    assert meta["outputs"]["new_state_window_valid"] == {"shape": ["batch", 4], "dtype": "bool"}
    assert meta["outputs"]["horizon_probabilities"] == {"shape": ["batch", 4], "dtype": "float32"}
    assert meta["horizons_s"] == [0.5, 1.0, 1.5, 2.0]
    assert meta["temperature"]["value"] == pytest.approx(TEMPERATURE)
    assert meta["alarm"]["horizon_s"] == 2.0 and meta["alarm"]["threshold"] == pytest.approx(THRESHOLD)
    assert meta["frame_rate"]["fps"] == 20.0 and "synthetic.fps" in meta["frame_rate"]["source"]
    assert meta["blind"]["applies"] is True and "domains.driving.accident.tracking" in meta["tracking"]
    assert (
        meta["input"]["frame"].startswith("none")
        and "pixels of the frame at input_size" in meta["input"]["boxes"]
    )
    assert max(meta["tolerance"]["max_abs_diff"].values()) <= ATOL
    assert "carrying its own state" in meta["tolerance"]["measured_on"]


def test_a_frames_sidecar_says_how_frames_are_prepared(tmp_path):
    meta = export_accident(tiny(input_kind="frames"), tmp_path)
    assert meta["inputs"]["frame"] == {"shape": ["batch", 3, *SIZE], "dtype": "float32"}  # fixed H, W
    assert "INTER_AREA" in meta["input"]["frame"] and meta["input"]["mean"] == pytest.approx(
        [0.485, 0.456, 0.406]
    )
    assert meta["blind"]["applies"] is False and meta["frame_rate"]["source"].startswith("assumed")


def test_a_check_beyond_tolerance_fails_and_writes_nothing(tmp_path, monkeypatch):
    real = accident_export.run_onnx

    def off(path, inputs):  # onnxruntime a little off on the check clip's fifth frame (batch 3)
        got = real(path, inputs)
        if inputs["boxes"].shape[0] == 3 and off.calls == 4:
            got[0] = got[0] + 1e-3
        off.calls += inputs["boxes"].shape[0] == 3
        return got

    off.calls = 0
    monkeypatch.setattr(accident_export, "run_onnx", off)
    out = tmp_path / "new" / "onnx"
    with pytest.raises(
        ValueError, match=r"anticipator.onnx: .* horizon_probabilities at frame 4 of the check clip"
    ):
        export_accident(tiny(input_kind="boxes"), out)
    assert not (tmp_path / "new").exists()


def test_a_bad_ckpt_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--ckpt .*missing.ckpt: no such checkpoint file"):
        main(["--ckpt", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "out")])
    weights = tmp_path / "driving_accident.safetensors"  # as the demo ships
    weights.write_bytes(b"tensors")
    with pytest.raises(CheckpointMismatchError, match="holds weights only, not a Lightning checkpoint"):
        main(["--ckpt", str(weights), "--out", str(tmp_path / "out")])
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(
        CheckpointMismatchError, match=r"garbage.ckpt: not a weights-only Lightning checkpoint"
    ):
        main(["--ckpt", str(garbage), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
