"""The benchmarks' table cells of a figure come from one helper, ``benchmarks.report.fmt`` (four copies of it,
written slightly apart, lived in the driving benchmarks)."""

from __future__ import annotations

import math

import pytest

from benchmarks import report


@pytest.mark.parametrize(
    ("value", "digits", "cell"),
    [(None, 3, "n/a"), (math.nan, 3, "n/a"), (0.12345, 3, "0.123"), (1.0, 3, "1.000"), (12.345, 1, "12.3")],
)
def test_a_figure_is_written_with_its_decimals_and_nothing_scored_as_n_a(value, digits, cell):
    assert report.fmt(value, digits) == cell


def test_every_driving_benchmark_writes_its_cells_with_the_shared_helper():
    from benchmarks import driving_accident, driving_anomaly, driving_detection, driving_instances

    for module in (driving_accident, driving_anomaly, driving_detection, driving_instances):
        assert module.fmt is report.fmt, module.__name__
