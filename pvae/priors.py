"""Priors p(z) over the latent code.

A prior is any object that, called with no arguments, returns a Pyro distribution over z with
``event_shape == (z_dim,)`` and ``batch_shape == ()``; the data plate in :meth:`pvae.VAE.model`
broadcasts it over the images. Priors with learned parameters are ``torch.nn.Module`` s so that
they move with the model and are saved in its ``state_dict``; plain objects work too
(:class:`Prior` is a ``Protocol``, nothing needs to be subclassed).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import pyro.distributions as dist
import torch
from torch import nn

__all__ = ["Prior", "StandardNormal"]


@runtime_checkable
class Prior(Protocol):
    """What :class:`pvae.VAE` needs from a prior: a distribution over z, event dimension folded in."""

    z_dim: int

    def __call__(self) -> dist.TorchDistribution:
        """:returns: p(z), ``batch_shape == ()``, ``event_shape == (z_dim,)``."""
        ...


class StandardNormal(nn.Module):
    """p(z) = N(0, I_m), the prior of Kingma & Welling (2014), "Auto-Encoding Variational Bayes".

    :param z_dim: m, the dimension of the latent code (m >= 1).
    """

    def __init__(self, z_dim: int) -> None:
        super().__init__()
        if z_dim < 1:
            raise ValueError(f"z_dim must be a positive integer, got {z_dim}")
        self.z_dim = z_dim
        # Buffers, not parameters: this prior is fixed, but it must follow the model's device.
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.ones(z_dim))

    def forward(self) -> dist.TorchDistribution:
        """:returns: N(0, I_m) with ``event_shape == (z_dim,)``."""
        return dist.Normal(self.loc, self.scale).to_event(1)

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}"
