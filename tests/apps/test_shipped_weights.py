"""The shipped demo weights: each loads safely into its network, matches its card, and (slow) reproduces the
card's test figures on the card's fixed subset; a changed file or a card naming an unknown network is refused."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from apps import demo_models as dm
from shared.task import CheckpointMismatchError

KEYS = list(dm.DEMO_MODELS)  # every demo model ships its weights
#: the card's subset figures, reproduced on another CPU / torch build: sampling and float order differ slightly
TOLERANCE = {
    "medical": 0.03,
    "driving_detection": 0.03,
    "driving_anomaly": 0.03,
    "driving_accident": 0.03,
    "driving_instances": 0.03,
}
HEADLINE = {
    "medical": ("test/ged", "test/hungarian_iou", "test/dice"),
    "driving_detection": ("test/map50", "test/map", "test/kitti_moderate/mean"),
    "driving_anomaly": ("test/ap", "test/auroc", "test/fpr95"),
    "driving_accident": ("test/video_ap", "test/frame_ap", "test/ece"),
    "driving_instances": ("test/mask_map50", "test/box_map50"),
}


def _card(key: str) -> dict:
    return json.loads((dm.SHIPPED_DIR / f"{key}.json").read_text())


def test_every_demo_model_ships_weights_within_the_size_limits():
    sizes = {key: (dm.SHIPPED_DIR / f"{key}.safetensors").stat().st_size for key in KEYS}
    assert all(size <= 15 * 2**20 for size in sizes.values()), sizes
    assert sum(sizes.values()) <= 40 * 2**20
    for key in KEYS:
        card = _card(key)
        assert card["key"] == key and card["weights"] == f"{key}.safetensors"
        assert {"command", "data", "seed", "date", "test", "subset", "sha256"} <= set(card)


@pytest.mark.parametrize("key", KEYS)
def test_shipped_weights_match_their_card_and_load_into_their_network(key):
    path = dm.SHIPPED_DIR / f"{key}.safetensors"
    card = _card(key)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == card["sha256"]
    tensors = load_file(str(path))  # safetensors: plain tensors, nothing unpickled
    # fp16 weights; scalars (a fitted temperature, an alarm threshold) stay fp32 so their rounding moves nothing
    assert {t.dtype for t in tensors.values() if t.is_floating_point() and t.dim() > 0} == {torch.float16}
    task = dm.load_task(key, path)  # sha256 check + strict state-dict load
    assert not task.training
    with torch.no_grad():
        if key in dm.MEDICAL_KEYS:
            probs = task.sample(torch.rand(1, 1, 128, 128), 2)
            assert probs.shape == (1, 2, 128, 128) and 0 <= float(probs.min()) <= float(probs.max()) <= 1
        elif key == "driving_detection":
            (pred,) = task.model([torch.rand(3, 96, 320)])
            assert set(pred) >= {"boxes", "scores", "labels"} and pred["boxes"].shape[-1] == 4
        elif key == "driving_instances":
            (pred,) = task.model([torch.rand(3, 96, 320)])
            assert pred["masks"].shape[1:] == (96, 320) and pred["boxes"].shape[-1] == 4
            point = card["operating_point"]
            assert 0.05 <= point["threshold"] <= 0.95 and point["split"] == "val"
        elif key == "driving_accident":
            h, w = task.model.input_size
            out = task.model(frames=torch.rand(1, 3, 3, h, w), boxes=torch.zeros(1, 3, 2, 4))
            assert out["horizon_logits"].shape == (1, 3, len(task.model.horizons))
            assert float(task.model.alarm_threshold) == pytest.approx(
                card["operating_point"]["threshold"], abs=1e-3
            )
        else:
            out = task.model.scores(torch.rand(1, 3, 64, 160), [task.score], smoothing=task.score_smoothing)
            assert out[task.score].shape == (1, 64, 160) and task.score == card["settings"]["score"]


def test_a_changed_weight_file_is_refused_naming_it(tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(dm.SHIPPED_DIR, folder)
    path = folder / "medical_unet.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(dm.WeightFileError, match=r"medical_unet\.safetensors: sha256 .* does not match"):
        dm.load_task("medical_unet", path)


def test_a_card_naming_a_network_the_registry_lacks_is_refused(tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(dm.SHIPPED_DIR, folder)
    card_path = folder / "driving_detection.json"
    card = json.loads(card_path.read_text())
    card["hyper_parameters"]["network"]["init_args"]["backbone"] = "no_such_backbone"
    card_path.write_text(json.dumps(card))
    with pytest.raises(dm.WeightFileError, match="no_such_backbone"):
        dm.load_task("driving_detection", folder / "driving_detection.safetensors")


def test_a_checkpoint_of_another_task_is_refused_naming_what_it_holds(demo_env):
    medical = demo_env["checkpoints"] / "medical_unet.ckpt"
    with pytest.raises(CheckpointMismatchError, match="MedicalSegmentationTask"):
        dm.load_task("driving_detection", medical)


def test_an_accident_checkpoint_ships_and_loads_back(demo_env, tmp_path, capsys):
    """ship_weights' checkpoint route on the tiny anticipator: fp16 safetensors whose sha256 is in the card,
    loaded back with safe loading into the same network (same outputs within fp16), the card's figures and
    operating point (the model's alarm threshold) measured on the fixture clips."""
    from apps.ship_weights import main, ship_checkpoint
    from tests.apps.tiny import ACCIDENT_ALARM, ACCIDENT_INPUT

    ckpt = demo_env["checkpoints"] / "driving_accident.ckpt"
    out = tmp_path / "weights"
    overrides = {"data_path": str(demo_env["accident"]), "image_size": list(ACCIDENT_INPUT), "batch_size": 2}
    out.mkdir()
    card = ship_checkpoint("driving_accident", ckpt, out, command="python -m x fit", device="CPU", date="2026-01-02",
                           data_overrides=overrides)  # fmt: skip
    path = out / "driving_accident.safetensors"
    assert json.loads((out / "driving_accident.json").read_text()) == card
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert {"command", "data", "seed", "date", "test", "subset", "sha256", "operating_point"} <= set(card)
    assert card["date"] == "2026-01-02" and card["command"] == "python -m x fit" and card["seed"] == 0
    # the command names no config: the optimiser comes from the task's own config, the steps from the checkpoint
    assert card["training"]["optimizer"]["class_path"] == "torch.optim.AdamW"
    assert card["training"].get("global_step", 0) == torch.load(ckpt, weights_only=True)["global_step"]
    assert card["operating_point"]["threshold"] == pytest.approx(ACCIDENT_ALARM, abs=1e-3)
    for name in ("test/video_ap", "test/frame_ap", "test/mtta", "test/tta_r80", "test/near_miss_false_alarms",
                 "test/ece"):  # fmt: skip
        assert name in card["test"] and name in card["subset"]["metrics"], name
    assert card["network"].startswith("AccidentAnticipator (gru, hidden 8) on tiny_cnn frames, input [24, 48]")
    tensors = load_file(str(path))  # safetensors: plain tensors, nothing unpickled
    # fp16 weights; scalars (a fitted temperature, an alarm threshold) stay fp32 so their rounding moves nothing
    assert {t.dtype for t in tensors.values() if t.is_floating_point() and t.dim() > 0} == {torch.float16}
    shipped = dm.load_task("driving_accident", path)  # sha256 check + strict load of the card's network
    original = dm.load_task("driving_accident", ckpt)
    frames, boxes = torch.rand(1, 4, 3, *ACCIDENT_INPUT), torch.tensor([[[[2.0, 2.0, 20.0, 16.0]]] * 4])
    valid = torch.ones(1, 4, 1, dtype=torch.bool)
    with torch.no_grad():
        a = shipped.model(frames=frames, boxes=boxes, box_valid=valid)["horizon_logits"]
        b = original.model(frames=frames, boxes=boxes, box_valid=valid)["horizon_logits"]
    torch.testing.assert_close(a, b, atol=0.02, rtol=0.01)
    # a changed file is refused; a checkpoint route for a key that ships from gpu_recipes runs is a usage error
    path.write_bytes(path.read_bytes()[:-2] + b"\0\0")
    with pytest.raises(dm.WeightFileError, match="sha256"):
        dm.load_task("driving_accident", path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["--checkpoint", f"driving_detection={ckpt}", "--out", str(out)])
    assert stop.value.code == 2 and "--checkpoint 'driving_detection=" in (err := capsys.readouterr().err)
    assert "expected KEY=PATH with KEY one of" in err
    # one data root cannot serve two tasks' layouts
    with pytest.raises(SystemExit) as stop:
        main(["--checkpoint", f"driving_accident={ckpt}", "--checkpoint", f"driving_instances={ckpt}",
              "--data-path", str(tmp_path), "--out", str(out)])  # fmt: skip
    assert stop.value.code == 2 and "--data-path applies to one --checkpoint" in capsys.readouterr().err


def test_an_instance_checkpoint_ships_with_subset_figures_and_an_operating_point(demo_env, tmp_path):
    """ship_weights' checkpoint route on the tiny Mask R-CNN: fp16 safetensors + card (whole-split fp32 figures,
    the fp16 subset figures that subset_figures reproduces, the best-F1 threshold on validation, the best and
    worst test frames), loaded back into the same network."""
    from apps.ship_weights import instance_datamodule, main, subset_figures

    ckpt = demo_env["checkpoints"] / "driving_instances.ckpt"
    out = tmp_path / "weights"
    command = "python benchmarks/driving_instances.py --config domains/driving/instances/configs/quick.yaml"
    assert main(["--checkpoint", f"driving_instances={ckpt}", "--out", str(out), "--command", command,
                 "--device", "2 CPU cores", "--date", "2026-01-02"]) == 0  # fmt: skip
    path = out / "driving_instances.safetensors"
    card = json.loads((out / "driving_instances.json").read_text())
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (
        card["config"] == "domains/driving/instances/configs/quick.yaml" and card["device"] == "2 CPU cores"
    )
    assert card["network"].startswith("Mask R-CNN on tiny_cnn, input [64, 128]")
    assert card["data_hyper_parameters"]["data_path"] == str(demo_env["instances"])
    for name in HEADLINE["driving_instances"]:
        assert 0 <= card["test"][name] <= 1 and 0 <= card["subset"]["metrics"][name] <= 1, name
    assert card["subset"]["images"] == 12
    point = card["operating_point"]
    assert point["split"] == "val" and point["images"] > 0
    assert point["threshold"] in np.round(np.arange(0.05, 1.0, 0.05), 2) and 0 <= point["f1"] <= 1
    tensors = load_file(str(path))
    assert {t.dtype for t in tensors.values() if t.is_floating_point() and t.dim() > 0} == {torch.float16}
    shipped = dm.load_task("driving_instances", path)  # sha256 check + strict load of the card's network
    original = dm.load_task("driving_instances", ckpt)
    for name, value in original.model.state_dict().items():
        fp16 = value.half().to(value.dtype) if value.is_floating_point() and value.dim() > 0 else value
        torch.testing.assert_close(shipped.model.state_dict()[name], fp16, msg=name)
    figures = subset_figures("driving_instances", shipped, card["data_hyper_parameters"])
    assert {k: figures[k] for k in HEADLINE["driving_instances"]} == {
        k: card["subset"]["metrics"][k] for k in HEADLINE["driving_instances"]
    }
    # the best and worst test frame, copied beside the weights' folder with their KITTI labels (as the
    # detector's); recorded as absolute paths here, the folder lying outside the repository
    examples = card["examples"]
    assert examples["rule"].startswith(f"per-image box F1 at score >= {point['threshold']:g}")
    test_ids = {a.image_id for a in instance_datamodule(card["data_hyper_parameters"]).splits["test"]}
    for which in ("best", "worst"):
        example = examples[which]
        copied = dm.ROOT / example["file"]
        assert copied == (tmp_path / "examples" / f"instances_{which}.png").resolve(), example
        assert example["id"] in test_ids and 0 <= example["f1"] <= 1
        source = demo_env["instances"] / "training"
        assert copied.read_bytes() == (source / "image_2" / f"{example['id']}.png").read_bytes()
        label = (source / "label_2" / f"{example['id']}.txt").read_text()
        assert copied.with_suffix(".txt").read_text() == label
    best, worst = examples["best"], examples["worst"]
    assert best["f1"] >= worst["f1"] and best["id"] != worst["id"]


def test_examples_are_the_best_and_worst_crowded_frames_copied_with_their_labels(tmp_path, monkeypatch):
    """copy_examples on hand-made scores: frames with fewer than EXAMPLE_MIN_OBJECTS objects are passed over
    (unless no frame has that many), the image and its KITTI label are copied, the path is kept relative to
    the repository when the folder lies in it."""
    from apps import ship_weights
    from apps.ship_weights import EXAMPLE_MIN_OBJECTS, copy_examples
    from domains.driving.instances.data import InstanceAnnotation

    tmp_path = tmp_path.resolve()  # the recorded paths are resolved ones
    images, labels = tmp_path / "training" / "image_2", tmp_path / "training" / "label_2"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    annotations = []
    for image_id in ("a", "b", "c", "d"):
        (images / f"{image_id}.png").write_bytes(image_id.encode())
        (labels / f"{image_id}.txt").write_text(f"label of {image_id}\n")
        annotations.append(InstanceAnnotation(str(images / f"{image_id}.png"), 4, 2))
    crowd = EXAMPLE_MIN_OBJECTS
    # "a" scores best and "d" worst, but each has too few objects: "b" (0.8) and "c" (0.3) are the examples
    scored = [(1.0, "a", crowd - 1), (0.8, "b", crowd), (0.3, "c", crowd + 2), (0.0, "d", 1)]
    out = tmp_path / "examples"
    out.mkdir()
    examples = copy_examples(scored, annotations, out, "instances")
    assert examples == {
        "best": {"id": "b", "f1": 0.8, "file": (out / "instances_best.png").as_posix()},
        "worst": {"id": "c", "f1": 0.3, "file": (out / "instances_worst.png").as_posix()},
    }
    assert (out / "instances_best.png").read_bytes() == b"b"
    assert (out / "instances_worst.txt").read_text() == "label of c\n"
    # no crowded frame: every frame counts
    sparse = [(1.0, "a", 1), (0.0, "d", 1)]
    assert {w: e["id"] for w, e in copy_examples(sparse, annotations, out, "x").items()} == {
        "best": "a",
        "worst": "d",
    }
    # a folder inside the repository: the path relative to it, as the shipped cards record it
    monkeypatch.setattr(ship_weights, "ROOT", tmp_path)
    inside = copy_examples(scored, annotations, out, "instances")
    assert inside["best"]["file"] == "examples/instances_best.png"


@pytest.mark.slow
@pytest.mark.parametrize("key", KEYS)
def test_shipped_weights_reproduce_their_card_figures(key, work_dir, monkeypatch):
    """The card's subset figures again, from the fp16 file, within TOLERANCE (about 1 minute per model). The
    cards' data is the default synthetic set, generated under the working directory's data/: a test folder's."""
    from apps.ship_weights import subset_figures

    monkeypatch.chdir(work_dir)
    card = _card(key)
    task = dm.load_task(key, dm.SHIPPED_DIR / f"{key}.safetensors")
    figures = subset_figures(key, task, card["data_hyper_parameters"])
    group = "medical" if key in dm.MEDICAL_KEYS else key
    for name in HEADLINE[group]:
        assert figures[name] == pytest.approx(card["subset"]["metrics"][name], abs=TOLERANCE[group]), name


def test_accident_card_names_its_motion_lags_only_when_set():
    args = {"backbone": "tiny_cnn", "hidden": 64, "input_size": [64, 224], "horizons": [0.5, 2.0]}
    plain = dm.network_name("driving_accident", {"network": {"init_args": args}})
    assert (
        plain
        == "AccidentAnticipator (gru, hidden 64) on tiny_cnn frames, input [64, 224], horizons [0.5, 2.0] s"
    )
    boxes = dm.network_name("driving_accident", {"network": {"init_args": {**args, "input_kind": "boxes"}}})
    assert (
        boxes
        == "AccidentAnticipator (gru, hidden 64) on object boxes and motion (no pixels), horizons [0.5, 2.0] s"
    )
    lagged = dm.network_name("driving_accident", {"network": {"init_args": {**args, "motion_lags": [1, 5]}}})
    assert lagged == plain + ", motion lags [1, 5] frames"
    assert (
        dm.network_name("driving_accident", {"network": {"init_args": {**args, "motion_lags": [1]}}}) == plain
    )
