"""The loop over epochs (pvae.training.loop.fit): settings as keyword arguments, no file written,
the per-epoch callback's stop obeyed, and the data rule's draws taken from the given generator."""

from __future__ import annotations

import os
from pathlib import Path

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from pvae.models import VAE
from pvae.training.loop import TrainingDivergedError, epoch_images, fit
from pvae.training.schedules import make_scheduler


def _setup(seed: int = 0) -> tuple[VAE, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, torch.Tensor]:
    torch.manual_seed(seed)
    vae = VAE(12, 2, hidden=(6,), num_data=40)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-2)
    scheduler = make_scheduler(optimizer, "cosine", epochs=3, lr=1e-2, lr_decay=0.95)
    x = torch.rand(40, 12, generator=torch.Generator().manual_seed(1))
    return vae, optimizer, scheduler, x


def test_fit_returns_the_metrics_and_writes_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three epochs give three rows with the epoch's rate, the validation the callback gave, and w = 1;
    the working folder stays empty."""
    monkeypatch.chdir(tmp_path)
    vae, optimizer, scheduler, x = _setup()
    seen: list[int] = []
    metrics = fit(vae, Trace_ELBO(max_plate_nesting=1), optimizer, scheduler, x, epochs=range(1, 4), batch_size=10,
                  generator=torch.Generator().manual_seed(0), resample="binarize", validate=lambda: -1.5,
                  on_epoch=lambda rows: seen.append(len(rows)) is not None)
    assert [row["epoch"] for row in metrics] == [1, 2, 3] and seen == [1, 2, 3], (metrics, seen)
    assert all(row["val_elbo"] == -1.5 and row["kl_weight"] == 1.0 for row in metrics), metrics
    assert metrics[0]["lr"] == pytest.approx(1e-2) and metrics[1]["lr"] < metrics[0]["lr"], metrics
    assert all(torch.isfinite(torch.tensor(row["train_elbo"])) for row in metrics)
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)


def test_the_callback_stops_the_loop_and_a_continued_loop_equals_an_unbroken_one() -> None:
    """on_epoch returning True ends the loop; continuing from its metrics and generator state with
    the next epochs ends where one loop over all epochs does, bit for bit."""
    rows = {}
    for name in ("whole", "parts"):
        pyro.set_rng_seed(3)
        vae, optimizer, scheduler, x = _setup()
        gen = torch.Generator().manual_seed(0)
        common = dict(batch_size=10, generator=gen, resample="binarize")
        if name == "whole":
            metrics = fit(vae, Trace_ELBO(max_plate_nesting=1), optimizer, scheduler, x, epochs=range(1, 4), **common)
        else:
            first = fit(vae, Trace_ELBO(max_plate_nesting=1), optimizer, scheduler, x, epochs=range(1, 4),
                        on_epoch=lambda metrics: True, **common)
            assert len(first) == 1, first
            metrics = fit(vae, Trace_ELBO(max_plate_nesting=1), optimizer, scheduler, x, epochs=range(2, 4),
                          metrics=first, **common)
        rows[name] = [(row["epoch"], row["train_elbo"], row["lr"]) for row in metrics]
    assert rows["whole"] == rows["parts"], rows


def test_epoch_images_draw_from_the_generator() -> None:
    """binarize and dequantize draw from the given generator (the same seed, the same images); none draws nothing."""
    x = torch.rand(5, 12, generator=torch.Generator().manual_seed(1))
    for rule in ("binarize", "dequantize"):
        a = epoch_images(x, rule, torch.Generator().manual_seed(4))
        b = epoch_images(x, rule, torch.Generator().manual_seed(4))
        assert torch.equal(a, b) and not torch.equal(a, x), rule
    gen = torch.Generator().manual_seed(4)
    state = gen.get_state()
    assert epoch_images(x, "none", gen) is x and torch.equal(gen.get_state(), state)
    with pytest.raises(ValueError, match="expected resample in none, binarize, dequantize"):
        epoch_images(x, "dynamic", gen)


def test_a_non_finite_loss_names_the_epoch() -> None:
    """A NaN loss stops the loop with TrainingDivergedError naming the epoch, before the step."""
    vae, optimizer, scheduler, x = _setup()

    class NaNLoss:
        def differentiable_loss(self, model: object, guide: object, *args: torch.Tensor) -> torch.Tensor:
            return torch.tensor(float("nan"), requires_grad=True)

    with pytest.raises(TrainingDivergedError, match="training diverged in epoch 2: the loss became nan at step 1") as info:
        fit(vae, NaNLoss(), optimizer, scheduler, x, epochs=range(2, 4), batch_size=10,
            generator=torch.Generator().manual_seed(0))
    assert info.value.epoch == 2
