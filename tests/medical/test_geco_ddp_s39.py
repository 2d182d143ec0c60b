"""GECO under DDP: its moving average and Lagrange multiplier follow every rank's batches, and one process's
values are those it had before the ranks' mean was added."""

from __future__ import annotations

import json
import math
import os
import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from domains.medical.models import GECO

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = {"kappa": 0.05, "decay": 0.9, "rate": 0.1, "init_lambda": 1.0}


def _state(geco: GECO) -> list[float]:
    return [geco.ma.item(), geco.lagmul.item()]


def test_one_process_keeps_its_values():
    """The values GECO gave before the DDP mean (recorded from it, as float.hex): a NaN batch leaves the state
    as it was, and evaluation returns lambda times the batch's own constraint."""
    geco = GECO(**SETTINGS)
    seen = []
    for rec in (0.31, 0.12, float("nan"), 0.07, 0.02, 0.2):
        term = geco(torch.tensor(rec, requires_grad=True))
        seen.append([term.item(), *_state(geco)])
    geco.eval()
    seen.append([geco(torch.tensor(0.3)).item(), *_state(geco)])
    before = [
        ["0x1.0a3d700000000p-2", "0x1.0a3d700000000p-2", "0x1.06a7f00000000p+0"],
        ["0x1.fa66960000000p-3", "0x1.ed91660000000p-3", "0x1.0cd35a0000000p+0"],
        ["nan", "0x1.ed91660000000p-3", "0x1.0cd35a0000000p+0"],
        ["0x1.d6c4700000000p-3", "0x1.c04ea20000000p-3", "0x1.126df00000000p+0"],
        ["0x1.a9efb80000000p-3", "0x1.8d551a0000000p-3", "0x1.1765660000000p+0"],
        ["0x1.a7cedc0000000p-3", "0x1.8451b60000000p-3", "0x1.1c40060000000p+0"],
        ["0x1.1c40060000000p-2", "0x1.8451b60000000p-3", "0x1.1c40060000000p+0"],
    ]
    assert [[value.hex() for value in step] for step in seen] == before


# each rank's reconstruction per step: both finite, then one rank's batch non-finite (each in turn), then both
RECS = {0: [0.31, 0.12, float("nan"), 0.07, float("nan")], 1: [0.11, 0.40, 0.05, float("inf"), float("nan")]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_run(rank: int, port: int, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # a short timeout: a collective one rank skips fails the test instead of hanging it
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=30))
    try:
        geco, states = GECO(**SETTINGS), []
        for rec in RECS[rank]:
            geco(torch.tensor(rec))
            states.append(_state(geco))
        out[rank] = json.dumps(states)
    finally:
        dist.destroy_process_group()


def test_under_ddp_the_state_follows_both_ranks_batches():
    """Two gloo processes: each step's moving average and lambda are those of one process fed the mean of the
    ranks' constraints (of the finite ones; none: unchanged), on both ranks. Each rank had followed its own
    batches alone: after 4 steps lambda was 1.0720 on rank 0 and 1.0229 on rank 1, where both ranks' batches
    give 1.0609 (DDP's buffer broadcast then kept rank 0's)."""
    with mp.Manager() as manager:
        out = manager.dict()
        # forked: the test process has imported torch already (spawned, each child imports it again)
        mp.start_processes(_rank_run, args=(_free_port(), out), nprocs=2, start_method="fork")
        ranks = {rank: json.loads(record) for rank, record in out.items()}
    one = GECO(**SETTINGS)
    expected = []
    for step in range(len(RECS[0])):
        finite = [torch.tensor(RECS[r][step]) - SETTINGS["kappa"] for r in (0, 1)]
        finite = [c for c in finite if math.isfinite(c.item())]
        mean = sum(finite[1:], finite[0]) / len(finite) if finite else torch.tensor(float("nan"))
        one(mean, bound=0.0)
        expected.append(_state(one))
    assert ranks[0] == ranks[1] == expected
    assert expected[1] != expected[0] and expected[3] != expected[2] and expected[4] == expected[3]
