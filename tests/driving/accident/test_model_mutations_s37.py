"""Session 37 mutation audit of the accident network, task records and physics baselines: each test pins a
line whose fault no other test noticed (the temperature on the object logits, slot state across gaps, the
transformer's padding and newest step, pooling over the valid slots, the stride-8 RoIs, raw recorded log-odds,
the TTC read off the horizon CDF, and the boundary cases of the baselines and of the argument checks)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from domains.driving.accident.baselines import (
    constant_velocity_oracle,
    track_baseline,
    track_ttc,
    tracks_to_arrays,
)
from domains.driving.accident.model import AccidentAnticipator, ttc_from_horizons
from domains.driving.accident.task import AccidentTask
from tests.driving.accident.test_accident_audit_s32 import _logged
from tests.driving.accident.test_model import approaching_clips, tiny

pytestmark = pytest.mark.usefixtures("one_thread")
HORIZONS = torch.tensor([0.5, 1.0, 1.5, 2.0])


def _looming_boxes(frames: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, T, 2, 4) boxes in a 64 x 32 frame: slot 0 a car that grows every frame and is hidden on frames 2-3,
    slot 1 a parked car (always seen)."""
    t = torch.arange(float(frames))[:, None]
    car = torch.cat([28 - t, 12 - t / 2, 36 + t, 18 + t / 2], 1)
    parked = torch.tensor([4.0, 4.0, 12.0, 10.0]).expand(frames, 4)
    valid = torch.ones(1, frames, 2, dtype=torch.bool)
    valid[0, 2:4, 0] = False
    return torch.stack([car, parked], 1)[None], valid


# ------------------------------------------------------------------------------------------------ the network


@torch.no_grad()
def test_the_temperature_divides_the_object_logits_too():
    """Calibrated object risks: outside training every object logit is divided by the temperature, as the
    horizon logits are; empty slots keep EMPTY_SLOT_LOGIT (-20) whatever the temperature."""
    model = tiny(input_kind="boxes").eval()
    boxes, valid = _looming_boxes()
    raw = model(boxes=boxes, box_valid=valid)["object_logits"]
    model.temperature.fill_(2.0)
    calibrated = model(boxes=boxes, box_valid=valid)["object_logits"]
    torch.testing.assert_close(calibrated[valid], raw[valid] / 2)
    assert (calibrated[~valid] == -20.0).all() and (raw[~valid] == -20.0).all()


@torch.no_grad()
def test_a_slot_not_seen_keeps_its_state_and_its_last_box_across_a_gap():
    """A hidden object slot is left as it was: its recurrent state unchanged, its last box and "seen before"
    kept, so when it reappears its motion is measured against the last box seen (two frames back), not read as
    a new object. Box 0 in frame 0: x 10..12, y 8..10 (2 px of 64 and of 32); back in frame 2 as x 9..13,
    y 7..11 about the same centre: both sizes doubled, log(2) * 10 (MOTION_GAIN, per frame of lag 1), no
    shift, seen 1."""
    model = tiny(input_kind="boxes").eval()
    state = model.initial_state(1, 2)
    state["objects"] = torch.rand(1, 2, 16)  # a state some earlier frames left
    frame_emb, object_emb = torch.zeros(1, 16), torch.zeros(1, 2, 16)
    other = torch.tensor([20.0, 8.0, 24.0, 10.0])
    first = torch.stack([torch.tensor([10.0, 8.0, 12.0, 10.0]), other])[None]
    _, state = model.temporal_step(frame_emb, object_emb, first, torch.tensor([[True, True]]), state)
    kept = state["objects"][:, 0].clone()
    hidden, state = model.temporal_step(
        frame_emb, object_emb, torch.zeros(1, 2, 4), torch.tensor([[False, True]]), state
    )
    assert torch.equal(hidden["objects"][:, 0], kept) and torch.equal(state["objects"][:, 0], kept)
    assert state["prev_valid"].tolist() == [[True, True]]
    assert state["prev_boxes"][0, 0].tolist() == [10.0, 8.0, 12.0, 10.0]
    back = torch.stack([torch.tensor([9.0, 7.0, 13.0, 11.0]), other])[None]
    geometry = model._geometry(back, torch.tensor([[True, True]]), state)[0, 0]
    torch.testing.assert_close(
        geometry[4:], torch.tensor([10 * math.log(2), 10 * math.log(2), 0.0, 0.0, 1.0]), atol=1e-5, rtol=1e-5
    )


@torch.no_grad()
def test_the_horizon_head_pools_the_valid_slots_only():
    """With one of two slots empty the horizon head reads the valid slot's state (the maximum over the valid
    slots): the same as a frame with that slot alone, not as a frame with no object (pooled zeros)."""
    model = tiny(input_kind="boxes").eval()
    frame, objects = torch.rand(1, 16), torch.rand(1, 2, 16)
    one_empty = model._horizon_head(frame, objects, torch.tensor([[True, False]]))
    alone = model._horizon_head(frame, objects[:, :1], torch.tensor([[True]]))
    torch.testing.assert_close(one_empty, alone)
    nothing = model._horizon_head(frame, objects, torch.tensor([[False, False]]))
    assert not torch.allclose(one_empty, nothing)  # the slot's state does reach the head
    both = model._horizon_head(frame, objects, torch.tensor([[True, True]]))
    torch.testing.assert_close(both, model._horizon_head(frame, objects.amax(1, keepdim=True), torch.tensor([[True]])))


@torch.no_grad()
def test_the_transformer_reads_only_the_frames_seen_and_answers_for_the_newest():
    """After a clip's first frame the transformer's window holds one real step: the frame state must be that
    step's encoding alone (the transformer on the one token at the newest position), whatever the window's
    padding holds: the padding is masked out, and the output is read at the newest position, not the oldest."""
    model = tiny(input_kind="boxes", temporal="transformer").eval()
    torch.nn.init.normal_(model.position)
    boxes, valid = _looming_boxes()
    frame_emb, object_emb = model.encode(boxes=boxes)
    state = model.initial_state(1, 2)
    state["window"] = torch.randn_like(state["window"])  # padding: what is there must not matter
    hidden, new = model.temporal_step(frame_emb[:, 0], object_emb[:, 0], boxes[:, 0], valid[:, 0], state)
    assert new["window_valid"].tolist() == [[False, False, False, True]]
    alone = model.frame_transformer(new["window"][:, -1:] + model.position[-1:])[:, 0]
    torch.testing.assert_close(hidden["frame"], alone)


@torch.no_grad()
def test_boxes_without_a_validity_mask_are_all_objects():
    """``box_valid`` left out: every box is an object (documented), as with an all-True mask."""
    model = tiny(input_kind="boxes").eval()
    boxes, _ = _looming_boxes()
    out = model(boxes=boxes)
    full = model(boxes=boxes, box_valid=torch.ones(boxes.shape[:-1], dtype=torch.bool))
    for key in ("horizon_logits", "object_logits"):
        torch.testing.assert_close(out[key], full[key])
    assert (out["object_logits"] != -20.0).all()


def test_object_rois_come_from_the_stride_8_map():
    """tiny_cnn's maps have strides 2, 4 and 8 (channels 8, 16, 32): the RoIs are pooled on the stride-8 map, so
    the object embedding reads 32 channels x roi_size^2 (not the fallback's stride 4, 16 channels)."""
    model = tiny()
    assert list(model.backbone.feature_strides) == [2, 4, 8]
    assert (model.roi_level, model.roi_stride) == (2, 8)
    assert model.object_embed[0].in_features == 32 * 3 * 3


# ------------------------------------------------------------------------------------------------ the task


def test_the_records_keep_the_raw_log_odds_the_model_gives_at_temperature_1():
    """Validation refits the temperature on the records: they must hold the raw log-odds (the model's output
    at temperature 1), horizons and objects alike, whatever the current temperature."""
    task = AccidentTask(tiny(input_kind="boxes")).eval()
    _, boxes, valid, toa = approaching_clips(batch=2, frames=4)
    valid[:] = True
    batch = {
        "boxes": boxes, "box_valid": valid, "frame_valid": torch.ones(2, 4, dtype=torch.bool), "toa": toa,
        "fps": torch.tensor([10.0, 10.0]), "involved": torch.tensor([[True, False], [False, False]]),
        "ttc": torch.zeros(2, 4), "clip_id": ["a", "b"], "kind": ["crash", "normal"],
    }  # fmt: skip
    _logged(task)
    with torch.no_grad():
        raw = task.forward_batch(batch)
        task.model.temperature.fill_(2.0)
        task._evaluation_step(batch, "val")
    assert len(task._records["val"]) == len(raw["horizon_logits"])  # the loop below sees every clip
    for i, record in enumerate(task._records["val"]):
        np.testing.assert_allclose(record["logits"], raw["horizon_logits"][i].numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(record["object_logits"], raw["object_logits"][i].numpy(), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------ TTC from the horizon CDF


def test_the_median_ttc_interpolates_from_the_horizon_below_the_crossing():
    """P = (0.3, 0.7, 0.8, 0.9) at 0.5, 1, 1.5, 2 s: 0.5 is crossed between 0.5 s (0.3) and 1 s (0.7), so
    0.5 + 0.5 * (0.5 - 0.3) / (0.7 - 0.3) = 0.75 s (not from 0 s at 0: 0.714 s)."""
    ttc = ttc_from_horizons(torch.tensor([[0.3, 0.7, 0.8, 0.9]]), HORIZONS)
    torch.testing.assert_close(ttc, torch.tensor([0.75]))


def test_a_horizon_probability_of_exactly_one_half_is_the_median():
    """P(contact within 2 s) = 0.5 exactly (0.1, 0.2, 0.3 before): the median TTC is 2.0 s, not inf."""
    ttc = ttc_from_horizons(torch.tensor([[0.1, 0.2, 0.3, 0.5]]), HORIZONS)
    torch.testing.assert_close(ttc, torch.tensor([2.0]))


# --------------------------------------------------------------------------------------------- the baselines


def test_a_zero_height_box_gives_no_ttc():
    """A box of height 0 (a degenerate detection) is not an object: no scale change against it, the TTC of the
    next frame (4 px tall) is unknown (NaN), not 0 s from an infinite growth."""
    boxes = np.array([[[10, 50, 20, 50]], [[10, 48, 20, 52]]], float)
    ttc = track_ttc(boxes, np.ones((2, 1), bool), fps=10)
    assert np.isnan(ttc).all()


def test_a_box_with_one_null_coordinate_is_not_valid():
    tracks = {"1": {"dims": [1.5, 1.6, 4.0], "box": [[10, 20, 30, 40], [10, None, 30, 40]],
                    "location": [[0, 0, 10], [0, 0, 9]]}}  # fmt: skip
    assert tracks_to_arrays(tracks, 2)["box_valid"].ravel().tolist() == [True, False]


def test_an_object_centred_exactly_on_the_bands_edge_is_in_the_path():
    """Width 300 px, centre at 200 px: exactly 2/3, the band's closed right edge. Its box grows 20 -> 24 px in
    0.1 s: TTC 0.1 / 0.2 = 0.5 s, risk 1 - 0.5 / 2 = 0.75 (frame 0: no TTC yet, 0)."""
    boxes = np.array([[[190, 40, 210, 60]], [[190, 38, 210, 62]]], float)
    scores = track_baseline(boxes, np.ones((2, 1), bool), fps=10, image_width=300.0).scores
    np.testing.assert_allclose(scores, [0.0, 0.75], atol=1e-12)


def test_the_oracle_counts_a_footprint_touching_the_ego_edge():
    """Edges that touch are a contact. (a) An object 1 m wide whose side runs exactly along the ego's edge
    (centre x = -1.5 = -(1.0 + 0.5), not moving sideways), closing from z = 3 to 2 in 0.1 s (10 m/s): its
    zero-length footprint reaches the ego front (z = 0) in 0.2 s. (b) A point at (-2, -3.5) moving (+1, -1) m/s
    enters |x| <= 1 at t = 1 s just as it leaves the ego's rear (z = -4.5): a graze at 1.0 s."""
    side = constant_velocity_oracle(
        np.array([[[-1.5, 0, 3.0]], [[-1.5, 0, 2.0]]]), [[1.5, 1.0, 0.0]], fps=10, ego_half_width=1.0
    )[:, 0]
    assert np.isnan(side[0]) and side[1] == pytest.approx(0.2, abs=1e-12)
    corner = constant_velocity_oracle(
        np.array([[[-3.0, 0, -2.5]], [[-2.0, 0, -3.5]]]), [[1.5, 0.0, 0.0]], fps=1, ego_half_width=1.0
    )[:, 0]
    assert np.isnan(corner[0]) and corner[1] == pytest.approx(1.0, abs=1e-12)


# ----------------------------------------------------------------------------------------- argument checks


def test_duplicate_motion_lags_and_a_zero_horizon_and_an_empty_band_are_refused():
    with pytest.raises(ValueError, match=r"motion_lags must start at 1 and ascend .*\(1, 3, 3\)"):
        AccidentAnticipator(input_kind="boxes", motion_lags=(1, 3, 3), hidden=8)
    with pytest.raises(ValueError, match=r"horizons must be positive seconds .*\(0\.0, 1\.0, 2\.0\)"):
        AccidentAnticipator(input_kind="boxes", horizons=(0.0, 1.0, 2.0), hidden=8)
    with pytest.raises(ValueError, match=r"band must be 0 <= left < right <= 1 .*\(0\.5, 0\.5\)"):
        track_baseline(np.zeros((2, 1, 4)), np.ones((2, 1), bool), 10, 300.0, band=(0.5, 0.5))
