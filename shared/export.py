"""ONNX export for deployment, with a check of onnxruntime's outputs against PyTorch."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn


def export_onnx(
    module: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: str | Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]] | None = None,
    opset: int = 17,
) -> Path:
    """Export ``module`` (in eval mode) to ``path``; written to a temp file first so a failure leaves nothing behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        with torch.no_grad():
            # The TorchScript-based exporter handles the suite's control flow (interpolate to a skip's size,
            # dynamic batch) without tracing guards; dynamo=False selects it explicitly.
            torch.onnx.export(
                module,
                example_inputs,
                tmp,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                dynamo=False,
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def run_onnx(path: str | Path, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run an exported model with onnxruntime on the CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)

def check_against_pytorch(
    path: Path, module: nn.Module, inputs: dict[str, torch.Tensor], names: list[str], atol: float, rtol: float
) -> dict[str, float]:
    """Largest |onnxruntime - PyTorch| per output; raises if any exceeds ``atol + rtol * |PyTorch|``."""
    with torch.no_grad():
        expected = module.eval()(*inputs.values())
    expected = expected if isinstance(expected, (tuple, list)) else (expected,)
    got = run_onnx(path, {k: v.numpy() for k, v in inputs.items()})
    measured = {}
    for name, g, e in zip(names, got, expected, strict=True):
        e = e.numpy()
        diff = np.abs(g.astype(np.float64) - e)
        measured[name] = float(diff.max()) if diff.size else 0.0
        if diff.size and not (diff <= atol + rtol * np.abs(e)).all():
            raise ValueError(
                f"{path}: onnxruntime differs from PyTorch in {name} by up to {measured[name]:.3g} "
                f"(allowed: atol {atol:g} + rtol {rtol:g} * |value|)"
            )
    return measured
