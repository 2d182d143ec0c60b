"""The shared classification pieces: metrics with hand-computed answers, readers and their bad input, the network
on the textbook backbones, learning on tiny data, Grad-CAM against its formula, freezing and weight transfer."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shared.classification.data import (
    ClassificationDataError,
    ClassificationDataModule,
    ClassificationDataWarning,
    Sample,
    check_split_classes,
    interleave_classes,
    read_image_folder,
    read_label_csv,
    subsample_labels,
)
from shared.classification.metrics import ClassificationMetrics
from shared.classification.model import ImageClassifier
from shared.classification.task import ClassificationTask, unit_range
from shared.files import HiddenFilesWarning
from shared.optim import warmup_cosine
from tests.helpers import STRIPE_CLASSES as CLASSES
from tests.helpers import quiet_trainer, stripes, stripes_data, stripes_folder, stripes_task, write_image

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------ metrics


def test_metrics_match_hand_computed_values():
    # true 0,0,1,2; predicted 0 (0.85), 1 (0.65), 1 (0.75), 0 (0.55)
    probs = torch.tensor([[0.85, 0.1, 0.05], [0.3, 0.65, 0.05], [0.2, 0.75, 0.05], [0.55, 0.1, 0.35]])
    labels = torch.tensor([0, 0, 1, 2])
    metrics = ClassificationMetrics(["a", "b", "c"], ece_bins=10)
    metrics.update(probs[:2], labels[:2])  # two batches: states accumulate
    metrics.update(probs[2:], labels[2:])
    out = metrics.compute()
    assert float(out["acc"]) == pytest.approx(0.5)
    # per class: precision 1/2, 1/2, 0; recall 1/2, 1, 0 -> F1 1/2, 2/3, 0 -> macro 7/18
    assert float(out["f1_macro"]) == pytest.approx(7 / 18)
    assert [float(out[f"recall_{c}"]) for c in "abc"] == pytest.approx([0.5, 1.0, 0.0])
    assert out["confusion"].tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    # each confidence alone in its bin: ECE = mean |correct - confidence| = (0.15 + 0.65 + 0.25 + 0.55) / 4
    assert float(out["ece"]) == pytest.approx(0.4)
    metrics.reset()
    metrics.update(probs[:1], labels[:1])
    out = metrics.compute()
    assert float(out["acc"]) == 1.0
    # only class a present (and predicted): b and c have no recall at all, not a recall of 0; macro F1 is a's
    assert float(out["recall_a"]) == 1.0 and torch.isnan(out["recall_b"]) and torch.isnan(out["recall_c"])
    assert float(out["f1_macro"]) == 1.0


# ------------------------------------------------------------------------------------------------ readers


def test_image_folder_reads_splits_and_prints_the_class_table(tmp_path, caplog):
    root = stripes_folder(tmp_path / "data", {"train": 3, "val": 2})  # no test/: test is val
    splits = read_image_folder(root, CLASSES)
    assert {k: len(v) for k, v in splits.items()} == {"train": 6, "val": 4, "test": 4}
    assert sorted({s.label for s in splits["train"]}) == [0, 1]
    dm = ClassificationDataModule(
        "imagefolder", str(root), CLASSES, in_channels=1, image_size=(16, 16), num_workers=0
    )
    with caplog.at_level("INFO"):
        dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[1:] == (1, 16, 16) and batch["label"].dtype == torch.long
    assert "| h | 3 | 2 | 2 |" in caplog.text and "| **all** | 6 | 4 | 4 |" in caplog.text


def test_empty_training_class_folder_is_an_error_naming_it(tmp_path):
    root = stripes_folder(tmp_path / "data", {"train": 2, "val": 1})
    for p in (root / "train" / "v").iterdir():
        p.unlink()
    with pytest.raises(ClassificationDataError, match=r"train/v: class 'v' has no images"):
        read_image_folder(root, CLASSES)


def test_empty_validation_class_is_a_counted_warning_or_with_strict_an_error(tmp_path):
    root = stripes_folder(tmp_path / "data", {"train": 2, "val": 1})
    (root / "val" / "v" / "0.png").unlink()
    with pytest.warns(ClassificationDataWarning, match=r"empty_class: 1 .*val/v"):
        read_image_folder(root, CLASSES)
    with pytest.raises(ClassificationDataError, match=r"val/v: class 'v' has no images .*strict"):
        read_image_folder(root, CLASSES, strict=True)


def test_non_image_file_is_counted_or_with_strict_an_error_naming_it(tmp_path):
    root = stripes_folder(tmp_path / "data", {"train": 2, "val": 1})
    (root / "train" / "h" / "notes.txt").write_text("not an image")
    (root / "train" / "h" / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.warns(ClassificationDataWarning, match=r"not_an_image: 2 .*broken\.png"):
        splits = read_image_folder(root, CLASSES)
    assert len(splits["train"]) == 4
    with pytest.raises(ClassificationDataError, match=r"train/h/broken\.png: not a readable image"):
        read_image_folder(root, CLASSES, strict=True)


def test_unknown_class_folder_and_missing_split_are_errors(tmp_path):
    root = stripes_folder(tmp_path / "data", {"train": 1, "val": 1})
    (root / "train" / "diagonal").mkdir()
    with pytest.raises(ClassificationDataError, match=r"train: class folder\(s\) \['diagonal'\] are not in"):
        read_image_folder(root, CLASSES)
    with pytest.raises(ClassificationDataError, match="expected split folders train/ and val/"):
        read_image_folder(root / "train", CLASSES)


def _csv(tmp_path: Path, rows: list[str]) -> Path:
    for i in range(4):
        stripes(tmp_path / "img" / f"{i}.png", vertical=bool(i % 2), seed=i)
    path = tmp_path / "labels.csv"
    path.write_text("path,label,group\n" + "\n".join(rows) + "\n")
    return path


def test_csv_bad_rows_are_counted_by_line_or_strict_errors(tmp_path):
    path = _csv(
        tmp_path, ["img/0.png,h,p1", "img/9.png,h,p1", "img/1.png,diagonal,p2", ",v,p2", "img/3.png,v,p2"]
    )
    with pytest.warns(ClassificationDataWarning) as record:
        items = read_label_csv(path, CLASSES)
    message = str(record[0].message)
    assert "labels.csv:3: image" in message and "9.png does not exist" in message
    assert "labels.csv:4: label 'diagonal' is not in class_names" in message
    assert "labels.csv:5: empty path" in message
    assert [(Path(s.path).name, s.label, s.group) for s in items] == [("0.png", 0, "p1"), ("3.png", 1, "p2")]
    with pytest.raises(ClassificationDataError, match=r"labels\.csv:3: image .*9\.png does not exist"):
        read_label_csv(path, CLASSES, strict=True)


def test_csv_split_keeps_each_group_in_one_split(tmp_path):
    for i in range(4, 30):  # 30 distinct files (a file listed twice is kept once: test_classification_data_audit)
        stripes(tmp_path / "img" / f"{i}.png", vertical=bool(i % 2), seed=i)
    rows = [f"img/{i}.png,{'hv'[i % 2]},patient{i // 3}" for i in range(30)]
    path = _csv(tmp_path, rows)
    dm = ClassificationDataModule(
        "csv", str(path), CLASSES, in_channels=1, image_size=(16, 16), num_workers=0
    )
    dm.setup("fit")
    seen = {}
    for split, items in dm.splits.items():
        for item in items:
            assert seen.setdefault(item.group, split) == split, f"{item.group} in two splits"
    assert sum(len(v) for v in dm.splits.values()) == 30


def test_csv_saved_with_a_byte_order_mark_reads_its_header(tmp_path):
    path = _csv(tmp_path, ["img/0.png,h,p1", "img/1.png,v,p2"])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as a spreadsheet saves "CSV UTF-8"
    assert [(s.label, s.group) for s in read_label_csv(path, CLASSES)] == [(0, "p1"), (1, "p2")]


def test_csv_header_without_path_and_label_is_an_error(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("file,class\na.png,h\n")
    with pytest.raises(
        ClassificationDataError, match=r"x\.csv:1: the header must name the columns path,label"
    ):
        read_label_csv(path, CLASSES)


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5, "half"])
def test_label_fraction_outside_0_1_is_an_error_naming_the_option(tmp_path, fraction):
    with pytest.raises(ClassificationDataError, match=r"label_fraction: .*\(0, 1\]"):
        ClassificationDataModule("imagefolder", str(tmp_path), CLASSES, label_fraction=fraction)


def test_label_subsample_is_stratified_seeded_and_keeps_every_class(tmp_path):
    root = stripes_folder(tmp_path / "data", {"train": 10, "val": 1})
    train = read_image_folder(root, CLASSES)["train"]
    few = subsample_labels(train, 0.2, seed=3)
    assert [s.label for s in few].count(0) == 2 and [s.label for s in few].count(1) == 2
    assert few == subsample_labels(train, 0.2, seed=3)
    nearer = subsample_labels(train, 0.29, seed=3)  # 0.29 x 10 = 2.9 per class: rounded to 3, not cut to 2
    assert [s.label for s in nearer].count(0) == 3 and [s.label for s in nearer].count(1) == 3
    assert {s.label for s in subsample_labels(train, 0.01)} == {0, 1}  # at least one per class


# ------------------------------------------------------------------------------------------------ model


@pytest.mark.parametrize(
    "backbone",
    ["alexnet", "googlenet", pytest.param("vgg16", marks=pytest.mark.slow), "resnet18", "tiny_cnn"],
)
def test_classifier_on_the_textbook_backbones_gives_logits(backbone):
    model = ImageClassifier(5, backbone, in_channels=3).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 5)


def test_classifier_checks_its_arguments():
    with pytest.raises(ValueError, match="at least 2 classes"):
        ImageClassifier(1, "tiny_cnn")
    with pytest.raises(KeyError, match="unknown backbone 'lenet'"):
        ImageClassifier(2, "lenet")


def test_loss_goes_down_on_tiny_data(tmp_path):
    torch.manual_seed(0)
    root = stripes_folder(tmp_path / "data")
    task, losses = stripes_task(), []

    trainer = quiet_trainer(max_epochs=15, limit_val_batches=1.0, log_every_n_steps=1)
    original = task.training_step

    def recording_step(batch, batch_idx):
        loss = original(batch, batch_idx)
        losses.append(float(loss))
        return loss

    task.training_step = recording_step
    trainer.fit(task, stripes_data(root))
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < 0.5 * first, losses
    trainer.test(task, stripes_data(root), verbose=False)
    assert task.last_metrics["test"]["acc"] >= 0.75


# ------------------------------------------------------------------------------------------------ Grad-CAM


def test_grad_cam_is_the_head_weighted_feature_map_for_the_asked_class():
    # For pool + linear, d logit_c / d A_k(x, y) = w_ck / (H W), so Grad-CAM = relu(sum_k w_ck A_k), scaled to
    # [0, 1]; computed here by hand and compared with MONAI's (after our post-processing).
    torch.manual_seed(0)
    task = stripes_task().eval()
    images = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        features = task.model.backbone.forward_features(images)[-1]
    for cls in (0, 1):
        expected = F.relu(torch.einsum("k,bkhw->bhw", task.model.head.weight[cls], features))[:, None]
        expected = unit_range(F.interpolate(expected, size=(32, 32), mode="bilinear", align_corners=False))
        cams = task.grad_cam(images, torch.tensor([cls, cls]))
        assert cams.shape == (2, 1, 32, 32) and float(cams.min()) >= 0 and float(cams.max()) <= 1
        torch.testing.assert_close(cams, expected.detach(), atol=1e-4, rtol=1e-4)
    # a batch asking for different classes gets each image's own class (MONAI's batched score mixes them)
    mixed = task.grad_cam(images, torch.tensor([0, 1]))
    torch.testing.assert_close(mixed[1:], task.grad_cam(images[1:], torch.tensor([1])))


def test_unit_range_keeps_the_strongest_evidence_at_one():
    maps = torch.tensor([[[[0.0, 2.0], [1.0, 4.0]]], [[[3.0, 3.0], [3.0, 3.0]]]])
    assert unit_range(maps).tolist() == [[[[0.0, 0.5], [0.25, 1.0]]], [[[0.0, 0.0], [0.0, 0.0]]]]


# -------------------------------------------------------------------------------------- transfer, freezing


def test_frozen_backbone_stays_put_for_the_first_epoch(tmp_path):
    root = stripes_folder(tmp_path / "data", {"train": 4, "val": 1})
    task = stripes_task(freeze_backbone_epochs=1)
    before_backbone = {k: v.clone() for k, v in task.model.backbone.state_dict().items()}
    before_head = task.model.head.weight.clone()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filters = warnings.filters[:]
        quiet_trainer(max_epochs=1).fit(task, stripes_data(root))
        assert warnings.filters == filters  # silenced for this fit's start only, not for later fits
    # its modules are in eval mode on purpose: Lightning's "may lead to unexpected behavior" is not shown
    assert not [w for w in caught if "module(s) in eval mode" in str(w.message)]
    after = task.model.backbone.state_dict()
    assert all(torch.equal(before_backbone[k], after[k]) for k in before_backbone)
    assert not torch.equal(before_head, task.model.head.weight)


def test_a_classifier_trained_with_a_frozen_backbone_predicts_with_grad_cam(tmp_path):
    """The freeze schedule ran in ``predict`` too and froze the network: Grad-CAM found no gradient (an
    IndexError inside MONAI) and nothing was written."""
    root = stripes_folder(tmp_path / "data", {"train": 4, "val": 1, "test": 2})
    trained = stripes_task(freeze_backbone_epochs=1)
    quiet_trainer(max_epochs=1).fit(trained, stripes_data(root))  # ends frozen (the unfreeze is at epoch 1)
    for task, out in ((trained, "same_process"), (stripes_task(freeze_backbone_epochs=1), "loaded")):
        if out == "loaded":  # as predict --ckpt_path builds it: a new task with the trained weights
            task.load_state_dict(trained.state_dict())
        task.predict_dir, task.cam = str(tmp_path / out), True
        quiet_trainer().predict(task, stripes_data(root))
        rows = (tmp_path / out / "probabilities.csv").read_text().splitlines()
        assert len(rows) == 1 + 4  # header + the 4 test images
        assert len(list((tmp_path / out / "cam").glob("*.png"))) == 4
    assert all(p.requires_grad for p in task.model.parameters())  # predict froze nothing


def test_unfreezing_under_the_cosine_schedule_trains_the_backbone_at_a_tenth_of_the_rate(tmp_path):
    root = stripes_folder(tmp_path / "data", {"train": 4, "val": 1})
    task = stripes_task(freeze_backbone_epochs=1, backbone_lr_factor=0.1, lr_scheduler=warmup_cosine())
    before = {k: v.clone() for k, v in task.model.backbone.state_dict().items()}
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(task, stripes_data(root))  # the unfreeze adds a param group the cosine LambdaLR must learn about
    after = task.model.backbone.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    head, backbone = trainer.optimizers[0].param_groups
    assert backbone["lr"] == pytest.approx(0.1 * head["lr"])
    assert backbone["initial_lr"] == pytest.approx(0.1 * head["initial_lr"])


def test_frozen_batchnorm_uses_the_transferred_statistics_in_training_too(tmp_path):
    """BaseFinetuning.freeze normalised frozen BatchNorm with each training batch's statistics but validated
    with the running ones (layer-4 features 119 % apart): the head learnt on one distribution, was judged on
    another."""
    import pytorch_lightning as pl

    class Modes(pl.Callback):
        def __init__(self):
            self.seen: dict[int, set[bool]] = {}

        def on_train_batch_end(self, trainer, module, *args):
            norms = [m for m in module.model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
            self.seen.setdefault(trainer.current_epoch, set()).update(m.training for m in norms)

    root = stripes_folder(tmp_path / "data", {"train": 4, "val": 1})
    task = stripes_task(freeze_backbone_epochs=1)
    running = task.model.backbone.stages[0][1].running_mean.clone()
    modes = Modes()
    quiet_trainer(max_epochs=2, callbacks=[modes], limit_val_batches=1).fit(task, stripes_data(root))
    assert modes.seen == {0: {False}, 1: {True}}  # eval while frozen (after validation too), then trained
    assert not torch.equal(running, task.model.backbone.stages[0][1].running_mean)  # epoch 1 updated them


def test_resuming_past_the_unfreeze_trains_the_backbone(tmp_path):
    """`fit --ckpt_path last` after the unfreeze died in the scheduler's load_state_dict (IndexError: one
    lambda for two groups); past that, Lightning restores the backbone's group but not its requires_grad."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    root = stripes_folder(tmp_path / "data", {"train": 4, "val": 1})

    def run(epochs: int, ckpt_path=None):
        task = stripes_task(freeze_backbone_epochs=1, lr_scheduler=warmup_cosine())
        save = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
        trainer = quiet_trainer(max_epochs=epochs, callbacks=[save], enable_checkpointing=True)
        trainer.fit(task, stripes_data(root), ckpt_path=ckpt_path)
        return task, trainer

    first, _ = run(2)
    before = {k: v.clone() for k, v in first.model.backbone.state_dict().items()}
    resumed, trainer = run(3, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert all(p.requires_grad for p in resumed.model.backbone.parameters())
    after = resumed.model.backbone.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point())
    head, backbone = trainer.optimizers[0].param_groups
    assert backbone["lr"] == pytest.approx(0.1 * head["lr"])


def test_a_torchvision_vit_file_freezes_the_vit_and_trains_the_suites_feature_pyramid_on_it(tmp_path):
    """A torchvision ViT file was refused for a frozen start ("left 12 backbone tensors unloaded (e.g.
    up4.0.weight) ... Give trained weights (e.g. a torchvision .pth)"): the pyramid is the suite's own, in no
    torchvision file. It trains from the start; the ViT waits for the unfreeze."""
    import torchvision
    from pytorch_lightning.callbacks import Callback

    from shared.optim import adamw

    vit = {"image_size": 16, "patch_size": 8, "num_layers": 1, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64}
    torch.save(torchvision.models.VisionTransformer(**vit).state_dict(), tmp_path / "vit.pth")  # RGB, as shipped
    network = ImageClassifier(len(CLASSES), "vit", in_channels=1, backbone_kwargs={**vit, "pyramid_channels": 8})
    task = ClassificationTask(
        network, CLASSES, optimizer=adamw(lr=0.01), pretrained_backbone=str(tmp_path / "vit.pth"),
        freeze_backbone_epochs=1,
    )  # fmt: skip
    backbone = network.backbone
    loaded = {k: v.clone() for k, v in backbone.state_dict().items()}

    class AtEpochEnd(Callback):
        def on_train_epoch_end(self, trainer, module):
            if trainer.current_epoch == 0:  # still frozen
                self.frozen = {k: v.clone() for k, v in backbone.state_dict().items()}

    epochs = AtEpochEnd()
    root = stripes_folder(tmp_path / "data", {"train": 4, "val": 1})
    trainer = quiet_trainer(max_epochs=2, callbacks=[epochs])
    trainer.fit(task, stripes_data(root))
    changed = {k for k in loaded if not torch.equal(loaded[k], epochs.frozen[k])}
    assert changed and all(backbone.is_adapter_key(k) for k in changed)  # the pyramid trained, the ViT did not
    assert any(not torch.equal(epochs.frozen[k], v) for k, v in backbone.state_dict().items() if k.startswith("net."))
    head, vit_group = trainer.optimizers[0].param_groups  # the unfreeze adds the ViT alone, at a tenth
    assert {id(p) for p in vit_group["params"]} == {id(p) for p in backbone.net.parameters()}
    assert vit_group["lr"] == pytest.approx(0.1 * head["lr"])


def test_a_frozen_start_needs_the_whole_backbone_from_a_file(tmp_path):
    """--model.freeze_backbone_epochs 1 without weights (or with a file of its first layers only) trained the
    head on random features without a word, then the random backbone at a tenth of the rate."""
    root = stripes_folder(tmp_path / "data", {"train": 2, "val": 1})
    with pytest.raises(ValueError, match=r"freeze_backbone_epochs is above 0 but no --model.pretrained_backbone was given"):
        quiet_trainer(max_steps=1).fit(stripes_task(freeze_backbone_epochs=1, pretrained_backbone=None), stripes_data(root))
    partial = tmp_path / "first_layer.pt"
    state = stripes_task().model.backbone.state_dict()
    torch.save({k: v for k, v in state.items() if k.startswith("stages.0.")}, partial)
    task = stripes_task(freeze_backbone_epochs=1, pretrained_backbone=str(partial))
    with pytest.raises(ValueError, match=r"left \d+ backbone tensors unloaded .*or set --model.freeze_backbone_epochs 0"):
        quiet_trainer(max_steps=1).fit(task, stripes_data(root))
    with pytest.warns(UserWarning, match=r"first_layer\.pt: 20 tensors of backbone 'tiny_cnn' keep their initial "
                      r"values inside the parts the file filled \(e\.g\. stages\.1\.0\.weight\)"):  # fmt: skip
        task = stripes_task(pretrained_backbone=str(partial))  # said, and trained: not frozen
    quiet_trainer(max_steps=1).fit(task, stripes_data(root))


def test_another_networks_weights_are_refused_not_half_loaded(tmp_path):
    """A ResNet-50 file in a ResNet-18 loaded 97 tensors and left 23 convolutions random (a frozen backbone
    too); a ResNet-34 file filled it with its first blocks. Both trained on, exit 0."""
    wider = tmp_path / "wider.pt"
    torch.save(ImageClassifier(len(CLASSES), "tiny_cnn", in_channels=1, backbone_kwargs={"width": 16}).backbone.state_dict(), wider)
    with pytest.raises(ValueError, match=r"wider\.pt: no tensor matched backbone 'tiny_cnn'.*0 tensors loaded; 30 shape mismatch"):
        stripes_task(pretrained_backbone=str(wider), freeze_backbone_epochs=1)
    deeper = tmp_path / "deeper.pt"
    state = stripes_task().model.backbone.state_dict()
    torch.save({**state, "stages.3.0.weight": torch.zeros(8, 8, 3, 3)}, deeper)
    with pytest.raises(ValueError, match=r"1 unexpected in the file: stages\.3\.0\.weight"):
        stripes_task(pretrained_backbone=str(deeper))
    head = tmp_path / "with_head.pt"  # an ImageNet file's classifier head is no reason to refuse it
    torch.save({**state, "fc.weight": torch.zeros(10, 32), "fc.bias": torch.zeros(10)}, head)
    assert stripes_task(pretrained_backbone=str(head)).load_report.head == ["fc.weight", "fc.bias"]


def test_backbone_transfers_from_a_suite_checkpoint_by_prefix(tmp_path):
    root = stripes_folder(tmp_path / "data", {"train": 2, "val": 1})
    source = stripes_task()
    trainer = quiet_trainer(max_steps=1, default_root_dir=str(tmp_path))
    trainer.fit(source, stripes_data(root))
    ckpt = tmp_path / "source.ckpt"
    trainer.save_checkpoint(ckpt)
    target = stripes_task(pretrained_backbone=str(ckpt), pretrained_prefix="model.backbone.")
    for key, value in source.model.backbone.state_dict().items():
        assert torch.equal(value, target.model.backbone.state_dict()[key]), key
    assert target.load_report.clean
    with pytest.raises(ValueError, match=r"no tensor matched backbone .*\(prefix 'model\.encoder\.'\): 0 tensors "
                       r"loaded; with prefix='model\.backbone\.'"):  # fmt: skip
        stripes_task(pretrained_backbone=str(ckpt), pretrained_prefix="model.encoder.")
    # keys under the prefix, none of them the backbone's: an error, not a silent run on random weights
    foreign = tmp_path / "foreign.pt"
    torch.save({"model.backbone.other.weight": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match=r"foreign\.pt: no tensor matched backbone 'tiny_cnn'"):
        stripes_task(pretrained_backbone=str(foreign), pretrained_prefix="model.backbone.")


def test_class_names_of_model_and_data_must_agree(tmp_path):
    root = stripes_folder(tmp_path / "data", {"train": 2, "val": 1})
    task = ClassificationTask(ImageClassifier(2, "tiny_cnn", in_channels=1), ["v", "h"])
    with pytest.raises(ValueError, match="differ from data.class_names"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quiet_trainer(max_steps=1).fit(task, stripes_data(root))


def test_splits_are_interleaved_by_class_so_a_limited_loader_sees_every_class():
    items = [
        Sample(f"{c}{i}.png", label, "g")
        for c, label, n in (("a", 0, 3), ("b", 1, 1), ("c", 2, 2))
        for i in range(n)
    ]
    order = [item.path for item in interleave_classes(items)]
    assert order == ["a0.png", "b0.png", "c0.png", "a1.png", "c1.png", "a2.png"]  # by hand: round-robin


def test_a_class_the_split_leaves_out_of_training_is_an_error():
    train = [Sample("d.png", 1, "two")]
    with pytest.raises(ClassificationDataError, match=r"few\.csv: no training item of class\(es\) \['cat'\]"):
        check_split_classes({"train": train, "val": [Sample("c.png", 0, "one")]}, ["cat", "dog"], "few.csv")
    with pytest.warns(ClassificationDataWarning, match="the test split is empty"):
        check_split_classes(
            {"train": [Sample("c.png", 0, "one"), *train], "test": []}, ["cat", "dog"], "few.csv"
        )


def test_setup_balances_limited_splits_and_warns_when_max_items_drops_a_class(tmp_path):
    root = stripes_folder(tmp_path / "folder")
    dm = ClassificationDataModule(
        "imagefolder", str(root), CLASSES, in_channels=1, image_size=(16, 16), num_workers=0, max_items=2
    )
    dm.setup("fit")
    assert {s.label for s in dm.splits["train"]} == {s.label for s in dm.splits["val"]} == {0, 1}
    one = ClassificationDataModule(
        "imagefolder", str(root), CLASSES, in_channels=1, image_size=(16, 16), num_workers=0, max_items=1
    )
    with pytest.warns(ClassificationDataWarning, match="max_items=1 keeps 1 of the 2 classes in training"):
        one.setup("fit")


# ------------------------------------------------------------------------- image depth, configs, predict_path


def test_a_12_bit_png_is_read_at_full_depth_and_stretched_to_0_255_once_said(tmp_path, monkeypatch):
    """cv2.imread without IMREAD_ANYDEPTH dropped the low byte: 0..4095 became 0..15, nearly black."""
    from shared import images
    from shared.classification import data
    from shared.classification.task import write_cam_overlay

    monkeypatch.setattr(images, "_said", set())
    ct = tmp_path / "ct12.png"
    assert cv2.imwrite(str(ct), np.linspace(0, 4095, 64 * 64).round().astype(np.uint16).reshape(64, 64))
    said = r"ct12\.png: a uint16 image.*contrast-stretched per image"
    with pytest.warns(ClassificationDataWarning, match=said):
        grey = data.read_image(ct, 1)
    assert grey.dtype == np.uint8 and grey.shape == (64, 64, 1) and (grey.min(), grey.max()) == (0, 255)
    assert len(np.unique(grey)) > 200
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per process, not per image
        rgb = data.read_image(ct, 3)
    assert rgb.shape == (64, 64, 3) and (rgb.min(), rgb.max()) == (0, 255)
    # the Grad-CAM overlay reads it so too (a flat map: JET's dark blue over 60 % of the image)
    write_cam_overlay(str(ct), np.zeros((4, 4), np.float32), tmp_path / "cam.png", 1)
    assert cv2.imread(str(tmp_path / "cam.png")).max() > 150
    eight = stripes(tmp_path / "eight.png", vertical=True, seed=0)
    assert np.array_equal(data.read_image(eight, 1)[..., 0], cv2.imread(str(eight), cv2.IMREAD_GRAYSCALE))


def test_colour_images_are_read_as_rgb(tmp_path):
    """cv2 decodes to BGR; the backbones' ImageNet weights and statistics are RGB."""
    from shared.classification.data import read_image

    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 2] = 255  # cv2 writes BGR: channel 2 is red
    assert cv2.imwrite(str(tmp_path / "red.png"), red)
    assert read_image(tmp_path / "red.png", 3)[0, 0].tolist() == [255, 0, 0]


def test_grey_images_are_normalised_with_the_mean_imagenet_statistics():
    """One channel: mean and std are the means of ImageNet's RGB ones (0.449, 0.226), as the folded first conv."""
    from shared.classification.data import classification_transforms

    out = classification_transforms(False, (8, 8), 1)(image=np.full((8, 8, 1), 128, np.uint8))["image"]
    # (128 / 255 - mean(0.485, 0.456, 0.406)) / mean(0.229, 0.224, 0.225) = (0.501961 - 0.449) / 0.226
    assert out.shape == (8, 8, 1)
    assert out[0, 0, 0] == pytest.approx(0.234340, abs=1e-5)


def test_float_images_stretch_over_their_finite_pixels_and_keep_a_0_1_scale():
    from shared.images import stretch_to_uint8

    hot = np.array([[100.0, 150.0], [200.0, np.nan]], np.float32)  # NaN must not stretch the range
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a NaN cast to uint8 (undefined, 0 on x86) warns
        assert stretch_to_uint8(hot).tolist() == [[0, 128], [255, 0]]  # 150 -> 127.5 -> 128
    unit = np.array([[0.25, 0.5]], np.float32)  # already an intensity in [0, 1]: x 255, not re-stretched
    assert stretch_to_uint8(unit).tolist() == [[64, 128]]
    assert stretch_to_uint8(np.full((2, 2), np.inf, np.float32)).max() == 0


def test_predict_path_reads_tiff_and_counts_other_files_in_one_warning_naming_one(tmp_path):
    """.tif / .gif files used to vanish: neither predicted nor listed in unreadable.csv."""
    own = tmp_path / "own"
    stripes(own / "a.png", vertical=True, seed=0)
    assert cv2.imwrite(str(own / "b.tif"), np.full((16, 16), 3000, np.uint16))
    # an image type: predicted, or listed in unreadable.csv when OpenCV cannot decode it
    (own / "c.gif").write_bytes(b"GIF89a not really")
    (own / "notes.txt").write_text("not an image")
    (own / "sub").mkdir()
    (own / "sub" / "scan.dcm").write_bytes(b"\0" * 8)
    dm = stripes_data(tmp_path / "no_such_folder", predict_path=str(own))
    with pytest.warns(ClassificationDataWarning, match=r"2 file\(s\) not predicted.*e\.g\. .*notes\.txt"):
        dm.setup("predict")
    assert [Path(s.path).name for s in dm.datasets["predict"].items] == ["a.png", "b.tif", "c.gif"]
    assert "train" not in dm.datasets  # predict on own images reads no labelled data
    # a file where a folder is meant (and the reverse for the csv format): said as such, not "no such folder"
    with pytest.raises(ClassificationDataError, match=r"a.png: is a file; give the folder that holds the images"):
        stripes_data(tmp_path / "no_such_folder", predict_path=str(own / "a.png")).setup("predict")
    with pytest.raises(ClassificationDataError, match=r"own: is a folder; the csv format reads one label file"):
        read_label_csv(own, CLASSES)


def test_a_labelled_format_without_data_path_is_refused_at_once_unless_predicting_own_images(tmp_path):
    """Said when the data module is built (before the network and its weights), not later at setup."""
    from shared.classification.data import ClassificationDataModule

    with pytest.raises(ClassificationDataError, match="data_path: needed with data_format 'imagefolder'"):
        ClassificationDataModule(data_format="imagefolder", class_names=["a", "b"])
    own = ClassificationDataModule(data_format="csv", class_names=["a", "b"], predict_path=str(tmp_path))
    assert own.data_path is None


def test_training_never_ends_on_a_batch_of_one_image(tmp_path):
    """29 training crops of 32 px in batches of 4 ended the first epoch on one image, whose 1x1 ResNet map
    batch norm cannot train on: torch's bare "Expected more than 1 value per channel". (All tasks' loaders.)"""
    root = stripes_folder(tmp_path / "data", {"train": 9, "val": 1})  # 18 = 4 x 4 + 2: kept
    data = stripes_data(root, batch_size=4)
    data.setup("fit")
    assert sorted(len(b["label"]) for b in data.train_dataloader()) == [2, 4, 4, 4, 4]
    data = stripes_data(root, batch_size=17)  # 18 = 17 + 1: the one is dropped
    data.setup("fit")
    assert [len(b["label"]) for b in data.train_dataloader()] == [17]
    assert [len(b["label"]) for b in data.val_dataloader()] == [2]  # evaluation sees every image


def test_under_ddp_each_ranks_share_decides_the_last_batch(tmp_path):
    """10 images, batches of 4, 2 ranks: 5 per rank end on a batch of one, which the global count (10 = 4 + 4 +
    2) did not see."""
    from types import SimpleNamespace

    root = stripes_folder(tmp_path / "data", {"train": 5, "val": 1})  # 10 training images
    data = stripes_data(root, batch_size=4)
    data.setup("fit")
    assert not data.train_dataloader().drop_last  # one process: 10 = 4 + 4 + 2
    data.trainer = SimpleNamespace(world_size=2)
    assert data.train_dataloader().drop_last  # each rank: 5 = 4 + 1


def test_a_macs_hidden_files_in_class_folders_are_not_images(tmp_path):
    """A copy from a Mac puts ``._0.png`` beside every image: they were counted as unreadable images (and
    with ``strict`` stopped the run)."""
    root = stripes_folder(tmp_path / "data", {"train": 2, "val": 1})
    (root / "train" / "h" / "._0.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (root / "train" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "val" / ".ipynb_checkpoints").mkdir()  # Jupyter's: no class folder, not an unknown class
    with pytest.warns(HiddenFilesWarning, match=r"3 hidden files left out \(train/\.DS_Store, train/h/\._0\.png, "
                      r"val/\.ipynb_checkpoints\)"):  # fmt: skip
        splits = read_image_folder(root, CLASSES, strict=True)
    assert len(splits["train"]) == 4 and not any("._" in s.path for s in splits["train"])


def test_classification_predict_path_leaves_out_hidden_files(tmp_path):
    from shared.classification.data import ClassificationDataModule
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((16, 16, 3), np.uint8))
    (tmp_path / "._a.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    dm = ClassificationDataModule(data_format="csv", class_names=["a", "b"], predict_path=str(tmp_path))
    assert [Path(s.path).name for s in dm._predict_items()] == ["a.png"]


def test_class_folders_copied_from_a_mac_match_class_names_in_any_unicode_form(tmp_path):
    """macOS writes "grün" decomposed (NFD: u + combining diaeresis): it was refused as a class folder "not in
    class_names ['red', 'grün']", the two names looking the same."""
    import unicodedata

    typed, on_disk = "grün", unicodedata.normalize("NFD", "grün")
    assert typed != on_disk
    for split in ("train", "val"):
        for name in ("red", on_disk):
            write_image(tmp_path / split / name / "0.png", 8, 8)
    splits = read_image_folder(tmp_path, ["red", typed])
    assert sorted((s.label, Path(s.path).parent.name) for s in splits["train"]) == [(0, "red"), (1, on_disk)]
    # one name twice, in two forms: among class_names an error, as two folders an error (one was never read)
    with pytest.raises(ClassificationDataError, match="need at least 2 distinct names"):
        read_image_folder(tmp_path, ["red", typed, on_disk])
    write_image(tmp_path / "train" / typed / "1.png", 8, 8)
    with pytest.raises(ClassificationDataError, match="are one name in two Unicode forms"):
        read_image_folder(tmp_path, ["red", typed])
    # a label CSV written on a Mac: its labels match too, in either form (they were "not in class_names")
    (tmp_path / "labels.csv").write_text(f"path,label\ntrain/red/0.png,{on_disk}\nval/red/0.png,red\n")
    items = read_label_csv(tmp_path / "labels.csv", ["red", typed])
    assert [s.label for s in items] == [1, 0]
    assert [s.label for s in read_label_csv(tmp_path / "labels.csv", ["red", on_disk])] == [1, 0]


def test_a_float_grey_tiff_reads_as_rgb_too(tmp_path):
    """strict mode passed a float32 grey TIFF (decoded as stored), then training stopped on it: OpenCV's colour
    read refuses it ("cannot decode image")."""
    from shared.classification.data import read_image

    values = np.linspace(0.0, 2.0, 64, dtype=np.float32).reshape(8, 8)
    assert cv2.imwrite(str(tmp_path / "f32.tif"), values)
    rgb, grey = read_image(tmp_path / "f32.tif", 3), read_image(tmp_path / "f32.tif", 1)
    assert rgb.shape == (8, 8, 3) and grey.shape == (8, 8, 1)
    assert (rgb == grey).all() and grey.min() == 0 and grey.max() == 255  # stretched, the same in each channel


def test_a_negative_cam_max_is_refused():
    """-1 had silently meant 0 overlays."""
    with pytest.raises(ValueError, match=r"--model.cam_max must be >= 0 \(or null: every image\), got -1"):
        stripes_task(cam_max=-1)


def test_csv_unclosed_quote_is_an_error_naming_its_line_not_rows_silently_lost(tmp_path):
    rows = ["img/0.png,h,p1", 'img/1.png,v,"p2', "img/2.png,h,p3", "img/3.png,v,p4"]
    path = _csv(tmp_path, rows)
    with pytest.raises(ClassificationDataError, match=r"labels\.csv:3: a quote .* runs to line 5"):
        read_label_csv(path, CLASSES)
    path.write_text("path,label,group\nimg/0.png,h,p1\n" + 'img/1.png,v,"' + "x" * 200_000 + "\n")
    with pytest.raises(ClassificationDataError, match=r"labels\.csv: field larger than field limit .*unclosed"):
        read_label_csv(path, CLASSES)  # csv's own error, at its field size limit


def test_csv_not_in_utf8_names_the_file_and_line(tmp_path):
    path = _csv(tmp_path, ["img/0.png,h,p1", "img/1.png,v,p2"])
    path.write_bytes(path.read_bytes() + "img/café.png,h,p3\n".encode("cp1252"))  # as Excel saves on Windows
    with pytest.raises(ClassificationDataError, match=r"labels\.csv:4: not UTF-8 text \(byte 0xe9\)"):
        read_label_csv(path, CLASSES)
