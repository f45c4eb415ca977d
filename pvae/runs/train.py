"""Fit a graphical model by stochastic variational inference and keep a resumable run folder.

SVI here is Pyro's ELBO (``Trace_ELBO``, ``TraceMeanField_ELBO``, ``TraceEnum_ELBO`` or the IWAE
bound; :mod:`pvae.training.objectives`) as a differentiable loss, minimized with one
``torch.optim.Adam`` over the model's parameters (theta and phi together) and a learning-rate
schedule, by the loop of :mod:`pvae.training.loop`. By default the ELBO's computation is recorded
once per minibatch shape and replayed (:mod:`pvae.training.compiled`): the same numbers without
Pyro's per-step Python. One checkpoint per epoch, written atomically, holds everything needed to
continue bit for bit: parameters, optimizer and schedule state, and the random-number generators.

:func:`train` is the run's phases in order: check the settings, prepare the folder, load the data,
build the model, check its programs, make the optimizer and objective, resume or record, loop, and
draw the figures. This module reads the configuration; nothing below it does.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import math
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyro
import torch
from torch import Tensor

from pvae.data import ImageData, binarize, fixed_eval_set, labelled_subset, load_data
from pvae.devices import forked_rng, resolve_device
from pvae.distributed import SINGLE, World, current_world, rank_seed
from pvae.inference.traces import check_data_support, check_model_traces
from pvae.models.families import check_fit, own_family
from pvae.parts.registry import is_import_path
from pvae.protocol import GraphicalModel, label_mode, num_classes
from pvae.runs.build import build_model, check_config
from pvae.runs.checkpoint import atomic_write_text, save_checkpoint
from pvae.runs.config import TrainConfig
from pvae.runs.evaluate import BDMC_CSV, elbo_terms
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
from pvae.training.loop import TrainingDivergedError, fit, train_epoch
from pvae.training.objectives import (
    Objective,
    check_objective,
    check_semi_supervised,
    engine_for,
    training_objective,
    wants_enumeration,
)
from pvae.training.schedules import make_scheduler
from pvae.training.warmup import WeightedObjective, kl_weight
from pvae.version import __version__

__all__ = ["train", "train_epoch", "save_epoch", "TrainResult", "TrainingDivergedError", "best_epoch"]


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


@dataclass
class _Data:
    """The run's images, as each phase needs them."""

    data: ImageData
    x_grey: Tensor  # (N, x_dim) grey levels of the training images
    x_static: Tensor  # (N, x_dim) what a step sees when nothing is redrawn per epoch
    x_val: Tensor  # (N_val, x_dim) the fixed validation images


@dataclass
class _Fit:
    """The model with what the checks learned of it and the images each epoch steps through."""

    vae: GraphicalModel
    mode: str  # its label mode
    own: bool  # a model of the user's (an object, or a class by import path)
    enumerates: bool  # its guide enumerates a discrete latent
    rows: Tensor  # (N_fit,) indices of the images each epoch steps through
    labelled: Tensor | None  # (N_l,) indices of a semi-supervised model's labelled images

    def labels_of(self, y: Tensor) -> tuple[Tensor, ...]:
        """What model and guide take besides the images: the classes, for a class-conditional model."""
        return (y,) if self.mode == "observed" else ()


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
    check_config(config)  # the settings' one check, before anything is written
    world = current_world(config.device)  # torchrun's processes, or this one alone
    # every rank names the folder rank 0 named (a default one holds the time, which may differ)
    out = world.broadcast(Path(config.out) if config.out is not None else _default_out())
    config = replace(config, out=str(out))
    device = world.device(resolve_device(config.device))
    state = _folder_phase(config, out, world, device, resume=resume, overwrite=overwrite)
    torch.manual_seed(config.seed)
    images = _data_phase(config, device)
    model = _model_phase(config, images, vae, device)
    # The checks run the programs, which draws latents: forked, so that the training's random
    # stream is the one it would be without them (and the default VAE's numbers stay as they were).
    with forked_rng(device):
        run = _check_programs(config, images, model, device)
    optimizer = torch.optim.Adam(run.vae.parameters(), lr=config.lr, eps=config.adam_eps)
    scheduler = make_scheduler(optimizer, config.lr_schedule, epochs=config.epochs, lr=config.lr,
                               lr_decay=config.lr_decay)
    data_rng = torch.Generator(device=device).manual_seed(config.seed)
    engine = engine_for(config.engine, own_model=run.own, enumerates=run.enumerates,
                        semi_supervised=run.mode == "semi-supervised")
    objective = _objective_phase(config, images, run, engine, data_rng)
    metrics = _resume_or_record(config, state, out, run.vae, optimizer, scheduler, data_rng, device, world, engine)
    metrics = _loop_phase(config, images, run, objective, optimizer, scheduler, data_rng, device, world, metrics,
                          show=sys.stderr.isatty() if progress is None else progress)
    best, stop = best_epoch(metrics), _early_stop(config, metrics, best_epoch(metrics))
    if stop is not None and world.main:
        print(stop, file=sys.stderr)
    if world.main:
        from pvae.runs.figures import save_run_figures

        save_run_figures(out, run.vae, images.data, metrics, config.binarization)
    return TrainResult(vae=run.vae, run_dir=out, metrics=metrics, data=images.data,
                       best_epoch=best if config.patience else None, stopped_early=stop is not None)


def _folder_phase(config: TrainConfig, out: Path, world: World, device: torch.device, *, resume: bool,
                  overwrite: bool) -> dict[str, Any] | None:
    """Only rank 0 touches the run folder; what it reads (a checkpoint to resume) it gives the others."""
    state = world.on_main(lambda: _prepare_folder(config, out, resume=resume, overwrite=overwrite,
                                                  map_location=device if not world.distributed else "cpu"))
    if state is not None and int(state.get("world_size", 1)) != world.size:
        raise RunFolderError(f"cannot resume {out} with {world.size} process(es): it was trained with "
                             f"{state.get('world_size', 1)}; resume with torchrun --nproc-per-node "
                             f"{state.get('world_size', 1)} (or without torchrun for 1)")
    return state


def _data_phase(config: TrainConfig, device: torch.device) -> _Data:
    """The dataset, the images a step sees when none are redrawn, and the fixed validation images."""
    data = load_data(
        config.dataset, config.data_dir, val_size=config.val_size, train_size=config.train_size, device=device
    )
    x_grey = data.train
    x_static = binarize(x_grey, config.seed) if config.binarization == "static" else x_grey
    return _Data(data, x_grey, x_static, fixed_eval_set(data.val, config.binarization, config.dequantize))


def _model_phase(config: TrainConfig, images: _Data, vae: GraphicalModel | None, device: torch.device) -> _Fit:
    """The model ``config`` describes (or the one given), told its data plate's size, on ``device``."""
    # A model of your own (an object, or a class named by import path) may hold Python a trace
    # cannot follow: engine auto runs it eagerly.
    own = vae is not None or is_import_path(config.model)
    x_grey = images.x_grey
    if vae is None:
        vae = build_model(config, images.data.x_dim, x_grey.shape[0], mean_image=x_grey.mean(0),
                          init_data=images.x_static, checked=True)
    mode = label_mode(vae)
    if mode != "none":
        num_classes(vae)  # a model with labels says how many classes it has, or is refused here
    if mode == "semi-supervised":
        vae.num_labelled = config.labels  # type: ignore[attr-defined]
    # The data plate's size is the training set's size by definition; a model built elsewhere is told.
    vae.num_data = x_grey.shape[0]
    vae.to(device)
    every = torch.arange(x_grey.shape[0], device=device)
    return _Fit(vae, mode, own, enumerates=False, rows=every, labelled=None)


def _check_programs(config: TrainConfig, images: _Data, run: _Fit, device: torch.device) -> _Fit:
    """Run the model's programs once on the data before anything is trained: their sites, the data's
    support, what a model of your own supports, the semi-supervised and analytic-KL objectives.
    Returns ``run`` with whether the guide enumerates and, for M2, its labelled images."""
    data, vae = images.data, run.vae
    probe_args = run.labels_of(data.train_labels[:2])
    # dequantized data is drawn afresh each epoch: the checks see one fixed draw of it
    x_probe = fixed_eval_set(images.x_grey, "none", dequantized=True) if config.dequantize else images.x_static
    check_model_traces(vae, x_probe[:2], *probe_args)
    enumerates = wants_enumeration(vae, x_probe[:2], *probe_args)
    if run.own:  # what a family of the table supports was checked with the settings; this model says it now
        name = config.model if is_import_path(config.model) else type(vae).__name__
        check_fit(name, own_family(name, run.mode, enumerates=enumerates), objective=config.objective,
                  engine=config.engine, labels=config.labels)
    rows, labelled = run.rows, None
    if run.mode == "semi-supervised":  # M2's labelled few; an epoch steps through the rest
        labelled = labelled_subset(data.train_labels, config.labels, config.label_seed)
        is_labelled = torch.zeros(rows.shape[0], dtype=torch.bool, device=device)
        is_labelled[labelled] = True
        rows = (~is_labelled).nonzero().squeeze(-1)
    if len(images.x_val):
        check_data_support(vae, images.x_val, *run.labels_of(data.val_labels))
    else:
        # no validation split (val_size=0): the first training images, as the model will see them
        check_data_support(vae, fixed_eval_set(images.x_grey[:1000], config.binarization, config.dequantize),
                           *run.labels_of(data.train_labels[:1000]))
    if config.binarization != "dynamic":  # the very images it will train on (or one draw of them)
        check_data_support(vae, x_probe, *run.labels_of(data.train_labels))
    if labelled is not None:  # M2's labelled programs, which the first step would run
        check_semi_supervised(vae, x_probe[labelled[:2]], data.train_labels[labelled[:2]])
    check_objective(vae, x_probe[:2], *probe_args, objective=config.objective, guide=config.guide,
                    prior=config.prior)
    return replace(run, enumerates=enumerates, rows=rows, labelled=labelled)


def _objective_phase(config: TrainConfig, images: _Data, run: _Fit, engine: str,
                     data_rng: torch.Generator) -> Objective:
    """The objective each step calls, run by ``engine``; weighted for KL warm-up or beta."""
    labelled_set = (None if run.labelled is None
                    else (images.x_static[run.labelled], images.data.train_labels[run.labelled], data_rng))
    objective = training_objective(run.vae, objective=config.objective, num_particles=config.num_particles,
                                   engine=engine, enumerates=run.enumerates, labelled=labelled_set)
    if config.kl_warmup > 0 or config.beta != 1:  # the latent sites' scores scaled, step by step
        objective = WeightedObjective(objective)
    return objective


def _resume_or_record(
    config: TrainConfig, state: dict[str, Any] | None, out: Path, vae: GraphicalModel,
    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler, data_rng: torch.Generator,
    device: torch.device, world: World, engine: str,
) -> list[dict[str, float]]:
    """Restore a checkpoint's state, or record a new run's settings; returns the epochs already run."""
    metrics: list[dict[str, float]] = []
    if state is not None:
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        data_rng.set_state(state["data_rng"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
        metrics = [dict(row) for row in state["metrics"]]
        if world.rank > 0:  # rank 0's generators are the ones restored above
            torch.set_rng_state(state["rank_rng"][world.rank].cpu())
            if device.type == "cuda":
                torch.cuda.set_rng_state(state["rank_cuda_rng"][world.rank].cpu(), device)
    else:
        if world.main:  # the engine recorded is the one that runs (engine_for resolved auto)
            atomic_write_text(out / CONFIG, json.dumps({"config": config.to_dict(), "versions": _versions(),
                                                        "device": str(device), "cpu_threads": torch.get_num_threads(),
                                                        "engine": engine, "world_size": world.size}, indent=2))
            atomic_write_text(out / METRICS, metrics_csv([]))
        if world.rank > 0:  # each other rank draws its own latents; rank 0 what one process would
            torch.manual_seed(rank_seed(config.seed, world.rank))
    if world.distributed:
        world.broadcast_tensors(vae.state_dict().values())
    return metrics


def _loop_phase(
    config: TrainConfig, images: _Data, run: _Fit, objective: Objective, optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler, data_rng: torch.Generator, device: torch.device, world: World,
    metrics: list[dict[str, float]], *, show: bool,
) -> list[dict[str, float]]:
    """The epochs left, each followed by validation, its checkpoint, a line on stderr and the
    early-stopping rule; returns every epoch's metrics."""
    out, vae, data = Path(str(config.out)), run.vae, images.data
    weighted = isinstance(objective, WeightedObjective)
    val_args = run.labels_of(data.val_labels)

    def validate() -> float:
        # rank 0's validation ELBO is every rank's, so that all of them stop at the same epoch
        return world.on_main(lambda: float(elbo_terms(vae, images.x_val, *val_args).elbo.mean())
                             if len(images.x_val) else float("nan"))

    def on_epoch(metrics: list[dict[str, float]]) -> bool:
        row = metrics[-1]
        epoch, best = int(row["epoch"]), best_epoch(metrics)
        also = [kept_checkpoint(epoch)] if epoch in config.keep_epochs else []
        if config.patience is not None and best == epoch:
            also.append(BEST_CHECKPOINT)
        save_epoch(out, config, vae, optimizer, scheduler, data_rng, device, epoch, metrics, also=also, world=world)
        if world.main:
            val_text = f"val elbo {row['val_elbo']:9.3f}" if len(images.x_val) else "no validation split"
            weight_text = f"  kl weight {row['kl_weight']:.3g}" if weighted else ""
            print(f"epoch {epoch:>3}/{config.epochs}  train elbo {row['train_elbo']:9.3f}  {val_text}  "
                  f"nats/image{weight_text}  ({row['seconds']:.1f} s)", file=sys.stderr)
        return _early_stop(config, metrics, best) is not None

    # A resumed run that had already stopped early runs no epoch.
    first = int(metrics[-1]["epoch"]) + 1 if metrics else 1
    stopped = _early_stop(config, metrics, best_epoch(metrics)) is not None
    resample = ("binarize" if config.binarization == "dynamic" else "dequantize" if config.dequantize else "none")
    try:
        return fit(vae, objective, optimizer, scheduler, images.x_static if resample == "none" else images.x_grey,
                   epochs=range(first, first if stopped else config.epochs + 1), batch_size=config.batch_size,
                   generator=data_rng, rows=run.rows, resample=resample,
                   y=data.train_labels if run.mode == "observed" else None, labelled=run.labelled,
                   kl_weights=(functools.partial(kl_weight, warmup_epochs=config.kl_warmup, beta=config.beta)
                               if weighted else None),
                   validate=validate, on_epoch=on_epoch, metrics=metrics, world=world, progress=show)
    except TrainingDivergedError as err:
        epoch = err.epoch or first
        kept = f"the checkpoint of epoch {epoch - 1} in {out} is intact" if epoch > 1 else "no checkpoint was written"
        raise TrainingDivergedError(f"{err}; {kept}. Try a lower learning rate than lr={config.lr}",
                                    epoch=epoch) from None


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
            raise RunFolderError(f"cannot resume: {out} holds no {CHECKPOINT}; start a new run without resume=True")
        saved_config, state = load_run(out, map_location=map_location)
        saved_config = replace(saved_config, out=config.out)  # the folder may have moved
        if saved_config != config:
            diff = {k: (v, config.to_dict()[k]) for k, v in saved_config.to_dict().items() if config.to_dict()[k] != v}
            raise RunFolderError(f"cannot resume {out} with different settings (saved, given): {diff}")
    elif (out / CONFIG).exists() or (out / CHECKPOINT).exists():
        if not overwrite:
            raise RunFolderError(f"{out} already holds a run; pass resume=True to continue it or overwrite=True to replace it")
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
        "model": vae.state_dict(),
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
