"""log p(x) image by image by annealed importance sampling (AIS) with Hamiltonian Monte Carlo
transitions, and bidirectional Monte Carlo (BDMC) bounds on simulated data.

AIS (Neal 2001, "Annealed Importance Sampling") moves each chain through a path of distributions
from the proposal q(z|x) (the guide, or the prior p(z)) to the posterior p(z|x), geometric averages

.. math::

    f_t(z) = q(z \\mid x)^{1 - \\beta_t} \\, p(x, z)^{\\beta_t}, \\qquad
    0 = \\beta_0 < \\beta_1 < \\dots < \\beta_T = 1,

and weights it by how much more probable each distribution finds the chain's state than the one
before:

.. math::

    \\log w = \\sum_{t=1}^{T} \\log \\frac{f_t(z_{t-1})}{f_{t-1}(z_{t-1})}
            = \\sum_{t=1}^{T} (\\beta_t - \\beta_{t-1}) \\,
              \\bigl[\\log p(x, z_{t-1}) - \\log q(z_{t-1} \\mid x)\\bigr],

    z_0 \\sim q(z \\mid x), \\qquad z_t \\sim \\mathcal{T}_t(\\cdot \\mid z_{t-1}) \\;\\; (t < T),

where the transition :math:`\\mathcal{T}_t` leaves :math:`f_t` invariant. Then E[w] = p(x): with C
independent chains, :math:`\\log \\hat p(x) = \\log \\frac{1}{C} \\sum_c w_c` is a stochastic lower
bound on log p(x) (E[log p-hat] <= log p(x) by Jensen), which tightens as T grows. With T = 1 the
sum has one term and no transition is made: it is importance sampling with the proposal, K = C.

The transitions here are Hamiltonian Monte Carlo moves (Neal 2011, "MCMC Using Hamiltonian
Dynamics") on every latent site jointly, in unconstrained space (each site mapped by
``biject_to(support)``, its log-Jacobian added to both ends of the path), with L leapfrog steps and
a step size adapted per image towards an acceptance rate of 0.65, as in Wu, Burda, Salakhutdinov &
Grosse (2017), "On the Quantitative Analysis of Decoder-Based Generative Models", whose sigmoid
schedule is the default.

Reverse AIS runs the same path from p(z|x) back to q(z|x), started from an exact posterior draw,
and estimates 1/p(x) without bias: minus its log is a stochastic *upper* bound. On data simulated
from the model (z ~ p(z), x ~ p(x|z)), the z that generated x is such a draw, so forward and
reverse AIS sandwich the true log p(x) (Grosse, Ghahramani & Adams 2015, "Sandwiching the Marginal
Likelihood Using Bidirectional Monte Carlo"): :func:`simulate_data`, :func:`bdmc`.

Any Pyro model/guide pair whose latent sites are all continuous qualifies, as for
:mod:`pvae.inference.importance`: the guide is traced under a vectorized plate of chains, the model replayed
against it, and each site's *unscaled* log-density split image by image along the data plate. A
discrete latent (M2's label y) is refused: HMC cannot move it, and importance sampling sums it out
exactly.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import pyro
import torch
from pyro import poutine
from pyro.infer.inspect import get_model_relations
from pyro.poutine.uncondition_messenger import UnconditionMessenger
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor
from torch.distributions import biject_to
from torch.distributions.transforms import ComposeTransform, IndependentTransform, Transform, identity_transform

from pvae.devices import forked_rng, raise_malloc_thresholds
from pvae.inference.importance import DEFAULT_CHUNK_SIZE, PerImageLogPx, chunk_args
from pvae.inference.pyro_internals import is_subsample_site
from pvae.inference.traces import (
    PARTICLES,
    image_site,
    is_discrete,
    latent_sites,
    per_image,
    sample_sites,
    site_log_prob,
    sum_sites,
    trace_pair,
)
from pvae.protocol import DATA_PLATE

__all__ = [
    "AISSettings",
    "AISEstimate",
    "BDMCResult",
    "SimulatedData",
    "SCHEDULES",
    "PROPOSALS",
    "annealing_schedule",
    "ais_estimate",
    "ais_log_marginal_likelihood",
    "reverse_ais_estimate",
    "simulate_data",
    "bdmc",
]

SCHEDULES = ("sigmoid", "linear")
PROPOSALS = ("guide", "prior")

# Step-size adaptation, as in Wu et al.'s code (eval_gen, algorithms/hmc.py): an exponential moving
# average of the acceptance rate (weight 0.1 on the newest transition), the step multiplied by 1.02
# while that average is above the target and by 0.98 otherwise, kept within bounds.
_ACCEPTANCE_SLOWNESS = 0.9
_STEP_INCREASE, _STEP_DECREASE = 1.02, 0.98


def annealing_schedule(num_steps: int, kind: str = "sigmoid", *, sharpness: float = 4.0) -> Tensor:
    """The inverse temperatures beta_0 = 0 < ... < beta_T = 1 of the path.

    .. math::

        \\text{sigmoid:}\\; \\beta_t = \\frac{\\sigma(\\delta (2t/T - 1)) - \\sigma(-\\delta)}
        {\\sigma(\\delta) - \\sigma(-\\delta)}, \\qquad \\text{linear:}\\; \\beta_t = t / T

    The sigmoid schedule (Wu et al. 2017, section 6.2) spends more distributions near beta = 0 and
    beta = 1, where the path changes fastest.

    :param num_steps: T >= 1, the number of weight updates (T - 1 transitions).
    :param kind: ``"sigmoid"`` or ``"linear"``.
    :param sharpness: delta of the sigmoid schedule (4 in Wu et al.).
    :returns: ``(T + 1,)`` float64, starting at exactly 0 and ending at exactly 1.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    if kind == "linear":
        betas = t
    elif kind == "sigmoid":
        if sharpness <= 0:
            raise ValueError(f"the sigmoid schedule's sharpness must be > 0, got {sharpness}")
        g = torch.sigmoid(sharpness * (2 * t - 1))
        betas = (g - g[0]) / (g[-1] - g[0])
    else:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)} or a sequence of betas, got {kind!r}")
    betas[0], betas[-1] = 0.0, 1.0
    return betas


@dataclass(frozen=True)
class AISSettings:
    """The settings of one AIS path, shared by :func:`ais_estimate`, :func:`reverse_ais_estimate`
    and both directions of :func:`bdmc` (as ``Trace_ELBO(num_particles=...)`` holds an ELBO's).

    :param num_steps: T >= 1, the number of intermediate distributions after q (weight updates);
        T - 1 HMC transitions are made.
    :param num_leapfrog: L, leapfrog steps per HMC transition.
    :param num_chains: C, independent chains per image, combined by log-mean-exp of their weights.
    :param schedule: ``"sigmoid"`` (Wu et al.), ``"linear"``, or the T + 1 betas themselves.
    :param proposal: ``"guide"``: the path starts at q(z|x) (Wu et al.'s choice for VAEs);
        ``"prior"``: at the model's prior p(z), whatever the guide.
    :param step_size: the leapfrog step each image starts with, in unconstrained space.
    :param adapt_step_size: adapt it per image towards ``target_acceptance`` (``False``: fixed).
    :param target_acceptance: the acceptance rate the adaptation aims at (0.65, Wu et al.).
    :param step_size_bounds: ``(low, high)`` that the adapted step stays within.
    :param chunk_size: most (chain, image) pairs per pass; memory is ``O(chunk_size * x_dim)``.
    :param data_plate: the plate over images.
    :param max_plate_nesting: plates nested in the model (1: only the data plate).
    :raises ValueError: in ``__post_init__``, one line naming the parameter, for a setting out of range.
    """

    num_steps: int
    num_leapfrog: int = 10
    num_chains: int = 1
    schedule: str | Sequence[float] | Tensor = "sigmoid"
    proposal: str = "guide"
    step_size: float = 0.01
    adapt_step_size: bool = True
    target_acceptance: float = 0.65
    step_size_bounds: tuple[float, float] = (1e-4, 0.5)
    chunk_size: int = DEFAULT_CHUNK_SIZE
    data_plate: str = DATA_PLATE
    max_plate_nesting: int = 1

    def __post_init__(self) -> None:
        for name in ("num_steps", "num_leapfrog", "num_chains", "chunk_size", "max_plate_nesting"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.proposal not in PROPOSALS:
            raise ValueError(f"proposal must be one of {', '.join(PROPOSALS)}, got {self.proposal!r}")
        low, high = self.step_size_bounds
        if not 0 < low <= self.step_size <= high:
            raise ValueError(f"expected 0 < step_size_bounds[0] <= step_size <= step_size_bounds[1], got step_size="
                             f"{self.step_size} and bounds {self.step_size_bounds}")
        if not 0 < self.target_acceptance < 1:
            raise ValueError(f"target_acceptance must lie in (0, 1), got {self.target_acceptance}")
        self.betas()  # a schedule that is no path from q to p is refused here, before any draw

    def betas(self) -> tuple[list[float], str]:
        """The path's inverse temperatures ``beta_0 = 0 .. beta_T = 1`` and the schedule's name
        (``"custom"`` for given betas)."""
        return _schedule(self.schedule, self.num_steps)


@dataclass(frozen=True)
class AISEstimate(PerImageLogPx):
    """Per-image results of AIS, each ``(N,)`` float64 unless said otherwise.

    :ivar log_px: the estimate of log p(x_i) in nats. Forward: log (1/C) sum_c w_ic, a stochastic
        lower bound; reverse: -log (1/C) sum_c w_ic, a stochastic upper bound.
    :ivar log_weights: ``(C, N)``, log w of every chain. Forward chains estimate p(x) (E[w] = p(x));
        reverse chains estimate 1/p(x).
    :ivar acceptance_rate: the Metropolis acceptance probability, averaged over the T - 1 transitions
        and the C chains (NaN when T = 1: no transition is made).
    :ivar step_size: the leapfrog step size each image ended with (in unconstrained space).
    :ivar num_steps: T.
    :ivar num_leapfrog: L, leapfrog steps per transition.
    :ivar num_chains: C.
    :ivar schedule: ``"sigmoid"``, ``"linear"`` or ``"custom"``.
    :ivar proposal: ``"guide"`` (q(z|x)) or ``"prior"`` (p(z)): the start of the path.
    :ivar direction: ``"forward"`` (q to p(z|x), lower bound) or ``"reverse"`` (upper bound).
    :ivar initial_step_size: the step size each image started with.
    :ivar target_acceptance: the acceptance rate the step size was adapted towards; ``None``: fixed.
    :ivar seconds: wall-clock seconds the estimate took.
    """

    log_px: Tensor
    log_weights: Tensor
    acceptance_rate: Tensor
    step_size: Tensor
    num_steps: int
    num_leapfrog: int
    num_chains: int
    schedule: str
    proposal: str
    direction: str
    initial_step_size: float
    target_acceptance: float | None
    seconds: float

    @property
    def ess(self) -> Tensor:
        """``(N,)``: effective number of chains (sum_c w_c)^2 / sum_c w_c^2, between 1 and C."""
        return torch.exp(2 * self.log_weights.logsumexp(0) - (2 * self.log_weights).logsumexp(0))

    def summary(self) -> dict[str, Any]:
        """The estimate's settings and means, JSON-ready (NaN as ``None``), keys prefixed ``ais_``
        except ``log_px``, ``log_px_stderr`` and ``log_px_seconds`` (as ``evaluation.json`` names them)."""
        acc = self.acceptance_rate.mean().item()
        return {
            "log_px": self.log_px_mean,
            "log_px_stderr": self.log_px_stderr,
            "log_px_seconds": self.seconds,
            "ais_direction": self.direction,
            "ais_num_steps": self.num_steps,
            "ais_num_leapfrog": self.num_leapfrog,
            "ais_num_chains": self.num_chains,
            "ais_schedule": self.schedule,
            "ais_proposal": self.proposal,
            "ais_initial_step_size": self.initial_step_size,
            "ais_target_acceptance": self.target_acceptance,
            "ais_acceptance_rate_mean": None if math.isnan(acc) else acc,
            "ais_step_size_mean": self.step_size.mean().item(),
            "ais_ess_mean": self.ess.mean().item(),
        }


class _Site(NamedTuple):
    """Where one latent site lives in the flat unconstrained state ``(C, B, D)``."""

    name: str
    site: dict[str, Any]  # the site of the chunk's first trace: fn, mask, plates
    transform: Transform  # unconstrained -> support
    identity: bool  # the support is all of R^n: nothing to transform, a log-Jacobian of 0
    shape: torch.Size  # the unconstrained value's shape in the trace layout: (C, ..., B, ..., *event)
    perm: tuple[int, ...]  # puts the chains first and the images second
    inverse_perm: tuple[int, ...]
    offset: int
    size: int  # numbers per (chain, image)


class _Layout:
    """Maps the flat unconstrained state u ``(C, B, D)`` to every latent site's value in the traces'
    layout and back, with the log-abs-det-Jacobian of the map per (chain, image)."""

    def __init__(self, sites: dict[str, dict[str, Any]], ndim: int, num_chains: int, data_plate: str) -> None:
        self.ndim, self.data_plate, self.sites = ndim, data_plate, []
        offset = 0
        for name, site in sites.items():
            transform = biject_to(site["fn"].support)
            value = self._pad(site["value"], site)
            unconstrained = transform.inv(value)
            shape = torch.Size((num_chains, *unconstrained.shape[1:]))
            data_dim = ndim + self._data_frame(site).dim
            perm = (0, data_dim, *(d for d in range(1, unconstrained.dim()) if d != data_dim))
            inverse = tuple(perm.index(d) for d in range(len(perm)))
            size = math.prod(shape[d] for d in perm[2:])
            self.sites.append(_Site(name, site, transform, _is_identity(transform), shape, perm, inverse, offset, size))
            offset += size
        self.dim = offset

    def _data_frame(self, site: dict[str, Any]) -> Any:
        frames = {f.name: f for f in site["cond_indep_stack"] if f.vectorized}
        if self.data_plate not in frames:
            raise ValueError(f"the latent site {site['name']!r} is outside the plate {self.data_plate!r}, so it "
                             "cannot be annealed image by image; put every sample site inside the data plate")
        return frames[self.data_plate]

    def _pad(self, value: Tensor, site: dict[str, Any]) -> Tensor:
        """A value with all ``ndim`` batch dims (leading ones added where plates broadcast)."""
        event_dim = site["fn"].event_dim
        missing = self.ndim + event_dim - value.dim()
        return value.reshape((1,) * missing + value.shape) if missing > 0 else value

    def flatten(self, values: dict[str, Tensor], num_images: int) -> Tensor:
        """Constrained values in the traces' layout (chains dim of size C or 1) -> u ``(C, B, D)``."""
        parts = []
        for s in self.sites:
            w = s.transform.inv(self._pad(values[s.name], s.site)).expand(s.shape)
            parts.append(w.permute(s.perm).reshape(s.shape[0], num_images, s.size))
        return torch.cat(parts, dim=-1)

    def unflatten(self, u: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """u ``(C, B, D)`` -> every site's constrained value, and log |det d value / d u| ``(C, B)``."""
        values: dict[str, Tensor] = {}
        log_det: list[Tensor] = []
        for s in self.sites:
            permuted = [s.shape[d] for d in s.perm]
            w = u[..., s.offset : s.offset + s.size].reshape(permuted).permute(s.inverse_perm)
            if s.identity:
                values[s.name] = w
                continue
            v = s.transform(w)
            values[s.name] = v
            log_det.append(per_image(s.transform.log_abs_det_jacobian(w, v), s.site, self.ndim,
                                     data_plate=self.data_plate))
        return values, sum_sites(log_det) if log_det else u.new_zeros(u.shape[:2])


def _is_identity(transform: Transform) -> bool:
    """Whether ``biject_to`` gave the identity (a real support), possibly reinterpreted as an event."""
    while isinstance(transform, IndependentTransform):
        transform = transform.base_transform
    return transform is identity_transform or (isinstance(transform, ComposeTransform) and not transform.parts)


class _State(NamedTuple):
    """A batch of chains: the unconstrained position, both ends of the path's log-density there
    (each with the Jacobian, so densities of u), and their gradients."""

    u: Tensor  # (C, B, D)
    log_q: Tensor  # (C, B)
    log_p: Tensor  # (C, B)
    grad_q: Tensor  # (C, B, D)
    grad_p: Tensor  # (C, B, D)

    def log_f(self, beta: float) -> Tensor:
        """log f_beta(u) = (1 - beta) log q + beta log p, ``(C, B)``."""
        return (1 - beta) * self.log_q + beta * self.log_p

    def grad_f(self, beta: float) -> Tensor:
        # The path's log-density is linear in beta, so its gradient at any temperature is the same
        # combination of the two gradients: a new temperature costs no new pass through the model.
        return (1 - beta) * self.grad_q + beta * self.grad_p


class _Path:
    """The two ends of the path for one chunk of images: log q(z|x) (or log p(z)) and log p(x, z),
    with their gradients, at any unconstrained state of the chains."""

    def __init__(self, model: Callable[..., Any], guide: Callable[..., Any], x: Tensor, args: tuple[Any, ...],
                 kwargs: dict[str, Any], *, num_chains: int, proposal: str, mean_field: bool, ndim: int,
                 data_plate: str, reference: dict[str, dict[str, Any]]) -> None:
        self.model, self.guide, self.x, self.args, self.kwargs = model, guide, x, args, kwargs
        self.num_chains, self.proposal, self.mean_field, self.ndim = num_chains, proposal, mean_field, ndim
        self.data_plate = data_plate
        # With a mean-field guide (no latent of q drawn from another), q's site distributions are the
        # same at every state of the chains: they are kept from the chunk's first trace (each layout
        # site holds its own), and the encoder need not run again at every leapfrog step.
        self.layout = _Layout(reference, ndim, num_chains, data_plate)

    def _sites(self, program: Callable[..., Any], values: dict[str, Tensor]) -> dict[str, dict[str, Any]]:
        """The sample sites of ``program`` run with the latents set to ``values`` (no subsample sites)."""
        with pyro.plate(PARTICLES, self.num_chains, dim=-self.ndim):
            trace = poutine.trace(poutine.condition(program, data=values)).get_trace(self.x, *self.args, **self.kwargs)
        # Filtered rather than pruned with prune_subsample_sites, which copies the trace at every pass.
        return {name: site for name, site in sample_sites(trace).items() if not is_subsample_site(site)}

    def _log_prob(self, site: dict[str, Any], role: str) -> Tensor:
        return site_log_prob(site, role, self.ndim, data_plate=self.data_plate)

    def evaluate(self, u: Tensor) -> _State:
        """log q and log p (as densities of u) and their gradients at ``u`` ``(C, B, D)``."""
        with torch.enable_grad():
            u = u.detach().requires_grad_(True)
            values, log_det = self.layout.unflatten(u)
            model_sites = self._sites(self.model, values)
            log_p = sum_sites(self._log_prob(site, "model") for site in model_sites.values())
            if self.proposal == "prior":
                log_q = sum_sites(self._log_prob(model_sites[s.name], "model") for s in self.layout.sites)
            elif self.mean_field:
                log_q = sum_sites(self._log_prob({**s.site, "value": values[s.name]}, "guide") for s in self.layout.sites)
            else:
                guide_sites = self._sites(self.guide, values)
                log_q = sum_sites(self._log_prob(guide_sites[s.name], "guide") for s in self.layout.sites)
            log_q = (log_q + log_det).expand(u.shape[:2])
            log_p = (log_p + log_det).expand(u.shape[:2])
            # Chains and images are independent, so the gradient of the sum is each one's gradient.
            (grad_q,) = torch.autograd.grad(log_q.sum(), u, retain_graph=True)
            (grad_p,) = torch.autograd.grad(log_p.sum(), u)
        return _State(u.detach(), log_q.detach(), log_p.detach(), grad_q, grad_p)


def _hmc_transition(path: _Path, state: _State, beta: float, step_size: Tensor, num_leapfrog: int) -> tuple[_State, Tensor]:
    """One HMC move of every chain, leaving f_beta invariant: a fresh momentum r ~ N(0, I), L
    leapfrog steps of the Hamiltonian H(u, r) = -log f_beta(u) + |r|^2 / 2, and a Metropolis test.

    The leapfrog is written here rather than taken from ``pyro.ops.integrator.velocity_verlet``:
    that integrator differentiates a single scalar potential and returns only its gradient, while
    the Metropolis test needs the energy of every (chain, image) and the next temperature wants the
    gradients of log q and log p apart (:meth:`_State.grad_f`), which saves one of every L + 1
    passes through the model. Each step is the same velocity Verlet update.

    :param step_size: ``(B,)``, one per image, shared by its chains.
    :returns: the new state and the acceptance probability min(1, exp(-dH)) of each chain ``(C, B)``.
    """
    eps = step_size[None, :, None]
    r0 = torch.randn_like(state.u)
    r = r0 + 0.5 * eps * state.grad_f(beta)
    new = state
    for step in range(num_leapfrog):
        new = path.evaluate(new.u + eps * r)
        r = r + (eps if step < num_leapfrog - 1 else 0.5 * eps) * new.grad_f(beta)
    # Momentum negation, which makes the proposal its own reverse, leaves the kinetic energy unchanged.
    delta = (new.log_f(beta) - 0.5 * (r * r).sum(-1)) - (state.log_f(beta) - 0.5 * (r0 * r0).sum(-1))
    # A trajectory that left the support or overflowed has an undefined energy: it is rejected.
    log_accept = torch.where(torch.isfinite(delta), delta.clamp(max=0.0), torch.full_like(delta, -math.inf))
    accept = torch.rand_like(log_accept).log() < log_accept
    kept = _State(*(torch.where(accept.reshape(accept.shape + (1,) * (a.dim() - 2)), a, b) for a, b in zip(new, state)))
    return kept, log_accept.exp()


def _check_latents(model_trace: Any, guide_trace: Any | None) -> list[str]:
    """The latent sites to anneal: every one continuous, and proposed by the guide."""
    names = latent_sites(model_trace)
    for name in names:
        if is_discrete(model_trace.nodes[name]):
            raise ValueError(
                f"AIS moves the latents with Hamiltonian Monte Carlo, which needs continuous latents, and site "
                f"{name!r} is discrete; use importance sampling (pvae.log_marginal_likelihood), which sums it out exactly"
            )
        if guide_trace is not None and name not in guide_trace.nodes:
            raise ValueError(f"the model's latent site {name!r} is not in the guide; the guide must propose every latent")
    if guide_trace is not None:
        for name, site in sample_sites(guide_trace).items():
            if not site["is_observed"] and name not in names:
                raise ValueError(f"the guide's latent site {name!r} is not a latent site of the model; AIS anneals "
                                 "between two densities over the same latents")
    if not names:
        raise ValueError("the model has no latent sites: log p(x) needs no estimate")
    return names


def _chunk_path(
    model: Callable[..., Any], guide: Callable[..., Any], x: Tensor, args: tuple[Any, ...], kwargs: dict[str, Any], *,
    num_chains: int, proposal: str, mean_field: bool, max_plate_nesting: int, data_plate: str,
) -> tuple[_Path, dict[str, Tensor]]:
    """The path for one chunk of images and C chains, and the chains' first draws from its start:
    the guide traced under the chains plate and the model replayed against it (as
    :func:`pvae.inference.traces.trace_pair` does for importance sampling, the same draws), or for
    ``proposal="prior"`` the model run forward, its latents drawn from their prior."""
    ndim = max_plate_nesting + 1
    if proposal == "guide":
        guide_trace, model_trace, _ = trace_pair(model, guide, x, *args, num_particles=num_chains,
                                                 max_plate_nesting=max_plate_nesting, **kwargs)
        names = _check_latents(model_trace, guide_trace)
        reference = {name: guide_trace.nodes[name] for name in names}
    else:
        with pyro.plate(PARTICLES, num_chains, dim=-ndim):
            model_trace = prune_subsample_sites(poutine.trace(model).get_trace(x, *args, **kwargs))
        names = _check_latents(model_trace, None)
        reference = {name: model_trace.nodes[name] for name in names}
    path = _Path(model, guide, x, args, kwargs, num_chains=num_chains, proposal=proposal, mean_field=mean_field,
                 ndim=ndim, data_plate=data_plate, reference=reference)
    return path, {name: site["value"] for name, site in reference.items()}


def _start_values(layout: _Layout, latents: dict[str, Tensor], num_images: int, first: int,
                  size: int) -> dict[str, Tensor]:
    """The given latents of images ``first .. first + size``, in the traces' layout with a chains dim of 1."""
    values = {}
    for s in layout.sites:
        name, site = s.name, s.site
        if name not in latents:
            raise ValueError(f"reverse AIS starts from the latents that generated the images; the latent site "
                             f"{name!r} is missing from them (given: {sorted(latents)})")
        # Laid out as the model's trace without the chains plate: the leading ones added here are
        # the chains dim and any plate that broadcasts over the site.
        padded = layout._pad(latents[name], site)
        data_dim = layout.ndim + layout._data_frame(site).dim
        if padded.dim() != layout.ndim + site["fn"].event_dim or padded.shape[data_dim] != num_images:
            raise ValueError(f"the latents of site {name!r} have shape {tuple(latents[name].shape)}, not one value per "
                             f"image laid out as the model's trace lays them out ({num_images} images)")
        values[name] = padded.narrow(data_dim, first, size)
    return values


def _guide_is_mean_field(guide: Callable[..., Any], x: Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether no latent site of the guide is drawn from another (Pyro's provenance tracking); a guide
    that the tracking cannot follow is treated as dependent, and replayed at every step (always right)."""
    try:
        with torch.no_grad(), pyro.validation_enabled(False), poutine.block():
            parents = get_model_relations(guide, (x, *args), kwargs)["sample_sample"]
    except Exception:  # noqa: BLE001 - any failure of the inspection only costs speed
        return False
    return not any(parents.values())


def _model_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments meant for the model and guide; a setting of the path passed as a
    keyword (the signature before :class:`AISSettings`) is refused rather than handed to the model."""
    misplaced = sorted(set(kwargs) & {f.name for f in dataclasses.fields(AISSettings)})
    if misplaced:
        given = ", ".join(f"{name}={kwargs[name]!r}" for name in misplaced)
        raise TypeError(f"expected the path's settings as settings=AISSettings({given}, ...), got {given} as "
                        "keyword arguments of the model")
    return kwargs


def _schedule(schedule: str | Sequence[float] | Tensor, num_steps: int) -> tuple[list[float], str]:
    if isinstance(schedule, str):
        return annealing_schedule(num_steps, schedule).tolist(), schedule
    betas = torch.as_tensor(schedule, dtype=torch.float64).flatten()
    if betas.numel() != num_steps + 1:
        raise ValueError(f"a schedule of betas needs num_steps + 1 = {num_steps + 1} values, got {betas.numel()}")
    if betas[0] != 0 or betas[-1] != 1 or bool((betas[1:] < betas[:-1]).any()):
        raise ValueError("a schedule of betas must rise from exactly 0 to exactly 1")
    return betas.tolist(), "custom"


@torch.no_grad()
def _ais(
    model: Callable[..., Any], guide: Callable[..., Any], x: Tensor, args: tuple[Any, ...], kwargs: dict[str, Any],
    settings: AISSettings, *, latents: dict[str, Tensor] | None, progress: Callable[[int], object] | None,
) -> AISEstimate:
    """Forward AIS (``latents=None``: chains start from the proposal) or reverse AIS (chains start
    at ``latents``, exact posterior draws, and the schedule is run backwards)."""
    num_steps, num_leapfrog, num_chains = settings.num_steps, settings.num_leapfrog, settings.num_chains
    proposal, step_size, chunk_size = settings.proposal, settings.step_size, settings.chunk_size
    adapt_step_size, target_acceptance = settings.adapt_step_size, settings.target_acceptance
    data_plate, max_plate_nesting = settings.data_plate, settings.max_plate_nesting
    low, high = settings.step_size_bounds
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"expected a batch of images (N, ...) with N >= 1, got shape {tuple(x.shape)}")
    betas, schedule_name = settings.betas()
    reverse = latents is not None
    if reverse:
        betas = betas[::-1]
    if x.device.type == "cpu":
        raise_malloc_thresholds()
    tic = time.perf_counter()
    n = x.shape[0]
    chains_per_chunk = math.ceil(num_chains / math.ceil(num_chains / chunk_size))  # equal chunks of chains
    images_per_chunk = max(1, min(n, chunk_size // chains_per_chunk))
    log_weights = torch.empty(num_chains, n, dtype=torch.float64, device=x.device)
    acceptance = torch.zeros(n, dtype=torch.float64, device=x.device)
    final_step = torch.zeros(n, dtype=torch.float64, device=x.device)
    # Whether q's site distributions can be kept from the chunk's first trace (see _Path); the check
    # runs the guide once, on draws given back afterwards, so that it changes no chain's draws.
    with forked_rng(x.device):
        mean_field = proposal == "guide" and _guide_is_mean_field(guide, x[:2], chunk_args(args, n, 0, min(n, 2)), kwargs)
    for first in range(0, n, images_per_chunk):
        xb = x[first : first + images_per_chunk]
        b = xb.shape[0]
        argsb = chunk_args(args, n, first, b)
        for start in range(0, num_chains, chains_per_chunk):
            c = min(chains_per_chunk, num_chains - start)
            path, initial = _chunk_path(model, guide, xb, argsb, kwargs, num_chains=c, proposal=proposal,
                                      mean_field=mean_field, max_plate_nesting=max_plate_nesting, data_plate=data_plate)
            if latents is not None:
                initial = _start_values(path.layout, latents, n, first, b)
            u0 = path.layout.flatten(initial, b)
            # Intermediate states of a trajectory can leave the region where the model's distributions
            # accept their arguments (an overflowing leapfrog step); such proposals are rejected by the
            # Metropolis test, so only the first trace of each chunk is validated.
            with pyro.validation_enabled(False):
                state = path.evaluate(u0)
                log_w = torch.zeros(c, b, dtype=torch.float64, device=x.device)
                eps = torch.full((b,), float(step_size), dtype=u0.dtype, device=x.device)
                average = torch.full((b,), float(target_acceptance), dtype=torch.float64, device=x.device)
                accepted = torch.zeros(c, b, dtype=torch.float64, device=x.device)
                for t in range(1, num_steps + 1):
                    # Weight first, at the state the previous transition left: with T = 1 this is
                    # log p(x, z_0) - log q(z_0) for z_0 ~ q, importance sampling exactly.
                    log_w += (betas[t] - betas[t - 1]) * (state.log_p.double() - state.log_q.double())
                    if t == num_steps:
                        break  # a move at beta_T would not change any weight
                    state, accept_prob = _hmc_transition(path, state, betas[t], eps, num_leapfrog)
                    accepted += accept_prob.double()
                    if adapt_step_size:
                        average = _ACCEPTANCE_SLOWNESS * average + (1 - _ACCEPTANCE_SLOWNESS) * accept_prob.double().mean(0)
                        factor = torch.where(average > target_acceptance, _STEP_INCREASE, _STEP_DECREASE)
                        eps = (eps * factor.to(eps.dtype)).clamp(low, high)
            log_weights[start : start + c, first : first + b] = log_w
            acceptance[first : first + b] += accepted.sum(0) / (num_steps - 1) if num_steps > 1 else math.nan
            final_step[first : first + b] += eps.double() * (c / num_chains)
        if progress is not None:
            progress(b)
    log_mean_w = log_weights.logsumexp(0) - math.log(num_chains)
    return AISEstimate(
        log_px=-log_mean_w if reverse else log_mean_w,
        log_weights=log_weights,
        acceptance_rate=acceptance / num_chains,
        step_size=final_step,
        num_steps=num_steps,
        num_leapfrog=num_leapfrog,
        num_chains=num_chains,
        schedule=schedule_name,
        proposal=proposal,
        direction="reverse" if reverse else "forward",
        initial_step_size=float(step_size),
        target_acceptance=float(target_acceptance) if adapt_step_size else None,
        seconds=time.perf_counter() - tic,
    )


def ais_estimate(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    x: Tensor,
    *args: Any,
    settings: AISSettings,
    progress: Callable[[int], object] | None = None,
    **kwargs: Any,
) -> AISEstimate:
    """Estimate log p(x_i) of every image by annealed importance sampling with HMC transitions.

    .. math::

        \\log \\hat p(x_i) = \\log \\frac{1}{C} \\sum_{c=1}^{C} w_{ic}, \\qquad
        \\log w_{ic} = \\sum_{t=1}^{T} (\\beta_t - \\beta_{t-1})
        \\bigl[\\log p(x_i, z_{ic,t-1}) - \\log q(z_{ic,t-1} \\mid x_i)\\bigr]

    with z_{ic,0} ~ q(z|x_i) and z_{ic,t} an HMC move of z_{ic,t-1} that leaves
    f_t = q^{1-beta_t} p(x_i, .)^{beta_t} invariant (module docstring). E[w] = p(x_i), so the
    estimate is a stochastic lower bound, exact in the limit of many steps; T = 1 is importance
    sampling with K = C draws of the proposal.

    Chains and images are vectorized (the chains in a plate left of the model's plates, as the
    particles of :func:`pvae.inference.importance.log_importance_weights`) and cut into chunks of at most
    ``chunk_size`` (chain, image) pairs, so memory stays bounded whatever C and N. The step size of
    each image is shared by its chains (by the chains of one chunk when C > ``chunk_size``) and
    adapted after every transition, as in Wu et al. (2017): x1.02 while the moving average of the
    acceptance rate is above ``target_acceptance``, x0.98 otherwise. That adaptation lets a kernel
    depend on the chains' past, a departure from the exact AIS argument that Wu et al. make too;
    ``adapt_step_size=False`` keeps every kernel fixed and the estimator exactly unbiased for p(x).

    Draws come from the global random number generators (seed them with ``pyro.set_rng_seed``).
    Pyro's validation, when on, checks the first trace of every chunk; the HMC trajectories run
    without it (a diverging proposal is rejected, not an error).

    References: Neal (2001), "Annealed Importance Sampling"; Neal (2011), "MCMC Using Hamiltonian
    Dynamics"; Wu, Burda, Salakhutdinov & Grosse (2017), "On the Quantitative Analysis of
    Decoder-Based Generative Models".

    :param model: ``model(x, *args, **kwargs)``; every sample site inside the plate ``data_plate``,
        every latent site continuous.
    :param guide: ``guide(x, *args, **kwargs)``, proposing every latent site of the model.
    :param x: images ``(N, ...)``; per-image tensors in ``args`` (first dim N) are cut with it.
    :param settings: the path: T, L, C, schedule, proposal, step size and its adaptation, chunk
        size, plates (:class:`AISSettings`).
    :param progress: called with the number of images just finished after each chunk of images.
    :param kwargs: keyword arguments of the model and guide.
    :returns: per-image estimates, see :class:`AISEstimate` (``direction="forward"``).
    :raises ValueError: for a discrete latent site, in one line that points to importance sampling.
    """
    return _ais(model, guide, x, args, _model_kwargs(kwargs), settings, latents=None, progress=progress)


def ais_log_marginal_likelihood(
    model: Callable[..., Any], guide: Callable[..., Any], x: Tensor, *args: Any, settings: AISSettings, **kwargs: Any
) -> Tensor:
    """log p(x_i) of every image by AIS, in nats: the ``log_px`` of :func:`ais_estimate`'s result
    (which takes the same arguments).

    :returns: ``(N,)`` float64, a stochastic lower bound, higher is better.
    """
    return ais_estimate(model, guide, x, *args, settings=settings, **kwargs).log_px


def reverse_ais_estimate(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    x: Tensor,
    latents: dict[str, Tensor],
    *args: Any,
    settings: AISSettings,
    progress: Callable[[int], object] | None = None,
    **kwargs: Any,
) -> AISEstimate:
    """A stochastic upper bound on log p(x_i) by reverse AIS, from exact posterior draws ``latents``.

    The path of :func:`ais_estimate` run backwards, from p(z|x) to the proposal, each chain started
    at the image's exact posterior draw:

    .. math::

        \\log w^{rev}_{ic} = \\sum_{t=T}^{1} (\\beta_{t-1} - \\beta_t)
        \\bigl[\\log p(x_i, z_{ic,t}) - \\log q(z_{ic,t} \\mid x_i)\\bigr], \\qquad
        z_{ic,T} \\sim p(z \\mid x_i), \\qquad
        \\log \\hat p^{up}(x_i) = -\\log \\frac{1}{C} \\sum_c w^{rev}_{ic}

    E[w^rev] = 1 / p(x_i), so by Jensen E[log p-hat^up] >= log p(x_i) (Grosse, Ghahramani & Adams
    2015, "Sandwiching the Marginal Likelihood Using Bidirectional Monte Carlo"). Only exact
    posterior draws make it a bound: on real data there are none; on data simulated from the model
    the latents that generated each image are one (:func:`simulate_data`).

    :param latents: site name -> the latent values that generated ``x``, each laid out as the
        model's trace lays it out without a chains dim (``(N, *event)`` for a site in the data
        plate only), as the ``latents`` of :class:`SimulatedData` holds them.
    :param settings: the path (:class:`AISSettings`), the same as the forward estimate's.
    :returns: see :class:`AISEstimate` (``direction="reverse"``); the other parameters are those of
        :func:`ais_estimate`.
    """
    return _ais(model, guide, x, args, _model_kwargs(kwargs), settings, latents=latents, progress=progress)


@dataclass(frozen=True)
class SimulatedData:
    """Images drawn from a model, with the latents that generated them.

    :ivar x: the images ``(N, ...)``, shaped as the placeholder they were drawn for.
    :ivar latents: site name -> value, laid out as in the model's trace (``(N, *event)`` for a site
        in the data plate): for each image an exact draw of p(z|x).
    :ivar image_site: the name of the model's observed site that the images were drawn at.
    """

    x: Tensor
    latents: dict[str, Tensor]
    image_site: str


class _UnconditionSite(UnconditionMessenger):
    """Pyro's ``uncondition`` for one site: draws that site from its distribution, leaving every
    other observation (a label the model is conditioned on, say) as it is."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def _pyro_sample(self, msg: dict[str, Any]) -> None:
        if msg["name"] == self.name:
            super()._pyro_sample(msg)


@torch.no_grad()
def simulate_data(model: Callable[..., Any], placeholder: Tensor, *args: Any, **kwargs: Any) -> SimulatedData:
    """Draw images from the model, z ~ p(z) and x ~ p(x|z), keeping the z that generated each one.

    The model is run forward on ``placeholder`` (whose values are never read): its latent sites
    are drawn from their prior, and the observed site holding the placeholder is drawn from its
    distribution instead of being observed (Pyro's ``uncondition`` at that one site).

    :param model: ``model(x, *args, **kwargs)``.
    :param placeholder: a tensor shaped, typed and placed as the images to draw, ``(N, ...)``,
        e.g. ``torch.zeros(N, x_dim)``.
    :param args: what the model takes besides (labels to draw each image's class from, say).
    :returns: :class:`SimulatedData`.
    """
    with poutine.block(), pyro.validation_enabled(False):
        probe = prune_subsample_sites(poutine.trace(model).get_trace(placeholder, *args, **kwargs))
    name = image_site(probe, placeholder)
    with poutine.block():
        trace = prune_subsample_sites(poutine.trace(_UnconditionSite(name)(model)).get_trace(placeholder, *args, **kwargs))
    x = trace.nodes[name]["value"].reshape(placeholder.shape)
    latents = {n: trace.nodes[n]["value"] for n in latent_sites(trace) if n != name}
    return SimulatedData(x=x, latents=latents, image_site=name)


@dataclass(frozen=True)
class BDMCResult:
    """Bidirectional Monte Carlo on simulated images: forward AIS below, reverse AIS above.

    :ivar forward: the forward estimate, whose ``log_px`` is a stochastic lower bound.
    :ivar reverse: the reverse estimate, whose ``log_px`` is a stochastic upper bound.
    """

    forward: AISEstimate
    reverse: AISEstimate

    @property
    def lower(self) -> Tensor:
        """``(N,)`` float64, nats: forward AIS, below log p(x) in expectation."""
        return self.forward.log_px

    @property
    def upper(self) -> Tensor:
        """``(N,)`` float64, nats: reverse AIS, above log p(x) in expectation."""
        return self.reverse.log_px

    @property
    def gap(self) -> Tensor:
        """``(N,)``: upper - lower. Its mean bounds, in expectation, the error of any estimator of the
        mean log p(x) of these images that lies between the two, forward AIS included."""
        return self.upper - self.lower

    @property
    def gap_mean(self) -> float:
        return self.gap.mean().item()

    @property
    def gap_stderr(self) -> float:
        n = self.gap.numel()
        return (self.gap.std() / math.sqrt(n)).item() if n > 1 else 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-ready means: ``bdmc_lower``, ``bdmc_upper``, ``bdmc_gap`` with standard errors over
        images, the number of images, both directions' seconds and the path's settings."""
        settings = {k: v for k, v in self.forward.summary().items()
                    if k.startswith("ais_") and k not in ("ais_direction", "ais_acceptance_rate_mean",
                                                          "ais_step_size_mean", "ais_ess_mean")}
        return {
            "bdmc_num_images": self.lower.numel(),
            "bdmc_lower": self.forward.log_px_mean,
            "bdmc_lower_stderr": self.forward.log_px_stderr,
            "bdmc_upper": self.reverse.log_px_mean,
            "bdmc_upper_stderr": self.reverse.log_px_stderr,
            "bdmc_gap": self.gap_mean,
            "bdmc_gap_stderr": self.gap_stderr,
            "bdmc_forward_seconds": self.forward.seconds,
            "bdmc_reverse_seconds": self.reverse.seconds,
            **settings,
        }


def bdmc(
    model: Callable[..., Any], guide: Callable[..., Any], data: SimulatedData, *args: Any, settings: AISSettings,
    progress: Callable[[int], object] | None = None, **kwargs: Any,
) -> BDMCResult:
    """Sandwich log p(x) of simulated images between forward and reverse AIS (Grosse, Ghahramani &
    Adams 2015; Wu et al. 2017, section 4).

    .. math::

        \\mathbb{E}[\\log \\hat p^{fwd}(x)] \\le \\log p(x) \\le \\mathbb{E}[\\log \\hat p^{rev}(x)]

    Forward AIS starts from the proposal; reverse AIS runs the same path (same T, L, C, schedule,
    proposal and step-size rule) backwards from the latents that generated each image, exact
    posterior draws. As T grows both tend to log p(x) and the gap closes. On these images the gap
    bounds, in expectation, the error of any estimate that lies between the bounds (forward AIS
    included); Wu et al. take it as the accuracy of AIS at the same settings on real data, which is
    a judgement, not a bound (real images are not draws of the model).

    :param data: from :func:`simulate_data`: images and the latents that generated them.
    :param args: what model and guide take besides the images.
    :param settings: the path of both directions (:class:`AISSettings`).
    :param progress: called with the number of images just finished, by each direction in turn.
    :param kwargs: keyword arguments of the model and guide.
    :returns: :class:`BDMCResult`.
    """
    forward = ais_estimate(model, guide, data.x, *args, settings=settings, progress=progress, **kwargs)
    reverse = reverse_ais_estimate(model, guide, data.x, data.latents, *args, settings=settings, progress=progress,
                                   **kwargs)
    return BDMCResult(forward=forward, reverse=reverse)
