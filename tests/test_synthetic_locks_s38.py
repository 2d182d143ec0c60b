"""Synthetic sets: ``--force`` holds the generation lock, a set torn before the lock existed is caught, and
a folder where no lock can be written says so in one line.

1. ``python -m domains.driving.synthetic ... --force`` (and ``clips``) called the generator directly, and the
   medical ``--force`` removed the marker before taking the lock: a forced run wrote beside a run generating
   (or a fit reading) the same folder and tore the set.
2. A set torn by two runs before the lock existed kept its ``.complete`` marker and was reused forever (1,325
   images against 1,500 labels, failing far from the cause). Its reuse now counts each kind of file, one
   folder listing each: a default set is generated again (with a warning); one given as
   ``--data.data_path`` is read after a warning naming the folder, what is missing and the command that
   regenerates it (not refused: one's own edit of a generated set, a reader's masks left out, is legitimate).
3. The lock needs a writable parent: a finished set there is still only read; an unfinished one says in one
   line which folder cannot be written (filelock's PermissionError named only its lock file, in a
   traceback).
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
import warnings
from pathlib import Path

import filelock
import pytest

from domains.driving.common import finished_data_path
from domains.driving.synthetic import cli, clips, writers
from domains.medical import synthetic as medical
from shared.files import TornGenerationWarning, generation_lock

KITTI = {"n_images": 2, "size": (160, 64), "frames_per_sequence": 2, "seed": 1}
ANOMALY = {"n_images": 2, "size": (160, 64), "seed": 1}
CLIPS = {"n_clips": 2, "size": (160, 64), "fps": 10.0, "seconds": 0.8, "seed": 0}
LIDC = {"n_patients": 3, "images_per_patient": 1, "size": 32, "splits": (1.0, 0.0, 0.0)}

# per set: the module whose ``rank_zero_info`` says it waits, its ensure function and settings, the command
# line (without --root) and a file to delete to tear it
SETS = {
    "kitti": (
        writers,
        writers.ensure_synthetic_kitti,
        KITTI,
        ["kitti", "--n-images", "2", "--width", "160", "--height", "64", "--frames-per-sequence", "2"]
        + ["--seed", "1"],
        "training/image_2/000001.png",
    ),
    "anomaly": (writers, writers.ensure_synthetic_anomaly, ANOMALY, None, "semantic/synthetic_00000.png"),
    "clips": (
        writers,
        clips.ensure_synthetic_clips,
        CLIPS,
        ["clips", "--n-clips", "2", "--seconds", "0.8", "--width", "160", "--height", "64"],
        "annotations/000001.json",
    ),
    "lidc": (
        medical,
        medical.ensure_synthetic_lidc,
        LIDC,
        ["--n-patients", "3", "--images-per-patient", "1", "--size", "32", "--splits", "1", "0", "0"],
        "train/gt/LIDC-SYN-0001/z{}_c0_l2.png",
    ),
}


def _quiet(**kw) -> dict:
    """The settings, with the driving generators' progress lines off (the medical one has no such switch)."""
    return kw if "n_patients" in kw else {**kw, "verbose": False}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> dict[str, Path]:
    """One finished set of each kind, generated once; tests copy what they change."""
    base = tmp_path_factory.mktemp("finished")
    return {name: ensure(base / name, **_quiet(**kw)) for name, (_, ensure, kw, _, _) in SETS.items()}


def _copy(finished: dict[str, Path], name: str, tmp_path: Path) -> Path:
    root = tmp_path / name
    shutil.copytree(finished[name], root)
    return root


def _tear(root: Path, name: str) -> Path:
    """Delete one file of the set, as a race between two runs did; returns it."""
    pattern = SETS[name][4]
    victim = next(root.glob(pattern.format("*"))) if "{}" in pattern else root / pattern
    victim.unlink()
    return victim


def _main(name: str, argv: list[str]):
    return medical.main(argv) if name == "lidc" else cli.main(argv)


# ------------------------------------------------------------------------------- 1. --force takes the lock
@pytest.mark.parametrize("name", ["kitti", "clips", "lidc"])
def test_forced_generation_waits_for_the_lock_and_then_regenerates(name, finished, tmp_path, monkeypatch):
    """Another run holds the set's lock: ``--force`` says it waits (the same line as a first run), leaves the
    finished set and its marker alone meanwhile, and regenerates once the lock is free."""
    module, argv = SETS[name][0], SETS[name][3]
    root = _copy(finished, name, tmp_path)
    held, release = threading.Event(), threading.Event()

    def other_run():
        with generation_lock(root):
            held.set()
            release.wait(60)

    holder = threading.Thread(target=other_run)
    holder.start()
    assert held.wait(30)
    said, marker_while_held, released_at = [], [], []
    real_info = module.rank_zero_info

    def say(message):
        if message.startswith("waiting for another run"):
            said.append(message)
            marker_while_held.append((root / ".complete").is_file())
            released_at.append(time.time_ns())
            release.set()
        else:
            real_info(message)

    monkeypatch.setattr(module, "rank_zero_info", say)
    try:
        _main(name, [*argv, "--root", str(root), "--force"])
    finally:
        release.set()
        holder.join(60)
    assert said == [f"waiting for another run generating {root} (lock {tmp_path / f'.{name}.lock'})"]
    assert marker_while_held == [True]  # nothing touched while the other run held it
    assert (root / ".complete").stat().st_mtime_ns >= released_at[0]  # generated again, after the wait
    assert SETS[name][1](root, **_quiet(**SETS[name][2])) == root


# ---------------------------------------------------------------------------- 2. a torn set is not reused
@pytest.mark.parametrize("name", list(SETS))
def test_a_torn_default_set_is_generated_again_with_a_warning(name, finished, tmp_path):
    ensure, kw = SETS[name][1], SETS[name][2]
    root = _copy(finished, name, tmp_path)
    victim = _tear(root, name)
    folder = victim.parent.relative_to(root).as_posix()
    with pytest.warns(TornGenerationWarning) as caught:
        assert ensure(root, **_quiet(**kw)) == root
    (message,) = [str(w.message) for w in caught if w.category is TornGenerationWarning]
    assert message.startswith(f"{root} is marked finished")
    assert folder in message and "generating it again" in message
    assert victim.is_file()  # whole again
    with warnings.catch_warnings():
        warnings.simplefilter("error", TornGenerationWarning)
        assert ensure(root, **_quiet(**kw)) == root  # and then reused without a word


@pytest.mark.parametrize("name", ["kitti", "clips", "lidc"])
def test_a_torn_set_given_as_data_path_is_warned_of_naming_the_fix(name, finished, tmp_path):
    root = _copy(finished, name, tmp_path)
    victim = _tear(root, name)
    given = root / "training" if name == "kitti" else root  # a KITTI root's split folder is checked too
    check = medical.check_finished if name == "lidc" else finished_data_path
    with pytest.warns(TornGenerationWarning) as caught:
        check(given, "--data.data_path")
    (message,) = [str(w.message) for w in caught]
    assert message.startswith(f"--data.data_path {given}: {root} is marked finished")
    assert f"{victim.parent.relative_to(root).as_posix()} " in message
    assert "--force`" in message and f"--root {root} " in message and f"or delete {root}" in message


@pytest.mark.parametrize("name", list(SETS))
def test_a_whole_set_passes_and_hidden_files_are_not_counted(name, finished, tmp_path):
    """No false alarm: a whole set passes both checks, also with a Mac copy's ``._`` files beside its own."""
    ensure, kw = SETS[name][1], SETS[name][2]
    root = _copy(finished, name, tmp_path)
    for path in [p for p in root.rglob("*.png") if p.is_file()][:3]:
        (path.parent / f"._{path.name}").write_bytes(b"\0")
    with warnings.catch_warnings():
        warnings.simplefilter("error", TornGenerationWarning)
        assert ensure(root, **_quiet(**kw)) == root
        (medical.check_finished if name == "lidc" else finished_data_path)(root, "--data.data_path")


def test_clips_with_no_crash_pass_the_check(tmp_path):
    """No crash clip: no ``Crash-1500`` folder at all, which is whole (0 of 0), not torn."""
    kw = {**CLIPS, "n_clips": 1, "shares": (0.0, 0.0, 1.0)}
    root = clips.generate_clips(tmp_path / "normal_only", verbose=False, **kw)
    assert not (root / "videos" / clips.CRASH_DIR).exists()
    assert writers._torn(root) == []
    (root / "videos" / clips.NORMAL_DIR / "000000" / "image_2" / "000003.jpg").unlink()
    assert writers._torn(root) == ["videos/Normal/000000/image_2 holds 7 of 8 .jpg files"]


# --------------------------------------------------------------------- 3. a folder that cannot be written
@pytest.fixture(params=[errno.EACCES, errno.EROFS], ids=["read-only folder", "read-only file system"])
def unwritable(request, monkeypatch):
    """No lock file can be made, as in a read-only folder (the tests may run as root, who may write anywhere):
    filelock's own error there."""

    def refused(self, *args, **kwargs):
        code = request.param
        raise (PermissionError if code == errno.EACCES else OSError)(code, os.strerror(code), self.lock_file)

    monkeypatch.setattr(filelock.FileLock, "acquire", refused)


@pytest.mark.parametrize("name", list(SETS))
def test_a_finished_set_in_a_read_only_folder_is_still_read(name, finished, unwritable):
    ensure, kw = SETS[name][1], SETS[name][2]
    assert ensure(finished[name], **_quiet(**kw)) == finished[name]


@pytest.mark.parametrize("name", ["kitti", "lidc"])
def test_an_unfinished_set_where_no_lock_can_be_written_says_which_folder(name, tmp_path, unwritable, capsys):
    ensure, kw, argv = SETS[name][1], SETS[name][2], SETS[name][3]
    root = tmp_path / "new"
    with pytest.raises(PermissionError) as err:
        ensure(root, **_quiet(**kw))
    assert str(err.value).startswith(f"{root}: cannot generate the data set there: its lock .new.lock cannot")
    assert f"in {tmp_path} (" in str(err.value)
    with pytest.raises(SystemExit) as stop:  # the generator's command line: one line, status 2
        _main(name, [*argv, "--root", str(root)])
    assert stop.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines[-1] == f"error: {err.value}"
    assert not any(line.startswith("Traceback") for line in lines)
