"""benchmarks/prob_unet_speed.py: its table, its profile and its upsampling variant, on tiny runs."""

import pytest
import torch

from benchmarks.prob_unet_speed import main, profile_kind, profile_lines, suite_step
from shared.backbones import unet as unet_module


@pytest.fixture(autouse=True)
def _keep_threads():
    """main() sets the thread count for its run; later tests get theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_profile_kinds_by_hand():
    assert profile_kind("aten::convolution_backward") == "convolution backward (oneDNN)"
    assert profile_kind("aten::mkldnn_convolution") == "convolution forward (oneDNN)"
    assert profile_kind("graph_0_cpp_fused_leaky_relu_native_group_norm_1").startswith("inductor's fused")
    assert profile_kind("aten::mm") == "matrix products (f_comb)"
    assert profile_kind("Optimizer.step#Adam.step") == "Adam"
    assert profile_kind("aten::copy_").startswith("the rest")


def test_profile_table_of_a_tiny_step_adds_up_and_restores_inductor_settings():
    import torch._inductor.config as inductor_config

    conv = torch.nn.Conv2d(2, 4, 3, padding=1)
    x = torch.randn(2, 2, 16, 16)
    built = []

    def build():
        built.append(inductor_config.cpp.enable_kernel_profile)  # on while the profiled step is built
        return lambda: conv(x).sum().backward()

    lines = profile_lines("tiny", build)
    rows = [line.split("|") for line in lines if line.startswith("| ") and "%" in line]
    kinds = {row[1].strip() for row in rows}
    assert {"convolution backward (oneDNN)", "convolution forward (oneDNN)"} <= kinds
    seconds = [float(row[2]) for row in rows]
    assert seconds == sorted(seconds, reverse=True) and min(seconds) >= 0  # largest first
    assert built == [True] and inductor_config.cpp.enable_kernel_profile is False


def test_interpolate_variant_swaps_the_upsampling_for_its_step_only(monkeypatch):
    seen = []
    original = unet_module.upsample_nearest
    monkeypatch.setattr(unet_module.UNetDecoder, "forward", _recording_forward(seen))
    images = torch.randn(2, 1, 16, 16)
    masks = (torch.rand(2, 1, 16, 16) < 0.3).float()
    suite_step(images, masks, "group", False, interpolate=True)()
    suite_step(images, masks, "group", False)()
    assert seen[0] is not original and seen[0].__name__ == "_interpolate_nearest"
    assert seen[1] is original and unet_module.upsample_nearest is original


def test_bf16_variant_runs_the_forward_in_bfloat16_and_only_its_step(monkeypatch):
    dtypes = []
    forward = unet_module.UNetDecoder.forward

    def recording(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        dtypes.append({t.dtype for t in (out if isinstance(out, (list, tuple)) else [out])})
        return out

    monkeypatch.setattr(unet_module.UNetDecoder, "forward", recording)
    images = torch.randn(2, 1, 16, 16)
    masks = (torch.rand(2, 1, 16, 16) < 0.3).float()
    suite_step(images, masks, "group", False)()
    suite_step(images, masks, "group", False, bf16=True)()
    assert dtypes == [{torch.float32}, {torch.bfloat16}]
    assert not torch.is_autocast_enabled("cpu")  # left off after the step


# The smallest run main() takes (16 px, batch 1, one round) on one thread: main() sets --threads (default 2)
# for its run, and a second thread in a one-thread test worker spun against the other worker (bf16 on the
# CPU is also about 8x slower than fp32).
TINY_RUN = ["--rounds", "1", "--size", "16", "--batch-size", "1", "--threads", "1"]


def test_bf16_rows_are_added_on_request():
    """With --bf16 its row; without it no bf16 row: test_tiny_run_prints_the_table_and_the_profile."""
    text = main([*TINY_RUN, "--bf16"])
    row = next(line for line in text.splitlines() if "(`bf16`) |" in line)
    assert row.startswith("| shipped + bf16 autocast (bf16-mixed: numerics change)") and "vs `group`" in row
    assert "compile_bf16" not in text  # only with --compile


def _recording_forward(seen):
    forward = unet_module.UNetDecoder.forward

    def recording(self, *args, **kwargs):
        seen.append(unet_module.upsample_nearest)
        return forward(self, *args, **kwargs)

    return recording


def test_tiny_run_prints_the_table_and_the_profile(tmp_path):
    out = tmp_path / "speed.md"
    text = main([*TINY_RUN, "--profile", "group", "--out", str(out)])
    assert out.read_text() == text
    assert "| suite as shipped: instance norm run as GroupNorm(C, C) (`group`) |" in text
    assert "Peer rows skipped" in text
    assert "Profile of `group`" in text
    assert "(`bf16`)" not in text  # bf16 rows only with --bf16 (test_bf16_rows_are_added_on_request)


def test_profile_of_a_variant_not_run_is_refused(capsys):
    with pytest.raises(SystemExit):
        main([*TINY_RUN, "--profile", "compile"])
    assert "--profile compile: not among this run's variants" in capsys.readouterr().err
