"""Likelihoods p(x|z): decoder output -> a distribution over the whole (flattened) image.

A likelihood is any object with

* ``params_per_pixel: int`` -- how many numbers the decoder emits per pixel (the decoder's output
  width is ``params_per_pixel * x_dim``);
* ``__call__(output) -> distribution`` with ``event_shape == (x_dim,)``;
* ``check_support(x)`` -- raise ``ValueError`` naming a fitting likelihood when ``x`` is outside the
  distribution's support, so a mismatch is caught before training and not as NaNs later;
* ``initial_bias(mean_image) -> Tensor`` -- a starting value for the decoder's output bias
  (``params_per_pixel * x_dim``,), so the untrained decoder already predicts the average image.

:class:`Likelihood` is a ``Protocol``: nothing needs to be subclassed.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import pyro.distributions as dist
import torch
from torch import Tensor

__all__ = ["Likelihood", "Bernoulli"]


@runtime_checkable
class Likelihood(Protocol):
    """What :class:`pvae.VAE` needs from a likelihood p(x|z)."""

    params_per_pixel: int

    def __call__(self, output: Tensor) -> dist.TorchDistribution:
        """:param output: decoder output, shape ``(..., params_per_pixel * x_dim)``.
        :returns: p(x|z) with ``event_shape == (x_dim,)``."""
        ...

    def check_support(self, x: Tensor) -> None:
        """Raise ``ValueError`` when data ``x`` of shape ``(N, x_dim)`` lies outside the support."""
        ...

    def initial_bias(self, mean_image: Tensor) -> Tensor:
        """:param mean_image: the training images' mean, shape ``(x_dim,)``.
        :returns: decoder output bias, shape ``(params_per_pixel * x_dim,)``."""
        ...


class Bernoulli:
    """p(x|z) = prod_d Bernoulli(x_d; sigmoid(logits_d)), for binarized images.

    The decoder emits logits; the output bias starts at logit(mean training image), as in
    Burda, Grosse & Salakhutdinov (2016), "Importance Weighted Autoencoders".
    """

    params_per_pixel = 1

    def __call__(self, output: Tensor) -> dist.TorchDistribution:
        """:param output: logits, shape ``(..., x_dim)``.
        :returns: independent Bernoullis, ``event_shape == (x_dim,)``."""
        return dist.Bernoulli(logits=output).to_event(1)

    def check_support(self, x: Tensor) -> None:
        """Refuse grey levels: a Bernoulli puts probability on 0 and 1 only."""
        if not bool(((x == 0) | (x == 1)).all()):
            raise ValueError(
                "the Bernoulli likelihood needs binary pixels (0 or 1), but the data has grey levels; "
                "binarize it (--binarization dynamic or static) or choose a likelihood for values in [0, 1]"
            )

    def initial_bias(self, mean_image: Tensor) -> Tensor:
        """logit of the mean image, clamped so that always-black pixels get a finite bias."""
        p = mean_image.clamp(1e-3, 1 - 1e-3)
        return torch.log(p) - torch.log1p(-p)

    def __repr__(self) -> str:
        return "Bernoulli()"
