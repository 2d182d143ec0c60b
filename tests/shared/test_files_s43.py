"""``visible_files`` lists with one ``os.scandir`` per folder and looks at no entry but the links (``iterdir``
and ``is_file`` cost a stat per entry, ``rglob`` listed each folder twice), with the results it had: hidden
files and folders, links (to a file, broken, a loop, to a folder), suffixes in any case, the sort by path
parts, and the errors."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from shared.files import BrokenLinkWarning, HiddenFilesWarning, visible_files

IMAGES = (".png", ".jpg")


@pytest.fixture
def tree(tmp_path) -> Path:
    """A hand-made folder of every kind of entry a listing meets."""
    root = tmp_path / "t"
    names = ("b.png", "a.PNG", "10.jpg", "2.jpg", "notes.txt", "a.", "._b.png", ".DS_Store", "Thumbs.db",
             "..png", "sub/c.png", "sub/.x.png", "a/b.png", "a.b/c.png", ".hid/d.png", "locked/e.png")
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()
    for link, target in (("link.png", "b.png"), ("broken.png", "missing.png"), ("loop.png", "loop.png"),
                         ("._dead.png", "nowhere"), ("linked", "sub")):  # fmt: skip
        (root / link).symlink_to(target)
    return root


def _names(root: Path, paths) -> list[str]:
    return [str(p.relative_to(root)) for p in paths]


def _message(record, category) -> str:
    (found,) = [str(w.message) for w in record if issubclass(w.category, category)]
    return found


def test_a_listing_keeps_what_it_kept(tree):
    with pytest.warns(UserWarning) as record:
        got = visible_files(tree, IMAGES)
    assert _names(tree, got) == ["10.jpg", "2.jpg", "a.PNG", "b.png", "link.png"]  # the link: to a file
    assert "2 hidden files left out (..png, ._b.png)" in _message(record, HiddenFilesWarning)
    broken = _message(record, BrokenLinkWarning)  # a hidden one (._dead.png) is not named
    assert "2 broken links (broken.png: a link to missing.png, which does not exist; loop.png: a" in broken
    with pytest.warns(HiddenFilesWarning) as record:
        got = visible_files(tree)
    hidden = _message(record, HiddenFilesWarning)
    assert "4 hidden files left out (..png, .DS_Store, ._b.png and 1 more)" in hidden
    assert _names(tree, got) == ["10.jpg", "2.jpg", "a.", "a.PNG", "b.png", "link.png", "notes.txt"]


def test_a_recursive_listing_keeps_what_it_kept(tree, monkeypatch):
    """Not into a linked folder (``linked``); a folder below that cannot be read is passed over, as ``rglob``
    did; sorted by path parts (``a/b.png`` before ``a.PNG``, which a sort of strings puts after it)."""
    scandir = os.scandir

    def unreadable(path):
        if Path(path).name == "locked":
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", unreadable)
    with pytest.warns(UserWarning) as record:
        got = visible_files(tree, IMAGES, recursive=True)
    expected = ["10.jpg", "2.jpg", "a/b.png", "a.PNG", "a.b/c.png", "b.png", "link.png", "sub/c.png"]
    assert _names(tree, got) == expected
    hidden = _message(record, HiddenFilesWarning)
    assert "4 hidden files left out (..png, ._b.png, .hid/d.png and 1 more)" in hidden
    assert "2 broken links (broken.png:" in _message(record, BrokenLinkWarning)


def test_errors_and_nothing_as_before(tree):
    with pytest.raises(FileNotFoundError, match="missing"):
        visible_files(tree / "missing")
    with pytest.raises(NotADirectoryError, match="b.png"):
        visible_files(tree / "b.png")
    assert visible_files(tree / "missing", recursive=True) == []  # rglob's: no folder, nothing


def test_only_links_are_looked_at_and_each_folder_listed_once(tree, monkeypatch):
    """A listing of 10,000 images took an lstat each (``is_file``); ``rglob`` listed each folder twice."""
    for i in range(50):
        (tree / "many" / f"{i:06d}.png").parent.mkdir(exist_ok=True)
        (tree / "many" / f"{i:06d}.png").touch()
    (tree / "many" / "link.png").symlink_to("000000.png")
    calls = {"stat": 0, "scandir": 0}
    stat, scandir = os.stat, os.scandir

    def counted_stat(*args, **kwargs):
        calls["stat"] += 1
        return stat(*args, **kwargs)

    def counted_scandir(*args):
        calls["scandir"] += 1
        return scandir(*args)

    monkeypatch.setattr(os, "stat", counted_stat)
    monkeypatch.setattr(os, "scandir", counted_scandir)
    assert len(visible_files(tree / "many", IMAGES)) == 51
    assert calls["stat"] <= 1  # the link's target at most (a Windows Python may check it without os.stat)
    calls.update(scandir=0)
    with pytest.warns(UserWarning):
        visible_files(tree, IMAGES, recursive=True)
    assert calls["scandir"] == 7  # t, sub, a, a.b, .hid, locked, many
