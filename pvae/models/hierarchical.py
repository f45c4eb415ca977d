"""Two stochastic layers, z2 -> z1 -> x: the two-layer model of Burda, Grosse & Salakhutdinov (2016),
"Importance Weighted Autoencoders", section 5.

Graphical model, for N i.i.d. images::

    theta -->  z2_i --> z1_i --> x_i          i = 1..N   (solid: p(z2) p(z1|z2) p(x|z1))
               z2_i <-- z1_i <-- x_i  <-- phi             (dashed: q(z1|x) q(z2|z1), bottom-up)

The prior object is p(z2), the top layer's (any pvae prior plugs in), the likelihood p(x|z1) (any
pvae likelihood), p(z1|z2) a diagonal Gaussian whose mean and scale an MLP computes from z2, and
the guide the bottom-up chain q(z1|x) q(z2|z1), each layer drawn from the posterior family.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
from pyro.nn import PyroModule
from torch import Tensor

from pvae.models.common import data_plate
from pvae.parts.guides import DiagonalPosterior, PosteriorFamily, central_value
from pvae.parts.likelihoods import Bernoulli, Likelihood
from pvae.parts.networks import GaussianEncoder, mlp
from pvae.parts.priors import Prior, StandardNormal

__all__ = ["TwoLayerVAE", "TopLayerPosterior"]


class TwoLayerVAE(PyroModule):
    """p(z2) p(z1|z2) p(x|z1) with the bottom-up guide q(z1|x) q(z2|z1).

    Defaults are the IWAE paper's: z1 of 100 and z2 of 50 units; x -> [200, 200] -> z1 ->
    [100, 100] -> z2 in the guide and the mirror image in the model; tanh.

    :param x_dim: pixels per image.
    :param z1_dim: units of z1, the layer next to x.
    :param z2_dim: units of z2, the top layer (the prior's).
    :param prior: p(z2); default N(0, I).
    :param likelihood: p(x|z1); default Bernoulli.
    :param posterior: q(z1|x); default diagonal Gaussian with the encoder widths ``hidden``.
    :param top_posterior: q(z2|z1); default diagonal Gaussian with the widths ``top_hidden``.
    :param hidden: widths between x and z1 (guide; the decoder p(x|z1) mirrors them).
    :param top_hidden: widths between z1 and z2 (guide; p(z1|z2) mirrors them).
    :param activation: a name in :data:`pvae.parts.networks.ACTIVATIONS`.
    :param num_data: N, the data plate's size (see :func:`pvae.models.common.data_plate`).
    """

    label_mode = "none"

    def __init__(
        self,
        x_dim: int,
        z1_dim: int = 100,
        z2_dim: int = 50,
        *,
        prior: Prior | None = None,
        likelihood: Likelihood | None = None,
        posterior: PosteriorFamily | None = None,
        top_posterior: PosteriorFamily | None = None,
        hidden: Sequence[int] = (200, 200),
        top_hidden: Sequence[int] = (100, 100),
        activation: str = "tanh",
        num_data: int | None = None,
    ) -> None:
        super().__init__()
        if min(x_dim, z1_dim, z2_dim) < 1:
            raise ValueError(f"expected x_dim, z1_dim, z2_dim >= 1, got {x_dim}, {z1_dim}, {z2_dim}")
        self.x_dim, self.z1_dim, self.z2_dim, self.num_data = x_dim, z1_dim, z2_dim, num_data
        self.z_dim = z2_dim  # the prior's latent, as for every model pvae builds
        self.prior = prior if prior is not None else StandardNormal(z2_dim)
        self.likelihood = likelihood if likelihood is not None else Bernoulli()
        self.posterior = posterior if posterior is not None else DiagonalPosterior(x_dim, z1_dim, hidden, activation)
        self.top_posterior = (top_posterior if top_posterior is not None
                              else DiagonalPosterior(z1_dim, z2_dim, top_hidden, activation))
        for name, part, want in (("prior", self.prior, z2_dim), ("posterior", self.posterior, z1_dim),
                                 ("top_posterior", self.top_posterior, z2_dim)):
            if getattr(part, "z_dim", want) != want:
                raise ValueError(f"expected a {name} over {want} units, got one with z_dim={part.z_dim}")
        self.z1_decoder = GaussianEncoder(z2_dim, z1_dim, tuple(reversed(top_hidden)), activation)
        self.decoder = mlp(z1_dim, tuple(reversed(hidden)), self.likelihood.params_per_pixel * x_dim, activation)

    def model(self, x: Tensor) -> None:
        """p(z2) p(z1|z2) p(x|z1).

        :param x: observed images ``(batch, x_dim)``.
        """
        with data_plate(x, self.num_data):
            z2 = pyro.sample("z2", self.prior())
            loc, scale = self.z1_decoder(z2)
            z1 = pyro.sample("z1", dist.Normal(loc, scale).to_event(1))
            pyro.sample("x", self.likelihood(self.decoder(z1)), obs=x)

    def guide(self, x: Tensor) -> None:
        """q(z1|x) q(z2|z1), bottom-up.

        :param x: observed images ``(batch, x_dim)``.
        """
        with data_plate(x, self.num_data):
            z1 = pyro.sample("z1", self.posterior(x))
            pyro.sample("z2", self.top_posterior(z1))


class TopLayerPosterior:
    """u -> q(z2 | z1 = central value of q(z1|u)): the guide's two layers as one map from images to
    the top layer, what a VampPrior over z2 mixes at its pseudo-inputs u (Tomczak & Welling 2018).

    Not a module: it holds references to the guide's networks, which the model saves once.
    """

    def __init__(self, posterior: PosteriorFamily, top_posterior: PosteriorFamily) -> None:
        self.posterior, self.top_posterior = posterior, top_posterior
        self.z_dim = top_posterior.z_dim

    def __call__(self, u: Tensor) -> dist.TorchDistribution:
        """:param u: images ``(K, x_dim)``.
        :returns: ``batch_shape == (K,)``, ``event_shape == (z2_dim,)``."""
        return self.top_posterior(central_value(self.posterior(u)))


