"""benchmarks/throughput.py builds every task from its configs the way the CLI does (SuiteCLI with run=False)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import throughput


@pytest.mark.parametrize("name", list(throughput.TASKS))
def test_every_task_builds_from_its_quick_and_gpu_configs(name):
    for configs in throughput.TASKS[name][2:]:
        task, data = throughput._build(
            name, configs, "cpu"
        )  # no subcommand, no checkpoint: parses and builds
        assert task is not None and data is not None and int(data.batch_size) >= 1


def test_images_of_a_batch_by_hand():
    assert throughput._batch_images({"image": torch.zeros(3, 1, 8, 8)}) == 3
    assert throughput._batch_images(([torch.zeros(3, 8, 8)] * 2, [{}, {}])) == 2
    clips = {"frame_valid": torch.tensor([[True, True, False], [True, True, True]])}
    assert throughput._batch_images(clips) == 5  # clips count their real frames
