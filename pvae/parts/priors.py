"""Priors p(z) over the latent code.

A prior is any object that, called with no arguments, returns a Pyro distribution over z with
``event_shape == (z_dim,)`` and ``batch_shape == ()``; the data plate in :meth:`pvae.VAE.model <pvae.models.vae.VAE.model>`
broadcasts it over the images. Priors with learned parameters are ``torch.nn.Module`` s so that
they move with the model and are saved in its ``state_dict``; plain objects work too
(:class:`Prior` is a ``Protocol``, nothing needs to be subclassed).

Whether KL(q(z|x) || p(z)) has a closed form is decided by ``torch.distributions.kl_divergence``
for the two distributions: Gaussian and Laplace priors have one with a Gaussian guide; mixtures and
flows do not, and the ELBO then estimates the KL by Monte Carlo.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import Tensor, nn
from torch.distributions import Independent, Normal
from torch.nn import functional as F

from pvae.parts.networks import inverse_softplus

__all__ = [
    "Prior",
    "StandardNormal",
    "DiagonalNormal",
    "MixtureOfGaussians",
    "VampPrior",
    "Laplace",
    "StudentT",
    "FlowPrior",
]


@runtime_checkable
class Prior(Protocol):
    """What :class:`pvae.VAE <pvae.models.vae.VAE>` needs from a prior: a distribution over z, event dimension folded in."""

    z_dim: int

    def __call__(self) -> dist.TorchDistribution:
        """:returns: p(z), ``batch_shape == ()``, ``event_shape == (z_dim,)``."""
        ...


def _check_z_dim(z_dim: int) -> None:
    if not isinstance(z_dim, int) or z_dim < 1:
        raise ValueError(f"z_dim must be a positive integer, got {z_dim!r}")


class StandardNormal(nn.Module):
    """p(z) = N(0, I_m), the prior of Kingma & Welling (2014), "Auto-Encoding Variational Bayes".

    :param z_dim: m, the dimension of the latent code (m >= 1).
    """

    def __init__(self, z_dim: int) -> None:
        super().__init__()
        _check_z_dim(z_dim)
        self.z_dim = z_dim
        # Buffers, not parameters: this prior is fixed, but it must follow the model's device.
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.ones(z_dim))

    def forward(self) -> dist.TorchDistribution:
        """:returns: N(0, I_m) with ``event_shape == (z_dim,)``."""
        return dist.Normal(self.loc, self.scale).to_event(1)

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}"


class DiagonalNormal(nn.Module):
    """p(z) = N(mu, diag(sigma^2)) with learned mu and sigma, starting at N(0, I).

    With a diagonal Gaussian guide the KL term keeps its closed form, so this is the cheapest
    learned prior; it can only shift and stretch the latent space axis by axis.

    :param z_dim: m >= 1.
    """

    def __init__(self, z_dim: int) -> None:
        super().__init__()
        _check_z_dim(z_dim)
        self.z_dim = z_dim
        self.loc = nn.Parameter(torch.zeros(z_dim))
        self.raw_scale = nn.Parameter(inverse_softplus(torch.ones(z_dim)))

    def forward(self) -> dist.TorchDistribution:
        """:returns: N(loc, diag(scale^2)), ``event_shape == (z_dim,)``."""
        return dist.Normal(self.loc, F.softplus(self.raw_scale)).to_event(1)

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}"


class MixtureOfGaussians(nn.Module):
    """p(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2)), all of pi, mu and sigma learned.

    :param z_dim: m >= 1.
    :param num_components: K >= 1.

    The means start at K draws from N(0, I) (torch's global generator, so the model's seed fixes
    them) and the scales at 1, so the untrained prior is a broad blob around the origin.
    """

    def __init__(self, z_dim: int, num_components: int = 10) -> None:
        super().__init__()
        _check_z_dim(z_dim)
        if num_components < 1:
            raise ValueError(f"a mixture needs num_components >= 1, got {num_components}")
        self.z_dim, self.num_components = z_dim, num_components
        self.logits = nn.Parameter(torch.zeros(num_components))
        self.locs = nn.Parameter(torch.randn(num_components, z_dim))
        self.raw_scales = nn.Parameter(inverse_softplus(torch.ones(num_components, z_dim)))

    def forward(self) -> dist.TorchDistribution:
        """:returns: the mixture, ``batch_shape == ()``, ``event_shape == (z_dim,)``."""
        components = dist.Normal(self.locs, F.softplus(self.raw_scales) + 1e-6).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, num_components={self.num_components}"


class _BroadcastMixture(dist.MixtureSameFamily):
    """A ``MixtureSameFamily`` that hands its components z already repeated over the K components.

    torch's mixture pads z to ``(..., 1, z_dim)`` and relies on broadcasting; a flow guide
    conditioned on K pseudo-inputs cannot broadcast its context that way, so z is expanded to
    ``(..., K, z_dim)`` first. The density is unchanged.
    """

    def _pad(self, x: Tensor) -> Tensor:
        x = super()._pad(x)
        event = self.component_distribution.event_shape
        return x.expand(x.shape[: x.dim() - len(event) - 1] + (self._num_component,) + event)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(z) of ``z`` shaped ``(..., z_dim)``; returns ``(...)``.

        Diagonal Gaussian components (the diagonal guide's q(z|u_k)) take a matrix product
        instead of the generic path: that path materializes ``(..., K, z_dim)``, which at K = 500
        components and 5000 importance samples per image made log p(x) an hour's evaluation.
        """
        components = self.component_distribution
        if not (
            isinstance(components, Independent)
            and components.reinterpreted_batch_ndims == 1
            and type(components.base_dist) in (Normal, dist.Normal)
        ):
            return super().log_prob(x)
        # The data plate expands the prior to batch_shape (N,); the components' parameters are then
        # stride-0 views of one (K, z_dim) table, which is what the matrix products need.
        loc, scale = (_unexpanded(t, len(self.batch_shape)) for t in (components.base_dist.loc, components.base_dist.scale))
        if loc is None or scale is None:
            return super().log_prob(x)
        if self._validate_args:
            self._validate_sample(x)
        log_components = _diagonal_normal_log_prob(x, loc, scale)  # (..., K), broadcast with the logits below
        return torch.logsumexp(log_components + torch.log_softmax(self.mixture_distribution.logits, -1), dim=-1)


def _unexpanded(t: Tensor, batch_dims: int) -> Tensor | None:
    """The ``(K, z_dim)`` table behind ``t`` shaped ``(*batch, K, z_dim)``, when every batch dimension
    is a broadcast (stride 0, so all its entries are one and the same); otherwise ``None``."""
    if any(t.stride(d) != 0 for d in range(batch_dims) if t.shape[d] != 1):
        return None
    return t[(0,) * batch_dims] if batch_dims else t


def _diagonal_normal_log_prob(z: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    """log N(z; loc_k, diag(scale_k^2)) for every component k at once.

    :param z: points ``(..., m)``.
    :param loc: means ``(K, m)``.
    :param scale: standard deviations ``(K, m)``, positive.
    :returns: ``(..., K)``.

    The squared Mahalanobis distance is expanded as z^2 . p - 2 z . (mu p) + mu^2 . p with
    p = 1 / scale^2, two matrix products. The terms cancel, and with scales of 1e-2 they reach
    1e4 or more, which float32 would round at the 1e-3 level; they are summed in float64, which
    costs little beside the expansion this replaces.
    """
    z64, loc64, scale64 = z.double(), loc.double(), scale.double()
    precision = scale64.pow(-2)
    squared = z64.square() @ precision.T - 2 * (z64 @ (loc64 * precision).T) + (loc64.square() * precision).sum(-1)
    log_norm = -scale64.log().sum(-1) - 0.5 * loc.shape[-1] * math.log(2 * math.pi)
    return (log_norm - 0.5 * squared).to(z.dtype)


class VampPrior(nn.Module):
    """p(z) = (1/K) sum_k q(z | u_k): the guide's own posterior at K learned pseudo-inputs.

    Tomczak & Welling (2018), "VAE with a VampPrior". The prior is as expressive as the posterior
    family and shares its encoder, so the two are fitted together and the KL term pulls q(z|x)
    towards q(z|u_k) of nearby pseudo-inputs.

    Design: the prior is handed the posterior family (``x -> q(z|x)``) at construction, and
    :func:`pvae.build_vae <pvae.runs.build.build_vae>` builds the guide first. It keeps a *reference*, not a submodule: the
    encoder belongs to, and is saved with, the guide, so the ``state_dict`` holds each weight once;
    the only parameters of this prior are the pseudo-inputs. Passing the family in the constructor
    (rather than a late ``bind`` step) means a VampPrior can never exist half-built.

    :param z_dim: m, must equal ``posterior.z_dim``.
    :param posterior: the guide's posterior family, called as ``posterior(u)`` on pseudo-inputs
        ``(K, x_dim)`` and returning q(z|u) with ``batch_shape == (K,)``, ``event_shape == (z_dim,)``.
    :param pseudo_inputs: their starting values ``(K, x_dim)`` in data space, e.g. K random
        training images or noise. They are learned without constraint.
    """

    def __init__(self, z_dim: int, posterior: Callable[[Tensor], dist.TorchDistribution], pseudo_inputs: Tensor) -> None:
        super().__init__()
        _check_z_dim(z_dim)
        if getattr(posterior, "z_dim", z_dim) != z_dim:
            raise ValueError(f"expected a posterior family over z_dim={z_dim}, got z_dim={posterior.z_dim}")  # type: ignore[attr-defined]
        if pseudo_inputs.ndim != 2 or pseudo_inputs.shape[0] < 1:
            raise ValueError(f"expected pseudo-inputs of shape (K, x_dim) with K >= 1, got {tuple(pseudo_inputs.shape)}")
        self.z_dim = z_dim
        self.num_components = pseudo_inputs.shape[0]
        # object.__setattr__ keeps nn.Module from registering the guide as a submodule (see Design).
        object.__setattr__(self, "posterior", posterior)
        self.pseudo_inputs = nn.Parameter(pseudo_inputs.detach().clone())

    def forward(self) -> dist.TorchDistribution:
        """:returns: the equal mixture of q(z|u_k), ``batch_shape == ()``, ``event_shape == (z_dim,)``."""
        components = self.posterior(self.pseudo_inputs)
        weights = dist.Categorical(logits=self.pseudo_inputs.new_zeros(self.num_components))
        return _BroadcastMixture(weights, components)

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, num_components={self.num_components}, x_dim={self.pseudo_inputs.shape[1]}"


class Laplace(nn.Module):
    """p(z) = prod_j Laplace(z_j; 0, b): heavier tails than N(0, I).

    :param z_dim: m >= 1.
    :param scale: b > 0 (variance 2 b^2).
    """

    def __init__(self, z_dim: int, scale: float = 1.0) -> None:
        super().__init__()
        _check_z_dim(z_dim)
        if not scale > 0:
            raise ValueError(f"the Laplace prior's scale must be positive, got {scale}")
        self.z_dim = z_dim
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.full((z_dim,), float(scale)))

    def forward(self) -> dist.TorchDistribution:
        """:returns: independent Laplaces, ``event_shape == (z_dim,)``."""
        return dist.Laplace(self.loc, self.scale).to_event(1)

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, scale={float(self.scale[0])}"


class StudentT(nn.Module):
    """p(z) = prod_j t_nu(z_j; 0, 1): polynomial tails, heavier the smaller nu.

    :param z_dim: m >= 1.
    :param df: nu > 0, the degrees of freedom (nu -> infinity is N(0, I)).
    """

    def __init__(self, z_dim: int, df: float = 3.0) -> None:
        super().__init__()
        _check_z_dim(z_dim)
        if not df > 0:
            raise ValueError(f"the Student-t prior's degrees of freedom must be positive, got {df}")
        self.z_dim = z_dim
        self.register_buffer("df", torch.full((z_dim,), float(df)))
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.ones(z_dim))

    def forward(self) -> dist.TorchDistribution:
        """:returns: independent Student-t's, ``event_shape == (z_dim,)``."""
        return dist.StudentT(self.df, self.loc, self.scale).to_event(1)

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, df={float(self.df[0])}"


class FlowPrior(nn.Module):
    """p(z): N(0, I) pushed through L learned affine autoregressive maps (a masked autoregressive
    flow; Papamakarios, Pavlakou & Murray 2017, "Masked Autoregressive Flow for Density Estimation").

    The ELBO evaluates p(z) at the guide's draws, so the flow is oriented to make ``log_prob`` one
    network pass per layer: each layer is Pyro's ``AffineAutoregressive`` used in its inverse
    direction. Drawing from the prior (``pvae.VAE.generate``) is then sequential, z_dim passes
    per layer. Each layer's autoregressive order is a random permutation kept in the
    ``state_dict``; the "stable" (sigmoid-gated) update of Kingma et al. (2016) keeps it tame.

    :param z_dim: m >= 2 (a one-dimensional autoregressive map is only affine).
    :param num_flows: L >= 1.
    :param hidden_dims: widths of each layer's MADE network (default: Pyro's, ``[10 * z_dim]``).
    """

    def __init__(self, z_dim: int, num_flows: int = 4, hidden_dims: Sequence[int] | None = None) -> None:
        super().__init__()
        _check_z_dim(z_dim)
        if z_dim < 2:
            raise ValueError(f"a flow prior needs z_dim >= 2 (over one variable an autoregressive map is affine), got {z_dim}")
        if num_flows < 1:
            raise ValueError(f"a flow prior needs num_flows >= 1, got {num_flows}")
        self.z_dim, self.num_flows = z_dim, num_flows
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.ones(z_dim))
        dims = list(hidden_dims) if hidden_dims is not None else None
        self.flows = nn.ModuleList(T.affine_autoregressive(z_dim, hidden_dims=dims, stable=True) for _ in range(num_flows))

    def forward(self) -> dist.TorchDistribution:
        """:returns: the flow's distribution, ``batch_shape == ()``, ``event_shape == (z_dim,)``."""
        base = dist.Normal(self.loc, self.scale).to_event(1)
        return dist.TransformedDistribution(base, [flow.inv for flow in self.flows])

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, num_flows={self.num_flows}"

