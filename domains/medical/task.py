"""One LightningModule for the three medical segmenters: training, set metrics with N samples, prediction."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pytorch_lightning.utilities import rank_zero_warn

from shared.task import BaseTask

from .metrics import SegmentationUncertaintyMetrics
from .models import MODELS, build_model
from .predict import MedicalPredictionWriter, uncertainty_map

# Task arguments that configure each model's loss (passed to its constructor; the others do not take them).
_LOSS_ARGS = {
    "unet": (),
    "prob_unet": ("beta",),
    "hpu_net": (
        "beta",
        "geco",
        "kappa",
        "geco_decay",
        "geco_rate",
        "geco_init_lambda",
        "top_k_fraction",
        "stochastic_top_k",
    ),
}


# Read at evaluation / prediction time only; not saved with the model (see ``__init__``).
_RUNTIME_ARGS = ("num_samples", "threshold", "predict_dir", "predict_uncertainty")


class MedicalSegmentationTask(BaseTask):
    """Trains ``unet``, ``prob_unet`` or ``hpu_net`` on batches from ``MedicalDataModule``.

    Training uses the sampled reader's mask (``batch["mask"]``). Validation and test draw ``num_samples``
    segmentations per image and compare them with all readers (``batch["masks"]``): GED, Hungarian IoU,
    sample diversity, Dice of the mean prediction against each reader and against the majority, ECE, logged
    as ``val/ged`` ... together with ``val/num_samples``. ``predict`` writes samples, mean probability and an
    uncertainty map per image to ``predict_dir`` (see :mod:`domains.medical.predict`).

    Args:
        model: ``unet`` (deterministic baseline), ``prob_unet`` (Kohl et al. 2018) or ``hpu_net`` (Kohl et al.
            2019).
        model_kwargs: architecture arguments of that model, e.g. ``{channels: [32, 64, 128, 192]}``; Prob. U-Net:
            ``latent_dim``, ``fcomb_layers``; HPU-Net: ``latent_channels``, ``blocks_per_level``,
            ``convs_per_block``, ``norm`` (null | batch | group); see :mod:`domains.medical.models`.
        in_channels: image channels.
        num_samples: segmentations drawn per image for metrics and prediction (16 in the papers); not stored in
            checkpoints, so ``test`` / ``predict --ckpt_path`` take it from the command line.
        threshold: probability above which a sample's pixel is foreground.
        beta: KL weight (Prob. U-Net; HPU-Net with ``geco`` false).
        geco: HPU-Net: GECO (a Lagrange multiplier keeps the reconstruction error at ``kappa``) instead of
            reconstruction + beta * KL.
        kappa: GECO reconstruction bound per pixel (paper: 0.05).
        geco_decay: moving-average decay of GECO's constraint (paper: 0.99).
        geco_rate: step size of GECO's Lagrange multiplier.
        geco_init_lambda: GECO's starting Lagrange multiplier.
        top_k_fraction: HPU-Net: the reconstruction loss uses this fraction of the worst pixels (paper: 0.02;
            null: every pixel).
        stochastic_top_k: draw the top-k pixels stochastically (by their loss) instead of taking the k worst.
        predict_dir: where ``predict`` writes (null: no files).
        predict_uncertainty: ``entropy`` (of the mean probability, bits) or ``variance`` (across samples).
        collapse_kl: a latent scale whose validation KL (nats per image) falls below this has collapsed: its
            posterior says nothing the prior does not, so its samples do not differ; warned once per scale.
        input_size: side (px) of the square crops the network is trained on, kept with it (``model.input_size``)
            so that export and the demo feed it what it learnt from; the CLI links it from ``data.crop_size``.
        base_task_args: ``optimizer``, ``lr_scheduler``, ``nonfinite_loss`` (see :class:`shared.task.BaseTask`).
    """

    def __init__(
        self,
        model: Literal["unet", "prob_unet", "hpu_net"] = "prob_unet",
        model_kwargs: dict[str, Any] | None = None,
        in_channels: int = 1,
        num_samples: int = 16,
        threshold: float = 0.5,
        beta: float = 1.0,
        geco: bool = True,
        kappa: float = 0.05,
        geco_decay: float = 0.99,
        geco_rate: float = 0.01,
        geco_init_lambda: float = 1.0,
        top_k_fraction: float | None = 0.02,
        stochastic_top_k: bool = True,
        predict_dir: str | None = "predictions/medical",
        predict_uncertainty: str = "entropy",
        collapse_kl: float = 0.01,
        input_size: int | None = None,
        **base_task_args,
    ):
        super().__init__(**base_task_args)
        # Inference-time settings stay out of the checkpoint: LightningCLI lets a checkpoint's hyperparameters
        # override the command line, so saved ones would silently win over ``--model.predict_dir`` etc.
        self.save_hyperparameters(ignore=list(_RUNTIME_ARGS))
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if predict_uncertainty not in ("entropy", "variance"):
            raise ValueError(
                f"predict_uncertainty must be 'entropy' or 'variance', got {predict_uncertainty!r}"
            )
        given = dict(model_kwargs or {})
        for key in ("in_channels", *_LOSS_ARGS[model]):
            if key in given:
                raise ValueError(f"set {key!r} as a task argument (model.{key}), not inside model_kwargs")
        loss_args = {key: getattr(self.hparams, key) for key in _LOSS_ARGS[model]}
        self.model = build_model(model, in_channels=in_channels, **given, **loss_args)
        self.model_name = model
        self.model.input_size = (int(input_size), int(input_size)) if input_size else None
        self.num_samples = num_samples
        self.threshold = threshold
        self.predict_dir = predict_dir
        self.predict_uncertainty = predict_uncertainty
        self.collapse_kl = float(collapse_kl)
        self._kl_epoch: dict[
            str, list
        ] = {}  # name -> [sum of per-image nats (tensor), images] this validation
        self._collapse_warned: set[str] = set()
        self.val_metrics = SegmentationUncertaintyMetrics(threshold=threshold)
        self.test_metrics = SegmentationUncertaintyMetrics(threshold=threshold)

    # ------------------------------------------------------------------------------------------ inference

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1, H, W): the deterministic best guess of the model."""
        return self.model(images)

    @torch.no_grad()
    def sample(self, images: torch.Tensor, num_samples: int | None = None, **kwargs) -> torch.Tensor:
        """Foreground probabilities of ``num_samples`` (default: the task's) segmentations, (B, N, H, W).

        Used by validation, ``predict`` and the demo app. ``kwargs`` go to the model's ``sample_logits``
        (HPU-Net: ``sample_mode="global" | "local"``). Call ``.eval()`` first outside a Trainer.
        """
        n = self.num_samples if num_samples is None else int(num_samples)
        images = images.to(self.device, torch.float32)
        return self.model.sample_logits(images, n, **kwargs).float().sigmoid()

    # ------------------------------------------------------------------------------------------- training

    def training_step(self, batch: dict, batch_idx: int):
        loss, terms = self.model.loss(batch["image"], batch["mask"])
        if self.guard_loss(loss, {"loss": loss, **terms}) is None:  # skipped: keep NaN out of the curves
            return None
        batch_size = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=batch_size)
        return loss

    def _evaluate(self, batch: dict, stage: str, metrics: SegmentationUncertaintyMetrics) -> None:
        images = batch["image"]
        loss, terms = self.model.loss(images, batch["mask"])
        batch_size = images.shape[0]
        self.log(f"{stage}/loss", loss, batch_size=batch_size)
        for name in ("rec_per_pixel", "kl"):
            if name in terms:
                self.log(f"{stage}/{name}", terms[name], batch_size=batch_size)
        if stage == "val":
            self._track_kl(terms, images, batch_size)
        probs = self.sample(images)
        metrics.update(probs >= self.threshold, probs.mean(dim=1, keepdim=True), batch["masks"])

    def _log_metrics(self, stage: str, metrics: SegmentationUncertaintyMetrics) -> None:
        if int(metrics.num_images_sum) == 0:  # e.g. a sanity check that ran no batch
            return
        values = metrics.compute()
        names = {
            "ged": "ged",
            "hungarian_iou": "hungarian_iou",
            "diversity": "diversity",
            "dice_readers": "dice",
            "dice_majority": "dice_majority",
            "ece": "ece",
            "num_samples": "num_samples",
        }
        for key, name in names.items():
            self.log(f"{stage}/{name}", float(values[key]), prog_bar=name in ("ged", "dice"))
        metrics.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metrics)

    def _track_kl(self, terms: dict, images: torch.Tensor, batch_size: int) -> None:
        """Log the KL of every latent scale in nats per image (``val/kl_nats``, ``val/kl_scale<i>_nats``)."""
        per_pixel = getattr(self.model, "kl_per_pixel", False)
        scale = float(images[0, 0].numel()) if per_pixel else 1.0
        for name, value in terms.items():
            if name == "kl" or name.startswith("kl_scale"):
                nats = value * scale  # a tensor: no device sync per batch, only at the epoch's end
                self.log(f"val/{name}_nats", nats, batch_size=batch_size)
                total = self._kl_epoch.setdefault(name, [0.0, 0])
                total[0] = total[0] + nats * batch_size
                total[1] += batch_size

    def _warn_collapse(self) -> None:
        """Warn once per latent scale whose mean validation KL fell below ``collapse_kl`` (rank 0)."""
        for name, (total, images) in sorted(self._kl_epoch.items()):
            mean = float(total) / max(images, 1)
            if mean < self.collapse_kl and name not in self._collapse_warned:
                self._collapse_warned.add(name)
                what = "the latent" if name == "kl" else f"latent scale {name.removeprefix('kl_scale')}"
                rank_zero_warn(
                    f"posterior collapse: {what} ({name}) has KL {mean:.2e} nats per image at global step "
                    f"{self.global_step}, below collapse_kl {self.collapse_kl}: its samples no longer differ "
                    "(sample diversity is logged as val/diversity)"
                )
        self._kl_epoch = {}

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)
        if self._trainer is not None and not self.trainer.sanity_checking:
            self._warn_collapse()
        self._kl_epoch = {}

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)

    # ----------------------------------------------------------------------------------------- prediction

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Samples (bool), mean probability and uncertainty per image, plus what the writer needs."""
        probs = self.sample(batch["image"])
        out = {
            "id": list(batch["id"]),
            "samples": (probs >= self.threshold).cpu(),
            "mean": probs.mean(dim=1).cpu(),
            "uncertainty": uncertainty_map(probs, self.predict_uncertainty).cpu(),
        }
        if "source" in batch:
            out["source"] = batch["source"]
        return out

    def configure_callbacks(self):
        if not self.predict_dir:
            return []
        return [MedicalPredictionWriter(self.predict_dir, uncertainty=self.predict_uncertainty)]
