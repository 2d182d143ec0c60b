"""The procedural road-scene generator: exact labels, determinism, on-disk layouts, anomaly separation."""

from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import pytest

from domains.driving import synthetic as S
from domains.driving.classes import (
    ANOMALY_KINDS,
    GENERATED_TYPES,
    KITTI_TYPES,
    SEMANTIC_CLASSES,
    SEMANTIC_ID,
    VOID,
)
from domains.driving.synthetic import writers

SIZE = (320, 96)  # small frames keep the suite fast; the geometry scales with the width
W, H = SIZE


def _pixel_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


@pytest.fixture(scope="module")
def frames() -> list[S.Frame]:
    return [S.render_scene(seed, SIZE) for seed in range(6)]


def _blank_layout(objects: list[S.ObjectSpec]) -> S.Layout:
    layout = S.sample_layout(11, SIZE, lighting="day", weather="clear")
    layout.objects = objects
    return layout


def _car(x: float, z: float) -> S.ObjectSpec:
    return S.ObjectSpec("Car", x, z, 0.0, (1.5, 1.7, 4.0), 0.0, (200, 30, 30), 1)


# --------------------------------------------------------------------------------------------- determinism
def test_same_seed_same_frame_and_different_seed_differs():
    for weather in ("fog", "rain"):  # the albumentations part is seeded too
        a = S.render_scene(3, SIZE, weather=weather)
        b = S.render_scene(3, SIZE, weather=weather)
        assert np.array_equal(a.image, b.image)
        assert np.array_equal(a.semantic, b.semantic) and np.array_equal(a.instance, b.instance)
        assert a.kitti_lines() == b.kitti_lines()
    c = S.render_scene(4, SIZE, weather="rain")
    assert not np.array_equal(a.image, c.image)


def test_forcing_lighting_keeps_the_scene():
    day = S.render_scene(5, SIZE, lighting="day", weather="clear")
    night = S.render_scene(5, SIZE, lighting="night", weather="clear")
    assert np.array_equal(day.semantic, night.semantic)
    assert night.image.mean() < 0.6 * day.image.mean()


def test_generate_kitti_is_byte_identical(tmp_path):
    a = S.generate_kitti(tmp_path / "a", n_images=2, size=SIZE, seed=7, verbose=False)
    b = S.generate_kitti(tmp_path / "b", n_images=2, size=SIZE, seed=7, verbose=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "meta.json")
    assert len(files) > 10
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


# ------------------------------------------------------------------------------------------------ labels
def test_boxes_are_tight_and_inside_the_image(frames):
    checked_exact = 0
    for fr in frames:
        for o in fr.objects:
            if o.hidden:
                continue
            x0, y0, x1, y1 = o.box
            assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
            vis = _pixel_box(fr.instance == o.instance_id)
            # visible pixels always lie inside the (amodal) box
            assert o.box[0] <= vis[0] and o.box[1] <= vis[1] and vis[2] <= o.box[2] and vis[3] <= o.box[3]
            if o.visible_pixels == o.in_image_pixels and o.truncation == 0:
                assert vis == o.box, (o.kind, vis, o.box)  # unoccluded, untruncated: exactly tight
                checked_exact += 1
    assert checked_exact >= 10


def test_truncation_matches_the_border(frames):
    n_cut = 0
    for fr in frames:
        for o in fr.objects:
            fx0, fy0, fx1, fy1 = o.full_box
            inside = fx0 >= 0 and fy0 >= 0 and fx1 <= W and fy1 <= H
            if inside:
                assert o.truncation == 0
            else:
                n_cut += 1
                area = (fx1 - fx0) * (fy1 - fy0)
                clipped = (o.box[2] - o.box[0]) * (o.box[3] - o.box[1])
                assert o.truncation > 0
                assert o.truncation == pytest.approx(1 - clipped / area)
    assert n_cut >= 1


def test_car_cut_by_the_left_border_is_truncated():
    layout = _blank_layout([])
    layout.objects = [_car(layout.cam_x - 4.0, 5.0)]
    (o,) = S.render_frame(layout, 0, weather=False).objects
    assert o.full_box[0] < 0 and o.box[0] == 0
    assert 0 < o.truncation < 1


def test_occlusion_grows_behind_another_object():
    probe = _blank_layout([])
    x = probe.cam_x
    alone = S.render_frame(_blank_layout([_car(x, 16.0)]), 0, weather=False).objects
    assert len(alone) == 1 and alone[0].occlusion == 0 and alone[0].visible_fraction == 1.0
    both = S.render_frame(_blank_layout([_car(x, 16.0), _car(x + 0.9, 10.0)]), 0, weather=False).objects
    far = next(o for o in both if o.location[2] > 15)
    near = next(o for o in both if o.location[2] < 11)
    assert far.box == alone[0].box  # KITTI boxes are amodal: occlusion does not shrink them
    assert far.visible_fraction < 0.9 and far.occlusion >= 1
    assert near.occlusion == 0


def test_occlusion_level_by_visible_fraction_at_the_thresholds():
    """KITTI's occluded field: 0 fully visible (here >= 90 % of the in-image silhouette), 1 partly (>= 50 %),
    2 largely occluded; the lower bound of each level is inclusive."""

    def level(visible: int) -> int:
        box = (10.0, 10.0, 20.0, 20.0)
        return S.LabeledObject(
            kind="Car",
            instance_id=1,
            is_anomaly=False,
            full_box=box,
            box=box,
            truncation=0.0,
            in_image_pixels=100,
            visible_pixels=visible,
            dims=(1.5, 1.7, 4.0),
            location=(0.0, 1.65, 10.0),
            rotation_y=0.0,
            alpha=0.0,
            ground_point=(15.0, 20.0),
        ).occlusion

    # visible / 100 in-image pixels: 1.0, 0.9, 0.89, 0.5, 0.49, 0.01
    assert [level(v) for v in (100, 90, 89, 50, 49, 1)] == [0, 0, 1, 1, 2, 2]


def test_3d_fields_are_consistent_with_the_2d_box(frames):
    n = 0
    for fr in frames:
        P2 = fr.calib
        for o in fr.objects:
            if o.hidden:
                continue
            x, y, z = o.location
            assert y == pytest.approx(S.CAMERA_HEIGHT)  # bottom centre on the ground plane
            expected_alpha = (o.rotation_y - math.atan2(x, z) + math.pi) % (2 * math.pi) - math.pi
            assert o.alpha == pytest.approx(expected_alpha, abs=1e-9)
            small = o.full_box[3] - o.full_box[1] < 15  # raster rounding dominates a few-pixel box
            if o.kind not in ("Car", "Van", "Truck") or o.truncation > 0 or z < 6 or small:
                continue
            # the KITTI 3D box, projected with P2, should frame the drawn vehicle
            h, w, le = o.dims
            c, s = math.cos(o.rotation_y), math.sin(o.rotation_y)
            xs = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * le / 2
            ys = np.array([0, 0, 0, 0, -h, -h, -h, -h])
            zs = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * w / 2
            pts = np.stack([c * xs + s * zs + x, ys + y, -s * xs + c * zs + z, np.ones(8)])
            uvw = P2 @ pts
            u, v = uvw[0] / uvw[2], uvw[1] / uvw[2]
            proj = (u.min(), v.min(), u.max(), v.max())
            fb = o.full_box
            ix = max(0.0, min(proj[2], fb[2]) - max(proj[0], fb[0]))
            iy = max(0.0, min(proj[3], fb[3]) - max(proj[1], fb[1]))
            inter = ix * iy
            union = (proj[2] - proj[0]) * (proj[3] - proj[1]) + (fb[2] - fb[0]) * (fb[3] - fb[1]) - inter
            assert inter / union > 0.7, (o.kind, proj, fb)
            n += 1
    assert n >= 5


def test_semantic_map_has_the_scene_classes(frames):
    for fr in frames:
        present = set(np.unique(fr.semantic).tolist())
        for name in ("road", "sky", "sidewalk", "lane_marking"):
            assert SEMANTIC_ID[name] in present, name
        assert present <= set(range(len(SEMANTIC_CLASSES))), "training frames have no void pixels"
        for o in fr.objects:
            if not o.hidden:
                cls = {
                    "Car": "car",
                    "Van": "truck",
                    "Truck": "truck",
                    "Pedestrian": "person",
                    "Cyclist": "cyclist",
                }
                assert (fr.semantic[fr.instance == o.instance_id] == SEMANTIC_ID[cls[o.kind]]).all()


# ------------------------------------------------------------------------------------------ KITTI on disk
def test_generate_kitti_layout_and_label_lines(tmp_path):
    root = S.generate_kitti(tmp_path / "kitti", n_images=4, size=SIZE, frames_per_sequence=2, verbose=False)
    base = root / "training"
    assert (root / S.MARKER).is_file()
    seq = [ln.split() for ln in (root / "sequences.txt").read_text().splitlines() if not ln.startswith("#")]
    assert [s[0] for s in seq] == [f"{i:06d}" for i in range(4)]
    assert len({s[1] for s in seq}) == 2 and seq[0][1] == seq[1][1] != seq[2][1]
    n_objects = 0
    for i in range(4):
        name = f"{i:06d}"
        image = cv2.imread(str(base / "image_2" / f"{name}.png"))
        sem = cv2.imread(str(base / "semantic" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        inst = cv2.imread(str(base / "instance" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert image.shape == (H, W, 3) and sem.dtype == np.uint8 and inst.dtype == np.uint16
        calib = (base / "calib" / f"{name}.txt").read_text()
        assert calib.startswith("P0:") and "P2:" in calib
        lines = (base / "label_2" / f"{name}.txt").read_text().splitlines()
        assert set(np.unique(inst).tolist()) - {0} == set(range(1, len(lines) + 1))
        for k, line in enumerate(lines, start=1):
            f = line.split()
            assert len(f) == 15, line
            assert f[0] in GENERATED_TYPES or f[0] == "DontCare"
            vals = [float(v) for v in f[1:]]
            left, top, right, bottom = vals[3:7]
            assert 0 <= left < right <= W and 0 <= top < bottom <= H
            assert all(len(v.split(".")[1]) == 2 for v in f[1:] if "." in v)  # 2 decimals
            vis = _pixel_box(inst == k)  # instance k is label line k
            assert (
                left <= vis[0] + 0.01
                and top <= vis[1] + 0.01
                and vis[2] <= right + 0.01
                and vis[3] <= bottom + 0.01
            )
            if f[0] == "DontCare":
                assert bottom - top < S.DONTCARE_MIN_HEIGHT
                continue
            assert bottom - top >= S.DONTCARE_MIN_HEIGHT
            assert 0 <= vals[0] <= 1 and int(f[2]) in (0, 1, 2, 3)
            assert vals[11] == pytest.approx(1.65) and vals[12] > 0  # y on the ground, z in front
            n_objects += 1
    assert n_objects >= 4


def test_written_kitti_image_is_the_rendered_rgb_frame(frames, tmp_path):
    """Frames are rendered RGB and cv2 writes BGR: read back and turned to RGB, the file is the frame."""
    frame = frames[0]
    assert not np.array_equal(frame.image[..., 0], frame.image[..., 2])  # a colour frame: a swap would show
    dirs = {k: tmp_path / k for k in ("image_2", "semantic", "instance", "label_2")}
    for folder in dirs.values():
        folder.mkdir()
    writers._write_kitti_frame(dirs, "000000", frame)
    back = cv2.cvtColor(cv2.imread(str(dirs["image_2"] / "000000.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, frame.image)
    assert np.array_equal(cv2.imread(str(dirs["instance"] / "000000.png"), cv2.IMREAD_UNCHANGED), frame.instance)


def test_kitti_output_reads_with_the_project_reader(tmp_path):
    from domains.driving.formats import read_kitti_dir

    root = S.generate_kitti(tmp_path / "kitti", n_images=2, size=SIZE, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may be dropped
        anns = read_kitti_dir(root, strict=True)
    assert len(anns) == 2 and all(a.width == W and a.height == H for a in anns)
    assert {o.type for a in anns for o in a.objects} <= set(KITTI_TYPES)


def test_ensure_reuses_and_refuses_foreign_folders(tmp_path):
    root = S.ensure_synthetic_kitti(tmp_path / "k", n_images=1, size=SIZE, verbose=False)
    stamp = (root / S.MARKER).stat().st_mtime_ns
    assert S.ensure_synthetic_kitti(tmp_path / "k", n_images=1, size=SIZE, verbose=False) == root
    assert (root / S.MARKER).stat().st_mtime_ns == stamp  # not regenerated
    foreign = tmp_path / "real_data"
    foreign.mkdir()
    (foreign / "image.png").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="real_data"):
        S.ensure_synthetic_kitti(foreign, n_images=1, size=SIZE)


# --------------------------------------------------------------------------------------------- anomalies
def test_training_generator_never_draws_anomalies():
    assert not set(ANOMALY_KINDS) & set(S.TRAINING_KINDS)
    for s in range(40):
        layout = S.sample_layout(writers._layout_seed(0, writers._KITTI_STREAM, s), SIZE, n_frames=10)
        assert not layout.allow_anomalies
        assert {o.kind for o in layout.objects} <= set(S.TRAINING_KINDS)
    layout = _blank_layout([S.ObjectSpec("tyre", 0.0, 10.0, 0.0, (0.2, 0.7, 0.7))])
    with pytest.raises(ValueError, match="anomaly"):
        S.render_frame(layout, 0)
    kitti = {writers._layout_seed(0, writers._KITTI_STREAM, i) for i in range(500)}
    anomaly = {
        writers._layout_seed(0, writers._ANOMALY_STREAM, i * 1000 + a) for i in range(100) for a in range(3)
    }
    assert not kitti & anomaly


def test_anomalies_lie_on_the_road_and_are_void_in_semantics():
    n = 0
    for seed in range(6):
        fr = S.render_scene(100 + seed, SIZE, anomalies=2)
        anomalies = [o for o in fr.objects if o.is_anomaly]
        assert anomalies and all(o.kind in ANOMALY_KINDS for o in anomalies)
        for o in anomalies:
            u, v = o.ground_point
            if 0 <= u < W and 0 <= v < H:
                assert fr.ground_semantic[int(v), int(u)] in (
                    SEMANTIC_ID["road"],
                    SEMANTIC_ID["lane_marking"],
                )
                n += 1
        assert (fr.semantic[fr.anomaly] == VOID).all()
    assert n >= 6


def test_anomaly_mask_values_and_void_band():
    fr = S.render_scene(101, SIZE, anomalies=2)
    mask = fr.anomaly_mask(void_width=2)
    assert set(np.unique(mask).tolist()) == {0, 1, 255}
    assert np.array_equal(mask == 1, fr.anomaly)
    near = cv2.dilate((mask == 1).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert near[mask == 255].all()  # void only on the band around anomalies


def test_default_anomaly_labels_do_not_cut_a_predicted_component_at_the_anomalys_edge():
    """With a void band all round each anomaly (the old default), a constant score map scored SegmentMeIfYouCan
    sIoU 1.0 and mean F1 0.70 on the synthetic test set: void pixels are removed before components are
    labelled, so 'everything is anomalous' split into one exact component per anomaly."""
    from domains.driving.anomaly.metrics import component_metrics

    fr = S.render_scene(101, SIZE, anomalies=2)
    constant = np.ones(SIZE[::-1], np.float32)
    default = fr.anomaly_mask()
    assert set(np.unique(default).tolist()) == {0, 1}
    assert component_metrics([(constant, default)], threshold=0.5)["mean_F1"] == 0.0
    banded = fr.anomaly_mask(void_width=2)
    assert component_metrics([(constant, banded)], threshold=0.5)["sIoU_gt"] == 1.0  # why the band went


def test_generate_anomaly_layout(tmp_path):
    root = S.generate_anomaly(tmp_path / "anom", n_images=10, size=SIZE, seed=3, verbose=False)
    names = sorted(p.stem for p in (root / "images").glob("*.png"))
    # SegmentMeIfYouCan's mask names, which its own benchmark code reads
    masks = sorted(p.name for p in (root / "labels_masks").glob("*.png"))
    assert len(names) == 10 and masks == [f"{name}_labels_semantic.png" for name in names]
    free = 0
    for name in names:
        mask = cv2.imread(str(root / "labels_masks" / f"{name}_labels_semantic.png"), cv2.IMREAD_UNCHANGED)
        sem = cv2.imread(str(root / "semantic" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (H, W) and set(np.unique(mask).tolist()) <= {0, 1, 255}
        assert (sem[mask == 1] == VOID).all()
        free += not (mask == 1).any()
    assert free == 2  # round(10 * 0.2)
    assert (root / S.MARKER).is_file()


def test_cli_writes_the_anomaly_set(tmp_path):
    out = tmp_path / "cli"
    assert S.main(["anomaly", "--root", str(out), "--n-images", "2", "--width", "320", "--height", "96"]) == 0
    assert len(list((out / "images").glob("*.png"))) == 2 and (out / S.MARKER).is_file()


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="lighting"):
        S.sample_layout(0, SIZE, lighting="noon")
    with pytest.raises(ValueError, match="too small"):
        S.sample_layout(0, (16, 8))
    with pytest.raises(ValueError, match="anomaly_free_fraction"):
        S.generate_anomaly(tmp_path / "x", n_images=2, anomaly_free_fraction=1.5)
