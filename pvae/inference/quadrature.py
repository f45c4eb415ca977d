"""The exact posterior of a model with one 1- or 2-dimensional latent site, by quadrature on a grid:
p(z|x) = p(x, z) / p(x) with p(x) summed over the grid's cells, a reference for every other way pvae
computes log p(x) (importance sampling, :mod:`pvae.inference.importance`). log p(x, z) comes from the model's
own trace conditioned on each grid value, so any model with such a site qualifies, not one class.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor

from pvae.inference.predictive import prior_trace
from pvae.inference.traces import PARTICLES, is_discrete, latent_sites, sample_sites, site_log_prob, sum_sites
from pvae.protocol import GraphicalModel, label_mode

__all__ = ["PosteriorGrid", "posterior_on_grid", "grid_site", "guide_distribution"]


def grid_site(model: GraphicalModel, like: Tensor | None = None) -> tuple[str, torch.Size]:
    """The one latent site that the manifold and the grid posterior range over, and its event shape.

    :param like: a tensor giving device and dtype for the model's trace (default: the model's).
    :raises ValueError: saying why, for a model with labels, with other latent sites than one
        continuous site, or whose site has more than 2 dimensions.
    """
    if label_mode(model) != "none":
        raise ValueError("the model takes labels y; the grid is drawn for a model without labels")
    trace = prior_trace(model, 1, like=like)
    latents = {name: trace.nodes[name] for name in latent_sites(trace)}
    continuous = [name for name, site in latents.items() if not is_discrete(site)]
    if len(latents) != 1 or len(continuous) != 1:
        kinds = ", ".join(f"{n} ({'continuous' if n in continuous else 'discrete'})" for n in latents)
        raise ValueError(f"expected exactly one latent site, a continuous one; the model has {kinds or 'none'}")
    name = continuous[0]
    event = latents[name]["fn"].event_shape
    dim = math.prod(event)
    if len(event) > 1 or dim > 2:
        raise ValueError(f"expected a latent site of 1 or 2 dimensions, got z_dim={dim} (site {name!r}, "
                         f"event shape {tuple(event)})")
    return name, event


@dataclass(frozen=True)
class PosteriorGrid:
    """The exact posterior p(z|x) of one image on a regular grid (m = 1 or 2).

    ``axes``: m tensors of grid-cell centres, each ``(G,)``; ``log_density``: log p(z|x) at the cell
    centres, shape ``(G,)`` for m = 1 and ``(G, G)`` indexed ``[i_2, i_1]`` for m = 2 (rows follow
    z_2, as ``imshow`` expects); ``log_px``: log p(x) = log sum_cells p(x, z) * cell volume, in nats;
    ``site``: the name of the latent site z.
    """

    axes: tuple[Tensor, ...]
    log_density: Tensor
    log_px: float
    site: str


def _log_joint(model: GraphicalModel, site: str, x: Tensor, z: Tensor) -> Tensor:
    """log p(x, z_j) for one image ``x`` ``(x_dim,)`` and G values ``z`` ``(G, *event)`` of ``site``:
    the model's trace conditioned on them, the image repeated along the data plate, every site's
    log-density summed. Unscaled: each grid point is one image's joint density, not a minibatch's
    share of a dataset.

    :returns: ``(G,)``.
    """
    images = x.expand(z.shape[0], *x.shape)
    # A particles plate of one: the layout ``site_log_prob`` splits per image, as in ``trace_pair``.
    with poutine.block(), pyro.plate(PARTICLES, 1, dim=-2):
        trace = poutine.trace(poutine.condition(model.model, data={site: z})).get_trace(images)
    sites = sample_sites(prune_subsample_sites(trace)).values()
    return sum_sites(site_log_prob(s, "model", 2) for s in sites).reshape(z.shape[0])


def guide_distribution(model: GraphicalModel, site: str, x: Tensor) -> torch.distributions.Distribution:
    """q(site | x) for one image ``x`` ``(x_dim,)``, from the guide's trace (batch shape ``(1,)``)."""
    with torch.no_grad(), poutine.block():
        trace = poutine.trace(model.guide).get_trace(x[None])
    return trace.nodes[site]["fn"]


def _cell_centres(bounds: Sequence[tuple[float, float]], size: int, like: Tensor) -> tuple[tuple[Tensor, ...], Tensor]:
    """The grid's axes ``(G,)`` each, and every cell centre ``(G^m, m)``, the first dimension varying fastest."""
    axes = tuple(
        torch.linspace(lo, hi, size + 1, dtype=torch.float64, device=like.device).add(0.5 * (hi - lo) / size)[:-1]
        for lo, hi in bounds
    )
    mesh = torch.meshgrid(*reversed(axes), indexing="ij")  # last latent dimension varies slowest
    return axes, torch.stack([t.reshape(-1) for t in reversed(mesh)], dim=-1).to(like.dtype)


@torch.no_grad()
def posterior_on_grid(
    vae: GraphicalModel, x: Tensor, bounds: Sequence[tuple[float, float]] | None = None, size: int = 100, *,
    chunk: int = 4096,
) -> PosteriorGrid:
    """p(z|x) = p(x, z) / p(x) for one image, with p(x) summed over a grid of cells, for a model of
    one continuous latent site z of 1 or 2 dimensions (:func:`grid_site`).

    .. math::

        \\log p(x) \\approx \\log \\sum_j p(x, z_j)\\, \\Delta, \\qquad
        \\log p(z_j \\mid x) = \\log p(x, z_j) - \\log p(x)

    over cell centres z_j of volume Delta, log p(x, z_j) being the sum of every site's log-density
    in the model's trace conditioned on z = z_j. The grid must cover the posterior's mass and its
    cells be small beside the posterior's width; then the sum is accurate to well under 0.01 nats
    (a reference for importance sampling's estimate).

    :param x: one image ``(x_dim,)``.
    :param bounds: ``(low, high)`` per latent dimension; ``None``: a box around the mass of p(z|x),
        found on a coarse grid spanning the bulk of p(z) and of q(z|x).
    :param size: G, cells per dimension.
    :param chunk: grid points per trace of the model.
    """
    site, event = grid_site(vae, like=x)
    m = math.prod(event)
    if bounds is not None and len(bounds) != m:
        raise ValueError(f"expected one (low, high) per latent dimension, {m}, got {len(bounds)}")
    if x.shape != (vae.x_dim,):
        raise ValueError(f"expected one image of shape ({vae.x_dim},), got {tuple(x.shape)}")
    if bounds is None:
        bounds = _posterior_bounds(vae, site, event, x)
    return _grid_posterior(vae, site, event, x, bounds, size, chunk)


def _grid_posterior(vae: GraphicalModel, site: str, event: torch.Size, x: Tensor,
                    bounds: Sequence[tuple[float, float]], size: int, chunk: int) -> PosteriorGrid:
    axes, z = _cell_centres(bounds, size, x)
    log_volume = sum(math.log((hi - lo) / size) for lo, hi in bounds)
    log_joint = torch.cat([_log_joint(vae, site, x, zc.reshape(-1, *event)) for zc in z.split(chunk)]).double()
    log_px = torch.logsumexp(log_joint, 0) + log_volume
    shape = (size,) * len(bounds)
    return PosteriorGrid(axes=axes, log_density=(log_joint - log_px).reshape(shape), log_px=float(log_px), site=site)


def _posterior_bounds(vae: GraphicalModel, site: str, event: torch.Size, x: Tensor) -> list[tuple[float, float]]:
    """A box holding p(z|x)'s mass: where a coarse grid finds density within e^-14 of the largest,
    widened by a coarse cell and by q's own bulk. The coarse grid starts on the bulk of p(z) (draws
    of the site in the model's own trace) and of q(z|x) (the guide's) and grows while the
    posterior's mass reaches its edge."""
    m = math.prod(event)
    prior_draws = prior_trace(vae, 4000, like=x).nodes[site]["value"].reshape(4000, m).double().cpu()
    q_draws = guide_distribution(vae, site, x).sample((4000,)).reshape(4000, m).double().cpu()
    q_lo, q_hi = q_draws.quantile(0.0005, dim=0), q_draws.quantile(0.9995, dim=0)
    lo = torch.minimum(prior_draws.quantile(0.001, dim=0), q_lo).tolist()
    hi = torch.maximum(prior_draws.quantile(0.999, dim=0), q_hi).tolist()
    size = 48
    for _ in range(6):
        coarse = _grid_posterior(vae, site, event, x, list(zip(lo, hi)), size, 4096)
        keep = coarse.log_density >= coarse.log_density.max() - 14
        # z_d runs along tensor dimension m - 1 - d of log_density (see PosteriorGrid)
        occupied = [
            (keep.any(dim=others) if others else keep).nonzero().squeeze(-1)
            for d in range(m)
            for others in [tuple(i for i in range(m) if i != m - 1 - d)]
        ]
        grown = False
        for d, idx in enumerate(occupied):
            width = hi[d] - lo[d]
            if int(idx.min()) == 0:
                lo[d], grown = lo[d] - width / 2, True
            if int(idx.max()) == size - 1:
                hi[d], grown = hi[d] + width / 2, True
        if not grown:
            break
    bounds = []
    for d, (axis, idx) in enumerate(zip(coarse.axes, occupied)):
        step = float(axis[1] - axis[0])
        low = min(float(axis[idx.min()]) - step, float(q_lo[d]))
        high = max(float(axis[idx.max()]) + step, float(q_hi[d]))
        bounds.append((low, high))
    return bounds
