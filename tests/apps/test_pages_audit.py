"""The demo pages say what is true: anomaly thresholds on a fixed scale (or said to be relative to the photo),
what hides the boxes, short checkpoint errors, the upload size limit, whose GED a label quotes, gzipped NIfTI
whatever its name. Driven through ``streamlit.testing.v1.AppTest`` on the tiny ``demo_env`` models."""

from __future__ import annotations

import gzip
import json
import math
import shutil
from collections import Counter

import cv2
import numpy as np
import pytest
import streamlit as st
import torch

from apps import demo_models as dm
from apps import uploads as up
from domains.driving.anomaly.predict import score_to_original
from tests.apps import samples as S
from tests.apps.pages import image_captions as _image_captions
from tests.apps.pages import metrics as _metrics
from tests.apps.pages import page as _page
from tests.apps.pages import page_ok as _ok
from tests.apps.pages import texts as _texts

# ------------------------------------------------------------------------------------ road anomalies


def _score_map(demo_env, scene: str, score: str) -> np.ndarray:
    """The page's anomaly map of a synthetic scene, computed here by the same model and function."""
    task = dm.load_task("driving_anomaly", demo_env["checkpoints"] / "driving_anomaly.ckpt")
    path = demo_env["anomaly"] / "images" / f"{scene}.png"
    image = up.decode_rgb_image(path.read_bytes(), path.name).image
    return dm.anomaly_analysis(task, image, score)["score"]


def test_anomaly_fixed_scale_threshold_is_kept_across_scenes_and_its_pixel_share_is_real(demo_env):
    at = _ok(_page("driving"))
    assert at.selectbox(key="driving_ano_score").value == "msp"
    slider = at.slider(key="driving_ano_threshold_msp")
    assert (slider.min, slider.max, slider.value) == (0.0, 1.0, 0.5)  # not the scene's own 99th percentile
    first = _score_map(demo_env, "synthetic_00000", "msp")
    chosen = round(float(np.quantile(first, 0.4)), 2)  # some pixels above, some below
    slider.set_value(chosen).run()
    _ok(at)
    expected = f"{100 * float((first >= chosen).mean()):.2f} %"
    assert _metrics(at)["Pixels above the threshold"] == expected != "1.00 %"
    assert (
        _image_captions(at)[2] == f"msp: blue 0 .. red 1 (fixed scale); white outline: score >= {chosen:.3g}"
    )
    at.selectbox(key="driving_scene").set_value(1).run()  # another scene: the user's threshold stays
    _ok(at)
    assert "synthetic_00001.png" in _texts(at.caption)
    assert at.slider(key="driving_ano_threshold_msp").value == chosen
    second = _score_map(demo_env, "synthetic_00001", "msp")
    assert _metrics(at)["Pixels above the threshold"] == f"{100 * float((second >= chosen).mean()):.2f} %"
    # the softmax entropy is bounded too: 0 .. ln C, starting at ln 2 (an even split between two classes)
    at.selectbox(key="driving_ano_score").set_value("entropy").run()
    _ok(at)
    slider = at.slider(key="driving_ano_threshold_entropy")
    classes = dm.load_task(
        "driving_anomaly", demo_env["checkpoints"] / "driving_anomaly.ckpt"
    ).model.num_classes
    assert slider.min == 0.0 and slider.max == pytest.approx(math.log(classes)) and classes == 12
    assert slider.value == pytest.approx(math.log(2))


def test_anomaly_scores_come_from_one_network_pass_per_photo(demo_env, monkeypatch):
    """Picking another anomaly score ran the segmenter again on the same photo; now the page keeps its outputs
    per photo and computes each score from them, equal to the plain model's own ``scores``."""
    task = dm.load_task("driving_anomaly", demo_env["checkpoints"] / "driving_anomaly.ckpt")
    path = demo_env["anomaly"] / "images" / "synthetic_00001.png"
    image = up.decode_rgb_image(path.read_bytes(), path.name).image
    names = dm.anomaly_scores(task)
    assert len(names) >= 3
    forward = dm.anomaly_forward(task, image)
    fitted = cv2.resize(image, forward["size"], interpolation=cv2.INTER_LINEAR)  # 128x64 scene, trained larger
    x = torch.from_numpy(fitted.transpose(2, 0, 1).copy()).float().div(255)[None]
    expected = task.model.scores(x, names, smoothing=task.score_smoothing)
    for name in names:
        got = dm.anomaly_analysis(task, image, name, forward)["score"]
        want = score_to_original(expected[name][0].numpy(), image.shape[:2])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    passes = Counter()
    real = dm.anomaly_forward

    def counted(task, image):
        passes[image.tobytes()] += 1
        return real(task, image)

    monkeypatch.setattr(dm, "anomaly_forward", counted)
    st.cache_resource.clear()  # another test may have shown this scene
    at = _ok(_page("driving"))
    at.selectbox(key="driving_scene").set_value(1).run()
    for name in names[1:]:
        at.selectbox(key="driving_ano_score").set_value(name).run()
        _ok(at)
        assert f"{name}:" in " ".join(_image_captions(at))
    assert passes[image.tobytes()] == 1 and sum(passes.values()) == 2  # scene 0 first, then this one


def test_anomaly_unbounded_score_is_said_to_be_relative_and_shows_no_pixel_share(demo_env):
    at = _ok(_page("driving"))
    at.selectbox(key="driving_ano_score").set_value("energy").run()
    _ok(at)
    assert "Pixels above the threshold" not in _metrics(at)  # the top 1 % by construction: no finding
    assert "Frame anomaly score" in _metrics(at)
    top = at.slider(key="driving_ano_top_energy")
    assert (top.min, top.max, top.value) == (0.1, 10.0, 1.0)
    top.set_value(5.0).run()
    _ok(at)
    energy = _score_map(demo_env, "synthetic_00000", "energy")
    cut = float(np.quantile(energy, 0.95))
    note = _texts(at.tabs[2].info)  # the Road anomalies tab
    assert (
        "`energy` has no fixed scale, so here the colours and the outline are relative to this image" in note
    )
    assert f"its lowest score ({energy.min():.3g}), red its highest ({energy.max():.3g})" in note
    assert f"its top 5 % of pixels (score >= {cut:.3g})" in note
    assert "not whether the scene holds an anomaly" in note and "(`msp`, `entropy`)" in note
    assert _image_captions(at)[2] == (
        "energy: blue = this image's lowest .. red = its highest score; white outline: its top 5 % of pixels "
        f"(score >= {cut:.3g})"
    )
    at.selectbox(key="driving_scene").set_value(1).run()  # the share the user chose stays
    _ok(at)
    assert at.slider(key="driving_ano_top_energy").value == 5.0
    cut = float(np.quantile(_score_map(demo_env, "synthetic_00001", "energy"), 0.95))
    assert _image_captions(at)[2].endswith(f"its top 5 % of pixels (score >= {cut:.3g})")


# -------------------------------------------------------------------------------------- class filter


def test_the_note_says_the_class_filter_hides_the_boxes_not_the_threshold(demo_env):
    tab = 0  # Objects
    at = _ok(_page("driving"))
    at.slider(key="driving_det_threshold").set_value(0.05).run()
    _ok(at)
    table = at.dataframe[0].value
    classes = Counter(table["class"])
    assert set(classes) == {"Car"} and len(table) == classes["Car"] > 0  # what the tiny detector gives
    at.multiselect(key="driving_det_classes").set_value([]).run()
    _ok(at)
    assert _texts(at.tabs[tab].info) == (
        f"No class is selected under Classes: {len(table)} boxes at or above the threshold 0.05 are hidden "
        f"(Car {len(table)}). Select classes to see them."
    )
    at.multiselect(key="driving_det_classes").set_value(["Pedestrian"]).run()
    _ok(at)
    assert _texts(at.tabs[tab].info) == (
        f"The model found no Pedestrian box here. {len(table)} boxes of other classes (Car {len(table)}) reach "
        "the threshold but the class filter hides them: select their classes under Classes to see them."
    )
    at.multiselect(key="driving_det_classes").set_value(["Car"])
    at.slider(key="driving_det_threshold").set_value(1.0).run()  # now the threshold hides them
    _ok(at)
    assert _texts(at.tabs[tab].info) == (
        f"No Car box reaches the threshold 1.00; the best Car score here is {table['score'].max():.2f}. Lower "
        "the slider to see the weaker ones."
    )


def test_the_instances_note_says_the_class_filter_hides_them(demo_env):
    tab = 1  # Instances
    at = _ok(_page("driving"))
    at.slider(key="driving_inst_threshold").set_value(0.05).run()
    _ok(at)
    table = next(df.value for df in at.dataframe if "mask area (px, before overlaps)" in df.value.columns)
    listed = ", ".join(f"{c} {n}" for c, n in sorted(Counter(table["class"]).items()))
    at.multiselect(key="driving_inst_classes").set_value([]).run()
    _ok(at)
    assert _image_captions(at)[1] == f"0 of {len(table)} instances shown; 0 below the score threshold"
    assert _texts(at.tabs[tab].info) == (
        f"No class is selected under Classes: {len(table)} instances at or above the threshold 0.05 are hidden "
        f"({listed}). Select classes to see them."
    )
    assert "Lower the slider" not in _texts(at.tabs[tab].info)


# -------------------------------------------------------------------------------- own checkpoint errors


def test_own_checkpoint_that_is_a_png_or_a_pickled_model_gets_a_short_message(demo_env, tmp_path):
    png = tmp_path / "photo.ckpt"  # a PNG renamed: other names are not opened at all (test_upload_security_s37)
    png.write_bytes(S.png(np.zeros((20, 20), np.uint8)))
    pickled = tmp_path / "model.ckpt"
    torch.save(torch.nn.Linear(2, 2), pickled)  # a zip as torch.save writes, holding a whole module
    for page, key in (("driving", "own_path_driving_detection"), ("medical", "own_path_medical_unet")):
        at = _ok(_page(page))
        at.text_input(key=key).set_value(str(png)).run()
        assert not at.exception
        expected = (
            f"`{png}`: not a PyTorch Lightning checkpoint: a PNG image. Checkpoints "
            "are e.g. `lightning_logs/<domain>/<config>/checkpoints/last.ckpt`."
        )
        assert [e.value for e in at.error] == [expected]
        assert at.title  # the page goes on with its own model
        at.text_input(key=key).set_value(str(pickled)).run()
        assert not at.exception and len(at.error) == 1
        message = at.error[0].value
        assert (
            "not a weights-only Lightning checkpoint: it holds pickled Python objects (torch.nn.modules.linear.Linear)"
            in message
        )
        assert str(pickled) in message
        assert (
            "weights_only" not in message and "arbitrary code" not in message and "Re-running" not in message
        )
    assert message.startswith(f"`{pickled}` is not a checkpoint this page can use: ")  # medical: sidebar


# ------------------------------------------------------------------------------------- upload size limit


def test_the_pages_state_the_pixel_limit_the_uploads_enforce(demo_env):
    home = _ok(_page("home"))
    assert "any size" not in _texts(home.markdown)
    assert "Upload a road photo (PNG, JPEG or WebP, up to 40 megapixels and 50 MB)" in _texts(home.markdown)
    at = _page("driving")
    at.radio(key="driving_source").set_value("Upload a photo").run()
    _ok(at)
    assert at.get("file_uploader")[0].proto.label == "Road photo (PNG, JPEG or WebP, up to 40 megapixels)"
    big = S.png(np.zeros((6000, 8000), np.uint8))  # 48 megapixels: refused, as the label says
    at.file_uploader(key="driving_upload").set_value(("big.png", big, "image/png")).run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "big.png: the image is 8000x6000 = 48.0 megapixels; the limit is 40.0 megapixels (downscale it first)"
    ]


# ----------------------------------------------------------------------------- medical example labels


def test_medical_example_label_says_its_ged_is_the_cards_and_a_different_page_ged_is_explained(
    demo_env, tmp_path, monkeypatch
):
    from domains.medical.data import LIDCPngDataset

    folder = tmp_path / "ckpts"
    shutil.copytree(demo_env["checkpoints"], folder)
    monkeypatch.setenv(dm.ENV_CHECKPOINTS, str(folder))
    ids = LIDCPngDataset(str(demo_env["medical"]), "test").ids
    card_path = folder / "medical_unet.json"

    def write_card(best_ged: float) -> None:
        card = json.loads(card_path.read_text())
        card["examples"] = {"best": {"id": ids[0], "ged": best_ged}, "worst": {"id": ids[-1], "ged": 1.4204}}
        card_path.write_text(json.dumps(card))

    write_card(1.9876)  # no GED of 16 identical U-Net samples against these readers is this
    at = _ok(_page("medical"))
    at.selectbox(key="medical_model").set_value("medical_unet").run()  # the page opens on the Prob. U-Net
    at.selectbox(key="medical_item").set_value("best").run()  # switching model kept the Prob. U-Net's image
    item = at.selectbox(key="medical_item")
    assert item.value == "best"
    assert item.format_func("worst") == (
        f"{ids[-1]}: where the model is most wrong (its worst test image on the model card's test run, "
        "GED 1.42 there)"
    )
    page_ged = _metrics(at)["GED (lower is better)"]
    assert page_ged != "1.988"
    assert (
        "The model card's test run gave this image GED 1.988, from its own random draw of samples; the GED "
        "above comes from this page's 16 samples with seed 0. A sampling model's GED on one image changes"
    ) in _texts(at.caption)
    write_card(float(page_ged))  # the card and the page agree (a deterministic model): nothing to explain
    at = _ok(_page("medical"))
    at.selectbox(key="medical_model").set_value("medical_unet").run()
    at.selectbox(key="medical_item").set_value("best").run()
    assert _metrics(at)["GED (lower is better)"] == page_ged
    assert "model card's test run gave" not in _texts(at.caption)


# --------------------------------------------------------------------------------- gzipped NIfTI names


def test_gzipped_nifti_is_recognised_by_its_content_whatever_its_name():
    volume = np.arange(30 * 30 * 8, dtype=np.float32).reshape(30, 30, 8)
    data = S.nifti(volume, compressed=True)
    for name in ("misnamed.nii", "vol.gz", "vol.nii.gz", "scan", "scan.bin"):
        assert up.detect_format(data, name) == "nifti_gz", name
    reference = up.decode_medical(data, "vol.nii.gz")
    misnamed = up.decode_medical(data, "misnamed.nii")
    assert misnamed.format == "NIfTI" and np.array_equal(misnamed.data, reference.data)
    with pytest.raises(up.UploadError, match=r"^misnamed\.nii: this is a NIfTI medical file"):
        up.decode_rgb_image(data, "misnamed.nii")  # the driving page names what it is
    other = gzip.compress(b"plain text, not a volume " * 40)
    assert up.detect_format(other, "notes.bin") == "gzip"
    with pytest.raises(up.UploadError, match=r"^x\.nii: not a NIfTI-1 / NIfTI-2 file"):
        up.decode_medical(other, "x.nii")  # named NIfTI: the reader says what is wrong inside


def test_gzipped_nifti_named_nii_is_shown_on_the_medical_page(demo_env):
    volume = np.random.default_rng(0).random((30, 30, 8)).astype(np.float32)
    at = _page("medical")
    at.radio(key="medical_source").set_value("Upload a file").run()
    at.file_uploader(key="medical_upload").set_value(("misnamed.nii", S.nifti(volume, compressed=True), "x"))
    at.run()
    _ok(at)
    assert at.subheader[0].value == "misnamed.nii slice 4"
    assert "3D volume: 8 axial slices" in _texts(at.info)


def test_anomaly_input_is_fitted_into_the_training_frame_as_the_cli_does(demo_env):
    """Fitting the width made a 600x3000 phone photo a 640x3200 network input (25 s, 2.4 GB on the page), and a
    4:3 photo 640x480: objects 2.5x their training size, pixel AP 0.12 where 0.55 at the training scale."""
    task = dm.load_task("driving_anomaly", demo_env["checkpoints"] / "driving_anomaly.ckpt")
    task.demo_input_size = (96, 320)  # the training frames
    wide = dm.anomaly_analysis(task, np.zeros((200, 1280, 3), np.uint8), "msp")  # x min(96/200, 320/1280)
    four_three = dm.anomaly_analysis(task, np.zeros((480, 640, 3), np.uint8), "msp")  # x 0.2
    tall = dm.anomaly_analysis(task, np.zeros((1600, 320, 3), np.uint8), "msp")  # x 0.06: 19 wide, at least 32
    assert wide["analysis_size"] == (320, 50) and wide["score"].shape == (200, 1280)
    assert four_three["analysis_size"] == (128, 96) and four_three["score"].shape == (480, 640)
    assert tall["analysis_size"] == (32, 96) and tall["score"].shape == (1600, 320)
    # a checkpoint that does not record its training size: the synthetic frames' 192x640 box (H, W)
    task.demo_input_size = None
    fallback = dm.anomaly_analysis(task, np.zeros((480, 640, 3), np.uint8), "msp")  # x min(192/480, 640/640)
    assert fallback["analysis_size"] == (256, 192) and fallback["score"].shape == (480, 640)


def test_own_detector_whose_class_names_hold_spaces_draws_and_exports_its_boxes(demo_env, tmp_path):
    """COCO's 'traffic light': the KITTI text download raised outside the page's error handling (a traceback,
    and the other tabs never drawn); KITTI type names are written with underscores instead."""
    ckpt = torch.load(demo_env["checkpoints"] / "driving_detection.ckpt", weights_only=False)
    names = ["passenger car", "walking person", "traffic light"]
    ckpt["hyper_parameters"]["class_names"] = names
    own = tmp_path / "spaces.ckpt"
    torch.save(ckpt, own)
    at = _ok(_page("driving"))
    at.text_input(key="own_path_driving_detection").set_value(str(own)).run()
    at.multiselect(key="driving_det_classes").set_value(names)  # the filter kept the demo model's names
    at.slider(key="driving_det_threshold").set_value(0.05).run()
    _ok(at)
    assert set(at.dataframe[0].value["class"]) == {"passenger car"}  # what the tiny detector finds
    assert "Detections (KITTI text)" in [b.proto.label for b in at.get("download_button")]
    assert "detections shown" in _image_captions(at)[0] and "instances shown" in _image_captions(at)[1]


def test_own_anomaly_scenes_find_smiyc_masks_and_say_what_is_wrong_with_a_scene(demo_env, tmp_path, monkeypatch):
    """$SUITE_ANOMALY_DATA in the SegmentMeIfYouCan layout: <name>_labels_semantic.png masks were not found, an
    undecodable mask was a traceback, one of another size was shown silently, and a broken scene image was
    answered with 'upload a PNG or JPEG photo' though nothing was uploaded."""
    root = tmp_path / "own"
    (root / "images").mkdir(parents=True)
    (root / "labels_masks").mkdir()
    label = np.zeros((48, 64), np.uint8)
    label[10:20, 10:30] = 1
    for name in ("a_good", "b_undecodable_mask", "c_other_size_mask", "d_broken_image"):
        cv2.imwrite(str(root / "images" / f"{name}.png"), np.full((48, 64, 3), 120, np.uint8))
        cv2.imwrite(str(root / "labels_masks" / f"{name}_labels_semantic.png"), label)
    (root / "labels_masks" / "b_undecodable_mask_labels_semantic.png").write_bytes(b"\x89PNG not really")
    cv2.imwrite(str(root / "labels_masks" / "c_other_size_mask_labels_semantic.png"), label[:, :40])
    (root / "images" / "d_broken_image.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    monkeypatch.setenv(dm.ENV_ANOMALY_DATA, str(root))
    at = _page("driving")
    shown = {}
    for name in ("a_good", "b_undecodable_mask", "c_other_size_mask", "d_broken_image"):
        scenes = at.selectbox(key="driving_scene")
        scenes.select_index(scenes.options.index(name)).run()
        assert not at.exception, (name, [e.value for e in at.exception])
        shown[name] = (_image_captions(at), _texts(at.warning), _texts(at.error))
    assert "Ground truth: orange anomaly, grey void (ignored)" in shown["a_good"][0] and not shown["a_good"][2]
    assert "Ground truth not shown" in shown["b_undecodable_mask"][1]
    assert "b_undecodable_mask_labels_semantic.png" in shown["b_undecodable_mask"][1]
    assert "is 40x48 but its image c_other_size_mask.png is 64x48" in shown["c_other_size_mask"][1]
    assert not any("Ground truth" in c for c in shown["c_other_size_mask"][0])
    error = shown["d_broken_image"][2]
    assert "d_broken_image.png: cannot decode image" in error and "upload" not in error.lower()


def test_outlier_prob_from_the_kept_outputs_equals_the_models_own():
    from tests.helpers import anomaly_task
    task = anomaly_task(encoder_kwargs={"channels": [4, 8, 16]}, oe_weight=0.5, score="msp").eval()
    task.model.oe_trained.fill_(True)
    task.score_smoothing = 0.0
    image = (np.random.default_rng(0).random((64, 128, 3)) * 255).astype(np.uint8)
    forward = dm.anomaly_forward(task, image)
    assert forward["outlier"] is not None
    got = dm.anomaly_analysis(task, image, "outlier_prob", forward)["score"]
    import cv2
    fitted = cv2.resize(image, forward["size"], interpolation=cv2.INTER_LINEAR) if forward["size"] != (128, 64) else image
    x = torch.from_numpy(fitted.transpose(2, 0, 1).copy()).float().div(255)[None]
    want = task.model.scores(x, ["outlier_prob"], smoothing=0.0)["outlier_prob"][0].numpy()
    from domains.driving.anomaly.predict import score_to_original
    np.testing.assert_allclose(got, score_to_original(want, (64, 128)), rtol=1e-5, atol=1e-6)
