"""The plain anomaly segmenter works without Lightning; its encoder transfers from a weight file, another network's is refused."""

from __future__ import annotations

import pytest
import torch

from domains.driving.anomaly.model import AnomalySegmenter
from domains.driving.anomaly.scores import AnomalyScoreError
from tests.helpers import anomaly_task

TINY = {"encoder": "unet_encoder", "encoder_kwargs": {"channels": [4, 8]}, "outlier_head_channels": 4}


def _batches(n: int = 2, classes: int = 12):
    g = torch.Generator().manual_seed(0)
    return [
        {
            "image": torch.rand(2, 3, 32, 64, generator=g),
            "mask": torch.randint(0, classes, (2, 32, 64), generator=g),
        }
        for _ in range(n)
    ]


def test_plain_model_calibrates_and_scores_without_lightning():
    model = AnomalySegmenter(**TINY).eval()
    images = _batches(1)[0]["image"]
    assert model.usable_scores() == ["msp", "max_logit", "energy", "entropy"]  # no statistics, no OE yet
    with pytest.raises(AnomalyScoreError, match="never calibrated"):
        model.scores(images, ["sml"])
    info = model.calibrate(_batches())
    assert info["batches"] == 2 and info["pixels"] == 2 * 2 * 32 * 64
    assert (
        bool(model.calibrated) and "sml" in model.usable_scores() and "mahalanobis" in model.usable_scores()
    )
    out = model.scores(
        images[:, :, :30, :50], ["sml", "mahalanobis", "energy"], smoothing=1.0
    )  # padded inside
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "sml": (2, 30, 50), "mahalanobis": (2, 30, 50), "energy": (2, 30, 50), "logits": (2, 12, 30, 50)
    }  # fmt: skip
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in out.values())
    # the energy score is minus logsumexp of the returned logits (smoothing 0)
    plain = model.scores(images, ["energy"])
    assert torch.allclose(plain["energy"], -torch.logsumexp(plain["logits"], dim=1), atol=1e-5)


def test_scores_under_bf16_autocast_are_float32():
    model = AnomalySegmenter(**TINY).eval()
    model.calibrate(_batches(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.scores(_batches(1)[0]["image"], ["sml", "mahalanobis", "msp"])
    assert all(v.dtype == torch.float32 for v in out.values())
    assert out["msp"].numpy().shape == (2, 32, 64)  # numpy has no bfloat16: this is what crashed on a GPU


def test_the_encoder_transfers_from_a_local_file_and_another_network_is_refused(tmp_path):
    """``--model.pretrained_backbone``: the encoder (``model.backbone``) comes from a suite checkpoint, the
    decoder and heads stay as built; a file of another network is an error, not a silent random encoder."""
    torch.manual_seed(0)
    source = anomaly_task(**TINY)
    path = tmp_path / "source.ckpt"
    torch.save({"state_dict": source.state_dict()}, path)
    torch.manual_seed(1)
    task = anomaly_task(**TINY, pretrained_backbone=str(path), pretrained_prefix="model.segmenter.backbone.encoder.")
    assert task.model.backbone is task.model.segmenter.backbone.encoder
    for name, value in source.model.backbone.state_dict().items():
        assert torch.equal(task.model.backbone.state_dict()[name], value), name
    decoder = "segmenter.backbone.decoder"
    assert not all(torch.equal(v, source.model.state_dict()[k]) for k, v in task.model.state_dict().items()
                   if k.startswith(decoder))  # fmt: skip
    assert "pretrained_backbone" not in task.hparams  # a run-time choice: not read again from a checkpoint
    wider = anomaly_task(encoder="unet_encoder", encoder_kwargs={"channels": [8, 16]})
    torch.save({"state_dict": wider.state_dict()}, path)
    with pytest.raises(ValueError, match="no tensor matched backbone 'unet_encoder' .*4 shape mismatch"):
        anomaly_task(**TINY, pretrained_backbone=str(path), pretrained_prefix="model.segmenter.backbone.encoder.")
