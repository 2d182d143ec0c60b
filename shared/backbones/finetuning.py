"""Freeze / unfreeze of a backbone as a Lightning callback, apart from :mod:`shared.backbones.weights` so that
the backbones and the plain networks import without Lightning (a slim inference image has none)."""

from __future__ import annotations

from pytorch_lightning.callbacks import BaseFinetuning
from torch import nn


class BackboneFreezeUnfreeze(BaseFinetuning):
    """Freeze the backbone for the first ``unfreeze_at_epoch`` epochs, then train it with ``lr * lr_factor``.

    Lightning's ``BackboneFinetuning`` expects ``pl_module.backbone``; this one takes a dotted path
    (``backbone_attr``) because the suite's backbones sit inside plain ``nn.Module`` models. Two things differ
    from ``BaseFinetuning.freeze``, which normalises frozen BatchNorm with each training batch's statistics but
    evaluates with the file's running ones (layer-4 features 119 % apart on one batch, so the head learnt on
    one distribution and was validated on another): frozen BatchNorm modules are put in eval mode, using and
    keeping the transferred statistics, as :class:`FreezableBackbone` does (Lightning restores each module's own
    mode after validation, so they stay there). And ``fit --ckpt_path last`` past
    the unfreeze resumes with a trainable backbone (Lightning restores its parameter group, not its
    ``requires_grad``) and a scheduler that knows the group.

    An optimizer built on all parameters (``AdamW(self.parameters())``, not only those with ``requires_grad``)
    holds the frozen backbone in the head's group: at the unfreeze it moves to a group of its own at
    ``lr * lr_factor`` (it trained at the full rate). The schedulers get the group
    (:func:`_extend_schedulers`).
    """

    def __init__(
        self, backbone_attr: str = "model.backbone", unfreeze_at_epoch: int = 1, lr_factor: float = 0.1
    ):
        super().__init__()
        self.backbone_attr = backbone_attr
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.lr_factor = lr_factor
        self._frozen_norms: list[nn.Module] = []

    def freeze_before_training(self, pl_module) -> None:
        backbone = pl_module.get_submodule(self.backbone_attr)
        self.freeze(backbone, train_bn=False)
        for adapter in backbone.adapter_modules():  # no pretrained file holds them: they train from the start
            self.make_trainable(adapter)
        self._frozen_norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for norm in self._frozen_norms:
            norm.track_running_stats = True  # Lightning's freeze turns them off: eval mode then reads them
            norm.eval()

    def on_fit_start(self, trainer, pl_module) -> None:
        super().on_fit_start(trainer, pl_module)  # a resumed run: the backbone's parameter group is back
        for optimizer in trainer.optimizers:  # before the scheduler's state loads, with one lambda per group
            _extend_schedulers(pl_module, optimizer, self.lr_factor)

    def finetune_function(self, pl_module, current_epoch: int, optimizer) -> None:
        backbone = pl_module.get_submodule(self.backbone_attr)
        if current_epoch < self.unfreeze_at_epoch or all(p.requires_grad for p in backbone.parameters()):
            return
        adapters = {id(p) for adapter in backbone.adapter_modules() for p in adapter.parameters()}
        frozen = [p for p in backbone.parameters() if id(p) not in adapters]  # the adapters train already
        ids = {id(p) for p in frozen}
        # a group holding them among other parameters: an optimizer built on all parameters. A group of the
        # backbone alone is left as it is: resumed past the unfreeze (Lightning restored the group added here),
        # or the user's own
        shared = [
            group
            for group in optimizer.param_groups
            if any(id(p) in ids for p in group["params"]) and not all(id(p) in ids for p in group["params"])
        ]
        for group in shared:
            group["params"] = [p for p in group["params"] if id(p) not in ids]
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        self.make_trainable(backbone)
        if joining := [p for p in frozen if id(p) not in in_optimizer]:
            # the hyper-parameters of the group they leave (weight decay, betas), the rate at lr_factor
            settings = {k: shared[0][k] for k in optimizer.defaults if shared and k in shared[0]}
            lr = optimizer.param_groups[0]["lr"] * self.lr_factor
            optimizer.add_param_group({**settings, "params": joining, "lr": lr})
            _extend_schedulers(pl_module, optimizer, self.lr_factor)
        if shared:  # Lightning's record of the groups, which a resumed run restores, held the backbone twice
            self._internal_optimizer_metadata.pop(pl_module.trainer.optimizers.index(optimizer), None)
        for norm in self._frozen_norms:
            norm.train(pl_module.training)
        self._frozen_norms = []


#: what torch's schedulers keep per parameter group, in the group (OneCycleLR's ``max_lr``, CyclicLR's
#: momenta) and in lists of their own (LambdaLR's ``lr_lambdas``); True: a learning rate, at ``lr_factor`` for
#: the backbone
_SCHEDULER_GROUP_KEYS = {
    "initial_lr": True, "max_lr": True, "min_lr": True, "max_momentum": False, "base_momentum": False,
}  # fmt: skip
_SCHEDULER_LISTS = {
    "base_lrs": True, "max_lrs": True, "lr_lambdas": False, "base_momentums": False, "max_momentums": False,
}  # fmt: skip


def _extend_schedulers(pl_module, optimizer, lr_factor: float) -> None:
    """Give a step scheduler built before the unfreeze (e.g. ``BaseTask``'s cosine ``LambdaLR``) the new group:
    its lists hold one entry per group at construction, and torch's ``step`` then fails ("zip() argument 2 is
    shorter"); OneCycleLR reads its ``max_lr`` and ``min_lr`` from each group (a bare ``KeyError: 'max_lr'``).
    The backbone follows the same schedule at ``lr_factor`` times the first group's rates; the schedulers of a
    SequentialLR or ChainedScheduler each get it."""
    for config in getattr(pl_module.trainer, "lr_scheduler_configs", []):
        for scheduler in (config.scheduler, *getattr(config.scheduler, "_schedulers", ())):
            if getattr(scheduler, "optimizer", None) is not optimizer or not hasattr(scheduler, "base_lrs"):
                continue
            known, first = len(scheduler.base_lrs), optimizer.param_groups[0]
            added = len(optimizer.param_groups) - known
            for group in optimizer.param_groups[known:]:
                for key, is_lr in _SCHEDULER_GROUP_KEYS.items():
                    if key in first:
                        group[key] = first[key] * lr_factor if is_lr else first[key]
            for name, is_lr in _SCHEDULER_LISTS.items():
                values = getattr(scheduler, name, None)
                if isinstance(values, list) and len(values) == known:
                    values.extend([values[0] * lr_factor if is_lr else values[0]] * added)
