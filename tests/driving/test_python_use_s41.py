"""The driving networks used from Python: narrow FPN widths build and train, a class list is refused by name,
detect takes uint8 only and restores the model's mode, and the accident network reads a 0 / 1 box_valid of any
dtype and clips or frames with zero object slots (whole clip and streaming alike)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.detection.fcos import FCOSHead

from domains.driving.accident.model import EMPTY_SLOT_LOGIT, AccidentAnticipator
from domains.driving.detection import predict
from domains.driving.detection.model import Float32OutputHead, RoadDetector

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_detector(**kw) -> RoadDetector:
    torch.manual_seed(0)
    args = {"input_size": (64, 128), "head_convs": 1, "score_thresh": 0.0}
    return RoadDetector(2, "tiny_cnn", {"width": 8}, **{**args, **kw})


# ------------------------------------------------------------------------------------------ detector
@pytest.mark.parametrize("width", [8, 16, 48])
def test_narrow_fpn_widths_build_train_a_step_and_detect(width):
    model = tiny_detector(fpn_channels=width)
    norms = [m for m in model.detector.head.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and {(m.num_groups, m.num_channels) for m in norms} == {(width // 2, width)}
    model.train()
    image = torch.rand(3, 64, 128)
    target = {"boxes": torch.tensor([[10.0, 10.0, 40.0, 50.0]]), "labels": torch.tensor([1])}
    losses = model([image], [target])
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    assert model.detector.head.classification_head.cls_logits.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        (out,) = model([image])
    assert out["boxes"].shape[1] == 4 and len(out["scores"]) == len(out["labels"]) > 0


def test_the_default_head_draws_torchvision_s_weights():
    """The head built with its norm from the start is torchvision's module for module, seed for seed."""
    torch.manual_seed(3)
    theirs = FCOSHead(64, 1, 3, num_convs=2).state_dict()
    torch.manual_seed(3)
    ours = Float32OutputHead(64, 1, 3, num_convs=2).state_dict()
    assert list(ours) == list(theirs)
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=0)


@pytest.mark.parametrize("classes", [[], ["Car", "Pedestrian"]])
def test_a_class_list_is_refused_naming_num_classes(classes):
    with pytest.raises(ValueError, match=r"num_classes .* must be an int >= 1.*len\(names\)"):
        RoadDetector(classes, "tiny_cnn")


# the CLI's fast_dev_run fit with a 16-channel FPN: tests/driving/test_detection.py::
# test_cli_fit_fast_dev_run_and_predict_writes_kitti_results (its first fit)


# ------------------------------------------------------------------------------------------ detect
class Recorder(nn.Module):
    """Stands in for a detector: records the tensor it is given (or fails), returns no detection."""

    def __init__(self, fail: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.fail, self.seen = fail, []

    def forward(self, images):
        if self.fail:
            raise RuntimeError("forward failed")
        self.seen.append(images[0])
        return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}]


@pytest.mark.parametrize(
    "image, dtype",
    [
        (np.full((8, 10, 3), 0.5, np.float32), "float32"),
        (np.full((8, 10, 3), 0.5, np.float64), "float64"),
        (np.full((8, 10, 3), 40000, np.uint16), "uint16"),
    ],
)
@pytest.mark.parametrize("function", ["detect", "detect_objects"])
def test_detect_refuses_an_image_that_is_not_uint8(function, image, dtype):
    model = Recorder()
    with pytest.raises(ValueError, match=rf"uint8.*got dtype {dtype}"):
        getattr(predict, function)(model, image)
    assert not model.seen  # nothing reached the network


def test_detect_reads_uint8_as_0_to_1():
    model = Recorder()
    predict.detect(model, np.full((8, 10, 3), 255, np.uint8))
    (seen,) = model.seen
    assert seen.shape == (3, 8, 10) and seen.dtype == torch.float32 and (seen == 1.0).all()


@pytest.mark.parametrize("training", [True, False])
def test_detect_restores_the_model_s_mode_when_forward_fails(training):
    model = Recorder(fail=True).train(training)
    with pytest.raises(RuntimeError, match="forward failed"):
        predict.detect(model, np.zeros((8, 10, 3), np.uint8))
    assert model.training is training


# ------------------------------------------------------------------------------------------ accident
SIZE = (32, 64)
KINDS = [("frames", "gru"), ("frames", "transformer"), ("boxes", "gru"), ("boxes", "transformer"), ("features", "gru")]
DIM = 8


def anticipator(kind: str, temporal: str) -> AccidentAnticipator:
    torch.manual_seed(0)
    return AccidentAnticipator(
        "tiny_cnn", input_kind=kind, temporal=temporal, input_size=SIZE, hidden=16, window=4, dropout=0.0,
        feature_dim=DIM,
    ).eval()  # fmt: skip


def clip_inputs(kind: str, batch: int = 2, frames: int = 4, slots: int = 3, seed: int = 0) -> dict:
    """Random whole-clip inputs of ``kind`` (boxes inside the 64x32 frame, about 70 % valid)."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(batch, frames, slots, 2, generator=g) * torch.tensor([40.0, 20.0]) + 10
    size = torch.rand(batch, frames, slots, 2, generator=g) * 8 + 2
    inputs = {
        "boxes": torch.cat([centre - size, centre + size], -1),
        "box_valid": torch.rand(batch, frames, slots, generator=g) < 0.7,
    }
    if kind == "frames":
        inputs["frames"] = torch.rand(batch, frames, 3, *SIZE, generator=g)
    if kind == "features":
        inputs["features"] = torch.rand(batch, frames, DIM, generator=g)
        inputs["object_features"] = torch.rand(batch, frames, slots, DIM, generator=g)
    return inputs


def as_streamed(model: AccidentAnticipator, out: dict, valid: torch.Tensor) -> dict[str, torch.Tensor]:
    """``forward``'s outputs as ``step`` gives them: a boxes-only network's frames without objects blanked."""
    blind = model.blind(valid)[..., None]
    return out | {"horizon_logits": out["horizon_logits"].masked_fill(blind, EMPTY_SLOT_LOGIT)}


def assert_streams_like(streamed: dict, expected: dict) -> None:
    for key in ("horizon_logits", "object_logits"):
        torch.testing.assert_close(streamed[key], expected[key], atol=1e-5, rtol=1e-4)


def stream(model: AccidentAnticipator, inputs: dict, frames: int) -> dict[str, torch.Tensor]:
    """``model.step`` over the clip's frames, outputs stacked as ``forward`` gives them."""
    state, outs = None, []
    for t in range(frames):
        at = {name: None if value is None else value[:, t] for name, value in inputs.items()}
        out, state = model.step(
            at.get("frames"), at["boxes"], at["box_valid"], state,
            features=at.get("features"), object_features=at.get("object_features"),
        )  # fmt: skip
        outs.append(out)
    return {key: torch.stack([o[key] for o in outs], 1) for key in outs[0]}


@pytest.mark.parametrize("kind, temporal", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.int64])
def test_a_numeric_0_1_box_valid_reads_as_the_bool_one(kind, temporal, dtype):
    model = anticipator(kind, temporal)
    inputs = clip_inputs(kind)
    expected = model(**inputs)
    numeric = inputs | {"box_valid": inputs["box_valid"].to(dtype)}
    got = model(**numeric)
    for key in ("horizon_logits", "object_logits"):
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
    assert_streams_like(stream(model, numeric, 4), as_streamed(model, expected, inputs["box_valid"]))


@pytest.mark.parametrize("bad", [torch.tensor(2.0), torch.tensor(0.5), torch.tensor(float("nan"))])
def test_a_box_valid_other_than_0_1_or_of_another_shape_is_refused(bad):
    model = anticipator("boxes", "gru")
    inputs = clip_inputs("boxes")
    valid = inputs["box_valid"].float()
    valid[1, 2, 0] = bad
    with pytest.raises(ValueError, match=r"box_valid must be bool or hold only 0 / 1, got dtype float32 with 1"):
        model(**inputs | {"box_valid": valid})
    with pytest.raises(ValueError, match=r"box_valid has shape \(2, 4\), expected \(2, 4, 3\)"):
        model(**inputs | {"box_valid": inputs["box_valid"][..., 0]})


def no_slots(inputs: dict, slots: int) -> dict:
    """``inputs`` with ``slots`` object slots that hold nothing: zero slots, or empty (invalid) ones."""
    b, t = inputs["boxes"].shape[:2]
    out = inputs | {"boxes": torch.zeros(b, t, slots, 4), "box_valid": torch.zeros(b, t, slots, dtype=torch.bool)}
    if "object_features" in inputs:
        out["object_features"] = torch.zeros(b, t, slots, DIM)
    return out


@pytest.mark.parametrize("kind, temporal", KINDS)
def test_a_clip_with_zero_object_slots_is_one_without_objects(kind, temporal):
    """A detector that found nothing in a whole clip: (B, T, 0, 4) boxes, read as one empty slot (what
    ``boxes=None`` gives), whole clip and streaming alike."""
    model = anticipator(kind, temporal)
    inputs = clip_inputs(kind)
    zero, one_empty = no_slots(inputs, 0), no_slots(inputs, 1)
    expected = model(**one_empty)
    got = model(**zero)
    assert got["object_logits"].shape == (2, 4, 1) and (got["object_logits"] == EMPTY_SLOT_LOGIT).all()
    torch.testing.assert_close(got["horizon_logits"], expected["horizon_logits"], rtol=0, atol=0)
    assert_streams_like(stream(model, zero, 4), as_streamed(model, expected, one_empty["box_valid"]))
    if kind != "boxes":  # the same as no boxes at all (a boxes-only network has nothing else to read)
        unboxed = model(**inputs | {"boxes": None, "box_valid": None, "object_features": None})
        torch.testing.assert_close(got["horizon_logits"], unboxed["horizon_logits"], rtol=0, atol=0)


@pytest.mark.parametrize("kind, temporal", KINDS)
def test_a_streamed_frame_without_objects_gets_its_clip_s_slots(kind, temporal):
    """A live detector that finds nothing in frame 2: zero slots there stream like the whole clip with that
    frame's slots empty (before, the state's 3 slots against the frame's 1 was an error)."""
    model = anticipator(kind, temporal)
    inputs = clip_inputs(kind)
    padded = inputs | {"box_valid": inputs["box_valid"].clone()}
    padded["box_valid"][:, 2] = False
    expected = model(**padded)
    state, outs = None, []
    for t in range(4):
        at = {name: value[:, t] for name, value in inputs.items()}
        if t == 2:
            at["boxes"], at["box_valid"] = at["boxes"][:, :0], at["box_valid"][:, :0]
            if "object_features" in at:
                at["object_features"] = at["object_features"][:, :0]
        out, state = model.step(
            at.get("frames"), at["boxes"], at["box_valid"], state,
            features=at.get("features"), object_features=at.get("object_features"),
        )  # fmt: skip
        outs.append(out)
    streamed = {key: torch.stack([o[key] for o in outs], 1) for key in outs[0]}
    assert_streams_like(streamed, as_streamed(model, expected, padded["box_valid"]))
