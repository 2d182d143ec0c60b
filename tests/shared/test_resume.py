from tests.helpers import kill_and_resume


def test_hard_killed_run_resumes_at_same_step_and_finishes_all_epochs(tmp_path):
    # 16 images / batch 4 = 4 steps per epoch, 3 epochs = 12 steps; killed at step 6 (mid-epoch 2).
    args = ["--trainer.max_epochs", "3", "--trainer.enable_progress_bar", "false", "--data.n_train", "16"]
    killed, resumed = kill_and_resume(
        "tests.shared.tiny_main", args, tmp_path / "ckpt", tmp_path, kill_step=6
    )
    assert killed["global_step"] == 5  # saved after step 5; the kill came before step 6 was checkpointed
    assert resumed["global_step"] == 12
    assert resumed["epoch"] == 2  # the last (third) epoch, counted from zero
