"""The shipped configs, read as files: each keeps its checkpoints in a folder of its own."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _cli_domain(config: Path) -> str:
    """The CLI's log folder name: medical, driving_<task>, <domain>_classification."""
    parts = config.relative_to(REPO / "domains").parts[:-2]  # e.g. ("driving", "detection")
    return "_".join(parts) if parts[0] == "driving" or len(parts) == 1 else f"{parts[0]}_{parts[1]}"


def test_every_shipped_config_keeps_its_checkpoints_in_a_folder_of_its_own():
    """Configs of one task shared lightning_logs/<task>/checkpoints, so `predict -c transfer.yaml --ckpt_path last`
    took the quick run's file (and warned that it held another network)."""
    configs = sorted(REPO.glob("domains/**/configs/*.yaml"))
    assert len(configs) >= 20
    # an overlay given after a model config (-c prob_unet.yaml -c gpu.yaml) keeps that config's folder
    overlay = REPO / "domains/medical/configs/gpu.yaml"
    assert "checkpoint" not in yaml.safe_load(overlay.read_text())
    folders: dict[str, list[str]] = {}
    for config in (c for c in configs if c != overlay):
        dirpath = (yaml.safe_load(config.read_text()).get("checkpoint") or {}).get("dirpath")
        assert dirpath, f"{config}: no checkpoint.dirpath"
        # under the CLI's log folder, so --trainer.default_root_dir moves it with the logs
        assert dirpath == f"lightning_logs/{_cli_domain(config)}/{config.stem}/checkpoints", (config, dirpath)
        folders.setdefault(dirpath, []).append(str(config))
    assert all(len(names) == 1 for names in folders.values()), folders


def test_the_demo_adopts_a_checkpoint_from_any_config_folder_of_its_task(tmp_path, monkeypatch):
    """`make demo-train` reuses what the user trained; it looked in lightning_logs/<domain>/checkpoints, where
    no config writes any more."""
    from apps import prepare_demo

    monkeypatch.setattr(prepare_demo, "ROOT", tmp_path)
    assert prepare_demo._adoptable("driving_detection") is None
    quick = tmp_path / "lightning_logs/driving_detection/quick/checkpoints/last.ckpt"
    quick.parent.mkdir(parents=True)
    quick.write_bytes(b"")
    best = quick.with_name("best-epoch=3.ckpt")
    best.write_bytes(b"")
    os.utime(best, (1000, 1000))  # older than last.ckpt: newest-first alone would pick last
    os.utime(quick, (2000, 2000))
    assert prepare_demo._adoptable("driving_detection") == best  # the best one first
