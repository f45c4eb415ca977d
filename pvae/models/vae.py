"""The VAE as a probabilistic program: a Pyro ``model`` (generative) and ``guide`` (inference).

Graphical model, for N i.i.d. images (Kingma & Welling 2014, Figure 1)::

    theta -->  z_i --> x_i   <-- theta       i = 1..N   (solid: p_theta(z) p_theta(x|z))
               z_i <-- x_i   <-- phi                    (dashed: q_phi(z|x))
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import torch
from pyro.nn import PyroModule
from torch import Tensor, nn

from pvae.models.common import data_plate
from pvae.parts.guides import DiagonalPosterior, PosteriorFamily, central_value
from pvae.parts.likelihoods import Bernoulli, Likelihood
from pvae.parts.networks import mlp
from pvae.parts.priors import Prior, StandardNormal

__all__ = ["VAE"]


class VAE(PyroModule):
    """A variational autoencoder p_theta(z) p_theta(x|z) with amortized guide q_phi(z|x).

    :param x_dim: pixels per (flattened) image.
    :param z_dim: m, the latent dimension (any m >= 1).
    :param prior: p(z); default :class:`~pvae.parts.priors.StandardNormal` ``(z_dim)``.
    :param likelihood: p(x|z); default :class:`~pvae.parts.likelihoods.Bernoulli`.
    :param posterior: the posterior family q(z|x) the guide draws from; default
        :class:`~pvae.parts.guides.DiagonalPosterior` with the encoder widths ``hidden``.
    :param hidden: hidden widths of the encoder; the decoder mirrors them.
    :param activation: name in :data:`pvae.parts.networks.ACTIVATIONS`.
    :param num_data: N, the training-set size. A minibatch of B < N images is a subsample of the
        data plate, so SVI's loss estimates the whole-dataset ELBO (scaled by N / B). ``None`` makes
        the plate exactly as large as the batch.
    """

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        *,
        prior: Prior | None = None,
        likelihood: Likelihood | None = None,
        posterior: PosteriorFamily | None = None,
        hidden: Sequence[int] = (200, 200),
        activation: str = "tanh",
        num_data: int | None = None,
    ) -> None:
        super().__init__()
        if x_dim < 1 or z_dim < 1:
            raise ValueError(f"expected x_dim >= 1 and z_dim >= 1, got x_dim={x_dim}, z_dim={z_dim}")
        if num_data is not None and num_data < 1:
            raise ValueError(f"num_data is the training-set size and must be >= 1, got {num_data}")
        self.x_dim, self.z_dim, self.num_data = x_dim, z_dim, num_data
        self.prior = prior if prior is not None else StandardNormal(z_dim)
        self.likelihood = likelihood if likelihood is not None else Bernoulli()
        self.posterior = posterior if posterior is not None else DiagonalPosterior(x_dim, z_dim, hidden, activation)
        for name, part in (("prior", self.prior), ("posterior", self.posterior)):
            if getattr(part, "z_dim", z_dim) != z_dim:
                raise ValueError(f"expected a {name} over z_dim={z_dim}, got one with z_dim={part.z_dim}")
        self.decoder = mlp(z_dim, tuple(reversed(hidden)), self.likelihood.params_per_pixel * x_dim, activation)

    label_mode = "none"

    def model(self, x: Tensor) -> None:
        """p_theta(z) p_theta(x|z) for a batch of images.

        :param x: observed images, shape ``(batch, x_dim)``.
        """
        with data_plate(x, self.num_data):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    def guide(self, x: Tensor) -> None:
        """q_phi(z|x), the posterior family's distribution, reparameterized (e.g. z = loc + scale * eps).

        :param x: observed images, shape ``(batch, x_dim)``.
        """
        with data_plate(x, self.num_data):
            pyro.sample("z", self.posterior(x))

    @property
    def encoder(self) -> nn.Module:
        """The posterior family's network (for the default family, x -> (loc, scale) of q(z|x))."""
        return self.posterior.encoder  # type: ignore[union-attr]

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Mean of p(x|z) at z = the posterior mean of q(z|x) (for a flow guide, the flow's image of
        its base mean; see :func:`~pvae.parts.guides.central_value`).

        :param x: ``(batch, x_dim)``.
        :returns: ``(batch, x_dim)``.
        """
        return self.likelihood(self.decoder(central_value(self.posterior(x)))).mean

    @torch.no_grad()
    def generate(self, num_samples: int) -> Tensor:
        """Means of p(x|z) for z drawn from the prior.

        :returns: ``(num_samples, x_dim)``.
        """
        z = self.prior().sample((num_samples,))
        return self.likelihood(self.decoder(z)).mean
