"""The command line, ``python -m domains.driving.synthetic kitti|anomaly|clips|preview``: argument parsing only.

It lives outside ``__main__.py`` so the package can re-export :func:`main` without importing its own
``__main__`` module early (which makes ``python -m`` warn about a module found in ``sys.modules`` before it
runs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from domains.driving.synthetic.clips import CLIP_SIZE, DEFAULT_ACCIDENT_ROOT, KINDS, ensure_synthetic_clips
from domains.driving.synthetic.scene import DEFAULT_SIZE
from domains.driving.synthetic.writers import (
    DEFAULT_ANOMALY_ROOT,
    DEFAULT_KITTI_ROOT,
    _preview,
    ensure_synthetic_anomaly,
    ensure_synthetic_kitti,
)


def main(argv: list[str] | None = None) -> int:
    """``python -m domains.driving.synthetic kitti|anomaly|clips|preview --root ... --n-images ...``."""
    ap = argparse.ArgumentParser(
        prog="python -m domains.driving.synthetic",
        description=sys.modules[__package__].__doc__.splitlines()[0],
    )
    ap.add_argument(
        "what",
        choices=("kitti", "anomaly", "clips", "preview"),
        help="kitti: road scenes in the KITTI object layout (detection, instances); anomaly: road-anomaly frames "
        "(SegmentMeIfYouCan layout); clips: accident-anticipation scenario clips (CCD layout); preview: a few "
        "rendered samples as PNGs, to look at",
    )
    ap.add_argument(
        "--root",
        default=None,
        help=f"output folder (default: data/driving/synthetic_{{kitti,anomaly}}, clips: {DEFAULT_ACCIDENT_ROOT}, "
        "preview: /tmp/driving_samples)",
    )
    ap.add_argument("--n-images", type=int, default=None, help="images to write (default: kitti 1500, anomaly 200)")
    ap.add_argument("--seed", type=int, default=0, help="the same seed writes the same files (default 0)")
    ap.add_argument(
        "--width", type=int, default=None, help=f"default {DEFAULT_SIZE[0]} (clips: {CLIP_SIZE[0]})"
    )
    ap.add_argument(
        "--height", type=int, default=None, help=f"default {DEFAULT_SIZE[1]} (clips: {CLIP_SIZE[1]})"
    )
    ap.add_argument(
        "--frames-per-sequence", type=int, default=10, help="kitti: frames of one drive, kept in one split (default 10)"
    )
    ap.add_argument(
        "--anomaly-free-fraction",
        type=float,
        default=0.2,
        help="anomaly: share of frames with no anomaly (default 0.2)",
    )
    clips = ap.add_argument_group("clips (accident anticipation scenarios)")
    clips.add_argument("--n-clips", type=int, default=200, help="clips to render (default 200)")
    clips.add_argument("--fps", type=float, default=10.0, help="frame rate (default 10, as CCD)")
    clips.add_argument("--seconds", type=float, default=5.0, help="clip length (50 frames at 10 fps)")
    clips.add_argument("--workers", type=int, default=1, help="processes rendering clips in parallel")
    clips.add_argument(
        "--shares",
        type=float,
        nargs=3,
        default=(0.4, 0.3, 0.3),
        metavar=("CRASH", "NEAR_MISS", "NORMAL"),
        help="shares of crash, near-miss and ordinary clips (default 0.4 0.3 0.3)",
    )
    ap.add_argument(
        "--force",
        action="store_true",
        help="regenerate even when a finished set with these settings exists (after any run generating it)",
    )
    args = ap.parse_args(argv)
    default = CLIP_SIZE if args.what == "clips" else DEFAULT_SIZE
    size = (args.width or default[0], args.height or default[1])
    if args.what == "preview":
        for p in _preview(Path(args.root or "/tmp/driving_samples"), args.seed, size):
            print(p)
        return 0
    if args.what == "clips":
        kw = {
            "n_clips": args.n_clips,
            "size": size,
            "fps": args.fps,
            "seconds": args.seconds,
            "seed": args.seed,
        }
        kw.update(shares=tuple(args.shares), workers=args.workers)
        path = _generated(ap, ensure_synthetic_clips, args.root or DEFAULT_ACCIDENT_ROOT, args.force, kw)
        counts = json.loads((Path(path) / "meta.json").read_text(encoding="utf-8"))["counts"]
        for kind in KINDS:
            detail = ", ".join(f"{s} {n}" for s, n in sorted(counts[kind].items()))
            print(f"{kind}: {sum(counts[kind].values())}" + (f" ({detail})" if detail else ""))
        print(path)
        return 0
    if args.what == "kitti":
        kw = {"n_images": args.n_images or 1500, "frames_per_sequence": args.frames_per_sequence}
        root, ensure = args.root or DEFAULT_KITTI_ROOT, ensure_synthetic_kitti
    else:
        kw = {"n_images": args.n_images or 200, "anomaly_free_fraction": args.anomaly_free_fraction}
        root, ensure = args.root or DEFAULT_ANOMALY_ROOT, ensure_synthetic_anomaly
    kw.update(size=size, seed=args.seed)
    print(_generated(ap, ensure, root, args.force, kw))
    return 0


def _generated(ap: argparse.ArgumentParser, ensure, root: str, force: bool, kw: dict) -> Path:
    """``ensure(root, force=force, **kw)``: ``--force`` too goes through it, so it holds the generation lock
    (it wrote beside a run generating the same folder, and tore the set). A folder of other data, or one that
    cannot be written, ends the command with one line and status 2."""
    try:
        return Path(ensure(root, force=force, **kw))
    except (FileExistsError, PermissionError) as err:
        ap.exit(2, f"error: {err}\n")
