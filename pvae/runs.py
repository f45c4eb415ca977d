"""A run folder: ``config.json``, ``checkpoint.pt``, ``metrics.csv``, figures and evaluations.

Reading a run never runs code from it: the configuration is JSON and the checkpoint is loaded with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pvae.checkpoint import CheckpointError, load_checkpoint
from pvae.components import build_vae
from pvae.config import ConfigError, TrainConfig
from pvae.model import VAE

__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "METRICS",
    "EVALUATION",
    "PER_IMAGE",
    "METRICS_FIELDS",
    "RunFolderError",
    "resolve_device",
    "forked_rng",
    "load_config",
    "load_run",
    "rebuild_model",
    "metrics_csv",
]

CHECKPOINT, CONFIG, METRICS = "checkpoint.pt", "config.json", "metrics.csv"
EVALUATION, PER_IMAGE = "evaluation.json", "per_image.csv"
METRICS_FIELDS = ("epoch", "train_elbo", "val_elbo", "lr", "seconds")


class RunFolderError(ValueError):
    """The run folder is missing, belongs to another run, or does not match the configuration."""


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but PyTorch sees no CUDA GPU; use --device cpu or auto")
    return torch.device(device)


def forked_rng(device: torch.device) -> Any:
    """A block whose random draws are undone afterwards: torch's CPU generator, and CUDA's when
    ``device`` is a GPU, are given back as they were (so the draws in it leave others' streams alone)."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def metrics_csv(rows: Sequence[dict[str, float]]) -> str:
    """The text of ``metrics.csv``: a header and one row per epoch."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRICS_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def load_config(run_dir: str | Path) -> TrainConfig:
    """Read only a run folder's ``config.json`` (no checkpoint)."""
    cfg_path = Path(run_dir) / CONFIG
    if not cfg_path.is_file():
        raise RunFolderError(f"{run_dir} is not a pvae run folder: {CONFIG} is missing")
    try:
        return TrainConfig.from_dict(json.loads(cfg_path.read_text())["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise RunFolderError(f"{cfg_path} is not a pvae configuration ({err})") from err


def load_run(run_dir: str | Path, map_location: str | torch.device = "cpu") -> tuple[TrainConfig, dict[str, Any]]:
    """Read a run folder's ``config.json`` and checkpoint (safely, see :mod:`pvae.checkpoint`)."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / CONFIG
    config = load_config(run_dir)
    state = load_checkpoint(run_dir / CHECKPOINT, map_location=map_location)
    # ``out`` is where the run lives, not what it is: a moved folder is the same run.
    if _without_out(state.get("config")) != _without_out(config.to_dict()):
        raise CheckpointError(f"{run_dir / CHECKPOINT} was written for another configuration than {cfg_path}")
    return config, state


def _without_out(d: object) -> object:
    return {k: v for k, v in d.items() if k != "out"} if isinstance(d, dict) else d


def rebuild_model(config: TrainConfig, state: dict[str, Any], device: torch.device) -> VAE:
    """The trained VAE of a run folder, from its configuration and checkpoint state."""
    weights: dict[str, Tensor] = state["model"]
    vae = build_vae(config, int(state["x_dim"]), int(state["num_data"]))
    try:
        vae.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"the checkpoint's weights do not fit the model its configuration describes ({err})") from err
    return vae.to(device).eval()
