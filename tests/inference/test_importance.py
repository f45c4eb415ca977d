"""log p(x) by importance sampling: exact on models whose marginal likelihood is known in closed form
or by quadrature, blind to the minibatch scale, and the identity log p(x) = ELBO + KL(q || p(z|x))."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import exact_models
import pyro
import pyro.distributions as dist
import pytest
import torch
from exact_models import F64
from torch import Tensor
from torch.distributions import kl_divergence
from torch.testing import assert_close

from pvae import TrainConfig, train
from pvae.cli import main
from pvae.inference.importance import active_units, importance_estimate, latent_activity, log_marginal_likelihood
from pvae.models import VAE
from pvae.runs.evaluate import PER_IMAGE, PER_IMAGE_FIELDS, Evaluation, evaluate_run

# A module-scoped fixture here is costly to build: the file's tests share one worker (pytest-xdist).
pytestmark = pytest.mark.xdist_group("test_importance")


class LinearGaussian(exact_models.LinearGaussian):
    """The closed-form model with a deliberately wrong proposal beside the exact one."""

    def wrong_q(self, x: Tensor) -> dist.MultivariateNormal:
        """The posterior shifted by 0.3 and with its Cholesky factor widened 1.4 times."""
        return self.shifted_posterior(x, 0.3, 1.4)

    def wrong_guide(self, x: Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.wrong_q(x))


@pytest.mark.parametrize("num_samples", [1, 3, 30])
@pytest.mark.parametrize("chunk_size", [7, 2**15], ids=["chunked", "one-chunk"])
def test_exact_posterior_guide_gives_exact_log_px(num_samples: int, chunk_size: int) -> None:
    """With the exact posterior as proposal every weight is p(x): the estimate is exact for any K and chunking."""
    lg = LinearGaussian()
    x = lg.sample_x(20)
    est = importance_estimate(lg.model, lg.exact_guide, x, num_samples=num_samples, chunk_size=chunk_size)
    assert_close(est.log_px, lg.log_px(x), atol=1e-9, rtol=0)
    assert_close(est.elbo, lg.log_px(x), atol=1e-9, rtol=0)
    # equal weights: the effective sample size is all K of them
    assert_close(est.ess, torch.full((20,), float(num_samples), dtype=F64), atol=1e-6, rtol=0)


def test_wrong_guide_lies_below_and_approaches_as_k_grows() -> None:
    """With a wrong proposal, log p-hat_K lies below log p(x) on average, by less and less as K grows."""
    lg = LinearGaussian()
    x = lg.sample_x(300)
    exact = lg.log_px(x)
    gaps, stderrs = {}, {}
    for k in (1, 10, 100, 1000):
        diff = exact - log_marginal_likelihood(lg.model, lg.wrong_guide, x, num_samples=k)
        gaps[k], stderrs[k] = diff.mean().item(), diff.std().item() / math.sqrt(len(x))
    # K = 1 is the ELBO, below log p(x) by the mean KL(q || p(z|x)), 1.58 nats here
    kl = kl_divergence(lg.wrong_q(x), lg.posterior(x)).mean().item()
    assert abs(gaps[1] - kl) < 4 * stderrs[1], f"K=1: mean gap {gaps[1]:.3f}, mean KL {kl:.3f} (stderr {stderrs[1]:.3f})"
    for k in (1, 10):
        assert gaps[k] > 3 * stderrs[k], f"K={k}: mean gap {gaps[k]:.4f} is not clearly positive (stderr {stderrs[k]:.4f})"
    assert gaps[1] > gaps[10] > gaps[100], f"the gap does not shrink with K: {gaps}"
    assert abs(gaps[1000]) < 0.03 * gaps[1], f"K=1000 is still {gaps[1000]:.4f} nats off (K=1: {gaps[1]:.4f}): {gaps}"


def test_elbo_plus_kl_to_exact_posterior_is_log_px() -> None:
    """Image by image, ELBO + KL(q(z|x) || p(z|x)) = log p(x), with the KL in closed form."""
    lg = LinearGaussian()
    x = lg.sample_x(30)
    est = importance_estimate(lg.model, lg.wrong_guide, x, num_samples=200_000)
    kl = kl_divergence(lg.wrong_q(x), lg.posterior(x))
    # The Monte-Carlo ELBO of 200,000 draws has a standard error std(log w) / sqrt(200,000) of at most
    # ~0.011 nats on these images: 0.05 is more than 4 of them.
    assert_close(est.elbo + kl, lg.log_px(x), atol=0.05, rtol=0)
    # With that many draws log p-hat is within ~0.001 nats of log p(x), so log_px - elbo estimates the KL too.
    assert_close(est.kl_gap, kl, atol=0.05, rtol=0)
    assert kl.min() > 0.3, f"the wrong guide is too close to the posterior for this test to mean much: KL {kl.min():.3f}"


class TwoDimensionalLatent(exact_models.TwoDimensionalLatent):
    """The 2-D latent model with a decent proposal."""

    def guide(self, x: Tensor) -> None:
        """A diagonal Gaussian with the posterior's mean and 1.3 times its marginal standard deviations
        (from the grid): a decent proposal, not the posterior, which is not Gaussian."""
        loc, scale = self.posterior_moments(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, 1.3 * scale).to_event(1))


def test_two_dimensional_latent_agrees_with_quadrature() -> None:
    """On a 2-D latent model, log p-hat with K = 200,000 matches log p(x) by quadrature to 0.02 nats."""
    m = TwoDimensionalLatent()
    x = torch.bernoulli(torch.full((12, 8), 0.5, dtype=F64), generator=torch.Generator().manual_seed(3))
    exact = m.log_px_by_quadrature(x)
    est = importance_estimate(m.model, m.guide, x, num_samples=200_000, chunk_size=2**18)
    # The estimator's standard error is about sqrt((K / ESS - 1) / K) (delta method); a few times it
    # is the tolerance (here at most 0.0042 nats: 0.02 is 4.7 of them), and it must be small for the
    # comparison to be sharp.
    stderr = ((est.num_samples / est.ess - 1) / est.num_samples).sqrt()
    assert stderr.max() < 0.005, f"the proposal is too poor for a sharp test: stderrs {stderr}"
    assert_close(est.log_px, exact, atol=0.02, rtol=0)
    # the quadrature itself has converged: a coarser grid agrees
    assert_close(m.log_px_by_quadrature(x, points=401), exact, atol=1e-8, rtol=0)


def test_vae_estimate_does_not_depend_on_num_data() -> None:
    """pvae's VAE with a subsampled data plate (num_data = 60,000) gives the very same estimate as with none."""
    torch.manual_seed(0)
    full = VAE(20, 3, hidden=(16,), num_data=None)
    subsampled = VAE(20, 3, hidden=(16,), num_data=60_000)
    subsampled.load_state_dict(full.state_dict())
    x = torch.bernoulli(torch.full((9, 20), 0.3))
    results = []
    for vae in (full, subsampled):
        pyro.set_rng_seed(5)  # the same draws for both
        results.append(importance_estimate(vae.model, vae.guide, x, num_samples=50, chunk_size=120))
    assert_close(results[1].log_px, results[0].log_px, atol=1e-9, rtol=0)
    assert_close(results[1].elbo, results[0].elbo, atol=1e-9, rtol=0)
    # and the scale would have mattered: the N / B = 60,000 / 2 images per chunk of SVI's loss
    assert results[0].log_px.abs().min() > 1.0, "log p(x) too close to 0 for the comparison to show a scale"


def test_progress_counts_every_image_once() -> None:
    """importance_estimate's progress callback is told of each chunk of images as it finishes: the
    counts add up to N, one call per chunk (chunk_size // K images each), and the estimate is unchanged."""
    torch.manual_seed(0)
    vae = VAE(20, 3, hidden=(16,))
    x = torch.bernoulli(torch.full((9, 20), 0.3))
    calls: list[int] = []
    pyro.set_rng_seed(5)
    with_progress = importance_estimate(vae.model, vae.guide, x, num_samples=50, chunk_size=200, progress=calls.append)
    pyro.set_rng_seed(5)
    without = importance_estimate(vae.model, vae.guide, x, num_samples=50, chunk_size=200)
    assert calls == [4, 4, 1], f"expected chunks of 200 // 50 = 4 images, got {calls}"
    assert torch.equal(with_progress.log_px, without.log_px)


def test_linear_gaussian_with_subsampled_plate_is_exact() -> None:
    """A model written for minibatches (plate of 1,000 with 20 subsampled) still yields the exact log p(x)."""
    lg = LinearGaussian()
    x = lg.sample_x(20)
    est = log_marginal_likelihood(lg.model, lg.exact_guide, x, num_data=1000, num_samples=4)
    assert_close(est, lg.log_px(x), atol=1e-9, rtol=0)


def nested_plates_model(x: Tensor, lg: LinearGaussian) -> None:
    """The 1-D-latent linear-Gaussian model written with a plate over pixels inside the data plate."""
    w, b = lg.W[:, 0], lg.b
    with pyro.plate("data", x.shape[0], dim=-2):
        z = pyro.sample("z", dist.Normal(torch.zeros(1, dtype=F64), 1.0))  # (N, 1)
        with pyro.plate("pixels", lg.x_dim, dim=-1):
            pyro.sample("x", dist.Normal(z * w + b, lg.s), obs=x)


def nested_plates_guide(x: Tensor, lg: LinearGaussian) -> None:
    post = lg.posterior(x)  # for z_dim = 1, a 1 x 1 covariance
    with pyro.plate("data", x.shape[0], dim=-2):
        pyro.sample("z", dist.Normal(post.loc, post.covariance_matrix[..., 0].sqrt()))


def test_nested_plates_are_summed_per_image() -> None:
    """With a plate over pixels inside the data plate (max_plate_nesting=2), the estimate is still exact."""
    lg = LinearGaussian(z_dim=1)
    x = lg.sample_x(15)
    est = log_marginal_likelihood(nested_plates_model, nested_plates_guide, x, lg, num_samples=6, max_plate_nesting=2)
    assert_close(est, lg.log_px(x), atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="max_plate_nesting=2"):
        log_marginal_likelihood(nested_plates_model, nested_plates_guide, x, lg, num_samples=6, max_plate_nesting=1)


def test_global_latent_is_refused() -> None:
    """A latent outside the data plate has no per-image share: the estimator says so instead of guessing."""

    def model(x: Tensor) -> None:
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(x: Tensor) -> None:
        pyro.sample("mu", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="'mu' is outside the plate 'data'"):
        log_marginal_likelihood(model, guide, torch.zeros(4), num_samples=3)


def test_latent_missing_from_guide_is_refused() -> None:
    """A model latent that the guide does not propose would be drawn from the prior and weighted wrongly."""
    lg = LinearGaussian()

    def empty_guide(x: Tensor) -> None:
        pass

    with pytest.raises(ValueError, match="latent site 'z' is not in the guide"):
        log_marginal_likelihood(lg.model, empty_guide, lg.sample_x(3), num_samples=3)


def one_dim_guide(scale_factor: float):  # noqa: ANN201 - a guide function
    """The exact posterior of a 1-D-latent linear-Gaussian model with its scale multiplied by scale_factor."""

    def guide(x: Tensor, lg: LinearGaussian) -> None:
        post = lg.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(post.loc, scale_factor * post.covariance_matrix[..., 0].sqrt()).to_event(1))

    return guide


@pytest.mark.parametrize(("scale_factor", "k_low", "k_high"), [(0.4, 0.7, 1.0), (2.0, -math.inf, 0.3)],
                         ids=["narrow-proposal", "wide-proposal"])
def test_pareto_k_flags_heavy_tailed_weights(scale_factor: float, k_low: float, k_high: float) -> None:
    """Pareto k-hat: a proposal narrower than the posterior (scale 0.4) gives k ~ 1 - 0.4^2 = 0.84 > 0.7;
    a wider one (scale 2) gives bounded weights and k < 0.3."""
    lg = LinearGaussian(z_dim=1)
    x = lg.sample_x(30)

    def model(x: Tensor, lg: LinearGaussian) -> None:
        lg.model(x)

    est = importance_estimate(model, one_dim_guide(scale_factor), x, lg, num_samples=5000, pareto_k=True)
    assert est.pareto_k is not None
    median = est.pareto_k.median().item()
    assert k_low < median < k_high, f"median k-hat {median:.3f} outside ({k_low}, {k_high}): {est.pareto_k}"


def test_active_units_counts_units_whose_posterior_mean_moves() -> None:
    """Cov_x E_q[z_u] is the variance of each unit's posterior mean; units above 0.01 are active."""
    x = torch.randn(500, 4, generator=torch.Generator().manual_seed(0))
    factors = torch.tensor([1.0, 0.5, 0.05, 0.0])  # variances ~ 1, 0.25, 0.0025, 0

    def guide(x: Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x * factors, 0.1).to_event(1))

    activity = latent_activity(guide, x, batch_size=128)
    assert_close(activity, (x * factors).double().var(0), atol=1e-12, rtol=1e-9)
    assert active_units(guide, x) == 2, f"expected 2 active units, activity {activity}"


def test_psis_tail_matches_pyro_for_a_single_image() -> None:
    """For one image, the per-image k-hat equals Pyro's psis_diagnostic on the same draws."""
    lg = LinearGaussian(z_dim=1)
    x = lg.sample_x(1)

    def model(x: Tensor, lg: LinearGaussian) -> None:
        lg.model(x)

    guide = one_dim_guide(0.5)
    # Both draw their 2,000 particles in one vectorized plate at dim -2: the same seed gives the same draws.
    pyro.set_rng_seed(7)
    ours = importance_estimate(model, guide, x, lg, num_samples=2000, pareto_k=True).pareto_k
    assert ours is not None
    pyro.set_rng_seed(7)
    theirs = pyro.infer.importance.psis_diagnostic(model, guide, x, lg, num_particles=2000, max_plate_nesting=1)
    assert_close(ours, torch.tensor([theirs], dtype=F64), atol=1e-9, rtol=0)


@pytest.fixture(scope="module")
def tiny_run(fake_mnist_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch on the fake MNIST: a run folder to evaluate."""
    out = tmp_path_factory.mktemp("run") / "run"
    config = TrainConfig(data_dir=str(fake_mnist_root), val_size=100, z_dim=2, hidden=(16,), batch_size=50,
                         epochs=1, device="cpu", out=str(out))
    train(config, progress=False)
    return out


def test_evaluate_writes_log_px_and_per_image_table(tiny_run: Path) -> None:
    """evaluate_run with K samples adds log p(x) and its diagnostics to the JSON and writes one CSV row per image."""
    result = evaluate_run(tiny_run, num_samples=30, device="cpu")
    saved = json.loads((tiny_run / "evaluation.json").read_text())
    assert saved == result.to_dict() and Evaluation.from_dict(saved) == result
    rows = list(csv.DictReader((tiny_run / PER_IMAGE).read_text().splitlines()))
    assert tuple(rows[0]) == PER_IMAGE_FIELDS and len(rows) == result["num_images"] == 200
    log_px = torch.tensor([float(r["log_px"]) for r in rows], dtype=F64)
    elbo = torch.tensor([float(r["elbo"]) for r in rows], dtype=F64)
    assert_close(log_px.mean().item(), result["log_px"], atol=1e-5, rtol=0)
    assert_close(log_px.std().item() / math.sqrt(200), result["log_px_stderr"], atol=1e-5, rtol=0)
    assert_close((log_px - elbo).mean().item(), result["kl_gap"], atol=1e-5, rtol=0)
    # the ELBO from one draw and the mean of 30 draws estimate the same number
    assert abs(result["elbo_is"] - result["elbo"]) < 4 * result["elbo_stderr"], result
    assert result["log_px"] > result["elbo_is"] and result["num_samples"] == 30
    assert 1 <= result["ess_mean"] <= 30 and 0 <= result["active_units"] <= 2, result


def test_evaluate_is_reproducible_and_leaves_the_callers_rng_alone(tiny_run: Path) -> None:
    """Its draws are seeded: the same seed gives the same numbers, another seed other ones (by Monte-Carlo
    noise), and the caller's random stream continues as if evaluate had not run."""
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = evaluate_run(tiny_run, num_samples=20, device="cpu")
    assert_close(torch.rand(3), expected_next, rtol=0, atol=0)
    second = evaluate_run(tiny_run, num_samples=20, device="cpu")
    other = evaluate_run(tiny_run, num_samples=20, device="cpu", seed=1)
    for key in ("elbo", "reconstruction", "log_px", "kl_gap", "ess_mean"):
        assert first[key] == second[key], key
    assert other["seed"] == 1 and first["seed"] == 0
    assert other["log_px"] != first["log_px"] and abs(other["log_px"] - first["log_px"]) < 5 * first["log_px_stderr"]


def test_cli_evaluate_num_samples(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """pvae evaluate RUN --num-samples K prints log p(x) in its table and writes per_image.csv."""
    (tiny_run / PER_IMAGE).unlink(missing_ok=True)
    assert main(["evaluate", str(tiny_run), "--num-samples", "12", "--chunk-size", "100", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "log p(x), importance sampling, K=12" in out and (tiny_run / PER_IMAGE).is_file(), out
    assert main(["evaluate", str(tiny_run), "--num-samples", "0"]) == 2
    assert "expected --num-samples K >= 1" in capsys.readouterr().err
