"""Per-image ELBO of a model and its parts per latent site, for any graphical model (read from its traces).

.. math::

    \\mathrm{ELBO}(x) = \\underbrace{E_q[\\log p(x \\mid \\ldots)]}_{\\text{reconstruction}}
        - \\sum_{s \\,\\in\\, \\text{latent sites}} \\underbrace{E_q[\\log q(s \\mid \\ldots) - \\log p(s \\mid \\ldots)]}_{\\text{kl of site } s}

For the VAE the one latent site is z and its term is KL(q(z|x) || p(z)); for two layers each
layer has its term. A site's term is computed in closed form when the model draws it from no other
latent (a root of the model's graph, such as p(z) or p(z2)) and Pyro/PyTorch know KL(q || p) for the
pair, and by Monte Carlo from the same draws otherwise. "Closed form" is at that site only: when
the guide draws the site from other latents (q(z2|z1)), the KL given them is exact and the average
over their draws is still Monte Carlo. A discrete latent of the guide (M2's label) is enumerated:
every term is averaged over its values with the weights q(y|x), exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.distributions import kl_divergence

from pvae.data import check_images
from pvae.inference.importance import latent_activity
from pvae.inference.structure import model_structure
from pvae.inference.traces import (
    enumerated_sites,
    is_discrete,
    latent_sites,
    observed_sites,
    per_image,
    site_log_prob,
    trace_pair,
)
from pvae.protocol import GraphicalModel, label_mode

__all__ = ["ElboTerms", "elbo_terms", "classify", "active_units_by_site"]


@dataclass(frozen=True)
class ElboTerms:
    """Per-image estimates, each ``(N,)``, in nats: ``elbo = reconstruction - kl`` (higher is better).

    :ivar reconstruction: E_q of the observed sites' log-density (log p(x | ...)).
    :ivar kl: the sum of the latent sites' terms.
    :ivar kl_by_site: each site's term, in program order.
    :ivar analytic_by_site: whether each site's term is in closed form at that site (KL(q || p) given
        the site's parents in the guide, or summed by enumeration); Monte Carlo otherwise.
    """

    elbo: Tensor
    reconstruction: Tensor
    kl: Tensor
    kl_is_analytic: bool
    kl_by_site: dict[str, Tensor] = field(default_factory=dict)
    analytic_by_site: dict[str, bool] = field(default_factory=dict)


def _root_sites(model: GraphicalModel, x: Tensor, args: tuple[Any, ...]) -> set[str]:
    """Latent sites the model draws from no other latent (their KL may be taken in closed form)."""
    return set(model_structure(model, x=x, y=args[0] if args else None).root_latent)


@torch.no_grad()
def elbo_terms(
    model: GraphicalModel, x: Tensor, *args: Tensor, num_samples: int = 1, batch_size: int = 1000
) -> ElboTerms:
    """Estimate ELBO(x), its reconstruction term and each latent site's KL term, image by image.

    :param x: images ``(N, x_dim)``.
    :param args: per-image tensors model and guide take besides (a class-conditional model's
        labels ``(N,)``).
    :param num_samples: draws of the continuous latents per image, averaged.
    :param batch_size: images per chunk (memory is ``O(batch_size * num_samples * x_dim)``).
    :returns: per-image terms, unaffected by the plate's minibatch scale.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    check_images(x, model.x_dim)
    if label_mode(model) == "observed" and not args:
        raise ValueError(f"this model is conditioned on the labels y: pass them after the images, "
                         f"elbo_terms(model, x, y) with y of shape ({x.shape[0]},)")
    for a in args:
        if a.shape[:1] != x.shape[:1]:
            raise ValueError(f"expected one label per image, shape ({x.shape[0]},), got {tuple(a.shape)}")
    roots = _root_sites(model, x[:2], tuple(a[:2] for a in args))
    recon: list[Tensor] = []
    kls: dict[str, list[Tensor]] = {}
    analytic: dict[str, bool] = {}
    for first in range(0, x.shape[0], batch_size):
        xb = x[first : first + batch_size]
        argsb = tuple(a[first : first + batch_size] for a in args)
        guide_tr, model_tr, ndim = trace_pair(model.model, model.guide, xb, *argsb, num_particles=num_samples,
                                              enumerate_discrete=True)
        summed = enumerated_sites(guide_tr)
        # The weight of each enumerated value (of every combination, for several): prod q(y|x).
        log_weight: Tensor | float = 0.0
        for name in summed:
            log_weight = log_weight + site_log_prob(guide_tr.nodes[name], "guide", ndim, enumerated=len(summed))

        def expect(term: Tensor) -> Tensor:
            if summed:
                assert isinstance(log_weight, Tensor)
                full = torch.broadcast_shapes(term.shape, log_weight.shape)
                term = (log_weight.exp().expand(full) * term.expand(full)).reshape(-1, *full[-2:]).sum(0)
            return term.mean(0)  # over the draws of the continuous latents

        recon.append(expect(sum(site_log_prob(model_tr.nodes[n], "model", ndim, enumerated=len(summed))
                                for n in observed_sites(model_tr))))  # type: ignore[arg-type]
        for name in latent_sites(model_tr):
            q_site, p_site = guide_tr.nodes[name], model_tr.nodes[name]
            term, exact = None, name in summed
            if not exact and name in roots:
                try:
                    term = per_image(kl_divergence(q_site["fn"], p_site["fn"]), q_site, ndim, enumerated=len(summed))
                    exact = True
                except NotImplementedError:
                    term = None
            if term is None:
                term = (site_log_prob(q_site, "guide", ndim, enumerated=len(summed))
                        - site_log_prob(p_site, "model", ndim, enumerated=len(summed)))
            kls.setdefault(name, []).append(expect(term))
            analytic[name] = analytic.get(name, True) and exact
    reconstruction = torch.cat(recon)
    kl_by_site = {name: torch.cat(parts) for name, parts in kls.items()}
    kl = sum(kl_by_site.values(), torch.zeros_like(reconstruction))
    return ElboTerms(reconstruction - kl, reconstruction, kl, all(analytic.values()), kl_by_site, analytic)


@torch.no_grad()
def classify(model: GraphicalModel, x: Tensor, site: str, *, batch_size: int = 1000) -> Tensor:
    """The guide's most probable class of each image, argmax q(y|x), read from its site ``site``.

    :param x: images ``(N, x_dim)``.
    :param site: the label's site name (:attr:`ModelStructure.label <pvae.inference.structure.ModelStructure.label>`).
    :returns: ``(N,)`` integer classes.
    """
    from pyro import poutine

    predicted = []
    for xb in x.split(batch_size):
        trace = poutine.trace(model.guide).get_trace(xb)
        if site not in trace.nodes or not is_discrete(trace.nodes[site]):
            raise ValueError(f"the guide has no discrete site {site!r} to classify with")
        predicted.append(trace.nodes[site]["fn"].probs.argmax(-1).reshape(xb.shape[0]))
    return torch.cat(predicted)


def active_units_by_site(model: GraphicalModel, x: Tensor, *args: Tensor, threshold: float = 0.01) -> dict[str, int]:
    """Active units of every continuous latent site (Burda et al. 2016: Cov_x E_q[u] > 0.01).

    :param x: images ``(N, x_dim)``, N >= 2.
    :param args: per-image labels for a model conditioned on them.
    :returns: site name -> number of active units, in the model's order.
    """
    if label_mode(model) == "observed" and not args:
        raise ValueError("this model is conditioned on the labels y: pass them after the images")
    _, model_trace, _ = trace_pair(model.model, model.guide, x[:2], *(a[:2] for a in args), enumerate_discrete=False)
    sites = [n for n in latent_sites(model_trace) if not is_discrete(model_trace.nodes[n])]
    return {name: int((latent_activity(model.guide, x, *args, site=name) > threshold).sum()) for name in sites}
