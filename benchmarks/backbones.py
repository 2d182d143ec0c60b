"""Backbone speed on this machine: parameters, forward and forward+backward images/s at two sizes.

    .venv/bin/python benchmarks/backbones.py [--sizes 128 256] [--batch 4] [--iters 3] [--out benchmarks/results/backbones.md]
    PYTHONPATH=. .venv/bin/python benchmarks/backbones.py --import mybb --names my_tiny resnet18   # your own beside

Prints a markdown table (and writes it with --out). Numbers are CPU throughput unless a GPU is present.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import torch

from benchmarks.report import check_numbers, command_line
from shared.backbones import create_backbone, list_backbones
from shared.device import ACCELERATORS, device_name, resolve_accelerator, stopwatch


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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--iters", type=int, default=3)
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
    parser.add_argument("--out", type=Path, default=None)
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
        f"Device: {device_name(device)}, batch {args.batch}. Command: `{command_line('benchmarks/backbones.py')}`",
        "",
        header,
        "|" + "---|" * (2 + 2 * len(args.sizes)),
    ]
    for name in args.names or list_backbones():
        cells = []
        for size in args.sizes:
            kwargs = {"image_size": size} if name.startswith("vit") else {}
            net = create_backbone(name, in_channels=3, **kwargs).to(device)
            x = torch.randn(args.batch, 3, size, size, device=device)
            net.eval()
            fwd = throughput(net, x, args.iters, backward=False)
            net.train()
            bwd = throughput(net, x, args.iters, backward=True)
            cells += [f"{fwd:.1f}", f"{bwd:.1f}"]
        params = sum(p.numel() for p in net.parameters()) / 1e6
        lines.append(f"| {name} | {params:.2f} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
    return lines


if __name__ == "__main__":
    from shared.cli_help import report_input_errors

    with report_input_errors():  # bad input: one "error:" line, not a traceback
        main()
