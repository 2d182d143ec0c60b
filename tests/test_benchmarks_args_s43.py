"""Benchmark scripts run as programs: ``--help`` and bad options are answered before torch is imported (it
took 7 s), and the process keeps freed memory for reuse as ``python -m domains.<domain>`` does, which every
table says (they measured glibc's slower defaults without saying so)."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import report

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.stem for p in (REPO / "benchmarks").glob("*.py") if p.stem not in ("__init__", "report"))
HEAVY = ("torch", "pytorch_lightning", "lightning", "torchvision", "numpy", "albumentations", "cv2", "monai")
#: in a fresh interpreter, each (script, arguments) run as `python benchmarks/<script>.py` starts it; prints
#: the exit codes and the heavy modules imported by then
PROBE = """
import json, runpy, sys
runs, heavy = map(json.loads, sys.argv[1:])
codes = []
for path, args in runs:
    sys.argv = [path, *args]
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as stop:
        codes.append(stop.code)
print(json.dumps({"codes": codes, "heavy": sorted(m for m in heavy if m in sys.modules)}))
"""
#: a tiny table of benchmarks/backbones.py (well under a second)
TINY = ["--names", "tiny_cnn", "--sizes", "32", "--iters", "1", "--batch", "2", "--accelerator", "cpu"]


def test_help_and_bad_options_of_every_script_import_no_torch():
    """Every script parsed its options after importing torch, Lightning and its domain: ``--help`` or a typo
    took 7 s. One fresh interpreter runs them all: a heavy import in any of them fails the test."""
    runs = [(str(REPO / "benchmarks" / f"{s}.py"), ["--help"]) for s in SCRIPTS]
    runs += [(str(REPO / "benchmarks" / f"{s}.py"), ["--bogus"]) for s in SCRIPTS if s != "detector_budget"]
    runs.append((str(REPO / "benchmarks" / "backbones.py"), ["--batch", "0"]))  # the range checks too
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(runs), json.dumps(HEAVY)], cwd=REPO, capture_output=True,
        text=True, check=False, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, timeout=60,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-2000:]
    result = json.loads(probe.stdout.splitlines()[-1])
    assert result["heavy"] == [], result
    library = SCRIPTS.index("detector_budget")
    assert "run benchmarks/driving_detection.py" in result["codes"][library]  # its message, at once too
    assert result["codes"][:library] + result["codes"][library + 1 : len(SCRIPTS)] == [0] * (len(SCRIPTS) - 1)
    assert result["codes"][len(SCRIPTS) :] == [2] * len(SCRIPTS)
    assert "error: --batch must be positive, got 0" in probe.stderr and "usage: backbones.py" in probe.stdout


def test_accelerator_choices_are_the_devices_own():
    """The options are built without importing shared.device (torch): its choices, copied, must not drift."""
    from shared.device import ACCELERATORS

    assert report.ACCELERATORS == ACCELERATORS


def test_a_choice_from_a_heavy_module_is_still_refused_in_argparse_words(capsys):
    """--encoder's choices are the backbone registry (it imports torch): the first parse of a program lets any
    name through, main()'s refuses it as argparse does."""
    from benchmarks.driving_anomaly import main, options

    assert options().parse_args(["--encoder", "nope"]).encoder == "nope"
    with pytest.raises(SystemExit) as stop:
        main(["--encoder", "nope"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument --encoder: invalid choice: 'nope' (choose from " in err
    assert "'unet_encoder'" in err


def test_main_called_from_python_changes_no_allocator_setting_and_its_table_says_so(monkeypatch):
    from benchmarks.backbones import main

    monkeypatch.setattr("shared.allocator.keep_freed_memory", lambda: pytest.fail("main() set the allocator"))
    monkeypatch.setattr(report, "_freed_memory_kept", False)
    lines = main(TINY)
    assert lines[0].endswith(
        "` (freed memory not kept for reuse by the suite, unlike `python -m domains.<domain>`)"
    )


def test_run_as_a_program_a_benchmark_keeps_freed_memory_as_the_cli_and_says_so(tmp_path, monkeypatch):
    """The suite's command lines keep freed memory (1.29x on a Prob. U-Net step); the benchmarks, run as
    programs, measured glibc's defaults. prob_unet_speed.py keeps the defaults (its --keep-freed-memory
    compares both). Run through each script's ``__main__`` block in this process, the allocator faked."""
    calls = []
    monkeypatch.setattr("shared.allocator.keep_freed_memory", lambda: calls.append("kept") or True)
    monkeypatch.setattr(report, "_freed_memory_kept", False)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts its checkout first
    out = tmp_path / "backbones.md"
    monkeypatch.setattr(sys, "argv", ["benchmarks/backbones.py", *TINY, "--out", str(out)])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(REPO / "benchmarks" / "backbones.py"), run_name="__main__")
    assert stop.value.code == 0 and calls == ["kept"]
    assert out.read_text().splitlines()[0].endswith(
        "` (freed memory kept for reuse as in `python -m domains.<domain>`: `shared.allocator`)"
    )
    monkeypatch.setattr(sys, "argv", ["benchmarks/prob_unet_speed.py", "--size", "8"])  # refused in main()
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(REPO / "benchmarks" / "prob_unet_speed.py"), run_name="__main__")
    assert stop.value.code == 2 and calls == ["kept"]
