"""The learning rate over epochs: constant, cosine, exponential, or the IWAE schedule of Burda et
al. (2016), as a ``torch.optim.lr_scheduler`` stepped once per epoch."""

from __future__ import annotations

import torch

from pvae.training.recipes import iwae_lr_factor

__all__ = ["LR_SCHEDULES", "make_scheduler"]

LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine", "exponential", "iwae")


def make_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, *, epochs: int, lr: float, lr_decay: float
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule named ``schedule``, stepped once at the end of every epoch.

    :param schedule: ``constant``; ``cosine`` (from ``lr`` down to ``lr / 100`` over ``epochs``);
        ``exponential`` (times ``lr_decay`` each epoch); ``iwae`` (stage i of 3^i epochs at
        ``lr * 10^(-i/7)``, :func:`~pvae.training.recipes.iwae_lr_factor`).
    :param epochs: the run's epochs (the cosine's period).
    :param lr: the optimizer's base learning rate.
    :param lr_decay: the exponential schedule's factor, in (0, 1].
    :raises ValueError: for an unknown schedule.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"expected a schedule in {', '.join(LR_SCHEDULES)}, got {schedule!r}")
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=lr / 100)
    if schedule == "iwae":
        # LambdaLR's factor is of epochs done (0 for the first epoch): the 1-based epoch is one more.
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda done: iwae_lr_factor(done + 1))
    gamma = lr_decay if schedule == "exponential" else 1.0
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
