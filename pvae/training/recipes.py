"""The papers' training recipes: the IWAE schedule of Burda et al. (2016) and its shortened forms.

Burda et al. (2016, section 5) train every model for 3,280 epochs in eight stages: stage
i = 0, ..., 7 lasts 3^i epochs at learning rate 1e-3 * 10^(-i/7), with Adam (epsilon 1e-4) and
minibatches of 20. ``--lr-schedule iwae`` is that schedule for any base ``--lr`` (the rate of stage
0), and ``--recipe iwae[:S]`` sets the paper's whole recipe with the first S stages (all eight by
default): the same shape, cut short after (3^S - 1) / 2 epochs.
"""

from __future__ import annotations

from typing import Any

from pvae.errors import ConfigError

__all__ = ["IWAE_STAGES", "iwae_stage", "iwae_lr_factor", "iwae_epochs", "recipe_fields", "RECIPES"]

#: Stages of the full IWAE schedule (3,280 epochs).
IWAE_STAGES = 8
RECIPES: tuple[str, ...] = ("iwae[:S]",)


def iwae_epochs(stages: int) -> int:
    """Epochs of the first ``stages`` stages: 3^0 + ... + 3^(stages-1) = (3^stages - 1) / 2.

    >>> [iwae_epochs(s) for s in range(1, 9)]
    [1, 4, 13, 40, 121, 364, 1093, 3280]
    """
    return (3**stages - 1) // 2


def iwae_stage(epoch: int) -> int:
    """The stage i of the 1-based ``epoch``: epochs 1, 2-4, 5-13, ... are stages 0, 1, 2, ...

    Past the paper's 3,280 epochs the stages go on in the same way (stage 8 is 3^8 epochs).

    >>> [iwae_stage(e) for e in (1, 2, 4, 5, 13, 14, 3280, 3281)]
    [0, 1, 1, 2, 2, 3, 7, 8]
    """
    if epoch < 1:
        raise ValueError(f"epochs count from 1, got {epoch}")
    stage = 0
    while epoch > iwae_epochs(stage + 1):
        stage += 1
    return stage


def iwae_lr_factor(epoch: int) -> float:
    """10^(-i/7) for the stage i of the 1-based ``epoch``: the learning rate is ``lr`` times this."""
    return 10.0 ** (-iwae_stage(epoch) / 7)


def recipe_fields(recipe: str) -> dict[str, Any]:
    """The :class:`~pvae.runs.config.TrainConfig` fields a recipe sets; flags given beside it win.

    ``iwae[:S]``: the schedule of Burda et al. (2016) with its first S stages (default 8, 3,280
    epochs), Adam at 1e-3 with epsilon 1e-4, batches of 20, and the paper's 400 validation images.

    :raises ConfigError: for an unknown recipe or a stage count outside 1..8.

    >>> recipe_fields("iwae:5")["epochs"]
    121
    """
    name, _, arg = recipe.partition(":")
    if name != "iwae":
        raise ConfigError(f"unknown recipe {recipe!r}; expected one of: {', '.join(RECIPES)}")
    if arg and (not arg.isdecimal() or not 1 <= int(arg) <= IWAE_STAGES):
        raise ConfigError(f"recipe iwae:S takes S, the number of stages to run, 1 to {IWAE_STAGES} "
                          f"(e.g. iwae:5 is 121 epochs); got {recipe!r}")
    stages = int(arg) if arg else IWAE_STAGES
    return {"lr_schedule": "iwae", "lr": 1e-3, "adam_eps": 1e-4, "batch_size": 20, "epochs": iwae_epochs(stages),
            "val_size": 400}
