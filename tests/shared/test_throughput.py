"""benchmarks/throughput.py builds every task from its configs the way the CLI does (SuiteCLI with run=False)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import throughput


@pytest.mark.parametrize("name", list(throughput.TASKS))
def test_every_task_builds_from_its_quick_and_gpu_configs(name):
    for configs in throughput.TASKS[name][2:]:
        task, data = throughput._build(
            name, configs, "cpu"
        )  # no subcommand, no checkpoint: parses and builds
        assert task is not None and data is not None and int(data.batch_size) >= 1


def test_images_of_a_batch_by_hand():
    assert throughput._batch_images({"image": torch.zeros(3, 1, 8, 8)}) == 3
    assert throughput._batch_images(([torch.zeros(3, 8, 8)] * 2, [{}, {}])) == 2
    clips = {"frame_valid": torch.tensor([[True, True, False], [True, True, True]])}
    assert throughput._batch_images(clips) == 5  # clips count their real frames


def test_benchmark_numbers_out_of_range_are_refused_naming_the_option(capsys):
    """--budget-minutes 0 ended in a traceback about 'seconds > 0', --steps 0 in a full-length run."""
    import argparse

    from benchmarks.report import check_numbers

    parser = argparse.ArgumentParser(prog="bench")
    for option, kind in (
        ("--steps", int),
        ("--warmup", int),
        ("--budget-fraction", float),
        ("--oe-fraction", float),
        ("--batch", int),
    ):
        parser.add_argument(option, type=kind, default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=None)  # each of a list is checked
    for argv, message in (
        (["--steps", "0"], "--steps must be positive, got 0"),
        (["--warmup", "-1"], "--warmup must be >= 0, got -1"),
        (["--budget-fraction", "0"], "--budget-fraction must be in (0, 1], got 0.0"),
        (["--budget-fraction", "1.5"], "--budget-fraction must be in (0, 1], got 1.5"),
        (["--oe-fraction", "1"], "--oe-fraction must be in (0, 1), got 1.0"),
        (["--oe-fraction", "0"], "--oe-fraction must be in (0, 1), got 0.0"),
        (["--batch", "-1"], "--batch must be positive, got -1"),  # backbones.py: a torch traceback
        (["--sizes", "64", "0"], "--sizes must be positive, got [64, 0]"),
    ):
        with pytest.raises(SystemExit) as stop:
            check_numbers(parser, parser.parse_args(argv))
        assert stop.value.code == 2 and f"bench: error: {message}" in capsys.readouterr().err
    ok = parser.parse_args(
        ["--steps", "3", "--warmup", "0", "--budget-fraction", "1", "--oe-fraction", "0.5"]
    )
    assert check_numbers(parser, ok) is ok  # the ends that are allowed, and unset options, pass


@pytest.mark.parametrize(
    "script, argv",
    [
        ("medical", ["--test-items", "0"]),
        ("driving_instances", ["--max-items", "0"]),
        ("driving_anomaly", ["--max-test-images", "-1"]),
        ("transfer", ["--eval-items", "0"]),
        ("driving_accident", ["--max-false-alarm", "1.5"]),
        ("medical", ["--lr", "0"]),
        ("driving_anomaly", ["--oe-weight", "-1"]),
        ("transfer", ["--source-share", "0"]),  # a source of 0 steps was reported as a transfer
        ("transfer", ["--source-share", "1"]),
    ],
)
def test_a_cap_of_zero_is_refused_not_read_as_all_the_data(script, argv, capsys, monkeypatch):
    """--test-items 0 scored every test image, as if no cap had been given. Each script's own parser is
    caught as it parses (nothing runs), then checked."""
    import argparse
    import importlib

    from benchmarks.report import check_numbers

    class Parsed(Exception):
        pass

    real_parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(parser, args=None, namespace=None):
        raise Parsed(parser, real_parse(parser, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises(Parsed) as parsed:
        importlib.import_module(f"benchmarks.{script}").main(argv)
    with pytest.raises(SystemExit) as stop:
        check_numbers(*parsed.value.args)
    assert stop.value.code == 2 and f"error: {argv[0]} must be" in capsys.readouterr().err


def test_the_scripts_parse_through_the_number_check_and_its_allowed_ends_pass(capsys):
    """The refusals above come from each script's parser; parse_keeping_argv, which most scripts use, must run
    the check itself (0 and 1 are allowed false-alarm rates, 0 s is no training floor)."""
    import argparse

    from benchmarks.report import check_numbers, parse_keeping_argv

    parser = argparse.ArgumentParser(prog="bench")
    parser.add_argument("--test-items", type=int, default=None)
    parser.add_argument("--max-false-alarm", type=float, default=0.1)
    parser.add_argument("--min-train-seconds", type=float, default=5.0)
    with pytest.raises(SystemExit) as stop:
        parse_keeping_argv(parser, ["--test-items", "0"])
    assert stop.value.code == 2 and "--test-items must be positive" in capsys.readouterr().err
    for argv in (["--max-false-alarm", "0"], ["--max-false-alarm", "1"], ["--min-train-seconds", "0"]):
        args = parser.parse_args(argv)
        assert check_numbers(parser, args) is args


def test_step_clock_without_warmup_times_from_the_first_step():
    """--warmup 0 crashed: the clock started at global step 0, which a step's end never reports."""
    clock = throughput._StepClock(0)
    module = type("Module", (), {"device": torch.device("cpu")})()
    clock.on_train_start(None, module)
    trainer = type("T", (), {"global_step": 1})()
    clock.on_train_batch_end(trainer, module, None, {"image": torch.zeros(4, 1, 2, 2)}, 0)
    clock.on_train_end(trainer, module)
    assert clock.images == 4 and clock.seconds > 0


def test_a_benchmark_script_runs_as_the_readme_writes_it_from_any_folder(tmp_path, monkeypatch, capsys):
    """``.venv/bin/python benchmarks/transfer.py`` failed with "No module named 'benchmarks'": the package is
    now installed with the suite, so every script finds ``benchmarks.report`` wherever it is started. Here the
    script runs as ``__main__`` in this process, from another folder with only its own folder first on the path
    (as ``python benchmarks/transfer.py`` starts); the fresh interpreter is the slow twin below, and
    tests/test_benchmarks_audit_s33.py runs a script's copy by path from another folder in a real process."""
    import runpy
    import sys
    from pathlib import Path

    script = Path(throughput.__file__).with_name("transfer.py")
    repo = script.parents[1]
    monkeypatch.chdir(tmp_path)
    # the path a fresh `python benchmarks/transfer.py` starts with: its folder first, no checkout on it, and no
    # benchmarks package imported yet (put back afterwards)
    started_with = [p for p in sys.path[1:] if Path(p or ".").resolve() != repo]
    monkeypatch.setattr(sys, "path", [str(script.parent), *started_with])
    for name in [m for m in sys.modules if m.split(".")[0] == "benchmarks"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    try:
        with pytest.raises(SystemExit) as stop:
            runpy.run_path(str(script), run_name="__main__")
        assert stop.value.code == 0
        assert "usage: transfer.py" in capsys.readouterr().out
        assert sys.modules["benchmarks.report"].__file__ == str(repo / "benchmarks" / "report.py")
    finally:  # the run's own benchmarks modules go (those it replaced come back with monkeypatch)
        for name in [m for m in sys.modules if m.split(".")[0] == "benchmarks"]:
            del sys.modules[name]


@pytest.mark.slow
def test_a_benchmark_script_runs_as_the_readme_writes_it_from_any_folder_in_a_fresh_interpreter(tmp_path):
    """The real-process twin of the test above (a fresh interpreter: 7 s, most of it importing torch)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(throughput.__file__).with_name("transfer.py")
    run = subprocess.run(
        [sys.executable, str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "usage: transfer.py" in run.stdout
