"""Posterior families q(z|x): densities against scipy and change of variables, the registered
KL(full-covariance || diagonal) against its closed form, and which (guide, prior) pairs are analytic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from scipy import stats
from torch.distributions import kl_divergence
from torch.nn import functional as F

from pvae.parts.guides import DiagonalPosterior, FlowPosterior, FullCovariancePosterior, central_value
from pvae.runs.build import build_vae
from pvae.runs.config import ConfigError, TrainConfig
from pvae.runs.folder import CHECKPOINT, CONFIG
from pvae.training.objectives import check_objective

X_DIM, Z_DIM = 7, 3


def _x(n: int) -> torch.Tensor:
    return torch.rand(n, X_DIM, dtype=torch.float64)


def test_diagonal_posterior_log_prob_matches_scipy() -> None:
    """q(z|x) = prod_j N(z_j; loc_j(x), scale_j(x)^2), read off the encoder, equals scipy's density."""
    family = DiagonalPosterior(X_DIM, Z_DIM, (8,), "tanh").double()
    x = _x(5)
    q = family(x)
    z = q.sample()
    loc, scale = (t.detach().numpy() for t in family.encoder(x))
    want = stats.norm.logpdf(z.numpy(), loc, scale).sum(-1)
    assert (q.batch_shape, q.event_shape) == ((5,), (Z_DIM,)), f"{q.batch_shape} {q.event_shape}"
    torch.testing.assert_close(q.log_prob(z).detach(), torch.from_numpy(want), rtol=1e-10, atol=1e-10)


def test_full_covariance_posterior_log_prob_matches_scipy() -> None:
    """q(z|x) = N(loc, L L^T) equals scipy's multivariate normal with that covariance, and the
    off-diagonal entries of L are really used (correlated z)."""
    family = FullCovariancePosterior(X_DIM, Z_DIM, (8,), "tanh").double()
    with torch.no_grad():
        family.encoder[-1].bias.add_(torch.randn_like(family.encoder[-1].bias))
    x = _x(4)
    q = family(x)
    z = q.sample()
    for i in range(4):
        cov = (q.scale_tril[i] @ q.scale_tril[i].T).detach().numpy()
        want = stats.multivariate_normal(q.loc[i].detach().numpy(), cov).logpdf(z[i].numpy())
        assert q.log_prob(z)[i].item() == pytest.approx(want, abs=1e-9), f"image {i}"
        assert np.abs(np.tril(cov, -1)).max() > 1e-3, f"image {i}: covariance is diagonal\n{cov}"


def _kl_gaussians(mu_q: np.ndarray, cov_q: np.ndarray, mu_p: np.ndarray, var_p: np.ndarray) -> float:
    """KL(N(mu_q, cov_q) || N(mu_p, diag(var_p))) = 1/2 [tr(P^-1 Q) + d^T P^-1 d - k + log det P - log det Q]."""
    d = mu_p - mu_q
    trace = (np.diag(cov_q) / var_p).sum()
    return 0.5 * (trace + (d * d / var_p).sum() - len(mu_q) + np.log(var_p).sum() - np.linalg.slogdet(cov_q)[1])


def test_kl_full_covariance_to_diagonal_gaussian_matches_closed_form() -> None:
    """The registered KL(N(mu, L L^T) || N(m, diag(s^2))) equals the textbook formula."""
    family = FullCovariancePosterior(X_DIM, Z_DIM, (8,), "tanh").double()
    with torch.no_grad():
        family.encoder[-1].bias.add_(torch.randn_like(family.encoder[-1].bias))
    q = family(_x(3))
    m, s = torch.randn(Z_DIM, dtype=torch.float64), 0.5 + torch.rand(Z_DIM, dtype=torch.float64)
    p = dist.Normal(m, s).to_event(1)
    got = kl_divergence(q, p.expand((3,))).detach()
    for i in range(3):
        cov = (q.scale_tril[i] @ q.scale_tril[i].T).detach().numpy()
        want = _kl_gaussians(q.loc[i].detach().numpy(), cov, m.numpy(), (s * s).numpy())
        assert got[i].item() == pytest.approx(want, abs=1e-9), f"image {i}: KL {got[i].item()} vs {want}"


def test_flow_posterior_log_prob_is_the_change_of_variables() -> None:
    """log q(z|x) of a draw = log N(z_0; loc, scale) - log |det dz/dz_0|, the Jacobian by autograd."""
    family = FlowPosterior(X_DIM, Z_DIM, (8,), "tanh", num_flows=2).double()
    with torch.no_grad():
        for p in family.flows.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = _x(1)
    q = family(x)
    z = q.rsample()
    out = family.encoder(x)
    out = out.detach()
    loc, scale, context = out[..., :Z_DIM], F.softplus(out[..., Z_DIM : 2 * Z_DIM]) + 1e-6, out[..., 2 * Z_DIM :]

    def flow(z0: torch.Tensor) -> torch.Tensor:
        for step in family.flows:
            z0 = step.condition(context[0])(z0)
        return z0

    z0 = z.detach()[0]
    with torch.no_grad():
        for step in reversed(family.flows):  # invert the draw back to the base
            z0 = step.condition(context[0]).inv(z0)
    jac = torch.autograd.functional.jacobian(flow, z0)
    want = stats.norm.logpdf(z0.numpy(), loc[0].detach().numpy(), scale[0].detach().numpy()).sum()
    want -= torch.linalg.slogdet(jac).logabsdet.item()
    torch.testing.assert_close(flow(z0), z.detach()[0], rtol=1e-8, atol=1e-8)
    assert q.log_prob(z).item() == pytest.approx(want, abs=1e-6), "flow log q(z|x) vs change of variables"


def test_every_family_reparameterizes() -> None:
    """Gradients of a function of z ~ q(z|x) reach the encoder (the ELBO's pathwise gradient)."""
    for family in (DiagonalPosterior(X_DIM, Z_DIM, (8,), "tanh"), FullCovariancePosterior(X_DIM, Z_DIM, (8,), "tanh"),
                   FlowPosterior(X_DIM, Z_DIM, (8,), "tanh", num_flows=2)):
        family(torch.rand(4, X_DIM)).rsample().square().sum().backward()
        grad = family.encoder.parameters().__next__().grad
        assert grad is not None and grad.abs().sum() > 0, f"{type(family).__name__}: no gradient reached the encoder"


def test_central_value_is_the_mean_or_the_flow_image_of_the_base_mean() -> None:
    """central_value: loc for the Gaussian families; the flow applied to the base loc for a flow."""
    x = torch.rand(4, X_DIM)
    diag, full = DiagonalPosterior(X_DIM, Z_DIM, (8,), "tanh"), FullCovariancePosterior(X_DIM, Z_DIM, (8,), "tanh")
    torch.testing.assert_close(central_value(diag(x)), diag.encoder(x)[0], rtol=0, atol=0)
    torch.testing.assert_close(central_value(full(x)), full.encoder(x)[:, :Z_DIM], rtol=0, atol=0)
    flow = FlowPosterior(X_DIM, Z_DIM, (8,), "tanh", num_flows=2)
    q = flow(x)
    z = q.base_dist.mean
    for t in q.transforms:
        z = t(z)
    torch.testing.assert_close(central_value(q), z, rtol=0, atol=0)


@pytest.mark.parametrize("guide,prior,analytic", [
    ("diagonal", "normal", True),
    ("diagonal", "diagonal", True),
    ("diagonal", "laplace", True),
    ("full-cov", "normal", True),
    ("full-cov", "diagonal", True),
    ("full-cov", "laplace", False),
    ("diagonal", "mog:3", False),
    ("diagonal", "vamp:3", False),
    ("diagonal", "student-t", False),
    ("diagonal", "flow:2", False),
    ("flow:2", "normal", False),
])
def test_meanfield_is_refused_exactly_for_pairs_without_closed_form_kl(guide: str, prior: str, analytic: bool) -> None:
    """check_objective passes pairs torch has a KL for and refuses the rest with the way out."""
    config = TrainConfig(guide=guide, prior=prior, z_dim=2, hidden=(8,), objective="meanfield")
    vae = build_vae(config, X_DIM, 10)
    if analytic:
        check_objective(vae, torch.rand(2, X_DIM), objective=config.objective)
    else:
        with pytest.raises(ConfigError, match="objective='trace'"):
            check_objective(vae, torch.rand(2, X_DIM), objective=config.objective)


def test_meanfield_kl_equals_the_monte_carlo_kl_for_full_covariance() -> None:
    """For the full-covariance guide the analytic KL term equals the average of log q - log p over draws."""
    vae = build_vae(TrainConfig(guide="full-cov", prior="diagonal", z_dim=2, hidden=(8,)), X_DIM, 10)
    x = torch.rand(3, X_DIM)
    with torch.no_grad():
        q, p = vae.posterior(x), vae.prior().expand((3,))
        z = q.sample((100_000,))
        mc = (q.log_prob(z) - p.log_prob(z)).mean(0)
        # Monte-Carlo standard error at 1e5 draws is about 0.003 here.
        torch.testing.assert_close(kl_divergence(q, p), mc, rtol=0, atol=0.02)


def test_train_refuses_meanfield_without_closed_form_before_training(fake_mnist_root: Path, tmp_path: Path) -> None:
    """pvae train with --objective meanfield and a mixture prior stops with a ConfigError and writes no run."""
    from pvae.runs.train import train

    config = TrainConfig(data_dir=str(fake_mnist_root), prior="mog:3", objective="meanfield", z_dim=2, hidden=(8,),
                         val_size=100, train_size=100, epochs=1, device="cpu", out=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="meanfield.*mog:3"):
        train(config, progress=False)
    assert not (tmp_path / "run" / CHECKPOINT).exists() and not (tmp_path / "run" / CONFIG).exists(), "a run was written"
