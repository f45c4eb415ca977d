"""The traced ELBO (``--engine jit``) gives Pyro's eager ELBO: the same losses, gradients and random
draws for every built-in component and objective, and it refuses a model a trace cannot follow."""

from __future__ import annotations

import dataclasses

import pyro
import pyro.distributions as dist
import pytest
import torch
from support import GUIDE_SPECS, LIKELIHOOD_SPECS, PRIOR_SPECS, X_DIM
from support import contract_config as _config
from support import fitting_data as _fitting_data
from torch import Tensor

from pvae.models import VAE
from pvae.models.common import data_plate
from pvae.runs.build import build_model, build_vae
from pvae.runs.config import TrainConfig
from pvae.training.compiled import TracedELBO, TracedELBOMismatch
from pvae.training.objectives import build_objective, engine_for, training_objective

BATCH = 8


def _losses_and_grads(objective: object, vae: VAE, batches: list[Tensor]) -> list[tuple[Tensor, list[Tensor]]]:
    """Loss and parameter gradients of each minibatch in turn, from seed 11 (no parameter updates)."""
    pyro.set_rng_seed(11)
    out = []
    for x in batches:
        loss = objective.differentiable_loss(vae.model, vae.guide, x)  # type: ignore[attr-defined]
        out.append((loss.detach(), list(torch.autograd.grad(loss, list(vae.parameters()), allow_unused=True))))
    return out


def _assert_same(got: list[tuple[Tensor, list[Tensor]]], want: list[tuple[Tensor, list[Tensor]]]) -> None:
    for (loss, grads), (want_loss, want_grads) in zip(got, want, strict=True):
        torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-4)
        for g, w in zip(grads, want_grads, strict=True):
            assert (g is None) == (w is None)
            if g is not None:
                # float32 sums the trace may order differently: ~1e-4 relative on single elements seen
                # (discretized logistic); a wrong draw or scale would be off by far more
                torch.testing.assert_close(g, w, rtol=1e-3, atol=1e-3)


# Each prior, likelihood and guide once (with the default others), and every objective.
CASES = (
    [(p, "bernoulli", "diagonal", "trace") for p in PRIOR_SPECS]
    + [("normal", lik, "diagonal", "trace") for lik in LIKELIHOOD_SPECS[1:]]
    + [("normal", "bernoulli", g, "trace") for g in GUIDE_SPECS[1:]]
    + [("normal", "bernoulli", "diagonal", "meanfield"), ("normal", "bernoulli", "flow:2", "iwae:3"),
       ("vamp:3", "gaussian", "full-cov", "trace")]
)


@pytest.mark.parametrize("prior,likelihood,guide,objective", CASES, ids=lambda s: s)
def test_traced_elbo_is_the_eager_elbo(prior: str, likelihood: str, guide: str, objective: str) -> None:
    """Losses and gradients on the same draws, step after step (the random streams stay in step), over
    minibatches of two shapes; the trace is made on the first minibatch and replayed on the others."""
    config = dataclasses.replace(_config(prior, likelihood, guide), objective=objective)
    x = _fitting_data(likelihood, 5 * BATCH)
    vae = build_vae(config, X_DIM, 5 * BATCH, mean_image=x.mean(0), init_data=x)
    # shapes 8, 8, 3, 8, 3: each shape's first two steps are checked against the eager ELBO
    batches = [x[:BATCH], x[BATCH : 2 * BATCH], x[2 * BATCH : 2 * BATCH + 3], x[3 * BATCH : 4 * BATCH], x[-3:]]
    want = _losses_and_grads(build_objective(config.objective, num_particles=config.num_particles), vae, batches)
    traced = TracedELBO(vae, build_objective(config.objective, num_particles=config.num_particles))
    _assert_same(_losses_and_grads(traced, vae, batches), want)
    assert traced._checks_left == {k: 0 for k in traced._checks_left} and len(traced._checks_left) == 2
    # after the checks the loss comes from the replayed trace alone, and is still the eager one
    _assert_same(_losses_and_grads(traced, vae, batches), want)


@pytest.mark.parametrize("family,objective", [("hierarchical", "trace"), ("hierarchical", "iwae:3"),
                                              ("conditional", "trace"), ("conditional", "meanfield")])
def test_traced_elbo_is_the_eager_elbo_for_the_other_families(family: str, objective: str) -> None:
    """Two stochastic layers, and a model given labels as a second input, trace to Pyro's eager ELBO too."""
    config = TrainConfig(model=family, objective=objective, z_dim=2, z1_dim=3, hidden=(8,), top_hidden=(5,))
    x = _fitting_data("bernoulli", 5 * BATCH)
    y = torch.arange(5 * BATCH) % 10
    model = build_model(config, X_DIM, 5 * BATCH, mean_image=x.mean(0))
    cuts = [slice(0, BATCH), slice(BATCH, 2 * BATCH), slice(2 * BATCH, 2 * BATCH + 3), slice(3 * BATCH, 4 * BATCH)]
    batches = [(x[c], y[c]) if family == "conditional" else (x[c],) for c in cuts]

    def run(objective_: object) -> list[tuple[Tensor, list[Tensor]]]:
        pyro.set_rng_seed(11)
        out = []
        for args in batches:
            loss = objective_.differentiable_loss(model.model, model.guide, *args)  # type: ignore[attr-defined]
            out.append((loss.detach(), list(torch.autograd.grad(loss, list(model.parameters()), allow_unused=True))))
        return out

    want = run(build_objective(config.objective, num_particles=config.num_particles))
    traced = TracedELBO(model, build_objective(config.objective, num_particles=config.num_particles))
    _assert_same(run(traced), want)
    _assert_same(run(traced), want)  # replayed alone, after the checks
    assert set(traced._checks_left.values()) == {0}


def test_the_trace_follows_in_place_parameter_updates() -> None:
    """An optimizer step changes the parameters in place; the replayed trace computes with the new values."""
    config = _config("normal", "bernoulli", "diagonal")
    x = _fitting_data("bernoulli", BATCH)
    vae = build_vae(config, X_DIM, 100, mean_image=x.mean(0))
    traced = TracedELBO(vae, build_objective(config.objective, num_particles=config.num_particles))
    for _ in range(3):
        traced.differentiable_loss(vae.model, vae.guide, x)
    with torch.no_grad():
        vae.decoder[0].weight.add_(0.5)
    _assert_same(_losses_and_grads(traced, vae, [x]), _losses_and_grads(build_objective(config.objective, num_particles=config.num_particles), vae, [x]))


class _BranchingVAE(VAE):
    """A model whose structure depends on the data's values: it scores x only when the batch has ink."""

    def model(self, x: Tensor) -> None:
        with data_plate(x, self.num_data):
            z = pyro.sample("z", self.prior())
            logits = self.decoder(z)
            if x.sum() > 0.5 * x.numel():  # a Python branch on a tensor value
                logits = logits + 1.0
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)


def test_a_model_that_branches_on_values_is_refused() -> None:
    """Traced on a light batch and run on a heavy one, the frozen branch would give a wrong loss: refused."""
    vae = _BranchingVAE(X_DIM, 2, hidden=(8,), num_data=100)
    traced = TracedELBO(vae, build_objective("trace"))
    light, heavy = torch.zeros(BATCH, X_DIM), torch.ones(BATCH, X_DIM)
    traced.differentiable_loss(vae.model, vae.guide, light)
    with pytest.raises(TracedELBOMismatch, match="branches on tensor values.*engine='eager'"):
        traced.differentiable_loss(vae.model, vae.guide, heavy)


def test_the_engine_setting_picks_the_objective() -> None:
    """engine jit wraps the configured ELBO in a TracedELBO, eager uses Pyro's ELBO itself, auto picks; others are refused."""
    vae = build_vae(_config("normal", "bernoulli", "diagonal"), X_DIM, 100)
    base = _config("normal", "bernoulli", "diagonal")
    assert isinstance(training_objective(vae, objective="trace", engine="jit"), TracedELBO)
    assert isinstance(training_objective(vae, objective="trace", engine="eager"), pyro.infer.Trace_ELBO)
    # auto, the default: traced for the models pvae builds, eager for one of the caller's own, or one
    # whose step enumerates or draws a labelled minibatch
    assert base.engine == "auto" and engine_for("auto", own_model=False, enumerates=False) == "jit"
    assert engine_for("auto", own_model=True, enumerates=False) == "eager"
    assert engine_for("auto", own_model=False, enumerates=True) == "eager"
    assert engine_for("auto", own_model=False, enumerates=False, semi_supervised=True) == "eager"
    assert engine_for("jit", own_model=True, enumerates=False) == "jit"
    with pytest.raises(ValueError, match="engine"):
        training_objective(vae, objective="trace", engine="auto")  # resolved by engine_for first
    with pytest.raises(ValueError, match="engine"):
        dataclasses.replace(base, engine="compiled")
    other = build_vae(base, X_DIM, 100)
    with pytest.raises(ValueError, match="the VAE it was built for"):
        TracedELBO(vae, build_objective(base.objective)).differentiable_loss(other.model, other.guide, torch.zeros(2, X_DIM))
