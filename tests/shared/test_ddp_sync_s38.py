"""DDP: the processes of one run decide alike (the time budget), ``ddp_spawn`` starts, and models with
parameters that get no gradient train under plain ``ddp``."""

from __future__ import annotations

import json
import logging
import os
import pickle
import socket
from datetime import timedelta
from types import SimpleNamespace as NS

import pytest
import pytorch_lightning as pl
import torch.distributed as dist
import torch.multiprocessing as mp
from pytorch_lightning.callbacks import Timer
from pytorch_lightning.strategies import DDPStrategy

from domains.medical.data import MedicalDataModule
from domains.medical.task import MedicalSegmentationTask
from shared.budget import FitScheduleToBudget
from shared.cli import find_unused_parameters_where_idle, run_cli
from tests.helpers import REPO, anomaly_task, medical_task, run_ddp_fit, tiny_medical_args
from tests.shared.tiny_task import TinySegTask

CONFIGS = REPO / "domains" / "medical" / "configs"

pytestmark = pytest.mark.usefixtures("one_thread")

# ------------------------------------------------------------------ 1: the time budget decides once for all


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HandTimer(Timer):
    """Lightning's ``max_time`` Timer whose elapsed time is ``elapsed``, set by the test."""

    def __init__(self, seconds: float):
        super().__init__(duration={"seconds": seconds}, interval="step")
        self.elapsed = 0.0

    def time_elapsed(self, stage: str = "train") -> float:
        return self.elapsed


def _budget_run(per_step: float, timer_at_start: float, follows_max_time: bool, strategy) -> dict:
    """Ten steps of a budget (a 60 s ``max_time``, checks every 4 steps) on a stand-in trainer whose steps
    take ``per_step`` s on both clocks; ``timer_at_start``: the seconds the Timer had counted when training
    began (the processes of one run start apart). Returns what the budget decided."""
    timer = HandTimer(60)
    timer.elapsed = timer_at_start
    now = [0.0]
    budget = FitScheduleToBudget(
        seconds=None if follows_max_time else 80, every=4, window=4, clock=lambda: now[0]
    )
    trainer = NS(global_step=0, fit_loop=NS(epoch_loop=NS(max_steps=100)), callbacks=[timer],
                 estimated_stepping_batches=100, strategy=strategy)  # fmt: skip
    module = NS(schedule_steps=100, lr_schedule=NS(follows_trainer=True))
    budget.on_train_start(trainer, module)
    for step in range(10):
        trainer.global_step = step
        budget.on_train_batch_start(trainer, module, None, step)
        now[0] += per_step
        timer.elapsed += per_step
        trainer.global_step = step + 1
        budget.on_train_batch_end(trainer, module, None, None, step)
    ends = {"max_steps": trainer.fit_loop.epoch_loop.max_steps, "schedule_steps": module.schedule_steps}
    return {"active": budget.active, "seconds": budget.seconds, "adjustments": budget.adjustments, **ends}


# rank 0: 4 s a step from a fresh Timer; rank 1 started 1.5 s later (a spawn, a slower import) and steps
# at 7 s. Alone, rank 1 would fit the schedule to 58.5 s (rank 0: 60), end it at step 8 (rank 0: 15) and
# check early at steps 9 and 10, its time running out before the next check (rank 0: not).
RANKS = {0: {"per_step": 4.0, "timer_at_start": 0.0}, 1: {"per_step": 7.0, "timer_at_start": 1.5}}
# rank 1's Timer already spent when training starts: alone it would not follow the time at all
SPENT = {0: {"per_step": 4.0, "timer_at_start": 59.0}, 1: {"per_step": 4.0, "timer_at_start": 60.0}}


def _scenarios(rank: int, strategy) -> dict:
    """What the budget decides in rank ``rank``'s process: with its own budget under a max_time, following the
    max_time, and following a max_time about spent."""
    return {
        "explicit": _budget_run(**RANKS[rank], follows_max_time=False, strategy=strategy),
        "max_time": _budget_run(**RANKS[rank], follows_max_time=True, strategy=strategy),
        "spent": _budget_run(**SPENT[rank], follows_max_time=True, strategy=strategy),
    }


def _budget_worker(rank: int, port: int, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # a short timeout: a collective one rank skips fails the test instead of hanging it
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=30))
    try:
        out[rank] = json.dumps(
            _scenarios(rank, DDPStrategy())
        )  # its broadcast, as a trainer's strategy runs it
    finally:
        dist.destroy_process_group()


def test_under_ddp_every_rank_takes_rank_zeros_budget_decisions():
    """Each process read its own clock: 2 CPU processes disagreed at 5 of 24 adjustments (schedule 332 vs 333
    steps: other LRs, weights drifting apart) and, where the end step differed, one stopped while the other
    waited in the next all-reduce. Now both take rank 0's decisions, which are those of one process."""
    with mp.Manager() as manager:
        out = manager.dict()
        # forked: the test process has imported torch and Lightning already (spawned, each child imports them)
        mp.start_processes(_budget_worker, args=(_free_port(), out), nprocs=2, start_method="fork")
        ranks = {rank: json.loads(record) for rank, record in out.items()}
    alone = json.loads(json.dumps([_scenarios(rank, None) for rank in (0, 1)]))  # tuples as JSON has them
    for scenario in ("explicit", "max_time", "spent"):  # each process alone decides otherwise
        assert alone[0][scenario] != alone[1][scenario], scenario
    assert ranks[0] == alone[0]
    assert ranks[1] == ranks[0]


# --------------------------------------------------------------------------------- 2: ddp_spawn starts


def test_a_domains_trainer_pickles_for_ddp_spawn(tmp_path, monkeypatch):
    """``--trainer.strategy ddp_spawn`` pickles the trainer, whose config callback holds the domain's parser:
    a parser class made inside a function failed every such command with "Can't pickle local object"."""
    from shared.cli import ConfigInCheckpoints
    from shared.cli_help import run_domain

    monkeypatch.chdir(tmp_path)
    tiny = "tests.shared.tiny_task"
    cli = run_domain(
        ["--trainer.logger", "false"],
        prog="tiny",
        description="",
        domain="tiny",
        run=False,
        task=f"{tiny}:TinySegTask",
        data=f"{tiny}:SquaresDataModule",
        monitor="val/loss",
    )
    (saver,) = [c for c in cli.trainer.callbacks if isinstance(c, ConfigInCheckpoints)]
    copy = pickle.loads(pickle.dumps(cli.trainer))
    (saver_copy,) = [c for c in copy.callbacks if isinstance(c, ConfigInCheckpoints)]
    assert type(saver.parser).__name__ == "SuggestingArgumentParser"  # the domains' own parser
    assert type(saver_copy.parser) is type(saver.parser)


@pytest.mark.slow
def test_a_ddp_spawn_fit_of_a_domain_runs(lidc, tmp_path):
    """The medical command under ddp_spawn on 2 CPU processes: a two-step fit of a tiny U-Net."""
    args = tiny_medical_args(lidc, CONFIGS / "unet.yaml", "unet", 2, "--trainer.max_steps", "2",
                             "--trainer.limit_val_batches", "1", "--trainer.logger", "false",
                             "--checkpoint.dirpath", str(tmp_path / "ckpt"))  # fmt: skip
    ranks = run_ddp_fit("domains.medical", args, tmp_path / "ranks", tmp_path, strategy="ddp_spawn")
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()


# ------------------------------------------------------------- 3: parameters without a gradient under ddp

TINY_HPU_NET = {"channels": [8, 8, 8], "latent_channels": [1, 1], "blocks_per_level": 1}


def _ddp_trainer(strategy: str) -> pl.Trainer:
    """A trainer of 2 CPU processes, not started (torch's DDP wraps the model only when a fit starts)."""
    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    return pl.Trainer(strategy=strategy, accelerator="cpu", devices=2, **quiet)


IDLE = {
    "HierarchicalProbUNet": lambda: medical_task("hpu_net", **TINY_HPU_NET),
    "AnomalySegmenter": lambda: anomaly_task(encoder="tiny_cnn", oe_weight=0.5),
}


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn", "auto"])
@pytest.mark.parametrize("named", list(IDLE))
def test_a_model_with_idle_parameters_runs_under_plain_ddp(named, strategy, caplog):
    """Their parameters that get no gradient in some steps (the HPU-Net's last posterior decoder level, the
    anomaly outlier head) stopped plain DDP at the second step, a 115-line traceback per process."""
    trainer = _ddp_trainer(strategy)
    with caplog.at_level(logging.INFO):
        find_unused_parameters_where_idle(trainer, IDLE[named](), strategy)
    assert trainer.strategy._ddp_kwargs["find_unused_parameters"] is True
    (line,) = [r.getMessage() for r in caplog.records if "find_unused_parameters=True" in r.getMessage()]
    assert line.startswith(f"--trainer.strategy {strategy}: DDP runs with find_unused_parameters=True")
    assert f"({named}: its " in line


def test_other_models_and_a_chosen_setting_keep_their_strategy():
    tiny = TinySegTask()
    plain = _ddp_trainer("ddp")
    find_unused_parameters_where_idle(plain, tiny, "ddp")  # every parameter has a gradient: nothing added
    assert plain.strategy._ddp_kwargs == {}
    chosen = _ddp_trainer("ddp_find_unused_parameters_false")
    hpu_net = IDLE["HierarchicalProbUNet"]()
    find_unused_parameters_where_idle(chosen, hpu_net, "ddp_find_unused_parameters_false")
    assert chosen.strategy._ddp_kwargs["find_unused_parameters"] is False


def test_the_cli_sets_it_for_the_hpu_net_config(lidc, tmp_path, monkeypatch):
    """The README's multi-GPU example: hpu_net.yaml under --trainer.strategy ddp (the fit built, not run)."""
    monkeypatch.chdir(tmp_path)
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    args = tiny_medical_args(lidc, CONFIGS / "hpu_net.yaml", "hpu_net", 2, "--trainer.logger", "false", *ddp)
    cli = run_cli(MedicalSegmentationTask, MedicalDataModule, domain="medical", monitor="val/ged", args=args,
                  run=False)  # fmt: skip
    assert cli.trainer.strategy._ddp_kwargs == {"find_unused_parameters": True}


@pytest.mark.slow
def test_a_hpu_net_fit_under_plain_ddp_runs(lidc, tmp_path):
    """Two processes on gloo, plain ``ddp``: the fit runs (the posterior's last decoder level, 20 parameters
    in hpu_net.yaml, never gets a gradient)."""
    args = tiny_medical_args(lidc, CONFIGS / "hpu_net.yaml", "hpu_net", 2, "--trainer.max_steps", "3",
                             "--trainer.limit_val_batches", "1", "--trainer.logger", "false",
                             "--checkpoint.dirpath", str(tmp_path / "ckpt"))  # fmt: skip
    ranks = run_ddp_fit("domains.medical", args, tmp_path / "ranks", tmp_path, strategy="ddp")
    assert [r["world_size"] for r in ranks] == [2, 2]
