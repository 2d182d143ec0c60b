"""Physics baselines against closed-form answers: box-scale TTC on a constant-speed approach, the
constant-velocity oracle on a head-on approach and on crossing objects that hit or miss."""

from __future__ import annotations

import numpy as np
import pytest

from domains.driving.accident.baselines import (
    constant_acceleration_oracle,
    constant_velocity_oracle,
    frame_ttc,
    track_baseline,
    track_ttc,
    tracks_to_arrays,
    ttc_risk,
)

FPS = 10.0


def approaching_boxes(
    n_frames: int = 25, z0: float = 30.0, speed: float = 10.0, cx: float = 160.0
) -> np.ndarray:
    """A 1.5 m tall object straight ahead closing at ``speed`` m/s; focal 700 px: h = 700 * 1.5 / z.
    At frame k, z = z0 - speed * k / FPS and the true TTC (to z = 0) is z / speed = 3 - 0.1 k s."""
    z = z0 - speed * np.arange(n_frames) / FPS
    h = 700.0 * 1.5 / z
    return np.stack([cx - h / 2, 48 - h / 2, cx + h / 2, 48 + h / 2], axis=1)[:, None, :]  # (T, 1, 4)


def test_track_ttc_is_exact_for_a_constant_closing_speed():
    # h_t / h_{t-k} = z_{t-k} / z_t = 1 + k v dt / z_t, so k dt / (ratio - 1) = z_t / v = 3 - 0.1 t exactly,
    # for the full 3-frame baseline (t >= 3) and the shorter ones at t = 1, 2. Frame 0 has no history: NaN.
    boxes = approaching_boxes()
    valid = np.ones(boxes.shape[:2], dtype=bool)
    expected = 3.0 - 0.1 * np.arange(25)
    for span in (1, 3, 5):
        ttc = track_ttc(boxes, valid, FPS, span=span)[:, 0]
        assert np.isnan(ttc[0])
        np.testing.assert_allclose(ttc[1:], expected[1:], rtol=1e-9)


def test_track_ttc_receding_invisible_and_gaps():
    # A receding object (z grows): the box shrinks -> inf. Hidden at frame 5: NaN there; frame 6 measures
    # against frame 4 (two-frame baseline), frame 7 against frame 4 too (k = 3), all still exact.
    receding = approaching_boxes(n_frames=10, z0=10.0, speed=-5.0)
    assert np.isinf(track_ttc(receding, np.ones((10, 1), bool), FPS)[1:]).all()
    boxes = approaching_boxes(n_frames=10)
    valid = np.ones((10, 1), dtype=bool)
    valid[5] = False
    ttc = track_ttc(boxes, valid, FPS, span=3)[:, 0]
    assert np.isnan(ttc[5])
    np.testing.assert_allclose(ttc[[6, 7, 8]], [2.4, 2.3, 2.2], rtol=1e-9)


def test_track_ttc_uses_the_longest_visible_baseline_first():
    # Noisy heights [10, 11, 12, 14] at 10 fps (dt = 0.1 s), span = 3: TTC_t = k dt / (h_t / h_{t-k} - 1)
    # with the largest k <= 3 that has history:
    #   t = 1: k = 1, 11/10 = 1.1 -> 0.1 / 0.1 = 1.0
    #   t = 2: k = 2, 12/10 = 1.2 -> 0.2 / 0.2 = 1.0   (k = 1 would give 0.1 / (12/11 - 1) = 1.1)
    #   t = 3: k = 3, 14/10 = 1.4 -> 0.3 / 0.4 = 0.75  (k = 1 would give 0.1 / (14/12 - 1) = 0.6)
    heights = np.array([10.0, 11.0, 12.0, 14.0])
    boxes = np.stack([np.zeros(4), np.zeros(4), np.full(4, 5.0), heights], axis=1)[:, None, :]
    ttc = track_ttc(boxes, np.ones((4, 1), dtype=bool), FPS, span=3)[:, 0]
    assert np.isnan(ttc[0])
    np.testing.assert_allclose(ttc[1:], [1.0, 1.0, 0.75], rtol=1e-9)


def test_ttc_risk_is_the_share_of_the_horizon_used_up():
    # H = 2 s: TTC 3 -> 0, 1.5 -> 0.25, 1 -> 0.5, 0 -> 1, -1 -> 1 (already in contact), inf / NaN -> 0.
    np.testing.assert_allclose(
        ttc_risk([3.0, 1.5, 1.0, 0.0, -1.0, np.inf, np.nan]), [0, 0.25, 0.5, 1, 1, 0, 0]
    )


def test_track_baseline_counts_only_objects_in_the_ego_path():
    # Image 320 px wide, middle third 106.7..213.3 px. Object 0 straight ahead (centre 160 px), object 1 the
    # same approach at the left edge (centre 40 px): only object 0 scores. Frame 20: TTC 1.0 s -> risk 0.5.
    ahead, left = approaching_boxes(cx=160.0), approaching_boxes(cx=40.0)
    boxes = np.concatenate([ahead, left], axis=1)
    out = track_baseline(boxes, np.ones((25, 2), bool), FPS, image_width=320, horizon=2.0)
    assert out.scores[20] == pytest.approx(0.5)
    assert (out.object_risk[:, 1] == 0).all()
    np.testing.assert_allclose(out.frame_ttc[1:], 3.0 - 0.1 * np.arange(1, 25), rtol=1e-9)


def test_oracle_on_a_head_on_approach():
    # Car (h, w, l) = (1.5, 1.8, 4.0) straight ahead, z = 20 - 5 t, ego front at the camera (z = 0).
    # Footprints touch when the car's rear z - l/2 reaches 0: z = 2 at t = 3.6 s. At frame k (t = k / 10):
    # TTC = 3.6 - 0.1 k for k = 1..35 (frame 0: no velocity yet, NaN), 0 from frame 36 on (overlapping).
    k = np.arange(40)
    locations = np.stack([np.zeros(40), np.full(40, 1.65), 20.0 - 0.5 * k], axis=1)[:, None, :]
    ttc = constant_velocity_oracle(locations, [[1.5, 1.8, 4.0]], FPS, ego_half_width=0.9)[:, 0]
    assert np.isnan(ttc[0])
    np.testing.assert_allclose(ttc[1:36], 3.6 - 0.1 * k[1:36], atol=1e-9)
    assert (ttc[36:] == 0).all()


def test_constant_acceleration_oracle_on_a_lead_car_braking():
    # A car (l = 4 m) 12 m ahead at the ego's speed brakes at 4 m/s^2 from t = 0: z = 12 - 2 t^2. Its rear
    # (z - 2) reaches the ego's front (z = 0) at 12 - 2 t^2 = 2: t = sqrt(5) = 2.236 s. Frames 0 and 1: NaN
    # (no acceleration yet); from frame 2 the TTC is sqrt(5) - k / 10, found on the 0.01-s grid (rounded up
    # by less than one step). The constant-velocity oracle, blind to the braking, answers later.
    k = np.arange(25)
    t = k / FPS
    locations = np.stack([np.zeros(25), np.full(25, 1.65), 12.0 - 2.0 * t * t], axis=1)[:, None, :]
    dims = [[1.5, 1.8, 4.0]]
    ca = constant_acceleration_oracle(locations, dims, FPS, ego_half_width=0.9)[:, 0]
    assert np.isnan(ca[:2]).all()
    expected = np.sqrt(5.0) - t[2:23]
    assert (ca[2:23] >= expected - 1e-9).all() and (ca[2:23] < expected + 0.01).all()
    assert (ca[23:] == 0).all()  # overlapping from t = 2.3 s
    cv = constant_velocity_oracle(locations, dims, FPS, ego_half_width=0.9)[:, 0]
    assert (cv[2:22] > ca[2:22]).all() and cv[2] > ca[2] + 10.0
    with pytest.raises(ValueError, match="step <= max_time"):
        constant_acceleration_oracle(locations, dims, FPS, step=0.0)


def crossing(vx: float, n_frames: int = 30) -> list[list[list[float] | None]]:
    """A pedestrian (0.6 m wide and long) crossing from x = -6 m at ``vx`` m/s while the ego closes at 5 m/s
    from z = 10 m (JSON-like nested lists)."""
    t = np.arange(n_frames) / FPS
    return [[[float(-6.0 + vx * s), 1.65, float(10.0 - 5.0 * s)]] for s in t]


def test_oracle_crossing_object_that_misses_and_one_that_hits():
    # Overlap needs |x| <= 0.9 + 0.3 = 1.2 and -4.5 - 0.3 <= z <= 0.3 (ego 4.5 m long, front at the camera):
    #   z-window: 10 - 5 t <= 0.3 -> t >= 1.94; 10 - 5 t >= -4.8 -> t <= 2.96.
    #   vx = 6 m/s: x-window t in [(6 - 1.2) / 6, (6 + 1.2) / 6] = [0.8, 1.2]: crosses before the ego arrives,
    #               no common time -> inf at every frame with a velocity.
    #   vx = 2 m/s: x-window [2.4, 3.6] meets [1.94, 2.96] at 2.4 s -> TTC at frame k = 2.4 - 0.1 k.
    dims = [[1.7, 0.6, 0.6]]
    miss = constant_velocity_oracle(crossing(6.0), dims, FPS)[:, 0]
    assert np.isnan(miss[0]) and np.isinf(miss[1:]).all()
    hit = constant_velocity_oracle(crossing(2.0), dims, FPS)[:, 0]
    k = np.arange(1, 24)
    np.testing.assert_allclose(hit[1:24], 2.4 - 0.1 * k, atol=1e-9)
    np.testing.assert_allclose(
        hit[24:], 0.0, atol=1e-9
    )  # in contact from t = 2.4 s (until the z-window ends at 2.96 s)


def test_oracle_turns_the_footprint_by_the_heading():
    # A cyclist (h, w, l) = (1.7, 0.6, 1.8) crossing at 2 m/s (the crossing() path). Riding across the lane
    # (heading pi/2) its length lies along x: overlap needs |x| <= 0.9 + 0.9 -> t in [(6 - 1.8) / 2, (6 + 1.8) / 2]
    # = [2.1, 3.9], and along z its half width 0.3: 10 - 5 t in [-4.8, 0.3] -> t in [1.94, 2.96]: contact at
    # 2.1 s. Read along the road (no headings) the same object meets the ego only at 2.4 s (|x| <= 1.2).
    dims = [[1.7, 0.6, 1.8]]
    across = np.full((30, 1), np.pi / 2)
    k = np.arange(1, 21)
    turned = constant_velocity_oracle(crossing(2.0), dims, FPS, headings=across)[:, 0]
    np.testing.assert_allclose(turned[1:21], 2.1 - 0.1 * k, atol=1e-9)
    along = constant_velocity_oracle(crossing(2.0), dims, FPS)[:, 0]
    np.testing.assert_allclose(along[1:21], 2.4 - 0.1 * k, atol=1e-9)
    accel = constant_acceleration_oracle(crossing(2.0), dims, FPS, headings=across)[:, 0]
    assert (np.abs(accel[2:21] - (2.1 - 0.1 * k[1:])) < 0.011).all()


def test_oracle_unknown_positions_and_frame_minimum():
    # A missing position (None) at frame 5: NaN there and at frame 6 (no velocity); back to exact at 7.
    locs = crossing(2.0)
    locs[5] = [None]
    ttc = constant_velocity_oracle(locs, [[1.7, 0.6, 0.6]], FPS)
    assert np.isnan(ttc[[0, 5, 6], 0]).all()
    assert ttc[7, 0] == pytest.approx(1.7)
    both = np.array([[np.nan, np.nan], [np.inf, 1.0], [np.inf, np.nan]])
    np.testing.assert_array_equal(frame_ttc(both), [np.nan, 1.0, np.inf])


def test_tracks_to_arrays_reads_the_annotation_schema():
    tracks = {
        "3": {
            "type": "Car",
            "dims": [1.5, 1.8, 4.0],
            "box": [[0, 0, 10, 10], None],
            "location": [[0.0, 1.6, 12.0], None],
        }
    }
    arrays = tracks_to_arrays(tracks, 2)
    assert arrays["ids"] == ["3"]
    assert np.isnan(arrays["headings"]).all()  # no world poses: read as along the road
    tracks["3"]["world"] = [[0.0, 12.0, 0.25], [0.0, 13.0, 0.5]]
    np.testing.assert_array_equal(tracks_to_arrays(tracks, 2)["headings"], [[0.25], [0.5]])
    np.testing.assert_array_equal(arrays["box_valid"], [[True], [False]])
    assert np.isnan(arrays["locations"][1, 0]).all()
    with pytest.raises(ValueError, match="track 3: box has 2 frames, expected 3"):
        tracks_to_arrays(tracks, 3)


def test_oracle_scores_go_through_the_metrics():
    # Crash: the head-on approach above (contact at 3.6 s = frame 36 of 40). Near miss: the crossing pedestrian
    # that passes before the ego arrives (TTC inf -> risk 0 everywhere). The oracle's risk first exceeds 0
    # where TTC < 2 s: frame 17 (TTC 1.9 s); at zero false alarms the operating threshold is just above the near
    # miss's peak risk 0 (the next float), first crossed there: lead time (36 - 17) / 10 = 1.9 s; the crash clip
    # is found, so video AP = 1.
    from domains.driving.accident.metrics import ClipScores, lead_time_at_false_alarm_rate, video_ap

    k = np.arange(40)
    head_on = np.stack([np.zeros(40), np.full(40, 1.65), 20.0 - 0.5 * k], axis=1)[:, None, :]
    crash_risk = ttc_risk(frame_ttc(constant_velocity_oracle(head_on, [[1.5, 1.8, 4.0]], FPS)))
    miss_risk = ttc_risk(frame_ttc(constant_velocity_oracle(crossing(6.0), [[1.7, 0.6, 0.6]], FPS)))
    clips = [
        ClipScores(crash_risk, toa=36, fps=FPS),
        ClipScores(miss_risk, toa=-1, fps=FPS, kind="near_miss"),
    ]
    assert video_ap(clips) == 1.0
    out = lead_time_at_false_alarm_rate(clips, max_false_alarm=0.0)
    assert out == pytest.approx({"threshold": 0.0, "recall": 1.0, "lead_time": 1.9, "false_alarm_rate": 0.0})
    assert out["threshold"] == np.nextafter(0.0, 1.0)
