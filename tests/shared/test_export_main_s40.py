"""s40: every export CLI ends on one closing line wording (shared.export.export_main): detection and instances said
"ORT vs PyTorch", accident "onnxruntime vs PyTorch over the check clip", anomaly put its score between the files
and "to"."""

from __future__ import annotations

import importlib
import inspect
import re

import pytest
import torch

from tests.driving.test_accident_export import _checkpoint
from tests.driving.test_accident_export import tiny as tiny_anticipator
from tests.driving.test_export import tiny_detector
from tests.driving.test_instances_export import tiny_task as tiny_instances
from tests.helpers import anomaly_task, medical_task, stripes_task

pytestmark = pytest.mark.usefixtures("one_thread")

#: what a stand-in export returns: the sidecar keys the closing lines read
SIDECAR = {
    "tolerance": {"max_abs_diff": {"image": {"logits": 1.5e-6}, "other": {"score": 2.5e-7}}},
    "graphs": ["prob_unet_features.onnx", "prob_unet_fcomb.onnx"],
    "model": "prob_unet",
    "decision": {"rule": "argmax"},
    "score": "msp",
    "score_smoothing": 0.0,
}
#: the one wording: ``wrote <graphs> and <sidecar> to <out> ([<detail>; ]onnxruntime vs PyTorch: max abs diff X)``
CLOSING = re.compile(
    r"wrote (?:[\w.]+, )*[\w. ]+ and [\w.]+\.json to (?P<out>\S+) "
    r"\((?:[^;()]+; )?onnxruntime vs PyTorch: max abs diff 1\.50e-06\)"
)
SIZE = ["--size", "32", "32"]
EXPORTS = {  # module: (its export function, a tiny task, options of its own)
    "domains.driving.accident.export": ("export_accident", tiny_anticipator, []),
    "domains.driving.detection.export": ("export_detection", tiny_detector, []),
    "domains.driving.instances.export": ("export_instances", tiny_instances, []),
    "domains.driving.anomaly.export": (
        "export_anomaly",
        lambda: anomaly_task(encoder_kwargs={"channels": [4, 8, 16]}, oe_weight=0.0),
        [*SIZE, "--score", "msp", "--score-smoothing", "0"],
    ),
    "domains.medical.export": ("export_medical", lambda: medical_task("unet", {"channels": [8, 16]}), SIZE),
    "shared.classification.export": ("export_classification", stripes_task, SIZE),
}


@pytest.mark.parametrize("module", list(EXPORTS), ids=lambda m: m.split(".")[-2])
def test_every_export_closes_on_the_same_line(module, tmp_path, monkeypatch, capsys):
    """The export itself is a stand-in (each domain's CLI test runs the real one): the line and what ``main``
    hands the export (bound against the real function's signature) are what is checked."""
    name, tiny, options = EXPORTS[module]
    export = importlib.import_module(module)
    real = getattr(export, name)
    calls = []

    def stand_in(task, out_dir, **kwargs):
        inspect.signature(real).bind(task, out_dir, **kwargs)  # a keyword the real export lacks raises
        calls.append(kwargs)
        return SIDECAR

    monkeypatch.setattr(export, name, stand_in)
    torch.manual_seed(0)
    ckpt = _checkpoint(tiny(), tmp_path / "model.ckpt", {})
    out = tmp_path / "onnx"
    assert export.main(["--ckpt", ckpt, "--out", str(out), *options]) is SIDECAR
    assert calls and calls[0]["checkpoint"] == ckpt
    line = capsys.readouterr().out.strip().splitlines()[-1]
    said = CLOSING.fullmatch(line)
    assert said, line
    assert said["out"] == str(out)
