"""The medical page's samples of a seed are its own in any session: ``medical_predict`` draws from generators of
its call, not torch's global one. Before, two Streamlit sessions (threads of one process) sampling at once
with seeds 0 and 7 moved each other's draws (the shipped Prob. U-Net's probabilities by up to 0.47), and
``st.cache_data`` served the mixed result to every later session."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from apps import demo_models as dm
from domains.medical.models import hpu_net, prob_unet
from domains.medical.models.common import sample_latent
from domains.medical.task import MedicalSegmentationTask
from tests.medical.test_eval_batch_s35 import NETWORKS, _network
from tests.medical.test_models import squares

pytestmark = pytest.mark.usefixtures("one_thread")

SEEDS = (0, 7)


def _task(name: str) -> MedicalSegmentationTask:
    return MedicalSegmentationTask(network=_network(name), num_samples=4, predict_dir=None).eval()


def _images() -> list[np.ndarray]:
    images, _ = squares(len(SEEDS))
    return [image[0].numpy() for image in images]


def _meet_at_first_draw(monkeypatch, barrier: threading.Barrier) -> None:
    """Each thread's first latent draw waits for the other's: both sessions have seeded by then and their
    draws overlap, every time (a free race on a tiny model rarely overlaps)."""
    met = threading.local()

    def draw(*args, **kwargs):
        if not getattr(met, "done", False):
            met.done = True
            barrier.wait(timeout=30)
        return sample_latent(*args, **kwargs)

    for module in (prob_unet, hpu_net):
        monkeypatch.setattr(module, "sample_latent", draw)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_two_sessions_sampling_at_once_get_their_single_session_samples(name, monkeypatch):
    task, images = _task(name), _images()
    alone = [dm.medical_predict(task, image, 4, seed)["probs"] for image, seed in zip(images, SEEDS)]
    again = dm.medical_predict(task, images[0], 4, SEEDS[1])["probs"]
    assert np.abs(alone[0] - again).max() > 1e-3  # the seed matters: a mixed-up draw would show
    for _ in range(3):
        barrier = threading.Barrier(len(SEEDS))
        _meet_at_first_draw(monkeypatch, barrier)
        with ThreadPoolExecutor(len(SEEDS)) as pool:  # new threads each repeat: each waits once
            futures = [pool.submit(dm.medical_predict, task, im, 4, s) for im, s in zip(images, SEEDS)]
            together = [f.result()["probs"] for f in futures]
        for ran_alone, ran_together in zip(alone, together):
            np.testing.assert_array_equal(ran_together, ran_alone)


def test_medical_predict_leaves_the_global_stream_and_does_not_read_it():
    task, image = _task("prob_unet"), _images()[0]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = dm.medical_predict(task, image, 4, 0)["probs"]
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(456)
    np.testing.assert_array_equal(dm.medical_predict(task, image, 4, 0)["probs"], first)
