"""The new graphical models against exact answers: a two-layer linear-Gaussian chain whose log p(x)
and posterior are known in closed form, M2's enumerated ELBO and log p(x) against sums over the ten
classes written by hand on the same draws, and a conditional VAE whose samples of class y are
recognised as y by a classifier fitted here."""

from __future__ import annotations

import math
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import TraceEnum_ELBO
from pyro.poutine.messenger import Messenger
from torch import Tensor, nn
from torch.distributions import MultivariateNormal, kl_divergence

from pvae import TrainConfig, elbo_terms, importance_estimate, train
from pvae.inference.importance import log_importance_weights
from pvae.inference.predictive import generate
from pvae.models.common import join_label
from pvae.runs.build import build_model
from pvae.training.objectives import build_objective

torch.set_default_dtype(torch.float32)


class LinearChain(nn.Module):
    """z2 ~ N(0, I_1), z1 | z2 ~ N(A z2 + b, s1^2 I_2), x | z1 ~ N(C z1 + c, s0^2 I_3); the guide is
    q(z1|x) q(z2|z1), exact (the true posterior factorizes so) unless ``shift``/``widen`` perturb q(z1|x)."""

    def __init__(self, shift: float = 0.0, widen: float = 1.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.A, self.b = torch.randn(2, 1, generator=g, dtype=torch.float64), torch.randn(2, generator=g, dtype=torch.float64)
        self.C, self.c = torch.randn(3, 2, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
        self.s1, self.s0 = 0.7, 0.5
        self.x_dim, self.num_data, self.shift, self.widen = 3, None, shift, widen

    # Joint Gaussian algebra for the exact answers.
    def prior_z1(self) -> tuple[Tensor, Tensor]:
        return self.b, self.A @ self.A.T + self.s1**2 * torch.eye(2, dtype=torch.float64)

    def marginal(self) -> MultivariateNormal:
        m, S = self.prior_z1()
        return MultivariateNormal(self.C @ m + self.c, self.C @ S @ self.C.T + self.s0**2 * torch.eye(3, dtype=torch.float64))

    def posterior_z1(self, x: Tensor) -> MultivariateNormal:
        m, S = self.prior_z1()
        cov_x = self.marginal().covariance_matrix
        gain = S @ self.C.T @ torch.linalg.inv(cov_x)
        return MultivariateNormal(m + (x - self.C @ m - self.c) @ gain.T, S - gain @ self.C @ S)

    def posterior_z2_given_z1(self) -> tuple[Tensor, Tensor, Tensor]:
        """p(z2|z1) = N(G (z1 - b), V): G, the offset b, V."""
        _, S = self.prior_z1()
        G = self.A.T @ torch.linalg.inv(S)
        return G, self.b, torch.eye(1, dtype=torch.float64) - G @ self.A

    def model(self, x: Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(torch.zeros(1, dtype=torch.float64), 1.0).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(z2 @ self.A.T + self.b, self.s1).to_event(1))
            pyro.sample("x", dist.Normal(z1 @ self.C.T + self.c, self.s0).to_event(1), obs=x)

    def guide(self, x: Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            q1 = self.posterior_z1(x)
            z1 = pyro.sample("z1", dist.MultivariateNormal(q1.loc + self.shift, q1.covariance_matrix * self.widen))
            G, b, V = self.posterior_z2_given_z1()
            pyro.sample("z2", dist.MultivariateNormal((z1 - b) @ G.T, V))


def _chain_data(n: int = 4) -> Tensor:
    return LinearChain().marginal().sample((n,))


def test_the_exact_guide_makes_importance_sampling_exact_for_any_k() -> None:
    """With the true posterior as guide every importance weight equals p(x): the estimate is exact for K = 1 and 7."""
    chain, x = LinearChain(), _chain_data()
    exact = chain.marginal().log_prob(x)
    for k in (1, 7):
        est = importance_estimate(chain.model, chain.guide, x, num_samples=k)
        torch.testing.assert_close(est.log_px, exact, rtol=0, atol=1e-9)


def test_elbo_plus_kl_to_the_posterior_is_log_px_layer_by_layer() -> None:
    """With a perturbed q(z1|x), the per-layer terms add up to an ELBO equal to log p(x) - KL(q || p(z1, z2|x))."""
    chain, x = LinearChain(shift=0.4, widen=1.8), _chain_data()
    pyro.set_rng_seed(1)
    terms = elbo_terms(chain, x, num_samples=20_000)
    # z2, a root of the model, gets KL(q(z2|z1) || p(z2)) in closed form given z1; z1 (whose prior
    # depends on z2) the Monte-Carlo E_q[log q(z1|x) - log p(z1|z2)].
    assert list(terms.kl_by_site) == ["z2", "z1"] and terms.analytic_by_site == {"z2": True, "z1": False}
    exact_posterior = chain.posterior_z1(x)
    q1 = MultivariateNormal(exact_posterior.loc + 0.4, exact_posterior.covariance_matrix * 1.8)
    # The z2 term in closed form: q(z2|z1) = N(m, V) with m = G (z1 - b), z1 ~ q1, against N(0, 1):
    # E[KL] = (V + E[m^2] - 1 - log V) / 2, E[m^2] = G (Sigma_1 + (mu_1 - b)(mu_1 - b)^T) G^T.
    G, b, V = chain.posterior_z2_given_z1()
    centred = q1.loc - b
    second = (G @ q1.covariance_matrix @ G.T).squeeze() + (centred @ G.T).squeeze(-1) ** 2
    kl_z2 = 0.5 * (V.squeeze() + second - 1 - torch.log(V.squeeze()))
    torch.testing.assert_close(terms.kl_by_site["z2"].double(), kl_z2, rtol=0, atol=0.02)
    # q(z2|z1) is the true p(z2|z1, x), so the joint KL is that of the z1 layer alone.
    kl = kl_divergence(q1, exact_posterior)
    expected = chain.marginal().log_prob(x) - kl
    torch.testing.assert_close(terms.elbo.double(), expected, rtol=0, atol=0.03)


def _m2(num_data: int | None = None) -> nn.Module:
    config = TrainConfig(model="m2", labels=10, z_dim=2, hidden=(6,))
    model = build_model(config, 5, 20)
    model.num_data = num_data
    model.num_labelled = None
    return model


def _by_hand_terms(model: nn.Module, x: Tensor, z: Tensor) -> Tensor:
    """log p(c) + log p(z_c) + log p(x|c, z_c) - log q(z_c | x, c) for every class c: ``(10, B)``."""
    classes = torch.arange(10)[:, None].expand(10, x.shape[0])
    prior = model.prior()
    log_p_y = torch.full((10, x.shape[0]), -math.log(10))
    log_p_z = prior.log_prob(z)
    log_p_x = model.likelihood(model.decoder(join_label(z, classes, 10))).log_prob(x)
    log_q_z = model.posterior(join_label(x, classes, 10)).log_prob(z)
    return log_p_y + log_p_z + log_p_x - log_q_z


def test_the_enumerated_m2_loss_equals_the_sum_over_the_ten_classes_by_hand() -> None:
    """TraceEnum_ELBO's loss for unlabelled images equals -sum_b [sum_c q(c|x) L(x, c) + H(q(y|x))] on the same z."""
    model = _m2()
    x = torch.bernoulli(torch.full((4, 5), 0.4), generator=torch.Generator().manual_seed(2))
    drawn: dict[str, Tensor] = {}

    class Record(Messenger):
        def _pyro_post_sample(self, msg: dict[str, object]) -> None:
            drawn[str(msg["name"])] = msg["value"]  # type: ignore[assignment]

    def recorded_guide(x: Tensor) -> None:
        with Record():
            model.guide(x)

    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(model.model, recorded_guide, x)
    z = drawn["z"]  # (10, B, m): one draw per class, the ones the loss used
    assert z.shape == (10, 4, 2)
    q = torch.softmax(model.classifier(x), -1).T  # (10, B)
    entropy = -(q * q.log()).sum(0)
    by_hand = -((q * _by_hand_terms(model, x, z)).sum(0) + entropy).sum()
    torch.testing.assert_close(loss, by_hand, rtol=1e-5, atol=1e-4)


def test_m2_log_px_sums_the_label_exactly_as_by_hand() -> None:
    """log p(x) with y enumerated equals log (1/K) sum_k sum_c p(x, c, z_ck) / q(z_ck | x, c), by hand on the same draws."""
    model = _m2()
    x = torch.bernoulli(torch.full((3, 5), 0.4), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        weights = log_importance_weights(model.model, model.guide, x, num_particles=6)
        z = weights.guide_trace.nodes["z"]["value"]  # (10, K, B, m)
        assert z.shape == (10, 6, 3, 2)
        by_hand = torch.stack([_by_hand_terms(model, x, z[:, k]) for k in range(6)], 1)  # (10, K, B)
        torch.testing.assert_close(weights.log_weights, by_hand.logsumexp(0), rtol=1e-5, atol=1e-5)
        sampled = importance_estimate(model.model, model.guide, x, num_samples=20_000, enumerate_discrete=False).log_px
        summed = importance_estimate(model.model, model.guide, x, num_samples=20_000).log_px
    # Sampling y from q(y|x) estimates the same log p(x), with more noise (an untrained q has heavy-tailed weights).
    torch.testing.assert_close(sampled, summed, rtol=0, atol=0.1)


def _orientation(x: Tensor) -> Tensor:
    """(cos 2θ, sin 2θ) of each image's ink, θ its principal axis from second moments ``(N, 2)``: the
    fake digits of class y are strokes at angle y π / 10 (tests/conftest.py)."""
    side = int(x.shape[1] ** 0.5)
    coords = torch.arange(side, dtype=x.dtype)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    w = x.reshape(-1, side * side) / x.sum(1, keepdim=True).clamp_min(1e-6)
    r, c = rows.reshape(-1), cols.reshape(-1)
    mr, mc = w @ r, w @ c
    vrr, vcc = w @ r**2 - mr**2, w @ c**2 - mc**2
    vrc = w @ (r * c) - mr * mc
    theta = 0.5 * torch.atan2(-2 * vrc, vcc - vrr)  # image rows grow downwards
    return torch.stack([torch.cos(2 * theta), torch.sin(2 * theta)], -1)


class _Classifier(nn.Module):
    """Multinomial logistic regression on the ink's orientation, independent of any model."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(4 * _orientation(x))


def test_the_m2_step_scales_each_part_to_its_own_set_and_alpha_to_0_1_n() -> None:
    """One M2 step: unlabelled ELBO x N_u / B, labelled ELBO x N_l / B_l, and alpha * mean log q(y|x) with
    alpha = 0.1 N; the classifier q(y|x) gets gradient from both the enumerated ELBO and the alpha term."""
    from pvae.training.objectives import SemiSupervisedObjective

    config = TrainConfig(model="m2", labels=10, z_dim=2, hidden=(6,))
    model = build_model(config, 5, 1000)  # N = 1000 images, N_l = 10 labelled, N_u = 990
    assert model.num_labelled == 10
    gen = torch.Generator().manual_seed(0)
    x_l, y_l = torch.bernoulli(torch.full((10, 5), 0.5), generator=gen), torch.arange(10)
    x_u = torch.bernoulli(torch.full((4, 5), 0.5), generator=gen)
    elbo = build_objective(config.objective, num_particles=config.num_particles, enumerates=True)
    objective = SemiSupervisedObjective(elbo, x_l, y_l, torch.Generator().manual_seed(3))
    pyro.set_rng_seed(1)
    loss = objective.differentiable_loss(model.model, model.guide, x_u)
    rows = torch.randperm(10, generator=torch.Generator().manual_seed(3))[:4]  # the labelled batch it drew
    log_q = torch.log_softmax(model.classifier(x_l[rows]), -1)[torch.arange(4), y_l[rows]]
    torch.testing.assert_close(objective.auxiliary, -(0.1 * 1000) * log_q.mean(), rtol=1e-5, atol=1e-4)
    # The two ELBO parts on the same draws (the aux term draws nothing), unscaled, then scaled by hand.
    model.num_data, model.num_labelled = None, None
    pyro.set_rng_seed(1)
    unlabelled = elbo.differentiable_loss(model.model, model.guide, x_u).detach()
    labelled = elbo.differentiable_loss(model.model, model.guide, x_l[rows], y_l[rows]).detach()
    model.num_data, model.num_labelled = 1000, 10
    torch.testing.assert_close(loss.detach(), 990 / 4 * unlabelled + 10 / 4 * labelled + objective.auxiliary,
                               rtol=1e-5, atol=1e-2)
    grads = torch.autograd.grad(loss, list(model.classifier.parameters()))
    assert all(g.abs().sum() > 0 for g in grads), "q(y|x) got no gradient"
    aux_grads = torch.autograd.grad(objective.classifier.differentiable_loss(
        model.classifier_model, model.classifier_guide, x_l, y_l), list(model.classifier.parameters()))
    assert all(g.abs().sum() > 0 for g in aux_grads)


def _fit_classifier(x: Tensor, y: Tensor, steps: int = 500) -> nn.Module:
    clf = _Classifier()
    opt = torch.optim.Adam(clf.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(clf(x), y).backward()
        opt.step()
    return clf


def test_conditional_samples_of_class_y_are_recognised_as_y(fake_mnist_root: Path, tmp_path: Path) -> None:
    """Digits drawn with label y are classified as y by an independent logistic regression far above chance (10%)."""
    config = TrainConfig(model="conditional", data_dir=str(fake_mnist_root), val_size=100, epochs=100, batch_size=50,
                         z_dim=2, hidden=(128,), lr=3e-3, out=str(tmp_path / "cvae"))
    result = train(config, progress=False)
    data = result.data
    clf = _fit_classifier(data.train, data.train_labels)
    test_accuracy = (clf(data.test).argmax(-1) == data.test_labels).double().mean().item()
    assert test_accuracy > 0.5, f"the classifier itself is too weak to judge: test accuracy {test_accuracy:.2f}"
    y = torch.arange(10).repeat_interleave(30)
    pyro.set_rng_seed(0)
    samples = generate(result.vae, len(y), y)
    accuracy = (clf(samples).argmax(-1) == y).double().mean().item()
    assert accuracy > 0.4, f"samples of class y are recognised as y only {accuracy:.0%} of the time (chance 10%)"
