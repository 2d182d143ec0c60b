"""The accident task through its CLI on hand-written clips: fit, calibrated validation metrics, test, predict."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import pytest
import torch
from sklearn.metrics import average_precision_score

from domains.driving.accident.model import AccidentAnticipator
from domains.driving.accident.task import AccidentTask, load_accident_task
from tests.driving.accident.layouts import write_accident_clips

pytestmark = pytest.mark.usefixtures("one_thread")
QUICK_CONFIG = Path(__file__).resolve().parents[3] / "domains/driving/accident/configs/quick.yaml"
KINDS = {"crash": 4, "near_miss": 3, "normal": 3}


def _cli_args(data: Path, *extra: str) -> list[str]:
    args = ["-c", str(QUICK_CONFIG), "--data.data_path", str(data), "--data.num_workers", "0"]
    args += ["--data.batch_size", "2", "--data.image_size", "[24, 48]", "--data.clip_length", "8"]
    args += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    args += ["--model.network.init_args.hidden", "16", "--model.network.init_args.window", "4"]
    return args + list(extra)


def test_cli_fit_test_and_predict(tmp_path, monkeypatch):
    from domains.driving.accident.__main__ import main

    data = write_accident_clips(tmp_path / "clips", KINDS, n_frames=12, toa=7)
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = main(["fit", *_cli_args(data, "--trainer.max_epochs", "1")])
        metrics = cli.trainer.callback_metrics
        for key in (
            "val/video_ap",
            "val/frame_ap",
            "val/mtta",
            "val/legacy_mtta",
            "val/ece",
            "val/temperature",
        ):
            assert key in metrics, sorted(metrics)
        # the link gave the network the data module's frame size
        assert cli.model.model.input_size == (24, 48)
        ckpt = tmp_path / "lightning_logs/driving_accident/quick/checkpoints/last.ckpt"
        assert ckpt.is_file()
        loaded = load_accident_task(ckpt)
        assert isinstance(loaded.model, AccidentAnticipator)
        # calibration lives in the weights: the fitted (bounded) temperature and the alarm threshold come back
        # with them (last.ckpt is the last *saved* epoch, so compare with the range, not the last log)
        assert float(loaded.model.temperature) != 1.0 and 0.05 <= float(loaded.model.temperature) <= 20
        assert 0 <= float(loaded.model.alarm_threshold) <= 1

        cli = main(["test", *_cli_args(data, "--ckpt_path", str(ckpt))])
        fp32_video_ap = float(cli.trainer.callback_metrics["test/video_ap"])

        out = tmp_path / "pred"
        cli = main(["predict", *_cli_args(data, "--ckpt_path", str(ckpt), "--model.predict_dir", str(out))])
    test_clips = cli.datamodule.splits["test"]
    assert test_clips
    for clip in test_clips:
        with open(out / clip.clip_id / "risk.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == clip.n_frames
        assert {"p_contact_0.5s", "p_contact_2s", "risk", "uncertainty", "alarm", "top_track_id"} <= set(
            rows[0]
        )
        assert (out / f"{clip.clip_id}.gif").is_file()
        assert (out / clip.clip_id / "objects.csv").is_file()
    assert not list(out.rglob("*.tmp"))  # nothing half-written

    # test and predict under bf16 autocast (CPU here; the path a GPU takes): metrics and CSVs get float32
    bf16 = ["--ckpt_path", str(ckpt), "--trainer.precision", "bf16-mixed"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = main(["test", *_cli_args(data, *bf16)])
        video_ap = float(cli.trainer.callback_metrics["test/video_ap"])
        # sklearn's AP of the test clips' scores (every crash clip has frames before its contact, toa 7),
        # and the float32 test's value
        clips = cli.model.clip_scores_of("test")
        scores = [c.scores[: c.toa].max() if c.is_crash else c.scores.max() for c in clips]
        expected = average_precision_score([c.is_crash for c in clips], scores)
        assert video_ap == pytest.approx(expected, abs=1e-6)
        assert video_ap == pytest.approx(fp32_video_ap, abs=1e-6)
        cli = main(
            ["fit", *_cli_args(data, "--trainer.fast_dev_run", "1", "--trainer.precision", "bf16-mixed")]
        )
        assert "val/video_ap" in cli.trainer.callback_metrics
        # a frames network on boxes-only loaders (training, validation and test) is refused before any step,
        # naming the switch
        frames = ["--model.network.init_args.input_kind", "frames", "--data.train_frames", "false"]
        with pytest.raises(ValueError, match="data.train_frames is false"):
            main(["fit", *_cli_args(data, "--trainer.fast_dev_run", "1", *frames)])
        with pytest.raises(ValueError, match="data.train_frames is false"):
            main(["test", *_cli_args(data, "--ckpt_path", "none", *frames)])
        main(["predict", *_cli_args(data, *bf16, "--model.predict_dir", str(tmp_path / "pred_bf16"))])
    for clip in test_clips:
        with open(tmp_path / "pred_bf16" / clip.clip_id / "risk.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == clip.n_frames and all(0 <= float(r["risk"]) <= 1 for r in rows)


def test_bad_task_arguments_are_named():
    net = AccidentAnticipator(backbone="tiny_cnn", input_size=(24, 48), hidden=8)
    with pytest.raises(ValueError, match="max_false_alarm"):
        AccidentTask(network=net, max_false_alarm=1.5)
    with pytest.raises(ValueError, match="object_loss_weight"):
        AccidentTask(network=net, object_loss_weight=-1)
    features = AccidentAnticipator(input_kind="features", feature_dim=8, hidden=8)
    with pytest.raises(ValueError, match="input_kind: frames"):
        AccidentTask(network=features, pretrained_backbone="x.pth")
    # a frames network fed a boxes-only loader (data.train_frames false) says which switch to turn
    boxes_batch = {"boxes": torch.zeros(1, 4, 2, 4), "box_valid": torch.ones(1, 4, 2, dtype=torch.bool)}
    with pytest.raises(ValueError, match="data.train_frames true"):
        AccidentTask(network=net).forward_batch(boxes_batch)


def test_frozen_backbone_gets_no_gradient():
    task = AccidentTask(
        network=AccidentAnticipator(backbone="tiny_cnn", input_size=(24, 48), hidden=8), freeze_backbone=True
    )
    assert not any(p.requires_grad for p in task.model.backbone.parameters())
    assert any(p.requires_grad for p in task.model.horizon_head.parameters())
    assert torch.is_tensor(task.model.temperature)
    task.eval().train()  # as Lightning's fit starts: the frozen backbone's BatchNorm keeps its statistics
    norms = [m for m in task.model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms) and task.model.horizon_head.training


def test_a_frozen_backbone_needs_its_weights_at_fit_start(tmp_path):
    """A new fit of a frozen, random frame backbone is refused by name; whole weights or a restored checkpoint
    pass (the shared rule of shared.task.FrozenBackboneCheck)."""
    from safetensors.torch import save_file

    def task(**kw):
        network = AccidentAnticipator(backbone="tiny_cnn", input_size=(24, 48), hidden=8)
        return AccidentTask(network=network, freeze_backbone=True, **kw)

    with pytest.raises(
        ValueError, match="freeze_backbone is true but no --model.pretrained_backbone was given"
    ):
        task().on_fit_start()
    donor = AccidentAnticipator(backbone="tiny_cnn", input_size=(24, 48), hidden=8).backbone.state_dict()
    whole, partial = tmp_path / "whole.safetensors", tmp_path / "partial.safetensors"
    save_file({f"net.{k}": v.contiguous() for k, v in donor.items()}, str(whole))
    save_file({f"net.{k}": v.contiguous() for k, v in list(donor.items())[:2]}, str(partial))
    task(pretrained_backbone=str(whole), pretrained_prefix="net.").on_fit_start()  # nothing missing
    with pytest.raises(ValueError, match="backbone tensors unloaded"):
        task(pretrained_backbone=str(partial), pretrained_prefix="net.").on_fit_start()
    restored = task()
    checkpoint = {"state_dict": restored.state_dict()}
    restored.on_save_checkpoint(checkpoint)
    restored.on_load_checkpoint(checkpoint)
    restored.on_fit_start()  # a resumed fit: the checkpoint held the backbone
    plain = AccidentTask(network=AccidentAnticipator(backbone="tiny_cnn", input_size=(24, 48), hidden=8))
    plain.on_fit_start()  # not frozen: nothing to check


def _val_records(kind: str, toa: int, logits) -> list[dict]:
    """Four validation clips of one kind as the task gathers them (10 frames, one object slot)."""
    import numpy as np

    return [
        {
            "clip_id": f"c{i}", "kind": kind, "toa": toa, "fps": 10.0, "logits": logits[i],
            "object_logits": np.zeros((10, 1), np.float32), "box_valid": np.ones((10, 1), bool),
            "involved": np.full(1, toa >= 0), "ttc": np.full(10, np.nan, np.float32), "blind": np.zeros(10, bool),
        }
        for i in range(len(logits))
    ]  # fmt: skip


def test_validation_without_negative_clips_keeps_the_threshold_and_says_so(tmp_path):
    """DoTA-like validation (accidents only): the temperature is fitted, the alarm threshold is kept, a warning
    names the kinds."""
    import numpy as np

    task = AccidentTask(network=AccidentAnticipator(backbone="tiny_cnn", input_size=(24, 48), hidden=8))
    task.model.alarm_threshold.fill_(0.7)
    rng = np.random.default_rng(0)
    logits = [np.sort(rng.normal(size=(10, 4)), axis=1).astype(np.float32) for _ in range(4)]
    task._records["val"] = _val_records("crash", 6, logits)

    class _Trainer:
        sanity_checking = False

    task._trainer = _Trainer()
    task.log = task.log_dict = lambda *a, **k: None
    with pytest.warns(UserWarning, match=r"no near-miss or normal clip \(kinds \['crash'\]\)"):
        values = task._log_epoch_metrics("val")
    assert float(task.model.alarm_threshold) == pytest.approx(0.7)
    assert values["val/temperature"] != 1.0


def test_the_calibrated_threshold_stays_above_the_negative_it_excludes():
    """The threshold just above a normal clip's peak (float64) was stored in the model's float32 buffer, which
    rounded it back onto that peak: the clip it was chosen to exclude alarmed (false-alarm rate 1 at 0.1)."""
    import numpy as np

    task = AccidentTask(network=AccidentAnticipator(backbone="tiny_cnn", input_size=(24, 48), hidden=8))
    crash_logits = np.tile(np.linspace(-1.0, 0.5, 10, dtype=np.float32)[:, None], (1, 4))
    normal_logits = np.full((10, 4), 1.1368, np.float32)  # the highest score of all
    task._records["val"] = _val_records("crash", 6, [crash_logits] * 2) + _val_records("normal", -1, [normal_logits])
    task._records["val"][-1]["clip_id"] = "n0"

    class _Trainer:
        sanity_checking = False

    task._trainer = _Trainer()
    task.log = task.log_dict = lambda *a, **k: None
    task._calibrate = lambda records: None  # the temperature stays 1
    values = task._log_epoch_metrics("val")
    (normal,) = [c for c in task.clip_scores_of("val") if c.kind == "normal"]
    assert float(task.model.alarm_threshold) > float(normal.scores.max())
    assert values["val/normal_false_alarms"] == 0.0
    from domains.driving.accident.task import float32_at_least

    assert float32_at_least(0.5) == 0.5  # representable: kept
    assert float32_at_least(0.1) >= 0.1 and float(np.float32(float32_at_least(0.1))) == float32_at_least(0.1)
    assert float(np.nextafter(np.float32(float32_at_least(0.1)), np.float32(0))) < 0.1  # the smallest such


def test_validation_without_crashes_still_logs_the_checkpoint_monitor():
    """Validation clips without a crash (frame AP and video AP undefined): both are logged as 0, so the CLI's
    checkpoint on val/frame_ap (domains.driving.accident.__main__.MONITOR) never finds its key missing."""
    import numpy as np

    from domains.driving.accident.__main__ import MONITOR

    task = AccidentTask(network=AccidentAnticipator(backbone="tiny_cnn", input_size=(24, 48), hidden=8))
    task._records["val"] = _val_records("normal", -1, [np.full((10, 4), -2.0, np.float32)] * 3)

    class _Trainer:
        sanity_checking = False

    task._trainer = _Trainer()
    logged = {}
    task.log = lambda name, value, **k: logged.update({name: value})
    task.log_dict = lambda values, **k: logged.update(values)
    task._log_epoch_metrics("val")
    assert MONITOR == "val/frame_ap" and logged[MONITOR] == 0.0 and logged["val/video_ap"] == 0.0


def test_benchmark_set_overrides_reach_the_config():
    from benchmarks.driving_accident import apply_overrides

    model_kw = {"network": {"init_args": {"hidden": 64}}}
    data_kw = {"batch_size": 8}
    apply_overrides(
        model_kw,
        data_kw,
        ["model.network.init_args.motion_lags=[1, 5]", "data.hflip=0.5", "model.seedless=x"],
    )
    assert model_kw == {"network": {"init_args": {"hidden": 64, "motion_lags": [1, 5]}}, "seedless": "x"}
    assert data_kw == {"batch_size": 8, "hflip": 0.5}
    for bad in ("hflip=0.5", "trainer.max_epochs=3", "data.hflip"):
        with pytest.raises(ValueError, match="expected model"):
            apply_overrides({}, {}, [bad])
    with pytest.raises(TypeError, match="'batch_size' is not a mapping"):
        apply_overrides({}, {"batch_size": 8}, ["data.batch_size.x=1"])


def test_benchmark_judges_no_target_of_a_smoke_run_nor_false_alarms_of_a_threshold_that_finds_few_crashes():
    """A 19-step run (scores flat at 0.3016) was "met" on 5 of 7 targets: no near-miss false alarms from a
    threshold that found 1 of 12 crashes, a TTA@R80 read where every frame crosses."""
    import copy
    import json
    import types

    from benchmarks.driving_accident import markdown

    root = Path(__file__).resolve().parents[3]
    result = json.loads((root / "benchmarks/results/driving_accident.json").read_text())  # the shipped run
    args = types.SimpleNamespace(budget_minutes=15.0, threads=2, max_false_alarm=0.1, argv=[])
    full = markdown(result, args)
    assert "Smoke run" not in full and "- near_miss_false_alarms <= 0.1: 0.000 (met)" in full
    assert "- tta_r80 >= 1.5: 0.860 (not met)" in full
    smoke = markdown(result, types.SimpleNamespace(**{**vars(args), "budget_minutes": 0.3}))
    assert "**Smoke run**: 0.3 of the benchmark's 15 minutes" in smoke
    targets = smoke.split("Targets:")[1]
    assert targets.count("not judged (smoke run)") == 7 and "met" not in targets.replace("Command", "")
    rare = copy.deepcopy(result)
    rare["rows"]["model"]["summary"]["recall_at_threshold"] = 1 / 12
    assert "near_miss_false_alarms <= 0.1: 0.000 (not judged: the threshold finds 0.083 of the crash clips" in (
        markdown(rare, args)
    )
    del rare["rows"]["model"]["summary"]["recall_at_threshold"]  # not measured: not judged either
    assert "near_miss_false_alarms <= 0.1: 0.000 (not judged: the threshold finds" in markdown(rare, args)


def _one_object_from_frame_3():
    """8 frames, 4 slots: one box from frame 3 on, nothing in view before."""
    import numpy as np

    boxes = np.zeros((8, 4, 4), np.float32)
    valid = np.zeros((8, 4), bool)
    boxes[3:, 0] = (10, 8, 20, 16)
    valid[3:, 0] = True
    return boxes, valid


def test_a_boxes_only_model_gives_no_risk_where_no_object_is_in_view():
    """With no box a boxes-only network reads nothing: its output was a prior (0.62 for the shipped model on an
    empty road), a false alarm at a 0.6 threshold. Such frames now get probability 0 and no spread, in predict
    and in validation / test alike (the metrics describe what predict writes)."""
    import numpy as np

    from apps.demo_models import accident_predict

    torch.manual_seed(0)
    task = AccidentTask(
        network=AccidentAnticipator(input_kind="boxes", input_size=(24, 48), hidden=8), uncertainty_samples=3
    ).eval()
    boxes, valid = _one_object_from_frame_3()
    out = accident_predict(task, np.zeros((8, 24, 48, 3), np.uint8), boxes, valid, np.array([1, -1, -1, -1]), 10.0)
    assert np.all(out["probabilities"][:3] == 0) and np.all(out["uncertainty"][:3] == 0)
    assert np.all(out["risk"][3:] > 0) and np.all(out["probabilities"][3:] > 0)
    assert out["blind"].tolist() == [True] * 3 + [False] * 5

    # at 30 fps resampled to 10: each source frame holds the step at or before it (steps read frames 0, 3, 6,
    # ...); the object appears at source frame 7, so steps 0-2 (frames 0-8) are blind
    boxes30, valid30 = np.repeat(boxes, 3, axis=0), np.zeros((24, 4), bool)
    valid30[7:, 0] = True
    resampled = accident_predict(
        task, np.zeros((24, 24, 48, 3), np.uint8), boxes30, valid30, np.array([1, -1, -1, -1]), 30.0, model_fps=10.0
    )
    assert resampled["blind"].tolist() == [True] * 9 + [False] * 15
    assert np.all(resampled["risk"][:9] == 0) and np.all(resampled["risk"][9:] > 0)

    batch = {
        "boxes": torch.from_numpy(boxes)[None], "box_valid": torch.from_numpy(valid)[None],
        "frame_valid": torch.ones(1, 8, dtype=torch.bool), "toa": torch.tensor([6]), "fps": torch.tensor([10.0]),
        "involved": torch.tensor([[True, False, False, False]]), "ttc": torch.full((1, 8), float("nan")),
        "kind": ["crash"], "clip_id": ["c"], "track_ids": torch.tensor([[1, -1, -1, -1]]),
    }  # fmt: skip
    task.log = lambda *a, **k: None
    with torch.no_grad():
        task._evaluation_step(batch, "test")
    (clip,) = task.clip_scores(task._records["test"])
    assert np.allclose(clip.scores, out["risk"], atol=1e-6)  # what test scores is what predict writes

    # live, one frame at a time (the network's step): the same risks, no alarm on the empty road either
    state, streamed = None, []
    for t in range(8):
        step, state = task.model.step(None, batch["boxes"][:, t], batch["box_valid"][:, t], state)
        streamed.append(float(step["horizon_logits"][0, -1].sigmoid()))
    assert np.allclose(streamed, out["risk"], atol=1e-6) and max(streamed[:3]) < 1e-8
    with pytest.raises(ValueError, match="boxes has 2 object slots, the state 4"):
        task.model.step(None, batch["boxes"][:, 0, :2], batch["box_valid"][:, 0, :2], state)

    # the temperature is fitted on the frames the network reads: blind ones, however wrong, do not move it
    record = dict(task._records["test"][0])
    task._calibrate([record])
    fitted = float(task.model.temperature)
    record["logits"] = record["logits"].copy()
    record["logits"][:3] = -50.0  # frames 0-2 are blind; frame 3 on carries the crash's horizons
    task._calibrate([record])
    assert float(task.model.temperature) == pytest.approx(fitted)


def test_a_boxes_only_network_refuses_clips_without_tracks():
    """The README's CCD example ran quick.yaml (boxes only) on CCD, which has no boxes: it trained, tested and
    predicted 0 everywhere without a word."""
    from types import SimpleNamespace

    from domains.driving.accident.readers import AccidentClip

    def clip(tracks):
        return AccidentClip("c", "crash", 10.0, 20, 10, Path("c.mp4"), tracks=tracks)

    task = AccidentTask(network=AccidentAnticipator(input_kind="boxes", input_size=(24, 48), hidden=8))
    task._trainer = SimpleNamespace(datamodule=SimpleNamespace(splits={"train": [clip({})] * 3}, data_format="ccd"))
    with pytest.raises(ValueError, match=r"reads only the objects' boxes .* none of the 3 ccd clips has a track"):
        task.setup("fit")
    task._trainer.datamodule.splits["val"] = [clip({1: torch.zeros(20, 4).numpy()})]
    task.setup("fit")  # one clip with a track: the network has something to read
