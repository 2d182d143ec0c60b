"""The note a ``--data.num_workers null`` run prints says the worker count changes the augmentation draws only
where it does: not for the anomaly segmenter, whose draws follow the seed, epoch and item alone."""

import logging

import pytest

from domains.driving.anomaly.data import SegmentationDataModule
from domains.medical.data import MedicalDataModule


@pytest.mark.parametrize(("module", "said"), [(MedicalDataModule, True), (SegmentationDataModule, False)])
def test_the_worker_note_names_the_draws_only_where_workers_change_them(module, said, caplog):
    with caplog.at_level(logging.INFO):
        module(num_workers=None)
    assert "loader workers, from this machine's CPU count" in caplog.text
    assert ("the augmentation draws depend on it" in caplog.text) == said
