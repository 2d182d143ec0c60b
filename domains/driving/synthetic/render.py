"""Rendering a layout's frame: sky, ground, buildings, the items back to front, lighting and weather.

:func:`render_frame` draws frame ``t`` of a :class:`~.scene.Layout` and returns a :class:`~.labels.Frame`
with exact labels. Drawing is back to front (painter's order by camera depth); each item is rasterised on its
own canvas (:mod:`~.raster`) so its full silhouette gives the 2D box and truncation, and its pixels left in
the final instance map give the occlusion. Lighting (day / dusk / night, with lamps, head- and tail-lights and
lit windows) multiplies the albedo by an illumination map and adds a glow around emitters; weather then comes
through albumentations (RandomRain, RandomFog, Blur/MotionBlur, GaussNoise), image only. Every random draw is
seeded by ``(layout.seed, t)``, so a frame is reproducible byte for byte.
"""

from __future__ import annotations

import math

import albumentations as A
import cv2
import numpy as np

from domains.driving.classes import ANOMALY_KINDS, SEMANTIC_ID, STUFF_KINDS, VOID, semantic_palette
from domains.driving.synthetic.anomalies import _anomaly_prims
from domains.driving.synthetic.camera import _SHIFT, Z_NEAR, Camera, _clip_near, _fx, _wrap
from domains.driving.synthetic.labels import Frame, LabeledObject
from domains.driving.synthetic.layout import sample_layout
from domains.driving.synthetic.primitives import (
    _Ctx,
    _cyclist_prims,
    _Local,
    _person_prims,
    _stuff_prims,
    _vehicle_prims,
)
from domains.driving.synthetic.raster import _rasterize
from domains.driving.synthetic.scene import DEFAULT_SIZE, TRAINING_KINDS, VEHICLES, Layout, ObjectSpec, _col

MIN_RENDER_DEPTH = 2.0  # m: objects whose bottom centre is nearer are behind/beside the camera, not drawn
_STUFF_SEMANTIC = {
    "tree": SEMANTIC_ID["vegetation"],
    "streetlight": SEMANTIC_ID["pole"],
    "sign": SEMANTIC_ID["pole"],
}
_OBJECT_SEMANTIC = {
    "Car": SEMANTIC_ID["car"],
    "Van": SEMANTIC_ID["truck"],
    "Truck": SEMANTIC_ID["truck"],
    "Pedestrian": SEMANTIC_ID["person"],
    "Cyclist": SEMANTIC_ID["cyclist"],
}


def _casts_shadow(spec: ObjectSpec) -> bool:
    """Items with a box-like footprint get a dark contact shadow (standing billboard shapes do not)."""
    if spec.kind == "odd_shape":
        return (spec.style >> 2) % 3 == 0  # the lying slab variant
    if spec.kind == "tyre":
        return spec.style % 2 == 0  # lying
    return spec.kind in VEHICLES or spec.kind in ("cardboard_box", "rock")


def _reach(spec: ObjectSpec) -> float:
    """Radius (m) around the bottom centre that contains everything drawn for an item."""
    h, w, le = spec.dims
    if spec.kind == "tree":
        return h + w
    if spec.kind == "streetlight":
        return h + 2.3
    if spec.kind == "sign":
        return h + 0.8
    return max(h, le / 2 + w / 2) + 0.3


def _off_screen(fr: _Local, spec: ObjectSpec, cam: Camera) -> bool:
    """Conservative test: the item's reach box projects entirely outside the image."""
    e = _reach(spec)
    x, y, z = fr.o
    if z - e <= Z_NEAR:
        return False
    zs = (z - e, z + e)
    us = [cam.f * xx / zz + cam.cx for xx in (x - e, x + e) for zz in zs]
    vs = [cam.f * yy / zz + cam.cy for yy in (y - e, y + e) for zz in zs]
    return max(us) < 0 or min(us) > cam.width or max(vs) < 0 or min(vs) > cam.height


def _item_prims(fr: _Local, spec: ObjectSpec, ctx: _Ctx, t: float) -> list:
    out: list = []
    if spec.kind in VEHICLES:
        return _vehicle_prims(fr, spec, ctx)
    if spec.kind == "Pedestrian":
        _person_prims(fr, spec, t, out)
    elif spec.kind == "Cyclist":
        _cyclist_prims(fr, spec, t, out)
    elif spec.kind in STUFF_KINDS:
        _stuff_prims(fr, spec, ctx, out)
    elif spec.kind in ANOMALY_KINDS:
        _anomaly_prims(fr, spec, ctx, out)
    else:
        raise ValueError(
            f"unknown object kind {spec.kind!r}; expected one of {TRAINING_KINDS + ANOMALY_KINDS}"
        )
    return out


_LIGHT = {
    "day": {"ambient": (1.0, 1.0, 1.0), "sky_top": (70, 125, 200), "sky_hor": (185, 210, 235), "glow": 0.0},
    "dusk": {"ambient": (0.72, 0.58, 0.5), "sky_top": (55, 55, 115), "sky_hor": (245, 150, 85), "glow": 0.7},
    "night": {"ambient": (0.16, 0.18, 0.26), "sky_top": (4, 6, 16), "sky_hor": (28, 30, 48), "glow": 1.4},
}


def _sky(layout: Layout, cam: Camera) -> np.ndarray:
    w, h = layout.size
    p = _LIGHT[layout.lighting]
    top, hor = np.array(p["sky_top"], np.float32), np.array(p["sky_hor"], np.float32)
    if layout.weather != "clear" or layout.palette["cloud"] > 0.8:  # overcast: grey sky
        grey = np.array([150, 155, 162], np.float32) * (0.25 if layout.lighting == "night" else 1.0)
        top, hor = 0.3 * top + 0.7 * grey, 0.5 * hor + 0.5 * grey
    tt = np.clip(np.arange(h, dtype=np.float32) / max(cam.cy, 1.0), 0, 1)[:, None, None] ** 0.7
    sky = top * (1 - tt) + hor * tt
    sky = np.broadcast_to(sky, (h, w, 3)).copy()
    cloud = layout.palette["cloud"]
    if cloud > 0.3 and layout.lighting != "night":
        small = np.random.default_rng(layout.seed).random((4, 12)).astype(np.float32)
        blob = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        c = np.clip((blob - (1.1 - cloud)) * 3, 0, 1)[..., None] * (1 - tt)
        sky = sky * (1 - 0.6 * c) + 0.6 * c * np.array([235, 235, 240], np.float32)
    return sky


def _world_poly(img, sem, cam: Camera, poly_w, color, cls, emis=None) -> None:
    pc = _clip_near(cam.to_cam(np.asarray(poly_w, np.float64)))
    if pc is None:
        return
    pts = [_fx(cam.project(pc))]
    cv2.fillPoly(img, pts, color, cv2.LINE_8, _SHIFT)
    cv2.fillPoly(sem, pts, int(cls), cv2.LINE_8, _SHIFT)
    if emis is not None:  # a solid face hides the lights behind it
        cv2.fillPoly(emis, pts, (0, 0, 0), cv2.LINE_8, _SHIFT)


def _strip(x0, x1, z0, z1) -> np.ndarray:
    """A ground quad (y = 0) from x0 to x1 and z0 to z1."""
    return np.array([[x0, 0.0, z0], [x1, 0.0, z0], [x1, 0.0, z1], [x0, 0.0, z1]], np.float64)


def _draw_ground(img, sem, layout: Layout, cam: Camera) -> None:
    pal = layout.palette
    near, far = cam.z - 5.0, cam.z + 600.0
    ids = SEMANTIC_ID
    _world_poly(img, sem, cam, _strip(-800, 800, near, far), pal["grass"], ids["vegetation"])
    rl, rr, kerb = layout.road_left, layout.road_right, layout.kerb_width
    _world_poly(
        img,
        sem,
        cam,
        _strip(rl - kerb - layout.sidewalk_left, rl - kerb, near, far),
        pal["sidewalk"],
        ids["sidewalk"],
    )
    _world_poly(
        img,
        sem,
        cam,
        _strip(rr + kerb, rr + kerb + layout.sidewalk_right, near, far),
        pal["sidewalk"],
        ids["sidewalk"],
    )
    _world_poly(img, sem, cam, _strip(rl - kerb, rl, near, far), pal["kerb"], ids["kerb"])
    _world_poly(img, sem, cam, _strip(rr, rr + kerb, near, far), pal["kerb"], ids["kerb"])
    _world_poly(img, sem, cam, _strip(rl, rr, near, far), pal["road"], ids["road"])
    for x, z, w, le in layout.patches:
        _world_poly(img, sem, cam, _strip(x, x + w, z, z + le), pal["patch"], ids["road"])
    # lane markings: dashed lines are fixed in the world, so they move past the camera between frames
    quads = []
    for x, style in layout.lane_lines:
        hw = 0.07
        if style in ("solid", "double"):
            offs = (-0.12, 0.12) if style == "double" else (0.0,)
            for o in offs:
                quads.append(_strip(x + o - hw, x + o + hw, near, cam.z + 250))
        else:
            period, dash = 9.0, 3.0
            k0 = math.floor((near - layout.dash_phase) / period)
            for k in range(k0, k0 + int(140 / period) + 2):
                z0 = layout.dash_phase + k * period
                quads.append(_strip(x - hw, x + hw, z0, z0 + dash))
    if layout.crosswalk_z is not None:
        zc = layout.crosswalk_z
        for x in np.arange(rl + 0.3, rr - 0.3, 1.0):
            quads.append(_strip(x, x + 0.5, zc - 1.5, zc + 1.5))
    for q in quads:
        _world_poly(img, sem, cam, q, pal["marking"], ids["lane_marking"])


def _draw_background(img, sem, emis, layout: Layout, cam: Camera) -> None:
    """Backdrop tree lines and buildings: beyond the sidewalks, so nothing on the street can be behind them."""
    veg, bld = SEMANTIC_ID["vegetation"], SEMANTIC_ID["building"]
    for xb, zs, hs in layout.backdrop:
        keep = zs > cam.z - 10
        z, hgt = zs[keep], hs[keep]
        poly = np.concatenate(
            [
                np.stack([np.full_like(z, xb), -hgt, z], -1),
                np.stack([np.full_like(z, xb), np.zeros_like(z), z], -1)[::-1],
            ]
        )
        _world_poly(img, sem, cam, poly, _col(layout.palette["backdrop"]), veg)
    sun_c = cam.dir_to_cam(np.array(layout.sun))
    night = layout.lighting == "night"
    for side in (-1, 1):
        blocks = [b for b in layout.buildings if b.side == side and b.z1 > cam.z - 2]
        blocks.sort(key=lambda b: -b.z0)  # far first
        for b in blocks:
            cls = bld if b.kind == "building" else veg
            x_out = b.x_face + side * b.depth
            corners = {
                "street": np.array(
                    [
                        [b.x_face, 0, b.z0],
                        [b.x_face, 0, b.z1],
                        [b.x_face, -b.height, b.z1],
                        [b.x_face, -b.height, b.z0],
                    ]
                ),
                "near": np.array(
                    [
                        [b.x_face, 0, b.z0],
                        [x_out, 0, b.z0],
                        [x_out, -b.height, b.z0],
                        [b.x_face, -b.height, b.z0],
                    ]
                ),
                "top": np.array(
                    [
                        [b.x_face, -b.height, b.z0],
                        [x_out, -b.height, b.z0],
                        [x_out, -b.height, b.z1],
                        [b.x_face, -b.height, b.z1],
                    ]
                ),
            }
            normals = {
                "street": np.array([-side, 0, 0.0]),
                "near": np.array([0, 0, -1.0]),
                "top": np.array([0, -1.0, 0]),
            }
            for face in ("near", "top", "street"):
                cc = cam.to_cam(corners[face].mean(0))
                if np.dot(cam.dir_to_cam(normals[face]), cc) >= 0:
                    continue
                shade = 0.6 + 0.45 * max(0.0, float(np.dot(cam.dir_to_cam(normals[face]), sun_c)))
                _world_poly(img, sem, cam, corners[face], _col(b.color, shade), cls, emis)
            if b.kind != "building":
                continue
            # windows on the street face, vectorised: (floors x bays) quads slightly in front of the wall
            floors = np.arange(1.0, b.height - 1.2, b.floor)
            bays = np.arange(b.z0 + 0.8, b.z1 - 1.4, b.bay)
            if floors.size == 0 or bays.size == 0:
                continue
            fy, bz = np.meshgrid(floors, bays, indexing="ij")
            fy, bz = fy.ravel(), bz.ravel()
            wh, ww = 0.5 * b.floor, 0.45 * b.bay
            xw = b.x_face - side * 0.02
            q = np.stack(
                [
                    np.stack([np.full_like(bz, xw), -fy, bz], -1),
                    np.stack([np.full_like(bz, xw), -fy, bz + ww], -1),
                    np.stack([np.full_like(bz, xw), -fy - wh, bz + ww], -1),
                    np.stack([np.full_like(bz, xw), -fy - wh, bz], -1),
                ],
                1,
            )
            qc = cam.to_cam(q)
            ok = (qc[..., 2] > Z_NEAR).all(1)
            if not ok.any():
                continue
            uv = cam.project(qc[ok])
            wrng = np.random.default_rng(b.style)
            lit = wrng.random(len(fy))[ok] < (0.35 if night else 0.12 if layout.lighting == "dusk" else 0.0)
            tone = wrng.integers(0, 3, len(fy))[ok]
            pts = _fx(uv)
            for k, factor in enumerate((0.75, 1.0, 1.3)):
                sel = pts[(tone == k) & ~lit]
                if len(sel):
                    cv2.fillPoly(img, list(sel), _col(b.window, factor), cv2.LINE_8, _SHIFT)
            if lit.any():
                cv2.fillPoly(img, list(pts[lit]), (235, 200, 120), cv2.LINE_8, _SHIFT)
                cv2.fillPoly(emis, list(pts[lit]), (200, 160, 90), cv2.LINE_8, _SHIFT)


def _light_map(layout: Layout, cam: Camera, lamps: list[tuple[float, float, float]]) -> np.ndarray:
    """Per-pixel RGB illumination: ambient, plus street-lamp pools and the ego headlights at dusk/night."""
    w, h = layout.size
    p = _LIGHT[layout.lighting]
    amb = np.array(p["ambient"], np.float32) * (
        layout.palette["ambient"] if layout.lighting == "day" else 1.0
    )
    if layout.weather != "clear" and layout.lighting == "day":
        amb = amb * 0.85
    if layout.lighting == "day":
        return np.broadcast_to(amb, (h, w, 3))
    # light pools fall off in three nested rings (one layer each, so overlapping pools do not stack up)
    layers = np.zeros((3, h, w), np.float32)
    strength = 1.0 if layout.lighting == "night" else 0.4
    phi = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    for x, z, _ in lamps:
        for i, r in enumerate((1.0, 0.65, 0.35)):
            circle = np.stack([x + 6.0 * r * np.cos(phi), np.zeros_like(phi), z + 8.0 * r * np.sin(phi)], -1)
            pc = _clip_near(cam.to_cam(circle))
            if pc is not None:
                cv2.fillPoly(layers[i], [_fx(cam.project(pc))], 0.2 * strength, cv2.LINE_8, _SHIFT)
    for i, r in enumerate((1.0, 0.7, 0.4)):
        beam = np.array(
            [
                [cam.x - 1.2 * r, 0, cam.z + 3],
                [cam.x + 1.2 * r, 0, cam.z + 3],
                [cam.x + 4.0 * r, 0, cam.z + 3 + 40 * r],
                [cam.x - 4.0 * r, 0, cam.z + 3 + 40 * r],
            ]
        )
        pc = _clip_near(cam.to_cam(beam))
        if pc is not None:
            tmp = np.zeros((h, w), np.float32)
            cv2.fillPoly(tmp, [_fx(cam.project(pc))], 0.25 * strength, cv2.LINE_8, _SHIFT)
            layers[i] = np.maximum(layers[i], tmp)
    k = int(max(3, w // 16)) | 1
    pool = cv2.GaussianBlur(layers.sum(0), (k, k), 0)
    warm = np.array([1.0, 0.88, 0.65], np.float32)
    return amb + pool[..., None] * warm


def _weather(layout: Layout, seed: int) -> A.Compose:
    """Image-only weather and sensor effects (albumentations 2.0 argument names), seeded per frame."""
    t: list = []
    if layout.weather == "rain":
        t.append(
            A.RandomRain(
                slant_range=(-8, 8),
                drop_width=1,
                blur_value=3,
                brightness_coefficient=0.85,
                rain_type=("drizzle", "drizzle", "heavy")[layout.seed % 3],
                p=1.0,
            )
        )
        t.append(A.Blur(blur_limit=(3, 3), p=0.4))
    t.append(A.MotionBlur(blur_limit=(3, 5), p=0.12))
    night = layout.lighting == "night"
    t.append(A.GaussNoise(std_range=(0.02, 0.05) if night else (0.005, 0.02), p=0.8 if night else 0.3))
    return A.Compose(t, seed=seed)


def render_frame(layout: Layout, t: int = 0, *, weather: bool = True) -> Frame:
    """Render frame ``t`` of a layout's sequence with its labels (deterministic in ``layout.seed`` and ``t``)."""
    width, height = layout.size
    rng = np.random.default_rng([layout.seed, t, 7])
    cam = layout.camera(t, jitter=float(np.clip(rng.normal(0, 0.5), -1.5, 1.5)) * height / 192)
    bad = [o.kind for o in layout.objects if o.kind in ANOMALY_KINDS]
    if bad and not layout.allow_anomalies:
        raise ValueError(f"layout {layout.seed}: anomaly objects {bad} in a layout without allow_anomalies")
    sky = _sky(layout, cam)
    img = sky.astype(np.uint8)
    sem = np.full((height, width), SEMANTIC_ID["sky"], np.uint8)
    inst = np.zeros((height, width), np.uint16)
    emis = np.zeros((height, width, 3), np.uint8)
    _draw_ground(img, sem, layout, cam)
    ground_sem = sem.copy()
    _draw_background(img, sem, emis, layout, cam)
    # contact shadows of vehicles and anomalies on the ground, before anything standing is drawn
    shadow = np.zeros((height, width), np.uint8)
    ctx = _Ctx(cam.dir_to_cam(np.array(layout.sun)), layout.lighting)
    items, n_behind, n_outside = [], 0, 0
    for index, spec in enumerate(layout.objects):
        fr = _Local(cam, spec, t)
        if fr.o[2] < MIN_RENDER_DEPTH:
            n_behind += spec.kind not in STUFF_KINDS
            continue
        if _off_screen(fr, spec, cam):
            n_outside += spec.kind not in STUFF_KINDS
            continue
        items.append((float(fr.o[2]), spec, fr, index))
        if _casts_shadow(spec):
            _h, w, le = spec.dims
            q = fr.pts(
                [-le / 2 - 0.15, le / 2 + 0.15, le / 2 + 0.15, -le / 2 - 0.15],
                [-w / 2 - 0.1, -w / 2 - 0.1, w / 2 + 0.1, w / 2 + 0.1],
                [0, 0, 0, 0],
            )
            q = _clip_near(q)
            if q is not None:
                cv2.fillPoly(shadow, [_fx(cam.project(q))], 1, cv2.LINE_8, _SHIFT)
    sh = shadow.astype(bool)
    img[sh] = (img[sh].astype(np.float32) * 0.5).astype(np.uint8)
    items.sort(key=lambda it: -it[0])  # painter's order: far to near
    objects: list[LabeledObject] = []
    next_id = 1
    lamps = []
    for _depth, spec, fr, index in items:
        if spec.kind == "streetlight":
            px, pz = spec.position(t)
            lamps.append((px + (-1.6 if spec.style % 2 else 1.6), pz, spec.dims[0]))
        patch = _rasterize(_item_prims(fr, spec, ctx, t), width, height)
        if patch is None:
            n_outside += spec.kind not in STUFF_KINDS
            continue
        ix0, iy0 = max(0, patch.x0), max(0, patch.y0)
        ix1, iy1 = min(width, patch.x0 + patch.mask.shape[1]), min(height, patch.y0 + patch.mask.shape[0])
        if ix1 <= ix0 or iy1 <= iy0:
            n_outside += spec.kind not in STUFF_KINDS
            continue
        sl = (slice(iy0 - patch.y0, iy1 - patch.y0), slice(ix0 - patch.x0, ix1 - patch.x0))
        m = patch.mask[sl]
        n_in = int(m.sum())
        if n_in == 0:
            n_outside += spec.kind not in STUFF_KINDS
            continue
        stuff = spec.kind in STUFF_KINDS
        anomaly = spec.kind in ANOMALY_KINDS
        region = (slice(iy0, iy1), slice(ix0, ix1))
        img[region][m] = patch.rgb[sl][m]
        sem[region][m] = (
            VOID if anomaly else (_STUFF_SEMANTIC[spec.kind] if stuff else _OBJECT_SEMANTIC[spec.kind])
        )
        inst[region][m] = 0 if stuff else next_id
        emis[region][m] = patch.emis[sl][m] if patch.emis is not None else 0
        if stuff:
            continue
        rows, cols = np.flatnonzero(patch.mask.any(1)), np.flatnonzero(patch.mask.any(0))
        full = (
            float(patch.x0 + cols[0]),
            float(patch.y0 + rows[0]),
            float(patch.x0 + cols[-1] + 1),
            float(patch.y0 + rows[-1] + 1),
        )
        box = (max(0.0, full[0]), max(0.0, full[1]), min(float(width), full[2]), min(float(height), full[3]))
        area_full = (full[2] - full[0]) * (full[3] - full[1])
        trunc = 1.0 - (box[2] - box[0]) * (box[3] - box[1]) / area_full
        x, y, z = (float(v) for v in fr.o)
        ry = _wrap(math.atan2(-fr.hd[2], fr.hd[0]))
        objects.append(
            LabeledObject(
                kind=spec.kind,
                instance_id=next_id,
                is_anomaly=anomaly,
                full_box=full,
                box=box,
                truncation=float(np.clip(trunc, 0.0, 1.0)),
                in_image_pixels=n_in,
                visible_pixels=0,
                dims=tuple(float(d) for d in spec.dims),
                location=(x, y, z),
                rotation_y=ry,
                alpha=_wrap(ry - math.atan2(x, z)),
                ground_point=tuple(float(v) for v in cam.project(fr.o)),
                source=index,
            )
        )
        next_id += 1
    # renumber: visible objects get 1..K in drawing order (= KITTI label line order), hidden ones 0
    counts = np.bincount(inst.ravel(), minlength=next_id)
    lut = np.zeros(next_id, np.uint16)
    k = 0
    for o in objects:
        o.visible_pixels = int(counts[o.instance_id])
        if o.visible_pixels:
            k += 1
            lut[o.instance_id] = k
        o.instance_id = int(lut[o.instance_id])
    inst = lut[inst]
    # lighting: albedo x illumination, sky kept as drawn, emitters added with a glow
    light = _light_map(layout, cam, lamps)
    out = img.astype(np.float32) * light
    is_sky = sem == SEMANTIC_ID["sky"]
    out[is_sky] = sky[is_sky]
    glow = _LIGHT[layout.lighting]["glow"]
    if glow > 0 and emis.any():
        e = emis.astype(np.float32)
        k = int(max(3, width // 60)) | 1
        out = (
            out
            + e * 0.8
            + cv2.GaussianBlur(e, (k, k), 0) * glow
            + cv2.GaussianBlur(e, (4 * k + 1, 4 * k + 1), 0) * glow * 0.8
        )
    out += rng.standard_normal((height, width), dtype=np.float32)[..., None] * 2.0
    image = np.clip(out, 0, 255).astype(np.uint8)
    if weather:
        wseed = int(rng.integers(2**31))
        if layout.weather == "fog":
            # RandomFog blends one full-image copy per fog particle (~30 ms at 640x192); it is smooth, so it
            # runs at half resolution and is scaled back up (its own final blur hides the resampling)
            small = cv2.resize(image, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
            fog = A.Compose([A.RandomFog(alpha_coef=0.08, fog_coef_range=(0.2, 0.45), p=1.0)], seed=wseed)
            image = cv2.resize(fog(image=small)["image"], (width, height), interpolation=cv2.INTER_LINEAR)
        image = _weather(layout, wseed + 1)(image=image)["image"]
    stats = {"behind_camera": n_behind, "outside_image": n_outside, "hidden": sum(o.hidden for o in objects)}
    return Frame(
        image, sem, inst, ground_sem, objects, cam.P2, layout.lighting, layout.weather, layout.seed, t, stats
    )


def render_scene(
    seed: int, size: tuple[int, int] = DEFAULT_SIZE, *, anomalies: int | bool = 0, **kw
) -> Frame:
    """One frame from a fresh layout: ``render_frame(sample_layout(seed, size, anomalies=..., **kw))``."""
    weather = kw.pop("apply_weather", True)
    return render_frame(sample_layout(seed, size, anomalies=anomalies, **kw), 0, weather=weather)


def colorize_semantic(semantic: np.ndarray) -> np.ndarray:
    """RGB visualisation of a semantic id map (void black)."""
    return np.asarray(semantic_palette(), np.uint8)[semantic]
