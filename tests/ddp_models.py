"""A model whose ELBO has no Monte-Carlo noise, for comparing distributed and one-process training.

The guide is a point mass q(z|x) = delta(encoder(x)), so the loss (log p(z) + log p(x|z) at the
encoder's z, scaled by the data plate) is a deterministic function of the minibatch: one process
and P processes sharing the same minibatches must reach the same parameters up to float rounding.
Named by import path (``ddp_models:PointMassVAE``) in the tests that launch torchrun.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from pvae.models.common import data_plate


class PointMassVAE(nn.Module):
    """z ~ N(0, I_m), x | z ~ Bernoulli(decoder(z)); guide: z = encoder(x), a point mass."""

    def __init__(self, x_dim: int, num_data: int, z_dim: int = 3, hidden: int = 16) -> None:
        super().__init__()
        self.x_dim, self.num_data, self.z_dim = x_dim, num_data, z_dim
        self.encoder = nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh(), nn.Linear(hidden, z_dim))
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, x_dim))

    def model(self, x: Tensor) -> None:
        pyro.module("decoder", self.decoder)
        with data_plate(x, self.num_data):
            z = pyro.sample("z", dist.Normal(torch.zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x: Tensor) -> None:
        pyro.module("encoder", self.encoder)
        with data_plate(x, self.num_data):
            pyro.sample("z", dist.Delta(self.encoder(x)).to_event(1))
