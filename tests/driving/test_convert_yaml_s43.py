"""``python -m domains.driving.convert --from yolo`` read the dataset yaml with a bare ``yaml.safe_load``: a yaml
with a syntax error ended the command in a PyYAML traceback, and one that is no mapping (a list) in an
AttributeError, where every other bad source is one ``error:`` line naming the file and exit status 2 (s43)."""

from __future__ import annotations

import re

import pytest

from domains.driving import convert


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("train: images\nnames: [Car, Pedestrian\n", r"data\.yaml:3: invalid YAML"),  # the line YAML names
        ("- images\n- labels\n", r"data\.yaml: dataset yaml must be a mapping"),
    ],
)
def test_a_broken_yolo_yaml_is_one_error_line_naming_it(tmp_path, capsys, text, said):
    src = tmp_path / "data.yaml"
    src.write_text(text, encoding="utf-8")
    dst = tmp_path / "out"
    args = ["--from", "yolo", "--to", "coco", "--src", str(src), "--dst", str(dst)]
    assert convert.main(args) == convert.INPUT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert re.search(said, err), err
    assert not dst.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["data.yaml"]  # nothing written
