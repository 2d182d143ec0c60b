"""Domain-free data helpers: group-aware splits, albumentations pipelines, worker counts, split loaders.

Splits are by *group* (patient, sequence, series) so that no patient or drive leaks between
train, validation and test: the classic failure of slice-level splits on LIDC.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import math
import multiprocessing
import multiprocessing.util  # registers its atexit hook before this module's (they run last-in, first-out)
import os
import signal
import threading
import warnings
from collections import Counter
from collections.abc import Collection, Hashable, Sequence, Sized
from pathlib import Path

import albumentations as A
import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    Sampler,
    WeightedRandomSampler,
)

SPLIT_NAMES = ("train", "val", "test")
#: the splits each Lightning stage cannot run without (``predict`` without one's own images reads test; ``fit``
#: without validation data is allowed, warned)
STAGE_SPLITS = {"fit": ("train",), "validate": ("val",), "test": ("test",), "predict": ("test",)}


def check_cap(cap, option: str) -> int | None:
    """A smoke-test cap (``--data.max_items``, ``max_clips``): a whole number >= 1, or None for all. Below 1 a
    slice ``[:cap]`` read 0 as nothing and -3 as all but the last three, with no word. A string that writes
    one is read as it (jsonargparse passes ``--data.max_items.val 4``, a key of a dict option, as '4', and
    'none' as is; it reads 'null' itself)."""
    value = cap
    if isinstance(cap, str):
        text = cap.strip().lower()
        value = None if text in ("none", "null") else int(text) if text.isdecimal() else cap
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{option}: a cap is a whole number >= 1, or null for all, got {cap!r}")
    return value


def check_stage_splits(sizes: dict[str, int], stage: str | None, owner: str, hint: str) -> None:
    """Refuse an empty split that ``stage`` reads (``sizes``: items per split): Lightning would run zero batches
    and exit 0, with no metrics, no predictions and no error. Other empty splits are warned. ``hint`` says what
    to change (the split option, by its CLI name)."""
    stage = getattr(stage, "value", stage)  # Lightning passes a TrainerFn
    needed = STAGE_SPLITS.get(stage, ())
    if not sizes:  # no split read (datasets given by hand): nothing to check
        return
    sizes = {**sizes, **{name: sizes.get(name, 0) for name in needed}}  # a split not built at all is empty
    empty = [name for name, size in sizes.items() if size == 0]
    if not empty:
        return
    table = ", ".join(f"{name} {size}" for name, size in sizes.items())
    needed = [name for name in needed if name in empty]
    if needed:
        raise ValueError(f"{owner}: `{stage}` needs the {needed[0]} split, which is empty ({table} items): {hint}")
    warnings.warn(f"{owner}: split(s) {empty} are empty ({table} items): {hint}", UserWarning, stacklevel=3)


def default_num_workers(max_workers: int = 4) -> int:
    """DataLoader workers from the CPU count, leaving one core to the training process."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        cpus = os.cpu_count() or 1
    return max(0, min(max_workers, cpus - 1))


def reseed_pipeline(pipeline: A.BasicTransform | A.BaseCompose, entropy: Sequence[int]) -> None:
    """Seed an albumentations pipeline from ``entropy`` alone (e.g. seed, epoch, item index), each transform
    from its own child stream of ``numpy.random.SeedSequence(entropy)``. ``Compose.set_random_seed`` hands
    every transform one and the same seed: reseeded per item, a flip and a scale jitter both of p = 0.5 drew
    the same first number and were applied together or not at all (400 of 400 items). Written here:
    albumentations seeds a pipeline only as a whole (``set_random_state`` shares one stream, which makes a
    transform's draws depend on what the transforms before it drew)."""
    _seed_tree(pipeline, np.random.SeedSequence([int(v) % 2**64 for v in entropy]))


def _seed_tree(transform, sequence: np.random.SeedSequence) -> None:
    transform.set_random_seed(int(sequence.generate_state(1, np.uint64)[0]))  # a Compose passes it to all
    # nested Compose / OneOf / SomeOf recurse; ColorJitter's ``transforms`` (plain functions) are skipped
    children = [t for t in getattr(transform, "transforms", ()) if hasattr(t, "set_random_seed")]
    for child, child_sequence in zip(children, sequence.spawn(len(children)), strict=True):
        _seed_tree(child, child_sequence)


def seed_worker_transforms(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: give each worker's albumentations pipeline its own seed.

    albumentations 2.0 obeys only ``Compose(seed=...)``, and every worker gets a copy of the same seeded
    pipeline, so without this all workers (and every epoch with non-persistent workers) replay the same
    augmentations. torch's per-worker seed differs per worker and epoch and follows ``seed_everything``; each
    transform gets a stream of its own from it (:func:`reseed_pipeline`).
    """
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if transform is not None and hasattr(transform, "set_random_seed"):
        reseed_pipeline(transform, (info.seed,))


def init_loader_worker(worker_id: int) -> None:
    """The suite's DataLoader ``worker_init_fn``: the worker ignores SIGTERM, then reseeds its transforms
    (:func:`seed_worker_transforms`).

    A SIGTERM sent to the whole process group (Slurm preemption, ``timeout``, ``kill -TERM -- -PGID``) reaches
    the workers too: one killed by it made torch's SIGCHLD handler raise "DataLoader worker ... is killed by
    signal: Terminated" in the main process before the CLI's SIGTERM handler saved the step in hand. Ignored
    here, the signal is the main process's alone, which shuts its workers down itself (a worker whose parent
    is gone exits on its own: torch's watchdog). Kept apart from :func:`seed_worker_transforms`: that one
    called in the main process must not leave it deaf to SIGTERM. At interpreter exit the main process ends
    the workers still alive with SIGKILL (:func:`kill_loader_workers`): multiprocessing's own exit hook ends
    them with SIGTERM and then waits for them, forever.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    seed_worker_transforms(worker_id)


def _ignores_sigterm(pid: int) -> bool | None:
    """Whether process ``pid`` ignores SIGTERM, from Linux's ``/proc/<pid>/status`` (its ``SigIgn`` mask); None
    where that cannot be read (macOS, a process already gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    ignored = next((line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), None)
    return None if ignored is None else bool(int(ignored, 16) >> (signal.SIGTERM - 1) & 1)


def kill_loader_workers() -> int:
    """End with SIGKILL this process's daemonic children that ignore SIGTERM (where the OS cannot say which
    do: all of them), and reap them; the number ended.

    Run at interpreter exit, before multiprocessing's own exit hook, which sends SIGTERM to the daemonic
    children (DataLoader workers) and then joins them without a timeout: a script that iterated a suite loader
    with persistent workers (:meth:`SplitLoaders._loader`), or kept any loader iterator alive, hung there for
    good, as :func:`init_loader_worker`'s workers ignore SIGTERM. SIGKILL ends them as SIGTERM's default action
    would; children that honour SIGTERM are left to multiprocessing. Lightning shuts its loaders' workers down
    itself when a command ends, so the CLI's exit is unchanged. Written here: neither torch nor multiprocessing
    ends a daemonic child that ignores SIGTERM (torch's Process objects drop their target once started, so the
    workers are told apart by their signal mask).
    """
    children = [p for p in multiprocessing.active_children() if p.daemon and _ignores_sigterm(p.pid) is not False]
    if not children:
        return 0
    # torch's SIGCHLD handler raises "DataLoader worker ... is killed by signal" for a worker its iterator still
    # lists; SIG_DFL (not SIG_IGN, which reaps by itself) holds it off until join() has reaped them
    sigchld = getattr(signal, "SIGCHLD", None)
    main_thread = threading.current_thread() is threading.main_thread()  # signal.signal's only thread
    previous = signal.getsignal(sigchld) if sigchld is not None and main_thread else None
    if previous is not None:
        signal.signal(sigchld, signal.SIG_DFL)
    try:
        for child in children:
            child.kill()
        for child in children:
            child.join(timeout=10)
    finally:
        if previous is not None:
            signal.signal(sigchld, previous)
    return len(children)


atexit.register(kill_loader_workers)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of a training sampler's generator in epoch ``epoch`` of a run seeded ``seed``: the order of
    an epoch follows (seed, epoch) alone, so a fit resumed at epoch k (``--ckpt_path last``) draws the order an
    uninterrupted one draws there, and a pass read besides (class counts, calibration) moves no later epoch's.
    A generator seeded once per fit and run on across epochs replayed epoch 0's order after a resume."""
    return int(np.random.SeedSequence([int(seed) % 2**64, int(epoch)]).generate_state(1, np.uint64)[0])


class EpochSeeded:
    """A sampler drawing from a generator of its own (seeded with ``seed``: every DDP rank draws one sequence),
    reseeded from (seed, epoch) at each pass once :meth:`set_epoch` has been called (Lightning calls it at each
    training epoch; :func:`epoch_seed`); before, the generator runs on from pass to pass."""

    def __init__(self, *args, seed: int, **kwargs):
        super().__init__(*args, generator=torch.Generator().manual_seed(int(seed)), **kwargs)
        self.seed, self.epoch = int(seed), None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        if self.epoch is not None:
            self.generator.manual_seed(epoch_seed(self.seed, self.epoch))
        # drawn here, whole: torch's samplers draw at their first index, after another pass may have reseeded
        return iter(list(super().__iter__()))


class RepeatFactorSampler(EpochSeeded, WeightedRandomSampler):
    """Repeat-factor sampling (:func:`repeat_factors`): ``len(factors)`` draws with replacement, weighted by the
    factors, seeded from (seed, epoch) (:class:`EpochSeeded`)."""

    def __init__(self, factors: torch.Tensor, seed: int):
        super().__init__(factors, num_samples=len(factors), replacement=True, seed=seed)


class SeededShuffle(EpochSeeded, RandomSampler):
    """A shuffle of ``dataset`` seeded from (seed, epoch) (:class:`EpochSeeded`)."""

    def __init__(self, dataset, seed: int):
        super().__init__(dataset, seed=seed)


def repeat_factors(image_classes: Sequence[Collection[Hashable]], threshold: float) -> torch.Tensor:
    """Per-image repeat factors of repeat-factor sampling (LVIS, Gupta et al. 2019), float64 (N,).

    A class present in a share ``f(c)`` of the images gets ``r(c) = max(1, sqrt(threshold / f(c)))``; an image
    gets the largest ``r`` of its classes (1 if it has none), so images holding rare classes (cyclists) are
    drawn more often. Written here: torch has the weighted sampler, but the factors only exist in detectron2's
    ``RepeatFactorTrainingSampler`` (not a dependency).
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"repeat-factor threshold must be in (0, 1], got {threshold}")
    n = len(image_classes)
    if n == 0:
        raise ValueError("repeat_factors: no images")
    images_with = Counter(c for classes in image_classes for c in set(classes))
    per_class = {c: max(1.0, math.sqrt(threshold * n / k)) for c, k in images_with.items()}
    return torch.tensor(
        [max((per_class[c] for c in set(classes)), default=1.0) for classes in image_classes],
        dtype=torch.float64,
    )


def same_setting(a, b) -> bool:
    """Settings as a checkpoint stores them and as a command gives them: tuples come back as lists, paths as
    strings written either way (``data/x``, ``./data/x``)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_setting(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_setting(a[k], b[k]) for k in a)
    if isinstance(a, str) and isinstance(b, str) and a != b:
        return Path(a).resolve() == Path(b).resolve()
    return a == b


def map_paths(value, convert):
    """``convert`` (str -> str) applied to each path of a path setting (:data:`SplitLoaders.PATH_SETTINGS`): a
    string, or the strings of a dict or list of them (``split_files``); other values as they are."""
    if isinstance(value, dict):
        return {k: map_paths(v, convert) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [map_paths(v, convert) for v in value]
    return convert(str(value)) if isinstance(value, (str, Path)) else value


def absolute_path(value):
    """A path setting with its paths absolute: a leading ``~`` expanded, a relative one from the working
    directory."""
    return map_paths(value, lambda path: str(Path(path).expanduser().resolve()))


def _has_relative_path(value) -> bool:
    """Whether a path setting (:func:`map_paths`) names any path relative to a working directory."""
    found = []
    map_paths(value, lambda path: found.append(not Path(path).is_absolute()) or path)
    return any(found)


def _named_differences(keys, before: dict, after: dict) -> str | None:
    """``data.KEY 'before' (this command: 'after')`` for each of ``keys``, for messages; None for none."""
    return ", ".join(f"data.{k} {before.get(k)!r} (this command: {after.get(k)!r})" for k in keys) or None


class SplitLoaders(pl.LightningDataModule):
    """train/val/test/predict loaders over named splits (predict reuses test): one recipe for every domain.

    Subclasses set ``batch_size`` and ``num_workers`` (:meth:`set_loader_options`) and fill ``self.datasets`` in
    ``setup`` (or override :meth:`split_dataset` to build a split on first use); ``collate_fn`` and
    ``pin_memory`` are theirs to set.
    Workers reseed a dataset's albumentations ``transform`` (a no-op for datasets without one) and ignore
    SIGTERM (:func:`init_loader_worker`).

    With ``repeat_threshold`` set, the training loader draws images with probability proportional to their
    :func:`repeat_factors` (with replacement, one epoch = as many draws as images); the training dataset must
    then have ``image_classes()`` (the class ids present in each image). Lightning shards the sampler under DDP;
    its generator is seeded with ``seed`` so every rank draws the same sequence, and from (seed, epoch) at each
    epoch, so a resumed fit draws what an uninterrupted one draws (:class:`RepeatFactorSampler`). The factors are counted once
    per training dataset: tasks ask for the training loader again (class weights, calibration), and counting can
    mean reading every label map.
    """

    collate_fn = None
    worker_init_fn = staticmethod(init_loader_worker)
    #: each loader worker draws its own augmentations (:func:`seed_worker_transforms`), so the worker count
    #: changes them; False where an item's draws follow the seed, epoch and item alone (the anomaly segmenter)
    AUGMENTATION_FOLLOWS_WORKERS = True
    #: init arguments that choose the data set itself: another value is another data set, not another split
    DATA_SET_SETTINGS: tuple[str, ...] = ("data_format", "data_path", "synthetic", "anomaly_path")
    #: init arguments that choose which items of the data set land in which split
    SPLIT_SETTINGS: tuple[str, ...] = ("seed", "split_fractions")
    #: init arguments that name files or folders (any domain's): the CLI expands a leading ``~`` in them, and
    #: a checkpoint records them as absolute paths (:meth:`absolute_paths`)
    PATH_SETTINGS: tuple[str, ...] = (
        "data_path",
        "predict_path",
        "anomaly_path",
        "images_root",
        "crops_dir",
        "feature_annotation",
        "predict_detector",
        "split_files",
    )
    #: init arguments that set the size the network sees images at (resized or fitted to it)
    INPUT_SETTINGS: tuple[str, ...] = ()
    #: what :meth:`split_groups` returns, for messages
    GROUP_UNIT = "groups"
    pin_memory = False
    repeat_threshold: float | None = None
    seed: int = 0
    _repeat_factors: tuple[Dataset, float, torch.Tensor] | None = None  # (dataset, threshold, factors)
    _train_digests: tuple[Dataset, torch.Tensor] | None = None  # (training dataset, its groups' digests)

    def check_splits(self, splits: dict[str, Sized], stage: str | None, hint: str) -> None:
        """:func:`check_stage_splits` of this module's ``splits`` (items per split), named by its class."""
        check_stage_splits({name: len(items) for name, items in splits.items()}, stage, type(self).__name__, hint)

    def absolute_paths(self) -> dict:
        """This module's :data:`PATH_SETTINGS` that are given, as absolute paths from the working directory:
        what a checkpoint records besides the settings as given (:class:`shared.cli.ConfigInCheckpoints`, and
        :meth:`state_dict`), so that a command run from another folder compares the folder the fit read, not
        the fit's relative path taken from its own working directory (:meth:`other_data_set_than`)."""
        given = {k: self.hparams[k] for k in self.PATH_SETTINGS if self.hparams.get(k) is not None}
        return {k: absolute_path(v) for k, v in given.items()}

    def split_settings(self, hparams: dict, stage: str) -> dict:
        """The settings among ``hparams`` (this module's init arguments, e.g. a checkpoint's
        ``datamodule_hyper_parameters``) that choose the ``stage`` split (``validate``, ``test``); a subclass
        may refine them per format or stage."""
        return {k: hparams[k] for k in self.SPLIT_SETTINGS if k in hparams}

    def data_set_settings(self, stage: str) -> tuple[str, ...]:
        """The settings that choose the data set the ``stage`` split is drawn from (:data:`DATA_SET_SETTINGS`)."""
        return self.DATA_SET_SETTINGS

    def other_data_set_than(self, trained: dict, stage: str) -> str | None:
        """The settings that make this module's ``stage`` data set another than the one a checkpoint trained on
        (``trained``: its ``datamodule_hyper_parameters``), named with both values; None for the same set. Only
        settings that also choose the training data count: a road-anomaly test set is never trained on. Paths
        that cannot be compared (:meth:`uncomparable_paths`) count as the same."""
        now, trains_on = dict(self.hparams), self.data_set_settings("fit")
        unknown = self._uncomparable_path_settings(trained, stage)
        differs = [
            k
            for k in self.data_set_settings(stage)
            if k in trains_on
            and k not in unknown
            and (k in trained or k in now)
            and not same_setting(trained.get(k), now.get(k))
        ]
        return _named_differences(differs, trained, now)

    def uncomparable_paths(self, trained: dict, stage: str) -> str | None:
        """The data-set paths a checkpoint recorded only relative, as the fit was given them, that this command
        gives otherwise, named with both values; None if there are none. A checkpoint written before it recorded
        the fit's absolute paths (``suite_data_paths``, :meth:`absolute_paths`) keeps no working directory, so
        ``../data/lidc`` then and ``../../data/lidc`` now may be one folder or two: :meth:`other_data_set_than`
        takes them as the same data set, which the check of the groups it trained on (:meth:`load_state_dict`,
        by content digests) then judges, and the CLI says that it could not tell."""
        return _named_differences(self._uncomparable_path_settings(trained, stage), trained, dict(self.hparams))

    def _uncomparable_path_settings(self, trained: dict, stage: str) -> list[str]:
        """The names of :meth:`uncomparable_paths`' settings."""
        now, trains_on = dict(self.hparams), self.data_set_settings("fit")
        return [
            k
            for k in self.data_set_settings(stage)
            if k in trains_on
            and k in self.PATH_SETTINGS
            and trained.get(k) is not None
            and now.get(k) is not None
            and _has_relative_path(trained[k])
            and not same_setting(trained[k], now[k])
        ]

    def other_split_than(self, trained: dict, stage: str) -> str | None:
        """Why this module's ``stage`` split may differ from the one a checkpoint trained with (``trained``: its
        ``datamodule_hyper_parameters``), or None: on the same data set, another seed or fractions put other
        images in test, possibly ones the network trained on. Another data set is no question of split."""
        if self.other_data_set_than(trained, stage):
            return None
        now = dict(self.hparams)
        before, after = self.split_settings(trained, stage), self.split_settings(now, stage)
        # a setting an older checkpoint did not store is not compared
        differs = [k for k in sorted(set(before) & set(after)) if not same_setting(before[k], after[k])]
        if not differs:
            return None
        return ", ".join(f"data.{k} {before[k]!r} (this command: {after[k]!r})" for k in differs)

    def other_input_than(self, trained: dict) -> str | None:
        """The :data:`INPUT_SETTINGS` a checkpoint was fitted with (``trained``: its
        ``datamodule_hyper_parameters``) that this module gives otherwise, named with both values; None if all
        agree. A setting the checkpoint did not store is not compared."""
        now = dict(self.hparams)
        differs = [k for k in self.INPUT_SETTINGS if k in trained and k in now and not same_setting(trained[k], now[k])]
        return ", ".join(f"data.{k} {trained[k]!r} (this command: {now[k]!r})" for k in differs) or None

    def split_groups(self, name: str) -> set[str] | None:
        """The groups (patients, drives, a CSV's ``group``) of split ``name`` once set up, for the check that
        an evaluation scores none its checkpoint trained on (:meth:`load_state_dict`); None: not known."""
        return None

    def state_dict(self) -> dict:
        """What checkpoints keep of the data: the settings that chose the data set and digests of the training
        split's groups (60-bit ints in one tensor: 8 MB for a million file-level groups; computed once per
        training split, not at every save), so an evaluation on the same data set grown since the fit can say
        which groups moved out of training (:meth:`load_state_dict`)."""
        dataset = getattr(self, "datasets", {}).get("train")
        if dataset is None:
            return {}
        if self._train_digests is None or self._train_digests[0] is not dataset:
            groups = self.split_groups("train") or ()
            self._train_digests = (dataset, torch.tensor(sorted(map(_group_digest, groups)), dtype=torch.int64))
        if not len(self._train_digests[1]):
            return {}
        # plain values only (a Path would need unpickling code that weights-only loading refuses)
        data_set = {k: self.hparams.get(k) for k in self.data_set_settings("fit")}
        data_set.update((k, v) for k, v in self.absolute_paths().items() if k in data_set)
        data_set = json.loads(json.dumps(data_set, default=str))
        return {"train_group_digests": self._train_digests[1], "data_set": data_set}

    def load_state_dict(self, state: dict) -> None:
        """Lightning restores this after ``setup`` when ``validate`` / ``test`` read a checkpoint: groups of the
        evaluated split that the checkpoint trained on are warned of. Rows added to a CSV (or patients to a
        folder) move :func:`group_split`'s cut points, so an old checkpoint's training groups can land in val or
        test with the seed and fractions unchanged, where :meth:`other_split_than` sees nothing. Another data set
        (ids such as KITTI's ``000123`` repeat between sets) is not compared: the CLI names it instead."""
        digests = state.get("train_group_digests")
        stage = getattr(self.running_stage(), "value", None)
        split = {"validate": "val", "test": "test"}.get(stage)
        if digests is None or split not in getattr(self, "datasets", {}):
            return
        if self.other_data_set_than(state.get("data_set") or {}, stage):
            return
        trained = {int(d) for d in digests}
        groups = self.split_groups(split)
        seen = sorted(g for g in groups or () if _group_digest(g) in trained)
        if seen:
            shown = ", ".join(seen[:5]) + (", ..." if len(seen) > 5 else "")
            warnings.warn(
                f"{len(seen)} of the {len(groups)} {self.GROUP_UNIT} of this {split} split were in the checkpoint's "
                f"training split ({shown}): its figures are partly on data it trained on. The data changed since "
                "the fit (items added or removed move the group split's cut) or another split setting is given; "
                "evaluate on the split the fit used, or fit again",
                UserWarning,
                stacklevel=2,
            )

    def set_loader_options(self, batch_size: int, num_workers: int | None) -> None:
        """The ``batch_size`` and ``num_workers`` of every loader (None: :func:`default_num_workers`, said with
        the number taken), checked here, when the data module is built: a 0 ended fit in a bare
        ZeroDivisionError, a -1 in torch's own message once the model was built."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"--data.batch_size must be a whole number >= 1 (items per batch), got {batch_size!r}")
        if num_workers is not None and (
            isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0
        ):
            raise ValueError(
                f"--data.num_workers must be a whole number >= 0 (0: load in the main process; null: from the CPU "
                f"count), got {num_workers!r}"
            )
        self.batch_size = batch_size
        if num_workers is None:
            num_workers = default_num_workers()
            draws = (
                f"; the augmentation draws depend on it: --data.num_workers {num_workers} reproduces this run's "
                "draws on another machine"
                if self.AUGMENTATION_FOLLOWS_WORKERS
                else ""
            )
            rank_zero_info(
                f"--data.num_workers null: {num_workers} loader workers, from this machine's CPU count{draws}"
            )
        self.num_workers = num_workers

    @property
    def order_seed(self) -> int:
        """The seed of the training order: ``seed_everything``'s when the run set one (``--seed_everything``,
        which Lightning passes on in ``PL_GLOBAL_SEED``), else the data seed. Every training sampler takes it, so
        the order moves with the run's seed on one device as under DDP, where Lightning's ``DistributedSampler``
        is seeded from ``seed_everything``."""
        return int(os.environ.get("PL_GLOBAL_SEED", self.seed))

    def train_sampler(self) -> RepeatFactorSampler | SeededShuffle:
        """The training order: repeat-factor sampling with ``repeat_threshold``, else a shuffle; both follow
        (``seed``, epoch) (:class:`EpochSeeded`). ``DataLoader(shuffle=True)``'s sampler drew each epoch's
        order from the global RNG, which ``seed_everything`` sets as it was at epoch 0: a fit resumed at epoch
        k (``--ckpt_path last``) replayed epoch 0's order, and a pass read besides moved every later one.
        Both are seeded with :attr:`order_seed`. Under DDP Lightning puts its ``DistributedSampler`` (seeded
        from ``seed_everything`` and told the epoch too) in the shuffle's place; a repeat-factor sampler it
        wraps and shards."""
        dataset = self.split_dataset("train")
        if not self.repeat_threshold:
            return SeededShuffle(dataset, self.order_seed)
        if not hasattr(dataset, "image_classes"):
            raise TypeError(
                f"repeat_threshold needs the training dataset ({type(dataset).__name__}) to list each image's "
                f"classes (image_classes())"
            )
        cached = self._repeat_factors
        if cached is None or cached[0] is not dataset or cached[1] != self.repeat_threshold:
            factors = repeat_factors(dataset.image_classes(), self.repeat_threshold)
            rank_zero_info(
                f"repeat-factor sampling (threshold {self.repeat_threshold}): {int((factors > 1).sum())} of "
                f"{len(factors)} training images weighted up, factors {factors.min():.2f}-{factors.max():.2f}"
            )
            self._repeat_factors = cached = (dataset, self.repeat_threshold, factors)
        return RepeatFactorSampler(cached[2], self.order_seed)

    def split_dataset(self, name: str) -> Dataset:
        if name not in self.datasets:
            raise RuntimeError(
                f"{type(self).__name__}: no '{name}' split (have {sorted(self.datasets)}); call setup()"
            )
        return self.datasets[name]

    def _loader(
        self, name: str, sampler: Sampler | None = None, drop_last: bool = False, collate_fn=None
    ) -> DataLoader:
        """A loader of split ``name`` in ``sampler``'s order (None: in order; training always has a sampler,
        :meth:`train_sampler`; under DDP Lightning wraps it, unless it is a ``DistributedSampler`` itself)."""
        return DataLoader(
            self.split_dataset(name),
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            collate_fn=collate_fn or self.collate_fn,
            worker_init_fn=self.worker_init_fn,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        """The training loader, without a last batch of a single image: batch norm cannot train on one image's
        1x1 coarsest map (a 32-px crop through a ResNet, the HPU-Net's coarsest scale) and stopped the run
        with torch's bare "Expected more than 1 value per channel" at the end of the first epoch. Any other
        remainder is kept. Under DDP each rank's share counts (Lightning's sampler pads it to
        ceil(n / ranks)); a ``DistributedSampler`` of one's own (Lightning leaves it) is that share."""
        sampler = self.train_sampler()
        if isinstance(sampler, DistributedSampler):
            per_rank = len(sampler)
        else:
            ranks = self.trainer.world_size if self.trainer is not None else 1
            per_rank = math.ceil(len(sampler) / ranks)
        return self._loader(
            "train", sampler=sampler, drop_last=per_rank > 1 and per_rank % self.batch_size == 1
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", sampler=self._evaluation_sampler("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", sampler=self._evaluation_sampler("test"))

    def _evaluation_sampler(self, name: str) -> Sampler | None:
        """Under DDP, each rank's share of an evaluation split with no item twice. Lightning's own
        DistributedSampler pads the shares to one length with repeated items, which the metrics then counted
        twice (Dice over 6 images of 5, a confusion matrix of 8 of 7); its no-repeat sampler leaves the shares
        one batch apart, which evaluation (no gradient, metrics synced at the epoch's end) allows. A split of
        fewer items than ranks keeps Lightning's sampler: a rank with no item would log nothing, and the others
        would wait for it at the epoch's metric sync."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.world_size == 1 or len(self.split_dataset(name)) < trainer.world_size:
            return None
        from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler

        return UnrepeatedDistributedSampler(
            self.split_dataset(name), num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
        )

    #: a folder (or file) of one's own images for ``predict`` (``--data.predict_path``), in modules that take one
    predict_path: str | None = None

    def running_stage(self) -> str | None:
        """The command the attached trainer runs (``fit``, ``validate``, ``test``, ``predict``; None without one)."""
        trainer = getattr(self, "trainer", None)
        return None if trainer is None else trainer.state.fn

    def predicting_own_images(self) -> bool:
        """Whether this ``predict`` reads ``predict_path`` only (so the labelled data need not exist)."""
        return self.predict_path is not None and self.running_stage() == "predict"

    def predict_dataloader(self) -> DataLoader:
        """The ``predict`` split when the module built one (``--data.predict_path``: your own images), else test."""
        return self._loader("predict" if "predict" in self.datasets else "test")


def _group_digest(group: Hashable) -> int:
    """60 bits of the group name's SHA-1: a non-negative int64, so the digests fit one tensor."""
    return int(hashlib.sha1(str(group).encode()).hexdigest()[:15], 16)


def stable_rank(group: Hashable, seed: int) -> str:
    """The sort key of a seeded split order (:func:`group_split`, the accident clips' ``split_clips``): the
    SHA-1 of ``"<seed>:<group>"``. Python's hash() is salted per process; a digest keeps the split identical
    across runs and machines (the shipped benchmark splits depend on it: do not change it)."""
    return hashlib.sha1(f"{seed}:{group}".encode()).hexdigest()


def check_split_fractions(fractions: Sequence[float], names: Sequence[str] = SPLIT_NAMES) -> None:
    """One non-negative fraction per split, summing to 1 (what :func:`group_split` takes)."""
    if len(fractions) != len(names):
        raise ValueError(
            f"group_split: {len(fractions)} fractions given for {len(names)} splits {list(names)}"
        )
    if not all(f >= 0 for f in fractions) or not abs(sum(fractions) - 1.0) <= 1e-6:  # NaN fails both
        raise ValueError(f"group_split: fractions must be non-negative and sum to 1, got {list(fractions)}")


def group_split(
    groups: Sequence[Hashable],
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    names: Sequence[str] = SPLIT_NAMES,
    verbose: bool = True,
) -> dict[str, list[int]]:
    """Deterministically split item indices so that every group lands in exactly one split.

    ``groups[i]`` is the group (patient id, sequence id, ...) of item ``i``. Groups are ordered by a
    seeded digest and cut by the cumulative fractions, so the split depends only on the group names and the
    seed, not on item order. Returns ``{split_name: [item indices]}`` and prints a breakdown table.
    """
    check_split_fractions(fractions, names)
    if len(groups) == 0:
        raise ValueError("group_split: no items to split (empty group list)")
    # ties (ids that print alike: 1 and "1") by type and repr, not by the set's per-process hash order
    unique = sorted(dict.fromkeys(groups), key=lambda g: (stable_rank(g, seed), type(g).__name__, repr(g)))
    n = len(unique)
    bounds, acc = [], 0.0
    for f in fractions:
        acc += f
        bounds.append(round(acc * n))
    assignment: dict[Hashable, str] = {}
    start = 0
    for name, stop in zip(names, bounds):
        for g in unique[start:stop]:
            assignment[g] = name
        start = stop
    out: dict[str, list[int]] = {name: [] for name in names}
    for i, g in enumerate(groups):
        out[assignment[g]].append(i)
    if verbose:
        rank_zero_info(split_table(out, groups))
    return out


def split_table(split: dict[str, list[int]], groups: Sequence[Hashable]) -> str:
    """Markdown table of items and groups per split (printed so a leak is visible at a glance)."""
    lines = ["| split | groups | items | share |", "|---|---:|---:|---:|"]
    total = sum(len(v) for v in split.values()) or 1
    for name, idx in split.items():
        n_groups = len({groups[i] for i in idx})
        lines.append(f"| {name} | {n_groups} | {len(idx)} | {len(idx) / total:.1%} |")
    return "\n".join(lines)


def segmentation_augmentations(
    flip: bool = True,
    vertical_flip: bool = False,
    rotate_limit: float = 10.0,
    scale_limit: float = 0.1,
    p: float = 0.5,
    seed: int | None = None,
    intensity: float = 0.0,
) -> A.Compose:
    """Geometric augmentation applied identically to an image and all of its masks, after an optional
    intensity step on the image alone.

    Pass extra masks with ``masks=[...]``: albumentations moves every mask with the image.
    Masks are resampled with nearest neighbour, so labels stay binary. ``intensity`` > 0: half of the images
    get ``x * (1 + c) + b`` with ``c`` and ``b`` drawn from ``[-intensity, intensity]``, clipped to [0, 1]
    (``A.RandomBrightnessContrast``; for float images in [0, 1], as windowed CT / scaled MRI slices are).
    It runs before the geometric steps, so the border an affine fills stays 0, as padding is elsewhere.
    """
    if not 0 <= intensity < 1:
        raise ValueError(
            f"segmentation_augmentations: intensity must be in [0, 1) (a share of the range), got {intensity!r}"
        )
    transforms: list = []
    if intensity:
        transforms.append(
            A.RandomBrightnessContrast(brightness_limit=intensity, contrast_limit=intensity, p=0.5)
        )
    if flip:
        transforms.append(A.HorizontalFlip(p=0.5))
    if vertical_flip:
        transforms.append(A.VerticalFlip(p=0.5))
    if rotate_limit or scale_limit:
        transforms.append(
            A.Affine(
                rotate=(-rotate_limit, rotate_limit),
                scale=(1 - scale_limit, 1 + scale_limit),
                border_mode=0,
                fill=0,
                fill_mask=0,
                p=p,
            )
        )
    return A.Compose(transforms, seed=seed)


#: the share of a box's area a crop must leave for the box to be kept (:func:`detection_bbox_params`)
DETECTION_MIN_VISIBILITY = 0.3


def detection_bbox_params(min_visibility: float = DETECTION_MIN_VISIBILITY) -> A.BboxParams:
    """How the detection pipelines carry boxes (pascal_voc, labels in ``labels``), dropping those a crop left
    less than ``min_visibility`` of: one place for :func:`detection_augmentations` and the pipelines built
    around its steps (``domains.driving.detection.data.detection_transforms``)."""
    return A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=min_visibility)


def detection_augmentations(
    min_visibility: float = DETECTION_MIN_VISIBILITY,
    flip: bool = True,
    crop_scale: tuple[float, float] = (0.6, 1.0),
    crop_prob: float = 0.5,
    height: int | None = None,
    width: int | None = None,
    photometric: bool = True,
    seed: int | None = None,
) -> A.Compose:
    """Bounding-box-aware augmentation (pascal_voc boxes, labels in ``labels``).

    ``min_visibility`` drops boxes mostly cut away by a crop, so targets stay right after crops and flips.
    With ``height`` / ``width``, a share ``crop_prob`` of the images is cropped to a ``crop_scale`` share of
    their area and resized to ``(height, width)``: a zoom-in that makes small objects bigger.
    """
    transforms: list = []
    if height and width:
        transforms.append(
            A.RandomResizedCrop(
                size=(height, width),
                scale=crop_scale,
                ratio=(width / height * 0.8, width / height * 1.25),
                p=crop_prob,
            )
        )
    if flip:
        transforms.append(A.HorizontalFlip(p=0.5))
    if photometric:
        transforms.append(A.RandomBrightnessContrast(p=0.3))
    return A.Compose(
        transforms,
        bbox_params=detection_bbox_params(min_visibility),
        seed=seed,
    )
