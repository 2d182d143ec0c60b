"""Which demo checkpoints exist, how to load them, and the inference the pages run (no Streamlit here).

Checkpoints live in one folder, ``$SUITE_DEMO_CHECKPOINTS`` (default ``demo_checkpoints/``), as
``<key>.ckpt`` plus ``<key>.json`` with the test figures :mod:`apps.prepare_demo` measured. Data roots come
from ``$SUITE_MEDICAL_DATA`` (LIDC PNG layout), ``$SUITE_ANOMALY_DATA`` (SegmentMeIfYouCan layout) and
``$SUITE_ACCIDENT_DATA`` (the synthetic / CCD clip layout), with the synthetic sets under ``data/`` as defaults.
What the demo generates goes under :func:`work_root`: the repository in a source checkout, the working directory
once the suite is installed (never into site-packages).
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from shared import shipped
from shared.shipped import WeightFileError

ROOT = Path(__file__).resolve().parents[1]
#: shipped demo weights: <key>.safetensors (fp16 state dict of the plain network) + <key>.json model card
SHIPPED_DIR = ROOT / "apps" / "weights"
ENV_WEIGHTS = "SUITE_DEMO_WEIGHTS"
ENV_CHECKPOINTS = "SUITE_DEMO_CHECKPOINTS"
ENV_MEDICAL_DATA = "SUITE_MEDICAL_DATA"
ENV_ANOMALY_DATA = "SUITE_ANOMALY_DATA"
ENV_ACCIDENT_DATA = "SUITE_ACCIDENT_DATA"
#: the synthetic sets under :func:`work_root`, as the generators' own defaults under the working directory
MEDICAL_DATA = Path("data", "medical", "synthetic_lidc")
ANOMALY_DATA = Path("data", "driving", "synthetic_anomaly")
ACCIDENT_DATA = Path("data", "driving_accident")  # the clip generator's DEFAULT_ACCIDENT_ROOT
#: two bundled clips in the synthetic layout (a crash and a near miss, mp4), shown when no clips are generated
ACCIDENT_EXAMPLES = ROOT / "apps" / "examples" / "accident"
#: object slots of the anticipator (UString's 19; the data module's max_objects default)
ACCIDENT_SLOTS = 19

#: the longest side a road photo is analysed at by the instance segmenter (at most; the network's own input
#: width when smaller). Mask R-CNN scales every image into its ``input_size`` box anyway and pastes each
#: instance's 28x28 mask at the size it was given, so a larger photo adds memory (one float map per detection
#: at that size, up to 100 of them) and no detail; masks stay at this size and only what is drawn is upscaled
INSTANCE_MAX_SIDE = 1280
#: the (height, width) box road photos are fitted into for the anomaly segmenter when its checkpoint does not
#: record the training size (the synthetic frames')
ANOMALY_FRAME = (192, 640)


_MEDICAL_HEADLINE = ("test/ged", "test/hungarian_iou", "test/dice", "test/diversity", "test/ece", "test/ece_majority")
#: what a card / checkpoint JSON of the accident model shows first (issue #18's targets)
ACCIDENT_HEADLINE = (
    "test/video_ap",
    "test/frame_ap",
    "test/mtta",
    "test/tta_r80",
    "test/near_miss_false_alarms",
    "test/ece",
)


@dataclass(frozen=True)
class DemoModel:
    """One checkpoint the demo can show, and how ``prepare_demo`` makes it."""

    key: str
    title: str
    domain: str  # the CLI's log folder: lightning_logs/<domain>/
    module: str  # python -m <module> fit|test
    config: str  # the (quick, minutes-long) config it trains, relative to the repository root
    task: str  # "module:Class"
    model_name: str | None = None  # medical: the network class that identifies the checkpoint
    fit_args: tuple[str, ...] = ()  # CLI overrides on top of the config (fit and test)
    weight: float = 1.0  # share of the training-time budget (prepare_demo --minutes)
    headline: tuple[str, ...] = _MEDICAL_HEADLINE  # test figures shown first (see format_metrics)


_MEDICAL_TASK = "domains.medical.task:MedicalSegmentationTask"
_MEDICAL_QUICK = "domains/medical/configs/quick.yaml"  # a small Prob U-Net on 64 px crops
_HPU_QUICK_KWARGS = {
    "channels": [16, 32, 64, 64, 64, 64, 64],
    "latent_channels": [1, 1, 1, 1],
    "blocks_per_level": 1,
    "convs_per_block": 2,
    "norm": "batch",
}


def _network(name: str, init_args: dict) -> str:
    """A ``--model.network`` value: one of domains.medical.models' networks with these arguments."""
    return json.dumps({"class_path": f"domains.medical.models.{name}", "init_args": init_args})


def _driving(task: str, title: str, task_class: str, config: str = "quick", **settings) -> DemoModel:
    """A driving task's demo model: its key and log folder (``driving_<task>``), CLI module, config (``quick``
    unless named) and task class all follow from the task's folder ``domains/driving/<task>/``."""
    key = f"driving_{task}"
    module = f"domains.driving.{task}"
    config = f"domains/driving/{task}/configs/{config}.yaml"
    return DemoModel(key, title, key, module, config, f"{module}.task:{task_class}", **settings)


MEDICAL_KEYS = ("medical_unet", "medical_prob_unet", "medical_hpu_net")
DEMO_MODELS: dict[str, DemoModel] = {
    "medical_unet": DemoModel(
        "medical_unet",
        "U-Net",
        "medical",
        "domains.medical",
        _MEDICAL_QUICK,
        _MEDICAL_TASK,
        "UNetSegmenter",
        ("--model.network", _network("UNetSegmenter", {"channels": [16, 32, 64, 128]})),
    ),
    "medical_prob_unet": DemoModel(
        "medical_prob_unet",
        "Probabilistic U-Net",
        "medical",
        "domains.medical",
        _MEDICAL_QUICK,
        _MEDICAL_TASK,
        "ProbabilisticUNet",
    ),
    "medical_hpu_net": DemoModel(
        "medical_hpu_net",
        "Hierarchical Probabilistic U-Net",
        "medical",
        "domains.medical",
        _MEDICAL_QUICK,
        _MEDICAL_TASK,
        "HierarchicalProbUNet",
        # the HPU-Net design of the shipped demo weights (residual levels down to 1x1, 4 one-channel latent
        # scales) for 64 px, narrower, with batch norm (as benchmarks/medical.py: without it a one-minute HPU-Net
        # collapses to one answer); hpu_net.yaml now uses 2 latent scales on the LIDC-like readers (see there)
        ("--model.network", _network("HierarchicalProbUNet", _HPU_QUICK_KWARGS)),
    ),
    "driving_detection": _driving(
        "detection",
        "FCOS road-object detector",
        "DetectionTask",
        weight=1.5,
        headline=("test/map50", "test/map", "test/kitti_moderate/mean", "test/ap50/"),
    ),
    "driving_instances": _driving(
        "instances",
        "Mask R-CNN road-user instances",
        "InstanceTask",
        # the shipped detector's backbone, frozen, at its own input size (minutes of CPU training from scratch
        # give almost no masks; the config names the weights file)
        config="transfer",
        weight=1.5,
        headline=("test/mask_map50", "test/box_map50", "test/mask_ap50/", "test/mask_map"),
    ),
    "driving_anomaly": _driving(
        "anomaly",
        "Road-anomaly segmenter",
        "AnomalySegmentationTask",
        # outlier exposure from the first step: a time-capped run may end inside the config's plain epoch 0
        fit_args=("--model.oe_start_epoch", "0"),
        weight=1.2,
        headline=("test/ap", "test/auroc", "test/fpr95", "test/mean_F1", "test/image_auroc"),
    ),
    "driving_accident": _driving(
        "accident",
        "Accident anticipator",
        "AccidentTask",
        weight=1.0,
        headline=ACCIDENT_HEADLINE,
    ),
}


# ------------------------------------------------------------------------------------------------ places


def source_checkout() -> bool:
    """Whether the suite runs from its source checkout (:data:`ROOT` holds ``pyproject.toml``), not installed
    (:data:`ROOT` is then site-packages, which is no place for data and may be read-only)."""
    return (ROOT / "pyproject.toml").is_file()


def work_root() -> Path:
    """Where the demo's defaults put what it generates (``data/``, ``demo_checkpoints/``, ``lightning_logs/``):
    the repository in a source checkout (``make demo`` runs there), else the working directory, as the CLI."""
    return ROOT if source_checkout() else Path.cwd()


def checkpoint_dir() -> Path:
    return Path(os.environ.get(ENV_CHECKPOINTS) or work_root() / "demo_checkpoints")


def default_medical_data() -> Path:
    """The synthetic LIDC-style set the medical page generates when ``$SUITE_MEDICAL_DATA`` is not set."""
    return work_root() / MEDICAL_DATA


def default_anomaly_data() -> Path:
    """The synthetic road-anomaly set the driving page generates when ``$SUITE_ANOMALY_DATA`` is not set."""
    return work_root() / ANOMALY_DATA


def medical_data_root() -> Path:
    return Path(os.environ.get(ENV_MEDICAL_DATA) or default_medical_data())


def anomaly_data_root() -> Path:
    return Path(os.environ.get(ENV_ANOMALY_DATA) or default_anomaly_data())


def accident_data_root() -> Path:
    return Path(os.environ.get(ENV_ACCIDENT_DATA) or work_root() / ACCIDENT_DATA)


def unwritable_data(what: str, root: Path, env: str, exc: OSError) -> str:
    """The page's message when the synthetic ``what`` cannot be generated in ``root`` (a read-only folder, no
    space): where, why, and the environment variable that points the page at another folder."""
    elsewhere = "" if source_checkout() else ", or start it from a writable working directory"
    return (
        f"Cannot generate the synthetic {what} in `{root}`: {type(exc).__name__}: {exc}. Restart the demo with "
        f"`{env}` set to a writable folder{elsewhere}."
    )


def checkpoint_path(key: str, folder: Path | None = None) -> Path:
    return (folder or checkpoint_dir()) / f"{key}.ckpt"


def metrics_path(key: str, folder: Path | None = None) -> Path:
    return (folder or checkpoint_dir()) / f"{key}.json"


def shipped_dir() -> Path:
    """Where the shipped weights are read from: ``$SUITE_DEMO_WEIGHTS`` or ``apps/weights``."""
    return Path(os.environ.get(ENV_WEIGHTS) or SHIPPED_DIR)


def shipped_path(key: str) -> Path:
    return shipped_dir() / f"{key}.safetensors"


def find_checkpoint(key: str) -> Path | None:
    """What the pages load for ``key``: a checkpoint retrained locally (``make demo-train``) if there is one,
    else the shipped weights; ``None`` when neither exists."""
    for path in (checkpoint_path(key), shipped_path(key)):
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=64)
def _parsed_json(path: str, mtime_ns: int) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_json(path: str | Path) -> dict:
    """A JSON file, parsed once per version of the file (the pages ask for cards and figures on every rerun);
    a copy, so callers may change it."""
    return copy.deepcopy(_parsed_json(str(path), Path(path).stat().st_mtime_ns))


def read_card(path: str | Path) -> dict:
    """The model card (JSON) beside a shipped weight file, parsed once per version of the file."""
    return shipped.read_card(path, read=read_json)


def read_metrics(key: str) -> dict | None:
    """Test figures of what :func:`find_checkpoint` gives: the JSON ``prepare_demo`` wrote beside a local
    checkpoint, or the shipped weights' model card; ``None`` when absent or unreadable."""
    path = find_checkpoint(key)
    if path is None:
        return None
    try:
        if path.suffix == ".safetensors":
            card = read_card(path)
            return {**card, "test": card.get("test", {})}
        return read_json(metrics_path(key))
    except (OSError, json.JSONDecodeError, WeightFileError):
        return None


def operating_point(key: str) -> dict:
    """The threshold the page starts from, recorded with the weights (empty for a checkpoint without one): the
    card's section that ``load_checked`` restores onto a shipped task too (:func:`shared.shipped.card_section`)."""
    try:
        return shipped.card_section(read_metrics(key) or {}, "operating_point")
    except WeightFileError:  # as an unreadable card: the page starts from its default
        return {}


def examples(key: str) -> dict:
    """Best and worst test examples recorded with the weights ({"best": {"id": ...}, "worst": ...})."""
    info = read_metrics(key) or {}
    return dict(info.get("examples") or {})


def prepare_command(*args: str) -> str:
    """The :mod:`apps.prepare_demo` command line with ``args``, as the user types it: the script in the
    checkout's ``.venv`` (what ``make demo`` installs), or the module form once installed (no such file there)."""
    base = ".venv/bin/python apps/prepare_demo.py" if source_checkout() else "python -m apps.prepare_demo"
    return " ".join((base, *args))


def demo_command(target: str, *args: str) -> str:
    """``make <target>`` in a source checkout (its Makefile), else the :func:`prepare_command` with ``args``
    that does the same for an installed suite."""
    return f"make {target}" if source_checkout() else prepare_command(*args)


def train_command(key: str) -> str:
    """What to run to (re)train the demo model ``key`` locally (shown on the pages when it is missing)."""
    return prepare_command("--train", "--only", key)


def format_metrics(metrics: dict | None, names: tuple[str, ...] = ("test/",), limit: int = 8) -> str:
    """``name value`` pairs of the test figures for a caption, in the order of ``names``, at most ``limit``.

    A name ending in ``/`` stands for every figure under it (``test/ap50/`` -> per-class AP50).
    """
    if not metrics or not metrics.get("test"):
        return "no test figures recorded"
    figures = metrics["test"]

    def wanted(key: str, name: str) -> bool:
        return key.startswith(name) if name.endswith("/") else key == name

    items = [
        (k, figures[k])
        for name in names
        for k in sorted(figures)
        if wanted(k, name) and isinstance(figures[k], (int, float)) and math.isfinite(figures[k])
    ]
    shown = [f"{k.removeprefix('test/')} {v:.3f}{_unit(k)}" for k, v in dict(items).items()][:limit]
    return ", ".join(shown) if shown else "no test figures recorded"


def _unit(key: str) -> str:
    """The accident task's lead times (mTTA, TTA@R80, their legacy form, the lead at the threshold) and its
    time-to-collision error are seconds; the other figures are ratios."""
    name = key.rsplit("/", 1)[-1]
    return " s" if "tta" in name or name.startswith(("ttc", "lead_time")) else ""


# ------------------------------------------------------------------------------------------------ loading


def _task_class(key: str):
    module_name, cls_name = DEMO_MODELS[key].task.split(":")
    module = __import__(module_name, fromlist=[cls_name])
    return getattr(module, cls_name)


def build_task(key: str, hyper_parameters: dict, settings: dict | None = None):
    """The task of ``key`` built from stored hyper-parameters (no weights yet). ``settings``: inference choices
    that checkpoints do not store (the anomaly score and its smoothing)."""
    return shipped.build_from_card(_task_class(key), hyper_parameters, settings, source=key)


def load_shipped_weights(key: str, path: str | Path, card: dict | None = None):
    """Shipped fp16 weights (safetensors: tensors only, no code runs) into the network their card describes
    (:func:`shared.shipped.load_shipped`, what ``<Task>.load_checked`` runs too), with the page's settings.

    The file's sha256 must match the card's; the state dict must fit the network exactly.
    """
    card = card if card is not None else read_card(path)
    remedy = (
        "restore it (from git, or reinstall the suite) or retrain with "
        f"{demo_command('demo-train', '--train')}"
    )
    task = shipped.load_shipped(_task_class(key), path, card, remedy=remedy)
    return _for_demo(key, task, card.get("data_hyper_parameters") or {})


def load_task(key: str, path: str | Path):
    """Load shipped weights (``.safetensors`` + card) or a Lightning checkpoint on the CPU, in eval mode.

    Checkpoints load with ``weights_only=True`` (a checkpoint cannot run code) and must hold this page's task:
    a checkpoint of another task is refused naming what it holds. Medical tasks get ``demo_input_size`` (the
    square the model was trained on), the anomaly task the training frame size and the smoothing its fit's
    config used (:func:`anomaly_score_smoothing`).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_shipped_weights(key, path)
    task = _task_class(key).load_checked(path)
    task.eval()
    data_hparams = read_checkpoint(path).get("datamodule_hyper_parameters") or {}
    if key == "driving_anomaly":
        task.score_smoothing = anomaly_score_smoothing(task.fit_score_smoothing)
    return _for_demo(key, task, data_hparams)


def anomaly_score_smoothing(fit: float | None) -> float:
    """The sigma the demo smooths an anomaly checkpoint's score maps with: the one its fit's config used
    (``fit``, recorded in the file: the task's ``fit_score_smoothing``), so the page scores as that config did;
    for a file that does not record it, the demo config's (the task's default where it sets none, as a fit with
    that config had). It is a run-time setting, no hyper-parameter: the task built from the checkpoint has the
    class default."""
    if fit is not None:
        return fit
    import yaml

    from domains.driving.anomaly.task import configured_score_smoothing

    config = yaml.safe_load((ROOT / DEMO_MODELS["driving_anomaly"].config).read_text(encoding="utf-8")) or {}
    return configured_score_smoothing(config.get("model") or {})


def score_smoothing_sentence(task) -> str:
    """For the page's line on a loaded anomaly checkpoint: the sigma its scores are smoothed with where that is
    not known to be its fit's (the file does not record it, or another was set); '' where they agree."""
    used, fit = task.score_smoothing, task.fit_score_smoothing
    if fit is None:
        return (
            f"Anomaly scores smoothed with sigma {used:g} px, the demo config's: the checkpoint does not record the "
            "sigma its fit used."
        )
    return "" if fit == used else f"Anomaly scores smoothed with sigma {used:g} px, not its fit's {fit:g}."


def _for_demo(key: str, task, data_hparams: dict):
    if key in ("driving_detection", "driving_instances"):
        task.model.set_postprocess(score_thresh=0.05)  # the page's slider filters from here up
    # the network keeps the size it learnt from; older checkpoints and cards: the data module's setting
    trained = getattr(task.model, "input_size", None)
    if key in MEDICAL_KEYS:
        task.demo_input_size = int(trained[0]) if trained else int(data_hparams.get("crop_size") or 128)
    if key == "driving_anomaly":
        size = trained or data_hparams.get("image_size")
        task.demo_input_size = (int(size[0]), int(size[1])) if size else None
    return task


def _unknown_key(where: str, key: str) -> ValueError:
    """The error of a describing function given a key it has no branch for: a new demo model must be described
    explicitly, not in another one's words (a catch-all once described any other key as the anomaly model)."""
    return ValueError(f"{where}: no description for demo model key {key!r}; known keys: {list(DEMO_MODELS)}")


def network_name(key: str, hparams: dict) -> str:
    """A short name of the network a card describes (for people; the hyper-parameters build it)."""
    network = hparams.get("network") or {}
    name, args = str(network.get("class_path", "?")).rsplit(".", 1)[-1], network.get("init_args") or {}
    if key in MEDICAL_KEYS:
        return f"{name} channels {args.get('channels')}"
    if key == "driving_detection":
        return f"FCOS on {args.get('backbone')}, input {args.get('input_size')}"
    if key == "driving_instances":
        return (
            f"Mask R-CNN on {args.get('backbone')}, input {args.get('input_size')}, FPN {args.get('fpn_levels')} x "
            f"{args.get('fpn_channels')} ch"
        )
    if key == "driving_accident":
        lags = list(args.get("motion_lags") or [1])
        kind = args.get("input_kind", "frames")
        reads = {
            "frames": f"on {args.get('backbone')} frames, input {args.get('input_size')}",
            "boxes": "on object boxes and motion (no pixels)",
        }.get(kind, "on precomputed features")
        return (
            f"AccidentAnticipator ({args.get('temporal', 'gru')}, hidden {args.get('hidden')}) {reads}, "
            f"horizons {args.get('horizons')} s" + (f", motion lags {lags} frames" if lags != [1] else "")
        )
    if key == "driving_anomaly":
        return f"U-Net segmenter on {args.get('encoder')} {args.get('encoder_kwargs') or {}} + outlier head"
    raise _unknown_key("network_name", key)


def data_description(key: str, data_hp: dict) -> str:
    """Where the training data of a demo model came from."""
    synthetic = {
        "driving_detection": "KITTI-layout road scenes (1500 frames)",
        "driving_instances": "KITTI-layout road scenes with per-object instance maps (1500 frames)",
        "driving_anomaly": "road-scene semantic maps",
    }
    if key not in (*MEDICAL_KEYS, "driving_accident", *synthetic):
        raise _unknown_key("data_description", key)
    if key in MEDICAL_KEYS and data_hp.get("data_path"):
        return (
            f"{data_hp.get('data_format') or 'lidc_png'} data at {data_hp['data_path']}, "
            f"{data_hp.get('crop_size')} px crops, split by patient"
        )
    if key in MEDICAL_KEYS:
        return (
            "synthetic four-reader LIDC set (python -m domains.medical.synthetic defaults, seed 0), "
            f"{data_hp.get('crop_size')} px crops, split by patient"
        )
    if key == "driving_accident":
        if data_hp.get("data_path"):
            return (
                f"{data_hp.get('data_format', 'synthetic')} clips at {data_hp['data_path']}, split by clip "
                f"(seed {data_hp.get('split_seed', 0)})"
            )
        settings = data_hp.get("synthetic") or {}
        return (
            "synthetic scenario clips (crashes, near misses, ordinary driving) from "
            f"domains.driving.synthetic.clips ({settings or 'defaults, seed 0'}), split by clip, stratified by kind"
        )
    if key == "driving_instances" and data_hp.get("data_path"):
        return f"{data_hp.get('data_format', 'kitti')} instances at {data_hp['data_path']}, split by sequence"
    if data_hp.get("data_path"):  # one's own data set: the synthetic set is generated only without one
        return " ".join(filter(None, (data_hp.get("data_format"), f"data at {data_hp['data_path']}")))
    return f"synthetic {synthetic[key]} from domains.driving.synthetic (defaults, seed 0), split by sequence"


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict, loaded with ``weights_only=True`` (tensors and plain containers only)."""
    from shared.task import read_checkpoint_data

    return read_checkpoint_data(path, mmap=True)  # the tensors stay on disk until read: a card needs none


@functools.lru_cache(maxsize=256)
def _checkpoint_header(path: str, mtime_ns: int) -> dict:
    """The task class a checkpoint holds and its data-module settings, read once per file version (the
    tensors stay on disk); empty for a file that is no readable checkpoint."""
    try:
        checkpoint = read_checkpoint(path)
    except Exception:  # noqa: BLE001 - truncated, pickled objects, not a zip: it holds no task to offer
        return {}
    if not isinstance(checkpoint, dict):  # e.g. one tensor saved with torch.save
        return {}
    hparams = checkpoint.get("hyper_parameters") or {}
    task = (checkpoint.get("suite_task") or {}).get("task") or hparams.get("_class_path")
    data = json.loads(json.dumps(checkpoint.get("datamodule_hyper_parameters") or {}, default=str))
    return {"task": str(task) if task else None, "data": data}


def trained_data_settings(path: str | Path) -> dict | None:
    """The data settings the weights at ``path`` were fitted with: shipped weights' model card
    ``data_hyper_parameters``, a checkpoint's ``datamodule_hyper_parameters`` from its header, read once per file
    version (:func:`_checkpoint_header`, which the checkpoint picker's task check fills too); a copy. A file that
    is no readable checkpoint raises its reader's error, as reading it whole did."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_card(path).get("data_hyper_parameters")
    header = _checkpoint_header(str(path), path.stat().st_mtime_ns)
    if "data" not in header:  # no readable checkpoint (the header swallows why): read it again to raise it
        read_checkpoint(path)
    return copy.deepcopy(header.get("data"))


def checkpoint_task(path: str | Path) -> str | None:
    """The task class a Lightning checkpoint holds (``module.Class``, as :class:`shared.task.BaseTask` records
    it), None when it names none or is no readable checkpoint."""
    return _checkpoint_header(str(path), Path(path).stat().st_mtime_ns).get("task")


def holds_task(path: str | Path, key: str) -> bool:
    """Whether the checkpoint at ``path`` holds the task of the demo model ``key`` (compared by name: nothing is
    imported; each demo task class is defined where ``DemoModel.task`` names it, as checkpoints record it)."""
    return checkpoint_task(path) == DEMO_MODELS[key].task.replace(":", ".")


def training_data(key: str, path: str | Path) -> str | None:
    """What the weights of ``key`` at ``path`` learnt from: shipped weights' model card ``data``, a checkpoint's
    data-module settings in words (:func:`data_description`); None when neither records it."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            return read_card(path).get("data") or None
        except WeightFileError:
            return None
    data = _checkpoint_header(str(path), path.stat().st_mtime_ns).get("data")
    return data_description(key, data) if data else None


def checkpoint_model_name(path: str | Path) -> str | None:
    """The network class a Lightning checkpoint holds (``hyper_parameters["network"]``)."""
    network = (read_checkpoint(path).get("hyper_parameters") or {}).get("network") or {}
    return str(network.get("class_path", "")).rsplit(".", 1)[-1] or None


# ------------------------------------------------------------------------------------------ medical work


def medical_input_size(task) -> int:
    """The square crop the medical model was trained on (set by :func:`load_task`; LIDC default 128)."""
    return int(getattr(task, "demo_input_size", 128))


@torch.no_grad()
def medical_predict(task, image: np.ndarray, num_samples: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Sample probabilities (N, H, W), their mean (H, W) and entropy uncertainty (H, W, bits) of a slice.

    The latents come from generators of this call seeded by ``seed`` (one per sample, see
    :func:`~domains.medical.models.common.image_noise`; held per thread), never torch's global one: the pages'
    sessions run in threads of one process, and one session's ``torch.manual_seed`` then moved another's
    draws, whose mixed result ``st.cache_data`` served to everyone.
    """
    from domains.medical.models.common import image_noise
    from domains.medical.predict import uncertainty_map

    if image.ndim != 2:
        raise ValueError(f"expected a 2D slice, got shape {image.shape}")
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    with image_noise([int(seed)]):
        probs = task.sample(x, int(num_samples))  # (1, N, H, W)
    return {
        "probs": probs[0].cpu().numpy(),
        "mean": probs.mean(dim=1)[0].cpu().numpy(),
        "uncertainty": uncertainty_map(probs, "entropy")[0].cpu().numpy(),
    }


def medical_scores(probs: np.ndarray, mean: np.ndarray, readers: np.ndarray, threshold: float = 0.5) -> dict:
    """GED, Hungarian IoU, diversity, Dice (vs each reader and the majority) of one image's samples."""
    from domains.medical.metrics import SegmentationUncertaintyMetrics

    metric = SegmentationUncertaintyMetrics(threshold=threshold)
    samples = torch.from_numpy(probs >= threshold)[None]
    metric.update(
        samples, torch.from_numpy(mean.astype(np.float32))[None, None], torch.from_numpy(readers)[None]
    )
    return metric.compute()


# ------------------------------------------------------------------------------------------ driving work


def detect_objects(task, image: np.ndarray) -> dict[str, np.ndarray]:
    """Detections of an RGB uint8 photo of any size, boxes (xyxy) in the photo's own pixels
    (:func:`domains.driving.detection.predict.detect_objects`)."""
    from domains.driving.detection.predict import detect_objects as detect_in_image

    return detect_in_image(task.model, image)


@torch.no_grad()
def segment_instances(task, image: np.ndarray) -> dict[str, np.ndarray]:
    """Instances of an RGB uint8 photo of any size: ``boxes`` (xyxy) and ``areas`` (mask pixels) in the photo's
    own pixels, ``scores``, ``labels`` and ``masks`` (N, h, w) bool at the *analysis size*.

    The analysis size is the photo with its long side shrunk to the network's input width (at most
    :data:`INSTANCE_MAX_SIDE`): Mask R-CNN pastes every detection's mask as a float map at the size it is given
    (up to ``detections_per_img`` of them), so a 12-MP photo would need gigabytes for no extra detail (the
    masks are 28x28 per box). Masks stay at that size (up to ``detections_per_img`` full frames of bools: about
    30 MB for 100 at 640x480, cached per photo) and :func:`instance_ids` upscales only the ones
    drawn or downloaded, one at a time."""
    from domains.driving.detection.predict import detect, resize_long_side

    side = min(INSTANCE_MAX_SIDE, max(int(v) for v in task.model.input_size))
    small, _ = resize_long_side(image, side)
    pred = detect(task.model, small)  # the network letterboxes internally and pastes masks back to `small`
    h, w = image.shape[:2]
    sh, sw = small.shape[:2]
    boxes = pred["boxes"].numpy().astype(np.float64)
    boxes[:, [0, 2]] = (boxes[:, [0, 2]] * (w / sw)).clip(0, w)
    boxes[:, [1, 3]] = (boxes[:, [1, 3]] * (h / sh)).clip(0, h)
    masks = (pred["masks"] >= task.mask_thresh).numpy()
    return {
        "boxes": boxes,
        "scores": pred["scores"].numpy(),
        "labels": pred["labels"].numpy().astype(np.int64),
        "areas": masks.sum(axis=(1, 2)) * (h * w) / (sh * sw),  # also for no detection: (0,)
        "masks": masks,
    }


def instance_ids(pred: dict, size: tuple[int, int]) -> tuple[np.ndarray, list[int]]:
    """The (H, W) uint16 instance-id map of ``pred`` (:func:`segment_instances`' result, already filtered) at
    ``size``, and the prediction index of each id (id k: ``pred[...][order[k - 1]]``).

    Numbered as ``domains.driving.instances.predict.instance_id_map`` numbers them (it gives the order: by
    descending score, the higher score winning shared pixels). Each mask is upscaled on its own from the analysis
    size, bilinearly over its bounding box only (smooth edges; never N maps at the photo's size in memory)."""
    from domains.driving.instances.predict import instance_id_map

    masks = np.asarray(pred["masks"], dtype=bool)
    h, w = masks.shape[1:]
    small = {"scores": torch.as_tensor(pred["scores"]), "masks": torch.from_numpy(masks)}
    ids, order = instance_id_map(small, (h, w), score_thresh=float("-inf"))
    height, width = int(size[0]), int(size[1])
    if (height, width) == (h, w):
        return ids, order
    ids = np.zeros((height, width), np.uint16)
    sy, sx = height / h, width / w
    for k in range(len(order), 0, -1):  # the lowest score first: higher scores paint over it
        mask = masks[order[k - 1]]
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if not len(rows):
            continue
        y0, y1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, h)  # one pixel of margin: the edge ramps
        x0, x1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, w)
        top, bottom = round(y0 * sy), max(round(y1 * sy), round(y0 * sy) + 1)
        left, right = round(x0 * sx), max(round(x1 * sx), round(x0 * sx) + 1)
        crop = mask[y0:y1, x0:x1].astype(np.float32)
        inside = cv2.resize(crop, (right - left, bottom - top), interpolation=cv2.INTER_LINEAR) >= 0.5
        ids[top:bottom, left:right][inside] = k
    return ids, order


def id_map_png(ids: np.ndarray) -> bytes:
    """A uint16 instance-id map as a 16-bit PNG (what ``predict`` writes)."""
    if ids.dtype != np.uint16 or ids.ndim != 2:
        raise ValueError(f"id_map_png: expected an (H, W) uint16 map, got {ids.dtype} {ids.shape}")
    ok, buf = cv2.imencode(".png", ids)
    if not ok:
        raise ValueError(f"id_map_png: OpenCV could not encode an array of shape {ids.shape}")
    return buf.tobytes()


def anomaly_scores(task) -> list[str]:
    """Scores these weights can give (statistics-based ones only once calibrated, OE only if trained), the
    task's own first."""
    names = task.model.usable_scores()
    default = task.score if task.score in names else (names[0] if names else None)
    return [default, *[n for n in names if n != default]] if default else names


@torch.no_grad()
def anomaly_forward(task, image: np.ndarray) -> dict:
    """The segmenter's outputs for a photo: logits, decoder features and the outlier head's logit (when the
    model has one), the input every score is computed from. The page keeps them per photo, so picking
    another score does not run the network again.

    The photo is fitted into the training frames' size (from the checkpoint; :data:`ANOMALY_FRAME` if it does
    not say, as with ``data.image_size: null``), keeping its aspect ratio, as the CLI's ``test`` and ``predict``
    fit it into ``data.image_size`` (the model pads to its stride itself; area interpolation when shrinking, at
    least 32 px a side): its objects come out at the scale the segmenter learnt. Fitting the long side to the
    training width instead made a 4:3 photo 640x480, objects 2.5x their training size (pixel AP 0.12 where 0.55
    at the training scale), and a 600x3000 portrait photo a 640x3200 input.
    """
    h, w = image.shape[:2]
    trained = getattr(task, "demo_input_size", None)
    box_h, box_w = (int(trained[0]), int(trained[1])) if trained else ANOMALY_FRAME
    scale = min(box_h / h, box_w / w)
    size = (max(32, round(w * scale)), max(32, round(h * scale)))
    small = (
        image
        if (w, h) == size
        else cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    )
    x = torch.from_numpy(np.ascontiguousarray(small.transpose(2, 0, 1))).float().div_(255.0)[None]
    model = task.model  # the plain model: no shared state
    logits, features, outlier = model.features(x, with_outlier=model.needs_outlier_head(["outlier_prob"]))
    return {"logits": logits, "features": features, "outlier": outlier, "size": size, "photo": (h, w)}


@torch.no_grad()
def anomaly_analysis(task, image: np.ndarray, score: str, forward: dict | None = None) -> dict:
    """Anomaly map (H, W) of ``score`` at the photo's own size, its colour range (:func:`score_range`) and the
    frame score, from :func:`anomaly_forward`'s outputs (``forward``; computed here when not given). The map is
    resized back as ``predict`` does, so overlays line up with the upload."""
    from domains.driving.anomaly.predict import (
        ROAD_CLASS_IDS,
        image_anomaly_score,
        road_region,
        score_to_original,
    )

    forward = anomaly_forward(task, image) if forward is None else forward
    maps = task.model.score_maps(
        forward["logits"], forward["features"], [score], forward["outlier"], smoothing=task.score_smoothing
    )
    score_map = maps[score][0].cpu().numpy()
    pred = forward["logits"].argmax(dim=1)[0].cpu().numpy().astype(np.uint8)
    frame_score = image_anomaly_score(
        score_map,
        road_region(pred, getattr(task, "road_ids", ROAD_CLASS_IDS)),  # the road classes it trained with
        getattr(task, "image_score_method", "quantile"),
        getattr(task, "image_score_q", 0.999),
        getattr(task, "image_score_k", 50),
    )
    if forward["photo"] != (forward["size"][1], forward["size"][0]):  # back to the photo as `predict` writes it
        score_map = score_to_original(score_map, forward["photo"])
    score_map = score_map.astype(np.float32)
    return {
        "score": score_map,
        "frame_score": float(frame_score),
        "analysis_size": forward["size"],
        "range": score_range(score_map),  # once per photo and score: a pass over the full-size map
    }


def score_range(score_map: np.ndarray) -> tuple[float, float]:
    """Colour range of a score without a fixed scale: the map's own min..max (the page knows the fixed ones)."""
    lo, hi = float(np.min(score_map)), float(np.max(score_map))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def heat_colors(
    values: np.ndarray, lo: float = 0.0, hi: float = 1.0, colormap: int = cv2.COLORMAP_INFERNO
) -> np.ndarray:
    """A float map -> RGB uint8 through an OpenCV colormap (for the uncertainty and probability maps)."""
    scaled = np.clip((values.astype(np.float32) - lo) / max(hi - lo, 1e-12), 0, 1)
    bgr = cv2.applyColorMap((scaled * 255 + 0.5).astype(np.uint8), colormap)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# ----------------------------------------------------------------------------------------- accident work

#: the accident data module's default split (val / test fractions, seed): the clips the demo lists are the
#: ones its test split holds, i.e. clips the model did not train on
ACCIDENT_SPLIT = (0.15, 0.15, 0)


@dataclass(frozen=True)
class ClipEntry:
    """One clip the accident page offers: where it is, and what it is."""

    root: str
    clip_id: str
    kind: str
    scenario: str | None
    contact_s: float | None  # contact time in seconds (the contact frame / fps), None for negatives
    bundled: bool = False

    @property
    def label(self) -> str:
        what = self.kind.replace("_", " ") + (f", {self.scenario.replace('_', ' ')}" if self.scenario else "")
        when = f", contact at {self.contact_s:.1f} s" if self.contact_s is not None else ""
        return f"{'bundled example ' if self.bundled else ''}{self.clip_id}: {what}{when}"


def accident_clip_entries(root: str | Path, bundled: bool = False, test_only: bool = True) -> list[ClipEntry]:
    """Clips of a synthetic-layout root, crashes first (then near misses, ordinary driving; by scenario, id).

    With ``test_only`` only the clips of the data module's default test split (:data:`ACCIDENT_SPLIT`, cut from
    the listing as the data module cuts it): a model trained on that root with the default split never saw them.
    Only listed (ids, kinds and their JSON's scenario and rate: :func:`list_ccd_layout`), not read: reading all
    200 clips of a set to list them took 5-8 s; the clip shown is read alone. Clips the listing leaves out are
    counted by the readers' warning, silenced here (the page shows what it lists)."""
    import warnings

    from domains.driving.accident.data import split_clips
    from domains.driving.accident.readers import KINDS, list_ccd_layout

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        listed = list_ccd_layout(root, require_json=True).entries
    if test_only:
        val, test, seed = ACCIDENT_SPLIT
        listed = split_clips(listed, val, test, seed)["test"] or listed
    entries = [
        ClipEntry(str(root), e.clip_id, e.kind, e.scenario, e.line.toa / e.fps if e.line and e.fps else None, bundled)
        for e in listed
    ]
    return sorted(entries, key=lambda e: (KINDS.index(e.kind), e.scenario or "", e.clip_id))


def load_accident_clip(root: str | Path, clip_id: str, max_objects: int = ACCIDENT_SLOTS) -> dict:
    """One synthetic-layout clip with its ground-truth tracks, through the task's own reader and dataset.

    Returns ``frames`` uint8 (T, H, W, 3) at the source size, ``boxes`` (T, N, 4) source pixels, ``box_valid``
    (T, N), ``track_ids`` (N,), ``involved`` (N,) bool, ``classes`` {track id: type}, ``fps``, ``toa`` (-1:
    none), ``kind``, ``scenario``, ``clip_id``. A clip the reader refuses raises its error (naming the file); only
    that clip is read (reading the whole set to pick one took 7 s of a 200-clip set)."""
    from domains.driving.accident.data import AccidentDataset
    from domains.driving.accident.readers import read_ccd_clip

    clip = read_ccd_clip(root, clip_id, require_json=True, strict=True)
    if clip is None:
        raise FileNotFoundError(f"{root}: no clip {clip_id!r}")
    item = AccidentDataset([clip], image_size=None, max_objects=max_objects)[0]
    frames = (item["frames"].permute(0, 2, 3, 1) * 255).round().byte().numpy()
    meta = read_json(Path(root) / "annotations" / f"{clip_id}.json")
    classes = {int(k): str(v.get("type", "")) for k, v in (meta.get("tracks") or {}).items()}
    return {
        "frames": frames,
        "boxes": item["boxes"].numpy(),
        "box_valid": item["box_valid"].numpy(),
        "track_ids": item["track_ids"].numpy(),
        "involved": item["involved"].numpy(),
        "classes": classes,
        "fps": float(clip.fps),
        "toa": int(clip.toa),
        "kind": clip.kind,
        "scenario": clip.scenario,
        "clip_id": clip.clip_id,
    }


def detect_clip_objects(
    detector,
    frames: np.ndarray,
    threshold: float,
    max_objects: int = ACCIDENT_SLOTS,
    progress=None,
    steps: np.ndarray | None = None,
) -> dict:
    """Objects of a clip without tracks (:func:`~domains.driving.accident.tracking.detect_and_track`), detected
    by the demo detector at each frame's own size (:func:`detect_objects`) in the frames the model reads,
    ``steps`` (:func:`accident_clip_steps`; None: every frame), and linked into tracks at the model's rate, as
    ``predict --data.predict_detector`` does: a 30 fps clip costs a third of the detector's passes, and its
    tracks are linked at the frame gaps the model learnt from. ``progress(done, total)`` counts those frames.

    ``boxes`` and ``box_valid`` come back per source frame, as :func:`accident_predict` takes them: a frame
    between two steps holds the latest step's boxes (:func:`~domains.driving.accident.readers.held_steps`), as
    it holds that step's risk."""
    from domains.driving.accident.readers import held_steps
    from domains.driving.accident.tracking import detect_and_track

    steps = np.arange(len(frames)) if steps is None else np.asarray(steps)
    names = getattr(detector, "class_names", None) or ()
    detect = functools.partial(detect_objects, detector)
    found = detect_and_track(detect, [frames[i] for i in steps], threshold, max_objects, names, progress)
    held = held_steps(steps, len(frames))
    return {**found, "boxes": found["boxes"][held], "box_valid": found["box_valid"][held]}


def no_objects(n_frames: int, max_objects: int = ACCIDENT_SLOTS) -> dict:
    """Empty object slots (no detector): the anticipator then reads the frames alone."""
    return {
        "boxes": np.zeros((n_frames, max_objects, 4), np.float32),
        "box_valid": np.zeros((n_frames, max_objects), bool),
        "track_ids": np.full(max_objects, -1, np.int64),
        "classes": {},
    }


def accident_model_fps(path: str | Path) -> tuple[float, str]:
    """The frame rate an accident model learnt at, and where that comes from (a phrase for the page): the
    training data settings stored with the weights (the model card's ``data_hyper_parameters``, a checkpoint's
    ``datamodule_hyper_parameters``) read as :func:`domains.driving.accident.data.training_fps` reads them."""
    from domains.driving.accident.data import training_fps

    path = Path(path)
    data = trained_data_settings(path)
    where = f"model card {path.with_suffix('.json').name}" if path.suffix == ".safetensors" else f"checkpoint {path.name}"
    fps, why = training_fps(data)
    if not data:
        return fps, f"assumed: {path.name} does not record its training data; the generated clips' default"
    return fps, f"{why} ({where})"


def accident_clip_steps(n_frames: int, fps: float, model_fps: float | None) -> np.ndarray:
    """The model steps of a clip (:func:`~domains.driving.accident.readers.model_steps`; every frame when
    ``model_fps`` is None), or ValueError saying why the clip cannot be read: a bad or too slow frame rate,
    fewer than 2 steps. Known from the clip's length and rate alone, so the page refuses a clip before running
    the detector on it."""
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive frame rate, got {fps}")
    from domains.driving.accident.readers import model_steps

    steps = np.arange(n_frames) if model_fps is None else model_steps(n_frames, fps, model_fps)
    if len(steps) < 2:
        rate = "" if model_fps is None else f" at the model's {model_fps:g} fps"
        raise ValueError(
            f"the clip is {n_frames} frames at {fps:g} fps ({(n_frames - 1) / fps:.2f} s between its first and last "
            f"frame):{rate} that is {len(steps)} step; at least 2 are needed"
        )
    return steps


@torch.no_grad()
def accident_predict(
    task,
    frames: np.ndarray,
    boxes: np.ndarray,
    box_valid: np.ndarray,
    track_ids: np.ndarray,
    fps: float,
    toa: int = -1,
    clip_id: str = "clip",
    model_fps: float | None = None,
) -> dict:
    """The task's ``predict_step`` on one clip of any frame size: frames (T, H, W, 3) uint8 are resized to the
    network's ``input_size`` and the boxes (T, N, 4, source pixels) scaled with them.

    ``model_fps``: the rate the model learnt at (:func:`accident_model_fps`). The clip is then resampled to it
    (:func:`~domains.driving.accident.readers.model_steps`: each model step reads the nearest source frame) and
    the results are mapped back to every source frame, each holding the risk of the latest step at or before it
    (what a live system would show), so the alarm frame is the source frame the alarming step read. ``model_steps`` (K,) says which
    source frames the model read. None: every frame is a model step (the clip is taken to be at the model's
    rate). The model reads the boxes of its steps' frames only; the others are drawn and written as given
    (:func:`detect_clip_objects` gives each the boxes of the step it holds).

    Returns the prediction dict of :func:`domains.driving.accident.predict.write_clip` as numpy arrays, with
    the frames and boxes at the *source* size and rate (so the annotated frames and ``objects.csv`` are in the
    clip's own pixels and frame numbers)."""
    from domains.driving.accident.readers import held_steps

    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) < 2:
        raise ValueError(f"expected at least 2 RGB frames (T, H, W, 3), got shape {frames.shape}")
    n_frames = len(frames)
    steps = accident_clip_steps(n_frames, fps, model_fps)
    resampled = len(steps) != n_frames
    step_fps = float(model_fps) if resampled else float(fps)
    step_toa = -1 if toa < 0 else int(np.searchsorted(steps, toa))  # the first step at or after the contact
    height, width = task.model.input_size
    src_h, src_w = frames.shape[1:3]
    scale = np.array([width / src_w, height / src_h] * 2, np.float32)
    source_boxes = np.asarray(boxes, np.float32)
    valid = np.asarray(box_valid, bool)
    t, n = len(steps), valid.shape[1]
    batch = {}
    if task.model.input_kind != "boxes":  # a boxes-only network never reads the frames
        small = np.stack(
            [cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames[steps]]
            if (src_h, src_w) != (height, width)
            else list(frames[steps])
        )
        batch["frames"] = torch.from_numpy(small.transpose(0, 3, 1, 2).copy()).float().div_(255.0)[None]
    batch |= {
        "boxes": torch.from_numpy(source_boxes[steps] * scale)[None],
        "box_valid": torch.from_numpy(valid[steps])[None],
        "track_ids": torch.from_numpy(np.asarray(track_ids, np.int64))[None],
        "frame_valid": torch.ones(1, t, dtype=torch.bool),
        "toa": torch.tensor([step_toa]),
        "fps": torch.tensor([step_fps]),
        "involved": torch.zeros(1, n, dtype=torch.bool),
        "ttc": torch.full((1, t), float("nan")),
        "kind": ["unknown"],
        "clip_id": [clip_id],
    }
    (pred,) = task.predict_step(batch, 0)
    out = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in pred.items()}
    if resampled:  # back to the source timeline: frame j holds the latest step that read a frame <= j
        held = held_steps(steps, n_frames)
        for key in ("probabilities", "risk", "uncertainty", "ttc", "object_risk"):
            if out.get(key) is not None:
                out[key] = np.asarray(out[key])[held]
    blind = task.blind_frames(batch["box_valid"])[0].numpy()  # per model step, as predict_step masked them
    out["blind"] = blind[held] if resampled else blind  # per source frame: the step it holds
    out["frames"] = frames.transpose(0, 3, 1, 2)  # a view: each cached prediction (one per fps) held a copy
    out.pop("source_boxes", None)  # the boxes below are the source's already
    out["boxes"] = source_boxes
    out["box_valid"] = valid
    out["fps"], out["toa"] = float(fps), int(toa)
    out["model_steps"], out["step_fps"], out["step_toa"] = steps, step_fps, step_toa
    return out


#: an :func:`accident_predict` result's entries with one row per source frame
_PER_FRAME = (
    "probabilities", "risk", "uncertainty", "ttc", "object_risk", "blind", "frames", "boxes", "box_valid"
)  # fmt: skip


def at_model_steps(prediction: dict) -> dict:
    """An :func:`accident_predict` result (every source frame) at the model's steps alone, each with its frame
    number in the clip (``source_frames``): what ``predict`` writes for a resampled clip, so the page's downloads
    are its files (a 30 fps clip's had a row per source frame, two of three holding copies, with boxes the
    detector never found on those frames). A clip at the model's rate is returned as it is."""
    steps = np.asarray(prediction["model_steps"])
    if len(steps) == len(prediction["risk"]):
        return prediction
    out = {k: np.asarray(v)[steps] if k in _PER_FRAME and v is not None else v for k, v in prediction.items()}
    out["toa"], out["fps"], out["source_frames"] = prediction["step_toa"], float(prediction["step_fps"]), steps
    return out


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8."""
    return (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


__all__ = [
    "ACCIDENT_EXAMPLES",
    "DEMO_MODELS",
    "ENV_ACCIDENT_DATA",
    "ENV_ANOMALY_DATA",
    "ENV_CHECKPOINTS",
    "ENV_MEDICAL_DATA",
    "ENV_WEIGHTS",
    "MEDICAL_KEYS",
    "ClipEntry",
    "DemoModel",
    "WeightFileError",
    "accident_clip_entries",
    "accident_data_root",
    "accident_predict",
    "anomaly_analysis",
    "anomaly_data_root",
    "anomaly_forward",
    "anomaly_scores",
    "at_model_steps",
    "checkpoint_dir",
    "default_anomaly_data",
    "default_medical_data",
    "demo_command",
    "detect_clip_objects",
    "detect_objects",
    "find_checkpoint",
    "format_metrics",
    "id_map_png",
    "instance_ids",
    "load_accident_clip",
    "load_task",
    "medical_data_root",
    "medical_predict",
    "medical_scores",
    "prepare_command",
    "read_metrics",
    "segment_instances",
    "source_checkout",
    "train_command",
    "unwritable_data",
    "work_root",
]
