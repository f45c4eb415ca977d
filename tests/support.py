"""Helpers shared by test modules (a support module, not a test module): small run configurations
on the fake MNIST, the before/after measurement of a trainer, and the prior x likelihood x guide
grid of the contract tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyro
import torch

from pvae import TrainConfig, elbo_terms, train
from pvae.data import fixed_eval_set, load_data
from pvae.parts.build import build_likelihood
from pvae.runs.build import build_vae

X_DIM, Z_DIM, N = 12, 2, 16
PRIOR_SPECS = ["normal", "diagonal", "mog:3", "vamp:3", "laplace", "student-t:3", "flow:2"]
LIKELIHOOD_SPECS = ["bernoulli", "continuous-bernoulli", "gaussian", "gaussian:learned", "laplace", "beta",
                    "discretized-logistic"]
GUIDE_SPECS = ["diagonal", "full-cov", "flow:2"]



def contract_config(prior: str, likelihood: str, guide: str) -> TrainConfig:
    binarization = "dynamic" if build_likelihood(likelihood).needs_binary else "none"
    return TrainConfig(prior=prior, likelihood=likelihood, guide=guide, z_dim=Z_DIM, hidden=(8,),
                       binarization=binarization)


def fitting_data(likelihood: str, n: int) -> torch.Tensor:
    """Images ``(n, X_DIM)`` that the likelihood accepts: binary, 8-bit grey levels, or (Beta) bin centres."""
    grey = torch.randint(0, 256, (n, X_DIM)) / 255.0
    if build_likelihood(likelihood).needs_binary:
        return torch.bernoulli(grey)
    return (255 * grey + 0.5) / 256 if likelihood == "beta" else grey



def fake_config(root: Path, out: Path, **changes: object) -> TrainConfig:
    """A tiny, fast configuration on the fake MNIST (500 training, 100 validation images)."""
    base = TrainConfig(
        data_dir=str(root), val_size=100, z_dim=2, hidden=(32,), batch_size=50, epochs=3, device="cpu", out=str(out)
    )
    return dataclasses.replace(base, **changes)


def real_config(root: Path, out: Path) -> TrainConfig:
    """One epoch on the first 2,000 real MNIST training images; the file's last 1,000 are validation."""
    return TrainConfig(
        data_dir=str(root), val_size=1000, train_size=2000, epochs=1, batch_size=20, lr=3e-3, device="cpu",
        out=str(out),
    )


def val_elbo_gain(config: TrainConfig) -> tuple[float, float]:
    """Validation ELBO (nats per image) of the untrained model and of the model after ``train(config)``."""
    torch.manual_seed(config.seed)  # the initialization train() itself draws
    data = load_data(config.dataset, config.data_dir, val_size=config.val_size, train_size=config.train_size)
    untrained = build_vae(config, data.x_dim, data.train.shape[0], mean_image=data.train.mean(0)).eval()
    x_val = fixed_eval_set(data.val, config.binarization)
    pyro.set_rng_seed(1)
    before = elbo_terms(untrained, x_val).elbo.mean().item()
    result = train(config, progress=False)
    pyro.set_rng_seed(1)  # the same draws of z for both measurements
    after = elbo_terms(result.vae.eval(), x_val).elbo.mean().item()
    return before, after


def metrics_without_seconds(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    """Per-epoch metrics minus the wall-clock column."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def csv_without_seconds(path: Path) -> list[list[str]]:
    """metrics.csv as rows of cells, the 'seconds' column dropped."""
    lines = [line.split(",") for line in path.read_text().splitlines()]
    col = lines[0].index("seconds")
    return [row[:col] + row[col + 1 :] for row in lines]


