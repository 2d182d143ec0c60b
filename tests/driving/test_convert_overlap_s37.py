"""A converter's destination that is its source, holds it or lies inside it is refused before anything is read
or written: ``convert --src proj/kitti --dst proj --overwrite`` renamed proj aside and deleted it, the source
and an unrelated proj/NOTES.txt with it, then reported a normal conversion. Paths are compared as given and
resolved, so a symbolic link is no way round. ``--overwrite`` of a destination apart from the source still
replaces it.

One 128x64 KITTI frame (labels and instance map) in tmp_path/proj/kitti, beside proj/NOTES.txt.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domains.driving import convert
from domains.driving.instances import convert as instances_convert
from tests.driving.layouts import write_instance_kitti


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (links followed) with its bytes: what must survive a refused run."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def proj(tmp_path):
    """tmp_path/proj holding the KITTI source kitti/ and an unrelated NOTES.txt."""
    write_instance_kitti(tmp_path / "proj" / "kitti", n=1)
    (tmp_path / "proj" / "NOTES.txt").write_text("not the converter's\n")
    return tmp_path / "proj"


def _link(tmp_path: Path, target: Path) -> Path:
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    return link


# (--dst, the relation named) for --src proj/kitti; "link:X" is a symbolic link to X outside proj
OVERLAPS = [
    ("kitti", "is"),
    (".", "holds"),  # the audit's run: proj/ held the source and NOTES.txt
    ("kitti/training", "lies inside"),
    ("kitti/training/label_2", "lies inside"),
    ("link:kitti", "is"),
    ("link:.", "holds"),
]
LABEL = "kitti/training/label_2/000000.txt"  # a source file the instance converter's JSON replaced


def _dst(tmp_path: Path, proj: Path, spec: str) -> Path:
    if spec.startswith("link:"):
        return _link(tmp_path, (proj / spec[5:]).resolve())
    return proj / spec


@pytest.mark.parametrize(("spec", "relation"), OVERLAPS)
def test_a_detection_destination_overlapping_the_source_is_refused(tmp_path, proj, capsys, spec, relation):
    src, dst = proj / "kitti", _dst(tmp_path, proj, spec)
    before, listing = _tree(proj), sorted(p.name for p in proj.iterdir())
    args = ["--from", "kitti", "--to", "coco", "--src", str(src), "--dst", str(dst), "--overwrite"]
    assert convert.main(args) == convert.INPUT_ERROR
    err = capsys.readouterr().err
    assert f"error: --dst {dst} {relation} --src {src}" in err and "nothing was read or written" in err
    assert _tree(proj) == before and sorted(p.name for p in proj.iterdir()) == listing  # no temp folder left
    assert (proj / "NOTES.txt").read_text() == "not the converter's\n"


def test_the_message_names_the_resolved_paths_when_a_link_hides_the_overlap(tmp_path, proj, capsys):
    dst = _link(tmp_path, proj)
    src = proj / "kitti"
    assert convert.main(["--from", "kitti", "--to", "yolo", "--src", str(src), "--dst", str(dst)]) == 2
    assert f"holds --src {src} (resolved: {proj.resolve()} and {(proj / 'kitti').resolve()})" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("where", ["file", "folder"])
def test_a_coco_source_file_is_not_replaced_by_its_destination(tmp_path, proj, capsys, where):
    """A COCO / YOLO source is a file: --dst naming it, or the folder holding it, is refused."""
    coco = tmp_path / "coco"
    made = convert.main(["--from", "kitti", "--to", "coco", "--src", str(proj / "kitti"), "--dst", str(coco)])
    assert made == 0
    src = coco / "annotations.json"
    dst = src if where == "file" else coco
    before = _tree(coco)
    args = ["--from", "coco", "--to", "yolo", "--src", str(src), "--dst", str(dst), "--overwrite"]
    assert convert.main(args) == 2
    assert f"--dst {dst} {'is' if where == 'file' else 'holds'} --src {src}" in capsys.readouterr().err
    assert _tree(coco) == before


def test_overwrite_still_replaces_a_destination_apart_from_the_source(tmp_path, proj):
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "old.txt").write_text("old")
    before = _tree(proj)
    args = ["--from", "kitti", "--to", "coco", "--src", str(proj / "kitti"), "--dst", str(dst), "--overwrite"]
    assert convert.main(args) == 0
    assert sorted(p.name for p in dst.iterdir()) == ["annotations.json", "images"]
    assert [i["file_name"] for i in json.loads((dst / "annotations.json").read_text())["images"]] == [
        "images/000000.png"
    ]
    assert _tree(proj) == before
    # a sibling whose name merely starts with the source's is apart from it
    sibling = proj / "kitti_coco"
    assert convert.main([*args[:5], str(proj / "kitti"), "--dst", str(sibling)]) == 0
    assert (sibling / "annotations.json").is_file()


@pytest.mark.parametrize(("spec", "relation"), [*OVERLAPS, (LABEL, "lies inside")])
def test_an_instance_json_overlapping_the_source_is_refused(tmp_path, proj, capsys, spec, relation):
    """The instance converter's --dst is a JSON: with --overwrite, an existing file inside the source was
    replaced (a label, here); one that is or holds the source folder failed only after reading it all."""
    src, dst = proj / "kitti", _dst(tmp_path, proj, spec)
    before, listing = _tree(proj), sorted(p.name for p in proj.iterdir())
    with pytest.raises(SystemExit) as stop:
        instances_convert.main(["--from", "kitti", "--src", str(src), "--dst", str(dst), "--overwrite"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"error: --dst {dst} {relation} --src {src}" in err
    assert (" and exists: " in err) == (relation == "lies inside")  # an existing file or folder of the source
    assert _tree(proj) == before and sorted(p.name for p in proj.iterdir()) == listing


def test_an_instance_json_apart_from_the_source_is_still_overwritten(tmp_path, proj):
    out = tmp_path / "out.json"
    out.write_text("{}")
    src = proj / "kitti"
    instances_convert.main(["--from", "kitti", "--src", str(src), "--dst", str(out), "--overwrite"])
    images = json.loads(out.read_text())["images"]
    assert [i["file_name"] for i in images] == ["proj/kitti/training/image_2/000000.png"]


def test_a_new_instance_json_inside_the_source_is_written_beside_its_images(tmp_path, proj, capsys):
    """A JSON in the KITTI root names its images relative to it (a folder that moves whole): still written,
    leaving every source file as it was; once there, it is part of the source and --overwrite refuses it."""
    src = proj / "kitti"
    before = _tree(src)
    out = src / "instances.json"
    instances_convert.main(["--from", "kitti", "--src", str(src), "--dst", str(out)])
    images = json.loads(out.read_text())["images"]
    assert [i["file_name"] for i in images] == ["training/image_2/000000.png"]
    assert {k: v for k, v in _tree(src).items() if k != "instances.json"} == before
    with pytest.raises(SystemExit):
        instances_convert.main(["--from", "kitti", "--src", str(src), "--dst", str(out), "--overwrite"])
    assert f"--dst {out} lies inside --src {src} and exists: " in capsys.readouterr().err
