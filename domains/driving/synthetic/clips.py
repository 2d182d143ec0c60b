"""Scenario clips for accident anticipation (issue #18): crashes, near misses and ordinary driving.

Each clip is one street from :func:`~.layout.sample_layout` (buildings, parked cars, pedestrians, traffic,
lighting, weather) into which a scenario's actors are inserted: a lead vehicle braking hard, a cut-in from the
next lane, a pedestrian stepping out between parked cars, a cyclist crossing (as a crash or as a near miss
that ends without contact), or ordinary driving (cruising, gentle braking or accelerating, sometimes behind a
lead car). Background objects that would overlap a scenario actor, or enter the ego's "danger zone" (its
footprint widened by 0.5 m and extended 1 s ahead), are removed, so the only conflict is the scenario's.

Motion. Speeds follow piecewise-constant accelerations (:class:`Profile`: braking stops at rest, accelerating
stops at a cap); lane changes add a cosine-shaped lateral shift and turn the heading with the velocity
(:class:`Motion`). The ego camera follows the ego's profile (``Layout.ego_z``), the actors their per-frame
``(x, z, heading)`` rows (``ObjectSpec.trajectory``); everything else keeps the still-image generator's
constant-velocity motion.

Contact. The ego car is not drawn; its footprint is a ``EGO_WIDTH`` x ``EGO_LENGTH`` rectangle on the ground
centred on the camera's x, its front bumper ``EGO_FRONT`` metres ahead of the camera (a windscreen camera).
Actors' footprints are their KITTI width x length, turned by their heading. The signed gap of two rectangles
is the separating-axis distance (largest gap over the four edge normals; > 0 apart, <= 0 touching). Contact
time is solved in continuous time: the gap is evaluated on a 5 ms grid over the clip, and the first grid step
where it reaches zero is bisected to 1e-6 s (a root finder: the lane change makes the gap non-polynomial).
After contact the ego and the actor stay where they touched. Crash contacts fall between 60 % and 90 % of the
clip (3.0-4.5 s of a 5 s clip), so there is lead time; near misses come between ``NEAR_MISS_GAP`` metres of
contact at their closest.

Timing: when a near miss parts from its crash. A near miss is the crash's manoeuvre where someone acts in
time, and that action is what a model (or a physics oracle) can see, so its timing bounds any lead time at a
low near-miss false-alarm rate. It follows pre-crash data rather than a last-second coin flip: a lead car
starts braking ``ONSET_LEAD`` (2.6-3.4 s) before contact, both kinds following at the same headway, and a
near miss's ego brakes after an attentive driver's reaction time (``REACTION``, 0.4-0.8 s) just hard enough
to stop behind it, a crash's ego 1.4-2.2 s late and weakly or never; a
cut-in's 2.2-3 s lane change starts 1.7-2.5 s before the would-be contact, both kinds at the same gap and
speeds, and a near miss's ego brakes a reaction time after it starts while its cutter speeds up; a
pedestrian who stops does so 1.3-2.2 s before the ego arrives; an ego that brakes for a crossing actor starts
``EVASION_LEAD`` (1.8-2.8 s) ahead but never before a reaction time after the actor starts to move (for a
pedestrian stepping out from the kerb, that rule usually decides), at 2-9 m/s^2 (else the variant is drawn
again: a cyclist's near miss is then mostly one that passes ahead). (Version 1 of this generator parted them
0.3-1.6 s before contact: even the constant-acceleration oracle on ground-truth 3D could not warn earlier at
10 % false alarms; ``benchmarks/driving_accident.py`` prints that oracle beside the model.)

On disk (CCD's layout, the data contract of the accident-anticipation task): ``videos/Crash-1500/<vid>/`` and
``videos/Normal/<vid>/`` (each a KITTI-layout training folder: ``image_2/*.jpg`` q95, ``label_2``,
``semantic``, ``instance``, written by the still-image set's own frame writer), ``Crash-1500.txt`` (CCD
lines), ``annotations/<vid>.json`` (contact, involved tracks, per-frame TTC, ego motion, tracks),
``README.txt``, ``meta.json`` and the ``.complete`` marker, written last. A track id is the object's index in
the clip's layout; ``tracks`` lists every object labelled in some frame (and the involved one): its ``box`` per
frame (pixels; also when the label line is a ``DontCare``, null when no pixel is visible), ``location`` (KITTI
camera coordinates of the bottom centre whenever it is in front of the camera, null behind) and ``world``
(``x, z, heading`` on the ground). ``label_tracks`` gives the track of each label line (-1 for ``DontCare``);
``scenario_tracks`` (an extra key) the tracks the scenario inserted, its main actor first: the object a near miss
is about, or the lead car of ordinary driving.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from pytorch_lightning.utilities import rank_zero_info

from domains.driving.synthetic.layout import (
    _CAR_PAINTS,
    _dims,
    _extent,
    _pick,
    _sample_street,
    _Street,
    sample_layout,
)
from domains.driving.synthetic.render import render_frame
from domains.driving.synthetic.scene import Layout, ObjectSpec, _col
from domains.driving.synthetic.writers import (
    _ensure,
    _finish,
    _layout_seed,
    _make_dirs,
    _prepare_root,
    _write_kitti_frame,
)
from shared.files import listing_shortfall

DEFAULT_ACCIDENT_ROOT = "data/driving_accident"
CLIP_SIZE = (320, 96)  # (width, height)
KINDS = ("crash", "near_miss", "normal")
SCENARIOS = ("lead_braking", "cut_in", "pedestrian_stepping_out", "cyclist_crossing")
ORDINARY = "ordinary"
EGO_WIDTH = 1.8  # m
EGO_LENGTH = 4.5  # m
EGO_FRONT = 2.0  # m: front bumper ahead of the camera (the objects' bottom centres stay >= 2 m: drawn)
NEAR_MISS_GAP = (0.3, 2.5)  # m: closest footprint gap of a near miss
CONTACT_WINDOW = (0.6, 0.9)  # crash contact between these fractions of the clip's duration
SCENARIO_VERSION = 2  # timing of near misses against crashes (module docstring)
ONSET_LEAD = (2.6, 3.4)  # s: a lead car starts braking this long before the (would-be) contact
REACTION = (0.4, 0.8)  # s: an attentive driver's brake reaction time (near misses)
EVASION_LEAD = (1.8, 2.8)  # s: a near miss's ego starts braking for a crossing actor this long before it
CRASH_DIR, NORMAL_DIR = "Crash-1500", "Normal"
_CLIP_STREAM = 0x434C4950
_GRID_DT = 0.005  # s: contact search grid
_TIME_TOL = 1e-6  # s: bisection tolerance
_ATTEMPTS = 60
_CCD_WEATHER = {"clear": "Normal", "rain": "Rainy", "fog": "Foggy"}


# ------------------------------------------------------------------------------------------------ kinematics
@dataclass
class Profile:
    """Distance and speed along a path under piecewise-constant acceleration, in closed form.

    ``phases`` are ``(start time, acceleration)``, sorted; the acceleration is 0 before the first one.
    Braking ends at rest (never reversing); accelerating ends at ``v_max``.
    """

    v0: float
    phases: list[tuple[float, float]] = field(default_factory=list)
    v_max: float = math.inf

    def states(self, t) -> tuple[np.ndarray, np.ndarray]:
        t = np.asarray(t, np.float64)
        s, v = np.zeros_like(t), np.full_like(t, self.v0)
        starts = [0.0] + [p[0] for p in self.phases] + [math.inf]
        accs = [0.0] + [p[1] for p in self.phases]
        for k, a in enumerate(accs):
            dt = np.clip(t - starts[k], 0.0, starts[k + 1] - starts[k])
            if a < 0:
                limit = v / -a
            elif a > 0:
                limit = np.maximum(self.v_max - v, 0.0) / a
            else:
                limit = np.full_like(v, math.inf)
            d = np.minimum(dt, limit)
            after = v + a * d
            s = s + v * d + 0.5 * a * d * d + (dt - d) * after
            v = after
        return s, v


@dataclass
class Motion:
    """A ground-plane path: start ``(x0, z0)``, base heading, a speed :class:`Profile` along it and an optional
    lane change ``(start time, duration, lateral shift to the right in m)``; ``stop`` freezes it (contact)."""

    x0: float
    z0: float
    heading: float
    profile: Profile
    lateral: tuple[float, float, float] | None = None
    stop: float = math.inf

    def poses(self, t) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``x, z, heading, speed`` at times ``t`` (s)."""
        t = np.asarray(t, np.float64)
        tt = np.minimum(t, self.stop)
        s, v = self.profile.states(tt)
        lat, rate = np.zeros_like(tt), np.zeros_like(tt)
        if self.lateral is not None:
            t0, dur, shift = self.lateral
            u = np.clip((tt - t0) / dur, 0.0, 1.0)
            lat = shift * (1 - np.cos(np.pi * u)) / 2
            rate = np.where((u > 0) & (u < 1), shift * np.pi / (2 * dur) * np.sin(np.pi * u), 0.0)
        sh, ch = math.sin(self.heading), math.cos(self.heading)
        x = self.x0 + s * sh + lat * ch
        z = self.z0 + s * ch - lat * sh
        heading = self.heading + np.arctan2(rate, v)
        speed = np.where(t > self.stop, 0.0, np.hypot(v, rate))
        return x, z, heading, speed


def _rect_gap(a, b) -> np.ndarray:
    """Separating-axis gap of two ground rectangles ``(x, z, heading, half width, half length)`` (arrays
    broadcast): the largest gap over the four edge normals, > 0 apart, <= 0 touching or overlapping."""
    xa, za, ha, wa, la = a
    xb, zb, hb, wb, lb = b
    dx, dz = np.asarray(xb) - xa, np.asarray(zb) - za
    fa, ra = (np.sin(ha), np.cos(ha)), (np.cos(ha), -np.sin(ha))
    fb, rb = (np.sin(hb), np.cos(hb)), (np.cos(hb), -np.sin(hb))
    gap = None
    for ux, uz in (fa, ra, fb, rb):
        dist = np.abs(dx * ux + dz * uz)
        ea = la * np.abs(fa[0] * ux + fa[1] * uz) + wa * np.abs(ra[0] * ux + ra[1] * uz)
        eb = lb * np.abs(fb[0] * ux + fb[1] * uz) + wb * np.abs(rb[0] * ux + rb[1] * uz)
        g = dist - ea - eb
        gap = g if gap is None else np.maximum(gap, g)
    return gap


def _ego_rect(ego: Motion, t):
    x, z, h, _ = ego.poses(t)
    return x, z + EGO_FRONT - EGO_LENGTH / 2, h, EGO_WIDTH / 2, EGO_LENGTH / 2


def _actor_rect(actor: Actor, t):
    x, z, h, _ = actor.motion.poses(t)
    _h, w, le = actor.dims
    return x, z, h, w / 2, le / 2


def ego_gap(ego: Motion, actor: Actor, t) -> np.ndarray:
    """Footprint gap (m) between the ego car and an actor at times ``t``."""
    return _rect_gap(_ego_rect(ego, t), _actor_rect(actor, t))


def first_contact(ego: Motion, actors: list[Actor], t_end: float) -> tuple[float, int] | None:
    """Earliest contact time in ``[0, t_end]`` and the actor's index, or None: grid, then bisection."""
    ts = np.arange(0.0, t_end + _GRID_DT / 2, _GRID_DT)
    best = None
    for k, actor in enumerate(actors):
        hit = np.flatnonzero(ego_gap(ego, actor, ts) <= 0)
        if not hit.size:
            continue
        if hit[0] == 0:
            return 0.0, k
        lo, hi = ts[hit[0] - 1], ts[hit[0]]
        while hi - lo > _TIME_TOL:
            mid = (lo + hi) / 2
            if float(ego_gap(ego, actor, mid)) <= 0:
                hi = mid
            else:
                lo = mid
        if best is None or hi < best[0]:
            best = (float(hi), k)
    return best


# ------------------------------------------------------------------------------------------------ scenarios
@dataclass
class Actor:
    """A scenario object: what it is, how it moves, and whether it is the one the scenario is about."""

    kind: str
    dims: tuple[float, float, float]
    motion: Motion
    color: tuple[int, int, int] = (150, 150, 150)
    style: int = 0
    main: bool = False


@dataclass
class Plan:
    """One scenario before checking: the ego's motion, the actors, and the z spans where a side street crosses
    (buildings are cut there so a crossing cyclist does not ride out of a wall)."""

    scenario: str
    variant: str
    ego: Motion
    actors: list[Actor]
    cross_streets: list[tuple[float, float]] = field(default_factory=list)


def _vehicle(rng: np.random.Generator, kinds=("Car", "Van", "Truck"), p=(0.75, 0.15, 0.10)):
    kind = str(rng.choice(kinds, p=p))
    paint = _pick(rng, _CAR_PAINTS) if kind != "Truck" else _col(rng.uniform(60, 240, 3))
    return kind, _dims(rng, kind), paint, int(rng.integers(2**31))


def _walk_time(distance: float, accel: float, v_max: float) -> float:
    """Time to cover ``distance`` from rest, accelerating at ``accel`` up to ``v_max``."""
    d_acc = v_max**2 / (2 * accel)
    if distance <= d_acc:
        return math.sqrt(2 * distance / accel)
    return v_max / accel + (distance - d_acc) / v_max


def _stop_profile(distance: float, a_up: float, a_down: float, v_max: float, t_stop: float) -> Profile | None:
    """From rest: accelerate, cruise, brake, and stand still after exactly ``distance`` m at ``t_stop``."""
    v = min(v_max, math.sqrt(2 * distance * a_up * a_down / (a_up + a_down)))
    cruise = (distance - v * v / (2 * a_up) - v * v / (2 * a_down)) / v
    t_start = t_stop - (v / a_up + cruise + v / a_down)
    if t_start < 0.05:
        return None
    return Profile(0.0, [(t_start, a_up), (t_start + v / a_up + cruise, -a_down)], v_max=v)


def _closing_max(ego: Profile, other: Profile, t_end: float) -> float:
    ts = np.linspace(0.0, t_end, 400)
    return float(np.max(ego.states(ts)[0] - other.states(ts)[0]))


def _stopping_behind(v0: float, lead: Profile, t_r: float, closing: float, t_end: float) -> Profile | None:
    """The ego braking from ``t_r`` at the one deceleration (2-9.5 m/s^2, bisection: the closest approach
    shrinks as it grows) that closes ``closing`` m on ``lead`` at most; None when none in that range does."""
    lo, hi = 2.0, 9.5
    if (
        not _closing_max(Profile(v0, [(t_r, -hi)]), lead, t_end)
        <= closing
        <= _closing_max(Profile(v0, [(t_r, -lo)]), lead, t_end)
    ):
        return None
    for _ in range(40):
        mid = (lo + hi) / 2
        if _closing_max(Profile(v0, [(t_r, -mid)]), lead, t_end) > closing:
            lo = mid
        else:
            hi = mid
    return Profile(v0, [(t_r, -hi)])


def _lead_braking(rng, st: _Street, kind: str, tp: float, dur: float, k: float) -> Plan | None:
    """A lead car in the ego lane brakes hard 2.6-3.4 s before the (would-be) contact; the ego reacts late and
    weakly (crash) or after an attentive driver's reaction time (near miss)."""
    v0 = rng.uniform(10, 17)
    t_b = tp - rng.uniform(*ONSET_LEAD) * k
    if t_b < 0.1 * k:
        return None
    lead = Profile(v0 + rng.uniform(-1.5, 1.0), [(t_b, -rng.uniform(5, 8))])
    # Both kinds follow at the gap a late-reacting ego closes by tp, so the headway does not give the outcome
    # away; a near miss's ego brakes after a reaction time just hard enough to stop 0.5-1.8 m behind.
    late = [] if rng.random() < 0.35 else [(t_b + rng.uniform(1.4, 2.2) * k, -rng.uniform(2.0, 4.5))]
    ego = Profile(v0, [p for p in late if p[0] < tp])
    gap0, variant = float(ego.states(tp)[0] - lead.states(tp)[0]), "late_reaction"
    if kind != "crash":
        t_r = t_b + rng.uniform(*REACTION) * k
        ego, variant = (
            _stopping_behind(v0, lead, t_r, gap0 - rng.uniform(0.5, 1.8), dur + 10),
            "ego_brakes_in_time",
        )
        if ego is None:
            return None
    if not 3.0 * k <= gap0 <= 70.0:
        return None
    vk, dims, paint, style = _vehicle(rng)
    x = st.cam_x + rng.uniform(-0.25, 0.25)
    actor = Actor(vk, dims, Motion(x, EGO_FRONT + gap0 + dims[2] / 2, 0.0, lead), paint, style, True)
    return Plan("lead_braking", variant, Motion(st.cam_x, 0.0, 0.0, ego), [actor])


def _cut_in(rng, st: _Street, kind: str, tp: float, dur: float, k: float) -> Plan | None:
    """A slower car in the next lane changes into the ego lane; the gap closes (crash) or stays open: the cutter
    speeds up and the ego, after a reaction time from the start of the lane change, brakes just enough."""
    lanes = [lane for lane in (st.ego_lane - 1, st.ego_lane + 1) if 0 <= lane < st.n_right]
    if not lanes:
        return None
    lane = int(rng.choice(lanes))
    vk, dims, paint, style = _vehicle(rng, ("Car", "Van"), (0.85, 0.15))
    x_from = (lane + 0.5) * st.lane_w + rng.uniform(-0.2, 0.2)
    shift = st.cam_x + rng.uniform(-0.25, 0.25) - x_from
    span = rng.uniform(2.2, 3.0) * max(k, 0.3)
    # the cutter's side reaches the ego's side at fraction u* of the lane change (ignoring its turn)
    frac = np.clip((abs(shift) - (dims[1] + EGO_WIDTH) / 2) / abs(shift), 0.0, 1.0)
    u_star = math.acos(1 - 2 * frac) / math.pi
    t_lat = tp - rng.uniform(0.6, 1.0) * k
    t_s = t_lat - u_star * span
    if t_s < 0.05:
        return None
    v0 = rng.uniform(11, 17)
    v_c = v0 - rng.uniform(3, 6.5)
    # both kinds start at the gap the crash closes by tp, at the same speeds: the first frames do not give the
    # outcome away
    t_c = t_lat + rng.uniform(0, 0.3) * k
    cutter = Profile(v_c, [(t_c, -rng.uniform(0, 3))])
    ego = Profile(v0, [(tp - rng.uniform(0.2, 0.5) * k, -rng.uniform(2, 4))] if rng.random() < 0.4 else [])
    gap0, variant = float(ego.states(tp)[0] - cutter.states(tp)[0]), "gap_closes"
    if kind != "crash":
        cutter = Profile(v_c, [(t_c, rng.uniform(0.5, 2.0))], v_max=v0 + 2)
        t_r = t_s + rng.uniform(*REACTION) * k
        ego = _stopping_behind(v0, cutter, t_r, gap0 - rng.uniform(0.5, 1.8), dur + 10)
        variant = "gap_stays_open"
        if ego is None:
            return None
    if not 2.0 * k <= gap0 <= 70.0:
        return None
    motion = Motion(x_from, EGO_FRONT + gap0 + dims[2] / 2, 0.0, cutter, (t_s, span, shift))
    actor = Actor(vk, dims, motion, paint, style, True)
    return Plan("cut_in", variant, Motion(st.cam_x, 0.0, 0.0, ego), [actor])


def _crossing_x(st: _Street, side: int, half_len: float, overlap: float) -> float:
    """Centre x of a crossing actor whose footprint reaches ``overlap`` m into the ego's (negative: short)."""
    return st.cam_x + side * (EGO_WIDTH / 2 + half_len - overlap)


def _braking_ego(v0: float, tp: float, t_b: float, k: float, margin: float) -> Profile | None:
    """Constant speed, braking from ``t_b`` to stand ``margin`` m short of where the constant-speed ego is at
    ``tp`` (None when that needs a deceleration outside 2-9 m/s^2 or starts before the clip)."""
    room = v0 * (tp - t_b) - margin
    if t_b < 0.1 * k or room <= 0:
        return None
    decel = v0 * v0 / (2 * room)
    return Profile(v0, [(t_b, -decel)]) if 2.0 <= decel <= 9.0 else None


def _crossing_ego(rng, variant: str, v0: float, tp: float, k: float, seen: float = 0.0) -> Profile | None:
    """The ego of a crossing actor's clip: a ``hit`` sometimes brakes too late (the contact still happens at
    ``tp``), ``ego_brakes_in_time`` starts braking 1.8-2.8 s before ``tp`` but no sooner than a reaction time
    after ``seen`` (when the actor starts to move) and stops short (None: cannot), any other variant keeps
    its speed."""
    if variant == "hit" and rng.random() < 0.4:
        return Profile(v0, [(tp - rng.uniform(0.2, 0.5) * k, -rng.uniform(3, 6))])
    if variant == "ego_brakes_in_time":
        t_b = max(tp - rng.uniform(*EVASION_LEAD) * k, seen + rng.uniform(*REACTION) * k)
        return _braking_ego(v0, tp, t_b, k, rng.uniform(0.5, 1.8))
    return Profile(v0)


def _pedestrian(rng, st: _Street, kind: str, tp: float, dur: float, k: float) -> Plan | None:
    """A pedestrian steps out from between two parked cars: hit (crash), stops at the lane edge, or the ego
    brakes in time (near misses)."""
    sides = [s for s, on in ((1, st.park_right), (-1, st.park_left)) if on]
    if not sides:
        return None
    side = int(rng.choice(sides))
    x_park = st.road_right - 1.15 if side > 0 else st.road_left + 1.15
    dims = _dims(rng, "Pedestrian")
    half_w, half_l = dims[1] / 2, dims[2] / 2  # walking across: length along x, width along z
    x_start = x_park + side * rng.uniform(0.8, 2.0)  # from the kerb, hidden behind the parked cars
    v0 = rng.uniform(7, 12)
    v_p, a_p = rng.uniform(1.2, 2.0), rng.uniform(1.5, 3)  # walking pace
    variant = "hit" if kind == "crash" else str(rng.choice(["stops_at_lane_edge", "ego_brakes_in_time"]))
    ego = Profile(v0)
    # clips shorter than 5 s (tests) have no time to step out from rest: the pedestrian is already walking
    short = k < 1.0
    if variant == "stops_at_lane_edge":
        x_stop = _crossing_x(st, side, half_l, -rng.uniform(0.4, 1.2))
        a_down, t_stop = rng.uniform(2.5, 4), tp - rng.uniform(1.3, 2.2) * k
        walk = _stop_profile(abs(x_start - x_stop), a_p, a_down, v_p, t_stop)
        if walk is None and short:
            walk = Profile(v_p, [(max(t_stop - v_p / a_down, 0.0), -a_down)])
            x_start = x_stop + side * float(walk.states(t_stop + v_p / a_down)[0])
        elif walk is None:
            return None
    else:
        x_tp = _crossing_x(st, side, half_l, rng.uniform(0.4, 1.0))
        t_s = tp - _walk_time(abs(x_start - x_tp), a_p, v_p)
        if t_s >= 0.1 * k:
            walk = Profile(0.0, [(t_s, a_p)], v_max=v_p)
        elif short:
            walk, x_start = Profile(v_p), x_tp + side * v_p * tp
        else:
            return None
        ego = _crossing_ego(rng, variant, v0, tp, k, seen=t_s)
        if ego is None:
            return None
    z_p = EGO_FRONT + v0 * tp + half_w
    ped = Actor(
        "Pedestrian",
        dims,
        Motion(x_start, z_p, -side * math.pi / 2, walk),
        (0, 0, 0),
        int(rng.integers(2**31)),
        True,
    )
    actors = [ped]
    for end in (-1, 1):  # the parked cars the pedestrian steps out between
        vk, cdims, paint, style = _vehicle(rng, ("Car", "Van"), (0.85, 0.15))
        z = z_p + end * (cdims[2] / 2 + rng.uniform(0.5, 0.8))
        heading = (0.0 if rng.random() < 0.7 else math.pi) + rng.normal(0, 0.03)
        actors.append(
            Actor(vk, cdims, Motion(x_park + rng.uniform(-0.1, 0.1), z, heading, Profile(0.0)), paint, style)
        )
    return Plan("pedestrian_stepping_out", variant, Motion(st.cam_x, 0.0, 0.0, ego), actors)


def _cyclist(rng, st: _Street, kind: str, tp: float, dur: float, k: float) -> Plan | None:
    """A cyclist rides across the road from a side street: hit (crash), passes just ahead, or the ego brakes
    in time (near misses)."""
    side = 1 if rng.random() < 0.7 else -1
    dims = _dims(rng, "Cyclist")
    half_w, half_l = dims[1] / 2, dims[2] / 2
    v_c = rng.uniform(3.5, 6.0)
    v0 = rng.uniform(8, 13)
    variant = "hit" if kind == "crash" else str(rng.choice(["passes_ahead", "ego_brakes_in_time"]))
    ego = Profile(v0)
    if variant == "passes_ahead":
        x_tp = _crossing_x(st, -side, half_l, -rng.uniform(0.4, 1.5))  # already past the ego's far side
    else:
        x_tp = _crossing_x(st, side, half_l, rng.uniform(0.4, 1.0))
        ego = _crossing_ego(rng, variant, v0, tp, k)
        if ego is None:
            return None
    x_start = x_tp + side * v_c * tp
    z_c = EGO_FRONT + v0 * tp + half_w
    bike = Actor(
        "Cyclist",
        dims,
        Motion(x_start, z_c, -side * math.pi / 2, Profile(v_c)),
        _col(rng.uniform(20, 230, 3)),
        int(rng.integers(2**31)),
        True,
    )
    street = (z_c - half_w - rng.uniform(3, 5), z_c + half_w + rng.uniform(3, 5))
    return Plan("cyclist_crossing", variant, Motion(st.cam_x, 0.0, 0.0, ego), [bike], [street])


def _ordinary(rng, st: _Street, kind: str, tp: float, dur: float, k: float) -> Plan:
    """Ordinary driving: cruising, gentle braking or accelerating, sometimes behind a lead car at a safe gap."""
    v0 = rng.uniform(5, 15)
    variant = str(rng.choice(["cruise", "gentle_braking", "gentle_acceleration"]))
    t1 = rng.uniform(0.1, 0.6) * dur
    if variant == "gentle_braking":
        profile = Profile(v0, [(t1, -rng.uniform(0.8, 2.0)), (t1 + rng.uniform(0.8, 2.0) * k, 0.0)])
    elif variant == "gentle_acceleration":
        profile = Profile(v0, [(t1, rng.uniform(0.5, 1.5))], v_max=v0 + rng.uniform(2, 5))
    else:
        profile = Profile(v0)
    actors = []
    if rng.random() < 0.6:  # the lead car drives the profile, the ego follows it with a reaction delay
        delay = rng.uniform(0.6, 1.2) * k
        ego = Profile(v0, [(t + delay, a) for t, a in profile.phases], profile.v_max)
        gap0 = _closing_max(ego, profile, dur + 1) + rng.uniform(1.2, 2.5) * v0
        vk, dims, paint, style = _vehicle(rng)
        motion = Motion(st.cam_x + rng.uniform(-0.25, 0.25), EGO_FRONT + gap0 + dims[2] / 2, 0.0, profile)
        actors.append(Actor(vk, dims, motion, paint, style))
        variant += "_behind_lead"
    else:
        ego = profile
    return Plan(ORDINARY, variant, Motion(st.cam_x, 0.0, 0.0, ego), actors)


_BUILDERS = {
    "lead_braking": _lead_braking,
    "cut_in": _cut_in,
    "pedestrian_stepping_out": _pedestrian,
    "cyclist_crossing": _cyclist,
    ORDINARY: _ordinary,
}


# ------------------------------------------------------------------------------------------ clip assembly
@dataclass
class Clip:
    """A checked scenario in its street: the layout to render and everything the annotation needs."""

    kind: str
    plan: Plan
    layout: Layout
    contact_time: float | None
    involved: list[int]  # indices into layout.objects
    actors: list[int]  # the scenario's objects (indices into layout.objects), its main actor first
    min_gap: float | None
    removed: int


def _check(plan: Plan, kind: str, n_frames: int, fps: float) -> tuple[float | None, float | None] | None:
    """Contact time (crash) and closest gap, or None when the plan misses its kind's requirements."""
    dur = n_frames / fps
    t_last = (n_frames - 1) / fps
    if kind == "crash":
        hit = first_contact(plan.ego, plan.actors, t_last)
        if hit is None or not plan.actors[hit[1]].main:
            return None
        tc = hit[0]
        if not CONTACT_WINDOW[0] * dur <= tc <= CONTACT_WINDOW[1] * dur:
            return None
        return tc, 0.0
    if not plan.actors:
        return None, None
    ts = np.arange(0.0, t_last + 1.0, _GRID_DT)
    inside = ts <= t_last
    gaps = np.min([ego_gap(plan.ego, a, ts) for a in plan.actors], axis=0)
    gap = float(gaps[inside].min())  # the closest approach within the clip; none may touch a second later
    if kind == "near_miss" and not (NEAR_MISS_GAP[0] <= gap <= NEAR_MISS_GAP[1] and gaps.min() > 0):
        return None
    if kind == "normal" and gap < 3.0:
        return None
    return None, gap


def _freeze(plan: Plan, tc: float, main: int) -> None:
    plan.ego = dataclasses.replace(plan.ego, stop=tc)
    actor = plan.actors[main]
    actor.motion = dataclasses.replace(actor.motion, stop=tc)


def _background_keep(layout: Layout, plan: Plan, n_frames: int, fps: float) -> list[ObjectSpec]:
    """The still-image layout's objects minus any that would overlap a scenario actor (0.4 m margin) or enter
    the ego's danger zone (footprint + 0.5 m each side, 1 s of its speed ahead, 1 m behind), checked at four
    instants per frame."""
    frames = np.arange(0, 4 * (n_frames - 1) + 1) / 4.0
    ts = frames / fps
    objs = layout.objects
    x0 = np.array([o.x for o in objs])[:, None]
    z0 = np.array([o.z for o in objs])[:, None]
    h = np.array([o.heading for o in objs])[:, None]
    d = np.array([o.speed for o in objs])[:, None] * frames[None]
    x, z = x0 + d * np.sin(h), z0 + d * np.cos(h)
    ext = np.array([_extent(o, 0)[2:] for o in objs])
    ex, ez = ext[:, :1], ext[:, 1:]
    bad = np.zeros(len(objs), bool)
    for actor in plan.actors:
        ax, az, ah, _ = actor.motion.poses(ts)
        _h, w, le = actor.dims
        sin = np.abs(np.sin(ah))
        aex, aez = np.where(sin > 0.5, le / 2, w / 2), np.where(sin > 0.5, w / 2, le / 2)
        bad |= ((np.abs(x - ax) < ex + aex + 0.4) & (np.abs(z - az) < ez + aez + 0.4)).any(1)
    gx, gz, _gh, speed = plan.ego.poses(ts)
    front = gz + EGO_FRONT + np.maximum(speed * 1.0, 1.0)
    back = gz + EGO_FRONT - EGO_LENGTH - 1.0
    zc, zh = (front + back) / 2, (front - back) / 2
    bad |= ((np.abs(x - gx) < ex + EGO_WIDTH / 2 + 0.5) & (np.abs(z - zc) < ez + zh)).any(1)
    return [o for o, b in zip(objs, bad) if not b]


def _cut_buildings(layout: Layout, spans: list[tuple[float, float]]) -> None:
    """Open a side street across both sides of the road over each z span (a crossing cyclist comes from it)."""
    for za, zb in spans:
        out = []
        for b in layout.buildings:
            if b.z1 <= za or b.z0 >= zb:
                out.append(b)
                continue
            if za - b.z0 > 2.0:
                out.append(dataclasses.replace(b, z1=za))
            if b.z1 - zb > 2.0:
                out.append(dataclasses.replace(b, z0=zb))
        layout.buildings = out


def _actor_spec(actor: Actor, trajectory: np.ndarray) -> ObjectSpec:
    x, z, heading = (float(v) for v in trajectory[0])
    return ObjectSpec(
        actor.kind, x, z, heading, actor.dims, 0.0, actor.color, actor.style, trajectory=trajectory
    )


def make_clip(
    seed: int, index: int, kind: str, scenario: str, size, n_frames: int, fps: float, density: float
) -> Clip:
    """Draw, check and assemble clip ``index``: new layouts and scenario parameters until one passes."""
    dur = n_frames / fps
    k = min(1.0, dur / 5.0)  # manoeuvre times shrink for clips shorter than 5 s
    w, h = size
    for attempt in range(_ATTEMPTS):
        layout_seed = _layout_seed(seed, _CLIP_STREAM, index * 1000 + attempt)
        rng = np.random.default_rng([seed, _CLIP_STREAM, index, attempt])
        st = _sample_street(np.random.default_rng(layout_seed), w, h, n_frames)  # sample_layout's first stage
        lo, hi = CONTACT_WINDOW
        tp = rng.uniform(lo + 0.1 * (hi - lo), hi - 0.1 * (hi - lo)) * dur
        plan = _BUILDERS[scenario](rng, st, kind, tp, dur, k)
        if plan is None:
            continue
        checked = _check(plan, kind, n_frames, fps)
        if checked is None:
            continue
        tc, gap = checked
        main = next((i for i, a in enumerate(plan.actors) if a.main), None)
        if tc is not None:
            _freeze(plan, tc, main)
        layout = sample_layout(layout_seed, size, n_frames=n_frames, density=density)
        if fps != 10.0:  # the still-image generator's speeds are metres per frame at 10 fps
            layout.objects = [dataclasses.replace(o, speed=o.speed * 10.0 / fps) for o in layout.objects]
        kept = _background_keep(layout, plan, n_frames, fps)
        removed = len(layout.objects) - len(kept)
        _cut_buildings(layout, plan.cross_streets)
        ts = np.arange(n_frames) / fps
        specs = []
        for actor in plan.actors:
            x, z, hd, _ = actor.motion.poses(ts)
            specs.append(_actor_spec(actor, np.stack([x, z, hd], 1)))
        layout.objects = kept + specs
        layout.ego_z = plan.ego.poses(ts)[1]
        layout.ego_speed = float(plan.ego.profile.v0 / fps)
        involved = [len(kept) + main] if tc is not None else []
        order = sorted(range(len(specs)), key=lambda j: not plan.actors[j].main)
        return Clip(kind, plan, layout, tc, involved, [len(kept) + j for j in order], gap, removed)
    raise RuntimeError(
        f"make_clip: no valid {kind} {scenario} clip for index {index} after {_ATTEMPTS} tries "
        f"({n_frames} frames at {fps} fps: clip too short?)"
    )


# ------------------------------------------------------------------------------------------------- writing
def _clip_settings(
    n_clips=200, size=CLIP_SIZE, fps=10.0, seconds=5.0, seed=0, shares=(0.4, 0.3, 0.3), density=1.0, workers=1
) -> dict:
    del workers  # how the set is made, not what it holds
    return {
        "kind": "accident_clips",
        "scenario_version": SCENARIO_VERSION,  # a set written by another version is regenerated
        "n_clips": int(n_clips),
        "size": [int(size[0]), int(size[1])],
        "fps": float(fps),
        "seconds": float(seconds),
        "seed": int(seed),
        "shares": [float(s) for s in shares],
        "density": float(density),
    }


def _counts(n: int, shares) -> list[int]:
    """Largest-remainder rounding of ``n * shares / sum(shares)`` (ties to the earlier kind)."""
    p = np.asarray(shares, np.float64) / np.sum(shares)
    raw = n * p
    out = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - out), kind="stable")[: n - out.sum()]:
        out[i] += 1
    return out.tolist()


def clip_plan(n_clips: int, seed: int, shares) -> list[tuple[str, str]]:
    """(kind, scenario) per clip: exact counts per kind, the four scenarios evenly within crash and near-miss
    clips, in a seeded order."""
    rng = np.random.default_rng([seed, _CLIP_STREAM])
    items = []
    for kind, count in zip(KINDS, _counts(n_clips, shares)):
        if kind == "normal":
            items += [(kind, ORDINARY)] * count
        else:
            scen = [SCENARIOS[j % len(SCENARIOS)] for j in range(count)]
            items += [(kind, scen[j]) for j in rng.permutation(count)]
    return [items[j] for j in rng.permutation(len(items))]


def _r(v, nd=3):
    return None if v is None else round(float(v), nd)


def _annotation(clip: Clip, vid: str, frames_objects, cams, fps: float, n_frames: int) -> dict:
    layout = clip.layout
    ts = np.arange(n_frames) / fps
    tc = None if clip.contact_time is None else round(clip.contact_time, 6)  # as written to the JSON
    contact_frame = None if tc is None else next(i for i in range(n_frames) if i / fps >= tc)
    _x, ego_z, _h, ego_speed = clip.plan.ego.poses(ts)
    label_tracks, seen = [], set(clip.involved) | set(clip.actors)
    boxes: dict[int, list] = {}
    for i, objects in enumerate(frames_objects):
        row = []
        for o in objects:
            if o.is_anomaly or o.hidden:
                continue
            row.append(-1 if o.dontcare else o.source)
            seen.add(o.source)
            boxes.setdefault(o.source, [None] * n_frames)[i] = [round(v, 2) for v in o.box]
        label_tracks.append(row)
    tracks = {}
    for idx in sorted(seen):
        spec = layout.objects[idx]
        loc, world = [], []
        for i, cam in enumerate(cams):
            x, z = spec.position(i)
            c = cam.to_cam(np.array([x, 0.0, z]))
            loc.append([_r(c[0]), _r(c[1]), _r(c[2])] if c[2] > 0 else None)
            world.append([_r(x, 4), _r(z, 4), _r(spec.heading_at(i), 4)])
        tracks[str(idx)] = {
            "type": spec.kind,
            "dims": [float(d) for d in spec.dims],
            "box": boxes.get(idx, [None] * n_frames),
            "location": loc,
            "world": world,
        }
    return {
        "vid": vid,
        "fps": float(fps),
        "n_frames": n_frames,
        "size": list(layout.size),
        "kind": clip.kind,
        "scenario": clip.plan.scenario,
        "variant": clip.plan.variant,
        "contact_time": tc,
        "contact_frame": contact_frame,
        "involved": clip.involved,
        "scenario_tracks": clip.actors,
        "ttc": [_r(tc - t, 4) if tc is not None and i < contact_frame else None for i, t in enumerate(ts)],
        "ego": {
            "speed": [_r(v) for v in ego_speed],
            "z": [_r(v, 4) for v in ego_z],
            "x": _r(layout.cam_x, 4),
            "footprint": {"width": EGO_WIDTH, "length": EGO_LENGTH, "front": EGO_FRONT},
        },
        "min_gap": _r(clip.min_gap),
        "tracks": tracks,
        "label_tracks": label_tracks,
        "seed": int(layout.seed),
        "lighting": layout.lighting,
        "weather": layout.weather,
        "camera": {
            "focal": _r(layout.focal),
            "cx": _r(layout.cx),
            "cy": _r(layout.cy),
            "yaw": _r(layout.yaw, 5),
        },
    }


def ccd_line(vid: str, labels: list[int], lighting: str, weather: str) -> str:
    """One ``Crash-1500.txt`` line: ``vid,[l0, ..., lT-1],start_frame,source,timing,weather,ego_involved``."""
    timing = "Night" if lighting == "night" else "Day"
    return f"{vid},[{', '.join(str(v) for v in labels)}],0,synthetic,{timing},{_CCD_WEATHER[weather]},Yes"


def _write_clip(job) -> tuple[dict, str | None]:
    """Render and write one clip (frames, annotation JSON); its summary and CCD line (crashes only)."""
    root, seed, i, kind, scenario, size, n_frames, fps, density = job
    vid = f"{i:06d}"
    clip = make_clip(seed, i, kind, scenario, size, n_frames, fps, density)
    folder = root / "videos" / (CRASH_DIR if kind == "crash" else NORMAL_DIR) / vid
    dirs = _make_dirs(folder, ("image_2", "label_2", "semantic", "instance"))
    frames_objects, cams = [], []
    for t in range(n_frames):
        frame = render_frame(clip.layout, t)
        _write_kitti_frame(dirs, f"{t:06d}", frame, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 95))
        frames_objects.append(frame.objects)
        cams.append(clip.layout.camera(t))
    ann = _annotation(clip, vid, frames_objects, cams, fps, n_frames)
    (root / "annotations" / f"{vid}.json").write_text(json.dumps(ann) + "\n", encoding="utf-8")
    line = None
    if kind == "crash":
        labels = [int(t >= ann["contact_frame"]) for t in range(n_frames)]
        line = ccd_line(vid, labels, clip.layout.lighting, clip.layout.weather)
    summary = {
        "vid": vid,
        "kind": kind,
        "scenario": scenario,
        "variant": clip.plan.variant,
        "contact_time": ann["contact_time"],
        "min_gap": ann["min_gap"],
        "lighting": clip.layout.lighting,
        "weather": clip.layout.weather,
        "background_removed": clip.removed,
    }
    return summary, line


def generate_clips(
    root: str | Path,
    n_clips: int = 200,
    size: tuple[int, int] = CLIP_SIZE,
    fps: float = 10.0,
    seconds: float = 5.0,
    seed: int = 0,
    shares: tuple[float, float, float] = (0.4, 0.3, 0.3),
    density: float = 1.0,
    verbose: bool = True,
    workers: int = 1,
) -> Path:
    """Write ``n_clips`` scenario clips in the CCD-compatible layout (module docstring); returns ``root``.

    ``shares`` are the crash / near-miss / normal proportions; ``seconds * fps`` frames per clip. ``workers``
    processes render clips in parallel (the output does not depend on it, so it is not a setting).
    """
    n_frames = int(np.rint(seconds * fps))
    if n_clips < 1 or fps <= 0 or n_frames < 8:
        raise ValueError(
            f"generate_clips: need n_clips >= 1, fps > 0 and at least 8 frames (seconds * fps), got "
            f"n_clips={n_clips}, fps={fps}, seconds={seconds}"
        )
    if len(shares) != 3 or min(shares) < 0 or sum(shares) <= 0:
        raise ValueError(
            f"generate_clips: shares must be 3 non-negative numbers (crash, near_miss, normal), got {shares}"
        )
    root = Path(root)
    settings = _clip_settings(n_clips, size, fps, seconds, seed, shares, density)
    _prepare_root(root, ("videos", "annotations", "Crash-1500.txt"), settings)
    (root / "annotations").mkdir()
    if verbose:  # said before minutes of silence (about 50 ms per frame and core, rendering)
        seconds_needed = n_clips * n_frames * 0.05 / max(1, workers)
        took = f"{seconds_needed / 60:.0f} min" if seconds_needed >= 90 else f"{seconds_needed:.0f} s"
        rank_zero_info(
            f"synthetic accident clips: rendering {n_clips} clips ({n_clips * n_frames:,} frames) at {root}, once: "
            f"about {took} on {max(1, workers)} core(s)"
        )
    start = time.perf_counter()
    jobs = [
        (root, seed, i, kind, scenario, tuple(size), n_frames, fps, density)
        for i, (kind, scenario) in enumerate(clip_plan(n_clips, seed, shares))
    ]
    every = max(1, n_clips // 10)  # a line per tenth: minutes of silence read as a hang

    def counted(results):
        for done, result in enumerate(results, start=1):
            if verbose and (done % every == 0 and done < n_clips):
                rank_zero_info(f"synthetic accident clips: {done} of {n_clips} ({time.perf_counter() - start:.0f} s)")
            yield result

    if workers > 1:  # clips are independent (seeded by index) and write disjoint folders: same bytes
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            written = list(counted(pool.map(_write_clip, jobs, chunksize=1)))
    else:
        written = list(counted(_write_clip(job) for job in jobs))
    ccd = [line for _, line in written if line is not None]
    per_clip = [summary for summary, _ in written]
    counts: dict[str, dict[str, int]] = {k: {} for k in KINDS}
    for c in per_clip:
        counts[c["kind"]][c["scenario"]] = counts[c["kind"]].get(c["scenario"], 0) + 1
    (root / "Crash-1500.txt").write_text("".join(line + "\n" for line in ccd), encoding="utf-8")
    elapsed = time.perf_counter() - start
    _write_readme(root, settings, counts, n_frames)
    meta = {
        "generator": "domains.driving.synthetic.generate_clips",
        "settings": settings,
        "seconds": round(elapsed, 1),
        "counts": counts,
        "ego_footprint": {"width": EGO_WIDTH, "length": EGO_LENGTH, "front_ahead_of_camera": EGO_FRONT},
        "clips": per_clip,
    }
    _finish(root, meta, settings)
    if verbose:
        rank_zero_info(f"synthetic accident clips: {n_clips} clips at {root} ({elapsed:.1f} s); {counts}")
    return root


def _write_readme(root: Path, settings: dict, counts: dict, n_frames: int) -> None:
    lines = [
        "Synthetic accident-anticipation clips (domains.driving.synthetic.clips, issue #18)",
        "",
        f"settings: {json.dumps(settings, sort_keys=True)}",
        f"frames per clip: {n_frames} at {settings['fps']} fps; seed {settings['seed']}",
        "",
        "counts per kind and scenario:",
    ]
    for kind in KINDS:
        total = sum(counts[kind].values())
        detail = ", ".join(f"{s} {n}" for s, n in sorted(counts[kind].items()))
        lines.append(f"  {kind}: {total}" + (f" ({detail})" if detail else ""))
    lines += [
        "",
        "videos/Crash-1500/<vid>/ crash clips, videos/Normal/<vid>/ near misses and ordinary driving; each clip",
        "folder is a KITTI training folder (image_2 JPEG q95, label_2, semantic, instance: value k = label line k).",
        "Crash-1500.txt: vid,[per-frame labels: 1 from the contact frame on],0,synthetic,Day|Night,weather,Yes",
        "annotations/<vid>.json: kind, scenario, contact_time (s, continuous), contact_frame, involved track ids,",
        "per-frame ttc, ego speed (m/s) and travel z (m), tracks (type, dims, per-frame box, camera location,",
        "world pose), label_tracks (track id of each label line, -1 DontCare). Track id = object index in the",
        "clip's layout; a track's box is null where none of it is visible (given for DontCare-sized objects too),",
        "its camera location null where it is behind the camera.",
        f"Ego footprint: {EGO_WIDTH} m wide, {EGO_LENGTH} m long, front bumper {EGO_FRONT} m ahead",
        "of the camera; contact = first time an actor's footprint touches it (separating-axis gap, 5 ms grid",
        "then bisection to 1e-6 s). After contact both stay where they touched.",
    ]
    (root / "README.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def clips_root(**settings) -> Path:
    """The folder of the synthetic clips made with ``settings``: ``DEFAULT_ACCIDENT_ROOT`` for the defaults, a
    sibling named after the settings that differ (``data/driving_accident_n_clips-400``) for any other, so a
    benchmark's 400-clip set does not replace the default 200 (which took minutes to render)."""
    defaults = {k: v.default for k, v in inspect.signature(generate_clips).parameters.items()}
    changed = {
        k: v for k, v in sorted(settings.items())
        if k not in ("workers", "verbose") and _setting(v) != _setting(defaults.get(k))
    }  # fmt: skip
    if not changed:
        return Path(DEFAULT_ACCIDENT_ROOT)
    parts = [f"{k}-{'-'.join(str(x) for x in np.ravel(v))}" for k, v in changed.items()]
    return Path(f"{DEFAULT_ACCIDENT_ROOT}_{'_'.join(parts)}")


def _setting(value):
    """A setting compared as numbers where it is numbers (a JSON list against the default tuple)."""
    return tuple(np.ravel(value).tolist()) if isinstance(value, (list, tuple)) else value


def ensure_synthetic_clips(root: str | Path = DEFAULT_ACCIDENT_ROOT, force: bool = False, **kw) -> Path:
    """Generate the scenario clips on first use only (same settings as the marker, files all there: reuse;
    ``force``: generate them again, under the same lock); returns root."""
    allowed = {"n_clips", "size", "fps", "seconds", "seed", "shares", "density", "workers"}
    return _ensure("ensure_synthetic_clips", root, kw, allowed, _clip_settings, generate_clips, force)


def clip_shortfalls(root: Path, settings: dict) -> list[str]:
    """What the clip set at ``root`` lacks against its marker's ``settings``: the annotations, the clip
    folders of each kind and each clip's frames (``image_2``, what the readers take), one listing each (200
    clips: about 30 ms). The check of a reused set (:func:`.writers._torn`); [] for settings it cannot
    read."""
    try:
        n_clips, shares = int(settings["n_clips"]), settings["shares"]
        n_frames = int(np.rint(float(settings["seconds"]) * float(settings["fps"])))
        crash, near_miss, normal = _counts(n_clips, shares)
    except (KeyError, TypeError, ValueError):
        return []
    problems = [listing_shortfall(root, "annotations", ".json", n_clips)]
    for kind_dir, count in ((CRASH_DIR, crash), (NORMAL_DIR, near_miss + normal)):
        folder = f"videos/{kind_dir}"
        problems.append(listing_shortfall(root, folder, None, count))
        clips = sorted(p.name for p in (root / folder).glob("[!.]*/")) if (root / folder).is_dir() else []
        problems += [listing_shortfall(root, f"{folder}/{vid}/image_2", ".jpg", n_frames) for vid in clips]
    return [problem for problem in problems if problem]
