"""log p(x) image by image, by importance sampling with the guide as proposal.

.. math::

    \\log \\hat p_K(x_i) = \\log \\frac{1}{K} \\sum_{k=1}^K w_{ik}, \\qquad
    w_{ik} = \\frac{p(x_i, z_{ik})}{q(z_{ik} \\mid x_i)}, \\qquad z_{ik} \\sim q(z \\mid x_i)

(Burda, Grosse & Salakhutdinov 2016, "Importance Weighted Autoencoders", eq. 8). The estimate is a
lower bound on log p(x_i) in expectation that tightens as K grows; from the same draws come the
ELBO, :math:`\\frac{1}{K} \\sum_k \\log w_{ik}`, and the effective sample size of the normalized
weights, :math:`(\\sum_k w_{ik})^2 / \\sum_k w_{ik}^2`. Since the ELBO equals
:math:`\\log p(x) - KL(q(z|x) \\,\\|\\, p(z|x))`, ``log_px - elbo`` estimates that KL image by image.

Works for any Pyro model/guide pair that takes the images as first argument and keeps them in a
plate (named ``"data"`` by default): the guide is traced under a vectorized particles plate, the
model replayed against it, and every sample site's *unscaled* ``log_prob`` summed over all
dimensions but the particles and the images.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from pyro import poutine
from pyro.ops.stats import fit_generalized_pareto
from pyro.poutine import Trace
from torch import Tensor

from pvae.devices import raise_malloc_thresholds
from pvae.inference.traces import enumerated_sites, flatten_enum, sample_sites, site_log_prob, sum_sites, trace_pair
from pvae.parts.guides import central_value

__all__ = [
    "ImportanceEstimate",
    "PerImageLogPx",
    "LogWeights",
    "log_importance_weights",
    "importance_estimate",
    "log_marginal_likelihood",
    "latent_activity",
    "active_units",
    "DEFAULT_CHUNK_SIZE",
    "chunk_args",
]

# Pairs (particle, image) per vectorized pass. The decoder's output, (pairs, x_dim) floats, and a few
# temporaries of its size dominate memory and time: at 4096 pairs and 784 pixels they are 13 MB each and
# stay in a CPU's last-level cache, which made the estimator twice as fast as with 32768 on a 32 MB-L3
# CPU (bench/log_px_speed.py), while Pyro's overhead per pass stays a few percent. A GPU wants more.
DEFAULT_CHUNK_SIZE = 4096


class LogWeights(NamedTuple):
    """Per-image log importance weights of a batch, the minibatch scale of its data plate, and the
    traces they come from (the guide's holds the draws z)."""

    log_weights: Tensor  # (num_particles, batch)
    scale: float  # N / B when the data plate subsamples B of N images (times any poutine.scale), else 1
    model_trace: Trace
    guide_trace: Trace


def log_importance_weights(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    x: Tensor,
    *args: Any,
    num_particles: int,
    data_plate: str = "data",
    max_plate_nesting: int = 1,
    dtype: torch.dtype | None = None,
    enumerate_discrete: bool = True,
    **kwargs: Any,
) -> LogWeights:
    """log w_ik = log p(x_i, z_ik) - log q(z_ik | x_i) for z_ik ~ q(z | x_i), one draw per particle.

    Differentiable (through reparameterized draws and the parameters); the caller decides about
    ``torch.no_grad``.

    :param model: ``model(x, *args, **kwargs)``, every sample site inside the plate ``data_plate``.
    :param guide: ``guide(x, *args, **kwargs)``, same requirement.
    :param x: the images, ``(batch, ...)``; the data plate's dimension indexes them.
    :param num_particles: K, draws per image, vectorized in a plate left of all model plates.
    :param data_plate: name of the plate over images.
    :param max_plate_nesting: how many plates the model and guide nest (1: only the data plate);
        the particles take the dimension ``-(max_plate_nesting + 1)``.
    :param dtype: the dtype of the returned weights (each site's sum is cast before adding them);
        ``None``: the model's.
    :param enumerate_discrete: sum the guide's discrete latent sites (a label y, say) out exactly:
        each particle's weight is then :math:`\\sum_y p(x, y, z_y) / q(z_y | x, y)` with one draw z_y
        per value, an unbiased estimate of p(x) whose y-part has no sampling noise. ``False``: draw
        them from the guide like every other latent (their q(y|x) then enters the weight).
    :returns: ``log_weights`` of shape ``(num_particles, batch)``, from full, per-image log-densities
        (not multiplied by the N / B of a subsampled plate), that ``scale``, and the two traces.
    """
    paired = trace_pair(model, guide, x, *args, num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                        enumerate_discrete=enumerate_discrete, **kwargs)
    guide_trace, model_trace, ndim = paired
    summed = set(enumerated_sites(guide_trace))
    log_probs: list[Tensor] = []
    scales: dict[str, float] = {}
    for role, trace, sign in (("model", model_trace, 1.0), ("guide", guide_trace, -1.0)):
        for name, site in sample_sites(trace).items():
            if role == "guide" and (site["is_observed"] or name in summed):
                # An enumerated site is summed over exactly, not proposed: its q(y|x) has no place in the weight.
                continue
            if role == "model" and not site["is_observed"] and name not in guide_trace.nodes:
                # The model would draw it from its prior, and the weight would miss that proposal's density.
                raise ValueError(
                    f"the model's latent site {name!r} is not in the guide; the guide must propose every latent"
                )
            lp = site_log_prob(site, role, ndim, data_plate=data_plate, enumerated=len(summed))
            log_probs.append(sign * (lp if dtype is None else lp.to(dtype)))
            scales[f"{role} site {name!r}"] = float(site["scale"])
    if not log_probs:
        raise ValueError("the model and guide have no sample sites")
    if len(set(scales.values())) > 1:
        raise ValueError(
            f"expected one minibatch scale shared by every site (the data plate's N / B), got {scales}; "
            "a poutine.scale on part of the model has no meaning inside an importance weight"
        )
    log_w = flatten_enum(sum_sites(log_probs))
    return LogWeights(log_w.expand(num_particles, x.shape[0]), next(iter(scales.values())), model_trace, guide_trace)


class PerImageLogPx:
    """The mean over images of a per-image estimate ``log_px`` ``(N,)`` and its standard error, for
    the results of importance sampling and of AIS alike."""

    log_px: Tensor

    @property
    def log_px_mean(self) -> float:
        """The mean of log_px over images."""
        return self.log_px.mean().item()

    @property
    def log_px_stderr(self) -> float:
        """Standard error of :attr:`log_px_mean` over images (std / sqrt(N); 0 for a single image)."""
        n = self.log_px.numel()
        return (self.log_px.std() / math.sqrt(n)).item() if n > 1 else 0.0


@dataclass(frozen=True)
class ImportanceEstimate(PerImageLogPx):
    """Per-image results of importance sampling, each ``(N,)`` float64 in nats unless said otherwise.

    :ivar log_px: log (1/K) sum_k w_ik, the estimate of log p(x_i) (higher is better).
    :ivar elbo: (1/K) sum_k log w_ik, the ELBO from the same draws.
    :ivar ess: effective sample size (sum_k w_ik)^2 / sum_k w_ik^2, between 1 and K.
    :ivar pareto_k: Pareto k-hat of the weights' tail (Vehtari et al., "Pareto Smoothed Importance
        Sampling"; above 0.7 the estimate is unreliable), or ``None`` when not asked for.
    :ivar num_samples: K.
    """

    log_px: Tensor
    elbo: Tensor
    ess: Tensor
    pareto_k: Tensor | None
    num_samples: int

    @property
    def kl_gap(self) -> Tensor:
        """log_px - elbo, ``(N,)``: an estimate of KL(q(z|x_i) || p(z|x_i)), >= 0 by Jensen on the same draws."""
        return self.log_px - self.elbo


@torch.no_grad()
def importance_estimate(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    x: Tensor,
    *args: Any,
    num_samples: int,
    data_plate: str = "data",
    max_plate_nesting: int = 1,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    pareto_k: bool = False,
    enumerate_discrete: bool = True,
    progress: Callable[[int], object] | None = None,
    **kwargs: Any,
) -> ImportanceEstimate:
    """Estimate log p(x_i) for every image, with the ELBO, the ESS and optionally Pareto k-hat.

    Particles are vectorized and split into chunks of at most ``chunk_size`` (particle, image) pairs,
    over particles and over images, so memory stays bounded whatever K and N; the chunks' log-sum-exps
    are combined in float64.

    :param model: ``model(x, *args, **kwargs)``; every sample site inside the plate ``data_plate``.
    :param guide: the proposal ``guide(x, *args, **kwargs)``, same sites, reparameterized or not.
    :param x: images ``(N, ...)``; cut into chunks along dim 0. Tensors in ``args`` whose first
        dimension is N are per-image (a class-conditional model's labels) and are cut with ``x``;
        other ``args`` and ``kwargs`` go unchanged to every chunk.
    :param num_samples: K, importance samples per image.
    :param data_plate: the plate over images.
    :param max_plate_nesting: plates nested in the model (default 1: only the data plate), see
        :func:`log_importance_weights`.
    :param chunk_size: most (particle, image) pairs per pass; memory is ``O(chunk_size * x_dim)``.
    :param pareto_k: also fit Pareto k-hat per image (keeps the largest ~3 sqrt(K) weights of each image).
    :param enumerate_discrete: sum discrete latent sites of the guide out exactly (default), or sample
        them (see :func:`log_importance_weights`). Summed, the ``elbo`` of the result is the bound of
        one particle with those sites summed, tighter than the ELBO.
    :param progress: called with the number of images just finished after each chunk of images
        (e.g. a tqdm bar's ``update``), for a progress display of long estimates.
    :returns: per-image estimates, see :class:`ImportanceEstimate`.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 (particle, image) pair, got {chunk_size}")
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"expected a batch of images (N, ...) with N >= 1, got shape {tuple(x.shape)}")
    if x.device.type == "cpu":
        raise_malloc_thresholds()
    images_per_chunk = max(1, min(x.shape[0], chunk_size // num_samples))
    # Equal particle chunks (5000 in two of 2500, not 4096 + 904): the per-pass overhead is paid least.
    particles_per_chunk = math.ceil(num_samples / math.ceil(num_samples / chunk_size))
    # The tail that PSIS fits: the largest min(K/5, 3 sqrt(K)) weights, as in pyro.infer.importance.psis_diagnostic.
    tail = math.ceil(min(0.2 * num_samples, 3.0 * math.sqrt(num_samples))) + 1
    # Per image, three running sums over particles: log sum w, log sum w^2 and sum log w. Allocated
    # once, so that no small tensor outlives a chunk between its large temporaries: such leftovers
    # fragment the C heap, which then kept gigabytes it could not give back.
    sums = x.new_zeros((3, x.shape[0]), dtype=torch.float64)
    sums[:2] = -math.inf
    k_hat = x.new_full((x.shape[0],), math.inf, dtype=torch.float64) if pareto_k else None
    for first in range(0, x.shape[0], images_per_chunk):
        xb = x[first : first + images_per_chunk]
        argsb = chunk_args(args, x.shape[0], first, xb.shape[0])
        lse, lse_sq, total = sums[:, first : first + xb.shape[0]]
        top = lse.new_empty((0, xb.shape[0]))
        for start in range(0, num_samples, particles_per_chunk):
            log_w = log_importance_weights(
                model, guide, xb, *argsb, num_particles=min(particles_per_chunk, num_samples - start),
                data_plate=data_plate, max_plate_nesting=max_plate_nesting, dtype=torch.float64,
                enumerate_discrete=enumerate_discrete, **kwargs,
            ).log_weights
            torch.logaddexp(lse, log_w.logsumexp(0), out=lse)
            torch.logaddexp(lse_sq, (2 * log_w).logsumexp(0), out=lse_sq)
            total += log_w.sum(0)
            if k_hat is not None:
                top = torch.cat([top, log_w]).topk(min(tail, top.shape[0] + log_w.shape[0]), dim=0).values
        if k_hat is not None:
            for i, top_i in enumerate(top.T):
                k_hat[first + i] = _pareto_k(top_i)
        if progress is not None:
            progress(xb.shape[0])
    lse, lse_sq, total = sums
    return ImportanceEstimate(
        log_px=lse - math.log(num_samples),
        elbo=total / num_samples,
        ess=torch.exp(2 * lse - lse_sq),
        pareto_k=k_hat,
        num_samples=num_samples,
    )


def chunk_args(args: tuple[Any, ...], num_images: int, first: int, size: int) -> tuple[Any, ...]:
    """``args`` for the images ``first .. first + size``: per-image tensors (first dim N) cut, others kept."""
    return tuple(a[first : first + size] if isinstance(a, Tensor) and a.dim() and a.shape[0] == num_images else a
                 for a in args)


@functools.cache
def _pareto_k(top_log_w: Tensor) -> float:
    """k-hat of one image from its largest min(K/5, 3 sqrt(K)) + 1 log-weights (descending), as in Pyro's
    psis_diagnostic; the smallest of them is the cutoff."""
    log_w = top_log_w - top_log_w[0]
    cutoff = max(math.log(1e-15), log_w[-1].item())
    log_tail = log_w[log_w > cutoff]
    if len(log_tail) < 10:
        return math.inf  # too few samples in the tail to fit (K below about 50)
    k, _ = fit_generalized_pareto(log_tail.exp() - math.exp(cutoff))
    return k


def log_marginal_likelihood(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    x: Tensor,
    *args: Any,
    num_samples: int,
    data_plate: str = "data",
    max_plate_nesting: int = 1,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    enumerate_discrete: bool = True,
    **kwargs: Any,
) -> Tensor:
    """log p(x_i) of every image by importance sampling with the guide as proposal, in nats.

    Pyro's argument validation, when on, re-checks every chunk's distributions (a pass over the decoder's
    output each); once the data's support is known to be right, ``with pyro.validation_enabled(False):``
    saves that time, as ``pvae evaluate`` does.

    :returns: ``(N,)`` float64, higher is better. See :func:`importance_estimate` for the
        parameters and for the ELBO, ESS and Pareto k-hat from the same draws.
    """
    return importance_estimate(
        model, guide, x, *args, num_samples=num_samples, data_plate=data_plate,
        max_plate_nesting=max_plate_nesting, chunk_size=chunk_size, enumerate_discrete=enumerate_discrete, **kwargs,
    ).log_px


@torch.no_grad()
def latent_activity(
    guide: Callable[..., Any], x: Tensor, *args: Any, site: str = "z", batch_size: int = 1000, **kwargs: Any
) -> Tensor:
    """Cov_x(E_q[z_u | x]) for each latent unit u: how much the posterior mean moves across images.

    :param guide: ``guide(x, *args, **kwargs)`` with a sample site ``site``. Its distribution's ``mean``
        is used; for a flow, whose mean has no closed form, the image of the base distribution's mean
        (:func:`pvae.parts.guides.central_value`).
    :param x: images ``(N, ...)``, N >= 2.
    :returns: ``(z_dim,)`` float64, the variance over images of each unit's posterior mean.
    """
    if x.shape[0] < 2:
        raise ValueError(f"latent activity is a variance over images and needs N >= 2, got {x.shape[0]}")
    means = []
    for first in range(0, x.shape[0], batch_size):
        xb = x[first : first + batch_size]
        trace = poutine.trace(guide).get_trace(xb, *chunk_args(args, x.shape[0], first, xb.shape[0]), **kwargs)
        if site not in trace.nodes:
            raise ValueError(f"the guide has no sample site {site!r}; its sites: {list(trace.nodes)}")
        means.append(central_value(trace.nodes[site]["fn"]).reshape(xb.shape[0], -1))
    return torch.cat(means).double().var(0)


def active_units(
    guide: Callable[..., Any], x: Tensor, *args: Any, site: str = "z", threshold: float = 0.01, **kwargs: Any
) -> int:
    """Number of active latent units, Cov_x(E_q[z_u | x]) > ``threshold`` (Burda et al. 2016, section 5.2)."""
    return int((latent_activity(guide, x, *args, site=site, **kwargs) > threshold).sum())
