"""What every benchmark does with its markdown table (print it, write it where ``--out`` says), its shared
options, and how it runs as a program (:func:`run_as_program`: options first, then torch)."""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import import_module
from pathlib import Path
from typing import Any, NoReturn


def json_object(text: str) -> dict:
    """argparse ``type`` of an option holding a JSON object: bad JSON is a usage error naming the option."""
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"a JSON object ({{...}}) is expected, got {text!r}")
    return value


def command_line(script: str, argv: list[str] | None = None) -> str:
    """This run's command line (``script`` is the benchmark's path from the repository root; ``argv`` its
    arguments, default ``sys.argv[1:]``), quoted so that it can be pasted back."""
    return f".venv/bin/python {script} {shlex.join(sys.argv[1:] if argv is None else argv)}".rstrip()


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Every benchmark's ``--help``: its module docstring as written (protocol and targets, not a first line
    cut from it) and each option's default after its help, unless the help says its default in words or the
    option is required."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or "default" in (action.help or "").lower():
            return action.help
        return super()._get_help_string(action)


#: the help of the training benchmarks' ``--steps`` (what a fixed length gives, and what stays a cap)
STEPS_HELP = (
    "train exactly this many optimiser steps (the cosine schedule over them) instead of fitting the step "
    "count to the measured wall time: the same seed then gives the same run on the same machine and threads; "
    "the time budget stays a hard stop (default: none, the time-budget run)"
)


def add_budget_minutes(parser, *aliases: str) -> None:
    """``--budget-minutes`` (and ``aliases``): the training wall time, the issues' 15 minutes by default; a
    hard stop where ``--steps`` fixes the run's length."""
    parser.add_argument(
        "--budget-minutes",
        *aliases,
        type=float,
        default=ISSUE_BUDGET_MINUTES,
        help="training wall time (with --steps: a hard stop)",
    )

#: ``--accelerator``'s choices: :data:`shared.device.ACCELERATORS` (a test holds the two equal), here for the
#: options every script builds before it imports torch (shared.device does)
ACCELERATORS = ("auto", "cpu", "gpu")

#: the registered backbones, :func:`shared.backbones.list_backbones` (a test holds the two equal), here for
#: the ``--help`` of options built before torch is imported (the registry imports it)
BACKBONES = (
    "alexnet", "googlenet", "mobilenet_v3_large", "mobilenet_v3_small", "resnet18", "resnet34", "resnet50",
    "swin", "tiny_cnn", "unet", "unet_encoder", "vgg11", "vgg16", "vgg19", "vit", "vit_b_16",
)  # fmt: skip


def add_budget_arguments(
    parser: argparse.ArgumentParser, calibration_steps: int, inference_images: int
) -> argparse.ArgumentParser:
    """The options every detector benchmark takes (machine, loader, seed, budget planning, outputs)."""
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--accelerator", default="auto", choices=ACCELERATORS, help="auto: a GPU when there is one"
    )
    parser.add_argument(
        "--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed, 16-mixed"
    )
    parser.add_argument("--num-workers", type=int, default=1, help="data loader worker processes")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="training batch size (default: the config's data.batch_size)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of initialisation, batches and augmentation"
    )
    parser.add_argument("--steps", type=int, default=None, help=STEPS_HELP)
    parser.add_argument(
        "--calibration-steps",
        type=int,
        default=calibration_steps,
        help="timed training steps that give the first step count of a time-budget run (not with --steps)",
    )
    parser.add_argument(
        "--budget-fraction", type=float, default=0.9, help="share of the budget the step count is planned for"
    )
    parser.add_argument(
        "--inference-images", type=int, default=inference_images, help="test images timed at batch 1"
    )
    parser.add_argument("--progress", action="store_true", help="show Lightning's progress bar")
    parser.add_argument(
        "--save-checkpoint", type=Path, default=None, help="write the trained model (.ckpt) (default: none)"
    )
    return parser


def step_schedule(steps: int | None, planned: int, seconds: float, **fit: int) -> tuple[int, list]:
    """``(max_steps, callbacks)`` of a training run: ``steps`` fixed (nothing re-fits it: repeatable), else
    the ``planned`` count re-fitted to ``seconds`` of measured step time while training
    (:class:`shared.budget.FitScheduleToBudget` with ``fit``'s arguments: machine-dependent)."""
    if steps:
        return steps, []
    from shared.budget import FitScheduleToBudget

    return planned, [FitScheduleToBudget(seconds, **fit)]


def run_length(steps: int | None, ran: list[int], planned: list[int] | None = None) -> str:
    """The table's sentence on how its training length was set: a fixed ``--steps`` (repeatable, unless the
    time budget stopped a run of ``ran`` steps before its ``planned`` count, default ``steps`` each) or the
    time budget (machine-dependent)."""
    if not steps:
        return (
            "Time-budget run (machine-dependent): the step count followed the measured wall time "
            "(`shared.budget.FitScheduleToBudget`), so the same seed gives other numbers from run to run; "
            "`--steps N` fixes it."
        )
    short = [n for n, plan in zip(ran, planned or [steps] * len(ran)) if n < plan]
    return f"Fixed-steps run (repeatable): `--steps {steps}`" + (
        f"; the time budget stopped {len(short)} of {len(ran)} training run(s) early "
        f"({', '.join(map(str, short))} steps), which makes those machine-dependent."
        if short
        else "."
    )


@contextmanager
def named_as_options(renames: dict[str, str]) -> Iterator[None]:
    """Errors of the suite's data modules name the CLI's options (``--data.anomaly_path``); inside this block
    they are re-raised, traceback kept, naming the benchmark's own (``renames``: CLI text -> benchmark
    text)."""
    try:
        yield
    except (ValueError, OSError) as error:
        if len(error.args) == 1 and isinstance(error.args[0], str):
            message = error.args[0]
            for old, new in renames.items():
                message = message.replace(old, new)
            error.args = (message,)
        raise


#: the driving benchmarks' fixed training budget on 2 CPU cores, as their issues state it
ISSUE_BUDGET_MINUTES = 15.0

#: a run given less than this share of its benchmark's budget is a smoke run: it shows the pipeline runs, and
#: its figures (an untrained model can "meet" a false-alarm cap by never alarming) are not results
SMOKE_SHARE = 0.25


def smoke_run(budget_minutes: float, default_minutes: float) -> str | None:
    """The banner of a smoke run (:data:`SMOKE_SHARE` of the benchmark's default budget), or None."""
    if budget_minutes >= SMOKE_SHARE * default_minutes:
        return None
    return (
        f"**Smoke run**: {budget_minutes:g} of the benchmark's {default_minutes:g} minutes. It shows that the "
        "pipeline runs; its figures are not results, and its targets are not judged."
    )


def fmt(value: float | None, digits: int = 3) -> str:
    """A table cell of a figure: ``digits`` decimals, or ``n/a`` for None or a float NaN (nothing scored)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def verdict(met: bool, smoke: bool, yes: str = "met", no: str = "not met") -> str:
    """A target's verdict; a smoke run's is "not judged"."""
    return "not judged (smoke run)" if smoke else (yes if met else no)


#: the benchmarks' numeric options by the values they take (an option a script lacks is skipped)
POSITIVE = (
    "budget_minutes", "minutes", "seconds", "fit_seconds", "steps", "iters", "rounds", "timing_repeats",
    "inference_images", "images", "batch_size", "batch", "sizes", "threads", "num_samples", "calibration_steps",
    "calibration_batches", "epoch_batches", "lr", "oe_lr",
    "size", "crop_size", "image_size", "source_size",
    # caps on the data read or scored: 0 used to read as "no cap" (all of it)
    "max_items", "max_test_images", "max_val_images", "test_items", "test_batches", "eval_items",
)  # fmt: skip
NON_NEGATIVE = ("warmup", "num_workers", "oe_weight", "min_train_seconds")  # 0: no floor
SHARES = {
    "budget_fraction": (False, True), "oe_fraction": (False, False), "max_false_alarm": (True, True),
    "source_share": (False, False),  # transfer.py: 0 trained a source of 0 steps, reported as a transfer
}  # (0 allowed, 1 allowed)  # fmt: skip


def check_numbers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Refuse a numeric option out of its range with argparse's ``error:`` naming it (exit 2), before any work:
    ``--budget-minutes 0`` used to end in a traceback about "seconds > 0", ``--steps 0`` in a full-length run."""

    def bad(name: str, what: str) -> None:
        parser.error(f"--{name.replace('_', '-')} must be {what}, got {getattr(args, name)}")

    for name in POSITIVE:
        value = getattr(args, name, None)
        for one in value if isinstance(value, list) else [value]:  # nargs="+": each (backbones' --sizes)
            if isinstance(one, (int, float)) and not isinstance(one, bool) and not one > 0:
                bad(name, "positive")
    for name in NON_NEGATIVE:
        value = getattr(args, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not value >= 0:
            bad(name, ">= 0")
    for name, (zero, one) in SHARES.items():
        value = getattr(args, name, None)
        if isinstance(value, (int, float)) and not (
            (0 < value or zero and value == 0) and (value < 1 or one and value == 1)
        ):
            bad(name, f"in {'[' if zero else '('}0, 1{']' if one else ')'}")
    return args


def parse_keeping_argv(parser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, with ``argv`` kept as ``args.argv`` for :func:`command_line`: a report then
    quotes these arguments, not the caller's ``sys.argv``, when ``main(argv)`` is called from Python. Numeric
    options out of range are refused (:func:`check_numbers`)."""
    args = check_numbers(parser, parser.parse_args(argv))
    args.argv = argv
    return args


def print_and_write(table: str, out: Path | None) -> str:
    """Print ``table``; when ``out`` is set, write it there (folders made) and say so. Returns the table."""
    print("\n" + table)
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table)
        print(f"written to {out}")
    return table

_freed_memory_kept = False  # set by keep_freed_memory: the setting holds for the whole process from then on


def keep_freed_memory() -> bool:
    """:func:`shared.allocator.keep_freed_memory` for this process (its answer returned), remembered for the
    tables' :func:`memory_note`."""
    global _freed_memory_kept
    from shared.allocator import keep_freed_memory as keep

    kept = keep()
    _freed_memory_kept = _freed_memory_kept or kept
    return kept


def memory_note() -> str:
    """What a table says beside its command about glibc's allocator: the suite's command lines keep freed
    memory for reuse (README "Freed memory is kept": 1.29x on a Prob. U-Net step), so a figure measured
    without it is slower than what users get."""
    if _freed_memory_kept:
        return "freed memory kept for reuse as in `python -m domains.<domain>`: `shared.allocator`"
    return "freed memory not kept for reuse by the suite, unlike `python -m domains.<domain>`"


def run_as_program(
    parser: argparse.ArgumentParser,
    module: str,
    exit_status: Callable[[Any], int] | None = None,
    keep_memory: bool = True,
) -> NoReturn:
    """``python benchmarks/<script>.py``, called from the script's ``__main__`` block above its heavy imports:
    ``parser`` (the script's ``options()``) answers ``--help`` and refuses a bad option at once, not after
    seconds of importing torch and Lightning. Then the process keeps freed memory for reuse as the suite's
    command lines do (``keep_memory=False``: glibc's defaults), and ``module`` (the script itself, imported
    by its name) runs ``main()``, which parses again with every check; bad input ends in one ``error:``
    line. Exits with ``exit_status(main())``; by default main's int, else 0."""
    check_numbers(parser, parser.parse_args())
    if keep_memory:
        keep_freed_memory()
    from shared.cli_help import report_input_errors

    main = import_module(module).main
    with report_input_errors():  # bad input: one "error:" line, not a traceback
        result = main()
    if exit_status is not None:
        raise SystemExit(exit_status(result))
    raise SystemExit(result if type(result) is int else 0)


if __name__ == "__main__":  # a library: its --help printed nothing and exited 0
    raise SystemExit("benchmarks/report.py holds the benchmarks' table and argument helpers: run a benchmark script")
