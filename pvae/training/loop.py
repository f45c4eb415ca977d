"""The loop of stochastic variational inference: epochs of minibatch steps on an objective.

Like NumPyro's ``SVI.run``, :func:`fit` takes the model, the objective, the optimizer and the data,
and returns what it measured; it reads no run configuration and writes no file. What a run does
between epochs (validation, checkpoints, early stopping, printing) is the caller's, through two
callbacks. Each epoch draws, from one generator and in this order, the permutation of the images
and then, where the data rule asks, a fresh binarization or dequantization of them: the same draws
in the same order make a resumed run continue bit for bit.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import torch
from torch import Tensor

from pvae.data import dequantize
from pvae.distributed import SINGLE, GradientBucket, World
from pvae.protocol import GraphicalModel
from pvae.training.objectives import Objective
from pvae.training.warmup import WeightedObjective

__all__ = ["RESAMPLING", "TrainingDivergedError", "fit", "train_epoch", "epoch_images"]

#: How each epoch's images are drawn from the given ones: ``none`` (as given: grey levels, or a
#: static binarization), ``binarize`` (a fresh Bernoulli draw of the grey levels; dynamic
#: binarization) or ``dequantize`` ((255 x + u) / 256 with fresh u ~ U(0, 1)).
RESAMPLING: tuple[str, ...] = ("none", "binarize", "dequantize")


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite; the run folder keeps its last good checkpoint.

    :ivar epoch: the 1-based epoch in which it happened, when known.
    """

    def __init__(self, message: str, *, epoch: int | None = None) -> None:
        super().__init__(message)
        self.epoch = epoch


def epoch_images(x: Tensor, resample: str, generator: torch.Generator) -> Tensor:
    """One epoch's training images ``(N, x_dim)``, drawn from ``x`` by the rule ``resample``
    (:data:`RESAMPLING`) with ``generator``; ``none`` returns ``x`` itself and draws nothing."""
    if resample == "binarize":
        return torch.bernoulli(x, generator=generator)
    if resample == "dequantize":
        return dequantize(x, generator)
    if resample != "none":
        raise ValueError(f"expected resample in {', '.join(RESAMPLING)}, got {resample!r}")
    return x


def fit(
    model: GraphicalModel,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    x: Tensor,
    *,
    epochs: range,
    batch_size: int,
    generator: torch.Generator,
    rows: Tensor | None = None,
    resample: str = "none",
    y: Tensor | None = None,
    labelled: Tensor | None = None,
    kl_weights: Callable[[int, int], float] | None = None,
    validate: Callable[[], float] = lambda: math.nan,
    on_epoch: Callable[[list[dict[str, float]]], bool] = lambda metrics: False,
    metrics: Sequence[dict[str, float]] = (),
    world: World = SINGLE,
    progress: bool = False,
) -> list[dict[str, float]]:
    """Run SVI for ``epochs``, one scheduler step after each, and return the metrics of every epoch.

    Each epoch: the order of ``rows`` permuted with ``generator``, the epoch's images drawn
    (:func:`epoch_images`), one pass of :func:`train_epoch`, the learning rate's step, then
    ``validate()`` with the model in eval mode, and ``on_epoch(metrics)``.

    :param x: the training images ``(N, x_dim)``: the grey levels when ``resample`` draws from them,
        else the very images to train on.
    :param epochs: the 1-based epochs to run, ``range(first, last + 1)`` (``last`` is shown as the total).
    :param batch_size: B, images per step.
    :param generator: the data stream: each epoch's order and resampling, and M2's labelled minibatches.
    :param rows: the indices of ``x`` each epoch steps through ``(N_fit,)``; default all N (a
        semi-supervised model steps through its unlabelled images).
    :param resample: how each epoch's images are drawn (:data:`RESAMPLING`).
    :param y: classes of all N images ``(N,)``, passed with each minibatch to a class-conditional model.
    :param labelled: for a semi-supervised model, the indices of its labelled images ``(N_l,)``:
        the objective's labelled images are set to this epoch's draw of them.
    :param kl_weights: ``(global step, steps per epoch) -> w``, the weight of the latent sites at each
        1-based step (KL warm-up, beta) for a :class:`~pvae.training.warmup.WeightedObjective`;
        ``None`` trains the ELBO itself (w = 1).
    :param validate: the validation ELBO after each epoch, nats per image (``nan`` without one).
    :param on_epoch: called with all metrics so far after each epoch (checkpoint, printing);
        returns ``True`` to stop (early stopping).
    :param metrics: the rows of epochs already run (a resumed run's), which the result continues.
    :param world: the processes of a distributed run (:mod:`pvae.distributed`).
    :param progress: show a progress bar per epoch (on rank 0).
    :returns: one row per epoch: ``epoch``, ``train_elbo`` and ``val_elbo`` (nats per image),
        ``lr`` (the epoch's rate), ``kl_weight`` (its last step's w) and ``seconds``.
    :raises TrainingDivergedError: when the loss becomes non-finite, naming the epoch and step.
    """
    from tqdm.auto import tqdm  # only the training loop needs it

    rows = torch.arange(x.shape[0], device=x.device) if rows is None else rows
    steps = math.ceil(rows.shape[0] / batch_size)
    metrics = [dict(row) for row in metrics]
    for epoch in epochs:
        tic = time.perf_counter()
        model.train()
        order = rows[torch.randperm(rows.shape[0], generator=generator, device=rows.device)]
        x_epoch = epoch_images(x, resample, generator)
        if labelled is not None:
            objective.x_labelled = x_epoch[labelled]  # this epoch's draw of the labelled images
        weights = ([kl_weights((epoch - 1) * steps + s, steps) for s in range(1, steps + 1)]
                   if kl_weights is not None else None)
        bar = tqdm(total=steps, desc=f"epoch {epoch}/{epochs.stop - 1}", disable=not (progress and world.main),
                   leave=False)
        try:
            train_elbo = train_epoch(model, objective, optimizer, x_epoch, order, batch_size, y=y, progress=bar,
                                     kl_weights=weights, world=world)
        except TrainingDivergedError as err:
            raise TrainingDivergedError(f"training diverged in epoch {epoch}: {err}", epoch=epoch) from None
        finally:
            bar.close()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        model.eval()
        val_elbo = validate()
        metrics.append({"epoch": epoch, "train_elbo": train_elbo, "val_elbo": val_elbo, "lr": lr,
                        "kl_weight": weights[-1] if weights else 1.0, "seconds": time.perf_counter() - tic})
        if on_epoch(metrics):
            break
    return metrics


def train_epoch(
    vae: GraphicalModel,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    order: Tensor,
    batch_size: int,
    *,
    y: Tensor | None = None,
    progress: Any = None,
    kl_weights: Sequence[float] | None = None,
    world: World = SINGLE,
) -> float:
    """One pass of SVI over the training images.

    :param objective: anything with Pyro's ``differentiable_loss(model, guide, x, ...)``.
    :param x: training images ``(N, x_dim)``, already binarized for this epoch.
    :param order: indices into ``x`` (a permutation of ``range(N)``, or of the unlabelled images
        for a semi-supervised model); minibatches are its consecutive slices.
    :param y: classes of all N images ``(N,)``, passed with each minibatch to a class-conditional model.
    :param progress: a tqdm bar to advance (``update(1)`` per step), or ``None``.
    :param kl_weights: for a :class:`~pvae.training.warmup.WeightedObjective`, the weight of the latent sites
        at each step of the epoch (KL warm-up, beta).
    :param world: the processes of a distributed run (:mod:`pvae.distributed`): each step's
        minibatch is ``batch_size`` images of ``order`` in all, of which this rank takes its share,
        and the gradients are combined across ranks before the step.
    :returns: the mean over steps of the minibatch estimate of the per-image ELBO (nats), the true
        ELBO (unweighted) whatever the weights; in a distributed run, of the global minibatches.
    """
    elbo_sum = torch.zeros((), device=x.device)
    steps = 0
    bucket = GradientBucket(vae.parameters(), world) if world.distributed else None
    with warnings.catch_warnings():
        # Pyro warns on a NaN loss; the check below stops training with a clearer message instead.
        warnings.filterwarnings("ignore", message="Encountered NaN", category=UserWarning)
        for start in range(0, order.shape[0], batch_size):
            steps += 1
            rows = order[start : start + batch_size]
            if kl_weights is not None:
                objective.weight = kl_weights[steps - 1]
            if world.distributed:
                if hasattr(objective, "global_batch"):  # M2: its labelled minibatch is shared alike
                    objective.global_batch, objective.world = rows.shape[0], world
                local = world.share(rows)
                args = (x[local],) if y is None else (x[local], y[local])
                _distributed_step(vae, objective, optimizer, args, steps, start, elbo_sum, bucket,
                                  share=local.shape[0] / rows.shape[0])
            else:
                args = (x[rows],) if y is None else (x[rows], y[rows])
                _svi_step(vae, objective, optimizer, args, steps, start, elbo_sum)
            if progress is not None:
                progress.update(1)
                if steps % 50 == 0:
                    progress.set_postfix(elbo=f"{elbo_sum.item() / steps:.2f}")
    return elbo_sum.item() / steps


def _minibatch_loss(vae: GraphicalModel, objective: Objective, args: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    """The loss of the minibatch ``args`` (images, and labels when the model takes them) and its
    estimate of the per-image ELBO, detached: the true ELBO even when the objective is weighted."""
    num_data = max(vae.num_data or 0, args[0].shape[0])  # the data plate's size, see pvae.models.common.data_plate
    # The data's support was checked once before training; re-validating every distribution's
    # arguments at every step costs ~7% of a CPU step and finds nothing new.
    with pyro.validation_enabled(False):
        # A weighted objective (KL warm-up, beta) reports the true ELBO, from the same draws as its step.
        reported = (objective.unweighted_loss(vae.model, vae.guide, *args)
                    if isinstance(objective, WeightedObjective) and objective.weight != 1.0 else None)
        loss = objective.differentiable_loss(vae.model, vae.guide, *args)
    # The loss estimates -N * (per-image ELBO): the data plate scales the batch by N / B. M2's
    # classification term is part of the objective, not of the ELBO it reports.
    auxiliary = getattr(objective, "auxiliary", None)
    value = loss.detach() if reported is None else reported
    return loss, -(value if auxiliary is None else value - auxiliary) / num_data


def _svi_step(
    vae: GraphicalModel, objective: Objective, optimizer: torch.optim.Optimizer, args: tuple[Tensor, ...], step: int,
    start: int, elbo_sum: Tensor,
) -> None:
    """One gradient step on the minibatch ``args`` (images, and labels when the model takes them);
    adds its per-image ELBO estimate to ``elbo_sum`` in place."""
    loss, elbo = _minibatch_loss(vae, objective, args)
    if not torch.isfinite(loss):
        # Stop before the step: one NaN gradient would spoil every parameter for good.
        raise TrainingDivergedError(
            f"the loss became {loss.item()} at step {step} (images {start}..{start + len(args[0]) - 1} of this "
            "epoch's order)"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    elbo_sum += elbo  # summed on the device: GPU steps stay free of host synchronisation


def _distributed_step(
    vae: GraphicalModel, objective: Objective, optimizer: torch.optim.Optimizer, args: tuple[Tensor, ...], step: int,
    start: int, elbo_sum: Tensor, bucket: GradientBucket, *, share: float,
) -> None:
    """:func:`_svi_step` on this rank's ``share`` (B_r / B) of a global minibatch: the gradients and
    the ELBO estimate are sum_r share_r * (rank r's), combined in one all-reduce before the step."""
    bucket.zero_()
    elbo = torch.zeros((), device=elbo_sum.device)
    if args[0].shape[0] > 0:  # a last minibatch smaller than the world leaves some ranks without images
        loss, elbo = _minibatch_loss(vae, objective, args)
        if torch.isfinite(loss):
            (loss * share).backward()  # the share weights the gradient as it is computed
        else:
            elbo = torch.full((), math.nan, device=elbo_sum.device)
    bad = (~torch.isfinite(elbo)).to(elbo.dtype)
    total, nonfinite = bucket.all_reduce(torch.stack([elbo.nan_to_num(0.0) * share, bad]))
    if nonfinite > 0:
        world = bucket.world
        raise TrainingDivergedError(f"the loss became non-finite at step {step} on {int(nonfinite)} of {world.size} "
                                    f"processes (images {start}.. of this epoch's order)")
    optimizer.step()
    elbo_sum += total
