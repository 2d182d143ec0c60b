"""One LightningModule for the three medical segmenters: training, set metrics with N samples, prediction."""

from __future__ import annotations

import zlib

import torch
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from shared.prediction_set import predict_datasets
from shared.segmentation import pad_to_multiple
from shared.task import BaseTask, NonFiniteLossError, gather_lists

from .data import MedicalDataError, MedicalDataWarning
from .metrics import SegmentationUncertaintyMetrics
from .models import MedicalSegmenter, model_name
from .models.common import check_mask_values, image_noise
from .predict import MedicalPredictionWriter, size_multiple, uncertainty_map

# How this run evaluates, predicts or trains, not what the model is: not saved with it (see ``__init__``).
_RUNTIME_ARGS = (
    "num_samples", "threshold", "predict_dir", "predict_uncertainty", "compile_loss", "pretrained_backbone",
    "pretrained_prefix",
)  # fmt: skip


class MedicalSegmentationTask(BaseTask):
    """Lesion segmentation from several readers' masks: a U-Net, Prob. U-Net or HPU-Net (``model.network``).

    Training uses the sampled reader's mask (``batch["mask"]``). Validation and test draw ``num_samples``
    segmentations per image (from noise seeded by the image, the same in any batch; see :meth:`_image_seed`)
    and compare them with all readers (``batch["masks"]``): GED, Hungarian IoU,
    sample diversity, Dice of the mean prediction against each reader and against the majority, ECE against
    the readers' mean and against the majority, logged as ``val/ged`` ... together with ``val/num_samples``,
    ``val/num_images`` and ``val/num_empty_images`` (no reader marks a lesion), and GED, Hungarian IoU and
    Dice over the images with a lesion (``val/ged_lesion``, ``val/hungarian_iou_lesion``, ``val/dice_lesion``;
    see :class:`~domains.medical.metrics.SegmentationUncertaintyMetrics`). ``predict`` writes samples, mean
    probability and an uncertainty map per image to ``predict_dir`` (see :mod:`domains.medical.predict`).

    Args:
        network: the segmenter with its loss settings, as ``class_path`` + ``init_args``:
            ``domains.medical.models.UNetSegmenter`` (deterministic baseline), ``...ProbabilisticUNet`` (Kohl et al.
            2018: ``channels``, ``latent_dim``, ``fcomb_layers``, ``beta``) or ``...HierarchicalProbUNet`` (Kohl
            et al. 2019: ``latent_channels``, ``blocks_per_level``, GECO ``kappa`` / ``geco_rate`` ..., top-k);
            every argument: ``--model.network.help HierarchicalProbUNet``. A model of one's own subclasses
            ``domains.medical.models.MedicalSegmenter`` (its docstring lists what the task calls) or one of
            these, and is given by its ``class_path`` (``my_module.MyNet``).
        num_samples: segmentations drawn per image for metrics and prediction (16 in the papers); not stored in
            checkpoints, so ``test`` / ``predict --ckpt_path`` take it from the command line.
        threshold: probability above which a sample's pixel is foreground.
        predict_dir: where ``predict`` writes (null: no files).
        predict_uncertainty: ``entropy`` (of the mean probability, bits) or ``variance`` (across samples).
        collapse_kl: a latent scale whose validation KL (nats per image) is below this says nothing the prior
            does not (it collapsed, or never came alive), so its samples do not differ: warned once per scale
            once ``collapse_grace_steps`` have been trained.
        collapse_grace_steps: training steps before which no validation warns of that: at initialisation the
            posterior and prior nets agree, so every KL starts near 0 (or just above the bound) and rises as
            the decoder learns to use the latents. On synthetic LIDC every scale passed 0.01 nats by step 30
            (quick.yaml's Prob. U-Net: 0.006 at step 20, 0.044 at 30, 2 nats by 100; hpu_net.yaml, batch 4:
            its scale 0 at 0.011-0.014 until step 20, 0.096 at 30); 200 leaves a margin for slower real data
            and spans hpu_net.yaml's 200-step LR warm-up, well before issue 20's collapse (KL about 0 after
            1,300 steps).
        input_size: side (px) of the square crops the network is trained on, kept with it (``model.input_size``)
            so that export and the demo feed it what it learnt from; the CLI links it from ``data.crop_size``.
        compile_loss: train through ``torch.compile(network.loss)`` (inductor fuses the norms and activations
            around the convolutions): the Prob. U-Net's CPU training step ran 1.3-1.4x faster
            (``benchmarks/results/prob_unet_speed*.md``, the README's table) after a one-off compilation of
            about 2 min on 2 cores (6-39 s once cached), so it pays on runs of more than a few minutes. The
            graph is built for the largest batch seen so far (static shapes); a smaller batch (an epoch's short
            last one) runs eager rather than compiling a dynamic-shape graph. Validation and sampling stay
            eager. Off by default; not stored in checkpoints.
        pretrained_backbone: local weight file for the U-Net's encoder: for the U-Net, a torchvision ``.pth``
            of its configured ``encoder`` (e.g. ``resnet18`` with ``in_channels`` 1: its first convolution summed
            over RGB); for the U-Net and the Prob. U-Net (whose encoder is always the suite's U-Net encoder), a
            suite ``.ckpt``, e.g. a model trained on LIDC, to fine-tune on one's own scans; nothing is downloaded. The load report is printed; a file of another network is an
            error. Not read again with ``--ckpt_path`` (the checkpoint holds it). The HPU-Net's residual U-Net
            has no registry encoder: refused.
        pretrained_prefix: key prefix selecting the encoder inside that file (a U-Net checkpoint:
            ``model.net.backbone.encoder.``; a Prob. U-Net checkpoint: ``model.unet.encoder.``).
        base_task_args: ``optimizer``, ``lr_scheduler``, ``nonfinite_loss`` (see :class:`shared.task.BaseTask`).
    """

    #: set by the CLI from the data module: the network keeps the size it learnt from
    CLI_LINKS = (("data.crop_size", "model.input_size"),)

    def __init__(
        self,
        network: MedicalSegmenter,
        num_samples: int = 16,
        threshold: float = 0.5,
        predict_dir: str | None = "predictions/medical",
        predict_uncertainty: str = "entropy",
        collapse_kl: float = 0.01,
        collapse_grace_steps: int = 200,
        input_size: int | None = None,
        compile_loss: bool = False,
        pretrained_backbone: str | None = None,
        pretrained_prefix: str = "",
        **base_task_args,
    ):
        super().__init__(**base_task_args)
        # Inference-time settings stay out of the checkpoint: LightningCLI lets a checkpoint's hyperparameters
        # override the command line, so saved ones would silently win over ``--model.predict_dir`` etc.
        self.save_hyperparameters(ignore=list(_RUNTIME_ARGS))
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if predict_uncertainty not in ("entropy", "variance"):
            raise ValueError(
                f"predict_uncertainty must be 'entropy' or 'variance', got {predict_uncertainty!r}"
            )
        self.model = self.build_network(network, MedicalSegmenter)
        # MODELS' name of the model it is or extends (a subclass of one is named by it); None: a model of one's own
        self.model_name = model_name(self.model)
        self.model.input_size = (int(input_size), int(input_size)) if input_size else None
        if pretrained_backbone:
            if not hasattr(self.model, "backbone"):
                raise ValueError(
                    f"--model.pretrained_backbone {pretrained_backbone}: {type(self.model).__name__} has no "
                    "backbone property: no registry encoder to load (the HPU-Net's residual U-Net is its own); it "
                    "applies to UNetSegmenter, ProbabilisticUNet and models of one's own with a backbone"
                )
            self.load_pretrained_backbone(pretrained_backbone, pretrained_prefix)
        self.num_samples = num_samples
        self.threshold = threshold
        self.predict_dir = predict_dir
        self.predict_uncertainty = predict_uncertainty
        self.collapse_kl = float(collapse_kl)
        if collapse_grace_steps < 0:
            raise ValueError(f"collapse_grace_steps must be >= 0, got {collapse_grace_steps}")
        self.collapse_grace_steps = int(collapse_grace_steps)
        self.compile_loss = bool(compile_loss)
        self._compiled_loss = None  # built on the first training step (see training_loss) ...
        self._compiled_shapes: tuple | None = None  # ... for these (images, masks) shapes
        self._collapse_warned: set[str] = set()
        self._checkpoint_step: int | None = None  # the loaded checkpoint's step (validate / test do not restore it)
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

    def training_loss(self, images: torch.Tensor, masks: torch.Tensor):
        """The network's loss as training calls it: with ``compile_loss``, compiled (``dynamic=False``) for
        the shapes of the largest batch so far and used for every batch of those shapes; other batches run
        eager. A run that starts on a short batch (resumed at an epoch's end) compiles once more."""
        shapes = (images.shape, masks.shape)
        if self.compile_loss and (self._compiled_loss is None or len(images) > self._compiled_shapes[0][0]):
            self._compiled_loss = torch.compile(self.model.loss, dynamic=False)
            self._compiled_shapes = shapes
        if self._compiled_loss is not None and self._compiled_shapes == shapes:
            check_mask_values(masks)  # left out of the compiled graph (a data-dependent branch breaks it)
            return self._compiled_loss(images, masks)
        return self.model.loss(images, masks)

    def __getstate__(self) -> dict:
        """Copies and pickles leave the compiled loss behind: it is bound to this task's network."""
        state = dict(super().__getstate__())
        state["_compiled_loss"] = state["_compiled_shapes"] = None
        return state

    def training_step(self, batch: dict, batch_idx: int):
        loss, terms = self.training_loss(batch["image"], batch["mask"])
        if self.guard_loss(loss, {"loss": loss, **terms}) is None:  # skipped: keep NaN out of the curves
            return None
        batch_size = batch["image"].shape[0]
        # train/loss is per batch by definition where the model says so: the HPU-Net's top-k picks the batch's
        # hardest pixels and GECO's term is lambda times a moving average over batches (Kohl et al. 2019); its
        # epoch mean moves with the batch size. val/loss does not (see _evaluate).
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=batch_size)
        return loss

    def _evaluate(self, batch: dict, stage: str, metrics: SegmentationUncertaintyMetrics) -> None:
        # The loss and the samples share the network's passes (U-Net: all of it; Prob. U-Net: the U-Net and
        # the prior net; HPU-Net: the prior encoder), as ``model.loss`` then ``sample`` would, except that
        # each image's latents come from noise of its own (seeded by ``_image_seed``; see ``image_noise``),
        # not from the global stream in batch order: its samples and scores do not depend on its batch mates
        # or its place in the batch (``--data.batch_size``). Eager, as validation always was (``compile_loss``
        # trains only).
        with torch.no_grad():
            images = batch["image"].to(self.device, torch.float32)  # what ``sample`` feeds the network
            seeds = [self._image_seed(image) for image in images.cpu()]  # one copy off the device, not B
            try:
                with image_noise(seeds):
                    loss, terms, logits = self.model.loss_and_sample_logits(
                        images, batch["mask"], self.num_samples
                    )
            except FloatingPointError as err:  # a NaN sigma: say when, as the training loss guard does
                raise NonFiniteLossError(
                    f"{stage} at global step {self.global_step} (epoch {self.current_epoch}): {err} Lower the "
                    "learning rate (model.optimizer.init_args.lr) or add warm-up."
                ) from err
        probs = logits.float().sigmoid()
        batch_size = images.shape[0]
        # The epoch's loss, rec_per_pixel and kl are means over images whatever --data.batch_size: each model's
        # evaluation loss is a mean of per-image values (no top-k, GECO's lambda frozen, one crop size),
        # weighted here by batch_size, and its posterior draw is per image too (``posterior_latent``). Under
        # DDP each rank sees its own images: log_mean's epoch value is the mean over all of them, as the
        # metrics' are
        self.log_mean(f"{stage}/loss", loss, batch_size)
        for name in ("rec_per_pixel", "kl"):
            if name in terms:
                self.log_mean(f"{stage}/{name}", terms[name], batch_size)
        self._track_kl(terms, images, batch_size, stage)
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
            "ece_majority": "ece_majority",
            "num_samples": "num_samples",
            "num_images": "num_images",
            "num_empty_images": "num_empty_images",
            "ged_lesion": "ged_lesion",
            "hungarian_iou_lesion": "hungarian_iou_lesion",
            "dice_readers_lesion": "dice_lesion",
        }
        # computed from every rank's states: the same on each (log_settled)
        logged = {f"{stage}/{name}": float(values[key]) for key, name in names.items()}
        self.log_settled(logged, prog_bar=(f"{stage}/ged", f"{stage}/dice"))
        if stage == "test" and values["num_images"]:  # a lesion-free image predicted empty scores perfectly in the all-image means
            total, empty = values["num_images"], values["num_empty_images"]
            rank_zero_info(
                f"[MedicalSegmentationTask] test: {total} images, {empty} ({empty / total:.0%}) with no reader's "
                "lesion (each scores GED 0, Hungarian IoU 1, Dice 1 when predicted empty); test/*_lesion: the "
                f"{total - empty} images with one"
            )
        metrics.reset()

    def on_validation_start(self) -> None:
        self._run_seed = torch.initial_seed()  # the run's seed (seed_everything), which _image_seed mixes in

    on_test_start = on_validation_start

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metrics)

    def _track_kl(self, terms: dict, images: torch.Tensor, batch_size: int, stage: str = "val") -> None:
        """Log the KL of every latent scale in nats per image (``<stage>/kl_nats``, ``<stage>/kl_scale<i>_nats``),
        at validation and test alike; validation's epoch means also decide :meth:`_warn_collapse`."""
        per_pixel = getattr(self.model, "kl_per_pixel", False)
        scale = float(images[0, 0].numel()) if per_pixel else 1.0
        for name, value in terms.items():
            if name == "kl" or name.startswith("kl_scale"):
                nats = value * scale  # a tensor: no device sync per batch
                self.log_mean(f"{stage}/{name}_nats", nats, batch_size)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self._checkpoint_step = checkpoint.get("global_step")
        # validate / test / predict on other input settings than the checkpoint's data had (another channel,
        # intensity window or size) is refused by the data module, which knows them; before the first batch
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None)
        evaluating = trainer is not None and trainer.state.fn in (
            TrainerFn.VALIDATING,
            TrainerFn.TESTING,
            TrainerFn.PREDICTING,
        )
        if evaluating and hasattr(datamodule, "check_checkpoint_inputs"):
            datamodule.check_checkpoint_inputs(
                checkpoint.get("datamodule_hyper_parameters") or {},
                trainer.state.fn,
                source=f"the checkpoint {trainer.ckpt_path}" if trainer.ckpt_path else "the checkpoint",
            )

    def _warn_collapse(self) -> None:
        """Warn once per latent scale whose mean validation KL is below ``collapse_kl``, from
        ``collapse_grace_steps`` on (rank 0): before, every KL is near 0 because it starts there."""
        fitting = self.trainer.state.fn == TrainerFn.FITTING
        step = self.global_step if fitting else self._checkpoint_step  # validate of no checkpoint: untrained
        kl_means = {  # this validation's, over every rank's images (computed on each rank: a collective)
            key.removeprefix("val/").removesuffix("_nats"): float(metric.compute())
            for key, metric in sorted(self.logged_means.items())
            if key.startswith("val/kl") and key.endswith("_nats")
        }
        if step is None or step < self.collapse_grace_steps:
            return
        when = f"at global step {step}" if fitting else f"in the checkpoint of global step {step}"
        for name, mean in kl_means.items():
            if mean < self.collapse_kl and name not in self._collapse_warned:
                self._collapse_warned.add(name)
                what = "the latent" if name == "kl" else f"latent scale {name.removeprefix('kl_scale')}"
                rank_zero_warn(
                    f"posterior collapse: {what} ({name}) has KL {mean:.2e} nats per image {when}, below "
                    f"collapse_kl {self.collapse_kl} (it collapsed, or never came alive): its samples do not "
                    "differ (sample diversity is logged as val/diversity)"
                )

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)
        if self._trainer is not None and not self.trainer.sanity_checking:
            self._warn_collapse()

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)

    # ----------------------------------------------------------------------------------------- prediction

    def on_predict_start(self) -> None:
        self._run_seed = torch.initial_seed()  # the run's seed (seed_everything), before any image's own
        self._predicted_files: set[str] = set()  # files (a volume, an image) with an item predicted
        self._refused_files: dict[str, str] = {}  # file -> why its reader refused it (skipped: predict_step)

    def _skip_refused(self, batch: dict) -> dict:
        """``batch`` without the items its reader refused (``"error"``: :class:`~domains.medical.data.ReaderDataset`'s
        ``skip_refused``), each one's file and reason kept for :meth:`on_predict_epoch_end`; the files of the
        others counted as predicted. A file is a volume (all its slices) or a 2-D image: nothing is written
        for a refused one, since its items never reach the network or the writer."""
        files = batch["source"]["image_path"] if "source" in batch else batch["id"]
        errors = batch.get("error") or [""] * len(files)
        keep = [i for i, error in enumerate(errors) if not error]
        # set by on_predict_start; a call from Python outside a Trainer starts them here
        refused = self.__dict__.setdefault("_refused_files", {})
        for i, error in enumerate(errors):
            if error:
                refused.setdefault(str(files[i]), error)
        self.__dict__.setdefault("_predicted_files", set()).update(str(files[i]) for i in keep)
        if len(keep) == len(errors):
            return batch
        index = torch.tensor(keep, dtype=torch.long)

        def take(value):
            if isinstance(value, dict):
                return {k: take(v) for k, v in value.items()}
            if isinstance(value, torch.Tensor):
                return value[index.to(value.device)]
            return [value[i] for i in keep]

        return take(batch)

    def on_predict_epoch_end(self) -> None:
        """The files ``predict`` skipped, each named with why, and how many it predicted, said once at the end:
        those left out when the folder was listed (unreadable, too small for the network: already warned of
        then) and those refused when read (:meth:`_skip_refused`). A run that predicted none of them is an
        error (exit status 1; :class:`shared.prediction_set.PredictionSet` puts the earlier set back), as a
        folder with no readable file is."""
        refused = dict(gather_lists(sorted(self._refused_files.items())))  # every rank's, in rank order
        predicted = set(gather_lists(sorted(self._predicted_files))) - set(refused)
        listed = [
            why
            for dataset in predict_datasets(self.trainer)
            for why in getattr(getattr(dataset, "base", dataset), "not_predicted", ())
        ]
        skipped = [*listed, *refused.values()]
        if not skipped:
            return
        total = len(predicted) + len(skipped)
        named = "\n  ".join(skipped)
        if not predicted:
            raise MedicalDataError(f"predict: none of the {total} files could be predicted:\n  {named}")
        rank_zero_warn(
            f"predict: predicted {len(predicted)} of {total} files; skipped {len(skipped)} (no output written for "
            f"them):\n  {named}",
            category=MedicalDataWarning,
        )

    def predict_size_problem(self, height: int, width: int) -> str | None:
        """Why the network cannot predict a whole image of ``height`` x ``width`` (padded to its size multiple,
        as :meth:`predict_step` pads it), with the way out; None when it can. ``predict`` skips such an image
        and names it (:func:`~domains.medical.data.build_predict_dataset`) instead of dying on it mid-run
        with the whole folder unwritten. By hand, no library says it for any network: the norms that need
        more than one value per channel at the coarsest scale sit inside each model (a U-Net's instance norms,
        the Prob. U-Net's as ``GroupNorm``, an HPU-Net's batch norms, a model of one's own), so the network is
        run once in eval mode on a blank image of that padded size, cached per size. Sides that are all at
        least twice the size multiple (and 64 px) leave at least 2x2 pixels at the coarsest scale: not run."""
        multiple = self._predict_multiple()
        padded = tuple(-(-int(side) // multiple) * multiple for side in (height, width))
        if min(padded) >= max(2 * multiple, 64):
            return None
        why = self._predict_probe(padded)
        if why is None:
            return None
        sides = range(multiple, max(2 * multiple, 64) + 1, multiple)
        side = next((s for s in sides if self._predict_probe((s, s)) is None), None)
        least = f"give it at least {side}x{side} pixels" if side else "give it a larger image"
        return f"{height}x{width} pixels, too small for {type(self.model).__name__} ({why.splitlines()[0]}): {least}"

    def _predict_multiple(self) -> int:
        """The side multiple ``predict`` pads an image to (:func:`~domains.medical.predict.size_multiple`),
        computed on first use: predict's data setup asks per file before ``on_predict_start``, and a
        ``predict_step`` called from Python runs without either. It walks every module: once, not per file or
        batch."""
        if "_size_multiple" not in self.__dict__:
            self.__dict__["_size_multiple"] = size_multiple(self.model)
        return self.__dict__["_size_multiple"]

    def _predict_probe(self, padded: tuple[int, int]) -> str | None:
        """The error the network raises on a blank image of the ``padded`` size (eval mode, one sample, its noise
        drawn from a generator of its own, torch's global one untouched), or None; remembered per size."""
        cache = self.__dict__.setdefault("_predict_probes", {})
        if padded not in cache:
            param = next(self.model.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
            image = torch.zeros(1, int(getattr(self.model, "in_channels", 1)), *padded, device=device)
            training = self.model.training
            self.model.eval()
            try:
                with torch.no_grad(), image_noise([0]):
                    self.model.sample_logits(image, 1)
                cache[padded] = None
            except (ValueError, RuntimeError) as err:
                cache[padded] = str(err) or type(err).__name__
            finally:
                self.model.train(training)
        return cache[padded]

    def _image_seed(self, image: torch.Tensor) -> int:
        """The seed of one image's samples (predict, validation, test): its pixels' CRC-32 mixed with the
        run's seed, so the same scan gets the same samples alone, in any batch or folder, and another run seed
        other ones."""
        pixels = zlib.crc32(image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return (getattr(self, "_run_seed", 0) * 1_000_003 + pixels) % 2**63

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Samples (bool), mean probability and uncertainty per image, plus what the writer needs.

        Predict images are whole (not the training crop), padded to the batch's largest by the loader. Each
        is cut back to its own ``size``, padded to the network's size multiple and sampled on its own, its
        latents drawn from generators of this call seeded by its pixels and the run's seed (``image_noise``
        with :meth:`_image_seed`, as validation and the demo draw), so its outputs do not depend on its batch
        mates (drawn in batch order, one scan's 16 Prob. U-Net samples had IoU 0.0-0.82 between a run alone
        and one with two other images); they keep the source image's size and position at the top left of the
        (B, N, H, W) outputs (the writer cuts them with ``size``).

        Torch's global generator is neither seeded nor read: seeding it here (``fork_rng`` + ``manual_seed``)
        let another thread's draws or seeding in the meantime (threads of one process, as the demo's sessions
        are) change an image's samples. A model of one's own draws its latents through
        :func:`~domains.medical.models.common.sample_latent` for this to hold (from the global stream, its
        samples now differ from call to call).
        """
        if not isinstance(batch, dict) or "image" not in batch or "id" not in batch:
            got = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
            raise ValueError(
                f"predict_step: expected a batch dict with 'image' (B, C, H, W) and 'id' (B names), as "
                f"MedicalDataModule's predict loader gives, got {got}"
            )
        batch = self._skip_refused(batch)
        images = batch["image"]
        sizes = batch.get("size", torch.tensor([images.shape[-2:]] * len(images)))
        probs = torch.zeros(*images.shape[:1], self.num_samples, *images.shape[-2:], device=self.device)
        for i, (h, w) in enumerate(sizes.tolist()):
            cut = images[i : i + 1, :, :h, :w]
            with image_noise([self._image_seed(cut)]):
                probs[i, :, :h, :w] = self.sample(pad_to_multiple(cut, self._predict_multiple()))[0, :, :h, :w]
        out = {
            "id": list(batch["id"]),
            "samples": (probs >= self.threshold).cpu(),
            "mean": probs.mean(dim=1).cpu(),
            "uncertainty": uncertainty_map(probs, self.predict_uncertainty).cpu(),
        }
        for key in ("source", "size"):  # the NIfTI geometry; each image's own size in a padded batch
            if key in batch:
                out[key] = batch[key]
        return out

    def configure_callbacks(self):
        if not self.predict_dir:
            return []
        return [MedicalPredictionWriter(self.predict_dir, uncertainty=self.predict_uncertainty)]
