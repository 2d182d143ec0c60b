r"""From scratch vs transferred, as labelled data grows: the textbook claims about transfer learning, measured.

    .venv/bin/python benchmarks/transfer.py --domain medical --minutes 30
    .venv/bin/python benchmarks/transfer.py --domain driving --minutes 30 \
        --torchvision-weights resnet18=/data/weights/resnet18-f37072fd.pth \
        --suite-checkpoint resnet18=lightning_logs/driving_detection/quick/checkpoints/last.ckpt:model.detector.backbone.body.
    (a detector trained with --model.network.init_args.backbone resnet18; the detection configs use
    mobilenet_v3_large)

For each backbone (default: AlexNet, GoogLeNet, VGG-16, ResNet-18) and each share of the training labels
(default 1, 5, 25, 100 %), the domain's classification task (``shared.classification``) is trained

* from scratch (random initialisation),
* from the suite's own backbone trained on another task of the same domain: a checkpoint you name with
  ``--suite-checkpoint NAME=PATH[:PREFIX]`` (the detector, the medical segmenter), else one made here first: a
  U-Net segmenter (``shared.segmentation.SegmentationNet``) on that backbone, trained on the domain's training
  split for ``--source-share`` of the backbone's time (road-scene semantic maps for driving, the readers'
  consensus lesion masks for medical), so no validation or test image is ever seen,
* from a local torchvision weights file, for the backbones you give one with ``--torchvision-weights``
  (nothing is downloaded).

Transferred backbones are frozen for the first (short) epoch and then fine-tuned at a tenth of the head's
learning rate (``shared.backbones.BackboneFreezeUnfreeze``); an epoch is capped at ``--epoch-batches`` batches so
that freezing lasts at most that many steps (fewer at a label share with fewer batches). Every run gets the same
wall-time budget (``--minutes`` split evenly over the runs after the sources; the cosine schedule is fitted to it while training
by ``shared.budget.FitScheduleToBudget``), so small label shares are trained for many epochs: over-fitting shows
as the gap between training and validation accuracy (both measured at the end, without augmentation). That
length is machine-dependent; ``--steps N`` trains every run, and every source segmenter made here, for N
steps instead (repeatable; the budget's shares stay hard stops). A run given under a quarter of the 30-minute
default is marked a smoke run.

Prints a markdown table; with ``--out`` writes it, the same rows as JSON, and a PNG of the learning curves
(test macro F1 and the train-validation gap against the label share, one panel per backbone). Wall time per run
is in the table.
"""

from __future__ import annotations

import sys
from pathlib import Path

# run as `python benchmarks/<script>.py`: import this checkout's benchmarks, domains and shared, not the ones
# the venv's editable install points at (which may be another checkout)
ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):
    sys.path.insert(0, str(ROOT))

import argparse

from benchmarks.report import STEPS_HELP, HelpFormatter

TEXTBOOK = ["alexnet", "googlenet", "vgg16", "resnet18"]
FRACTIONS = [0.01, 0.05, 0.25, 1.0]
DEFAULT_MINUTES = 30.0  # the whole run on 2 CPU cores


def options() -> argparse.ArgumentParser:
    """The benchmark's options; built before torch is imported, so that ``--help`` answers at once."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--domain", choices=["driving", "medical"], default="medical", help="whose data")
    parser.add_argument(
        "--data-path", default=None, help="KITTI folder / LIDC PNG root; default: the synthetic set"
    )
    parser.add_argument("--backbones", nargs="+", default=TEXTBOOK, help="registered backbones to compare")
    parser.add_argument(
        "--fractions",
        nargs="+",
        type=float,
        default=FRACTIONS,
        help="shares of the training labels, in (0, 1]",
    )
    parser.add_argument(
        "--minutes", type=float, default=DEFAULT_MINUTES, help="total wall-time budget (2 CPU cores: 30)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help=f"every run and source segmenter: {STEPS_HELP}"
    )
    parser.add_argument(
        "--source-share", type=float, default=0.15, help="share of a backbone's time for its source"
    )
    parser.add_argument("--no-suite-source", action="store_true", help="scratch (and torchvision) only")
    parser.add_argument(
        "--suite-checkpoint",
        nargs="*",
        default=[],
        metavar="NAME=PATH[:PREFIX]",
        help="a backbone's suite weights from this file (keys under PREFIX) instead of a source segmenter "
        "made here (default: none)",
    )
    parser.add_argument(
        "--torchvision-weights",
        nargs="*",
        default=[],
        metavar="NAME=PATH",
        help="a local torchvision weight file for a backbone: adds its runs (nothing is downloaded; "
        "default: none)",
    )
    parser.add_argument(
        "--backbone-kwargs", nargs="*", default=[], metavar="NAME=JSON",
        help="a backbone's arguments, e.g. unet_encoder='{\"channels\": [32, 64, 128, 192]}' (the medical U-Net's "
        "encoder, whose shipped weights a --suite-checkpoint can name; default: none)",
    )  # fmt: skip
    parser.add_argument(
        "--sources-dir",
        default="data/transfer_sources",
        help="where the source segmenters are saved (git-ignored)",
    )
    parser.add_argument("--image-size", type=int, default=64, help="side of the classified crops (px)")
    parser.add_argument("--source-size", type=int, default=64, help="height of the source task's images")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size")
    parser.add_argument("--epoch-batches", type=int, default=25, help="at most this many batches per epoch")
    parser.add_argument("--lr", type=float, default=1e-3, help="the head's learning rate (AdamW)")
    parser.add_argument("--eval-items", type=int, default=500, help="images per split scored at the end")
    parser.add_argument("--min-train-seconds", type=float, default=5.0, help="floor of a run's training time")
    parser.add_argument("--num-workers", type=int, default=0, help="data loader worker processes")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="training seed (initialisation, batches, scored images)")
    parser.add_argument(
        "--split-seed", type=int, default=0,
        help="seed of the train / val / test split and of the label shares (default 0: the split the configs train "
        "the detector and segmenter on, so a --suite-checkpoint of theirs saw no validation or test frame)",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=None,
        help="markdown table; .json and .png written beside it (default: the table printed, nothing written)",
    )
    return parser


if __name__ == "__main__":  # options parsed before the imports below (torch: seconds), then main() runs
    from benchmarks.report import run_as_program

    run_as_program(options(), "benchmarks.transfer")

import csv
import json
import math
import textwrap
import time

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from benchmarks.report import (
    check_numbers,
    command_line,
    json_object,
    memory_note,
    run_length,
    smoke_run,
    step_schedule,
)
from shared.backbones import list_backbones
from shared.classification.metrics import ClassificationMetrics
from shared.classification.model import ImageClassifier
from shared.classification.task import ClassificationTask
from shared.cli import quiet_trainer
from shared.optim import adamw, warmup_cosine
from shared.segmentation import SegmentationNet

# ------------------------------------------------------------------------------------------------ data


def data_module(domain: str, args, **kw):
    """The domain's classification data module (its crops are cut once on first use)."""
    common = {
        "data_path": args.data_path,
        "image_size": (args.image_size, args.image_size),
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "seed": args.split_seed,  # not --seed: another split would put a named checkpoint's training frames in test
    } | kw
    if domain == "driving":
        from domains.driving.classification.data import DrivingClassificationData

        return DrivingClassificationData(**common)
    from domains.medical.classification.data import MedicalClassificationData

    return MedicalClassificationData(**common)


def crops_root(domain: str, args) -> Path:
    dm = data_module(domain, args)
    return dm.convert_source(dm.data_format, dm.data_path)


def source_segmentation_set(domain: str, args, crops: Path) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Training-split images and label maps of the domain's other task: ``(images, labels, classes, channels)``."""
    with (crops / "metadata.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train"]
    images, labels = [], []
    if domain == "driving":
        from domains.driving.classes import SEMANTIC_CLASSES
        from domains.driving.detection.data import semantic_map_path

        h, w = args.source_size, args.source_size * 3  # road frames are wide
        for path in sorted({r["image"] for r in rows}):
            image = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
            semantic = cv2.imread(str(semantic_map_path(path)), cv2.IMREAD_UNCHANGED)
            images.append(cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA))
            labels.append(cv2.resize(semantic, (w, h), interpolation=cv2.INTER_NEAREST))
        classes, channels = len(SEMANTIC_CLASSES), 3
    else:
        from domains.medical.data import LIDCPngDataset
        from domains.medical.synthetic import ensure_synthetic_lidc

        root = Path(args.data_path) if args.data_path else ensure_synthetic_lidc()
        data = LIDCPngDataset(root, "train", crop_size=None)
        size = args.source_size
        for i in range(len(data)):
            item = data.load(i)
            consensus = (np.asarray(item["masks"]).mean(0) >= 0.5).astype(np.uint8)  # the readers' majority
            images.append(cv2.resize(np.uint8(np.asarray(item["image"]) * 255), (size, size))[..., None])
            labels.append(cv2.resize(consensus, (size, size), interpolation=cv2.INTER_NEAREST))
        classes, channels = 2, 1
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255)
    return (x - 0.45) / 0.225, torch.from_numpy(np.stack(labels)).long(), classes, channels


def pretrain_source(
    backbone: str,
    seg_set,
    seconds: float,
    out: Path,
    seed: int,
    backbone_kwargs: dict | None = None,
    steps: int | None = None,
) -> dict:
    """Train a U-Net segmenter on ``backbone`` for ``seconds`` (plain loop), or for ``steps`` steps with
    ``seconds`` a hard stop; save it where the task loads it."""
    images, labels, classes, channels = seg_set
    torch.manual_seed(seed)
    net = SegmentationNet(classes, in_channels=channels, encoder=backbone, encoder_kwargs=backbone_kwargs)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    start, losses = time.perf_counter(), []
    net.train()
    while time.perf_counter() - start < seconds and (steps is None or len(losses) < steps):
        idx = torch.randint(0, len(images), (8,), generator=g)
        loss = F.cross_entropy(net(images[idx]), labels[idx], ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": net.state_dict()}, out)
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    print(
        f"  source {backbone}: {len(losses)} segmentation steps in {time.perf_counter() - start:.0f} s, loss {first:.3f} -> {last:.3f}"
    )
    return {"path": str(out), "prefix": "backbone.encoder.", "steps": len(losses), "loss": [first, last]}


# ------------------------------------------------------------------------------------------------ runs


@torch.no_grad()
def evaluate(task: ClassificationTask, dataset, max_items: int, batch_size: int, seed: int) -> dict:
    """Accuracy, macro F1 and ECE on a seeded random subset of at most ``max_items`` images (the splits are
    stored class by class: the first items alone would hold one class)."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:max_items]
    loader = DataLoader(Subset(dataset, order.tolist()), batch_size=batch_size)
    metrics = ClassificationMetrics(task.class_names)
    task.eval()
    for batch in loader:
        metrics.update(task(batch["image"]).softmax(1), batch["label"])
    out = metrics.compute()
    return {"acc": float(out["acc"]), "f1_macro": float(out["f1_macro"]), "ece": float(out["ece"])}


def run_one(
    domain: str, args, crops: Path, backbone: str, source: dict | None, fraction: float, seconds: float
) -> dict:
    pl.seed_everything(args.seed, verbose=False)
    dm = data_module(domain, args, data_format="imagefolder", data_path=str(crops), label_fraction=fraction)
    dm.setup("fit")
    n_train = len(dm.datasets["train"])
    transferred = source is not None
    # torchvision's ImageNet GoogLeNet expects its input transform (shared.backbones.cnn.GoogLeNetBackbone)
    torchvision_googlenet = backbone == "googlenet" and transferred and source.get("name") == "torchvision"
    kwargs = args.backbone_kwargs.get(backbone, {}) | ({"transform_input": True} if torchvision_googlenet else {})
    task = ClassificationTask(
        ImageClassifier(
            len(dm.class_names), backbone, in_channels=dm.in_channels, dropout=0.2, backbone_kwargs=kwargs
        ),
        dm.class_names,
        pretrained_backbone=source["path"] if transferred else None,
        pretrained_prefix=source["prefix"] if transferred else "",
        freeze_backbone_epochs=1 if transferred else 0,
        optimizer=adamw(args.lr),
        lr_scheduler=warmup_cosine(5),
    )
    batches = math.ceil(n_train / dm.batch_size)
    # without --steps: re-fitted to the time budget while training
    max_steps, fitting = step_schedule(args.steps, 100_000, seconds, every=5, window=20)
    trainer = quiet_trainer(
        devices=1,
        accelerator="cpu",
        max_steps=max_steps,
        max_epochs=-1,
        limit_train_batches=min(batches, args.epoch_batches),
        callbacks=fitting,
        max_time={"seconds": int(seconds * 1.3) + 20},  # safety net
        gradient_clip_val=1.0,
    )
    start = time.perf_counter()
    trainer.fit(task, datamodule=dm)
    train_s = time.perf_counter() - start
    dm.datasets["train"].transform = dm.datasets["val"].transform  # no augmentation when measuring the fit
    scored = {
        split: evaluate(task, dm.datasets[split], args.eval_items, dm.batch_size, args.seed)
        for split in ("train", "val", "test")
    }
    result = {
        "backbone": backbone,
        "source": "scratch" if not transferred else source["name"],
        "fraction": fraction,
        "n_train": n_train,
        "steps": trainer.global_step,
        **scored,
        "train_s": round(train_s, 1),
    }
    result["gap"] = result["train"]["acc"] - result["val"]["acc"]
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


# ------------------------------------------------------------------------------------------------ output


def table(rows: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| backbone | weights | labels | train images | steps | train acc | val acc | gap | test acc | test macro F1 | wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backbone']} | {r['source']} | {r['fraction']:.0%} | {r['n_train']} | {r['steps']} | "
            f"{r['train']['acc']:.3f} | {r['val']['acc']:.3f} | {r['gap']:+.3f} | {r['test']['acc']:.3f} | "
            f"{r['test']['f1_macro']:.3f} | {r['wall_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def report(rows: list[dict], header: str, smoke: str | None, length: str) -> str:
    """The markdown the run prints and writes: a smoke run's banner (:func:`benchmarks.report.smoke_run`), the
    table under ``header``, and how the training length was set (``length``: fixed steps or the time
    budget)."""
    return (f"{smoke}\n\n" if smoke else "") + table(rows, header) + f"\n{length}\n"


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    fig, axes = plt.subplots(
        2, len(backbones), figsize=(3.6 * len(backbones), 6), squeeze=False, sharex=True, layout="constrained"
    )
    for col, backbone in enumerate(backbones):
        mine = [r for r in rows if r["backbone"] == backbone]
        for source in dict.fromkeys(r["source"] for r in mine):
            pts = sorted(
                (r["fraction"], r["test"]["f1_macro"], r["gap"]) for r in mine if r["source"] == source
            )
            xs = [100 * p[0] for p in pts]
            axes[0, col].plot(xs, [p[1] for p in pts], marker="o", label=source)
            axes[1, col].plot(xs, [p[2] for p in pts], marker="o", label=source)
        axes[0, col].set_title(backbone)
        axes[1, col].axhline(0, color="grey", lw=0.5)
        axes[1, col].set_xlabel("training labels (%)")
        axes[0, col].set_xscale("log")
    axes[0, 0].set_ylabel("test macro F1")
    axes[1, 0].set_ylabel("train - val accuracy")
    axes[0, 0].legend(fontsize=8)
    # wrapped to the figure's width (about 45 characters of 9-pt text a column): a cut title lost both ends
    fig.suptitle(textwrap.fill(title, width=45 * len(backbones)), fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ main


def parse_named_paths(values: list[str], option: str, what: str = "PATH") -> dict[str, str]:
    """``option``'s ``BACKBONE=<what>`` items by backbone name. A ``what`` naming a ``PATH`` must name an
    existing file (of ``PATH[:PREFIX]``, the part before the colon): checked before any training, since a
    missing file used to fail only after the scratch runs, which were then thrown away."""
    out = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or name not in list_backbones():
            raise SystemExit(f"{option} {value!r}: expected BACKBONE={what} with a registered backbone")
        file = path.partition(":")[0] if what.endswith("[:PREFIX]") else path
        if what.startswith("PATH") and not Path(file).is_file():
            raise SystemExit(f"{option} {value!r}: {file}: no such file (expected BACKBONE={what})")
        out[name] = path
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = options()
    args = check_numbers(parser, parser.parse_args(argv))
    torch.set_num_threads(args.threads)
    for f in args.fractions:
        if not 0 < f <= 1:
            raise SystemExit(f"--fractions: {f} is outside (0, 1]")
    unknown = [b for b in args.backbones if b not in list_backbones()]
    if unknown:
        raise SystemExit(f"--backbones {unknown}: not registered ({', '.join(list_backbones())})")
    torchvision = parse_named_paths(args.torchvision_weights, "--torchvision-weights")
    try:
        named = parse_named_paths(args.backbone_kwargs, "--backbone-kwargs", "JSON")
        args.backbone_kwargs = {name: json_object(text) for name, text in named.items()}
    except argparse.ArgumentTypeError as error:
        parser.error(f"--backbone-kwargs: {error}")
    given = {}
    for name, spec in parse_named_paths(args.suite_checkpoint, "--suite-checkpoint", "PATH[:PREFIX]").items():
        path, _, prefix = spec.partition(":")
        given[name] = {"name": "suite", "path": path, "prefix": prefix}
    if given and args.split_seed != 0:
        print(
            f"--split-seed {args.split_seed} splits the frames otherwise than the configs' seed 0: a "
            "--suite-checkpoint trained with the configs' defaults has seen some of these validation and test frames"
        )
    out = args.out  # none: printed only (it had overwritten the committed benchmarks/results/transfer_*)
    budget, t0 = args.minutes * 60, time.perf_counter()

    crops = crops_root(args.domain, args)
    n_sources = {b: 1 + (not args.no_suite_source) + (b in torchvision) for b in args.backbones}
    runs = sum(n_sources.values()) * len(args.fractions)
    make = [b for b in args.backbones if not args.no_suite_source and b not in given]
    deadline = t0 + budget
    left = deadline - time.perf_counter()
    source_s = args.source_share * left / len(args.backbones) if make else 0.0
    each = (left - source_s * len(make)) / runs
    print(
        f"{args.domain}: {runs} runs ({len(args.backbones)} backbones x {len(args.fractions)} label shares x "
        f"scratch / suite / torchvision where given), about {max(each, 0):.0f} s each; "
        f"{len(make)} source segmenters made here, {source_s:.0f} s each"
    )
    if each < args.min_train_seconds:
        print(
            f"--minutes {args.minutes:g} is spent before training (crops, set-up): each run trains "
            f"--min-train-seconds {args.min_train_seconds:g} s, and the whole run takes longer than the budget"
        )
    seg_set = source_segmentation_set(args.domain, args, crops) if make else None
    rows: list[dict] = []
    made_steps: list[int] = []  # the source segmenters' steps
    pending_sources, runs_left, overheads = len(make), runs, []
    for backbone in args.backbones:
        sources: list[dict | None] = [None]
        if not args.no_suite_source:
            if backbone in given:
                sources.append(given[backbone])
            else:
                path = Path(args.sources_dir) / f"{args.domain}_{backbone}_segmenter.pt"
                kwargs = args.backbone_kwargs.get(backbone)
                made = pretrain_source(backbone, seg_set, source_s, path, args.seed, kwargs, args.steps)
                made_steps.append(made["steps"])
                sources.append({"name": "suite", **made})
                pending_sources -= 1
        if backbone in torchvision:
            sources.append({"name": "torchvision", "path": torchvision[backbone], "prefix": ""})
        for source in sources:
            for fraction in args.fractions:
                # what is left is shared by the runs still to come, less what a run spends outside training
                # (data set-up, scoring three splits), measured on the runs so far: the whole fits the budget
                per_run = (deadline - time.perf_counter() - pending_sources * source_s) / runs_left
                overhead = float(np.mean(overheads)) if overheads else 0.2 * per_run
                train_s = max(args.min_train_seconds, per_run - overhead)
                row = run_one(args.domain, args, crops, backbone, source, fraction, train_s)
                overheads.append(row["wall_s"] - row["train_s"])
                runs_left -= 1
                rows.append(row)
                print(table([row], "").splitlines()[-1], flush=True)
    total = time.perf_counter() - t0
    header = (
        f"Transfer benchmark, {args.domain} ({crops}): {args.image_size} px, batch {args.batch_size}, "
        f"{min(r['train_s'] for r in rows):.0f}-{max(r['train_s'] for r in rows):.0f} s of training per run, "
        f"{args.threads} CPU threads; whole run {total / 60:.1f} min "
        f"(budget {args.minutes:g} min). Scores on a seeded random {args.eval_items} images of each split at most "
        "(--eval-items). gap = train accuracy - validation accuracy (both without augmentation). "
        f"Command: `{command_line('benchmarks/transfer.py', argv)}` ({memory_note()})"
    )
    smoke = smoke_run(args.minutes, DEFAULT_MINUTES)
    text = report(rows, header, smoke, run_length(args.steps, [r["steps"] for r in rows] + made_steps))
    if out is None:
        print(text)
        print(f"({total / 60:.1f} min; --out FILE.md writes the table with its .json and .png)")
        return rows
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(
        json.dumps(
            {"settings": vars(args) | {"out": str(out)}, "smoke_run": bool(smoke), "rows": rows},
            indent=2,
            default=str,
        )
    )
    plot(rows, out.with_suffix(".png"), ("SMOKE RUN, not results: " if smoke else "") + header.split(";")[0])
    print(f"wrote {out}, {out.with_suffix('.json')} and {out.with_suffix('.png')} ({total / 60:.1f} min)")
    return rows


