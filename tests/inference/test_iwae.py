"""The IWAE objective: exactly the per-image bound of Burda et al. (2016), with the minibatch scale
outside the logarithm, and the ``iwae:K`` training objective."""

from __future__ import annotations

import math
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import RenyiELBO, Trace_ELBO
from pyro.nn import PyroModule
from support import val_elbo_gain  # the same before/after measurement as the ELBO trainer's test
from torch import Tensor, nn
from torch.nn import functional as F
from torch.testing import assert_close

from pvae import ConfigError, TrainConfig
from pvae.inference.importance import log_importance_weights
from pvae.inference.iwae import IWAE_ELBO
from pvae.runs.folder import load_run
from pvae.training.objectives import build_objective

X_DIM, Z_DIM, K, BATCH, NUM_DATA = 6, 2, 7, 5, 1000


class TinyGaussianVAE(PyroModule):
    """p(z) = N(0, I), p(x|z) = N(decoder(z), 0.5^2 I), q(z|x) = N(loc(x), diag(scale(x)^2)), linear networks;
    with ``num_data`` the data plate subsamples the batch as pvae's VAE does."""

    def __init__(self, num_data: int | None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder, self.decoder, self.num_data = nn.Linear(X_DIM, 2 * Z_DIM), nn.Linear(Z_DIM, X_DIM), num_data

    def plate(self, x: Tensor) -> pyro.plate:
        if self.num_data is None:
            return pyro.plate("data", x.shape[0])
        return pyro.plate("data", self.num_data, subsample=torch.arange(x.shape[0]))

    def q(self, x: Tensor) -> tuple[Tensor, Tensor]:
        loc, raw = self.encoder(x).chunk(2, dim=-1)
        return loc, F.softplus(raw)

    def model(self, x: Tensor) -> None:
        with self.plate(x):
            z = pyro.sample("z", dist.Normal(torch.zeros(Z_DIM), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 0.5).to_event(1), obs=x)

    def guide(self, x: Tensor) -> None:
        with self.plate(x):
            loc, scale = self.q(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def hand_log_weights(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x_i, z_ik) - log q(z_ik|x_i) with torch.distributions, no Pyro: ``(K, batch)``."""
        normal = torch.distributions.Normal
        loc, scale = self.q(x)
        return (normal(0.0, 1.0).log_prob(z).sum(-1) + normal(self.decoder(z), 0.5).log_prob(x).sum(-1)
                - normal(loc, scale).log_prob(z).sum(-1))


def fixed_draws(vae: TinyGaussianVAE, x: Tensor) -> poutine.Trace:
    """A guide trace holding K draws per image, detached: replayed, it fixes z for every objective."""
    with pyro.plate("particles", K, dim=-2):
        trace = poutine.trace(vae.guide).get_trace(x)
    trace.nodes["z"]["value"] = trace.nodes["z"]["value"].detach()
    return trace


@pytest.mark.parametrize("num_data", [None, NUM_DATA], ids=["full-batch", "subsampled"])
def test_iwae_loss_and_gradients_equal_hand_computation(num_data: int | None) -> None:
    """On fixed draws, the loss is -(N/B) sum_i log (1/K) sum_k w_ik and so are its gradients."""
    vae = TinyGaussianVAE(num_data)
    x = torch.randn(BATCH, X_DIM, generator=torch.Generator().manual_seed(1))
    draws = fixed_draws(vae, x)
    loss = IWAE_ELBO(K).differentiable_loss(vae.model, poutine.replay(vae.guide, trace=draws), x)
    grads = torch.autograd.grad(loss, list(vae.parameters()))

    log_w = vae.hand_log_weights(x, draws.nodes["z"]["value"])
    scale = 1.0 if num_data is None else num_data / BATCH
    hand = -scale * (log_w.logsumexp(0) - math.log(K)).sum()
    hand_grads = torch.autograd.grad(hand, list(vae.parameters()))
    assert_close(loss, hand, rtol=1e-6, atol=1e-4)
    for got, want in zip(grads, hand_grads):
        assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_renyi_elbo_alpha_zero_is_iwae_only_without_subsampling() -> None:
    """Pyro's RenyiELBO(alpha=0) is the IWAE bound on a full batch, but under subsampling it puts N/B
    inside the log: -sum_i log (1/K) sum_k w_ik^(N/B). Hence pvae's own IWAE_ELBO."""
    x = torch.randn(BATCH, X_DIM, generator=torch.Generator().manual_seed(1))
    renyi = RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True, max_plate_nesting=1)
    for num_data in (None, NUM_DATA):
        vae = TinyGaussianVAE(num_data)
        # Each draws K particles in one plate at dim -2, guide first: the same seed gives the same draws.
        pyro.set_rng_seed(2)
        ours = IWAE_ELBO(K).loss(vae.model, vae.guide, x)
        pyro.set_rng_seed(2)
        theirs = renyi.loss(vae.model, vae.guide, x)
        if num_data is None:
            assert_close(theirs, ours, rtol=1e-6, atol=1e-4)
        else:
            scale = num_data / BATCH
            pyro.set_rng_seed(2)
            with torch.no_grad():
                log_w = log_importance_weights(vae.model, vae.guide, x, num_particles=K).log_weights
            scale_inside = -((scale * log_w).logsumexp(0) - math.log(K)).sum().item()
            assert_close(theirs, scale_inside, rtol=1e-6, atol=1e-2)
            assert abs(theirs - ours) > 0.01 * abs(ours), f"RenyiELBO {theirs} now equals IWAE {ours}: reconsider using it"


def test_iwae_with_one_particle_is_trace_elbo() -> None:
    """K = 1: the bound is the ELBO, and on the same draw loss and gradients equal Trace_ELBO's."""
    vae = TinyGaussianVAE(NUM_DATA)
    x = torch.randn(BATCH, X_DIM, generator=torch.Generator().manual_seed(1))
    pyro.set_rng_seed(3)
    ours = IWAE_ELBO(1).differentiable_loss(vae.model, vae.guide, x)
    our_grads = torch.autograd.grad(ours, list(vae.parameters()))
    pyro.set_rng_seed(3)
    theirs = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
    their_grads = torch.autograd.grad(theirs, list(vae.parameters()))
    assert_close(ours, theirs, rtol=1e-6, atol=1e-3)
    for got, want in zip(our_grads, their_grads):
        assert_close(got, want, rtol=1e-5, atol=1e-3)


def test_non_reparameterized_guide_is_refused() -> None:
    """IWAE's gradient needs rsample: a guide site without it is an error, not a silently wrong gradient."""

    def model(x: Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(c[..., None], 1.0).to_event(1), obs=x)

    def guide(x: Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Bernoulli(logits=x.sum(-1)))

    with pytest.raises(ValueError, match="site 'c' uses Bernoulli, which has no rsample"):
        IWAE_ELBO(K).differentiable_loss(model, guide, torch.zeros(BATCH, X_DIM))


@pytest.mark.parametrize("spelling", ["iwae", "iwae:1", "iwae:0", "iwae:five", "iwae:-3", "iwae:2.5"])
def test_iwae_spelling_needs_k_at_least_two(spelling: str) -> None:
    """--objective iwae:K needs an integer K >= 2 (K = 1 is the ELBO: use trace)."""
    with pytest.raises(ConfigError, match="iwae:K needs K"):
        TrainConfig(objective=spelling)


def test_iwae_objective_builds_iwae_elbo_and_refuses_num_particles() -> None:
    """objective iwae:5 trains with IWAE_ELBO(5); num_particles is then not a second particle count."""
    objective = build_objective("iwae:5")
    assert isinstance(objective, IWAE_ELBO) and objective.num_particles == 5, objective
    with pytest.raises(ConfigError, match="leave num_particles at 1"):
        TrainConfig(objective="iwae:5", num_particles=2)


def test_training_with_iwae_raises_the_elbo(real_mnist: Path, tmp_path: Path) -> None:
    """One epoch of SVI on the IWAE bound (k = 5) over 2,000 MNIST images raises the validation ELBO by > 20 nats."""
    config = TrainConfig(data_dir=str(real_mnist), val_size=1000, train_size=2000, epochs=1, batch_size=20, lr=3e-3,
                         objective="iwae:5", device="cpu", out=str(tmp_path / "run"))
    before, after = val_elbo_gain(config)
    # The ELBO trainer gains ~36 nats here (tests/runs/test_train.py); an optimizer that never steps gains 0.
    assert after > before + 20, f"validation ELBO went from {before:.2f} to {after:.2f} nats per image"
    metrics = load_run(tmp_path / "run")[1]["metrics"]
    assert math.isfinite(metrics[-1]["train_elbo"]), metrics
