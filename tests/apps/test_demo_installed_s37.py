"""The demo run from an installed suite (``apps`` in site-packages, no ``pyproject.toml`` beside it): what it
generates goes under the working directory, its hints are commands that work there, a folder it cannot write
is a page message, and recorded example frames that are missing are counted, not dropped unsaid.

An installed suite is stood in for by pointing ``dm.ROOT`` (the folder holding the packages) at an empty folder.
"""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest

from apps import demo_models as dm
from apps import prepare_demo as pd
from tests.apps.pages import page as _page
from tests.apps.pages import texts as _texts

_ENVS = (dm.ENV_CHECKPOINTS, dm.ENV_MEDICAL_DATA, dm.ENV_ANOMALY_DATA, dm.ENV_ACCIDENT_DATA)


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """``dm.ROOT`` as site-packages (no pyproject.toml), the working directory elsewhere, no SUITE_* folders set;
    yields the working directory."""
    site, work = tmp_path / "site-packages", tmp_path / "work"
    site.mkdir()
    work.mkdir()
    monkeypatch.setattr(dm, "ROOT", site)
    monkeypatch.chdir(work)
    for name in _ENVS:
        monkeypatch.delenv(name, raising=False)
    return work


def test_installed_defaults_are_under_the_working_directory(installed):
    assert not dm.source_checkout()
    assert dm.work_root() == installed
    assert dm.checkpoint_dir() == installed / "demo_checkpoints"
    assert dm.medical_data_root() == installed / "data" / "medical" / "synthetic_lidc"
    assert dm.anomaly_data_root() == installed / "data" / "driving" / "synthetic_anomaly"
    assert dm.accident_data_root() == installed / "data" / "driving_accident"
    # the module form: there is no apps/prepare_demo.py nor .venv in the user's folder
    assert dm.train_command("driving_accident") == "python -m apps.prepare_demo --train --only driving_accident"
    assert dm.demo_command("demo-train", "--train") == "python -m apps.prepare_demo --train"


def test_environment_variables_win_over_the_installed_defaults(installed, tmp_path, monkeypatch):
    monkeypatch.setenv(dm.ENV_CHECKPOINTS, str(tmp_path / "ckpts"))
    monkeypatch.setenv(dm.ENV_ANOMALY_DATA, str(tmp_path / "anomaly"))
    assert dm.checkpoint_dir() == tmp_path / "ckpts"
    assert dm.anomaly_data_root() == tmp_path / "anomaly"


def test_a_source_checkout_keeps_its_folders_and_make(tmp_path, monkeypatch):
    """``make demo`` runs from the repository: its data and checkpoints stay there, wherever the app starts."""
    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    repo.mkdir()
    elsewhere.mkdir()
    (repo / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    monkeypatch.setattr(dm, "ROOT", repo)
    monkeypatch.chdir(elsewhere)
    for name in _ENVS:
        monkeypatch.delenv(name, raising=False)
    assert dm.work_root() == repo
    assert dm.checkpoint_dir() == repo / "demo_checkpoints"
    assert dm.medical_data_root() == repo / "data" / "medical" / "synthetic_lidc"
    assert dm.train_command("medical_unet") == ".venv/bin/python apps/prepare_demo.py --train --only medical_unet"
    assert dm.demo_command("demo-train", "--train") == "make demo-train"


# ------------------------------------------------------------------------------------------- prepare_demo


def test_prepare_demo_trains_and_logs_under_the_working_directory(installed, monkeypatch):
    """Training ran with cwd=ROOT into ROOT/lightning_logs: site-packages once installed."""
    calls, removed = [], []

    def fake_run(cmd, check, cwd, env):
        calls.append((cmd, Path(cwd)))
        folder = Path(cmd[cmd.index("--checkpoint.dirpath") + 1])
        assert folder.is_relative_to(installed), folder  # before writing anything there
        folder.mkdir(parents=True)
        (folder / "best-0.ckpt").write_bytes(b"")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(pd.subprocess, "run", fake_run)
    monkeypatch.setattr(pd.shutil, "rmtree", lambda path, ignore_errors: removed.append(Path(path)))
    best, _ = pd.train("driving_accident", smoke=True, extra=[])
    assert removed == [installed / "lightning_logs" / "demo" / "driving_accident"]  # the previous run's
    assert best == removed[0] / "best-0.ckpt"
    ((cmd, cwd),) = calls
    assert cwd == installed
    assert cmd[cmd.index("-c") + 1] == str(pd.ROOT / "domains/driving/accident/configs/quick.yaml")
    # a checkpoint the user trained with the CLI in this folder is adopted from here too
    own = installed / "lightning_logs" / "driving_accident" / "quick" / "checkpoints" / "last.ckpt"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"")
    assert pd._adoptable("driving_accident") == own


def test_prepare_demo_generates_the_example_sets_where_the_pages_read_them(installed, tmp_path, monkeypatch, capsys):
    roots = {}
    monkeypatch.setattr("domains.medical.synthetic.ensure_synthetic_lidc", lambda root: roots.update(lidc=root))
    monkeypatch.setattr(
        "domains.driving.synthetic.ensure_synthetic_anomaly", lambda root, verbose: roots.update(anomaly=root)
    )
    monkeypatch.setenv(dm.ENV_WEIGHTS, str(tmp_path / "no_weights"))
    (report,) = pd.use_shipped(["medical_unet"])
    assert report["status"] == "missing"
    assert roots == {"lidc": dm.medical_data_root(), "anomaly": dm.anomaly_data_root()}
    assert roots["lidc"].is_relative_to(installed) and roots["anomaly"].is_relative_to(installed)
    assert "train them with: python -m apps.prepare_demo --train --only medical_unet" in capsys.readouterr().out


def test_serve_starts_the_app_in_the_working_directory(installed, monkeypatch):
    """``serve`` changed into ROOT (site-packages) before starting Streamlit, so the pages wrote there."""
    started = []
    monkeypatch.setattr(pd.os, "execve", lambda exe, cmd, env: started.append(cmd))
    pd.serve(8599)
    assert Path.cwd() == installed
    assert "--server.address=localhost" in started[0]


# ---------------------------------------------------------------------------------------------- pages


def _read_only(root, *args, **kwargs):
    """A generator on a read-only file system (as root, chmod would not stop it)."""
    raise OSError(errno.EROFS, "Read-only file system", str(Path(root).parent))


@pytest.mark.parametrize(
    ("page", "generator", "env", "folder"),
    [
        ("driving", "domains.driving.synthetic.ensure_synthetic_anomaly", dm.ENV_ANOMALY_DATA, "driving"),
        ("medical", "domains.medical.synthetic.ensure_synthetic_lidc", dm.ENV_MEDICAL_DATA, "medical"),
    ],
)
def test_a_data_folder_that_cannot_be_written_is_a_page_message(
    demo_env, installed, monkeypatch, page, generator, env, folder
):
    monkeypatch.setenv(dm.ENV_CHECKPOINTS, str(demo_env["checkpoints"]))  # the tiny models; data: defaults
    monkeypatch.setattr(generator, _read_only)
    at = _page(page)
    assert not at.exception, [e.value for e in at.exception]
    (message,) = [e.value for e in at.error]
    root = installed / "data" / folder
    assert f"`{root}/synthetic_" in message  # the installed default: under the working directory
    assert "Read-only file system" in message and f"`{env}` set to a writable folder" in message
    assert "start it from a writable working directory" in message
    assert not any(dm.ROOT.iterdir())  # nothing into "site-packages"


def test_the_pages_hints_are_commands_an_installed_suite_runs(demo_env, installed, tmp_path, monkeypatch):
    monkeypatch.setenv(dm.ENV_CHECKPOINTS, str(tmp_path / "empty"))
    for page in ("medical", "driving"):
        at = _page(page)
        assert not at.exception
        assert "run `python -m apps.prepare_demo --train` (or a command above)" in at.error[0].value
        assert "python -m apps.prepare_demo --train --only" in _texts(at.code)
    at = _page("home")
    assert "`python -m apps.prepare_demo --train` retrains quick versions" in _texts(at.markdown)


def test_missing_example_frames_are_counted(demo_env, monkeypatch):
    """4 of the scene list's recorded frames vanished unsaid when their files were not installed."""
    present = "apps/examples/detection_best.png"
    assert (dm.ROOT / present).is_file()
    recorded = {
        "driving_detection": {
            "best": {"id": "000155", "f1": 1.0, "file": present},
            "worst": {"id": "000158", "f1": 0.36, "file": "apps/examples/not_installed.png"},
        }
    }
    monkeypatch.setattr(dm, "examples", lambda key: recorded.get(key, {}))
    at = _page("driving")
    assert not at.exception, [e.value for e in at.exception]
    scene = at.selectbox(key="driving_scene")
    labels = [scene.format_func(i) for i in range(len(scene.options))]
    assert labels[0] == "000155: where the detector is most right (its best test frame, F1 1.00)"
    assert not any(label.startswith("000158") for label in labels)
    (note,) = [c.value for c in at.caption if "recorded example frames" in c.value]
    assert note.startswith("1 of the weights' recorded example frames is missing, not listed: ")
    assert str(dm.ROOT / "apps/examples/not_installed.png") in note


def test_a_medical_set_of_smaller_images_than_the_crop_is_a_page_message(demo_env, tmp_path, monkeypatch):
    """A LIDC PNG set of 64 px images (``python -m domains.medical.synthetic --size 64``) under
    ``$SUITE_MEDICAL_DATA`` stopped the page with Streamlit's redacted error: the reader crops 128 px."""
    from domains.medical.synthetic import generate_lidc_png

    small = generate_lidc_png(tmp_path / "lidc64", n_patients=6, images_per_patient=2, size=64)
    monkeypatch.setenv(dm.ENV_MEDICAL_DATA, str(small))
    at = _page("medical")
    assert not at.exception, [e.value for e in at.exception]
    (message,) = [e.value for e in at.error]
    assert message.startswith(f"Cannot read this test image of `{small}` (`$SUITE_MEDICAL_DATA`): ")
    assert "is 64x64, smaller than crop_size=128" in message
