"""Which device a script runs on, how to name it in a results table, and how to time work on it.

Benchmarks take ``--accelerator auto|cpu|gpu`` and ``--precision`` (Lightning's names) and report the device in
their tables; GPU work is asynchronous, so every timer synchronises the device before reading the clock.
"""

from __future__ import annotations

import os
import platform
import time
from contextlib import contextmanager

import numpy as np
import torch

ACCELERATORS = ("auto", "cpu", "gpu")


def resolve_accelerator(name: str = "auto") -> tuple[str, torch.device]:
    """Lightning's accelerator name and the torch device for ``auto`` (a GPU when there is one), ``cpu`` or
    ``gpu``; ``gpu`` without one is an error naming the option."""
    if name not in ACCELERATORS:
        raise ValueError(f"--accelerator must be one of {', '.join(ACCELERATORS)}, got {name!r}")
    if name == "gpu" and not torch.cuda.is_available():
        raise ValueError("--accelerator gpu: no CUDA device is visible (torch.cuda.is_available() is False)")
    if name == "cpu" or not torch.cuda.is_available():
        return "cpu", torch.device("cpu")
    return "gpu", torch.device("cuda", torch.cuda.current_device())


def cpu_has_bf16_units() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX tiles or AVX512-BF16), where ``bf16-mixed`` can train
    much faster than fp32 (README: the Prob. U-Net step 3x); elsewhere bfloat16 has no units of its own. False
    when torch cannot tell."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private, but in torch since 2.3
    try:
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    except Exception:  # noqa: BLE001 - a probe: never let it stop a run
        return False


def device_name(device: torch.device | str) -> str:
    """``NVIDIA H200`` or ``CPU (2 threads of 2 cores, x86_64)``: the device line of a results table."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads of {os.cpu_count()} cores, {platform.machine()})"


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def stopwatch(device: torch.device | str):
    """``with stopwatch(dev) as elapsed: ...; seconds = elapsed()``: wall time of the block, device synced."""
    synchronize(device)
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    synchronize(device)
    end.append(time.perf_counter())


def to_numpy(x) -> np.ndarray:
    """A tensor (any device, any dtype) or array-like as numpy; half precision becomes float32 first (numpy has
    no bfloat16, and scores and metrics are computed in float32)."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)
