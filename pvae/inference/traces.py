"""The one computation every consumer shares: trace the guide, replay the model against it, and
split each sample site's log-density image by image.

What a consumer knows of a model it reads here, from the traces: which sites are latent (sampled
by the guide), which observed, which observed site holds the images (the one whose value *is* the
``x`` passed in), which latent site is a label (a discrete site the model observes when ``y`` is
passed), and each site's per-image log-density. Discrete latent sites of the guide can be
enumerated (``enumerate_discrete=True``): Pyro's ``poutine.enum`` then gives each one a dimension of
its own, left of the particles, holding every value of its support at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer.enum import config_enumerate
from pyro.poutine import Trace
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor

from pvae.inference.pyro_internals import enumerated_dim
from pvae.protocol import DATA_PLATE

__all__ = [
    "PairedTraces",
    "PARTICLES",
    "trace_pair",
    "site_log_prob",
    "latent_sites",
    "observed_sites",
    "image_site",
    "enumerated_sites",
    "is_discrete",
    "sample_sites",
    "sum_sites",
    "per_image",
    "check_data_support",
    "check_model_traces",
    "flatten_enum",
]

PARTICLES = "_pvae_particles"


class PairedTraces(NamedTuple):
    """The guide's trace, the model's replayed against it, and the batch dims they use (the
    particles' and the model's plates; enumerated sites take dims left of these)."""

    guide: Trace
    model: Trace
    ndim: int


def sample_sites(trace: Trace) -> dict[str, dict[str, Any]]:
    """The trace's sample sites (no subsample sites), by name, in program order."""
    return {name: site for name, site in trace.nodes.items() if site["type"] == "sample"}


def latent_sites(model_trace: Trace) -> list[str]:
    """The latent (not observed) sample sites of a trace, in program order: the one definition that
    estimators, predictions and figures read (a whole model's, once: :attr:`ModelStructure.latent
    <pvae.inference.structure.ModelStructure.latent>`)."""
    return [name for name, site in sample_sites(model_trace).items() if not site["is_observed"]]


def observed_sites(model_trace: Trace) -> list[str]:
    """The model's observed sample sites, in program order."""
    return [name for name, site in sample_sites(model_trace).items() if site["is_observed"]]


def image_site(model_trace: Trace, x: Tensor) -> str:
    """The observed site that holds the images ``x`` (its value is the very tensor passed in).

    :raises ValueError: when no observed site, or more than one, holds ``x``.
    """
    names = [name for name, site in sample_sites(model_trace).items() if site["is_observed"] and site["value"] is x]
    if len(names) != 1:
        observed = observed_sites(model_trace)
        raise ValueError(
            f"expected exactly one observed site of the model to hold the images x (obs=x), found {names or 'none'} "
            f"among the observed sites {observed}"
        )
    return names[0]


def is_discrete(site: dict[str, Any]) -> bool:
    """Whether a sample site's distribution has a finite support Pyro can enumerate."""
    return bool(getattr(site["fn"], "has_enumerate_support", False))


def enumerated_sites(guide_trace: Trace) -> list[str]:
    """The guide's sites that an enumeration handler enumerated (their ``infer`` says so)."""
    return [
        name
        for name, site in sample_sites(guide_trace).items()
        if not site["is_observed"] and enumerated_dim(site) is not None
    ]


def trace_pair(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    x: Tensor,
    *args: Any,
    num_particles: int = 1,
    max_plate_nesting: int = 1,
    enumerate_discrete: bool = False,
    **kwargs: Any,
) -> PairedTraces:
    """Trace ``guide(x, *args, **kwargs)`` under a vectorized particles plate and replay the model.

    :param num_particles: K draws per image, in a plate at dim ``-(max_plate_nesting + 1)``.
    :param max_plate_nesting: plates the model nests (1: the data plate).
    :param enumerate_discrete: enumerate the guide's discrete latent sites (all values at once, in
        dims left of the particles) instead of sampling them.
    :returns: the pruned traces (no subsample sites) and ``ndim = max_plate_nesting + 1``.
    :raises ValueError: when the programs nest more plates than ``max_plate_nesting`` says.
    """
    if num_particles < 1:
        raise ValueError(f"num_particles must be >= 1, got {num_particles}")
    if max_plate_nesting < 1:
        raise ValueError(f"max_plate_nesting must be >= 1 (the data plate), got {max_plate_nesting}")
    ndim = max_plate_nesting + 1
    program = guide
    if enumerate_discrete:
        program = poutine.enum(config_enumerate(guide, default="parallel"), first_available_dim=-(ndim + 1))
    try:
        with pyro.plate(PARTICLES, num_particles, dim=-ndim):
            guide_trace = poutine.trace(program).get_trace(x, *args, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, *args, **kwargs)
    except ValueError as err:
        if PARTICLES not in str(err):
            raise
        raise ValueError(
            f"a plate of the model or guide wants the particles' dim {-ndim}: they nest more plates than "
            f"max_plate_nesting={max_plate_nesting}; pass max_plate_nesting={max_plate_nesting + 1} or more ({err})"
        ) from err
    return PairedTraces(prune_subsample_sites(guide_trace), prune_subsample_sites(model_trace), ndim)


def site_log_prob(
    site: dict[str, Any], role: str, ndim: int, *, data_plate: str = DATA_PLATE, enumerated: int = 0
) -> Tensor:
    """A site's log-density summed over its event and over every plate but the particles' and the images'.

    Unscaled on purpose: a subsampled plate's N / B scale is a property of SVI's loss, not of
    p(x_i, z_i). Masks apply.

    :param role: ``"model"`` or ``"guide"``, for messages.
    :param ndim: from :func:`trace_pair`.
    :param enumerated: how many sites the traces enumerate (``len(enumerated_sites(guide_trace))``):
        up to that many dims left of the particles' are enumeration dims, kept as they are; any
        other extra dim is an error.
    :returns: ``(particles, batch)``, or with enumerated sites in the trace ``(E_n, ..., E_1,
        particles, batch)`` where each E is 1 or an enumerated site's number of values.
    :raises ValueError: for a site outside the data plate, or one with batch dims no plate declares.
    """
    name = site["name"]
    frames = {f.name: f for f in site["cond_indep_stack"] if f.vectorized}
    if data_plate not in frames:
        raise ValueError(
            f"the {role}'s sample site {name!r} is outside the plate {data_plate!r}, so its log-density "
            f"cannot be split image by image (plates around it: {sorted(frames) or 'none'}); put every sample "
            f"site inside the data plate, or name that plate with data_plate=..."
        )
    for frame in frames.values():
        if frame.name != PARTICLES and frame.dim < -(ndim - 1):
            raise ValueError(
                f"plate {frame.name!r} of {role} site {name!r} uses dim {frame.dim}, deeper than "
                f"max_plate_nesting={ndim - 1}; pass max_plate_nesting={-frame.dim}"
            )
    lp = scale_and_mask(site["fn"].log_prob(site["value"]), mask=site["mask"])
    return per_image(lp, site, ndim, data_plate=data_plate, enumerated=enumerated, role=role)


def per_image(
    values: Tensor, site: dict[str, Any], ndim: int, *, data_plate: str = DATA_PLATE, enumerated: int = 0,
    role: str = "model",
) -> Tensor:
    """Any per-site tensor laid out like the site's log-density (a KL divergence, say), summed over
    every plate but the particles' and the images' (see :func:`site_log_prob`)."""
    name = site["name"]
    frames = {f.name: f for f in site["cond_indep_stack"] if f.vectorized}
    lp = values
    if lp.dim() - ndim > enumerated:
        raise ValueError(
            f"{role} site {name!r} has log_prob of shape {tuple(lp.shape)}, more batch dims than its plates; "
            "fold the extra dims into the event with .to_event(...)"
        )
    lp = lp.reshape((1,) * (ndim - lp.dim()) + lp.shape) if lp.dim() < ndim else lp
    data_dim = lp.dim() + frames[data_plate].dim
    particle_dim = lp.dim() - ndim
    other = [d for d in range(particle_dim + 1, lp.dim()) if d != data_dim]
    return lp.sum(other) if other else lp


def sum_sites(log_probs: Iterable[Tensor]) -> Tensor:
    """The sum of per-image log-densities of different shapes (broadcast; enumerated dims on the left)."""
    total: Tensor | float = 0.0
    for lp in log_probs:
        total = total + lp
    if not isinstance(total, Tensor):
        raise ValueError("no sample sites to sum")
    return total


def flatten_enum(log_w: Tensor, ndim: int = 2) -> Tensor:
    """Sum out enumeration exactly: log-sum-exp over every dim left of ``(particles, batch)``.

    :param log_w: ``(E_n, ..., E_1, particles, batch)`` or ``(particles, batch)``.
    :returns: ``(particles, batch)``.
    """
    while log_w.dim() > ndim:
        log_w = log_w.logsumexp(0)
    return log_w


def check_data_support(model: Any, x: Tensor, *args: Any) -> None:
    """Refuse images outside the support of the model's distribution for them, before any use.

    A model with a pvae likelihood (``model.likelihood.check_support``) gets that likelihood's
    message, which names the fix; any other model is checked at its image site (the observed site
    holding ``x``) against the site distribution's ``support``.

    :param x: images ``(N, x_dim)``.
    :param args: what model and guide take besides (labels).
    :raises ValueError: naming the site and how many values fall outside.
    """
    check = getattr(getattr(model, "likelihood", None), "check_support", None)
    if callable(check):
        check(x)
        return
    with torch.no_grad(), pyro.validation_enabled(False):
        _, model_trace, _ = trace_pair(model.model, model.guide, x, *args, enumerate_discrete=False)
    site = model_trace.nodes[image_site(model_trace, x)]
    inside = site["fn"].support.check(x)
    if not bool(inside.all()):
        bad = int((~inside).sum())
        raise ValueError(f"{bad} image values lie outside the support {site['fn'].support} of the model's site "
                         f"{site['name']!r}; transform the data or choose a fitting distribution")


def check_model_traces(model: Any, x: Tensor, *args: Any) -> None:
    """Check the protocol of :mod:`pvae.protocol` on a few images before anything is trained or
    written: model and guide run, one observed site holds the images, every latent of the model is
    proposed by the guide, and every site sits in the data plate.

    :param x: a few images ``(n, x_dim)``.
    :param args: what model and guide take besides.
    :raises ValueError: one line naming the site and the fix.
    """
    with torch.no_grad(), pyro.validation_enabled(False), poutine.block():
        guide_trace, model_trace, ndim = trace_pair(model.model, model.guide, x, *args, enumerate_discrete=True)
    image_site(model_trace, x)
    summed = len(enumerated_sites(guide_trace))
    for role, trace in (("model", model_trace), ("guide", guide_trace)):
        for name, site in sample_sites(trace).items():
            if role == "model" and not site["is_observed"] and name not in guide_trace.nodes:
                raise ValueError(f"the model's latent site {name!r} is not in the guide; the guide must propose "
                                 "every latent site of the model")
            site_log_prob(site, role, ndim, enumerated=summed)
