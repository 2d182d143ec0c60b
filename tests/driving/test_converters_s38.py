"""The converters' destination left three ways to lose data: a YOLO ``.txt`` image list or a sequence map
reached through a link was not among the files checked, so ``--overwrite`` of the folder holding it deleted it;
the instance converter wrote ``<stem>.sequences.txt`` through a link planted at that name (a file outside
--dst replaced); a final rename that failed left the replaced destination hidden as ``.<name>.old-*``.

One or two 128x64 KITTI frames (labels, instance maps, a ``sequences.txt``) in tmp_path/kitti.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from domains.driving import convert
from domains.driving.formats import yolo_names
from domains.driving.instances import convert as instances_convert
from tests.driving.layouts import write_instance_kitti


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (links followed) with its bytes: what must survive a refused run."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _entries(folder: Path) -> list[str]:
    """The names in ``folder``, hidden ones too: nothing renamed aside or temporary is left."""
    return sorted(p.name for p in folder.iterdir())


def _convert(src_fmt: str, dst_fmt: str, src: Path, dst: Path, *more: str) -> int:
    return convert.main(["--from", src_fmt, "--to", dst_fmt, "--src", str(src), "--dst", str(dst), *more])


def _instances(src: Path, dst: Path, *more: str) -> int | str | None:
    """The instance converter's exit status (0 when it returns)."""
    try:
        instances_convert.main(["--from", "kitti", "--src", str(src), "--dst", str(dst), *more])
    except SystemExit as stop:
        return stop.code
    return 0


@pytest.fixture
def kitti(tmp_path):
    """tmp_path/kitti: two frames of one sequence, listed in its sequences.txt."""
    return write_instance_kitti(tmp_path / "kitti", n=2, sequences=True)


@pytest.fixture
def linked_map(tmp_path, kitti):
    """kitti/sequences.txt made a link to maps/seq.txt: the map the conversion reads lies in maps/."""
    maps = tmp_path / "maps"
    maps.mkdir()
    (kitti / "sequences.txt").rename(maps / "seq.txt")
    (kitti / "sequences.txt").symlink_to(maps / "seq.txt")
    return maps / "seq.txt"


# ------------------------------------------------------------------- image lists and sequence maps are held


def test_a_destination_holding_a_yolo_image_list_is_refused(tmp_path, kitti, capsys):
    """``train: lists/train.txt`` in a yaml elsewhere: ``--dst lists --overwrite`` deleted the list read."""
    data = tmp_path / "data"
    assert _convert("kitti", "yolo", kitti, data) == 0
    lists = tmp_path / "lists"
    lists.mkdir()
    image_list = lists / "train.txt"
    image_list.write_text("".join(f"{p}\n" for p in sorted((data / "images" / "train").iterdir())))
    yaml_file = tmp_path / "cfg" / "data.yaml"
    yaml_file.parent.mkdir()
    yaml_file.write_text(f"train: {image_list}\nnames: {yolo_names(data / 'data.yaml')}\n")
    before = _tree(lists)
    capsys.readouterr()
    assert _convert("yolo", "coco", yaml_file, lists, "--overwrite") == convert.INPUT_ERROR
    err = capsys.readouterr().err
    assert f"error: --dst {lists} holds 1 file the conversion reads from --src {yaml_file}, e.g. {image_list}" in err
    assert _tree(lists) == before and _entries(tmp_path) == ["cfg", "data", "kitti", "lists"]


def test_a_destination_holding_a_linked_sequence_map_is_refused(tmp_path, kitti, linked_map, capsys):
    """A KITTI root whose sequences.txt is a link into maps/: ``--dst maps --overwrite`` deleted the map."""
    maps = linked_map.parent
    before = _tree(maps)
    assert _convert("kitti", "coco", kitti, maps, "--overwrite") == convert.INPUT_ERROR
    err = capsys.readouterr().err
    assert f"error: --dst {maps} holds 1 file the conversion reads from --src {kitti}, e.g. " in err
    assert f"{kitti / 'sequences.txt'} (resolved: {linked_map.resolve()})" in err
    assert _tree(maps) == before and (kitti / "sequences.txt").is_file()


def test_a_yolo_source_with_an_image_list_and_a_map_still_converts_apart(tmp_path, kitti):
    """The checks refuse only a --dst holding what is read: a list and a map beside the yaml still convert."""
    data = tmp_path / "data"
    assert _convert("kitti", "yolo", kitti, data) == 0
    images = sorted((data / "images" / "train").iterdir())
    (data / "train.txt").write_text("".join(f"images/train/{p.name}\n" for p in images))
    (data / "data.yaml").write_text(f"train: train.txt\nnames: {yolo_names(data / 'data.yaml')}\n")
    assert _convert("yolo", "coco", data / "data.yaml", tmp_path / "out") == 0
    assert (tmp_path / "out" / "sequences.txt").read_text() == (data / "sequences.txt").read_text()


@pytest.mark.parametrize("name", ["seq.txt", "seq.json"])
def test_an_instance_json_or_its_map_over_a_linked_sequence_map_is_refused(tmp_path, kitti, linked_map, capsys, name):
    """``--dst maps/seq.txt`` replaced the source's map with the JSON; ``--dst maps/seq.json`` wrote its
    ``seq.sequences.txt`` over a map of that name. Refused once read, nothing written."""
    maps = linked_map.parent
    if name == "seq.json":
        linked_map = linked_map.rename(maps / "seq.sequences.txt")
        (kitti / "sequences.txt").unlink()
        (kitti / "sequences.txt").symlink_to(linked_map)
    before = _tree(maps)
    dst = maps / name
    assert _instances(kitti, dst, "--overwrite") == 2
    err = capsys.readouterr().err
    what = "--dst" if name == "seq.txt" else "the sequence map written beside --dst,"
    assert f"error: {what} {linked_map} holds 1 file the conversion reads from --src {kitti}" in err
    assert f"nothing was written to {dst}" in err
    assert _tree(maps) == before and _entries(maps) == [linked_map.name]


# --------------------------------------------------------------------------- a link at an instance output name


@pytest.mark.parametrize("at", ["map", "json"])
def test_a_link_planted_at_an_instance_output_name_is_refused(tmp_path, kitti, capsys, at):
    """A link at ``out.sequences.txt`` had the map written through it, over the file it leads to outside
    --dst; one at the JSON's name is refused the same way (the detection converter refuses a --dst link)."""
    victim = tmp_path / "victim.txt"
    victim.write_text("not the converter's\n")
    out = tmp_path / "inst" / "out.json"
    out.parent.mkdir()
    link = out.with_suffix(".sequences.txt") if at == "map" else out
    link.symlink_to(victim)
    assert _instances(kitti, out, "--overwrite") == 2
    err = capsys.readouterr().err
    what = "the sequence map written beside --dst," if at == "map" else "--dst"
    assert f"error: {what} {link} is a symbolic link (to {victim})" in err and "nothing was read or written" in err
    assert victim.read_text() == "not the converter's\n"
    assert link.is_symlink() and _entries(out.parent) == [link.name]


def test_the_instance_map_is_written_beside_the_json_as_before(tmp_path, kitti):
    """Into a folder made for it (the map's temporary file goes there first), no temporary file left."""
    out = tmp_path / "new" / "out.json"
    assert _instances(kitti, out) == 0
    assert out.with_suffix(".sequences.txt").read_text() == "000000 seq0000\n000001 seq0000\n"
    assert _entries(out.parent) == ["out.json", "out.sequences.txt"]


# ------------------------------------------------------------------------------ a final rename that fails


def _failing_rename(monkeypatch, *patterns: str) -> list[tuple[str, str]]:
    """``os.rename`` fails (permission denied) for a source whose name matches one of ``patterns`` (globs);
    returns the renames tried."""
    rename, tried = os.rename, []

    def fake(src, dst, *args, **kwargs):
        tried.append((Path(src).name, Path(dst).name))
        if any(Path(src).match(pattern) for pattern in patterns):
            raise PermissionError(13, "Permission denied", str(src))
        return rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", fake)
    return tried


def test_a_failed_final_rename_puts_the_replaced_destination_back(tmp_path, kitti, capsys, monkeypatch):
    """--overwrite renamed out/ aside, then the output's rename failed: out/ stayed hidden as .out.old-*."""
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "old.txt").write_text("old")
    tried = _failing_rename(monkeypatch, ".out.*.tmp")  # the output's rename only
    assert _convert("kitti", "coco", kitti, dst, "--overwrite") == convert.INPUT_ERROR
    err = capsys.readouterr().err
    tmp = next(src for src, _ in tried if src.endswith(".tmp"))
    assert f"error: could not rename the output {tmp_path / tmp} to --dst {dst} (Permission denied)" in err
    assert "--dst is left as it was" in err and f"nothing was written to {dst}" in err
    assert _tree(dst) == {"old.txt": b"old"} and _entries(tmp_path) == ["kitti", "out"]


def test_a_replaced_destination_that_cannot_be_put_back_is_named(tmp_path, kitti, capsys, monkeypatch):
    """Putting it back failing too: the error says where the old destination is, and it is still there."""
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "old.txt").write_text("old")
    _failing_rename(monkeypatch, ".out.*.tmp", ".out.old-*")  # the output's rename and the old one's back
    assert _convert("kitti", "coco", kitti, dst, "--overwrite") == convert.INPUT_ERROR
    err = capsys.readouterr().err
    (old,) = [p for p in tmp_path.iterdir() if p.name.startswith(".out.old-")]
    assert f"nor put back the destination it replaces, renamed aside to {old}" in err
    assert f"put it back under {dst} yourself" in err
    assert _tree(old) == {"old.txt": b"old"} and _entries(tmp_path) == [old.name, "kitti"]


def test_a_failed_rename_onto_an_empty_destination_leaves_it_there(tmp_path, kitti, capsys, monkeypatch):
    """Without --overwrite the empty --dst given is removed before the rename: made again when that fails."""
    dst = tmp_path / "out"
    dst.mkdir()
    os.chmod(dst, 0o750)
    _failing_rename(monkeypatch, ".out.*.tmp")
    assert _convert("kitti", "coco", kitti, dst) == convert.INPUT_ERROR
    assert f"to --dst {dst} (Permission denied); --dst is left as it was" in capsys.readouterr().err
    assert dst.is_dir() and _entries(dst) == [] and oct(dst.stat().st_mode & 0o777) == oct(0o750)
    assert _entries(tmp_path) == ["kitti", "out"]


def test_a_successful_overwrite_removes_the_replaced_destination(tmp_path, kitti):
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "old.txt").write_text("old")
    assert _convert("kitti", "coco", kitti, dst, "--overwrite") == 0
    assert _entries(dst) == ["annotations.json", "images", "sequences.txt"]
    assert _entries(tmp_path) == ["kitti", "out"]
