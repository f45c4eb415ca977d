"""Annealed importance sampling and bidirectional Monte Carlo: exact where they must be (one step is
importance sampling; the exact posterior as proposal gives log p(x) for any path), HMC leaves its
target invariant, and on models whose log p(x) is known in closed form or by quadrature, AIS
converges to it from below as T grows while BDMC's bounds bracket it and close."""

from __future__ import annotations

import json
import math

import exact_models
import pyro
import pyro.distributions as dist
import pytest
import torch
from exact_models import F64
from torch import Tensor
from torch.distributions import kl_divergence
from torch.testing import assert_close

from pvae.inference import ais
from pvae.inference.ais import (
    AISSettings,
    _chunk_path,
    _hmc_transition,
    ais_estimate,
    annealing_schedule,
    bdmc,
    reverse_ais_estimate,
    simulate_data,
)
from pvae.inference.importance import importance_estimate, log_importance_weights
from pvae.inference.quadrature import posterior_on_grid
from pvae.models import VAE, SemiSupervisedVAE, TwoLayerVAE


class LinearGaussian(exact_models.LinearGaussian):
    """The closed-form model with a deliberately poor proposal beside the exact one."""

    def poor_q(self, x: Tensor) -> dist.MultivariateNormal:
        """The posterior shifted by 0.8 and with its Cholesky factor widened 1.8 times: a few nats of KL."""
        return self.shifted_posterior(x, 0.8, 1.8)

    def poor_guide(self, x: Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.poor_q(x))


class GammaPoisson:
    """z ~ Gamma(a, b) on the positive half-line, x_j | z ~ Poisson(z) for j = 1..d:
    p(x) = b^a Gamma(a + S) / (Gamma(a) (b + d)^(a + S) prod_j x_j!) with S = sum_j x_j, and
    p(z|x) = Gamma(a + S, b + d). A latent with a constrained support: HMC moves log z."""

    a, b, d = 2.0, 1.0, 4

    def model(self, x: Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Gamma(torch.tensor(self.a, dtype=F64), self.b))
            pyro.sample("x", dist.Poisson(z[..., None].expand(z.shape + (self.d,))).to_event(1), obs=x)

    def guide(self, x: Tensor) -> None:
        """A poor proposal: Gamma(k / 6, r / 4) for p(z|x) = Gamma(k, r), two thirds of the posterior's
        mean and about four times its variance."""
        k, r = self.a + x.sum(-1), self.b + self.d
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Gamma(k / 6, r / 4))

    def log_px(self, x: Tensor) -> Tensor:
        s = x.sum(-1)
        return (self.a * math.log(self.b) + torch.lgamma(self.a + s) - math.lgamma(self.a)
                - (self.a + s) * math.log(self.b + self.d) - torch.lgamma(x + 1).sum(-1))

    def sample_x(self, n: int, seed: int = 2) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        z = torch.distributions.Gamma(torch.full((n,), self.a, dtype=F64), self.b).sample()
        return torch.poisson(z[:, None].expand(n, self.d).contiguous(), generator=gen)


def _mean_and_stderr(values: Tensor) -> tuple[float, float]:
    return values.mean().item(), (values.std() / math.sqrt(values.numel())).item()


def test_schedules_run_from_zero_to_one() -> None:
    """Both schedules rise from exactly 0 to exactly 1; the sigmoid one is Wu et al.'s formula,
    denser near both ends than the linear one; T = 1 is the single step [0, 1]."""
    for kind in ("sigmoid", "linear"):
        betas = annealing_schedule(50, kind)
        assert betas.shape == (51,) and betas[0] == 0 and betas[-1] == 1 and bool((betas.diff() > 0).all()), kind
        assert annealing_schedule(1, kind).tolist() == [0.0, 1.0]
    sig = annealing_schedule(10, "sigmoid")
    g = torch.sigmoid(4.0 * (2 * torch.arange(11, dtype=F64) / 10 - 1))
    assert_close(sig, (g - g[0]) / (g[-1] - g[0]), atol=1e-15, rtol=0)
    assert_close(sig + sig.flip(0), torch.ones(11, dtype=F64), atol=1e-15, rtol=0)  # symmetric about t = T/2
    assert sig[1] < 0.1 * annealing_schedule(10, "linear")[1] * 10 and sig[1] < 0.1, "not denser near 0"
    lg = LinearGaussian()
    x = lg.sample_x(3)
    with pytest.raises(ValueError, match="schedule must be one of"):
        ais_estimate(lg.model, lg.poor_guide, x, settings=AISSettings(num_steps=3, schedule="cosine"))
    # the betas themselves are a schedule too: the linear ones give the linear schedule's estimate
    results = []
    for schedule in ("linear", annealing_schedule(4, "linear").tolist()):
        pyro.set_rng_seed(2)
        results.append(ais_estimate(lg.model, lg.poor_guide, x, settings=AISSettings(num_steps=4, num_leapfrog=2, schedule=schedule)))
    assert_close(results[1].log_weights, results[0].log_weights, atol=0, rtol=0)
    assert (results[0].schedule, results[1].schedule) == ("linear", "custom")
    with pytest.raises(ValueError, match="rise from exactly 0 to exactly 1"):
        ais_estimate(lg.model, lg.poor_guide, x, settings=AISSettings(num_steps=2, schedule=[0.0, 0.7, 0.5]))


@pytest.mark.parametrize("family", ["linear-gaussian", "gamma-poisson"])
def test_one_step_is_importance_sampling_on_the_same_draws(family: str) -> None:
    """T = 1: each chain's log weight is log p(x, z) - log q(z|x) at its draw z ~ q, the importance
    weight of the same draw, and C chains give importance sampling's estimate with K = C. The
    Gamma latent moves in log space; the log-Jacobian enters both ends of the path and cancels."""
    if family == "linear-gaussian":
        lg = LinearGaussian()
        model, guide, x = lg.model, lg.poor_guide, lg.sample_x(7)
    else:
        gp = GammaPoisson()
        model, guide, x = gp.model, gp.guide, gp.sample_x(7)
    pyro.set_rng_seed(3)
    est = ais_estimate(model, guide, x, settings=AISSettings(num_steps=1, num_chains=40))
    pyro.set_rng_seed(3)
    weights = log_importance_weights(model, guide, x, num_particles=40, dtype=F64).log_weights
    pyro.set_rng_seed(3)
    is_est = importance_estimate(model, guide, x, num_samples=40)
    # float64 models: the two sums of the same log-densities agree to rounding
    assert_close(est.log_weights, weights, atol=1e-10, rtol=0)
    assert_close(est.log_px, is_est.log_px, atol=1e-10, rtol=0)
    assert_close(est.ess, is_est.ess, atol=1e-8, rtol=1e-8)
    assert bool(est.acceptance_rate.isnan().all()), "T = 1 makes no transition"
    summary = est.summary()
    assert summary["ais_acceptance_rate_mean"] is None and summary["ais_num_steps"] == 1
    json.dumps(summary, allow_nan=False)


def test_exact_posterior_proposal_is_exact_for_any_path_and_chunking() -> None:
    """With q = p(z|x) every f_t is the posterior and every weight increment is (beta_t - beta_{t-1})
    log p(x): each chain's log w is log p(x) exactly, whatever T, L, the moves and the chunks, here
    split over images and over chains (5 chains in chunks of 3 and 2)."""
    lg = LinearGaussian()
    x = lg.sample_x(4)
    exact = lg.log_px(x)
    est = ais_estimate(lg.model, lg.exact_guide, x, settings=AISSettings(num_steps=6, num_leapfrog=3, num_chains=5, chunk_size=3, step_size=0.2))
    assert est.log_weights.shape == (5, 4) and est.log_px.shape == est.step_size.shape == (4,)
    assert_close(est.log_weights, exact.expand(5, 4), atol=1e-9, rtol=0)
    assert_close(est.log_px, exact, atol=1e-9, rtol=0)
    assert bool(((est.acceptance_rate > 0) & (est.acceptance_rate <= 1)).all()), est.acceptance_rate
    rev = reverse_ais_estimate(lg.model, lg.exact_guide, x, {"z": lg.posterior(x).sample()}, settings=AISSettings(num_steps=6, num_leapfrog=3, num_chains=5, chunk_size=3, step_size=0.2))
    assert_close(rev.log_px, exact, atol=1e-9, rtol=0)


def _gaussian_product(q: dist.MultivariateNormal, p: dist.MultivariateNormal, beta: float) -> tuple[Tensor, Tensor]:
    """Mean and covariance of q^(1 - beta) p^beta, normalized: precisions and precision-weighted means add."""
    prec_q, prec_p = torch.linalg.inv(q.covariance_matrix), torch.linalg.inv(p.covariance_matrix)
    prec = (1 - beta) * prec_q + beta * prec_p
    cov = torch.linalg.inv(prec)
    mean = (cov @ ((1 - beta) * prec_q @ q.loc[..., None] + beta * prec_p @ p.loc[..., None]))[..., 0]
    return mean, cov


@pytest.mark.parametrize("beta", [1.0, 0.4])
def test_hmc_transition_leaves_its_gaussian_target_invariant(beta: float) -> None:
    """Started from exact draws of f_beta (a correlated Gaussian: the posterior at beta = 1, its
    product with the poor proposal at 0.4), 4000 chains after 25 HMC transitions with a large
    step (acceptance ~0.6) still have f_beta's mean and covariance, to within 4.5 standard errors.
    Without the Metropolis test the leapfrog's error would inflate the variances by tens of percent."""
    lg = LinearGaussian()
    x = lg.sample_x(2)
    chains = 4000
    mean, cov = _gaussian_product(lg.poor_q(x), lg.posterior(x), beta)  # (2, m), (2, m, m)
    path, _ = _chunk_path(lg.model, lg.poor_guide, x, (), {}, num_chains=chains, proposal="guide", mean_field=True,
                          max_plate_nesting=1, data_plate="data")
    u = dist.MultivariateNormal(mean, covariance_matrix=cov).sample((chains,))  # (C, 2, m)
    state = path.evaluate(u)
    step = torch.full((2,), 1.1 * cov.diagonal(dim1=-2, dim2=-1).min().sqrt().item(), dtype=F64)
    acc = []
    for _ in range(25):
        state, accept_prob = _hmc_transition(path, state, beta, step, num_leapfrog=4)
        acc.append(accept_prob.mean().item())
    assert 0.3 < sum(acc) / len(acc) < 0.9, f"acceptance {sum(acc) / len(acc):.2f}: the step tests too little"
    z = state.u
    sd = cov.diagonal(dim1=-2, dim2=-1).sqrt()
    # the mean of C independent draws has standard error sd / sqrt(C)
    assert ((z.mean(0) - mean).abs() / (sd / math.sqrt(chains))).max() < 4.5, (z.mean(0), mean)
    centred = z - mean
    emp = torch.einsum("cbi,cbj->bij", centred, centred) / chains
    # a (co)variance of C Gaussian draws has standard error sqrt((S_ii S_jj + S_ij^2) / C)
    se = ((cov.diagonal(dim1=-2, dim2=-1)[..., :, None] * cov.diagonal(dim1=-2, dim2=-1)[..., None, :] + cov**2)
          / chains).sqrt()
    assert ((emp - cov).abs() / se).max() < 4.5, (emp, cov)


def test_ais_lies_below_and_converges_as_t_grows() -> None:
    """Linear-Gaussian model, a poor proposal (KL(q || p(z|x)) ~ 3 nats): T = 1 (importance sampling
    with 2 draws) falls clearly short of the exact log p(x); the shortfall shrinks as T grows, is
    never significantly negative (a lower bound on average), and is ~0 by T = 100."""
    lg = LinearGaussian()
    x = lg.sample_x(150)
    exact = lg.log_px(x)
    kl = kl_divergence(lg.poor_q(x), lg.posterior(x)).mean().item()
    assert kl > 2.0, f"the proposal is not poor enough for the test to mean much: KL {kl:.2f}"
    gaps, stderrs = {}, {}
    for steps in (1, 10, 100):
        est = ais_estimate(lg.model, lg.poor_guide, x, settings=AISSettings(num_steps=steps, num_leapfrog=5, num_chains=2, step_size=0.1))
        gaps[steps], stderrs[steps] = _mean_and_stderr(exact - est.log_px)
        assert gaps[steps] > -3 * stderrs[steps], f"T={steps}: AIS is above log p(x) on average: {gaps}, {stderrs}"
    assert gaps[1] > 5 * stderrs[1] and gaps[10] > 3 * stderrs[10], (gaps, stderrs)
    assert gaps[1] > gaps[10] > gaps[100], f"the gap does not shrink with T: {gaps}"
    assert gaps[100] < 0.03 * gaps[1] + 3 * stderrs[100], f"T=100 is still {gaps[100]:.4f} nats short: {gaps}"


def test_ais_from_the_prior_converges_too() -> None:
    """proposal='prior': the path from p(z) to p(z|x) reaches the exact log p(x) at T = 200 within
    0.05 nats on average, from several nats short at T = 1."""
    lg = LinearGaussian()
    x = lg.sample_x(60)
    exact = lg.log_px(x)
    one = ais_estimate(lg.model, lg.poor_guide, x, settings=AISSettings(num_steps=1, num_chains=2, proposal="prior"))
    many = ais_estimate(lg.model, lg.poor_guide, x, settings=AISSettings(num_steps=200, num_leapfrog=5, num_chains=2, proposal="prior", step_size=0.1))
    gap_one, _ = _mean_and_stderr(exact - one.log_px)
    gap, se = _mean_and_stderr(exact - many.log_px)
    assert gap_one > 2.0 and abs(gap) < 0.05 + 3 * se, (gap_one, gap, se)
    assert many.proposal == "prior" and 0.3 < many.acceptance_rate.mean() < 0.95


def test_bdmc_brackets_the_exact_value_and_closes_as_t_grows() -> None:
    """On images simulated from the linear-Gaussian model, forward AIS lies below the exact log p(x)
    and reverse AIS from the generating z above it, within noise (3 standard errors of the mean
    difference over 150 images); the sandwich narrows from T = 3 to T = 30."""
    lg = LinearGaussian()
    data = simulate_data(lg.model, torch.zeros(150, lg.x_dim, dtype=F64))
    exact = lg.log_px(data.x)
    gaps = {}
    for steps in (3, 30):
        result = bdmc(lg.model, lg.poor_guide, data, settings=AISSettings(num_steps=steps, num_leapfrog=5, num_chains=1, step_size=0.1))
        below, se_below = _mean_and_stderr(exact - result.lower)
        above, se_above = _mean_and_stderr(result.upper - exact)
        assert below > -3 * se_below and above > -3 * se_above, (steps, below, se_below, above, se_above)
        gaps[steps] = result.gap_mean
        assert result.gap_mean > 0 and result.gap.shape == (150,)
        json.dumps(result.summary(), allow_nan=False)
    assert gaps[3] > 0.5 and gaps[30] < 0.5 * gaps[3], f"the sandwich does not close: {gaps}"


def test_simulated_images_come_from_the_model() -> None:
    """simulate_data draws z ~ p(z) and x ~ p(x|z) at the image site: the residuals x - (W z + b)
    have the noise's standard deviation and z the prior's, to sampling error."""
    lg = LinearGaussian()
    pyro.set_rng_seed(4)
    data = simulate_data(lg.model, torch.zeros(4000, lg.x_dim, dtype=F64))
    assert data.image_site == "x" and set(data.latents) == {"z"} and data.latents["z"].shape == (4000, lg.z_dim)
    residual = data.x - data.latents["z"] @ lg.W.T - lg.b
    assert_close(residual.std(0), torch.full((lg.x_dim,), lg.s, dtype=F64), atol=0.03, rtol=0)  # se ~ 0.008
    assert_close(data.latents["z"].std(0), torch.ones(lg.z_dim, dtype=F64), atol=0.05, rtol=0)


def test_gamma_latent_converges_in_unconstrained_space() -> None:
    """A positive latent: HMC on log z, with the log-Jacobian in the path, reaches the exact log p(x) of
    the Gamma-Poisson model at T = 300 (within 0.05 nats + 3 standard errors on average over 100
    images; ~0.03 nats of bias remain at T = 200) from ~0.9 nats short at T = 1. Leaving the Jacobian
    out makes the moves sample the wrong distributions: 2.4 nats off at T = 200."""
    gp = GammaPoisson()
    x = gp.sample_x(100)
    exact = gp.log_px(x)
    one = ais_estimate(gp.model, gp.guide, x, settings=AISSettings(num_steps=1, num_chains=1))  # the ELBO's draws
    many = ais_estimate(gp.model, gp.guide, x, settings=AISSettings(num_steps=300, num_leapfrog=5, num_chains=4, step_size=0.1))
    gap_one, se_one = _mean_and_stderr(exact - one.log_px)
    gap, se = _mean_and_stderr(exact - many.log_px)
    assert gap_one > 0.5 and abs(gap) < 0.05 + 3 * se, (gap_one, se_one, gap, se)


class TwoDimensionalLatent(exact_models.TwoDimensionalLatent, torch.nn.Module):
    """p(z) = N(0, I_2), eight binary pixels x_j ~ Bernoulli(sigmoid(a_j . tanh(B z + c) + d_j)): a
    non-Gaussian posterior. The guide is a diagonal Gaussian 0.3 posterior standard deviations off
    the posterior's mean and 1.5 times wider (moments from a coarse grid). A model pvae.inference.quadrature
    can integrate (x_dim, model, guide)."""

    num_data = None

    def guide(self, x: Tensor) -> None:
        loc, scale = self.posterior_moments(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc + 0.3 * scale, 1.5 * scale).to_event(1))


def test_two_dimensional_latent_agrees_with_quadrature() -> None:
    """On a 2-D latent model with a non-Gaussian posterior, AIS (T = 200, 32 chains) matches log p(x)
    by quadrature on a grid (pvae.inference.quadrature, 300 x 300 cells, accurate to ~1e-6 nats here) within
    4 of its own standard errors + 0.01 nats on every image, and on their mean; its standard errors
    are at most 0.1 nats, so any bias above ~0.4 nats on an image, or ~0.1 on the mean, fails.
    The proposal's ELBO is 1.1 to 2.2 nats short."""
    m = TwoDimensionalLatent()
    x = torch.bernoulli(torch.full((8, 8), 0.5, dtype=F64), generator=torch.Generator().manual_seed(3))
    exact = torch.tensor([posterior_on_grid(m, xi, size=300).log_px for xi in x], dtype=F64)
    est = ais_estimate(m.model, m.guide, x, settings=AISSettings(num_steps=200, num_leapfrog=5, num_chains=32, step_size=0.3))
    # The estimator's standard error from its own chains, sqrt((C / ESS - 1) / C) (delta method); the
    # chains' log weights vary by ~0.3 nats at T = 200 (their variance falls as 1 / T).
    stderr = ((est.num_chains / est.ess - 1) / est.num_chains).sqrt()
    assert stderr.max() < 0.1, f"AIS too noisy for a sharp test: stderrs {stderr}"
    diff = est.log_px - exact
    assert bool((diff.abs() < 4 * stderr + 0.01).all()), f"AIS - quadrature {diff} (stderrs {stderr})"
    assert abs(diff.mean()) < 4 * stderr.square().sum().sqrt() / len(x) + 0.01, (diff.mean(), stderr)
    elbo_short = (exact - importance_estimate(m.model, m.guide, x, num_samples=1000).elbo).min()
    assert elbo_short > 1.0, f"the proposal is too good for the test to show AIS's work: ELBO short by {elbo_short:.3f}"


def test_discrete_latent_is_refused_in_one_line() -> None:
    """M2's label y, latent for unlabelled images, cannot move by HMC: refused, pointing to importance
    sampling, which sums y out exactly."""
    m2 = SemiSupervisedVAE(6, 2, num_classes=3, hidden=(4,))
    x = torch.bernoulli(torch.full((3, 6), 0.5))
    with pytest.raises(ValueError, match="importance sampling") as err:
        ais_estimate(m2.model, m2.guide, x, settings=AISSettings(num_steps=2))
    assert "\n" not in str(err.value) and "'y'" in str(err.value)


def test_cached_guide_distributions_give_the_guides_own_density(monkeypatch: pytest.MonkeyPatch) -> None:
    """pvae's VAE (a mean-field guide, whose distributions are kept from the first trace) gives the
    very same estimate as when its guide is replayed at every leapfrog step; and a two-layer VAE,
    whose guide draws z2 from z1 (always replayed), runs and lies below its importance estimate
    with many draws, to noise, on a handful of images."""
    torch.manual_seed(0)
    vae = VAE(12, 3, hidden=(8,))
    x = torch.bernoulli(torch.full((5, 12), 0.4))
    results = []
    for mean_field in (True, False):
        monkeypatch.setattr(ais, "_guide_is_mean_field", lambda *args, mf=mean_field: mf)
        pyro.set_rng_seed(7)
        results.append(ais_estimate(vae.model, vae.guide, x, settings=AISSettings(num_steps=5, num_leapfrog=2, num_chains=3)))
    assert_close(results[0].log_weights, results[1].log_weights, atol=1e-4, rtol=0)  # float32 model
    monkeypatch.undo()
    two = TwoLayerVAE(12, 3, 2, hidden=(8,), top_hidden=(4,))
    est = ais_estimate(two.model, two.guide, x, settings=AISSettings(num_steps=20, num_leapfrog=3, num_chains=4, step_size=0.05))
    ref = importance_estimate(two.model, two.guide, x, num_samples=2000)
    assert bool(torch.isfinite(est.log_px).all()) and 0 < est.acceptance_rate.mean() <= 1
    assert (est.log_px - ref.log_px).mean() < 0.5, (est.log_px, ref.log_px)


def _nested_model(x: Tensor) -> None:
    """Two latent sites, one in a plate nested in the data plate (z: 3 groups x N images x 2) and one
    positive (s), to exercise the layout of the state: images along the second dim of z."""
    with pyro.plate("data", x.shape[0], dim=-1):
        with pyro.plate("groups", 3, dim=-2):
            z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=F64), 1.0).to_event(1))
        s = pyro.sample("s", dist.LogNormal(torch.tensor(0.0, dtype=F64), 0.5))
        # s has a dim of 1 for the groups plate under a plate of chains: keep the groups dim in the sum
        pyro.sample("x", dist.Normal(z.sum(-3, keepdim=True), s[..., None]).to_event(1), obs=x)


def _nested_guide(x: Tensor) -> None:
    with pyro.plate("data", x.shape[0], dim=-1):
        with pyro.plate("groups", 3, dim=-2):
            pyro.sample("z", dist.Normal(x / 3, 0.7).to_event(1))
        pyro.sample("s", dist.LogNormal(torch.zeros(x.shape[0], dtype=F64), 0.6))


def test_nested_plates_and_several_sites_keep_images_apart() -> None:
    """A model nesting a plate in the data plate (max_plate_nesting=2) with two latent sites: T = 1 is
    importance sampling on the same draws, and one-step reverse AIS from given latents, cut into
    chunks of one image, gives -(log p(x, z) - log q(z|x)) at exactly those latents, image by image."""
    x = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    pyro.set_rng_seed(1)
    est = ais_estimate(_nested_model, _nested_guide, x, settings=AISSettings(num_steps=1, num_chains=7, max_plate_nesting=2))
    pyro.set_rng_seed(1)
    weights = log_importance_weights(_nested_model, _nested_guide, x, num_particles=7, max_plate_nesting=2,
                                     dtype=F64).log_weights
    assert_close(est.log_weights, weights, atol=1e-10, rtol=0)
    data = simulate_data(_nested_model, torch.zeros(5, 2, dtype=F64))
    assert data.latents["z"].shape == (3, 5, 2) and data.latents["s"].shape == (5,)
    rev = reverse_ais_estimate(_nested_model, _nested_guide, data.x, data.latents, settings=AISSettings(num_steps=1, num_chains=2, max_plate_nesting=2, chunk_size=2))
    z, scale = data.latents["z"], data.latents["s"]  # (3, N, 2), (N,)
    normal, lognormal = torch.distributions.Normal, torch.distributions.LogNormal
    zero, one = torch.zeros((), dtype=F64), torch.ones((), dtype=F64)  # float64 parameters: no float32 logs
    log_p = (normal(zero, one).log_prob(z).sum((0, 2)) + lognormal(zero, 0.5 * one).log_prob(scale)
             + normal(z.sum(0), scale[:, None]).log_prob(data.x).sum(-1))
    log_q = normal(data.x / 3, 0.7 * one).log_prob(z).sum((0, 2)) + lognormal(zero, 0.6 * one).log_prob(scale)
    log_joint = {"model": log_p, "guide": log_q}
    assert_close(rev.log_px, log_joint["model"] - log_joint["guide"], atol=1e-10, rtol=0)
    assert_close(rev.log_weights, (log_joint["guide"] - log_joint["model"]).expand(2, 5), atol=1e-10, rtol=0)


@pytest.mark.parametrize(("changes", "message"), [
    (dict(num_steps=0), "num_steps must be >= 1, got 0"),
    (dict(num_chains=0), "num_chains must be >= 1, got 0"),
    (dict(proposal="data"), "proposal must be one of guide, prior"),
    (dict(step_size=0.9), "step_size <= step_size_bounds"),
    (dict(target_acceptance=1.0), "target_acceptance must lie in"),
    (dict(schedule=[0.0, 1.0]), "num_steps \\+ 1 = 4 values"),
])
def test_settings_are_checked_once_in_one_line(changes: dict[str, object], message: str) -> None:
    """AISSettings refuses a path it cannot run, naming the parameter, before any estimator draws."""
    with pytest.raises(ValueError, match=message) as err:
        AISSettings(**{"num_steps": 3, **changes})  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


def test_settings_passed_as_keywords_are_refused() -> None:
    """A setting passed as a keyword (the signature before AISSettings) is refused, not handed to the model."""
    lg = LinearGaussian()
    with pytest.raises(TypeError, match=r"settings=AISSettings\(num_chains=4, \.\.\.\)"):
        ais_estimate(lg.model, lg.poor_guide, lg.sample_x(2), settings=AISSettings(num_steps=3), num_chains=4)
