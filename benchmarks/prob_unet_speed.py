"""Training speed of the suite's Prob. U-Net against the public PyTorch port, side by side in one process.

    .venv/bin/python benchmarks/prob_unet_speed.py --peer-dir /tmp/peer-probunet [--rounds 7] [--threads 2]
        [--compile] [--bf16] [--profile KEY] [--keep-freed-memory] [--out benchmarks/results/prob_unet_speed.md]

One training step = forward + negative ELBO + backward + Adam step (lr 1e-4, the port's optimiser), batch 16,
1x128x128 images, random masks; both models at four levels 32-64-128-192, latent 6, beta 1, four 1x1 convs
in f_comb. The variants run interleaved (a, b, c, a, b, c, ...) for ``--rounds`` rounds of ``--steps`` steps,
so load from other processes hits them all alike; the table gives the median images/s per variant.

The suite rows are cumulative, each one adding one change to the row above, so the table says what each
change bought:

- ``InstanceNorm2d``: the model as it was when issue 20 was filed (MONAI's instance norm);
- ``GroupNorm(C, C)``: the same norm as the native group-norm kernel (``instance_norm_as_group_norm``);
- ``channels_last``: ``ProbabilisticUNet(channels_last=True)``, NHWC activations on the CPU (an option, off by
  default);
- ``torch.compile`` (``--compile``): the loss compiled by inductor, as the medical task's ``compile_loss``
  option does (off by default: minutes of compilation on 2 cores, see the results file); also both together
  (``compile_cl``). Compiled, the U-Net decoder upsamples by a broadcast instead of ``F.interpolate``
  (``shared.backbones.upsample_nearest``: same values, a fused gradient instead of a scatter-add); the
  ``compile_interp`` row compiles the loss with ``F.interpolate`` as before, to show what that bought.

``--bf16`` adds the shipped step under bf16 autocast (``--trainer.precision bf16-mixed``), eager and, with
``--compile``, compiled. The numerics change (bfloat16 convolutions), so these rows answer a different
question than the fp32 comparison with the port: how much faster a CPU with AVX512-BF16 / AMX trains.

``--profile KEY`` adds where one variant's step spends its time (``torch.profiler``, self CPU time by kind of
operation), measured after the timing on a step built anew with inductor's per-kernel records on, so the
timed steps run without them. ``--keep-freed-memory`` tells glibc's allocator to keep freed buffers
(``shared.allocator``, as the suite's command lines do: no ``mmap`` below 1 GiB, no trimming below 2 GiB)
for the whole process, port included; without it the run keeps glibc's defaults.

The peer is the widely used port github.com/stefanknegt/Probabilistic-Unet-Pytorch, not copied into this
project: fetch it (the committed tables ran its commit 80152817d90d396a6285cfa24a42c6f255b02ba4, 2019-01-16)
and point ``--peer-dir`` at the folder holding ``probabilistic_unet.py``; a ``--peer-dir`` without that file
is an error. Without ``--peer-dir`` only the suite rows run (no port comparison, said in the title). The
port's module picks ``cuda`` when a GPU is visible (``probabilistic_unet.device``); this script sets that
attribute to the CPU at run time (monkeypatch, its files stay untouched). Its loss is its own ``-elbo(mask)``
(BCE summed over pixels and batch + beta * KL), without the optional L2 term of its ``train_model.py``.
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

from benchmarks.report import HelpFormatter


def options() -> argparse.ArgumentParser:
    """The benchmark's options; built before torch is imported, so that ``--help`` answers at once."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument(
        "--peer-dir",
        type=Path,
        default=None,
        help="folder with the port's probabilistic_unet.py (default: none, the suite rows alone)",
    )
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (the median is over them)")
    parser.add_argument("--steps", type=int, default=1, help="steps per variant per round")
    parser.add_argument("--batch-size", type=int, default=16, help="images per training step")
    parser.add_argument("--size", type=int, default=128, help="image side (px), at least 16")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the issue's 2 cores)")
    parser.add_argument("--compile", action="store_true", help="add a torch.compile row (minutes to compile)")
    parser.add_argument(
        "--profile",
        default=None,
        metavar="KEY",
        help="profile this variant after the timing (peer, instance, group, channels_last, compile_interp, "
        "compile, compile_cl, bf16, compile_bf16; default: none)",
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="add bf16 autocast rows (bf16-mixed precision: faster where the CPU has AVX512-BF16 / AMX; the "
        "numerics change, so these rows are not the fp32 comparison)",
    )
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="glibc keeps freed buffers for the whole process (mallopt), port included",
    )
    parser.add_argument(
        "--peer-source",
        default=None,
        help="where the port's files came from (repository, commit, date), quoted under the table (default: "
        "not quoted)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the table here (benchmarks/results/prob_unet_speed.md; default: printed only)",
    )
    return parser


if __name__ == "__main__":  # options parsed before the imports below (torch: seconds), then main() runs
    from benchmarks.report import run_as_program

    # glibc's defaults unless --keep-freed-memory: the table compares both settings side by side
    run_as_program(options(), "benchmarks.prob_unet_speed", keep_memory=False)

import importlib
import statistics
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple

import torch

from benchmarks.report import check_numbers, command_line, keep_freed_memory, memory_note, print_and_write
from domains.medical.models.prob_unet import ProbabilisticUNet
from shared.backbones import unet as unet_module

#: where the port comes from: the commit the committed tables (benchmarks/results/prob_unet_speed*.md) ran
PEER_SOURCE = (
    "github.com/stefanknegt/Probabilistic-Unet-Pytorch at commit 80152817d90d396a6285cfa24a42c6f255b02ba4"
)
CONFIG = {"channels": (32, 64, 128, 192), "latent_dim": 6, "beta": 1.0, "fcomb_layers": 3}


def _group_norm_as_instance_norm(module: torch.nn.Module) -> torch.nn.Module:
    """Undo ``instance_norm_as_group_norm`` (the model as issue 20 measured it)."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.GroupNorm) and child.num_groups == child.num_channels:
                setattr(
                    parent, name, torch.nn.InstanceNorm2d(child.num_channels, child.eps, affine=child.affine)
                )
    return module


def _interpolate_nearest(x: torch.Tensor, size) -> torch.Tensor:
    return torch.nn.functional.interpolate(x, size=size, mode="nearest")


class SuiteVariant(NamedTuple):
    """One suite row of the table: what it changes, and the row whose speed it is compared with."""

    key: str
    label: str
    norm: str = "group"
    channels_last: bool = False
    compile_loss: bool = False
    interpolate: bool = False  # F.interpolate instead of the broadcast upsampling when compiled
    bf16: bool = False  # forward and loss under torch.autocast("cpu", bfloat16), as bf16-mixed runs them
    ref: str | None = "group"


def suite_step(
    images: torch.Tensor,
    masks: torch.Tensor,
    norm: str,
    channels_last: bool,
    compile_loss: bool = False,
    interpolate: bool = False,
    bf16: bool = False,
) -> Callable[[], None]:
    """One training step of the suite's model. ``interpolate=True`` runs the decoder's upsampling as
    ``F.interpolate`` even when compiled (the code before ``upsample_nearest``): the module's function is
    swapped for the step, and torch.compile keeps one graph per function (it guards on that global).
    ``bf16=True`` runs the forward and the loss under CPU autocast to bfloat16, as Lightning's ``bf16-mixed``
    precision does (weights, gradients and Adam stay float32)."""
    torch.manual_seed(0)
    net = ProbabilisticUNet(in_channels=1, **CONFIG, channels_last=channels_last)
    if norm == "instance":
        _group_norm_as_instance_norm(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    loss_fn = torch.compile(net.loss, dynamic=False) if compile_loss else net.loss  # as compile_loss does

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = loss_fn(images, masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    if not interpolate:
        return step

    def step_with_interpolate() -> None:
        kept = unet_module.upsample_nearest
        unet_module.upsample_nearest = _interpolate_nearest
        try:
            step()
        finally:
            unet_module.upsample_nearest = kept

    return step_with_interpolate


def load_peer(peer_dir: Path | None):
    """The port's module, or None (with the reason printed) when no ``--peer-dir`` is given (``main`` has
    refused one without ``probabilistic_unet.py``)."""
    if peer_dir is None:
        print("no --peer-dir given: the peer rows are skipped", flush=True)
        return None
    sys.path.insert(0, str(peer_dir))  # its modules import each other by bare name (unet_blocks, utils)
    module = importlib.import_module("probabilistic_unet")
    module.device = torch.device(
        "cpu"
    )  # it would move itself and its tile indices to cuda when one is visible
    return module


def peer_step(module, images: torch.Tensor, masks: torch.Tensor) -> Callable[[], None]:
    torch.manual_seed(0)
    net = module.ProbabilisticUnet(
        input_channels=1,
        num_classes=1,
        num_filters=[32, 64, 128, 192],
        latent_dim=6,
        no_convs_fcomb=4,
        beta=1.0,
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4, weight_decay=0)

    def step() -> None:
        net.forward(images, masks, training=True)
        loss = -net.elbo(masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def time_interleaved(
    steps: dict[str, Callable[[], None]], rounds: int, per_round: int
) -> dict[str, list[float]]:
    """Seconds per step of every variant, variants interleaved within each round."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(rounds):
        for name, step in steps.items():
            for _ in range(per_round):
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
        print(
            f"round {r + 1}/{rounds}: " + ", ".join(f"{name} {times[name][-1]:.2f} s" for name in steps),
            flush=True,
        )
    return times


def main(argv: list[str] | None = None) -> str:
    parser = options()
    args = check_numbers(parser, parser.parse_args(argv))
    if args.size < 16:  # the rest: check_numbers
        parser.error(f"--size must be >= 16, got {args.size}")
    if args.peer_dir is not None and not (args.peer_dir / "probabilistic_unet.py").is_file():
        # it used to skip the port's rows and write a "vs the PyTorch port" table of n/a cells
        parser.error(
            f"--peer-dir {args.peer_dir}: no probabilistic_unet.py there; fetch the port ({PEER_SOURCE}) and "
            "give the folder holding that file, or leave --peer-dir out for the suite rows alone"
        )
    torch.set_num_threads(args.threads)
    if args.keep_freed_memory and not keep_freed_memory():
        parser.error(
            "--keep-freed-memory: not set (see shared.allocator: not glibc, SUITE_KEEP_FREED_MEMORY=0, your own "
            "MALLOC_*_THRESHOLD_ or GLIBC_TUNABLES, or a glibc that refuses a 1 GiB mmap threshold)"
        )

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 1, args.size, args.size, generator=generator)
    masks = (torch.rand(args.batch_size, 1, args.size, args.size, generator=generator) < 0.1).float()

    rows: list[tuple[str, str]] = []  # (key, label)
    builders: dict[str, Callable[[], Callable[[], None]]] = {}
    peer = load_peer(args.peer_dir)
    if peer is not None:
        rows.append(("peer", "PyTorch port (stefanknegt/Probabilistic-Unet-Pytorch)"))
        builders["peer"] = lambda: peer_step(peer, images, masks)
    suite_rows = [
        SuiteVariant(
            "instance", "suite, MONAI blocks, InstanceNorm2d (as in issue 20)", "instance", ref=None
        ),
        SuiteVariant("group", "suite as shipped: instance norm run as GroupNorm(C, C)", ref="instance"),
        SuiteVariant(
            "channels_last",
            "shipped + channels_last activations (option, off)",
            channels_last=True,
            ref="group",
        ),
    ]
    if args.compile:
        suite_rows += [
            SuiteVariant(
                "compile_interp",
                "shipped + torch.compile of the loss, upsampling by F.interpolate (before)",
                compile_loss=True,
                interpolate=True,
                ref="group",
            ),
            SuiteVariant(
                "compile",
                "shipped + torch.compile of the loss (compile_loss option, off)",
                compile_loss=True,
                ref="compile_interp",
            ),
            SuiteVariant(
                "compile_cl",
                "channels_last + torch.compile of the loss",
                channels_last=True,
                compile_loss=True,
                ref="compile",
            ),
        ]
    if args.bf16:
        suite_rows.append(
            SuiteVariant(
                "bf16", "shipped + bf16 autocast (bf16-mixed: numerics change)", bf16=True, ref="group"
            )
        )
        if args.compile:
            suite_rows.append(
                SuiteVariant(
                    "compile_bf16",
                    "torch.compile of the loss + bf16 autocast (numerics change)",
                    compile_loss=True,
                    bf16=True,
                    ref="compile",
                )
            )
    reference: dict[str, str | None] = {"peer": None}
    for variant in suite_rows:
        rows.append((variant.key, variant.label))
        reference[variant.key] = variant.ref
        builders[variant.key] = lambda variant=variant: suite_step(
            images,
            masks,
            variant.norm,
            variant.channels_last,
            variant.compile_loss,
            variant.interpolate,
            variant.bf16,
        )

    if args.profile and args.profile not in builders:
        parser.error(f"--profile {args.profile}: not among this run's variants ({', '.join(builders)})")
    steps, warmup_s = {}, {}
    for key, _ in rows:
        start = time.perf_counter()
        steps[key] = builders[key]()
        steps[key]()  # warm-up (and compilation): kernel selection, allocator
        steps[key]()
        warmup_s[key] = time.perf_counter() - start
        print(f"{key}: built and warmed up in {warmup_s[key]:.0f} s", flush=True)
    times = time_interleaved(steps, args.rounds, args.steps)

    speed = {key: args.batch_size / statistics.median(t) for key, t in times.items()}
    best = {key: args.batch_size / min(t) for key, t in times.items()}  # the least disturbed step
    lines = [
        (
            "# Prob. U-Net training speed "
            + ("vs the PyTorch port" if peer else "of the suite variants, no port")
            + f" ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)"
        ),
        "",
        (
            f"Training step (forward + negative ELBO + backward + Adam step), batch {args.batch_size}, "
            f"1x{args.size}x{args.size}, levels 32-64-128-192, latent 6, beta 1, fp32 (bf16 autocast only in the `bf16` rows), {args.threads} threads "
            f"(`torch.set_num_threads`), CPU: {_cpu_name()}. Median of {args.rounds} interleaved rounds of "
            f"{args.steps} step(s) per variant. Command: `{command_line('benchmarks/prob_unet_speed.py', argv)}` "
            f"({memory_note()}). The port runs unmodified, its loss "
            "`-elbo(mask)`; only its module-level `device` is set to the CPU at run time (monkeypatch)."
        ),
        "",
        "| variant | train img/s (median) | what the change bought | x port | best step img/s | first 2 steps s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, label in rows:
        ref = reference[key]
        bought = f"x{speed[key] / speed[ref]:.2f} vs `{ref}`" if ref else ""
        vs_peer = f"{speed[key] / speed['peer']:.2f}" if "peer" in speed else "n/a"
        lines.append(
            f"| {label} (`{key}`) | {speed[key]:.2f} | {bought} | {vs_peer} | {best[key]:.2f} | {warmup_s[key]:.0f} |"
        )
    lines += ["", "Per round, seconds per step (" + ", ".join(key for key, _ in rows) + "):", ""]
    lines += [
        f"    round {r + 1}/{args.rounds}: "
        + ", ".join(
            f"{key} {statistics.fmean(times[key][r * args.steps : (r + 1) * args.steps]):.2f} s"
            for key, _ in rows
        )
        for r in range(args.rounds)
    ]
    lines += [
        "",
        (
            "First 2 steps: build, kernel selection and, for the compiled rows, compilation (inductor caches "
            "it on disk: a first compilation on 2 cores took 55-134 s in earlier runs)."
        ),
    ]
    if peer is None:
        lines += ["", "Peer rows skipped: no `--peer-dir` with the port's `probabilistic_unet.py`."]
    elif args.peer_source:
        lines += ["", f"Port snapshot: {args.peer_source}."]
    if args.profile:
        lines += ["", *profile_lines(args.profile, builders[args.profile])]
    table = "\n".join(lines) + "\n"
    return print_and_write(table, args.out)


def profile_kind(name: str) -> str:
    """The kind of operation a profiler event belongs to, for the profile table."""
    if name == "aten::convolution_backward":
        return "convolution backward (oneDNN)"
    if name == "aten::mkldnn_convolution":
        return "convolution forward (oneDNN)"
    if name.startswith("graph_") and "_cpp_fused_" in name:
        return "inductor's fused kernels (norm, activation, loss, upsampling)"
    if name in ("aten::mm", "aten::addmm", "aten::bmm"):
        return "matrix products (f_comb)"
    if (
        "Optimizer.step" in name
        or name.startswith("aten::_foreach")
        or name in ("aten::lerp_", "aten::addcdiv_")
    ):
        return "Adam"
    return "the rest (copies, allocation, graph calls)"


def profile_lines(key: str, build: Callable[[], Callable[[], None]], n_steps: int = 2) -> list[str]:
    """Self CPU time of ``n_steps`` steps of one variant by kind of operation, as a markdown table.

    The step is built and compiled anew (2 warm-up steps) with inductor's per-kernel profiler records on, so
    the fused kernels are named; the setting is restored afterwards, torch.compile's caches are not."""
    import torch._inductor.config as inductor_config
    from torch.profiler import ProfilerActivity, profile

    torch._dynamo.reset()  # else a variant timed before reuses its compiled graph, built without the records
    with inductor_config.patch({"cpp.enable_kernel_profile": True}):
        step = build()
        step()
        step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(n_steps):
                step()
    per_kind: Counter[str] = Counter()
    for event in prof.key_averages():
        kind = profile_kind(event.key)
        per_kind[kind] += event.self_cpu_time_total / 1e6 / n_steps
    total = sum(per_kind.values())
    lines = [
        (
            f"Profile of `{key}` (`torch.profiler`, self CPU time per step, mean of {n_steps} steps, "
            f"{total:.2f} s in all with the profiler's overhead):"
        ),
        "",
        "| kind of operation | s per step | share |",
        "|---|---:|---:|",
    ]
    for kind, seconds in per_kind.most_common():
        lines.append(f"| {kind} | {seconds:.3f} | {100 * seconds / total:.1f} % |")
    return lines


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


