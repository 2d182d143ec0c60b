"""How the suite reads a NIfTI volume's slices and intensities, with numpy and nibabel alone: the training
pipeline (:mod:`domains.medical.data`) and the demo's uploads (:mod:`apps.uploads`) both take them from here,
and the demo's home page imports this without torch or Lightning."""

from __future__ import annotations

import math

import numpy as np

#: the intensity percentiles the Decathlon pipeline maps to [0, 1] unless ``dataset_kwargs.percentiles`` says
PERCENTILES: tuple[float, float] = (0.5, 99.5)

#: the largest intensity magnitude a percentile window may reach: CT is about -1024..3071 HU (30,710 on an
#: extended scale), MR arbitrary units reach about 1e5; a window beyond this is a "no data" fill (-1e30) or a
#: unit or scaling error, which scaled every tissue to one value (or overflowed float32 to NaN) unsaid
PLAUSIBLE_INTENSITY = 1e6

#: the largest float32 (the models' type): float64 values beyond it become infinite
FLOAT32_MAX = float(np.finfo(np.float32).max)


def axial_axes(affine: np.ndarray) -> tuple[int, int, int]:
    """The stored voxel axes in the order slices are cut from (along the last): as stored when the third runs
    head-foot (every Decathlon file), else those running left-right, front-back, head-foot
    (``nibabel.orientations.io_orientation``), so a volume saved with its axes permuted, e.g. (z, y, x), gives
    the axial slices its canonical twin gives; as stored too for an affine that gives no orientation. Each
    axis keeps its stored direction (no flip, unlike ``nibabel.as_closest_canonical``): an LPS volume's slices
    are not mirrored against those of its set's other files, nor against those a model trained on. An affine
    that is not finite (a NaN voxel size) gives no orientation either: the readers refuse such files first
    (:func:`nonfinite_affine_problem`)."""
    import nibabel as nib  # here: the demo's home page imports this module, and nibabel takes a second

    if not np.isfinite(affine).all():  # a NaN voxel size: nibabel's SVD fails ("did not converge")
        return (0, 1, 2)
    ornt = nib.orientations.io_orientation(affine)  # per stored axis: (world axis R/A/S, direction)
    if np.isnan(ornt).any() or ornt[2, 0] == 2:
        return (0, 1, 2)
    return tuple(int(np.flatnonzero(ornt[:, 0] == world)[0]) for world in range(3))


def axial_slices(volume: np.ndarray, affine: np.ndarray | None = None) -> np.ndarray:
    """A NIfTI's stored (X, Y, Z, ...) voxels as the (Z, rows, cols, ...) axial slices the models read, a
    view (nothing copied): the voxel axes taken in :func:`axial_axes`' order (``affine`` None: ``volume`` is
    on that grid already, as the pipeline's resized arrays are), each in its stored direction; slice ``z`` is
    the ``z``-th along the file's own axis, its rows along y and its columns along x. Training, validation and
    ``predict`` cut their slices with it, and the demo gives the model an upload's slice as it cuts it
    (:meth:`apps.uploads.MedicalVolume.to_model`), whatever way the page shows it."""
    x, y, z = (0, 1, 2) if affine is None else axial_axes(affine)
    return np.transpose(volume, (z, y, x, *range(3, np.ndim(volume))))


def trained_percentiles(data: dict | None) -> tuple[float, float]:
    """The intensity percentiles that map a NIfTI volume to [0, 1] for a model fitted with the data settings
    ``data`` (a checkpoint's ``datamodule_hyper_parameters``, a model card's ``data_hyper_parameters``): their
    ``dataset_kwargs.percentiles``, else the Decathlon pipeline's default, which ``predict`` scales one's own
    volumes by for any checkpoint (:meth:`domains.medical.data.MedicalDataModule.input_settings`)."""
    given = (data or {}).get("dataset_kwargs") or {}
    lower, upper = given.get("percentiles") or PERCENTILES
    return float(lower), float(upper)


def nonfinite_affine_problem(affine: np.ndarray, zooms) -> str | None:
    """What is wrong with a NIfTI whose ``affine`` is not finite (a NaN or infinite voxel size, ``zooms``,
    with no qform / sform, or a NaN in one), with the way out; None when it is finite. Its slices cannot be
    placed nor resized to their physical aspect: the readers refuse it, naming the file."""
    if np.isfinite(affine).all():
        return None
    sizes = ", ".join(f"{float(z):g}" for z in zooms)
    return (
        f"its voxel sizes (pixdim) ({sizes}) or its qform / sform are not finite numbers, so its voxels cannot be "
        "placed: set the voxel sizes in its header (e.g. nibabel's header.set_zooms) or remove this file"
    )


def percentile_window(values: np.ndarray, percentiles: tuple[float, float] = PERCENTILES) -> tuple[float, float]:
    """``np.percentile(values, percentiles)`` as two floats: the window the pipeline scales to [0, 1]. Values
    near float32's ends give an infinite or NaN bound (numpy interpolates in the data's type), which
    :func:`window_problem` refuses."""
    with np.errstate(over="ignore", invalid="ignore"):
        lo, hi = np.percentile(values, percentiles)
    return float(lo), float(hi)


def window_problem(lo: float, hi: float, what: str = "intensity window") -> str | None:
    """What is wrong with an intensity window ``lo``..``hi`` (float64 percentiles) that is to map a volume
    to [0, 1], or None: bounds not finite in float32 (the scaling then gave NaN), or beyond
    :data:`PLAUSIBLE_INTENSITY` (a "no data" fill or a unit error: every tissue scaled to one value).
    ``what``: how the message names the window."""
    if not all(math.isfinite(v) and abs(v) <= FLOAT32_MAX for v in (lo, hi)):
        return f"its {what} {lo:g}..{hi:g} is not representable as float32 (beyond +-{FLOAT32_MAX:.3g})"
    if max(abs(lo), abs(hi)) > PLAUSIBLE_INTENSITY:
        return (
            f"its {what} {lo:g}..{hi:g} reaches beyond +-{PLAUSIBLE_INTENSITY:g}, no CT (about "
            "-1024..3071 HU) or MR (up to about 1e5) intensity: a 'no data' fill (e.g. -1e30) or a unit or "
            "scaling error, which would scale every tissue to one value"
        )
    return None
