"""An export built two onnxruntime sessions of each graph (0.1-0.4 s each): one for the check against PyTorch at
the export size, one for the check at another size. One session now serves both."""

from __future__ import annotations

import torch
from torch import nn

import shared.export as ex


def test_one_session_checks_a_graph_at_its_size_and_at_another(tmp_path, monkeypatch):
    built = []
    session = ex.onnx_session

    def counted(path):
        built.append(path)
        return session(path)

    monkeypatch.setattr(ex, "onnx_session", counted)
    net = nn.Conv2d(3, 2, 3, padding=1).eval()
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "out": {0: "batch", 2: "height", 3: "width"}}
    with ex.CheckedExport(tmp_path / "out", ex.ExportCheck(), "test", "conv", None) as export:
        measured = export.graph("conv.onnx", net, {"image": torch.rand(1, 3, 8, 8)}, ["out"], axes)
    assert measured["out"] < 1e-4 and len(built) == 1
