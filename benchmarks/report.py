"""What every benchmark does with its markdown table: print it, and write it where ``--out`` says."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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


if __name__ == "__main__":  # a library: its --help printed nothing and exited 0
    raise SystemExit("benchmarks/report.py holds the benchmarks' table and argument helpers: run a benchmark script")
