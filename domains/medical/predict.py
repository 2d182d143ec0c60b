"""Writes what ``predict`` produces: per image, N sample masks, the mean probability and an uncertainty map.

Layout (``<id>`` is the dataset's item id, e.g. ``<patient>/<slice>``; each part is made filesystem-safe):

    <output_dir>/<id>/sample_00.png ... sample_{N-1}.png   binary masks, 0 / 255
    <output_dir>/<id>/mean_prob.png                          mean foreground probability, 0..255
    <output_dir>/<id>/uncertainty.png                        uncertainty, 0..255 (see below)
    <output_dir>/<id>/{samples,mean_prob,uncertainty}.nii.gz only when the input slice came from NIfTI
    <output_dir>/<case>/{samples,mean_prob,uncertainty}.nii.gz  the whole volume, once all its slices are in

PNGs have the source image's size and position: the task runs the network on the whole image, padded to
the network's size multiple (:func:`size_multiple`), and each output is cut back to the image's own size.

Uncertainty: ``entropy`` is the binary entropy (bits, in [0, 1]) of the mean probability, written as x 255;
``variance`` is the variance of the sample probabilities across samples (in [0, 0.25]), written as x 4 x 255.
For NIfTI inputs the maps are mapped back onto the source volume's in-plane grid (undoing the datamodule's
aspect-preserving resize and symmetric padding, inverting the label's nearest-neighbour resize)
and written as one-slice volumes whose affine places them at the source slice, so they overlay the original
scan in any viewer (a volume stored with its head-foot axis not third is sliced along that axis: its slices'
files are on that reordered grid); ``predict`` covers every slice of a volume, so the case's whole volume (the
source's grid, voxel order and affine; samples (X, Y, Z, N)) is written too. NIfTI files hold the raw values
(probabilities, bits or variance; masks 0/1), with the source image's qform / sform codes and units (its
affine, never its label's).

Predicting again into the same folder replaces each image's files: the previous run's files of the names
above (e.g. ``sample_03.png`` of a run with more samples) are removed from the folder before it is written;
other files are left alone. Two images whose ids make one folder (``slice 000`` and ``slice_000``) are an
error naming both (and the run's files are removed).

Use it from the task (``--model.predict_dir DIR``) or as a callback in the YAML
(``domains.medical.predict.MedicalPredictionWriter``).
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from shared.cli_help import predicted_split_note
from shared.files import written_whole
from shared.images import write_image
from shared.task import gather_lists


def uncertainty_map(probs: torch.Tensor, kind: str = "entropy") -> torch.Tensor:
    """Per-pixel uncertainty (B, H, W) from sample probabilities (B, N, H, W).

    ``entropy``: binary entropy in bits of the mean probability (total predictive uncertainty, 1 at p = 0.5).
    ``variance``: variance of the N sample probabilities (how much the samples disagree; 0 for one sample).
    """
    if probs.ndim != 4:
        raise ValueError(f"expected sample probabilities (B, N, H, W), got {tuple(probs.shape)}")
    if kind == "entropy":
        p = probs.mean(dim=1).clamp(1e-7, 1 - 1e-7)
        return -(p * torch.log2(p) + (1 - p) * torch.log2(1 - p))
    if kind == "variance":
        return probs.var(dim=1, unbiased=False)
    raise ValueError(f"uncertainty kind must be 'entropy' or 'variance', got {kind!r}")


def size_multiple(network: torch.nn.Module) -> int:
    """The side multiple at which every level of ``network`` halves the image exactly: ``2 ** (levels - 1)``
    of its U-Net encoders (U-Net, Prob. U-Net and its prior net) or of the HPU-Net's core. Other sides run,
    but ceil-rounded coarse maps no longer line up with the fine ones as they did in training."""
    from .models import HierarchicalCore

    multiple = 1
    for module in network.modules():
        if isinstance(module, HierarchicalCore):
            multiple = max(multiple, 2 ** (len(module.channels) - 1))
        strides = getattr(module, "feature_strides", None)
        if strides:
            multiple = max(multiple, *(int(s) for s in strides))
    return multiple


#: the files the writer puts in an image's folder (and a case's whole volume in the folder above)
_OUTPUT_FILE = re.compile(r"sample_\d{2,}\.png|(mean_prob|uncertainty)\.(png|nii\.gz)|samples\.nii\.gz")


def output_folder_name(item_id: str) -> str:
    """The folder an item's outputs go to, as text (:func:`_safe_relpath`)."""
    return _safe_relpath(item_id).as_posix()


def _safe_relpath(item_id: str) -> Path:
    """Item id -> relative path: '/'-separated parts kept as folders; in each, letters and digits of any script
    (``肺部``, ``Schädel``; composed: a Mac's decomposed ``a`` + diaeresis is ``ä``) and ``. _ -`` kept, other
    characters (spaces, control characters, ``: * ? < > |``) replaced by '_'."""
    item_id = unicodedata.normalize("NFC", str(item_id))
    parts = [re.sub(r"[^\w.-]", "_", p) for p in item_id.replace("\\", "/").split("/")]
    parts = [p for p in parts if p not in ("", ".", "..")]
    if not parts:
        raise ValueError(f"cannot make an output path from item id {item_id!r}")
    return Path(*parts)


def _remove_outputs(folder: Path) -> None:
    """Remove an earlier run's outputs from ``folder`` (only names the writer uses), so a folder never mixes
    two runs (``sample_03.png`` of 4 samples beside this run's 2)."""
    if folder.is_dir():
        for path in folder.iterdir():
            if _OUTPUT_FILE.fullmatch(path.name) and path.is_file():
                path.unlink()


def _claim(claims: dict, output_dir: Path, folder: Path, owner, item_id: str) -> None:
    """Record that ``owner`` writes ``folder``; a folder another owner already writes is an error naming both
    ids, since the second's files would overwrite the first's (the run's files are then removed, as for any
    failed ``predict``: :class:`shared.prediction_set.PredictionSet`)."""
    first = claims.setdefault(folder, (owner, item_id))
    if first[0] != owner:
        raise ValueError(
            f"{output_dir / folder}: two images would write to this folder: {first[1]!r} and {item_id!r} "
            "(characters other than letters, digits and . _ - become '_'): rename one"
        )


def _save_nifti(image, path: Path) -> None:
    """``image`` saved whole (an interrupted run leaves no truncated .nii.gz under the real name)."""
    import nibabel as nib

    with written_whole(path) as tmp:
        nib.save(image, tmp)


def _to_uint8(values: torch.Tensor, scale: float) -> np.ndarray:
    return np.clip(np.round(values.float().cpu().numpy() * scale), 0, 255).astype(np.uint8)


def _inverse_nearest(n_source: int, n_resized: int) -> torch.Tensor:
    """Index into a nearest-resized axis for every source index, inverting torch's "nearest" resize.

    ``interpolate(mode="nearest")`` (what MONAI ``Resized`` does to labels) fills resized index j from source
    index floor(j * n_source / n_resized). Each source index i takes the resized pixel read from the source
    index closest to i (itself when one was read from it; the lower one on ties), so a perfect prediction
    lands on the source label up to the voxels the downsampling skipped.
    """
    i = torch.arange(n_source)
    lower = (i * n_resized) // n_source
    upper = (lower + 1).clamp_max(n_resized - 1)
    read_lower, read_upper = (lower * n_source) // n_resized, (upper * n_source) // n_resized
    return torch.where((read_upper - i).abs() < (i - read_lower).abs(), upper, lower)


def slice_to_source_grid(array: torch.Tensor, spatial_shape, resized) -> torch.Tensor:
    """Undo the Decathlon slice pipeline for maps (C, crop, crop) with rows = Y, cols = X: -> (C, X, Y).

    The datamodule resized the (X, Y) plane to ``resized`` (the source's ``resized``: its physical aspect kept,
    long side ``crop``; labels with nearest
    neighbours), padded symmetrically to ``crop x crop`` (MONAI ``ResizeWithPadOrCrop``, ``width // 2`` first)
    and transposed to (Y, X). This transposes back, drops the padding and reads every source voxel from the
    resized pixel whose label was read nearest to it (see ``_inverse_nearest``).
    """
    x_size, y_size = int(spatial_shape[0]), int(spatial_shape[1])
    crop = array.shape[-1]
    if array.ndim != 3 or array.shape[-2] != crop:
        raise ValueError(f"expected square maps (C, crop, crop), got {tuple(array.shape)}")
    sx, sy = (int(v) for v in resized)
    planes = array.transpose(-1, -2)  # (C, X, Y) on the crop grid
    px, py = (crop - sx) // 2, (crop - sy) // 2
    planes = planes[:, px : px + sx, py : py + sy]
    ix = _inverse_nearest(x_size, sx).to(planes.device)
    iy = _inverse_nearest(y_size, sy).to(planes.device)
    return planes[:, ix][:, :, iy]


def _nifti_like_source(data: np.ndarray, affine: np.ndarray, source: dict, i: int):
    """A NIfTI image of ``data`` at ``affine`` whose header says what the source's does: its qform / sform
    codes (scanner or aligned space) and its space and time units (nibabel's defaults otherwise: sform
    "aligned", no qform, unknown units). A source with neither code keeps nibabel's, which place it."""
    import nibabel as nib

    image = nib.Nifti1Image(data, affine)
    if "xyzt_units" in source:
        image.header["xyzt_units"] = int(source["xyzt_units"][i])
        codes = int(source["qform_code"][i]), int(source["sform_code"][i])
        if any(codes):
            image.set_qform(affine, codes[0])
            image.set_sform(affine, codes[1])
    return image


def _as_stored(data: np.ndarray, affine: np.ndarray, axes) -> tuple[np.ndarray, np.ndarray]:
    """A volume (X, Y, Z, ...) on the grid slices were cut from and its affine, back in the source file's
    voxel order: ``axes`` is the stored axis of each of X, Y, Z (``domains.medical.volumes.axial_axes``)."""
    inverse = [int(a) for a in np.argsort(axes)]
    return np.transpose(data, (*inverse, *range(3, data.ndim))), affine[:, [*inverse, 3]]


def _slice_affine(affine: np.ndarray, slice_index: int) -> np.ndarray:
    """Affine of a one-slice volume whose voxel (i, j, 0) is voxel (i, j, slice_index) of the source."""
    out = np.array(affine, dtype=np.float64, copy=True)
    out[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, float(slice_index)]) + affine[:3, 3]
    return out


class MedicalPredictionWriter(BasePredictionWriter):
    """Writes each predicted batch as it comes (PNG, plus NIfTI for NIfTI inputs).

    Predictions are not also kept in memory by the Trainer (``keep_predictions=False``), so ``predict`` over a
    large set runs in constant memory.
    """

    def __init__(
        self,
        output_dir: str = "predictions/medical",
        uncertainty: str = "entropy",
        keep_predictions: bool = False,
    ):
        super().__init__(write_interval="batch")
        if uncertainty not in ("entropy", "variance"):
            raise ValueError(f"uncertainty must be 'entropy' or 'variance', got {uncertainty!r}")
        self.output_dir = Path(output_dir)
        self.uncertainty = uncertainty
        self.keep_predictions = keep_predictions
        self.written: list[Path] = []
        self._volumes: dict[str, dict] = {}  # NIfTI source -> its whole volume, filled slice by slice
        self._volumes_seen = False  # whether this run read volumes (its folders are then one per slice)
        self._claims: dict[Path, tuple] = {}  # output folder -> (owner, id) written this run

    def on_predict_start(self, trainer, pl_module) -> None:
        self.written = []
        self._volumes, self._volumes_seen = {}, False
        self._claims = {}
        if not self.keep_predictions:
            trainer.predict_loop.return_predictions = False

    def _drop_unfinished(self) -> None:
        """Say which volume is left unfinished and free its buffer (only a capped or multi-device predict
        leaves one: slices come in order, case by case)."""
        for volume in self._volumes.values():
            z = int(volume["mean"].shape[2])
            rank_zero_warn(
                f"[MedicalPredictionWriter] {volume['folder']}: {len(volume['seen'])} of {z} slices "
                "predicted (max_items, or several devices sharing the slices): no whole-volume NIfTI "
                "written, only the per-slice ones"
            )
        self._volumes = {}

    def on_predict_end(self, trainer, pl_module) -> None:
        self._drop_unfinished()
        written = sum(gather_lists([len(self.written)]))  # every rank's, said once
        each = " (a volume's slices one each)" if self._volumes_seen else ""
        which = predicted_split_note(trainer.datamodule, "images or volumes")
        rank_zero_info(f"[MedicalPredictionWriter] wrote {written} image folders{each}{which} under {self.output_dir}")

    def write_on_batch_end(
        self,
        trainer,
        pl_module,
        prediction: dict,
        batch_indices,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        samples, mean, unc = prediction["samples"], prediction["mean"], prediction["uncertainty"]
        unc_scale = 255.0 if self.uncertainty == "entropy" else 4 * 255.0
        source = prediction.get("source")
        sizes = prediction.get("size")  # (B, 2): each image's own (H, W) inside the padded batch
        for i, item_id in enumerate(prediction["id"]):
            h, w = (int(v) for v in sizes[i]) if sizes is not None else mean.shape[-2:]
            item_samples, item_mean, item_unc = samples[i, :, :h, :w], mean[i, :h, :w], unc[i, :h, :w]
            relpath = _safe_relpath(item_id)
            _claim(self._claims, self.output_dir, relpath, ("item", len(self.written)), item_id)
            is_nifti = source is not None and str(source["image_path"][i]).endswith((".nii", ".nii.gz"))
            if is_nifti:
                volume = str(source["image_path"][i])
                _claim(self._claims, self.output_dir, relpath.parent, ("volume", volume), volume)
            folder = self.output_dir / relpath
            _remove_outputs(folder)
            folder.mkdir(parents=True, exist_ok=True)
            for s in range(samples.shape[1]):
                write_image(
                    folder / f"sample_{s:02d}.png", item_samples[s].to(torch.uint8).cpu().numpy() * 255
                )
            write_image(folder / "mean_prob.png", _to_uint8(item_mean, 255.0))
            write_image(folder / "uncertainty.png", _to_uint8(item_unc, unc_scale))
            if is_nifti:
                self._write_nifti(folder, item_samples, item_mean, item_unc, source, i)
            self.written.append(folder)

    def _write_nifti(self, folder: Path, samples, mean, unc, source: dict, i: int) -> None:
        """The slice as a one-slice volume in its folder, and into its case's whole volume (written to the
        folder above once every slice of the case is in)."""

        def numpy(value) -> np.ndarray:
            return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)

        shape = [int(v) for v in numpy(source["spatial_shape"][i])]
        volume_affine = numpy(source["affine"][i]).astype(np.float64)
        z = int(numpy(source["slice_index"][i]))
        affine = _slice_affine(volume_affine, z)
        resized = numpy(source["resized"][i])
        masks = slice_to_source_grid(samples.to(torch.uint8), shape, resized)  # (N, X, Y)
        maps = slice_to_source_grid(torch.stack([mean, unc]).float(), shape, resized)  # (2, X, Y)
        vol = masks.permute(1, 2, 0)[:, :, None].cpu().numpy().astype(np.uint8)  # (X, Y, 1, N)
        _save_nifti(_nifti_like_source(vol, affine, source, i), folder / "samples.nii.gz")
        for name, plane in (("mean_prob", maps[0]), ("uncertainty", maps[1])):
            data = plane[:, :, None].cpu().numpy().astype(np.float32)
            _save_nifti(_nifti_like_source(data, affine, source, i), folder / f"{name}.nii.gz")

        key = str(source["image_path"][i])
        self._volumes_seen = True
        if key not in self._volumes:
            self._drop_unfinished()  # a slice of another case: the last one will get no more slices
            _remove_outputs(folder.parent)  # an earlier run's whole volume, which this run may not complete
            self._volumes[key] = {
                "folder": folder.parent,
                "affine": volume_affine,
                "header": {k: [numpy(source[k][i])] for k in ("qform_code", "sform_code", "xyzt_units") if k in source},
                "axes": numpy(source["axes"][i]) if "axes" in source else (0, 1, 2),  # else: as stored
                "samples": np.zeros((*shape[:3], vol.shape[-1]), np.uint8),
                "mean": np.zeros(shape[:3], np.float32),
                "uncertainty": np.zeros(shape[:3], np.float32),
                "seen": set(),
            }
        volume = self._volumes[key]
        volume["samples"][:, :, z] = vol[:, :, 0]
        volume["mean"][:, :, z] = maps[0].cpu().numpy()
        volume["uncertainty"][:, :, z] = maps[1].cpu().numpy()
        volume["seen"].add(z)
        if len(volume["seen"]) == shape[2]:  # complete: write it and free its memory
            for name in ("samples", "mean", "uncertainty"):
                filename = {"mean": "mean_prob"}.get(name, name)
                data, affine = _as_stored(volume[name], volume["affine"], volume["axes"])
                whole = _nifti_like_source(data, affine, volume["header"], 0)
                _save_nifti(whole, volume["folder"] / f"{filename}.nii.gz")
            del self._volumes[key]
