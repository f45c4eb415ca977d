"""The papers' recipes: the IWAE schedule's learning rates, KL warm-up and beta against a hand
computation on fixed draws, and early stopping with its best checkpoint and an exact resume."""

from __future__ import annotations

import copy
import importlib
import math
from pathlib import Path

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.util import site_is_subsample
from support import fake_config, metrics_without_seconds
from torch.distributions import kl_divergence

from pvae import ConfigError, TrainConfig, train
from pvae.cli import main
from pvae.runs.build import build_model
from pvae.runs.checkpoint import load_checkpoint
from pvae.runs.evaluate import evaluate_run
from pvae.runs.folder import BEST_CHECKPOINT, CHECKPOINT, load_config
from pvae.runs.train import best_epoch
from pvae.training.compiled import TracedELBO
from pvae.training.loop import train_epoch
from pvae.training.recipes import iwae_epochs, iwae_lr_factor, iwae_stage, recipe_fields
from pvae.training.warmup import WeightedObjective, kl_weight

train_module = importlib.import_module("pvae.runs.train")


# --- the IWAE schedule ---------------------------------------------------------------------------

def test_iwae_stages_and_rates_follow_the_papers_formula() -> None:
    """Stage i spans 3^i epochs, 3,280 in all, at lr 1e-3 * 10^(-i/7) (Burda et al. 2016, section 5)."""
    epochs = [e for e in range(1, 3281)]
    stages = [iwae_stage(e) for e in epochs]
    assert [stages.count(i) for i in range(8)] == [3**i for i in range(8)]
    assert stages == sorted(stages) and iwae_epochs(8) == 3280
    for e in (1, 2, 4, 5, 13, 14, 40, 41, 121, 122, 364, 365, 1093, 1094, 3280):
        i = next(i for i in range(8) if sum(3**j for j in range(i + 1)) >= e)  # counted afresh, not by the module
        assert iwae_lr_factor(e) == pytest.approx(10 ** (-i / 7), rel=1e-12), f"epoch {e}"


def test_the_iwae_schedule_sets_each_epochs_learning_rate(fake_mnist_root: Path, tmp_path: Path) -> None:
    """A 13-epoch run (3 stages) trains epoch e at lr * 10^(-i/7), as metrics.csv records it."""
    config = fake_config(fake_mnist_root, tmp_path / "run", lr_schedule="iwae", lr=2e-3, epochs=13, train_size=50,
                         batch_size=50)
    result = train(config, progress=False)
    expected = [2e-3] + [2e-3 * 10 ** (-1 / 7)] * 3 + [2e-3 * 10 ** (-2 / 7)] * 9
    assert [row["lr"] for row in result.metrics] == pytest.approx(expected, rel=1e-12)


def test_the_iwae_recipe_is_one_flag_with_overrides() -> None:
    fields = recipe_fields("iwae")
    assert fields == {"lr_schedule": "iwae", "lr": 1e-3, "adam_eps": 1e-4, "batch_size": 20, "epochs": 3280,
                      "val_size": 400}
    assert recipe_fields("iwae:3")["epochs"] == 13
    for bad in ("iwae:0", "iwae:9", "iwae:x", "burda"):
        with pytest.raises(ConfigError, match="recipe"):
            recipe_fields(bad)


def test_cli_recipe_writes_its_settings_and_lets_flags_win(fake_mnist_root: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(["train", "--recipe", "iwae:2", "--batch-size", "100", "--data-dir", str(fake_mnist_root),
                 "--train-size", "100", "--z-dim", "2", "--hidden", "16", "--device", "cpu", "--out", str(out),
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    saved = load_config(out)
    assert (saved.lr_schedule, saved.epochs, saved.adam_eps, saved.val_size, saved.batch_size) == (
        "iwae", 4, 1e-4, 400, 100)
    assert main(["train", "--resume", str(out), "--recipe", "iwae"]) == 2
    assert "drop --recipe" in capsys.readouterr().err


# --- KL warm-up and beta -------------------------------------------------------------------------

def _vae(fake_mnist_root: Path, tmp_path: Path, **changes: object) -> tuple[torch.nn.Module, torch.Tensor]:
    config = fake_config(fake_mnist_root, tmp_path / "unused", **changes)
    torch.manual_seed(0)
    x = torch.bernoulli(torch.rand(8, 784, generator=torch.Generator().manual_seed(1)) * 0.6)
    vae = build_model(config, 784, 500)
    vae.num_data = 500
    return vae, x


def _hand_loss(vae: torch.nn.Module, x: torch.Tensor, weight: float, seed: int, *, analytic_kl: bool) -> float:
    """-(N/B) sum_images [log p(x|z) + w (log p(z) - log q(z|x))] with z the guide's draw under
    ``seed`` (the first thing Pyro's ELBO draws); the KL in closed form when ``analytic_kl``."""
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        guide = poutine.trace(vae.guide).get_trace(x)
        model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x)
    obs = latent = 0.0
    for name, site in model.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if site["is_observed"]:
            obs += float(site["fn"].log_prob(site["value"]).sum())
        elif analytic_kl:
            latent -= float(kl_divergence(guide.nodes[name]["fn"], site["fn"]).sum())
        else:
            latent += float((site["fn"].log_prob(site["value"]) - guide.nodes[name]["fn"].log_prob(site["value"])).sum())
    return -(500 / x.shape[0]) * (obs + weight * latent)


@pytest.mark.parametrize("model", ["vae", "hierarchical"])
@pytest.mark.parametrize("elbo_cls", [Trace_ELBO, TraceMeanField_ELBO])
def test_weighted_loss_equals_the_hand_computation(fake_mnist_root: Path, tmp_path: Path, model: str,
                                                   elbo_cls: type) -> None:
    """Eager and traced: the loss is -(N/B)(log p(x|z) - w KL) on the same draws, for each weight
    (the traced graph takes the weight as an input, not a constant), every latent layer weighted."""
    vae, x = _vae(fake_mnist_root, tmp_path, model=model, z1_dim=4, top_hidden=(8,))
    if model == "hierarchical" and elbo_cls is TraceMeanField_ELBO:
        pytest.skip("the two-layer guide is not mean-field (z2 is drawn from z1)")
    analytic = elbo_cls is TraceMeanField_ELBO
    for engine in ("eager", "jit"):
        elbo = elbo_cls(max_plate_nesting=1)
        objective = WeightedObjective(TracedELBO(vae, elbo) if engine == "jit" else elbo)
        for seed, weight in enumerate((0.3, 0.7, 0.05, 1.0, 0.3)):  # past the traced engine's checked steps
            objective.weight = weight
            pyro.set_rng_seed(seed)
            with pyro.validation_enabled(False):
                loss = objective.differentiable_loss(vae.model, vae.guide, x).item()
            expected = _hand_loss(vae, x, weight, seed, analytic_kl=analytic)
            assert loss == pytest.approx(expected, rel=1e-5), f"{engine}, weight {weight}"
        pyro.set_rng_seed(9)
        unweighted = float(objective.unweighted_loss(vae.model, vae.guide, x))
        assert unweighted == pytest.approx(_hand_loss(vae, x, 1.0, 9, analytic_kl=analytic), rel=1e-5)


def test_the_reported_train_elbo_is_the_unweighted_one(fake_mnist_root: Path, tmp_path: Path) -> None:
    """One step with w = 0.2 reports the ELBO that the unweighted objective reports on the same
    draws, while its update differs from the unweighted step's."""
    vae, x = _vae(fake_mnist_root, tmp_path)
    twin = copy.deepcopy(vae)
    order = torch.arange(x.shape[0])
    reports, params = [], []
    for model, objective, weights in ((vae, WeightedObjective(Trace_ELBO(max_plate_nesting=1)), [0.2]),
                                      (twin, Trace_ELBO(max_plate_nesting=1), None)):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        pyro.set_rng_seed(4)
        reports.append(train_epoch(model, objective, optimizer, x, order, x.shape[0], kl_weights=weights))
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert reports[0] == pytest.approx(reports[1], rel=1e-6)
    assert not torch.allclose(params[0], params[1]), "the weight did not change the step"


def test_kl_weight_rises_step_by_step_to_beta() -> None:
    weights = [kl_weight(t, 10, warmup_epochs=2, beta=4.0) for t in range(1, 31)]
    assert weights[:20] == pytest.approx([4.0 * t / 20 for t in range(1, 21)])
    assert weights[20:] == [4.0] * 10
    assert kl_weight(7, 10, warmup_epochs=0, beta=0.5) == 0.5 and kl_weight(1, 10, warmup_epochs=0, beta=1.0) == 1.0


def test_a_warm_up_run_records_its_weights_and_true_elbo(fake_mnist_root: Path, tmp_path: Path) -> None:
    config = fake_config(fake_mnist_root, tmp_path / "run", kl_warmup=2, beta=2.0, epochs=3)
    result = train(config, progress=False)
    assert [row["kl_weight"] for row in result.metrics] == pytest.approx([1.0, 2.0, 2.0])
    assert all(math.isfinite(row["train_elbo"]) and row["train_elbo"] < 0 for row in result.metrics)


@pytest.mark.parametrize("changes, match", [
    ({"objective": "iwae:3", "beta": 2.0}, "IWAE bound"),
    ({"objective": "iwae:3", "kl_warmup": 5}, "IWAE bound"),
    ({"beta": 0.0}, "beta must be"),
    ({"kl_warmup": -1}, "kl_warmup must be"),
    ({"patience": 0}, "patience must be"),
    ({"patience": 3, "val_size": 0}, "validation"),
    ({"keep_epochs": (0,)}, "keep_epochs"),
    ({"adam_eps": 0.0}, "adam_eps"),
])
def test_recipe_settings_are_checked(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**changes)


# --- early stopping ------------------------------------------------------------------------------

def test_best_epoch_and_the_stop_rule() -> None:
    rows = [{"epoch": e, "val_elbo": v} for e, v in enumerate([-10.0, -8.0, -9.0, -8.0, -8.5], start=1)]
    assert best_epoch(rows) == 2  # the first of equal values
    config = TrainConfig(patience=3, epochs=10)
    assert train_module._early_stop(config, rows[:4], 2) is None
    assert "epoch 2" in train_module._early_stop(config, rows, 2)
    assert train_module._early_stop(TrainConfig(patience=3, epochs=5), rows, 2) is None  # the last epoch anyway
    assert best_epoch([{"epoch": 1, "val_elbo": math.nan}]) is None


def _overfitting(fake_mnist_root: Path, out: Path) -> TrainConfig:
    # 20 training images and a high learning rate: the validation ELBO peaks within a few epochs
    return fake_config(fake_mnist_root, out, train_size=20, batch_size=20, lr=3e-2, epochs=40, patience=3,
                       hidden=(64,), z_dim=8, keep_epochs=(2,))


def test_early_stopping_keeps_the_best_checkpoint_and_resumes_exactly(
    fake_mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = train(_overfitting(fake_mnist_root, tmp_path / "straight"), progress=False)
    assert straight.stopped_early, "the validation ELBO of this run should stop improving before epoch 40"
    last = straight.metrics[-1]["epoch"]
    assert last - straight.best_epoch == 3 and last < 40
    best = load_checkpoint(tmp_path / "straight" / BEST_CHECKPOINT)
    assert best["epoch"] == straight.best_epoch == best_epoch(straight.metrics)
    assert (tmp_path / "straight" / "checkpoint-2.pt").is_file()

    # Interrupted right after the best epoch's checkpoints, then resumed: the same stop, the same files.
    save_epoch = train_module.save_epoch

    def save_then_interrupt(*args: object, **kwargs: object) -> None:
        save_epoch(*args, **kwargs)
        if args[7] == straight.best_epoch:
            raise KeyboardInterrupt

    config = _overfitting(fake_mnist_root, tmp_path / "resumed")
    monkeypatch.setattr(train_module, "save_epoch", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(config, progress=False)
    monkeypatch.setattr(train_module, "save_epoch", save_epoch)
    pyro.set_rng_seed(777)
    resumed = train(config, resume=True, progress=False)
    assert metrics_without_seconds(resumed.metrics) == metrics_without_seconds(straight.metrics)
    for name in (CHECKPOINT, BEST_CHECKPOINT):
        a = load_checkpoint(tmp_path / "straight" / name)["model"]
        b = load_checkpoint(tmp_path / "resumed" / name)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name} differs after resuming"
    again = train(config, resume=True, progress=False)  # a stopped run stays stopped
    assert again.stopped_early and len(again.metrics) == len(straight.metrics)

    # evaluate measures best.pt by default, and a named checkpoint into its own file
    by_default = evaluate_run(tmp_path / "straight", device="cpu", progress=False)
    assert (by_default["checkpoint"], by_default["epoch"]) == (BEST_CHECKPOINT, straight.best_epoch)
    kept = evaluate_run(tmp_path / "straight", device="cpu", checkpoint="checkpoint-2.pt", progress=False)
    assert kept["epoch"] == 2 and kept["files"] == ["evaluation-checkpoint-2.json"]
    assert (tmp_path / "straight" / "evaluation-checkpoint-2.json").is_file()


def test_overwrite_removes_the_old_runs_best_and_kept_checkpoints(fake_mnist_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(fake_config(fake_mnist_root, out, epochs=2, patience=1, keep_epochs=(1,)), progress=False)
    assert (out / BEST_CHECKPOINT).is_file() and (out / "checkpoint-1.pt").is_file()
    train(fake_config(fake_mnist_root, out, epochs=1), overwrite=True, progress=False)
    assert not (out / BEST_CHECKPOINT).exists() and not (out / "checkpoint-1.pt").exists()
    assert evaluate_run(out, device="cpu", progress=False)["checkpoint"] == CHECKPOINT


def test_an_unknown_checkpoint_is_refused_with_the_ones_there(fake_mnist_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(fake_config(fake_mnist_root, out, epochs=1), progress=False)
    with pytest.raises(Exception, match="checkpoint.pt"):
        evaluate_run(out, device="cpu", checkpoint="checkpoint-7.pt", progress=False)
    with pytest.raises(Exception, match="names a file"):
        evaluate_run(out, device="cpu", checkpoint="../x.pt", progress=False)


def test_warm_up_trains_the_semi_supervised_model(fake_mnist_root: Path, tmp_path: Path) -> None:
    """M2's objective (TraceEnum_ELBO with y summed out, and the classification term) weighted too:
    its latents z and y are scaled, the labelled images' observed y is not."""
    config = fake_config(fake_mnist_root, tmp_path / "run", model="m2", labels=50, kl_warmup=2, epochs=2)
    result = train(config, progress=False)
    assert [row["kl_weight"] for row in result.metrics] == pytest.approx([0.5, 1.0])
    assert all(math.isfinite(row["train_elbo"]) for row in result.metrics)
