"""A converter's destination that is its source, holds it or lies inside it is refused before anything is read
or written: ``convert --src proj/kitti --dst proj --overwrite`` renamed proj aside and deleted it, the source
and an unrelated proj/NOTES.txt with it, then reported a normal conversion. Paths are compared as given and
resolved, so a symbolic link is no way round. ``--overwrite`` of a destination apart from the source still
replaces it.

One 128x64 KITTI frame (labels and instance map) in tmp_path/proj/kitti, beside proj/NOTES.txt.
"""

from __future__ import annotations

import json
import os
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


# ----------------------------------------------------------------- the files the conversion reads, not its path


def _convert(src_fmt: str, dst_fmt: str, src: Path, dst: Path, *more: str) -> int:
    return convert.main(["--from", src_fmt, "--to", dst_fmt, "--src", str(src), "--dst", str(dst), *more])


def _entries(folder: Path) -> list[str]:
    """The names in ``folder``, hidden ones too: a refused run leaves no temporary or renamed folder."""
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def coco(tmp_path, proj):
    """tmp_path/coco: annotations.json beside images/000000.png, converted from proj/kitti."""
    assert _convert("kitti", "coco", proj / "kitti", tmp_path / "coco") == 0
    return tmp_path / "coco"


@pytest.mark.parametrize("dst_name", ["images", "images/000000.png"])
def test_a_destination_holding_the_coco_images_is_refused_once_read(coco, capsys, dst_name):
    """``--dst coco/images --overwrite`` deleted the images the JSON names (its folder is their root): refused
    after reading, naming an image and the count, with nothing written or renamed."""
    src, dst = coco / "annotations.json", coco / dst_name
    before, listing = _tree(coco), _entries(coco)
    assert _convert("coco", "yolo", src, dst, "--overwrite") == convert.INPUT_ERROR
    err = capsys.readouterr().err
    image = coco / "images" / "000000.png"
    assert f"error: --dst {dst} holds 1 file the conversion reads from --src {src}, e.g. {image}" in err
    assert f"nothing was written to {dst}" in err
    assert _tree(coco) == before and _entries(coco) == listing


def test_a_destination_beside_the_coco_json_is_still_written(coco):
    """The common layout: the converted set beside the annotations it came from."""
    assert _convert("coco", "yolo", coco / "annotations.json", coco / "yolo") == 0
    assert (coco / "yolo" / "labels" / "train" / "000000.txt").is_file()
    assert (coco / "images" / "000000.png").is_file()


@pytest.mark.parametrize("dst_name", ["labels", "labels/train", "."])
def test_a_destination_holding_the_yolo_root_named_by_its_yaml_is_refused(tmp_path, proj, capsys, dst_name):
    """A YOLO yaml elsewhere naming its dataset root (``path:``): --dst that root, or its label folder, held
    the files read (the labels, 2 with the image) though not the yaml itself."""
    data = tmp_path / "data"
    assert _convert("kitti", "yolo", proj / "kitti", data) == 0
    yaml_file = tmp_path / "cfg" / "data.yaml"
    yaml_file.parent.mkdir()
    yaml_file.write_text((data / "data.yaml").read_text() + f"path: {data}\n")
    dst = (data / dst_name) if dst_name != "." else data
    before, listing = _tree(data), _entries(tmp_path)
    assert _convert("yolo", "coco", yaml_file, dst, "--overwrite") == convert.INPUT_ERROR
    err = capsys.readouterr().err
    count = 2 if dst_name == "." else 1
    first = data / "images" / "train" / "000000.png" if dst_name == "." else data / "labels" / "train" / "000000.txt"
    files = "file" if count == 1 else "files"
    assert f"error: --dst {dst} holds {count} {files} the conversion reads from --src {yaml_file}, e.g. {first}" in (
        err
    )
    assert _tree(data) == before and _entries(tmp_path) == listing


def test_a_destination_holding_images_linked_into_a_kitti_source_is_refused(tmp_path, proj, capsys):
    """A KITTI source whose image folder is a link to the images elsewhere: --dst that folder held them."""
    image_dir = proj / "kitti" / "training" / "image_2"
    raw = tmp_path / "raw_images"
    image_dir.rename(raw)
    image_dir.symlink_to(raw, target_is_directory=True)
    before = _tree(raw)
    assert _convert("kitti", "coco", proj / "kitti", raw, "--overwrite") == convert.INPUT_ERROR
    err = capsys.readouterr().err
    assert f"error: --dst {raw} holds 1 file the conversion reads from --src {proj / 'kitti'}, e.g. " in err
    assert f"{image_dir / '000000.png'} (resolved: {raw.resolve() / '000000.png'})" in err
    assert _tree(raw) == before


def test_an_instance_json_over_an_image_linked_into_the_source_is_refused(tmp_path, proj, capsys):
    """The instance converter's JSON replaced a source image reached through a link in the source tree."""
    image_dir = proj / "kitti" / "training" / "image_2"
    raw = tmp_path / "raw_images"
    image_dir.rename(raw)
    image_dir.symlink_to(raw, target_is_directory=True)
    before, dst = _tree(raw), raw / "000000.png"
    with pytest.raises(SystemExit) as stop:
        instances_convert.main(["--from", "kitti", "--src", str(proj / "kitti"), "--dst", str(dst), "--overwrite"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"error: --dst {dst} holds 1 file the conversion reads from --src {proj / 'kitti'}" in err
    assert f"nothing was written to {dst}" in err
    assert _tree(raw) == before and _entries(raw) == ["000000.png"]


# ------------------------------------------------------------------------------ a destination that is a link


@pytest.mark.parametrize("overwrite", [True, False])
def test_a_destination_that_is_a_symbolic_link_is_refused_before_reading(tmp_path, proj, capsys, overwrite):
    """--dst a link: the converted folder was renamed over the link, then deleting the renamed link failed, so
    it said "nothing was written" (exit 2) with the output written and ``.link.old-*`` left. The link's target
    is the user's: never deleted through it, nor the link silently swapped for a folder elsewhere."""
    target = tmp_path / "target"
    target.mkdir()
    if overwrite:
        (target / "old.txt").write_text("kept")
    link = _link(tmp_path, target)
    listing = _entries(tmp_path)
    args = ["--overwrite"] if overwrite else []
    assert _convert("kitti", "coco", proj / "kitti", link, *args) == convert.INPUT_ERROR
    err = capsys.readouterr().err
    assert f"error: --dst {link} is a symbolic link (to {target})" in err and "nothing was read or written" in err
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert _tree(target) == ({"old.txt": b"kept"} if overwrite else {})
    assert _entries(tmp_path) == listing  # no .link.old-* nor .link.tmp-*


def test_a_replaced_destination_that_cannot_be_deleted_is_said_not_hidden(tmp_path, proj, capsys, monkeypatch):
    """The output is in place once renamed: a failure deleting the folder it replaced is a warning naming where
    that folder is now, not "nothing was written" with exit 2."""
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "old.txt").write_text("old")

    rmtree = convert.shutil.rmtree

    def refuse(path, *args, **kwargs):  # the replaced folder only: a read-only folder in it, say
        if Path(path).name.startswith(".out.old-"):
            raise PermissionError(13, "Permission denied", str(path))
        rmtree(path, *args, **kwargs)

    monkeypatch.setattr(convert.shutil, "rmtree", refuse)
    assert _convert("kitti", "coco", proj / "kitti", dst, "--overwrite") == 0
    out, err = capsys.readouterr()
    assert "converted kitti -> coco: 1 images" in out and "nothing was written" not in err
    (old,) = [p for p in tmp_path.iterdir() if p.name.startswith(".out.old-")]
    assert (old / "old.txt").read_text() == "old"
    assert f"warning: wrote {dst}, but could not delete the destination it replaced, now {old}" in err
    assert sorted(p.name for p in dst.iterdir()) == ["annotations.json", "images"]


def test_a_converted_folder_gets_the_usual_permissions_not_the_temporary_folders(tmp_path, proj):
    """The output folder was the renamed ``mkdtemp`` folder, 0700: a group could not read a shared data set."""
    umask = os.umask(0o022)
    try:
        assert _convert("kitti", "coco", proj / "kitti", tmp_path / "shared") == 0
    finally:
        os.umask(umask)
    assert oct((tmp_path / "shared").stat().st_mode & 0o777) == oct(0o755)
