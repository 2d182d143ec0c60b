"""Audit findings: a wrong backbone file's report printed twice; OpenCV's own warnings beside the suite's error."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shared.classification.model import ImageClassifier
from tests.helpers import STRIPE_CLASSES, stripes_task

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[2]


def test_another_networks_file_shows_its_load_report_once(tmp_path, caplog):
    """The report was printed as an info line, then again inside the error."""
    wider = tmp_path / "wider.pt"
    net = ImageClassifier(len(STRIPE_CLASSES), "tiny_cnn", in_channels=1, backbone_kwargs={"width": 16})
    torch.save(net.backbone.state_dict(), wider)
    with caplog.at_level(logging.INFO), pytest.raises(ValueError, match="30 shape mismatch") as caught:
        stripes_task(pretrained_backbone=str(wider))
    assert (caplog.text + str(caught.value)).count("30 shape mismatch") == 1, caplog.text
    own = tmp_path / "own.pt"  # a file that loads: its report is still printed, once
    torch.save(stripes_task().model.backbone.state_dict(), own)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        stripes_task(pretrained_backbone=str(own))
    assert caplog.text.count(f"pretrained backbone {own}: ") == 1 and "tensors loaded" in caplog.text


def _stderr(code: str, **env: str) -> str:
    """stderr of ``code`` run by a fresh Python in the repository (OpenCV's log level is set once per process)."""
    clean = {k: v for k, v in os.environ.items() if k != "OPENCV_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_opencvs_own_warnings_are_silenced_where_the_suite_reads_images(tmp_path, capfd):
    """``[ WARN:0@5.2] ... imread_('...'): can't open/read file`` came beside the suite's 'image file not found'
    error (OpenCV writes to the stderr file descriptor: ``capfd`` sees it)."""
    import cv2

    from shared.classification.data import read_image

    gone = tmp_path / "gone.png"
    with pytest.raises(FileNotFoundError, match="gone.png: image file not found"):
        read_image(gone, 3)
    assert "[ WARN" not in capfd.readouterr().err
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_WARNING)  # as before: the check means something
    try:
        cv2.imread(str(gone))
    finally:
        cv2.utils.logging.setLogLevel(level)
    assert "can't open/read file" in capfd.readouterr().err


def test_opencvs_log_is_set_at_import_and_a_users_opencv_log_level_wins(tmp_path):
    read = f"import shared.images, cv2; assert cv2.imread({str(tmp_path / 'gone.png')!r}) is None"
    assert "[ WARN" not in _stderr(read)
    assert "[ WARN" in _stderr(read, OPENCV_LOG_LEVEL="WARNING")  # debugging OpenCV itself
