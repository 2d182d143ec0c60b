"""benchmarks/prob_unet_speed.py: its table and its profile, on a tiny run without the port."""

import pytest

from benchmarks.prob_unet_speed import main, profile_kind


def test_profile_kinds_by_hand():
    assert profile_kind("aten::convolution_backward") == "convolution backward (oneDNN)"
    assert profile_kind("aten::mkldnn_convolution") == "convolution forward (oneDNN)"
    assert profile_kind("graph_0_cpp_fused_leaky_relu_native_group_norm_1").startswith("inductor's fused")
    assert profile_kind("aten::mm") == "matrix products (f_comb)"
    assert profile_kind("Optimizer.step#Adam.step") == "Adam"
    assert profile_kind("aten::copy_").startswith("the rest")


def test_tiny_run_prints_the_table_and_the_profile(tmp_path):
    out = tmp_path / "speed.md"
    text = main(
        ["--rounds", "1", "--size", "16", "--batch-size", "2", "--profile", "group", "--out", str(out)]
    )
    assert out.read_text() == text
    assert "| suite as shipped: instance norm run as GroupNorm(C, C) (`group`) |" in text
    assert "Peer rows skipped" in text
    profile = text.split("Profile of `group`")[1]
    rows = [line.split("|") for line in profile.splitlines() if line.startswith("| ") and "%" in line]
    kinds = {row[1].strip() for row in rows}
    assert {"convolution backward (oneDNN)", "convolution forward (oneDNN)"} <= kinds
    assert sum(float(row[3].strip(" %")) for row in rows) == pytest.approx(100, abs=0.5)


def test_profile_of_a_variant_not_run_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--rounds", "1", "--size", "16", "--batch-size", "2", "--profile", "compile"])
    assert "--profile compile: not among this run's variants" in capsys.readouterr().err
