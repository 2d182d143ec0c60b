"""Files and names read the same on machines unlike this one: a Windows code page (text files written and read
as UTF-8, whatever the locale's encoding) and a case-insensitive disk (macOS, Windows)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shared.cli import config_run_name

ROOT = Path(__file__).parents[2]
# a locale whose encoding is not UTF-8 (ASCII here; a Windows code page there), UTF-8 mode and coercion off
NOT_UTF8 = {"LC_ALL": "POSIX", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "PYTHONPATH": str(ROOT)}


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **NOT_UTF8}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], check=False, cwd=tmp_path, env=env, capture_output=True,
        text=True,
    )


def test_a_kitti_label_with_a_non_ascii_class_is_written_and_read_back_as_utf8(tmp_path):
    """Under cp1252 a converted `Fußgänger` label was written in the code page, then refused by the suite's own
    reader ("not a UTF-8 text file"); a Chinese name died with 'charmap' codec can't encode."""
    done = _run(
        """
        import locale
        from domains.driving.formats import ObjectLabel, read_kitti_label, write_kitti_label
        assert locale.getpreferredencoding(False) != "UTF-8", locale.getpreferredencoding(False)
        names = ["Fu\\xdfg\\xe4nger", "\\u884c\\u4eba"]  # escaped: the command line is read as ASCII too
        write_kitti_label("000000.txt", [ObjectLabel(name, (1, 2, 3, 4)) for name in names])
        print(ascii([o.type for o in read_kitti_label("000000.txt", known_types=None)]))
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "000000.txt").read_bytes().decode("utf-8").split()[0] == "Fußgänger"
    assert done.stdout == "['Fu\\xdfg\\xe4nger', '\\u884c\\u4eba']\n"


def _configs(tmp_path: Path) -> None:
    """mine.yaml with a UTF-8 comment, plain.yaml in ASCII."""
    (tmp_path / "mine.yaml").write_text("# poznámka: čtvrtý pokus\ntrainer:\n  max_epochs: 1\n", encoding="utf-8")
    (tmp_path / "plain.yaml").write_text("trainer:\n  max_epochs: 1\n", encoding="utf-8")


WAY_OUT = "not UTF-8: run with PYTHONUTF8=1 set (or python -X utf8), or keep the file ASCII"


@pytest.mark.parametrize("encoding", ["ANSI_X3.4-1968", "cp1252"])  # POSIX's ASCII (as below), a Windows code page
def test_a_utf8_config_under_another_locale_encoding_is_named_with_the_way_out(tmp_path, monkeypatch, encoding):
    """jsonargparse reads configs in the locale's encoding: a UTF-8 comment `# poznámka` died with a bare
    UnicodeDecodeError naming no file. In-process, the locale's encoding as Python reports it under that locale
    (the real locale's process: the slow test below)."""
    import locale

    from shared.cli import ConfigError, _check_config_files

    _configs(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(locale, "getpreferredencoding", lambda do_setlocale=True: encoding)
    _check_config_files(["-c", "plain.yaml"])
    with pytest.raises(ConfigError) as err:
        _check_config_files(["-c", "mine.yaml"])
    said = str(err.value)
    assert said.startswith(f"mine.yaml: holds non-ASCII characters and this Python reads files as {encoding}, ")
    assert said.endswith(WAY_OUT)


@pytest.mark.slow  # a fresh interpreter under a real non-UTF-8 locale, importing torch and Lightning: 5-7 s
def test_a_utf8_config_under_a_real_non_utf8_locale_is_named_with_the_way_out(tmp_path):
    """The test above in a process whose locale really is POSIX (ASCII), UTF-8 mode and coercion off."""
    _configs(tmp_path)
    done = _run(
        """
        from shared.cli import ConfigError, _check_config_files
        _check_config_files(["-c", "plain.yaml"])
        try:
            _check_config_files(["-c", "mine.yaml"])
        except ConfigError as err:
            print(err)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("mine.yaml: holds non-ASCII characters and this Python reads files as ")
    assert done.stdout.rstrip().endswith(WAY_OUT)


def test_a_config_named_like_a_suite_config_but_for_case_gets_its_own_folder(tmp_path, monkeypatch):
    """On a case-insensitive disk lightning_logs/<domain>/Quick/ is the suite's quick/: the copy shared its runs."""
    monkeypatch.chdir(tmp_path)
    for name in ("Quick.yaml", "quick.yaml", "QUICK.yaml", "mine.yaml"):
        (tmp_path / name).write_text("{}\n")
    assert config_run_name(Path("Quick.yaml")) == f"{tmp_path.name}-Quick"
    assert config_run_name(Path("QUICK.yaml")) == f"{tmp_path.name}-QUICK"
    assert config_run_name(Path("quick.yaml")) == f"{tmp_path.name}-quick"
    assert config_run_name(Path("mine.yaml")) == "mine"
