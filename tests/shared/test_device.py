"""Device choice and timing helpers of the benchmarks."""

from __future__ import annotations

import time

import pytest
import torch

from shared.device import device_name, resolve_accelerator, stopwatch


def test_resolve_accelerator_on_this_machine():
    assert resolve_accelerator("cpu") == ("cpu", torch.device("cpu"))
    expected = "gpu" if torch.cuda.is_available() else "cpu"
    assert resolve_accelerator("auto")[0] == expected
    with pytest.raises(ValueError, match="--accelerator must be one of auto, cpu, gpu"):
        resolve_accelerator("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--accelerator gpu: no CUDA device"):
            resolve_accelerator("gpu")


def test_device_name_and_stopwatch():
    assert device_name("cpu").startswith("CPU (") and "threads" in device_name("cpu")
    with stopwatch("cpu") as elapsed:
        time.sleep(0.05)
    assert 0.04 < elapsed() < 1.0
    assert elapsed() == elapsed()  # frozen once the block ended


def test_to_numpy_casts_half_precision_to_float32():
    import numpy as np

    from domains.driving.anomaly.metrics import pixel_anomaly_metrics
    from shared.device import to_numpy

    assert to_numpy(torch.tensor([0.5, 1.5], dtype=torch.bfloat16)).dtype == np.float32
    assert to_numpy(torch.tensor([1, 2])).dtype == np.int64 and to_numpy([1.0]).dtype == np.float64
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.2]], dtype=torch.bfloat16)  # what a bf16 run hands the metric
    labels = torch.tensor([[1, 0], [1, 0]])
    assert pixel_anomaly_metrics([scores], [labels])["ap"] == 1.0


def test_bf16_units_probe_follows_torch_and_never_raises(monkeypatch):
    import torch

    from shared.device import cpu_has_bf16_units

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert cpu_has_bf16_units() is True
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert cpu_has_bf16_units() is False

    def broken():
        raise RuntimeError("no cpuinfo")

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", broken)
    assert cpu_has_bf16_units() is False
