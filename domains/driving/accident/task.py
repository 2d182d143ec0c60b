"""Lightning wrapper of :class:`AccidentAnticipator`: training targets, calibration, clip metrics, predictions.

Targets come from the contact frame alone (``toa``): at frame ``t`` of a crash clip, "contact within ``h``
seconds" is true when ``(toa - t) / fps <= h`` (and stays true after contact); negative clips (near misses and
ordinary driving) are 0 everywhere. Plain binary cross-entropy per horizon suits these exact labels (UString's
exponentially weighted loss exists because it has one score and no horizon); the object slots involved in the
contact are the positives of the per-object risk over the alarm horizon.

Validation fits one temperature (:func:`~domains.driving.accident.metrics.fit_temperature`, all horizons'
frame labels) and the alarm threshold (the lowest whose false-alarm rate on negative clips stays within
``max_false_alarm``), both kept in the network's buffers, so ``test``, ``predict``, export and the demo use the
calibrated risk the validation split chose. Metrics are the clip-level ones of
:mod:`domains.driving.accident.metrics` (video and frame AP named apart, physical and legacy mTTA, ...).
"""

from __future__ import annotations

import zlib
from importlib import import_module
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from domains.driving.accident.data import own_clip_shape_warnings
from domains.driving.accident.metrics import horizon_targets
from domains.driving.accident.model import AccidentAnticipator, ttc_from_horizons
from shared.backbones import list_backbones
from shared.task import BaseTask, FrozenBackboneCheck, gather_lists

# Run-time choices, kept out of checkpoints (as for the other driving tasks).
RUNTIME_ARGS = ("pretrained_backbone", "pretrained_prefix", "predict_dir", "uncertainty_samples", "gif")
HEADLINE = "video_ap"
TEMPERATURE_RANGE = (0.05, 20.0)


def float32_at_least(value: float) -> float:
    """The smallest float32 >= ``value``. The alarm threshold lives in a float32 buffer, and the threshold just
    above a negative clip's peak (``operating_threshold``) rounds back onto that peak there, so the clip it was
    chosen to keep quiet would alarm."""
    stored = np.float32(value)  # compared as float64 below: NumPy 2 compares a float32 with a Python float in float32
    return float(np.nextafter(stored, np.float32(np.inf)) if float(stored) < value else stored)


class AccidentTask(FrozenBackboneCheck, BaseTask):
    """Accident anticipation on dashcam clips: the risk of contact per frame, per horizon and per object.

    Validation logs frame AP (the checkpoint's monitor, ``val/frame_ap``; ``frame_ap_before_contact`` without
    the crash frames themselves), video AP, mTTA, TTA at 80 % recall,
    AP 0.5 / 1 / 1.5 s ahead, near-miss false alarms, ECE and Brier, the fitted temperature and alarm threshold
    (``val/temperature``, ``val/threshold``: the network's ``alarm_threshold``).

    Args:
        network: the anticipator, as ``class_path: domains.driving.accident.model.AccidentAnticipator`` +
            ``init_args`` (``backbone``: a registered backbone: {backbones}; ``temporal``: gru / transformer;
            ``horizons``; ``input_kind``: frames / features / boxes, quick.yaml's tracks alone;
            ``--model.network.help AccidentAnticipator``).
            ``input_size`` comes from ``data.image_size`` (linked by the CLI).
        pretrained_backbone: local weight file for the frame backbone (``.pth``, ``.ckpt`` or ``.safetensors``,
            e.g. the suite's trained road detector: a road-scene backbone beats scratch on small data); nothing
            is downloaded. The load report is printed.
        pretrained_prefix: key prefix of the backbone in that file (the shipped detector
            ``apps/weights/driving_detection.safetensors``: ``detector.backbone.body.``; a detection ``.ckpt``:
            ``model.detector.backbone.body.``; the shipped road-anomaly segmenter
            ``apps/weights/driving_anomaly.safetensors``, into backbone ``unet_encoder`` with its
            ``backbone_kwargs: {channels: [24, 48, 96, 192, 384]}``: ``segmenter.backbone.encoder.``).
        freeze_backbone: keep the frame backbone's weights fixed (a transferred backbone on little data; also
            about 3x less compute per step).
        object_loss_weight: weight of the per-object risk loss beside the horizon loss.
        calibrate: fit the temperature and the alarm threshold at each validation.
        max_false_alarm: the alarm threshold's cap on the share of negative validation clips that raise an alarm.
        uncertainty_samples: Monte Carlo dropout draws of the heads in ``predict`` (their spread is the
            per-frame uncertainty); 0: none.
        predict_dir: where ``predict`` writes ``<clip>/risk.csv``, ``<clip>/objects.csv`` (boxes in the clip's own
            pixels) and ``<clip>.gif`` (the frames at ``data.image_size``, boxes drawn in those pixels).
        gif: write the annotated GIF per clip (boxes coloured by risk, risk curve, alarm moment).
        base_task_args: ``optimizer``, ``lr_scheduler``, ``nonfinite_loss`` (see :class:`shared.task.BaseTask`).
    """

    TRAINED_PART = "the object and temporal layers"

    CLI_LINKS = (("data.image_size", "model.network.init_args.input_size"),)

    def __init__(
        self,
        network: AccidentAnticipator,
        pretrained_backbone: str | None = None,
        pretrained_prefix: str = "",
        freeze_backbone: bool = False,
        object_loss_weight: float = 0.5,
        calibrate: bool = True,
        max_false_alarm: float = 0.1,
        uncertainty_samples: int = 8,
        predict_dir: str | None = None,
        gif: bool = True,
        **base_task_args,
    ):
        super().__init__(**base_task_args)
        self.save_hyperparameters(ignore=list(RUNTIME_ARGS))
        if object_loss_weight < 0:
            raise ValueError(f"object_loss_weight must be >= 0, got {object_loss_weight}")
        if not 0 <= max_false_alarm < 1:
            raise ValueError(f"max_false_alarm must be in [0, 1), got {max_false_alarm}")
        if uncertainty_samples < 0:
            raise ValueError(f"uncertainty_samples must be >= 0, got {uncertainty_samples}")
        self.model = self.build_network(network, AccidentAnticipator)
        if pretrained_backbone:  # a frozen backbone must be given whole (FrozenBackboneCheck, at fit start)
            if self.model.backbone is None:
                raise ValueError(
                    f"pretrained_backbone needs input_kind: frames (a {self.model.input_kind} network reads no "
                    "pixels, so it has no backbone to load; full.yaml reads frames)"
                )
            self.load_pretrained_backbone(pretrained_backbone, pretrained_prefix)
        if freeze_backbone and self.model.backbone is not None:
            self.model.set_backbone_frozen(True)  # BatchNorm stays in eval mode through Lightning's train()
        self.predict_dir, self.gif = predict_dir, gif
        self.uncertainty_samples = uncertainty_samples
        self._records: dict[str, list[dict]] = {}
        self.last_metrics: dict[str, dict[str, float]] = {}
        self.last_records: dict[
            str, list[dict]
        ] = {}  # the last epoch's clips per stage (benchmarks read them)

    # ------------------------------------------------------------------------------------------- helpers
    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        datamodule = getattr(self._trainer, "datamodule", None)
        if hasattr(datamodule, "check_checkpoint_rate"):  # own clips: read at the rate the weights learnt at
            datamodule.check_checkpoint_rate(checkpoint.get("datamodule_hyper_parameters"))

    def configure_callbacks(self):
        if not self.predict_dir:
            return []
        writer = import_module("domains.driving.accident.predict").AccidentPredictionWriter
        return [writer(self.predict_dir, gif=self.gif)]

    def setup(self, stage: str) -> None:
        """Refuse a frames network on boxes-only loaders (training, validation and test: only predict decodes
        frames with ``data.train_frames`` false) before any step (``forward_batch`` says it again for loaders
        built by hand), and a boxes-only network on clips without a single track (real CCD and DoTA carry
        none): every input would be empty, and it trained, tested and predicted 0 everywhere without a word.
        Also a network of the wrong input for ``npz`` features (frames, or another ``feature_dim``) and a
        features network on clips with frames, which failed in the sanity check with a shape error."""
        datamodule = getattr(self.trainer, "datamodule", None)  # setup runs with a trainer attached
        clips = [clip for split in (getattr(datamodule, "splits", None) or {}).values() for clip in split]
        own = getattr(datamodule, "predicting_own_images", lambda: False)()
        if own and self.model.input_kind == "features":
            raise ValueError(
                "the network reads precomputed npz features (input_kind: features); --data.predict_path gives "
                "videos and frames: use a network that reads frames (full.yaml)"
            )
        self._check_feature_input(clips)
        if self.model.input_kind == "boxes" and clips and not any(clip.tracks for clip in clips):
            source = "--data.predict_path" if own else getattr(datamodule, "data_format", "these")
            detector = (  # the shipped detector needs no training: a user without a .ckpt was not told of it
                " or give --data.predict_detector (a road detector's .ckpt, or the shipped "
                "apps/weights/driving_detection.safetensors) to find them"
                if own
                else ""
            )
            if own and getattr(datamodule, "predict_detector", None):
                threshold = getattr(datamodule, "predict_detector_threshold", None)
                scored = "its predict_score_thresh" if threshold is None else f"{threshold:g}"
                detector = f"; the detector found none scoring >= {scored}: lower --data.predict_detector_threshold"
            raise ValueError(
                f"the network reads only the objects' boxes (input_kind: boxes) but none of the {len(clips)} "
                f"{source} clips has a track: use a network that reads frames (full.yaml, or "
                f"--model.network.init_args.input_kind frames --data.train_frames true){detector}"
            )
        if own:  # own clips come in any shape; the demo page warns of an upload by the same rule
            for warning in own_clip_shape_warnings(clips, self.model.input_size, self.model.input_kind):
                rank_zero_warn(warning)
        elif stage == "fit" and clips:  # the data set's: the first clip of each split says its shape (headers)
            # synthetic: size [96, 320] written as image_size is (height, width) made 96-wide portrait clips,
            # trained on unsaid
            synthetic = getattr(datamodule, "data_path", "") is None
            option = "--data.synthetic size" if synthetic else "--data.data_path"
            order = " (the generator's size is width, height; --data.image_size is [height, width])" * synthetic
            sample = [split[0] for split in datamodule.splits.values() if split and (split[0].frames or split[0].video)]
            for warning in own_clip_shape_warnings(sample, self.model.input_size, self.model.input_kind, option=option):
                rank_zero_warn(warning + order)
        if (
            stage in ("fit", "validate", "test")
            and self.model.input_kind == "frames"
            and not getattr(datamodule, "train_frames", True)
        ):
            raise ValueError(
                "the network reads frames (input_kind: frames) but data.train_frames is false: set it true "
                "(false is for input_kind: boxes)"
            )

    def _check_feature_input(self, clips: list) -> None:
        """``npz`` clips (precomputed features) need ``input_kind: features`` (or ``boxes``: their ``det``) with
        their feature size D; clips with frames a network that does not read features."""
        features = [clip for clip in clips if clip.npz is not None]
        kind = self.model.input_kind
        if clips and not features and kind == "features":
            raise ValueError(
                "the network reads precomputed npz features (input_kind: features) but these clips have frames: "
                "set --model.network.init_args.input_kind frames (full.yaml) or boxes, or give --data.data_format "
                "npz"
            )
        if not features:
            return
        dims = sorted({clip.feature_dim for clip in features if clip.feature_dim is not None})
        dim = f" --model.network.init_args.feature_dim {dims[0]}" if dims else ""
        if kind == "frames":
            raise ValueError(
                f"the network reads frames (input_kind: frames) but the npz clips hold precomputed features: set "
                f"--model.network.init_args.input_kind features{dim} (or input_kind boxes: their det boxes only)"
            )
        expected = self.model.frame_embed[0].in_features
        if kind == "features" and dims and dims != [expected]:
            first = next(clip for clip in features if clip.feature_dim == dims[0])
            raise ValueError(
                f"the network takes features of size {expected} (feature_dim) but the npz features are of size "
                f"{dims[0]} (e.g. {first.npz}): set{dim}"
            )

    def forward_batch(self, batch: dict, return_hidden: bool = False) -> dict[str, torch.Tensor]:
        if self.model.input_kind == "frames" and "frames" not in batch and "features" not in batch:
            raise ValueError(
                "the network reads frames (input_kind: frames) but the batch has none: set data.train_frames "
                "true (false is for input_kind: boxes)"
            )
        return self.model(
            frames=batch.get("frames"),
            boxes=batch.get("boxes"),
            box_valid=batch.get("box_valid"),
            features=batch.get("features"),
            object_features=batch.get("object_features"),
            return_hidden=return_hidden,
        )

    def blind_frames(self, box_valid: torch.Tensor) -> torch.Tensor:
        """(B, T) frames the network cannot read (:meth:`AccidentAnticipator.blind`): probability 0 in
        validation, test and predict alike, and the temperature is fitted without them."""
        return self.model.blind(box_valid)

    @staticmethod
    def scored_items(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """What :meth:`losses` averages over: the clips' frames (B, T; padding left out) for the horizon term,
        the object slots with a box on those frames (B, T, N) for the object term."""
        valid = batch["frame_valid"]
        return valid, batch["box_valid"] & valid[..., None]

    def losses(self, batch: dict, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits, object_logits = out["horizon_logits"].float(), out["object_logits"].float()
        valid, slots = self.scored_items(batch)
        targets = horizon_targets(batch["toa"], batch["fps"], logits.shape[1], self.model.horizons)
        horizon = F.binary_cross_entropy_with_logits(logits[valid], targets[valid].float())
        terms = {"horizon": horizon}
        if slots.any():
            involved = batch["involved"][:, None, :] & targets[..., -1:]
            terms["object"] = F.binary_cross_entropy_with_logits(
                object_logits[slots], involved[slots].float()
            )
        else:
            terms["object"] = object_logits.sum() * 0.0
        terms["total"] = horizon + self.hparams.object_loss_weight * terms["object"]
        return terms

    # ------------------------------------------------------------------------------------------ training
    def training_step(self, batch, batch_idx):
        out = self.forward_batch(batch)
        terms = self.losses(batch, out)
        size = len(batch["toa"])
        self.log("train/loss", terms["total"], prog_bar=True, batch_size=size)
        self.log("train/horizon_loss", terms["horizon"], batch_size=size)
        self.log("train/object_loss", terms["object"], batch_size=size)
        return self.guard_loss(terms["total"], terms)

    # ---------------------------------------------------------------------------------------- evaluation
    def _evaluation_step(self, batch, stage: str) -> None:
        out = self.forward_batch(batch)
        terms = self.losses(batch, out)
        # Each term's epoch value is its mean over the split's items, all ranks': the horizon term over every
        # clip's frames and horizons, the object term over every object slot seen (a batch's terms are means
        # over its own, hence the weights), and {stage}/loss adds them (_log_epoch_metrics): the loss of the
        # whole split as one batch, whatever --data.batch_size. Weighted by clips, a batch's frame mean gave
        # 0.693 at batch size 1 and 0.625 at 7 on one test split (a long clip's frames outweighed in batches).
        frames, slots = self.scored_items(batch)
        horizons = out["horizon_logits"].shape[-1]
        self.log_mean(f"{stage}/horizon_loss", terms["horizon"], frames.sum() * horizons)
        self.log_mean(f"{stage}/object_loss", terms["object"], slots.sum())
        # raw log-odds (the temperature undone), so validation can refit it
        temperature = self.model.temperature.float()
        logits = out["horizon_logits"].float() * temperature
        object_logits = out["object_logits"].float() * temperature
        blind = self.blind_frames(batch["box_valid"])
        records = self._records.setdefault(stage, [])
        for i in range(len(batch["toa"])):
            n = int(batch["frame_valid"][i].sum())
            records.append(
                {
                    "clip_id": batch["clip_id"][i],
                    "kind": batch["kind"][i],
                    "toa": int(batch["toa"][i]),
                    "fps": float(batch["fps"][i]),
                    "logits": logits[i, :n].cpu().numpy(),
                    "object_logits": object_logits[i, :n].cpu().numpy(),
                    "box_valid": batch["box_valid"][i, :n].cpu().numpy(),
                    "blind": blind[i, :n].cpu().numpy(),
                    "involved": batch["involved"][i].cpu().numpy(),
                    "ttc": batch["ttc"][i, :n].float().cpu().numpy(),
                }
            )

    def validation_step(self, batch, batch_idx):
        self._evaluation_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluation_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def _calibrate(self, records: list[dict]) -> None:
        from domains.driving.accident.metrics import fit_temperature

        horizons = self.model.horizons.cpu()
        logits, labels = [], []
        for r in records:
            t = torch.from_numpy(r["logits"])
            target = horizon_targets(torch.tensor([r["toa"]]), torch.tensor([r["fps"]]), len(t), horizons)[0]
            seen = ~torch.from_numpy(r["blind"])  # blind frames: 0 anyway
            logits.append(t[seen].flatten())
            labels.append(target[seen].flatten().float())
        if not sum(len(t) for t in logits):  # every frame blind: nothing to fit the temperature to
            return
        temperature = float(fit_temperature(torch.cat(logits), torch.cat(labels)))
        # bounded: a validation split without signal (a tiny or untrained run) drives the fit towards infinity
        bounded = min(max(temperature, TEMPERATURE_RANGE[0]), TEMPERATURE_RANGE[1])
        if bounded != temperature:
            rank_zero_info(
                f"val: the fitted temperature {temperature:.4g} is outside {TEMPERATURE_RANGE}: {bounded:g} is kept "
                "(a validation split that says little of the risk: a tiny or barely trained run)"
            )
        self.model.temperature.fill_(bounded)

    def clip_scores(self, records: list[dict]) -> list:
        """:class:`~domains.driving.accident.metrics.ClipScores` of the collected clips at the current
        temperature (alarm horizon: the longest)."""
        from domains.driving.accident.metrics import ClipScores

        temperature = float(self.model.temperature)
        horizons = self.model.horizons.cpu()
        clips = []
        for r in records:
            probs = torch.sigmoid(torch.from_numpy(r["logits"]) / temperature)
            probs[torch.from_numpy(r["blind"])] = 0.0
            object_probs = torch.sigmoid(torch.from_numpy(r["object_logits"]) / temperature).numpy()
            object_probs = np.where(r["box_valid"], object_probs, np.nan)  # empty slots: no score
            ttc = r["ttc"]
            clips.append(
                ClipScores(
                    scores=probs[:, -1].numpy(),
                    toa=r["toa"],
                    fps=r["fps"],
                    kind=r["kind"],
                    object_scores=object_probs,
                    involved=r["involved"],
                    ttc_pred=ttc_from_horizons(probs, horizons).numpy(),
                    ttc_true=ttc,
                    clip_id=r["clip_id"],
                )
            )
        return clips

    def clip_scores_of(self, stage: str) -> list:
        """:meth:`clip_scores` of the last ``stage`` epoch's clips."""
        return self.clip_scores(self.last_records.get(stage, []))

    def _log_epoch_metrics(self, stage: str) -> dict[str, float]:
        from domains.driving.accident.metrics import (
            NEGATIVE_KINDS,
            operating_threshold,
            summarize,
            uninformative_tta,
        )

        # a distributed sampler pads each rank's share with repeated clips: count each clip once
        records = list({r["clip_id"]: r for r in gather_lists(self._records.pop(stage, []))}.values())
        if not records:
            return {}
        self.last_records[stage] = records
        calibrating = stage == "val" and self.hparams.calibrate and not self.trainer.sanity_checking
        if calibrating:
            self._calibrate(records)
        clips = self.clip_scores(records)
        if calibrating and any(c.kind in NEGATIVE_KINDS for c in clips):
            threshold = operating_threshold(clips, max_false_alarm=self.hparams.max_false_alarm)
            self.model.alarm_threshold.fill_(float32_at_least(threshold))
        elif (
            calibrating
        ):  # e.g. DoTA: every clip is an accident, no false-alarm rate to hold the threshold to
            rank_zero_warn(
                f"val: no near-miss or normal clip (kinds {sorted({c.kind for c in clips})}): the alarm "
                f"threshold stays at {float(self.model.alarm_threshold):.3f}; only the temperature was fitted"
            )
        values = summarize(
            clips, horizon=self.model.alarm_horizon, threshold=float(self.model.alarm_threshold)
        )
        values = {f"{stage}/{k}": float(v) for k, v in values.items() if v is not None and np.isfinite(v)}
        # the alarm threshold (the model's alarm_threshold buffer) is summarize's {stage}/threshold, the name its
        # recall_at_threshold / lead_time_at_threshold, the README and the benchmarks use: logged once
        values[f"{stage}/temperature"] = float(self.model.temperature)
        terms = [f"{stage}/horizon_loss", f"{stage}/object_loss"]  # logged by _evaluation_step
        if all(name in self.logged_means for name in terms):  # over every rank's items: compute on each rank
            horizon, objects = (float(self.logged_means[name].compute()) for name in terms)
            values[f"{stage}/loss"] = horizon + self.hparams.object_loss_weight * objects
        negatives = any(c.kind in NEGATIVE_KINDS for c in clips)
        if stage == "test" and not negatives:
            rank_zero_warn(
                f"test: every clip is a crash (kinds {sorted({c.kind for c in clips})}): video AP and AP 0.5 / 1 / "
                "1.5 s ahead need negative clips (near misses or ordinary driving; without them precision is 1 "
                "at every threshold and AP is 1.0 whatever the scores), so they are not logged"
            )
        if stage == "test" and (why := uninformative_tta(clips)) is not None:
            rank_zero_warn(f"test/tta_r80 says nothing of the model here: {why}")
        # the headline and the CLI checkpoint's monitor (frame AP: domains.driving.accident.__main__) exist every
        # epoch, 0 when undefined (no crash frame in the split), so the checkpoint never finds its key missing;
        # video AP without negatives is not 0 but undefined: left out
        for name in (HEADLINE, "frame_ap") if negatives else ("frame_ap",):
            values.setdefault(f"{stage}/{name}", 0.0)
        # scored from every rank's records (gathered above), so the same on each: log_settled
        self.log_settled(values, prog_bar=(f"{stage}/{HEADLINE}", "val/loss"))
        self.last_metrics[stage] = values
        return values

    # ---------------------------------------------------------------------------------------- prediction
    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0):
        """Per clip: horizon probabilities (T, H), alarm risk and its Monte Carlo spread (T,), median time to
        contact (T,), object risks (T, N) with boxes and track ids, and the frames as uint8 for the writer.

        ``boxes`` are in the pixels of ``frames`` (the network input, ``data.image_size``: what the GIF draws);
        ``source_boxes`` the same boxes in the clip's own frame pixels (what ``objects.csv`` reports), absent
        when the batch has no ``box_scale``.

        Frames a boxes-only network cannot read (:meth:`blind_frames`) get probability 0 and no spread."""
        out = self.forward_batch(batch, return_hidden=self.uncertainty_samples > 0)
        probs = out["horizon_logits"].float().sigmoid()
        spread = None
        if self.uncertainty_samples > 0:
            spread = self._dropout_spread(out["hidden"], batch)
        blind = self.blind_frames(batch["box_valid"]).to(probs.device)
        probs = probs.masked_fill(blind[..., None], 0.0)
        spread = None if spread is None else spread.masked_fill(blind, 0.0)
        object_probs = out["object_logits"].float().sigmoid()
        horizons = self.model.horizons
        results = []
        scales = batch.get("box_scale")  # the data set's resize of the clip's frames (absent: not resized)
        scales = None if scales is None else scales.float().cpu()  # one copy per batch, not per clip
        for i in range(len(batch["clip_id"])):
            n = int(batch["frame_valid"][i].sum())
            frames = batch.get("frames")
            boxes = batch["boxes"][i, :n].float().cpu()
            source = {} if scales is None else {"source_boxes": boxes / scales[i]}
            if "source_frames" in batch:  # own clips resampled to the model's rate: their frame numbers
                source["source_frames"] = batch["source_frames"][i, :n].cpu()
            results.append(
                {
                    **source,
                    "clip_id": batch["clip_id"][i],
                    "fps": float(batch["fps"][i]),
                    "toa": int(batch["toa"][i]),
                    "horizons": horizons.tolist(),
                    "probabilities": probs[i, :n].cpu(),
                    "risk": probs[i, :n, -1].cpu(),
                    "uncertainty": None if spread is None else spread[i, :n].cpu(),
                    "ttc": ttc_from_horizons(probs[i, :n], horizons).cpu(),
                    "object_risk": object_probs[i, :n].cpu(),
                    "boxes": boxes,
                    "box_valid": batch["box_valid"][i, :n].cpu(),
                    "track_ids": batch["track_ids"][i].cpu(),
                    "threshold": float(self.model.alarm_threshold),
                    "frames": None if frames is None else (frames[i, :n] * 255).round().byte().cpu(),
                }
            )
        return results

    def on_predict_start(self) -> None:
        super().on_predict_start()
        self._run_seed = torch.initial_seed()  # the run's seed (seed_everything), which _clip_seed mixes in

    def _clip_seed(self, clip_id: str) -> int:
        """The seed of one clip's dropout draws: its id's CRC-32 mixed with the run's seed, so a clip gets the
        same uncertainty in any batch and on any process, and another run seed other draws."""
        return (getattr(self, "_run_seed", 0) * 1_000_003 + zlib.crc32(str(clip_id).encode())) % 2**63

    def _dropout_spread(self, hidden: list[dict[str, torch.Tensor]], batch: dict) -> torch.Tensor:
        """(B, T) standard deviation of the alarm risk over ``uncertainty_samples`` Monte Carlo dropout draws
        (:meth:`AccidentAnticipator.sample_heads`), clip by clip on the clip's own frames (padding shifted the
        masks), each clip's masks from the global generator seeded by :meth:`_clip_seed` inside ``fork_rng``:
        drawn in batch order from the running stream, a clip's uncertainty depended on its batch mates and on
        the number of processes (1 or 2 gave other values). ``nn.Dropout`` draws from the global generator
        only (``F.dropout`` takes none of its own), hence the fork, which restores the stream afterwards;
        threads of one process (the demo's sessions) predicting at once may still mix their draws."""
        lengths = batch["frame_valid"].sum(1).tolist()
        spread = torch.zeros(len(lengths), len(hidden), device=hidden[0]["frame"].device)
        device = spread.device
        forked = [] if device.type == "cpu" else [device]
        for i, (clip_id, n) in enumerate(zip(batch["clip_id"], lengths, strict=True)):
            if n == 0:
                continue
            clip = [{key: value[i : i + 1] for key, value in frame.items()} for frame in hidden[:n]]
            with torch.random.fork_rng(devices=forked, device_type=device.type):
                torch.manual_seed(self._clip_seed(clip_id))
                draws = self.model.sample_heads(clip, self.uncertainty_samples)  # (samples, 1, n)
            spread[i, :n] = draws.float().std(0)[0]
        return spread


AccidentTask.__doc__ = AccidentTask.__doc__.replace("{backbones}", ", ".join(list_backbones()))


def load_accident_task(checkpoint: str | Path, map_location: str = "cpu") -> AccidentTask:
    """Load a trained accident model from a Lightning checkpoint (``weights_only``, checked task)."""
    return AccidentTask.load_checked(Path(checkpoint), map_location=map_location)


__all__ = ["AccidentTask", "load_accident_task"]
