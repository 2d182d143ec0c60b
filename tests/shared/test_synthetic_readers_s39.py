"""Runs that read a generated set while another run regenerates it (``--force``) wait for that generation.

Only generation held the lock: a fit given the set as ``--data.data_path`` while a ``--force`` run had deleted
its marker and half its files was refused as "interrupted" (or, a moment earlier, read half a set), and a
forced run started deleting while a reader was still counting the files. Readers now hold the shared side of
the set's lock (``<parent>/.<name>.lock``) during their check; generation holds it exclusively.
"""

from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path

import pytest

from shared import files
from shared.files import check_generation_finished, ensure_generated, generation_lock, listing_shortfall

N = 20  # files of the tiny set


def _write_set(root: Path) -> Path:
    """A tiny generator: stamp, marker removed, old files deleted, ``N`` files written, marker last."""
    root.mkdir(exist_ok=True)
    (root / ".stamp").write_text("")
    (root / ".complete").unlink(missing_ok=True)
    for path in root.glob("*.txt"):
        path.unlink()
    for i in range(N):
        (root / f"{i}.txt").write_text(str(i))
    (root / ".complete").write_text("")
    return root


def _finished(root: Path) -> bool:
    return (root / ".complete").is_file()


def _stamped(root: Path) -> bool:
    return (root / ".stamp").is_file()


def _torn(root: Path) -> list[str]:
    return [problem] if (problem := listing_shortfall(root, ".", ".txt", N)) else []


def _forced_regeneration(root: Path, deleted: threading.Event, hold_s: float) -> threading.Thread:
    """Another run regenerating ``root`` with force: holding its lock, it removed the marker and half the files
    (``deleted`` is set then), and writes the whole set ``hold_s`` later."""

    def run():
        with generation_lock(root, say=lambda message: None):
            (root / ".complete").unlink()
            for path in sorted(root.glob("*.txt"))[: N // 2]:
                path.unlink()
            deleted.set()
            time.sleep(hold_s)
            _write_set(root)

    thread = threading.Thread(target=run)
    thread.start()
    assert deleted.wait(10)
    return thread


def test_a_given_path_waits_for_a_forced_regeneration_then_reads_the_whole_set(tmp_path):
    """Before: UnfinishedGenerationError ("interrupted") while the other run was still writing."""
    root = _write_set(tmp_path / "set")
    thread = _forced_regeneration(root, threading.Event(), hold_s=0.3)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_generation_finished(root, "--data.data_path", _stamped, str, torn=_torn)
        assert len(list(root.glob("*.txt"))) == N and _finished(root)
    finally:
        thread.join(10)


def test_a_default_set_finished_when_checked_waits_for_a_generation_in_progress(tmp_path):
    """The run holding the lock has not yet removed the marker: a reader that went ahead read the files the
    other run was about to delete (before: ``ensure_generated`` returned at once)."""
    root = _write_set(tmp_path / "set")
    held, go = threading.Event(), threading.Event()

    def run():
        with generation_lock(root):
            held.set()
            go.wait(10)
            time.sleep(0.2)
            _write_set(root)

    thread = threading.Thread(target=run)
    thread.start()
    assert held.wait(10)
    said = []
    started = time.monotonic()
    go.set()
    try:
        assert ensure_generated(root, _finished, _torn, _write_set, say=said.append) == root
        assert time.monotonic() - started >= 0.2  # waited for the whole generation
        assert said == []  # a wait under a second is not worth a line
    finally:
        thread.join(10)


def test_a_forced_regeneration_waits_for_a_reader_still_counting_the_files(tmp_path):
    """Before: the forced run deleted the files while the reader counted them."""
    root = ensure_generated(tmp_path / "set", _finished, _torn, _write_set)  # as every set: its lock file left
    order, counting, generating = [], threading.Event(), threading.Event()

    def slow_torn(folder: Path) -> list[str]:  # a reader in the middle of its listing
        counting.set()
        if generating.wait(0.5):
            order.append("generation started during the reader's check")
        order.append("reader's check done")
        return _torn(folder)

    def regenerate(folder: Path) -> Path:
        generating.set()
        order.append("generation")
        return _write_set(folder)

    forced = threading.Thread(
        target=lambda: (counting.wait(10), ensure_generated(root, _finished, _torn, regenerate, True, str))
    )
    forced.start()
    try:
        assert ensure_generated(root, _finished, slow_torn, _write_set, say=print) == root
    finally:
        forced.join(10)
    assert order == ["reader's check done", "generation"]


def test_a_reader_says_once_it_waits_then_names_the_folder_and_lock_on_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "GENERATION_WAIT_S", 1.5)
    root = _write_set(tmp_path / "set")
    held, release = threading.Event(), threading.Event()

    def hang():  # a run that hangs holding the lock
        with generation_lock(root):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hang)
    thread.start()
    assert held.wait(10)
    said = []
    lock = tmp_path / ".set.lock"
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError) as err:
            ensure_generated(root, _finished, _torn, _write_set, say=said.append)
    finally:
        release.set()
        thread.join(10)
    assert 1.5 <= time.monotonic() - started < 3
    assert said == [f"waiting for another run generating {root} (lock {lock})"]
    assert str(err.value) == (
        f"{root}: another run has been generating it for over 1.5 s (its lock {lock} is held): let it finish, "
        "or stop it (a run that hangs keeps the lock) and run again"
    )
