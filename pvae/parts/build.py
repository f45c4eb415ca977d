"""Builders of parts: the prior, likelihood or posterior family a name such as ``mog:10``,
``gaussian:learned`` or ``flow:4`` spells, with the sizes it needs passed explicitly. (The model
families, which these parts make up, are :data:`pvae.models.families.FAMILIES`: a model layer
above this one.)"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from pvae.parts.guides import PosteriorFamily
from pvae.parts.likelihoods import Likelihood
from pvae.parts.priors import Prior
from pvae.parts.registry import GUIDES, LIKELIHOODS, PRIORS, Context, check_spec

__all__ = ["PRIORS", "LIKELIHOODS", "GUIDES", "build_prior", "build_likelihood", "build_guide"]


def build_prior(
    spec: str,
    z_dim: int,
    *,
    x_dim: int | None = None,
    posterior: Any = None,
    init_data: Tensor | None = None,
) -> Prior:
    """A prior from its spelling, e.g. ``normal`` or ``mog:10``.

    :param posterior: images -> q(z|x) over this prior's z (needed by ``vamp``, whose components it gives).
    :param init_data: training images ``(n, x_dim)``; ``vamp`` starts its pseudo-inputs at K of them.
    """
    entry, arg = check_spec("prior", spec)
    return entry.build(arg, Context(z_dim, x_dim, posterior=posterior, init_data=init_data))


def build_likelihood(spec: str) -> Likelihood:
    """A likelihood from its spelling, e.g. ``bernoulli`` or ``gaussian:learned``."""
    entry, arg = check_spec("likelihood", spec)
    return entry.build(arg, Context(z_dim=1))


def build_guide(spec: str, x_dim: int, z_dim: int, hidden: tuple[int, ...] = (200, 200), activation: str = "tanh") -> PosteriorFamily:
    """A posterior family from its spelling, e.g. ``diagonal``, ``full-cov`` or ``flow:4``."""
    entry, arg = check_spec("guide", spec)
    return entry.build(arg, Context(z_dim, x_dim, tuple(hidden), activation))
