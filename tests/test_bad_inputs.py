"""Bad input at every CLI entry, end to end: each gives its clear error (naming the file, line or argument)
and leaves nothing half-written (no checkpoints, no config copy, no partial predictions, no export files).

The data readers' own unit tests (tests/medical/test_data.py, tests/driving/test_formats.py, test_data.py)
cover each malformed case in detail; here one case per loader goes through the real command: parser, data
module, trainer. Everything runs in-process (``main(args)``) in a fresh working directory; what a user sees on
the terminal is checked with the entries run as programs are (``main()`` reading ``sys.argv``), still in-process:
the real process is tests/shared/test_cli_help.py's.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import cv2
import pytest

from domains.driving.anomaly.__main__ import main as anomaly_main
from domains.driving.detection.__main__ import main as detection_main
from domains.driving.formats import LabelFormatError
from domains.medical.__main__ import main as medical_main
from domains.medical.data import MedicalDataError
from shared.cli import ConfigError
from shared.task import CheckpointMismatchError

ROOT = Path(__file__).resolve().parents[1]
MEDICAL, DETECTION, ANOMALY = "domains.medical", "domains.driving.detection", "domains.driving.anomaly"
MAINS = {MEDICAL: medical_main, DETECTION: detection_main, ANOMALY: anomaly_main}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """A fresh working directory: whatever a command writes by default lands here."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    from domains.driving.synthetic import generate_anomaly, generate_kitti
    from domains.medical.synthetic import generate_lidc_png

    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "empty").mkdir()
    return {
        "root": root,
        "empty": root / "empty",
        "lidc": generate_lidc_png(root / "lidc", n_patients=8, images_per_patient=3, size=32),
        "kitti": generate_kitti(root / "kitti", 14, size=(128, 64), frames_per_sequence=1, verbose=False),
        "anomaly": generate_anomaly(
            root / "anom", 4, size=(96, 32), anomaly_free_fraction=0.25, verbose=False
        ),
    }


def args_for(module: str, data: dict, data_path: Path | str | None = None) -> list[str]:
    """Tiny settings of each domain's CLI (data_path: the domain's tiny set unless given)."""
    if module == MEDICAL:
        return [
            "--model.network", "{class_path: domains.medical.models.UNetSegmenter, init_args: {channels: [8, 16]}}",
            "--model.num_samples", "2", "--data.data_path", str(data_path or data["lidc"]),
            "--data.crop_size", "32", "--data.batch_size", "2", "--data.num_workers", "0",
            "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1",
            "--trainer.enable_progress_bar", "false",
        ]  # fmt: skip
    if module == DETECTION:
        return [
            "--model.network", "domains.driving.detection.model.RoadDetector",
            "--model.network.init_args.backbone", "tiny_cnn", "--model.network.init_args.backbone_kwargs", "{width: 8}",
            "--model.network.init_args.fpn_levels", "3", "--model.network.init_args.fpn_channels", "32", "--model.network.init_args.head_convs", "1",
            "--model.network.init_args.input_size", "[64, 128]", "--model.kitti_difficulties", "[moderate]",
            "--data.data_path", str(data_path or data["kitti"]), "--data.image_size", "[64, 128]",
            "--data.batch_size", "2", "--data.num_workers", "0", "--trainer.max_steps", "1",
            "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
        ]  # fmt: skip
    return [
        "--model.network", "domains.driving.anomaly.model.AnomalySegmenter",
        "--model.network.init_args.encoder_kwargs", "{channels: [4, 8, 16]}", "--model.oe_start_epoch", "0",
        "--model.oe_prob", "1.0", "--model.calibration_batches", "1",
        "--data.data_path", str(data_path or data["kitti"]), "--data.anomaly_path", str(data["anomaly"]),
        "--data.image_size", "[32, 64]", "--data.batch_size", "2", "--data.num_workers", "0",
        "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1",
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip


def without(args: list[str], key: str) -> list[str]:
    """``args`` without ``key`` and its value."""
    i = args.index(key)
    return args[:i] + args[i + 2 :]


def written(folder: Path) -> list[str]:
    """Run outputs under ``folder``: checkpoints, config copies, predictions (logger folders aside)."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and (p.suffix in OUTPUT_SUFFIXES or p.name == "config.yaml")
    )


def no_checkpoints(folder: Path) -> None:
    assert written(folder) == []
    assert not list(folder.rglob("checkpoints"))


@pytest.fixture(scope="module")
def checkpoints(data, tmp_path_factory) -> dict[str, Path]:
    """One-step checkpoints of the three tasks (for test / predict entries)."""
    root = tmp_path_factory.mktemp("bad_inputs_ckpt")
    cwd = Path.cwd()
    os.chdir(root)
    try:
        out = {}
        for module, main in MAINS.items():
            folder = root / module.rsplit(".", 1)[-1]
            main(["fit", *args_for(module, data), "--checkpoint.dirpath", str(folder)])
            out[module] = folder / "last.ckpt"
    finally:
        os.chdir(cwd)
    return out


DOMAINS = [MEDICAL, DETECTION, ANOMALY]
OUTPUT_SUFFIXES = (".ckpt", ".png", ".npy", ".txt", ".csv", ".onnx", ".json")

# --------------------------------------------------------------------------------------- config and arguments


@pytest.mark.parametrize("module", DOMAINS)
def test_missing_subcommand_or_value_is_a_usage_error(module, data, work, capsys):
    with pytest.raises(SystemExit) as exit_:
        MAINS[module]([])
    assert exit_.value.code == 2 and "fit" in capsys.readouterr().err  # lists the subcommands
    with pytest.raises(SystemExit):
        MAINS[module](["fit", *args_for(module, data), "--data.batch_size"])  # an option without its value
    assert "data.batch_size" in capsys.readouterr().err
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("module", DOMAINS)
def test_unknown_key_on_the_command_line_names_it(module, data, work, capsys):
    with pytest.raises(SystemExit) as exit_:
        MAINS[module](["fit", *args_for(module, data), "--model.not_a_key", "1"])
    assert exit_.value.code == 2 and "--model.not_a_key" in capsys.readouterr().err
    no_checkpoints(work)


@pytest.mark.parametrize("module", DOMAINS)
def test_config_file_errors_name_the_key_or_the_file(module, data, work, capsys):
    config = work / "run.yaml"
    # unknown key
    config.write_text("model:\n  bogus_setting: 3\n")
    with pytest.raises(SystemExit):
        MAINS[module](["fit", "-c", str(config), *args_for(module, data)])
    assert "model.bogus_setting" in capsys.readouterr().err
    # wrong type
    config.write_text("data:\n  batch_size: many\n")
    with pytest.raises(SystemExit):
        MAINS[module](["fit", "-c", str(config), *args_for(module, data)])
    err = capsys.readouterr().err
    assert "data.batch_size" in err and "many" in err
    # a missing value: null where the class needs one (jsonargparse lets null through from files)
    config.write_text("data:\n  batch_size: null\n")
    with pytest.raises(ConfigError, match=r"data\.batch_size: null is not allowed"):
        MAINS[module](["fit", "-c", str(config), *without(args_for(module, data), "--data.batch_size")])
    # broken YAML: the file and line
    config.write_text("data:\n  batch_size: 2\n  image_size: [32, 64\n")
    with pytest.raises(ConfigError, match=re.escape(str(config)) + r":4: invalid YAML"):
        MAINS[module](["fit", "-c", str(config), *args_for(module, data)])
    # a config file that does not exist
    with pytest.raises(SystemExit):
        MAINS[module](["fit", "-c", str(work / "missing.yaml"), *args_for(module, data)])
    err = capsys.readouterr().err
    assert "missing.yaml" in err and "does not exist" in err
    assert written(work) == []  # no config copy, no checkpoint


# ------------------------------------------------------------------------------------------------ data paths


@pytest.mark.parametrize("module", DOMAINS)
def test_missing_and_empty_data_folders_name_the_folder(module, data, work):
    for path in (data["root"] / "does_not_exist", data["empty"]):
        with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
            MAINS[module](["fit", *args_for(module, data, data_path=path)])
    no_checkpoints(work)
    # Lightning's loggers create their (empty) version folders before the data module reads anything
    assert not [p for p in work.rglob("*") if p.is_file() and "events.out" not in p.name]


# -------------------------------------------------------------------------------------- malformed data files


@pytest.fixture
def corrupt(tmp_path):
    """Replace a file's bytes for one test (a copy of the data set is not needed: restored afterwards)."""
    saved: list[tuple[Path, bytes]] = []

    def _corrupt(path: Path, content: bytes) -> Path:
        saved.append((path, path.read_bytes()))
        path.write_bytes(content)
        return path

    yield _corrupt
    for path, content in reversed(saved):
        path.write_bytes(content)


def test_medical_readers_name_the_bad_file(data, work, corrupt):
    pickle_file = data["root"] / "lidc.pkl"
    pickle_file.write_bytes(b"\x80\x04 truncated")
    with (
        pytest.raises(MedicalDataError, match=re.escape(str(pickle_file)) + r": cannot unpickle"),
        pytest.warns(UserWarning),
    ):
        medical_main(["fit", *args_for(MEDICAL, data, pickle_file), "--data.data_format", "lidc_pickle"])
    msd = data["root"] / "msd"
    msd.mkdir(exist_ok=True)
    (msd / "dataset.json").write_text('{"training": [\n  {"image": 1,\n')
    with pytest.raises(MedicalDataError, match=re.escape(str(msd / "dataset.json")) + r":3: invalid JSON"):
        medical_main(["fit", *args_for(MEDICAL, data, msd), "--data.data_format", "decathlon"])
    no_checkpoints(work)  # refused while setting up: not even a config copy
    # a PNG that does not decode: refused at setup (every file's header is read), before any checkpoint
    image = min((data["lidc"] / "train" / "images").rglob("*.png"))
    corrupt(image, b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(MedicalDataError, match=re.escape(str(image)) + r": cannot decode the image"):
        medical_main(
            ["fit", *args_for(MEDICAL, data), "--trainer.max_steps", "-1", "--trainer.max_epochs", "1"]
        )
    assert not list(work.rglob("*.ckpt")) and not list(work.rglob("checkpoints"))


def test_detection_readers_name_the_bad_file_and_line(data, work, corrupt):
    label = data["kitti"] / "training" / "label_2" / "000003.txt"
    corrupt(label, label.read_bytes() + b"Car 0.00 0 -1 10 10 oops 20 1.5 1.6 3.9 1 1.7 20 -1.5\n")
    line = len(label.read_text().splitlines())
    with pytest.raises(LabelFormatError, match=re.escape(str(label)) + rf":{line}: non-numeric value 'oops'"):
        detection_main(["fit", *args_for(DETECTION, data)])
    coco = data["root"] / "coco"
    coco.mkdir(exist_ok=True)
    (coco / "instances.json").write_text('{"images": [}')
    with pytest.raises(LabelFormatError, match=re.escape(str(coco / "instances.json")) + r":1: invalid JSON"):
        detection_main(["fit", *args_for(DETECTION, data, coco), "--data.data_format", "coco"])
    no_checkpoints(work)


def test_detection_corrupt_image_is_named_when_read(data, work, corrupt):
    image = data["kitti"] / "training" / "image_2" / "000000.png"
    corrupt(image, b"not an image")
    with pytest.raises(LabelFormatError, match=re.escape(str(image)) + r": cannot decode image"):
        detection_main(["fit", *args_for(DETECTION, data), "--trainer.limit_val_batches", "0"])
    no_checkpoints(work)


def test_detection_yolo_yaml_error_names_the_file(data, work):
    yolo = data["root"] / "yolo"
    yolo.mkdir(exist_ok=True)
    (yolo / "data.yaml").write_text("names: [car\ntrain: images\n")
    with pytest.raises(LabelFormatError, match=re.escape(str(yolo / "data.yaml"))):
        detection_main(["fit", *args_for(DETECTION, data, yolo), "--data.data_format", "yolo"])


def test_anomaly_readers_name_the_bad_file(data, work, corrupt):
    semantic = data["kitti"] / "training" / "semantic" / "000001.png"
    corrupt(semantic, b"").unlink()  # removed for this test, restored by the fixture
    with pytest.raises(FileNotFoundError, match=re.escape(str(semantic)) + r": semantic map missing"):
        anomaly_main(["fit", *args_for(ANOMALY, data)])
    no_checkpoints(work)


# ------------------------------------------------------------------------------------ test / predict entries


def test_missing_or_foreign_checkpoint_files_are_refused_before_anything_runs(data, checkpoints, work):
    garbage = work / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    for module, main in MAINS.items():
        with pytest.raises(FileNotFoundError, match=r"--ckpt_path .*nope\.ckpt: no such checkpoint file"):
            main(["test", *args_for(module, data), "--ckpt_path", str(work / "nope.ckpt")])
        with pytest.raises(
            CheckpointMismatchError,
            match=re.escape(str(garbage))
            + r": not a weights-only Lightning checkpoint: a text file \(it starts 'not a checkpoint'\)",
        ):
            main(["predict", *args_for(module, data), "--ckpt_path", str(garbage)])
    assert sorted(p.name for p in work.iterdir()) == ["garbage.ckpt"]  # no logs, no predictions


def test_medical_predict_on_a_corrupt_image_leaves_no_partial_predictions(data, checkpoints, work, corrupt):
    images = sorted((data["lidc"] / "test" / "images").rglob("*.png"))
    assert len(images) >= 3
    # a mask that is not binary: found by the setup check (each mask's values), before any batch is written
    # (it had been found when read, in the last batch, after earlier batches' files)
    mask = data["lidc"] / "test" / "gt" / images[-1].parent.name / f"{images[-1].stem}_l0.png"
    soft = cv2.imread(str(mask), cv2.IMREAD_UNCHANGED)
    soft[:2], soft[2:4] = 128, 255
    corrupt(mask, cv2.imencode(".png", soft)[1].tobytes())
    out = work / "pred"
    with pytest.raises(MedicalDataError, match=re.escape(str(mask)) + r": mask is not binary"):
        medical_main([
            "predict", *args_for(MEDICAL, data), "--data.batch_size", "1", "--ckpt_path",
            str(checkpoints[MEDICAL]),
            "--model.predict_dir", str(out),
        ])  # fmt: skip
    assert not out.exists()


def test_anomaly_predict_into_an_existing_folder_removes_only_what_it_wrote(data, checkpoints, work, corrupt):
    label = sorted((data["anomaly"] / "labels_masks").glob("*.png"))[2]
    mask = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    mask[0, 0] = 7
    _, png = cv2.imencode(".png", mask)
    corrupt(label, png.tobytes())
    out = work / "pred"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier result")
    args = [*args_for(ANOMALY, data), "--data.batch_size", "1", "--ckpt_path", str(checkpoints[ANOMALY])]
    with pytest.raises(
        LabelFormatError, match=re.escape(str(label)) + r": label values \[7\] are not allowed"
    ):
        anomaly_main(["predict", *args, "--model.predict_dir", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    with pytest.raises(LabelFormatError, match=re.escape(str(label)) + r": label values \[7\]"):
        anomaly_main(["test", *args])
    assert not list(work.rglob("*.ckpt"))


def test_detection_predict_on_a_corrupt_image_leaves_no_partial_results(data, checkpoints, work, corrupt):
    ckpt = checkpoints[DETECTION]
    test_ids = sorted(a.image_id for a in _detection_test_split(data))
    image = data["kitti"] / "training" / "image_2" / f"{test_ids[-1]}.png"
    corrupt(image, b"garbage")
    out = work / "pred"
    with pytest.raises(LabelFormatError, match=re.escape(str(image)) + r": cannot decode image"):
        detection_main([
            "predict", *args_for(DETECTION, data), "--data.batch_size", "1", "--ckpt_path", str(ckpt),
            "--model.predict_dir", str(out),
        ])  # fmt: skip
    assert not out.exists()


def _detection_test_split(data):
    from domains.driving.detection.data import DetectionDataModule

    dm = DetectionDataModule(data_path=str(data["kitti"]), num_workers=0)
    dm.setup("predict")
    return dm.splits["test"]


# -------------------------------------------------------------------------------------------------- exports


@pytest.mark.parametrize(
    "module",
    [
        "domains.medical.export",
        "domains.driving.detection.export",
        "domains.driving.instances.export",
        "domains.driving.anomaly.export",
        "domains.driving.accident.export",
        "shared.classification.export",
    ],
)
def test_export_entries_refuse_missing_garbage_and_foreign_checkpoints(module, checkpoints, work, capsys):
    import importlib

    main = importlib.import_module(module).main
    out = work / "onnx"
    garbage = work / "garbage.ckpt"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(FileNotFoundError, match=r"nope\.ckpt"):
        main(["--ckpt", str(work / "nope.ckpt"), "--out", str(out)])
    with pytest.raises(CheckpointMismatchError, match=re.escape(str(garbage))):
        main(["--ckpt", str(garbage), "--out", str(out)])
    foreign = checkpoints[ANOMALY if "medical" in module else MEDICAL]
    with pytest.raises(CheckpointMismatchError, match=re.escape(str(foreign))):
        main(["--ckpt", str(foreign), "--out", str(out)])
    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(out)])
    assert exit_.value.code == 2 and "the following arguments are required: --ckpt" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------------------------------- what a user sees


def _as_a_program(monkeypatch, program: str, args: list[str]) -> None:
    """``sys.argv`` and the environment of ``python -m <program> args`` run by a user: the entry then reads its
    arguments from ``sys.argv`` and reports bad input as on a terminal (the one real process of this check is
    tests/shared/test_cli_help.py::test_a_real_command_line_error_is_one_line_without_a_traceback)."""
    monkeypatch.setattr(sys, "argv", [f"{program.replace('.', '/')}.py", *args])
    monkeypatch.delenv("SUITE_TRACEBACK", raising=False)
    monkeypatch.setenv("SUITE_KEEP_FREED_MEMORY", "0")  # the command's glibc setting: not for pytest's process


def test_the_terminal_shows_the_error_naming_the_file(data, checkpoints, tmp_path, monkeypatch, capsys):
    """The command as a program (``main()`` reading sys.argv): exit status 1, no traceback, and one line naming
    the checkpoint and what it holds."""
    monkeypatch.chdir(tmp_path)
    _as_a_program(monkeypatch, DETECTION, ["test", *args_for(DETECTION, data), "--ckpt_path", str(checkpoints[MEDICAL])])
    with pytest.raises(SystemExit) as exit_:
        detection_main()
    stderr = capsys.readouterr().err
    assert exit_.value.code == 1 and "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("(raised at ") and lines[-1].endswith(
        "; SUITE_TRACEBACK=1 shows the whole traceback)"
    )
    last = lines[-2]
    assert last.startswith("error: CheckpointMismatchError: ") and str(checkpoints[MEDICAL]) in last
    assert "MedicalSegmentationTask checkpoint (model 'UNetSegmenter')" in last
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_export_command_reports_bad_input_in_one_line(tmp_path, monkeypatch, capsys):
    """``python -m domains.medical.export --ckpt <a folder>`` as its ``__main__`` runs it (``run_export(main)``):
    exit status 1, the error in one line, nothing written."""
    from domains.medical.export import main
    from shared.export import run_export

    _as_a_program(monkeypatch, "domains.medical.export", ["--ckpt", str(tmp_path), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_:
        run_export(main)
    stderr = capsys.readouterr().err
    assert exit_.value.code == 1 and "Traceback" not in stderr
    assert f"error: IsADirectoryError: --ckpt {tmp_path} is a folder; give the checkpoint file in it" in stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("module", ["domains.medical", "domains.driving.detection", "domains.driving.accident"])
def test_a_command_without_a_config_says_the_config_names_the_network(module, capsys):
    """`predict --ckpt_path FILE` without -c ended in "the following arguments are required:
    predict.model.network", not saying that the config is what names it."""
    import importlib

    from shared.cli import ConfigError

    main = importlib.import_module(f"{module}.__main__").main
    with pytest.raises(ConfigError, match=r"predict: give the config the model was trained with, -c <config.yaml>"):
        main(["predict", "--ckpt_path", "model.ckpt"])
    with pytest.raises(ConfigError, match=r"fit: give a config, -c <config.yaml> .*: it names the network to train"):
        main(["fit"])
    # -cFILE (argparse's joined form) names a config: the command goes on to jsonargparse's own check of it
    with pytest.raises(SystemExit) as exit_:
        main(["validate", "-cmissing.yaml"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and 'Parser key "config": File does not exist:' in err
    assert "missing.yaml" in err
