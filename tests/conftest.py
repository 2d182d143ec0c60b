"""Fixtures every test package may ask for; plain helper functions live in tests/helpers.py."""

from __future__ import annotations

import pytest
import torch

pytest.register_assert_rewrite("tests.helpers")  # its assert helpers report values like test code does


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared 2-core machine two threads per process
    spin against other processes (5-10x slower here); restored after the module.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
