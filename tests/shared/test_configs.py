"""The shipped configs, read as files: none pins its checkpoint folder; the demo finds any of them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def test_no_shipped_config_writes_its_checkpoint_folder():
    """The CLI derives the folder from the config's name (``lightning_logs/<domain>/<config>/checkpoints``), so a
    config copied to mine.yaml gets its own. A written dirpath would be copied with the file and take the
    original's ``last.ckpt`` (the CLI side: tests/shared/test_cli_and_data.py)."""
    configs = sorted(REPO.glob("domains/**/configs/*.yaml"))
    assert len(configs) >= 20
    written = [str(c) for c in configs if "dirpath" in ((yaml.safe_load(c.read_text()) or {}).get("checkpoint") or {})]
    assert written == []


def test_the_demo_adopts_a_checkpoint_of_its_own_config_only(tmp_path, monkeypatch):
    """`make demo-train` reuses what the user trained with the demo's config; it looked in
    lightning_logs/<domain>/checkpoints, where no config writes any more, and then in every config folder of
    the task (a full.yaml smoke run was adopted as the demo model)."""
    from apps import prepare_demo

    monkeypatch.setattr(prepare_demo, "work_root", lambda: tmp_path)  # where the user trained
    assert prepare_demo._adoptable("driving_detection") is None
    other = tmp_path / "lightning_logs/driving_detection/full/checkpoints/best-epoch=0.ckpt"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"")
    assert prepare_demo._adoptable("driving_detection") is None
    quick = tmp_path / "lightning_logs/driving_detection/quick/checkpoints/last.ckpt"
    quick.parent.mkdir(parents=True)
    quick.write_bytes(b"")
    best = quick.with_name("best-epoch=3.ckpt")
    best.write_bytes(b"")
    os.utime(best, (1000, 1000))  # older than last.ckpt: newest-first alone would pick last
    os.utime(quick, (2000, 2000))
    assert prepare_demo._adoptable("driving_detection") == best  # the best one first


def test_the_demo_trains_its_own_when_an_adopted_checkpoint_does_not_fit(tmp_path, monkeypatch):
    """A user's run with other classes was adopted, its test failed, and its copy stayed: every rerun of
    `make demo-train` tested the same copy and failed again."""
    from apps import demo_models, prepare_demo

    mine = tmp_path / "lightning_logs/driving_detection/mine/checkpoints/best-00-2.ckpt"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"user run")
    trained = tmp_path / "trained.ckpt"
    trained.write_bytes(b"demo run")
    monkeypatch.setattr(prepare_demo, "checkpoint_dir", lambda: tmp_path / "demo")
    monkeypatch.setattr(prepare_demo, "_adoptable", lambda key: mine)
    monkeypatch.setattr(prepare_demo, "train", lambda *args: (trained, 1.0))
    monkeypatch.setattr(prepare_demo, "slim_copy", lambda source, target: target.write_bytes(source.read_bytes()))
    tested = []

    def test(key, ckpt, smoke):
        tested.append(ckpt.read_bytes())
        if ckpt.read_bytes() == b"user run":
            raise prepare_demo.CheckpointDoesNotFit("testing driving_detection: not this demo model's")
        return {"test/map50": 0.5}, 1.0

    monkeypatch.setattr(prepare_demo, "test", test)
    (report,) = prepare_demo.prepare(["driving_detection"], force=False, smoke=False, extra=[])
    assert tested == [b"user run", b"demo run"] and report["status"] == "trained"
    target = demo_models.checkpoint_path("driving_detection", tmp_path / "demo")
    assert target.read_bytes() == b"demo run"
    # any other failure (out of memory, a data error) stops, and the checkpoint stays: nothing is retrained
    target.write_bytes(b"user run")
    metrics = demo_models.metrics_path("driving_detection", tmp_path / "demo")
    metrics.unlink()

    def crashes(key, ckpt, smoke):
        raise SystemExit("prepare_demo: testing driving_detection failed with exit code 1")

    monkeypatch.setattr(prepare_demo, "test", crashes)
    with pytest.raises(SystemExit, match="exit code 1"):
        prepare_demo.prepare(["driving_detection"], force=False, smoke=False, extra=[])
    assert target.read_bytes() == b"user run"


def test_the_demo_test_exits_with_its_own_status_for_another_models_checkpoint(monkeypatch, tmp_path):
    """Only that status lets `prepare` drop an adopted checkpoint (exit 1 could be any failure)."""
    import importlib

    from apps import prepare_demo
    from shared.task import CheckpointMismatchError

    module = importlib.import_module(f"{prepare_demo.DEMO_MODELS['driving_detection'].module}.__main__")

    def refuse(args):
        raise CheckpointMismatchError("x.ckpt was trained with model.class_names = ['Car', 'Pedestrian']")

    monkeypatch.setattr(module, "main", refuse)
    with pytest.raises(SystemExit) as exit_:
        prepare_demo._test_in_process("driving_detection", "x.ckpt", str(tmp_path / "out.json"), smoke=True)
    assert exit_.value.code == prepare_demo.DOES_NOT_FIT


def test_the_demo_reads_the_test_subprocess_status_as_does_not_fit_or_a_plain_failure(monkeypatch):
    """Exit status DOES_NOT_FIT (3) is the one a demo drops an adopted checkpoint for; 1 is any failure."""
    from types import SimpleNamespace

    from apps import prepare_demo

    status = []
    monkeypatch.setattr(
        prepare_demo.subprocess, "run", lambda *args, **kwargs: SimpleNamespace(returncode=status[-1])
    )
    status.append(0)
    prepare_demo._run(["python", "x"], "testing x")  # success: no exception
    status.append(prepare_demo.DOES_NOT_FIT)
    with pytest.raises(prepare_demo.CheckpointDoesNotFit, match="testing x: the checkpoint is not this demo"):
        prepare_demo._run(["python", "x"], "testing x")
    status.append(1)
    with pytest.raises(SystemExit, match="testing x failed with exit code 1") as exit_:
        prepare_demo._run(["python", "x"], "testing x")
    assert not isinstance(exit_.value, prepare_demo.CheckpointDoesNotFit)


def test_the_demo_stops_when_the_checkpoint_it_just_trained_does_not_fit(tmp_path, monkeypatch):
    """Only an adopted checkpoint is dropped for another: one the demo trained itself and its test refuses
    would be trained again and again."""
    from apps import prepare_demo

    trained = tmp_path / "trained.ckpt"
    trained.write_bytes(b"demo run")
    monkeypatch.setattr(prepare_demo, "checkpoint_dir", lambda: tmp_path / "demo")
    monkeypatch.setattr(prepare_demo, "_adoptable", lambda key: None)  # nothing to adopt: the demo trains
    monkeypatch.setattr(prepare_demo, "slim_copy", lambda src, target: target.write_bytes(src.read_bytes()))
    trainings = []

    def train(*args):
        trainings.append(args)
        if len(trainings) > 2:  # would loop for ever
            raise AssertionError("trained again")
        return trained, 1.0

    def refuses(key, ckpt, smoke):
        raise prepare_demo.CheckpointDoesNotFit("testing driving_detection: not this demo model's")

    monkeypatch.setattr(prepare_demo, "train", train)
    monkeypatch.setattr(prepare_demo, "test", refuses)
    with pytest.raises(prepare_demo.CheckpointDoesNotFit, match="not this demo model's"):
        prepare_demo.prepare(["driving_detection"], force=False, smoke=False, extra=[])
    assert len(trainings) == 1
