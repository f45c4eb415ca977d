"""A run folder: ``config.json``, ``checkpoint.pt``, ``metrics.csv``, figures and evaluations.

Reading a run never runs code from it: the configuration is JSON and the checkpoint is loaded with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pvae.data import ImageData, load_data
from pvae.devices import forked_rng, resolve_device
from pvae.protocol import GraphicalModel
from pvae.runs.build import build_model
from pvae.runs.checkpoint import CheckpointError, load_checkpoint
from pvae.runs.config import TrainConfig

__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "METRICS",
    "EVALUATION",
    "PER_IMAGE",
    "METRICS_FIELDS",
    "BEST_CHECKPOINT",
    "kept_checkpoint",
    "default_checkpoint",
    "RunFolderError",
    "resolve_device",
    "forked_rng",
    "load_config",
    "load_run",
    "rebuild_model",
    "open_run",
    "OpenRun",
    "metrics_csv",
]

CHECKPOINT, CONFIG, METRICS = "checkpoint.pt", "config.json", "metrics.csv"
EVALUATION, PER_IMAGE = "evaluation.json", "per_image.csv"
BEST_CHECKPOINT = "best.pt"
#: The columns of metrics.csv. ``kl_weight`` is the weight of KL(q || p) in the objective at the
#: epoch's last step (1 for the ELBO; KL warm-up and beta change it); the ELBOs are always unweighted.
METRICS_FIELDS = ("epoch", "train_elbo", "val_elbo", "lr", "kl_weight", "seconds")


class RunFolderError(ValueError):
    """The run folder is missing, belongs to another run, or does not match the configuration."""


def metrics_csv(rows: Sequence[dict[str, float]]) -> str:
    """The text of ``metrics.csv``: a header and one row per epoch."""
    buf = io.StringIO()
    # restval: a run from before a column existed leaves it empty
    writer = csv.DictWriter(buf, fieldnames=METRICS_FIELDS, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def kept_checkpoint(epoch: int) -> str:
    """The file name of the checkpoint kept for ``epoch`` (``--keep-epochs``): checkpoint-EPOCH.pt."""
    return f"checkpoint-{epoch}.pt"


def load_config(run_dir: str | Path) -> TrainConfig:
    """Read only a run folder's ``config.json`` (no checkpoint)."""
    cfg_path = Path(run_dir) / CONFIG
    if not cfg_path.is_file():
        raise RunFolderError(f"{run_dir} is not a pvae run folder: {CONFIG} is missing")
    try:
        return TrainConfig.from_dict(json.loads(cfg_path.read_text())["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise RunFolderError(f"{cfg_path} is not a pvae configuration ({err})") from err


def load_run(run_dir: str | Path, map_location: str | torch.device = "cpu", *,
             checkpoint: str = CHECKPOINT) -> tuple[TrainConfig, dict[str, Any]]:
    """Read a run folder's ``config.json`` and a checkpoint (safely, see :mod:`pvae.runs.checkpoint`).

    :param checkpoint: the checkpoint file in the folder: ``checkpoint.pt`` (the last epoch),
        ``best.pt`` (the best validation ELBO, with early stopping) or ``checkpoint-EPOCH.pt``.
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / CONFIG
    config = load_config(run_dir)
    if Path(checkpoint).name != checkpoint:
        raise RunFolderError(f"checkpoint names a file in the run folder, such as {CHECKPOINT} or {BEST_CHECKPOINT}; "
                             f"got {checkpoint!r}")
    if checkpoint != CHECKPOINT and not (run_dir / checkpoint).is_file():
        kept = sorted(p.name for p in run_dir.glob("*.pt"))
        raise RunFolderError(f"{run_dir} holds no {checkpoint}; its checkpoints are: {', '.join(kept) or 'none'}")
    state = load_checkpoint(run_dir / checkpoint, map_location=map_location)
    # ``out`` is where the run lives, not what it is: a moved folder is the same run.
    if _without_out(state.get("config")) != _without_out(config.to_dict()):
        raise CheckpointError(f"{run_dir / checkpoint} was written for another configuration than {cfg_path}")
    return config, state


def default_checkpoint(run_dir: str | Path) -> str:
    """The checkpoint a run is measured by: ``best.pt`` where early stopping kept one, else ``checkpoint.pt``."""
    return BEST_CHECKPOINT if (Path(run_dir) / BEST_CHECKPOINT).is_file() else CHECKPOINT


def _without_out(d: object) -> object:
    return {k: v for k, v in d.items() if k != "out"} if isinstance(d, dict) else d


def rebuild_model(config: TrainConfig, state: dict[str, Any], device: torch.device) -> GraphicalModel:
    """The trained model of a run folder, from its configuration and checkpoint state: any family,
    or a class of your own by its import path and ``model_args`` (imported, never unpickled)."""
    weights: dict[str, Tensor] = state["model"]
    model = build_model(config, int(state["x_dim"]), int(state["num_data"]))
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"the checkpoint's weights do not fit the model its configuration describes ({err})") from err
    model.to(device)
    model.eval()
    return model


@dataclass(frozen=True)
class OpenRun:
    """A run folder opened for use: its configuration, checkpoint state, trained model and data."""

    config: TrainConfig
    state: dict[str, Any]
    model: GraphicalModel
    data: ImageData


def open_run(run_dir: str | Path, *, device: torch.device, data_dir: str | None = None,
             checkpoint: str = CHECKPOINT) -> OpenRun:
    """Read a run folder, rebuild its model on ``device`` and load its dataset (the one function
    ``evaluate``, ``plot``, ``sample`` and the benchmarks open a run with).

    :param data_dir: where the data is, when not where the run found it.
    :param checkpoint: which checkpoint file of the folder (see :func:`load_run`).
    """
    config, state = load_run(run_dir, map_location=device, checkpoint=checkpoint)
    model = rebuild_model(config, state, device)
    data = load_data(config.dataset, data_dir if data_dir is not None else config.data_dir,
                     val_size=config.val_size, train_size=config.train_size, device=device)
    return OpenRun(config, state, model, data)
