r"""Turn finished training runs into the demo's shipped weights: ``apps/weights/<key>.safetensors`` + card.

    python -m apps.ship_weights --runs gpu_runs          # the folder benchmarks/gpu_recipes.py wrote
    python -m apps.ship_weights --checkpoint driving_accident=lightning_logs/driving_accident/full/checkpoints/last.ckpt \
        --command "python -m domains.driving.accident fit -c domains/driving/accident/configs/full.yaml" --device "..."

Per demo model: the plain network's weights (``task.model``) as fp16 safetensors (tensors only: loading runs no
code), and a JSON model card beside it: the command, data and seed, date, device, the run's test figures, the
file's sha256, and figures measured here on the CPU with the fp16 weights on a fixed subset of the test split
(what ``tests/apps/test_shipped_weights.py`` reproduces). The card also carries what the pages start from: the
detector's best-F1 score threshold on the validation split (the one the task fitted during training, its
``operating_threshold`` buffer in the run's weights; fitted here only for a run without one), the anomaly
threshold at 95 % TPR on validation images with pasted outliers, and the best and worst test examples.

Models trained outside ``gpu_recipes`` (the accident anticipator, the instance segmenter) ship from their
Lightning checkpoint (``--checkpoint KEY=PATH``, loaded with ``weights_only=True``): their test figures are
measured here on the CPU on the checkpoint's own data module's test split, once with the fp32 checkpoint
(``test``: the whole split) and once with the fp16 file (``subset``: the accident model's whole split, the
instance model's first ``SUBSET`` images, which the reproduction test runs again in seconds). Operating points:
the alarm threshold the accident model fitted on validation clips; the instance model's best-F1 score threshold
on the validation split (the detector's rule, boxes matched at IoU 0.5). The instance model's best and worst
test frames (copied to ``apps/examples/instances_*``, as the detector's) rank by per-image box F1 there.

    python -m apps.ship_weights --checkpoint driving_instances=inst.ckpt \
        --command "python benchmarks/driving_instances.py --config ... --save-checkpoint inst.ckpt" --device "..."
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import yaml
from safetensors.torch import load_file, save_file

from apps import demo_models as dm

ROOT = Path(__file__).resolve().parents[1]
#: demo key -> the run of benchmarks/gpu_recipes.py it is cut from
RUN_OF = {
    "medical_unet": "unet",
    "medical_prob_unet": "prob_unet",
    "medical_hpu_net": "hpu_net",
    "driving_detection": "detection_2x",
    "driving_anomaly": "anomaly",
}
#: test images of the fixed subset the card's CPU figures use (the reproduction test runs the same)
SUBSET = {"medical": 64, "driving_detection": 40, "driving_anomaly": 40, "driving_instances": 12}
#: keys shipped from a Lightning checkpoint (ship_checkpoint) rather than a gpu_recipes run
FROM_CHECKPOINT = ("driving_accident", "driving_instances")
#: images per batch of the instance evaluations (SUBSET["driving_instances"] is a multiple of it)
INSTANCE_BATCH = 4


def _trainer(**overrides) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **overrides,
    )


def medical_datamodule(data_hp: dict, test_items: int):
    """The run's medical data settings on the CPU, in this process, the test split cut to ``test_items``."""
    from domains.medical.data import MedicalDataModule

    return MedicalDataModule(**{**data_hp, "num_workers": 0, "max_items": {"test": test_items}})


def detection_datamodule(data_hp: dict):
    from domains.driving.detection.data import DetectionDataModule

    data = DetectionDataModule(**{**data_hp, "num_workers": 0, "batch_size": 4})
    data.setup("test")
    return data


def anomaly_datamodule(data_hp: dict):
    from domains.driving.anomaly.data import SegmentationDataModule

    data = SegmentationDataModule(**{**data_hp, "num_workers": 0, "batch_size": 4})
    data.setup("fit")
    data.setup("test")
    return data


def instance_datamodule(data_hp: dict):
    """The checkpoint's instance data settings on the CPU, in this process (splits ready)."""
    from domains.driving.instances.data import InstanceDataModule

    data = InstanceDataModule(**{**data_hp, "num_workers": 0, "batch_size": INSTANCE_BATCH})
    data.prepare_data()
    data.setup("fit")
    return data


def subset_figures(key: str, task, data_hp: dict) -> dict[str, float]:
    """The card's ``subset`` test figures again (what the reproduction test compares)."""
    if key == "driving_accident":
        return accident_figures(task, data_hp)
    if key == "driving_instances":
        return instance_figures(task, data_hp, SUBSET[key])
    if key == "medical" or key in dm.MEDICAL_KEYS:
        data = medical_datamodule(data_hp, SUBSET["medical"])
        limit = {}
    elif key in ("driving_detection", "driving_anomaly"):
        data = detection_datamodule(data_hp) if key == "driving_detection" else anomaly_datamodule(data_hp)
        limit = {"limit_test_batches": SUBSET[key] // data.batch_size}
    else:
        raise ValueError(
            f"subset_figures: no test subset for key {key!r}; known keys: {['medical', *dm.DEMO_MODELS]}"
        )
    pl.seed_everything(0, verbose=False)
    return _figures(_trainer(**limit).test(task, datamodule=data, verbose=False)[0])


def _figures(metrics: dict) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in metrics.items() if k.startswith("test/")}


# --------------------------------------------------------------------------------------------- evaluation


def evaluate_medical(task, data_hp: dict) -> dict:
    """Test figures on the first ``SUBSET["medical"]`` test images, and the best / worst image by GED."""
    from domains.medical.metrics import generalized_energy_distance, majority_vote

    n = SUBSET["medical"]
    figures = subset_figures("medical", task, data_hp)
    data = medical_datamodule(data_hp, n)
    data.setup("test")
    per_image = []
    torch.manual_seed(0)
    for batch in data.test_dataloader():
        samples = task.sample(batch["image"]) >= task.threshold
        for i, image_id in enumerate(batch["id"]):
            lesion = bool(majority_vote(batch["masks"][i : i + 1]).any())
            per_image.append((generalized_energy_distance(samples[i], batch["masks"][i]), lesion, image_id))
    with_lesion = [p for p in per_image if p[1]] or per_image
    best, worst = min(with_lesion), max(per_image)
    return {
        "subset": {"split": "test", "images": n, "seed": 0, "metrics": figures},
        "examples": {
            "best": {"id": best[2], "ged": round(best[0], 4)},
            "worst": {"id": worst[2], "ged": round(worst[0], 4)},
        },
    }


def evaluate_detection(task, data_hp: dict, examples_dir: Path, fitted: float | None = None) -> dict:
    """Subset test figures, the operating point on the validation split, best / worst test frame (copied).

    ``fitted``: the best-F1 threshold the task fitted at the run's last validation (its ``operating_threshold``
    buffer): the card records it, with its F1, precision and recall on the validation split measured here.
    None or NaN (a run from before the task fitted one): the threshold is fitted here, by the same rule, with
    a warning and the card's ``rule`` saying so."""
    from domains.driving.detection.operating_point import best_f1_threshold, per_image_f1

    figures = subset_figures("driving_detection", task, data_hp)
    data = detection_datamodule(data_hp)
    batches = SUBSET["driving_detection"] // data.batch_size
    rule = "best pooled F1, IoU 0.5 (detections mostly in DontCare regions dropped)"
    val_boxes = _detection_boxes(task, data.val_dataloader())
    if fitted is not None and np.isfinite(fitted):
        point = best_f1_threshold(*val_boxes, thresholds=(float(fitted),))
        rule += ", fitted by the task at the run's last validation (operating_threshold)"
    else:
        warnings.warn(
            "driving_detection: the run's weights hold no fitted operating_threshold; fitting the best-F1 "
            "threshold on the validation split here, with the fp16 weights",
            stacklevel=2,
        )
        point = best_f1_threshold(*val_boxes)
        rule += ", fitted here with the fp16 weights (the run's weights hold no operating_threshold)"
    preds, targets = _detection_boxes(task, data.test_dataloader(), batches)
    scored = [
        (per_image_f1(p, t, point["threshold"]), t["image_id"], len(t["boxes"]))
        for p, t in zip(preds, targets)
    ]
    return {
        "subset": {"split": "test", "images": batches * data.batch_size, "seed": 0, "metrics": figures},
        "operating_point": {"split": "val", "rule": rule, **_rounded(point)},
        "examples": copy_examples(scored, data.splits["test"], examples_dir, "detection"),
    }


#: frames with fewer ground-truth objects are not offered as examples (a one-car frame shows little)
EXAMPLE_MIN_OBJECTS = 3


def copy_examples(scored: list[tuple[float, str, int]], annotations, examples_dir: Path, name: str) -> dict:
    """The best and worst of ``scored`` (per-image F1, image id, ground-truth objects) among frames with at
    least ``EXAMPLE_MIN_OBJECTS`` objects (all frames when none has), copied to ``<name>_best.png`` /
    ``<name>_worst.png`` in ``examples_dir`` with their KITTI label files; their card record (the file
    relative to the repository when it lies inside it, as the pages read it)."""
    crowded = [s[:2] for s in scored if s[2] >= EXAMPLE_MIN_OBJECTS] or [s[:2] for s in scored]
    by_id = {a.image_id: a for a in annotations}
    examples = {}
    for which, (f1, image_id) in (("best", max(crowded)), ("worst", min(crowded))):
        source = Path(by_id[image_id].image_path)
        target = examples_dir / f"{name}_{which}{source.suffix}"
        shutil.copyfile(source, target)
        label = source.parent.parent / "label_2" / f"{image_id}.txt"
        if label.is_file():
            shutil.copyfile(label, target.with_suffix(".txt"))
        file = target.resolve()
        file = file.relative_to(ROOT) if file.is_relative_to(ROOT) else file
        examples[which] = {"id": image_id, "f1": round(f1, 4), "file": file.as_posix()}
    return examples


@torch.no_grad()
def _detection_boxes(task, loader, batches: int | None = None) -> tuple[list[dict], list[dict]]:
    """Per image of ``loader`` (its first ``batches``): the detections in the original pixels with those mostly
    in DontCare regions dropped (:meth:`~domains.driving.detection.task.DetectionTask.scored_original`; the
    operating point's rule, simpler than COCO's crowd matching in the metrics) and the ground truth there."""
    task.eval()
    preds, targets = [], []
    for b, (images, batch_targets) in enumerate(loader):
        if batches is not None and b >= batches:
            break
        for target, (_, kept, gt, _) in zip(batch_targets, task.scored_original(images, batch_targets)):
            preds.append(kept)
            targets.append({**gt, "image_id": target["image_id"]})
    return preds, targets


def evaluate_anomaly(task, data_hp: dict) -> dict:
    """Subset test figures, the 95 %-TPR threshold on validation images with pasted outliers, and the best /
    worst test scene by per-image AP."""
    from domains.driving.anomaly.metrics import PixelAnomalyAccumulator
    from domains.driving.anomaly.outliers import OUTLIER_LABEL, paste_outliers_batch

    figures = subset_figures("driving_anomaly", task, data_hp)
    data = anomaly_datamodule(data_hp)
    batches = SUBSET["driving_anomaly"] // data.batch_size
    model = task.model.eval()
    rng = np.random.default_rng(0)
    outlier, inlier = [], []
    for batch in data.val_dataloader():
        images, masks, _ = paste_outliers_batch(batch["image"], batch["mask"], rng, prob=1.0)
        score = model.scores(images, [task.score], smoothing=task.score_smoothing)[task.score]
        outlier.append(score[masks == OUTLIER_LABEL].numpy())
        inlier.append(score[(masks != OUTLIER_LABEL) & (masks != 255)].numpy())
    outlier, inlier = np.concatenate(outlier), np.concatenate(inlier)
    threshold = float(np.quantile(outlier, 0.05))  # 95 % of outlier pixels score at least this
    per_image = []
    for b, batch in enumerate(data.test_dataloader()):
        if b >= batches:
            break
        maps = model.scores(batch["image"], [task.score], smoothing=task.score_smoothing)[task.score]
        for score, label, name in zip(maps.numpy(), batch["label"].numpy(), batch["name"]):
            if (label == 1).any():
                acc = PixelAnomalyAccumulator()
                acc.update(score, label, name=name)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    per_image.append((acc.compute()["ap"], str(name)))
    best, worst = max(per_image), min(per_image)
    return {
        "subset": {"split": "test", "images": batches * data.batch_size, "seed": 0, "metrics": figures},
        "operating_point": {
            "split": "val with pasted outliers (seed 0)",
            "rule": "95 % of outlier pixels at or above",
            "score": task.score,
            "threshold": round(threshold, 4),
            "tpr": 0.95,
            "fpr": round(float((inlier >= threshold).mean()), 4),
        },
        "examples": {
            "best": {"id": best[1], "ap": round(best[0], 4)},
            "worst": {"id": worst[1], "ap": round(worst[0], 4)},
        },
    }


def accident_datamodule(data_hp: dict):
    """The checkpoint's accident data settings on the CPU, in this process, whole clips."""
    from domains.driving.accident.data import AccidentDataModule

    return AccidentDataModule(**{**data_hp, "num_workers": 0})


def accident_figures(task, data_hp: dict) -> dict[str, float]:
    """Test figures of the accident task on the whole test split of ``data_hp``'s data (video AP, frame AP,
    mTTA, TTA@R80, near-miss false alarms, ECE, ...) at the model's own temperature and alarm threshold."""
    pl.seed_everything(0, verbose=False)
    return _figures(_trainer().test(task, datamodule=accident_datamodule(data_hp), verbose=False)[0])


def instance_figures(task, data_hp: dict, images: int | None = None, data=None) -> dict[str, float]:
    """Mask and box AP of the instance task on the first ``images`` test images (None: the whole test split);
    ``data``: :func:`instance_datamodule`'s result when the caller has it (reading the set takes seconds)."""
    data = data or instance_datamodule(data_hp)
    limit = {} if images is None else {"limit_test_batches": max(1, images // INSTANCE_BATCH)}
    pl.seed_everything(0, verbose=False)
    return _figures(_trainer(**limit).test(task, datamodule=data, verbose=False)[0])


@torch.no_grad()
def instance_operating_point(task, data_hp: dict, data=None) -> dict:
    """The score threshold with the best pooled F1 on the validation split: the detector's rule
    (:func:`~domains.driving.detection.operating_point.best_f1_threshold`, boxes matched at IoU 0.5 within a
    class), on the instance model's boxes, after the evaluation's own DontCare filter. IoU does not change when
    both axes are scaled, so the boxes stay in the tensors' pixels."""
    from domains.driving.detection.operating_point import best_f1_threshold

    data = data or instance_datamodule(data_hp)
    preds, targets = _instance_boxes(task, data.val_dataloader())
    point = best_f1_threshold(preds, targets)
    return {
        "split": "val",
        "rule": "best pooled F1, box IoU 0.5 (detections mostly in DontCare regions dropped)",
        "images": len(preds),
        **_rounded(point),
    }


def _instance_boxes(task, loader) -> tuple[list[dict], list[dict]]:
    """Per image of ``loader``: the instance model's boxes with the detections mostly inside ignore regions
    dropped (the operating point's rule, as for the detector's), and the ground truth's boxes."""
    from domains.driving.instances.metrics import masks_in_ignore_fraction

    model = task.model.eval()
    preds, targets = [], []
    for images, batch_targets in loader:
        for pred, target in zip(model(images), batch_targets):
            masks = pred["masks"] >= task.mask_thresh
            keep = masks_in_ignore_fraction(masks, target["ignore_mask"]) <= task.ignore_overlap
            preds.append({k: pred[k][keep] for k in ("boxes", "scores", "labels")})
            targets.append({k: target[k] for k in ("boxes", "labels", "image_id")})
    return preds, targets


@torch.no_grad()
def instance_examples(task, data, threshold: float, examples_dir: Path) -> dict:
    """The best and worst test frame of the instance model, copied to ``instances_best`` / ``_worst``: ranked
    by per-image box F1 at the card's operating point (``threshold``; boxes matched at IoU 0.5 within a class,
    the rule that chose the threshold), over the whole test split. Box F1 rather than mask AP50: it is what a
    viewer sees at the page's starting slider (kept or missed objects), and a frame's AP over a handful of
    objects jumps with one score swap."""
    from domains.driving.detection.operating_point import per_image_f1

    preds, targets = _instance_boxes(task, data.test_dataloader())
    scored = [(per_image_f1(p, t, threshold), t["image_id"], len(t["boxes"])) for p, t in zip(preds, targets)]
    examples_dir.mkdir(parents=True, exist_ok=True)
    examples = copy_examples(scored, data.splits["test"], examples_dir, "instances")
    return {**examples, "rule": f"per-image box F1 at score >= {threshold:g}, IoU 0.5, whole test split"}


def _plain_fp16(task) -> dict[str, torch.Tensor]:
    """The plain network's state dict in fp16, except scalars (a fitted temperature or alarm threshold: an
    fp16 threshold may round below a validation clip's peak risk and change the false-alarm rate it holds)."""
    return {
        k: (v.half() if v.is_floating_point() and v.dim() > 0 else v).contiguous()
        for k, v in task.model.state_dict().items()
    }


def ship_checkpoint(
    key: str,
    checkpoint: Path,
    out: Path,
    command: str | None = None,
    device: str | None = None,
    date: str | None = None,
    seed: int = 0,
    data_overrides: dict | None = None,
) -> dict:
    """A Lightning checkpoint of ``key`` -> ``<out>/<key>.safetensors`` (fp16 plain network) + model card.

    ``data_overrides`` change the checkpoint's data-module settings for the evaluation (e.g. ``data_path``
    where the data are on this machine); they are recorded in the card."""
    checkpoint = Path(checkpoint)
    stored = dm.read_checkpoint(checkpoint)  # weights_only=True
    hparams = {k: v for k, v in (stored.get("hyper_parameters") or {}).items() if not k.startswith("_")}
    data_hp = {
        k: v for k, v in (stored.get("datamodule_hyper_parameters") or {}).items() if not k.startswith("_")
    }
    data_hp.update(data_overrides or {})
    task = dm.load_task(key, checkpoint)  # the checked load: a checkpoint of another task is refused here
    weights = out / f"{key}.safetensors"
    save_file(
        _plain_fp16(task), str(weights), metadata={"key": key, "format": "state_dict of task.model, fp16"}
    )
    hparams = json.loads(json.dumps(hparams))  # tuples -> lists, as the card stores them
    shipped = dm.load_shipped_weights(key, weights, {"hyper_parameters": hparams})
    spec = dm.DEMO_MODELS[key]
    evaluation = (
        _accident_evaluation(task, shipped, hparams, data_hp)
        if key == "driving_accident"
        else _instance_evaluation(task, shipped, data_hp, out.parent / "examples")
    )
    card = {
        "key": key,
        "title": spec.title,
        "task": spec.task,
        "network": dm.network_name(key, hparams),
        "weights": weights.name,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "dtype": "float16",
        "date": date or datetime.date.fromtimestamp(checkpoint.stat().st_mtime).isoformat(),
        "command": command or f"python -m {spec.module} fit -c {spec.config}",
        "config": spec.config
        if command is None
        else " + ".join(_configs({"command": command})) or spec.config,
        "checkpoint": str(checkpoint),
        "device": device or "not recorded",
        "data": dm.data_description(key, data_hp),
        "seed": int(seed),
        "hyper_parameters": hparams,
        "training": _checkpoint_training(stored, hparams, command, spec.config),
        "data_hyper_parameters": json.loads(json.dumps(data_hp)),
        "settings": {},
        **evaluation,
    }
    (out / f"{key}.json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    return card


_TEST_NOTE = "whole test split of the data module above, fp32 checkpoint, on this machine's CPU"


def _accident_evaluation(task, shipped, hparams: dict, data_hp: dict) -> dict:
    model = shipped.model
    return {
        "test": accident_figures(task, data_hp),
        "test_note": _TEST_NOTE,
        "subset": {"split": "test", "clips": "all", "seed": 0, "metrics": accident_figures(shipped, data_hp)},
        "operating_point": {
            "split": "val",
            "rule": "lowest alarm threshold whose false-alarm rate on negative validation clips stays within "
            f"max_false_alarm {hparams.get('max_false_alarm', 0.1)} (fitted by the task, stored in the weights)",
            "threshold": round(float(model.alarm_threshold), 4),
            "temperature": round(float(model.temperature), 4),
            "horizon_s": model.alarm_horizon,
        },
    }


def _instance_evaluation(task, shipped, data_hp: dict, examples_dir: Path) -> dict:
    n = SUBSET["driving_instances"]
    data = instance_datamodule(data_hp)  # read once for the four evaluations
    evaluation = {
        "test": instance_figures(task, data_hp, data=data),
        "test_note": _TEST_NOTE,
        "subset": {
            "split": "test",
            "images": n,
            "seed": 0,
            "metrics": instance_figures(shipped, data_hp, n, data=data),
        },
        "operating_point": instance_operating_point(shipped, data_hp, data=data),
    }
    threshold = evaluation["operating_point"]["threshold"]
    return {**evaluation, "examples": instance_examples(shipped, data, threshold, examples_dir)}


def _rounded(values: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}


# ------------------------------------------------------------------------------------------------ shipping


def ship(key: str, runs: Path, out: Path) -> dict:
    run_name = RUN_OF[key]
    record = json.loads((runs / f"{run_name}.json").read_text(encoding="utf-8"))
    hparams = {k: v for k, v in record["hyper_parameters"].items() if not k.startswith("_")}
    data_hp = {k: v for k, v in record["data_hyper_parameters"].items() if not k.startswith("_")}
    settings = _settings(key, record)
    task = dm.build_task(key, hparams, settings)
    state = {k: v.float() for k, v in load_file(str(runs / f"{run_name}.safetensors")).items()}
    checkpoint = {"state_dict": state}
    task.on_load_checkpoint(checkpoint)  # the checks of a loaded checkpoint: weights of another shape are named
    task.load_state_dict(checkpoint["state_dict"], strict=False)
    missing = set(task.model.state_dict()) - {k[len("model.") :] for k in checkpoint["state_dict"]}
    if missing:
        raise KeyError(f"{run_name}.safetensors lacks {sorted(missing)[:5]}")
    # the detector's operating point lives on the task, not in task.model: read it before the plain network
    # is shipped (NaN where the run has none; gpu_recipes stores it in fp16)
    fitted = float(task.operating_threshold) if key == "driving_detection" else None
    weights = out / f"{key}.safetensors"
    save_file(
        _plain_fp16(task), str(weights), metadata={"key": key, "format": "state_dict of task.model, fp16"}
    )
    task = dm.load_shipped_weights(key, weights, {"hyper_parameters": hparams, "settings": settings})
    if key.startswith("medical"):
        evaluation = evaluate_medical(task, data_hp)
    elif key == "driving_detection":
        evaluation = evaluate_detection(task, data_hp, out.parent / "examples", fitted)
    else:
        evaluation = evaluate_anomaly(task, data_hp)
    card = {
        "key": key,
        "title": dm.DEMO_MODELS[key].title,
        "task": dm.DEMO_MODELS[key].task,
        "network": dm.network_name(key, hparams),
        "weights": weights.name,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "dtype": "float16",
        "date": record.get("date") or datetime.date.today().isoformat(),
        "command": record["command"],
        "config": " + ".join(_configs(record)),
        "budget": "python benchmarks/gpu_recipes.py --out-dir gpu_runs --fit-seconds 390 "
        f"(fit {record['fit_seconds'] / 60:.1f} min, {record['steps']} steps, {record['epochs']} epochs)",
        "device": record["device"],
        "data": dm.data_description(key, data_hp),
        "seed": 0,
        "hyper_parameters": hparams,
        "training": _training(record),
        "data_hyper_parameters": data_hp,
        "settings": settings,
        "test": {k: round(v, 4) for k, v in record["metrics"].items()},
        "test_note": f"full test split, fp32 weights, on {record['device']} (benchmarks/results/gpu_recipes.md)",
        **evaluation,
    }
    (out / f"{key}.json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    return card


def _configs(record: dict) -> list[str]:
    """The config files of a run, from its command (``... -c A -c B ...``, or a benchmark's ``--config A``)."""
    words = record["command"].split()
    return [words[i + 1] for i, word in enumerate(words[:-1]) if word in ("-c", "--config")]


def _training(record: dict) -> dict:
    """The optimiser and LR schedule the run's configs chose (the last config that sets one wins)."""
    chosen = {}
    for config in _configs(record):
        try:
            model = (yaml.safe_load((ROOT / config).read_text(encoding="utf-8")) or {}).get("model") or {}
        except OSError:  # a run's temporary config (e.g. /tmp/...) that is gone: nothing to read
            continue
        chosen.update({k: model[k] for k in ("optimizer", "lr_scheduler") if k in model})
    return chosen


def _checkpoint_training(stored: dict, hparams: dict, command: str | None, config: str) -> dict:
    """What trained a checkpoint: optimiser and schedule (the hyper-parameters if saved there, else the
    configs of its command, else the task's own config) and how far it got (optimiser steps, epochs; left out
    when 0: a checkpoint written by an evaluating trainer, as the benchmarks do, does not know them)."""
    chosen = _training({"command": command or ""}) or _training({"command": f"-c {config}"})
    chosen.update({k: hparams[k] for k in ("optimizer", "lr_scheduler") if k in hparams})
    progress = {"global_step": stored.get("global_step"), "epoch": stored.get("epoch")}
    return {**chosen, **{k: int(v) for k, v in progress.items() if v}}


def _settings(key: str, record: dict) -> dict:
    """Inference settings the run's config chose that checkpoints do not store (anomaly score, smoothing)."""
    if key != "driving_anomaly":
        return {}
    from domains.driving.anomaly.task import configured_score_smoothing

    model = (yaml.safe_load((ROOT / _configs(record)[0]).read_text(encoding="utf-8")) or {}).get("model") or {}
    return {"score": model.get("score", "outlier_prob"), "score_smoothing": configured_score_smoothing(model)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m apps.ship_weights", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, help="folder of benchmarks/gpu_recipes.py output")
    ap.add_argument("--keys", nargs="+", default=None, choices=list(RUN_OF), help="of --runs (default: all)")
    ap.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="KEY=PATH",
        help=f"ship a Lightning checkpoint of {', '.join(FROM_CHECKPOINT)} (repeatable)",
    )
    ap.add_argument("--command", help="with --checkpoint: the training command, for the card")
    ap.add_argument("--device", help="with --checkpoint: where it was trained, for the card")
    ap.add_argument("--date", help="with --checkpoint: training date (default: the checkpoint's mtime)")
    ap.add_argument("--seed", type=int, default=0, help="with --checkpoint: the run's seed_everything")
    ap.add_argument(
        "--data-path",
        help="with --checkpoint: the data's root on this machine, for the evaluation (default: the checkpoint's)",
    )
    ap.add_argument(
        "--out", type=Path, default=dm.SHIPPED_DIR,
        help="folder of the weights and cards (default apps/weights); the pages' example images go beside it, to "
        "OUT/../examples, where the pages read them from apps/examples",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if args.runs is None and not args.checkpoint:
        ap.error("give --runs (gpu_recipes output) and / or --checkpoint KEY=PATH")
    if args.data_path and len(args.checkpoint) > 1:  # each task reads its own layout (clips, KITTI, ...)
        ap.error("--data-path applies to one --checkpoint: ship the checkpoints one command each")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.runs is not None:
        (args.out.parent / "examples").mkdir(exist_ok=True)
        for key in args.keys or list(RUN_OF):
            card = ship(key, args.runs, args.out)
            size = (args.out / card["weights"]).stat().st_size / 2**20
            print(f"{key}: {card['weights']} {size:.1f} MB, subset {card['subset']['metrics']}", flush=True)
    for item in args.checkpoint:
        key, _, path = item.partition("=")
        if key not in FROM_CHECKPOINT or not path:
            ap.error(f"--checkpoint {item!r}: expected KEY=PATH with KEY one of {list(FROM_CHECKPOINT)}")
        overrides = {"data_path": args.data_path} if args.data_path else None
        card = ship_checkpoint(
            key, Path(path), args.out, args.command, args.device, args.date, args.seed, overrides
        )
        size = (args.out / card["weights"]).stat().st_size / 2**20
        print(f"{key}: {card['weights']} {size:.2f} MB, test {card['test']}", flush=True)
    return 0


if __name__ == "__main__":
    from shared.cli_help import report_input_errors

    with report_input_errors():  # a refused checkpoint, a missing file: `error: ...` in one line, exit status 1
        raise SystemExit(main())
