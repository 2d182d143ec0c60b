"""s38: a ``.predictions.json`` naming what no predict run wrote (``../../notes.txt``, an absolute path, a
``model.ckpt``) is refused, nothing moved; a ``predict_dir`` holding any file the predict set reads (the
default set, a label CSV's images in another folder) is refused; ``-cFILE`` and ``-c=FILE`` find the suite's
config from another folder as ``-c FILE`` does."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from torch.utils.data import DataLoader, Dataset, Subset

from shared.classification.data import ClassificationDataModule
from shared.cli import ConfigError, _check_config_files, _suite_config_files
from shared.cli_help import SUITE_ROOT
from shared.files import written_whole
from shared.prediction_set import PredictionSet, _dataset_paths
from tests.helpers import STRIPE_CLASSES, quiet_trainer, stripes, write_lidc
from tests.shared.test_prediction_set import Writer, contents, predict


def _bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, hidden ones too, by path below it."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------------ the manifest's entries


def _foreign_manifest(tmp_path: Path, listed) -> tuple[Path, Path]:
    """A predict_dir ``pred`` holding a user's own files and a manifest ``listed`` (a list, or raw text;
    "ABS": an absolute path), beside a folder ``outside`` of the user's other files (``pred/link`` leads
    there)."""
    out, outside = tmp_path / "pred", tmp_path / "outside"
    for folder in (out / "sub", outside):
        folder.mkdir(parents=True)
    (outside / "notes.txt").write_text("my notes")
    (outside / "a.png").write_bytes(b"my photo")
    (out / "link").symlink_to(outside, target_is_directory=True)
    (out / "model.ckpt").write_bytes(b"my weights")
    (out / "pred_0.txt").write_text("A")
    (out / "sub" / "pred_0.txt").write_text("mine")
    if not isinstance(listed, str):
        listed = json.dumps([str(outside / "notes.txt") if entry == "ABS" else entry for entry in listed])
    (out / ".predictions.json").write_text(listed)
    return out, outside


@pytest.mark.parametrize(
    ("listed", "entry", "why"),
    [
        (["pred_0.txt", "model.ckpt"], "model.ckpt", "is not of a kind predict writes"),
        (["../outside/notes.txt"], "../outside/notes.txt", "is not a plain relative name inside"),
        (["ABS"], "ABS", "is not a plain relative name inside"),
        (["sub/../pred_0.txt"], "sub/../pred_0.txt", "is not a plain relative name inside"),
        (["./pred_0.txt"], "./pred_0.txt", "is not a plain relative name inside"),
        (["sub\\pred_0.txt"], "sub\\pred_0.txt", "is not a plain relative name inside"),
        ([".hidden.png"], ".hidden.png", "is a hidden file"),
        (["link/a.png"], "link/a.png", "leads out of .* through a link"),
        ([3], 3, "is not a file name"),
        ('{"files": ["pred_0.txt"]}', None, "not the list of files a predict run wrote there"),
        ("{not json", None, "not the list of files a predict run wrote there"),
    ],
)
def test_a_manifest_naming_what_no_predict_run_wrote_is_refused_and_nothing_moves(tmp_path, listed, entry,
                                                                                   why):
    """A hand-edited or foreign manifest's entries were moved aside and deleted at the end as "the earlier
    set": a model.ckpt beside the predictions was lost; paths outside were dropped without a word."""
    out, outside = _foreign_manifest(tmp_path, listed)
    before = (_bytes(out), _bytes(outside))
    manifest = re.escape(str(out / ".predictions.json"))
    if entry == "ABS":
        entry = str(outside / "notes.txt")
    said = f"^{manifest}: " + (f"entry {re.escape(repr(entry))} {why}" if entry is not None else why)
    with pytest.raises(ConfigError, match=said) as refused:
        predict(out, "B")
    assert "nothing was moved or written: if no predict run wrote it, delete it" in str(refused.value)
    assert (_bytes(out), _bytes(outside)) == before  # no aside folder, no lock file, no pred_1.txt


class _WritesAnother(pl.Callback):
    """A user's callback that saves a ``notes.md`` into the predict_dir through the writers' own helper."""

    def __init__(self, out: Path):
        self.out = out

    def on_predict_batch_end(self, *args):
        with written_whole(self.out / "notes.md") as tmp:
            tmp.write_text("notes")


def test_a_file_of_another_kind_a_run_writes_is_left_out_of_its_manifest_and_said(tmp_path):
    """Listed, it made the next run's manifest one it refuses (and, before, moved and deleted it)."""
    out = tmp_path / "pred"
    said = r"1 file\(s\) this run wrote there are not listed .*\(notes\.md is not of a kind predict writes"
    with pytest.warns(UserWarning, match=said):
        predict(out, "A", callbacks=[_WritesAnother(out)])
    assert json.loads((out / ".predictions.json").read_text()) == ["pred_0.txt", "pred_1.txt", "pred_2.txt"]
    predict(out, "B", batches=1)  # its own manifest is taken, the notes left as they are
    assert contents(out) == {
        ".predictions.json": '[\n"pred_0.txt"\n]', "notes.md": "notes", "pred_0.txt": "B"
    }  # fmt: skip


# ------------------------------------------------------------------------------ inputs inside the predict_dir


@dataclasses.dataclass
class _Record:
    """A data set's record as the readers keep them: the image's path (a ``str``) among other fields."""

    image_path: str
    width: int = 16


class _Records(Dataset):
    """A data set holding its images as records and, for frames read from a folder, that folder alone."""

    def __init__(self, records: list[_Record], frames: Path | None = None):
        self.records, self.frames, self.transform = records, frames, object()

    def __len__(self):
        return 2

    def __getitem__(self, index):
        return torch.zeros(1)


class _DefaultSet(pl.LightningDataModule):
    """A data module predicting its default set (``data_path``, ``predict_path`` null) through a Subset."""

    predict_path = data_path = None

    def __init__(self, dataset: Dataset):
        super().__init__()
        self.dataset = dataset

    def predict_dataloader(self):
        return DataLoader(Subset(self.dataset, [0, 1]), batch_size=1)


def _predict_default(out: Path, dataset: Dataset) -> None:
    quiet_trainer(callbacks=[PredictionSet()]).predict(Writer(out, "A"), datamodule=_DefaultSet(dataset))


def test_the_default_data_set_inside_the_predict_dir_is_refused(tmp_path, monkeypatch):
    """No --data.predict_path, --data.data_path null: the check looked at no folder at all, so a predict_dir
    above the generated set (``data``, the working directory) was taken and its images written over."""
    monkeypatch.chdir(tmp_path)
    for i in range(2):
        stripes(tmp_path / "data" / "synthetic" / "images" / f"{i}.png", vertical=bool(i), seed=i)
    records = _Records([_Record(f"data/synthetic/images/{i}.png") for i in range(2)])  # relative, as defaults
    before = _bytes(tmp_path)
    said = (
        rf"^--model.predict_dir {tmp_path / 'data'}: it holds files this predict run reads "
        rf"\({tmp_path / 'data' / 'synthetic' / 'images' / '0.png'} and 1 more: the data set predict reads "
        r"without --data.predict_path: its test split, or the default synthetic set\)"
    )
    with pytest.raises(ConfigError, match=said):
        _predict_default(tmp_path / "data", records)
    # frames read from a folder the data set names alone (a clip's)
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "000001.jpg").write_bytes(b"frame")
    with pytest.raises(ConfigError, match=rf"reads \({tmp_path / 'frames' / '000001.jpg'}: "):
        _predict_default(tmp_path / "frames", _Records([], frames=Path("frames")))
    assert _bytes(tmp_path) == before | {"frames/000001.jpg": b"frame"}
    # beside the set, and inside its folder beside images it does not read: written
    (tmp_path / "data" / "synthetic" / "out").mkdir()
    stripes(tmp_path / "data" / "synthetic" / "out" / "mine.png", vertical=True, seed=3)
    for out in (tmp_path / "pred", tmp_path / "data" / "synthetic" / "out"):
        _predict_default(out, records)
        assert json.loads((out / ".predictions.json").read_text()) == ["pred_0.txt", "pred_1.txt"]


def test_a_label_csv_whose_images_lie_in_the_predict_dir_is_refused(tmp_path):
    """The CSV's folder was the only one looked at: images it lists elsewhere could be written over."""
    images, rows = tmp_path / "images", ["path,label,group"]
    for i in range(6):
        stripes(images / f"{i}.png", vertical=bool(i % 2), seed=i)
        rows.append(f"../images/{i}.png,{STRIPE_CLASSES[i % 2]},g{i}")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "labels.csv").write_text("\n".join(rows) + "\n")

    def run(out: Path) -> None:
        data = ClassificationDataModule(
            "csv", str(tmp_path / "labels" / "labels.csv"), STRIPE_CLASSES, in_channels=1,
            image_size=(16, 16), num_workers=0, split_fractions=(0.34, 0.33, 0.33),
        )  # fmt: skip
        quiet_trainer(callbacks=[PredictionSet()]).predict(Writer(out, "A"), datamodule=data)

    before = _bytes(images)
    with pytest.raises(ConfigError, match=rf"^--model.predict_dir {images}: it holds files this predict run"):
        run(images)
    assert _bytes(images) == before
    run(tmp_path / "pred")  # beside them: fine
    assert (tmp_path / "pred" / ".predictions.json").is_file()


def test_the_paths_of_the_suites_predict_sets_are_found(tmp_path):
    """The shapes the real data modules keep their inputs in: a medical view over its base's ``image_paths``
    (and reader masks), a classification sample's path."""
    from domains.medical.data import MedicalDataModule

    root = write_lidc(tmp_path / "lidc", split="test", n=2)
    medical = MedicalDataModule(data_path=str(root), num_workers=0).dataset("predict")
    found = {str(path) for path in _dataset_paths([medical])}
    images = {str(root / "test" / "images" / "P1" / f"s{i}.png") for i in range(2)}
    masks = {str(root / "test" / "gt" / "P1" / f"s{i}_l{r}.png") for i in range(2) for r in range(4)}
    assert images | masks <= found
    stripes(tmp_path / "c" / "0.png", vertical=True, seed=0)
    data = ClassificationDataModule("imagefolder", str(tmp_path), STRIPE_CLASSES,
                                    predict_path=f"{tmp_path}/c")
    data.setup("predict")
    assert str(tmp_path / "c" / "0.png") in {str(p) for p in _dataset_paths([data.datasets["predict"]])}


# ------------------------------------------------------------------------------ -cFILE


def test_an_attached_config_file_is_found_in_the_suites_folder_and_its_yaml_errors_named(
    tmp_path, monkeypatch, capsys, caplog
):
    """``-cFILE`` and ``-c=FILE`` (jsonargparse reads both as ``-c FILE``) from another folder failed with
    "File does not exist" where ``-c FILE`` found the suite's own; a YAML error in one was reported at
    '"<unicode string>", line N', not naming the file."""
    from domains.medical.__main__ import main

    monkeypatch.chdir(tmp_path)
    config = "domains/medical/configs/quick.yaml"
    with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as done:
        main(["fit", f"-c{config}", "--print_config"])
    assert done.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["network"]["init_args"]["channels"] == [16, 32, 64, 128]  # quick.yaml's
    assert printed["checkpoint"]["dirpath"] == "lightning_logs/medical/quick/checkpoints"
    assert f"-c {config}: not in the working directory {tmp_path}" in caplog.text
    suite = SUITE_ROOT / config
    given = ["fit", f"-c={config}", "--config", config, f"--config={config}", "-cnowhere.yaml", "--trainer.x"]
    assert _suite_config_files(given) == [
        "fit", f"-c={suite}", "--config", str(suite), f"--config={suite}", "-cnowhere.yaml", "--trainer.x"
    ]  # fmt: skip; a file in neither place is left for jsonargparse to name
    (tmp_path / "bad.yaml").write_text("model: [1\n")
    for given in ("-cbad.yaml", "-c=bad.yaml"):
        with pytest.raises(ConfigError, match=r"^bad\.yaml:2: invalid YAML"):
            _check_config_files(["fit", given])
