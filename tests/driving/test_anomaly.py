"""Road-anomaly scores, outlier pasting, the segmentation task and its CLI on tiny generated scenes."""

from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, roc_auc_score
from torch.utils.data import DataLoader

from domains.driving.anomaly.outliers import (
    OUTLIER_LABEL,
    ROAD_IDS,
    OutlierHead,
    outlier_bce,
    paste_outliers,
    paste_outliers_batch,
    random_shape,
)
from domains.driving.anomaly.predict import image_anomaly_score, overlay_heatmap, road_region
from domains.driving.anomaly.scores import SCORES, AnomalyScoreError, compute_score
from domains.driving.classes import SEMANTIC_CLASSES, SEMANTIC_ID
from shared.segmentation import enet_class_weights
from tests.helpers import anomaly_task, quiet_trainer

C = len(SEMANTIC_CLASSES)
TINY_UNET = {"channels": [4, 8, 16]}

# ------------------------------------------------------------------------------------------------ scores


def test_simple_scores_on_uniform_logits():
    logits = torch.full((2, C, 3, 5), 1.7)
    assert torch.allclose(compute_score("msp", logits), torch.full((2, 3, 5), 1 - 1 / C))
    assert torch.allclose(compute_score("entropy", logits), torch.full((2, 3, 5), math.log(C)), atol=1e-6)
    assert torch.allclose(
        compute_score("energy", logits), torch.full((2, 3, 5), -(1.7 + math.log(C))), atol=1e-5
    )
    assert torch.allclose(compute_score("max_logit", logits), torch.full((2, 3, 5), -1.7))


def test_scores_rank_a_confident_pixel_below_an_unsure_one():
    logits = torch.zeros(1, 3, 1, 2)
    logits[0, 0, 0, 0] = 3.0  # pixel 0: confident class 0; pixel 1: uniform
    for name in ("msp", "max_logit", "energy", "entropy"):
        s = compute_score(name, logits)
        assert s.shape == (1, 1, 2)
        assert s[0, 0, 0] < s[0, 0, 1], name
    # hand values for the confident pixel: p0 = e^3 / (e^3 + 2)
    p0 = math.exp(3) / (math.exp(3) + 2)
    assert compute_score("msp", logits)[0, 0, 0].item() == pytest.approx(1 - p0, rel=1e-5)
    assert compute_score("energy", logits)[0, 0, 0].item() == pytest.approx(
        -math.log(math.exp(3) + 2), rel=1e-6
    )
    entropy = -(p0 * math.log(p0) + 2 * (1 - p0) / 2 * math.log((1 - p0) / 2))
    assert compute_score("entropy", logits)[0, 0, 0].item() == pytest.approx(entropy, rel=1e-5)


def test_sml_uses_the_stored_class_statistics():
    logits = torch.tensor([[4.0, 1.0], [0.0, 3.0]]).T.reshape(
        1, 2, 1, 2
    )  # pixel 0 -> class 0, pixel 1 -> class 1
    stats = {"sml_mean": torch.tensor([2.0, 5.0]), "sml_std": torch.tensor([0.5, 2.0])}
    s = compute_score("sml", logits, stats)
    assert s[0, 0].tolist() == pytest.approx([-(4 - 2) / 0.5, -(3 - 5) / 2.0])
    with pytest.raises(AnomalyScoreError, match="sml_mean"):
        compute_score("sml", logits)


def test_mahalanobis_hand_values():
    feats = torch.tensor([[1.0, 0.0], [3.0, 4.0]]).T.reshape(1, 2, 1, 2)
    stats = {
        "feat_mean": torch.tensor([[0.0, 0.0], [10.0, 10.0]]),
        "feat_precision": torch.diag(torch.tensor([1.0, 0.25])),
        "feat_valid": torch.tensor([True, True]),
    }
    s = compute_score("mahalanobis", torch.zeros(1, 2, 1, 2), stats, feats)
    assert s[0, 0].tolist() == pytest.approx([1.0, 9 + 16 * 0.25])
    stats["feat_valid"] = torch.tensor([False, True])  # class 0 never seen: only class 1 counts
    s = compute_score("mahalanobis", torch.zeros(1, 2, 1, 2), stats, feats)
    assert s[0, 0].tolist() == pytest.approx([81 + 100 * 0.25, 49 + 36 * 0.25])


def test_nan_logits_and_unknown_names_give_clear_errors():
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1, 1, 0] = float("nan")
    with pytest.raises(AnomalyScoreError, match=r"non-finite logit.*\(0, 1, 1, 0\)"):
        compute_score("energy", logits)
    assert issubclass(AnomalyScoreError, ValueError)
    with pytest.raises(AnomalyScoreError, match="unknown anomaly score 'foo'.*msp"):
        compute_score("foo", torch.zeros(1, 3, 2, 2))
    with pytest.raises(AnomalyScoreError, match=r"\(B, C, H, W\)"):
        compute_score("msp", torch.zeros(3, 2, 2))


# --------------------------------------------------------------------------------------------- outliers


def _scene(h=48, w=96):
    image = np.full((h, w, 3), 0.4, np.float32)
    mask = np.full((h, w), SEMANTIC_ID["sky"], np.int64)
    mask[h // 2 :] = SEMANTIC_ID["road"]
    mask[:3] = 255
    image[h // 2 :] = 0.3
    return image, mask


def test_pasted_outliers_do_not_overlap_and_label_exactly_the_changed_pixels():
    image, mask = _scene()
    for seed in range(20):
        rng = np.random.default_rng(seed)
        out_img, out_mask, objects = paste_outliers(
            image, mask, rng, num_objects=(2, 4), size_range=(0.2, 0.5), shadow_prob=0.0
        )
        pasted = out_mask == OUTLIER_LABEL
        assert sum(o["pixels"] for o in objects) == pasted.sum()  # disjoint: pixel counts add up
        changed = np.abs(out_img - image).max(axis=-1) > 0
        assert not (changed & ~pasted).any()  # nothing outside the label changed
        assert changed[pasted].mean() > 0.95  # (a texture pixel may equal the background by chance)
        assert (out_mask[mask == 255] == 255).all()  # void stays void
        assert np.array_equal(out_mask[~pasted], mask[~pasted])
        for o in objects:  # each object's pixels lie in its own box
            y0, x0, y1, x1 = o["box"]
            assert pasted[y0:y1, x0:x1].sum() >= o["pixels"]


def test_shadows_only_darken_unlabelled_ground():
    image, mask = _scene()
    shadows = 0
    for seed in range(10):
        out_img, out_mask, objects = paste_outliers(image, mask, np.random.default_rng(seed), shadow_prob=1.0)
        outside = out_mask != OUTLIER_LABEL
        diff = out_img[outside] - image[outside]
        assert (diff <= 1e-6).all()  # outside the objects pixels can only get darker
        assert int((diff < 0).any(axis=-1).sum()) == sum(o["shadow"] for o in objects)
        shadows += sum(o["shadow"] > 0 for o in objects)
    assert shadows > 5


def test_outliers_land_mostly_on_the_road():
    image, mask = _scene()
    on_road = total = 0
    for seed in range(30):
        _, _, objects = paste_outliers(image, mask, np.random.default_rng(seed), road_prob=1.0)
        for o in objects:
            y0, x0, y1, x1 = o["box"]
            cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
            on_road += mask[min(cy, mask.shape[0] - 1), cx] in ROAD_IDS
            total += 1
    assert total > 20 and on_road / total > 0.8


def test_random_shapes_are_nonempty_for_every_kind():
    rng = np.random.default_rng(0)
    for kind in ("polygon", "ellipse", "blob"):
        shape = random_shape(rng, 12, 20, kind)
        assert shape.shape == (12, 20) and shape.any() and not shape.all()


def test_paste_batch_keeps_shapes_and_prob_zero_is_identity():
    images = torch.rand(3, 3, 32, 64)
    masks = torch.zeros(3, 32, 64, dtype=torch.long)
    same_i, same_m, n = paste_outliers_batch(images, masks, np.random.default_rng(0), prob=0.0)
    assert n == 0 and torch.equal(same_i, images) and torch.equal(same_m, masks)
    new_i, new_m, n = paste_outliers_batch(images, masks, np.random.default_rng(0), prob=1.0)
    assert n >= 3 and new_i.shape == images.shape and new_i.dtype == images.dtype
    assert (new_m == OUTLIER_LABEL).any(dim=(1, 2)).all()
    with pytest.raises(ValueError, match="num_objects"):
        paste_outliers_batch(images, masks, np.random.default_rng(0), num_objects=(3, 1))
    # only the images drawn for pasting change; the given tensors are never written to
    kept_i, kept_m = images.clone(), masks.clone()
    half_i, half_m, n = paste_outliers_batch(images, masks, np.random.default_rng(0), prob=0.5)
    drawn = [bool((half_m[i] == OUTLIER_LABEL).any()) for i in range(3)]
    assert n >= 1 and any(drawn) and not all(drawn), drawn
    for i in range(3):
        assert torch.equal(half_i[i], images[i]) is not drawn[i]
    assert torch.equal(images, kept_i) and torch.equal(masks, kept_m)


def test_outlier_bce_hand_values_and_head_shape():
    z = torch.tensor([2.0, -1.0, 0.0, 3.0])
    outlier = torch.tensor([True, False, False, False])
    inlier = ~outlier

    def bce(x, y):
        return -(y * math.log(1 / (1 + math.exp(-x))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-x))))

    losses_in = sorted([bce(-1.0, 0), bce(0.0, 0), bce(3.0, 0)], reverse=True)
    plain = (bce(2.0, 1) + sum(losses_in) / 3) / 2  # hard_fraction=0: outlier mean and inlier mean, halved
    assert outlier_bce(z, outlier, inlier, hard_fraction=0.0).item() == pytest.approx(plain, rel=1e-5)
    z2 = torch.tensor([2.0, -1.0, 0.0, 3.0, -2.0, -3.0, -4.0, -5.0])
    out2 = torch.zeros(8, dtype=torch.bool)
    out2[0] = True
    ins = [bce(v, 0) for v in z2[1:].tolist()]
    hard = sum(sorted(ins, reverse=True)[:4]) / 4  # k = max(min_hard=1, 4 * 1) = 4
    expected = (bce(2.0, 1) + 0.5 * sum(ins) / 7 + 0.5 * hard) / 2
    got = outlier_bce(z2, out2, ~out2, hard_fraction=0.5, min_hard=1).item()
    assert got == pytest.approx(expected, rel=1e-5)
    assert outlier_bce(z, torch.zeros(4, dtype=torch.bool), inlier).item() == 0.0  # nothing pasted: no loss
    head = OutlierHead([4, 8, 16])
    feats = [torch.rand(2, 4, 16, 32), torch.rand(2, 8, 8, 16), torch.rand(2, 16, 4, 8)]
    assert head(feats).shape == (2, 1, 16, 32)
    # the per-level projection is the 1x1 conv of the upsampled concatenation, computed cheaply
    size = feats[0].shape[-2:]
    stacked = torch.cat(
        [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]],
        dim=1,
    )
    torch.testing.assert_close(head(feats), head.net(stacked), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------- heatmaps, image score


def test_overlay_heatmap_blends_and_checks_shapes():
    image = np.full((8, 10, 3), 100, np.uint8)
    score = np.linspace(0, 1, 80, dtype=np.float32).reshape(8, 10)
    assert np.array_equal(overlay_heatmap(image, score, alpha=0.0), image)
    full = overlay_heatmap(image, score, alpha=1.0)
    jet = cv2.cvtColor(
        cv2.applyColorMap((score * 255 + 0.5).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB
    )
    assert np.abs(full.astype(int) - jet.astype(int)).max() <= 1
    assert overlay_heatmap(torch.rand(3, 8, 10), torch.from_numpy(score)).shape == (8, 10, 3)
    with pytest.raises(ValueError, match="does not match"):
        overlay_heatmap(image, score[:4])
    with pytest.raises(ValueError, match="NaN"):
        overlay_heatmap(image, np.full((8, 10), np.nan))


def test_road_region_fills_objects_on_the_road_and_the_image_score():
    pred = np.full((10, 12), SEMANTIC_ID["sky"])
    pred[5:] = SEMANTIC_ID["road"]
    pred[6:8, 4:6] = SEMANTIC_ID["car"]  # an object inside the road
    pred[8:, 9:11] = SEMANTIC_ID["building"]  # touching the bottom edge: counts as on the road
    region = road_region(pred)
    assert region[5:].all() and not region[:5].any()
    score = np.zeros((10, 12))
    score[0, 0] = 100.0  # a hot pixel in the sky is ignored
    score[6, 4] = 5.0
    assert image_anomaly_score(score, region, "quantile", q=1.0) == 5.0
    assert image_anomaly_score(score, region, "topk", k=2) == 2.5
    assert image_anomaly_score(score, None, "quantile", q=1.0) == 100.0
    assert not road_region(np.zeros((4, 4), int) + SEMANTIC_ID["sky"]).any()


# ------------------------------------------------------------------------------------------------- task


@pytest.mark.parametrize(
    "encoder, kwargs",
    [
        ("unet_encoder", TINY_UNET),
        ("resnet18", {}),
        (
            "vit",
            {
                "image_size": 32,
                "patch_size": 16,
                "num_layers": 1,
                "num_heads": 2,
                "hidden_dim": 16,
                "mlp_dim": 32,
                "pyramid_channels": 16,
            },
        ),
    ],
)
def test_segmenter_builds_on_cnn_unet_and_transformer(encoder, kwargs):
    task = anomaly_task(encoder=encoder, encoder_kwargs=kwargs, oe_weight=0.5)
    images = torch.rand(2, 3, 32, 96)
    assert task(images).shape == (2, C, 32, 96)
    task.model.oe_trained.fill_(True)
    maps = task.anomaly_map(images)
    assert maps.shape == (2, 32, 96) and ((maps >= 0) & (maps <= 1)).all()  # outlier_prob
    assert task.anomaly_map(torch.rand(3, 30, 90), score="entropy").shape == (1, 30, 90)  # padded inside
    # before any outlier-exposure step: another score is still there (it raised the outlier_prob error)
    task.model.oe_trained.fill_(False)
    energy = task.anomaly_map(images, score="energy")
    assert energy.shape == (2, 32, 96) and not energy.requires_grad  # no graph kept: maps for numpy and plots
    with pytest.raises(ValueError, match=r"not had an OE step yet; choose a score that needs none, e.g. 'energy'"):
        task.anomaly_map(images)


def _toy_batch(n=4, h=32, w=64, seed=0):
    """Sky above road, a car box: learnable from colour alone."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 3, h, w)
    masks = torch.full((n, h, w), SEMANTIC_ID["sky"], dtype=torch.long)
    images[:, 2, : h // 2] = 0.9
    images[:, :, h // 2 :] = 0.35
    masks[:, h // 2 :] = SEMANTIC_ID["road"]
    for i in range(n):
        x = int(torch.randint(0, w - 12, (1,), generator=g))
        images[i, 0, h // 2 : h // 2 + 6, x : x + 12] = 0.9
        masks[i, h // 2 : h // 2 + 6, x : x + 12] = SEMANTIC_ID["car"]
    images += 0.03 * torch.randn(images.shape, generator=g)
    return {"image": images.clamp(0, 1), "mask": masks, "name": [f"t{i}" for i in range(n)]}


@pytest.mark.parametrize(
    ("oe_weight", "objective"), [(0.0, "extra_logit"), (0.5, "extra_logit"), (0.5, "both")]
)
def test_loss_falls_on_tiny_data(oe_weight, objective):
    torch.manual_seed(0)
    task = anomaly_task(encoder_kwargs=TINY_UNET, oe_weight=oe_weight, oe_objective=objective, oe_prob=1.0)
    opt = torch.optim.Adam(task.parameters(), lr=1e-2)
    batch = _toy_batch(n=2)  # two images: the margins below as with four, at half the steps' cost
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a trainer
        for step in range(25):
            loss = task.training_step(batch, step)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert bool(task.model.oe_trained) == (oe_weight > 0)
    # A falling loss alone does not prove the network looks at the image: one fed blank images still learns
    # "sky above, road below" from the padding (loss ratio ~0.13-0.25) but never finds the car, whose place
    # only the pixels tell (car recall 0.00 blind, 0.93-0.97 seeing, in all three cases).
    task.eval()
    with torch.no_grad():
        pred = task(batch["image"]).argmax(dim=1)
    car = batch["mask"] == SEMANTIC_ID["car"]
    recall = (pred[car] == SEMANTIC_ID["car"]).float().mean().item()
    assert recall > 0.5, f"car recall on the trained batch {recall:.2f}"


def test_explicit_class_weights_weight_the_cross_entropy():
    torch.manual_seed(0)
    weights = [1.0] * len(SEMANTIC_CLASSES)
    weights[SEMANTIC_ID["car"]] = 5.0
    task = anomaly_task(encoder_kwargs=TINY_UNET, oe_weight=0.0, class_weighting=weights)
    batch = _toy_batch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a trainer
        loss = task.training_step(batch, 0)
    logits = task(batch["image"])
    expected = F.cross_entropy(logits, batch["mask"], weight=torch.tensor(weights))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() != pytest.approx(F.cross_entropy(logits, batch["mask"]).item(), rel=1e-3)
    for bad in ("median", [1.0, 2.0], [0.0] * len(SEMANTIC_CLASSES)):
        with pytest.raises(ValueError, match="class_weighting"):
            anomaly_task(encoder_kwargs=TINY_UNET, class_weighting=bad)


def test_enet_class_weights_are_counted_from_the_training_data_when_fit_starts():
    torch.manual_seed(0)
    batches = [_toy_batch(seed=s) for s in range(3)]
    task = anomaly_task(
        encoder_kwargs=TINY_UNET,
        oe_weight=0.0,
        class_weighting="enet",
        class_weight_batches=2,
        calibration_batches=1,
    )
    assert torch.equal(task.ce_weight, torch.ones(len(SEMANTIC_CLASSES)))
    quiet_trainer(max_steps=1).fit(task, DataLoader(batches, batch_size=None))
    # by hand: half sky, half road, minus the 6x12 car box per image, over the first 2 batches only
    n = 2 * 4 * 32 * 64
    car = 2 * 4 * 6 * 12
    freq = torch.zeros(len(SEMANTIC_CLASSES), dtype=torch.float64)
    freq[SEMANTIC_ID["sky"]] = (n / 2) / n
    freq[SEMANTIC_ID["road"]] = (n / 2 - car) / n
    freq[SEMANTIC_ID["car"]] = car / n
    assert torch.allclose(task.ce_weight, enet_class_weights(freq), rtol=1e-5)
    assert task.ce_weight[SEMANTIC_ID["car"]] > task.ce_weight[SEMANTIC_ID["road"]]


def test_enet_class_weights_of_a_19_class_model_are_listed_under_cityscapes_train_names(capsys):
    """A 19-class model's weights were listed under the synthetic scenes' names (zip cut them to 12); 19 classes
    are Cityscapes' train ids."""
    task = anomaly_task(encoder_kwargs=TINY_UNET, oe_weight=0.0, class_weighting="enet", class_weight_batches=1,
                        calibration_batches=1, num_classes=19)  # fmt: skip
    quiet_trainer(max_steps=1).fit(task, DataLoader([_toy_batch(seed=0)], batch_size=None))
    listed = next(line for line in capsys.readouterr().out.splitlines() if "class weights" in line)
    assert "bicycle " in listed and "traffic sign " in listed and "lane_marking" not in listed


def test_calibration_stores_sml_statistics_that_checkpoints_carry():
    torch.manual_seed(0)
    task = anomaly_task(encoder_kwargs=TINY_UNET, oe_weight=0.0)
    batches = [_toy_batch(seed=s) for s in range(2)]
    with pytest.raises(AnomalyScoreError, match="never calibrated"):
        task.anomaly_map(batches[0]["image"], score="sml")
    info = task.calibrate(batches)
    assert info["batches"] == 2 and info["pixels"] == 2 * 4 * 32 * 64
    # recompute the SML statistics by hand: max logit over pixels *predicted* as each class
    task.eval()
    with torch.no_grad():
        logits = torch.cat([task(b["image"]) for b in batches])
    top, pred = logits.max(dim=1)
    for c in torch.unique(pred).tolist():
        values = top[pred == c].double()
        if values.numel() > 1:
            assert task.model.sml_mean[c].item() == pytest.approx(values.mean().item(), rel=1e-4, abs=1e-5)
            assert task.model.sml_std[c].item() == pytest.approx(
                values.std(unbiased=False).item(), rel=1e-3, abs=1e-5
            )
    sml = task.anomaly_map(batches[0]["image"], score="sml")
    expected = -(top[:4] - task.model.sml_mean[pred[:4]]) / task.model.sml_std[pred[:4]]
    assert torch.allclose(sml, expected, atol=1e-4)
    # the buffers travel with the state dict
    clone = anomaly_task(encoder_kwargs=TINY_UNET, oe_weight=0.0)
    clone.load_state_dict(task.state_dict())
    assert bool(clone.model.calibrated)
    assert torch.allclose(clone.anomaly_map(batches[0]["image"], score="sml"), sml)
    assert torch.isfinite(clone.anomaly_map(batches[0]["image"], score="mahalanobis")).all()


def test_task_rejects_bad_settings_and_nan_images():
    with pytest.raises(ValueError, match="unknown anomaly score"):
        anomaly_task(encoder_kwargs=TINY_UNET, score="nope")
    with pytest.raises(ValueError, match="outlier-exposure"):
        anomaly_task(encoder_kwargs=TINY_UNET, oe_weight=0.0, score="outlier_prob")
    task = anomaly_task(encoder_kwargs=TINY_UNET, oe_weight=0.0)
    assert task.score == "msp"
    images = torch.rand(1, 3, 32, 32)
    images[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        task.anomaly_map(images)
    # score_maps checks its inputs once for all the scores asked for, naming them
    logits, feats = torch.zeros(1, 3, 2, 2), torch.zeros(1, 4, 2, 2)
    logits[0, 1, 1, 0] = float("nan")
    with pytest.raises(AnomalyScoreError, match=r"score 'msp, energy': 1 non-finite logit.*\(0, 1, 1, 0\)"):
        task.model.score_maps(logits, feats, ["msp", "energy"])
    feats[0, 0, 0, 0] = float("nan")
    assert set(task.model.score_maps(torch.zeros(1, 3, 2, 2), feats, ["msp"])) == {"msp"}  # features unused
    task.model.calibrated.fill_(True)  # mahalanobis reads training statistics (zeros here: only the check runs)
    with pytest.raises(AnomalyScoreError, match="score 'mahalanobis': the decoder features contain NaN"):
        task.model.score_maps(torch.zeros(1, 3, 2, 2), feats, ["msp", "mahalanobis"])
    task.model.oe_trained.fill_(True)
    head = torch.zeros(1, 1, 2, 2)
    head[0, 0, 1, 1] = float("nan")
    with pytest.raises(AnomalyScoreError, match="score 'outlier_prob': the outlier logit contains NaN"):
        task.model.score_maps(torch.zeros(1, 3, 2, 2), None, ["msp", "outlier_prob"], outlier_logit=head)
    # what is asked for is checked before the inputs: an unknown name is named even with broken logits
    with pytest.raises(AnomalyScoreError, match="unknown anomaly score 'foo'"):
        task.model.score_maps(logits, feats, ["foo"])
    assert set(task.supported_scores()) == set(SCORES) - {"outlier_prob"}
    with pytest.raises(ValueError, match="outlier_head_channels"):
        anomaly_task(encoder_kwargs=TINY_UNET, outlier_head_channels=0)
    narrow = anomaly_task(encoder_kwargs=TINY_UNET, outlier_head_channels=16)
    assert narrow.model.outlier_head.net[2].weight.shape == (16, 16, 3, 3)  # the full-resolution 3x3 conv


# -------------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory):
    from domains.driving.synthetic import generate_anomaly, generate_kitti

    root = tmp_path_factory.mktemp("anomaly_data")
    kitti = generate_kitti(root / "kitti", n_images=8, size=(96, 32), frames_per_sequence=1, verbose=False)
    anomaly = generate_anomaly(
        root / "anomaly", n_images=4, size=(96, 32), anomaly_free_fraction=0.25, verbose=False
    )
    return kitti, anomaly


def _cli_args(sets):
    kitti, anomaly = sets
    return [
        "--trainer.accelerator",
        "cpu",
        "--trainer.enable_progress_bar",
        "false",
        "--model.network.init_args.encoder_kwargs",
        '{"channels": [4, 8, 16]}',
        "--model.oe_start_epoch",
        "0",
        "--model.calibration_batches",
        "2",
        "--model.class_weighting",
        "enet",
        "--model.score_smoothing",
        "1.0",
        "--data.data_path",
        str(kitti),
        "--data.anomaly_path",
        str(anomaly),
        "--data.batch_size",
        "2",
        "--data.num_workers",
        "0",
        "--data.image_size",
        "[32, 96]",
    ]


def test_cli_fast_dev_run(tiny_sets, tmp_path, monkeypatch):
    from domains.driving.anomaly.__main__ import main

    monkeypatch.chdir(tmp_path)
    cli = main(["fit", *_cli_args(tiny_sets), "--trainer.fast_dev_run", "1"])
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert bool(cli.model.model.calibrated) and bool(cli.model.model.oe_trained)


def test_cli_fit_test_predict_write_metrics_heatmaps_and_calibrated_checkpoints(
    tiny_sets, tmp_path, monkeypatch, capsys
):
    from domains.driving.anomaly.__main__ import main

    monkeypatch.chdir(tmp_path)
    cli = main(["fit", *_cli_args(tiny_sets), "--trainer.max_epochs", "1"])
    # the class weights say how many batches they counted (the limit, 20, was printed)
    batches = int(cli.trainer.num_training_batches)
    assert batches < 20 and f"(ENet, {batches} training batches)" in capsys.readouterr().out
    ckpt = tmp_path / "lightning_logs/driving_anomaly/checkpoints/last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert bool(state["model.calibrated"]) and bool(
        state["model.oe_trained"]
    )  # statistics written into the checkpoint
    assert not torch.equal(state["model.sml_std"], torch.ones(C))

    cli = main(["test", *_cli_args(tiny_sets), "--ckpt_path", str(ckpt), "--model.score", "sml"])
    results = cli.model.test_results
    assert results["score"] == "sml"  # chosen on the command line, not taken from the checkpoint
    assert set(results["pixel"]) == set(SCORES)
    for m in results["pixel"].values():
        assert 0.0 <= m["ap"] <= 1.0 and 0.0 <= m["fpr95"] <= 1.0
        assert m["num_positive"] > 0 and m["num_pixels"] + m["num_void"] == 4 * 32 * 96
    assert {"sIoU_gt", "PPV", "mean_F1"} <= set(results["component"])
    # 3 images with anomalies, 1 without: each score's AUROC of the image scores test kept, as sklearn's
    targets = results["image_scores"]["targets"]
    assert sorted(targets) == [0, 1, 1, 1]
    # mahalanobis included: its distances of 40-60 had been squashed by torchmetrics' sigmoid into ties at 1.0
    # (AUROC 0.5 for sklearn's 1/3 here)
    for name, auroc in results["image_auroc"].items():
        expected = roc_auc_score(targets, results["image_scores"][name])
        assert auroc == pytest.approx(expected, abs=1e-6), name
    metrics = cli.trainer.callback_metrics
    assert {"test/ap", "test/fpr95", "test/image_auroc", "test/msp/ap"} <= set(metrics)
    assert float(metrics["test/ap"]) == pytest.approx(results["pixel"]["sml"]["ap"])  # the chosen score's
    assert float(metrics["test/pixel_bin_width"]) == 0.0  # 4 tiny images: the exact curve

    out = tmp_path / "heatmaps"
    main(["predict", *_cli_args(tiny_sets), "--ckpt_path", "last", "--model.predict_dir", str(out)])
    overlays = sorted(out.glob("*_overlay.png"))
    assert len(overlays) == 4
    score = np.load(str(overlays[0]).replace("_overlay.png", "_score.npy"))
    assert score.shape == (32, 96) and np.isfinite(score).all() and (score >= 0).all() and (score <= 1).all()
    assert cv2.imread(str(overlays[0])).shape == (32, 96, 3)
    rows = (out / "image_scores.csv").read_text().splitlines()
    assert rows[0].startswith("name,image_score_outlier_prob") and len(rows) == 5
    # the maps written are the maps test scored: sklearn's AP of them over the labels is test's pixel AP
    masks = sorted(tiny_sets[1].glob("labels_masks/*.png"))
    labels = np.stack([cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in masks])
    maps = np.stack([np.load(p) for p in sorted(out.glob("*_score.npy"))])
    known = labels != 255
    written_ap = average_precision_score(labels[known] == 1, maps[known])
    assert results["pixel"]["outlier_prob"]["ap"] == pytest.approx(written_ap, rel=1e-6)

    # your own photos (no labels_masks/, any size, nested), one unreadable: skipped and counted
    own = tmp_path / "own"
    (own / "drive").mkdir(parents=True)
    cv2.imwrite(str(own / "road.jpg"), np.full((70, 150, 3), 100, np.uint8))
    cv2.imwrite(str(own / "drive" / "night.png"), np.full((40, 41), 30, np.uint8))
    (own / "drive" / "broken.jpg").write_bytes(b"\xff\xd8 nope")
    mine = tmp_path / "mine"
    with pytest.warns(UserWarning, match=r"1 of 3 images are not predicted: dropped unreadable: 1"):
        main(["predict", *_cli_args(tiny_sets), "--ckpt_path", "last", "--data.predict_path", str(own),
              "--model.predict_dir", str(mine)])  # fmt: skip
    assert np.load(mine / "road_score.npy").shape == (70, 150) and np.load(mine / "night_score.npy").shape == (40, 41)
    assert [r.split(",")[0] for r in (mine / "image_scores.csv").read_text().splitlines()[1:]] == ["night", "road"]

    # test and predict under bf16 autocast (CPU here; on a GPU this crashed turning a bf16 map into numpy)
    bf16 = ["--ckpt_path", str(ckpt), "--trainer.precision", "bf16-mixed"]
    cli = main(["test", *_cli_args(tiny_sets), *bf16])
    bf16_ap = {name: m["ap"] for name, m in cli.model.test_results["pixel"].items()}
    fp32_ap = {name: m["ap"] for name, m in results["pixel"].items()}
    assert bf16_ap == pytest.approx(fp32_ap, rel=0.1)
    main(["predict", *_cli_args(tiny_sets), *bf16, "--model.predict_dir", str(tmp_path / "bf16")])
    score = np.load(next((tmp_path / "bf16").glob("*_score.npy")))
    assert score.dtype == np.float32 and np.isfinite(score).all()


def test_score_smoothing_is_a_normalised_gaussian_with_hand_values():
    from domains.driving.anomaly.scores import smooth_score_map

    delta = torch.zeros(1, 15, 15)
    delta[0, 7, 7] = 1.0
    out = smooth_score_map(delta, 1.0)
    # 1-D kernel exp(-x^2 / 2) for x in -3..3 sums to 2.50595: centre 1 / 2.50595, neighbour e^-0.5 / 2.50595
    g0, g1 = 1 / 2.505949, math.exp(-0.5) / 2.505949
    assert out[0, 7, 7].item() == pytest.approx(g0 * g0, rel=1e-4)
    assert out[0, 7, 8].item() == pytest.approx(g0 * g1, rel=1e-4)
    assert out.sum().item() == pytest.approx(1.0, rel=1e-5)  # mass kept away from the border
    flat = torch.full((2, 8, 9), 0.3)
    assert torch.allclose(smooth_score_map(flat, 2.0), flat)  # reflect padding keeps constants
    assert smooth_score_map(delta, 0.0) is delta
    from torchvision.transforms.v2.functional import gaussian_blur  # the kernel it writes out for ONNX

    noise = torch.rand(2, 20, 30)
    assert torch.allclose(
        smooth_score_map(noise, 1.0), gaussian_blur(noise[:, None], [7, 7], [1.0, 1.0])[:, 0], atol=1e-6
    )
    task = anomaly_task(encoder_kwargs=TINY_UNET, oe_weight=0.0, score_smoothing=1.0)
    plain = anomaly_task(encoder_kwargs=TINY_UNET, oe_weight=0.0)
    plain.load_state_dict(task.state_dict())
    images = torch.rand(2, 3, 32, 64)
    assert torch.allclose(
        task.anomaly_map(images), smooth_score_map(plain.anomaly_map(images), 1.0), atol=1e-6
    )
    with pytest.raises(ValueError, match="score_smoothing"):
        anomaly_task(encoder_kwargs=TINY_UNET, score_smoothing=-1.0)
