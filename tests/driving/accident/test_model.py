"""The accident network: streaming equals whole-clip, monotone horizons, hand-computed targets and TTC, learning."""

from __future__ import annotations

import math

import pytest
import torch

from domains.driving.accident.metrics import horizon_targets
from domains.driving.accident.model import AccidentAnticipator, ttc_from_horizons

SIZE = (32, 64)


def tiny(**kw) -> AccidentAnticipator:
    torch.manual_seed(0)
    args = {"backbone": "tiny_cnn", "input_size": SIZE, "hidden": 16, "window": 4, "dropout": 0.0}
    return AccidentAnticipator(**{**args, **kw})


def approaching_clips(batch: int = 4, frames: int = 8, slots: int = 2):
    """Half the clips have a box that grows every frame (an object closing in), half a box that stays put."""
    boxes = torch.zeros(batch, frames, slots, 4)
    for b in range(batch):
        for t in range(frames):
            h = 4.0 * (1.25**t if b % 2 == 0 else 1.0)
            boxes[b, t, 0] = torch.tensor([32 - h, 16 - h / 2, 32 + h, 16 + h / 2]).clamp(0, 64)
            boxes[b, t, 1] = torch.tensor([2.0, 2.0, 8.0, 8.0])
    valid = torch.ones(batch, frames, slots, dtype=torch.bool)
    valid[:, :2, 1] = False
    frames_ = torch.rand(batch, frames, 3, *SIZE)
    toa = torch.tensor([frames - 1 if b % 2 == 0 else -1 for b in range(batch)])
    return frames_, boxes, valid, toa


@pytest.mark.parametrize("temporal", ["gru", "transformer"])
def test_streaming_equals_whole_clip_and_horizons_are_monotone(temporal):
    model = tiny(temporal=temporal).eval()
    frames, boxes, valid, _ = approaching_clips(frames=6)
    whole = model(frames=frames, boxes=boxes, box_valid=valid)
    state, steps = None, []
    for t in range(frames.shape[1]):
        out, state = model.step(frames[:, t], boxes[:, t], valid[:, t], state)
        steps.append(out["horizon_logits"])
    torch.testing.assert_close(torch.stack(steps, 1), whole["horizon_logits"], atol=1e-5, rtol=1e-4)
    assert (whole["horizon_logits"].diff(dim=-1) >= 0).all()
    assert (whole["object_logits"][~valid] == -20.0).all()  # empty slots carry no risk


def test_state_size_does_not_grow_with_the_clip():
    model = tiny(temporal="transformer").eval()
    frames, boxes, valid, _ = approaching_clips(frames=7)
    sizes = []
    state = None
    for t in range(7):
        _, state = model.step(frames[:, t], boxes[:, t], valid[:, t], state)
        sizes.append(sum(v.numel() for v in state.values()))
    assert len(set(sizes)) == 1


def test_motion_lags_stream_like_the_whole_clip_in_a_fixed_state():
    """The caller-held state carries the lag history between step() calls at a fixed size. forward() runs the
    same per-frame step, so equality alone would not catch a wrong history: the lag features' values are
    checked by hand in test_motion_lag_features_by_hand."""
    model = tiny(motion_lags=(1, 3)).eval()
    frames, boxes, valid, _ = approaching_clips(frames=7)
    whole = model(frames=frames, boxes=boxes, box_valid=valid)
    state, steps, sizes = None, [], []
    for t in range(frames.shape[1]):
        out, state = model.step(frames[:, t], boxes[:, t], valid[:, t], state)
        steps.append(out["horizon_logits"])
        sizes.append(sum(v.numel() for v in state.values()))
    torch.testing.assert_close(torch.stack(steps, 1), whole["horizon_logits"], atol=1e-5, rtol=1e-4)
    assert len(set(sizes)) == 1 and state["history"].shape == (4, 2, 3, 4)
    with pytest.raises(ValueError, match="motion_lags must start at 1"):
        tiny(motion_lags=(2, 5))
    with pytest.raises(ValueError, match="motion_lags must start at 1"):
        tiny(motion_lags=(1, 5, 3))


def test_motion_lag_features_by_hand():
    """Lags (1, 2, 4) after three frames. Object 0: 4 px wide (of a 64-px frame) now, 2 px wide 2 frames ago:
    growth log(2) / 2 per frame, times the gain 10; its centre moved 4 px right: 4 / 64 / 2 per frame, times 10;
    seen then: 1. Nothing was seen 4 frames ago: zeros. Object 1 was not seen 2 frames ago (its box there is
    NaN, as an empty slot's may be): zeros, no NaN."""
    model = tiny(motion_lags=(1, 2, 4))
    state = model.initial_state(1, 2)
    nan = float("nan")
    frames = (
        (torch.tensor([[[0.0, 8.0, 40.0, 10.0], [nan] * 4]]), torch.tensor([[True, False]])),  # t - 3
        (torch.tensor([[[10.0, 8.0, 12.0, 10.0], [nan] * 4]]), torch.tensor([[True, False]])),  # t - 2
        (torch.tensor([[[11.0, 8.0, 14.0, 10.0], [20.0, 8.0, 24.0, 10.0]]]), torch.tensor([[True, True]])),
    )
    for boxes, valid in frames:
        _, state = model.temporal_step(torch.zeros(1, 16), torch.zeros(1, 2, 16), boxes, valid, state)
    now = torch.tensor([[[13.0, 8.0, 17.0, 10.0], [21.0, 8.0, 25.0, 10.0]]])
    features = model._geometry(now, torch.tensor([[True, True]]), state)
    assert features.shape == (1, 2, 19) and torch.isfinite(features).all()
    lag2 = features[0, 0, 9:14]
    torch.testing.assert_close(
        lag2, torch.tensor([5 * math.log(2), 0.0, 10 * (4 / 64) / 2, 0.0, 1.0]), atol=1e-5, rtol=1e-5
    )
    assert (features[0, 0, 14:] == 0).all()  # 4 frames ago: before the clip
    assert (features[0, 1, 9:] == 0).all()  # not seen 2 or 4 frames ago
    assert features[0, 1, 8] == 1.0  # but seen in the previous frame


def test_temperature_divides_the_log_odds_outside_training():
    model = tiny().eval()
    frames, boxes, valid, _ = approaching_clips(frames=3)
    base = model(frames=frames, boxes=boxes, box_valid=valid)["horizon_logits"]
    model.temperature.fill_(2.0)
    torch.testing.assert_close(model(frames=frames, boxes=boxes, box_valid=valid)["horizon_logits"], base / 2)
    hidden = {
        "frame": torch.rand(2, 16),
        "objects": torch.rand(2, 3, 16),
        "valid": torch.ones(2, 3, dtype=torch.bool),
    }
    calibrated = model.heads(hidden)["horizon_logits"]
    model.train()  # training sees the raw log-odds (heads only: batch norm would change the rest)
    torch.testing.assert_close(model.heads(hidden)["horizon_logits"], calibrated * 2)


@torch.no_grad()
def per_frame_draws(model: AccidentAnticipator, hidden: list[dict], samples: int) -> torch.Tensor:
    """The reference Monte Carlo draws (samples, B, T): every frame's full heads, one frame at a time."""
    model.head_dropout.train()
    try:
        return torch.stack(
            [
                torch.stack([model.heads(h)["horizon_logits"][:, -1] for h in hidden], 1).sigmoid()
                for _ in range(samples)
            ]
        )
    finally:
        model.head_dropout.eval()


def test_sample_heads_batches_the_frames_and_runs_the_horizon_head_only():
    """Monte Carlo dropout draws all frames at once through the horizon head alone (the object head's output
    was thrown away, T calls per draw): without dropout they equal the per-frame heads; with it they spread
    as those do (the masks are drawn in another order, so seeded draws differ)."""
    model = tiny().eval()
    frames, boxes, valid, _ = approaching_clips(frames=5)  # slot 1 empty in the first two frames
    model.temperature.fill_(1.7)
    out = model(frames=frames, boxes=boxes, box_valid=valid, return_hidden=True)
    object_calls = []
    model.object_head.register_forward_hook(lambda *args: object_calls.append(1))
    draws = model.sample_heads(out["hidden"], 3)
    assert draws.shape == (3, 4, 5) and not object_calls and not model.head_dropout.training
    torch.testing.assert_close(draws, per_frame_draws(model, out["hidden"], 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(draws[0], out["horizon_logits"][..., -1].sigmoid(), atol=1e-6, rtol=0)

    model.head_dropout.p = 0.5
    torch.manual_seed(0)
    new, old = model.sample_heads(out["hidden"], 400), per_frame_draws(model, out["hidden"], 400)
    assert (new.std(0) > 1e-3).all()  # the draws do differ
    standard_error = ((new.var(0) + old.var(0)) / 400).sqrt()
    assert ((new.mean(0) - old.mean(0)).abs() < 4 * standard_error).all()
    torch.testing.assert_close(new.std(0), old.std(0), rtol=0.2, atol=0.0)
    # exactly where heads() drops out: the frame and the object inputs of every frame, once per draw
    shapes = []
    model.head_dropout.register_forward_hook(lambda module, args, output: shapes.append(tuple(args[0].shape)))
    model.sample_heads(out["hidden"], 2)
    b, t = frames.shape[:2]
    hidden, slots = out["hidden"][0]["objects"].shape[-1], out["hidden"][0]["objects"].shape[1]
    assert shapes == [(b * t, hidden), (b * t, slots, hidden)] * 2


def test_ttc_from_horizons_by_hand():
    horizons = torch.tensor([0.5, 1.0, 1.5, 2.0])
    probs = torch.tensor([[0.2, 0.4, 0.6, 0.9], [0.6, 0.7, 0.8, 0.9], [0.1, 0.1, 0.2, 0.3]])
    # row 0: 0.5 crossed between 1.0 s (0.4) and 1.5 s (0.6): 1.0 + 0.5 * 0.5 = 1.25 s
    # row 1: crossed before the first horizon: the CDF is 0 at 0 s, so 0.5 * 0.5 / 0.6 = 0.4167 s
    # row 2: never reaches 0.5 within 2 s
    ttc = ttc_from_horizons(probs, horizons)
    torch.testing.assert_close(ttc[:2], torch.tensor([1.25, 0.5 * 0.5 / 0.6]))
    assert torch.isinf(ttc[2])


def test_horizon_targets_by_hand():
    # contact at frame 10 at 10 fps: frame 5 is 0.5 s before (inside 0.5 s), frame 0 is 1 s before
    targets = horizon_targets(
        torch.tensor([10, -1]), torch.tensor([10.0, 10.0]), 12, torch.tensor([0.5, 1.0])
    )
    assert targets.shape == (2, 12, 2)
    assert targets[0, :, 0].tolist() == [False] * 5 + [True] * 7
    assert targets[0, :, 1].tolist() == [True] * 12
    assert not targets[1].any()


def test_feature_input_and_missing_inputs_are_named():
    model = AccidentAnticipator(input_kind="features", feature_dim=12, hidden=8)
    out = model(
        features=torch.rand(2, 5, 12),
        object_features=torch.rand(2, 5, 3, 12),
        boxes=torch.rand(2, 5, 3, 4) * 10,
        box_valid=torch.ones(2, 5, 3, dtype=torch.bool),
    )
    assert out["horizon_logits"].shape == (2, 5, 4) and out["object_logits"].shape == (2, 5, 3)
    with pytest.raises(ValueError, match="features"):
        model(
            frames=torch.rand(1, 2, 3, 32, 32),
            boxes=torch.zeros(1, 2, 1, 4),
            box_valid=torch.ones(1, 2, 1, dtype=torch.bool),
        )
    with pytest.raises(ValueError, match="ascending"):
        AccidentAnticipator(horizons=(2.0, 1.0))


def test_loss_goes_down_on_tiny_clips():
    """A growing box means contact: the horizon loss must fall well below its start in a few dozen steps."""
    from domains.driving.accident.task import AccidentTask

    task = AccidentTask(network=tiny(), object_loss_weight=0.5)
    frames, boxes, valid, toa = approaching_clips()
    batch = {
        "frames": frames,
        "boxes": boxes,
        "box_valid": valid,
        "toa": toa,
        "fps": torch.full((4,), 10.0),
        "frame_valid": torch.ones(4, frames.shape[1], dtype=torch.bool),
        "involved": torch.tensor([[True, False], [False, False]] * 2),
    }
    optimiser = torch.optim.Adam(task.parameters(), lr=3e-3)
    losses = []
    task.train()
    for _ in range(25):  # the loss is at half its start by step 13, at a fifth by step 25
        terms = task.losses(batch, task.forward_batch(batch))
        optimiser.zero_grad()
        terms["total"].backward()
        optimiser.step()
        losses.append(float(terms["total"].detach()))
    assert losses[-1] < 0.5 * losses[0], losses


def test_horizon_targets_for_a_window_that_ends_before_the_contact():
    # a training window of 8 frames whose contact lies at relative frame 15 (10 fps): 0.7 s past its last frame
    targets = horizon_targets(torch.tensor([15]), torch.tensor([10.0]), 8, torch.tensor([0.5, 1.0]))
    assert not targets[0, :, 0].any()  # frame 7 is 0.8 s before: never within 0.5 s
    assert targets[0, :, 1].tolist() == [False] * 5 + [True] * 3  # frames 5-7 are 1.0-0.8 s before


def test_streaming_without_boxes_equals_the_whole_clip():
    model = tiny().eval()
    frames = torch.rand(2, 4, 3, *SIZE)
    whole = model(frames=frames)["horizon_logits"]
    state, steps = None, []
    for t in range(4):
        out, state = model.step(frames[:, t], None, None, state)
        steps.append(out["horizon_logits"])
    torch.testing.assert_close(torch.stack(steps, 1), whole, atol=1e-5, rtol=1e-4)


def test_roi_pooling_keeps_each_frame_under_bf16_autocast():
    """More than 256 frames in a batch: bfloat16 frame indices would round to neighbouring frames."""
    model = tiny().eval()
    frames = torch.rand(1, 300, 3, *SIZE)
    boxes = torch.tensor([8.0, 4.0, 40.0, 28.0]).expand(1, 300, 1, 4).clone()
    with torch.no_grad():
        _, reference = model.encode(frames, boxes)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, mixed = model.encode(frames, boxes)
    # per frame, the bf16 vector must be nearest to its own frame's fp32 vector, not a neighbour's
    distance = torch.cdist(mixed[0, :, 0].float(), reference[0, :, 0])
    assert (distance.argmin(1) == torch.arange(300)).float().mean() > 0.95


def test_the_box_scale_is_not_saved_so_older_checkpoints_load_strictly():
    from domains.driving.accident.model import AccidentAnticipator

    net = AccidentAnticipator(backbone="tiny_cnn", input_size=(32, 64))
    assert "box_scale" not in net.state_dict() and net.box_scale.tolist() == [64, 32, 64, 32]


def test_only_a_boxes_only_network_is_blind_where_no_object_is_in_view():
    """A network that reads frames or features has something to read on an empty road: none of its frames is
    blind; a boxes-only one is blind exactly where no slot is valid."""
    valid = torch.zeros(2, 5, 3, dtype=torch.bool)
    valid[0, 2:, 1] = True
    for kind in ("frames", "features"):
        assert not tiny(input_kind=kind, feature_dim=4).blind(valid).any()
    assert tiny(input_kind="boxes").blind(valid).tolist() == [[True, True, False, False, False], [True] * 5]
