"""shared.allocator: glibc's thresholds set through mallopt, or left alone when they should be."""

import pytest

from shared import allocator, cli_help


class FakeLibc:
    def __init__(self, calls):
        self.calls = calls

    def mallopt(self, option, value):
        self.calls.append((option, value))
        return 1


@pytest.fixture
def calls(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: FakeLibc(calls))
    for name in (allocator.OPT_OUT, "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_thresholds_fit_mallopts_c_int():
    """ctypes passes a Python int as a C int and silently wraps a larger one (1 << 34 became 0)."""
    for value in (allocator.MMAP_THRESHOLD, allocator.TRIM_THRESHOLD):
        assert allocator.ctypes.c_int(value).value == value


def test_sets_both_thresholds(calls):
    assert allocator.keep_freed_memory() is True
    assert calls == [(-3, 1 << 30), (-1, 2**31 - 1)]  # M_MMAP_THRESHOLD 1 GiB, M_TRIM_THRESHOLD 2 GiB (C int)


@pytest.mark.parametrize(
    "name, value",
    [
        ("SUITE_KEEP_FREED_MEMORY", "0"),
        ("MALLOC_MMAP_THRESHOLD_", "65536"),
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=65536"),
    ],
)
def test_leaves_glibc_alone_when_told_or_already_tuned(calls, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert allocator.keep_freed_memory() is False
    assert calls == []


def test_no_glibc_changes_nothing(calls, monkeypatch):
    tried = []

    def no_library(name):  # the environment is cleared by the fixture, so the library is asked for
        tried.append(name)
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(allocator.ctypes, "CDLL", no_library)
    assert allocator.keep_freed_memory() is False
    assert tried and calls == []


def test_only_a_real_command_line_keeps_freed_memory(monkeypatch):
    """``python -m domains...`` (args None) sets it; tests and scripts calling main(args=[...]) do not."""
    kept = []
    monkeypatch.setattr(cli_help, "keep_freed_memory", lambda: kept.append(True))
    main = cli_help.domain_main("domains.medical", "A task.", ".task:Task", ".data:Data", "val/ged")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert kept == []
    monkeypatch.setattr(cli_help.sys, "argv", ["python -m domains.medical", "--help"])
    with pytest.raises(SystemExit):
        main()
    assert kept == [True]
