"""Backbone speed on this machine: parameters, forward and forward+backward images/s at two sizes.

    .venv/bin/python benchmarks/backbones.py [--sizes 128 256] [--batch 4] [--iters 3] [--out benchmarks/results/backbones.md]
    PYTHONPATH=. .venv/bin/python benchmarks/backbones.py --import mybb --names my_tiny resnet18   # your own beside

Prints a markdown table (and writes it with --out). Numbers are CPU throughput unless a GPU is present. A
backbone that fails at some size (GoogLeNet's batch norm at batch 1, a ViT at a size it cannot patch) gets
"failed" cells and a note naming the error under the table; the others are still measured and written.
"""

from __future__ import annotations

import sys
from pathlib import Path

# run as `python benchmarks/<script>.py`: import this checkout's benchmarks, domains and shared, not the ones
# the venv's editable install points at (which may be another checkout)
ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):
    sys.path.insert(0, str(ROOT))

import argparse

from benchmarks.report import ACCELERATORS, HelpFormatter


def options() -> argparse.ArgumentParser:
    """The benchmark's options; built before torch is imported, so that ``--help`` answers at once."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="square input sizes (px)")
    parser.add_argument("--batch", type=int, default=4, help="images per pass")
    parser.add_argument(
        "--iters", type=int, default=3, help="timed passes per measurement (after one warm-up)"
    )
    parser.add_argument(
        "--import",
        dest="modules",
        nargs="+",
        default=[],
        metavar="MODULE",
        help="modules imported first: a backbone of your own is registered when its module is imported",
    )
    parser.add_argument("--names", nargs="*", default=None, help="backbones to run (default: all registered)")
    parser.add_argument(
        "--accelerator", default="auto", choices=ACCELERATORS, help="auto: a GPU when there is one"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the table here (default: printed only)")
    return parser


if __name__ == "__main__":  # options parsed before the imports below (torch: seconds), then main() runs
    from benchmarks.report import run_as_program

    # The table is written whole first; a failed cell still fails the run, so a script or CI sees it.
    run_as_program(options(), "benchmarks.backbones", lambda lines: int(any(" failed " in s for s in lines)))

import importlib

import torch

from benchmarks.report import check_numbers, command_line, memory_note
from shared.backbones import create_backbone, list_backbones
from shared.device import device_name, resolve_accelerator, stopwatch


def throughput(net, x, iters: int, backward: bool) -> float:
    """Images per second of ``iters`` forward (or forward + backward) passes, the device synchronised."""

    def step():
        if backward:
            sum(f.float().mean() for f in net.forward_features(x)).backward()
        else:
            with torch.inference_mode():
                net.forward_features(x)

    step()  # warm-up (allocations, kernel selection)
    with stopwatch(x.device) as elapsed:
        for _ in range(iters):
            step()
    return iters * x.shape[0] / elapsed()


def main(argv: list[str] | None = None) -> list[str]:
    parser = options()
    args = check_numbers(parser, parser.parse_args(argv))
    for module in args.modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            parser.error(f"--import {module}: {err} (a module on the path: PYTHONPATH=. for ./{module}.py)")
    if unknown := [name for name in args.names or [] if name not in list_backbones()]:
        parser.error(
            f"--names: unknown backbone(s) {', '.join(unknown)}; registered: {', '.join(list_backbones())} (a backbone "
            "of your own: --import its module)"
        )
    device = resolve_accelerator(args.accelerator)[1]
    header = (
        "| backbone | params (M) | "
        + " | ".join(f"fwd img/s @{s} | fwd+bwd img/s @{s}" for s in args.sizes)
        + " |"
    )
    lines = [
        (
            f"Device: {device_name(device)}, batch {args.batch}. "
            f"Command: `{command_line('benchmarks/backbones.py')}` ({memory_note()})"
        ),
        "",
        header,
        "|" + "---|" * (2 + 2 * len(args.sizes)),
    ]
    failures = []  # one backbone's error must not lose the rows measured before and after it
    for name in args.names or list_backbones():
        cells, params = [], "n/a"
        for size in args.sizes:
            kwargs = {"image_size": size} if name.startswith("vit") else {}
            measured, stage = [], "building"
            try:
                net = create_backbone(name, in_channels=3, **kwargs).to(device)
                params = f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f}"
                x = torch.randn(args.batch, 3, size, size, device=device)
                stage = "forward"
                net.eval()
                measured.append(throughput(net, x, args.iters, backward=False))
                stage = "forward+backward"
                net.train()
                measured.append(throughput(net, x, args.iters, backward=True))
            except Exception as error:  # noqa: BLE001 - any failure of one backbone: named, the run goes on
                failures.append(f"{name} @{size}, {stage}: {type(error).__name__}: {error}".splitlines()[0])
                print(f"failed: {failures[-1]}", flush=True)
            cells += [f"{v:.1f}" for v in measured] + ["failed"] * (2 - len(measured))
        lines.append(f"| {name} | {params} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    if failures:
        lines += ["", "Failed (the row's cells say where):", "", *(f"- {failure}" for failure in failures)]
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
    return lines

