"""Get the demo ready, then (with ``--serve``) start the Streamlit app.

By default the pages show the **shipped weights** (``apps/weights/<key>.safetensors`` with a model card each:
trained with the suite's own commands, see ``apps/weights/README.md``), so nothing is trained: this only
generates the synthetic example sets the pages browse (about 30 s on a fresh clone) and starts the app.

With ``--train`` it makes local checkpoints instead, which the pages then prefer. For each model of
:data:`apps.demo_models.DEMO_MODELS` it looks, in order, for

1. ``demo_checkpoints/<key>.ckpt`` (``$SUITE_DEMO_CHECKPOINTS``): nothing to do;
2. a checkpoint the user trained with the CLI under ``lightning_logs/<domain>/`` (the best one,
   newest first; for medical ones the checkpoint's ``model`` must match): copied;
3. nothing: the model's quick config (``DemoModel.config``) is trained through the suite's CLI
   (``python -m <module> fit -c <config>``) on the embedded synthetic data, into
   ``lightning_logs/demo/<key>/``, and its best checkpoint copied.

Each new checkpoint is then tested through the CLI (``test --ckpt_path``) and its test figures written to
``<key>.json`` beside it, which the pages show. ``--smoke`` trains a couple of steps only (for checking the
plumbing, not for a useful model).

Time (``--train``): ``--minutes`` (default 10) is the budget for the whole preparation on a 2-core CPU. About
55 % of it is training, shared between the models by their ``weight`` and enforced with
``--trainer.max_time``; the quick configs' own epoch limits still apply when they are reached first;
``--minutes 0`` keeps only those. Quick models are far weaker than the shipped ones.

``demo_checkpoints/``, ``lightning_logs/`` and the generated ``data/`` are under the repository in a source
checkout (``make demo``), and under the working directory once the suite is installed
(:func:`apps.demo_models.work_root`; run it there as ``python -m apps.prepare_demo``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from apps.demo_models import (
    DEMO_MODELS,
    checkpoint_dir,
    checkpoint_model_name,
    checkpoint_path,
    default_anomaly_data,
    default_medical_data,
    metrics_path,
    read_card,
    shipped_path,
    train_command,
    work_root,
)
from shared.task import CheckpointMismatchError

TRAIN_SHARE = 0.55  # of --minutes; the rest is process start-up, validation, testing and data generation
SMOKE_ARGS = [
    "--trainer.max_epochs",
    "1",
    "--trainer.max_steps",
    "2",
    "--trainer.limit_train_batches",
    "2",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.num_sanity_val_steps",
    "0",
]


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = round(width * done / max(total, 1))
    return "[" + "#" * filled + "-" * (width - filled) + f"] {done}/{total}"


def _say(message: str) -> None:
    print(message, flush=True)


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


#: the ``_test`` subprocess's exit status when the checkpoint is not this demo model's (other classes, another
#: task): an adopted one is then dropped, while any other failure stops ``prepare`` as before
DOES_NOT_FIT = 3


class CheckpointDoesNotFit(SystemExit):
    """The demo's test refused the checkpoint as another model's (:data:`DOES_NOT_FIT`)."""


def _run(cmd: list[str], what: str) -> None:
    _say("  $ " + " ".join(cmd))
    result = subprocess.run(cmd, check=False, cwd=work_root(), env=_env())
    if result.returncode == DOES_NOT_FIT:
        raise CheckpointDoesNotFit(f"{what}: the checkpoint is not this demo model's (the error above)")
    if result.returncode != 0:
        raise SystemExit(f"prepare_demo: {what} failed with exit code {result.returncode} (command above)")


def _best_in(folder: Path) -> Path | None:
    """The best checkpoint in a CLI checkpoint folder (``best-*``, newest first), else ``last.ckpt``."""
    if not folder.is_dir():
        return None
    best = sorted(folder.glob("best*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    if best:
        return best[0]
    last = folder / "last.ckpt"
    return last if last.is_file() else None


def _adoptable(key: str) -> Path | None:
    """A checkpoint the user already trained with this model's own config (``fit -c <its config>`` writes under
    ``lightning_logs/<domain>/<config name>/``), if any. Any config folder of the task was searched: the
    README's two-step smoke runs and another data preset's fit were adopted as demo models."""
    spec = DEMO_MODELS[key]
    folder = work_root() / "lightning_logs" / spec.domain / Path(spec.config).stem
    candidates = (
        sorted(folder.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
        if folder.is_dir()
        else []
    )
    candidates.sort(key=lambda p: not p.name.startswith("best"))  # best first, newest first within
    for path in candidates:
        if spec.model_name is None:
            return path
        try:
            if checkpoint_model_name(path) == spec.model_name:
                return path
        except Exception as exc:  # noqa: BLE001 - an unreadable file is skipped, and said so
            _say(f"  skipping {path}: cannot read it ({type(exc).__name__}: {exc})")
    return None


def time_cap(key: str, minutes: float) -> int | None:
    """Training seconds for ``key`` out of a ``minutes`` budget for all models (None: no cap)."""
    if minutes <= 0:
        return None
    total = sum(m.weight for m in DEMO_MODELS.values())
    return max(30, round(minutes * 60 * TRAIN_SHARE * DEMO_MODELS[key].weight / total))


def _max_time(seconds: int) -> str:
    return f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def slim_copy(source: Path, target: Path) -> None:
    """Copy a checkpoint without its optimizer / scheduler states (a third of a detector's size; the demo and
    ``test`` need only the weights, hyperparameters and loop state). Loaded with ``weights_only=True``."""
    import torch

    ckpt = torch.load(str(source), map_location="cpu", weights_only=True)
    for key in ("optimizer_states", "lr_schedulers"):
        ckpt.pop(key, None)
    tmp = target.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(target)


def train(key: str, smoke: bool, extra: list[str], minutes: float = 10.0) -> tuple[Path, float]:
    """Quick training through the CLI; returns the best checkpoint and the seconds it took."""
    spec = DEMO_MODELS[key]
    config = ROOT / spec.config
    if not config.is_file():
        raise SystemExit(f"prepare_demo: config {config} not found (needed to train {key})")
    work = work_root() / "lightning_logs" / "demo" / key
    shutil.rmtree(work, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        spec.module,
        "fit",
        "-c",
        str(config),
        "--checkpoint.dirpath",
        str(work),
        *spec.fit_args,
    ]
    cap = time_cap(key, minutes)
    if cap is not None and not smoke:
        _say(f"  training time cap: {cap} s (--trainer.max_time; --minutes {minutes:g} for all models)")
        cmd += ["--trainer.max_time", _max_time(cap)]
    cmd += (SMOKE_ARGS if smoke else []) + extra
    start = time.perf_counter()
    _run(cmd, f"training {key}")
    best = _best_in(work)
    if best is None:
        raise SystemExit(f"prepare_demo: training {key} wrote no checkpoint into {work}")
    return best, time.perf_counter() - start


def test(key: str, ckpt: Path, smoke: bool) -> tuple[dict, float]:
    """The CLI's ``test`` on ``ckpt`` in a subprocess; returns its logged test figures and seconds."""
    spec = DEMO_MODELS[key]
    out = ckpt.with_suffix(".test.json")
    cmd = [sys.executable, str(Path(__file__).resolve()), "_test", key, str(ckpt), str(out)]
    if smoke:
        cmd.append("--smoke")
    start = time.perf_counter()
    _run(cmd, f"testing {key} ({spec.config})")
    figures = json.loads(out.read_text(encoding="utf-8"))
    out.unlink(missing_ok=True)
    return figures, time.perf_counter() - start


def _test_in_process(key: str, ckpt: str, out: str, smoke: bool) -> None:
    """Inside the ``_test`` subprocess: the domain's CLI ``main`` in-process, then its callback metrics."""
    import importlib

    spec = DEMO_MODELS[key]
    main = importlib.import_module(f"{spec.module}.__main__").main
    args = [
        "test",
        "-c",
        str(ROOT / spec.config),
        *spec.fit_args,
        "--ckpt_path",
        ckpt,
        "--trainer.logger",
        "false",
        "--checkpoint.dirpath",
        str(work_root() / "lightning_logs" / "demo" / key),
    ]  # as in training: no warning
    sys.argv = sys.argv[:1]  # LightningCLI gets its arguments from `args` alone
    if smoke:
        args += ["--trainer.limit_test_batches", "2"]
    try:
        cli = main(args)
    except CheckpointMismatchError as exc:  # other classes or another task: prepare drops it, trains its own
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(DOES_NOT_FIT) from exc
    figures = {}
    for name, value in cli.trainer.callback_metrics.items():
        number = float(value)
        figures[name] = number if math.isfinite(number) else None
    Path(out).write_text(json.dumps(figures, indent=2, sort_keys=True), encoding="utf-8")


def use_shipped(keys: list[str]) -> list[dict]:
    """Check the shipped weights (readable card, present file) and generate the example data sets."""
    report = []
    for key in keys:
        local, shipped = checkpoint_path(key), shipped_path(key)
        if local.is_file():
            _say(f"  {key}: local checkpoint {local} (preferred over the shipped weights)")
            report.append({"key": key, "status": "found", "checkpoint": str(local)})
        elif shipped.is_file():
            card = read_card(shipped)
            size = shipped.stat().st_size / 2**20
            _say(f"  {key}: shipped weights {shipped.name} ({size:.1f} MB, trained {card.get('date')})")
            report.append({"key": key, "status": "shipped", "checkpoint": str(shipped)})
        else:
            _say(f"  {key}: no weights; train them with: {train_command(key)}")
            report.append({"key": key, "status": "missing", "checkpoint": None})
    _say("  the synthetic example sets the pages browse (generated on the first run only) ...")
    from domains.driving.synthetic import ensure_synthetic_anomaly
    from domains.medical.synthetic import ensure_synthetic_lidc

    ensure_synthetic_lidc(default_medical_data())  # where the pages look for them
    ensure_synthetic_anomaly(default_anomaly_data(), verbose=False)
    return report


def prepare(keys: list[str], force: bool, smoke: bool, extra: list[str], minutes: float = 10.0) -> list[dict]:
    folder = checkpoint_dir()
    folder.mkdir(parents=True, exist_ok=True)
    report = []
    total = len(keys)
    for i, key in enumerate(keys):
        spec = DEMO_MODELS[key]
        target, info_path = checkpoint_path(key, folder), metrics_path(key, folder)
        _say(f"\n{_bar(i, total)}  {key}: {spec.title}")
        if target.is_file() and info_path.is_file() and not force:
            _say(f"  found {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
            report.append({"key": key, "status": "found", "checkpoint": str(target)})
            continue
        info: dict = {"key": key, "title": spec.title, "config": spec.config}
        source = None if force or smoke else (target if target.is_file() else _adoptable(key))
        while True:
            if source is None:
                _say(f"  no checkpoint: training {spec.config} on the synthetic data")
                source, seconds = train(key, smoke, extra, minutes)
                info.update(trained=True, train_seconds=round(seconds, 1), smoke=smoke)
            else:
                _say(f"  using the existing checkpoint {source}")
                info.update(trained=False)
            if source != target:
                slim_copy(source, target)
            info["source"] = str(source)
            _say(f"  testing {target.name}")
            try:
                figures, seconds = test(key, target, smoke)
                break
            except CheckpointDoesNotFit as exc:
                if info["trained"]:
                    raise
                # one of the user's runs with other classes or data: the demo's test cannot read it. Its copy
                # goes (every rerun tested it again and failed), and the demo trains its own
                target.unlink(missing_ok=True)
                _say(f"  {source} does not fit {spec.config} ({exc}): training the demo's own instead")
                source = None
        info.update(test=figures, test_seconds=round(seconds, 1), created=time.strftime("%Y-%m-%d %H:%M:%S"))
        info_path.write_text(json.dumps(info, indent=2), encoding="utf-8")
        _say(f"  wrote {info_path}")
        report.append(
            {"key": key, "status": "trained" if info["trained"] else "adopted", "checkpoint": str(target)}
        )
    _say(f"\n{_bar(total, total)}  demo checkpoints ready in {folder}")
    return report


def streamlit_command(port: int, address: str) -> list[str]:
    """``python -m streamlit run apps/app.py`` headless on ``address:port``, no usage statistics sent."""
    app = str(ROOT / "apps" / "app.py")
    options = {"server.address": address, "server.port": port, "server.headless": "true"}
    options["browser.gatherUsageStats"] = "false"
    return [sys.executable, "-m", "streamlit", "run", app, *(f"--{k}={v}" for k, v in options.items())]


def serve(port: int) -> None:
    """Replace this process with ``streamlit run apps/app.py`` on localhost."""
    url = f"http://localhost:{port}"
    _say(f"\nStarting the demo at {url}  (Ctrl+C stops it)\n")
    cmd = streamlit_command(port, "localhost")
    os.chdir(work_root())  # installed: the working directory, not site-packages
    os.execve(sys.executable, cmd, _env())


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_test"]:  # internal: the test subprocess
        sub = argparse.ArgumentParser(prog="prepare_demo.py _test")
        sub.add_argument("key")
        sub.add_argument("ckpt")
        sub.add_argument("out")
        sub.add_argument("--smoke", action="store_true")
        a = sub.parse_args(argv[1:])
        _test_in_process(a.key, a.ckpt, a.out, a.smoke)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=list(DEMO_MODELS), help="prepare only these models")
    ap.add_argument(
        "--train",
        action="store_true",
        help="train local checkpoints (quick configs) instead of the shipped weights",
    )
    ap.add_argument("--force", action="store_true", help="with --train: retrain even if a checkpoint exists")
    ap.add_argument("--smoke", action="store_true", help="2 training steps per model (plumbing check)")
    ap.add_argument(
        "--minutes",
        type=float,
        default=10.0,
        help="time budget for preparing all models on 2 CPU cores (0: only the configs' limits)",
    )
    ap.add_argument("--serve", action="store_true", help="then start the Streamlit app on localhost")
    ap.add_argument("--port", type=int, default=8501)
    ap.add_argument(
        "--fit-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for every fit command, e.g. --fit-arg=--trainer.max_epochs=1",
    )
    args = ap.parse_args(argv)
    if not (args.train or args.smoke) and (args.force or args.fit_arg):
        # without a training run they did nothing, unsaid: `--force` read as "make the demo again"
        given = [o for o, v in (("--force", args.force), ("--fit-arg", args.fit_arg)) if v]
        verb = "applies" if len(given) == 1 else "apply"
        ap.error(
            f"{' and '.join(given)} only {verb} to local training: add --train "
            "(else the shipped weights serve)"
        )
    start = time.perf_counter()
    keys = list(args.only or DEMO_MODELS)
    if args.train or args.smoke:
        prepare(keys, args.force, args.smoke, args.fit_arg, args.minutes)
    else:
        use_shipped(keys)
    _say(f"prepared in {time.perf_counter() - start:.0f} s")
    if args.serve:
        serve(args.port)


if __name__ == "__main__":
    main()
