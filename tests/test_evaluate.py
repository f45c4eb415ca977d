"""Bits per dimension, and densities trained and evaluated on dequantized 8-bit images."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest
import torch

from pvae.config import TrainConfig
from pvae.data import load_data
from pvae.evaluate import bits_per_dim, evaluate_run

# the module, not the function pvae.train that the package re-exports under the same name
train_module = importlib.import_module("pvae.train")


def test_bits_per_dim_of_discrete_data_is_nats_over_d_ln2() -> None:
    """For binary pixels, bits per dimension = nats / (784 ln 2) on a fixed example."""
    assert bits_per_dim(100.0, 784) == pytest.approx(100.0 / (784 * math.log(2)), rel=1e-15)
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0, rel=1e-15)


def test_bits_per_dim_of_a_dequantized_density_adds_log_256() -> None:
    """A density of dequantized levels gains D ln 256 nats: the uniform density on [0, 1]^D is 8 bits per
    dimension, the value of coding 8-bit pixels with no model at all."""
    assert bits_per_dim(0.0, 784, dequantized=True) == pytest.approx(8.0, rel=1e-15)
    nats = -1500.0  # a density above 1 on [0, 1]^D has a negative nll
    expected = (nats + 784 * math.log(256)) / (784 * math.log(2))
    assert bits_per_dim(nats, 784, dequantized=True) == pytest.approx(expected, rel=1e-15)


def _config(root: Path, out: Path, **kw: object) -> TrainConfig:
    settings: dict[str, object] = dict(data_dir=str(root), train_size=200, val_size=100, epochs=2, z_dim=2,
                                       hidden=(32,), batch_size=50, device="cpu", out=str(out))
    settings.update(kw)
    return TrainConfig(**settings)  # type: ignore[arg-type]


def test_beta_trains_on_dequantized_images(
    fake_mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--binarization none --dequantize trains the Beta likelihood: each epoch sees a fresh draw of
    (255 x + u) / 256, inside (0, 1) and inside each pixel's own bin; evaluation reports bits per
    dimension with the 8-bit offset."""
    seen: list[torch.Tensor] = []
    epoch = train_module.train_epoch

    def spy(vae, objective, optimizer, x, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(x.clone())
        return epoch(vae, objective, optimizer, x, *args, **kwargs)

    monkeypatch.setattr(train_module, "train_epoch", spy)
    out = tmp_path / "beta"
    result = train_module.train(_config(fake_mnist_root, out, likelihood="beta", binarization="none",
                                        dequantize=True), progress=False)
    assert all(math.isfinite(row["train_elbo"]) and math.isfinite(row["val_elbo"]) for row in result.metrics)
    assert len(seen) == 2
    levels = (load_data("mnist", fake_mnist_root, val_size=100, train_size=200).train * 255).round()
    assert bool((levels == 0).any() and (levels == 255).any()), "the test needs pixels at both ends"
    for x in seen:
        assert bool(((x > 0) & (x < 1)).all()), "dequantized pixels must lie strictly inside (0, 1)"
        # each pixel stays in its level's bin [k, k + 1] / 256 (its closure: float32 may round onto an edge)
        assert bool(((x * 256 >= levels) & (x * 256 <= levels + 1)).all()), "a pixel left its 8-bit bin"
    assert not torch.equal(seen[0], seen[1]), "each epoch must draw fresh noise u"
    evaluation = evaluate_run(out, num_samples=5, device="cpu", progress=False)
    assert evaluation["dequantized"] is True and math.isfinite(evaluation["log_px"])
    assert evaluation["neg_elbo_bits_per_dim"] == pytest.approx(
        bits_per_dim(-evaluation["elbo"], 784, dequantized=True), rel=1e-12)
    assert evaluation["nll_bits_per_dim"] == pytest.approx(
        bits_per_dim(-evaluation["log_px"], 784, dequantized=True), rel=1e-12)
    again = evaluate_run(out, num_samples=5, device="cpu", progress=False)
    assert again["elbo"] == evaluation["elbo"], "the evaluation images must be one fixed dequantization"


def test_beta_without_dequantization_names_the_fix(fake_mnist_root: Path, tmp_path: Path) -> None:
    """The Beta likelihood on raw grey levels (exact 0s and 1s) is refused, naming --dequantize."""
    with pytest.raises(ValueError, match="--dequantize"):
        train_module.train(_config(fake_mnist_root, tmp_path / "r", likelihood="beta", binarization="none"),
                           progress=False)
    assert not (tmp_path / "r" / "config.json").exists()


def test_binary_runs_report_bits_per_dim_without_offset(fake_mnist_root: Path, tmp_path: Path) -> None:
    """A Bernoulli run's bits per dimension is its nll over D ln 2; a density of grey levels that were
    not dequantized gets none (it is no likelihood of the 8-bit data)."""
    out = tmp_path / "bern"
    train_module.train(_config(fake_mnist_root, out, epochs=1), progress=False)
    evaluation = evaluate_run(out, num_samples=5, device="cpu", progress=False)
    assert evaluation["nll_bits_per_dim"] == pytest.approx(-evaluation["log_px"] / (784 * math.log(2)), rel=1e-12)
    grey = tmp_path / "grey"
    train_module.train(_config(fake_mnist_root, grey, epochs=1, binarization="none", likelihood="gaussian"),
                       progress=False)
    saved = evaluate_run(grey, device="cpu", progress=False)
    assert "neg_elbo_bits_per_dim" not in saved and "nll_bits_per_dim" not in saved, saved
    assert json.loads((grey / "evaluation.json").read_text())["dequantized"] is False
