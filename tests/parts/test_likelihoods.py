"""Likelihoods p(x|z): log-probabilities against scipy.stats and closed forms, normalization,
starting biases, and the refusal of data outside the support."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch.nn import functional as F

from pvae.models import VAE
from pvae.parts.build import LIKELIHOODS, build_likelihood
from pvae.parts.likelihoods import (
    Bernoulli,
    Beta,
    ContinuousBernoulli,
    DiscretizedLogistic,
    DiscretizedLogisticDistribution,
    Gaussian,
    Laplace,
)
from pvae.runs.build import check_config
from pvae.runs.config import ConfigError, TrainConfig

X_DIM = 6


def _grey(n: int) -> torch.Tensor:
    """8-bit grey levels k/255, ``(n, X_DIM)``, float64, with exact 0s and 1s among them."""
    x = torch.randint(0, 256, (n, X_DIM)).double() / 255
    x[0, 0], x[1, 1] = 0.0, 1.0
    return x


def _output(n: int, params: int) -> torch.Tensor:
    return 1.5 * torch.randn(n, params * X_DIM, dtype=torch.float64)


def test_bernoulli_log_prob_matches_scipy() -> None:
    """sum_d log Bernoulli(x_d; sigmoid(logit_d)) equals scipy's."""
    logits, x = _output(20, 1), torch.bernoulli(torch.full((20, X_DIM), 0.4, dtype=torch.float64))
    want = stats.bernoulli.logpmf(x.numpy(), torch.sigmoid(logits).numpy()).sum(-1)
    torch.testing.assert_close(Bernoulli()(logits).log_prob(x), torch.from_numpy(want), rtol=1e-10, atol=1e-10)


def test_bernoulli_pixels_is_torchs_bernoulli_bit_for_bit() -> None:
    """BernoulliPixels only reorders sum and negation: values and gradients equal
    Bernoulli(logits).to_event(1)'s exactly, also with K particles broadcast against the images,
    and its argument validation still refuses grey levels."""
    import pyro.distributions as dist

    logits = torch.randn(4, 5, X_DIM, requires_grad=True)  # K = 4 particles for 5 images
    x = torch.bernoulli(torch.full((5, X_DIM), 0.4))
    ours, theirs = Bernoulli()(logits), dist.Bernoulli(logits=logits).to_event(1)
    assert (ours.batch_shape, ours.event_shape) == (theirs.batch_shape, theirs.event_shape)
    got, want = ours.log_prob(x), theirs.log_prob(x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    g_got, g_want = (torch.autograd.grad(v.sum(), logits)[0] for v in (got, want))
    torch.testing.assert_close(g_got, g_want, rtol=0, atol=0)
    expanded = ours.expand(torch.Size([2, 4, 5]))
    assert type(expanded) is type(ours) and expanded.log_prob(x).shape == (2, 4, 5)
    two_dims = type(ours)(dist.Bernoulli(logits=logits), 2)  # an event of 5 images: the general path
    torch.testing.assert_close(two_dims.log_prob(x), theirs.log_prob(x).sum(-1), rtol=1e-6, atol=1e-5)
    with pytest.raises(ValueError, match="support"):
        type(ours)(dist.Bernoulli(logits=logits), 1, validate_args=True).log_prob(torch.full((5, X_DIM), 0.5))


def _cb_log_density(x: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Continuous Bernoulli: log C(lam) + x log lam + (1 - x) log(1 - lam), C = 2 atanh(1 - 2 lam) / (1 - 2 lam)."""
    log_c = np.log(2 * np.arctanh(1 - 2 * lam) / (1 - 2 * lam))
    return log_c + x * np.log(lam) + (1 - x) * np.log1p(-lam)


def test_continuous_bernoulli_log_prob_matches_closed_form() -> None:
    """The continuous Bernoulli includes its normalizing constant (Loaiza-Ganem & Cunningham 2019, eq. 7)."""
    logits, x = _output(20, 1), _grey(20)
    logits = torch.where(logits.abs() < 0.05, logits + 0.1, logits)  # keep lam off the removable point 1/2
    want = _cb_log_density(x.numpy(), torch.sigmoid(logits).numpy()).sum(-1)
    got = ContinuousBernoulli()(logits).log_prob(x)
    torch.testing.assert_close(got, torch.from_numpy(want), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("logit", [-4.0, -0.3, 0.0, 2.5])
def test_continuous_bernoulli_integrates_to_one(logit: float) -> None:
    """The density of one pixel integrates to 1 over [0, 1] (quadrature)."""
    pixel = torch.distributions.ContinuousBernoulli(logits=torch.tensor(logit, dtype=torch.float64))
    mass, _ = integrate.quad(lambda v: math.exp(pixel.log_prob(torch.tensor(v, dtype=torch.float64))), 0, 1)
    assert mass == pytest.approx(1.0, abs=1e-8), f"CB(logit={logit}) integrates to {mass}"


def test_gaussian_fixed_scale_log_prob_matches_scipy() -> None:
    """Fixed-scale Gaussian: sum_d log N(x_d; mu_d, 0.2^2) equals scipy's."""
    loc, x = _output(10, 1), _grey(10)
    want = stats.norm.logpdf(x.numpy(), loc.numpy(), 0.2).sum(-1)
    torch.testing.assert_close(Gaussian(0.2)(loc).log_prob(x), torch.from_numpy(want), rtol=1e-10, atol=1e-10)


def test_gaussian_learned_scale_log_prob_matches_scipy() -> None:
    """Learned-scale Gaussian: the decoder's second half gives sigma = softplus(raw) + min_scale."""
    out, x = _output(10, 2), _grey(10)
    loc, scale = out[:, :X_DIM], F.softplus(out[:, X_DIM:]) + 1e-3
    want = stats.norm.logpdf(x.numpy(), loc.numpy(), scale.numpy()).sum(-1)
    got = Gaussian(None, min_scale=1e-3)(out).log_prob(x)
    torch.testing.assert_close(got, torch.from_numpy(want), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("scale", [0.3, None], ids=["fixed", "learned"])
def test_laplace_log_prob_matches_scipy(scale: float | None) -> None:
    """Laplace likelihood (fixed or learned scale) equals scipy's Laplace log-density."""
    lik = Laplace(scale)
    out, x = _output(10, lik.params_per_pixel), _grey(10)
    loc = out[:, :X_DIM]
    b = 0.3 if scale is not None else (F.softplus(out[:, X_DIM:]) + 1e-3).numpy()
    want = stats.laplace.logpdf(x.numpy(), loc.numpy(), b).sum(-1)
    torch.testing.assert_close(lik(out).log_prob(x), torch.from_numpy(want), rtol=1e-10, atol=1e-10)


def test_beta_log_prob_matches_scipy() -> None:
    """Beta likelihood: alpha, beta = softplus(outputs) + 1e-4, log-density equals scipy's."""
    out, x = _output(10, 2), (255 * _grey(10) + 0.5) / 256
    alpha, beta = (F.softplus(h) + 1e-4 for h in out.chunk(2, -1))
    want = stats.beta.logpdf(x.numpy(), alpha.numpy(), beta.numpy()).sum(-1)
    torch.testing.assert_close(Beta()(out).log_prob(x), torch.from_numpy(want), rtol=1e-9, atol=1e-9)


def _logistic_bin_log_probability(x: np.ndarray, loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """log P(level x) = log [F(x + 1/510) - F(x - 1/510)], with the tails added to levels 0 and 1;
    right of loc written with survival functions, which keep their precision there."""
    cdf_up = np.where(x > 1 - 1e-9, 1.0, stats.logistic.cdf(x + 0.5 / 255, loc, scale))
    cdf_low = np.where(x < 1e-9, 0.0, stats.logistic.cdf(x - 0.5 / 255, loc, scale))
    sf_up = np.where(x > 1 - 1e-9, 0.0, stats.logistic.sf(x + 0.5 / 255, loc, scale))
    sf_low = np.where(x < 1e-9, 1.0, stats.logistic.sf(x - 0.5 / 255, loc, scale))
    return np.log(np.where(x > loc, sf_low - sf_up, cdf_up - cdf_low))


def test_discretized_logistic_log_prob_matches_scipy() -> None:
    """Discretized logistic: log of the logistic CDF difference over each grey level's bin."""
    out, x = _output(10, 2), _grey(10)
    # scales from 0.02 up: the far tails then stay within float64's range for scipy
    loc, scale = out[:, :X_DIM] * 0.3 + 0.5, F.softplus(out[:, X_DIM:]) * 0.1 + 0.02
    raw = torch.log(torch.expm1(scale - 1e-4))
    got = DiscretizedLogistic()(torch.cat([loc, raw], -1)).log_prob(x)
    want = _logistic_bin_log_probability(x.numpy(), loc.numpy(), scale.numpy()).sum(-1)
    torch.testing.assert_close(got, torch.from_numpy(want), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("loc,scale", [(0.5, 0.1), (0.0, 0.01), (1.2, 0.3), (0.3, 1e-4)])
def test_discretized_logistic_sums_to_one_and_has_the_stated_mean(loc: float, scale: float) -> None:
    """The 256 level probabilities sum to 1 and their mean is the ``mean`` property."""
    levels = torch.arange(256, dtype=torch.float64) / 255
    d = DiscretizedLogisticDistribution(torch.tensor(loc, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64))
    p = d.log_prob(levels).exp()
    assert p.sum().item() == pytest.approx(1.0, abs=1e-10), f"probabilities sum to {p.sum().item()}"
    assert d.mean.item() == pytest.approx((p * levels).sum().item(), abs=1e-10), "mean property vs sum_k p_k x_k"


def test_discretized_logistic_samples_lie_on_the_grid_with_the_right_frequencies() -> None:
    """Draws are grey levels k/255 whose empirical mean matches the distribution's mean."""
    d = DiscretizedLogisticDistribution(torch.tensor(0.4), torch.tensor(0.05))
    x = d.sample((20_000,))
    assert torch.equal(x * 255, (x * 255).round()), "a draw is off the 8-bit grid"
    # the standard error of the mean of 20,000 draws is about 0.09 / 141 = 6e-4
    assert x.mean().item() == pytest.approx(d.mean.item(), abs=3e-3), f"sample mean {x.mean().item()} vs {d.mean.item()}"


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_initial_bias_makes_the_untrained_decoder_predict_the_mean_image(name: str) -> None:
    """The distribution at the starting bias has the mean image as its mean (pixels with mean in [0.2, 0.8])."""
    lik = build_likelihood(name)
    mean_image = torch.linspace(0.2, 0.8, X_DIM)
    bias = lik.initial_bias(mean_image)
    assert bias.shape == (lik.params_per_pixel * X_DIM,), f"bias shape {tuple(bias.shape)}"
    # Gaussian and Laplace means are exact; CB's and the discretized logistic's are matched by bisection.
    torch.testing.assert_close(lik(bias).mean, mean_image, rtol=0, atol=2e-3)


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_initial_bias_is_finite_for_black_and_white_pixels(name: str) -> None:
    """Pixels that are always 0 or always 1 still get a finite starting bias and log-probability."""
    lik = build_likelihood(name)
    mean_image = torch.tensor([0.0, 1.0, 0.5, 0.0, 1.0, 0.25])
    bias = lik.initial_bias(mean_image)
    assert torch.isfinite(bias).all(), f"{name}: bias {bias}"
    x = torch.tensor([[0.0, 1.0, 0.5, 0.0, 1.0, 0.25]])
    if name == "beta":
        x = (255 * x + 0.5) / 256
    if name == "discretized-logistic":  # its support is the 8-bit grid k / 255
        x = (255 * x).round() / 255
    if name != "bernoulli":
        assert torch.isfinite(lik(bias).log_prob(x)).all(), f"{name}: log p(x) not finite at the starting bias"


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_decoder_width_follows_the_likelihood(name: str) -> None:
    """The decoder emits params_per_pixel numbers per pixel."""
    lik = build_likelihood(name)
    vae = VAE(X_DIM, 2, likelihood=lik, hidden=(4,))
    assert vae.decoder[-1].out_features == lik.params_per_pixel * X_DIM, f"{name}: {vae.decoder[-1]}"


@pytest.mark.parametrize("lik,data,fitting", [
    pytest.param(Bernoulli(), torch.tensor([[0.0, 0.5]]), "continuous-bernoulli", id="bernoulli-on-grey"),
    pytest.param(Beta(), torch.tensor([[0.0, 0.5]]), "continuous-bernoulli", id="beta-on-exact-0"),
    pytest.param(Beta(), torch.tensor([[1.0, 0.5]]), "discretized-logistic", id="beta-on-exact-1"),
    pytest.param(DiscretizedLogistic(), torch.tensor([[0.123456, 0.5]]), "gaussian", id="discrete-on-floats"),
    pytest.param(ContinuousBernoulli(), torch.tensor([[1.5, 0.5]]), "gaussian", id="cb-above-1"),
    pytest.param(Gaussian(0.1), torch.tensor([[float("nan"), 0.5]]), "finite", id="gaussian-on-nan"),
])
def test_data_outside_the_support_is_refused_naming_a_fitting_choice(lik, data, fitting) -> None:  # noqa: ANN001
    """check_support refuses mismatched data with a message that names a likelihood (or fix) that fits."""
    with pytest.raises(ValueError, match=fitting):
        lik.check_support(data)


@pytest.mark.parametrize("lik,data", [
    pytest.param(Bernoulli(), torch.tensor([[0.0, 1.0]]), id="bernoulli-binary"),
    pytest.param(Beta(), torch.tensor([[0.5 / 256, 255.5 / 256]]), id="beta-bin-centres"),
    pytest.param(DiscretizedLogistic(), torch.arange(256).reshape(1, -1) / 255.0, id="discrete-8-bit"),
    pytest.param(DiscretizedLogistic(), torch.tensor([[0.0, 1.0]]), id="discrete-binarized"),
    pytest.param(ContinuousBernoulli(), torch.tensor([[0.0, 0.3, 1.0]]), id="cb-grey"),
])
def test_data_inside_the_support_is_accepted(lik, data) -> None:  # noqa: ANN001
    """check_support lets fitting data through, and the log-probability there is finite."""
    lik.check_support(data)
    out = torch.zeros(data.shape[0], lik.params_per_pixel * data.shape[1])
    assert torch.isfinite(lik(out).log_prob(data)).all(), "finite log p(x) expected inside the support"


def test_a_binary_likelihood_without_binarization_is_refused_by_the_config() -> None:
    """binarization 'none' with a likelihood that needs binary data is a ConfigError listing grey-level choices."""
    with pytest.raises(ConfigError, match="continuous-bernoulli.*discretized-logistic"):
        check_config(TrainConfig(likelihood="bernoulli", binarization="none"))
    check_config(TrainConfig(likelihood="continuous-bernoulli", binarization="none"))  # a grey-level likelihood is fine
