"""ONNX export for deployment, with a check of onnxruntime's outputs against PyTorch."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Self

import numpy as np
import torch
from torch import nn

from shared.files import written_whole
from shared.task import (
    LIBRARY_PACKAGES,
    TRUSTED_PACKAGES,
    CheckpointMismatchError,
    _class_paths,
    check_checkpoint_file,
    read_checkpoint_data,
)

if TYPE_CHECKING:  # imported when a graph is run (onnx_session)
    import onnxruntime

DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-5
# opsets the export takes: 11 gave Resize its modern form; 20 is the last the TorchScript exporter
# (dynamo=False, see export_onnx) writes. Outside them torch failed deep in the graph, after a 1,000-line dump.
OPSETS = range(11, 21)


def export_onnx(
    module: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: str | Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]] | None = None,
    opset: int = 17,
) -> Path:
    """Export ``module`` (in eval mode) to ``path``; written to a temp file first so a failure leaves nothing behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        # attention's fused inference kernel (taken in eval mode with an even number of heads) has no ONNX form:
        # the exporter stopped at aten::_native_multi_head_attention; the plain path computes the same
        torch.backends.mha.set_fastpath_enabled(False)
        with torch.no_grad(), written_whole(path) as tmp, warnings.catch_warnings():
            # two exporter notes that are no fault here: instance norm without running statistics normalises
            # with the input's own in eval mode too, as exported; an uncut strided slice is exported as written
            warnings.filterwarnings("ignore", message=r".*operator 'instance_norm' is set to train=True")
            warnings.filterwarnings("ignore", message=r"Constant folding - Only steps=1 can be constant folded")
            # The TorchScript-based exporter handles the suite's control flow (interpolate to a skip's size,
            # dynamic batch) without tracing guards; dynamo=False selects it explicitly.
            torch.onnx.export(
                module,
                example_inputs,
                str(tmp),
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                dynamo=False,
            )
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return path


def onnx_session(path: str | Path):
    """An onnxruntime CPU session of the graph at ``path``, to run many inputs through (building one took 0.4 s
    for a Mask R-CNN graph)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors come back as exceptions; its own log printed them a second time
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(graph, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run an exported model with onnxruntime on the CPU; ``graph``: its path, or an :func:`onnx_session`."""
    session = onnx_session(graph) if isinstance(graph, (str, Path)) else graph
    return session.run(None, inputs)


def check_against_pytorch(
    path: str | Path | onnxruntime.InferenceSession,
    module: nn.Module,
    inputs: dict[str, torch.Tensor],
    names: list[str],
    atol: float,
    rtol: float,
    shown: Path | None = None,
) -> dict[str, float]:
    """Largest |onnxruntime - PyTorch| per output; raises if any exceeds ``atol + rtol * |PyTorch|`` (naming
    ``shown``, the file's final name, where ``path`` is a staged copy). ``path``: the graph's file, or an
    :func:`onnx_session` of it (then give ``shown``)."""
    with torch.no_grad():
        expected = module.eval()(*inputs.values())
    expected = expected if isinstance(expected, (tuple, list)) else (expected,)
    got = run_onnx(path, {k: v.numpy() for k, v in inputs.items()})
    measured = {}
    for name, g, e in zip(names, got, expected, strict=True):
        measured[name], within = _difference(g, e.numpy(), atol, rtol)
        if not within:
            raise ValueError(
                f"{shown or path}: onnxruntime differs from PyTorch in {name} by up to {measured[name]:.3g} "
                f"(allowed: atol {atol:g} + rtol {rtol:g} * |value|)"
            )
    return measured


def _difference(got: np.ndarray, expected: np.ndarray, atol: float, rtol: float) -> tuple[float, bool]:
    """Largest |onnxruntime - PyTorch| and whether every element is within ``atol + rtol * |PyTorch|``."""
    diff = np.abs(got.astype(np.float64) - expected)
    if not diff.size:
        return 0.0, True
    return float(diff.max()), bool((diff <= atol + rtol * np.abs(expected)).all())


@dataclass(frozen=True)
class ExportCheck:
    """The ONNX opset an export writes and the tolerance its graphs must meet against PyTorch:
    ``|onnxruntime - PyTorch| <= atol + rtol * |PyTorch|`` (the export CLIs' ``--atol --rtol --opset``)."""

    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    opset: int = 17


#: the check an export gets unless told otherwise (frozen: safe to share as a default)
DEFAULT_CHECK = ExportCheck()


class CheckedExport:
    """The files of one export, written whole or not at all: each graph is written into a hidden staging folder
    in ``out_dir`` and checked against PyTorch there; :meth:`finish` writes the sidecar and moves the set into
    ``out_dir``. If anything in the ``with`` block fails (a graph, its check, the sidecar), the staged files and
    the folders the export made are removed, and an earlier export in ``out_dir`` stays as it was (a failed
    re-export had replaced its graphs and then deleted them, beside its sidecar). ``domain``, ``model`` and
    ``checkpoint`` open the sidecar."""

    def __init__(
        self, out_dir: str | Path, check: ExportCheck, domain: str, model: str, checkpoint: str | Path | None
    ):
        self.out_dir, self.opset, self.atol, self.rtol = Path(out_dir), check.opset, check.atol, check.rtol
        self.identity = {
            "domain": domain,
            "model": model,
            "checkpoint": str(checkpoint) if checkpoint else None,
        }
        self._staged: list[str] = []  # graph files, in the order written
        #: graphs whose height and width had to be fixed at the export size (:meth:`graph`), file -> [H, W]
        self.fixed_sizes: dict[str, list[int]] = {}
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise NotADirectoryError(f"--out {self.out_dir}: is a file; give a folder for the export")
        self._made = [p for p in (self.out_dir, *self.out_dir.parents) if not p.exists()]  # removed on failure
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            # one name: a folder left by an export that was killed is cleared by the next one into the folder
            self._staging = self.out_dir / ".export-staging"
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging.mkdir()
        except OSError as err:
            raise OSError(err.errno, f"--out {self.out_dir}: cannot write the export there ({err.strerror})") from None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        shutil.rmtree(self._staging, ignore_errors=True)  # gone after finish(); after a failure, its files
        if exc_type is not None:
            for folder in self._made:  # deepest first
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()

    def staged(self, file: str) -> Path:
        """Where ``file`` lies until :meth:`finish` moves it into ``out_dir``: for checks of one's own on a graph
        (a failure there leaves nothing behind)."""
        return self._staging / file

    def graph(
        self,
        file: str,
        module: nn.Module,
        inputs: dict[str, torch.Tensor],
        outputs: list[str],
        dynamic_axes: dict[str, dict[int, str]],
    ) -> dict[str, float]:
        """Export ``module`` to ``out_dir/file``; returns the largest |onnxruntime - PyTorch| per output.

        A graph of one ``image`` input is also checked at another size its dynamic axes allow (another batch
        size, twice the height and width): a network whose Python code depends on the input's shape (a ViT's token
        count, Swin's window padding) is traced with the export size's constants, and its graph gave wrong
        numbers, or failed, at every other size while passing the check at its own. Such a graph is exported
        again with height and width fixed (:attr:`fixed_sizes`, named in the sidecar), with a warning."""
        path = self.stage(file, module, inputs, outputs, dynamic_axes)
        session = onnx_session(path)  # one for both checks: building one took 0.1-0.4 s
        measured = check_against_pytorch(session, module, inputs, outputs, self.atol, self.rtol, self.out_dir / file)
        image_axes = dynamic_axes.get("image", {}) if list(inputs) == ["image"] else {}
        wrong = self._wrong_at_another_size(session, module, inputs["image"], image_axes) if image_axes else None
        if wrong:
            size = [int(n) for n in inputs["image"].shape[2:]]
            warnings.warn(
                f"{self.out_dir / file}: the graph is exact at {size[0]}x{size[1]} but not at twice that ({wrong}): this network "
                "fixes shapes at the export size, so height and width are fixed there; export at the size you "
                "will run it at",
                stacklevel=2,
            )
            fixed = {
                name: {axis: label for axis, label in axes.items() if label not in ("height", "width")}
                for name, axes in dynamic_axes.items()
            }
            path = self.stage(file, module, inputs, outputs, fixed)
            measured = check_against_pytorch(
                path, module, inputs, outputs, self.atol, self.rtol, self.out_dir / file
            )
            self.fixed_sizes[file] = size
        return measured

    def _wrong_at_another_size(self, graph, module: nn.Module, image: torch.Tensor, axes: dict) -> str | None:
        """How the graph's first output goes wrong at twice the height and width, and another batch size (one
        image, or two after one), run on ``graph`` (the file or its :func:`onnx_session`); None: it agrees within
        ten times the tolerance (rounding at a larger size is no fixed shape), or the network itself cannot run
        there. The first output only: it is the network's own, and scores computed from an argmax (SML) can flip
        at a pixel of near-equal logits whatever the shape."""
        shape = [
            n * 2 if axes.get(axis) in ("height", "width") else (1 if n != 1 else 2) if axis in axes else n
            for axis, n in enumerate(image.shape)
        ]
        other = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
        try:
            with torch.no_grad():
                expected = module.eval()(other)
        except Exception:  # noqa: BLE001 - no other size to compare at
            return None
        expected = (expected[0] if isinstance(expected, (tuple, list)) else expected).numpy()
        try:
            got = run_onnx(graph, {"image": other.numpy()})[0]
        except Exception as exc:  # noqa: BLE001 - onnxruntime refusing the shape (a Reshape's constants)
            return f"onnxruntime: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        if got.shape != expected.shape:
            return f"output shape {got.shape} where PyTorch gives {expected.shape}"
        # ten times the accuracy bound: a larger input's longer sums round differently (a fully convolutional
        # U-Net missed the bound by a tenth at 384x1280 and was fixed at its export size), while a graph whose
        # shapes are baked in is wrong by the size of its values
        largest, within = _difference(got, expected, 10 * self.atol, 10 * self.rtol)
        return None if within else f"its first output differs from PyTorch by up to {largest:.3g}"

    def stage(
        self,
        file: str,
        module: nn.Module,
        inputs: dict[str, torch.Tensor],
        outputs: list[str],
        dynamic_axes: dict[str, dict[int, str]],
    ) -> Path:
        """Export ``module`` into the staging folder without :meth:`graph`'s check (which calls this first), for
        a graph whose outputs have data-dependent lengths (detections: one more or fewer at a score tie), which
        the caller compares with PyTorch itself before :meth:`finish`; returns the staged file."""
        path = export_onnx(
            module,
            tuple(inputs.values()),
            self._staging / file,
            input_names=list(inputs),
            output_names=outputs,
            dynamic_axes=dynamic_axes,
            opset=self.opset,
        )
        if file not in self._staged:
            self._staged.append(file)
        return path

    def tolerance(self, measured: dict, measured_on: str) -> dict:
        """The sidecar's ``tolerance`` entry: the rule, its bounds and what was measured."""
        return {
            "rule": "|onnxruntime - PyTorch| <= atol + rtol * |PyTorch|",
            "atol": self.atol,
            "rtol": self.rtol,
            "max_abs_diff": measured,
            "measured_on": measured_on,
        }


    def finish(self, file: str, sidecar: dict, measured: dict, measured_on: str) -> dict:
        """``sidecar`` between the export's ``domain`` / ``model`` / ``checkpoint`` and its ``opset`` /
        :meth:`tolerance`, written to ``out_dir/file`` with the graphs; returns it."""
        tolerance = self.tolerance(measured, measured_on)
        sidecar = {**self.identity, **sidecar, "opset": self.opset, "tolerance": tolerance}
        if self.fixed_sizes:  # these graphs take only this height and width (see graph())
            sidecar["fixed_input_size"] = dict(self.fixed_sizes)
        (self._staging / file).write_text(json.dumps(sidecar, indent=2), encoding="utf-8")  # staged: moved in whole below
        # an earlier sidecar goes first: if a graph cannot be replaced (open in a viewer on Windows), the
        # folder holds no sidecar describing graphs it does not hold
        (self.out_dir / file).unlink(missing_ok=True)
        for name in [*self._staged, file]:
            os.replace(self._staging / name, self.out_dir / name)
        return sidecar


def largest_difference(sidecar: dict) -> float:
    """The largest |onnxruntime - PyTorch| a sidecar records (``tolerance.max_abs_diff``: per output, or per
    graph and output), for the exports' closing line."""
    values = sidecar["tolerance"]["max_abs_diff"].values()
    return max(v for value in values for v in (value.values() if isinstance(value, dict) else [value]))


def export_main(
    argv: list[str] | None,
    package: str,
    doc: str,
    task_class: type,
    export: Callable,
    files: tuple[str, str],
    *,
    ckpt_note: str = "",
    size_help: str | None = None,
    input_size: Callable[[dict], tuple[int, int]] | None = None,
    data: bool = False,
    add_options: Callable[[argparse.ArgumentParser], None] | None = None,
    export_options: Callable[[argparse.Namespace, nn.Module], dict] | None = None,
    written: Callable[[dict], tuple[str, str]] | None = None,
    detail: Callable[[dict], str] | None = None,
) -> dict:
    """The whole ``main`` of an export CLI: :func:`export_parser` (``--out``'s help from
    ``files``), the domain's ``add_options(parser)``, :func:`parse_and_load` (``--size`` where ``size_help``),
    then ``export(task, out, check=..., checkpoint=...)`` writing ``files`` (graph, sidecar), and its closing
    line (:func:`closing_line`); returns the sidecar.

    ``export`` also gets ``size=`` (``--size``, else ``input_size(checkpoint)``) where ``input_size`` is
    given, ``data=`` (the checkpoint's data module settings) where ``data``, and what
    ``export_options(args, task)`` returns. The closing line names ``written(sidecar)`` (default ``files``)
    and adds ``detail(sidecar)``."""
    parser = export_parser(package, doc, out_help=f"output folder for {files[0]} and {files[1]}", ckpt_note=ckpt_note)
    if add_options is not None:
        add_options(parser)
    args, task, size = parse_and_load(parser, argv, task_class, size_help=size_help, input_size=input_size)
    options = {} if input_size is None else {"size": size}
    if data:
        options["data"] = args.data_hparams
    if export_options is not None:
        options |= export_options(args, task)
    check = ExportCheck(args.atol, args.rtol, args.opset)
    sidecar = export(task, args.out, check=check, checkpoint=args.ckpt, **options)
    graphs, json_file = written(sidecar) if written else files
    print(closing_line(graphs, json_file, args.out, sidecar, detail(sidecar) if detail else ""))
    return sidecar


def closing_line(graphs: str, sidecar_file: str, out: str | Path, sidecar: dict, detail: str = "") -> str:
    """Every export's last line: what it wrote where, ``detail`` (what the files are, in a few words) and the
    largest onnxruntime vs PyTorch difference the sidecar records."""
    detail = f"{detail}; " if detail else ""
    difference = f"onnxruntime vs PyTorch: max abs diff {largest_difference(sidecar):.2e}"
    return f"wrote {graphs} and {sidecar_file} to {out} ({detail}{difference})"


def run_export(main) -> None:
    """An export's command line: bad input in one line, as the training command lines
    (:func:`shared.cli_help.report_input_errors`)."""
    from shared.cli_help import report_input_errors

    with report_input_errors():
        main()


def export_parser(package: str, doc: str, out_help: str, ckpt_note: str = "") -> argparse.ArgumentParser:
    """The ``--ckpt`` (a Lightning checkpoint of ``package``) and ``--out`` options every export CLI
    (``python -m <package>.export``) starts with; the domain adds its own next."""
    parser = argparse.ArgumentParser(prog=f"python -m {package}.export", description=doc.split("\n")[0])
    parser.add_argument("--ckpt", required=True, help=f"Lightning checkpoint of {package}{ckpt_note}")
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument(
        "--import",
        dest="modules",
        nargs="+",
        default=[],
        metavar="MODULE",
        help="your own network's module (fit's --model.network mybb.MyNet: --import mybb), imported before the "
        "checkpoint is read; run from the folder fit ran in, or put the module's folder on PYTHONPATH",
    )
    return parser


def parse_and_load(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    task_cls: type,
    size_help: str | None = None,
    input_size: Callable[[dict], tuple[int, int]] | None = None,
) -> tuple[argparse.Namespace, nn.Module, tuple[int, ...] | None]:
    """Add ``--size`` (with ``size_help``) and the check options, parse, and load ``--ckpt`` as ``task_cls``.

    Returns (args, task, size): ``--size``, else ``input_size(checkpoint)`` (None without ``input_size``);
    ``args.data_hparams`` holds the checkpoint's data module settings. The checkpoint is read as plain tensors
    first, so a file of another task fails before anything is built.
    """
    if size_help is not None:
        parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help=size_help)
    parser.add_argument(
        "--atol", type=float, default=DEFAULT_ATOL, help=f"absolute ORT vs PyTorch tolerance (default {DEFAULT_ATOL:g})"
    )
    parser.add_argument(
        "--rtol", type=float, default=DEFAULT_RTOL, help=f"relative ORT vs PyTorch tolerance (default {DEFAULT_RTOL:g})"
    )
    parser.add_argument(
        "--opset", type=int, default=17, help=f"ONNX opset, {OPSETS.start}..{OPSETS.stop - 1} (default: 17)"
    )
    args = parser.parse_args(argv)
    if args.opset not in OPSETS:
        parser.error(f"--opset {args.opset}: the export writes opsets {OPSETS.start}..{OPSETS.stop - 1}")
    if getattr(args, "size", None) and min(args.size) < 1:
        parser.error(f"--size {args.size[0]} {args.size[1]}: height and width must be at least 1 pixel")
    if args.atol < 0 or args.rtol < 0:
        parser.error(f"--atol {args.atol:g} --rtol {args.rtol:g}: tolerances must be >= 0")
    # shape-dependent Python branches are traced as constants on purpose (see the domains' export docstrings)
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    import_modules(parser, args.modules)
    # checked here (the dict also gives the size), then built by Lightning: load_checked would check it twice
    try:
        checkpoint = check_checkpoint_file(args.ckpt, task_cls, option="--ckpt")
    except CheckpointMismatchError:
        if own := unimported_modules(args.ckpt):  # the check's advice (--model.network) is fit's
            parser.error(
                f"--ckpt {args.ckpt}: it names classes of your own module(s) {', '.join(own)}, which the export "
                f"imports only when told (importing runs their code): add --import {' '.join(own)} (run from the "
                "folder fit ran in, or with that folder on PYTHONPATH)"
            )
        raise
    args.data_hparams = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    size = None
    if input_size is not None:
        size = tuple(args.size) if args.size else input_size(checkpoint)
    task = task_cls.load_from_checkpoint(args.ckpt, map_location="cpu", weights_only=True)
    return args, task, size


def import_modules(parser: argparse.ArgumentParser, modules: list[str]) -> None:
    """Import ``--import``'s modules, as fit's ``--model.network`` imported the network's: a checkpoint's own
    class is built only once its module is imported (the suite never imports one a checkpoint names)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if not (err.name and f"{module}.".startswith(f"{err.name}.")):
                raise  # a module that the user's module imports: its own message names it
            parser.error(
                f"--import {module}: no module {err.name!r} on the import path; run from the folder that holds "
                f"{module.replace('.', '/')}.py (where fit ran), or put that folder on PYTHONPATH"
            )


def unimported_modules(path: str | Path) -> list[str]:
    """The modules outside the suite and its libraries that the checkpoint's settings name and that are not
    imported (none where the file cannot be read as data: the check's own error says why)."""
    try:
        checkpoint = read_checkpoint_data(path, mmap=True)
    except (CheckpointMismatchError, OSError):
        return []
    if not isinstance(checkpoint, dict):
        return []
    hparams = [checkpoint.get("hyper_parameters") or {}, checkpoint.get("datamodule_hyper_parameters") or {}]
    modules = [class_path.rpartition(".")[0] for class_path in _class_paths(hparams)]
    outside = [m for m in modules if m and not m.startswith(TRUSTED_PACKAGES + LIBRARY_PACKAGES)]
    return list(dict.fromkeys(m for m in outside if m not in sys.modules))
