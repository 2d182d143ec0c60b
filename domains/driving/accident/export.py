"""ONNX export of the accident anticipator's live step: ``python -m domains.driving.accident.export``.

``python -m domains.driving.accident.export --ckpt PATH --out DIR`` writes ``anticipator.onnx`` + its JSON.

``anticipator.onnx`` is one :meth:`~domains.driving.accident.model.AccidentAnticipator.step`: a new frame and
the fixed-size state in, the frame's calibrated risks and the next state out, so a car runs the model live
outside PyTorch, one call per frame, feeding each call's ``new_state_<name>`` outputs back as its
``state_<name>`` inputs (zeros, False for the bool ones, at a clip's first frame). The state is
:meth:`~domains.driving.accident.model.AccidentAnticipator.initial_state`'s tensors and ``alarm`` (B,) bool,
the alarm latch.

* inputs, by ``input_kind``: ``frame`` (B, 3, H, W) RGB in [0, 1] at the network's ``input_size`` (H, W fixed
  there; ImageNet normalisation inside the graph) for ``frames``; ``features`` (B, D) and ``object_features``
  (B, N, D) for ``features``; nothing but the boxes for ``boxes``. Always ``boxes`` (B, N, 4) float32 xyxy in
  the pixels of the frame at ``input_size`` and ``box_valid`` (B, N) bool; then every state tensor
  (:meth:`~domains.driving.accident.model.AccidentAnticipator.initial_state`'s keys, in its order, then
  ``state_alarm``).
* outputs: ``horizon_probabilities`` (B, len(horizons)) = sigmoid(logit / temperature), the temperature
  inside the graph, 0 on a frame a boxes-only network cannot read (no valid box: ``blind``), as ``predict``;
  ``object_probabilities`` (B, N); ``alarm`` (B,) bool, latched as ``predict``'s alarm column: True from
  the clip's first frame whose alarm-horizon probability is >= ``alarm_threshold`` on; then the new state.

Batch B and the object slots N are dynamic (N fixed for a clip: the state's slots are its first frame's).
Outside the graph: decoding and resizing the frames, the detector, and the tracker that keeps each object in
one slot (:mod:`domains.driving.accident.tracking`: its ``tracks_to_slots`` picks slots over a whole clip, so
live, give each new track a free slot and keep it there); the time to contact read off the horizon
probabilities (:func:`~domains.driving.accident.model.ttc_from_horizons`) and the Monte Carlo dropout spread.
The JSON sidecar ``anticipator.json`` says all of this with the shapes, the frame rate the network counts
frames at, and the largest onnxruntime vs PyTorch difference over a check clip, each runtime carrying its own
state (beyond ``--atol`` + ``--rtol`` times the value the export fails and leaves nothing behind).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from domains.driving.accident.data import training_fps
from domains.driving.accident.model import AccidentAnticipator
from domains.driving.accident.task import AccidentTask
from shared.backbones import IMAGENET_MEAN, IMAGENET_STD
from shared.export import (
    DEFAULT_CHECK,
    CheckedExport,
    ExportCheck,
    export_main,
    onnx_session,
    run_export,
    run_onnx,
)

GRAPH, SIDECAR = "anticipator.onnx", "anticipator.json"
#: one step's inputs before the state, per ``input_kind``
STEP_INPUTS = {
    "frames": ("frame", "boxes", "box_valid"),
    "features": ("features", "object_features", "boxes", "box_valid"),
    "boxes": ("boxes", "box_valid"),
}
OUTPUTS = ("horizon_probabilities", "object_probabilities", "alarm")
#: the traced example's batch and slots, and the check clip's (other sizes: a shape the trace fixed shows)
TRACED, CHECKED = (2, 3), (3, 5)
#: frames in the check clip, at least: the state is carried through them (more when the state remembers more)
CHECK_FRAMES = 12


class StreamingStep(nn.Module):
    """Flat tensors -> one :meth:`AccidentAnticipator.step`: the step's inputs and the state tensors in, the
    probabilities ``predict`` reports (blind frames 0), the alarm and the new state out. The alarm is latched
    in the state (``alarm``) as ``predict``'s alarm column: once raised it stays raised for the clip."""

    def __init__(self, model: AccidentAnticipator):
        super().__init__()
        self.model = model
        self.state_names = list(self.initial_state(1, 1))
        self.inputs = STEP_INPUTS[model.input_kind]
        self.input_names = [*self.inputs, *(f"state_{name}" for name in self.state_names)]
        self.output_names = [*OUTPUTS, *(f"new_state_{name}" for name in self.state_names)]

    def initial_state(self, batch: int, slots: int) -> dict[str, torch.Tensor]:
        """The model's state before a clip's first frame, and the alarm latch (no alarm yet)."""
        return self.model.initial_state(batch, slots) | {"alarm": torch.zeros(batch, dtype=torch.bool)}

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        given = dict(zip(self.inputs, tensors))
        state = dict(zip(self.state_names, tensors[len(self.inputs) :], strict=True))
        latched = state.pop("alarm")
        out, state = self.model.step(
            given.get("frame"), given["boxes"], given["box_valid"], state,
            features=given.get("features"), object_features=given.get("object_features"),
        )  # fmt: skip
        blind = self.model.blind(given["box_valid"])
        horizon = out["horizon_logits"].sigmoid().masked_fill(blind[:, None], 0.0)  # exactly 0, as predict
        state["alarm"] = latched | (horizon[:, -1] >= self.model.alarm_threshold)
        return horizon, out["object_logits"].sigmoid(), state["alarm"], *(state[n] for n in self.state_names)


def state_axes(module: StreamingStep) -> dict[str, dict[int, str]]:
    """Per state tensor, its ``batch`` and ``slots`` axes: those that change with the batch or slot count."""
    base, batch, slots = (module.initial_state(b, n) for b, n in ((2, 3), (3, 3), (2, 4)))
    return {
        name: {
            **{i: "batch" for i, (a, b) in enumerate(zip(t.shape, batch[name].shape)) if a != b},
            **{i: "slots" for i, (a, b) in enumerate(zip(t.shape, slots[name].shape)) if a != b},
        }
        for name, t in base.items()
    }


def step_inputs(
    model: AccidentAnticipator, batch: int, slots: int, g: torch.Generator
) -> dict[str, torch.Tensor]:
    """Random inputs of one step (frames in [0, 1], boxes inside the frame, about 80 % valid)."""
    h, w = model.input_size
    frame = torch.tensor([w, h], dtype=torch.float32)
    centre = (0.1 + 0.8 * torch.rand(batch, slots, 2, generator=g)) * frame
    size = (0.05 + 0.2 * torch.rand(batch, slots, 2, generator=g)) * frame
    tensors = {
        "boxes": torch.cat([centre - size / 2, centre + size / 2], -1),
        "box_valid": torch.rand(batch, slots, generator=g) < 0.8,
    }
    if model.input_kind == "frames":
        tensors["frame"] = torch.rand(batch, 3, h, w, generator=g)
    if model.input_kind == "features":
        dim = model.frame_embed[0].in_features
        tensors["features"] = torch.rand(batch, dim, generator=g)
        tensors["object_features"] = torch.rand(batch, slots, dim, generator=g)
    return {name: tensors[name] for name in STEP_INPUTS[model.input_kind]}


def check_clip(
    model: AccidentAnticipator, batch: int, slots: int, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """A random clip of step inputs whose boxes loom and drift frame to frame, long enough that the state's
    oldest entry (the transformer's window, the motion lags' history) is dropped; the first sample's fourth
    frame has no valid box (a blind frame for a boxes-only network)."""
    g = torch.Generator().manual_seed(seed)
    memory = max(model.motion_lags[-1], model.window if model.temporal == "transformer" else 1)
    first = step_inputs(model, batch, slots, g)["boxes"]
    centre, half = (first[..., :2] + first[..., 2:]) / 2, (first[..., 2:] - first[..., :2]) / 2
    growth = 1 + 0.1 * torch.rand(batch, slots, 1, generator=g)  # up to 10 % larger a frame
    drift = torch.randn(batch, slots, 2, generator=g)  # pixels a frame
    clip = []
    for t in range(max(CHECK_FRAMES, memory + 2)):
        frame = step_inputs(model, batch, slots, g)  # new pixels or features and validity every frame
        frame["boxes"] = torch.cat(
            [centre + drift * t - half * growth**t, centre + drift * t + half * growth**t], -1
        )
        if t == 3:
            frame["box_valid"][0] = False
        clip.append(frame)
    return clip


def compare_clip(
    module: StreamingStep, path: Path, clip: list[dict], check: ExportCheck, shown: Path
) -> dict:
    """Run ``clip`` through the graph at ``path`` and through PyTorch, each carrying its own state from zeros;
    returns the largest |onnxruntime - PyTorch| per output over the clip. Raises naming the output and frame
    beyond ``atol + rtol * |PyTorch|`` (numpy's ``isclose``: the rule of the single-step check)."""
    batch, slots = clip[0]["box_valid"].shape
    torch_state = list(module.initial_state(batch, slots).values())
    ort_state = [t.numpy() for t in torch_state]
    measured, session = dict.fromkeys(module.output_names, 0.0), onnx_session(path)
    for t, frame in enumerate(clip):
        with torch.no_grad():
            expected = module(*frame.values(), *torch_state)
        feed = {k: v.numpy() for k, v in frame.items()} | dict(
            zip(module.input_names[len(frame) :], ort_state)
        )
        got = run_onnx(session, feed)
        torch_state, ort_state = expected[len(OUTPUTS) :], got[len(OUTPUTS) :]
        for name, g, e in zip(module.output_names, got, expected, strict=True):
            g, e = g.astype(np.float64), e.numpy().astype(np.float64)
            measured[name] = max(measured[name], float(np.abs(g - e).max(initial=0.0)))
            if not np.isclose(g, e, rtol=check.rtol, atol=check.atol).all():
                raise ValueError(
                    f"{shown}: onnxruntime differs from PyTorch in {name} at frame {t} of the check clip by "
                    f"up to {np.abs(g - e).max():.3g} (allowed: atol {check.atol:g} + rtol {check.rtol:g} * "
                    "|value|)"
                )
    return measured


#: the dynamic axes of the step's inputs and outputs (the state's: :func:`state_axes`)
AXES = {
    "frame": {0: "batch"},
    "features": {0: "batch"},
    "object_features": {0: "batch", 1: "slots"},
    "boxes": {0: "batch", 1: "slots"},
    "box_valid": {0: "batch", 1: "slots"},
    "horizon_probabilities": {0: "batch"},
    "object_probabilities": {0: "batch", 1: "slots"},
    "alarm": {0: "batch"},
}


def _described(tensors: dict[str, torch.Tensor], axes: dict[str, dict[int, str]]) -> dict[str, dict]:
    """The sidecar's shape (dynamic axes named) and dtype of each tensor."""
    return {
        name: {
            "shape": [axes.get(name, {}).get(i, int(n)) for i, n in enumerate(t.shape)],
            "dtype": str(t.dtype).removeprefix("torch."),
        }
        for name, t in tensors.items()
    }


def _input(model: AccidentAnticipator) -> dict:
    """How a frame's inputs are prepared outside the graph, as the data module and the demo prepare them."""
    height, width = model.input_size
    boxes = (
        "x1, y1, x2, y2 float32 in the pixels of the frame at input_size: a source frame's boxes scaled as "
        f"the frame is resized (x * {width} / source width, y * {height} / source height); box_valid False "
        "in empty slots (their box is not read)"
    )
    if model.input_kind == "frames":
        frame = (
            f"RGB uint8 frame resized to input_size with cv2.resize(frame, ({width}, {height}), "
            "interpolation=cv2.INTER_AREA) (aspect ratio not kept; domains.driving.accident.data), / 255, as "
            "(3, H, W); H and W fixed at input_size; ImageNet normalisation (x - mean) / std inside the graph"
        )
        return {"frame": frame, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "boxes": boxes}
    if model.input_kind == "features":
        features = (
            f"the precomputed per-frame (features) and per-object (object_features) vectors of size "
            f"{model.frame_embed[0].in_features} the network was trained on (the npz data's, e.g. UString / "
            "DSTA VGG-16), computed outside"
        )
        return {"features": features, "boxes": boxes}
    return {"frame": "none: the network reads only the objects' boxes and their motion", "boxes": boxes}


def export_accident(
    task: AccidentTask,
    out_dir: str | Path,
    check: ExportCheck = DEFAULT_CHECK,
    checkpoint: str | Path | None = None,
    data: dict | None = None,
) -> dict:
    """Export ``task``'s streaming step as ``out_dir/anticipator.onnx`` + ``anticipator.json`` (see the module
    docstring); returns the sidecar. ``data``: the data module settings the network was trained with (a
    checkpoint's ``datamodule_hyper_parameters``), for the frame rate it counts frames at."""
    out_dir = Path(out_dir)
    model = task.model.eval()
    module = StreamingStep(model).eval()
    names = module.input_names + module.output_names
    axes = AXES | {f"{p}{name}": a for name, a in state_axes(module).items() for p in ("state_", "new_state_")}
    axes = {name: a for name, a in axes.items() if name in names}
    # traced at a clip's third frame (a state that has seen boxes), checked on another batch and slot count
    traced = check_clip(model, *TRACED, seed=1)
    state = tuple(module.initial_state(*TRACED).values())
    with torch.no_grad():
        for frame in traced[:2]:
            state = module(*frame.values(), *state)[len(OUTPUTS) :]
    example = traced[2] | dict(zip(module.input_names[len(module.inputs) :], state))
    clip = check_clip(model, *CHECKED)
    backbone = model.init_args.get("backbone") if model.input_kind == "frames" else model.input_kind
    with CheckedExport(
        out_dir, check, "driving_accident", f"accident_anticipator/{backbone}", checkpoint
    ) as export:
        measured = export.graph(GRAPH, module, example, module.output_names, axes)
        over_clip = compare_clip(module, export.staged(GRAPH), clip, check, out_dir / GRAPH)
        measured = {name: max(measured[name], over_clip[name]) for name in measured}
        with torch.no_grad():
            outputs = dict(zip(module.output_names, module(*example.values())))
        fps, fps_source = training_fps(data)
        horizons = [float(h) for h in model.horizons]
        sidecar = {
            "graph": GRAPH,
            "input_kind": model.input_kind,
            "temporal": model.temporal,
            "input_size": list(model.input_size),
            "inputs": _described(example, axes),
            "outputs": _described(outputs, axes),
            "input": _input(model),
            "state": {
                "names": module.state_names,
                "inputs": "state_<name>",
                "outputs": "new_state_<name>",
                "initial": "zeros (False for bool) of the shapes in inputs at a clip's first frame "
                "(AccidentAnticipator.initial_state, then alarm: the alarm latch)",
                "carry": "feed each frame's new_state_<name> to the next frame's state_<name>; the state "
                "never grows; slots stays the clip's first frame's",
            },
            "horizons_s": horizons,
            "probabilities": "horizon_probabilities[:, i] = P(contact within horizons_s[i]) = sigmoid(logit "
            "/ temperature), monotone in the horizon; object_probabilities: each slot's object's risk, ~2e-9 "
            "in an empty slot",
            "temperature": {"value": float(model.temperature), "where": "inside the graph"},
            "alarm": {
                "horizon_s": model.alarm_horizon,
                # unrounded: the float32 value the graph compares with
                "threshold": float(model.alarm_threshold),
                "rule": "alarm = state_alarm or horizon_probabilities[:, -1] >= threshold (inside the "
                "graph; new_state_alarm carries it): latched as predict's alarm column, True from the clip's "
                "first frame at or above the threshold on",
            },
            "blind": {
                "applies": model.input_kind == "boxes",
                "rule": "a boxes-only network's frame with no valid box gets horizon probabilities 0 (inside "
                "the graph, as predict): it has nothing to read there; its state is updated all the same",
            },
            "frame_rate": {
                "fps": fps,
                "source": fps_source,
                "rule": "one step per frame at this rate: the motion lags count frames and the horizons were "
                "learnt at it; resample a clip at another rate "
                "(domains.driving.accident.readers.model_steps)",
            },
            "motion_lags": list(model.motion_lags),
            "tracking": "outside the graph: the detector's boxes linked into tracks, each track kept in one "
            "slot for the whole clip (domains.driving.accident.tracking; its tracks_to_slots chooses slots "
            "over a whole clip: live, give a new track a free slot and keep it there)",
            "outside": {
                "ttc": "median time to contact from horizon_probabilities: "
                "domains.driving.accident.model.ttc_from_horizons",
                "uncertainty": "predict's Monte Carlo dropout spread is not exported",
            },
        }
        measured_on = (
            f"a random {len(clip)}-frame clip at batch {CHECKED[0]} with {CHECKED[1]} slots, each runtime "
            f"carrying its own state from zeros; one step at batch {TRACED[0]} with {TRACED[1]} slots"
        )
        return export.finish(SIDECAR, sidecar, measured, measured_on)


def main(argv: list[str] | None = None) -> dict:
    return export_main(
        argv,
        "domains.driving.accident",
        __doc__,
        AccidentTask,
        export_accident,
        (GRAPH, SIDECAR),
        data=True,
        detail=lambda _: "streamed over the check clip",  # the sidecar's measured_on says how
    )


if __name__ == "__main__":
    run_export(main)
