"""Fit a VAE by stochastic variational inference and keep a resumable run folder.

SVI here is Pyro's ELBO (``Trace_ELBO``, ``TraceMeanField_ELBO`` or the IWAE bound) as a
differentiable loss, minimized with one ``torch.optim.Adam`` over the model's parameters (theta and
phi together) and a learning-rate schedule. By default the ELBO's computation is recorded once per
minibatch shape and replayed (:mod:`pvae.compiled`): the same numbers without Pyro's per-step Python. One checkpoint per epoch, written atomically, holds everything needed to
continue bit for bit: parameters, optimizer and schedule state, and the random-number generators.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import Tensor

from pvae.checkpoint import atomic_write_text, save_checkpoint
from pvae.compiled import TracedELBO
from pvae.components import build_vae, check_analytic_kl
from pvae.config import TrainConfig, iwae_particles
from pvae.data import ImageData, binarize, fixed_eval_set, load_data
from pvae.evaluate import elbo_terms
from pvae.iwae import IWAE_ELBO
from pvae.model import VAE
from pvae.runs import CHECKPOINT, CONFIG, EVALUATION, METRICS, PER_IMAGE, RunFolderError, load_run, metrics_csv, resolve_device
from pvae.version import __version__

__all__ = ["train", "train_epoch", "TrainResult", "TrainingDivergedError"]

class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite; the run folder keeps its last good checkpoint."""


@dataclass
class TrainResult:
    """What :func:`train` returns: the fitted model, its run folder and per-epoch metrics."""

    vae: VAE
    run_dir: Path
    metrics: list[dict[str, float]]
    data: ImageData


def _objective(config: TrainConfig) -> pyro.infer.ELBO:
    # max_plate_nesting=1 (the data plate) lets Pyro vectorize particles in a plate to its left.
    if (k := iwae_particles(config.objective)) is not None:
        return IWAE_ELBO(num_particles=k, max_plate_nesting=1)
    cls = Trace_ELBO if config.objective == "trace" else TraceMeanField_ELBO
    vectorize = config.num_particles > 1
    return cls(num_particles=config.num_particles, vectorize_particles=vectorize, max_plate_nesting=1)


def _training_objective(config: TrainConfig, vae: VAE, *, own_model: bool = False) -> pyro.infer.ELBO | TracedELBO:
    """The objective each SVI step calls, run by the configured engine.

    :param own_model: ``vae`` is the caller's, not built from ``config``: engine ``auto`` runs it eagerly.
    """
    objective = _objective(config)
    return TracedELBO(vae, objective) if _engine(config, own_model) == "jit" else objective


def _engine(config: TrainConfig, own_model: bool) -> str:
    """``jit`` or ``eager``: what ``config.engine`` means for this model."""
    return ("eager" if own_model else "jit") if config.engine == "auto" else config.engine


def _scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.lr / 100)
    gamma = config.lr_decay if config.lr_schedule == "exponential" else 1.0
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)


def _versions() -> dict[str, str]:
    return {
        "pvae": __version__,
        "pyro": pyro.__version__,
        "torch": torch.__version__,
        "torchvision": importlib.metadata.version("torchvision"),
        "python": platform.python_version(),
    }


def _default_out() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    vae: VAE | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Train a VAE as ``config`` says and keep everything in its run folder.

    :param config: the run's settings. With ``resume=True``, ``config.out`` names the run to continue
        and the other fields must equal the saved ones.
    :param resume: continue a stopped run from its last checkpoint; the end result equals an
        uninterrupted run with the same seed on the same device.
    :param overwrite: reuse an ``out`` folder that already holds another run.
    :param vae: a model of your own (e.g. a custom prior) to train instead of the one ``config``
        describes; its run folder then cannot be rebuilt by ``pvae evaluate``, and engine ``auto``
        trains it eagerly.
    :param progress: show a progress bar; ``None``: only when stderr is a terminal.
    :returns: the trained model, the run folder and the per-epoch metrics.
    """
    from tqdm.auto import tqdm  # only the training loop needs it

    out = Path(config.out) if config.out is not None else _default_out()
    config = replace(config, out=str(out))
    device = resolve_device(config.device)
    state: dict[str, Any] | None = None
    if resume:
        if not (out / CHECKPOINT).exists():
            raise RunFolderError(f"cannot resume: {out} holds no {CHECKPOINT}; start a new run without --resume")
        saved_config, state = load_run(out, map_location=device)
        saved_config = replace(saved_config, out=config.out)  # the folder may have moved
        if saved_config != config:
            diff = {k: (v, config.to_dict()[k]) for k, v in saved_config.to_dict().items() if config.to_dict()[k] != v}
            raise RunFolderError(f"cannot resume {out} with different settings (saved, given): {diff}")
    elif (out / CONFIG).exists() or (out / CHECKPOINT).exists():
        if not overwrite:
            raise RunFolderError(f"{out} already holds a run; pass --resume to continue it or --overwrite to replace it")
        for stale in (EVALUATION, PER_IMAGE):  # the old run's numbers must not pass for the new one's
            (out / stale).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp"):  # half-written temporaries of a process killed mid-write
        stale.unlink()

    torch.manual_seed(config.seed)
    data = load_data(
        config.dataset, config.data_dir, val_size=config.val_size, train_size=config.train_size, device=device
    )
    x_grey, num_data = data.train, data.train.shape[0]
    x_static = binarize(x_grey, config.seed) if config.binarization == "static" else x_grey
    x_val = fixed_eval_set(data.val, config.binarization)
    own_model = vae is not None
    if vae is None:
        vae = build_vae(config, data.x_dim, num_data, mean_image=x_grey.mean(0), init_data=x_static)
    # The data plate's size is the training set's size by definition; a model built elsewhere is told.
    vae.num_data = num_data
    vae.to(device)
    vae.likelihood.check_support(x_val if len(x_val) else x_static[:1000])
    if config.binarization != "dynamic":
        vae.likelihood.check_support(x_static)
    if config.objective == "meanfield":
        check_analytic_kl(vae, x_static[:2], guide=config.guide, prior=config.prior)

    optimizer = torch.optim.Adam(vae.parameters(), lr=config.lr)
    scheduler = _scheduler(config, optimizer)
    data_rng = torch.Generator(device=device).manual_seed(config.seed)
    metrics: list[dict[str, float]] = []
    start_epoch = 1
    if state is not None:
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        data_rng.set_state(state["data_rng"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
        metrics = [dict(row) for row in state["metrics"]]
        start_epoch = int(state["epoch"]) + 1
    else:
        atomic_write_text(out / CONFIG, json.dumps({"config": config.to_dict(), "versions": _versions(),
                                                    "device": str(device), "cpu_threads": torch.get_num_threads(),
                                                    "engine": _engine(config, own_model)}, indent=2))
        atomic_write_text(out / METRICS, metrics_csv([]))

    objective = _training_objective(config, vae, own_model=own_model)
    steps = math.ceil(num_data / config.batch_size)
    show = sys.stderr.isatty() if progress is None else progress
    for epoch in range(start_epoch, config.epochs + 1):
        tic = time.perf_counter()
        vae.train()
        order = torch.randperm(num_data, generator=data_rng, device=device)
        x_epoch = torch.bernoulli(x_grey, generator=data_rng) if config.binarization == "dynamic" else x_static
        bar = tqdm(total=steps, desc=f"epoch {epoch}/{config.epochs}", disable=not show, leave=False)
        try:
            train_elbo = train_epoch(vae, objective, optimizer, x_epoch, order, config.batch_size, progress=bar)
        except TrainingDivergedError as err:
            kept = f"the checkpoint of epoch {epoch - 1} in {out} is intact" if epoch > 1 else "no checkpoint was written"
            raise TrainingDivergedError(
                f"training diverged in epoch {epoch}: {err}; {kept}. Try a lower --lr (now {config.lr})"
            ) from None
        finally:
            bar.close()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        vae.eval()
        val_elbo = float(elbo_terms(vae, x_val).elbo.mean()) if len(x_val) else float("nan")
        row = {"epoch": epoch, "train_elbo": train_elbo, "val_elbo": val_elbo, "lr": lr,
               "seconds": time.perf_counter() - tic}
        metrics.append(row)
        _save_epoch(out, config, vae, optimizer, scheduler, data_rng, device, epoch, metrics)
        print(f"epoch {epoch:>3}/{config.epochs}  train elbo {row['train_elbo']:9.3f}  "
              f"val elbo {val_elbo:9.3f}  nats/image  ({row['seconds']:.1f} s)", file=sys.stderr)

    from pvae.plots import save_run_figures

    save_run_figures(out, vae, data, metrics, config.binarization)
    return TrainResult(vae=vae, run_dir=out, metrics=metrics, data=data)


def train_epoch(
    vae: VAE,
    objective: pyro.infer.ELBO,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    order: Tensor,
    batch_size: int,
    *,
    progress: Any = None,
) -> float:
    """One pass of SVI over the training images.

    :param objective: anything with Pyro's ``differentiable_loss(model, guide, x)``.
    :param x: training images ``(N, x_dim)``, already binarized for this epoch.
    :param order: a permutation of ``range(N)``; minibatches are its consecutive slices.
    :param progress: a tqdm bar to advance (``update(1)`` per step), or ``None``.
    :returns: the mean over steps of the minibatch estimate of the per-image ELBO (nats).
    """
    num_data = x.shape[0]
    elbo_sum = torch.zeros((), device=x.device)
    steps = 0
    with warnings.catch_warnings():
        # Pyro warns on a NaN loss; the check below stops training with a clearer message instead.
        warnings.filterwarnings("ignore", message="Encountered NaN", category=UserWarning)
        for start in range(0, num_data, batch_size):
            steps += 1
            _svi_step(vae, objective, optimizer, x[order[start : start + batch_size]], steps, start, elbo_sum)
            if progress is not None:
                progress.update(1)
                if steps % 50 == 0:
                    progress.set_postfix(elbo=f"{elbo_sum.item() / steps:.2f}")
    return elbo_sum.item() / steps


def _svi_step(
    vae: VAE, objective: pyro.infer.ELBO, optimizer: torch.optim.Optimizer, xb: Tensor, step: int, start: int,
    elbo_sum: Tensor,
) -> None:
    """One gradient step on the minibatch ``xb``; adds its per-image ELBO estimate to ``elbo_sum`` in place."""
    num_data = max(vae.num_data or 0, xb.shape[0])  # the data plate's size, see VAE._data_plate
    # The data's support was checked once before training; re-validating every distribution's
    # arguments at every step costs ~7% of a CPU step and finds nothing new.
    with pyro.validation_enabled(False):
        loss = objective.differentiable_loss(vae.model, vae.guide, xb)
    if not torch.isfinite(loss):
        # Stop before the step: one NaN gradient would spoil every parameter for good.
        raise TrainingDivergedError(
            f"the loss became {loss.item()} at step {step} (images {start}..{start + len(xb) - 1} of this epoch's order)"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    # The loss estimates -N * (per-image ELBO): the data plate scales the batch by N / B. Summing on
    # the device keeps GPU steps free of host synchronisation.
    elbo_sum -= loss.detach() / num_data


def _save_epoch(
    out: Path,
    config: TrainConfig,
    vae: VAE,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    data_rng: torch.Generator,
    device: torch.device,
    epoch: int,
    metrics: list[dict[str, float]],
) -> None:
    state: dict[str, Any] = {
        "config": config.to_dict(),
        "epoch": epoch,
        "num_data": vae.num_data,
        "x_dim": vae.x_dim,
        "model": vae.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "data_rng": data_rng.get_state(),
        "torch_rng": torch.get_rng_state(),
        "metrics": metrics,
    }
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    # Checkpoint first, then the CSV from the checkpoint's own history: after a crash between the
    # two, resuming rewrites the CSV, so metrics always match the last complete checkpoint.
    save_checkpoint(out / CHECKPOINT, state)
    atomic_write_text(out / METRICS, metrics_csv(metrics))
