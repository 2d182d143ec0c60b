"""shared.task.gather_lists on two real gloo processes (what DDP evaluation uses for KITTI AP)."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from shared.task import gather_lists


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        # uneven shards, as a DistributedSampler's last batch can leave them
        items = [{"rank": rank, "i": i} for i in range(rank + 1)]
        out[rank] = gather_lists(items)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # several processes: about 15 s
def test_gather_lists_concatenates_every_rank_in_rank_order():
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(_free_port(), out), nprocs=2, join=True)
        got = dict(out)
    expected = [{"rank": 0, "i": 0}, {"rank": 1, "i": 0}, {"rank": 1, "i": 1}]
    assert got == {0: expected, 1: expected}


def test_gather_lists_outside_distributed_is_identity():
    assert not dist.is_initialized()
    items = [torch.tensor(1), "a"]
    assert gather_lists(items) is items
