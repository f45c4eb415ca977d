"""KL warm-up and beta, the Pyro way: the latent sites' log-densities scaled by a weight w.

With the latents' scores scaled, Pyro's ELBO of a model p(z) p(x|z) and guide q(z|x) becomes

    E_q[log p(x|z)] + w * E_q[log p(z) - log q(z|x)]  =  reconstruction - w * KL(q(z|x) || p(z)),

the objective of KL warm-up (w rising from near 0 to 1; Sonderby et al. 2016) and of the beta-VAE
(w = beta; Higgins et al. 2017), for any graphical model: every latent site (not observed) of the
model and the guide is scaled, at every layer, whatever its name. :class:`LatentScale` is
``poutine.scale`` restricted to those sites; nothing of the loss is rewritten. The ELBO a weighted
run reports is always the true one (w = 1), computed on the same draws as the step
(:meth:`WeightedObjective.unweighted_loss`).
"""

from __future__ import annotations

from typing import Any

import torch
from pyro.poutine.scale_messenger import ScaleMessenger
from torch import Tensor

from pvae.devices import forked_rng

__all__ = ["LatentScale", "WeightedObjective", "kl_weight"]


class LatentScale(ScaleMessenger):
    """``poutine.scale`` of the latent sites only: observed sites keep their score.

    :param scale: the weight w, a positive number or a scalar tensor (a tensor is what a traced
        ELBO takes as an input, so that one trace serves every weight).
    """

    def _process_message(self, msg: Any) -> None:
        if not msg["is_observed"]:
            super()._process_message(msg)


def kl_weight(step: int, steps_per_epoch: int, *, warmup_epochs: int, beta: float) -> float:
    """The weight w of the 1-based global ``step``: beta * min(1, step / (warmup_epochs * steps_per_epoch)).

    Warm-up rises linearly step by step, from beta / (its number of steps) at the first step (a
    scale of exactly 0 would drop the latents' scores, which Pyro refuses) to beta at the last step
    of epoch ``warmup_epochs``; without warm-up (0 epochs) w is beta throughout.

    >>> kl_weight(1, 100, warmup_epochs=2, beta=1.0), kl_weight(100, 100, warmup_epochs=2, beta=1.0)
    (0.005, 0.5)
    """
    if step < 1:
        raise ValueError(f"steps count from 1, got {step}")
    if warmup_epochs == 0:
        return beta
    return beta * min(1.0, step / (warmup_epochs * steps_per_epoch))


class WeightedObjective:
    """An objective whose latent sites are weighted by ``weight``, set before each step.

    :param objective: the objective a step calls (a Pyro ELBO, a :class:`~pvae.training.compiled.TracedELBO`,
        the semi-supervised objective): anything with ``differentiable_loss(model, guide, *args)``.
    :ivar weight: w of the next step; at exactly 1 the objective runs unweighted.
    """

    def __init__(self, objective: Any) -> None:
        self.objective = objective
        self.weight = 1.0

    @property
    def auxiliary(self) -> Tensor | None:
        """The inner objective's term that the reported ELBO leaves out (M2's classifier), if any."""
        return getattr(self.objective, "auxiliary", None)

    def __setattr__(self, name: str, value: Any) -> None:
        # What a step sets on M2's objective (the epoch's labelled images, a distributed share) is the
        # inner objective's.
        if name not in ("objective", "weight") and hasattr(self.objective, name):
            setattr(self.objective, name, value)
        else:
            super().__setattr__(name, value)

    def differentiable_loss(self, model: Any, guide: Any, *args: Tensor) -> Tensor:
        """The weighted loss, -(reconstruction - w * KL) scaled as the data plate scales it."""
        return self._loss(self.weight, model, guide, args)

    def unweighted_loss(self, model: Any, guide: Any, *args: Tensor) -> Tensor:
        """The true loss (w = 1), detached, on the draws the next step will make: the random
        streams (and the semi-supervised objective's data stream) are left as they were."""
        generator = getattr(self.objective, "generator", None)
        saved = generator.get_state() if generator is not None else None
        # With gradients on, though none is taken: TraceEnum_ELBO (M2) refuses a loss without them.
        with forked_rng(args[0].device):
            loss = self._loss(1.0, model, guide, args)
        if generator is not None:
            generator.set_state(saved)
        return loss.detach()

    def _loss(self, weight: float, model: Any, guide: Any, args: tuple[Tensor, ...]) -> Tensor:
        if weight == 1.0:
            return self.objective.differentiable_loss(model, guide, *args)
        scale = torch.tensor(weight, device=args[0].device)
        traced_scale = getattr(self.objective, "differentiable_loss_scaled", None)
        if traced_scale is not None:  # a TracedELBO: the weight is an input of its recorded graph
            return traced_scale(scale, model, guide, *args)
        with LatentScale(scale):
            return self.objective.differentiable_loss(model, guide, *args)
