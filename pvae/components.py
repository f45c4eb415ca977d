"""Names for priors and likelihoods (``--prior normal``, ``--likelihood bernoulli``) and the
builder that turns a :class:`~pvae.config.TrainConfig` into a :class:`~pvae.VAE`."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from pvae.config import TrainConfig
from pvae.likelihoods import Bernoulli, Likelihood
from pvae.model import VAE
from pvae.networks import set_output_bias
from pvae.priors import Prior, StandardNormal

__all__ = ["PRIORS", "LIKELIHOODS", "build_prior", "build_likelihood", "build_vae"]

# name -> factory(z_dim, argument after the colon or None)
PRIORS: dict[str, Callable[[int, str | None], Prior]] = {
    "normal": lambda z_dim, arg: StandardNormal(z_dim),
}
# name -> factory(argument after the colon or None)
LIKELIHOODS: dict[str, Callable[[str | None], Likelihood]] = {
    "bernoulli": lambda arg: Bernoulli(),
}


def _split(spec: str) -> tuple[str, str | None]:
    name, _, arg = spec.partition(":")
    return name, arg or None


def build_prior(spec: str, z_dim: int) -> Prior:
    """A prior from its name, e.g. ``normal``."""
    name, arg = _split(spec)
    if name not in PRIORS:
        raise ValueError(f"unknown prior {spec!r}; expected one of: {', '.join(PRIORS)}")
    return PRIORS[name](z_dim, arg)


def build_likelihood(spec: str) -> Likelihood:
    """A likelihood from its name, e.g. ``bernoulli``."""
    name, arg = _split(spec)
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {spec!r}; expected one of: {', '.join(LIKELIHOODS)}")
    return LIKELIHOODS[name](arg)


def build_vae(config: TrainConfig, x_dim: int, num_data: int, mean_image: Tensor | None = None) -> VAE:
    """The VAE a configuration describes.

    :param x_dim: pixels per image; :param num_data: N, the training-set size.
    :param mean_image: mean training image ``(x_dim,)``; when given, the decoder's output bias
        starts at the likelihood's :meth:`initial_bias` of it.
    """
    likelihood = build_likelihood(config.likelihood)
    vae = VAE(
        x_dim,
        config.z_dim,
        prior=build_prior(config.prior, config.z_dim),
        likelihood=likelihood,
        hidden=config.hidden,
        activation=config.activation,
        num_data=num_data,
    )
    if mean_image is not None:
        set_output_bias(vae.decoder, likelihood.initial_bias(mean_image).to(vae.decoder[-1].bias))
    return vae
