"""Two-class (e.g. lesion benign / malignant, imbalanced) classification: the ranking metrics a clinician reads
(AUROC, average precision, balanced accuracy, sensitivity, specificity) against hand-computed values, the class
weights of the training loss, and the class a Grad-CAM explains."""

from __future__ import annotations

import csv
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from domains.medical.classification.__main__ import main
from shared.classification.metrics import ClassificationMetrics, youden_threshold
from tests.helpers import quiet_trainer, stripes_data, stripes_folder, stripes_task

pytestmark = pytest.mark.usefixtures("one_thread")


def _compute(class_names, *batches) -> dict:
    metrics = ClassificationMetrics(class_names)
    for probs, labels in batches:
        metrics.update(torch.tensor(probs), torch.tensor(labels))
    return {k: v.tolist() if k == "confusion" else float(v) for k, v in metrics.compute().items()}


def test_a_perfect_ranking_below_the_argmax_threshold_differs_from_always_benign():
    """9 benign at p_malignant 0.1, 1 malignant at 0.45: argmax calls all benign, as "always benign" would (acc
    0.9, macro F1 0.47, sensitivity 0), but the ranking is perfect: AUROC and average precision 1."""
    out = _compute(["benign", "malignant"], ([[0.9, 0.1]] * 9 + [[0.55, 0.45]], [0] * 9 + [1]))
    assert out["acc"] == pytest.approx(0.9) and out["f1_macro"] == pytest.approx(9 / 19)  # (18/19 + 0) / 2
    assert out["auroc"] == 1.0 and out["average_precision"] == 1.0
    assert out["balanced_accuracy"] == 0.5  # (1 + 0) / 2
    assert out["sensitivity"] == out["recall_malignant"] == 0.0
    assert out["specificity"] == out["recall_benign"] == 1.0
    # always benign at 0.2 ranks nothing: every pair tied, AUROC 1/2
    assert _compute(["benign", "malignant"], ([[0.8, 0.2]] * 10, [0] * 9 + [1]))["auroc"] == 0.5


def test_binary_ranking_metrics_by_hand_over_two_batches():
    # labels 0 0 1 1, p_positive 0.1 0.6 | 0.4 0.8: of the 4 (positive, negative) pairs 3 are ordered right
    # (0.4 < 0.6 is not): AUROC 3/4. Ranked 0.8+ 0.6- 0.4+ 0.1-: precision 1 at recall 1/2, 2/3 at recall 1,
    # so average precision 1/2 * 1 + 1/2 * 2/3 = 5/6. Argmax: 0 1 0 1, each class half right.
    out = _compute(["neg", "pos"], ([[0.9, 0.1], [0.4, 0.6]], [0, 0]), ([[0.6, 0.4], [0.2, 0.8]], [1, 1]))
    assert out["auroc"] == pytest.approx(3 / 4) and out["average_precision"] == pytest.approx(5 / 6)
    assert out["sensitivity"] == out["specificity"] == out["balanced_accuracy"] == 0.5


def test_a_split_without_a_positive_has_no_auroc_rather_than_0():
    """torchmetrics says AUROC 0 (and warns) when the split has one class: read as "ranked every one wrong"."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = _compute(["benign", "malignant"], ([[0.9, 0.1], [0.3, 0.7]], [0, 0]))
    assert all(math.isnan(out[k]) for k in ("auroc", "average_precision", "sensitivity", "recall_malignant"))
    assert out["specificity"] == 0.5 and out["balanced_accuracy"] == 0.5  # over the classes in the split


def test_more_classes_get_the_macro_one_vs_rest_auroc_over_the_classes_in_the_split():
    # labels a a b c; one-vs-rest AUROC of a: positives 0.6 0.3 vs 0.35 0.2 -> 3/4; of b: 0.45 vs 0.3 0.5 0.3
    # -> 2/3; of c: 0.5 vs 0.1 0.2 0.2 -> 1. Argmax a b b c: recalls 1/2, 1, 1.
    probs = [[0.6, 0.3, 0.1], [0.3, 0.5, 0.2], [0.35, 0.45, 0.2], [0.2, 0.3, 0.5]]
    out = _compute(["a", "b", "c"], (probs, [0, 0, 1, 2]))
    assert out["auroc"] == pytest.approx((3 / 4 + 2 / 3 + 1) / 3)
    assert out["balanced_accuracy"] == pytest.approx(5 / 6)
    assert not {"sensitivity", "specificity", "average_precision"} & set(out)  # no positive class to name
    # class c with no item: left out of the mean (a: 0.6 0.3 vs 0.35 -> 1/2; b: 0.45 vs 0.3 0.5 -> 1/2)
    assert _compute(["a", "b", "c"], (probs[:3], [0, 0, 1]))["auroc"] == pytest.approx(1 / 2)


# ------------------------------------------------------------------------------------------- class weights


def test_class_weights_weight_the_training_loss_and_travel_in_the_state_dict():
    torch.manual_seed(0)
    task = stripes_task(class_weights=[1, 9])
    batch = {"image": torch.randn(4, 1, 16, 16), "label": torch.tensor([0, 0, 0, 1])}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a trainer
        loss = task.training_step(batch, 0)
    logits = task.model(batch["image"])
    torch.testing.assert_close(loss, F.cross_entropy(logits, batch["label"], weight=torch.tensor([1.0, 9.0])))
    # by hand: sum_i w_y(i) * nll_i / sum_i w_y(i)
    nll = -logits.log_softmax(1)[torch.arange(4), batch["label"]]
    torch.testing.assert_close(loss, (nll[:3].sum() + 9 * nll[3]) / 12)
    assert task.state_dict()["class_weights"].tolist() == [1.0, 9.0]
    assert "class_weights" not in stripes_task().state_dict()  # unweighted: checkpoints without it still load


@pytest.mark.parametrize("weights", [[1.0, 9.0, 1.0], [1.0], [1.0, -1.0], [1.0, float("nan")]])
def test_class_weights_other_than_one_weight_per_class_are_refused_naming_the_option(weights):
    with pytest.raises(ValueError, match=r"--model\.class_weights .* one finite weight >= 0 per class, in the "
                       r"order of class_names \['h', 'v'\] \(2 weights\)"):  # fmt: skip
        stripes_task(class_weights=weights)
    with pytest.raises(ValueError, match=r"--model\.class_weights \[0, 0\] are all 0"):
        stripes_task(class_weights=[0, 0])


def _cli_args(root) -> list[str]:
    """The stripes image folder ``root`` through the CLI: tiny_cnn at 16 px, batches of 4, quiet."""
    return [
        "--data.data_format", "imagefolder", "--data.data_path", str(root), "--data.class_names", "[h, v]",
        "--data.image_size", "[16, 16]", "--data.batch_size", "4", "--data.num_workers", "0",
        "--model.network.init_args.backbone", "tiny_cnn", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------- Grad-CAM class


@pytest.mark.parametrize("cam_class", [None, "v"])
def test_grad_cam_explains_cam_class_or_the_predicted_one_and_the_csv_says_which(tmp_path, cam_class):
    root = stripes_folder(tmp_path / "data", {"train": 1, "val": 1, "test": 2})
    task, asked = stripes_task(cam_class=cam_class), []
    with torch.no_grad():  # every image predicted "h": cam_class "v" must be explained though never predicted
        task.model.head.bias.copy_(torch.tensor([50.0, -50.0]))
    grad_cam = task.grad_cam
    task.grad_cam = lambda images, classes: asked.extend(classes.tolist()) or grad_cam(images, classes)
    task.predict_dir = str(tmp_path / "pred")
    quiet_trainer().predict(task, stripes_data(root))
    with (tmp_path / "pred/probabilities.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and len(asked) == 4
    assert [r["predicted"] for r in rows] == ["h"] * 4
    expected = ["h"] * 4 if cam_class is None else ["v"] * 4
    assert [r["cam_class"] for r in rows] == expected == [task.class_names[c] for c in asked]


def test_a_cam_class_that_is_not_a_class_is_refused_naming_the_option():
    with pytest.raises(ValueError, match=r"--model\.cam_class 'malignant' is not a class: one of \['h', 'v'\]"):
        stripes_task(cam_class="malignant")


# ------------------------------------------------------------------------------------- decision threshold


def test_youden_threshold_by_hand_and_undefined_for_one_class():
    # labels 0 0 1 1 at 0.1 0.4 0.35 0.8. p >= 0.8: TPR 1/2, FPR 0 -> J 1/2; >= 0.4: 1/2, 1/2 -> 0;
    # >= 0.35: 1, 1/2 -> 1/2; >= 0.1: 1, 1 -> 0. Two ties at J 1/2: the higher threshold, 0.8.
    labels = torch.tensor([0, 0, 1, 1])
    assert youden_threshold(torch.tensor([0.1, 0.4, 0.35, 0.8]), labels) == pytest.approx(0.8)
    assert youden_threshold(torch.tensor([0.1, 0.4, 0.6, 0.8]), labels) == pytest.approx(0.6)  # J 1 at 0.6
    assert youden_threshold(torch.tensor([0.1, 0.4]), torch.tensor([0, 0])) is None


def test_a_decision_threshold_moves_the_thresholded_metrics_not_the_ranking_ones():
    """The 9 benign at 0.1 and 1 malignant at 0.45 of the argmax case above, decided at 0.3: all right."""
    metrics = ClassificationMetrics(["benign", "malignant"])
    metrics.update(torch.tensor([[0.9, 0.1]] * 9 + [[0.55, 0.45]]), torch.tensor([0] * 9 + [1]))
    at_argmax, at_03 = metrics.compute(), metrics.compute(threshold=0.3)
    assert float(at_argmax["sensitivity"]) == 0.0 and at_argmax["confusion"].tolist() == [[9, 0], [1, 0]]
    assert float(at_03["sensitivity"]) == float(at_03["acc"]) == float(at_03["f1_macro"]) == 1.0
    assert at_03["confusion"].tolist() == [[9, 0], [0, 1]]
    assert float(at_03["auroc"]) == float(at_argmax["auroc"]) == 1.0
    assert float(at_03["ece"]) == float(at_argmax["ece"])  # calibration reads the probabilities


@pytest.mark.parametrize(
    "value, match",
    [(1.5, r"must be in \(0, 1\), 'youden' or null, got 1\.5"), (0, r"must be in \(0, 1\)")],
    ids=["above-1", "zero"],
)
def test_a_decision_threshold_out_of_range_is_refused_naming_the_option(value, match):
    with pytest.raises(ValueError, match=r"--model\.decision_threshold " + match):
        stripes_task(decision_threshold=value)


def test_a_decision_threshold_needs_two_classes():
    from shared.classification.model import ImageClassifier
    from shared.classification.task import ClassificationTask

    with pytest.raises(ValueError, match=r"--model\.decision_threshold 'youden' needs two classes .* has 3"):
        ClassificationTask(ImageClassifier(3, "tiny_cnn", in_channels=1), ["a", "b", "c"], decision_threshold="youden")


def test_cli_class_weights_and_youden_are_fitted_logged_kept_in_the_checkpoint_and_decide_test_and_predict(
    tmp_path, monkeypatch
):
    """One fit through the CLI with class weights and the Youden threshold (each used to have a fit of its own:
    the same pipeline, checked for different outputs): the binary metrics logged, both kept in the checkpoint,
    and a test / predict from it using them."""
    monkeypatch.chdir(tmp_path)
    root = stripes_folder(tmp_path / "data", {"train": 2, "val": 3, "test": 3})
    args = _cli_args(root)
    cli = main(["fit", *args, "--model.class_weights", "[1, 9]", "--model.decision_threshold", "youden",
                "--trainer.max_steps", "1"])  # fmt: skip
    task = cli.model
    # class weights: in the task, the binary metrics logged at validation
    assert task.class_weights.tolist() == [1.0, 9.0]
    assert {"auroc", "average_precision", "balanced_accuracy", "sensitivity", "specificity"} <= set(
        task.last_metrics["val"]
    )
    assert {"val/sensitivity", "val/specificity", "val/auroc"} <= set(cli.trainer.logged_metrics)
    # Youden: fitted at validation
    fitted = float(task.fitted_threshold)
    assert 0 < fitted <= 1 and cli.trainer.logged_metrics["val/decision_threshold"] == pytest.approx(fitted)
    last = next(tmp_path.rglob("last.ckpt"))
    state = torch.load(last, weights_only=True)["state_dict"]
    assert state["class_weights"].tolist() == [1.0, 9.0]
    assert float(state["fitted_threshold"]) == pytest.approx(fitted)
    # a new process's test and predict (no threshold given) decide at the checkpoint's fitted threshold, and the
    # checkpoint's class weights come back with it
    cli = main(["test", *args, "--ckpt_path", str(last)])
    assert cli.model.class_weights.tolist() == [1.0, 9.0] and "auroc" in cli.model.last_metrics["test"]
    assert cli.model.decision_threshold == pytest.approx(fitted)
    assert cli.model.last_metrics["test"]["decision_threshold"] == pytest.approx(fitted)
    out = tmp_path / "pred"
    main(["predict", *args, "--ckpt_path", str(last), "--data.predict_path", str(root / "test"),
          "--model.predict_dir", str(out), "--model.cam", "false"])  # fmt: skip
    with (out / "probabilities.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    # the CSV's probabilities read back as the model's float32 scores (shortest exact text), so the decision at
    # the threshold is reproducible from the file, also for an image at it (Youden's is a validation score)
    assert [r["predicted"] for r in rows] == ["v" if float(r["p_v"]) >= fitted else "h" for r in rows]
    # a threshold given on the command line wins over the fitted one
    cli = main(["test", *args, "--ckpt_path", str(last), "--model.decision_threshold", "0.999"])
    assert cli.model.last_metrics["test"]["decision_threshold"] == pytest.approx(0.999)
    with pytest.raises(ValueError, match=r"--model\.class_weights \[1\.0, 9\.0, 1\.0\] must hold one"):
        main(["fit", *args, "--model.class_weights", "[1, 9, 1]", "--trainer.max_steps", "1"])
