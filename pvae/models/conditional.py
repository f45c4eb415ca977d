"""The class-conditional VAE: p(z) p(x | z, y) with the label y observed, and the guide q(z | x, y).

Graphical model, for N i.i.d. labelled images (Sohn, Lee & Yan 2015, "Learning Structured Output
Representation using Deep Conditional Generative Models"; Kingma et al. 2014's M2 with y always seen)::

    theta -->  z_i --> x_i <-- y_i            i = 1..N   (solid: p(z) p(x | z, y))
               z_i <-- x_i, y_i  <-- phi                 (dashed: q(z | x, y))

y is given, like x in the guide: not a random variable of this model, so its estimate of the
marginal likelihood is log p(x | y). Drawing z ~ p(z) with a chosen y draws digits of that class,
z carrying the style.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
from pyro.nn import PyroModule
from torch import Tensor

from pvae.models.common import data_plate, join_label
from pvae.parts.guides import DiagonalPosterior, PosteriorFamily
from pvae.parts.likelihoods import Bernoulli, Likelihood
from pvae.parts.networks import mlp
from pvae.parts.priors import Prior, StandardNormal

__all__ = ["ConditionalVAE"]


class ConditionalVAE(PyroModule):
    """p(z) p(x | z, y), q(z | x, y); y in {0, ..., num_classes - 1} enters both networks one-hot.

    :param x_dim: pixels per image.
    :param z_dim: m.
    :param num_classes: C.
    :param prior: p(z); default N(0, I).
    :param likelihood: p(x | z, y); default Bernoulli.
    :param posterior: q(z | x, y) as a posterior family over inputs of ``x_dim + num_classes``
        numbers (the image and the one-hot label); default diagonal Gaussian.
    :param hidden: encoder widths (the decoder mirrors them).
    :param activation: nonlinearity.
    :param num_data: N, the data plate's size.
    """

    label_mode = "observed"

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        num_classes: int = 10,
        *,
        prior: Prior | None = None,
        likelihood: Likelihood | None = None,
        posterior: PosteriorFamily | None = None,
        hidden: Sequence[int] = (200, 200),
        activation: str = "tanh",
        num_data: int | None = None,
    ) -> None:
        super().__init__()
        if min(x_dim, z_dim) < 1 or num_classes < 2:
            raise ValueError(f"expected x_dim, z_dim >= 1 and num_classes >= 2, got {x_dim}, {z_dim}, {num_classes}")
        self.x_dim, self.z_dim, self.num_classes, self.num_data = x_dim, z_dim, num_classes, num_data
        self.prior = prior if prior is not None else StandardNormal(z_dim)
        self.likelihood = likelihood if likelihood is not None else Bernoulli()
        self.posterior = (posterior if posterior is not None
                          else DiagonalPosterior(x_dim + num_classes, z_dim, hidden, activation))
        self.decoder = mlp(z_dim + num_classes, tuple(reversed(hidden)), self.likelihood.params_per_pixel * x_dim,
                           activation)

    def model(self, x: Tensor, y: Tensor) -> None:
        """p(z) p(x | z, y).

        :param x: images ``(batch, x_dim)``.
        :param y: their classes ``(batch,)``.
        """
        with data_plate(x, self.num_data):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decoder(join_label(z, y, self.num_classes))), obs=x)

    def guide(self, x: Tensor, y: Tensor) -> None:
        """q(z | x, y).

        :param x: images ``(batch, x_dim)``.
        :param y: their classes ``(batch,)``.
        """
        with data_plate(x, self.num_data):
            pyro.sample("z", self.posterior(join_label(x, y, self.num_classes)))
