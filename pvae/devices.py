"""Devices and random streams: which device a setting means, and blocks whose draws are undone."""

from __future__ import annotations

from typing import Any

import torch

from pvae.errors import ConfigError

__all__ = ["resolve_device", "forked_rng"]


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
