"""The semi-supervised VAE M2 of Kingma, Rezende, Mohamed & Welling (2014), "Semi-Supervised
Learning with Deep Generative Models".

Graphical model, for N i.i.d. images of which some are labelled::

    theta -->  y_i --> x_i <-- z_i            i = 1..N   (solid: p(y) p(z) p(x | y, z))
               y_i <-- x_i --> z_i  <-- phi              (dashed: q(y | x) q(z | x, y))

y ~ Categorical(uniform) is observed for the labelled images and latent for the rest. For an
unlabelled image the guide's q(y|x) is marked for parallel enumeration, so Pyro's
``TraceEnum_ELBO`` sums the ELBO over the C classes exactly rather than sampling y:

.. math::

    -U(x) = \\sum_y q(y|x) \\, (-L(x, y)) + H(q(y|x)), \\qquad
    -L(x, y) = E_{q(z|x,y)}[\\log p(x|y,z) + \\log p(y) + \\log p(z) - \\log q(z|x,y)]

(Kingma et al. 2014, eqs. 6-7). Their eq. 9 adds a classification term, alpha times the mean of
log q(y|x) over the labelled images, so that q(y|x) also learns from the labels directly:
:meth:`SemiSupervisedVAE.classifier_model` is that term as a Pyro program (an observed site
scaled by alpha, as in Pyro's semi-supervised VAE example), trained with an empty guide.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
from pyro import poutine
from pyro.nn import PyroModule
from torch import Tensor

from pvae.models.common import data_plate, join_label
from pvae.parts.guides import DiagonalPosterior, PosteriorFamily
from pvae.parts.likelihoods import Bernoulli, Likelihood
from pvae.parts.networks import mlp
from pvae.parts.priors import Prior, StandardNormal

__all__ = ["SemiSupervisedVAE"]


class SemiSupervisedVAE(PyroModule):
    """M2: p(y) p(z) p(x | y, z) with guide q(y | x) q(z | x, y).

    The data plate has two sizes: N_l when the batch is labelled (``y`` given) and N_u = N - N_l
    when it is not, so each part of SVI's loss estimates its own set's total.

    :param x_dim: pixels per image.
    :param z_dim: m.
    :param num_classes: C.
    :param num_labelled: N_l, labelled training images (``num_data`` is N, all of them).
    :param aux_weight: alpha / N, the weight of the classification term per image (Kingma et al.
        2014 use alpha = 0.1 N, so 0.1).
    :param prior: p(z).
    :param likelihood: p(x | y, z).
    :param posterior: q(z | x, y) over inputs of ``x_dim + num_classes`` numbers.
    :param hidden: widths of every network.
    :param activation: a name in :data:`pvae.parts.networks.ACTIVATIONS`.
    """

    label_mode = "semi-supervised"

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        num_classes: int = 10,
        *,
        num_labelled: int | None = None,
        aux_weight: float = 0.1,
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
        if not aux_weight >= 0:
            raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
        self.x_dim, self.z_dim, self.num_classes = x_dim, z_dim, num_classes
        self.num_data, self.num_labelled, self.aux_weight = num_data, num_labelled, aux_weight
        self.prior = prior if prior is not None else StandardNormal(z_dim)
        self.likelihood = likelihood if likelihood is not None else Bernoulli()
        self.posterior = (posterior if posterior is not None
                          else DiagonalPosterior(x_dim + num_classes, z_dim, hidden, activation))
        self.classifier = mlp(x_dim, hidden, num_classes, activation)  # the logits of q(y|x)
        self.decoder = mlp(z_dim + num_classes, tuple(reversed(hidden)), self.likelihood.params_per_pixel * x_dim,
                           activation)

    def _plate(self, x: Tensor, labelled: bool) -> pyro.plate:
        if self.num_data is None or self.num_labelled is None:
            return data_plate(x, None)
        return data_plate(x, self.num_labelled if labelled else self.num_data - self.num_labelled)

    def model(self, x: Tensor, y: Tensor | None = None) -> None:
        """p(y) p(z) p(x | y, z).

        :param x: images ``(batch, x_dim)``.
        :param y: their classes ``(batch,)``, or ``None`` for unlabelled images (then y is latent).
        """
        with self._plate(x, y is not None):
            y = pyro.sample("y", dist.Categorical(logits=x.new_zeros(self.num_classes)), obs=y)
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decoder(join_label(z, y, self.num_classes))), obs=x)

    def guide(self, x: Tensor, y: Tensor | None = None) -> None:
        """q(y | x) q(z | x, y); y is proposed (and enumerated) only when not given."""
        with self._plate(x, y is not None):
            if y is None:
                y = pyro.sample("y", dist.Categorical(logits=self.classifier(x)), infer={"enumerate": "parallel"})
            pyro.sample("z", self.posterior(join_label(x, y, self.num_classes)))

    def classifier_model(self, x: Tensor, y: Tensor) -> None:
        """alpha * log q(y | x) on labelled images (Kingma et al. 2014, eq. 9), as an observed site.

        Scaled so that with the plate's N_l / B the term is alpha = ``aux_weight`` * N times the mean
        over labelled images, the weighting of the paper.
        """
        labelled = self.num_labelled if self.num_labelled is not None else x.shape[0]
        total = self.num_data if self.num_data is not None else x.shape[0]
        with self._plate(x, True), poutine.scale(scale=self.aux_weight * total / labelled):
            pyro.sample("y_aux", dist.Categorical(logits=self.classifier(x)), obs=y)

    def classifier_guide(self, x: Tensor, y: Tensor) -> None:
        """The classification term has no latent variable: an empty guide."""
