"""Two runs generating one synthetic set at once (a SLURM array, two terminals in one working directory).

Without a lock the second run cleared the folder the first was writing: the first died (``Directory not
empty``, a missing folder) or marked a set finished that lacked files, which every later run then reused. Now
the generators hold :func:`shared.files.generation_lock` (``<parent>/.<name>.lock``) while they decide and
write; the run that waited reuses what the other one wrote.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import threading
from pathlib import Path

import pytest

from domains.driving.synthetic import writers
from domains.medical import synthetic as medical
from shared import files
from shared.files import generation_lock

KITTI = {"n_images": 6, "size": (320, 96), "frames_per_sequence": 3, "seed": 3, "verbose": False}
LIDC = {"n_patients": 6, "images_per_patient": 2, "size": 32}


def _digests(root: Path) -> dict[str, str]:
    """SHA-256 of every file below ``root`` (hidden ones too: the stamp, the marker), by relative path; the
    generation time (``meta.json``'s ``seconds``, the README's ``Generated in`` line) left out."""
    found = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.name == "meta.json":
            meta = json.loads(data)
            meta.pop("seconds")
            data = json.dumps(meta, sort_keys=True).encode()
        elif path.name == "README.txt":
            data = b"\n".join(line for line in data.splitlines() if not line.startswith(b"Generated in"))
        found[path.relative_to(root).as_posix()] = hashlib.sha256(data).hexdigest()
    return found


def _ensure_both(tmp: Path, start) -> None:
    """One run (a process): the KITTI set, then the LIDC set, each started with the other run at once."""
    start.wait()
    writers.ensure_synthetic_kitti(tmp / "kitti", **KITTI)
    start.wait()
    medical.ensure_synthetic_lidc(tmp / "lidc", **LIDC)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> Path:
    """Two processes generating the same two sets into the same folders, at the same moment (a barrier); both
    must exit 0. Forked: a spawned one spends 5-30 s importing torch and Lightning again."""
    tmp = tmp_path_factory.mktemp("two_runs")
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(2, timeout=30)
    runs = [ctx.Process(target=_ensure_both, args=(tmp, start)) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(120)
        if run.exitcode is None:
            run.terminate()
    assert [run.exitcode for run in runs] == [0, 0], "a run failed: its traceback is in the captured stderr"
    return tmp


def test_two_runs_make_one_whole_kitti_set(two_runs, tmp_path):
    single = writers.generate_kitti(tmp_path / "single", **KITTI)
    assert _digests(two_runs / "kitti") == _digests(single)
    assert len(list((two_runs / "kitti/training/image_2").iterdir())) == 6
    assert (two_runs / ".kitti.lock").is_file()  # beside the set, not in it


def test_two_runs_make_one_whole_lidc_set(two_runs, tmp_path):
    single = medical.generate_lidc_png(tmp_path / "single", **LIDC)
    assert _digests(two_runs / "lidc") == _digests(single)
    assert len(list((two_runs / "lidc").glob("*/gt/*/*_l3.png"))) == 12


def _held_by_another_run(root: Path, generate, kw: dict) -> tuple[threading.Thread, threading.Event]:
    """A thread (another run) holding ``root``'s lock, generating there once ``go`` is set."""
    held, go = threading.Event(), threading.Event()

    def run():
        with generation_lock(root):
            held.set()
            go.wait(30)
            generate(root, **kw)

    thread = threading.Thread(target=run)
    thread.start()
    assert held.wait(30)
    return thread, go


@pytest.mark.parametrize("domain", ["driving", "medical"])
def test_a_waiting_run_says_so_and_reuses_the_set(domain, tmp_path, monkeypatch):
    """The run that finds the lock held says so once, waits, re-checks and reuses the other run's set (its
    own generator is never called)."""
    module, name, ensure, kw = {
        "driving": (writers, "generate_kitti", writers.ensure_synthetic_kitti, KITTI),
        "medical": (medical, "generate_lidc_png", medical.ensure_synthetic_lidc, LIDC),
    }[domain]
    root = tmp_path / "set"
    thread, go = _held_by_another_run(root, getattr(module, name), kw)

    def generate_again(*args, **kwargs):
        raise AssertionError("generated again: the waiting run did not re-check the set after the lock")

    said = []

    def say(message):  # the other run writes once this one waits
        said.append(message)
        go.set()

    monkeypatch.setattr(module, name, generate_again)
    monkeypatch.setattr(module, "rank_zero_info", say)
    try:
        assert ensure(root, **kw) == root
    finally:
        go.set()
        thread.join(60)
    lock = tmp_path / ".set.lock"
    assert said == [f"waiting for another run generating {root} (lock {lock})"]


def test_a_finished_set_is_reused_without_the_lock(tmp_path, monkeypatch):
    """A finished set is checked without the lock: a run reusing it never waits on one writing elsewhere."""
    kitti = writers.generate_kitti(tmp_path / "kitti", **KITTI)
    lidc = medical.generate_lidc_png(tmp_path / "lidc", **LIDC)

    def locked(root, say=print):
        raise AssertionError(f"took the lock of the finished set {root}")

    monkeypatch.setattr(files, "generation_lock", locked)
    assert writers.ensure_synthetic_kitti(kitti, **KITTI) == kitti
    assert medical.ensure_synthetic_lidc(lidc, **LIDC) == lidc
    assert not list(tmp_path.glob(".*.lock"))
