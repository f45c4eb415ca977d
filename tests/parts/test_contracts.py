"""Contract tests over every prior x likelihood x guide: shapes, a few SVI steps, and save/reload;
plus the names on the command line and a run folder that ``pvae evaluate`` rebuilds exactly."""

from __future__ import annotations

import io
import itertools
import json
import math
from pathlib import Path

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from support import GUIDE_SPECS, LIKELIHOOD_SPECS, PRIOR_SPECS, X_DIM, Z_DIM, N
from support import contract_config as _config
from support import fitting_data as _fitting_data

from pvae.cli import main
from pvae.models import VAE
from pvae.parts.build import GUIDES, LIKELIHOODS, PRIORS
from pvae.runs.build import build_vae, check_config
from pvae.runs.config import ConfigError, TrainConfig
from pvae.runs.folder import load_run, rebuild_model


def _outputs(vae: VAE, x: torch.Tensor) -> list[torch.Tensor]:
    """Everything a run's model computes, under a fixed seed: z ~ q, log q(z|x), log p(z), log p(x|z),
    reconstructions and samples from the prior."""
    pyro.set_rng_seed(7)
    with torch.no_grad():
        guide_tr = poutine.trace(vae.guide).get_trace(x)
        model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x)
        z = guide_tr.nodes["z"]["value"]
        return [z, guide_tr.nodes["z"]["fn"].log_prob(z), model_tr.nodes["z"]["fn"].log_prob(z),
                model_tr.nodes["x"]["fn"].log_prob(x), vae.reconstruct(x), vae.generate(3)]


def test_the_contract_lists_cover_every_registered_component() -> None:
    """No registered prior, likelihood or guide escapes the contract tests."""
    names = {spec.split(":")[0] for spec in PRIOR_SPECS + LIKELIHOOD_SPECS + GUIDE_SPECS}
    missing = (set(PRIORS) | set(LIKELIHOODS) | set(GUIDES)) - names
    assert not missing, f"components without contract tests: {sorted(missing)}"


@pytest.mark.parametrize(
    "prior,likelihood,guide",
    list(itertools.product(PRIOR_SPECS, LIKELIHOOD_SPECS, GUIDE_SPECS)),
    ids=lambda spec: spec,
)
def test_component_contract(prior: str, likelihood: str, guide: str) -> None:
    """Shapes of p(z), q(z|x), p(x|z); finite SVI losses; identical outputs after save and rebuild."""
    config = _config(prior, likelihood, guide)
    x = _fitting_data(likelihood, N)
    vae = build_vae(config, X_DIM, N, mean_image=x.mean(0), init_data=x)
    vae.likelihood.check_support(x)

    p_z = vae.prior()
    z = p_z.sample((5,))
    q_z = vae.posterior(x)
    p_x = vae.likelihood(vae.decoder(q_z.rsample()))
    shapes = {
        "p(z) batch, event": (tuple(p_z.batch_shape), tuple(p_z.event_shape)),
        "p(z) sample, log_prob": (tuple(z.shape), tuple(p_z.log_prob(z).shape)),
        "q(z|x) batch, event": (tuple(q_z.batch_shape), tuple(q_z.event_shape)),
        "p(x|z) batch, event, log_prob": (tuple(p_x.batch_shape), tuple(p_x.event_shape), tuple(p_x.log_prob(x).shape)),
    }
    assert shapes == {
        "p(z) batch, event": ((), (Z_DIM,)),
        "p(z) sample, log_prob": ((5, Z_DIM), (5,)),
        "q(z|x) batch, event": ((N,), (Z_DIM,)),
        "p(x|z) batch, event, log_prob": ((N,), (X_DIM,), (N,)),
    }, shapes

    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-2)
    losses = []
    for _ in range(3):
        loss = Trace_ELBO(max_plate_nesting=1).differentiable_loss(vae.model, vae.guide, x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))), f"SVI losses {losses}"

    buffer = io.BytesIO()
    torch.save({"model": vae.state_dict(), "x_dim": X_DIM, "num_data": N}, buffer)
    buffer.seek(0)
    torch.manual_seed(123)  # the rebuild starts from other random weights, permutations and pseudo-inputs
    rebuilt = rebuild_model(config, torch.load(buffer, weights_only=True), torch.device("cpu"))
    for before, after in zip(_outputs(vae.eval(), x), _outputs(rebuilt, x)):
        torch.testing.assert_close(after, before, rtol=0, atol=0)


@pytest.mark.parametrize("kind,typo,suggestion", [
    ("prior", "mgo:10", "mog"),
    ("likelihood", "continuous-bernouli", "continuous-bernoulli"),
    ("guide", "ful-cov", "full-cov"),
])
def test_an_unknown_name_lists_the_known_ones_and_the_nearest(kind: str, typo: str, suggestion: str) -> None:
    """A misspelt component is a ConfigError that suggests the nearest name and lists every known one."""
    with pytest.raises(ConfigError) as err:
        check_config(TrainConfig(**{kind: typo}))
    message = str(err.value)
    assert f"did you mean {suggestion!r}" in message, message
    registry = {"prior": PRIORS, "likelihood": LIKELIHOODS, "guide": GUIDES}[kind]
    assert all(entry.usage in message for entry in registry.values()), message


@pytest.mark.parametrize("spec", ["mog:0", "mog:many", "flow:-1", "normal:3", "gaussian:-0.1", "student-t:x"])
def test_a_bad_argument_is_refused_with_the_expected_spelling(spec: str) -> None:
    """A known name with a bad argument is a ConfigError showing how the name is spelled."""
    kind = "likelihood" if spec.startswith("gaussian") else "prior"
    with pytest.raises(ConfigError, match=r"spelled"):
        check_config(TrainConfig(**{kind: spec}))


def test_cli_records_the_choice_and_evaluate_rebuilds_that_model(
    fake_mnist_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pvae train --prior/--likelihood/--guide writes them to config.json, and the model that
    load_run/rebuild_model (pvae evaluate's path) rebuild scores images exactly as trained."""
    out = tmp_path / "run"
    argv = ["train", "--data-dir", str(fake_mnist_root), "--prior", "vamp:4", "--likelihood", "gaussian:learned",
            "--guide", "flow:2", "--binarization", "none", "--z-dim", "2", "--hidden", "8", "--epochs", "1",
            "--train-size", "100", "--val-size", "100", "--batch-size", "50", "--device", "cpu",
            "--out", str(out), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    saved = json.loads((out / "config.json").read_text())["config"]
    assert (saved["prior"], saved["likelihood"], saved["guide"]) == ("vamp:4", "gaussian:learned", "flow:2"), saved

    assert main(["evaluate", str(out), "--device", "cpu"]) == 0, capsys.readouterr().err
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["kl_analytic"] is False and math.isfinite(evaluation["elbo"]), evaluation

    config, state = load_run(out)
    rebuilt = rebuild_model(config, state, torch.device("cpu"))
    assert isinstance(rebuilt.posterior, type(rebuilt.prior.posterior)), "the VampPrior is built on the run's guide"
    x = torch.rand(5, rebuilt.x_dim)
    first, second = _outputs(rebuilt, x), _outputs(rebuild_model(config, state, torch.device("cpu")), x)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_cli_unknown_prior_exits_with_the_list(capsys: pytest.CaptureFixture[str]) -> None:
    """pvae train --prior with an unknown name exits with status 2 and names the known priors."""
    assert main(["train", "--prior", "vampp:10"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'vamp'" in err and "mog[:K]" in err and "flow[:L]" in err, err


def test_beta_on_exact_zeros_is_refused_before_training(fake_mnist_root: Path, tmp_path: Path) -> None:
    """Training Beta on 8-bit images (with exact 0 and 1) stops before the first step, naming fitting choices."""
    from pvae.runs.train import train

    config = TrainConfig(data_dir=str(fake_mnist_root), likelihood="beta", binarization="none", z_dim=2, hidden=(8,),
                         val_size=100, train_size=100, epochs=1, device="cpu", out=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="continuous-bernoulli"):
        train(config, progress=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists(), "a checkpoint was written"
