"""Priors p(z): log-densities against scipy.stats and change-of-variables, normalization, and
learning (a learned prior fits a fixed aggregate posterior better than N(0, I))."""

from __future__ import annotations

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from scipy import stats
from scipy.special import logsumexp
from torch.nn import functional as F

from pvae.models import VAE
from pvae.parts.guides import DiagonalPosterior, FullCovariancePosterior
from pvae.parts.likelihoods import Gaussian
from pvae.parts.priors import (
    DiagonalNormal,
    FlowPrior,
    Laplace,
    MixtureOfGaussians,
    StandardNormal,
    StudentT,
    VampPrior,
    _BroadcastMixture,
)


def _points(n: int, z_dim: int) -> torch.Tensor:
    """Points spread over the bulk and the tails of a unit-scale prior, ``(n, z_dim)``."""
    return 2.5 * torch.randn(n, z_dim, dtype=torch.float64)


def _perturb(module: torch.nn.Module, scale: float) -> None:
    """Move every parameter away from its (often symmetric) starting value."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def test_standard_normal_log_prob_matches_scipy() -> None:
    """N(0, I) log-density equals scipy's product of standard normal densities."""
    z = _points(50, 4)
    got = StandardNormal(4).double()().log_prob(z)
    want = stats.norm.logpdf(z.numpy()).sum(-1)
    torch.testing.assert_close(got, torch.from_numpy(want), rtol=1e-10, atol=1e-10)


def test_diagonal_normal_log_prob_matches_scipy() -> None:
    """The learned diagonal Gaussian's log-density equals scipy's at its current loc and scale."""
    prior = DiagonalNormal(3).double()
    _perturb(prior, 0.5)
    z = _points(50, 3)
    loc, scale = prior.loc.detach().numpy(), F.softplus(prior.raw_scale).detach().numpy()
    want = stats.norm.logpdf(z.numpy(), loc, scale).sum(-1)
    torch.testing.assert_close(prior().log_prob(z).detach(), torch.from_numpy(want), rtol=1e-10, atol=1e-10)


def test_mixture_of_gaussians_log_prob_matches_scipy() -> None:
    """log sum_k pi_k N(z; mu_k, sigma_k^2) equals the same sum written with scipy."""
    prior = MixtureOfGaussians(2, num_components=5).double()
    _perturb(prior, 0.5)
    z = _points(40, 2).numpy()
    log_w = torch.log_softmax(prior.logits, -1).detach().numpy()
    locs, scales = prior.locs.detach().numpy(), (F.softplus(prior.raw_scales) + 1e-6).detach().numpy()
    per_component = np.stack([stats.norm.logpdf(z, locs[k], scales[k]).sum(-1) for k in range(5)], -1)
    want = logsumexp(per_component + log_w, axis=-1)
    got = prior().log_prob(torch.from_numpy(z)).detach()
    torch.testing.assert_close(got, torch.from_numpy(want), rtol=1e-10, atol=1e-10)


def test_vamp_prior_log_prob_is_the_equal_mixture_of_the_guides_posteriors() -> None:
    """VampPrior density = (1/K) sum_k q(z|u_k), with q's loc and scale read off the encoder."""
    posterior = DiagonalPosterior(6, 2, (8,), "tanh").double()
    prior = VampPrior(2, posterior, torch.rand(4, 6, dtype=torch.float64))
    z = _points(30, 2).numpy()
    loc, scale = (t.detach().numpy() for t in posterior.encoder(prior.pseudo_inputs))
    per_component = np.stack([stats.norm.logpdf(z, loc[k], scale[k]).sum(-1) for k in range(4)], -1)
    want = logsumexp(per_component, axis=-1) - np.log(4)
    got = prior().log_prob(torch.from_numpy(z)).detach()
    torch.testing.assert_close(got, torch.from_numpy(want), rtol=1e-10, atol=1e-10)


def test_vamp_prior_fast_density_keeps_float32_accuracy_and_gradients() -> None:
    """The diagonal components' matrix-product density (z shaped (particles, images, m)) equals the
    float64 mixture within float32 rounding, even with scales of 1e-2 where the expanded terms cancel,
    and its gradients in z and in the components' parameters equal the generic path's."""
    torch.manual_seed(0)
    num_components, z_dim = 50, 6
    loc = torch.randn(num_components, z_dim, requires_grad=True)
    scale = (0.01 + 0.3 * torch.rand(num_components, z_dim)).requires_grad_()
    z = (loc.detach()[:4] + 0.02 * torch.randn(7, 4, z_dim)).requires_grad_()
    weights = torch.distributions.Categorical(logits=torch.zeros(num_components))
    fast = _BroadcastMixture(weights, dist.Normal(loc, scale).to_event(1)).log_prob(z)
    assert fast.shape == (7, 4) and fast.dtype == torch.float32
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=torch.zeros(num_components, dtype=torch.float64)),
        dist.Normal(loc.double(), scale.double()).to_event(1),
    ).log_prob(z.double())
    # log-densities near +100 here; float32 carries about 1e-5 of them
    torch.testing.assert_close(fast.double(), reference, rtol=0, atol=1e-4)
    generic = torch.distributions.MixtureSameFamily(weights, dist.Normal(loc, scale).to_event(1)).log_prob(z)
    for got, want in zip(torch.autograd.grad(fast.sum(), (z, loc, scale)), torch.autograd.grad(generic.sum(), (z, loc, scale))):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)


def test_vamp_prior_expanded_over_the_data_plate_takes_the_fast_density(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside the data plate the prior is expanded to batch_shape (N,); its density still comes from
    the matrix products (the generic mixture density is made to fail here) and equals the unexpanded one."""
    posterior = DiagonalPosterior(6, 3, (8,), "tanh")
    prior = VampPrior(3, posterior, torch.rand(5, 6))
    z = torch.randn(7, 4, 3)
    want = prior().log_prob(z)
    expanded = prior().expand((4,))
    assert expanded.batch_shape == (4,)

    def generic(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the generic mixture density was used")

    monkeypatch.setattr(torch.distributions.MixtureSameFamily, "log_prob", generic)
    torch.testing.assert_close(expanded.log_prob(z), want, rtol=1e-6, atol=1e-5)


def test_vamp_prior_density_with_a_full_covariance_guide_takes_the_generic_path() -> None:
    """Components that are not diagonal Gaussians are summed by torch's mixture, unchanged."""
    posterior = FullCovariancePosterior(6, 2, (8,), "tanh").double()
    prior = VampPrior(2, posterior, torch.rand(4, 6, dtype=torch.float64))
    z = _points(30, 2)
    components = posterior(prior.pseudo_inputs)
    want = torch.logsumexp(components.log_prob(z.unsqueeze(-2)), -1) - np.log(4)
    torch.testing.assert_close(prior().log_prob(z), want, rtol=1e-10, atol=1e-10)


def test_vamp_prior_owns_only_its_pseudo_inputs() -> None:
    """The encoder is referenced, not owned: a VAE's state_dict holds each encoder weight once."""
    posterior = DiagonalPosterior(6, 2, (8,), "tanh")
    vae = VAE(6, 2, prior=VampPrior(2, posterior, torch.rand(3, 6)), posterior=posterior, hidden=(8,))
    prior_keys = [k for k in vae.state_dict() if k.startswith("prior.")]
    assert prior_keys == ["prior.pseudo_inputs"], f"prior entries in the state_dict: {prior_keys}"


def test_laplace_log_prob_matches_scipy() -> None:
    """Independent Laplace(0, b) log-density equals scipy's."""
    z = _points(50, 3)
    prior = Laplace(3, scale=0.7).double()
    # the scale as stored (a float32 buffer), not the decimal 0.7
    want = stats.laplace.logpdf(z.numpy(), 0.0, prior.scale.numpy()).sum(-1)
    got = prior().log_prob(z)
    torch.testing.assert_close(got, torch.from_numpy(want), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("df", [1.0, 3.0, 30.0])
def test_student_t_log_prob_matches_scipy(df: float) -> None:
    """Independent Student-t(df) log-density equals scipy's."""
    z = _points(50, 3)
    got = StudentT(3, df=df).double()().log_prob(z)
    want = stats.t.logpdf(z.numpy(), df).sum(-1)
    torch.testing.assert_close(got, torch.from_numpy(want), rtol=1e-10, atol=1e-10)


def test_flow_prior_log_prob_is_the_change_of_variables() -> None:
    """log p(z) = log N(f(z); 0, I) + log |det df/dz|, with f (the map to the base) and its Jacobian
    computed by autograd, independently of Pyro's log-determinant."""
    prior = FlowPrior(3, num_flows=2).double()
    _perturb(prior.flows, 0.3)

    def to_base(z: torch.Tensor) -> torch.Tensor:
        for flow in reversed(prior.flows):  # the distribution applies flows[0].inv first when sampling
            z = flow(z)
        return z

    for z in _points(5, 3):
        jac = torch.autograd.functional.jacobian(to_base, z)
        eps = to_base(z).detach().numpy()
        want = stats.norm.logpdf(eps).sum() + torch.linalg.slogdet(jac).logabsdet.item()
        got = prior().log_prob(z).item()
        assert got == pytest.approx(want, abs=1e-8), f"flow log p(z) {got} vs change of variables {want}"


@pytest.mark.parametrize("make", [
    pytest.param(lambda: MixtureOfGaussians(2, 3), id="mog"),
    pytest.param(lambda: VampPrior(2, DiagonalPosterior(5, 2, (8,), "tanh").double(), torch.rand(3, 5)), id="vamp"),
    pytest.param(lambda: FlowPrior(2, 2), id="flow"),
    pytest.param(lambda: StudentT(2, 3.0), id="student-t"),
])
def test_learned_priors_integrate_to_one(make) -> None:  # noqa: ANN001
    """exp(log p(z)) integrates to 1 over the plane (trapezoid rule on [-12, 12]^2)."""
    prior = make().double()
    _perturb(prior, 0.2)
    grid = torch.linspace(-12, 12, 601, dtype=torch.float64)
    with torch.no_grad():
        density = prior().log_prob(torch.cartesian_prod(grid, grid)).exp().reshape(601, 601)
    mass = torch.trapezoid(torch.trapezoid(density, grid), grid).item()
    # Student-t(3) leaves about 2e-3 of its mass outside the square.
    assert mass == pytest.approx(1.0, abs=5e-3), f"the density integrates to {mass}"


def test_priors_sample_with_the_right_shape() -> None:
    """Every prior draws (n, z_dim) and scores (n,)."""
    posterior = DiagonalPosterior(5, 3, (8,), "tanh")
    for prior in (StandardNormal(3), DiagonalNormal(3), MixtureOfGaussians(3, 4), VampPrior(3, posterior, torch.rand(4, 5)),
                  Laplace(3), StudentT(3), FlowPrior(3, 2)):
        p = prior()
        z = p.sample((7,))
        assert (p.batch_shape, p.event_shape, z.shape) == ((), (3,), (7, 3)), f"{prior}: {p.batch_shape} {p.event_shape} {z.shape}"
        assert p.log_prob(z).shape == (7,), f"{prior}: log_prob shape {p.log_prob(z).shape}"


def test_bad_prior_arguments_are_refused() -> None:
    """One-dimensional flows, empty mixtures and a VampPrior on another z_dim are refused with the reason."""
    with pytest.raises(ValueError, match="z_dim >= 2"):
        FlowPrior(1)
    with pytest.raises(ValueError, match="num_components >= 1"):
        MixtureOfGaussians(2, 0)
    with pytest.raises(ValueError, match="z_dim=3"):
        VampPrior(3, DiagonalPosterior(5, 2, (8,), "tanh"), torch.rand(4, 5))


# --- learning: the prior fits a fixed aggregate posterior -------------------------------------

_CENTRES = torch.tensor([[2.0, 2.0], [-2.0, 2.0], [-2.0, -2.0], [2.0, -2.0]])


def _clustered_data(n: int, gen: torch.Generator) -> torch.Tensor:
    """Images ``(n, 12)`` from 4 orthogonal prototypes (blocks of 3 lit pixels) plus a little noise."""
    prototypes = torch.eye(4).repeat_interleave(3, dim=1)
    labels = torch.arange(n) % 4
    return prototypes[labels] + 0.05 * torch.randn(n, 12, generator=gen)


def _fixed_encoder_vae(prior_name: str) -> VAE:
    """A VAE whose linear encoder sends the 4 clusters to the corners (+-2, +-2) with scale 0.3, so
    that the aggregate posterior is a known 4-blob mixture far from N(0, I)."""
    posterior = DiagonalPosterior(12, 2, (), "tanh")
    prototypes = _clustered_data(4, torch.Generator().manual_seed(0))
    linear = posterior.encoder.net[0]
    with torch.no_grad():
        # loc = M x with M P^T = C for the prototypes P; raw scale = softplus^-1(0.3), constant.
        m = torch.linalg.lstsq(prototypes, _CENTRES).solution.T
        linear.weight.zero_()
        linear.weight[:2] = m
        linear.bias.zero_()
        linear.bias[2:] = torch.log(torch.expm1(torch.tensor(0.3)))
    prior = MixtureOfGaussians(2, 4) if prior_name == "mog" else VampPrior(2, posterior, torch.rand(8, 12))
    return VAE(12, 2, prior=prior, likelihood=Gaussian(0.1), posterior=posterior, hidden=(8,), num_data=400)


def _mean_log_density(prior_dist: torch.distributions.Distribution, z: torch.Tensor) -> float:
    with torch.no_grad():
        return prior_dist.log_prob(z).mean().item()


@pytest.mark.parametrize("prior_name", ["mog", "vamp"])
def test_learned_prior_fits_the_aggregate_posterior_better_than_standard_normal(prior_name: str) -> None:
    """Trained by the ELBO with everything else frozen, the prior's average log-density at draws from
    the aggregate posterior (held-out images) beats N(0, I)'s and its own starting value."""
    gen = torch.Generator().manual_seed(1)
    vae = _fixed_encoder_vae(prior_name)
    x_train, x_test = _clustered_data(400, gen), _clustered_data(400, gen)
    with torch.no_grad():
        z_test = vae.posterior(x_test).sample((5,)).reshape(-1, 2)  # draws from the aggregate posterior
    before = _mean_log_density(vae.prior(), z_test)
    optimizer = torch.optim.Adam(vae.prior.parameters(), lr=0.05)  # only the prior learns
    elbo = Trace_ELBO(max_plate_nesting=1)
    for _ in range(150):
        loss = elbo.differentiable_loss(vae.model, vae.guide, x_train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    learned = _mean_log_density(vae.prior(), z_test)
    standard = _mean_log_density(StandardNormal(2)(), z_test)
    # The ideal 4-component fit scores about -1.8 nats, N(0, I) about -6.1 (seen: -2.6 and -2.3 after 150 steps).
    assert learned > standard + 2.0, f"{prior_name}: learned prior {learned:.3f} vs N(0, I) {standard:.3f} nats"
    assert learned > before + 1.0, f"{prior_name}: {before:.3f} nats before training, {learned:.3f} after"
