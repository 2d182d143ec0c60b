"""Rebuild the accident page's two bundled example clips (``apps/examples/accident``) from the clip generator.

    .venv/bin/python -m apps.accident_examples [--out apps/examples/accident]

Generates ``generate_clips(n_clips=6, seed=7, shares=(0.5, 0.5, 0.0))`` in a temporary folder and keeps clip
000000 (a crash: lead braking) and 000003 (a near miss: pedestrian stepping out). To keep them small (< 1 MB
together) the JPEG frames are re-encoded as MPEG-4 videos (OpenCV ``mp4v``, at the clip's frame rate:
``videos/<set>/<vid>.mp4``, read like CCD's own videos), the tracks' ``world`` poses are dropped from
``annotations/<vid>.json`` and the semantic / instance / label_2 folders are left out. Everything the page
reads (frames, tracks, contact frame, involved ids) is as generated.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import cv2

from domains.driving.synthetic.clips import CRASH_DIR, NORMAL_DIR, SCENARIO_VERSION, generate_clips

ROOT = Path(__file__).resolve().parents[1]
KEEP = ("000000", "000003")


def _encode(frames: list[Path], fps: float, target: Path) -> None:
    """JPEG frames -> one mp4v video; refuses to leave a half-written file behind."""
    first = cv2.imread(str(frames[0]))
    if first is None:
        raise OSError(f"cannot read {frames[0]}")
    height, width = first.shape[:2]
    partial = target.with_suffix(".partial.mp4")
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    try:
        for frame in frames:
            image = cv2.imread(str(frame))
            if image is None or image.shape[:2] != (height, width):
                raise OSError(f"{frame}: unreadable or not {width}x{height}")
            writer.write(image)
    finally:
        writer.release()
    partial.replace(target)


def _describe(meta: dict) -> str:
    kind = meta["kind"].replace("_", " ")
    scenario = meta["scenario"].replace("_", " ")
    if meta.get("contact_time") is None:
        return f"{meta['vid']}  {kind}, {scenario} (no contact), {meta['lighting']}, {meta['weather']}"
    track = str(meta["involved"][0])
    return (
        f"{meta['vid']}  {kind}, {scenario} (contact at {meta['contact_time']:.2f} s, frame "
        f"{meta['contact_frame']}; involved track {track}, a {meta['tracks'][track]['type'].lower()}), "
        f"{meta['lighting']}, {meta['weather']}"
    )


def build(out: Path) -> list[str]:
    """Write the example clips to ``out`` (replacing it); returns their one-line descriptions."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "clips"
        generate_clips(src, n_clips=6, seed=7, shares=(0.5, 0.5, 0.0), verbose=False)
        staged = Path(tmp) / "examples"
        (staged / "annotations").mkdir(parents=True)
        lines, described = [], []
        ccd = {line.split(",", 1)[0]: line for line in (src / "Crash-1500.txt").read_text(encoding="utf-8").splitlines()}
        for vid in KEEP:
            meta = json.loads((src / "annotations" / f"{vid}.json").read_text(encoding="utf-8"))
            for track in meta["tracks"].values():
                track.pop("world", None)
            (staged / "annotations" / f"{vid}.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
            folder = CRASH_DIR if meta.get("contact_time") is not None else NORMAL_DIR
            (staged / "videos" / folder).mkdir(parents=True, exist_ok=True)
            frames = sorted((src / "videos" / folder / vid / "image_2").glob("*.jpg"))
            _encode(frames, float(meta["fps"]), staged / "videos" / folder / f"{vid}.mp4")
            if vid in ccd:
                lines.append(ccd[vid])
            described.append(_describe(meta))
        (staged / "Crash-1500.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        readme = [
            "Two bundled example clips for the demo's accident page, in the synthetic / CCD layout the accident",
            "readers take:",
            "",
            *("  " + d for d in described),
            "",
            f"Built by `python -m apps.accident_examples` (scenario clips version {SCENARIO_VERSION}):",
            "generate_clips(n_clips=6, seed=7, shares=(0.5, 0.5, 0.0)), 50 frames of 320x96 at 10 fps each,",
            "re-encoded as MPEG-4 videos (OpenCV mp4v: videos/<set>/<vid>.mp4, read like CCD's own videos), the",
            "per-track world poses dropped and the semantic / instance / label_2 folders left out. Everything the",
            "page reads (frames, tracks, contact frame, involved ids) is as generated.",
        ]
        (staged / "README.txt").write_text("\n".join(readme) + "\n", encoding="utf-8")
        if out.exists():
            strays = {p.name for p in out.iterdir()} - {p.name for p in staged.iterdir()}
            if strays:  # never wipe a folder that is not an earlier set of examples
                raise FileExistsError(
                    f"{out} holds {sorted(strays)[:5]}: not an example set; give an empty --out"
                )
            shutil.rmtree(out)
        shutil.copytree(staged, out)
    return described


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m apps.accident_examples", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=ROOT / "apps" / "examples" / "accident")
    args = parser.parse_args(argv)
    for line in build(args.out):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
