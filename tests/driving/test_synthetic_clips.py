"""Scenario clips (issue #18): the CCD-compatible layout on disk, the continuous-time contact, the per-frame
annotations against the KITTI labels and instance maps, and determinism by seed. Tiny sets: 6 clips of 10
frames (1.0 s at 10 fps) at 160x48; the scenario physics is also checked on full 5 s clips without rendering."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from domains.driving.synthetic import clips as C
from domains.driving.synthetic.cli import main
from domains.driving.synthetic.writers import MARKER

SETTINGS = {"n_clips": 6, "size": (160, 48), "fps": 10.0, "seconds": 1.0, "seed": 0}
N_FRAMES = 10
CCD_LINE = re.compile(
    r"^(\d{6}),\[([01](?:, [01])*)\],(\d+),synthetic,(Day|Night),(Normal|Rainy|Snowy|Foggy),Yes$"
)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return C.generate_clips(tmp_path_factory.mktemp("clips") / "acc", verbose=False, **SETTINGS)


def _annotations(root: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((root / "annotations").glob("*.json"))}


def _clip_dir(root: Path, ann: dict) -> Path:
    return root / "videos" / (C.CRASH_DIR if ann["kind"] == "crash" else C.NORMAL_DIR) / ann["vid"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -------------------------------------------------------------------------------------------------- physics
def test_profile_is_closed_form_piecewise_constant_acceleration():
    p = C.Profile(10.0, [(1.0, -5.0)])  # 10 m/s, brakes at 1 s with 5 m/s^2: stops at 3 s after 20 m
    s, v = p.states(np.array([0.5, 1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_allclose(s, [5.0, 10.0, 17.5, 20.0, 20.0])
    np.testing.assert_allclose(v, [10.0, 10.0, 5.0, 0.0, 0.0])
    up = C.Profile(0.0, [(1.0, 2.0)], v_max=3.0)  # from rest at 1 s, 2 m/s^2 up to 3 m/s (reached at 2.5 s)
    s, v = up.states(np.array([2.0, 2.5, 3.5]))
    np.testing.assert_allclose(s, [1.0, 2.25, 5.25])
    np.testing.assert_allclose(v, [2.0, 3.0, 3.0])


def test_first_contact_matches_a_hand_solved_lead_braking():
    # ego 10 m/s; a lead car 5 m ahead at 10 m/s brakes at 1 s with 8 m/s^2:
    # gap(1 + u) = 5 - 4 u^2 -> contact at u = sqrt(5/4), i.e. t = 2.118034 s (the lead stops at u = 1.25)
    ego = C.Motion(0.0, 0.0, 0.0, C.Profile(10.0))
    dims = (1.5, 1.6, 4.0)
    lead = C.Actor("Car", dims, C.Motion(0.3, C.EGO_FRONT + 5.0 + 2.0, 0.0, C.Profile(10.0, [(1.0, -8.0)])))
    tc, k = C.first_contact(ego, [lead], 4.0)
    assert k == 0
    assert tc == pytest.approx(1.0 + math.sqrt(1.25), abs=1e-5)
    assert float(C.ego_gap(ego, lead, tc)) == pytest.approx(0.0, abs=1e-5)
    assert float(C.ego_gap(ego, lead, tc - 1e-3)) > 0
    # a car 2 m to the side never touches (lateral gap 2 - 0.9 - 0.8 = 0.3 m)
    beside = C.Actor("Car", dims, C.Motion(2.0, 10.0, 0.0, C.Profile(0.0)))
    assert C.first_contact(ego, [beside], 4.0) is None
    assert float(C.ego_gap(ego, beside, 0.8).min()) == pytest.approx(0.3)


def test_first_contact_takes_the_earliest_actor_not_the_first_listed():
    # ego 10 m/s, front bumper at z = EGO_FRONT + 10 t; parked 4 m cars centred at EGO_FRONT + 22 and + 12
    # have their rear at EGO_FRONT + 20 and + 10: contact at 20 / 10 = 2.0 s and 10 / 10 = 1.0 s.
    ego = C.Motion(0.0, 0.0, 0.0, C.Profile(10.0))
    dims = (1.5, 1.6, 4.0)
    far = C.Actor("Car", dims, C.Motion(0.0, C.EGO_FRONT + 22.0, 0.0, C.Profile(0.0)))
    near = C.Actor("Car", dims, C.Motion(0.0, C.EGO_FRONT + 12.0, 0.0, C.Profile(0.0)))
    tc, k = C.first_contact(ego, [far, near], 4.0)
    assert k == 1 and tc == pytest.approx(1.0, abs=1e-5)
    tc, k = C.first_contact(ego, [far], 4.0)
    assert k == 0 and tc == pytest.approx(2.0, abs=1e-5)


def test_stopping_behind_closes_exactly_the_asked_distance():
    # Lead at rest 20 m ahead of an ego at 10 m/s that reacts at t = 1 s: it has 10 m of travel before
    # braking, so to close 18 m it must stop within 8 m: v^2 / (2 d) = 8 -> d = 100 / 16 = 6.25 m/s^2.
    lead = C.Profile(0.0)
    ego = C._stopping_behind(10.0, lead, 1.0, 18.0, 10.0)
    assert ego.phases[0][0] == 1.0 and ego.phases[0][1] == pytest.approx(-6.25, abs=0.02)
    assert C._closing_max(ego, lead, 10.0) == pytest.approx(18.0, abs=0.05)
    # 11 m would need 100 / 2 = 50 m/s^2 (over 9.5); 40 m cannot be closed braking at 2 m/s^2 or more (35 m)
    assert C._stopping_behind(10.0, lead, 1.0, 11.0, 10.0) is None
    assert C._stopping_behind(10.0, lead, 1.0, 40.0, 10.0) is None


@pytest.mark.parametrize("scenario", C.SCENARIOS)
@pytest.mark.parametrize(("n_frames", "size"), [(50, (320, 96)), (N_FRAMES, (160, 48))])
def test_scenarios_crash_in_window_and_near_misses_never_touch(scenario, n_frames, size):
    """Plans only (no rendering): crashes touch within CONTACT_WINDOW (60-90 % of the clip), positive gap
    before; near misses keep a gap within NEAR_MISS_GAP over the whole clip."""
    dur, ts = n_frames / 10.0, np.arange(0.0, (n_frames - 1) / 10.0, 0.001)
    for index in range(3):
        crash = C.make_clip(0, index, "crash", scenario, size, n_frames, 10.0, 1.0)
        tc = crash.contact_time
        assert C.CONTACT_WINDOW[0] * dur <= tc <= C.CONTACT_WINDOW[1] * dur
        (main_actor,) = [a for a in crash.plan.actors if a.main]
        assert float(C.ego_gap(crash.plan.ego, main_actor, tc)) == pytest.approx(0.0, abs=1e-4)
        before = ts[ts < tc - 1e-4]
        assert (C.ego_gap(crash.plan.ego, main_actor, before) > 0).all()
        # after contact both stay put: the ego's travel and the actor's pose stop changing
        x, z, _h, speed = main_actor.motion.poses(np.array([tc, tc + 0.5]))
        assert x[0] == x[1] and z[0] == z[1] and speed[1] == 0
        near = C.make_clip(0, index, "near_miss", scenario, size, n_frames, 10.0, 1.0)
        assert near.contact_time is None and near.involved == []
        gaps = [C.ego_gap(near.plan.ego, a, ts).min() for a in near.plan.actors]
        assert C.NEAR_MISS_GAP[0] - 0.05 <= min(gaps) <= C.NEAR_MISS_GAP[1]


# ------------------------------------------------------------------------------------------------- on disk
def test_layout_on_disk(root):
    for name in ("README.txt", "Crash-1500.txt", "meta.json", ".complete"):
        assert (root / name).is_file(), name
    anns = _annotations(root)
    assert len(anns) == SETTINGS["n_clips"]
    meta = json.loads((root / "meta.json").read_text())
    assert {k: sum(v.values()) for k, v in meta["counts"].items()} == {
        "crash": 2,
        "near_miss": 2,
        "normal": 2,
    }
    for vid, ann in anns.items():
        assert ann["n_frames"] == N_FRAMES and ann["size"] == [160, 48] and ann["fps"] == 10.0
        assert ann["scenario"] in (*C.SCENARIOS, C.ORDINARY)
        folder = _clip_dir(root, ann)
        for sub, ext in (
            ("image_2", ".jpg"),
            ("label_2", ".txt"),
            ("semantic", ".png"),
            ("instance", ".png"),
        ):
            names = sorted(p.name for p in (folder / sub).iterdir())
            assert names == [f"{i:06d}{ext}" for i in range(N_FRAMES)], (vid, sub)
        image = cv2.imread(str(folder / "image_2" / "000000.jpg"))
        assert image.shape == (48, 160, 3)
        assert cv2.imread(str(folder / "instance" / "000000.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    readme = (root / "README.txt").read_text()
    assert "crash: 2" in readme and "near_miss: 2" in readme and "normal: 2" in readme


def test_ccd_lines_parse_back(root):
    anns = _annotations(root)
    lines = (root / "Crash-1500.txt").read_text().splitlines()
    assert sorted(line.split(",", 1)[0] for line in lines) == sorted(
        v for v, a in anns.items() if a["kind"] == "crash"
    )
    for line in lines:
        m = CCD_LINE.match(line)
        assert m, line
        vid, labels = m.group(1), [int(v) for v in m.group(2).split(", ")]
        ann = anns[vid]
        assert len(labels) == ann["n_frames"]
        cf = ann["contact_frame"]
        assert labels == [0] * cf + [1] * (N_FRAMES - cf)
        assert m.group(4) == ("Night" if ann["lighting"] == "night" else "Day")
        assert m.group(5) == {"clear": "Normal", "rain": "Rainy", "fog": "Foggy"}[ann["weather"]]


def test_annotation_contact_ttc_and_ego(root):
    for ann in _annotations(root).values():
        assert len(ann["ego"]["speed"]) == len(ann["ego"]["z"]) == len(ann["ttc"]) == N_FRAMES
        assert ann["ego"]["z"][0] == 0.0 and all(np.diff(ann["ego"]["z"]) >= 0)
        tc, cf = ann["contact_time"], ann["contact_frame"]
        if ann["kind"] != "crash":
            assert tc is None and cf is None and ann["involved"] == [] and all(v is None for v in ann["ttc"])
            if ann["kind"] == "near_miss":
                assert ann["min_gap"] > 0
            continue
        assert cf == min(i for i in range(N_FRAMES) if i / 10.0 >= tc)
        assert len(ann["involved"]) == 1 and str(ann["involved"][0]) in ann["tracks"]
        for i, ttc in enumerate(ann["ttc"]):
            if i < cf:
                assert ttc == pytest.approx(tc - i / 10.0, abs=1e-4) and ttc > 0
            else:
                assert ttc is None
        assert ann["ego"]["speed"][-1] == 0.0  # the ego stays in contact


def test_lead_braking_gap_from_the_json_is_zero_at_contact(root):
    (ann,) = [
        a for a in _annotations(root).values() if (a["kind"], a["scenario"]) == ("crash", "lead_braking")
    ]
    cf, track = ann["contact_frame"], ann["tracks"][str(ann["involved"][0])]
    length = track["dims"][2]

    def gap(i: int) -> float:  # lead's rear minus the ego's front bumper, world coordinates
        return track["world"][i][1] - length / 2 - (ann["ego"]["z"][i] + C.EGO_FRONT)

    assert gap(cf) == pytest.approx(0.0, abs=2e-3)  # positions freeze at the contact time
    assert gap(cf - 1) > 0
    # the same from the camera-frame location (KITTI bottom centre; the camera's small yaw blurs it a little)
    assert track["location"][cf][2] - length / 2 - C.EGO_FRONT == pytest.approx(0.0, abs=0.05)


def _world_gap(ann: dict, track: dict, i: int) -> float:
    """Footprint gap (m) between the ego and a track at frame ``i`` from the JSON alone."""
    x, z, heading = track["world"][i]
    foot = ann["ego"]["footprint"]
    ego = (ann["ego"]["x"], ann["ego"]["z"][i] + foot["front"] - foot["length"] / 2, 0.0)
    ego_rect = (*ego, foot["width"] / 2, foot["length"] / 2)
    return float(C._rect_gap(ego_rect, (x, z, heading, track["dims"][1] / 2, track["dims"][2] / 2)))


def test_crash_touches_and_near_misses_stay_apart_from_the_json(root):
    seen = set()
    for ann in _annotations(root).values():
        if ann["kind"] == "normal":
            continue
        track = ann["tracks"][str(ann["scenario_tracks"][0])]
        if ann["kind"] == "crash":
            assert ann["involved"] == ann["scenario_tracks"][:1]
            cf = ann["contact_frame"]
            assert _world_gap(ann, track, cf) == pytest.approx(0.0, abs=2e-3)
            assert all(_world_gap(ann, track, i) > 0 for i in range(cf))
        else:
            gaps = [_world_gap(ann, track, i) for i in range(N_FRAMES)]
            assert min(gaps) > 0 and min(gaps) == pytest.approx(ann["min_gap"], abs=0.3)
        seen.add(ann["kind"])
    assert seen == {"crash", "near_miss"}


def test_labels_instances_and_tracks_agree(root):
    for ann in _annotations(root).values():
        folder = _clip_dir(root, ann)
        assert len(ann["label_tracks"]) == N_FRAMES
        for i in range(N_FRAMES):
            lines = (folder / "label_2" / f"{i:06d}.txt").read_text().splitlines()
            row = ann["label_tracks"][i]
            assert len(row) == len(lines)
            inst = cv2.imread(str(folder / "instance" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
            values = set(np.unique(inst).tolist()) - {0}
            assert values <= set(range(1, len(lines) + 1))
            for k, (line, track) in enumerate(zip(lines, row), start=1):
                f = line.split()
                box = [float(v) for v in f[4:8]]
                ys, xs = np.nonzero(inst == k)
                if xs.size:  # instance k lies inside label line k's box
                    assert xs.min() >= box[0] - 0.01 and xs.max() + 1 <= box[2] + 0.01
                    assert ys.min() >= box[1] - 0.01 and ys.max() + 1 <= box[3] + 0.01
                assert (track == -1) == (f[0] == "DontCare")
                if track != -1:
                    t = ann["tracks"][str(track)]
                    assert t["type"] == f[0]
                    assert t["box"][i] == pytest.approx(box, abs=0.01)
                    assert t["location"][i] == pytest.approx([float(v) for v in f[11:14]], abs=0.011)


def test_same_seed_same_bytes_other_seed_differs(root, tmp_path, caplog):
    with caplog.at_level("INFO"):  # and quiet when asked: no progress line (" of 6 (") nor any other
        again = C.generate_clips(tmp_path / "again", verbose=False, **SETTINGS)
    assert not [r for r in caplog.records if r.getMessage().startswith("synthetic accident clips")]
    anns = _annotations(root)
    some = ["Crash-1500.txt"]
    for ann in list(anns.values())[:3]:
        rel = _clip_dir(root, ann).relative_to(root)
        some += [f"annotations/{ann['vid']}.json", f"{rel}/image_2/000005.jpg", f"{rel}/label_2/000005.txt"]
        some += [f"{rel}/instance/000005.png", f"{rel}/semantic/{N_FRAMES - 1:06d}.png"]
    for rel in some:
        assert _digest(root / rel) == _digest(again / rel), rel
    other = C.ensure_synthetic_clips(
        tmp_path / "other", verbose=False, **{**SETTINGS, "n_clips": 1, "seed": 1}
    )
    marker = (other / MARKER).stat().st_mtime_ns
    assert C.ensure_synthetic_clips(other, **{**SETTINGS, "n_clips": 1, "seed": 1}) == other  # reused
    assert (other / MARKER).stat().st_mtime_ns == marker
    a0 = json.loads((root / "annotations" / "000000.json").read_text())
    b0 = json.loads((other / "annotations" / "000000.json").read_text())
    assert (a0["seed"], a0["ego"]["z"]) != (b0["seed"], b0["ego"]["z"])
    img_a = _clip_dir(root, a0) / "image_2" / "000000.jpg"
    img_b = _clip_dir(other, b0) / "image_2" / "000000.jpg"
    assert _digest(img_a) != _digest(img_b)


@pytest.mark.slow  # two spawned processes import the suite (~25 s on 2 shared cores)
def test_parallel_workers_write_the_same_bytes(root, tmp_path):
    again = C.generate_clips(tmp_path / "again", verbose=False, workers=2, **SETTINGS)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.name != "meta.json")
    assert files == sorted(
        p.relative_to(again) for p in again.rglob("*") if p.is_file() and p.name != "meta.json"
    )
    for rel in files:
        assert _digest(root / rel) == _digest(again / rel), rel


def test_cli_prints_counts_and_reuses_the_set(root, capsys):
    w, h = SETTINGS["size"]
    args = [
        "clips",
        "--root",
        str(root),
        "--n-clips",
        "6",
        "--seconds",
        str(SETTINGS["seconds"]),
        "--width",
        str(w),
        "--height",
        str(h),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "crash: 2 (" in out and "near_miss: 2 (" in out and "normal: 2 (ordinary 2)" in out


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="at least 8 frames"):
        C.generate_clips(tmp_path / "x", seconds=0.5, verbose=False)
    with pytest.raises(ValueError, match="shares"):
        C.generate_clips(tmp_path / "y", shares=(0.5, -0.1, 0.6), verbose=False)
    with pytest.raises(TypeError, match="unexpected arguments"):
        C.ensure_synthetic_clips(tmp_path / "z", n_images=3)


def test_clip_sets_of_other_settings_get_their_own_folder():
    """`benchmarks/driving_accident.py --synthetic '{"n_clips": 400}'` re-rendered the default folder: the
    200-clip set (minutes of rendering) was replaced, and the next default run rendered it again."""
    assert C.clips_root() == Path(C.DEFAULT_ACCIDENT_ROOT)
    assert C.clips_root(n_clips=200, shares=[0.4, 0.3, 0.3], workers=2) == Path(C.DEFAULT_ACCIDENT_ROOT)
    assert C.clips_root(n_clips=400) == Path(f"{C.DEFAULT_ACCIDENT_ROOT}_n_clips-400")
    assert C.clips_root(shares=[0.5, 0.25, 0.25], seed=1) == Path(
        f"{C.DEFAULT_ACCIDENT_ROOT}_seed-1_shares-0.5-0.25-0.25"
    )


def test_rendering_says_what_it_starts_how_far_it_is_every_tenth_and_when_it_is_done(tmp_path, caplog):
    """The first accident fit rendered its clips for minutes without a line; the count came only at the end.
    Then the first run rendered for minutes (200 clips: 4-13) after one line, then nothing: it read as a hang.
    (Quiet when asked: test_same_seed_same_bytes_other_seed_differs.)"""
    with caplog.at_level("INFO"):
        C.generate_clips(tmp_path / "said", verbose=True, **{**SETTINGS, "n_clips": 4, "seconds": 0.8})
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("synthetic accident clips")]
    assert lines[0] == f"synthetic accident clips: rendering 4 clips (32 frames) at {tmp_path / 'said'}, once: about 2 s on 1 core(s)"
    progress = [r.getMessage() for r in caplog.records if " of 4 (" in r.getMessage()]
    assert [p.split(": ")[1].split(" (")[0] for p in progress] == ["1 of 4", "2 of 4", "3 of 4"]
    assert lines[1:4] == progress  # a line per tenth (here: per clip), the last one's said by the count
    assert lines[4].startswith("synthetic accident clips: 4 clips at") and len(lines) == 5
