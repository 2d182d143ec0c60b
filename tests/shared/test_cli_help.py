"""``--help`` a newcomer can use: a description with an example, whole-sentence sub-command help, and a help
text (with the valid values where there is a fixed set) for every --model.* and --data.* option."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from domains.driving.anomaly.__main__ import main as anomaly_main
from domains.driving.classification.__main__ import main as driving_classification_main
from domains.driving.detection.__main__ import main as detection_main
from domains.medical.__main__ import main as medical_main
from domains.medical.classification.__main__ import main as medical_classification_main
from shared.backbones import list_backbones

MAINS = {
    "domains.medical": medical_main,
    "domains.driving.detection": detection_main,
    "domains.driving.anomaly": anomaly_main,
    "domains.driving.classification": driving_classification_main,
    "domains.medical.classification": medical_classification_main,
}


_HELP: dict[tuple, str] = {}  # the help texts printed so far, by entry and arguments


def _help(main, args, capsys, monkeypatch) -> str:
    """What ``main(args)`` prints (a help: exit status 0), 200 columns wide; each entry's ``fit --help`` (about
    0.3 s) is printed once per file and read by every test that checks it."""
    key = (main, tuple(args))
    if key not in _HELP:
        monkeypatch.setenv("COLUMNS", "200")  # one option per line: easier to read back
        with pytest.raises(SystemExit) as stop:
            main(args)
        assert stop.value.code == 0
        _HELP[key] = capsys.readouterr().out
    return _HELP[key]


@pytest.mark.parametrize("prog", list(MAINS))
def test_top_level_help_describes_the_task_with_an_example(prog, capsys, monkeypatch):
    text = _help(MAINS[prog], ["--help"], capsys, monkeypatch)
    assert text.startswith(f"usage: python -m {prog} ")
    assert f"Example: python -m {prog} fit -c " in " ".join(text.split())
    # Lightning's own sub-command help stops mid-sentence ("... never run on your"): ours are whole
    assert "never run on your" not in text and "compute the test metrics" in text


@pytest.mark.parametrize("prog", list(MAINS))
def test_every_model_and_data_option_has_a_help_text(prog, capsys, monkeypatch):
    lines = _help(MAINS[prog], ["fit", "--help"], capsys, monkeypatch).splitlines()
    options = 0
    for i, line in enumerate(lines):
        match = re.match(r"\s+(--(?:model|data)\.[a-z_]+)\b", line)
        if not match or "+" in line[match.end() : match.end() + 1]:
            continue
        options += 1
        after = line[match.end() :].strip()
        text = after.split("  ", 1)[1].strip() if "  " in after else lines[i + 1].strip()
        assert not text.startswith("(type"), f"{prog} fit --help: {match.group(1)} has no help text"
    assert options >= 10


def test_fixed_choices_are_listed(capsys, monkeypatch):
    detection = " ".join(_help(detection_main, ["fit", "--help"], capsys, monkeypatch).split())
    assert "{kitti,coco,yolo}" in detection
    assert all(name in detection for name in list_backbones())  # the backbone choices come from the registry
    medical = " ".join(_help(medical_main, ["fit", "--help"], capsys, monkeypatch).split())
    assert "{lidc_png,lidc_pickle,decathlon}" in medical
    # the networks to choose from (a test's own subclass, once imported, is listed beside them)
    known = medical.split("type: <class 'MedicalSegmenter'>, known subclasses: ", 1)[1].split(")", 1)[0]
    for name in ("HierarchicalProbUNet", "ProbabilisticUNet", "UNetSegmenter"):
        assert f"domains.medical.models.{name}" in known
    hpu = " ".join(
        _help(
            medical_main, ["fit", "--model.network.help", "HierarchicalProbUNet"], capsys, monkeypatch
        ).split()
    )
    assert "--model.network.kappa" in hpu and "GECO reconstruction bound" in hpu


def test_the_notifiers_help_needs_no_config_and_takes_its_short_name(capsys, monkeypatch):
    """``fit --trainer.callbacks.help NotifyWhenDone`` asked for a config (-c), and with one it said "Expected a
    dot import path string": the README's callback was no known one."""
    args = ["fit", "--trainer.callbacks.help", "NotifyWhenDone"]
    notify = " ".join(_help(driving_classification_main, args, capsys, monkeypatch).split())
    assert "--trainer.callbacks.webhook_url WEBHOOK_URL POST the report as JSON" in notify
    fit = " ".join(_help(driving_classification_main, ["fit", "--help"], capsys, monkeypatch).split())
    assert "shared.notify.NotifyWhenDone" in fit  # among the known callbacks


@pytest.mark.parametrize("prog", list(MAINS))
def test_top_level_help_imports_no_torch(prog):
    """The first thing a newcomer types answers at once: no torch, torchvision or Lightning is imported."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        f"from {prog}.__main__ import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as stop:\n    assert stop.code == 0\n"
        "print(sorted(m for m in ('torch', 'pytorch_lightning', 'torchvision') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_bad_input_ends_the_command_in_one_line_and_bugs_keep_their_traceback(capsys, monkeypatch):
    from shared.cli_help import report_input_errors

    monkeypatch.delenv("SUITE_TRACEBACK", raising=False)
    for err in (FileNotFoundError("--ckpt_path x.ckpt: no such checkpoint file"), ValueError("bad line 3")):
        with pytest.raises(SystemExit) as stop, report_input_errors():
            raise err
        assert stop.value.code == 1
        lines = capsys.readouterr().err.splitlines()
        assert lines[0] == f"error: {type(err).__name__}: {err}"
        assert (
            lines[1].startswith("(raised at ") and "test_cli_help.py:" in lines[1]
        )  # where, without a rerun
    worker = ValueError(  # how torch's DataLoader re-raises a worker's error
        "Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\nValueError: /data/a.png: cannot decode the image\n'
    )
    with pytest.raises(SystemExit), report_input_errors():
        raise worker
    assert (
        capsys.readouterr().err.splitlines()[0] == "error: ValueError: /data/a.png: cannot decode the image"
    )
    with pytest.raises(SystemExit), report_input_errors():  # a message over several lines keeps them all
        raise ValueError(
            "Caught ValueError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
            '  File "x.py", line 1, in <module>\nValueError: first line\nsecond line\n'
        )
    assert capsys.readouterr().err.splitlines()[:2] == ["error: ValueError: first line", "second line"]
    union = ValueError(  # jsonargparse's, when a --trainer.callbacks class refuses its arguments
        "Does not validate against any of the Union subtypes\nSubtypes: [...]\nErrors:\n"
        "  - NotifyWhenDone.webhook_url: 'ftp://x' is not an http(s) URL\n  - Not a valid subclass of Callback\n"
        "    Subclass types expect one of:\n    - a class path (str)\n  - Expected a <class 'NoneType'>\n"
    )
    with pytest.raises(SystemExit), report_input_errors():
        raise union
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "error: ValueError: NotifyWhenDone.webhook_url: 'ftp://x' is not an http(s) URL"
    assert lines[1].startswith("(raised at")  # jsonargparse's lines on what a class path is: left out
    with pytest.raises(RuntimeError, match="a bug"), report_input_errors():
        raise RuntimeError("a bug")
    monkeypatch.setenv("SUITE_TRACEBACK", "1")
    with pytest.raises(ValueError, match="bad line"), report_input_errors():
        raise ValueError("bad line 3")


def test_commands_print_the_suites_warnings_in_one_line_and_others_as_python_does():
    import warnings

    import torch

    from domains.driving import formats
    from shared import cli_help, data
    from shared.cli_help import report_input_errors

    python_format = warnings.formatwarning
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()  # no filter, as in a new process before the command
        warnings.simplefilter("always")
        with report_input_errors():
            show = warnings.formatwarning
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", DeprecationWarning)
            warnings.warn("kept", UserWarning)
    assert [str(w.message) for w in caught] == ["kept"]  # Lightning's note on a torch API is silenced
    assert warnings.formatwarning is python_format  # given back after the command
    source = "warnings.warn(message, LabelWarning)"
    assert show("a.txt line 3: dropped", formats.LabelWarning, formats.__file__, 124, source) == (
        "LabelWarning: a.txt line 3: dropped\n"
    )
    assert show("split 'val' is empty", UserWarning, data.__file__, 45, source) == (
        "UserWarning: split 'val' is empty\n"
    )
    library = show("a torch note", UserWarning, torch.__file__, 7, "warn()")
    assert library.startswith(f"{torch.__file__}:7: UserWarning: a torch note") and "warn()" in library
    # a suite file's warning of another kind (a deprecation), and a library inside the repository (.venv/),
    # keep Python's format
    assert show("old", DeprecationWarning, data.__file__, 45, source).startswith(f"{data.__file__}:45:")
    venv_file = str(cli_help.SUITE_ROOT / ".venv/lib/x.py")
    assert show("n", UserWarning, venv_file, 1, "l").startswith(f"{venv_file}:1: UserWarning: n")


def test_an_unknown_backbone_and_a_pickled_checkpoint_end_in_one_line(capsys, monkeypatch):
    """A 69-line traceback ending in KeyError for `--model.network.init_args.backbone resnet19`, and one
    ending in torch's UnpicklingError for a checkpoint that is not weights-only."""
    import pickle

    from shared.backbones import create_backbone
    from shared.cli_help import report_input_errors

    monkeypatch.delenv("SUITE_TRACEBACK", raising=False)
    with pytest.raises(SystemExit), report_input_errors():
        create_backbone("resnet19")
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("error: UnknownBackboneError: unknown backbone 'resnet19'; available backbones: ")
    with pytest.raises(KeyError):  # still a KeyError for code that caught one
        create_backbone("resnet19")
    with pytest.raises(SystemExit), report_input_errors():
        raise pickle.UnpicklingError("Weights only load failed")
    assert capsys.readouterr().err.startswith("error: UnpicklingError: Weights only load failed")


def test_a_real_command_line_error_is_one_line_without_a_traceback(tmp_path):
    """As a person meets it: ``python -m domains.medical test`` with a checkpoint that is not there. The suite's one
    real process of this check: the other entries' terminal reports run their ``main()`` in-process
    (tests/test_bad_inputs.py::test_the_terminal_shows_the_error_naming_the_file and
    ::test_the_export_command_reports_bad_input_in_one_line)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "SUITE_TRACEBACK"}
    command = [sys.executable, "-m", "domains.medical", "test", "-c", "domains/medical/configs/quick.yaml"]
    missing = tmp_path / "nope.ckpt"
    out = subprocess.run(
        [*command, "--ckpt_path", str(missing)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-800:]
    lines = out.stderr.strip().splitlines()
    assert lines[-2] == f"error: FileNotFoundError: --ckpt_path {missing}: no such checkpoint file", lines
    assert lines[-1].startswith("(raised at ") and lines[-1].endswith("; SUITE_TRACEBACK=1 shows the whole traceback)")


def test_a_non_finite_loss_ends_in_one_line(capsys, monkeypatch):
    from shared.cli_help import report_input_errors
    from shared.task import NonFiniteLossError
    monkeypatch.delenv("SUITE_TRACEBACK", raising=False)
    with pytest.raises(SystemExit), report_input_errors():
        raise NonFiniteLossError("val at global step 1 (epoch 0): sigma NaN")
    assert capsys.readouterr().err.startswith("error: NonFiniteLossError: val at global step 1")


def test_a_run_stopped_by_sigterm_exits_143_and_says_so(capsys):
    """Lightning's SIGTERMException is a SystemExit without a code: the command exited 0, and `fit && test`
    went on as if the run had finished."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from shared.cli_help import report_input_errors

    with pytest.raises(SystemExit) as stop, report_input_errors():
        raise SIGTERMException
    assert stop.value.code == 143
    assert "stopped by SIGTERM before it finished" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop, report_input_errors():
        raise SystemExit(0)  # a plain exit (--help) keeps its code
    assert stop.value.code == 0
