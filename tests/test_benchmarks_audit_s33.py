"""The benchmark audit's findings: a port-less speed table, run lengths that follow wall time, labels that
said more or less than the metrics do, paths checked only after training, --help without defaults, one
failing backbone losing every row, errors naming options the benchmark does not have, and scripts importing
another checkout's packages."""

from __future__ import annotations

import argparse
import importlib
import json
import runpy
import subprocess
import sys
from argparse import Namespace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from benchmarks import detector_budget
from benchmarks.report import HelpFormatter, named_as_options, run_length, smoke_run, step_schedule
from shared.budget import FitScheduleToBudget

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = [
    "backbones", "driving_accident", "driving_anomaly", "driving_detection", "driving_instances",
    "gpu_recipes", "medical", "other_shapes", "prob_unet_speed", "throughput", "transfer",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _keep_threads():
    """A script's main() sets the thread count for its run (--threads); later tests get theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


class Stop(Exception):
    """Raised by a stand-in to end a run where the test has seen what it needs."""


def parser_of(script: str, monkeypatch) -> argparse.ArgumentParser:
    """The script's own parser, caught as its main() parses (nothing runs)."""
    real_parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(parser, args=None, namespace=None):
        raise Stop(parser)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises(Stop) as stop:
        importlib.import_module(f"benchmarks.{script}").main([])
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", real_parse)
    return stop.value.args[0]


# ---------------------------------------------------------------- 7: --help


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_option_of_every_script_has_a_help_with_its_default_under_the_whole_docstring(
    script, monkeypatch
):
    """Options without help printed a bare name; driving_anomaly.py and driving_accident.py cut their
    description to one line, dropping protocol and targets."""
    parser = parser_of(script, monkeypatch)
    module = sys.modules[f"benchmarks.{script}"]
    assert parser.description == module.__doc__ and issubclass(parser.formatter_class, HelpFormatter)
    formatter = parser.formatter_class(prog=script)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        assert action.help, f"{script}.py {action.option_strings}: no help"
        shown = formatter._expand_help(action)
        assert action.required or "default" in shown.lower(), f"{script}.py {action.option_strings}: {shown}"
    assert module.__doc__.strip().splitlines()[-1].strip() in parser.format_help()  # the docstring's end too


# ---------------------------------------------------------------- 1: prob_unet_speed.py without the port


def test_a_peer_dir_without_the_port_is_an_error_naming_where_to_get_it_and_nothing_is_written(
    tmp_path, capsys
):
    """It printed "the peer rows are skipped", exited 0 and wrote a "vs the PyTorch port" table of n/a cells
    over the file --out named (the committed results)."""
    from benchmarks.prob_unet_speed import main

    out = tmp_path / "prob_unet_speed.md"
    out.write_text("committed table\n")
    with pytest.raises(SystemExit) as stop:
        main(
            [
                "--peer-dir",
                str(tmp_path),
                "--rounds",
                "1",
                "--size",
                "16",
                "--batch-size",
                "2",
                "--out",
                str(out),
            ]
        )
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"--peer-dir {tmp_path}: no probabilistic_unet.py there" in err
    assert "stefanknegt/Probabilistic-Unet-Pytorch at commit 80152817d90d396a6285cfa24a42c6f255b02ba4" in err
    assert out.read_text() == "committed table\n"


# ---------------------------------------------------------------- 2: fixed steps or the time budget


def test_step_schedule_fixes_the_length_or_fits_it_to_the_budget_and_the_tables_say_which():
    assert step_schedule(7, 100, 60.0) == (7, [])
    planned, (fitting,) = step_schedule(None, 100, 60.0, every=5, window=20)
    assert planned == 100 and isinstance(fitting, FitScheduleToBudget) and fitting.seconds == 60.0
    assert fitting.every == 5 and fitting.window == 20
    assert run_length(None, [40]).startswith("Time-budget run (machine-dependent)")
    assert run_length(7, [7, 7]) == "Fixed-steps run (repeatable): `--steps 7`."
    cut = run_length(7, [7, 5])
    assert cut.startswith("Fixed-steps run (repeatable): `--steps 7`; the time budget stopped 1 of 2")
    assert "(5 steps)" in cut
    assert run_length(10, [3, 6], [3, 7]).endswith("(6 steps), which makes those machine-dependent.")


def test_detector_benchmarks_train_a_fixed_step_count_without_calibration_or_budget_fitting(monkeypatch):
    """The detection and instance benchmarks' step count followed measured wall time: --steps fixes it."""
    calibrated, trainers = [], []

    class Data:
        class_names, batch_size = ["Car"], 2

        def __init__(self, **kw):
            pass

        def prepare_data(self):
            pass

        def setup(self, stage):
            pass

    def trainer(**kw):
        trainers.append(kw)
        raise Stop

    monkeypatch.setattr(detector_budget, "quiet_trainer", trainer)
    monkeypatch.setattr(
        detector_budget, "instantiate_from_config", lambda cls, kw: SimpleNamespace(make_lr_scheduler=None)
    )
    monkeypatch.setattr(detector_budget, "calibrate_seconds_per_step", lambda *a: calibrated.append(a) or 0.5)
    args = Namespace(accelerator="cpu", budget_minutes=1.0, calibration_steps=2, budget_fraction=0.9,
                     precision="32-true", progress=False)  # fmt: skip
    for steps in (7, None):
        with pytest.raises(Stop):
            detector_budget.train_and_test(Namespace(**vars(args), steps=steps), None, Data,
                                           {"network": {"init_args": {}}}, {})  # fmt: skip
    fixed, budget = trainers
    assert fixed["max_steps"] == 7 and not any(isinstance(c, FitScheduleToBudget) for c in fixed["callbacks"])
    assert fixed["max_time"] == {"seconds": 60.0}  # the budget stays a hard stop
    assert budget["max_steps"] == 108 and any(isinstance(c, FitScheduleToBudget) for c in budget["callbacks"])
    assert len(calibrated) == 1  # only the time-budget run measures a first plan


def test_anomaly_benchmark_splits_fixed_steps_between_its_phases_and_fits_nothing(monkeypatch):
    from benchmarks import driving_anomaly

    assert driving_anomaly.phase_steps(None, 0.7) == (None, None)
    assert driving_anomaly.phase_steps(10, 0.7) == (3, 7) and driving_anomaly.phase_steps(1, 0.7) == (1, 1)
    trainers = []

    def trainer(**kw):
        trainers.append(kw)
        return SimpleNamespace(fit=lambda *a, **k: None, global_step=kw["max_steps"])

    monkeypatch.setattr(driving_anomaly, "quiet_trainer", trainer)
    task = SimpleNamespace(last_calibration={"seconds": 0.0})
    args = Namespace(accelerator="cpu", precision="32-true")
    fixed = driving_anomaly.fit(task, None, 1.0, None, args, steps=7)
    budget = driving_anomaly.fit(task, None, 1.0, 0.5, args)
    assert fixed["steps"] == fixed["planned_steps"] == 7 and trainers[0]["callbacks"] == []
    assert budget["planned_steps"] == 120 and isinstance(trainers[1]["callbacks"][0], FitScheduleToBudget)


def test_transfer_source_segmenter_trains_a_fixed_step_count(tmp_path):
    from benchmarks.transfer import pretrain_source

    images, labels = torch.randn(4, 1, 32, 32), torch.randint(0, 2, (4, 32, 32))
    made = pretrain_source(
        "tiny_cnn", (images, labels, 2, 1), 600.0, tmp_path / "s.pt", 0, {"width": 4}, steps=3
    )
    assert made["steps"] == 3 and (tmp_path / "s.pt").is_file()


# ---------------------------------------------------------------- 2, 3, 6: the detection tables


def _detection_result(config: dict) -> dict:
    bins = [{"low": 0.0, "high": 15.0, "n": 3, "recall": 0.5}]
    return {
        "metrics": {"test/map50": 0.9, "test/map": 0.5}, "config": {"class_names": ["Car"], **config},
        "data": {"data_path": None, "batch_size": 4}, "device": "CPU", "steps": 10, "train_images": 40,
        "n_train": 20, "train_seconds": 60.0, "model_input": (192, 640), "n_test": 5, "images_per_s": 1.0,
        "inference_size": (192, 640), "inference_ms": 100.0, "load_average": (0.5, 0.5),
        "height_recall": [bins],
    }  # fmt: skip


def test_detection_table_names_the_loaded_backbone_the_run_length_and_dontcare_as_crowd_regions():
    """It said "trained from scratch" after the config's pretrained_backbone had loaded 308 tensors, and that
    the COCO metrics "drop" detections inside DontCare boxes, where they treat them as crowd regions."""
    from benchmarks.driving_detection import markdown

    args = Namespace(
        budget_minutes=15, precision="32-true", threads=2, test_batches=None, steps=None, argv=[]
    )
    scratch = markdown(_detection_result({}), args)
    assert "trained from scratch: 10 steps" in scratch and "Time-budget run (machine-dependent)" in scratch
    weights = "apps/weights/driving_detection.safetensors"
    loaded = markdown(
        _detection_result({"pretrained_backbone": weights}), Namespace(**{**vars(args), "steps": 10})
    )
    assert f"trained with the backbone of {weights}: 10 steps" in loaded and "from scratch" not in loaded
    assert "Fixed-steps run (repeatable): `--steps 10`." in loaded
    assert "drop detections" not in loaded
    crowd = "COCO metrics treat DontCare boxes as crowd regions: a detection that matches no object and lies"
    assert f"{crowd} in one is ignored" in " ".join(loaded.split())


def test_instances_table_says_what_the_dontcare_count_is_and_the_run_length():
    from benchmarks.driving_instances import markdown

    model = {"min_heights": [12.8], "network": {"init_args": {"input_size": [384, 1280]}}}
    result = {
        "metrics": {"test/ignored_detections": 3.0}, "config": model, "data": {"image_size": [192, 640],
        "batch_size": 2}, "device": "CPU", "steps": 10, "n_train": 20, "train_seconds": 60.0, "n_test": 5,
        "inference_ms": 100.0, "inference_size": (192, 640), "load_average": (0.5, 0.5),
    }  # fmt: skip
    text = markdown(
        result, Namespace(budget_minutes=15, precision="32-true", test_batches=None, steps=10, argv=[])
    )
    assert "dropped" not in text and "Fixed-steps run (repeatable): `--steps 10`." in text
    crowd = "(COCO crowd regions: ignored where they match no object, hits where they do): 3."
    assert f"Detections mostly inside DontCare regions {crowd}" in text


def test_accident_table_says_how_its_length_was_set():
    from benchmarks.driving_accident import markdown

    result = json.loads((REPO / "benchmarks/results/driving_accident.json").read_text())  # the shipped run
    args = SimpleNamespace(budget_minutes=15.0, threads=2, max_false_alarm=0.1, argv=[], steps=None)
    assert "Time-budget run (machine-dependent)" in markdown(result, args)
    fixed = markdown({**result, "steps": 5}, SimpleNamespace(**{**vars(args), "steps": 9}))
    assert "Fixed-steps run (repeatable): `--steps 9`; the time budget stopped 1 of 1" in fixed


# ---------------------------------------------------------------- 6: gpu_recipes.py's ECE


def test_gpu_recipes_table_says_the_medical_ece_is_against_the_readers_mean_and_shows_the_majority_one(
    tmp_path,
):
    from benchmarks.gpu_recipes import _table

    record = {"device": "GPU", "fit_seconds": 60.0, "steps": 10, "epochs": 1, "images_per_second": 5.0,
              "metrics": {"test/ged": 0.3, "test/ece": 0.01, "test/ece_majority": 0.02}}  # fmt: skip
    (tmp_path / "unet.json").write_text(json.dumps(record))
    row = _table(tmp_path, ["unet"]).splitlines()[-1]
    assert row.endswith("| ged 0.300, ece (vs readers' mean) 0.010, ece_majority (vs majority mask) 0.020 |")


# ---------------------------------------------------------------- 4, 5: transfer.py


@pytest.mark.parametrize("option", ["--suite-checkpoint", "--torchvision-weights"])
def test_transfer_checks_every_given_weight_file_before_any_work(option, tmp_path, monkeypatch):
    """A missing --suite-checkpoint failed after the scratch runs, which were thrown away."""
    from benchmarks import transfer

    monkeypatch.setattr(transfer, "crops_root", lambda *a: pytest.fail("work started before the check"))
    missing = tmp_path / "missing.ckpt"
    with pytest.raises(SystemExit) as stop:
        transfer.main(["--backbones", "tiny_cnn", option, f"tiny_cnn={missing}:backbone."])
    file = f"{missing}:backbone." if option == "--torchvision-weights" else str(missing)
    assert str(stop.value) == (
        f"{option} 'tiny_cnn={missing}:backbone.': {file}: no such file (expected BACKBONE="
        f"{'PATH[:PREFIX]' if option == '--suite-checkpoint' else 'PATH'})"
    )


def test_transfer_marks_a_smoke_run_and_its_run_length(tmp_path, monkeypatch):
    """The README promises that a run under a quarter of its budget is marked; transfer.py never was."""
    from benchmarks import transfer

    def run_one(domain, args, crops, backbone, source, fraction, seconds):
        scores = {"acc": 0.5, "f1_macro": 0.5, "ece": 0.1}
        return {"backbone": backbone, "source": "scratch", "fraction": fraction, "n_train": 10, "steps": 4,
                "train": scores, "val": scores, "test": scores, "train_s": 1.0, "gap": 0.0,
                "wall_s": 1.5}  # fmt: skip

    monkeypatch.setattr(transfer, "crops_root", lambda *a: tmp_path)
    monkeypatch.setattr(transfer, "run_one", run_one)
    monkeypatch.setattr(transfer, "plot", lambda rows, path, title: path.write_text(title))
    argv = ["--backbones", "tiny_cnn", "--fractions", "1", "--no-suite-source", "--out"]
    transfer.main([*argv, str(tmp_path / "smoke.md"), "--minutes", "1"])
    smoke = (tmp_path / "smoke.md").read_text()
    assert smoke.startswith(smoke_run(1, 30)) and smoke_run(1, 30).startswith("**Smoke run**: 1 of the")
    assert "Time-budget run (machine-dependent)" in smoke
    assert json.loads((tmp_path / "smoke.json").read_text())["smoke_run"] is True
    assert (tmp_path / "smoke.png").read_text().startswith("SMOKE RUN")
    transfer.main([*argv, str(tmp_path / "full.md"), "--minutes", "30", "--steps", "4"])
    full = (tmp_path / "full.md").read_text()
    assert "Smoke run" not in full and "Fixed-steps run (repeatable): `--steps 4`." in full


# ---------------------------------------------------------------- 8: failures named in the benchmark's terms


def test_a_failing_backbone_is_named_and_the_others_still_measured(tmp_path, capsys):
    """GoogLeNet at batch 1 died with a bare "Expected more than 1 value per channel" and lost every row."""
    from benchmarks.backbones import main

    out = tmp_path / "backbones.md"
    main(["--sizes", "32", "--batch", "1", "--iters", "1", "--names", "googlenet", "tiny_cnn",
          "--accelerator", "cpu", "--out", str(out)])  # fmt: skip
    rows = {line.split(" | ")[0][2:]: line for line in out.read_text().splitlines() if line.startswith("| ")}
    assert rows["googlenet"].endswith(" | failed |") and "failed" not in rows["tiny_cnn"]
    assert (
        "- googlenet @32, forward+backward: ValueError: Expected more than 1 value per channel"
        in out.read_text()
    )


def test_the_backbones_script_exits_nonzero_when_a_cell_failed(tmp_path, monkeypatch):
    """The table is still written whole, but a run with a failed cell must not look like success to CI. Both
    runs through the script's ``__main__`` block in this process: its SystemExit is what a real process exits
    with (shown by the real-process twin below, marked slow: 3-5 s of torch import)."""
    out = tmp_path / "backbones.md"
    script = ["benchmarks/backbones.py", "--sizes", "32", "--iters", "1", "--accelerator", "cpu"]
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts its checkout first
    codes = []
    for argv in (
        ["--batch", "1", "--names", "googlenet", "--out", str(out)],
        ["--batch", "2", "--names", "tiny_cnn"],
    ):
        monkeypatch.setattr(sys, "argv", [*script, *argv])
        with pytest.raises(SystemExit) as stop:
            runpy.run_path(str(REPO / "benchmarks" / "backbones.py"), run_name="__main__")
        codes.append(stop.value.code)
    assert codes == [1, 0] and "| googlenet |" in out.read_text()


@pytest.mark.slow
def test_the_backbones_script_exits_nonzero_when_a_cell_failed_in_a_real_process(tmp_path, monkeypatch):
    """The real-process twin of the test above: a failed cell is the exit status of ``python benchmarks/...``."""
    out = tmp_path / "backbones.md"
    script = ["benchmarks/backbones.py", "--sizes", "32", "--iters", "1", "--accelerator", "cpu"]
    run = {"cwd": REPO, "capture_output": True, "text": True, "timeout": 120}
    failing = subprocess.run([sys.executable, *script, "--batch", "1", "--names", "googlenet", "--out", str(out)],
                             check=False, **run)  # fmt: skip
    assert failing.returncode == 1 and "| googlenet |" in out.read_text()
    # the passing run through the same ``__main__`` block, in this process (the real process above showed that
    # its SystemExit is the exit status; a second one cost 3-5 s of torch import)
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts its checkout first
    monkeypatch.setattr(sys, "argv", [*script, "--batch", "2", "--names", "tiny_cnn"])
    with pytest.raises(SystemExit) as passing:
        runpy.run_path(str(REPO / "benchmarks" / "backbones.py"), run_name="__main__")
    assert passing.value.code == 0


def test_named_as_options_rewords_a_data_error_and_keeps_its_traceback():
    def fail():
        raise FileNotFoundError("x/images: folder not found (--data.anomaly_path takes the root)")

    with (
        pytest.raises(FileNotFoundError) as caught,
        named_as_options({"--data.anomaly_path": "--anomaly-path"}),
    ):
        fail()
    assert str(caught.value) == "x/images: folder not found (--anomaly-path takes the root)"
    assert caught.traceback[-1].name == "fail"  # raised where it was, not re-raised from the helper


def test_instances_benchmark_says_the_max_items_that_gives_a_test_split(tmp_path):
    """--max-items 8 failed saying "set --data.split_fractions", an option the benchmark does not have."""
    from benchmarks.driving_instances import main
    from tests.driving.layouts import write_instance_kitti

    data = write_instance_kitti(tmp_path / "kitti", n=8, sequences=True)  # two frames a sequence
    with pytest.raises(ValueError) as caught:
        main(["--data-path", str(data), "--max-items", "2", "--threads", "1", "--num-workers", "0"])
    message = str(caught.value)
    assert "--data.split_fractions" not in message
    assert message.endswith(
        "splits are whole driving sequences, and the first 2 images (--max-items) hold too few: give "
        "--max-items at least the images of 4 sequences (40 on the synthetic set, 10 frames a sequence), or "
        "leave it out"
    )


def test_anomaly_benchmark_names_its_own_anomaly_path_option(tmp_path):
    from benchmarks.driving_anomaly import main
    from tests.driving.layouts import write_kitti

    data = write_kitti(tmp_path / "kitti")
    with pytest.raises(FileNotFoundError) as caught:
        main(["--data-path", str(data), "--anomaly-path", str(tmp_path / "none"), "--num-workers", "0"])
    assert "(--anomaly-path takes the SegmentMeIfYouCan root" in str(caught.value)
    assert "--data.anomaly_path" not in str(caught.value)


# ---------------------------------------------------------------- 9: this checkout's packages


# every script imports the standard library alone before benchmarks.report (its options are parsed before
# torch is imported): the stand-in stops each at once
@pytest.mark.parametrize("script", SCRIPTS)
def test_a_script_imports_the_packages_of_the_checkout_it_is_run_from(script, tmp_path):
    """`python benchmarks/x.py` imported benchmarks, domains and shared from wherever the venv's editable
    install points (/work/main), not from the checkout holding the script. Here a copy's checkout holds
    stand-in packages that say so when imported."""
    for package in ("benchmarks", "domains", "shared"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(
            f"raise SystemExit('{package} of the copy imported')\n"
        )
    copy = tmp_path / "benchmarks" / f"{script}.py"
    copy.write_text((REPO / "benchmarks" / f"{script}.py").read_text())
    run = subprocess.run(
        [sys.executable, str(copy), "--help"], cwd=tmp_path.parent, capture_output=True, text=True,
        check=False, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, timeout=120,
    )  # fmt: skip
    assert run.stderr.strip().endswith("of the copy imported"), (run.returncode, run.stderr[-500:])
