"""The top-level ``--help`` of each domain's command, answered without importing torch or Lightning.

``python -m domains.<domain> --help`` only lists the sub-commands; building the LightningCLI parser for it
means importing torch, torchvision and Lightning (5-8 s on 2 cores). ``fit --help`` and the other sub-commands'
help still come from the real parser, since they list every option of the task and data module.
"""

from __future__ import annotations

import difflib
import logging
import os
import pickle
import re
import shutil
import sys
import textwrap
import traceback
import warnings
from contextlib import contextmanager
from importlib import import_module
from pathlib import Path

from shared.allocator import keep_freed_memory

#: what each sub-command does, in the suite's words (Lightning's own help cuts its docstrings mid-sentence)
SUBCOMMAND_HELP = {
    "fit": "train (and validate) the model; checkpoints: best on the domain's metric + last.ckpt",
    "validate": "run the validation split through a model (--ckpt_path FILE|best|last)",
    "test": "compute the test metrics of a model (--ckpt_path FILE|best|last)",
    "predict": "write predictions for the data module's test / predict images (--ckpt_path ...)",
}


class ConfigError(ValueError):
    """A config file or value the parser let through but the run cannot use; the message names file or key.
    Here, not in :mod:`shared.cli`, so that modules :mod:`shared.cli` imports (:mod:`shared.prediction_set`) can
    raise it; ``shared.cli.ConfigError`` is the same class."""


#: how a stopped fit goes on: said when a SIGTERM or a Ctrl-C stopped one (its state is saved as last.ckpt)
RESUME_HINT = "a fit resumes with `fit --ckpt_path last`"


def predicted_split_note(datamodule, own: str) -> str:
    """What a ``predict`` closing line adds where the run read the test split, not the user's own files:
    `` (the test split's; --data.predict_path for your own <own>)``; "" where it read ``--data.predict_path``
    or no suite data module (``predicting_own_images``) says otherwise."""
    if getattr(datamodule, "predicting_own_images", lambda: True)():
        return ""
    return f" (the test split's; --data.predict_path for your own {own})"


def metric_mode(name: str | None) -> str | None:
    """Which way a metric named ``name`` is better when nothing says so: ``"min"`` for a loss (``val/loss``,
    ``val/loss_epoch``), else None (unknown: accuracy, mAP and IoU are better high, GED and ECE low)."""
    return "min" if name and "loss" in name else None


def top_level_help(prog: str, description: str) -> str:
    """The text ``prog --help`` prints: usage, the description (with its example) and the sub-commands."""
    width = min(100, shutil.get_terminal_size((100, 24)).columns) - 2
    lines = [f"usage: {prog} [-h] [-c CONFIG] {{{','.join(SUBCOMMAND_HELP)}}} ...", ""]
    lines += textwrap.wrap(description, width) + [
        "",
        "subcommands (add --help after one for all its options):",
    ]
    for name, text in SUBCOMMAND_HELP.items():
        lines += textwrap.wrap(text, width, initial_indent=f"  {name:<10}", subsequent_indent=" " * 12)
    return "\n".join(lines) + "\n"


def answer_top_level_help(argv: list[str], prog: str, description: str) -> bool:
    """Print :func:`top_level_help` and return True when ``argv`` asks for nothing but the top-level help."""
    if list(argv) in (["--help"], ["-h"]):
        print(top_level_help(prog, description), end="")
        return True
    return False


def _load(path: str):
    module, name = path.split(":")
    return getattr(import_module(module), name)


def run_domain(
    args, *, prog: str, description: str, task: str, data: str, domain: str, monitor: str, **cli_kwargs
):
    """A domain's entry point: the top-level help at once, else the suite's LightningCLI on ``task`` / ``data``
    (``"module:Class"``, imported only now). ``cli_kwargs`` go to :func:`shared.cli.run_cli`."""
    argv = sys.argv[1:] if args is None else args
    if answer_top_level_help(argv, prog, description):
        raise SystemExit(0)
    from shared.cli import SuggestingArgumentParser, run_cli

    cli_kwargs.setdefault("parser_class", SuggestingArgumentParser)
    return run_cli(
        _load(task), _load(data), domain=domain, monitor=monitor, args=args, description=description, prog=prog,
        **cli_kwargs,
    )  # fmt: skip


def suggest_options(unknown: list[str], known: list[str]) -> list[str]:
    """``did you mean --data.batch_size?`` for each option among ``unknown`` (a parser's unrecognized arguments,
    values included) close to one of ``known`` (:func:`difflib.get_close_matches`)."""
    lines = []
    for arg in unknown:
        name = arg.split("=", 1)[0]
        if name.startswith("--") and (close := difflib.get_close_matches(name, known, n=1, cutoff=0.75)):
            lines.append(f"{name}: did you mean {close[0]}?")
    return lines


def domain_main(
    package: str, description: str, task: str, data: str, monitor: str, monitor_mode: str = "max"
):
    """The ``main(args=None)`` of ``python -m <package>`` (``args``: a list, for tests): :func:`run_domain` with
    the program, the domain's name (``domains.driving.detection`` -> ``driving_detection``) and a leading ``.`` in
    ``task`` / ``data`` all read from ``package``, so each ``__main__.py`` states only what differs (the
    description gets the pointer to ``fit --help``)."""
    spec = {
        "prog": f"python -m {package}",
        "description": f"{description.rstrip()} Every option: python -m {package} fit --help.",
        "domain": package.removeprefix("domains.").replace(".", "_"),
        "monitor": monitor,
        "monitor_mode": monitor_mode,
    }
    for key, path in (("task", task), ("data", data)):
        spec[key] = f"{package}{path}" if path.startswith(".") else path

    def main(args=None):
        """The suite's LightningCLI for this task; ``--help`` alone imports nothing heavy. Run as a program
        (``args`` None), the process keeps freed memory for reuse (:mod:`shared.allocator`) and bad input ends
        in one line (:func:`report_input_errors`); called with ``args`` (tests, scripts), errors are raised."""
        if args is not None:
            return run_domain(args, **spec)
        keep_freed_memory()
        with report_input_errors():
            return run_domain(args, **spec)

    return main


class _DropLightningAdvert(logging.Filter):
    """Lightning's "Tip: For seamless cloud logging ... litlogger" line, printed by every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "seamless cloud logging" not in record.getMessage()


def quiet_library_notes() -> None:
    """Silence two lines every run printed that concern no user and read as trouble to a newcomer: Lightning's
    own use of a torch API torch deprecated (``isinstance(treespec, LeafSpec)``) and its cloud-logger advert."""
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropLightningAdvert) for f in logger.filters):
        logger.addFilter(_DropLightningAdvert())


_SUITE_PACKAGES = ("shared", "domains", "apps", "benchmarks")
#: the folder holding the suite's packages: the repository's root, or site-packages once installed
SUITE_ROOT = Path(__file__).resolve().parents[1]
_python_formatwarning = warnings.formatwarning


def suite_file(path: str | Path, option: str) -> Path | None:
    """The suite's own copy of a relative ``path`` that is not under the working directory, said in one info
    line naming ``option`` (``-c``, ``weight file``); None otherwise. The README's commands and the
    shipped configs name the suite's files from the repository's root (``domains/medical/configs/quick.yaml``,
    ``apps/weights/driving_detection.safetensors``): run from another folder, or installed as a package, they
    were not found. A path found here, absolute, leading up (``..``) or not found there either is left to the
    caller."""
    path = Path(path)
    if path.is_absolute() or ".." in path.parts or path.exists():
        return None
    found = SUITE_ROOT / path
    if not found.is_file():
        return None
    from pytorch_lightning.utilities import rank_zero_info  # only now: this module imports no Lightning

    rank_zero_info(
        f"{option} {path}: not in the working directory {Path.cwd()}; the suite's own {found} is read"
    )
    return found


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """The suite's own warnings are written for the user (they name the file or option): shown as one
    ``LabelWarning: <message>`` line, without the suite's source file, line number and source line that Python
    puts around them. Warnings of other libraries keep Python's format."""
    path = Path(filename).resolve()
    ours = category.__module__.split(".")[0] in _SUITE_PACKAGES or (
        SUITE_ROOT in path.parents and path.relative_to(SUITE_ROOT).parts[0] in _SUITE_PACKAGES
    )
    if ours and issubclass(category, UserWarning):
        return f"{category.__name__}: {message}\n"
    return _python_formatwarning(message, category, filename, lineno, line)


@contextmanager
def _clear_of_progress_bars(file=None, nolock: bool = False):
    """The block's writes to ``file`` (stderr) on lines of their own, clear of the progress bars on screen:
    tqdm's own :meth:`~tqdm.std.tqdm.external_write_mode` (what ``tqdm.write`` does) blanks the open bars'
    lines first and redraws them after (Lightning's bars are tqdm's, on stdout; both streams share a terminal).
    Without it a warning or ``error:`` line written while a bar was drawn landed on the bar's line. ``nolock``:
    in a forked loader worker, whose copy of tqdm's lock may have been taken at the fork. tqdm is imported
    only here: ``--help`` loads none of it."""
    from tqdm import tqdm

    with tqdm.external_write_mode(file=file if file is not None else sys.stderr, nolock=nolock):
        yield


def _showwarning_clear_of_bars(shown):
    """``warnings.showwarning`` as ``shown`` (the one in place: Python's, or a test's record hook), its line
    written clear of the progress bars (:func:`_clear_of_progress_bars`); filtering and format unchanged. A
    loader worker (forked, so another process) does so with its copies of the bars, as drawn at the fork; the
    main process's next update draws the bar as it is."""
    process = os.getpid()

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if "tqdm" not in sys.modules:  # no bar was ever drawn (and --help loads no tqdm)
            return shown(message, category, filename, lineno, file, line)
        with _clear_of_progress_bars(file, nolock=os.getpid() != process):
            return shown(message, category, filename, lineno, file, line)

    return showwarning


def _stream_emit_clear_of_bars(emit):
    """``logging.StreamHandler.emit`` as ``emit``, a record written to the terminal (stdout or stderr) clear of
    the progress bars (:func:`_clear_of_progress_bars`): Lightning's info lines ("`Trainer.fit` stopped: ...")
    and the suite's notes (its ``rank_zero_info``) landed on the bar's line as warnings did. Patched on the
    class for the command's length: Lightning adds its handler when it is imported, after the command began.
    Records to files pass straight through."""
    process = os.getpid()

    def emit_clear_of_bars(self, record):
        if "tqdm" not in sys.modules or self.stream not in (sys.stdout, sys.stderr):
            return emit(self, record)
        with _clear_of_progress_bars(self.stream, nolock=os.getpid() != process):
            return emit(self, record)

    return emit_clear_of_bars


def _close_progress_bars() -> None:
    """End the open tqdm bars on their own line (a run stopped by an error leaves Lightning's drawn, no newline
    after), so the ``error:`` lines start on a fresh line and are the command's last."""
    if "tqdm" not in sys.modules:  # no bar was ever drawn
        return
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


@contextmanager
def report_input_errors():
    """How a command line speaks to its user. Bad input (a missing file, a malformed label line, a checkpoint of
    another task, a setting Lightning refuses) ends the command with ``error: <type>: <message>`` on stderr and
    exit status 1, not a 30-line traceback whose last line is the message. The suite's errors name the file,
    line or option themselves. Other exceptions (bugs) keep their traceback; ``SUITE_TRACEBACK=1`` keeps it for
    all. The suite's own warnings print as one line each, and two library notes no user needs are silenced
    (:func:`quiet_library_notes`), on a line of their own beside a progress bar (:func:`_clear_of_progress_bars`;
    the info lines logged to the terminal and the ``error:`` line too, the latter after the bars are closed)."""
    before, warnings.formatwarning = warnings.formatwarning, _format_warning
    shown, stream_emit = warnings.showwarning, logging.StreamHandler.emit
    warnings.showwarning = _showwarning_clear_of_bars(shown)
    logging.StreamHandler.emit = _stream_emit_clear_of_bars(stream_emit)
    quiet_library_notes()
    try:
        yield
    except Exception as err:
        if os.environ.get("SUITE_TRACEBACK") == "1" or not _is_input_error(err):
            raise
        _close_progress_bars()
        print(f"error: {type(err).__name__}: {_own_message(err)}", file=sys.stderr)
        print(f"({_raised_at(err)}SUITE_TRACEBACK=1 shows the whole traceback)", file=sys.stderr)
        raise SystemExit(1) from None
    except SystemExit as stop:
        # Lightning ends a run that got SIGTERM (docker stop, a scheduler's preemption) with a SystemExit of no
        # code, so the command exited 0 and `fit && test` went on as if it had finished: 143, as a shell says
        if type(stop).__name__ != "SIGTERMException":
            raise
        _close_progress_bars()
        print(f"error: stopped by SIGTERM before it finished ({RESUME_HINT})", file=sys.stderr)
        raise SystemExit(143) from None
    finally:
        # for the code around the command (a test, a notebook)
        warnings.formatwarning, warnings.showwarning = before, shown
        logging.StreamHandler.emit = stream_emit


def _raised_at(err: Exception) -> str:
    """Where ``err`` was raised, as "raised at FILE:LINE in FUNCTION; ". For one from a DataLoader worker (or
    its pin-memory thread), the last frame of the traceback torch puts into the message, and where it ran
    (torch's first line: "Caught ValueError in DataLoader worker process 0."); torch's own frames end in its
    ``reraise``, which told nothing."""
    head, _, tail = str(err).partition("\nOriginal Traceback")
    if frames := re.findall(r'File "(.+)", line (\d+), in (\S+)', tail):
        filename, lineno, name = frames[-1]
        ran = re.match(r"Caught \w+ (.+?)\.?$", head)
        return f"raised at {filename}:{lineno} in {name}{f' ({ran[1]})' if ran else ''}; "
    frames = traceback.extract_tb(err.__traceback__)
    return f"raised at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}; " if frames else ""


def _own_message(err: Exception) -> str:
    """The error's message; for one raised in a DataLoader worker (torch puts the worker's traceback into the
    message), the original error's own lines: from the traceback's last ``SomeError: `` line on, its type dropped.
    A class option refused by its own constructor (``--trainer.callbacks`` of ``NotifyWhenDone``) comes back from
    jsonargparse as "Does not validate against any of the Union subtypes" and a dozen lines on what a class path
    is: its own ``Class.argument: reason`` lines say it all, and alone are shown."""
    message = str(err)
    if message.startswith("Does not validate against any of the Union subtypes"):
        own = re.findall(r"^\s*- ([A-Z]\w*\.\w+: .*)$", message, flags=re.MULTILINE)
        return "\n".join(own) if own else message
    head, found, tail = message.partition("\nOriginal Traceback")
    if not found:
        return message
    lines = tail.strip().splitlines()
    starts = [i for i, line in enumerate(lines) if re.match(r"[A-Za-z_][\w.]*(Error|Exception): ", line)]
    if not starts:
        return head
    return "\n".join(lines[starts[-1] :]).split(": ", 1)[1]


def _is_input_error(err: Exception) -> bool:
    """The suite's input errors are ValueErrors (LabelFormatError, ConfigError, CheckpointMismatchError, ...)
    or OSErrors (FileNotFoundError, ...); Lightning's and the backbone loader's have their own classes, and a
    checkpoint that is not weights-only is refused by torch with an UnpicklingError. Lightning refuses a
    ``--trainer.devices`` of the wrong kind with a TypeError, told from other TypeErrors (bugs) by its message."""
    if isinstance(err, (ValueError, OSError, pickle.UnpicklingError)):
        return True
    # Lightning's for a devices its accelerator cannot take (1.5, -2): lightning_fabric.accelerators.cpu's and
    # lightning_fabric.utilities.device_parser's (the GPUs')
    devices = r"`devices` selected with `\w+` should be |Device IDs \(GPU/TPU\) must be an int, a string, "
    if isinstance(err, TypeError) and re.match(devices, str(err)):
        return True
    # by the names of the classes it is or extends (NothingLoadedError is a WeightLoadingError): comparing names
    # spares importing Lightning and torch here, which `--help` does not load
    return any(
        cls.__name__ in ("MisconfigurationException", "WeightLoadingError", "NonFiniteLossError")
        for cls in type(err).__mro__
    )


def lazy_exports(package: str, **modules: str):
    """A package's ``(__getattr__, __all__)``: the module ``__getattr__`` (PEP 562) imports
    ``package.<module>`` only when one of its names is asked for, so importing the package (``python -m package
    --help``) loads no torch. ``modules``: each sub-module and the names it exports, space-separated
    (``model="RoadDetector BackboneWithFPN"``)."""
    where = {name: module for module, names in modules.items() for name in names.split()}

    def __getattr__(name: str):
        if name in where:
            return getattr(import_module(f"{package}.{where[name]}"), name)
        raise AttributeError(name)

    return __getattr__, list(where)
