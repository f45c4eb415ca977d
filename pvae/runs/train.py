"""Fit a graphical model by stochastic variational inference and keep a resumable run folder.

SVI here is Pyro's ELBO (``Trace_ELBO``, ``TraceMeanField_ELBO``, ``TraceEnum_ELBO`` or the IWAE
bound; :mod:`pvae.training.objectives`) as a differentiable loss, minimized with one ``torch.optim.Adam`` over the model's parameters (theta and
phi together) and a learning-rate schedule. By default the ELBO's computation is recorded once per
minibatch shape and replayed (:mod:`pvae.training.compiled`): the same numbers without Pyro's per-step Python. One checkpoint per epoch, written atomically, holds everything needed to
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
from collections.abc import Sequence

import pyro
import torch
from torch import Tensor

from pvae.runs.checkpoint import atomic_write_text, save_checkpoint
from pvae.runs.build import build_model, check_config
from pvae.runs.config import TrainConfig
from pvae.data import ImageData, binarize, dequantize, fixed_eval_set, labelled_subset, load_data
from pvae.devices import forked_rng, resolve_device
from pvae.distributed import SINGLE, GradientBucket, World, current_world, rank_seed
from pvae.errors import ConfigError
from pvae.runs.evaluate import BDMC_CSV, elbo_terms
from pvae.training.objectives import (
    Objective,
    check_objective,
    check_semi_supervised,
    engine_for,
    training_objective,
    wants_enumeration,
)
from pvae.protocol import GraphicalModel, label_mode, num_classes
from pvae.training.recipes import iwae_lr_factor
from pvae.parts.registry import is_import_path
from pvae.runs.folder import (
    BEST_CHECKPOINT,
    CHECKPOINT,
    CONFIG,
    EVALUATION,
    METRICS,
    PER_IMAGE,
    RunFolderError,
    kept_checkpoint,
    load_run,
    metrics_csv,
)
from pvae.inference.traces import check_data_support, check_model_traces
from pvae.version import __version__
from pvae.training.warmup import WeightedObjective, kl_weight

__all__ = ["train", "train_epoch", "save_epoch", "TrainResult", "TrainingDivergedError"]

class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite; the run folder keeps its last good checkpoint."""


@dataclass
class TrainResult:
    """What :func:`train` returns: the fitted model, its run folder and per-epoch metrics."""

    vae: GraphicalModel
    run_dir: Path
    metrics: list[dict[str, float]]
    data: ImageData
    #: with ``patience``, the epoch of the best validation ELBO (its checkpoint is ``best.pt``)
    best_epoch: int | None = None
    #: training ended before its last epoch because the validation ELBO stopped improving
    stopped_early: bool = False

    @property
    def model(self) -> GraphicalModel:
        """The fitted model (the same object as ``vae``, whatever its family)."""
        return self.vae


def _scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.lr / 100)
    if config.lr_schedule == "iwae":
        # LambdaLR's factor is of epochs done (0 for the first epoch): the 1-based epoch is one more.
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda done: iwae_lr_factor(done + 1))
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
    vae: GraphicalModel | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Train the graphical model ``config`` describes and keep everything in its run folder.

    :param config: the run's settings. With ``resume=True``, ``config.out`` names the run to continue
        and the other fields must equal the saved ones.
    :param resume: continue a stopped run from its last checkpoint; the end result equals an
        uninterrupted run with the same seed on the same device.
    :param overwrite: reuse an ``out`` folder that already holds another run.
    :param vae: a model object of your own (e.g. a VAE with a custom prior, or any
        :class:`~pvae.protocol.GraphicalModel`) to train instead of the one ``config`` describes;
        its run folder then cannot be rebuilt by ``pvae evaluate`` (name a class by import path in
        ``config.model`` for that), and engine ``auto`` trains it eagerly.
    :param progress: show a progress bar; ``None``: only when stderr is a terminal.
    :returns: the trained model, the run folder and the per-epoch metrics.
    """
    from tqdm.auto import tqdm  # only the training loop needs it

    check_config(config)  # before anything is written
    world = current_world(config.device)  # torchrun's processes, or this one alone
    # every rank names the folder rank 0 named (a default one holds the time, which may differ)
    out = world.broadcast(Path(config.out) if config.out is not None else _default_out())
    config = replace(config, out=str(out))
    device = world.device(resolve_device(config.device))
    # Only rank 0 touches the run folder; what it reads (a checkpoint to resume) it gives the others.
    state = world.on_main(lambda: _prepare_folder(config, out, resume=resume, overwrite=overwrite,
                                                  map_location=device if not world.distributed else "cpu"))
    if state is not None and int(state.get("world_size", 1)) != world.size:
        raise RunFolderError(f"cannot resume {out} with {world.size} process(es): it was trained with "
                             f"{state.get('world_size', 1)}; resume with torchrun --nproc-per-node "
                             f"{state.get('world_size', 1)} (or without torchrun for 1)")

    torch.manual_seed(config.seed)
    data = load_data(
        config.dataset, config.data_dir, val_size=config.val_size, train_size=config.train_size, device=device
    )
    x_grey = data.train
    x_static = binarize(x_grey, config.seed) if config.binarization == "static" else x_grey
    x_val = fixed_eval_set(data.val, config.binarization, config.dequantize)
    # A model of your own (an object, or a class named by import path) may hold Python a trace
    # cannot follow: engine auto runs it eagerly.
    own_model = vae is not None or is_import_path(config.model)
    if vae is None:
        vae = build_model(config, data.x_dim, x_grey.shape[0], mean_image=x_grey.mean(0), init_data=x_static)
    mode = label_mode(vae)
    if mode != "none":
        num_classes(vae)  # a model with labels says how many classes it has, or is refused here
    # The images each epoch steps through, and for M2 the labelled few (the rest are unlabelled).
    fit = torch.arange(x_grey.shape[0], device=device)
    labelled = None
    if mode != "semi-supervised" and config.labels is not None:
        raise ConfigError(f"--labels picks the labelled images of a semi-supervised model; {config.model} has "
                          f"label_mode {mode!r}: drop --labels")
    if mode == "semi-supervised":
        if config.labels is None:
            raise ConfigError("a semi-supervised model learns from a few labelled images: give their number with "
                              "--labels, e.g. --labels 100")
        labelled = labelled_subset(data.train_labels, config.labels, config.label_seed)
        is_labelled = torch.zeros(x_grey.shape[0], dtype=torch.bool, device=device)
        is_labelled[labelled] = True
        fit = (~is_labelled).nonzero().squeeze(-1)
        vae.num_labelled = config.labels  # type: ignore[attr-defined]
    # The data plate's size is the training set's size by definition; a model built elsewhere is told.
    vae.num_data = x_grey.shape[0]
    vae.to(device)  # type: ignore[attr-defined]

    def labels_of(y: Tensor) -> tuple[Tensor, ...]:  # what model and guide take besides the images
        return (y,) if mode == "observed" else ()

    probe_args = labels_of(data.train_labels[:2])
    # The checks run the programs, which draws latents: forked, so that the training's random
    # stream is the one it would be without them (and the default VAE's numbers stay as they were).
    with forked_rng(device):
        # dequantized data is drawn afresh each epoch: the checks see one fixed draw of it
        x_probe = fixed_eval_set(x_grey, "none", dequantized=True) if config.dequantize else x_static
        check_model_traces(vae, x_probe[:2], *probe_args)
        if len(x_val):
            check_data_support(vae, x_val, *labels_of(data.val_labels))
        else:
            # no validation split (val_size=0): the first training images, as the model will see them
            check_data_support(vae, fixed_eval_set(x_grey[:1000], config.binarization, config.dequantize),
                               *labels_of(data.train_labels[:1000]))
        if config.binarization != "dynamic":  # the very images it will train on (or one draw of them)
            check_data_support(vae, x_probe, *labels_of(data.train_labels))
        if labelled is not None:  # M2's labelled programs, which the first step would run
            check_semi_supervised(vae, x_probe[labelled[:2]], data.train_labels[labelled[:2]])
        enumerates = wants_enumeration(vae, x_probe[:2], *probe_args)
        check_objective(config, vae, x_probe[:2], *probe_args)
        del x_probe  # a whole training set's worth when dequantized: not kept through training
    val_args = labels_of(data.val_labels)

    optimizer = torch.optim.Adam(vae.parameters(), lr=config.lr, eps=config.adam_eps)  # type: ignore[attr-defined]
    scheduler = _scheduler(config, optimizer)
    data_rng = torch.Generator(device=device).manual_seed(config.seed)
    # Built before anything is written: it refuses what it cannot run (e.g. --engine jit for m2).
    labelled_set = None if labelled is None else (x_static[labelled], data.train_labels[labelled], data_rng)
    objective = training_objective(config, vae, own_model=own_model, enumerates=enumerates, labelled=labelled_set)
    weighted = config.kl_warmup > 0 or config.beta != 1
    if weighted:  # KL warm-up or beta: the latent sites' scores scaled, step by step (pvae.training.warmup)
        objective = WeightedObjective(objective)
    metrics: list[dict[str, float]] = []
    start_epoch = 1
    if state is not None:
        vae.load_state_dict(state["model"])  # type: ignore[attr-defined]
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        data_rng.set_state(state["data_rng"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
        metrics = [dict(row) for row in state["metrics"]]
        start_epoch = int(state["epoch"]) + 1
        if world.rank > 0:  # rank 0's generators are the ones restored above
            torch.set_rng_state(state["rank_rng"][world.rank].cpu())
            if device.type == "cuda":
                torch.cuda.set_rng_state(state["rank_cuda_rng"][world.rank].cpu(), device)
    else:
        engine = "eager" if mode == "semi-supervised" else engine_for(config, own_model=own_model, enumerates=enumerates)
        if world.main:
            atomic_write_text(out / CONFIG, json.dumps({"config": config.to_dict(), "versions": _versions(),
                                                        "device": str(device), "cpu_threads": torch.get_num_threads(),
                                                        "engine": engine, "world_size": world.size}, indent=2))
            atomic_write_text(out / METRICS, metrics_csv([]))
        if world.rank > 0:  # each other rank draws its own latents; rank 0 what one process would
            torch.manual_seed(rank_seed(config.seed, world.rank))
    if world.distributed:
        world.broadcast_tensors(vae.state_dict().values())  # type: ignore[attr-defined]

    y_train = data.train_labels if mode == "observed" else None
    steps = math.ceil(fit.shape[0] / config.batch_size)
    show = sys.stderr.isatty() if progress is None else progress
    best = best_epoch(metrics)
    stop = _early_stop(config, metrics, best)
    for epoch in range(start_epoch, config.epochs + 1):
        if stop is not None:
            break
        tic = time.perf_counter()
        vae.train()  # type: ignore[attr-defined]
        order = fit[torch.randperm(fit.shape[0], generator=data_rng, device=device)]
        if config.binarization == "dynamic":
            x_epoch = torch.bernoulli(x_grey, generator=data_rng)
        elif config.dequantize:
            x_epoch = dequantize(x_grey, data_rng)
        else:
            x_epoch = x_static
        if labelled is not None:
            objective.x_labelled = x_epoch[labelled]  # this epoch's binarization of the labelled images
        weights = ([kl_weight(config, (epoch - 1) * steps + s, steps) for s in range(1, steps + 1)]
                   if weighted else None)
        bar = tqdm(total=steps, desc=f"epoch {epoch}/{config.epochs}", disable=not (show and world.main), leave=False)
        try:
            train_elbo = train_epoch(vae, objective, optimizer, x_epoch, order, config.batch_size, y=y_train,
                                     progress=bar, kl_weights=weights, world=world)
        except TrainingDivergedError as err:
            kept = f"the checkpoint of epoch {epoch - 1} in {out} is intact" if epoch > 1 else "no checkpoint was written"
            raise TrainingDivergedError(
                f"training diverged in epoch {epoch}: {err}; {kept}. Try a lower --lr (now {config.lr})"
            ) from None
        finally:
            bar.close()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        vae.eval()  # type: ignore[attr-defined]
        # rank 0's validation ELBO is every rank's, so that all of them stop at the same epoch
        val_elbo = world.on_main(lambda: float(elbo_terms(vae, x_val, *val_args).elbo.mean()) if len(x_val)
                                 else float("nan"))
        row = {"epoch": epoch, "train_elbo": train_elbo, "val_elbo": val_elbo, "lr": lr,
               "kl_weight": weights[-1] if weights else config.beta, "seconds": time.perf_counter() - tic}
        metrics.append(row)
        best = best_epoch(metrics)
        also = [kept_checkpoint(epoch)] if epoch in config.keep_epochs else []
        if config.patience is not None and best == epoch:
            also.append(BEST_CHECKPOINT)
        save_epoch(out, config, vae, optimizer, scheduler, data_rng, device, epoch, metrics, also=also, world=world)
        if not world.main:
            stop = _early_stop(config, metrics, best)
            continue
        val_text = f"val elbo {val_elbo:9.3f}" if len(x_val) else "no validation split"
        weight_text = f"  kl weight {row['kl_weight']:.3g}" if weighted else ""
        print(f"epoch {epoch:>3}/{config.epochs}  train elbo {row['train_elbo']:9.3f}  {val_text}  "
              f"nats/image{weight_text}  ({row['seconds']:.1f} s)", file=sys.stderr)
        stop = _early_stop(config, metrics, best)
    if stop is not None and world.main:
        print(stop, file=sys.stderr)

    from pvae.runs.figures import save_run_figures

    if world.main:
        save_run_figures(out, vae, data, metrics, config.binarization)
    return TrainResult(vae=vae, run_dir=out, metrics=metrics, data=data, best_epoch=best if config.patience else None,
                       stopped_early=stop is not None)


def best_epoch(metrics: list[dict[str, float]]) -> int | None:
    """The epoch of the highest validation ELBO so far (the first, on a tie); ``None`` before any,
    or without a validation split."""
    scored = [row for row in metrics if not math.isnan(row["val_elbo"])]
    return int(max(scored, key=lambda row: (row["val_elbo"], -row["epoch"]))["epoch"]) if scored else None


def _early_stop(config: TrainConfig, metrics: list[dict[str, float]], best: int | None) -> str | None:
    """Why training stops before its last epoch (``patience`` epochs without a better validation
    ELBO), or ``None``. Read from the metrics alone, so that a resumed run stops where an
    uninterrupted one does."""
    if config.patience is None or best is None or not metrics:
        return None
    last = int(metrics[-1]["epoch"])
    if last - best < config.patience or last >= config.epochs:
        return None
    value = next(row["val_elbo"] for row in metrics if row["epoch"] == best)
    return (f"early stop after epoch {last}: the validation ELBO has not improved for {config.patience} epochs; "
            f"the best, {value:.3f} nats per image at epoch {best}, is kept in {BEST_CHECKPOINT}")


def _prepare_folder(config: TrainConfig, out: Path, *, resume: bool, overwrite: bool,
                    map_location: torch.device | str) -> dict[str, Any] | None:
    """Check the run folder fits the request, clear what an overwritten run left, and return the
    checkpoint state to resume from (``None`` for a new run)."""
    state: dict[str, Any] | None = None
    if resume:
        if not (out / CHECKPOINT).exists():
            raise RunFolderError(f"cannot resume: {out} holds no {CHECKPOINT}; start a new run without --resume")
        saved_config, state = load_run(out, map_location=map_location)
        saved_config = replace(saved_config, out=config.out)  # the folder may have moved
        if saved_config != config:
            diff = {k: (v, config.to_dict()[k]) for k, v in saved_config.to_dict().items() if config.to_dict()[k] != v}
            raise RunFolderError(f"cannot resume {out} with different settings (saved, given): {diff}")
    elif (out / CONFIG).exists() or (out / CHECKPOINT).exists():
        if not overwrite:
            raise RunFolderError(f"{out} already holds a run; pass --resume to continue it or --overwrite to replace it")
        # The old run's numbers and checkpoints must not pass for the new one's (a best.pt would be
        # what evaluate measures).
        for stale in (EVALUATION, PER_IMAGE, BDMC_CSV, BEST_CHECKPOINT):
            (out / stale).unlink(missing_ok=True)
        for pattern in ("checkpoint-*.pt", "evaluation-*.json", "per_image-*.csv", "bdmc-*.csv"):
            for stale_file in out.glob(pattern):
                stale_file.unlink()
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp"):  # half-written temporaries of a process killed mid-write
        stale.unlink()
    return state


def train_epoch(
    vae: GraphicalModel,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    order: Tensor,
    batch_size: int,
    *,
    y: Tensor | None = None,
    progress: Any = None,
    kl_weights: Sequence[float] | None = None,
    world: World = SINGLE,
) -> float:
    """One pass of SVI over the training images.

    :param objective: anything with Pyro's ``differentiable_loss(model, guide, x, ...)``.
    :param x: training images ``(N, x_dim)``, already binarized for this epoch.
    :param order: indices into ``x`` (a permutation of ``range(N)``, or of the unlabelled images
        for a semi-supervised model); minibatches are its consecutive slices.
    :param y: classes of all N images ``(N,)``, passed with each minibatch to a class-conditional model.
    :param progress: a tqdm bar to advance (``update(1)`` per step), or ``None``.
    :param kl_weights: for a :class:`~pvae.training.warmup.WeightedObjective`, the weight of the latent sites
        at each step of the epoch (KL warm-up, beta).
    :param world: the processes of a distributed run (:mod:`pvae.distributed`): each step's
        minibatch is ``batch_size`` images of ``order`` in all, of which this rank takes its share,
        and the gradients are combined across ranks before the step.
    :returns: the mean over steps of the minibatch estimate of the per-image ELBO (nats), the true
        ELBO (unweighted) whatever the weights; in a distributed run, of the global minibatches.
    """
    elbo_sum = torch.zeros((), device=x.device)
    steps = 0
    bucket = GradientBucket(vae.parameters(), world) if world.distributed else None  # type: ignore[attr-defined]
    with warnings.catch_warnings():
        # Pyro warns on a NaN loss; the check below stops training with a clearer message instead.
        warnings.filterwarnings("ignore", message="Encountered NaN", category=UserWarning)
        for start in range(0, order.shape[0], batch_size):
            steps += 1
            rows = order[start : start + batch_size]
            if kl_weights is not None:
                objective.weight = kl_weights[steps - 1]
            if world.distributed:
                if hasattr(objective, "global_batch"):  # M2: its labelled minibatch is shared alike
                    objective.global_batch, objective.world = rows.shape[0], world
                local = world.share(rows)
                args = (x[local],) if y is None else (x[local], y[local])
                _distributed_step(vae, objective, optimizer, args, steps, start, elbo_sum, bucket,
                                  share=local.shape[0] / rows.shape[0])
            else:
                args = (x[rows],) if y is None else (x[rows], y[rows])
                _svi_step(vae, objective, optimizer, args, steps, start, elbo_sum)
            if progress is not None:
                progress.update(1)
                if steps % 50 == 0:
                    progress.set_postfix(elbo=f"{elbo_sum.item() / steps:.2f}")
    return elbo_sum.item() / steps


def _minibatch_loss(vae: GraphicalModel, objective: Objective, args: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    """The loss of the minibatch ``args`` (images, and labels when the model takes them) and its
    estimate of the per-image ELBO, detached: the true ELBO even when the objective is weighted."""
    num_data = max(vae.num_data or 0, args[0].shape[0])  # the data plate's size, see pvae.models.common.data_plate
    # The data's support was checked once before training; re-validating every distribution's
    # arguments at every step costs ~7% of a CPU step and finds nothing new.
    with pyro.validation_enabled(False):
        # A weighted objective (KL warm-up, beta) reports the true ELBO, from the same draws as its step.
        reported = (objective.unweighted_loss(vae.model, vae.guide, *args)
                    if isinstance(objective, WeightedObjective) and objective.weight != 1.0 else None)
        loss = objective.differentiable_loss(vae.model, vae.guide, *args)
    # The loss estimates -N * (per-image ELBO): the data plate scales the batch by N / B. M2's
    # classification term is part of the objective, not of the ELBO it reports.
    auxiliary = getattr(objective, "auxiliary", None)
    value = loss.detach() if reported is None else reported
    return loss, -(value if auxiliary is None else value - auxiliary) / num_data


def _svi_step(
    vae: GraphicalModel, objective: Objective, optimizer: torch.optim.Optimizer, args: tuple[Tensor, ...], step: int,
    start: int, elbo_sum: Tensor,
) -> None:
    """One gradient step on the minibatch ``args`` (images, and labels when the model takes them);
    adds its per-image ELBO estimate to ``elbo_sum`` in place."""
    loss, elbo = _minibatch_loss(vae, objective, args)
    if not torch.isfinite(loss):
        # Stop before the step: one NaN gradient would spoil every parameter for good.
        raise TrainingDivergedError(
            f"the loss became {loss.item()} at step {step} (images {start}..{start + len(args[0]) - 1} of this "
            "epoch's order)"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    elbo_sum += elbo  # summed on the device: GPU steps stay free of host synchronisation


def _distributed_step(
    vae: GraphicalModel, objective: Objective, optimizer: torch.optim.Optimizer, args: tuple[Tensor, ...], step: int,
    start: int, elbo_sum: Tensor, bucket: GradientBucket, *, share: float,
) -> None:
    """:func:`_svi_step` on this rank's ``share`` (B_r / B) of a global minibatch: the gradients and
    the ELBO estimate are sum_r share_r * (rank r's), combined in one all-reduce before the step."""
    bucket.zero_()
    elbo = torch.zeros((), device=elbo_sum.device)
    if args[0].shape[0] > 0:  # a last minibatch smaller than the world leaves some ranks without images
        loss, elbo = _minibatch_loss(vae, objective, args)
        if torch.isfinite(loss):
            (loss * share).backward()  # the share weights the gradient as it is computed
        else:
            elbo = torch.full((), math.nan, device=elbo_sum.device)
    bad = (~torch.isfinite(elbo)).to(elbo.dtype)
    total, nonfinite = bucket.all_reduce(torch.stack([elbo.nan_to_num(0.0) * share, bad]))
    if nonfinite > 0:
        world = bucket.world
        raise TrainingDivergedError(f"the loss became non-finite at step {step} on {int(nonfinite)} of {world.size} "
                                    f"processes (images {start}.. of this epoch's order)")
    optimizer.step()
    elbo_sum += total


def save_epoch(
    out: Path,
    config: TrainConfig,
    vae: GraphicalModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    data_rng: torch.Generator,
    device: torch.device,
    epoch: int,
    metrics: list[dict[str, float]],
    *,
    also: Sequence[str] = (),
    world: World = SINGLE,
) -> None:
    """Write the epoch's checkpoint (everything a bit-identical resume needs), then ``metrics.csv``.

    :param also: other files of the run folder to hold the same state (``best.pt``, kept epochs),
        written first: a crash before ``checkpoint.pt`` redoes the epoch and rewrites them alike.
    :param world: in a distributed run every rank calls this (it gathers their generators' states)
        and rank 0 writes.
    """
    rank_rng = world.gather(torch.get_rng_state())
    rank_cuda_rng = world.gather(torch.cuda.get_rng_state(device)) if device.type == "cuda" else None
    if not world.main:
        return
    state: dict[str, Any] = {
        "config": config.to_dict(),
        "epoch": epoch,
        "num_data": vae.num_data,
        "x_dim": vae.x_dim,
        "model": vae.state_dict(),  # type: ignore[attr-defined]
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "data_rng": data_rng.get_state(),
        "torch_rng": torch.get_rng_state(),
        "metrics": metrics,
    }
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    if world.distributed:
        state.update(world_size=world.size, rank_rng=rank_rng)
        if rank_cuda_rng is not None:
            state["rank_cuda_rng"] = rank_cuda_rng
    # Checkpoint first, then the CSV from the checkpoint's own history: after a crash between the
    # two, resuming rewrites the CSV, so metrics always match the last complete checkpoint.
    for name in also:
        save_checkpoint(out / name, state)
    save_checkpoint(out / CHECKPOINT, state)
    atomic_write_text(out / METRICS, metrics_csv(metrics))
