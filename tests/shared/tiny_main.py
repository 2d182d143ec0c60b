"""``python -m tests.shared.tiny_main fit ...``: the suite CLI on the tiny squares task (for subprocess tests)."""

from shared.cli import run_cli
from tests.shared.tiny_task import SquaresDataModule, TinySegTask

if __name__ == "__main__":
    run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss")
