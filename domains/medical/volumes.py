"""How the suite reads a NIfTI volume's slices and intensities, with numpy and nibabel alone: the training
pipeline (:mod:`domains.medical.data`) and the demo's uploads (:mod:`apps.uploads`) both take them from here,
and the demo's home page imports this without torch or Lightning."""

from __future__ import annotations

import numpy as np

#: the intensity percentiles the Decathlon pipeline maps to [0, 1] unless ``dataset_kwargs.percentiles`` says
PERCENTILES: tuple[float, float] = (0.5, 99.5)


def axial_axes(affine: np.ndarray) -> tuple[int, int, int]:
    """The stored voxel axes in the order slices are cut from (along the last): as stored when the third runs
    head-foot (every Decathlon file), else those running left-right, front-back, head-foot
    (``nibabel.orientations.io_orientation``), so a volume saved with its axes permuted, e.g. (z, y, x), gives
    the axial slices its canonical twin gives; as stored too for an affine that gives no orientation. Each
    axis keeps its stored direction (no flip, unlike ``nibabel.as_closest_canonical``): an LPS volume's slices
    are not mirrored against those of its set's other files, nor against those a model trained on."""
    import nibabel as nib  # here: the demo's home page imports this module, and nibabel takes a second

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
