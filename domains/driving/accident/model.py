"""The accident anticipator as a plain ``nn.Module``: frames (or precomputed features) in, per-frame risks out.

Why this shape (the DSA-RNN / UString line of the field, made streaming): each frame is encoded once by a
registry backbone (pooled: what the scene looks like) and each tracked object by RoIAlign on the same
backbone's stride-8 map plus its box motion (the change of box scale is the looming cue behind time to
collision; the shift says whether it moves into the ego path). Each object slot keeps a small recurrent state
(which object is the danger), an attention over the slots feeds the frame's temporal model (a GRU, or a small
transformer over a fixed window of past frames), so a new frame updates a fixed-size state and the model runs
live (:meth:`step`).

Outputs per frame: log-odds that contact happens within each horizon (0.5, 1, 1.5, 2 s by default) and a risk
logit per object slot. The horizon probabilities are a discrete CDF of the time to contact, monotone by
construction (each horizon adds a non-negative log-odds increment), so "within 1 s" never exceeds "within 2 s";
the median time to contact is read off that CDF (:func:`ttc_from_horizons`). ``temperature`` (a buffer, fitted
on validation data by the task) divides every logit: calibrated probabilities travel with the weights.

    model = AccidentAnticipator(backbone="mobilenet_v3_small", input_size=(96, 320))
    out = model(frames=frames, boxes=boxes, box_valid=valid)    # frames (B, T, 3, H, W) in [0, 1]
    out["horizon_logits"]   # (B, T, 4)      out["object_logits"]   # (B, T, N)
    state = None
    for t in range(T):                                           # live: one frame at a time
        step, state = model.step(frames[:, t], boxes[:, t], valid[:, t], state)
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from shared.backbones import IMAGENET_MEAN, IMAGENET_STD, FreezableBackbone, create_backbone
from shared.networks import RemembersInitArgs

#: logit given to empty object slots (a risk of ~2e-9; finite, so losses and sums stay finite)
EMPTY_SLOT_LOGIT = -20.0
#: box geometry features per object: centre, size, log scale change (x2), centre shift (x2), seen before
GEOMETRY_FEATURES = 9
#: per extra motion lag (``motion_lags`` beyond 1): log scale change and centre shift per frame over that lag
#: (x2 each) and whether the object was seen that many frames ago
LAG_FEATURES = 5
#: the per-frame box scale change is a few percent; this brings it to about unit range
MOTION_GAIN = 10.0

__all__ = ["AccidentAnticipator", "ttc_from_horizons"]


def ttc_from_horizons(probabilities: torch.Tensor, horizons: torch.Tensor) -> torch.Tensor:
    """Median time to contact read from the horizon CDF: where ``P(contact within h)`` crosses 0.5, linearly
    interpolated between horizons (the CDF is 0 at 0 s); ``inf`` where even the longest horizon stays below
    0.5. ``probabilities`` (..., H), ``horizons`` (H,) ascending."""
    h = horizons.to(probabilities)
    p = probabilities
    above = p >= 0.5
    first = torch.where(
        above.any(-1), above.float().argmax(-1), torch.full_like(p[..., 0], -1, dtype=torch.long)
    )
    idx = first.clamp(min=0)
    p_hi = p.gather(-1, idx[..., None])[..., 0]
    h_hi = h[idx]
    prev = (idx - 1).clamp(min=0)
    p_lo = torch.where(idx > 0, p.gather(-1, prev[..., None])[..., 0], torch.zeros_like(p_hi))
    h_lo = torch.where(idx > 0, h[prev], torch.zeros_like(h_hi))
    frac = ((0.5 - p_lo) / (p_hi - p_lo).clamp(min=1e-6)).clamp(0, 1)
    ttc = h_lo + frac * (h_hi - h_lo)
    return torch.where(first >= 0, ttc, torch.full_like(ttc, float("inf")))


def _checked_valid(box_valid: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """``box_valid`` as bool, of ``boxes``' shape less its last axis: a float or integer mask of 0 / 1 (what a
    caller builds with ``.float()`` or numpy) is converted; other values, or another shape, are refused."""
    if tuple(box_valid.shape) != tuple(boxes.shape[:-1]):
        raise ValueError(
            f"box_valid has shape {tuple(box_valid.shape)}, expected {tuple(boxes.shape[:-1])} (boxes' shape "
            f"{tuple(boxes.shape)} less its last axis: one flag per box)"
        )
    if box_valid.dtype == torch.bool:
        return box_valid
    bad = (box_valid != 0) & (box_valid != 1)  # NaN included
    if bad.any():
        raise ValueError(
            f"box_valid must be bool or hold only 0 / 1, got dtype {str(box_valid.dtype).removeprefix('torch.')} "
            f"with {int(bad.sum())} other values (e.g. {box_valid[bad][0].item()!r})"
        )
    return box_valid.bool()


class AccidentAnticipator(FreezableBackbone, RemembersInitArgs, nn.Module):
    """Per-frame contact risk within each horizon and per-object risk, from frames or precomputed features.

    Args:
        backbone: a registered backbone encoding frames (``input_kind: frames``); its stride-8 map feeds the
            object RoIs and its last map the frame vector.
        backbone_kwargs: extra arguments of that backbone.
        input_kind: ``frames`` (RGB frames in [0, 1]), ``features`` (precomputed per-frame and per-object
            vectors, e.g. the UString / DSTA VGG-16 ``npz`` features; no backbone is built) or ``boxes`` (the
            object tracks' motion alone, no appearance: on a few hundred training clips the scene's look
            identifies the clip, and a network that sees it memorises which clips crash; boxes generalise).
        feature_dim: size of the precomputed vectors (``input_kind: features``; 4096 for VGG-16).
        input_size: (height, width) of the frames the network was trained on (kept for the demo and export).
        horizons: contact horizons in seconds, ascending; the last one is the alarm's (``alarm_horizon``).
        temporal: ``gru`` (one recurrent state per clip) or ``transformer`` (self-attention over the last
            ``window`` frames' inputs).
        hidden: width of the frame and object states.
        roi_size: RoIAlign output size per object.
        window: frames the transformer sees (``temporal: transformer``).
        motion_lags: frame lags of the box motion features; 1 (always first) compares each box with the
            object's last seen one, each longer lag k with its box k frames ago, as a rate per frame. Lags
            count frames, not seconds (5 is half a second at the synthetic clips' 10 fps, a quarter at DAD's
            20). A lag of half a second averages the looming (scale change) and the sideways drift over several frames:
            the acceleration behind a hard brake shows as lags that disagree. The state keeps the last
            ``max(motion_lags)`` boxes per slot (still a fixed size).
        dropout: dropout before the heads; also what :meth:`sample_heads` samples for the uncertainty estimate.
    """

    def __init__(
        self,
        backbone: str = "mobilenet_v3_small",
        backbone_kwargs: dict | None = None,
        input_kind: Literal["frames", "features", "boxes"] = "frames",
        feature_dim: int = 4096,
        input_size: tuple[int, int] = (96, 320),
        horizons: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0),
        temporal: Literal["gru", "transformer"] = "gru",
        hidden: int = 128,
        roi_size: int = 3,
        window: int = 16,
        dropout: float = 0.1,
        motion_lags: tuple[int, ...] = (1,),
    ):
        super().__init__()
        motion_lags = tuple(int(k) for k in motion_lags)
        if not motion_lags or motion_lags[0] != 1 or list(motion_lags) != sorted(set(motion_lags)):
            raise ValueError(f"motion_lags must start at 1 and ascend (frames), got {motion_lags}")
        self.motion_lags = motion_lags
        horizons = tuple(float(h) for h in horizons)
        if not horizons or any(h <= 0 for h in horizons) or list(horizons) != sorted(set(horizons)):
            raise ValueError(f"horizons must be positive seconds in ascending order, got {horizons}")
        if input_kind not in ("frames", "features", "boxes"):
            raise ValueError(f"input_kind must be 'frames', 'features' or 'boxes', got {input_kind!r}")
        if temporal not in ("gru", "transformer"):
            raise ValueError(f"temporal must be 'gru' or 'transformer', got {temporal!r}")
        if len(input_size) != 2 or min(input_size) < 16:
            raise ValueError(f"input_size must be (height, width) with both >= 16, got {input_size}")
        self.input_kind, self.temporal = input_kind, temporal
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.hidden, self.window, self.roi_size = hidden, window, roi_size
        self.register_buffer("horizons", torch.tensor(horizons), persistent=False)
        self.register_buffer("temperature", torch.ones(()))
        # the alarm threshold on the alarm-horizon probability (set by the task on validation data: the
        # lowest one whose false-alarm rate on negative clips stays within the cap)
        self.register_buffer("alarm_threshold", torch.full((), 0.5))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        # boxes in pixels -> fractions of the frame; a buffer, not a tensor built per frame (a host-to-device copy
        # that waits for the GPU, once per time step)
        h, w = self.input_size
        self.register_buffer("box_scale", torch.tensor([w, h, w, h], dtype=torch.float32), persistent=False)

        if input_kind == "frames":
            self.backbone = create_backbone(backbone, **(backbone_kwargs or {}))
            strides = list(self.backbone.feature_strides)
            self.roi_level = strides.index(8) if 8 in strides else max(0, len(strides) - 2)
            self.roi_stride = strides[self.roi_level]
            frame_in = self.backbone.feature_channels[-1]
            object_in = self.backbone.feature_channels[self.roi_level] * roi_size * roi_size
        else:
            self.backbone = None
            frame_in = object_in = feature_dim if input_kind == "features" else 1
        self.frame_embed = nn.Sequential(nn.Linear(frame_in, hidden), nn.ReLU(inplace=True))
        self.object_embed = nn.Sequential(nn.Linear(object_in, hidden), nn.ReLU(inplace=True))
        self.geometry_embed = nn.Sequential(
            nn.Linear(GEOMETRY_FEATURES + LAG_FEATURES * (len(motion_lags) - 1), hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
        )
        self.object_cell = nn.GRUCell(3 * hidden, hidden)
        self.attention = nn.Linear(hidden, hidden, bias=False)
        if temporal == "gru":
            self.frame_cell = nn.GRUCell(2 * hidden, hidden)
        else:
            self.frame_in = nn.Linear(2 * hidden, hidden)
            self.position = nn.Parameter(torch.zeros(window, hidden))
            layer = nn.TransformerEncoderLayer(hidden, 4, 2 * hidden, dropout=0.0, batch_first=True)
            self.frame_transformer = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head_dropout = nn.Dropout(dropout)
        self.horizon_head = nn.Sequential(
            nn.Linear(2 * hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, len(horizons))
        )
        self.object_head = nn.Sequential(
            nn.Linear(2 * hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1)
        )

    @property
    def alarm_horizon(self) -> float:
        return float(self.horizons[-1])

    # ------------------------------------------------------------------------------------------ encoding
    def encode(
        self,
        frames: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        object_features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame vectors (B, T, hidden) and object appearance vectors (B, T, N, hidden), all frames at once."""
        if self.input_kind == "boxes":  # no appearance: a constant input, the geometry carries the signal
            ref = boxes if boxes is not None else frames
            b, t, n = ref.shape[0], ref.shape[1], (boxes.shape[2] if boxes is not None else 1)
            return self.frame_embed(ref.new_ones(b, t, 1)), self.object_embed(ref.new_ones(b, t, n, 1))
        if self.input_kind == "features":
            if features is None or object_features is None:
                raise ValueError("this network reads precomputed features: pass features and object_features")
            return self.frame_embed(features), self.object_embed(object_features)
        if frames is None or boxes is None:
            raise ValueError("this network reads frames: pass frames (B, T, 3, H, W) and boxes (B, T, N, 4)")
        b, t = frames.shape[:2]
        n = boxes.shape[2]
        x = (frames.flatten(0, 1) - self.mean) / self.std
        maps = self.backbone.forward_features(x)
        frame_vec = maps[-1].mean((2, 3))
        # float32 boxes and frame indices: under bf16 autocast the indices above 256 round to other frames
        rois = boxes.flatten(0, 1).float()  # (B*T, N, 4)
        index = torch.arange(b * t, device=rois.device, dtype=torch.float32).repeat_interleave(n)[:, None]
        pooled = roi_align(
            maps[self.roi_level].float(),
            torch.cat([index, rois.reshape(-1, 4)], 1),
            output_size=self.roi_size,
            spatial_scale=1.0 / self.roi_stride,
            sampling_ratio=2,
            aligned=True,
        )
        frame_emb = self.frame_embed(frame_vec).view(b, t, -1)
        object_emb = self.object_embed(pooled.flatten(1)).view(b, t, n, -1)
        return frame_emb, object_emb

    # ------------------------------------------------------------------------------------------ temporal
    def initial_state(self, batch: int, slots: int, device=None) -> dict[str, torch.Tensor]:
        """The state before a clip's first frame (zeros; no object seen)."""
        state = {
            "objects": torch.zeros(batch, slots, self.hidden, device=device),
            "prev_boxes": torch.zeros(batch, slots, 4, device=device),
            "prev_valid": torch.zeros(batch, slots, dtype=torch.bool, device=device),
        }
        if len(self.motion_lags) > 1:  # the last max-lag frames' boxes, newest first
            depth = self.motion_lags[-1]
            state["history"] = torch.zeros(batch, slots, depth, 4, device=device)
            state["history_valid"] = torch.zeros(batch, slots, depth, dtype=torch.bool, device=device)
        if self.temporal == "gru":
            state["frame"] = torch.zeros(batch, self.hidden, device=device)
        else:
            state["window"] = torch.zeros(batch, self.window, self.hidden, device=device)
            state["window_valid"] = torch.zeros(batch, self.window, dtype=torch.bool, device=device)
        return state

    def _geometry(self, boxes: torch.Tensor, valid: torch.Tensor, state: dict) -> torch.Tensor:
        scale = self.box_scale.to(boxes.dtype)

        def centre_size(pixel_boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            b = pixel_boxes / scale
            return (b[..., :2] + b[..., 2:]) / 2, (b[..., 2:] - b[..., :2]).clamp(min=1e-4)

        def motion(old_boxes: torch.Tensor, old_valid: torch.Tensor, frames: int) -> list[torch.Tensor]:
            """Scale change and drift since a box ``frames`` ago, per frame; zeros where either is missing."""
            old_centre, old_size = centre_size(old_boxes)
            seen = (valid & old_valid).unsqueeze(-1).to(boxes.dtype)
            gain = MOTION_GAIN / frames * seen
            return [torch.log(size / old_size) * gain, (centre - old_centre) * gain, seen]

        centre, size = centre_size(boxes)
        features = [centre, size, *motion(state["prev_boxes"], state["prev_valid"], 1)]
        for lag in self.motion_lags[1:]:  # the box `lag` frames ago (history[..., 0] is the previous frame's)
            features += motion(state["history"][:, :, lag - 1], state["history_valid"][:, :, lag - 1], lag)
        return torch.cat(features, -1) * valid.unsqueeze(-1).to(boxes.dtype)

    def temporal_step(
        self,
        frame_emb: torch.Tensor,
        object_emb: torch.Tensor,
        boxes: torch.Tensor,
        valid: torch.Tensor,
        state: dict[str, torch.Tensor],
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """One frame: update the object slots and the frame state; return the head inputs and the new state."""
        n = object_emb.shape[1]
        geometry = self.geometry_embed(self._geometry(boxes, valid, state))
        object_in = torch.cat([object_emb, geometry, frame_emb[:, None].expand(-1, n, -1)], -1)
        updated = self.object_cell(object_in.flatten(0, 1), state["objects"].flatten(0, 1)).view_as(
            state["objects"]
        )
        mask = valid.unsqueeze(-1)
        objects = torch.where(mask, updated, state["objects"])

        query = state["frame"] if self.temporal == "gru" else frame_emb
        scores = torch.einsum("bh,bnh->bn", self.attention(query), objects) / self.hidden**0.5
        scores = scores.masked_fill(~valid, float("-inf"))
        weights = torch.where(valid.any(1, keepdim=True), scores.softmax(1), torch.zeros_like(scores))
        weights = torch.nan_to_num(weights)
        context = torch.einsum("bn,bnh->bh", weights, objects)
        frame_in = torch.cat([frame_emb, context], -1)

        new_state = {
            "objects": objects,
            "prev_boxes": torch.where(mask, boxes, state["prev_boxes"]),
            "prev_valid": valid | state["prev_valid"],
        }
        if "history" in state:
            kept = torch.where(mask, boxes, torch.zeros_like(boxes))  # an empty slot's box may be anything
            new_state["history"] = torch.cat([kept[:, :, None], state["history"][:, :, :-1]], 2)
            new_state["history_valid"] = torch.cat([valid[:, :, None], state["history_valid"][:, :, :-1]], 2)
        if self.temporal == "gru":
            frame = self.frame_cell(frame_in, state["frame"])
            new_state["frame"] = frame
        else:
            window = torch.cat([state["window"][:, 1:], self.frame_in(frame_in)[:, None]], 1)
            window_valid = torch.cat([state["window_valid"][:, 1:], torch.ones_like(valid[:, :1])], 1)
            encoded = self.frame_transformer(window + self.position, src_key_padding_mask=~window_valid)
            frame = encoded[:, -1]
            new_state["window"], new_state["window_valid"] = window, window_valid
        return {"frame": frame, "objects": objects, "valid": valid}, new_state

    def heads(self, hidden: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Horizon log-odds (B, H), monotone in the horizon, and object log-odds (B, N); divided by
        ``temperature`` outside training."""
        frame = self.head_dropout(hidden["frame"])
        objects = self.head_dropout(hidden["objects"])
        horizon = self._horizon_head(frame, objects, hidden["valid"])
        n = objects.shape[1]
        obj = self.object_head(torch.cat([objects, frame[:, None].expand(-1, n, -1)], -1))[..., 0]
        temperature = self._temperature()
        obj = obj / temperature
        return {
            "horizon_logits": horizon / temperature,
            "object_logits": obj.masked_fill(~hidden["valid"], EMPTY_SLOT_LOGIT),
        }

    def _temperature(self) -> torch.Tensor | float:
        """Training sees raw log-odds: the temperature is fitted afterwards on validation data."""
        return 1.0 if self.training else self.temperature

    def _horizon_head(self, frame: torch.Tensor, objects: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Horizon log-odds (R, H) before the temperature from the (dropped-out) head inputs of R rows: frame
        (R, hidden), objects (R, N, hidden), valid (R, N)."""
        pooled = objects.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(1)  # the valid slots' maximum
        pooled = torch.where(valid.any(1, keepdim=True), pooled, torch.zeros_like(pooled))
        raw = self.horizon_head(torch.cat([frame, pooled], -1))
        return torch.cat([raw[:, :1], raw[:, :1] + F.softplus(raw[:, 1:]).cumsum(1)], 1)

    # ----------------------------------------------------------------------------------------- interface
    def forward(
        self,
        frames: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        box_valid: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        object_features: torch.Tensor | None = None,
        return_hidden: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Whole clips: ``horizon_logits`` (B, T, H) and ``object_logits`` (B, T, N); with ``return_hidden``
        also the per-frame head inputs (for :meth:`sample_heads`)."""
        boxes, box_valid, object_features = self._no_objects(
            frames, features, boxes, box_valid, object_features
        )
        frame_emb, object_emb = self.encode(frames, boxes, features, object_features)
        b, t, n = boxes.shape[:3]
        state = self.initial_state(b, n, device=boxes.device)
        hiddens = []
        for i in range(t):
            hidden, state = self.temporal_step(
                frame_emb[:, i], object_emb[:, i], boxes[:, i], box_valid[:, i], state
            )
            hiddens.append(hidden)
        # the heads see each frame alone: one call on all B * T rows (per frame, T small calls were ~20 % of
        # a forward pass on a CPU)
        rows = {key: torch.stack([h[key] for h in hiddens], 1).flatten(0, 1) for key in hiddens[0]}
        out = {key: value.unflatten(0, (b, t)) for key, value in self.heads(rows).items()}
        if return_hidden:
            out["hidden"] = hiddens
        return out

    @staticmethod
    def _no_objects(frames, features, boxes, box_valid, object_features, clip: bool = True, slots: int = 1):
        """Inputs without objects (e.g. CCD without detections: ``boxes`` None; a detector that found nothing
        in the whole clip or frame: zero slots) get ``slots`` empty slots (one; :meth:`step` gives its state's
        count), boxes without ``box_valid`` are all valid, and a 0 / 1 ``box_valid`` of any dtype is read as
        bool (:func:`_checked_valid`); for whole clips (``clip``: leading B, T) and single frames (leading B)."""
        empty = None  # zero slots: the temporal models need one slot to attend to, as without boxes
        if boxes is not None and boxes.shape[-2] == 0:
            empty, boxes, box_valid = boxes, None, None
            if object_features is not None and object_features.shape[-2] == 0:
                object_features = None
        if boxes is not None:  # boxes without a validity mask: every box is an object
            if box_valid is None:
                box_valid = torch.ones(boxes.shape[:-1], dtype=torch.bool, device=boxes.device)
            return boxes, _checked_valid(box_valid, boxes), object_features
        ref = next((x for x in (frames, features, empty) if x is not None), None)
        if ref is None:
            raise ValueError("no input: pass frames, features or boxes")
        lead = ref.shape[:2] if clip else ref.shape[:1]
        boxes = ref.new_zeros(*lead, slots, 4)
        box_valid = torch.zeros(boxes.shape[:-1], dtype=torch.bool, device=ref.device)
        if object_features is None and features is not None:
            object_features = features.new_zeros(*boxes.shape[:-1], features.shape[-1])
        return boxes, box_valid, object_features

    @torch.no_grad()
    def step(
        self,
        frame: torch.Tensor | None,
        boxes: torch.Tensor | None,
        box_valid: torch.Tensor | None,
        state: dict[str, torch.Tensor] | None = None,
        features: torch.Tensor | None = None,
        object_features: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Streaming: one new frame (B, 3, H, W) with its boxes (B, N, 4) updates the fixed-size ``state``
        (None at a clip's start); returns this frame's horizon and object log-odds and the new state. A frame
        without objects (``boxes`` None, or zero slots) gets the state's slot count, all empty. A
        boxes-only network's horizon log-odds are ``EMPTY_SLOT_LOGIT`` on a frame without objects (:meth:`blind`)."""
        # a frame without objects gets as many empty slots as its clip's state has, as forward pads it
        slots = 1 if state is None else state["objects"].shape[1]
        boxes, box_valid, object_features = self._no_objects(
            frame, features, boxes, box_valid, object_features, clip=False, slots=slots
        )
        frame_emb, object_emb = self.encode(
            None if frame is None else frame[:, None],
            boxes[:, None],
            None if features is None else features[:, None],
            None if object_features is None else object_features[:, None],
        )
        if state is None:
            state = self.initial_state(boxes.shape[0], boxes.shape[1], device=boxes.device)
        elif state["objects"].shape[1] != boxes.shape[1]:
            raise ValueError(
                f"boxes has {boxes.shape[1]} object slots, the state {state['objects'].shape[1]} (its clip's "
                "first frame's): pad every frame's boxes to one slot count, box_valid False in the empty slots"
            )
        hidden, state = self.temporal_step(frame_emb[:, 0], object_emb[:, 0], boxes, box_valid, state)
        out = self.heads(hidden)
        # as predict scores such a frame (AccidentTask.predict_step): a live caller would alarm on an empty road
        out["horizon_logits"] = out["horizon_logits"].masked_fill(self.blind(box_valid)[:, None], EMPTY_SLOT_LOGIT)
        return out, state

    def blind(self, box_valid: torch.Tensor) -> torch.Tensor:
        """Frames (leading shape of ``box_valid`` less its slot axis) with no object in view, for a boxes-only
        network (all False for one that reads pixels or features). It has nothing to read there: its output is a
        prior learnt from clips that had objects (the shipped model gave 0.62 on an empty road, a false alarm at
        a 0.6 threshold), so evaluation, predict and :meth:`step` give them probability 0 (training keeps them)."""
        if self.input_kind != "boxes":
            return torch.zeros(box_valid.shape[:-1], dtype=torch.bool, device=box_valid.device)
        return ~box_valid.any(-1)

    @torch.no_grad()
    def sample_heads(self, hidden: list[dict[str, torch.Tensor]], samples: int) -> torch.Tensor:
        """Alarm-horizon probabilities (samples, B, T) with the heads' dropout on (Monte Carlo dropout): their
        spread is the uncertainty estimate; the recurrent states are computed once.

        The T frames' head inputs go through as one (B * T)-row batch, and only the horizon head runs (the
        object head's output was thrown away): 1 call per draw instead of T, half the time of a predict step.
        Dropout masks are drawn as :meth:`heads` draws them (frame and object inputs, each element
        independently), but for all frames at once, so a seeded run draws other masks than a per-frame loop."""

        def rows(key: str) -> torch.Tensor:  # T tensors (B, ...) -> (B * T, ...), clip by clip
            return torch.stack([h[key] for h in hidden], 1).flatten(0, 1)

        b, t = hidden[0]["frame"].shape[0], len(hidden)
        frame, objects, valid = rows("frame"), rows("objects"), rows("valid")
        temperature = self._temperature()
        was_training = self.head_dropout.training
        self.head_dropout.train()
        try:
            draws = [
                self._horizon_head(self.head_dropout(frame), self.head_dropout(objects), valid)[:, -1]
                for _ in range(samples)
            ]
        finally:
            self.head_dropout.train(was_training)
        return (torch.stack(draws) / temperature).sigmoid().view(samples, b, t)
