"""The importance-weighted bound as a training objective (Burda, Grosse & Salakhutdinov 2016,
"Importance Weighted Autoencoders").

.. math::

    \\mathcal{L}_K = \\frac{N}{B} \\sum_{i \\in \\text{batch}} \\log \\frac{1}{K} \\sum_{k=1}^K
        \\frac{p(x_i, z_{ik})}{q(z_{ik} \\mid x_i)}, \\qquad z_{ik} \\sim q(z \\mid x_i)

The minibatch scale N / B multiplies each image's bound, outside the logarithm, so that the loss is
an unbiased estimate of the whole training set's bound. Pyro's ``RenyiELBO(alpha=0)`` equals this
bound only without subsampling: it applies the scale to each log-density before the log-sum-exp,
which for B < N computes :math:`\\log \\frac{1}{K} \\sum_k w_{ik}^{N/B}` instead (shown by
``tests/inference/test_iwae.py``). Hence this class.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from pyro.infer import ELBO
from pyro.poutine import Trace
from torch import Tensor

from pvae.inference.importance import LogWeights, log_importance_weights

__all__ = ["IWAE_ELBO"]


class IWAE_ELBO(ELBO):
    """The IWAE bound with K particles, usable wherever Pyro's ``Trace_ELBO`` is (``SVI``,
    ``differentiable_loss``).

    The gradient is the reparameterized one of Burda et al. (2016), eq. 13: every latent site of the
    guide must be drawn with ``rsample``. With K = 1 the bound is the ELBO and the loss equals
    ``Trace_ELBO``'s on the same draw.

    :param num_particles: K >= 1, importance samples per image, drawn in one vectorized pass.
    :param data_plate: name of the plate over images in model and guide.
    :param max_plate_nesting: plates nested in the model (default 1: only the data plate); the
        particles take the dimension to their left.
    """

    def __init__(self, num_particles: int, *, data_plate: str = "data", max_plate_nesting: int = 1) -> None:
        if not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"num_particles must be an integer K >= 1, got {num_particles!r}")
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting, vectorize_particles=True)
        # Pyro's ELBO adds the particles' plate to max_plate_nesting when K > 1; keep the model's own count.
        self.model_plate_nesting = max_plate_nesting
        self.data_plate = data_plate

    def _log_weights(self, model: Callable[..., Any], guide: Callable[..., Any], args: Any, kwargs: Any) -> LogWeights:
        return log_importance_weights(
            model, guide, *args, num_particles=self.num_particles, data_plate=self.data_plate,
            max_plate_nesting=self.model_plate_nesting, enumerate_discrete=False, **kwargs,
        )

    def _get_trace(self, model: Callable[..., Any], guide: Callable[..., Any], args: Any, kwargs: Any) -> tuple[Trace, Trace]:
        """The model and guide traces of one vectorized draw of all K particles."""
        weights = self._log_weights(model, guide, args, kwargs)
        return weights.model_trace, weights.guide_trace

    def differentiable_loss(self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any) -> Tensor:
        """-L_K, the negative bound summed over the minibatch and scaled by N / B.

        :param args: ``x`` (the images, ``(batch, ...)``) and whatever else model and guide take.
        :returns: a scalar to minimize; divided by N it is minus the per-image bound.
        """
        weights = self._log_weights(model, guide, args, kwargs)
        for name, site in weights.guide_trace.nodes.items():
            if site["type"] == "sample" and not site["is_observed"] and not site["fn"].has_rsample:
                raise ValueError(
                    f"IWAE_ELBO needs reparameterized draws, but the guide's site {name!r} uses "
                    f"{type(site['fn']).__name__}, which has no rsample"
                )
        bound = weights.log_weights.logsumexp(0) - math.log(self.num_particles)  # (batch,)
        return -weights.scale * bound.sum()

    def loss(self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
        """-L_K as a float, without gradients."""
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
        """-L_K as a float, after back-propagating it into the parameters (for ``pyro.infer.SVI``)."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward(retain_graph=self.retain_graph)
        return loss.item()
