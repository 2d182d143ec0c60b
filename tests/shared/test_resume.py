from pathlib import Path

from shared.cli import run_cli
from tests.helpers import kill_and_resume
from tests.shared.tiny_task import SquaresDataModule, TinySegTask

RUNS = []


def _tiny_main(args: list[str]):
    """tests/shared/tiny_main.py's command, in this process (kept in RUNS)."""
    RUNS.append(run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=args))


def test_hard_killed_run_resumes_at_same_step_and_finishes_all_epochs(tmp_path):
    # 16 images / batch 4 = 4 steps per epoch, 3 epochs = 12 steps; killed at step 6 (mid-epoch 2).
    # The kill is a real process's SIGKILL: a forked child of this one running the tiny command (a fresh
    # interpreter, tests/shared/tiny_main.py, would add only 3-5 s of imports). The resume reads only what it left on
    # disk, so it runs in this process.
    # the CPU: a forked child cannot start CUDA where an earlier test of this worker did
    args = ["--trainer.max_epochs", "3", "--trainer.enable_progress_bar", "false", "--data.n_train", "16"]
    args += ["--trainer.accelerator", "cpu"]
    # parsed here first (not run): the child and the resume then start from this process's warmed-up parser
    # (its first parse costs about 1 s, which each would have paid)
    run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=args, run=False)
    killed, resumed = kill_and_resume(
        None, args, tmp_path / "ckpt", tmp_path, 6, resume=_tiny_main, forked=True
    )
    assert killed["global_step"] == 5  # saved after step 5; the kill came before step 6 was checkpointed
    assert resumed["global_step"] == 12
    assert resumed["epoch"] == 2  # the last (third) epoch, counted from zero
    # and it went on from the killed run's file (a fresh run would reach step 12 too)
    assert Path(RUNS[-1].trainer.ckpt_path).resolve() == (tmp_path / "ckpt" / "last.ckpt").resolve()
