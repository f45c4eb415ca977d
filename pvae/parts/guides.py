"""Posterior families q(z|x): an encoder network together with the distribution it parameterizes.

A posterior family is any object with

* ``z_dim: int``;
* ``__call__(x) -> distribution`` -- q(z|x) for images ``x`` of shape ``(..., x_dim)``, with
  ``batch_shape == x.shape[:-1]`` and ``event_shape == (z_dim,)``, reparameterized (``rsample``) so
  that the ELBO's gradient flows through z.

:class:`PosteriorFamily` is a ``Protocol``: nothing needs to be subclassed. The built-in families
are ``nn.Module`` s that keep their network in an ``encoder`` attribute.

Loading this module also registers KL(full-covariance Gaussian || diagonal Gaussian) with
``torch.distributions.kl_divergence`` (by way of the Gaussian-Gaussian formula), so that the pair
(full-covariance guide, Gaussian prior) keeps its analytic KL term.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import Tensor, nn
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence, register_kl
from torch.nn import functional as F

from pvae.parts.networks import GaussianEncoder, mlp

__all__ = ["PosteriorFamily", "DiagonalPosterior", "FullCovariancePosterior", "FlowPosterior", "central_value"]


@runtime_checkable
class PosteriorFamily(Protocol):
    """What :class:`pvae.VAE <pvae.models.vae.VAE>` needs from a posterior family q(z|x)."""

    z_dim: int

    def __call__(self, x: Tensor) -> dist.TorchDistribution:
        """:param x: images ``(..., x_dim)``.
        :returns: q(z|x), ``batch_shape == x.shape[:-1]``, ``event_shape == (z_dim,)``."""
        ...


class DiagonalPosterior(nn.Module):
    """q(z|x) = N(z; mu(x), diag(sigma(x)^2)), the guide of Kingma & Welling (2014).

    :param x_dim: pixels per image.
    :param z_dim: m.
    :param hidden: hidden widths of the encoder.
    :param activation: a name in :data:`pvae.parts.networks.ACTIVATIONS`.
    """

    def __init__(self, x_dim: int, z_dim: int, hidden: Sequence[int], activation: str) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.encoder = GaussianEncoder(x_dim, z_dim, hidden, activation)

    def forward(self, x: Tensor) -> dist.TorchDistribution:
        """:param x: ``(..., x_dim)``.
        :returns: ``batch_shape == x.shape[:-1]``, ``event_shape == (z_dim,)``."""
        loc, scale = self.encoder(x)
        return dist.Normal(loc, scale).to_event(1)


class FullCovariancePosterior(nn.Module):
    """q(z|x) = N(z; mu(x), L(x) L(x)^T) with a lower-triangular Cholesky factor L(x).

    The encoder emits mu (m numbers), the diagonal of L through a softplus (m) and the strictly
    lower triangle of L as is (m (m - 1) / 2).

    :param x_dim: pixels per image.
    :param z_dim: m.
    :param hidden: hidden widths of the encoder.
    :param activation: a name in :data:`pvae.parts.networks.ACTIVATIONS`.
    """

    def __init__(self, x_dim: int, z_dim: int, hidden: Sequence[int], activation: str) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.encoder = mlp(x_dim, hidden, z_dim + z_dim * (z_dim + 1) // 2, activation)
        rows, cols = torch.tril_indices(z_dim, z_dim, offset=-1)
        # Not persistent: they follow the device but are a function of z_dim, not learned state.
        self.register_buffer("tril_rows", rows, persistent=False)
        self.register_buffer("tril_cols", cols, persistent=False)

    def forward(self, x: Tensor) -> dist.TorchDistribution:
        """:param x: ``(..., x_dim)``.
        :returns: a ``MultivariateNormal`` with ``batch_shape == x.shape[:-1]``,
            ``event_shape == (z_dim,)``."""
        m = self.z_dim
        out = self.encoder(x)
        loc, raw_diag, off_diag = out[..., :m], out[..., m : 2 * m], out[..., 2 * m :]
        scale_tril = torch.diag_embed(F.softplus(raw_diag) + 1e-6)
        scale_tril[..., self.tril_rows, self.tril_cols] = off_diag
        return dist.MultivariateNormal(loc, scale_tril=scale_tril)


class FlowPosterior(nn.Module):
    """q(z|x): a diagonal Gaussian refined by L inverse autoregressive flow steps conditioned on x.

    Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling (2016), "Improved Variational Inference
    with Inverse Autoregressive Flow": the encoder emits mu(x), sigma(x) and a context h(x);
    z_0 ~ N(mu, diag(sigma^2)) and z_l = IAF_l(z_{l-1}; h), each step Pyro's sigmoid-gated
    ("stable") ``ConditionalAffineAutoregressive``. Drawing z and scoring that draw are both one pass
    per step (Pyro caches the draw); scoring any other z (a VampPrior built on this family does)
    inverts each step sequentially, z_dim passes.

    :param x_dim: pixels per image.
    :param z_dim: m >= 2.
    :param hidden: hidden widths of the encoder.
    :param activation: a name in :data:`pvae.parts.networks.ACTIVATIONS`.
    :param num_flows: L >= 1.
    :param context_dim: width of h (default m).
    :param flow_hidden: widths of each step's MADE network (default ``[max(hidden[-1], 2 m)]``).
    """

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        hidden: Sequence[int],
        activation: str,
        num_flows: int = 4,
        *,
        context_dim: int | None = None,
        flow_hidden: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if z_dim < 2:
            raise ValueError(f"a flow guide needs z_dim >= 2 (over one variable an autoregressive map is affine), got {z_dim}")
        if num_flows < 1:
            raise ValueError(f"a flow guide needs num_flows >= 1, got {num_flows}")
        self.z_dim, self.num_flows = z_dim, num_flows
        self.context_dim = context_dim if context_dim is not None else z_dim
        widths = list(flow_hidden) if flow_hidden is not None else [max(hidden[-1] if hidden else 0, 2 * z_dim)]
        self.encoder = mlp(x_dim, hidden, 2 * z_dim + self.context_dim, activation)
        self.flows = nn.ModuleList(
            T.conditional_affine_autoregressive(z_dim, self.context_dim, hidden_dims=widths, stable=True)
            for _ in range(num_flows)
        )

    def forward(self, x: Tensor) -> dist.TorchDistribution:
        """:param x: ``(..., x_dim)``.
        :returns: a ``TransformedDistribution`` with ``batch_shape == x.shape[:-1]``,
            ``event_shape == (z_dim,)``."""
        m = self.z_dim
        out = self.encoder(x)
        loc, raw_scale, context = out[..., :m], out[..., m : 2 * m], out[..., 2 * m :]
        base = dist.Normal(loc, F.softplus(raw_scale) + 1e-6).to_event(1)
        return dist.TransformedDistribution(base, [flow.condition(context) for flow in self.flows])


def central_value(q: torch.distributions.Distribution) -> Tensor:
    """A deterministic representative z of q(z|x): its mean, or for a flow (whose mean has no closed
    form) the image of the base distribution's mean under the flow.

    :returns: ``q.batch_shape + q.event_shape``.
    """
    if isinstance(q, torch.distributions.TransformedDistribution):
        z = central_value(q.base_dist)
        for transform in q.transforms:
            z = transform(z)
        return z
    return q.mean


@register_kl(MultivariateNormal, Independent)
def _kl_mvn_diagonal_normal(q: MultivariateNormal, p: Independent) -> Tensor:
    """KL(N(mu_q, Sigma_q) || N(mu_p, diag(sigma_p^2))): the diagonal Gaussian is a special
    MultivariateNormal, so torch's Gaussian-Gaussian formula applies."""
    if not (isinstance(p.base_dist, Normal) and p.reinterpreted_batch_ndims == 1):
        raise NotImplementedError
    as_mvn = MultivariateNormal(p.base_dist.loc, scale_tril=torch.diag_embed(p.base_dist.scale))
    return kl_divergence(q, as_mvn)
