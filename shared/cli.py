"""The one LightningCLI every task uses: ``python -m domains.medical|domains.driving.<task> fit|validate|test|predict
-c cfg.yaml``."""

from __future__ import annotations

import ast
import codecs
import difflib
import functools
import importlib.metadata
import inspect
import json
import locale
import math
import os
import platform
import random
import re
import shutil
import sys
import traceback
import types
import typing
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
import yaml
from jsonargparse import ArgumentError, Namespace, dict_to_namespace
from lightning_fabric.utilities.seed import max_seed_value, min_seed_value
from pytorch_lightning.accelerators import CPUAccelerator
from pytorch_lightning.callbacks import (
    LearningRateMonitor,
    ModelCheckpoint,
    ModelSummary,
    Timer,
    TQDMProgressBar,
)
from pytorch_lightning.callbacks import model_summary as lightning_model_summary
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from pytorch_lightning.utilities.model_summary.model_summary import _format_summary_table

from shared.budget import FitScheduleToBudget
from shared.checkpointing import LastIsLastCheckpoint
from shared.cli_help import (
    SUBCOMMAND_HELP,
    SUITE_ROOT,
    ConfigError,
    _is_input_error,
    metric_mode,
    quiet_library_notes,
    suggest_options,
    suite_file,
)
from shared.data import map_paths
from shared.device import cpu_has_bf16_units
from shared.notify import (
    NotifyWhenDone,  # noqa: F401 - imported, a known callback: --trainer.callbacks+=NotifyWhenDone
    holds_logged_values,
)
from shared.optim import CtrlCBetweenSteps
from shared.prediction_set import PredictionSet
from shared.task import (
    CheckpointMismatchError,
    check_checkpoint_file,
    network_differences,
    plain_values,
    read_checkpoint_data,
)

# --ckpt_path values Lightning resolves itself
_SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")


# int before float, unlike Lightning's annotation: jsonargparse tries a union's types in order
BatchLimit = int | float | None


class SuiteTrainer(pl.Trainer):
    """The Trainer (Lightning's): ``limit_*_batches`` counts batches when an int, a share when a float.

    Lightning's, with ``limit_*_batches`` typed ``int | float`` (int first) for the command line.

    Lightning annotates them ``float | int``, so jsonargparse parses ``--trainer.limit_train_batches 1`` (or
    ``1`` in a config) as ``1.0``, which Lightning reads as "100 % of the batches": a one-batch smoke run trained
    a whole epoch (Lightning PR #11950 calls this a footgun). Written ``1`` it now means one batch, ``1.0`` all.

    Args:
        limit_train_batches: training batches per epoch: an int counts batches, a float is a share (1.0 = all).
        limit_val_batches: validation batches per check: an int counts batches, a float is a share (1.0 = all).
        limit_test_batches: test batches: an int counts batches, a float is a share (1.0 = all).
        limit_predict_batches: predict batches: an int counts batches, a float is a share (1.0 = all).
    """

    def __init__(
        self,
        *,
        limit_train_batches: BatchLimit = None,
        limit_val_batches: BatchLimit = None,
        limit_test_batches: BatchLimit = None,
        limit_predict_batches: BatchLimit = None,
        **kwargs,
    ):
        accumulate = kwargs.get("accumulate_grad_batches", 1)
        if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
            # Lightning takes 0 and fails in the first training step's schedule (a ZeroDivisionError traceback
            # from estimated_stepping_batches); the CLI names it (SuiteCLI._refuse_trainer_argument)
            raise ValueError("`accumulate_grad_batches` must be an int >= 1 (1: the optimizer steps every batch)")
        given = kwargs.get("callbacks")  # a copy: Lightning adds its defaults to the list given
        given = list(given) if isinstance(given, (list, tuple)) else [given]
        super().__init__(
            limit_train_batches=limit_train_batches,
            limit_val_batches=limit_val_batches,
            limit_test_batches=limit_test_batches,
            limit_predict_batches=limit_predict_batches,
            **kwargs,
        )
        self.callbacks.append(_AtTrainStart())
        self._console_defaults(given, kwargs.get("enable_progress_bar"))
        if type(self.strategy.launcher) is _MultiProcessingLauncher:  # ddp_spawn, ddp_fork
            self.strategy._launcher = _FitStateLauncher(self.strategy, self.strategy.launcher._start_method)

    def _console_defaults(self, given: list, progress_bar: bool | None) -> None:
        """Lightning's default model summary and progress bar, each replaced only where Lightning added it (a
        callback given is kept): the summary without a FLOPs column counting nothing
        (:class:`_SummaryWithoutUncountedFlops`), and the bar with the closing lines' digits
        (:class:`_BarOfClosingDigits`), which, where stdout (the bar's file) is no terminal (piped, SLURM's
        ``srun``) and ``--trainer.enable_progress_bar`` was not given, is redrawn every
        :data:`_LOG_REFRESH_STEPS` batches: each redraw stays in the log behind a carriage return (about 600 KB
        over a long fit)."""
        for i, callback in enumerate(self.callbacks):
            if any(callback is mine for mine in given):
                continue
            if type(callback) is ModelSummary:
                self.callbacks[i] = _SummaryWithoutUncountedFlops(max_depth=callback._max_depth)
            elif type(callback) is TQDMProgressBar:
                rate = callback.refresh_rate  # Lightning's setting (TQDM_MINITERS, which it reads, raises it)
                if progress_bar is None and not _is_terminal(sys.stdout):
                    rate = max(_LOG_REFRESH_STEPS, rate)
                self.callbacks[i] = _BarOfClosingDigits(refresh_rate=rate)

    def fit(self, *args, **kwargs) -> None:
        """Train, from ``--ckpt_path`` when given (a resume: ``last``, ``best`` or a file)."""
        with warnings.catch_warnings():
            # said in the closing lines instead (_report_checkpoints): see _MONITOR_NOT_LOGGED_YET_WARNING
            warnings.filterwarnings("ignore", message=_MONITOR_NOT_LOGGED_YET_WARNING)
            super().fit(*args, **kwargs)
        self._warn_resume_ended_an_epoch_early()
        self._report_checkpoints()

    def _report_checkpoints(self) -> None:
        """A fit ended with Lightning's "`Trainer.fit` stopped" alone: where its weights are, and the best
        monitored value, are what the next command (``test --ckpt_path best``) needs; and where its curves are
        (``test`` names its log folders, a fit named none: ``version_N`` is not said anywhere else)."""
        callback = self.checkpoint_callback
        if callback is None or self.fast_dev_run:
            return
        lines = []
        if callback.best_model_path:
            score = callback.best_model_score
            value = f" ({callback.monitor} {float(score):.4g})" if score is not None and callback.monitor else ""
            lines.append(f"best checkpoint{value}: {callback.best_model_path}")
        if callback.last_model_path and callback.last_model_path != callback.best_model_path:
            lines.append(f"last checkpoint (step {self.global_step}): {callback.last_model_path}")
        if callback.monitor and callback.save_top_k and not callback.best_model_path:
            lines.append(self._no_best_checkpoint(callback))
        if folders := log_folders(self):
            lines.append(f"logs: {', '.join(folders)}")
        if lines:
            rank_zero_info("\n".join(lines))

    @property
    def _steps_per_epoch(self) -> int:
        """Optimiser steps in a training epoch (0: an epoch of no known length)."""
        batches = self.num_training_batches
        return math.ceil(batches / self.accumulate_grad_batches) if math.isfinite(batches) else 0

    def _no_best_checkpoint(self, callback: ModelCheckpoint) -> str:
        """The closing line of a fit that kept no best checkpoint though it monitors a metric: one stopped
        (``max_steps``, ``max_time``, a loaded machine) before its first validation printed only its last
        checkpoint and Lightning's "could not find the monitored key ... HINT: Did you call log", which reads as
        a bug, and the README's next command, ``test --ckpt_path best``, failed."""
        timer = next((c for c in self.callbacks if isinstance(c, Timer)), None)
        remaining = timer.time_remaining() if timer is not None else None  # None: a Timer of no duration
        if self.max_steps != -1 and self.global_step >= self.max_steps:
            why = f"--trainer.max_steps {self.max_steps} was reached"
        elif remaining is not None and remaining <= 0:
            why = "--trainer.max_time ran out"
        elif self.interrupted:
            why = "it was interrupted"
        else:
            why = "it stopped"
        epoch = f"; an epoch is {self._steps_per_epoch} steps" if self._steps_per_epoch else ""
        if self.fit_loop.epoch_loop.val_loop._has_run:
            what = f"no validation kept one on --checkpoint.monitor {callback.monitor}"
        else:
            what = "no validation ran before the fit stopped"
        way = "test with --ckpt_path last" if callback.last_model_path else "no checkpoint was saved"
        return f"no best checkpoint: {what} (step {self.global_step}, {why}{epoch}): {way}"

    def _warn_resume_ended_an_epoch_early(self) -> None:
        """Lightning 2.6 resumes a run with ``max_steps`` set (iteration-based) counting the saved epoch twice:
        ``max_epochs`` then ends it one epoch early (16 steps resumed to ``max_steps`` 32 at 4 per epoch and
        ``max_epochs`` 8 stopped at 28, the LR schedule short of its end). Not worked around (the loop's restart
        state is Lightning's own, and the miscount is saved with it); said, with the way on: ``max_epochs -1``."""
        if self.ckpt_path is None or self.max_steps in (None, -1) or self.max_epochs in (None, -1):
            return
        if self.interrupted or self.global_step >= self.max_steps or self.current_epoch < self.max_epochs:
            return
        per_epoch = self._steps_per_epoch
        planned = min(self.max_steps, self.max_epochs * per_epoch)
        if per_epoch and self.global_step + per_epoch <= planned:
            rank_zero_warn(
                f"this resumed run stopped at max_epochs {self.max_epochs} after {self.global_step} steps, one epoch "
                f"({per_epoch} steps) short of the {planned} planned (Lightning counts the saved epoch twice when "
                "max_steps is set): `fit --ckpt_path last --trainer.max_epochs -1`, max_steps alone ending it, "
                "trains the rest"
            )

    def _warn_resume_skips_the_rest_of_an_epoch(self) -> None:
        """A run stopped inside an epoch by ``max_steps``, ``max_time`` or a callback saves its last state
        with the epoch marked finished, so Lightning resumes it at the next epoch's start: the rest of that
        epoch is skipped (2 of 4 batches: a resume to ``max_epochs`` 3 ended at step 10, not 12), unsaid. Said
        at the start of the resumed fit, with what is skipped; a state saved inside the epoch (a killed run's
        step save) goes on from its batch and is not concerned."""
        loop = self.fit_loop
        done, batches = loop.epoch_loop.batch_progress.current.completed, self.num_training_batches
        resumed_at_end = loop.restarted_on_epoch_end or loop.resumed_on_epoch_end
        if self.ckpt_path is None or not resumed_at_end or loop.epoch_loop.batch_progress.is_last_batch:
            return
        if not (math.isfinite(batches) and 0 < done < batches):
            return
        epoch = loop.epoch_progress.current.processed - 1  # the one it stopped in (counted from 0)
        rank_zero_warn(
            f"fit --ckpt_path {self.ckpt_path}: its run stopped inside epoch {epoch} (max_steps, max_time or "
            f"a callback) after {done} of its {batches} batches, and Lightning resumes at the start of epoch "
            f"{epoch + 1}: the other {int(batches) - done} batches of epoch {epoch} are skipped, not trained "
            "on"
        )


#: where stdout is no terminal, the progress bar is redrawn every this many batches (and at each bar's end)
_LOG_REFRESH_STEPS = 100

#: Lightning's warning when the checkpoint callback reaches the end of an epoch (one that ``max_steps`` or
#: ``max_time`` stopped early) before any validation logged its monitor: not a missing ``self.log`` but no
#: validation yet, said by :meth:`SuiteTrainer._report_checkpoints` ("no best checkpoint: ..."). A monitor
#: that validations do not log is still an error (``LastIsLastCheckpoint._refuse_unlogged_monitor``).
_MONITOR_NOT_LOGGED_YET_WARNING = re.escape("`ModelCheckpoint(monitor=") + r".*\)` could not find the monitored key"


class _BarOfClosingDigits(TQDMProgressBar):
    """Lightning's progress bar, its values with the four significant digits of the fit's closing line
    (:meth:`SuiteTrainer._report_checkpoints`): Lightning's (tqdm's three, padded with zeros to five
    characters) showed a val/ged of 1.18939 as ``val/ged=1.190`` just above ``best checkpoint (val/ged
    1.189)``, a digit that was not the value's."""

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        # "#": zeros kept (0.5000, 2.000: the bar's width steady); values far from 1 left to tqdm (1.235e+04)
        return {name: f"{value:#.4g}" if _with_four_digits(value) else value for name, value in items.items()}


def _with_four_digits(value) -> bool:
    return isinstance(value, float) and 1e-3 <= abs(value) < 1e4


def log_folders(trainer: pl.Trainer) -> list[str]:
    """The folders the trainer's loggers write this run to (``.../csv/version_N``, ``.../tensorboard/version_N``)."""
    return [logger.log_dir for logger in trainer.loggers if getattr(logger, "log_dir", None)]


def _is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class _SummaryWithoutUncountedFlops(ModelSummary):
    """Lightning's model summary, without its FLOPs column and "Total Flops" line where it counted none.

    Lightning 2.6 counts FLOPs only by running the model on its ``example_input_array``, which no suite task
    sets (each task's batch is its own: images with several readers' masks, boxes, clips), yet it printed
    ``FLOPs 0`` on every row and ``0 Total Flops``, a wrong figure. A task that sets one keeps the column."""

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                  total_flops, **summarize_kwargs) -> None:  # fmt: skip
        if total_flops:
            ModelSummary.summarize(summary_data, total_parameters, trainable_parameters, model_size,
                                   total_training_modes, total_flops, **summarize_kwargs)  # fmt: skip
            return
        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = _format_summary_table(total_parameters, trainable_parameters, model_size, total_training_modes, 0,
                                      *columns)  # fmt: skip
        lightning_model_summary.log.info("\n" + table.rsplit("\n", 1)[0])  # without "0 Total Flops"


class _FitStateLauncher(_MultiProcessingLauncher):
    """Lightning's launcher of ``ddp_spawn`` (and ``ddp_fork``) processes, which also brings back to the main
    process the fit's step count and its checkpoint callback's best score and last checkpoint: Lightning's
    returns the best checkpoint's path alone, so the main process's end-of-fit lines
    (:meth:`SuiteTrainer._report_checkpoints`) lacked the score and the "last checkpoint (step N)" line that
    ``ddp`` and one process print. Through the hooks Lightning gives for this (``get_extra_results``,
    ``update_main_process_results``)."""

    def get_extra_results(self, trainer) -> dict:
        extra = super().get_extra_results(trainer)
        callback = trainer.checkpoint_callback
        score = getattr(callback, "best_model_score", None)
        extra["suite_fit"] = {
            "fit_loop": trainer.fit_loop.state_dict(),  # its counters: the steps, batches and epochs done
            "last_model_path": getattr(callback, "last_model_path", ""),
            "best_model_score": None if score is None else float(score),
        }
        return extra

    def update_main_process_results(self, trainer, extra: dict) -> None:
        super().update_main_process_results(trainer, extra)
        fit = extra["suite_fit"]
        trainer.fit_loop.load_state_dict(fit["fit_loop"])
        callback = trainer.checkpoint_callback
        if isinstance(callback, ModelCheckpoint):
            callback.last_model_path = fit["last_model_path"]
            if fit["best_model_score"] is not None:
                callback.best_model_score = torch.tensor(fit["best_model_score"])


class _AtTrainStart(pl.Callback):
    """What :class:`SuiteTrainer` says once a fit's state is restored and its loaders are known."""

    def on_train_start(self, trainer, pl_module) -> None:
        if isinstance(trainer, SuiteTrainer):
            trainer._warn_resume_skips_the_rest_of_an_epoch()


def quiet_trainer(**overrides) -> pl.Trainer:
    """A Trainer for tests and benchmarks: no logger, checkpoints, progress bar, model summary or validation;
    ``overrides`` add to or replace these settings."""
    settings = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
    }
    return pl.Trainer(**{**settings, **overrides})


def default_trainer_kwargs(domain: str) -> dict:
    """Trainer defaults: CSV + TensorBoard logs under ``lightning_logs/<domain>``, LR monitor, gradient
    clipping. TensorBoard without its ``hp_metric`` (a constant -1 in every run): with no metric named, its
    HPARAMS tab lists every scalar a run logs beside the run's settings (:meth:`SuiteCLI._log_settings`), the
    monitored metric and the test figures included."""
    return {
        "max_epochs": 10,
        # Keeps config.yaml and other run files out of the working directory even when loggers are off.
        "default_root_dir": f"lightning_logs/{domain}",
        "log_every_n_steps": 10,
        "gradient_clip_val": 1.0,
        "logger": [
            {
                "class_path": "pytorch_lightning.loggers.CSVLogger",
                "init_args": {"save_dir": f"lightning_logs/{domain}", "name": "csv"},
            },
            {
                "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                "init_args": {
                    "save_dir": f"lightning_logs/{domain}",
                    "name": "tensorboard",
                    "default_hp_metric": False,
                },
            },
        ],
        "callbacks": [LearningRateMonitor(logging_interval="step")],
    }


class SuggestingArgumentParser(LightningArgumentParser):
    """Lightning's argument parser, but an option no parser takes ends in three lines (the usage line, the
    error, the close option by :func:`_suggestions`) and exit status 2: jsonargparse printed the usage of
    every option (about 100 lines) and suggested nothing. That is an unrecognized option (``--data.batch_sise
    4``), a config file's unknown key (``data: {batchsize: 4}``) and an unknown argument of a class given by
    ``class_path`` (``--model.network.init_args.chanels``, in a config file too: jsonargparse checks it with
    the class's own parser, whose options go up with its error). A value of the wrong type or outside its
    choices, and a class path that does not load, end in one line (:func:`_wrong_value`) and exit status 2:
    jsonargparse printed the same usage, then up to ten lines of Python types. Other errors are its own (all
    are, with ``JSONARGPARSE_DEBUG=true``). A module's class,
    so that it pickles: ``--trainer.strategy ddp_spawn`` pickles the trainer, whose config callback
    (:class:`ConfigInCheckpoints`) holds the parser (a class made inside a function failed every such command
    with "Can't pickle local object"). Options are never abbreviated: argparse took ``--trainer.max_epoch 3``
    for ``--trainer.max_epochs`` without a word (and a typo dropping an option's last letter ran a whole
    training with it), so a shortened name is an unrecognized one, with its suggestion."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:  # a class's parser (model.network's): the error raised carries its options
            try:
                return super().error(message, ex)
            except ArgumentError as raised:
                raised.class_parser = self
                raise
        # as jsonargparse reads it (its get_env_var_bool): "true" in any case; it refuses 1, yes and on
        debug = os.environ.get("JSONARGPARSE_DEBUG", "").lower() == "true"
        misspelled = None if debug else self._misspelled(message, ex)
        if misspelled is None:
            wrong = None if debug else _wrong_value(message)
            if wrong is None:
                return super().error(message, ex)
            prog = self._subcommand_parser(ex).prog.replace(" [options]", "")
            sys.stderr.write(f"{prog}: {wrong}\n")
            self.exit(2)
        parser, line, suggestions = misspelled
        prog = parser.prog.replace(" [options]", "")
        sys.stderr.write(f"usage: {prog} [-h] [-c CONFIG] [options]  ({prog} --help lists them)\n")
        for text in (f"error: {line}", *suggestions):
            sys.stderr.write(f"{text}\n")
        self.exit(2)

    def _misspelled(self, message: str, ex: Exception | None) -> tuple | None:
        """(the sub-command's parser, the error line, the suggestions) where ``message`` says an option is not
        taken; None for other errors."""
        parser = self._subcommand_parser(ex)
        known = [name for action in parser._actions for name in action.option_strings]
        if message.startswith("unrecognized arguments: "):
            return parser, message, _suggestions(message.removeprefix("unrecognized arguments: ").split(), known)
        config = re.fullmatch(_CONFIG_NOT_READ, message)
        if config is not None:  # -c FILE
            return parser, message, _close_configs(Path(config[1]), _domain_configs(parser.prog))
        key = re.fullmatch(r"(?:Subcommand '[^']+'|Group '([^']+)') does not accept option '([^']+)'", message)
        if key is not None:  # a config file's key
            return parser, message, _suggestions(["--" + ".".join(part for part in key.groups() if part)], known)
        causes = []
        while ex is not None:
            causes.append(ex)
            ex = ex.__cause__ or ex.__context__
        inner = [cause for cause in causes if hasattr(cause, "class_parser")]
        option = re.fullmatch(r"Option '([^']+)' is not accepted", str(inner[-1])) if inner else None
        keys = re.findall(r'Parser key "([^"]+)"', message)  # model.network (and a class's class inside it)
        if option is None or not keys:
            return None
        name = "--" + ".init_args.".join(keys) + ".init_args." + option[1]
        takes = [action.dest for action in inner[-1].class_parser._actions if action.option_strings]
        known = [name.rsplit(".", 1)[0] + "." + dest for dest in takes if dest != "help" and ".help" not in dest]
        close = _closest(name, known)
        return parser, f"unrecognized option: {name}", [f"{name}: did you mean {close}?"] if close else []

    def _subcommand_parser(self, ex: Exception | None):
        """The parser of the sub-command given (``fit``'s), whose ``prog`` the one-line errors name; else this
        one."""
        parser = getattr(ex, "subcommand_parser", None) or self
        if (subcommands := parser._subcommands_action) is not None:  # the main parser: the sub-command's
            given = [arg for arg in getattr(parser, "args", None) or () if arg in subcommands.choices]
            parser = subcommands.choices[given[0]] if given else parser
        return parser


#: how :func:`_wrong_value` names the types jsonargparse writes as ``<class 'int'>``; another class of a union
#: is said as a class path (``--trainer.logger``'s Logger), these never (the Tensor of ``lr``'s float | Tensor)
_TYPE_NAMES = {
    "int": "an int", "float": "a float", "bool": "true or false", "str": "a string", "NoneType": "null",
    "list": "a list", "tuple": "a list", "collections.abc.Sequence": "a list", "dict": "a mapping",
    "collections.abc.Mapping": "a mapping", "pathlib.Path": "a path", "torch.Tensor": "a tensor",
}  # fmt: skip


def _wrong_value(message: str) -> str | None:
    """jsonargparse's error for a value of the wrong type or outside its choices, or a class path that does
    not load, as one line: ``--trainer.max_epochs: expected an int, got 'abc'``, ``--data.reader_sampling:
    expected one of {random, all}, got 'x'``, ``--model.optimizer: class_path 'torch.optim.SGDD': module
    'torch.optim' has no attribute 'SGDD'`` (its message, trimmed: it spans 3-10 lines of Python type names,
    after the usage of every option); None for other errors, and where all it would say is "expected null"
    (jsonargparse's own error then says why the other alternatives failed). A class's own argument is named in
    full (``--model.network.init_args.channels``), with its own error, not those of the union's other
    alternatives (``pytorch_lightning.Callback`` not taking it), and the value as given (not jsonargparse's
    ``NestedArg(...)`` or ``Namespace(...)``). Parsed by hand: jsonargparse gives these only as text (its
    exceptions carry no field for the option, the types or the value)."""
    keys = re.findall(r'Parser key "([^"]+)":', message)
    if not keys or not message.startswith(f'Parser key "{keys[0]}":'):
        return None
    option = "--" + ".init_args.".join(keys)
    # about the innermost key: the lines after its last mention indented deeper than that line
    head, _, tail = message.rpartition(f'Parser key "{keys[-1]}":')
    depth = len(line := head.rsplit("\n", 1)[-1]) - len(line.lstrip())
    first, *lines = tail.split("\n")
    ends = [i for i, text in enumerate(lines) if text.strip() and len(text) - len(text.lstrip()) <= depth]
    inner = "\n".join([first, *lines[: ends[0] if ends else None]])
    value = re.search(r"^\s*Given value: (.*)$", inner, flags=re.MULTILINE)
    value = value or re.search(r"Got value: (.*)$", inner, flags=re.MULTILINE)
    value = value and re.sub(r"\.? Got value: .*$", "", value[1].strip())
    if nested := re.fullmatch(r"NestedArg\(key='[^']*', val=(.*)\)", value or ""):  # a class's option
        try:
            value = str(ast.literal_eval(nested[1]))
        except (ValueError, SyntaxError):
            value = nested[1]
    elif path := re.match(r"(?:Namespace\(class_path=|\{'class_path': )'([^']+)'", value or ""):
        value = path[1]  # a class path with its init_args
    problems = re.findall(r"Problem with given class_path '([^']+)':\s*\n\s*(\S.*)", inner)
    if problems:
        return f"{option}: " + "; ".join(f"class_path {path!r}: {why}" for path, why in dict.fromkeys(problems))
    if other := re.search(r"Import path (\S+) does not correspond to a subclass of (\S+)", inner):
        return f"{option}: {other[1]} is not a {other[2]} (nor a subclass of it)"
    # the class path of a Callable (the optimizer, an Optional LR scheduler) that does not load or fit
    if callable_ := re.search(r"expects a function or a callable class: (?!Parser key)(.+)", inner):
        why = re.sub(r"\.+(?: Got value: .*)?$", "", callable_[1])
        if subclass := re.fullmatch(r"Expected '[^']+' to be a subclass of (?:Union\[(.*)\]|(.*))", why):
            why = "not a subclass of " + (subclass[1] or subclass[2]).replace(", ", " or ")
        return f"{option}: " + (f"class_path {value!r}: " if value else "") + why
    choices, kinds = [], []
    expected = re.findall(r"Expected a (.+?)(?:\. Got value: .*)?$", inner, flags=re.MULTILINE)
    for text in dict.fromkeys(expected):
        if text.startswith("path but "):  # a config file's path, which every option may be
            continue
        if text.startswith("dot import path string"):  # a class path: the class is among the union's subtypes
            classes = re.findall(r"<class '([^']+)'>", (re.search(r"Subtypes: (.*)", inner) or [""])[0])
            kinds += [f"a {name.rsplit('.', 1)[-1]} class path" for name in classes
                      if name not in _TYPE_NAMES]  # fmt: skip
        elif literal := re.fullmatch(r"typing\.Literal\[(.*)\]", text):
            try:
                choices += [str(value) for value in ast.literal_eval(f"[{literal[1]}]")]
            except (ValueError, SyntaxError):
                choices.append(literal[1])
        else:
            name = re.fullmatch(r"<class '([^']+)'>", text)
            name = name[1] if name else text
            short = name.rsplit(".", 1)[-1]
            kinds.append(_TYPE_NAMES.get(name) or ("an " if short[0] in "AEIOUaeiou" else "a ") + short)
    choices = list(dict.fromkeys(choices))  # precision's 16 is an int and a str choice
    kinds = [kind for kind in dict.fromkeys(kinds) if kind != "null"]  # null is rarely what was meant
    if not choices and not kinds:  # null alone: why the other alternatives failed is not read here
        return None
    alternatives = ([f"one of {{{', '.join(choices)}}}"] if choices else []) + kinds
    got = f", got {value!r}" if value is not None else ""
    return f"{option}: expected {' or '.join(alternatives)}{got}"


def _trainer_argument(message: str, given=None) -> str | None:
    """The one ``pl.Trainer`` argument a Lightning error ``message`` names, or None (none, or several): in
    backticks (`` `devices` selected with ...``, `` `Trainer(devices=0)` ``, `` `accelerator='foo'` ``), after
    "for" ("invalid value -1 for limit_train_batches") or before a value in backticks ("The strategy `fsdp`").
    Of several, the one whose value in ``given`` (the Trainer's arguments) the message quotes, where only one's
    is: "The strategy `fsdp` requires a GPU accelerator, but received `accelerator='cpu'`" is about
    ``--trainer.strategy fsdp`` of a config whose accelerator is ``auto``. Read from the text: Lightning's errors
    carry no field for the argument."""
    arguments = _trainer_arguments_named(message)
    if len(arguments) > 1 and hasattr(given, "get"):
        arguments = {name for name in arguments if _quotes(message, given.get(name))}
    return arguments.pop() if len(arguments) == 1 else None


def _trainer_arguments_named(message: str) -> set[str]:
    """The ``pl.Trainer`` arguments ``message`` names (:func:`_trainer_argument`)."""
    named = {found[1] for found in re.finditer(r"`(?:Trainer\()?(\w+)[^`]*`", message)}
    named |= set(re.findall(r"\bfor (\w+)\b", message)) | set(re.findall(r"\b(\w+) `", message))
    return named & set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}


def _quotes(message: str, value) -> bool:
    """Whether ``message`` holds ``value`` (not None) as a word of its own: ``fsdp`` in "`fsdp`" or
    "strategy='fsdp'", ``1`` not in "10" nor "1.5"."""
    return value is not None and re.search(rf"(?<![\w.]){re.escape(str(value))}(?!\w|\.\d)", message) is not None


#: where Lightning reads one Trainer argument alone, for its errors whose text names none: (the file's path
#: ending, its function or None for any, the argument). ``--trainer.devices 1.5`` on a GPU got "invalid literal
#: for int() with base 10: '1.5'", ``--trainer.devices 3`` on a 1-GPU machine "You requested gpu: [0, 1, 2] But
#: your machine only has: [0]" (lightning_fabric's device_parser, lightning.fabric's in the ``lightning``
#: package); ``--trainer.max_time 1:00`` Timer's "`Timer(duration='1:00')` is not a valid duration";
#: ``--trainer.precision transformer-engine`` a ModuleNotFoundError from its precision plugin
_TRAINER_ARGUMENT_FRAMES = (
    ("utilities/device_parser.py", None, "devices"),
    ("connectors/callback_connector.py", "_configure_timer_callback", "max_time"),
    ("connectors/accelerator_connector.py", "_check_and_init_precision", "precision"),
)  # fmt: skip


def _trainer_argument_raised_in(err: Exception) -> str | None:
    """The Trainer argument whose reading raised ``err``: the innermost frame of its traceback that is one of
    :data:`_TRAINER_ARGUMENT_FRAMES`; None where none is."""
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        path = frame.filename.replace(os.sep, "/")
        for ending, function, argument in _TRAINER_ARGUMENT_FRAMES:
            if path.endswith("/" + ending) and function in (None, frame.name):
                return argument
    return None


def _missing_package(err: ImportError) -> str:
    """An optional package a Trainer argument needs, said as what to install: Lightning's "Requirement
    'transformer_engine>=0.11.0' not met. HINT: Try running `pip install -U ...`", Python's "No module named
    'x'"."""
    required = re.search(r"Requirement '([^']+)' not met", str(err))
    package = required[1] if required else err.name
    if package is None:
        return str(err)
    return f"needs the package {package}, which is not installed: pip install -U '{package}'"


def _suggestions(given: list[str], known: list[str]) -> list[str]:
    """:func:`shared.cli_help.suggest_options`'s lines for ``given`` (arguments, values included), and, for an
    option it finds nothing close to, :func:`_closest`'s."""
    lines = []
    for arg in given:
        name = arg.split("=", 1)[0]
        if close := suggest_options([arg], known):
            lines += close
        elif name.startswith("--") and (fixed := _closest(name, known)):
            lines.append(f"{name}: did you mean {fixed}?")
    return lines


#: jsonargparse's error for a ``-c`` that names no file (:func:`_close_configs`), with the path it tried
_CONFIG_NOT_READ = r'Parser key "config": (?:File does not exist|Path is not a file): \'(.+)\''


def _domain_configs(prog: str) -> Path | None:
    """The configs folder of the task a parser's ``prog`` runs (``python -m domains.medical fit``)."""
    module = re.search(r"-m (domains(?:\.\w+)+)", prog)
    return SUITE_ROOT.joinpath(*module[1].split("."), "configs") if module else None


def _close_configs(path: Path, own: Path | None = None) -> list[str]:
    """For a ``-c`` file that is not there, or a folder (``path``, absolute, as jsonargparse names it): the
    closest config of its folder, here or in the suite's own (which ``-c`` also reads:
    :func:`shared.cli_help.suite_file`), else that folder's configs; where the folder holds none (``-c
    quick.yaml``, ``-c configs/quick.yaml``), the same from the task's ``own`` configs folder. jsonargparse's
    "File does not exist" came alone, under a usage line promising options "listed below" that never were, and
    a misspelled ``quik.yaml`` got no pointer to ``quick.yaml``."""
    try:
        shown = path.relative_to(Path.cwd())  # as the user gave it, from the working directory
    except ValueError:
        shown = path
    folder = shown if path.is_dir() else shown.parent
    folders = [Path.cwd() / folder] + ([SUITE_ROOT / folder] if not folder.is_absolute() else [])
    names = _config_names(folders)
    if not names and own is not None:  # a folder of no configs (or none, or the working one): the task's own
        folder, names = own.relative_to(SUITE_ROOT), _config_names([own])
    stems = {Path(name).stem: name for name in names}  # by stem: with ".yaml" alike, zzz.yaml was "gpu.yaml"
    if not path.is_dir() and (close := difflib.get_close_matches(shown.stem, stems, n=1, cutoff=0.6)):
        return [f"{shown}: did you mean {folder / stems[close[0]]}?"]
    return [f"{folder}: holds {', '.join(names)}"] if names else []


def _config_names(folders: list[Path]) -> list[str]:
    """The names of the YAML files in ``folders`` (those that exist), sorted, once each."""
    return sorted({f.name for there in folders if there.is_dir() for f in there.glob("*.y*ml") if f.is_file()})


def _closest(name: str, known: list[str]) -> str | None:
    """``name`` with the first of its dotted parts that no ``known`` option has replaced by the closest one
    there (:func:`difflib.get_close_matches`), or None: ``--model.netwrok.init_args.x`` ->
    ``--model.network.init_args.x`` (a class's own options are known only once its class_path is). The part
    is compared alone: with the shared head, ``--model.network.init_args.zzzz`` was "close" to ``...encoder``."""
    parts = name.split(".")
    for depth, part in enumerate(parts):
        there = {option.split(".")[depth] for option in known if option.split(".")[:depth] == parts[:depth]
                 and option.count(".") >= depth}  # fmt: skip
        if part not in there:
            close = difflib.get_close_matches(part, there, n=1, cutoff=0.75)
            return ".".join([*parts[:depth], close[0], *parts[depth + 1 :]]) if close else None
    return None


#: Lightning's warning at an evaluation of a checkpoint whose callbacks' states are those of fit-only
#: callbacks (``Timer``, from ``--trainer.max_time``) that the evaluation lacks (:meth:`SuiteCLI._run_subcommand`)
_FIT_ONLY_CALLBACKS_WARNING = (
    re.escape("Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided")
    + r".* Please add the following callbacks: \[(?:'Timer'(?:, )?)+\]\.$"
)


#: the bf16 hint (SuiteCLI.before_fit) is shown from this many model parameters (the smallest measured gain,
#: 1.3x, was on the 1.1 M Prob. U-Net at 64 px; nothing was measured below)
_BF16_HINT_PARAMETERS = 1_000_000


def _bf16_hint_applies(trainer, model) -> bool:
    """Whether :meth:`SuiteCLI.before_fit` hints at bf16: an fp32 fit (not a smoke run, whose speed is not its
    point) on a CPU with bfloat16 units, of a model of :data:`_BF16_HINT_PARAMETERS` or more."""
    return (
        trainer.precision == "32-true"
        and not trainer.fast_dev_run
        and isinstance(trainer.accelerator, CPUAccelerator)
        and _parameter_count(model) >= _BF16_HINT_PARAMETERS
        and cpu_has_bf16_units()
    )


def _parameter_count(model) -> int:
    """The model's parameters, lazy ones (not yet shaped) left out."""
    if model is None:
        return 0
    return sum(p.numel() for p in model.parameters() if not torch.nn.parameter.is_lazy(p))


class SuiteCLI(LightningCLI):
    """LightningCLI with the suite's defaults: seeding, overwrite-safe config saving, checkpointing, logging.

    The checkpoint callback is a CLI group (``--checkpoint.monitor``, ``--checkpoint.dirpath``, ...) whose
    defaults come from the domain: it keeps the best model on the domain's validation metric plus ``last.ckpt``
    in ``lightning_logs/<domain>/<config>/checkpoints`` (the first ``-c`` file's name) so ``fit --ckpt_path
    last`` resumes an interrupted run.
    """

    #: set while ``--print_config`` parses (:meth:`_print_config`): a config is printed without weights to run
    _printing_config = False

    def __init__(
        self,
        model_class=None,
        datamodule_class=None,
        *,
        domain: str,
        monitor: str = "val/loss",
        monitor_mode: str = "min",
        description: str | None = None,
        prog: str | None = None,
        links: tuple[tuple[str, str], ...] = (),
        args=None,
        run: bool = True,
        **kwargs,
    ):
        self._domain = domain
        # replaced by the first config file's folder (_checkpoint_folder_of_config)
        self._default_checkpoint_dir = f"lightning_logs/{domain}/checkpoints"
        # what the data module and the model share, written once in data.* (the task's CLI_LINKS, then these)
        self._links = (*getattr(model_class, "CLI_LINKS", ()), *links)
        self._monitor = monitor
        self._monitor_mode = monitor_mode
        parser_kwargs = dict(kwargs.pop("parser_kwargs", None) or {})
        if description:
            parser_kwargs.setdefault("description", description)
        if prog:
            parser_kwargs.setdefault("prog", prog)
        kwargs["parser_kwargs"] = parser_kwargs
        kwargs.setdefault("save_config_callback", ConfigInCheckpoints)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("trainer_defaults", default_trainer_kwargs(domain))
        kwargs.setdefault("trainer_class", SuiteTrainer)
        self._log_folders: list[Path] = []  # the version_N folders this run reserved (_reserve_log_version)
        self._given_args = sys.argv[1:] if args is None else args  # which sub-command's parser to build
        self._only_subcommand: str | None = None  # set by _add_subcommands: the one built (None: all four)
        try:
            super().__init__(model_class, datamodule_class, args=args, run=run, **kwargs)
        except BaseException:
            self._remove_unlogged_versions()
            raise

    def _set_seed(self) -> None:
        """Lightning's, except that ``--seed_everything true`` is a random seed, as its help says: Lightning's
        ``seed_everything(None)`` takes 0, so every such run had seed 0 (:func:`_random_seed`). The seed drawn
        is written into the config, so config.yaml and the checkpoints (:class:`ConfigInCheckpoints`) record it."""
        if self._get(self.config, "seed_everything") is True:
            (self.config[self.subcommand] if self.subcommand else self.config)["seed_everything"] = _random_seed()
        super()._set_seed()

    def parse_arguments(self, parser, args) -> None:
        """Parse, then check ``--ckpt_path`` before anything is built: ``best`` (and ``last`` outside ``fit``)
        become files of ``--checkpoint.dirpath`` (:func:`saved_checkpoint`), a missing file is a
        FileNotFoundError, and a checkpoint of another task a :class:`shared.task.CheckpointMismatchError`
        naming the task and model it holds (LightningCLI would re-parse its hyperparameters as this task's
        arguments and fail with "does not accept option ...", which does not say what the file is). A ``-c``
        file named from the suite's folder is found from any working directory
        (:func:`_suite_config_files`)."""
        given = list(args if args is not None else sys.argv[1:])
        from_argv = args is None
        if (from_argv or isinstance(args, (list, tuple))) and (found := _suite_config_files(given)) != given:
            args = given = found
        if (without := _without_print_config(given)) != given:
            self._print_config(parser, given, without)  # exits
        _check_config_files(given)
        network = inspect.signature(self.model_class.__init__).parameters.get("network") if self.model_class else None
        if network is not None and network.default is inspect.Parameter.empty and not self._defaults_elsewhere():
            _check_network_given(given)  # required: a config names it
        self._ckpt_hparams: dict = {}  # read once here, re-applied by _parse_ckpt_path
        self._ckpt_data_hparams: dict = {}  # the data settings it trained with (compared before fit and test)
        self._ckpt_alias: str | None = None  # "best" / "last": the file this config's latest fit left
        self._ckpt_fit_loop: dict | None = None  # its fit's loop counters (an evaluation logs at its step)
        self._ckpt_fit_config: str | None = None  # its fit's whole config, YAML (ConfigInCheckpoints)
        with warnings.catch_warnings():
            if from_argv and args is not None:  # sys.argv's, with the suite's config files found
                warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        self._expand_home(config, subcommand)
        for group, cls in (("model", self.model_class), ("data", self.datamodule_class)):
            _check_nulls(config.get(group), group, cls)
        self._check_network_links(config)
        self._checkpoint_mode(config)
        # the folders as given, before they are derived from the config's name and the root dir below: a
        # checkpoint's config (ConfigInCheckpoints) keeps these, so a rerun from it writes its own folders
        self.save_config_kwargs = {**self.save_config_kwargs, "given_folders": _folders(config)}
        self._checkpoint_folder_of_config(config)
        self._follow_root_dir(config)
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        _check_local_ckpt_path(ckpt_path)
        if subcommand in ("validate", "test", "predict") and not (self._printing_config and ckpt_path is None):
            ckpt_path = _weights_to_evaluate(subcommand, ckpt_path)
            self.config[subcommand]["ckpt_path"] = ckpt_path
        if subcommand == "fit" and ckpt_path == "last":
            ckpt_path = _resume_from(config.get("checkpoint.dirpath"))
            self.config[subcommand]["ckpt_path"] = ckpt_path
            if ckpt_path == "last" and "://" not in str(config.get("checkpoint.dirpath")):
                last = saved_checkpoint("last", config.get("checkpoint.dirpath"))
                self._read_checkpoint(last, config, option="--ckpt_path last")
        alias = self._ckpt_alias = ckpt_path if ckpt_path in ("best", "last") else None
        # fit's "best" too: Lightning knows it only inside the fit that found it, so `fit --ckpt_path best` in
        # a new process failed with "ModelCheckpoint is not configured to save the best model" (fit's "last"
        # is Lightning's, above)
        evaluating = subcommand in ("validate", "test", "predict")
        if alias and (evaluating or (subcommand, alias) == ("fit", "best")):
            ckpt_path = saved_checkpoint(alias, config.get("checkpoint.dirpath"))
            self.config[subcommand]["ckpt_path"] = ckpt_path
            goes_on = " (the fit goes on from the state saved in it)" if subcommand == "fit" else ""
            rank_zero_info(f"--ckpt_path {alias}: {ckpt_path}{goes_on}")
        if ckpt_path and config.get("model.pretrained_backbone"):
            # the checkpoint holds every weight: reading the file training started from again would only fail
            # where it is gone (another machine, another working folder: transfer.yaml names a relative path)
            rank_zero_info(
                f"--ckpt_path {ckpt_path}: the backbone comes from the checkpoint; model.pretrained_backbone "
                f"{config['model.pretrained_backbone']} is not read"
            )
            config["model.pretrained_backbone"] = None
        if subcommand and self.config[subcommand].get("weights_only") is None:
            # what Lightning reads itself (last, best, a file) is read weights-only too: code pickled in a file
            # never runs, and the suite's checkpoints hold plain tensors and containers (URLs are refused above)
            self.config[subcommand]["weights_only"] = True
        if not ckpt_path or ckpt_path in _SPECIAL_CKPT_PATHS:
            return  # resolved by Lightning
        self._read_checkpoint(ckpt_path, config)
        if subcommand != "fit" and self.model_class is not None:  # a fit names them all (_parse_ckpt_path)
            self._report_other_network(ckpt_path, config)

    def _expand_home(self, config, subcommand: str | None) -> None:
        """A leading ``~`` in the options that name files and folders (``--ckpt_path``,
        ``--model.predict_dir`` and the data module's :data:`shared.data.SplitLoaders.PATH_SETTINGS`) is the
        home folder, here for all: a shell expands it only in a word of its own, so
        ``--data.data_path=~/lidc``, a quoted ``'~/x/last.ckpt'`` or ``~/lidc`` in a YAML file failed as
        "~/lidc/test/images: no such folder"."""
        keys = [f"data.{name}" for name in getattr(self.datamodule_class, "PATH_SETTINGS", ())]
        for key in [*keys, "model.predict_dir"]:
            if config.get(key) is not None:
                config[key] = map_paths(config[key], os.path.expanduser)
        if subcommand and isinstance(ckpt_path := self.config[subcommand].get("ckpt_path"), str):
            self.config[subcommand]["ckpt_path"] = os.path.expanduser(ckpt_path)

    def _check_network_links(self, config) -> None:
        """A link (``CLI_LINKS``) into an argument the configured network does not take was applied to nothing,
        unsaid (a typo, or a link copied onto a network without that argument): the value never reached it."""
        inside = "model.network.init_args."
        network = config.get("model.network")
        class_path = getattr(network, "class_path", None)
        module, _, name = str(class_path).rpartition(".")
        cls = getattr(sys.modules.get(module), name, None)  # imported by the parse: nothing new is imported
        if cls is None:
            return
        takes = inspect.signature(cls.__init__).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in takes.values()):
            return
        for source, target, *_ in self._links:
            argument = target[len(inside) :].split(".")[0] if target.startswith(inside) else None
            if argument and argument not in takes:
                known = ", ".join(k for k in takes if k != "self")
                raise ConfigError(
                    f"the link {source} -> {target} (CLI_LINKS) names an argument {cls.__name__} does not take: "
                    f"{argument!r} (it takes {known})"
                )

    def _checkpoint_mode(self, config) -> None:
        """``--checkpoint.mode`` when not given: the domain's for its own monitor; for another
        ``--checkpoint.monitor`` the mode its name implies (:func:`shared.cli_help.metric_mode`: ``min`` for a
        loss), else the domain's, warned (``--checkpoint.monitor val/loss`` in a domain ranked by an accuracy
        had kept the highest loss as the best)."""
        if config.get("checkpoint.mode") is not None:
            return
        monitor = config.get("checkpoint.monitor")
        mode = None if monitor in (None, self._monitor) else metric_mode(monitor)
        if mode is None and monitor not in (None, self._monitor):
            rank_zero_warn(
                f"--checkpoint.monitor {monitor} without --checkpoint.mode: the best checkpoint is the one "
                f"with its {'highest' if self._monitor_mode == 'max' else 'lowest'} value (--checkpoint.mode "
                f"{self._monitor_mode}, the domain's for {self._monitor}); give --checkpoint.mode min or max"
            )
        config["checkpoint.mode"] = mode or self._monitor_mode

    def _print_config(self, parser, given: list[str], without: list[str]) -> None:
        """``--print_config``: jsonargparse prints during the parse, before the folders that follow the config
        file and ``--trainer.default_root_dir`` are worked out (:meth:`_checkpoint_folder_of_config`,
        :meth:`_follow_root_dir`), so it showed ``lightning_logs/<domain>/checkpoints``, where no run writes.
        Parsed once without it, then printed with those folders given explicitly, as the run will use them (a
        printed config run again keeps them)."""
        # without --ckpt_path it is printed as it is (null), as the run would refuse it: "predict needs
        # trained weights" answered `predict -c quick.yaml --print_config`, asked where predict writes
        self._printing_config = True
        with warnings.catch_warnings():  # Lightning's note on args given beside sys.argv: ours are sys.argv's
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            self.parse_arguments(parser, without)
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        folders = ["--checkpoint.dirpath", str(config["checkpoint.dirpath"])]
        folders += ["--checkpoint.mode", str(config["checkpoint.mode"])]  # as resolved (_checkpoint_mode)
        loggers = config.get("trainer.logger")
        if loggers and not isinstance(loggers, bool):
            as_given = [logger.as_dict() for logger in (loggers if isinstance(loggers, list) else [loggers])]
            folders += ["--trainer.logger", json.dumps(as_given if isinstance(loggers, list) else as_given[0])]
        parser.parse_args([*given, *folders])  # prints, and exits

    def _checkpoint_folder_of_config(self, config) -> None:
        """Checkpoints go to ``lightning_logs/<domain>/<first -c file's name>/checkpoints`` (:func:`config_run_name`),
        so that each config, a copied one too, keeps its own ``last.ckpt`` (configs of one task sharing a folder
        made ``predict -c transfer.yaml --ckpt_path last`` take the quick run's network). The first file names it:
        ``-c prob_unet.yaml -c gpu.yaml`` keeps the model config's folder. A ``checkpoint.dirpath`` given in a
        file or on the command line wins; without ``-c`` the domain's default folder stays."""
        files = config.get("config") or []
        if files and config.get("checkpoint.dirpath") == self._default_checkpoint_dir:
            name = config_run_name(Path(str(files[0])))
            config["checkpoint.dirpath"] = f"lightning_logs/{self._domain}/{name}/checkpoints"

    def _follow_root_dir(self, config) -> None:
        """``--trainer.default_root_dir DIR`` moves the logs and checkpoints too: the defaults (and the shipped
        configs) put them under ``lightning_logs/<domain>``, which Lightning does not derive from the root dir, so
        they stayed there. Paths under ``lightning_logs`` move under ``DIR`` with the rest of their path, so
        ``DIR/<domain>/<config>/checkpoints`` (dropping ``<domain>`` had put every domain's ``quick.yaml`` into
        ``DIR/quick/checkpoints``, where ``--ckpt_path last`` took another domain's file); others are left as
        given. ``--trainer.default_root_dir lightning_logs`` changes nothing, nor does the default root dir,
        ``lightning_logs/<domain>`` (:func:`default_trainer_kwargs`)."""
        default = Path("lightning_logs")
        root = config.get("trainer.default_root_dir")
        if not root or "://" in str(root) or Path(root) in (default, default / self._domain):
            return  # a remote root (s3://...) is not a local path to move into

        def moved(path: str) -> str:
            try:
                return str(Path(root) / Path(path).relative_to(default))
            except ValueError:  # not under the default folder: the user's own choice
                return path

        loggers = config.get("trainer.logger")
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            init_args = getattr(logger, "init_args", None)
            if init_args is not None and init_args.get("save_dir"):
                init_args["save_dir"] = moved(str(init_args["save_dir"]))
        if config.get("checkpoint.dirpath"):
            config["checkpoint.dirpath"] = moved(str(config["checkpoint.dirpath"]))

    def _defaults_elsewhere(self) -> bool:
        """Settings may also come from default config files or the environment (LightningCLI's
        ``parser_kwargs``, jsonargparse's ``JSONARGPARSE_DEFAULT_ENV``): then no command line lacks them."""
        kwargs = getattr(self, "parser_kwargs", None) or {}
        groups = [kwargs, *(v for v in kwargs.values() if isinstance(v, dict))]
        given = any(g.get("default_config_files") or g.get("default_env") for g in groups)
        return given or os.environ.get("JSONARGPARSE_DEFAULT_ENV", "").lower() in ("1", "true", "yes")

    def _read_checkpoint(self, ckpt_file: str, config, option: str = "--ckpt_path") -> None:
        """The checks of a ``--ckpt_path`` file (``fit --ckpt_path last``'s too: a truncated file was a
        56-line traceback, another task's a message naming no file) and the data's classes and channels; keeps
        the settings it was trained with, which :meth:`_parse_ckpt_path` applies (for ``last`` as for a path:
        ``last`` alone had ignored them) and the evaluations and a resume compare the data with."""
        if self.model_class is None:
            return
        checkpoint = check_checkpoint_file(ckpt_file, self.model_class, option=option)
        self._ckpt_hparams = dict(checkpoint.get("hyper_parameters") or {})
        self._ckpt_fit_loop = (checkpoint.get("loops") or {}).get("fit_loop")
        self._ckpt_fit_config = checkpoint.get("suite_config")
        # its paths as the fit resolved them (ConfigInCheckpoints): a relative one is the fit's working
        # directory's, which another command's need not be; an older checkpoint has only the settings as given
        data_paths = checkpoint.get("suite_data_paths") or {}
        self._ckpt_data_hparams = {**(checkpoint.get("datamodule_hyper_parameters") or {}), **data_paths}
        self._check_shared_settings(ckpt_file, config)

    def _check_shared_settings(self, ckpt_path: str, config) -> None:
        """The classes and input channels the data gives the model (``CLI_LINKS``) must be the checkpoint's: one
        domain's classifier tested on the other's data otherwise ends in a 50-line size-mismatch traceback. Sizes
        may differ (the networks are convolutional)."""
        for source, target, *compute in self._links:
            if not target.endswith(("class_names", "num_classes", "in_channels")):
                continue
            trained: object = self._ckpt_hparams
            for key in target.removeprefix("model.").split("."):
                trained = trained.get(key) if isinstance(trained, dict) else None
            given = config.get(source)
            if trained is None or given is None:
                continue
            given = compute[0](given) if compute else given
            if given != trained:
                raise CheckpointMismatchError(
                    f"{ckpt_path} was trained with {target} = {trained!r}, but this command's {source} gives "
                    f"{given!r}: use the config it was trained with (or --{source} to match)"
                )

    def _report_other_network(self, ckpt_path: str, config) -> None:
        """Warn when the checkpoint's network is not the config's. Lightning builds the checkpoint's (its
        hyper-parameters override the config), so ``test -c unet.yaml`` on a Prob. U-Net file silently reports
        the Prob. U-Net's figures; the warning names both, so nobody files them under the wrong model."""
        differs = network_differences(self._ckpt_hparams.get("network"), config.get("model.network"))
        if not differs:
            return
        option, old, new = differs[0]
        if option.endswith(".class_path"):
            differs = f"{old}, not the config's {new}"
        else:
            differs = ", ".join(f"{k.rpartition('.')[2]}={a!r} (config: {b!r})" for k, a, b in differs)
        rank_zero_warn(
            f"--ckpt_path {ckpt_path} holds another network than the config: {differs}. The checkpoint's is "
            "the one built and reported (its hyper-parameters override the config)"
        )

    def _parse_ckpt_path(self) -> None:
        """Lightning's: a checkpoint's hyper-parameters override the config (for ``fit --ckpt_path last`` too,
        which Lightning resolves only later: the config's settings were taken there, a path's elsewhere); a fit
        names the model settings given otherwise (:meth:`_warn_settings_not_taken`). Checkpoints written before
        the optimiser moved to ``model.optimizer`` never get here: they predate ``model.network`` as well, and
        :func:`shared.task.check_checkpoint_file` refused them when the file was read."""
        subcommand = self.config.get("subcommand")
        hparams = dict(getattr(self, "_ckpt_hparams", None) or {})  # what parse_arguments read from the file
        hparams.pop("_instantiator", None)
        if not hparams:  # no checkpoint given (or built with run=False: no subcommand)
            return
        ckpt_path = str(self.config[subcommand].get("ckpt_path"))
        if subcommand == "fit":
            self._warn_settings_not_taken(ckpt_path, hparams)
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        # needed: the checkpoint's settings reach the config the model is built from here alone (no file read)
        self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)

    def _warn_settings_not_taken(self, ckpt_path: str, hparams: dict) -> None:
        """``fit --ckpt_path`` goes on with the checkpoint's model settings (LightningCLI's rule for a path,
        and the network must be the one its weights fit): each one this command gives otherwise is named with
        both values (``--model.max_false_alarm 0.3`` was dropped for the saved 0.1 unsaid, and a deeper
        backbone ended in a 40-line traceback)."""
        given = plain_values(self.config["fit"].get("model") or {})
        saved = plain_values(hparams)
        differs = network_differences(saved.get("network"), given.get("network"))
        differs += [
            (f"model.{key}", saved[key], given[key])
            for key in sorted(set(saved) & set(given) - {"network"})
            if saved[key] != given[key]
        ]
        if differs:
            listed = "; ".join(f"{key} {new!r} (the checkpoint's: {old!r})" for key, old, new in differs)
            backbone = (
                " (its backbone can come from the checkpoint: --model.pretrained_backbone with "
                "--model.pretrained_prefix)"
                if "pretrained_backbone" in given
                else ""
            )
            rank_zero_warn(
                f"fit --ckpt_path {ckpt_path} resumes the saved model with its own settings, not this "
                f"command's: {listed}. The checkpoint's are used; for other ones start a new fit{backbone}"
            )

    def before_fit(self) -> None:
        """A resume on other data than its checkpoint's is said (:meth:`_warn_resumed_on_other_data`); a hint,
        once per fit: fp32 training on a CPU with bfloat16 units may leave much of its speed unused. Only for a
        model of :data:`_BF16_HINT_PARAMETERS` or more: it was measured on the 1.1 M Prob. U-Net, and printed
        for the 112 K boxes-only accident model too, where a step's time is mostly not its matrix products."""
        self._warn_resumed_on_other_data()
        trainer = self.trainer
        self._warn_no_validation()
        timed = any(isinstance(c, Timer) for c in trainer.callbacks)  # --trainer.max_time (Lightning's Timer)
        budgeted = any(isinstance(c, FitScheduleToBudget) for c in trainer.callbacks)  # the benchmarks' own
        if timed and not budgeted and not trainer.fast_dev_run:
            trainer.callbacks.append(FitScheduleToBudget(seconds=None))  # the schedule follows the time
        # Ctrl-C saves the fit (LastIsLastCheckpoint.on_exception): one inside an optimiser step saved
        # half-updated weights as a resumable checkpoint, so it waits for the step in hand
        trainer.callbacks.append(CtrlCBetweenSteps())
        if _bf16_hint_applies(trainer, self.model):
            rank_zero_info(
                "This CPU has bfloat16 units (AMX / AVX512-BF16): --trainer.precision bf16-mixed may train faster "
                "(the medical Prob. U-Net, 1.1 M parameters, stepped 3x faster at 128 px, 1.3x at 64 px crops; "
                "the numerics change: see the README's 'bf16 on CPUs that have it')"
            )
        self._log_settings()

    def _warn_no_validation(self) -> None:
        """A fit that validates never (``check_val_every_n_epoch`` above ``max_epochs``, ``limit_val_batches``
        0) keeps no best checkpoint, and ``test --ckpt_path best`` after it fails: said at its start."""
        trainer = self.trainer
        every, epochs, limit = trainer.check_val_every_n_epoch, trainer.max_epochs, trainer.limit_val_batches
        if trainer.fast_dev_run:
            return
        if limit == 0:
            why = "--trainer.limit_val_batches is 0"
        elif every is not None and epochs not in (None, -1) and every > epochs:
            why = f"--trainer.check_val_every_n_epoch {every} is more than --trainer.max_epochs {epochs}"
        else:
            return
        monitor = getattr(trainer.checkpoint_callback, "monitor", None)
        best = f": no best checkpoint on {monitor} is kept (`--ckpt_path best` finds none)" if monitor else ""
        rank_zero_warn(
            f"this fit runs no validation, since {why}{best}. Lower --trainer.check_val_every_n_epoch (or "
            "raise --trainer.max_epochs) and keep --trainer.limit_val_batches above 0 to validate"
        )

    def _warn_resumed_on_other_data(self) -> None:
        """``fit --ckpt_path`` with another image size or data set than the checkpoint's fit went on unsaid,
        and the best checkpoint then ranked validation scores of both set-ups together (a 32 px resume
        replaced the 64 px best and deleted it). Warned as ``validate`` / ``test`` warn, naming both values:
        going on at another size or on more data can be the point."""
        datamodule, trained = self.datamodule, self._ckpt_data_hparams
        if not trained or not self.config["fit"].get("ckpt_path"):
            return
        self._say_uncomparable_paths("fit")
        checks = (("other_input_than", (trained,)), ("other_data_set_than", (trained, "fit")))
        found = [getattr(datamodule, name)(*args) for name, args in checks if hasattr(datamodule, name)]
        found = [what for what in found if what]
        if not found:
            return
        callback = self.trainer.checkpoint_callback
        ranked = (
            f"; the best checkpoint (--checkpoint.monitor {callback.monitor}) ranks the scores of both "
            "set-ups together, so a score on these settings can replace (and delete) the best one of the "
            "checkpoint's"
            if callback is not None and callback.monitor and callback.save_top_k
            else ""
        )
        rank_zero_warn(
            f"fit --ckpt_path {self.config['fit']['ckpt_path']} was fitted with {'; '.join(found)}: this "
            f"resume goes on with other data or input than it trained on{ranked}. Give the checkpoint's "
            "settings to go on as it trained, or start a new fit (another --checkpoint.dirpath keeps its "
            "files apart)"
        )

    def before_validate(self) -> None:
        self._warn_other_split("validate")
        self._warn_other_input("validate")
        self._log_at_checkpoint_step()
        self._log_settings()

    def before_test(self) -> None:
        self._warn_other_split("test")
        self._warn_other_input("test")
        self._log_at_checkpoint_step()
        self._log_settings()

    def after_validate(self) -> None:
        self._say_where_logged("validate")

    def after_test(self) -> None:
        self._say_where_logged("test")

    def _log_settings(self) -> None:
        """Log the run's settings (:meth:`_run_settings`) to every logger: its ``hparams.yaml``, and for
        TensorBoard the HPARAMS tab (:func:`_start_tensorboard_session`). In place of Lightning's own, which
        logged the task's saved hyper-parameters: those leave out the network, optimiser and schedule (code,
        never saved as given: ``BaseTask.NOT_SAVED``) and ``seed_everything``, so a U-Net and a Prob. U-Net
        fit, or two learning rates, logged the same. ``--trainer.enable_autolog_hparams false`` logs none."""
        trainer = self.trainer
        if not trainer.enable_autolog_hparams:
            return
        for part in (self.model, self.datamodule):  # what save_hyperparameters(logger=False) sets
            if part is not None:
                part._log_hyperparams = False  # Lightning logs the graph and saves; the settings are ours
        settings = self._run_settings()
        for logger in trainer.loggers:
            logger.log_hyperparams(settings)
            if isinstance(logger, TensorBoardLogger) and rank_zero_only.rank == 0:
                _start_tensorboard_session(logger, settings)

    def _run_settings(self) -> dict:
        """The settings that tell this run apart, as flat dotted keys (``model.optimizer.init_args.lr``: one
        HPARAMS column each): the model's (network, optimiser, schedule, pretrained backbone) and the data's,
        ``seed_everything``, the trainer's :data:`TRAINING_SETTINGS` and ``ckpt_path``. ``validate`` and
        ``test`` log all but the data and ``ckpt_path`` as the fit that wrote the checkpoint had them (its
        ``suite_config``): the checkpoint keeps no optimiser, so the command's would be another run's, and its
        network is the one built. Where the checkpoint records no fit (``--ckpt_path none``), the model as
        built, without an optimiser or schedule."""
        config = self.config[self.subcommand]
        own = _flat_settings(config)
        trained = ("seed_everything", "model", *TRAINING_SETTINGS)
        if self.subcommand == "fit":
            settings = {key: value for key, value in own.items() if _under(key, trained)}
        elif self._ckpt_fit_config:
            fit = _flat_settings(yaml.safe_load(self._ckpt_fit_config))
            settings = {key: value for key, value in fit.items() if _under(key, trained)}
        else:
            unknown = ("model.optimizer", "model.lr_scheduler")
            settings = {k: v for k, v in own.items() if _under(k, ("model",)) and not _under(k, unknown)}
        settings.update((key, value) for key, value in own.items() if _under(key, ("data",)))
        if config.get("ckpt_path"):
            settings["ckpt_path"] = str(config["ckpt_path"])
        return dict(sorted(settings.items()))

    def _log_at_checkpoint_step(self) -> None:
        """``validate`` / ``test`` log at the checkpoint's step: Lightning restores its fit's loop counters
        (the step the loggers use) only to resume a fit, so every evaluation was logged at step 0."""
        if self._ckpt_fit_loop is not None:
            self.trainer.fit_loop.load_state_dict(self._ckpt_fit_loop)

    def _say_where_logged(self, subcommand: str) -> None:
        """Lightning's results table says nothing of the log folder the figures went to."""
        if folders := log_folders(self.trainer):
            step = self.trainer.global_step
            rank_zero_info(f"{subcommand}: results logged at step {step} to {', '.join(folders)}")

    def _warn_other_input(self, subcommand: str) -> None:
        """A checkpoint fitted at 32x32 and tested at the config's 64x64 scored 0.56 instead of 0.72, unsaid.
        Warned, not overridden: evaluating at another size can be the point (the trained one is named)."""
        datamodule = self.datamodule
        if not self._ckpt_data_hparams or not hasattr(datamodule, "other_input_than"):
            return
        if other := datamodule.other_input_than(self._ckpt_data_hparams):
            fixes = " ".join(
                f"--data.{k} {json.dumps(plain_values(self._ckpt_data_hparams[k]), separators=(',', ':'))}"
                for k in datamodule.INPUT_SETTINGS
                if k in self._ckpt_data_hparams
            )
            rank_zero_warn(
                f"--ckpt_path {self.config[subcommand].get('ckpt_path')} was fitted with {other}: this {subcommand} "
                f"feeds the network images at another size than it learnt, which can lower its figures. {fixes} "
                "gives the trained size"
            )

    def _warn_other_split(self, subcommand: str) -> None:
        """A checkpoint evaluated on a split drawn with other settings than its training's (``--data.seed 1``
        after ``fit`` with seed 0) is scored partly on images it trained on, and nothing said so. One evaluated
        on another data set may be a choice (transfer), or ``last``, the config's latest fit, on other data."""
        datamodule = self.datamodule
        if not self._ckpt_data_hparams or not hasattr(datamodule, "other_split_than"):
            return
        ckpt_path = self.config[subcommand].get("ckpt_path")
        self._say_uncomparable_paths(subcommand)
        differs = datamodule.other_split_than(self._ckpt_data_hparams, subcommand)  # refuses other inputs first
        if other := datamodule.other_data_set_than(self._ckpt_data_hparams, subcommand):
            alias = self._ckpt_alias
            latest = f" (`{alias}`: of this config's latest fit, whatever data it read)" if alias else ""
            rank_zero_warn(
                f"--ckpt_path {ckpt_path}{latest} was fitted on other data: {other}. This {subcommand} scores "
                "it on data it did not train on; for the figures of a fit on this data, give that fit's checkpoint"
            )
        elif differs:
            rank_zero_warn(
                f"--ckpt_path {ckpt_path} was trained with {differs}: on the same data, this {subcommand} split "
                "may hold images the network trained on. Give the checkpoint's settings for figures on unseen data"
            )

    def _say_uncomparable_paths(self, subcommand: str) -> None:
        """A checkpoint older than its recorded absolute data paths, given a relative path other than this
        command's, was said to be "fitted on other data" from another working directory, though the folder was
        the same, and the checks of its split then skipped. Said once instead: that it cannot be told, and that
        it is checked as the same data set (:meth:`shared.data.SplitLoaders.uncomparable_paths`)."""
        datamodule = self.datamodule
        if not self._ckpt_data_hparams or not hasattr(datamodule, "uncomparable_paths"):
            return
        if unknown := datamodule.uncomparable_paths(self._ckpt_data_hparams, subcommand):
            rank_zero_info(
                f"--ckpt_path {self.config[subcommand].get('ckpt_path')} predates checkpoints that record the "
                f"absolute data paths of their fit: its {unknown} is relative to the fit's working directory, "
                "which it does not record, so whether this is the data it was fitted on cannot be told. It is "
                "checked as the same data set (split settings, and the groups it trained on)"
            )

    def before_predict(self) -> None:
        """A task that writes prediction files but was given nowhere to write them says so (otherwise ``predict``
        ends with exit status 0 and nothing on disk)."""
        self._warn_other_input("predict")
        if hasattr(self.model, "predict_dir") and not self.model.predict_dir:
            rank_zero_warn(
                "predict: --model.predict_dir is not set, so no prediction is written (give a folder, e.g. "
                f"--model.predict_dir predictions/{self._domain})"
            )

    def _run_subcommand(self, subcommand: str) -> None:
        """Lightning's; ``validate`` / ``test`` / ``predict`` of a checkpoint whose fit had
        ``--trainer.max_time`` say nothing of its Timer state: Lightning asked to "add the following callbacks:
        ['Timer']", though the elapsed time it keeps is only for resuming that fit (an evaluation never trains,
        and a Timer added would limit nothing). Other missing callbacks are still warned about."""
        with warnings.catch_warnings():
            if subcommand != "fit":
                warnings.filterwarnings("ignore", message=_FIT_ONLY_CALLBACKS_WARNING)
            super()._run_subcommand(subcommand)

    def subcommands(self=None) -> dict[str, set[str]]:
        """Lightning's four sub-commands and the Trainer arguments each skips; on a CLI whose command line names
        one (set by :meth:`_add_subcommands`), that one alone, so Lightning builds its parser only. Each of the
        four parsers holds every Trainer, task and data module option: building all four for the one a command
        runs was a third of a tiny fit's CPU time. Still callable on the class (``SuiteCLI.subcommands()``),
        as Lightning's staticmethod is: then all four."""
        every = LightningCLI.subcommands()
        only = getattr(self, "_only_subcommand", None)
        return {only: every[only]} if only else every

    def _add_subcommands(self, parser, **kwargs) -> None:
        """Lightning's sub-commands, with whole-sentence help (see ``SUBCOMMAND_HELP``); only the one the
        command line names is built (:meth:`subcommands`, :func:`_named_subcommand`). ``predict`` keeps
        nothing of what each ``predict_step`` returns (``--return_predictions`` defaults to false, Lightning's
        ``Trainer.predict`` to true): every task writes its files as it goes, and the kept list (an instances
        model's full-size masks) grew to 9.7 GB over 160 photos. ``--return_predictions true`` still keeps it."""
        # a default config file or the environment may hold every sub-command's section: all four then
        self._only_subcommand = None if self._defaults_elsewhere() else _named_subcommand(self._given_args)
        super()._add_subcommands(parser, **kwargs)
        for choice in parser._subcommands_action._choices_actions:
            choice.help = SUBCOMMAND_HELP.get(choice.dest, choice.help)
        for name, subparser in self._subcommand_parsers.items():
            _describe_subcommand(subparser, name, parser.description)
        for name, subparser in self._subcommand_parsers.items():  # Trainer's docstrings: in-process "best"
            next(a for a in subparser._actions if a.dest == "ckpt_path").help = CKPT_PATH_HELP[name]
        if predict := self._subcommand_parsers.get("predict"):
            predict.set_defaults(return_predictions=False)
            for action in predict._actions:  # Trainer.predict's docstring says "True by default"
                if action.dest == "return_predictions":
                    action.help = (
                        "Keep what each predict_step returns until the end (in memory; the files are written "
                        "either way)."
                    )

    def instantiate_trainer(self, **kwargs):
        """The trainer, plus :class:`shared.prediction_set.PredictionSet` (not a CLI option: always on);
        the run's log version is taken first (:meth:`_reserve_log_version`). ``predict`` gets no logger, nor a
        config.yaml: it logs nothing (Lightning refuses ``self.log`` there), and each predict run took a
        version_N of its own that listed as an empty run (with logging off its config.yaml would overwrite a
        fit's in the root dir)."""
        if self.subcommand == "predict":
            kwargs["logger"] = False
        self._reserve_log_version()
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except Exception as err:
            self._refuse_trainer_argument(err)
            raise
        if self.subcommand in (None, "fit"):  # only a fit wraps the model in torch's DDP
            given = self._get(self.config_init, "trainer", default={}).get("strategy")
            find_unused_parameters_where_idle(trainer, self.model, given)
        trainer.callbacks.append(PredictionSet())
        if self.subcommand == "predict":
            trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, SaveConfigCallback)]
        # --trainer.logger false: the default LearningRateMonitor would refuse to start
        if not trainer.loggers:
            trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, LearningRateMonitor)]
        return trainer

    def _refuse_trainer_argument(self, err: Exception) -> None:
        """A Trainer argument Lightning refuses (``--trainer.devices 1.5``, ``--trainer.accelerator foo``) ends
        the command as the parser's wrong values do (:func:`_wrong_value`): one line naming the option as typed,
        ``<prog> fit: --trainer.devices: <Lightning's message> (got '1.5')``, and exit status 2. Lightning's
        message named ``devices`` alone, after ``error: TypeError:``. The argument is the one the message names
        (:func:`_trainer_argument`), else the one whose reading raised it (:func:`_trainer_argument_raised_in`:
        a GPU's ``devices``, ``max_time``, a ``precision`` whose package is missing, which was a traceback).
        "(got ...)" is left out where the message quotes the value, and for null and ``auto`` (the default,
        which Lightning's message names resolved: "received `accelerator='cpu'` ... (got 'auto')"). Returns (the
        caller re-raises) for other errors, one naming several arguments, and with ``SUITE_TRACEBACK=1``."""
        if os.environ.get("SUITE_TRACEBACK") == "1":
            return
        given = self._get(self.config, "trainer", default=None) or {}
        given = given if hasattr(given, "get") else {}
        message = str(err)
        name = _trainer_argument(message, given) if _is_input_error(err) else None
        if not _trainer_arguments_named(message):  # names none (of several not told apart: given up above)
            raised_in = _trainer_argument_raised_in(err)
            if raised_in is not None and (_is_input_error(err) or isinstance(err, (ImportError, TypeError))):
                name = raised_in
                if isinstance(err, ImportError):
                    message = _missing_package(err)
                elif name == "max_time":  # Timer's "`Timer(duration='1:00')` is not a valid duration", a dict's
                    message = (  # TypeError "'hour' is an invalid keyword argument for __new__()"
                        'expected a duration "DD:HH:MM:SS" (00:12:00:00: 12 hours) or a mapping of days, hours, '
                        "minutes and seconds ({hours: 12})"
                    )
        if name is None:
            return
        value = given.get(name)
        got = "" if value in (None, "auto") or _quotes(message, value) else f" (got {value!r})"
        parser = self._subcommand_parsers.get(self.subcommand) or self.parser
        message = " ".join(message.split())  # one line
        sys.stderr.write(f"{parser.prog.replace(' [options]', '')}: --trainer.{name}: {message}{got}\n")
        raise SystemExit(2) from err

    def _reserve_log_version(self) -> None:
        """The CSV and TensorBoard loggers given no version (the defaults) get one, the same for both, taken
        before the run starts (:func:`reserve_log_version`). Lightning picks the next free ``version_N`` by
        listing the folder and makes it later, so two fits of one config started together both logged into
        ``csv/version_0`` (metrics.csv interleaving both runs' rows, config.yaml holding one run's seed), and a
        run's CSV and TensorBoard folders could differ (``v_num=0_1``). Only in rank 0 of a run (other ranks
        write no logs), and not for a ``fast_dev_run`` (its loggers are replaced) or a remote ``save_dir``."""
        trainer_config = self._get(self.config_init, "trainer", default={})
        loggers = trainer_config.get("logger")
        if self.subcommand in (None, "predict") or trainer_config.get("fast_dev_run"):
            return
        if rank_zero_only.rank != 0:
            return
        unversioned = [
            logger
            for logger in (loggers if isinstance(loggers, list) else [loggers])
            # Lightning keeps the constructor's version in _version (None: the next free one, when first asked)
            if isinstance(logger, (CSVLogger, TensorBoardLogger)) and logger._version is None
            and "://" not in str(logger.root_dir)
        ]  # fmt: skip
        if unversioned:
            version = reserve_log_version([Path(logger.root_dir) for logger in unversioned])
            for logger in unversioned:
                logger._version = version
            folders = [Path(os.path.abspath(logger.root_dir), f"version_{version}") for logger in unversioned]
            self._log_folders = list(dict.fromkeys(folders))

    def _remove_unlogged_versions(self) -> None:
        """A command that failed before its first logged value (a ValueError at setup, a test stopped by a
        bad batch) leaves no ``version_N``: each listed as an empty run beside the real ones. Only the folders
        this run reserved (no other run logs into them), and only when none holds a value; its loggers are
        closed first, so that nothing is written there afterwards and their last values are on disk."""
        if not self._log_folders:
            return
        for logger in getattr(getattr(self, "trainer", None), "loggers", None) or []:
            logger.finalize("failed")
        if not any(map(holds_logged_values, self._log_folders)):
            for folder in self._log_folders:
                shutil.rmtree(folder, ignore_errors=True)

    def _instantiate_trainer(self, config: dict, callbacks: list):
        """Lightning's, except that ``--trainer.enable_checkpointing false`` drops the suite's own checkpoint
        callback (the ``checkpoint.*`` group) instead of failing on it."""
        if config.get("enable_checkpointing") is False:
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        return super()._instantiate_trainer(config, callbacks)

    def add_arguments_to_parser(self, parser) -> None:
        # what the data module and the model share is written once (in data.*) and copied to the model
        for source, target, *compute in self._links:  # (source, target[, compute_fn])
            parser.link_arguments(source, target, *compute)
        parser.add_lightning_class_args(LastIsLastCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": self._monitor,
                "checkpoint.mode": None,  # given, or resolved from the monitor (_checkpoint_mode)
                "checkpoint.save_last": SAVE_LAST,
                "checkpoint.dirpath": self._default_checkpoint_dir,
                "checkpoint.filename": "best-{epoch:02d}-{step}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        # Lightning's help says nothing of the folder the suite derives (_checkpoint_folder_of_config)
        dirpath = next(a for a in parser._actions if a.dest == "checkpoint.dirpath")
        mode = next(a for a in parser._actions if a.dest == "checkpoint.mode")
        mode.help = (
            f"min or max: which way the monitored metric is better. Default: {self._monitor_mode} for the "
            f"domain's {self._monitor}; for another --checkpoint.monitor, min for a loss (a name with "
            f"'loss'), else {self._monitor_mode}, with a warning."
        )
        dirpath.help = (
            f"Where checkpoints go. With -c FILE: lightning_logs/{self._domain}/<FILE's name>/checkpoints, so each "
            f"config keeps its own last.ckpt (--print_config shows it); DIR/{self._domain}/<FILE's name>/checkpoints "
            "with --trainer.default_root_dir DIR; without -c the default below. A remote path (s3://...) needs its fsspec package (s3fs) installed."
        )
        # Lightning's own help quotes its defaults ("Default: ``50``"), not the suite's (default_trainer_kwargs)
        for action in parser._actions:
            if action.dest in SUITE_DEFAULT_HELP:
                action.help = SUITE_DEFAULT_HELP[action.dest]


SAVE_LAST = True  # the suite keeps last.ckpt (--ckpt_path last), as SUITE_DEFAULT_HELP says

#: help of the options whose default the suite changes, where Lightning's help quotes Lightning's default
SUITE_DEFAULT_HELP = {
    "trainer.max_epochs": "Epochs to train (the suite's default 10; each config sets its own); -1: no limit.",
    "trainer.log_every_n_steps": "Steps between logged training values (the suite's default 10).",
    "trainer.gradient_clip_val": "Gradient clipping value (the suite's default 1.0); 0 or null: none.",
    "checkpoint.save_last": "Also keep last.ckpt, the run's last state, for --ckpt_path last (the suite's default "
    "true).",
}

#: ``--ckpt_path`` as the suite reads it (Lightning's help: "best" only after a fit in the same process, a
#: "registry" download, and the last fit's best checkpoint when none is given)
_FOUND = "found in the config's checkpoint folder, also by a new process"
CKPT_PATH_HELP = {
    "fit": f"Resume from: last (the config's last.ckpt), best (its best checkpoint; both {_FOUND}) or a "
    "local .ckpt file. Not set: train from the start.",
    **{
        name: f"The weights to {name}: best (the config's best checkpoint), last (its last.ckpt; both {_FOUND}) "
        "or a local .ckpt file; none: the network as the config builds it, untrained. Required."
        for name in ("validate", "test", "predict")
    },
}

#: the suite's own configs (``domains/<...>/configs/*.yaml``) are named by their stem alone
SUITE_DOMAINS = Path(__file__).resolve().parents[1] / "domains"


def config_run_name(config: Path) -> str:
    """The checkpoint folder name of a config file: its stem for the suite's own configs (``quick``) and for a
    file in the working directory (``mine``; ``<folder>-quick`` for a copy named like a suite config); else its
    path, from the working directory (or from the root outside it), joined by ``-``:
    ``expA/configs/quick.yaml`` -> ``expA-configs-quick``.
    ``expA/config.yaml`` and ``expB/config.yaml`` sharing ``config/`` made ``test --ckpt_path last`` take the
    other experiment's run, and a copy named ``quick.yaml`` would share the suite's ``quick/``."""
    path = config.resolve()
    if path.is_relative_to(SUITE_DOMAINS):
        return path.stem
    cwd = Path.cwd().resolve()
    if path.parent == cwd:  # by case too: on macOS and Windows disks Quick/ is the suite's quick/
        shipped = {p.stem.casefold() for p in SUITE_DOMAINS.glob("**/configs/*.yaml")}
        return f"{cwd.name}-{path.stem}" if path.stem.casefold() in shipped else path.stem
    parts = path.relative_to(cwd).parts if path.is_relative_to(cwd) else path.parts[1:]
    return "-".join([*parts[:-1], path.stem])


def reserve_log_version(folders: list[Path]) -> int:
    """A log version free in every one of ``folders`` (each logger's ``save_dir/name``), taken: ``version_N``
    is made in each, N one above the highest there (as Lightning numbers them). Making a folder fails where
    another run made it first; then the ones made are removed and the next N is tried, so two runs started
    together never share a version (Lightning's own lookup lists the folder, and both took ``version_0``)."""
    folders = list(dict.fromkeys(Path(os.path.abspath(folder)) for folder in folders))  # one mkdir per folder
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    taken = [
        int(number)
        for folder in folders
        for path in folder.glob("version_*")
        if (number := path.name.removeprefix("version_")).isdigit() and path.is_dir()
    ]
    version = max(taken, default=-1) + 1
    while True:
        made: list[Path] = []
        try:
            for folder in folders:
                (folder / f"version_{version}").mkdir()
                made.append(folder / f"version_{version}")
            return version
        except FileExistsError:  # another run's: none of this number is ours
            for path in made:
                path.rmdir()
            version += 1


#: trainer settings that change what a fit learns, logged with the model's and the data's
#: (:meth:`SuiteCLI._log_settings`)
TRAINING_SETTINGS = tuple(
    f"trainer.{name}"
    for name in ("max_epochs", "max_steps", "accumulate_grad_batches", "gradient_clip_val", "precision")
)


def _under(key: str, prefixes) -> bool:
    """Whether the dotted ``key`` is one of ``prefixes`` or lies below one (``model.optimizer.init_args.lr``
    under ``model.optimizer``; ``model.lr_scheduler_interval`` not under ``model.lr_scheduler``)."""
    return any(key == prefix or key.startswith(f"{prefix}.") for prefix in prefixes)


def _flat_settings(config) -> dict:
    """A config (parsed, or a saved one read as a dict) as ``{dotted key: plain value}``: jsonargparse's
    Namespace lists its leaves by dotted key, class_path + init_args included."""
    namespace = config if isinstance(config, Namespace) else dict_to_namespace(config)
    return {key: plain_values(value) for key, value in namespace.items()}


def _start_tensorboard_session(logger: TensorBoardLogger, settings: dict) -> None:
    """The run's record in TensorBoard's HPARAMS tab: its settings and no metric named, so that TensorBoard
    lists every scalar the run logs as its metrics (the monitored one, the test figures). Lightning's
    ``log_hyperparams`` names ``hp_metric`` (or the metrics it is given, logging a first value of each), and
    torch's ``SummaryWriter.add_hparams`` writes into a run folder of its own: so the session start is
    written here, as Lightning writes it, into the run's own event file.
    Not Lightning's ``_sanitize_params``: it logs None as "None" and keeps tensors (a 0-dim one fails ``hparams``)."""
    from torch.utils.tensorboard.summary import hparams

    kept = (bool, int, float, str)  # what it takes; None is left out (as torch leaves it)
    values = {k: v if isinstance(v, kept) else str(v) for k, v in settings.items() if v is not None}
    _, session_start, _ = hparams(values, {})
    logger.experiment._get_file_writer().add_summary(session_start)
    logger.experiment.flush()  # at once: under ddp_spawn this process's writer writes nothing else


def _random_seed() -> int:
    """A seed for ``--seed_everything true``: drawn from the OS's randomness in Lightning's allowed range, and
    said. A DDP rank that Lightning's launcher started runs the command again: it takes rank 0's seed, which the
    launcher passes on in ``PL_GLOBAL_SEED`` (the ranks' samplers shuffle by it and must agree); ranks started
    otherwise (torchrun, srun) cannot agree on a drawn seed, and are refused."""
    if rank_zero_only.rank != 0:
        inherited = os.environ.get("PL_GLOBAL_SEED")
        if inherited is None:
            raise ConfigError(
                f"--seed_everything true: rank {rank_zero_only.rank} of a run whose processes were started outside "
                "Lightning (torchrun, srun) cannot agree with the other ranks on a random seed: give an int "
                "(--seed_everything N, the same on every rank)"
            )
        return int(inherited)
    seed = random.SystemRandom().randint(min_seed_value, max_seed_value)
    rank_zero_info(
        f"--seed_everything true: seed {seed}, drawn at random (the saved config and the checkpoints record it; "
        f"--seed_everything {seed} repeats it)"
    )
    return seed


#: the packages whose versions a checkpoint records (:class:`ConfigInCheckpoints`), as installed (distributions)
KEY_PACKAGES = ("torch", "torchvision", "pytorch_lightning", "monai", "albumentations", "torchmetrics", "numpy")


@functools.cache
def package_versions() -> dict[str, str]:
    """The installed versions of :data:`KEY_PACKAGES` (those installed) and of Python, as plain strings: read
    once per process (each checkpoint save asks)."""
    versions = {"python": platform.python_version()}
    for name in KEY_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


#: task and network classes (``module.Class``) some of whose parameters get no gradient in some or all
#: training steps, and why. Plain DDP stops such a fit at its second step ("It looks like your LightningModule
#: has parameters that were not used in producing the loss", a 115-line traceback per process). Named, not
#: imported: the shared layer imports no domain.
def idle_parameters(model) -> str | None:
    """Why some of ``model``'s parameters get no gradient in some training steps, or None: the
    ``IDLE_PARAMETERS`` sentence a network class declares (the anomaly segmenter's outlier head, the HPU-Net's
    posterior decoder), looked for on the model and each of its modules."""
    for module in model.modules():
        if why := getattr(type(module), "IDLE_PARAMETERS", None):
            return f"{type(module).__name__}: {why}"
    return None


def find_unused_parameters_where_idle(trainer, model, given_strategy=None) -> None:
    """Under a DDP strategy that leaves ``find_unused_parameters`` unset (``ddp``, ``ddp_spawn``, ``auto`` on
    several devices), a model with idle parameters (:func:`idle_parameters`) gets it True, as
    ``ddp_find_unused_parameters_true`` sets it, said in one line: plain DDP stopped the fit at its second
    step. A strategy that sets it (``ddp_find_unused_parameters_false`` too) is left as given.
    ``given_strategy``: ``--trainer.strategy`` as given, for the line."""
    strategy = trainer.strategy
    # DDPStrategy keeps the keyword arguments it passes to torch's DistributedDataParallel in _ddp_kwargs
    ddp_kwargs = getattr(strategy, "_ddp_kwargs", None)
    if type(strategy) is not DDPStrategy or not isinstance(ddp_kwargs, dict):
        return
    if "find_unused_parameters" in ddp_kwargs:
        return
    if (why := idle_parameters(model)) is None:
        return
    ddp_kwargs["find_unused_parameters"] = True
    name = given_strategy if isinstance(given_strategy, str) else type(strategy).__name__
    rank_zero_info(
        f"--trainer.strategy {name}: DDP runs with find_unused_parameters=True (as "
        f"ddp_find_unused_parameters_true): some parameters get no gradient in some steps ({why}), which "
        "plain DDP refuses"
    )


class ConfigInCheckpoints(SaveConfigCallback):
    """Lightning's ``config.yaml`` writer; each checkpoint a fit saves also carries its run's settings.

    With ``--trainer.logger false`` (the cards' recipe) every run into one ``default_root_dir`` writes the same
    ``config.yaml`` (overwritten), and a checkpoint's ``hyper_parameters`` hold the network but not the
    optimiser, schedule, trainer limits, data settings or seed. So each checkpoint holds, as plain values
    (``torch.load(ckpt, weights_only=True)`` reads them):

    - ``suite_config``: the fit's whole config as YAML (``fit -c`` takes it), as ``config.yaml`` gets it except
      for the log and checkpoint folders, which it holds as given (``given_folders``): the ones derived from the
      config file's name and ``--trainer.default_root_dir`` had pinned a rerun into the first run's folders,
      whatever root dir it was given;
    - ``suite_versions``: the versions of Python and of :data:`KEY_PACKAGES`;
    - ``suite_resolved``: values the config left to the machine, as this run took them (``data.num_workers``
      from null: the CPU count, on which augmentation draws depend); empty when there are none;
    - ``suite_data_paths``: the data module's path settings as absolute paths
      (:meth:`shared.data.SplitLoaders.absolute_paths`), which a command run from another folder compares its
      own with (a relative ``--data.data_path`` is the fit's working directory's).
    """

    _dumped: str | None = None

    def __init__(self, *args, given_folders: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.given_folders = given_folders

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if self._dumped is None:  # config.yaml's dump (SaveConfigCallback.setup), with the folders as given
            config = self.config.clone()
            if self.given_folders is not None:
                _set_folders(config, self.given_folders)
            self._dumped = self.parser.dump(config, skip_none=False)
        checkpoint["suite_config"] = self._dumped
        checkpoint["suite_versions"] = dict(package_versions())
        workers = getattr(trainer.datamodule, "num_workers", None)
        resolved = self.config.get("data.num_workers") is None and isinstance(workers, int)
        checkpoint["suite_resolved"] = {"data.num_workers": workers} if resolved else {}
        absolute_paths = getattr(trainer.datamodule, "absolute_paths", None)
        checkpoint["suite_data_paths"] = absolute_paths() if callable(absolute_paths) else {}


def _folders(config) -> dict:
    """The checkpoint folder and each logger's ``save_dir`` of a parsed config (:func:`_set_folders` restores
    them)."""
    loggers = config.get("trainer.logger")
    loggers = loggers if isinstance(loggers, list) else [loggers]
    saves = [getattr(logger, "init_args", None) for logger in loggers]
    return {
        "checkpoint.dirpath": config.get("checkpoint.dirpath"),
        "save_dirs": [None if args is None else args.get("save_dir") for args in saves],
    }


def _set_folders(config, folders: dict) -> None:
    config["checkpoint.dirpath"] = folders["checkpoint.dirpath"]
    loggers = config.get("trainer.logger")
    for logger, save_dir in zip(loggers if isinstance(loggers, list) else [loggers], folders["save_dirs"]):
        args = getattr(logger, "init_args", None)
        if args is not None and save_dir is not None:
            args["save_dir"] = save_dir


def _check_local_ckpt_path(ckpt_path) -> None:
    """A URL ``--ckpt_path`` (``file://``, ``https://``, ``s3://``, any scheme) is refused before anything is built:
    Lightning took it unchecked, and failed only after the data setup, with torch's advice that loading it with
    weights_only=False (running code pickled in the file) "will likely succeed". The suite runs offline and
    loads local files only."""
    if ckpt_path is not None and "://" in str(ckpt_path):
        raise ConfigError(
            f"--ckpt_path {ckpt_path}: a URL; checkpoints are read from local files only: give the path of a "
            "local .ckpt file (download it first), or best / last"
        )


def _weights_to_evaluate(subcommand: str, ckpt_path: str | None) -> str | None:
    """``validate`` / ``test`` / ``predict`` without ``--ckpt_path`` is an error: the command line builds the
    network afresh, so Lightning would score (or write predictions of) random weights and exit 0. ``--ckpt_path
    none`` asks for that on purpose (e.g. a baseline at initialisation) and is logged."""
    if ckpt_path is not None and str(ckpt_path).lower() != "none":
        return ckpt_path
    if ckpt_path is None:
        raise ConfigError(
            f"{subcommand} needs trained weights: pass --ckpt_path best, last or a .ckpt file (without it the "
            "network is built afresh from the config and is untrained; --ckpt_path none runs it so on purpose)"
        )
    rank_zero_warn(f"--ckpt_path none: {subcommand} runs the network as the config builds it, untrained")
    return None


#: what jsonargparse's ``--print_config`` takes
_PRINT_CONFIG_FLAGS = {"comments", "skip_default", "skip_null"}


def _named_subcommand(args) -> str | None:
    """The sub-command ``args`` run: their first word that is not an option, when it is one of the four. None
    (every sub-command's parser is built) where none is named (an unknown one, a typo: the usage error lists
    every choice), where ``args`` is no list (a dict) and where a ``-h`` or a ``-c`` file comes before it: the
    top-level help lists every sub-command, and a top-level config file may hold a section for each."""
    if not isinstance(args, (list, tuple)):
        return None
    for word in map(str, args):
        if word in ("-h", "--help") or word.startswith(("-c", "--config")):
            return None
        if not word.startswith("-"):  # a --print_config flag (skip_null) too: no sub-command, so all four
            return word if word in LightningCLI.subcommands() else None
    return None


def _without_print_config(args: list[str]) -> list[str]:
    """``args`` without ``--print_config`` and its flags (``--print_config=skip_null`` or as the next word)."""
    kept, skip_flags = [], False
    for arg in args:
        if skip_flags and not arg.startswith("-") and set(arg.split(",")) <= _PRINT_CONFIG_FLAGS:
            skip_flags = False
            continue
        skip_flags = arg == "--print_config"
        if not (skip_flags or arg.startswith("--print_config=")):
            kept.append(arg)
    return kept


def _resume_from(dirpath) -> str | None:
    """``fit --ckpt_path last``: the newest ``last*.ckpt`` (:func:`saved_checkpoint`); with none yet it starts
    afresh, as in Lightning, but says why: Lightning's own warning suggests ``save_last=True``, which the suite
    already sets (a run killed before its first validation, or ``--checkpoint.every_n_train_steps``, saved
    nothing). A remote folder is left to Lightning."""
    if "://" in str(dirpath) or _last_checkpoints(Path(dirpath or ".")):
        # Lightning takes the same newest file (parse_arguments reads its settings, saying if there are others)
        return "last"
    rank_zero_warn(
        f"fit --ckpt_path last: no last.ckpt in {Path(dirpath or '.')} yet, so training starts from scratch "
        "(checkpoints are saved at each validation; --checkpoint.every_n_train_steps N saves every N steps "
        "as well)"
    )
    return None


def _describe_subcommand(subparser, name: str, description: str | None) -> None:
    """``fit --help`` opened with 64 lines of usage (every option), then the ``Trainer.fit`` docstring in RST;
    the domain's description and example (top-level ``--help`` has them) were missing. Now: a one-line usage
    (as :class:`SuggestingArgumentParser` prints on an error), ``SUBCOMMAND_HELP[name]`` and the domain's
    description, and group titles (class docstrings' first lines) without RST double backticks."""
    prog = subparser.prog.replace(" [options]", "")
    subparser.usage = f"{prog} [-h] [-c CONFIG] [--print_config] [options]  (listed below)"
    what = SUBCOMMAND_HELP.get(name)
    subparser.description = _plain_text(" ".join(t for t in (what and f"{name}: {what}.", description) if t))
    for group in subparser._action_groups:
        if group.title:
            group.title = _plain_text(group.title)


def _plain_text(text: str) -> str:
    """``text`` without RST double backticks (help is read in a terminal, not rendered)."""
    return text.replace("``", "")


def saved_checkpoint(alias: str, dirpath) -> str:
    """The file ``--ckpt_path best`` or ``last`` means for ``validate`` / ``test`` / ``predict``.

    Lightning knows "best" only inside the ``fit`` process that wrote it (a later command fails with "ModelCheckpoint
    is not configured to save the best model"), and when "last" finds no file it warns and runs the untrained
    model. Here both come from the checkpoint folder: "last" is the newest ``last*.ckpt`` (a second ``fit`` into
    the same folder writes ``last-v1.ckpt`` beside the first run's ``last.ckpt``; Lightning's own lookup also takes
    the newest), "best" the best model that file's ModelCheckpoint state records (with no ``last*.ckpt`` at all,
    the one ``best-*.ckpt`` there); no file is an error naming the folder."""
    folder = Path(dirpath or ".")
    # a fit with --trainer.fast_dev_run saves nothing (Lightning's smoke run): "run fit first" alone misled
    hint = "(--checkpoint.dirpath; run fit first, not as a fast_dev_run, which saves none; or give --ckpt_path FILE)"
    lasts = _last_checkpoints(folder)
    last = lasts[-1] if lasts else None
    if alias == "last":
        if last is None:
            raise FileNotFoundError(f"--ckpt_path last: no last.ckpt in {folder} {hint}")
        _warn_several_lasts("last", lasts, str(last))
        return str(last)
    # no run recorded which is best: take a lone best-*.ckpt (the suite's checkpoint.filename)
    if last is None:
        best = sorted(folder.glob("best-*.ckpt"))
        if len(best) == 1:
            return str(best[0])
        if best:
            raise FileNotFoundError(
                f"--ckpt_path best: {len(best)} best-*.ckpt files in {folder} and no last.ckpt recording which is "
                f"the best: give --ckpt_path FILE ({', '.join(p.name for p in best)})"
            )
        raise FileNotFoundError(f"--ckpt_path best: no best checkpoint in {folder}, nor a last.ckpt {hint}")
    # the newest run's own record, never a best-*.ckpt left by an earlier run into the same folder
    recorded = _best_model_path(last)
    # the folder asked for first (an absolute path recorded elsewhere may be another run's), then as recorded
    for candidate in (folder / Path(recorded).name, Path(recorded)) if recorded else ():
        if candidate.is_file():
            _warn_several_lasts("best", lasts, str(candidate))
            return str(candidate)
    why = f"records {recorded}, which is gone" if recorded else (
        "records none (no best checkpoint was kept: --checkpoint.save_top_k 0, its monitor never logged, or "
        "no validation ran before its fit stopped)"
    )
    raise FileNotFoundError(
        f"--ckpt_path best: the newest run's {last.name} in {folder} {why}: --ckpt_path last takes that run's "
        "last state, or give --ckpt_path FILE"
    )


def _last_checkpoints(folder: Path) -> list[Path]:
    """The ``last*.ckpt`` files in ``folder``, oldest first (by modification time, as Lightning's own lookup)."""
    return sorted(folder.glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)


def _warn_several_lasts(alias: str, lasts: list[Path], taken: str) -> None:
    """``--ckpt_path last`` (or ``best``, read from that file) in a folder holding several ``last*.ckpt``: the
    newest is taken, which after two fits of one config run at once may be the other run's (``last-v1.ckpt``),
    and only its name was printed. Said with the count, the file taken and the other files' paths to give."""
    if len(lasts) < 2:
        return
    others = [str(path) for path in reversed(lasts[:-1])]  # newest first
    listed = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    what = "the newest" if alias == "last" else f"the best that the newest, {lasts[-1].name}, records"
    rank_zero_warn(
        f"--ckpt_path {alias}: {lasts[-1].parent} holds {len(lasts)} last*.ckpt files (fits of this config one "
        f"after another, or at once), and {what} is taken: {taken}. For another run's weights give its file, "
        f"--ckpt_path FILE ({listed}); fits of one config run at once should each get their own "
        "--checkpoint.dirpath"
    )


def _best_model_path(last: Path) -> str:
    """The best model path that ``last.ckpt``'s ModelCheckpoint state records ("" if none); read weights-only,
    and an unreadable file is a FileNotFoundError naming it (not "records none")."""
    try:
        checkpoint = read_checkpoint_data(last, mmap=True)
    except (CheckpointMismatchError, OSError) as err:  # says what the file is (text, truncated, pickled objects)
        raise FileNotFoundError(
            f"--ckpt_path best: {last} cannot say which file is the best: {err}; give --ckpt_path FILE"
        ) from err
    for name, state in (checkpoint.get("callbacks") or {}).items():
        if name.startswith("ModelCheckpoint") and isinstance(state, dict) and state.get("best_model_path"):
            return str(state["best_model_path"])
    return ""


def _check_network_given(args) -> None:
    """A command with neither ``-c`` nor ``--model.network`` ended in jsonargparse's "the following arguments are
    required: predict.model.network", which does not say that the config names the network (a checkpoint's
    weights load into the network the config builds)."""
    if not isinstance(args, (list, tuple)) or not args:
        return
    args = [str(a) for a in args]
    subcommand = args[0]
    if subcommand not in ("fit", "validate", "test", "predict"):
        return
    given = ("--config", "--model", "-h", "--help", "--print_config")  # --model: a file, or --model.network
    named = ("-c", "--model.network")  # -c FILE and -cFILE alike
    helped = any(a.startswith("--") and a.split("=", 1)[0].endswith(".help") for a in args[1:])  # a class's help
    if not helped and not any(a.startswith(named) or a == g or a.startswith(f"{g}=") for a in args[1:] for g in given):
        what = (
            "a config, -c <config.yaml> (e.g. the task's configs/quick.yaml): it names the network to train"
            if subcommand == "fit"
            else "the config the model was trained with, -c <config.yaml> (a shipped one, e.g. the task's "
            "configs/quick.yaml, or the config.yaml a run saved beside its logs): it names the network that "
            "--ckpt_path's weights load into"
        )
        raise ConfigError(f"{subcommand}: give {what}")


def _config_args(args) -> list[tuple[int, str, str, str]]:
    """``(index, option, prefix, file)`` of each config file in ``args``, in every form argparse (so
    jsonargparse) reads: ``-c FILE`` and ``--config FILE`` (``index``: FILE's; ``prefix`` empty), and FILE in
    the option's own word, ``--config=FILE``, ``-c=FILE`` and ``-cFILE`` (``prefix``: the word's start,
    ``--config=``, ``-c=``, ``-c``). ``option`` (``-c``, ``--config``) names it in messages."""
    found, args = [], [str(a) for a in args]
    for index, arg in enumerate(args):
        if index and args[index - 1] in ("-c", "--config"):
            found.append((index, args[index - 1], "", arg))
        elif arg.startswith(("--config=", "-c=")):
            prefix = arg.split("=", 1)[0] + "="
            found.append((index, prefix[:-1], prefix, arg[len(prefix):]))
        elif arg.startswith("-c") and len(arg) > 2:  # -cFILE: argparse's short option with its value attached
            found.append((index, "-c", "-c", arg[2:]))
    return found


def _suite_config_files(args: list) -> list:
    """``args`` with each relative config file that is not under the working directory but is the suite's own
    (:func:`shared.cli_help.suite_file`, said in one info line) named by its path there: the README's
    ``-c domains/medical/configs/quick.yaml`` failed from any other folder (or an installed suite) with
    jsonargparse's "File does not exist" after 90 lines of usage; so did ``-cFILE`` and ``-c=FILE``, which
    jsonargparse reads as ``-c FILE``. A file in neither place stays for jsonargparse to name."""
    args = list(args)
    for index, option, prefix, path in _config_args(args):
        if (found := suite_file(path, option)) is not None:
            args[index] = f"{prefix}{found}"
    return args


def _check_config_files(args) -> None:
    """jsonargparse reports a YAML syntax error at '"<unicode string>", line N': name the file instead. It
    reads a config in the locale's encoding: under a Windows code page a UTF-8 config with an accent in a
    comment died with a bare UnicodeDecodeError naming no file, so that is said first, with the way out."""
    if not isinstance(args, (list, tuple)):
        return
    paths = [path for *_, path in _config_args(args)]
    for path in map(Path, paths):
        if not path.is_file():
            continue  # jsonargparse names a missing file itself (SuggestingArgumentParser: the close configs)
        data = path.read_bytes()
        encoding = locale.getpreferredencoding(False)
        if not data.isascii() and codecs.lookup(encoding).name != "utf-8":
            raise ConfigError(
                f"{path}: holds non-ASCII characters and this Python reads files as {encoding}, not UTF-8: "
                "run with PYTHONUTF8=1 set (or python -X utf8), or keep the file ASCII"
            )
        try:
            yaml.safe_load(data.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise ConfigError(f"{where}: invalid YAML ({getattr(err, 'problem', None) or err})") from None


def _allows_none(hint) -> bool:
    if hint in (typing.Any, object, type(None)):
        return True
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def _init_parameters(cls) -> tuple[dict, dict]:
    """Type hints and parameters of ``cls.__init__`` and, while an ``__init__`` passes ``**kwargs`` on, of the
    bases' (as jsonargparse reads them; a subclass's own declaration wins)."""
    hints: dict = {}
    params: dict = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        own = inspect.signature(init).parameters
        for name, value in typing.get_type_hints(init).items():
            hints.setdefault(name, value)
        for name, param in own.items():
            params.setdefault(name, param)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in own.values()):
            break
    return hints, params


def _check_nulls(values, group: str, cls) -> None:
    """jsonargparse accepts ``null`` from a config file for any type (``batch_size: null`` reaches the
    DataLoader and fails far away); refuse it where the class's signature does not allow None."""
    if values is None or cls is None:
        return
    try:
        hints, params = _init_parameters(cls)
    except (AttributeError, NameError, TypeError, ValueError):  # unresolvable annotations: the class checks
        return
    for name, value in dict(vars(values)).items():
        required = name in hints and name in params and params[name].default is not None
        if value is None and required and not _allows_none(hints[name]):
            raise ConfigError(f"{group}.{name}: null is not allowed ({cls.__name__} needs {hints[name]})")


def run_cli(model_class, datamodule_class, domain: str, monitor: str, **options) -> SuiteCLI:
    """Entry point used by each domain's ``__main__`` (and by tests, with ``args``): :class:`SuiteCLI` on the
    task and data module, which a domain must give a ``monitor`` metric. ``options``: ``monitor_mode``,
    ``description`` (the paragraph and example ``--help`` prints), ``prog`` (the command, ``python -m
    domains....``), ``links`` ((``data.x``, ``model.y``) pairs set once in the data section and copied to the
    model) and ``args``, as :class:`SuiteCLI` takes them."""
    quiet_library_notes()
    return SuiteCLI(model_class, datamodule_class, domain=domain, monitor=monitor, **options)


def instantiate_from_config(cls: type, values: dict):
    """Build ``cls`` from a config section (``model:`` or ``data:`` of a YAML file) the way the CLI would:
    typed, with ``class_path`` / ``init_args`` entries (the optimiser, the schedule) turned into objects.
    For scripts that build a task outside the CLI (benchmarks)."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "section", fail_untyped=False)
    config = parser.parse_object({"section": values})
    return parser.instantiate_classes(config).section


def flat_model_config(model: dict) -> dict:
    """A config's ``model:`` section with the network's and the optimiser's ``init_args`` lifted to the top level
    (``backbone``, ``input_size``, ``lr``, ...), for the one-line model descriptions benchmarks print."""
    flat = {k: v for k, v in model.items() if k not in ("network", "optimizer", "lr_scheduler")}
    for key in ("network", "optimizer", "lr_scheduler"):
        flat.update((model.get(key) or {}).get("init_args") or {})
    return flat


__all__ = [
    "ConfigError",
    "ConfigInCheckpoints",
    "SuiteCLI",
    "default_trainer_kwargs",
    "flat_model_config",
    "instantiate_from_config",
    "quiet_trainer",
    "run_cli",
]
