"""The VAE as a Pyro program: sites, shapes, the data plate's scale, and the ELBO against closed forms."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.util import site_is_subsample
from torch.distributions import kl_divergence

from pvae import VAE, StandardNormal, elbo_terms

X_DIM = 20


def small_vae(z_dim: int = 3, num_data: int | None = None) -> VAE:
    """A tiny VAE with random (seeded) weights."""
    torch.manual_seed(1)
    return VAE(X_DIM, z_dim, hidden=(16,), num_data=num_data)


def binary_batch(batch: int = 8) -> torch.Tensor:
    """A fixed batch of binary images, ``(batch, X_DIM)``."""
    gen = torch.Generator().manual_seed(2)
    return torch.bernoulli(torch.full((batch, X_DIM), 0.3), generator=gen)


def latent_sites(trace: poutine.Trace) -> dict[str, poutine.Trace]:
    """Sample sites that are neither observed nor a plate's subsample indices."""
    return {
        name: node
        for name, node in trace.nodes.items()
        if node["type"] == "sample" and not node["is_observed"] and not site_is_subsample(node)
    }


def test_model_and_guide_share_latent_sites() -> None:
    """The guide samples exactly the model's latent sites (z) and the model observes x."""
    vae, x = small_vae(), binary_batch()
    guide_tr = poutine.trace(vae.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x)
    assert set(latent_sites(model_tr)) == set(latent_sites(guide_tr)) == {"z"}, (
        f"model latents {sorted(latent_sites(model_tr))}, guide latents {sorted(latent_sites(guide_tr))}"
    )
    assert model_tr.nodes["x"]["is_observed"], "the model's x site is not observed"
    torch.testing.assert_close(model_tr.nodes["x"]["value"], x, rtol=0, atol=0)


@pytest.mark.parametrize("z_dim", [1, 2, 50], ids=lambda m: f"m={m}")
def test_trace_shapes(z_dim: int) -> None:
    """z is (batch, m) in model and guide; every site's log_prob is one number per image."""
    batch = 5
    vae, x = small_vae(z_dim), binary_batch(batch)
    guide_tr = poutine.trace(vae.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x)
    guide_tr.compute_log_prob()
    model_tr.compute_log_prob()
    for label, tr in (("guide", guide_tr), ("model", model_tr)):
        z = tr.nodes["z"]
        assert z["value"].shape == (batch, z_dim), f"{label} z has shape {tuple(z['value'].shape)}"
        assert z["fn"].event_shape == (z_dim,), f"{label} z has event_shape {tuple(z['fn'].event_shape)}"
        assert z["log_prob"].shape == (batch,), f"{label} z log_prob has shape {tuple(z['log_prob'].shape)}"
    x_site = model_tr.nodes["x"]
    assert x_site["fn"].event_shape == (X_DIM,), f"x has event_shape {tuple(x_site['fn'].event_shape)}"
    assert x_site["log_prob"].shape == (batch,), f"x log_prob has shape {tuple(x_site['log_prob'].shape)}"


@pytest.mark.parametrize("objective", [Trace_ELBO, TraceMeanField_ELBO], ids=lambda c: c.__name__)
def test_elbo_is_finite(objective: type[pyro.infer.ELBO]) -> None:
    """Both ELBOs of an untrained VAE are finite and their gradients too."""
    vae, x = small_vae(), binary_batch()
    loss = objective(max_plate_nesting=1).differentiable_loss(vae.model, vae.guide, x)
    loss.backward()
    assert torch.isfinite(loss), f"loss is {loss.item()}"
    bad = [n for n, p in vae.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not bad, f"missing or non-finite gradients for {bad}"


@pytest.mark.parametrize(
    ("num_data", "expected_scale"),
    [(None, 1.0), (8, 1.0), (1000, 1000 / 8)],
    ids=["num_data=None", "num_data=batch", "num_data=1000"],
)
def test_data_plate_scale(num_data: int | None, expected_scale: float) -> None:
    """A minibatch of B images from N is scaled by N / B at every site; without N, by 1."""
    vae, x = small_vae(num_data=num_data), binary_batch(8)
    guide_tr = poutine.trace(vae.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x)
    for label, tr, site in (("guide", guide_tr, "z"), ("model", model_tr, "z"), ("model", model_tr, "x")):
        scale = float(tr.nodes[site]["scale"])
        assert scale == pytest.approx(expected_scale, rel=1e-12), f"{label} site {site} has scale {scale}"


def test_monte_carlo_elbo_agrees_with_analytic_kl_elbo() -> None:
    """Trace_ELBO (Monte-Carlo KL) and TraceMeanField_ELBO (analytic KL) estimate the same ELBO."""
    vae, x = small_vae(z_dim=4), binary_batch(8)
    trace_elbo = Trace_ELBO(num_particles=200, vectorize_particles=True, max_plate_nesting=1)
    meanfield_elbo = TraceMeanField_ELBO(num_particles=200, vectorize_particles=True, max_plate_nesting=1)
    repeats = 30
    mc, analytic = torch.empty(repeats, dtype=torch.float64), torch.empty(repeats, dtype=torch.float64)
    for r in range(repeats):
        # The same seed gives both estimators the same draws of z, so their reconstruction terms
        # cancel in the difference and only the KL's Monte-Carlo noise is left.
        pyro.set_rng_seed(100 + r)
        mc[r] = -trace_elbo.loss(vae.model, vae.guide, x) / len(x)
        pyro.set_rng_seed(100 + r)
        analytic[r] = -meanfield_elbo.loss(vae.model, vae.guide, x) / len(x)
    diff = mc - analytic
    stderr = diff.std() / math.sqrt(repeats)
    assert stderr > 0, "the two estimators gave identical numbers: the Monte-Carlo KL was not sampled"
    assert diff.mean().abs() < 4 * stderr, (
        f"Monte-Carlo ELBO {mc.mean():.4f} vs analytic-KL ELBO {analytic.mean():.4f} nats per image: "
        f"difference {diff.mean():.4f} is more than 4 standard errors ({stderr:.4f})"
    )


def test_elbo_terms_match_meanfield_loss() -> None:
    """elbo_terms equals TraceMeanField_ELBO's loss per image (minibatch scale removed), and elbo = recon - kl."""
    num_data = 1000
    vae, x = small_vae(z_dim=3, num_data=num_data), binary_batch(8)
    pyro.set_rng_seed(7)
    loss = TraceMeanField_ELBO(max_plate_nesting=1).loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(7)  # the same draw of z for elbo_terms' single sample
    terms = elbo_terms(vae, x, num_samples=1)
    assert terms.kl_is_analytic, "the KL of a diagonal Gaussian from N(0, I) should be analytic"
    assert terms.elbo.shape == terms.reconstruction.shape == terms.kl.shape == (len(x),)
    # the loss is -(N / B) * sum of the batch's ELBOs
    torch.testing.assert_close(terms.elbo.mean(), torch.tensor(-loss / num_data), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(terms.elbo, terms.reconstruction - terms.kl, rtol=0, atol=1e-5)


def test_elbo_terms_kl_is_the_closed_form() -> None:
    """elbo_terms' KL per image is KL(q(z|x) || N(0, I)) written out from the guide's loc and scale."""
    vae, x = small_vae(z_dim=5), binary_batch(6)
    q = poutine.trace(vae.guide).get_trace(x).nodes["z"]["fn"]  # N(loc, diag(scale^2)), event dim 1
    loc, var = q.mean.detach(), q.variance.detach()
    expected = 0.5 * (var + loc**2 - 1 - torch.log(var)).sum(-1)
    torch.testing.assert_close(elbo_terms(vae, x).kl, expected, rtol=1e-5, atol=1e-5)


def test_standard_normal_kl_closed_form() -> None:
    """KL(N(mu, diag sigma^2) || StandardNormal) = 0.5 * sum(sigma^2 + mu^2 - 1 - log sigma^2)."""
    gen = torch.Generator().manual_seed(3)
    mu = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    sigma = torch.rand(4, 6, generator=gen, dtype=torch.float64) * 2 + 0.1
    prior = StandardNormal(6).double()
    kl = kl_divergence(dist.Normal(mu, sigma).to_event(1), prior())
    by_hand = 0.5 * (sigma**2 + mu**2 - 1 - torch.log(sigma**2)).sum(-1)
    assert kl.shape == (4,), f"KL has shape {tuple(kl.shape)}, expected one value per row (4,)"
    torch.testing.assert_close(kl, by_hand, rtol=1e-12, atol=1e-12)


def test_standard_normal_prior_shape() -> None:
    """StandardNormal(m)() is N(0, I_m): batch_shape (), event_shape (m,), log-density in closed form."""
    prior = StandardNormal(3)()
    assert prior.batch_shape == () and prior.event_shape == (3,), (
        f"batch_shape {tuple(prior.batch_shape)}, event_shape {tuple(prior.event_shape)}"
    )
    z = torch.tensor([0.5, -1.0, 2.0])
    expected = -0.5 * (z**2).sum() - 1.5 * math.log(2 * math.pi)
    torch.testing.assert_close(prior.log_prob(z), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("x_dim", "z_dim", "num_data"), [(0, 2, None), (4, 0, None), (4, 2, 0)])
def test_vae_refuses_bad_sizes(x_dim: int, z_dim: int, num_data: int | None) -> None:
    """Non-positive x_dim, z_dim or num_data are refused with a message naming the size."""
    with pytest.raises(ValueError, match="x_dim|z_dim|num_data"):
        VAE(x_dim, z_dim, num_data=num_data)
