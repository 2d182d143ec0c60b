"""A predict run's ``predict_dir``: :class:`PredictionSet`, the callback the CLI adds to every run
(:meth:`shared.cli.SuiteCLI.instantiate_trainer`) that keeps one run's predictions there whole, locks the
folder against a second run, and refuses a folder holding the run's own inputs."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from pathlib import Path, PurePosixPath

import pytorch_lightning as pl
from filelock import FileLock, Timeout
from pytorch_lightning.utilities import rank_zero_warn
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch.utils.data import Dataset

from shared.classification.data import IMAGE_SUFFIXES
from shared.cli_help import ConfigError
from shared.files import (
    PREDICTIONS_MANIFEST,
    check_output_folder,
    earlier_predictions,
    is_hidden,
    recording_writes,
    stop_recording,
    written_whole,
)
from shared.task import gather_lists


class PredictionSet(pl.Callback):
    """``predict_dir`` holds one run's predictions, whole.

    A run records the files its writers put in place (:func:`shared.files.recording_writes`; every rank's,
    gathered at the end) and lists them in ``<predict_dir>/.predictions.json``. The next run moves those into
    ``.predictions-previous/`` when it starts, deletes them when it finishes, and if it fails deletes the files
    it wrote and moves the earlier set back. So a folder never mixes two runs (an old ``unreadable.csv`` or
    ``sample_03.png`` beside the new set), a failed run leaves the earlier set as it was, and no other file
    (a log, a note, a checkpoint saved there) is ever listed, moved or deleted. An aside folder found at the
    start is a run killed outright: its earlier set is put back, with a warning (the killed run's own files
    cannot be told from others then, and stay). A ``predict_dir`` holding files the run reads is refused before
    anything is moved or written (:meth:`_refuse_inputs_inside`): outputs named after the inputs replaced them.
    So is one another predict run is writing into (:meth:`_lock`): two runs into one folder at once both
    exited 0, and the folder held one run's set, the other's gone.

    A SIGTERM (``docker stop``, a scheduler's preemption) stops the run after the batch in hand, as it stops
    ``fit``, ``validate`` and ``test``: Lightning's handler only sets a flag, which its predict loop never reads,
    so the run went on to the end (or to the SIGKILL that follows)."""

    MANIFEST = PREDICTIONS_MANIFEST
    ASIDE = ".predictions-previous"
    LOCK = ".predictions.lock"  # hidden: no reader or listing takes it, and no manifest lists it

    def __init__(self):
        self._root: Path | None = None
        self._running = False  # a run of ours has started and not finished (what on_exception undoes)
        self._existed = False
        self._written: set[Path] = set()
        self._held: FileLock | None = None  # the predict_dir's lock, while this run writes there

    def on_predict_start(self, trainer, pl_module) -> None:
        out = getattr(pl_module, "predict_dir", None)
        self._root, self._running = (Path(out) if out else None), False
        if self._root is None:
            return
        check_output_folder(self._root, "--model.predict_dir")  # a file there failed after the first batch
        self._refuse_inputs_inside(trainer)
        self._written = recording_writes()  # on every rank: each writes its share
        if trainer.is_global_zero:
            self._existed = self._root.is_dir()
            self._lock()
            if (self._root / self.ASIDE).is_dir():
                self._restore_aside()
                rank_zero_warn(
                    f"predict_dir {self._root}: an earlier predict run there stopped before it finished (killed?); "
                    "the set before it is put back (files that run wrote under other names may remain)"
                )
            self._move_listed_aside()
            self._running = True
        trainer.strategy.barrier("PredictionSet.start")  # the old set is aside before any rank writes

    def _lock(self) -> None:
        """Hold an inter-process lock on ``predict_dir`` (``LOCK`` in it, made with the folder) for the run, or
        refuse it at once, nothing moved or written, where another process holds it. A run of this same process
        that never finished (a test's, a notebook's) is no other run: its lock is taken over
        (``is_singleton``), as the system frees a killed process's."""
        self._root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self._root / self.LOCK, blocking=False, is_singleton=True)
        try:
            lock.acquire()
        except Timeout:
            raise ConfigError(
                f"--model.predict_dir {self._root}: another predict run is writing there (it holds "
                f"{self._root / self.LOCK}); nothing was moved or written: wait for it to finish, or give another "
                "--model.predict_dir"
            ) from None
        self._held = lock

    def _unlock(self) -> None:
        """Let the lock go, its file removed first, while still held (filelock then sees that a file it opened
        meanwhile is gone, and takes no lock on it), so a finished run leaves nothing of it in the folder."""
        if self._held is not None:
            with contextlib.suppress(OSError):  # Windows keeps an open file: its lock removes it on release
                Path(self._held.lock_file).unlink(missing_ok=True)
            self._held.release(force=True)
            self._held = None

    def _refuse_inputs_inside(self, trainer) -> None:
        """Refuse, before anything is moved or written, a ``predict_dir`` holding files the run reads: its writers
        name their outputs after the inputs (``images/<id>.png``, ``<name>_overlay.png``, ``cam/<name>``), so
        ``--data.predict_path D/images --model.predict_dir D`` drew each photo's overlay over the photo itself,
        listed the photos as the run's predictions, and the next run moved them aside (:func:`_inputs_in`).
        Besides the folder an option names, the files the predict set itself holds (:func:`_dataset_paths`):
        the default synthetic set (no path given) and a label CSV's images elsewhere went unchecked."""
        datamodule = trainer.datamodule
        option, root = _predict_input(datamodule)
        inside = _inputs_in(self._root, root) if root is not None else []
        if inside:
            more = f" and {len(inside) - 1} more" if len(inside) > 1 else ""
            raise ConfigError(
                f"--model.predict_dir {self._root}: it holds input files of {option} {root} ({inside[0]}{more}), "
                "which predict's outputs could overwrite; nothing was written: give a --model.predict_dir that "
                f"holds no input (a new folder beside the inputs; one inside {option} is fine)"
            )
        inside = _held_inside(self._root, _dataset_paths(predict_datasets(trainer)))
        if inside:
            more = f" and {len(inside) - 1} more" if len(inside) > 1 else ""
            what = (
                f"the images of --data.predict_path {datamodule.predict_path}"
                if getattr(datamodule, "predict_path", None) is not None
                else "the data set predict reads without --data.predict_path: its test split, or the default "
                "synthetic set"
            )
            raise ConfigError(
                f"--model.predict_dir {self._root}: it holds files this predict run reads "
                f"({inside[0]}{more}: {what}), which predict's outputs could overwrite; nothing was written: "
                "give a --model.predict_dir that holds none of them"
            )

    def on_predict_batch_end(self, trainer, *args) -> None:
        # on_exception below puts the earlier set back; the CLI exits 143. Not after the last batch: the set is
        # whole then (as Lightning's evaluation loop, which checks only before the last)
        if trainer.received_sigterm and not trainer.predict_loop.batch_progress.is_last_batch:
            raise SIGTERMException

    def on_predict_end(self, trainer, pl_module) -> None:
        if self._root is None:
            return
        stop_recording(self._written)
        root = self._root.resolve()
        written = sorted(
            p.relative_to(root).as_posix() for p in map(Path, gather_lists(sorted(map(str, self._written))))
            if root in p.parents
        )  # every rank's files (the gather waits for every rank to finish writing)
        if not self._running:
            return
        # listed: only what the next run takes as a predict run's (a callback's own .ckpt or .md is not)
        unlisted = {rel: problem for rel in written if (problem := _listed_entry_problem(self._root, rel))}
        if unlisted:
            first, problem = next(iter(unlisted.items()))
            rank_zero_warn(
                f"predict_dir {self._root}: {len(unlisted)} file(s) this run wrote there are not listed in "
                f"its {self.MANIFEST}, so a later run leaves them as they are ({first} {problem})"
            )
            written = [rel for rel in written if rel not in unlisted]
        self._root.mkdir(parents=True, exist_ok=True)  # a run that wrote nothing still says so
        with written_whole(self._root / self.MANIFEST) as tmp:
            tmp.write_text(json.dumps(written, indent=0), encoding="utf-8")
        shutil.rmtree(self._root / self.ASIDE, ignore_errors=True)
        self._running = False
        self._unlock()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        stop_recording(self._written)
        if not self._running:
            self._unlock()  # refused or failed before anything of its own was written
            return
        root = self._root.resolve()
        written = [p for p in self._written if root in p.parents]
        for path in written:  # this process's files only: nothing else is the run's for sure
            path.unlink(missing_ok=True)
        _remove_empty_folders(root, {path.parent for path in written})
        self._restore_aside()
        self._unlock()  # its file out of the folder before the folder is found empty
        if not self._existed and self._root.is_dir() and not any(self._root.iterdir()):
            self._root.rmdir()
        self._running = False

    def _move_listed_aside(self) -> None:
        """The last finished run's files (and its manifest) into ``ASIDE``; if a move fails, the moved ones go back
        and the error is raised (nothing of this run has started, so nothing else is touched). A manifest that
        is no list a predict run wrote (:func:`_listed_entry_problem`: a hand-edited or foreign one naming
        ``../../notes.txt``, an absolute path, or a ``model.ckpt`` beside the predictions) is refused before
        anything moves: its files were moved aside and then deleted as the earlier set."""
        manifest = self._root / self.MANIFEST
        if not manifest.is_file():
            return
        listed = _read_json(manifest)
        fix = (
            "nothing was moved or written: if no predict run wrote it, delete it (the files it names stay) "
            "or give another --model.predict_dir"
        )
        if not isinstance(listed, list):
            raise ConfigError(
                f"{manifest}: not the list of files a predict run wrote there (a JSON list of names inside "
                f"{self._root}); {fix}"
            )
        for rel in listed:
            if problem := _listed_entry_problem(self._root, rel):
                raise ConfigError(f"{manifest}: entry {rel!r} {problem}; {fix}")
        aside = self._root / self.ASIDE
        try:
            for rel in [*listed, self.MANIFEST]:
                if (self._root / rel).is_file():
                    (aside / rel).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(self._root / rel, aside / rel)
        except OSError:
            self._restore_aside()
            raise
        _remove_empty_folders(self._root, {(self._root / rel).parent for rel in listed})

    def _restore_aside(self) -> None:
        aside = self._root / self.ASIDE
        if aside.is_dir():
            for path in (p for p in aside.rglob("*") if p.is_file()):
                target = self._root / path.relative_to(aside)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
            shutil.rmtree(aside, ignore_errors=True)


#: the files predict both reads and writes (pictures, volumes): where ``predict_dir`` lies inside the input
#: folder, a file of these kinds in it is read as input and could be written over (a log or a note is neither)
_READ_AND_WRITTEN = (*IMAGE_SUFFIXES, ".nii", ".nii.gz")


#: the kinds of file predict's writers put in a ``predict_dir`` (pictures, NIfTI volumes, anomaly score
#: arrays, CSV tables, KITTI and instance text, COCO results JSON): a manifest entry of another kind (a
#: ``model.ckpt``, a ``notes.md``) is no file a predict run wrote
_PREDICTED_KINDS = (*IMAGE_SUFFIXES, ".nii", ".nii.gz", ".npy", ".csv", ".txt", ".json")


def _listed_entry_problem(root: Path, rel) -> str | None:
    """Why ``rel``, an entry of ``root``'s predictions manifest, names no file a predict run could have
    written there (None: it may be moved): only a plain relative name (``images/000001.png``, as the manifest
    is written) of a visible file inside ``root``, of a kind predict writes (``_PREDICTED_KINDS``), and not
    through a link leading out of ``root``."""
    if not isinstance(rel, str) or not rel:
        return "is not a file name"
    name = PurePosixPath(rel)
    plain = not name.is_absolute() and "\\" not in rel and name.as_posix() == rel
    if not plain or any(part in (".", "..") for part in rel.split("/")):
        return f"is not a plain relative name inside {root} (as predict writes them: images/000001.png)"
    if any(part.startswith(".") for part in name.parts):
        return "is a hidden file, which predict never lists"
    if not rel.lower().endswith(_PREDICTED_KINDS):
        return f"is not of a kind predict writes ({', '.join(_PREDICTED_KINDS)})"
    resolved = root.resolve()
    if resolved not in (resolved / rel).resolve().parents:
        return f"leads out of {root} through a link"
    return None


def predict_datasets(trainer) -> list:
    """The datasets of the predict loaders Lightning built for this run (none before it built them)."""
    loaders = getattr(trainer, "predict_dataloaders", None)
    if isinstance(loaders, dict):
        loaders = list(loaders.values())
    elif not isinstance(loaders, (list, tuple)):
        loaders = [loaders]
    return [loader.dataset for loader in loaders if getattr(loader, "dataset", None) is not None]


#: how far below a dataset :func:`_dataset_paths` looks: its attribute (a list of records), a record (a tuple,
#: a dataclass), the record's field (the image path; a list of a record's mask paths)
_PATH_DEPTH = 3


def _held_values(value) -> list:
    """What :func:`_dataset_paths` looks into below ``value``: a container's items, a dataset's or a dataclass
    record's attributes; nothing for anything else (an array, a tensor, a transform, a number)."""
    if isinstance(value, dict):
        return [*value.keys(), *value.values()]
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    if isinstance(value, Dataset) or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
        if hasattr(value, "__dict__"):
            return list(vars(value).values())
        return [getattr(value, field.name, None) for field in dataclasses.fields(value)]  # slots
    return []


def _dataset_paths(datasets) -> list[str | Path]:
    """The paths the predict ``datasets`` hold (``str`` and ``Path`` values), found in their attributes, their
    records (lists, tuples, dicts, dataclasses; ``_PATH_DEPTH`` levels down) and the datasets they wrap (a
    ``Subset``'s, a view's ``base``). The data modules hold their inputs in no one shape (an annotation's
    ``image_path``, a sample tuple, a clip's folder), and what the loader reads is what the check must cover:
    the default synthetic set, a label CSV's images elsewhere. Values only: no file is opened. Written here:
    no library lists the files behind a torch dataset."""
    found, seen = [], set()
    stack = [(dataset, 0) for dataset in datasets]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, Dataset):
            depth = 0  # a wrapped dataset: its own attributes are one level down again
        if id(value) in seen:
            continue
        seen.add(id(value))
        for child in _held_values(value):
            named = isinstance(child, str) and 0 < len(child) < 4096 and "\0" not in child
            if named or isinstance(child, Path):
                found.append(child)  # a class name or an id names no file: _held_inside leaves it out
            elif depth + 1 < _PATH_DEPTH or isinstance(child, Dataset):
                stack.append((child, depth + 1))
    return found


def _held_inside(folder: Path, paths) -> list[Path]:
    """The files among ``paths`` (and below the folders among the ``Path`` ones) that lie in ``folder``, as
    :func:`_inputs_in` finds them. Each path's folder is resolved once (a data set's images share a few), so a
    large set costs a string comparison per image; only those inside are looked at on disk."""
    if not folder.is_dir():
        return []  # made by this run: nothing is in it yet
    inside, real, where = set(), {}, os.path.join(os.path.realpath(folder), "")
    for path in paths:
        parent, name = os.path.split(path)
        if name in ("", ".", ".."):  # a folder named by its own "x/.." or "x/": resolved whole
            parent, name = os.path.split(os.path.realpath(path))
        if parent not in real:
            real[parent] = os.path.join(os.path.realpath(parent or "."), "")
        full = real[parent] + name
        if not (full + os.sep).startswith(where):
            continue
        if os.path.isfile(full):
            inside.add(Path(full))
        elif isinstance(path, Path) and os.path.isdir(full):  # a data set's root, a clip's frame folder
            inside.update(_inputs_in(folder, Path(full)))
    return sorted(inside)


def _predict_input(datamodule) -> tuple[str, Path | None]:
    """The option and the file or folder a predict run reads: ``--data.predict_path`` (one's own images), else
    the data set's ``--data.data_path`` (a file there, e.g. a COCO JSON or a label CSV: its folder). None where
    the module names neither (a default data set, or no data module)."""
    if getattr(datamodule, "predict_path", None) is not None:
        return "--data.predict_path", Path(datamodule.predict_path)
    data_path = getattr(datamodule, "data_path", None)
    if data_path is None:
        return "--data.data_path", None
    return "--data.data_path", Path(data_path).parent if Path(data_path).is_file() else Path(data_path)


def _inputs_in(folder: Path, root: Path) -> list[Path]:
    """The input files below ``root`` (a file or folder) that lie in the output ``folder``, as the readers list
    them (hidden files and what an earlier predict run listed left out). Inputs inside ``folder``: every one of
    them; ``folder`` inside the input folder: only the files in it of kinds predict reads and writes both."""
    root, folder = root.resolve(), folder.resolve()
    if root == folder or folder in root.parents:
        files, kinds = ([root] if root.is_file() else root.rglob("*")), None
    elif root in folder.parents and folder.is_dir():
        files, kinds = folder.rglob("*"), _READ_AND_WRITTEN
    else:
        return []
    listed = earlier_predictions(root) if root.is_dir() else set()
    return sorted(
        path for path in files
        if path.is_file() and not is_hidden(path, root) and path.resolve() not in listed
        and (kinds is None or path.name.lower().endswith(kinds))
    )


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _remove_empty_folders(root: Path, folders) -> None:
    """Remove each of ``folders`` (and the folders above it, up to ``root``) that is empty, deepest first."""
    above = {parent for folder in folders for parent in (folder, *folder.parents) if root in parent.parents}
    for folder in sorted(above, key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


__all__ = ["PredictionSet", "predict_datasets"]
