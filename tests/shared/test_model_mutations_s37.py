"""Lines of the shared model layer whose fault no test noticed (a mutation audit): the classifier's
probabilities, decision threshold, label smoothing and Grad-CAM class; backbone freezing; the ViT on
non-square inputs; the time budget's plan; the warm-up of a short run; and the refusals of networks or class
names that do not fit. Each test states the value the code must give, derived by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace as NS

import pytest
import torch

from shared.backbones import FreezableBackbone, create_backbone
from shared.budget import FitScheduleToBudget
from shared.classification.model import ImageClassifier
from shared.classification.task import ClassificationTask
from shared.labelled_task import check_distinct_class_names
from shared.networks import build_network
from shared.optim import WarmupCosine
from tests.helpers import STRIPE_CLASSES
from tests.shared.test_budget import FakeClock

pytestmark = pytest.mark.usefixtures("one_thread")


def _eval_task(num_classes: int = 2, **kw) -> ClassificationTask:
    """A grey ``tiny_cnn`` classification task in eval mode (its batch norms on running statistics), with
    ``num_classes`` classes a, b, ... and logging switched off (no trainer)."""
    torch.manual_seed(0)
    names = [chr(ord("a") + i) for i in range(num_classes)]
    task = ClassificationTask(ImageClassifier(num_classes, "tiny_cnn", in_channels=1), names, **kw).eval()
    task.log = lambda *a, **k: None
    return task


def _fix_logits(task: ClassificationTask, logits: list[float]) -> None:
    """Make the classifier give ``logits`` for every image (head weights 0, bias ``logits``)."""
    with torch.no_grad():
        task.model.head.weight.zero_()
        task.model.head.bias.copy_(torch.tensor(logits))


# ------------------------------------------------------------------------------- classifier probabilities


def test_predict_gives_the_softmax_over_the_classes_of_the_networks_logits():
    task = _eval_task(3)
    task.on_predict_start()
    images = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        out = task.predict_step(
            {"image": images, "path": ["x.png", "y.png"], "label": torch.tensor([0, 1])}, 0
        )
        expected = task.model(images).softmax(1)
    torch.testing.assert_close(out["probs"], expected, rtol=0, atol=0)
    torch.testing.assert_close(out["probs"].sum(1), torch.ones(2))  # one distribution per image
    assert out["predicted"].tolist() == expected.argmax(1).tolist()


@pytest.mark.parametrize("stage", ["val", "test"])
def test_evaluation_feeds_the_metrics_each_images_class_probabilities(stage):
    """A softmax over the batch instead of the classes made every metric read the wrong numbers."""
    task = _eval_task(2)
    images, labels = torch.rand(3, 1, 32, 32), torch.tensor([0, 1, 1])
    with torch.no_grad():
        task._evaluation_step({"image": images, "label": labels}, stage)
        expected = task.model(images).softmax(1)
    probs, got_labels = task.metrics[stage].split()
    torch.testing.assert_close(probs, expected, rtol=0, atol=0)
    torch.testing.assert_close(probs.sum(1), torch.ones(3))
    assert got_labels.tolist() == [0, 1, 1]


# ------------------------------------------------------------------------------------ decision threshold


def _youden_task() -> tuple[ClassificationTask, dict]:
    """A two-class task with ``decision_threshold youden``, outside a sanity check; returns it and the dict
    its ``log_dict`` fills."""
    task, logged = _eval_task(2, decision_threshold="youden"), {}
    task.log_dict = lambda values, **k: logged.update({k: float(v) for k, v in values.items()})
    task._trainer = NS(sanity_checking=False)
    return task, logged


def test_youden_is_fitted_at_validation_on_the_positive_class_probability():
    # p(b) 0.05 0.2 0.35 | 0.4 0.7 0.9 for labels 0 0 0 | 1 1 1: at p >= 0.4 every item is right (J = 1), the
    # highest such threshold; fitted on p(a) instead, no threshold separates them
    task, logged = _youden_task()
    p1 = torch.tensor([0.05, 0.2, 0.35, 0.4, 0.7, 0.9])
    task.metrics["val"].update(torch.stack([1 - p1, p1], 1), torch.tensor([0, 0, 0, 1, 1, 1]))
    task._log_epoch_metrics("val")
    assert float(task.fitted_threshold) == pytest.approx(0.4)
    assert logged["val/decision_threshold"] == pytest.approx(0.4)
    assert task.last_metrics["val"]["confusion"] == [[3, 0], [0, 3]]


def test_the_threshold_fitted_at_validation_decides_test_and_is_not_refitted_on_it():
    # test: p(b) 0.1 0.4 | 0.7 0.8 for labels 0 0 | 1 1. At the validation's 0.3 the benign at 0.4 is called
    # malignant: confusion [[1, 1], [0, 2]]; refitted on test (0.7) it would read a perfect [[2, 0], [0, 2]]
    task, logged = _youden_task()
    task.fitted_threshold.fill_(0.3)
    p1 = torch.tensor([0.1, 0.4, 0.7, 0.8])
    task.metrics["test"].update(torch.stack([1 - p1, p1], 1), torch.tensor([0, 0, 1, 1]))
    task._log_epoch_metrics("test")
    assert float(task.fitted_threshold) == pytest.approx(0.3)
    assert logged["test/decision_threshold"] == pytest.approx(0.3)
    assert task.last_metrics["test"]["confusion"] == [[1, 1], [0, 2]]
    assert task.last_metrics["test"]["acc"] == pytest.approx(0.75)


# ------------------------------------------------------------------------------------------- training loss


def test_label_smoothing_reaches_the_training_loss():
    # logits (0, ln 3) for every image: p = (1/4, 3/4). Label b smoothed by 0.2 over 2 classes is the target
    # (0.1, 0.9): loss -(0.1 ln 1/4 + 0.9 ln 3/4) = 0.39754 (unsmoothed: -ln 3/4 = 0.28768)
    task = _eval_task(2, label_smoothing=0.2).train()
    _fix_logits(task, [0.0, math.log(3)])
    loss = task.training_step({"image": torch.rand(4, 1, 32, 32), "label": torch.tensor([1, 1, 1, 1])}, 0)
    assert float(loss) == pytest.approx(-(0.1 * math.log(0.25) + 0.9 * math.log(0.75)), abs=1e-6)


# ---------------------------------------------------------------------------------------------- Grad-CAM


# ------------------------------------------------------------------------------------- backbone freezing


def test_freezing_a_network_in_training_mode_puts_its_backbone_in_eval_mode_at_once():
    """Frozen without a later ``train()`` call (a plain training loop), the BatchNorm statistics of the
    transferred backbone drifted with every batch."""

    class Network(FreezableBackbone, torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = create_backbone("tiny_cnn", in_channels=1)

    network = Network()  # built in training mode
    norms = [m for m in network.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in norms]
    network.set_backbone_frozen(True)
    assert norms and not network.backbone.training and not any(m.training for m in norms)
    network.backbone(torch.rand(2, 1, 32, 32))
    assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before, strict=True))
    network.set_backbone_frozen(False)  # unfrozen: it follows the network's training mode again
    assert network.backbone.training and all(m.training for m in norms)


# ------------------------------------------------------------------------------------ ViT on other sizes


def _tiny_vit():
    """A one-layer ViT for 64x64 inputs in 16-pixel patches: a 4x4 token grid."""
    torch.manual_seed(0)
    return create_backbone(
        "vit", in_channels=1, image_size=64, patch_size=16, num_layers=1, num_heads=2, hidden_dim=32,
        mlp_dim=64, pyramid_channels=8,
    ).eval()  # fmt: skip


def test_vit_position_embedding_is_resampled_to_the_inputs_rows_and_columns():
    vit = _tiny_vit()
    g, d = vit.grid_size, vit.net.encoder.pos_embedding.shape[-1]
    with torch.no_grad():
        # every token of grid row r holds r: resampled to 4 rows x 8 columns (the rows as they are), the token
        # of row r, column c still holds r; the class token stays first
        rows = torch.arange(g, dtype=torch.float32)[:, None, None].expand(g, g, d)
        vit.net.encoder.pos_embedding[0, 1:] = rows.reshape(g * g, d)
        vit.net.encoder.pos_embedding[0, 0] = -1.0
        pos = vit._position_embedding(g, 2 * g)
    assert pos.shape == (1, 1 + g * 2 * g, d)
    assert torch.equal(pos[0, 0], torch.full((d,), -1.0))
    expected = torch.arange(g, dtype=torch.float32)[:, None, None].expand(g, 2 * g, d).reshape(-1, d)
    torch.testing.assert_close(pos[0, 1:], expected, atol=1e-5, rtol=0)


def test_vit_feature_map_holds_the_patch_tokens_without_the_class_token():
    vit, seen = _tiny_vit(), {}
    vit.net.encoder.ln.register_forward_hook(lambda m, a, out: seen.update(tokens=out))
    vit.same.register_forward_pre_hook(lambda m, a: seen.update(fmap=a[0]))
    with torch.no_grad():
        vit(torch.rand(2, 1, 64, 128))
    tokens, fmap = seen["tokens"], seen["fmap"]  # (2, 1 + 4 * 8, D), (2, D, 4, 8)
    # token 1 + r * 8 + c (row-major after the class token) is the map's pixel (r, c)
    torch.testing.assert_close(fmap.flatten(2).transpose(1, 2), tokens[:, 1:], rtol=0, atol=0)


# --------------------------------------------------------------------------------- time budget, warm-up


def test_after_a_slow_first_step_the_budget_returns_to_the_plan_and_never_past_it():
    # budget 100 s, plan 100 steps, every step checked over a window of 1 step. Step 1 takes 10 s: 90 s left
    # at 10 s/step ends the run at step 10. Steps 2, 3 take 0.1 s: ~900 steps fit, so the run goes back to the
    # planned 100, not beyond it
    callback = FitScheduleToBudget(seconds=100, every=1, window=1, clock=FakeClock([0.0, 10.0, 0.1]))
    callback.planned = 100
    trainer = NS(global_step=0, fit_loop=NS(epoch_loop=NS(max_steps=100)), callbacks=[])  # no max_time
    module = NS(schedule_steps=100)
    callback.on_train_batch_start(trainer, module, None, 0)
    ends = []
    for step in (1, 2, 3):
        trainer.global_step = step
        callback.on_train_batch_end(trainer, module, None, None, step)
        ends.append((trainer.fit_loop.epoch_loop.max_steps, module.schedule_steps))
    assert ends == [(10, 10), (100, 100), (100, 100)]
    assert callback.adjustments == [(1, 10), (2, 100), (3, 100)]


def test_a_warmup_longer_than_the_run_is_cut_to_leave_one_cosine_step():
    # warm-up 10 on a 5-step run: warm-up over steps 0..3 at (step + 1) / 5, the peak at step 4, 0 at the end
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = WarmupCosine(optimizer, warmup_steps=10, total_steps=5)
    assert [schedule.factor(i) for i in range(6)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 0.0])


# -------------------------------------------------------------------------------------------- refusals


def test_a_network_with_other_classes_than_class_names_is_refused():
    with pytest.raises(
        ValueError, match=r"model\.network has 3 classes but class_names lists 2 \(\['h', 'v'\]\)"
    ):
        ClassificationTask(ImageClassifier(3, "tiny_cnn", in_channels=1), STRIPE_CLASSES)


@pytest.mark.parametrize("names", [["car", "person", "car"], []])
def test_class_names_naming_a_class_twice_or_none_are_refused(names):
    with pytest.raises(ValueError, match=r"class_names must be a non-empty list of distinct names"):
        check_distinct_class_names(names)
    check_distinct_class_names(["car", "person"])  # distinct: accepted


def test_a_checkpoints_class_path_of_another_kind_of_network_is_refused():
    spec = {"class_path": "domains.medical.models.UNetSegmenter", "init_args": {"channels": [8, 16]}}
    with pytest.raises(
        TypeError, match=r"model\.network: class_path '.*UNetSegmenter' is not a ImageClassifier"
    ):
        build_network(spec, ImageClassifier)
