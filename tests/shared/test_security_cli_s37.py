"""Security audit s37: ``predict`` with ``--model.predict_dir`` above its own input photos drew each overlay over
the photo itself (and listed the photos as its predictions); a URL ``--ckpt_path`` reached Lightning unchecked.
Tiny files in tmp_path; predict runs the untrained tiny detector (``--ckpt_path none``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from shared.cli import ConfigError
from shared.prediction_set import PredictionSet
from tests.driving.test_detection import _cli_args
from tests.helpers import quiet_trainer, write_image
from tests.shared.test_prediction_set import Writer


def _bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, hidden ones too, by path below it."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _detect(predict_path: Path, predict_dir: Path, data: Path):
    from domains.driving.detection.__main__ import main

    own = ["--data.predict_path", str(predict_path), "--model.predict_dir", str(predict_dir)]
    return main(["predict", *_cli_args(data, "--ckpt_path", "none", *own)])


def test_predict_into_the_folder_above_its_photos_is_refused_and_leaves_them_as_they_were(tmp_path, one_thread):
    """The audit's run: photos in D/images, --model.predict_dir D. The detection writer's D/images/<id>.png
    replaced each photo with its overlay, exit 0; the manifest listed the photos, so the next run moved them aside."""
    folder = tmp_path / "D"
    for i in range(2):
        write_image(folder / "images" / f"00000{i}.png", 32, 16, seed=i)
    before = _bytes(folder)
    said = (
        rf"^--model.predict_dir {folder}: it holds input files of --data.predict_path {folder / 'images'} "
        rf"\({folder / 'images' / '000000.png'} and 1 more\), which predict's outputs could overwrite; "
        r"nothing was written"
    )
    with pytest.warns(UserWarning, match="untrained"), pytest.raises(ConfigError, match=said):
        _detect(folder / "images", folder, tmp_path / "no_data_set")
    assert _bytes(folder) == before  # no overlay, no data/, no .predictions.json
    # the same photos into a folder inside theirs: written, and a rerun reads the photos only, as before
    out = folder / "images" / "out"
    for _ in range(2):
        with pytest.warns(UserWarning, match="untrained"):
            cli = _detect(folder / "images", out, tmp_path / "no_data_set")
        assert len(cli.datamodule.datasets["predict"]) == 2
    assert json.loads((out / ".predictions.json").read_text()) == [
        "data/000000.txt", "data/000001.txt", "images/000000.png", "images/000001.png"
    ]  # fmt: skip
    assert {k: v for k, v in _bytes(folder).items() if not k.startswith("images/out/")} == before


class _Photos(pl.LightningDataModule):
    """A data module naming its inputs as the suite's do (``predict_path``, else ``data_path``)."""

    def __init__(self, predict_path: Path | None = None, data_path: Path | None = None):
        super().__init__()
        self.predict_path, self.data_path = predict_path, data_path

    def predict_dataloader(self):
        return DataLoader(torch.zeros(2, 1), batch_size=1)


def _predict(out: Path, data: _Photos) -> None:
    quiet_trainer(callbacks=[PredictionSet()]).predict(Writer(out, "A"), datamodule=data)


def test_a_predict_dir_inside_the_input_folder_is_refused_only_with_an_image_of_its_own_in_it(tmp_path):
    """Inside the photos' folder (the README's "fine"): an image put into the predict_dir is read as a photo, so
    it is refused like the inputs above; a log or the earlier run's listed files are not inputs."""
    photos, out = tmp_path / "photos", tmp_path / "photos" / "out"
    write_image(photos / "a.png")
    _predict(out, _Photos(predict_path=photos))
    (out / "predict.log").write_text("log")
    _predict(out, _Photos(predict_path=photos))  # its own pred_*.txt listed, the log no input
    write_image(out / "mine.png", seed=3)
    before = _bytes(out)
    with pytest.raises(ConfigError, match=rf"holds input files of --data.predict_path {photos} \({out / 'mine.png'}\)"):
        _predict(out, _Photos(predict_path=photos))
    assert _bytes(out) == before and json.loads(before[".predictions.json"]) == ["pred_0.txt", "pred_1.txt"]


def test_a_data_set_inside_the_predict_dir_is_refused_and_a_url_data_path_is_not_looked_at(tmp_path):
    """Without --data.predict_path predict reads the data set's test split: a COCO layout's images/<id>.png is
    the detection writer's own path for that image."""
    data = tmp_path / "coco"
    write_image(data / "images" / "000000.png")
    (data / "train.json").write_text("{}")
    for data_path in (data, data / "train.json"):  # a file: the folder it lies in
        with pytest.raises(ConfigError, match=rf"input files of --data.data_path {data} \({data / 'images'}"):
            _predict(data, _Photos(data_path=data_path))
    _predict(tmp_path / "pred", _Photos(data_path=data))  # beside it: fine
    _predict(tmp_path / "pred2", _Photos(data_path="s3://bucket/coco"))  # no local folder: none of its files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco", "pred", "pred2"]
    assert sorted(_bytes(data)) == ["images/000000.png", "train.json"]


@pytest.mark.parametrize("url", ["file:///tmp/x.ckpt", "https://example.com/model.ckpt", "s3://bucket/last.ckpt"])
@pytest.mark.parametrize("subcommand", ["fit", "predict"])
def test_a_url_ckpt_path_is_refused_before_the_data_is_read(tmp_path, url, subcommand):
    """``file:///.../x.ckpt`` went to Lightning unchecked and failed after the data setup, with torch's advice
    that weights_only=False "will likely succeed". The data set here does not exist: the refusal comes first."""
    from domains.driving.detection.__main__ import main

    said = rf"^--ckpt_path {url}: a URL; checkpoints are read from local files only: give the path of a local \.ckpt"
    with pytest.raises(ConfigError, match=said):
        main([subcommand, *_cli_args(tmp_path / "missing", "--ckpt_path", url)])
