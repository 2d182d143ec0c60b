"""Files on disk: outputs written whole (a temporary file beside the target, then one rename), and listings
that leave out hidden files (and say how many) and sort frame names as numbers."""

from __future__ import annotations

import contextlib
import contextvars
import csv
import errno
import json
import os
import re
import secrets
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import itemgetter
from pathlib import Path

import filelock
import numpy as np

try:  # a reader's shared lock (:func:`reading_generated`); Windows has none: not waited there
    import fcntl
except ImportError:
    fcntl = None

# the hidden files left out inside an active ``counting_hidden_files`` block (None: none is active)
_hidden_tally: contextvars.ContextVar[list[Path] | None] = contextvars.ContextVar("hidden_tally", default=None)
# the broken links (path, why) left out inside that block
_broken_tally: contextvars.ContextVar[list[tuple[Path, str]] | None] = contextvars.ContextVar(
    "broken_tally", default=None
)


class HiddenFilesWarning(UserWarning):
    """A listing left out hidden files (names starting with a dot, Windows' Thumbs.db and desktop.ini); the count
    and examples are in the message."""


class BrokenLinkWarning(UserWarning):
    """A listing left out symbolic links that lead to nothing (a target that does not exist, a loop); the count,
    and each example with why, are in the message."""


def _new_hidden(folder: str | Path, name: str, suffix: str, make: Callable[[Path], object]) -> Path:
    """A new hidden path in ``folder`` for ``name``, made by ``make`` (which fails where it exists)."""
    for _ in range(100):
        path = Path(folder) / f".{name}.{secrets.token_hex(4)}{suffix}"
        try:
            make(path)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{folder}: no free temporary name for {name} after 100 tries")


def temporary_file(folder: str | Path, name: str, suffix: str = ".tmp") -> Path:
    """A new hidden file in ``folder`` to write ``name`` into before renaming it in place (two processes
    never share one). Created with mode ``0666`` so the kernel applies the umask, as for a plainly created
    file: ``tempfile.mkstemp`` makes it private (``0600``), and the rename would keep that for the output."""
    return _new_hidden(
        folder, name, suffix, lambda path: os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    )


def temporary_folder(folder: str | Path, name: str, suffix: str = ".tmp") -> Path:
    """A new hidden folder in ``folder`` to write ``name`` into before renaming it in place, made with mode
    ``0o777`` so the umask applies as to any folder: ``tempfile.mkdtemp``'s is private (``0o700``), and the
    rename kept that for the output, which a group could then not read."""
    return _new_hidden(folder, name, suffix, Path.mkdir)


#: sets that :func:`written_whole` adds each file it puts in place to (see :func:`recording_writes`)
_recorders: list[set[Path]] = []


@contextlib.contextmanager
def written_whole(path: str | Path) -> Iterator[Path]:
    """A new temporary file beside ``path`` (same suffix, ``.nii.gz`` whole: writers that choose the format by
    it) to write in the block; renamed to ``path`` when the block ends, removed if it fails: a reader, or a run
    stopped mid-write, never finds half a file under the real name."""
    path = Path(path)
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix
    tmp = temporary_file(path.parent, path.name, suffix=suffix or ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
        for recorder in _recorders:
            recorder.add(path.resolve())
    finally:
        tmp.unlink(missing_ok=True)


def recording_writes() -> set[Path]:
    """Start recording the files this process writes through :func:`written_whole` (every output the suite's
    writers make): returns the set they are added to, until :func:`stop_recording`. How a predict run knows
    its own files from a log or a note saved beside them."""
    recorder: set[Path] = set()
    _recorders.append(recorder)
    return recorder


def stop_recording(recorder: set[Path]) -> None:
    _recorders[:] = [r for r in _recorders if r is not recorder]


def write_csv(path: str | Path, columns: Sequence[str], rows: Iterable[dict]) -> None:
    """A CSV of ``rows`` (dicts keyed by ``columns``, a header first) written whole (:func:`written_whole`)."""
    with written_whole(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def score_text(value: float) -> str:
    """A model's score (float32) as the shortest text that reads back as the same float32: a threshold sweep
    re-run on a written file then ties exactly where the model's own scores do (4 decimals merged scores near 1,
    and mTTA recomputed from an accident ``risk.csv`` came out 8 % off the ``test`` figure)."""
    return np.format_float_positional(np.float32(value), unique=True, trim="-")


#: the files Windows' Explorer leaves in picture folders (hidden system files there), by lower-case name
WINDOWS_SYSTEM_FILES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini"})


def is_hidden(path: str | Path, root: str | Path | None = None) -> bool:
    """Whether ``path`` (or a folder between ``root`` and it) is hidden: its name starts with a dot, or it is
    one of Windows' system files. Copies from a Mac put a ``._frame.jpg`` resource fork beside every file, and
    ``.DS_Store`` in every folder; Windows writes ``Thumbs.db`` and ``desktop.ini``. No reader can decode them,
    and they are not the user's data, so listings leave them out."""
    path = Path(path)
    return _hidden(path.relative_to(root).parts if root is not None else (path.name,), path.name)


def _hidden(parts: Sequence[str], name: str) -> bool:
    """:func:`is_hidden` of a path from its ``parts`` below the root and its ``name``: a listing has them as
    strings, and a Path of each entry cost a quarter of a 10,000-file listing."""
    return any(part.startswith(".") for part in parts) or name.lower() in WINDOWS_SYSTEM_FILES


def _warn_hidden(where: str | Path, hidden: list) -> None:
    """One :class:`HiddenFilesWarning` counting the hidden files a reader left out of ``where`` (those of the
    kinds it reads: a ``.DS_Store`` is no image either way), naming the first three: skipped files are always
    counted, never dropped silently."""
    if not hidden:
        return
    names = [_relative_name(p, where) for p in hidden[:3]]
    more = f" and {len(hidden) - 3} more" if len(hidden) > 3 else ""
    warnings.warn(
        f"{where}: {len(hidden)} hidden file{'s' if len(hidden) != 1 else ''} left out ({', '.join(names)}{more}): "
        "names starting with a dot (a Mac copy's ._<name> forks and .DS_Store) and Windows' Thumbs.db and "
        "desktop.ini are not read; rename a file "
        "to read it",
        HiddenFilesWarning,
        stacklevel=3,
    )


def _relative_name(path: str | Path, where: str | Path) -> str:
    """``path`` below ``where`` (``c1/._1.jpg``), or its name where it is not below it."""
    try:
        return str(Path(path).relative_to(where))
    except ValueError:
        return Path(path).name


def count_hidden(where: str | Path, hidden: list[Path]) -> None:
    """Hidden files a listing of ``where`` left out: added to the active :func:`counting_hidden_files` block,
    else warned now (one :class:`HiddenFilesWarning` with the count, naming the first three)."""
    tally = _hidden_tally.get()
    if tally is not None:
        tally.extend(hidden)
    else:
        _warn_hidden(where, hidden)


def broken_link(path: str | Path) -> str | None:
    """Why ``path`` is a symbolic link that leads to nothing (``a link to X, which does not exist``, ``a symlink
    loop``), None for anything else. ``is_file()`` is False for both, so a listing dropped them without a word
    (and ``resolve()`` raised a bare RuntimeError on a loop)."""
    path = Path(path)
    if not path.is_symlink():
        return None
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "a symlink loop"
        target = os.readlink(path)
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            return f"a link to {target}, which does not exist"
        return f"a link to {target}, which cannot be read ({err.strerror})"
    return None


def _broken_list(where: str | Path, broken: list[tuple[Path, str]]) -> str:
    """``N broken link(s) (a.png: why, ...)``: the count, and the first three below ``where`` with why."""
    named = [f"{_relative_name(p, where)}: {why}" for p, why in broken[:3]]
    more = f"; and {len(broken) - 3} more" if len(broken) > 3 else ""
    return f"{len(broken)} broken link{'s' if len(broken) != 1 else ''} ({'; '.join(named)}{more})"


def _warn_broken(where: str | Path, broken: list[tuple[Path, str]]) -> None:
    """One :class:`BrokenLinkWarning` naming the broken links a listing of ``where`` left out, with why."""
    if broken:
        warnings.warn(
            f"{where}: {_broken_list(where, broken)} left out: fix or remove a link to read its file",
            BrokenLinkWarning,
            stacklevel=3,
        )


def count_broken(where: str | Path, broken: list[tuple[Path, str]]) -> None:
    """Broken links (``(path, why)``, :func:`broken_link`) a listing of ``where`` left out: added to the active
    :func:`counting_hidden_files` block, else warned now (one :class:`BrokenLinkWarning`)."""
    tally = _broken_tally.get()
    if tally is not None:
        tally.extend(broken)
    else:
        _warn_broken(where, broken)


@contextlib.contextmanager
def counting_hidden_files(where: str | Path) -> Iterator[None]:
    """Listings inside the block add their hidden files (and broken links) to one count, warned once at its end:
    a reader that lists thousands of clip or patient folders says one line, not one per folder, and a folder
    listed twice counts its files once. Blocks nest (the outer one counts); a block left by an error says
    nothing."""
    if _hidden_tally.get() is not None:
        yield
        return
    tally: list[Path] = []
    broken: list[tuple[Path, str]] = []
    token, broken_token = _hidden_tally.set(tally), _broken_tally.set(broken)
    try:
        yield
    finally:
        _hidden_tally.reset(token)
        _broken_tally.reset(broken_token)
    _warn_hidden(where, list(dict.fromkeys(tally)))
    _warn_broken(where, list(dict.fromkeys(broken)))


def visible_entries(folder: str | Path) -> list[Path]:
    """The files and folders directly in ``folder``, sorted, hidden ones (:func:`is_hidden`) and broken links
    (:func:`broken_link`) left out and counted (:func:`counting_hidden_files`). One ``os.scandir``: the
    listing says which entries are links, so only those are looked at (an lstat of every entry and pathlib's
    parsing made most of the 0.7 s a 10,000-crop ImageFolder took to list)."""
    folder = Path(folder)
    with os.scandir(folder) as listing:
        named = [(entry.name, entry.is_symlink()) for entry in listing]
    named.sort(key=lambda entry: os.path.normcase(entry[0]))  # by name as Paths sort
    hidden, broken, kept = [], [], []
    for name, link in named:
        path = folder / name
        if is_hidden(name):  # the name alone: a Path of many parts costs twice as much to look at
            hidden.append(path)
        elif link and (why := broken_link(path)):
            broken.append((path, why))
        else:
            kept.append(path)
    count_hidden(folder, hidden)
    count_broken(folder, broken)
    return kept


def _entries(folder: Path, recursive: bool) -> list[tuple[Path, os.DirEntry, tuple[str, ...]]]:
    """The entries in ``folder`` (below it, with ``recursive``), each with its folder and the names of the
    folders between ``folder`` and it. One ``os.scandir`` per folder, whose entries say which are files and
    links without a stat each (``iterdir`` and ``is_file`` made one per entry, ``rglob`` listed each folder
    twice). Recursion as ``rglob``'s: not into linked folders; nothing for a ``folder`` that is none, and
    folders below it that cannot be read are passed over."""
    if not recursive:
        with os.scandir(folder) as listing:
            return [(folder, entry, ()) for entry in listing]
    found: list[tuple[Path, os.DirEntry, tuple[str, ...]]] = []
    pending: list[tuple[Path, tuple[str, ...]]] = [(folder, ())] if folder.is_dir() else []
    while pending:
        where, between = pending.pop()
        try:
            with os.scandir(where) as listing:
                entries = list(listing)
        except PermissionError:
            continue
        for entry in entries:
            found.append((where, entry, between))
            if entry.is_dir(follow_symlinks=False):
                pending.append((where / entry.name, (*between, entry.name)))
    return found


def _listing(
    folder: Path, suffixes: tuple[str, ...] | None, recursive: bool, skip: set[Path] | frozenset
) -> tuple[list[Path], list[Path], list[tuple[Path, str]]]:
    """What :func:`visible_files` finds, sorted by path: the files it keeps, the hidden ones and the broken
    links (``(path, why)``) of ``suffixes``, neither hidden nor in ``skip``. Sorted by the names below
    ``folder`` (as Paths sort): comparing the Paths themselves took a third of a 10,000-file listing."""
    kept, hidden, broken = [], [], []
    for parent, entry, between in _entries(folder, recursive):
        path = parent / entry.name  # a Path of the whole entry.path parses every part again
        if suffixes is not None and path.suffix.lower() not in suffixes:
            continue
        names = (*between, entry.name)
        out_of_sight = _hidden(names, entry.name)
        key = tuple(map(os.path.normcase, names))
        link = entry.is_symlink()  # a link's target is looked at (rarely there): a file, broken, or neither
        if path.is_file() if link else entry.is_file(follow_symlinks=False):
            if not (skip and path.resolve() in skip):
                (hidden if out_of_sight else kept).append((key, path))
        elif link and not out_of_sight and (why := broken_link(path)):
            broken.append((key, (path, why)))
    return tuple([item for _, item in sorted(found, key=itemgetter(0))] for found in (kept, hidden, broken))


def visible_files(
    folder: str | Path, suffixes: tuple[str, ...] | None = None, recursive: bool = False
) -> list[Path]:
    """The files in ``folder`` (below it, with ``recursive``) whose suffix is one of ``suffixes`` in any case
    (``.JPG``, ``.Mp4``; None: any), sorted by path; hidden ones (:func:`is_hidden`) are left out and counted
    in one :class:`HiddenFilesWarning` per listing, or per :func:`counting_hidden_files` block, and broken
    links (:func:`broken_link`: a dangling link, a loop) in one :class:`BrokenLinkWarning` naming each with
    why."""
    folder = Path(folder)
    kept, hidden, broken = _listing(folder, suffixes, recursive, frozenset())
    count_hidden(folder, hidden)
    count_broken(folder, broken)
    return kept


def check_output_folder(path: str | Path, option: str) -> None:
    """Refuse an output folder (``option``, e.g. ``--model.predict_dir``) that is an existing file or a broken
    link, or lies below one, before anything is written: the writer failed after its first batch, with a
    NotADirectoryError on ``<file>/data`` that named no option. A folder that does not exist yet is fine."""
    path = Path(path)
    for folder in (path, *path.parents):
        if folder.is_dir():
            return
        if folder.exists() or folder.is_symlink():
            where = "" if folder == path else f" lies below {folder}, which"
            kind = broken_link(folder) or "a file"
            raise NotADirectoryError(
                f"{option} {path}:{where} is {kind}, not a folder: give a folder (it is made if missing)"
            )


class UnfinishedGenerationError(ValueError):
    """A data folder a generator started writing but never finished: its stamp is there, its completion marker
    (written last) is not. Read as it is, the few items written before the run stopped would be trained on. A
    ValueError: the command lines report it in one line, as other bad input."""


class TornGenerationWarning(UserWarning):
    """A data folder a generator marked finished whose files are not all there (or more are): a set torn by
    two runs generating it at once (before :func:`generation_lock`), or files deleted since. Reused without a
    word, it failed far from the cause (1,325 images against 1,500 label files). :func:`ensure_generated`
    generates such a default set again; one given as a path is read, after this warning
    (:func:`check_generation_finished`)."""


def listing_shortfall(root: str | Path, folder: str, suffix: str | None, count: int) -> str | None:
    """What ``root/folder`` lacks (or holds beyond) the ``count`` files ending in ``suffix`` (None:
    subfolders) a generator wrote there, from one listing of it (no hashing, no stat of each file: it runs at
    every fit start); None when it holds exactly that many, or none are due and the folder is not there.
    Hidden names are not counted, as readers leave them out."""
    what = "folders" if suffix is None else f"{suffix} files"
    try:
        with os.scandir(Path(root) / folder) as entries:
            found = sum(
                1
                for entry in entries
                if not entry.name.startswith(".")
                and (entry.is_dir() if suffix is None else entry.name.lower().endswith(suffix))
            )
    except (FileNotFoundError, NotADirectoryError):
        return f"{folder} missing ({count:,} {what} expected)" if count else None
    return None if found == count else f"{folder} holds {found:,} of {count:,} {what}"


def torn_generation_note(root: str | Path, problems: Sequence[str], marker: str = ".complete") -> str:
    """``<root> is marked finished (...) but <the first three problems>``: what a
    :class:`TornGenerationWarning` says of a set whose :func:`listing_shortfall` found something."""
    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    return (
        f"{root} is marked finished (its {marker} marker is there) but its files are not all there: {shown} "
        "(torn by two runs generating it at once, or files deleted since)"
    )


def check_generation_finished(
    path: str | Path,
    option: str,
    started: Callable[[Path], bool],
    describe: Callable[[Path], str],
    marker: str = ".complete",
    above: int = 0,
    torn: Callable[[Path], list[str]] | None = None,
    redo: Callable[[Path], str] | None = None,
) -> None:
    """Refuse ``path`` (given as ``option``, e.g. ``--data.data_path``) when it, or one of the ``above`` folders
    over it, is a generator's unfinished output: ``started(folder)`` (the generator's stamp) but no ``marker``.
    ``describe(folder)`` says what it holds and the command that finishes it. The default paths never need this
    (their generator redoes an unfinished set); a folder without the stamp (real data) always passes. With
    ``torn``, a folder with the marker whose ``torn(folder)`` (:func:`listing_shortfall` problems) finds files
    missing is warned of (:class:`TornGenerationWarning`, ending with ``redo(folder)``, the command), not
    refused: one's own edit of a generated set (a reader's masks left out, a frame removed) is read as it is,
    and a reader names each file it misses. Checked holding the shared side of each folder's lock
    (:func:`reading_generated`): a ``--force`` run generating it now is waited for, not called interrupted;
    inside :func:`holding_generated_sets`, held on to that block's end (the reader's listing)."""
    path = Path(path)
    folders = [path, *path.parents][: above + 1]
    with _checking(*folders) as keep:
        for folder in folders:
            finished = (folder / marker).is_file()
            if finished and torn is not None and (problems := torn(folder)):
                warnings.warn(
                    f"{option} {path}: {torn_generation_note(folder, problems, marker)}; read as it is: if "
                    f"that is not meant, {redo(folder) if redo else 'generate it again'}, or delete {folder}",
                    TornGenerationWarning,
                    stacklevel=3,
                )
            if not started(folder):
                continue
            if finished:
                break
            raise UnfinishedGenerationError(
                f"{option} {path}: {'' if folder == path else 'inside '}a synthetic data set whose generation "
                f"was interrupted ({folder} has the generator's stamp but no {marker} marker, which is written "
                f"last): {describe(folder)}, or delete {folder}. With {option} null the default synthetic set is "
                "generated by itself"
            )
        keep()


#: seconds a run reading a generated set waits for a run generating it, then gives up (a default set takes
#: minutes; a run that hangs holding the lock must not stall its readers for ever)
GENERATION_WAIT_S = 3600.0


def _lock_path(root: str | Path) -> Path:
    """The lock file of the generated folder ``root``, ``<parent>/.<name>.lock``: beside the folder, so its own
    checks never see it, and one file for every spelling of the folder. Resolved only where ``root`` is a link
    or has no name of its own (``.``, ``..``): the kernel resolves links and ``..`` in the parent to the same
    folder, and ``resolve()`` (an lstat per part, 65 us) cost a reader's check (150-350 us) half as much again."""
    path = Path(root)
    if path.name in ("", "..") or path.is_symlink():
        path = path.resolve()
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def reading_generated(*roots: str | Path, say: Callable[[str], object] = print) -> Iterator[None]:
    """Hold the shared side of each of ``roots``' :func:`generation_lock` in the block, to check a generated
    set: a ``--force`` run deletes the marker, then the files, so a reader went on to call the set interrupted,
    or read half of it; now it waits for that run (saying so once after a second; a TimeoutError naming the
    folder and the lock after :data:`GENERATION_WAIT_S`), and a generation waits for the check to end. Only
    where the lock file is there, opened read-only: no lock file is made beside a finished set, one in a
    read-only folder is still read, and a folder never generated here has no run to wait for."""
    held = []
    try:
        for root in roots:
            lock_path = _lock_path(root)
            try:
                held.append(os.open(lock_path, os.O_RDONLY))
            except OSError:  # none there, or not readable
                continue
            _lock_shared(held[-1], root, lock_path, say)
        yield
    finally:
        for fd in held:
            os.close(fd)  # releases its lock


def _lock_shared(fd: int, root: str | Path, lock_path: Path, say: Callable[[str], object]) -> None:
    """A shared ``flock`` on ``fd`` (the lock file of :func:`generation_lock`, which filelock holds with an
    exclusive ``flock``), waited for as :func:`reading_generated` says. By hand: filelock's FileLock has no
    shared side, and its ReadWriteLock is an SQLite database, another file, which readers would have to write."""
    if fcntl is None:
        return
    start, said = time.monotonic(), False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        except OSError:  # no flock on this file system (filelock falls back to a soft lock there): not waited
            return
        waited = time.monotonic() - start
        if waited >= GENERATION_WAIT_S:
            raise TimeoutError(
                f"{root}: another run has been generating it for over {GENERATION_WAIT_S:g} s (its lock "
                f"{lock_path} is held): let it finish, or stop it (a run that hangs keeps the lock) and run again"
            )
        if waited >= 1 and not said:
            say(f"waiting for another run generating {root} (lock {lock_path})")
            said = True
        time.sleep(0.05)


#: inside :func:`holding_generated_sets`: the shared locks (:func:`reading_generated`) of the generated sets
#: checked there, by lock file (real path), held to the block's end (None: no such block is active)
_held_sets: contextvars.ContextVar[dict[str, contextlib.ExitStack] | None] = contextvars.ContextVar(
    "held_sets", default=None
)


def _held_key(root: str | Path) -> str:
    """``root``'s lock file as one string for every spelling of it (relative, through a link)."""
    return os.path.realpath(_lock_path(root))


@contextlib.contextmanager
def holding_generated_sets() -> Iterator[None]:
    """Keep the shared side of the lock of every generated set checked in the block (:func:`ensure_generated`,
    :func:`check_generation_finished`) held until the block ends, not only during the check. A data module
    checked a set, then listed its files and read its index files (building its datasets) outside the lock:
    a ``--force`` run starting between the two gave it a torn listing. Wrap a setup's check *and* listing,
    not the training: a regeneration waits for the block (and says so), a run training for hours must not
    hold it. Blocks nest (the outer one holds); the locks go when it ends, by an error too."""
    if _held_sets.get() is not None:
        yield
        return
    held: dict[str, contextlib.ExitStack] = {}
    token = _held_sets.set(held)
    try:
        yield
    finally:
        _held_sets.reset(token)
        for lock in held.values():
            lock.close()


@contextlib.contextmanager
def _checking(*roots: str | Path, say: Callable[[str], object] = print) -> Iterator[Callable[[], None]]:
    """:func:`reading_generated` of ``roots`` over a check; yields ``keep``, to call once the check passed:
    inside :func:`holding_generated_sets` the locks then stay held to that block's end. Roots the block holds
    already are not locked again."""
    held = _held_sets.get()
    locks: dict[str, contextlib.ExitStack] = {}
    try:
        for root in roots:
            key = os.fspath(root) if held is None else _held_key(root)
            if key not in locks and (held is None or key not in held):
                locks[key] = contextlib.ExitStack()
                locks[key].enter_context(reading_generated(root, say=say))

        def keep() -> None:
            if held is not None:
                held.update(locks)
                locks.clear()

        yield keep
    finally:
        for lock in locks.values():
            lock.close()


def _let_go(root: str | Path) -> None:
    """Release the shared lock of ``root`` that the active :func:`holding_generated_sets` block holds, if any:
    generating it again in this process would otherwise wait for this process for ever (a set found whole
    earlier in the block, then not: files removed by hand)."""
    held = _held_sets.get()
    if held is not None and (lock := held.pop(_held_key(root), None)) is not None:
        lock.close()


def generated_set_of(path: str | Path) -> Path | None:
    """The generated set ``path`` lies in (the nearest folder over it with a lock file beside it,
    :func:`_lock_path`: only sets generated here have one), None for any other file. For the error of a read
    that finds a listed file gone (:func:`vanished_note`)."""
    for folder in Path(os.path.abspath(path)).parents:
        if _lock_path(folder).is_file():
            return folder
    return None


def vanished_note(path: str | Path) -> str:
    """What a reader adds to the error of a file it listed at setup and cannot find now: when ``path`` is in a
    generated set (:func:`generated_set_of`), that a run is generating that set again now (its lock is held
    exclusively) or did since this run listed it (``--force`` deletes the files and writes them again), and
    the way out; "" for other files. Only looked at once a read failed: nothing is paid per item."""
    root = generated_set_of(path)
    if root is None:
        return ""
    lock_path = _lock_path(root)
    if _generating_now(lock_path):
        what = f"which a run is generating again now (its lock {lock_path} is held)"
    else:
        what = "which was generated again (--force) or changed since this run listed it"
    return (
        f"; it is in the generated set {root}, {what}: a set a run reads must not be regenerated meanwhile; "
        "run this again once the generation has finished"
    )


def _generating_now(lock_path: Path) -> bool:
    """Whether a run holds ``lock_path`` (a :func:`generation_lock`) exclusively now: no shared ``flock`` is
    granted (False where that cannot be told: no fcntl, no flock on the file system)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # releases the shared lock, if it was granted
    return False


@contextlib.contextmanager
def generation_lock(root: str | Path, say: Callable[[str], object] = print) -> Iterator[Path]:
    """Hold the inter-process lock of the generated data folder ``root`` in the block, exclusively (yields the
    lock file, :func:`_lock_path`, left there; readers hold it shared, :func:`reading_generated`). Two first
    runs in one working directory (a SLURM array, two terminals) deleted each other's files and marked half a
    set finished. A generator takes it around its "finished? else write it" decision and re-checks once it
    holds it: the run that waited (saying so once through ``say``) then reuses the set the other one wrote.
    Check first under :func:`reading_generated`: runs reusing a finished set never wait on each other. A
    parent that cannot be written raises a PermissionError naming ``root`` (filelock's own named only the
    lock file, in a traceback)."""
    lock_path = _lock_path(root)
    lock = filelock.FileLock(lock_path)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            say(f"waiting for another run generating {root} (lock {lock_path})")
            lock.acquire()
    except OSError as err:
        if not isinstance(err, PermissionError) and err.errno != errno.EROFS:
            raise
        raise PermissionError(
            f"{root}: cannot generate the data set there: its lock {lock_path.name} cannot be written in "
            f"{lock_path.parent} ({err.strerror}): give a folder you can write to, or generate the set where "
            "you can and copy it here (a finished set is only read, never locked)"
        ) from None
    try:
        yield lock_path
    finally:
        lock.release()


def ensure_generated(
    root: str | Path,
    finished: Callable[[Path], bool],
    torn: Callable[[Path], list[str]],
    generate: Callable[[Path], Path],
    force: bool = False,
    say: Callable[[str], object] = print,
) -> Path:
    """A generated data set at ``root``, written by ``generate(root)`` unless ``finished(root)`` (its marker
    holds the settings wanted) and whole (``torn(root)``, cheap listings, finds nothing). Generation, forced
    or not, holds :func:`generation_lock` (a ``--force`` run took none, and tore the set another run was
    writing), and the reuse is checked again once it is held: a run that waited reuses what the other one
    wrote. A finished set is checked under the lock's shared side only (:func:`reading_generated`: it waits
    for a run generating it, and a read-only one keeps working). A set marked finished but torn is generated
    again, said in a :class:`TornGenerationWarning`; the generator itself refuses a folder that is not its
    own. Inside :func:`holding_generated_sets` the set is returned with its shared lock held to that block's
    end: one just generated is checked again under it (a ``--force`` run may start in between)."""
    root = Path(root)
    for _ in range(_GENERATION_TRIES):
        if not force:
            with _checking(root, say=say) as keep:
                if finished(root) and not torn(root):
                    keep()
                    return root
        _let_go(root)
        with generation_lock(root, say):
            done = not force and finished(root)
            if done and (problems := torn(root)):
                warnings.warn(
                    f"{torn_generation_note(root, problems)}: generating it again",
                    TornGenerationWarning,
                    stacklevel=3,
                )
                done = False
            made = root if done else generate(root)  # done: another run finished it while this one waited
        if _held_sets.get() is None:
            return made
        force = False  # checked again, and held, under the shared side
    raise RuntimeError(
        f"{root}: generated {_GENERATION_TRIES} times, and each time unfinished or torn again before it could be "
        "read (other runs generating it with --force meanwhile?): run this again once they have finished"
    )


#: how often :func:`ensure_generated`, inside :func:`holding_generated_sets`, generates a set that other runs
#: keep regenerating before it can take its shared lock
_GENERATION_TRIES = 3


#: the list of files a predict run wrote into its ``predict_dir`` (:class:`shared.prediction_set.PredictionSet`)
PREDICTIONS_MANIFEST = ".predictions.json"


def earlier_predictions(root: str | Path) -> set[Path]:
    """The files earlier predict runs of the suite wrote below ``root`` (each run's ``predict_dir`` lists them in
    its :data:`PREDICTIONS_MANIFEST`, counted too), resolved: a folder of one's images holding a ``predict_dir`` would
    otherwise feed its drawn overlays back in as images on the next run."""
    found: set[Path] = set()
    for manifest in Path(root).rglob(PREDICTIONS_MANIFEST):
        try:
            listed = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(listed, list):  # files still there, below the manifest's folder (a "../x" hides nothing)
            folder = manifest.parent.resolve()
            paths = {(folder / rel).resolve() for rel in listed if isinstance(rel, str)}
            found |= {p for p in paths if folder in p.parents and p.is_file()}
            found.add(manifest.resolve())
    return found


def visible_inputs(
    root: str | Path, suffixes: tuple[str, ...] | None, option: str, category: type[Warning]
) -> list[Path]:
    """The files below ``root`` a predict run reads (:func:`visible_files`, recursive), less those an earlier
    predict run wrote there (:func:`earlier_predictions`: a ``predict_dir`` inside the input folder), which are
    counted in one ``category`` warning naming ``option``, as are broken links (:func:`broken_link`), each
    named with why: a dangling link among one's images was left out of the count without a word."""
    ours = earlier_predictions(root)
    files, hidden, broken = _listing(Path(root), suffixes, True, ours)
    count_hidden(root, hidden)
    if broken:
        warnings.warn(
            f"{option} {root}: {_broken_list(root, broken)} not read: fix or remove a link to read its file",
            category,
            stacklevel=3,
        )
    if listed := sum(p.name != PREDICTIONS_MANIFEST for p in ours):
        warnings.warn(
            f"{option} {root}: {listed} file(s) an earlier predict run wrote there (listed in its "
            f"{PREDICTIONS_MANIFEST}) are not read as input",
            category,
            stacklevel=3,
        )
    return files


def distinct_names(
    paths: Sequence[Path], root: Path | None = None, name: Callable[[Path], str] = lambda path: path.stem
) -> list[str]:
    """``name(path)`` (the stem) of each image, or, where that repeats (``drive_a/000000.png``,
    ``drive_b/000000.png``: dashcam drives), the path below ``root`` (default: the images' common folder) joined
    by ``__`` (``drive_a__000000``). Stems differing only by case repeat too: ``Road.*`` and ``road.*`` are one file
    on macOS and Windows disks. Names can still repeat (``a.png`` beside ``a.jpg``): callers refuse that, also
    comparing ``casefold()``-ed."""
    counts = Counter(name(path).casefold() for path in set(paths))  # one file listed twice is one image
    if root is None and any(count > 1 for count in counts.values()):
        root = Path(os.path.commonpath([os.path.abspath(path.parent) for path in paths]))

    def below(path: Path) -> tuple[str, ...]:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).parent.parts

    return [name(path) if counts[name(path).casefold()] == 1 else "__".join((*below(path), name(path))) for path in paths]


def natural_key(name: str) -> list:
    """Sort key putting ``frame_2.jpg`` before ``frame_10.jpg``: digit runs compare as numbers (a plain sort
    puts 10 before 2, and frames unpadded in their names would play out of order)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]
