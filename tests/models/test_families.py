"""Contract tests for every model family x the objectives it supports (sites, shapes, a finite loss,
save/reload, resume), the refusals of combinations that cannot work, and a model of your own given
by import path."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch

from pvae import TrainConfig, evaluate_run, train
from pvae.cli import main
from pvae.errors import ConfigError
from pvae.inference.traces import latent_sites, observed_sites, trace_pair
from pvae.models.families import FAMILIES as TABLE
from pvae.models.families import check_fit, own_family
from pvae.protocol import label_mode
from pvae.runs.build import build_model, check_config
from pvae.runs.folder import load_run, rebuild_model
from pvae.training.objectives import build_objective, check_objective, wants_enumeration

X_DIM = 784
SMALL = dict(z_dim=3, z1_dim=4, hidden=(8,), top_hidden=(6,))
# family -> (extra settings, latent sites with their event sizes, objectives it supports)
FAMILIES = {
    "vae": ({}, {"z": 3}, ["trace", "meanfield", "iwae:3"]),
    "hierarchical": ({}, {"z2": 3, "z1": 4}, ["trace", "iwae:3"]),
    "conditional": ({}, {"z": 3}, ["trace", "meanfield", "iwae:3"]),
    "m2": ({"labels": 100}, {"y": None, "z": 3}, ["trace"]),
}
CASES = [(family, objective) for family, (_, _, objectives) in FAMILIES.items() for objective in objectives]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _config(family: str, **kw: object) -> TrainConfig:
    return TrainConfig(model=family, **{**SMALL, **FAMILIES[family][0], **kw})  # type: ignore[arg-type]


def _batch(n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return torch.bernoulli(torch.full((n, X_DIM), 0.3), generator=gen), torch.arange(n) % 10


def _args(model: object, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (y,) if label_mode(model) == "observed" else ()


@pytest.mark.parametrize("family", FAMILIES)
def test_sites_and_shapes(family: str) -> None:
    """The model's latent sites are the family's, each with its event size, all in the data plate; x is observed."""
    model = build_model(_config(family), X_DIM, 600)
    x, y = _batch()
    guide_tr, model_tr, _ = trace_pair(model.model, model.guide, x, *_args(model, y), num_particles=2)
    want = FAMILIES[family][1]
    assert latent_sites(model_tr) == list(want), f"latent sites {latent_sites(model_tr)}, expected {list(want)}"
    assert observed_sites(model_tr) == ["x"], observed_sites(model_tr)
    for name, size in want.items():
        value = guide_tr.nodes[name]["value"]
        expected = (2, 5) if size is None else (2, 5, size)
        assert tuple(value.shape) == expected, f"site {name}: shape {tuple(value.shape)}, expected {expected}"


@pytest.mark.parametrize(("family", "objective"), CASES, ids=[f"{f}-{o}" for f, o in CASES])
def test_the_objective_gives_a_finite_loss_with_gradients(family: str, objective: str) -> None:
    """Every supported (family, objective) gives a finite loss whose gradient reaches every parameter it uses."""
    config = _config(family, objective=objective)
    model = build_model(config, X_DIM, 600)
    x, y = _batch()
    enumerates = wants_enumeration(model, x, *_args(model, y))
    assert enumerates == (family == "m2"), f"enumeration wanted: {enumerates}"
    elbo = build_objective(config.objective, num_particles=config.num_particles, enumerates=enumerates)
    loss = elbo.differentiable_loss(model.model, model.guide, x, *_args(model, y))
    assert torch.isfinite(loss), f"loss {loss}"
    loss.backward()
    grads = [p.grad for p in model.decoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads), "decoder got no gradient"


@pytest.mark.parametrize(("family", "objective", "message"), [
    ("m2", "iwae:3", "enumeration.*IWAE bound cannot do; use objective='trace'"),
    ("m2", "meanfield", "enumeration.*'meanfield' cannot do; use objective='trace'"),
    ("hierarchical", "meanfield", "draws z2 from z1.*use objective='trace' or objective='iwae:K'"),
])
def test_combinations_that_cannot_work_are_refused(family: str, objective: str, message: str) -> None:
    """The IWAE bound or the analytic KL with an enumerated label, and the analytic KL with a guide
    whose z2 depends on z1, are refused by the settings' check, before any model is built."""
    with pytest.raises(ConfigError, match=message):
        check_config(_config(family, objective=objective))


@pytest.mark.parametrize("family", FAMILIES)
def test_the_table_says_what_each_family_supports(family: str) -> None:
    """Each entry of the family table lists the objectives this test trains it with, and only those."""
    supported = {objective.partition(":")[0] for objective in FAMILIES[family][2]}
    assert set(TABLE[family].objectives) == supported, (TABLE[family].objectives, supported)
    assert TABLE[family].engines == (("auto", "eager") if family == "m2" else ("auto", "jit", "eager"))
    model = build_model(_config(family), X_DIM, 600)
    assert label_mode(model) == TABLE[family].label_mode


def test_what_a_model_of_your_own_supports_is_read_from_it() -> None:
    """A model of your own whose guide enumerates trains only with trace, and a semi-supervised one
    only eagerly: the same check, and the same one-line refusals, as the table's families."""
    enumerating = own_family("mine:Net", "none", enumerates=True)
    with pytest.raises(ConfigError, match="model mine:Net sums its discrete latent out.*use objective='trace'"):
        check_fit("mine:Net", enumerating, objective="iwae:4", engine="auto", labels=None)
    semi = own_family("mine:Net", "semi-supervised", enumerates=True)
    with pytest.raises(ConfigError, match="engine 'jit' cannot run model mine:Net"):
        check_fit("mine:Net", semi, objective="trace", engine="jit", labels=100)
    with pytest.raises(ConfigError, match="e.g. labels=100"):
        check_fit("mine:Net", semi, objective="trace", engine="auto", labels=None)
    check_fit("mine:Net", own_family("mine:Net", "none", enumerates=False), objective="meanfield", engine="jit",
              labels=None)


def test_meanfield_with_a_dependent_guide_is_refused() -> None:
    """meanfield with a guide whose latents depend on each other (q(z2|z1)) is refused, read from the guide's trace."""
    model = build_model(_config("hierarchical"), X_DIM, 600)  # the table refuses meanfield for this family already
    with pytest.raises(ConfigError, match="mean-field guide.*'z2' from 'z1'"):
        check_objective(model, _batch()[0], objective="meanfield")


@pytest.mark.parametrize(("settings", "message"), [
    ({"model": "m2"}, "e.g. labels=100"),
    ({"model": "m2", "labels": 15}, "multiple of the 10 classes"),
    ({"model": "vae", "labels": 100}, "drop labels=100"),
    ({"model": "m2", "labels": 100, "engine": "jit"}, "engine 'jit' cannot run model m2.*engine='eager'"),
    ({"model": "conditional", "prior": "vamp:5"}, "q\\(z \\| x, y\\)"),
    ({"model": "hierarchial"}, "did you mean 'hierarchical'"),
    ({"model": "vae", "model_args": '{"a": 1}'}, "model of your own"),
])
def test_bad_settings_are_one_line_errors(settings: dict[str, object], message: str) -> None:
    """Settings that do not fit the model are a ConfigError on one line that says what to do."""
    with pytest.raises(ConfigError, match=message) as info:
        check_config(TrainConfig(**settings))  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def _train(fake_mnist_root: Path, out: Path, family: str, **kw: object) -> object:
    config = _config(family, data_dir=str(fake_mnist_root), val_size=100, batch_size=50, out=str(out), **kw)
    return train(config, progress=False)


@pytest.mark.parametrize(("family", "objective"), CASES, ids=[f"{f}-{o}" for f, o in CASES])
def test_save_reload_and_resume_are_exact(
    family: str, objective: str, fake_mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run rebuilt from its folder gives identical outputs, and a run stopped after epoch 1 and resumed
    ends bit for bit where an uninterrupted one does."""
    train_module = importlib.import_module("pvae.runs.train")  # the module, not the function pvae.train

    whole = _train(fake_mnist_root, tmp_path / "whole", family, epochs=2, objective=objective)
    save_epoch = train_module.save_epoch

    def save_then_stop(*args: object, **kwargs: object) -> None:
        save_epoch(*args, **kwargs)  # type: ignore[arg-type]
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_epoch", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        _train(fake_mnist_root, tmp_path / "cut", family, epochs=2, objective=objective)
    monkeypatch.setattr(train_module, "save_epoch", save_epoch)
    resumed = train(_config(family, data_dir=str(fake_mnist_root), val_size=100, batch_size=50,
                            out=str(tmp_path / "cut"), epochs=2, objective=objective), resume=True, progress=False)
    a, b = whole.vae.state_dict(), resumed.vae.state_dict()  # type: ignore[attr-defined]
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run's"
    assert whole.metrics[-1]["train_elbo"] == resumed.metrics[-1]["train_elbo"]  # type: ignore[attr-defined]
    config, state = load_run(tmp_path / "whole")
    rebuilt = rebuild_model(config, state, torch.device("cpu"))
    x, y = _batch()
    outputs = []
    for m in (whole.vae, rebuilt):  # type: ignore[attr-defined]
        m.eval()
        pyro.set_rng_seed(5)
        tr = trace_pair(m.model, m.guide, x, *_args(m, y), num_particles=2).model
        outputs.append(tr.log_prob_sum())
    assert torch.equal(outputs[0], outputs[1]), f"rebuilt model differs: {outputs}"


def test_m2_labels_picks_a_class_balanced_subset_and_reports_the_error(fake_mnist_root: Path, tmp_path: Path) -> None:
    """m2 trains with 10 labels per class, and evaluate reports the classification error of q(y|x) beside log p(x)."""
    _train(fake_mnist_root, tmp_path / "m2", "m2", epochs=1)
    result = evaluate_run(tmp_path / "m2", elbo_samples=20, num_samples=50)
    assert 0.0 <= result["classification_error"] <= 1.0 and result["label_site"] == "y"
    assert set(result["kl_by_site"]) == {"y", "z"}
    # log p(x) (K = 50, y summed) lies above the ELBO, and the gap is taken to the ELBO itself, not to
    # the sampler's tighter bound with y summed.
    assert result["kl_gap"] > 0, result
    assert result["elbo_is"] == pytest.approx(result["elbo"], abs=1e-4), result


def test_labels_beyond_the_training_set_are_refused(fake_mnist_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--labels as large as the training set is one line, exit code 2, and no run folder."""
    out = tmp_path / "run"
    code = main(["train", "--model", "m2", "--labels", "500", "--data-dir", str(fake_mnist_root), "--val-size", "100",
                 "--epochs", "1", "--hidden", "8", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no unlabelled image" in err and "\n" not in err, err
    assert not (out / "config.json").exists()


def _pvae(args: list[str], root: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    # A module that fails on import, beside the examples, for the refusal tests.
    (cwd / "broken_module.py").write_text("undefined_name_at_import\n")
    env = {**os.environ, "PYTHONPATH": f"{EXAMPLES}:{cwd}", "PVAE_DATA_DIR": str(root)}
    return subprocess.run([sys.executable, "-m", "pvae.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_model_of_your_own_trains_evaluates_and_is_rebuilt_by_import_path(fake_mnist_root: Path, tmp_path: Path) -> None:
    """pvae train --model own_model:TwoCodeVAE records the class and its arguments; pvae evaluate rebuilds it."""
    run = tmp_path / "own"
    proc = _pvae(["train", "--model", "own_model:TwoCodeVAE", "--model-args", '{"content_dim": 3, "style_dim": 2}',
                  "--val-size", "100", "--epochs", "1", "--batch-size", "100", "--out", str(run), "--no-progress"],
                 fake_mnist_root, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"]["model"] == "own_model:TwoCodeVAE" and json.loads(saved["config"]["model_args"])["content_dim"] == 3
    assert saved["engine"] == "eager", "a model of your own is trained eagerly by engine auto"
    proc = _pvae(["evaluate", str(run), "--num-samples", "10"], fake_mnist_root, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run / "evaluation.json").read_text())
    assert set(result["kl_by_site"]) == {"c", "s"}, result["kl_by_site"]
    assert result["log_px"] > result["elbo_is"] and result["num_samples"] == 10


@pytest.mark.parametrize(("spec", "message"), [
    ("no_such_module:Model", "cannot import 'no_such_module'"),
    ("own_model:Missing", "has no 'Missing'"),
    ("own_model:main", "torch.nn.Module class"),
    ("torch.nn:Linear", "lacks model and guide"),
    ("broken_module:Model", "NameError"),
])
def test_a_model_that_cannot_be_imported_is_one_line(spec: str, message: str, fake_mnist_root: Path, tmp_path: Path) -> None:
    """A class path that cannot be imported, or is not a model class, is one line with exit code 2, nothing written."""
    proc = _pvae(["train", "--model", spec, "--val-size", "100", "--epochs", "1", "--out", str(tmp_path / "r")],
                 fake_mnist_root, tmp_path)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r" / "config.json").exists()


class _OutsidePlate(pyro.nn.PyroModule):
    """A model whose global site sits outside the data plate (what pvae refuses)."""

    def __init__(self, x_dim: int, num_data: int | None = None) -> None:
        super().__init__()
        self.x_dim, self.num_data = x_dim, num_data
        self.net = torch.nn.Linear(1, x_dim)

    def model(self, x: torch.Tensor) -> None:
        w = pyro.sample("w", pyro.distributions.Normal(torch.zeros(1), 1.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", pyro.distributions.Bernoulli(logits=self.net(w) + torch.zeros_like(x)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pyro.sample("w", pyro.distributions.Normal(torch.zeros(1), 1.0).to_event(1))


def test_a_site_outside_the_data_plate_is_refused_before_training(fake_mnist_root: Path, tmp_path: Path) -> None:
    """A class whose site lies outside the data plate is refused with one line before any file is written."""
    config = TrainConfig(model=f"{__name__}:_OutsidePlate", data_dir=str(fake_mnist_root), val_size=100, epochs=1,
                         out=str(tmp_path / "r"))
    with pytest.raises(ValueError, match="outside the plate 'data'") as info:
        train(config, progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "r" / "config.json").exists()


def test_the_labelled_subset_is_class_balanced_and_fixed_by_its_seed() -> None:
    """--labels 100 keeps 10 images of each class; the same seed picks the same images, another seed others."""
    from pvae.data import labelled_subset

    labels = torch.randint(0, 10, (2000,), generator=torch.Generator().manual_seed(0))
    chosen = labelled_subset(labels, 100, seed=0)
    assert torch.bincount(labels[chosen], minlength=10).tolist() == [10] * 10
    assert torch.equal(chosen, labelled_subset(labels, 100, seed=0))
    assert not torch.equal(chosen, labelled_subset(labels, 100, seed=1))
    few_zeros = torch.cat([torch.zeros(5, dtype=torch.long), torch.arange(1, 10).repeat(50)])
    with pytest.raises(ValueError, match="asks 10 images of class 0, but the training set has 5"):
        labelled_subset(few_zeros, 100, seed=0)


def test_a_conditional_model_without_its_labels_is_one_line() -> None:
    """Asking for the ELBO of a class-conditional model without the labels says to pass them."""
    from pvae import elbo_terms

    model = build_model(_config("conditional"), X_DIM, 600)
    x, _ = _batch()
    with pytest.raises(ValueError, match="conditioned on the labels y") as info:
        elbo_terms(model, x)
    assert "\n" not in str(info.value)


def test_a_refused_engine_writes_no_run(fake_mnist_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--engine jit for m2 (whose step draws labelled minibatches) is one line, exit 2, and no run folder files."""
    out = tmp_path / "run"
    code = main(["train", "--model", "m2", "--labels", "100", "--engine", "jit", "--data-dir", str(fake_mnist_root),
                 "--val-size", "100", "--epochs", "1", "--hidden", "8", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "engine 'jit'" in err and "\n" not in err, err
    assert not (out / "config.json").exists() and not (out / "metrics.csv").exists()
